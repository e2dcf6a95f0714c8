"""What the lane and outlet tests share: a recording destination that can be held, a clock the test moves."""

from __future__ import annotations

import threading

from viewer_bridge.core.messages import Message, Twist, Vector3

CMD = "tele_cmd_vel"
ZERO = Twist.zero()


def twist(x: float) -> Twist:
    return Twist(Vector3(x, 0.0, 0.0), Vector3())


class Destination:
    """Records ``(stream, message)`` and its threads; ``hold()`` holds the next delivery until ``release()``."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Message]] = []
        self.threads: set[str] = set()
        self.failing: Exception | None = None
        self._gate = threading.Event()
        self._gate.set()
        self.waiting = threading.Event()  # set while a delivery waits at the gate

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, stream: str, message: Message) -> None:
        self.threads.add(threading.current_thread().name)
        if not self._gate.is_set():
            self.waiting.set()
            self._gate.wait(10)
            self.waiting.clear()
        if self.failing is not None:
            raise self.failing
        self.got.append((stream, message))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
