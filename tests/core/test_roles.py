"""Roles and named tokens, sans I/O."""

from __future__ import annotations

import pytest

from viewer_bridge.core.auth import NamedToken, TokenTable, check_host
from viewer_bridge.core.connection import Connection, ConnectionLimits, Refusal
from viewer_bridge.core.protocol import Stop
from viewer_bridge.core.roles import Role, may_send

DRIVE_SECRET = "drive-secret-0123456789"
VIEW_SECRET = "view-secret-0123456789"


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        (Role.DRIVE, ["twist", "click", "stop", "estop", "estop_clear", "heartbeat"], []),
        (Role.STOP, ["stop", "estop", "estop_clear", "heartbeat"], ["twist", "click"]),
        (Role.VIEW, ["heartbeat"], ["twist", "click", "stop", "estop", "estop_clear"]),
    ],
)
def test_what_each_role_may_send(role: Role, allowed: list[str], refused: list[str]) -> None:
    assert all(may_send(role, kind) for kind in allowed)
    assert not any(may_send(role, kind) for kind in refused)


def test_a_connection_refuses_what_its_role_may_not_send_before_any_budget() -> None:
    conn = Connection(ConnectionLimits(rate=1, burst=1), 0.0, role=Role.STOP, name="safety-officer")
    for _ in range(3):
        result = conn.receive(1, True, b'{"type":"twist","linear_x":1}', 0.0)
        assert isinstance(result, Refusal) and result.reason == "forbidden"
    assert "token 'safety-officer' has role 'stop'" in result.detail
    assert not result.tell  # told once a second per kind
    assert conn.receive(1, True, b'{"type":"stop"}', 0.0) == Stop()


def test_the_table_names_whose_token_it_is() -> None:
    entries = [NamedToken("laptop", Role.DRIVE, DRIVE_SECRET), NamedToken("wall", Role.VIEW, VIEW_SECRET)]
    table = TokenTable(None, entries)
    found = table.match(["nope-nope-nope-nope", VIEW_SECRET])
    assert found is not None and (found.name, found.role, found.named) == ("wall", Role.VIEW, True)
    assert table.match([]) is None
    assert DRIVE_SECRET not in repr(table.principals) and "secret" not in repr(NamedToken("a", Role.VIEW, "s" * 16))


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:3030", True), ("[::1]:3030", True), ("localhost", True), ("10.0.0.2", True),
        ("robot.local:3030", True), ("rebind.attacker.example:3030", False), ("127.evil.example", False),
        ("localhost.attacker.example", False), ("", False), ("a:b:c", False),
    ],
)
def test_host_check(host: str, ok: bool) -> None:
    assert check_host(host, [], ["robot.local"]) is ok
