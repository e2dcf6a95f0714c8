// viewer-bridge browser client: teleop (keys, buttons, joystick, gamepad)
// over the bridge's WebSocket, plus the embedded Rerun viewer whose 3D clicks
// become `click` goals. The bridge's status frames drive the header (who
// drives, the command in force, the link) and the e-stop banner. No
// dependencies and no network beyond the bridge itself.
"use strict";

(async () => {
  // ---------------------------------------------------------------- config

  // A token arrives as ?token=… (a browser cannot put it in a WebSocket
  // header). It moves to this tab's sessionStorage at once and leaves the
  // address bar, so it is not in the history, a bookmark or a screenshot.
  const TOKEN_KEY = "viewer-bridge-token";
  const token = takeToken();
  // With tokens set, the bridge serves this page without its settings; they
  // come from /config, asked for with the token.
  const config = await loadConfig();
  const params = new URLSearchParams(location.search);
  // At a fleet station the page drives one robot, chosen with ?robot=NAME (the picker sets it).
  const robot = params.get("robot");
  // ?debug logs the Rerun viewer's events to the console (to see why a click sent no goal).
  const debug = params.has("debug");

  // The same keys and speeds as dimos-viewer's keyboard teleop (ROS axes:
  // +y is left, +z rotation is counter-clockwise, i.e. a left turn).
  const KEYS = {
    KeyW: ["linear_x", 0.5],
    KeyS: ["linear_x", -0.5],
    KeyQ: ["linear_y", 0.5],
    KeyE: ["linear_y", -0.5],
    KeyA: ["angular_z", 0.8],
    KeyD: ["angular_z", -0.8],
  };
  const MAX_LINEAR = 0.5;
  const MAX_ANGULAR = 0.8;
  // While something is held the twist is re-sent at 10 Hz, well inside the
  // bridge's 1 s deadman, and a change is sent at once but no more often
  // than every 40 ms (a joystick drag fires pointer events at 60-120 Hz).
  const RESEND_MS = 100;
  const MIN_GAP_MS = 40;
  const CLICK_DEBOUNCE_MS = 100;
  const RECONNECT_MS = [500, 1000, 2000, 4000, 5000];
  // Releasing the e-stop takes a press held this long: no tap or slip can do it.
  const RELEASE_HOLD_MS = 1500;
  // A stop over HTTP to a host that takes the request and never answers fails after this, and says so.
  const HTTP_SAFETY_TIMEOUT_MS = 5000;
  // The latched e-stop (`{"type":"estop"}`, released only by a deliberate
  // `estop_clear`): a bridge that has it says so in the page config. Without
  // it the STOP button and the gamepad's e-stop button send a plain `stop`
  // (such a bridge would refuse `estop` as `unknown_type`).
  const ESTOP_SUPPORTED = config.estop === true;

  function takeToken() {
    const url = new URL(location.href);
    const fromUrl = url.searchParams.get("token");
    if (fromUrl === null) {
      try {
        return sessionStorage.getItem(TOKEN_KEY);
      } catch {
        return null; // storage disabled: the token must come with the URL each time
      }
    }
    try {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
    } catch {
      // Kept in memory for this page only.
    }
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    return fromUrl;
  }

  async function loadConfig() {
    const defaults = { wsPath: "/ws", rerunUrl: null, rerunAssets: null, rerunProblem: null, estop: false, robots: [] };
    let embedded;
    try {
      embedded = JSON.parse(document.getElementById("bridge-config").textContent);
    } catch {
      return defaults; // page opened without the bridge filling in its config
    }
    if (!embedded.auth) return { ...defaults, ...embedded };
    if (!token) return { ...defaults, auth: "missing" };
    try {
      const response = await fetch("/config", { cache: "no-store", headers: authHeaders() });
      if (response.ok) return { ...defaults, ...(await response.json()) };
      if (response.status === 401) return { ...defaults, auth: "wrong" };
      if (response.status === 429) {
        return { ...defaults, auth: "braked", retryAfter: Number(response.headers.get("Retry-After")) || 60 };
      }
      return { ...defaults, auth: "error", authStatus: response.status };
    } catch {
      return { ...defaults, auth: "error", authStatus: "unreachable" };
    }
  }

  function authHeaders() {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function withToken(path) {
    if (!token) return path;
    return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  function withRobot(path) {
    if (!robot) return path;
    return path + (path.includes("?") ? "&" : "?") + "robot=" + encodeURIComponent(robot);
  }

  const $ = (id) => document.getElementById(id);
  const fmt = (v) => (Math.round(v * 100) / 100 || 0).toFixed(2);
  const ui = {
    conn: $("conn"),
    driver: $("driver"),
    link: $("link"),
    cmdSent: $("cmd-sent"),
    cmdApplied: $("cmd-applied"),
    notice: $("notice"),
    estopBanner: $("estop-banner"),
    estopText: $("estop-text"),
    release: $("release"),
    estopHelp: $("estop-help"),
    stop: $("stop"),
    stopHint: $("stop-hint"),
    joystick: $("joystick"),
    knob: $("knob"),
    speed: $("speed"),
    speedValue: $("speed-value"),
    out: { linear_x: $("out-lx"), linear_y: $("out-ly"), angular_z: $("out-az") },
    view3d: $("view3d"),
    view3dStatus: $("view3d-status"),
    canvas: $("rerun-canvas"),
    navToggle: $("nav-toggle"),
    clickNav: $("click-nav"),
    goal: $("goal"),
    pad: $("gamepad"),
    padStatus: $("pad-status"),
    padEnable: $("pad-enable"),
    padEnableName: $("pad-enable-name"),
    padTurbo: $("pad-turbo"),
    padTurboName: $("pad-turbo-name"),
    padLeft: $("pad-left"),
    padRight: $("pad-right"),
    padDotLeft: $("pad-dot-left"),
    padDotRight: $("pad-dot-right"),
    padSent: $("pad-sent"),
    padHelp: $("pad-help"),
    padForm: $("pad-form"),
    padFormError: $("pad-form-error"),
    padReset: $("pad-reset"),
    padEstopRow: $("pad-estop-row"),
    robotPick: $("robot-pick"),
    robot: $("robot"),
  };

  // ------------------------------------------------------------ robot picker

  // A fleet station lists its robots; choosing one reloads the page with ?robot=NAME, so every
  // connection (and reconnection) asks for that robot.
  function setupRobotPicker() {
    if (!config.robots.length) return;
    for (const name of config.robots) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      ui.robot.append(option);
    }
    ui.robot.value = config.robots.includes(robot) ? robot : "";
    ui.robotPick.hidden = false;
    ui.robot.addEventListener("change", () => {
      if (!ui.robot.value) return;
      params.set("robot", ui.robot.value);
      location.search = params.toString();
    });
  }
  setupRobotPicker();

  // ------------------------------------------------------------ connection

  let socket = null;
  let connState = "connecting";
  let attempts = 0;
  let everOpened = false;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    setConn("connecting");
    let ws;
    try {
      ws = new WebSocket(scheme + location.host + withToken(withRobot(config.wsPath)));
    } catch (err) {
      notify(`Cannot open the connection: ${err.message}`, "error");
      return scheduleReconnect();
    }
    socket = ws;
    ws.onopen = () => {
      attempts = 0;
      everOpened = true;
      setConn("open");
    };
    ws.onmessage = (event) => onServerMessage(event.data);
    ws.onclose = async () => {
      if (socket !== ws) return;
      socket = null;
      status = null; // it described that connection; the next one sends its own at once
      renderStatus();
      // The bridge stops a vanished driver itself; here every input is
      // released so nothing resumes on reconnect until pressed again.
      releaseAll({ send: false });
      setConn("closed");
      await checkAuth();
      if (connState !== "unauthorized") scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = RECONNECT_MS[Math.min(attempts, RECONNECT_MS.length - 1)];
    attempts += 1;
    setTimeout(connect, delay);
  }

  // A browser WebSocket hides the HTTP status of a refused upgrade, so ask a
  // plain HTTP endpoint behind the same token whether the token is the problem.
  // Once the token is known to be wrong the page stops retrying: every try
  // is a failed attempt the bridge counts against this machine's address.
  async function checkAuth() {
    try {
      const response = await fetch("/healthz", { cache: "no-store", headers: authHeaders() });
      if ((response.status === 401 || response.status === 429) && connState !== "open") {
        setConn("unauthorized");
        askForToken(response.status === 429 ? "braked" : token ? "wrong" : "missing");
      }
    } catch {
      // Bridge unreachable: "disconnected" already says it.
    }
  }

  function askForToken(why) {
    const form = $("token-form");
    const input = $("token-input");
    $("token-why").textContent = {
      missing: "This bridge needs a token.",
      wrong: "The bridge did not accept that token.",
      braked: `Too many wrong tokens from this machine; wait ${config.retryAfter || 60} s before trying again.`,
      error: `The bridge's settings could not be read (${config.authStatus}).`,
    }[why];
    form.hidden = false;
    input.focus();
    form.onsubmit = (event) => {
      event.preventDefault();
      try {
        sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      } catch {
        // No storage: carry it in the URL once; the reloaded page takes it from there.
        const url = new URL(location.href);
        url.searchParams.set("token", input.value.trim());
        location.replace(url.href);
        return;
      }
      location.reload();
    };
  }

  function setConn(state) {
    connState = state;
    ui.conn.dataset.state = state;
    ui.conn.textContent = {
      connecting: everOpened ? "Reconnecting…" : "Connecting…",
      open: "Connected",
      closed: "Disconnected",
      unauthorized: token ? "Wrong token" : "Token needed (?token=…)",
    }[state];
    renderDriver();
  }

  function send(message) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(message));
    noteSent(message);
    return true;
  }

  function onServerMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message) return;
    if (message.type === "status") {
      status = message;
      renderStatus();
      return;
    }
    if (message.type !== "error") return;
    if (message.reason === "not_driver") {
      lastNotDriverAt = performance.now();
      renderDriver();
    } else if (message.reason === "estopped" || message.reason === "stopped_by_other") {
      // The banner and the driver badge say this, from the status frames; once is enough here.
      notify(message.detail || message.reason, "error");
    } else {
      notify(`Bridge refused a message: ${message.reason}${message.detail ? ` (${message.detail})` : ""}`, "error");
    }
  }

  // ---------------------------------------------------- the bridge's status

  // The bridge sends a status frame on connect and whenever it changes (at
  // most 10 a second): who drives (`driver`, `you_drive`, `you`), the command
  // in force after its limits (`command`), the e-stop (`estop`: by, at, reason),
  // who stopped this page while it drove (`stopped_by`), the round trip
  // (`rtt_ms`) and the speed factor it allows (`speed_factor`, null: too slow).
  let status = null;
  // Refused as not_driver since this drive began: shown as blocked even before the next status frame.
  let lastNotDriverAt = -Infinity;

  function renderStatus() {
    renderDriver();
    renderApplied();
    renderLink();
    renderEstop();
  }

  function renderDriver() {
    let state;
    let text;
    const s = status;
    const refused = active && performance.now() - lastNotDriverAt < 2 * RESEND_MS + 300;
    if (connState !== "open") {
      [state, text] = ["unknown", "—"];
    } else if (s && s.estop) {
      [state, text] = ["estop", "E-stop latched"];
    } else if (s && s.stopped_by && active) {
      // Only while this page tries to drive: letting go (which sends the stop) is the release.
      const who = s.stopped_by === s.you ? "you" : s.stopped_by;
      [state, text] = ["held", `Stopped by ${who}: let go to drive again`];
    } else if (active && (refused || (s && s.driver && !s.you_drive))) {
      [state, text] = ["blocked", `${(s && s.driver) || "Another client"} is driving`];
    } else if (active || (s && s.you_drive)) {
      [state, text] = ["self", "You are driving"];
    } else if (s && s.driver) {
      [state, text] = ["other", `${s.driver} is driving`];
    } else {
      [state, text] = ["idle", "Idle"];
    }
    if (ui.driver.dataset.state !== state) ui.driver.dataset.state = state;
    setText(ui.driver, text);
    ui.driver.title = s ? `Who is driving the robot (you are ${s.you})` : "Who is driving the robot";
  }

  function renderApplied() {
    const command = status && status.command;
    let state = "none";
    let text = "—";
    if (status && !command) {
      [state, text] = ["stopped", "stopped"];
    } else if (command) {
      state = status.you_drive ? "yours" : "other";
      text = `${fmt(command.linear_x)} ${fmt(command.linear_y)} ${fmt(command.angular_z)}`;
    }
    ui.cmdApplied.dataset.state = state;
    setText(ui.cmdApplied, text);
    ui.cmdApplied.title = command && !status.you_drive ? `from ${status.driver}` : "";
  }

  function renderLink() {
    const s = status;
    const measured = !!s && typeof s.rtt_ms === "number";
    const slow = !!s && s.speed_factor === null;
    // Shown once a round trip is measured, or when the link is too slow before any came back.
    ui.link.hidden = !measured && !slow;
    if (ui.link.hidden) return;
    ui.link.dataset.state = slow ? "too-slow" : s.speed_factor < 1 ? "slow" : "ok";
    const speed = slow ? "too slow to drive" : `speed ×${s.speed_factor.toFixed(2)}`;
    setText(ui.link, `RTT ${measured ? Math.round(s.rtt_ms) : "—"} ms · ${speed}`);
  }

  function renderEstop() {
    const estop = status && status.estop;
    ui.estopBanner.hidden = !estop;
    document.body.classList.toggle("estopped", !!estop);
    if (!estop) {
      cancelRelease();
      return;
    }
    const when = new Date(estop.at * 1000).toLocaleTimeString();
    const who = estop.by === status.you ? `you (${estop.by})` : estop.by;
    const why = estop.reason ? `: ${estop.reason}` : "";
    setText(ui.estopText, `E-STOP latched by ${who} at ${when}${why}. Nothing drives until it is released.`);
  }

  // ---------------------------------------------------------------- inputs

  const heldKeys = new Set(); // from the keyboard
  const heldButtons = new Map(); // pointerId -> key code, from the on-screen pad
  // Keys still physically down after a STOP, blur or disconnect: their
  // auto-repeat must not restart the robot, only a fresh press may.
  const suppressedKeys = new Set();
  let shift = false;
  let stick = { x: 0, y: 0 }; // unit disc, +x right, +y up
  const ZERO = Object.freeze({ linear_x: 0, linear_y: 0, angular_z: 0 });
  let padCmd = ZERO; // the gamepad's share, zero unless its enable button is held
  let speed = loadSpeed();

  function loadSpeed() {
    const saved = Number(localStorage.getItem("viewer-bridge.speed"));
    const value = Number.isFinite(saved) && saved >= 0.1 && saved <= 2 ? saved : 1;
    ui.speed.value = String(value);
    ui.speedValue.textContent = `×${value.toFixed(1)}`;
    return value;
  }

  ui.speed.addEventListener("input", () => {
    speed = Number(ui.speed.value);
    ui.speedValue.textContent = `×${speed.toFixed(1)}`;
    localStorage.setItem("viewer-bridge.speed", String(speed));
    pump();
  });

  function currentCommand() {
    const cmd = { linear_x: 0, linear_y: 0, angular_z: 0 };
    const boost = shift ? 2 : 1;
    for (const code of heldKeys) {
      const [axis, value] = KEYS[code];
      cmd[axis] += value * boost;
    }
    for (const code of new Set(heldButtons.values())) {
      const [axis, value] = KEYS[code];
      cmd[axis] += value;
    }
    cmd.linear_x += stick.y * MAX_LINEAR;
    cmd.angular_z += -stick.x * MAX_ANGULAR;
    for (const axis of Object.keys(cmd)) cmd[axis] += padCmd[axis];
    // Sources add up, but never past what Shift alone would give.
    const limits = { linear_x: 2 * MAX_LINEAR, linear_y: 2 * MAX_LINEAR, angular_z: 2 * MAX_ANGULAR };
    for (const axis of Object.keys(cmd)) {
      const value = Math.max(-limits[axis], Math.min(limits[axis], cmd[axis] * speed));
      cmd[axis] = Math.round(value * 1000) / 1000 || 0; // "|| 0" turns -0 into 0
    }
    return cmd;
  }

  const isZero = (cmd) => cmd.linear_x === 0 && cmd.linear_y === 0 && cmd.angular_z === 0;
  const same = (a, b) =>
    !!a && !!b && a.linear_x === b.linear_x && a.linear_y === b.linear_y && a.angular_z === b.angular_z;

  // ----------------------------------------------------------- the sender

  // `active` is true from the first non-zero twist until the one `stop` that
  // ends the drive; while idle nothing at all is sent (a stream of zeros
  // can freeze a robot's controller).
  let active = false;
  let lastCmd = null;
  let lastSentAt = -Infinity;
  let timer = null;

  function pump() {
    clearTimeout(timer);
    timer = null;
    const cmd = currentCommand();
    showCommand(cmd);
    if (isZero(cmd)) {
      if (active) {
        active = false;
        lastCmd = null;
        send({ type: "stop" });
      }
      renderDriver();
      return;
    }
    const now = performance.now();
    // While the gamepad drives, one twist per period of its send rate,
    // changed or not: an analogue stick moves a little at every poll, and the
    // robot should get a steady rate rather than a burst per poll.
    const padDriving = !isZero(padCmd);
    const resendMs = padDriving ? 1000 / padSettings.rateHz : RESEND_MS;
    const gapMs = padDriving ? resendMs : MIN_GAP_MS;
    const due = lastSentAt + (same(cmd, lastCmd) ? resendMs : gapMs);
    if (!active || now >= due) {
      send({
        type: "twist",
        linear_x: cmd.linear_x,
        linear_y: cmd.linear_y,
        linear_z: 0,
        angular_x: 0,
        angular_y: 0,
        angular_z: cmd.angular_z,
        // The bridge refuses a twist that took too long to arrive (`stale`).
        timestamp_ms: Date.now(),
      });
      if (!active) lastNotDriverAt = -Infinity;
      // The pad's rate stays steady: the next twist is due a period after
      // this one was, not after the timer's own lateness.
      lastSentAt = padDriving && active && now - due < resendMs ? due : now;
      active = true;
      lastCmd = cmd;
      timer = setTimeout(pump, lastSentAt + resendMs - now);
    } else {
      timer = setTimeout(pump, due - now);
    }
    renderDriver();
  }

  const padButtons = [...document.querySelectorAll(".pad button")];

  function showCommand(cmd) {
    for (const axis of Object.keys(ui.out)) ui.out[axis].textContent = cmd[axis].toFixed(2);
    setText(ui.cmdSent, `${fmt(cmd.linear_x)} ${fmt(cmd.linear_y)} ${fmt(cmd.angular_z)}`);
    document.body.classList.toggle("moving", !isZero(cmd));
    // Keys light up their on-screen buttons too, so what is held is visible.
    const down = new Set([...heldKeys, ...heldButtons.values()]);
    for (const button of padButtons) button.classList.toggle("held", down.has(button.dataset.key));
  }

  // Let go of every input; send the one `stop` if a drive was on.
  function releaseAll({ send: sendStop = true } = {}) {
    for (const code of heldKeys) suppressedKeys.add(code);
    heldKeys.clear();
    heldButtons.clear();
    shift = false;
    resetStick();
    // A gamepad enable button still held must be let go before the pad
    // drives again, as a key still down must be pressed afresh.
    padLocked = padLocked || padSeen.enable;
    padCmd = ZERO;
    if (!sendStop) {
      active = false;
      lastCmd = null;
    }
    pump();
  }

  // An explicit stop is sent even when idle: it is the user's command, and
  // it also stops another client's drive.
  function emergencyStop() {
    releaseAll({ send: false });
    if (send({ type: "stop" })) notify("Stop sent", "info");
    else stopOverHttp(withRobot("/stop"), null, "stop");
  }

  // With the WebSocket down (reconnecting, or refused: the bridge full, this
  // address over its connection budget) a stop or an e-stop still goes, as a
  // POST to the bridge's safety endpoints, which it takes from its own page.
  // At a fleet station both act on this page's robot (every robot if none is
  // chosen), as the same messages over the WebSocket would.
  async function stopOverHttp(path, body, what) {
    notify(`Not connected: sending the ${what} over HTTP`, "info");
    let problem = null;
    let offline = [];
    try {
      const response = await fetch(path, {
        method: "POST",
        cache: "no-store",
        headers: { ...authHeaders(), "Content-Type": "application/json" },
        body: body === null ? "" : JSON.stringify(body),
        signal: AbortSignal.timeout(HTTP_SAFETY_TIMEOUT_MS),
        // A redirect would turn the POST into a GET somewhere else: it is reported, not followed.
        redirect: "manual",
      });
      if (response.type === "opaqueredirect") {
        problem = "redirected elsewhere, not followed";
      } else if (!response.ok) {
        problem = `HTTP ${response.status}`;
        try {
          problem = `${problem}: ${(await response.json()).reason}`;
        } catch {
          // not the bridge's JSON: the status says enough
        }
      } else {
        try {
          // A fleet station names the robots it does not see: "sent" must not read as "heard" for them.
          const answer = await response.json();
          if (Array.isArray(answer.offline)) offline = answer.offline.map(String);
        } catch {
          // an answer that is not JSON: the 200 says it was sent
        }
      }
    } catch (error) {
      problem = error.name === "TimeoutError" ? `no answer within ${HTTP_SAFETY_TIMEOUT_MS / 1000} s` : String(error);
    }
    const done = `${what === "stop" ? "Stop sent" : "E-stop latched"} over HTTP (not connected)`;
    if (problem === null && offline.length > 0) {
      const one = offline.length === 1;
      notify(
        `${done}, but ${offline.join(", ")} ${one ? "is" : "are"} offline (the station does not see ` +
          `${one ? "its agent" : "their agents"}): it may not reach ${one ? "it" : "them"}`,
        "error",
        10000,
      );
    } else if (problem === null) notify(done, "info");
    else notify(`Not connected, and the ${what} over HTTP failed (${problem}): it was NOT sent`, "error", 10000);
  }

  // -------------------------------------------------------------- keyboard

  function isTyping(target) {
    if (!(target instanceof HTMLElement)) return false;
    if (target.isContentEditable || target.tagName === "TEXTAREA") return true;
    // Rerun's text fields are edited through a hidden <input>: typing there
    // must not drive.
    return target.tagName === "INPUT" && !["range", "checkbox", "button"].includes(target.type);
  }

  // Capture phase on window: teleop sees the keys before the Rerun viewer,
  // whose 3D view would otherwise also move its camera with W/A/S/D.
  window.addEventListener(
    "keydown",
    (event) => {
      if (isTyping(event.target)) return;
      if (event.code === "Space" || event.code === "Escape") {
        event.preventDefault();
        event.stopImmediatePropagation();
        if (!event.repeat) emergencyStop();
        return;
      }
      shift = event.shiftKey;
      if (!(event.code in KEYS)) {
        pump(); // Shift alone changes the speed of what is held
        return;
      }
      event.preventDefault();
      event.stopImmediatePropagation();
      // Browser shortcuts (Ctrl+W, Ctrl+D, ...) are not drive commands.
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (suppressedKeys.has(event.code)) {
        if (event.repeat) return;
        suppressedKeys.delete(event.code);
      }
      heldKeys.add(event.code);
      pump();
    },
    true,
  );

  window.addEventListener(
    "keyup",
    (event) => {
      shift = event.shiftKey;
      suppressedKeys.delete(event.code);
      if (event.code in KEYS) {
        if (!isTyping(event.target)) {
          event.preventDefault();
          event.stopImmediatePropagation();
        }
        heldKeys.delete(event.code);
      }
      pump();
    },
    true,
  );

  // Key-up events are lost once the page loses focus, so stop then.
  window.addEventListener("blur", () => releaseAll());
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) releaseAll();
  });
  window.addEventListener("pagehide", () => releaseAll());

  // ----------------------------------------------------- on-screen buttons

  // STOP latches the e-stop when the bridge has one (Space and Esc send a plain stop, as in the viewer).
  const stopButton = () => (ESTOP_SUPPORTED ? latchEstop() : emergencyStop());
  ui.stop.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    stopButton();
  });
  // Keyboard activation of the focused button (Enter); Space is handled above.
  ui.stop.addEventListener("click", (event) => {
    if (event.detail === 0) stopButton();
  });
  if (ESTOP_SUPPORTED) {
    ui.stop.title = "Latch the e-stop: nothing drives until it is released (Space or Esc only stop)";
    ui.stopHint.textContent = "latches the e-stop";
    ui.estopHelp.hidden = false;
  }

  // Releasing the e-stop: press and hold (pointer, or Enter on the focused
  // button) for RELEASE_HOLD_MS; letting go earlier, or sliding off, cancels.
  let releaseTimer = null;

  function startRelease() {
    if (releaseTimer !== null || !(status && status.estop)) return;
    ui.release.classList.add("holding");
    ui.release.style.setProperty("--hold-ms", `${RELEASE_HOLD_MS}ms`);
    releaseTimer = setTimeout(() => {
      releaseTimer = null;
      ui.release.classList.remove("holding");
      if (send({ type: "estop_clear" })) notify("E-stop released", "ok");
      else notify("Not connected: the e-stop was not released", "error");
    }, RELEASE_HOLD_MS);
  }

  function cancelRelease() {
    if (releaseTimer !== null) {
      clearTimeout(releaseTimer);
      releaseTimer = null;
    }
    ui.release.classList.remove("holding");
  }

  ui.release.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    ui.release.setPointerCapture(event.pointerId);
    startRelease();
  });
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    ui.release.addEventListener(type, cancelRelease);
  }
  ui.release.addEventListener("pointerleave", cancelRelease);
  ui.release.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    if (!event.repeat) startRelease();
  });
  ui.release.addEventListener("keyup", (event) => {
    if (event.key === "Enter") cancelRelease();
  });
  ui.release.addEventListener("blur", cancelRelease);
  ui.release.addEventListener("contextmenu", (event) => event.preventDefault());

  for (const button of document.querySelectorAll(".pad button")) {
    const code = button.dataset.key;
    button.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      button.setPointerCapture(event.pointerId);
      heldButtons.set(event.pointerId, code);
      pump();
    });
    const release = (event) => {
      if (!heldButtons.has(event.pointerId)) return;
      heldButtons.delete(event.pointerId);
      pump();
    };
    button.addEventListener("pointerup", release);
    button.addEventListener("pointercancel", release);
    button.addEventListener("lostpointercapture", release);
  }
  // A long press on a phone would open a context menu and steal the touch.
  for (const el of document.querySelectorAll(".pad, .joystick, .stop")) {
    el.addEventListener("contextmenu", (event) => event.preventDefault());
  }

  // -------------------------------------------------------------- joystick

  let stickPointer = null;
  const DEAD_ZONE = 0.08;

  function moveStick(event) {
    const rect = ui.joystick.getBoundingClientRect();
    const radius = rect.width / 2;
    let dx = (event.clientX - (rect.left + radius)) / radius;
    let dy = (rect.top + radius - event.clientY) / radius;
    const length = Math.hypot(dx, dy);
    if (length > 1) {
      dx /= length;
      dy /= length;
    }
    const live = length >= DEAD_ZONE;
    stick = { x: live ? dx : 0, y: live ? dy : 0 };
    // Percentages of the knob (40% of the pad): 75% puts its centre 0.6 radii out, its edge on the rim.
    ui.knob.style.transform = `translate(${dx * 75}%, ${-dy * 75}%)`;
    ui.joystick.classList.add("held");
    pump();
  }

  function resetStick() {
    stickPointer = null;
    stick = { x: 0, y: 0 };
    ui.knob.style.transform = "";
    ui.joystick.classList.remove("held");
  }

  ui.joystick.addEventListener("pointerdown", (event) => {
    if (stickPointer !== null) return;
    event.preventDefault();
    stickPointer = event.pointerId;
    ui.joystick.setPointerCapture(event.pointerId);
    moveStick(event);
  });
  ui.joystick.addEventListener("pointermove", (event) => {
    if (event.pointerId === stickPointer) moveStick(event);
  });
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    ui.joystick.addEventListener(type, (event) => {
      if (event.pointerId !== stickPointer) return;
      resetStick();
      pump();
    });
  }

  // --------------------------------------------------------------- notices

  let noticeTimer = null;
  function notify(text, kind, ms = 4000) {
    ui.notice.textContent = text;
    ui.notice.title = text;
    ui.notice.dataset.kind = kind;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      ui.notice.textContent = "";
      ui.notice.title = "";
    }, ms);
  }

  // --------------------------------------------------------------- gamepad

  // A gamepad through the browser's Gamepad API in its "standard" layout
  // (w3c.github.io/gamepad, "Remapping"): axes 0/1 are the left stick, 2/3
  // the right one, +x right and +y *down*. As with ROS's teleop_twist_joy,
  // nothing moves unless the enable button is held: a pad dropped on the
  // floor or squeezed in a bag does not drive. The pad only sets `padCmd`;
  // sending, resending and the one `stop` are the sender's above.
  const PAD_AXES = ["left stick ↔", "left stick ↕", "right stick ↔", "right stick ↕"];
  const PAD_BUTTONS = [
    "A / ✕", "B / ○", "X / □", "Y / △", "LB / L1", "RB / R1", "LT / L2", "RT / R2",
    "Back / Select", "Start", "left stick press", "right stick press",
    "D-pad up", "D-pad down", "D-pad left", "D-pad right", "Home",
  ];
  const PAD_STORAGE = "viewer-bridge.gamepad";
  // Sticks: `axis` is an index into PAD_AXES (-1: none); up and left give +,
  // which is ROS's forward, left and counter-clockwise. Buttons: an index
  // into PAD_BUTTONS (-1: none).
  const PAD_DEFAULTS = Object.freeze({
    linearX: Object.freeze({ axis: 1, invert: false }),
    linearY: Object.freeze({ axis: 0, invert: false }),
    angularZ: Object.freeze({ axis: 2, invert: false }),
    enable: 4,
    turbo: 5,
    stop: 1,
    estop: -1,
    deadZone: 0.1,
    curve: 2,
    turboFactor: 2,
    rateHz: 20,
  });
  // Past half the travel a dead zone leaves too little stick to drive with.
  // Turbo stops at 2, what Shift gives: no input goes past that (see
  // currentCommand). 5 Hz keeps several commands inside the bridge's 1 s
  // deadman even if one is late; 50 Hz is a quarter of its default per-client
  // rate limit (200 messages/s).
  const PAD_NUMBERS = {
    deadZone: ["Dead zone", 0, 0.5],
    curve: ["Curve", 1, 3],
    turboFactor: ["Turbo factor", 1, 2],
    rateHz: ["Send rate", 5, 50],
  };
  const PAD_STICKS = { linearX: "Forward", linearY: "Strafe", angularZ: "Turn" };
  const PAD_ROLES = { enable: "Enable", turbo: "Turbo", stop: "Stop", estop: "Latch e-stop" };
  const PAD_POLL_MS = 16; // browsers sample pads at about 60 Hz

  // Settings from anywhere (storage, the form) checked field by field: a bad
  // or missing one takes its default, and each bad one is named.
  function checkPadSettings(raw) {
    const given = raw && typeof raw === "object" ? raw : {};
    const settings = {};
    const problems = [];
    for (const [name, [label, lo, hi]] of Object.entries(PAD_NUMBERS)) {
      const value = given[name];
      const number = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof number === "number" && Number.isFinite(number) && number >= lo && number <= hi) {
        settings[name] = number;
      } else {
        settings[name] = PAD_DEFAULTS[name];
        if (value !== undefined) problems.push(`${label} must be ${lo} to ${hi}, not ${JSON.stringify(value)}`);
      }
    }
    const axesUsed = new Map();
    for (const [name, label] of Object.entries(PAD_STICKS)) {
      const value = given[name] && typeof given[name] === "object" ? given[name] : {};
      let axis = value.axis;
      if (!(Number.isInteger(axis) && axis >= -1 && axis < PAD_AXES.length)) {
        if (value.axis !== undefined) problems.push(`${label}: no stick axis ${JSON.stringify(value.axis)}`);
        axis = PAD_DEFAULTS[name].axis;
      }
      if (axis >= 0 && axesUsed.has(axis)) {
        problems.push(`${label} and ${axesUsed.get(axis)} are both on the ${PAD_AXES[axis]}`);
      }
      if (axis >= 0) axesUsed.set(axis, label);
      settings[name] = { axis, invert: value.invert === true };
    }
    const buttonsUsed = new Map();
    for (const [name, label] of Object.entries(PAD_ROLES)) {
      let button = given[name];
      // The enable button is the deadman: it cannot be "none".
      const lowest = name === "enable" ? 0 : -1;
      if (!(Number.isInteger(button) && button >= lowest && button < PAD_BUTTONS.length)) {
        if (button !== undefined) problems.push(`${label}: no button ${JSON.stringify(button)}`);
        button = PAD_DEFAULTS[name];
      }
      if (button >= 0 && buttonsUsed.has(button)) {
        problems.push(`${label} and ${buttonsUsed.get(button)} are both ${PAD_BUTTONS[button]}`);
      }
      if (button >= 0) buttonsUsed.set(button, label);
      settings[name] = button;
    }
    return { settings, problems };
  }

  function loadPadSettings() {
    let raw = null;
    try {
      raw = JSON.parse(localStorage.getItem(PAD_STORAGE) || "null");
    } catch {
      raw = { unreadable: true };
    }
    const { settings, problems } = checkPadSettings(raw);
    if (problems.length) {
      // A conflict found on load leaves two roles on one button: start over.
      notify(`Gamepad settings reset to defaults: ${problems.join("; ")}`, "error", 10000);
      return checkPadSettings(null).settings;
    }
    return settings;
  }

  function savePadSettings() {
    try {
      localStorage.setItem(PAD_STORAGE, JSON.stringify(padSettings));
    } catch {
      notify("The browser would not store the gamepad settings: they last until the page is closed", "error");
    }
  }

  let padSettings = loadPadSettings();
  let padIndex = null; // the navigator.getGamepads() slot in use
  let padLocked = false; // enable must be seen up before the pad drives again
  let padSeen = { enable: false, stop: true, estop: true }; // last poll; held at first sight is no press
  let padPoll = null;
  const unplugged = new Set(); // slots reported gone that getGamepads() may still list for a moment
  const padSupported = typeof navigator.getGamepads === "function";

  function connectedPads() {
    let pads = [];
    try {
      pads = Array.from(navigator.getGamepads() || []);
    } catch {
      // A Permissions-Policy that forbids gamepads: as if none were there.
    }
    return pads.filter((p) => p && p.connected && !unplugged.has(p.index));
  }

  // The pad in use while it stays; otherwise a standard-layout one first.
  function pickPad() {
    const pads = connectedPads();
    return (
      pads.find((p) => p.index === padIndex) || pads.find((p) => p.mapping === "standard") || pads[0] || null
    );
  }

  const clampAxis = (v) => (Number.isFinite(v) ? Math.max(-1, Math.min(1, v)) : 0);

  function isPressed(gamepad, index) {
    if (index < 0) return false;
    const button = gamepad.buttons[index];
    if (button && typeof button === "object") return !!button.pressed;
    return Number(button) > 0.5; // very old implementations give numbers
  }

  // Dead zone, then the curve: the live range is stretched back to 0..1 so
  // the command starts from zero at the dead zone's edge instead of jumping.
  function shape(value) {
    const { deadZone, curve } = padSettings;
    const magnitude = Math.abs(value);
    if (!(magnitude > deadZone)) return 0;
    const live = Math.min(1, (magnitude - deadZone) / (1 - deadZone));
    return Math.sign(value) * live ** curve;
  }

  function padCommand(axes, turbo) {
    const s = padSettings;
    const boost = turbo ? s.turboFactor : 1;
    // Standard axes are +right and +down; up and left are + here.
    const along = ({ axis, invert }) => (axis < 0 ? 0 : shape(-axes[axis]) * (invert ? -1 : 1));
    const round = (v) => Math.round(v * 1000) / 1000 || 0;
    return {
      linear_x: round(along(s.linearX) * MAX_LINEAR * boost),
      linear_y: round(along(s.linearY) * MAX_LINEAR * boost),
      angular_z: round(along(s.angularZ) * MAX_ANGULAR * boost),
    };
  }

  function pollPad() {
    const gamepad = pickPad();
    if (!gamepad) {
      padGone();
      return;
    }
    if (gamepad.index !== padIndex) {
      // A pad just connected, or another one after an unplug: it drives
      // only once its enable button has been seen up, and a button already
      // held is no press.
      padIndex = gamepad.index;
      padLocked = true;
      padSeen = { enable: true, stop: true, estop: true };
    }
    const axes = [0, 1, 2, 3].map((i) => clampAxis(Number(gamepad.axes[i])));
    const s = padSettings;
    const enable = isPressed(gamepad, s.enable);
    const turbo = isPressed(gamepad, s.turbo);
    const stopButton = isPressed(gamepad, s.stop);
    const estopButton = isPressed(gamepad, s.estop);
    const focused = document.hasFocus() && !document.hidden;
    const fresh = { stop: stopButton && !padSeen.stop, estop: estopButton && !padSeen.estop };
    padSeen = { enable, stop: stopButton, estop: estopButton };
    if (!enable) padLocked = false;
    // Without focus the page would drive blind; the blur handler has sent
    // the stop, this keeps a held enable from resuming on return.
    if (!focused && enable) padLocked = true;
    // Anyone may stop, with or without enable.
    if (fresh.stop) emergencyStop();
    if (fresh.estop) latchEstop("the gamepad's e-stop button on the browser page");
    const driving = enable && !padLocked && focused;
    const next = driving ? padCommand(axes, turbo) : ZERO;
    if (!same(next, padCmd)) {
      padCmd = next;
      pump();
    }
    renderPad({ gamepad, axes, enable, turbo, focused });
  }

  function padGone() {
    if (padPoll !== null) {
      clearInterval(padPoll);
      padPoll = null;
    }
    if (padIndex === null) return;
    padIndex = null;
    padLocked = false;
    padSeen = { enable: false, stop: true, estop: true };
    if (!isZero(padCmd)) {
      padCmd = ZERO;
      pump(); // the one stop, if the pad was all that drove
    }
    renderPad(null);
  }

  function watchPads() {
    if (padPoll === null && connectedPads().length) padPoll = setInterval(pollPad, PAD_POLL_MS);
    pollPad();
  }

  // Browsers announce a pad only after a button on it is pressed while the page is visible.
  window.addEventListener("gamepadconnected", (event) => {
    if (event.gamepad) unplugged.delete(event.gamepad.index);
    watchPads();
  });
  window.addEventListener("gamepaddisconnected", (event) => {
    if (event.gamepad) unplugged.add(event.gamepad.index);
    if (event.gamepad && event.gamepad.index === padIndex) {
      // Stop now, not at the next poll.
      padGone();
      watchPads(); // another pad still plugged in takes over, locked
    } else {
      pollPad();
    }
  });

  // -------------------------------------------------------- latched e-stop

  // The STOP button and the gamepad's e-stop button. The bridge publishes the
  // one zero itself; every input is let go, so nothing resumes on release.
  function latchEstop(reason = "STOP on the browser page") {
    if (!ESTOP_SUPPORTED) {
      emergencyStop();
      return;
    }
    releaseAll({ send: false });
    if (send({ type: "estop", reason })) notify("E-stop latched", "info");
    else stopOverHttp(withRobot("/estop"), { reason }, "e-stop");
  }

  // ------------------------------------------------------ gamepad display

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  const padName = (index) => (index >= 0 ? PAD_BUTTONS[index] : "none");

  function renderPad(live) {
    let state;
    let status;
    let title = "";
    const enableName = padName(padSettings.enable);
    if (!padSupported) {
      [state, status] = ["none", "Not available in this browser"];
    } else if (!live) {
      [state, status] = ["none", "None: connect one and press a button on it"];
    } else {
      const { gamepad, enable, focused } = live;
      title = `${gamepad.id} (slot ${gamepad.index}, ${gamepad.mapping || "non-standard"} layout)`;
      const layout = gamepad.mapping === "standard" ? "" : " (not a standard layout: check the mapping)";
      if (!focused) {
        [state, status] = ["locked", "Connected: click this page to drive"];
      } else if (padLocked) {
        [state, status] = ["locked", `Connected: let go of ${enableName}, then hold it to drive`];
      } else if (!isZero(padCmd)) {
        [state, status] = ["driving", "Driving"];
      } else if (enable) {
        [state, status] = ["enabled", "Enabled: move a stick"];
      } else {
        [state, status] = ["connected", `Connected: hold ${enableName} to drive`];
      }
      status += layout;
    }
    ui.pad.dataset.state = state;
    setText(ui.padStatus, status);
    ui.padStatus.title = title;
    const axes = live ? live.axes : [0, 0, 0, 0];
    setText(ui.padLeft, `${fmt(axes[0])}, ${fmt(axes[1])}`);
    setText(ui.padRight, `${fmt(axes[2])}, ${fmt(axes[3])}`);
    // The dot is a quarter of its box wide: 150% of itself takes it to the rim.
    ui.padDotLeft.style.transform = `translate(${axes[0] * 150}%, ${axes[1] * 150}%)`;
    ui.padDotRight.style.transform = `translate(${axes[2] * 150}%, ${axes[3] * 150}%)`;
    const enableHeld = !!(live && live.enable);
    const turboHeld = !!(live && live.turbo);
    ui.padEnable.dataset.held = String(enableHeld);
    setText(ui.padEnable, enableHeld ? "held" : "released");
    ui.padTurbo.dataset.held = String(turboHeld);
    setText(ui.padTurbo, turboHeld ? `on (×${padSettings.turboFactor})` : "off");
    setText(ui.padEnableName, `Enable (${enableName})`);
    setText(ui.padTurboName, `Turbo (${padName(padSettings.turbo)})`);
  }

  // What the page last sent (from any input), with the twists' rate over
  // the last second, from the page's own send times.
  const sentTimes = [];

  function noteSent(message) {
    const now = performance.now();
    if (message.type === "twist") {
      sentTimes.push(now);
      while (now - sentTimes[0] > 1000) sentTimes.shift();
      const span = now - sentTimes[0];
      const rate = sentTimes.length >= 3 && span > 0 ? ((sentTimes.length - 1) * 1000) / span : 0;
      ui.padSent.dataset.rate = rate.toFixed(1);
      const values = `${fmt(message.linear_x)}, ${fmt(message.linear_y)}, ${fmt(message.angular_z)}`;
      setText(ui.padSent, `twist (${values})${rate ? ` · ${rate.toFixed(0)}/s` : ""}`);
    } else if (message.type === "stop" || message.type === "estop") {
      sentTimes.length = 0;
      ui.padSent.dataset.rate = "0";
      setText(ui.padSent, message.type);
    }
  }

  function renderPadHelp() {
    const s = padSettings;
    const key = (index) => `<kbd>${padName(index)}</kbd>`;
    const stick = ({ axis, invert }) => (axis < 0 ? "none" : `${PAD_AXES[axis]}${invert ? " (inverted)" : ""}`);
    const rows = [
      [`hold ${key(s.enable)}`, "enable: nothing moves without it"],
      [stick(s.linearX), "forward / back"],
      [stick(s.linearY), "strafe left / right"],
      [stick(s.angularZ), "turn left / right"],
    ];
    if (s.turbo >= 0) rows.push([key(s.turbo), `turbo, ×${s.turboFactor}`]);
    if (s.stop >= 0) rows.push([key(s.stop), "stop, enable or not"]);
    if (ESTOP_SUPPORTED && s.estop >= 0) rows.push([key(s.estop), "latch the e-stop"]);
    ui.padHelp.innerHTML =
      `<ul>${rows.map(([input, effect]) => `<li>${input}: ${effect}</li>`).join("")}</ul>` +
      `<p>Full stick: 0.5 m/s, 0.8 rad/s, times the Speed slider. Dead zone ${s.deadZone}, curve ${s.curve}; ` +
      `sent ${s.rateHz} times a second while a stick is out of the dead zone. Letting go of enable, centring ` +
      "the sticks, unplugging the pad or leaving this tab sends one stop; then let go of enable and hold it " +
      "again to drive.</p>";
  }

  // ----------------------------------------------------- gamepad settings

  function fillSelect(select, names, withNone) {
    const options = withNone ? [[-1, "none"]] : [];
    names.forEach((name, index) => options.push([index, name]));
    select.replaceChildren(...options.map(([value, name]) => new Option(name, String(value))));
  }

  const field = (name) => ui.padForm.elements.namedItem(name);

  function fillPadForm() {
    const s = padSettings;
    for (const name of Object.keys(PAD_STICKS)) {
      field(`${name}.axis`).value = String(s[name].axis);
      field(`${name}.invert`).checked = s[name].invert;
    }
    for (const name of Object.keys(PAD_ROLES)) field(name).value = String(s[name]);
    for (const name of Object.keys(PAD_NUMBERS)) field(name).value = String(s[name]);
  }

  function readPadForm() {
    const raw = {};
    for (const name of Object.keys(PAD_STICKS)) {
      raw[name] = { axis: Number(field(`${name}.axis`).value), invert: field(`${name}.invert`).checked };
    }
    for (const name of Object.keys(PAD_ROLES)) raw[name] = Number(field(name).value);
    for (const name of Object.keys(PAD_NUMBERS)) raw[name] = field(name).value;
    return raw;
  }

  function applyPadSettings(settings) {
    padSettings = settings;
    // The sticks may mean something else now: stop, and wait for a fresh enable.
    if (!isZero(padCmd)) releaseAll();
    renderPadHelp();
    if (padIndex !== null) pollPad();
    else renderPad(null);
  }

  for (const name of Object.keys(PAD_STICKS)) fillSelect(field(`${name}.axis`), PAD_AXES, true);
  for (const name of Object.keys(PAD_ROLES)) fillSelect(field(name), PAD_BUTTONS, name !== "enable");
  field("estop").disabled = !ESTOP_SUPPORTED;
  if (ESTOP_SUPPORTED) ui.padEstopRow.title = "Latches the bridge's e-stop until it is released";

  ui.padForm.addEventListener("submit", (event) => event.preventDefault());
  ui.padForm.addEventListener("change", () => {
    const { settings, problems } = checkPadSettings(readPadForm());
    // Nothing is applied while anything is wrong: half a mapping is worse than the old one.
    setText(ui.padFormError, problems.length ? `Not applied: ${problems.join("; ")}` : "");
    if (problems.length) return;
    applyPadSettings(settings);
    savePadSettings();
  });
  ui.padReset.addEventListener("click", () => {
    try {
      localStorage.removeItem(PAD_STORAGE);
    } catch {
      // Nothing stored, then.
    }
    setText(ui.padFormError, "");
    applyPadSettings(checkPadSettings(null).settings);
    fillPadForm();
    notify("Gamepad settings reset to defaults", "info");
  });

  fillPadForm();
  renderPadHelp();
  renderPad(null);

  // ------------------------------------------------ Rerun 3D view (optional)

  let lastClickAt = -Infinity;
  let lastClickKey = "";

  function onViewerEvent(raw) {
    let event = raw;
    if (typeof raw === "string") {
      try {
        event = JSON.parse(raw);
      } catch {
        return;
      }
    }
    if (debug) console.info("viewer-bridge: Rerun viewer event", event);
    if (!event || event.type !== "selection_change") return;
    for (const item of event.items || []) {
      const goal = worldPoint(item);
      if (!goal) continue;
      if (ui.clickNav.checked) {
        sendGoal(goal);
      } else {
        showGoal(`Picked ${formatPoint(goal)} on ${goal.entity_path}; goals are off, nothing sent`, "off");
      }
      return;
    }
  }

  const formatPoint = (p) => `(${p.x.toFixed(2)}, ${p.y.toFixed(2)}, ${p.z.toFixed(2)})`;

  function showGoal(text, state) {
    ui.goal.hidden = false;
    ui.goal.textContent = text;
    ui.goal.dataset.sent = state;
  }

  // A selection item that is a picked point in a 3D view, or null. A 2D
  // view reports image coordinates, which are no place the robot can go.
  function worldPoint(item) {
    if (!item || item.type !== "entity" || !Array.isArray(item.position) || item.position.length !== 3) return null;
    // A 2D view's click comes as [u, v, null].
    if (!item.position.every(Number.isFinite)) {
      notify("That click was in a 2D view: not a point in the world, so no goal was sent", "info");
      return null;
    }
    return { x: item.position[0], y: item.position[1], z: item.position[2], entity_path: item.entity_path || "" };
  }

  function sendGoal(goal) {
    const now = performance.now();
    const key = `${goal.entity_path}@${goal.x},${goal.y},${goal.z}`;
    if (now - lastClickAt < CLICK_DEBOUNCE_MS || key === lastClickKey) return;
    lastClickAt = now;
    lastClickKey = key;
    const sent = send({ type: "click", ...goal, timestamp_ms: Date.now() });
    const where = formatPoint(goal);
    const text = sent ? `Goal sent: ${where} on ${goal.entity_path}` : `Not connected: goal ${where} not sent`;
    showGoal(text, String(sent));
    // Also up top, where a phone user looking at the map sees it.
    notify(text, sent ? "ok" : "error");
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error(`could not load ${src}`));
      document.head.appendChild(script);
    });
  }

  // The Rerun viewer phones home (usage analytics, update checks). On a
  // robot's network that only fails slowly and fills the console, so its
  // requests may go to this page's origin and the Rerun server, nowhere else.
  function confineFetch() {
    let grpcOrigin = null;
    try {
      grpcOrigin = new URL(config.rerunUrl.replace(/^rerun\+/, "").replace(/^rerun:/, "https:")).origin;
    } catch {
      // An unparsable URL: the viewer will report it.
    }
    const realFetch = window.fetch.bind(window);
    window.fetch = (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input), location.href);
      if (url.origin === location.origin) return realFetch(input, init);
      if (url.origin !== grpcOrigin) {
        return Promise.reject(new TypeError(`viewer-bridge: no requests to ${url.origin} from this page`));
      }
      // A refused cross-origin request looks like a network error; say what usually causes it.
      return realFetch(input, init).catch((err) => {
        notify(
          `Cannot reach the Rerun server at ${grpcOrigin}: is it running, and does its ` +
            `cors_allow_origin include ${location.origin}?`,
          "error",
          30000,
        );
        throw err;
      });
    };
  }

  async function start3d() {
    if (!config.rerunUrl) return;
    document.body.classList.add("has-3d");
    ui.view3d.hidden = false;
    ui.navToggle.hidden = false;
    const status = (text) => {
      ui.view3d.dataset.state = text ? "message" : "ready";
      ui.view3dStatus.textContent = text;
      ui.view3dStatus.hidden = !text;
    };
    if (!config.rerunAssets) {
      status(`No 3D view: ${config.rerunProblem || "the Rerun web viewer is not available on the bridge"}`);
      return;
    }
    confineFetch();
    try {
      await loadScript(config.rerunAssets + "re_viewer.js");
      // `wasm_bindgen` is the global the no-modules build defines.
      await wasm_bindgen({ module_or_path: config.rerunAssets + "re_viewer_bg.wasm" });
      const narrow = window.matchMedia("(max-width: 900px)").matches;
      const handle = new wasm_bindgen.WebHandle({
        url: [config.rerunUrl],
        hide_welcome_screen: true,
        // WebGPU is missing or broken in many browsers; WebGL works everywhere.
        render_backend: params.get("renderer") || "webgl",
        check_for_updates_on_startup: false,
        theme: "dark",
        // Rerun must not rewrite this page's URL (it carries the token).
        enable_history: false,
        on_viewer_event: onViewerEvent,
        panel_state_overrides: narrow
          ? { top: "Collapsed", blueprint: "Hidden", selection: "Hidden", time: "Hidden" }
          : { blueprint: "Collapsed", selection: "Collapsed", time: "Collapsed" },
      });
      await handle.start(ui.canvas);
      status("");
      setInterval(() => {
        if (handle.has_panicked()) status(`The 3D viewer crashed: ${handle.panic_message() || "unknown error"}`);
      }, 2000);
    } catch (err) {
      status(`The 3D viewer failed to start: ${err && err.message ? err.message : err}`);
    }
  }

  // ----------------------------------------------------------------- start

  if (config.auth) {
    // No usable token: ask for one instead of connecting (and failing) over and over.
    setConn("unauthorized");
    askForToken(config.auth);
  } else {
    connect();
    const you = config.you;
    if (you && you.role && you.role !== "drive") {
      const what = you.role === "stop" ? "it may stop the robot and latch the e-stop, not drive or release it" : "it may watch, not drive or stop";
      notify(`Token ${you.name || ""} has the ${you.role} role: ${what}`, "info", 15000);
    }
  }
  pump();
  if (padSupported) watchPads();
  start3d();
})();
