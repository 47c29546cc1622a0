// kern_tasks dashboard: the little script the pages use (no framework, no build step).
// 1. times in the viewer's zone (Intl), unless the page was asked for one (?tz=);
// 2. confirmation dialogs for the actions;
// 3. a schedule's page refreshes its status and runs while a run is in flight: it polls
//    /live with backoff (1 s, growing to 15 s), starts over after a change, and stops when
//    nothing is in flight. Never a busy loop: one request at a time, always after a wait.
(function () {
  "use strict";
  var asked = new URLSearchParams(location.search).get("tz");
  var zone = asked || (Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");

  function localTimes(root) {
    if (asked) return; // the server already wrote them in the zone asked for
    var fmt;
    try {
      fmt = new Intl.DateTimeFormat("sv-SE", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
    } catch (e) { return; }
    root.querySelectorAll("time[data-epoch]").forEach(function (el) {
      var epoch = Number(el.getAttribute("data-epoch"));
      if (!isFinite(epoch)) return;
      el.textContent = fmt.format(new Date(epoch * 1000));
      el.title = new Date(epoch * 1000).toISOString();
    });
    document.querySelectorAll(".viewer-zone").forEach(function (el) { el.textContent = zone; });
  }

  function dialogs() {
    document.querySelectorAll("[data-dialog]").forEach(function (button) {
      button.addEventListener("click", function () {
        var dialog = document.getElementById(button.getAttribute("data-dialog"));
        if (dialog && dialog.showModal) dialog.showModal();
      });
    });
    document.querySelectorAll("dialog [data-close]").forEach(function (button) {
      button.addEventListener("click", function () { button.closest("dialog").close(); });
    });
  }

  function live() {
    var box = document.getElementById("schedule-facts");
    if (!box) return;
    var url = box.getAttribute("data-live") + (asked ? "?tz=" + encodeURIComponent(asked) : "");
    var FIRST = 1000, MOST = 15000, wait = FIRST, last = null, timer = null, fetching = false;
    var parts = { status: "live-status", timeline: "live-timeline", attempts: "live-attempts" };

    function schedule() { timer = setTimeout(poll, wait); }
    function poll() {
      timer = null;
      fetching = true;
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (answer) {
          if (answer.status === 401) { location.reload(); throw new Error("signed out"); } // to the login
          if (!answer.ok) throw new Error("HTTP " + answer.status);
          return answer.json();
        })
        .then(function (data) {
          var seen = data.status + data.timeline + data.attempts;
          if (seen !== last) {
            Object.keys(parts).forEach(function (key) {
              var el = document.getElementById(parts[key]);
              if (el) { el.innerHTML = data[key]; localTimes(el); }
            });
            wait = FIRST; // it moved: look again soon
            last = seen;
          } else {
            wait = Math.min(MOST, wait * 1.6);
          }
          box.setAttribute("data-in-flight", String(data.in_flight));
          fetching = false;
          if (data.in_flight > 0) schedule(); // nothing in flight: stop
        })
        .catch(function () { fetching = false; wait = Math.min(MOST, wait * 2); schedule(); });
    }
    // polling(): is a request out or a next one timed? (false: the page asks nothing more)
    window.kernLive = {
      start: function () { if (!timer && !fetching) { wait = FIRST; schedule(); } },
      polling: function () { return timer !== null || fetching; }
    };
    if (Number(box.getAttribute("data-in-flight")) > 0) schedule();
  }

  window.kernLocalTimes = localTimes; // for pages that replace a part (run_poll.js)
  localTimes(document);
  dialogs();
  live();
})();
