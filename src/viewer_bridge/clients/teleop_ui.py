"""The full-screen terminal teleop: a thin Textual shell around :class:`~viewer_bridge.clients.keys.KeyTeleop`.

Keys go to the key state machine, its actions go to an
:class:`~viewer_bridge.clients.client.AsyncViewerClient`, and the screen shows
what the bridge's status frames say (who drives, the command in force after
its limits next to the one sent, the e-stop, the round trip and speed factor,
who stopped you), the connection state and the bridge's last error. All the
driving rules (timeouts, resends, speed) live in :mod:`viewer_bridge.clients.keys`;
this module only moves events and draws.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import IO, Any, Final, cast

from rich.markup import escape
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.drivers.linux_driver import LinuxDriver
from textual.timer import Timer
from textual.widgets import Static

from viewer_bridge.clients.client import (
    AsyncViewerClient,
    ClientError,
    ConnectionState,
    NotConnected,
    ServerError,
    redact_url,
)
from viewer_bridge.clients.keys import Action, KeyTeleop, SendEstop, SendEstopClear, SendStop, SendTwist, StopWhy
from viewer_bridge.clients.safety_http import offline_robots, post_safety, unseen_note
from viewer_bridge.clients.send import describe_estop
from viewer_bridge.core.protocol import Axes, Status

__all__ = ["TeleopApp"]

HELP: Final = (
    "[b]W[/b]/[b]S[/b] forward/back   [b]Q[/b]/[b]E[/b] left/right   [b]A[/b]/[b]D[/b] turn   "
    "[b]Shift[/b] x2   [b]+[/b]/[b]-[/b] speed\n"
    "[b]Space[/b] stop   [b]X[/b] latch E-STOP   [b]Ctrl-R[/b] then [b]Y[/b] release it   "
    "[b]Esc[/b] or [b]Ctrl-C[/b] quit (sends stop)"
)
# What the teleop sends as the e-stop's reason, so other operators see where it came from.
ESTOP_REASON: Final = "X key in the terminal teleop"
_STATE_STYLE: Final = {
    ConnectionState.IDLE: "dim",
    ConnectionState.CONNECTING: "yellow",
    ConnectionState.CONNECTED: "green",
    ConnectionState.DISCONNECTED: "red",
    ConnectionState.CLOSED: "red",
}


class _TolerantOutput:
    """The terminal as a file whose writes never raise.

    When the terminal hangs up (the SSH session dropped) a write fails with
    EIO. Textual writes from a thread through a bounded queue; that thread
    dies on the error, the queue fills, and the next write blocks the event
    loop for good, so the stop on SIGHUP could never be sent. Writes to a
    terminal that is gone are dropped instead.
    """

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._file.write(text)
            except OSError:
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._file.flush()
            except OSError:
                self.broken = True

    def fileno(self) -> int:
        return self._file.fileno()

    def isatty(self) -> bool:
        return True


class _HangupSafeDriver(LinuxDriver):
    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        if self._file is not None:
            self._file = cast(Any, _TolerantOutput(self._file))


class TeleopApp(App[int]):
    """Drive from the terminal. ``exit`` code: 0 on quit, 128+signal when a signal ended it."""

    CSS = """
    Screen { padding: 0 1; }
    #title { text-style: bold; }
    #connection, #driver, #command, #keys, #error { height: auto; margin-top: 1; }
    #estop { height: auto; margin-top: 1; background: $error; color: $text; text-style: bold; padding: 0 1; }
    #estop.hidden { display: none; }
    #help { dock: bottom; height: auto; color: $text-muted; }
    """
    ENABLE_COMMAND_PALETTE = False
    # Priority bindings run before any widget sees the key. Ctrl-C arrives as
    # a key (the terminal is in raw mode), not as SIGINT. Textual's own
    # Ctrl-Q also runs the "quit" action, which is overridden below.
    BINDINGS = [
        Binding("ctrl+c", "quit", "quit", priority=True),
        Binding("escape", "quit", "quit", priority=True),
        Binding("ctrl+r", "release_estop", "release the e-stop", priority=True),
    ]

    def __init__(self, client: AsyncViewerClient, keys: KeyTeleop, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if self.driver_class is LinuxDriver:
            self.driver_class = _HangupSafeDriver
        self.client = client
        self.keys = keys
        self.clock = clock
        self.twists_sent = 0
        self.stops_sent = 0
        self.last_action: Action | None = None
        self.note = ""
        self.last_error: ServerError | None = None
        self.last_error_at = ""
        self.status: Status | None = None
        self._timer: Timer | None = None
        self._quitting = False
        # Stops and e-stops on their way over HTTP: awaited at quit, never in a key's handler.
        self._over_http_sent: set[asyncio.Task[str]] = set()
        # What became of those still on their way at quit: the screen is gone by then.
        self.exit_notes: list[str] = []
        self._drawn = False  # widgets exist (callbacks may come before)

    def compose(self) -> ComposeResult:
        yield Static(f"viewer-bridge teleop  {escape(redact_url(self.client.url))}", id="title")
        yield Static(id="connection")
        yield Static(id="estop", classes="hidden")
        yield Static(id="driver")
        yield Static(id="command")
        yield Static(id="keys")
        yield Static(id="error")
        yield Static(HELP, id="help")

    def on_mount(self) -> None:
        self._drawn = True
        self.redraw()

    def on_unmount(self) -> None:
        self._drawn = False

    # -- inputs -----------------------------------------------------------

    async def on_key(self, event: events.Key) -> None:
        char = event.character
        if char is None or not char.isprintable():
            return
        event.stop()
        await self.perform(self.keys.key(char, self.clock()))

    async def on_app_blur(self, event: events.AppBlur) -> None:
        # The terminal stops sending our keys' repeats (and a release would go
        # to another window): stop now rather than after the key timeout.
        await self.perform(self.keys.halt(StopWhy.FOCUS_LOST))

    async def action_release_estop(self) -> None:
        """Ctrl-R: ask before releasing the e-stop (Y confirms)."""
        status = self.status
        if status is not None and status.estop is None:
            self.keys.cancel_release()
            self.note = "the e-stop is not latched: nothing to release"
        else:
            self.keys.ask_release(self.clock())
            self.note = ""
        self._arm()
        self.redraw()

    async def action_quit(self) -> None:
        """Every way to quit goes through here, so the stop is never skipped."""
        await self.quit_teleop(0)

    async def quit_teleop(self, code: int) -> None:
        if self._quitting:
            return
        self._quitting = True
        await self.perform(self.keys.halt(StopWhy.QUIT))
        if self._over_http_sent:
            # Each is bounded by post_safety's timeout; quitting must not drop an e-stop on its way.
            self.note = "quitting once the bridge answers what went over HTTP"
            self.redraw()
            done, _ = await asyncio.wait(self._over_http_sent)
            self.exit_notes = [task.result() for task in done]
        self.exit(code)

    async def _on_timer(self) -> None:
        self._timer = None
        await self.perform(self.keys.tick(self.clock()))

    # Client callbacks: they run on this app's event loop.

    def server_error(self, error: ServerError) -> None:
        self.last_error = error
        self.last_error_at = time.strftime("%H:%M:%S")
        self.redraw()

    def connection_state(self, state: ConnectionState) -> None:
        if state is not ConnectionState.CONNECTED:
            self.status = None
        self.redraw()

    def bridge_status(self, status: Status) -> None:
        self.status = status
        if status.estop is None and self.keys.release_asked:
            self.keys.cancel_release()  # someone else released it meanwhile
        self.redraw()

    # -- outputs ------------------------------------------------------------

    async def perform(self, action: Action | None) -> None:
        """Send what the key machine asked for, then re-arm the timer and redraw."""
        if action is not None:
            try:
                if isinstance(action, SendTwist):
                    twist = action.twist
                    await self.client.twist(linear_x=twist.linear.x, linear_y=twist.linear.y, angular_z=twist.angular.z)
                    self.twists_sent += 1
                elif isinstance(action, SendStop):
                    await self.client.stop()
                    self.stops_sent += 1
                elif isinstance(action, SendEstop):
                    await self.client.estop(ESTOP_REASON)
                else:
                    await self.client.estop_clear()
                self.note = ""
            except NotConnected as exc:
                explicit = isinstance(action, SendEstop) or (
                    isinstance(action, SendStop) and action.why is StopWhy.SPACE
                )
                self.note = self._over_http(action) if explicit else f"not sent: {exc}"
            except ClientError as exc:
                self.note = f"not sent: {exc}"
            self.last_action = action
        self._arm()
        self.redraw()

    def _over_http(self, action: Action) -> str:
        """Not connected: Space's stop or X's e-stop goes as ``POST /stop`` or ``/estop`` (docs/clients.md).

        Only those two: a stop for a key let go would, from outside this
        session, stop whoever drives now. The request runs beside the keys,
        so a host that does not answer holds up nothing but its own note.
        """
        stop = isinstance(action, SendStop)
        path, body, what = ("/stop", None, "stop") if stop else ("/estop", {"reason": ESTOP_REASON}, "e-stop")

        async def send() -> str:
            try:
                answer = await post_safety(
                    self.client.url, path, token=self.client.token, ssl=self.client.ssl, body=body
                )
            except ClientError as exc:
                self.note = f"not connected, and the {what} over HTTP failed: {exc}"
            else:
                if stop:
                    self.stops_sent += 1
                self.note = f"not connected: the {what} went over HTTP (POST {path})"
                unseen = offline_robots(answer)
                if unseen:
                    # First, and short: the status line is narrow, and this is what the operator must see.
                    self.note = f"{unseen_note(unseen, what, short=True)}; it went over HTTP (POST {path})"
            self.redraw()
            return self.note

        task = asyncio.create_task(send())
        self._over_http_sent.add(task)
        task.add_done_callback(self._over_http_sent.discard)
        return f"not connected: sending the {what} over HTTP (POST {path})..."

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        deadline = self.keys.next_deadline()
        if deadline is not None and not self._quitting:
            self._timer = self.set_timer(max(0.0, deadline - self.clock()), self._on_timer)

    def redraw(self) -> None:
        if not self._drawn:
            return
        state = self.client.state
        connection = f"[{_STATE_STYLE[state]}]{state.value}[/]"
        if state is not ConnectionState.CONNECTED and self.client.last_connect_error is not None:
            connection += f"  [dim]{escape(str(self.client.last_connect_error))}[/]"
        self.query_one("#connection", Static).update(f"Connection  {connection}{self._link_text()}")
        banner = self.query_one("#estop", Static)
        estop_text = self._estop_text()
        banner.set_class(not estop_text, "hidden")
        banner.update(estop_text)
        self.query_one("#driver", Static).update(self._driver_text())
        self.query_one("#command", Static).update(self._command_text())
        held = self.keys.held or "-"
        self.query_one("#keys", Static).update(
            f"Keys held   {escape(held)}    Speed {self.keys.speed * 100:.0f}%    "
            f"Sent {self.twists_sent} twists, {self.stops_sent} stops"
        )
        if self.last_error is not None:
            error = self.last_error
            text = f"[red]Bridge error[/] {self.last_error_at}  [b]{escape(error.reason)}[/]: {escape(error.detail)}"
        else:
            text = "Bridge error  [dim]none[/]"
        self.query_one("#error", Static).update(text)

    def _link_text(self) -> str:
        status = self.status
        if status is None or (status.rtt_ms is None and status.speed_factor is not None):
            return ""
        factor = status.speed_factor
        speed = "[b red]too slow to drive[/]" if factor is None else f"speed x{factor:.2f}"
        rtt = "-" if status.rtt_ms is None else f"{status.rtt_ms:.0f}"
        return f"    RTT {rtt} ms    {speed}"

    def _estop_text(self) -> str:
        status = self.status
        release = "Y: RELEASE it (any other key cancels)" if self.keys.release_asked else "Ctrl-R then Y to release"
        if status is None or status.estop is None:
            if self.keys.release_asked:
                return f"Release the e-stop? {release}"
            return ""
        return f"{escape(describe_estop(status.estop))}\n{release}"

    def _driver_text(self) -> str:
        status = self.status
        if status is None:
            return "Driver      [dim]unknown (no status from the bridge)[/]"
        if status.you_drive:
            text = f"Driver      [b green]you[/] ({escape(status.you)})"
        elif status.driver is not None:
            text = f"Driver      [b yellow]{escape(status.driver)}[/] (you are {escape(status.you)})"
        else:
            text = f"Driver      nobody (you are {escape(status.you)})"
        if status.deadman_remaining_s is not None:
            text += f"    deadman {status.deadman_remaining_s:.1f} s"
        if status.stopped_by is not None and self.keys.moving:
            # Only while this terminal tries to drive: its stop (a key let go, Space) is the release.
            who = "your e-stop" if status.stopped_by == status.you else escape(status.stopped_by)
            text += f"\n            [b yellow]Stopped by {who}[/]: let go (or Space) to drive again"
        return text

    def _command_text(self) -> str:
        text = self._sending_text()
        status = self.status
        if status is not None:
            applied = status.command
            if applied is None:
                text += "\nIn force    [dim]nothing (the robot is stopped)[/]"
            else:
                # Under the line above, to compare: the bridge's, after its limits (and whoever drives).
                text += f"\nIn force    [b]twist[/]  {_axes(applied)}"
        if self.note:
            text += f"\n            [yellow]{escape(self.note)}[/]"
        return text

    def _sending_text(self) -> str:
        sent = self.keys.sent
        if sent is not None:
            text = (
                f"Sending     [b green]twist[/]  linear_x {sent.linear.x:+.2f}  linear_y {sent.linear.y:+.2f}  "
                f"angular_z {sent.angular.z:+.2f}"
            )
        elif isinstance(self.last_action, SendStop):
            text = f"Sending     [b red]stop[/] ({escape(self.last_action.why)}); idle"
        elif isinstance(self.last_action, SendEstop):
            text = "Sending     [b red]e-stop[/]; idle"
        elif isinstance(self.last_action, SendEstopClear):
            text = "Sending     [b]e-stop release[/]; idle"
        else:
            text = "Sending     [dim]nothing; idle[/]"
        return text


def _axes(command: Axes) -> str:
    return (
        f"linear_x {command.linear_x:+.2f}  linear_y {command.linear_y:+.2f}  angular_z {command.angular_z:+.2f}"
    )
