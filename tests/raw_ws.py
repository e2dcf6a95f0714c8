"""A raw WebSocket client on a plain socket: frames exactly as a test writes them, and never a read it did not ask for.

The ``websockets`` client is a well-behaved peer: it answers pings, reads
every frame the server sends and refuses to send malformed frames. Attack
tests need the opposite, so this speaks RFC 6455 by hand: the opening
handshake, then whatever bytes :func:`frame` builds (reserved bits, odd
opcodes, empty fragments, floods), with nothing read back unless asked.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import threading
from collections.abc import Iterable

__all__ = ["Flood", "RawClient", "frame"]


def frame(
    opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bytes = b"\x01\x02\x03\x04"
) -> bytes:
    """One masked client frame (RFC 6455 section 5.2); ``rsv`` is the 3 reserved bits as 0..7."""
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawClient:
    """A TCP connection that has done the WebSocket opening handshake on ``path``.

    ``source`` is the local address to connect from: any of 127.0.0.0/8 works
    on Linux loopback, so a test can play several hosts (the bridge keeps
    per-address accounts).
    """

    def __init__(
        self,
        port: int,
        path: str = "/ws",
        host: str = "127.0.0.1",
        timeout: float = 5.0,
        source: str | None = None,
        headers: str = "",
    ) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {head!r}")
            head += chunk
        self.response, _, self.leftover = head.partition(b"\r\n\r\n")
        if not self.response.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {self.response.decode(errors='replace')}")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> tuple[int, bytes]:
        """The next frame the server sent: ``(opcode, payload)`` (server frames are not masked)."""
        head = self._read(2)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        return opcode, self._read(length)

    def read_until(self, opcode: int) -> bytes:
        """The payload of the next frame with ``opcode``, skipping others (status frames, the bridge's pings)."""
        while True:
            got, payload = self.read_frame()
            if got == opcode:
                return payload

    def read_close(self) -> int | None:
        """Read until the server's close frame; its code (None if the connection ended without one)."""
        try:
            while True:
                opcode, payload = self.read_frame()
                if opcode == 8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except ConnectionError:
            return None

    def _read(self, n: int) -> bytes:
        data = self.leftover[:n]
        self.leftover = self.leftover[n:]
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Flood:
    """Threads that each open a :class:`RawClient` and send ``chunk`` over and over until stopped or cut off.

    ``sent`` counts the bytes written; ``ended`` says how each connection ended
    (``"stopped"``, or the error that cut it off).
    """

    def __init__(self, port: int, chunk: bytes, connections: int = 1, source: str | None = None) -> None:
        self.port = port
        self.chunk = chunk
        self.source = source
        self.stop_event = threading.Event()
        self.sent = 0
        self.ended: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(connections)]

    def _run(self) -> None:
        try:
            client = RawClient(self.port, timeout=2.0, source=self.source)
        except OSError as exc:
            with self._lock:
                self.ended.append(f"connect failed: {exc}")
            return
        how = "stopped"
        try:
            while not self.stop_event.is_set():
                try:
                    client.send(self.chunk)
                except TimeoutError:
                    continue  # the bridge is not reading us (backpressure): keep pushing until stopped
                with self._lock:
                    self.sent += len(self.chunk)
        except OSError as exc:
            how = f"cut off: {type(exc).__name__}"
        finally:
            client.close()
            with self._lock:
                self.ended.append(how)

    def start(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in self._threads), "a flood thread did not end"

    def __enter__(self) -> Flood:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def repeated(frames: Iterable[bytes], size: int = 64 * 1024) -> bytes:
    """``frames`` repeated into a buffer of about ``size`` bytes (one sendall's worth of flood)."""
    unit = b"".join(frames)
    return unit * max(1, size // len(unit))
