"""The shipped secure router config's access control, enforced by a real Zenoh router.

examples/fleet/router-secure.json5 is loaded as is, except that the test
listens on plain TCP on loopback and names the subjects by Zenoh id instead
of certificate common name (the rules are what is under test; TLS is
Zenoh's). It shows that each side can write only its own keys, and that
a real station and real agents work through those rules.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bus.transports.bus_support import free_port, require_lcm, require_zenoh, unique_lcm_url
from tests.conftest import wait_until
from viewer_bridge import RerunWebSocketServer
from viewer_bridge.bus.agent import RobotAgent

pytestmark = pytest.mark.all_threads

REPO = Path(__file__).resolve().parents[2]
SECURE = REPO / "examples" / "fleet" / "router-secure.json5"
STATION, ROBOT1, ROBOT2 = "a1", "b1", "b2"  # Zenoh ids standing in for the certificates' names


@pytest.fixture
def router() -> Iterator[str]:
    require_zenoh()
    import zenoh

    endpoint = f"tcp/127.0.0.1:{free_port()}"
    config = zenoh.Config.from_file(str(SECURE))
    config.insert_json5("listen/endpoints", json.dumps([endpoint]))
    config.insert_json5("access_control/subjects", json.dumps([
        {"id": "stations", "zids": [STATION]}, {"id": "go2-1", "zids": [ROBOT1]}, {"id": "go2-2", "zids": [ROBOT2]},
    ]))  # fmt: skip
    session = zenoh.open(config)
    try:
        yield endpoint
    finally:
        session.close()


def _client_config(endpoint: str, zid: str) -> dict[str, Any]:
    return {
        "id": zid,
        "mode": "client",
        "connect": {"endpoints": [endpoint]},
        "scouting": {"multicast": {"enabled": False}},
    }


def _session(endpoint: str, zid: str) -> Any:
    import zenoh

    config = zenoh.Config()
    for key, value in _client_config(endpoint, zid).items():
        config.insert_json5(key, json.dumps(value))
    return zenoh.open(config)


def test_each_side_writes_only_its_own_keys(router: str) -> None:
    station, robot1, robot2 = (_session(router, zid) for zid in (STATION, ROBOT1, ROBOT2))
    got: queue.Queue[tuple[str, ...]] = queue.Queue()
    declared: list[Any] = []
    try:
        declared += [
            robot1.declare_subscriber("viewer_bridge/fleet/go2-1/cmd",
                                      lambda s: got.put(("go2-1 cmd", s.payload.to_bytes().decode()))),
            station.declare_subscriber("viewer_bridge/fleet/*/state",
                                       lambda s: got.put(("state", s.payload.to_bytes().decode()))),
            station.liveliness().declare_subscriber("viewer_bridge/fleet/*/agent",
                                                    lambda s: got.put(("token", str(s.key_expr))), history=True),
        ]
        # Robot 2 pretends to be robot 1 (its token, its state, an order to it) and listens to its orders.
        declared.append(robot2.liveliness().declare_token("viewer_bridge/fleet/go2-1/agent"))
        def overheard(sample: Any) -> None:
            data = sample.payload.to_bytes().decode()
            if data != "forged":  # its own put, delivered within its own session
                got.put(("robot2 heard", data))

        declared.append(robot2.declare_subscriber("viewer_bridge/fleet/go2-1/cmd", overheard))

        def delivered(what: tuple[str, ...], send: Any) -> None:
            def arrived() -> bool:
                send()
                try:
                    return got.get(timeout=0.1) == what
                except queue.Empty:
                    return False

            wait_until(arrived, timeout=10, what=f"{what} through the router")

        # What is allowed gets through (retried while Zenoh propagates the declarations)...
        delivered(("go2-1 cmd", "station"), lambda: station.put("viewer_bridge/fleet/go2-1/cmd", b"station"))
        while not got.empty():  # the retries' extra copies
            assert got.get_nowait()[0] == "go2-1 cmd"
        delivered(("state", "robot1"), lambda: robot1.put("viewer_bridge/fleet/go2-1/state", b"robot1"))
        while not got.empty():
            assert got.get_nowait()[0] == "state"
        # ...and then robot 2's forgeries are not.
        robot2.put("viewer_bridge/fleet/go2-1/cmd", b"forged")
        robot2.put("viewer_bridge/fleet/go2-1/state", b"forged")
        station.put("viewer_bridge/fleet/go2-1/cmd", b"marker")
        assert got.get(timeout=10) == ("go2-1 cmd", "marker")
        robot1.put("viewer_bridge/fleet/go2-1/state", b"marker")
        assert got.get(timeout=10) == ("state", "marker")
        with pytest.raises(queue.Empty):
            got.get(timeout=0.5)
        # Only robot 1's own token makes go2-1 appear.
        declared.append(robot1.liveliness().declare_token("viewer_bridge/fleet/go2-1/agent"))
        assert got.get(timeout=10) == ("token", "viewer_bridge/fleet/go2-1/agent")
    finally:
        for entity in declared:
            entity.undeclare()
        for session in (station, robot1, robot2):
            session.close()


def test_a_station_and_an_agent_work_through_the_rules(router: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    require_lcm()
    from tests.bus.transports.bus_support import PlainLcm
    from viewer_bridge.core.messages import Twist

    def zenoh_config(zid: str) -> None:
        path = tmp_path / f"{zid}.json5"
        path.write_text(json.dumps({"id": zid}))
        monkeypatch.setenv("ZENOH_CONFIG", str(path))

    url = unique_lcm_url()
    agent = RobotAgent("go2-1", lcm_url=url, zenoh_mode="client", zenoh_connect=[router],
                       zenoh_multicast_scouting=False)
    station = RerunWebSocketServer(port=0, robots={"go2-1": {}}, zenoh_mode="client", zenoh_connect=[router],
                                   zenoh_multicast_scouting=False)
    from websockets.sync.client import connect

    with PlainLcm(url, pattern="/tele_cmd_vel#.*") as bus:
        try:
            # Each opens its Zenoh session at start, with $ZENOH_CONFIG (its id) as the base.
            zenoh_config(ROBOT1)
            agent.start()
            zenoh_config(STATION)
            station.start()
            wait_until(lambda: station.snapshot().robots["go2-1"].online, timeout=15, what="go2-1 online")
            with connect(station.websocket_url() + "?robot=go2-1", open_timeout=10) as ws:

                def moved() -> bool:
                    ws.send(json.dumps({"type": "twist", "linear_x": 0.4}))
                    try:
                        return Twist.lcm_decode(bus.get_on("/tele_cmd_vel#geometry_msgs.Twist", 0.2)).linear.x == 0.4
                    except AssertionError:
                        return False

                wait_until(moved, timeout=15, what="the station's twist on go2-1's bus")
                # The agent's state reaches the station through the rules too.
                wait_until(lambda: station.snapshot().robots["go2-1"].holder is not None, timeout=10,
                           what="go2-1's state at the station")
        finally:
            station.stop()
            agent.stop()


def test_the_other_example_configs_load() -> None:
    require_zenoh()
    import zenoh

    from viewer_bridge.config import load_config

    plain = zenoh.Config.from_file(str(REPO / "examples" / "fleet" / "router.json5"))
    assert json.loads(plain.get_json("transport/link/tx/lease")) == 3000
    client = zenoh.Config.from_file(str(REPO / "examples" / "fleet" / "client-tls.json5"))
    assert json.loads(client.get_json("transport/link/tls/enable_mtls")) is True
    station = load_config(REPO / "examples" / "fleet" / "station.toml", environ={})
    assert sorted(station.robots) == ["go2-1", "go2-2"] and station.station == "control"
    assert station.robots["go2-1"].max_linear_x == 0.8 and station.zenoh_mode == "client"


def _pki(directory: Path) -> Path:
    """A CA and certificates for the router (as localhost) and for one station and two robots, by CN."""
    import subprocess

    from tests.conftest import require_binary

    openssl = require_binary("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=directory, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
        "-subj", "/CN=fleet-ca", "-keyout", "ca-key.pem", "-out", "ca.pem")
    for name, dns in (("router", "localhost"), ("station-control", "station-control"),
                      ("robot-go2-1", "robot-go2-1"), ("robot-go2-2", "robot-go2-2")):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(f"subjectAltName=DNS:{dns}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "30", "-out", f"{name}.pem", "-extfile", f"{name}.ext")
    return directory


def test_with_mutual_tls_the_certificates_names_are_the_subjects(tmp_path: Path) -> None:
    """The shipped secure router and client configs as they are, with only the file paths and port changed."""
    require_zenoh()
    import zenoh

    pki = _pki(tmp_path)
    port = free_port()
    config = zenoh.Config.from_file(str(SECURE))
    config.insert_json5("listen/endpoints", json.dumps([f"tls/127.0.0.1:{port}"]))
    for key, name in (("root_ca_certificate", "ca.pem"), ("listen_certificate", "router.pem"),
                      ("listen_private_key", "router-key.pem")):
        config.insert_json5(f"transport/link/tls/{key}", json.dumps(str(pki / name)))
    router = zenoh.open(config)

    def client(name: str) -> Any:
        client_config = zenoh.Config.from_file(str(REPO / "examples" / "fleet" / "client-tls.json5"))
        client_config.insert_json5("mode", '"client"')
        client_config.insert_json5("connect/endpoints", json.dumps([f"tls/localhost:{port}"]))
        for key, file in (("root_ca_certificate", "ca.pem"), ("connect_certificate", f"{name}.pem"),
                          ("connect_private_key", f"{name}-key.pem")):
            client_config.insert_json5(f"transport/link/tls/{key}", json.dumps(str(pki / file)))
        return zenoh.open(client_config)

    station, robot1, robot2 = client("station-control"), client("robot-go2-1"), client("robot-go2-2")
    got: queue.Queue[bytes] = queue.Queue()
    subscriber = robot1.declare_subscriber("viewer_bridge/fleet/go2-1/cmd", lambda s: got.put(s.payload.to_bytes()))
    try:
        def arrived() -> bool:
            station.put("viewer_bridge/fleet/go2-1/cmd", b"station")
            try:
                return got.get(timeout=0.1) == b"station"
            except queue.Empty:
                return False

        wait_until(arrived, timeout=15, what="the station's order over TLS")
        robot2.put("viewer_bridge/fleet/go2-1/cmd", b"forged")
        station.put("viewer_bridge/fleet/go2-1/cmd", b"marker")
        while (data := got.get(timeout=10)) != b"marker":
            assert data == b"station", data  # retries' copies; never the forgery
        with pytest.raises(queue.Empty):
            got.get(timeout=0.5)
    finally:
        subscriber.undeclare()
        for session in (station, robot1, robot2, router):
            session.close()
