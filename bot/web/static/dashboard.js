// chatmood dashboard: live mood, the timeline chart (uPlot, when installed), recent
// messages and the reset button. Chat text is hostile: it only ever goes in through
// textContent. Runs under a strict CSP: no eval, no inline styles, no inline handlers.
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root) { return; }
  var channel = root.dataset.channel;
  var rangeS = parseInt(root.dataset.rangeS, 10) || 3600;
  var csrf = root.dataset.csrf;
  var categories = (root.dataset.categories || "").split(" ").filter(Boolean);
  var colours = (root.dataset.colours || "").split(" ").filter(Boolean);
  var COLOUR = /^#[0-9a-fA-F]{6}$/;
  var base = "/api/";
  var chan = encodeURIComponent(channel);

  function byId(id) { return document.getElementById(id); }
  function setText(id, text) { var el = byId(id); if (el) { el.textContent = text; } }

  function getJson(path) {
    return fetch(path, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
        return r.json();
      });
  }

  // ------------------------------------------------------------------ current mood
  function showMood(m) {
    if (COLOUR.test(m.colour)) { byId("swatch").setAttribute("fill", m.colour); }
    setText("mood-label", String(m.label));
    setText("mood-share", Math.round(100 * Number(m.share)) + "%");
    var v = Number(m.valence);
    setText("mood-valence", (v >= 0 ? "+" : "") + v.toFixed(2));
    setText("mood-messages", String(m.messages));
    setText("mood-skipped", String(m.skipped));
  }
  function refreshMood() { getJson(base + "mood/" + chan).then(showMood).catch(function () {}); }

  // -------------------------------------------------------------- recent messages
  function cell(cls, text) {
    var td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    return td;
  }
  function showMessages(payload) {
    var body = byId("message-rows");
    var rows = document.createDocumentFragment();
    payload.messages.forEach(function (m) {
      var tr = document.createElement("tr");
      var t = new Date(m.sent_at);
      tr.appendChild(cell("time", isNaN(t) ? "" : t.toISOString().slice(11, 19)));
      tr.appendChild(cell("user", String(m.user_name)));
      var label = cell("label", m.label ? String(m.label) : "-");
      if (typeof m.confidence === "number") {
        var conf = document.createElement("span");
        conf.className = "conf";
        conf.textContent = " " + Math.round(100 * m.confidence) + "%";
        label.appendChild(conf);
      }
      tr.appendChild(label);
      tr.appendChild(cell("text", String(m.text)));
      rows.appendChild(tr);
    });
    if (!payload.messages.length) {
      var tr = document.createElement("tr");
      var td = cell("", "no messages yet");
      td.colSpan = 4;
      tr.appendChild(td);
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
    root.dataset.messageRefreshes = String((parseInt(root.dataset.messageRefreshes, 10) || 0) + 1);
  }
  function refreshMessages() {
    getJson(base + "messages/" + chan + "?limit=50").then(showMessages).catch(function () {});
  }

  // --------------------------------------------------------------------- personas
  // Each bot's persona (model, replies sent and dropped, last reply), from /healthz.
  function showPersonas(report) {
    var body = byId("persona-rows");
    var personas = (report && report.personas) || {};
    var rows = document.createDocumentFragment();
    Object.keys(personas).forEach(function (name) {
      var p = personas[name];
      var tr = document.createElement("tr");
      tr.dataset.bot = name;
      var who = cell("user", name);
      var account = document.createElement("span");
      account.className = "conf";
      account.textContent = " @" + String(p.account);
      who.appendChild(account);
      tr.appendChild(who);
      tr.appendChild(cell("role", String(p.role)));
      tr.appendChild(cell("model", p.model_loaded ? String(p.model) : String(p.state)));
      tr.appendChild(cell("num sent", String(p.replies_sent)));
      var dropped = cell("num dropped", String(p.replies_dropped));
      if (p.last_drop_reason) {
        var why = document.createElement("span");
        why.className = "conf";
        why.textContent = " (" + String(p.last_drop_reason) + ")";
        dropped.appendChild(why);
      }
      tr.appendChild(dropped);
      tr.appendChild(cell("time last", p.last_reply_at ? String(p.last_reply_at).slice(11, 19) : "-"));
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
  }
  function refreshPersonas() {
    if (!byId("persona-rows")) { return; }
    fetch("/healthz", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })  // a 503 still carries the report
      .then(showPersonas).catch(function () {});
  }

  // ------------------------------------------------------------------------ chart
  var chart = null;
  var chartBox = byId("chart");
  function chartNotice(text) {
    var n = byId("chart-notice");
    if (n) { n.textContent = text; n.classList.remove("hidden"); }
  }
  function columns(tl) {
    var data = [tl.t, tl.valence];
    categories.forEach(function (c) { data.push(tl.shares[c] || tl.t.map(function () { return 0; })); });
    return data;
  }
  function makeChart(tl) {
    var series = [
      {},
      { label: "valence", scale: "v", stroke: "#ffffff", width: 2 }
    ];
    categories.forEach(function (c, i) {
      series.push({ label: c, scale: "s", stroke: COLOUR.test(colours[i]) ? colours[i] : "#888888", width: 1,
                    value: function (u, x) { return x == null ? "-" : Math.round(x * 100) + "%"; } });
    });
    var opts = {
      width: Math.max(320, chartBox.clientWidth),
      height: 300,
      series: series,
      scales: { v: { range: [-1, 1] }, s: { range: [0, 1] } },
      axes: [
        { stroke: "#9aa0a8", grid: { stroke: "#2a2e36" } },
        { scale: "v", stroke: "#9aa0a8", grid: { stroke: "#2a2e36" } },
        { scale: "s", side: 1, stroke: "#9aa0a8", grid: { show: false },
          values: function (u, vals) { return vals.map(function (x) { return Math.round(x * 100) + "%"; }); } }
      ]
    };
    chart = new window.uPlot(opts, columns(tl), chartBox);
  }
  function refreshChart() {
    if (!chartBox) { return; }
    if (typeof window.uPlot !== "function") {
      chartNotice("The chart library did not load: run make setup. Everything else works without it.");
      return;
    }
    getJson(base + "timeline/" + chan + "?since=" + rangeS).then(function (tl) {
      root.dataset.points = String(tl.t.length);
      if (chart) { chart.setData(columns(tl)); } else { makeChart(tl); }
    }).catch(function (e) { chartNotice("No timeline: " + e.message); });
  }

  // ------------------------------------------------------------------------ reset
  var resetButton = byId("reset");
  if (resetButton) {
    resetButton.addEventListener("click", function () {
      setText("reset-status", "resetting...");
      fetch(base + "reset/" + chan, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, "Accept": "application/json" }
      }).then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      }).then(function (payload) {
        showMood(payload.mood);
        setText("reset-status", "mood reset");
      }).catch(function (e) { setText("reset-status", "reset failed: " + e.message); });
    });
  }

  refreshChart();
  refreshMessages();
  window.setInterval(refreshMood, 2000);
  window.setInterval(refreshMessages, 5000);
  window.setInterval(refreshPersonas, 5000);
  window.setInterval(refreshChart, 15000);
}());
