// chatmood overlay: applies the mood colour and follows the server's WebSocket.
// Written for the page's strict CSP: no eval, no inline styles (CSSOM properties only),
// text through textContent. Reconnects with capped exponential backoff.
(function () {
  "use strict";
  var root = document.getElementById("overlay");
  if (!root) { return; }
  var label = document.getElementById("label");
  var data = root.dataset;
  var COLOUR = /^#[0-9a-fA-F]{6}$/;
  var FIRST_DELAY_MS = 500;
  var MAX_DELAY_MS = 10000;
  var delay = FIRST_DELAY_MS;

  root.style.setProperty("--size", parseInt(data.size, 10) + "px");

  function apply(state) {
    if (!state || typeof state.colour !== "string" || !COLOUR.test(state.colour)) { return; }
    root.style.setProperty("--mood", state.colour);
    root.dataset.colour = state.colour.toLowerCase();
    if (typeof state.label === "string") {
      root.dataset.mood = state.label;
      // The colour leans towards a mood that isn't the named one (e.g. mostly neutral, a quarter hype):
      // say so, so the word and the colour agree.
      var leaning = typeof state.lean === "string" && state.lean !== state.label && state.strength >= 0.5;
      root.dataset.lean = leaning ? state.lean : "";
      label.textContent = leaning ? "leaning " + state.lean : state.label;
    }
  }

  function socketUrl() {
    var proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    var url = proto + "//" + window.location.host + "/ws/" + encodeURIComponent(data.channel);
    if (data.token) { url += "?token=" + encodeURIComponent(data.token); }
    return url;
  }

  function connect() {
    var ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (e) {
      retry();
      return;
    }
    ws.onopen = function () {
      delay = FIRST_DELAY_MS;
      root.dataset.connected = "1";
    };
    ws.onmessage = function (event) {
      var state;
      try { state = JSON.parse(event.data); } catch (e) { return; }
      apply(state);
    };
    ws.onclose = function () {
      root.dataset.connected = "0";
      retry();
    };
  }

  function retry() {
    var wait = delay * (0.8 + 0.4 * Math.random());
    delay = Math.min(delay * 2, MAX_DELAY_MS);
    window.setTimeout(connect, wait);
  }

  apply({ colour: data.colour, label: data.mood });
  connect();
}());
