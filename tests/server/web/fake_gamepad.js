// A gamepad the test holds: replaces navigator.getGamepads() before the page's
// scripts run (Playwright init script) and fires the browser's connect and
// disconnect events. Headless Chromium has no pads of its own, and a real
// GamepadEvent cannot carry a made-up pad, so the events are plain Events
// with a `gamepad` property, as the page reads them.
//
// From a test: window.fakePad.connect({index, id, mapping, axes, buttons}),
// .set({axes: {1: -1}, buttons: {4: true}}, index), .disconnect(index); the
// slot index defaults to 0.
"use strict";

(() => {
  const SLOTS = 4;
  const BUTTONS = 17; // the standard layout's buttons
  const pads = new Array(SLOTS).fill(null);

  function fresh(index, id) {
    return {
      id,
      index,
      connected: true,
      mapping: "standard",
      timestamp: performance.now(),
      axes: [0, 0, 0, 0],
      buttons: Array.from({ length: BUTTONS }, () => ({ pressed: false, touched: false, value: 0 })),
    };
  }

  // A copy, as a browser hands out a snapshot that later polls do not change.
  function snapshot(pad) {
    return pad && { ...pad, axes: [...pad.axes], buttons: pad.buttons.map((b) => ({ ...b })) };
  }

  function fire(type, pad) {
    const event = new Event(type);
    Object.defineProperty(event, "gamepad", { value: pad });
    window.dispatchEvent(event);
  }

  Object.defineProperty(Navigator.prototype, "getGamepads", {
    configurable: true,
    value: function getGamepads() {
      return pads.map(snapshot);
    },
  });

  window.fakePad = {
    // Plugged in, with sticks and buttons already where `state` puts them.
    connect({ index = 0, id = "Fake pad (STANDARD GAMEPAD)", mapping = "standard", ...state } = {}) {
      pads[index] = fresh(index, id);
      pads[index].mapping = mapping;
      this.set(state, index);
      fire("gamepadconnected", snapshot(pads[index]));
    },
    // Unplugged: the slot empties, then the event fires (Chromium's order).
    disconnect(index = 0) {
      const pad = snapshot(pads[index]);
      pads[index] = null;
      pad.connected = false;
      fire("gamepaddisconnected", pad);
    },
    // axes: {index: value}; buttons: {index: true/false or a 0..1 value}.
    set({ axes = {}, buttons = {} } = {}, index = 0) {
      const pad = pads[index];
      if (!pad) throw new Error(`no fake pad in slot ${index}`);
      for (const [i, value] of Object.entries(axes)) pad.axes[Number(i)] = value;
      for (const [i, value] of Object.entries(buttons)) {
        const amount = typeof value === "number" ? value : value ? 1 : 0;
        pad.buttons[Number(i)] = { pressed: amount > 0.5, touched: amount > 0, value: amount };
      }
      pad.timestamp = performance.now();
    },
  };
})();
