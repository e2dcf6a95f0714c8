"""The bridge's own clients: the Python client, ``viewer-bridge send`` and the terminal teleop.

They speak the same protocol as dimos-viewer (see ``docs/protocol.md``):
:mod:`~viewer_bridge.clients.client` is the library, :mod:`~viewer_bridge.clients.send`
the one-shot command, and :mod:`~viewer_bridge.clients.teleop` the terminal
teleop, whose key handling is the pure state machine in
:mod:`~viewer_bridge.clients.keys`. :mod:`~viewer_bridge.clients.safety_http`
stops over plain HTTP when a WebSocket cannot be had.
"""
