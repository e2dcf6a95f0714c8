"""Garbage thrown at a live bridge: random bytes, random frames, truncated handshakes. It must shrug it off."""

from __future__ import annotations

import math
import os
import random
import socket
import struct

from tests.conftest import BridgeFactory, client, twist
from viewer_bridge import Twist, Vector3

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def send_and_close(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(2)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # the bridge may reset a peer that sent garbage: that is fine


def test_garbage_does_not_hurt_the_bridge(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(max_message_size=4096)
    port = server.bound_port
    assert port is not None
    rng = random.Random(1234)
    with client(server) as bystander:
        bystander.send(twist(linear_x=0.1))
        rec.wait_twists(1)
        for i in range(60):
            kind = i % 4
            if kind == 0:  # raw random bytes instead of HTTP
                data = rng.randbytes(rng.randrange(1, 2000))
            elif kind == 1:  # a truncated handshake
                data = HANDSHAKE[: rng.randrange(1, len(HANDSHAKE))]
            elif kind == 2:  # a valid handshake, then random frames (some invalid)
                parts = [HANDSHAKE]
                for _ in range(rng.randrange(1, 8)):
                    opcode = rng.choice([0, 1, 2, 3, 8, 9, 10, 15])
                    payload = rng.choice(
                        [
                            rng.randbytes(rng.randrange(0, 200)),
                            b'{"type":"twist","linear_x":NaN}',
                            b'{"type":"click","x":1e999,"y":0,"z":0}',
                            b'{"type":"twist","linear_x":"fast"}',
                        ]
                    )
                    parts.append(
                        frame(opcode, payload, fin=rng.random() < 0.8, masked=rng.random() < 0.9,
                              rsv=rng.choice([0, 0, 0, 1, 4]))
                    )
                data = b"".join(parts)
            else:  # a valid handshake then random bytes
                data = HANDSHAKE + rng.randbytes(rng.randrange(1, 3000))
            send_and_close(port, data)
        # The bystander's connection survived and still drives.
        bystander.send(twist(linear_x=0.2))
        bystander.send('{"type":"stop"}')
        rec.wait_twists(3)
    assert rec.twists[:3] == [Twist(Vector3(0.1, 0, 0), Vector3()), Twist(Vector3(0.2, 0, 0), Vector3()), Twist.zero()]
    # Nothing non-finite was ever published; random frames are never valid commands.
    for message in rec.twists:
        assert all(math.isfinite(v) for v in (*message.linear, *message.angular))
    for point in rec.points:
        assert all(math.isfinite(v) for v in (point.x, point.y, point.z, point.ts))
    assert rec.points == []
    # A fresh client still works.
    with client(server) as fresh:
        fresh.send('{"type":"click","x":1,"y":2,"z":3}')
        point = rec.wait_points(1)[0]
    assert (point.x, point.y, point.z) == (1, 2, 3)
