"""Where published messages go: in-process streams, bus transports (LCM, Zenoh), the mux and the listener.

:mod:`~viewer_bridge.bus.streams` fans messages out to in-process
subscribers; :mod:`~viewer_bridge.bus.transports` puts them on a robot bus in
DimOS's wire format under the names :mod:`viewer_bridge.core.topics` gives
them; :mod:`~viewer_bridge.bus.mux` merges teleop with navigation;
:mod:`~viewer_bridge.bus.listen` prints what is on a bus; and
:mod:`~viewer_bridge.bus.echo` prints what the bridge publishes.
"""
