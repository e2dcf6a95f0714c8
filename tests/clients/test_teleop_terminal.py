"""``viewer-bridge teleop`` driven in a real terminal (tmux) against a live bridge.

Keys are typed with ``tmux send-keys``, the screen is read with
``capture-pane``, and the assertions are on what the bridge published. A
held key is imitated the way a terminal reports one: a first press, a gap
like the OS key-repeat delay, then repeats. The pacing waits on the
teleop's own 10 Hz re-sends arriving at the bridge, not on sleeps.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.bus.transports.bus_support import require_zenoh
from tests.conftest import UNSEEN_ROBOT_STATION, Recorder, require_binary, wait_until
from viewer_bridge import Bool, RerunWebSocketServer
from viewer_bridge.clients.client import ServerError, ViewerClient
from viewer_bridge.core.messages import Twist, Vector3

BridgeFactory = Callable[..., tuple[RerunWebSocketServer, Recorder]]

# What a terminal sends when it loses focus (xterm focus reporting, CSI O).
FOCUS_OUT = b"\x1b[O"


def stops(server: RerunWebSocketServer, cause: str) -> int:
    """Zero twists the bridge published for ``cause`` ("stop" = an explicit stop, "disconnect", "deadman")."""
    return server.snapshot().zeros.get(cause, 0)


def drive(linear_x: float = 0.0, linear_y: float = 0.0, angular_z: float = 0.0) -> Twist:
    return Twist(Vector3(linear_x, linear_y, 0.0), Vector3(0.0, 0.0, angular_z))


class Terminal:
    """A private tmux server (its own socket, so parallel runs never meet) running one command in a pane."""

    def __init__(self, tmux: str, tmp_path: Path, command: list[str]) -> None:
        self.tmux = tmux
        self.socket = f"vb-teleop-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        config = tmp_path / "tmux.conf"
        # remain-on-exit keeps the pane (and its exit status) after the program ends.
        config.write_text("set -g remain-on-exit on\nset -g focus-events on\n")
        env = {k: v for k, v in os.environ.items() if k != "TMUX"}
        self._run("-f", str(config), "new-session", "-d", "-x", "100", "-y", "30", shlex.join(command), env=env)
        self.pid = int(self._run("display-message", "-p", "#{pane_pid}").strip())

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [self.tmux, "-L", self.socket, *args], capture_output=True, text=True, timeout=10, env=env, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def keys(self, *keys: str) -> None:
        self._run("send-keys", *keys)

    def raw(self, data: bytes) -> None:
        self._run("send-keys", "-H", *(f"{byte:02x}" for byte in data))

    def screen(self) -> str:
        return self._run("capture-pane", "-p")

    def output(self) -> str:
        """Everything the pane shows and scrolled past, each wrapped line joined back into one."""
        return self._run("capture-pane", "-p", "-J", "-S", "-")

    def wait_screen(self, text: str, timeout: float = 20.0) -> str:
        screen = ""

        def shown() -> bool:
            nonlocal screen
            screen = self.screen()
            return text in screen

        try:
            wait_until(shown, timeout, interval=0.02, what=f"{text!r} on the screen")
        except AssertionError:
            raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}") from None
        return screen

    def exit_status(self) -> int | None:
        """The program's exit status (negative: killed by that signal), or None while it runs."""
        line = self._run("display-message", "-p", "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}")
        dead, status, signal = line.strip().split(":")
        if dead == "1" and status:
            return int(status)
        if dead == "1" and signal:
            return -int(signal)
        # tmux 3.3 at times closes a pane's terminal and then leaves the
        # process unreaped (a zombie, status never shown): read it from /proc.
        return _zombie_status(self.pid)

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            wait_until(lambda: self.exit_status() is not None, timeout, interval=0.02, what="the teleop to exit")
        except AssertionError:
            raise AssertionError(f"the teleop did not exit; the screen:\n{self.screen()}") from None
        status = self.exit_status()
        assert status is not None
        return status

    def close(self) -> None:
        """End tmux (the pane gets SIGHUP) and wait for the program in it to be gone."""
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)
        wait_until(lambda: not _alive(self.pid), 10.0, interval=0.02, what=f"pid {self.pid} to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _zombie_status(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "Z":
        return None
    raw = int(fields[49])  # field 52, exit_code, in waitpid's encoding (proc(5))
    return (raw >> 8) & 0xFF if raw & 0x7F == 0 else -(raw & 0x7F)


TeleopFactory = Callable[..., Terminal]


@pytest.fixture
def teleop(tmp_path: Path) -> Iterator[TeleopFactory]:
    """Start ``viewer-bridge teleop --url URL ...`` in a fresh terminal; closed at the end of the test."""
    tmux = require_binary("tmux")
    terminals: list[Terminal] = []

    def start(url: str, *options: str) -> Terminal:
        command = [sys.executable, "-m", "viewer_bridge", "teleop", "--url", url, *options]
        folder = tmp_path / f"term{len(terminals)}"
        folder.mkdir()
        terminal = Terminal(tmux, folder, command)
        terminals.append(terminal)
        return terminal

    yield start
    for terminal in terminals:
        terminal.close()


def test_a_tap_drives_then_one_stop_follows_the_key_timeout(
    bridge: tuple[RerunWebSocketServer, Recorder], teleop: TeleopFactory
) -> None:
    server, rec = bridge
    term = teleop(server.websocket_url())
    term.wait_screen("connected")
    term.keys("w")
    wait_until(lambda: Twist.zero() in rec.twists, 10, what="the stop after the key timeout")
    *moving, last = rec.twists
    assert last == Twist.zero()
    assert moving and all(t == drive(0.5) for t in moving)
    times = [at for stream, _, at in rec.items if stream == "tele_cmd_vel"]
    # Driven for the first-press timeout (0.8 s), re-sent at 10 Hz meanwhile.
    assert 0.7 <= times[-1] - times[0] <= 1.6
    assert 4 <= len(moving) <= 10  # exact counts are the keymap unit tests' job
    assert stops(server, "stop") == 1
    screen = term.wait_screen("stop (key released)")
    assert "Sent" in screen
    term.keys("Escape")
    assert term.wait_exit() == 0
    assert rec.twists[-1] == Twist.zero() and len(rec.twists) == len(moving) + 1  # idle quit sends nothing


def test_a_held_key_drives_without_flapping_then_stops_once(
    bridge: tuple[RerunWebSocketServer, Recorder], teleop: TeleopFactory
) -> None:
    server, rec = bridge
    # Timeouts four times the defaults: the test paces key repeats through
    # tmux, which a loaded machine can delay past 0.5 s; the exact default
    # boundaries are tested with a fake clock in tests/clients/test_keys.py.
    term = teleop(server.websocket_url(), "--key-timeout", "2.0", "--first-timeout", "3.2")
    term.wait_screen("connected")
    term.keys("w")
    # The OS repeat delay: ~0.5 s with no repeat (the teleop's 10 Hz re-sends show time passing).
    rec.wait_twists(6)
    for _ in range(10):  # auto-repeats, each after one more re-send (~0.1 s apart)
        count = len(rec.twists)
        # The teleop reads this key after now, so its key timeout cannot end before now + 2 s.
        last_key = time.monotonic()
        term.keys("w")
        rec.wait_twists(count + 1)
    wait_until(lambda: Twist.zero() in rec.twists, 10, what="the stop after release")
    *moving, last = rec.twists
    assert last == Twist.zero()
    assert all(t == drive(0.5) for t in moving), "a zero while the key was held: stop/start flapping"
    stopped_at = rec.items[-1][2]
    assert stopped_at - last_key >= 2.0  # the 2 s key timeout after the last repeat
    assert stops(server, "stop") == 1 and stops(server, "deadman") == 0


def test_shift_combining_speed_and_space(bridge: tuple[RerunWebSocketServer, Recorder], teleop: TeleopFactory) -> None:
    server, rec = bridge
    # Long key timeouts, so only Space can have stopped it.
    term = teleop(server.websocket_url(), "--key-timeout", "20", "--first-timeout", "20")
    term.wait_screen("connected")
    term.keys("W")
    wait_until(lambda: drive(1.0) in rec.twists, what="shift doubling")
    term.keys("a")
    wait_until(lambda: drive(1.0, angular_z=0.8) in rec.twists, what="W+A combined")
    term.wait_screen("linear_x +1.00  linear_y +0.00  angular_z +0.80")
    term.keys("Space")
    wait_until(lambda: rec.twists[-1] == Twist.zero(), what="the stop on Space")
    assert stops(server, "stop") == 1
    term.wait_screen("stop (space)")
    term.keys("+", "e")
    wait_until(lambda: drive(linear_y=-0.55) in rec.twists, what="speed 110%")
    term.wait_screen("Speed 110%")
    term.keys("Space")
    wait_until(lambda: stops(server, "stop") == 2, what="the second stop")
    assert set(rec.twists) == {drive(1.0), drive(1.0, angular_z=0.8), drive(linear_y=-0.55), Twist.zero()}


@pytest.mark.parametrize("quit_key", ["C-c", "Escape", "C-q"])
def test_quitting_while_driving_sends_stop(
    bridge: tuple[RerunWebSocketServer, Recorder], teleop: TeleopFactory, quit_key: str
) -> None:
    server, rec = bridge
    term = teleop(server.websocket_url(), "--first-timeout", "20")
    term.wait_screen("connected")
    term.keys("d")
    rec.wait_twists(1)
    term.keys(quit_key)
    assert term.wait_exit() == 0
    wait_until(lambda: rec.twists[-1] == Twist.zero(), what="the stop on quit")
    assert stops(server, "stop") == 1  # sent by the teleop, not the bridge's disconnect deadman
    assert stops(server, "disconnect") == 0
    assert set(rec.twists) == {drive(angular_z=-0.8), Twist.zero()}


def test_losing_focus_sends_stop_and_keeps_running(
    bridge: tuple[RerunWebSocketServer, Recorder], teleop: TeleopFactory
) -> None:
    server, rec = bridge
    term = teleop(server.websocket_url(), "--first-timeout", "20")
    term.wait_screen("connected")
    term.keys("q")
    rec.wait_twists(1)
    term.raw(FOCUS_OUT)
    wait_until(lambda: rec.twists[-1] == Twist.zero(), what="the stop on focus loss")
    assert stops(server, "stop") == 1
    term.wait_screen("stop (focus lost)")
    assert term.exit_status() is None
    term.keys("s")  # focus back (or not): keys drive again
    wait_until(lambda: drive(-0.5) in rec.twists, what="driving again")


def test_the_terminal_going_away_sends_stop(
    bridge: tuple[RerunWebSocketServer, Recorder], teleop: TeleopFactory
) -> None:
    server, rec = bridge
    term = teleop(server.websocket_url(), "--first-timeout", "20")
    term.wait_screen("connected")
    term.keys("w")
    rec.wait_twists(1)
    term.close()  # like an SSH session dropping: SIGHUP
    wait_until(lambda: rec.twists[-1] == Twist.zero(), what="the stop on SIGHUP")
    assert stops(server, "stop") == 1 and stops(server, "disconnect") == 0


def test_shows_the_bridges_errors(bridge: tuple[RerunWebSocketServer, Recorder], teleop: TeleopFactory) -> None:
    server, rec = bridge
    term = teleop(server.websocket_url())
    term.wait_screen("Bridge error  none")
    with ViewerClient(server.websocket_url()) as other:
        other.twist(linear_x=0.1)
        other.sync()
        term.keys("w")
        term.wait_screen("not_driver: #0002 is driving")
        other.stop()
    rec.wait_twists(2)
    # While #0002 drove, the refused key moved nothing. After the stop the lease is free, and whether the
    # teleop still counts w as held then (it re-sends for a moment after a press) is timing: a drive of
    # its own may follow, and that is not what this test is about.
    assert rec.twists[:2] == [drive(0.1), Twist.zero()]


def test_shows_the_connection_state_while_no_bridge_answers(teleop: TeleopFactory) -> None:
    with socket.socket() as held:  # bound, never listening
        held.bind(("127.0.0.1", 0))
        term = teleop(f"ws://127.0.0.1:{held.getsockname()[1]}/ws?token=hunter2")
        screen = term.wait_screen("Connection refused")
        assert "hunter2" not in screen and "token=***" in screen
        term.keys("w")
        term.wait_screen("not sent: not connected")
        term.keys("C-c")
        assert term.wait_exit() == 0


def test_not_connected_space_and_x_still_stop_over_http(bridge_factory: BridgeFactory, teleop: TeleopFactory) -> None:
    server, rec = bridge_factory(max_connections=1, deadman_timeout=30)
    with ViewerClient(server.websocket_url()) as driver:  # the one connection the bridge takes
        driver.twist(linear_x=0.5)
        driver.sync()
        term = teleop(server.websocket_url())
        term.wait_screen("connection limit reached")  # its upgrade got 503
        term.keys("w")
        term.wait_screen("not sent: not connected")  # a drive key is not sent another way
        term.keys("Space")
        term.wait_screen("not connected: the stop went over HTTP (POST /stop)")
        rec.wait_twists(2)
        term.keys("x")
        term.wait_screen("not connected: the e-stop went over HTTP (POST /estop)")
        wait_until(lambda: rec.of("estop") == [Bool(True)], what="the e-stop latched")
        assert server.snapshot().clients == 1
    assert rec.twists[:2] == [drive(linear_x=0.5), Twist.zero()] and stops(server, "stop") == 1
    term.keys("Escape")
    assert term.wait_exit() == 0



def test_a_stop_over_http_to_a_robot_the_station_does_not_see_says_it_may_not_reach_it(
    bridge_factory: BridgeFactory, teleop: TeleopFactory
) -> None:
    require_zenoh()
    # go2-2's agent never comes: the station publishes the stop, but cannot say the robot heard it.
    server, _ = bridge_factory(**UNSEEN_ROBOT_STATION)
    with ViewerClient(server.websocket_url()):  # the one connection the station takes
        term = teleop(server.websocket_url() + "?robot=go2-2")
        term.wait_screen("connection limit reached")
        term.keys("Space")
        screen = term.wait_screen("go2-2 is offline: the stop may not reach it")
        assert "it went over HTTP (POST /stop)" in " ".join(screen.split()), screen  # however it wraps
        assert "/ws?robot=go2-2" in screen, screen  # which robot, in the header: a name is no secret
    term.keys("Escape")
    assert term.wait_exit() == 0


@pytest.fixture
def silent_host() -> Iterator[socket.socket]:
    """Listening but never accepting: the kernel completes each connection, then nobody speaks, so an
    upgrade and a POST both wait for an answer. Closing it resets the connections still waiting."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    with sock:
        yield sock


def _teleop_to(teleop: TeleopFactory, silent: socket.socket) -> Terminal:
    term = teleop(f"ws://127.0.0.1:{silent.getsockname()[1]}/ws", "--first-timeout", "20")
    term.wait_screen("connecting")
    return term


def test_a_stop_over_http_to_a_host_that_does_not_answer_holds_up_no_key(
    teleop: TeleopFactory, silent_host: socket.socket
) -> None:
    term = _teleop_to(teleop, silent_host)
    term.keys("Space")
    term.wait_screen("not connected: sending the stop over HTTP (POST /stop)...")
    # The stop is still on its way, yet the next key is handled.
    term.keys("+")
    assert "sending the stop over HTTP (POST /stop)..." in term.wait_screen("Speed 110%")
    silent_host.close()  # the stop fails, and says so
    term.wait_screen("not connected, and the stop over HTTP failed")
    term.keys("Escape")
    assert term.wait_exit() == 0


def test_quitting_waits_for_an_estop_still_on_its_way_over_http(
    teleop: TeleopFactory, silent_host: socket.socket
) -> None:
    term = _teleop_to(teleop, silent_host)
    term.keys("x")
    term.wait_screen("sending the e-stop over HTTP (POST /estop)...")
    term.keys("Escape")
    term.wait_screen("quitting once the bridge answers what went over HTTP")
    silent_host.close()
    assert term.wait_exit() == 0
    # The full screen is gone; what became of the e-stop is printed after it.
    assert "viewer-bridge teleop: not connected, and the e-stop over HTTP failed: " in term.output()


# -- operator control: the e-stop, the status lines ------------------------------------------


def test_x_latches_the_estop_and_releasing_takes_ctrl_r_then_y(
    bridge: tuple[RerunWebSocketServer, Recorder], teleop: TeleopFactory
) -> None:
    server, rec = bridge
    term = teleop(server.websocket_url(), "--first-timeout", "20")
    term.wait_screen("connected")
    term.keys("w")
    rec.wait_twists(1)
    term.keys("x")
    wait_until(lambda: rec.of("estop") == [Bool(True)], what="the e-stop latched")
    assert rec.twists[-1] == Twist.zero() and stops(server, "estop") == 1
    term.wait_screen("e-stop LATCHED by #0001 at ")
    term.wait_screen(": X key in the terminal teleop")
    term.wait_screen("Ctrl-R then Y to release")
    # Other clients are refused while it holds.
    with ViewerClient(server.websocket_url()) as other:
        other.twist(linear_x=0.1)
        with pytest.raises(ServerError, match="estopped: e-stop latched by #0001"):
            other.sync()
    # Y alone does nothing; then a drive key is refused, which shows the Y was handled first.
    term.keys("y", "d")
    term.wait_screen("estopped: e-stop latched by #0001")
    # Ctrl-R opens the prompt, any other key cancels it.
    term.keys("C-r")
    term.wait_screen("Y: RELEASE it (any other key cancels)")
    term.keys("z")
    term.wait_screen("Ctrl-R then Y to release")
    assert server.server.safety.estop is not None and rec.of("estop") == [Bool(True)]
    term.keys("C-r")
    term.wait_screen("Y: RELEASE it")
    term.keys("y")
    wait_until(lambda: rec.of("estop") == [Bool(True), Bool(False)], what="the release")
    wait_until(lambda: "LATCHED" not in term.screen(), what="the banner gone")
    term.keys("Escape")
    assert term.wait_exit() == 0


def test_status_lines_show_the_driver_the_command_in_force_and_who_stopped_you(
    bridge_factory: Callable[..., tuple[RerunWebSocketServer, Recorder]], teleop: TeleopFactory
) -> None:
    server, rec = bridge_factory(max_linear_x=0.3)
    term = teleop(server.websocket_url(), "--first-timeout", "20", "--key-timeout", "20")
    term.wait_screen("Driver      nobody (you are #0001)")
    term.keys("w")
    # What was sent (0.5), and what is in force after the bridge's limit (0.3).
    term.wait_screen("In force    twist  linear_x +0.30  linear_y +0.00  angular_z +0.00")
    term.wait_screen("Sending     twist  linear_x +0.50")
    term.wait_screen("Driver      you (#0001)")
    term.wait_screen("speed x1.00")
    assert "RTT " in term.screen()
    # Someone else's stop lasts: the held key is refused until it is let go.
    with ViewerClient(server.websocket_url()) as other:
        other.stop()
        other.sync()
        term.wait_screen("Stopped by #0002: let go (or Space) to drive again")
        term.wait_screen("stopped_by_other: #0002 stopped you")
        assert rec.twists.count(Twist.zero()) == 1 and rec.twists[-1] == Twist.zero()
        term.keys("Space")  # let go (a stop: it publishes its one zero too)
        wait_until(lambda: stops(server, "stop") == 2, what="the teleop's own stop")
        term.wait_screen("Sending     stop (space)")
        # Another client drives: its name and its command are shown.
        other.twist(linear_x=0.2)
        other.sync()
        term.wait_screen("Driver      #0002 (you are #0001)")
        term.wait_screen("In force    twist  linear_x +0.20  linear_y +0.00  angular_z +0.00")
        other.stop()
    term.keys("w")
    term.wait_screen("Driver      you (#0001)")
    term.keys("Space")
    wait_until(lambda: rec.twists[-1] == Twist.zero(), what="the last stop")
