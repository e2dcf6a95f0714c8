"""The pure core: the viewer protocol, the per-client connection, the safety rules, messages and their codecs.

Nothing in this package opens a socket, starts a thread or reads a clock:
every input (a frame, a message, the current time) is an argument and every
decision is a return value. That is what lets the tests and the fuzzers reach
every boundary exactly, and what lets the server, the thread wrapper and the
fleet agent share one set of rules. The shells that do I/O are
:mod:`viewer_bridge.server` and :mod:`viewer_bridge.bus`.
"""
