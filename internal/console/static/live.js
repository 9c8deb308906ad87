// livedump console: live rows on a capture's page. The page works without
// this script (reload it); with it, trigger events and machine states
// arrive as Server-Sent Events. Text only ever goes into the page as text.
"use strict";
(function () {
  var table = document.querySelector("table[data-live]");
  if (!table || !window.EventSource) { return; }
  var rows = document.getElementById("event-rows");
  var count = document.getElementById("event-count");
  var status = document.getElementById("live-status");
  var maxRows = 500;
  var seen = new Set();
  rows.querySelectorAll("tr.event").forEach(function (tr) { seen.add(tr.dataset.id); });
  function say(text) { if (status) { status.textContent = text; } }
  function cell(tr, text, code) {
    var td = document.createElement("td");
    if (code) { var c = document.createElement("code"); c.textContent = text; td.appendChild(c); } else { td.textContent = text; }
    tr.appendChild(td);
  }
  var es = new EventSource(table.dataset.live);
  es.onopen = function () { say("live"); };
  es.onerror = function () { say("reconnecting…"); };
  es.addEventListener("trigger", function (m) {
    var e = JSON.parse(m.data);
    if (seen.has(e.id)) { return; }
    seen.add(e.id);
    var tr = document.createElement("tr");
    tr.className = "event new";
    tr.dataset.id = e.id;
    cell(tr, e.time); cell(tr, e.host); cell(tr, e.process); cell(tr, String(e.pid));
    cell(tr, e.probe); cell(tr, e.status); cell(tr, e.top_frame, true);
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > maxRows) { rows.removeChild(rows.lastChild); }
    if (count) { count.textContent = String(Math.max(Number(count.textContent) || 0, seen.size)); }
  });
  es.addEventListener("target", function (m) {
    var t = JSON.parse(m.data);
    var tr = document.querySelector('#targets tr[data-agent="' + CSS.escape(t.agent_id) + '"]');
    if (!tr) { return; }
    var st = tr.querySelector(".t-state span");
    if (st) { st.textContent = t.state; st.className = "state state-" + t.state; }
    var ev = tr.querySelector(".t-events"); if (ev) { ev.textContent = String(t.events); }
    var d = tr.querySelector(".t-detail"); if (d) { d.textContent = t.detail; }
  });
  es.addEventListener("ended", function (m) {
    var e = JSON.parse(m.data);
    say("ended: " + e.state + (e.detail ? " (" + e.detail + ")" : ""));
    var s = document.getElementById("capture-state");
    if (s) { s.textContent = e.state; s.className = "state state-" + e.state; }
    es.close();
  });
  es.addEventListener("failed", function (m) { say("stream failed: " + JSON.parse(m.data).error + "; retrying"); });
}());
