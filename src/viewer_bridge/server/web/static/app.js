// viewer-bridge browser client: teleop (keys, buttons, joystick) over the
// bridge's WebSocket, plus the embedded Rerun viewer whose 3D clicks become
// `click` goals. No dependencies and no network beyond the bridge itself.
"use strict";

(() => {
  // ---------------------------------------------------------------- config

  const config = readConfig();
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
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

  function readConfig() {
    const defaults = { wsPath: "/ws", rerunUrl: null, rerunAssets: null, rerunProblem: null };
    try {
      return { ...defaults, ...JSON.parse(document.getElementById("bridge-config").textContent) };
    } catch {
      return defaults; // page opened without the bridge filling in its config
    }
  }

  function withToken(path) {
    if (!token) return path;
    return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  const $ = (id) => document.getElementById(id);
  const ui = {
    conn: $("conn"),
    driver: $("driver"),
    notice: $("notice"),
    stop: $("stop"),
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
  };

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
      ws = new WebSocket(scheme + location.host + withToken(config.wsPath));
    } catch (err) {
      notify(`Cannot open the connection: ${err.message}`, "error");
      return scheduleReconnect();
    }
    socket = ws;
    ws.onopen = () => {
      attempts = 0;
      everOpened = true;
      setConn("open");
      pollHealth();
    };
    ws.onmessage = (event) => onServerMessage(event.data);
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      // The bridge stops a vanished driver itself; here every input is
      // released so nothing resumes on reconnect until pressed again.
      releaseAll({ send: false });
      setConn("closed");
      checkAuth();
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = RECONNECT_MS[Math.min(attempts, RECONNECT_MS.length - 1)];
    attempts += 1;
    setTimeout(connect, delay);
  }

  // A browser WebSocket hides the HTTP status of a refused upgrade, so ask a
  // plain HTTP endpoint behind the same token whether the token is the problem.
  async function checkAuth() {
    try {
      const response = await fetch(withToken("/healthz"), { cache: "no-store" });
      if (response.status === 401 && connState !== "open") setConn("unauthorized");
    } catch {
      // Bridge unreachable: "disconnected" already says it.
    }
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
    return true;
  }

  function onServerMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || message.type !== "error") return;
    if (message.reason === "not_driver") {
      lastNotDriverAt = performance.now();
      renderDriver();
    } else {
      notify(`Bridge refused a message: ${message.reason}${message.detail ? ` (${message.detail})` : ""}`, "error");
    }
  }

  // --------------------------------------------------------- driver state

  // The bridge tells a client only when it is *not* the driver, so "you are
  // driving" means: sending, and no `not_driver` refusal since. /healthz says
  // whether anyone else holds the lease while this page is idle.
  let lastNotDriverAt = -Infinity;
  let remoteDriver = null;
  let idleSince = 0;

  async function pollHealth() {
    if (connState !== "open" || document.hidden) return;
    const askedAt = performance.now();
    try {
      const response = await fetch(withToken("/healthz"), { cache: "no-store" });
      if (response.ok) {
        const health = await response.json();
        // A reply to a question asked while this page still drove names this page.
        if (askedAt >= idleSince) remoteDriver = health.driver ?? null;
      }
    } catch {
      // The WebSocket's close handler reports a lost bridge.
    }
    renderDriver();
  }
  setInterval(pollHealth, 1000);

  function renderDriver() {
    let state;
    let text;
    if (connState !== "open") {
      [state, text] = ["unknown", "—"];
    } else if (active && performance.now() - lastNotDriverAt < 2 * RESEND_MS + 300) {
      [state, text] = ["blocked", "Another client is driving"];
    } else if (active) {
      [state, text] = ["self", "You are driving"];
    } else if (remoteDriver) {
      [state, text] = ["other", "Another client is driving"];
    } else {
      [state, text] = ["idle", "Idle"];
    }
    if (ui.driver.dataset.state !== state) {
      ui.driver.dataset.state = state;
      ui.driver.textContent = text;
    }
  }

  // ---------------------------------------------------------------- inputs

  const heldKeys = new Set(); // from the keyboard
  const heldButtons = new Map(); // pointerId -> key code, from the on-screen pad
  // Keys still physically down after a STOP, blur or disconnect: their
  // auto-repeat must not restart the robot, only a fresh press may.
  const suppressedKeys = new Set();
  let shift = false;
  let stick = { x: 0, y: 0 }; // unit disc, +x right, +y up
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
        idleSince = performance.now();
        remoteDriver = null;
        send({ type: "stop" });
      }
      renderDriver();
      return;
    }
    const now = performance.now();
    const due = lastSentAt + (same(cmd, lastCmd) ? RESEND_MS : MIN_GAP_MS);
    if (!active || now >= due) {
      send({
        type: "twist",
        linear_x: cmd.linear_x,
        linear_y: cmd.linear_y,
        linear_z: 0,
        angular_x: 0,
        angular_y: 0,
        angular_z: cmd.angular_z,
      });
      if (!active) lastNotDriverAt = -Infinity;
      active = true;
      lastCmd = cmd;
      lastSentAt = now;
      timer = setTimeout(pump, RESEND_MS);
    } else {
      timer = setTimeout(pump, due - now);
    }
    renderDriver();
  }

  const padButtons = [...document.querySelectorAll(".pad button")];

  function showCommand(cmd) {
    for (const axis of Object.keys(ui.out)) ui.out[axis].textContent = cmd[axis].toFixed(2);
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
    if (!sendStop) {
      active = false;
      lastCmd = null;
      idleSince = performance.now();
    }
    pump();
  }

  // An explicit stop is sent even when idle: it is the user's command, and
  // it also stops another client's drive.
  function emergencyStop() {
    releaseAll({ send: false });
    send({ type: "stop" });
    notify("Stop sent", "info");
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
    else pollHealth();
  });
  window.addEventListener("pagehide", () => releaseAll());

  // ----------------------------------------------------- on-screen buttons

  ui.stop.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    emergencyStop();
  });
  // Keyboard activation of the focused button (Enter); Space is handled above.
  ui.stop.addEventListener("click", (event) => {
    if (event.detail === 0) emergencyStop();
  });

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

  connect();
  pump();
  start3d();
})();
