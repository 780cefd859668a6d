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
      label.textContent = state.label;
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
