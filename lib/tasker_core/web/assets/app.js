// tasker_core dashboard: confirmations for actions, and the live task page.
// Hand-written, no dependencies; served by the dashboard itself.
(function () {
  "use strict";

  // Every action form asks first.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // A running task's page redraws its live part (status, DAG, steps) from
  // the server until the task finishes. The redraw keeps open <details>
  // open, and waits while someone is typing a result into a form.
  function startLive(live) {
    var url = live.getAttribute("data-live-url");
    var interval = parseInt(live.getAttribute("data-interval"), 10) || 1000;

    function finished() {
      var state = live.querySelector(".live-state");
      return state && state.getAttribute("data-finished") === "true";
    }

    function busy() {
      var active = document.activeElement;
      if (active && live.contains(active) && active.tagName === "TEXTAREA") return true;
      return Array.prototype.some.call(live.querySelectorAll("textarea"), function (area) {
        return area.value !== area.defaultValue;
      });
    }

    function redraw(html) {
      var open = Array.prototype.map.call(live.querySelectorAll("details[open][id]"), function (d) { return d.id; });
      var closed = Array.prototype.map.call(live.querySelectorAll("details[id]:not([open])"), function (d) { return d.id; });
      live.innerHTML = html;
      open.forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
      closed.forEach(function (id) { var d = document.getElementById(id); if (d) d.open = false; });
    }

    function tick() {
      if (finished()) return;
      if (busy()) { window.setTimeout(tick, interval); return; }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) { if (html !== null && !busy()) redraw(html); })
        .catch(function () { /* the next tick tries again */ })
        .then(function () { window.setTimeout(tick, interval); });
    }

    window.setTimeout(tick, interval);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live) startLive(live);
  });
})();
