"""Attack tools for the security tests: raw HTTP requests from any loopback address, and a bridge in a child process.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a test can
play several hosts by choosing the source address of its sockets (the
bridge keeps its per-address accounts by that address).

:class:`ChildBridge` runs ``viewer-bridge serve`` in a child process, with a
real file-descriptor limit set by ``resource.setrlimit`` in that child before
the bridge starts, and all of its stderr (the log) kept for the test to read.
"""

from __future__ import annotations

import os
import re
import resource
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
TOKEN = "correct-horse-battery-staple-42"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def http(
    port: int,
    request: bytes | str,
    source: str | None = None,
    timeout: float = 5.0,
    tls: ssl.SSLContext | None = None,
    head_only: bool = False,
) -> Reply:
    """Send ``request`` exactly as given (a whole request head, maybe a body) and read the whole answer.

    ``head_only`` stops at the end of the response head (a 101 keeps the connection open).
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None)
    sock: socket.socket = tls.wrap_socket(raw, server_hostname="localhost") if tls is not None else raw
    with sock:
        sock.sendall(request.encode("latin-1") if isinstance(request, str) else request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            if head_only and b"\r\n\r\n" in data:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.1 (\d{3})", lines[0])
    if match is None:
        raise AssertionError(f"no HTTP answer: {data[:200]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(match.group(1)), headers, body)


def get(port: int, target: str, host: str | None = None, extra: str = "", **kwargs: object) -> Reply:
    host = host if host is not None else f"127.0.0.1:{port}"
    return http(port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n", **kwargs)  # type: ignore[arg-type]


def upgrade_request(target: str, host: str, extra: str = "", version: str = "13") -> str:
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    )


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Wait until the other end closes ``sock`` (EOF or reset); False if it is still open after ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


@dataclass
class Tls:
    server_cert: Path
    server_key: Path
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    where = tmp_path_factory.mktemp("tls")
    cert_file, key_file = where / "cert.pem", where / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return Tls(cert_file, key_file, context)


_LAUNCH = """
import resource, runpy, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
sys.argv = ["viewer-bridge", *sys.argv[2:]]
runpy.run_module("viewer_bridge", run_name="__main__")
"""


class ChildBridge:
    """``viewer-bridge serve ARGS`` in a child process whose fd limit is ``fd_limit`` (0: inherited)."""

    def __init__(self, *args: str, fd_limit: int = 0, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(fd_limit), "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        found = wait_until(
            lambda: self._port() or self.proc.poll() is not None, timeout=30, what=lambda: f"the banner: {self.text}"
        )
        if self.proc.poll() is not None and not self._port():
            raise AssertionError(f"the bridge exited with {self.proc.returncode}: {self.text}")
        assert found
        self.port = int(self._port() or 0)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._lock:
                self.lines.append(raw.decode("utf-8", "backslashreplace"))

    def _port(self) -> str | None:
        match = re.search(r"--ws-url wss?://[^:\s]+:(\d+)/", self.text)
        return match.group(1) if match else None

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def open_fds(self) -> int:
        """Descriptors the bridge process holds now."""
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return 0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return self.proc.returncode


@pytest.fixture
def child_bridge() -> Iterator[type[ChildBridge]]:
    started: list[ChildBridge] = []

    class Tracked(ChildBridge):
        def __init__(self, *args: str, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Tracked
    for bridge in started:
        bridge.stop()


@pytest.fixture
def many_fds() -> None:
    """Let this process hold a few thousand sockets (an attacker's), whatever its soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Sockets:
    """TCP connections an attacker holds open, from chosen source addresses, each with a request it never ends."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self._sent: set[socket.socket] = set()

    def open(self, port: int, count: int, sources: list[str]) -> None:
        pending: list[socket.socket] = []
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((sources[i % len(sources)], 0))
            sock.setblocking(False)
            try:
                sock.connect_ex(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            pending.append(sock)
        self.socks.extend(pending)

    def established(self, timeout: float = 0.0, send: bytes = b"GET / HTTP/1.1\r\n") -> int:
        """How many of the sockets have completed their TCP handshake (waiting up to ``timeout`` for news).

        Each established socket sends ``send`` once (the start of a request it never finishes): a socket
        that never sends may be established only on the client's side (SYN cookies), never reaching
        the server; one with data in flight must be taken in.
        """
        with selectors.DefaultSelector() as selector:
            for sock in self.socks:
                selector.register(sock, selectors.EVENT_WRITE)
            ready = selector.select(timeout)
        count = 0
        for key, _ in ready:
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                continue
            count += 1
            if send and sock not in self._sent:
                self._sent.add(sock)
                try:
                    sock.send(send)
                except OSError:
                    pass
        return count

    def answered(self, timeout: float = 0.0) -> int:
        """How many of the sockets the server has answered or closed (they are readable)."""
        with selectors.DefaultSelector() as selector:
            for sock in self.socks:
                selector.register(sock, selectors.EVENT_READ)
            return len(selector.select(timeout))

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks.clear()
        self._sent.clear()


@pytest.fixture
def attacker(many_fds: None) -> Iterator[Sockets]:
    sockets = Sockets()
    yield sockets
    sockets.close()


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
