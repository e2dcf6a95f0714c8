"""A user-space TCP proxy that delays every byte by a fixed time each way: a slow link on loopback.

This machine's kernel has no ``netem``, so link tests put this between a
client and the bridge instead. It listens on an ephemeral loopback port, and
for each connection dials the target and forwards bytes both ways; each
chunk read is written out ``delay`` seconds (plus up to ``jitter``, never
reordering) after it arrived. Bandwidth is not limited, so a round trip
through it takes twice ``delay`` plus what the two ends take::

    with DelayProxy(("127.0.0.1", bridge.bound_port), delay=0.15) as proxy:
        ViewerClient(proxy.url("/ws"))  # a 300 ms round trip to the bridge

The proxy runs its own event loop on a thread (``delay-proxy``) and stops
it, with every connection, in :meth:`DelayProxy.stop`. End-of-stream is
forwarded after the same delay, so a close travels like the data before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self

__all__ = ["DelayProxy"]

_CHUNK = 64 * 1024


class DelayProxy:
    """Forwards loopback TCP to ``target`` (host, port), ``delay`` seconds late each way (plus ``jitter`` at most)."""

    def __init__(
        self,
        target: tuple[str, int],
        delay: float,
        jitter: float = 0.0,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        if delay < 0 or jitter < 0:
            raise ValueError(f"delay and jitter must be >= 0, got {delay!r} / {jitter!r}")
        self.target = target
        self.delay = delay
        self.jitter = jitter
        self._random = random_source
        self.port = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=loop.run_forever, name="delay-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        """A URL that reaches the target through the proxy."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    # -- forwarding -------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._spawn(self._connection(client_reader, client_writer, server_reader, server_writer))

    async def _connection(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        server_reader: asyncio.StreamReader,
        server_writer: asyncio.StreamWriter,
    ) -> None:
        """Both directions until each has ended (or the proxy stops); then both sockets are closed."""
        writers = (client_writer, server_writer)
        self._writers.update(writers)
        try:
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        finally:
            for writer in writers:
                self._writers.discard(writer)
                writer.transport.abort()

    def _due(self, arrived: float, previous: float) -> float:
        extra = self.jitter * self._random() if self.jitter else 0.0
        # Never before the chunk ahead of it: TCP does not reorder.
        return max(arrived + self.delay + extra, previous)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read from one side and write to the other, each chunk ``delay`` after it was read."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:  # end of stream: pass the half-close on
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                writer.write(data)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

        sender = loop.create_task(deliver())
        previous = 0.0
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except ConnectionError:
                    data = b""
                previous = self._due(loop.time(), previous)
                queue.put_nowait((previous, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
