// kern_tasks dashboard: the little script the pages use (no framework, no build step).
// 1. times in the viewer's zone (Intl), unless the page was asked for one (?tz=);
// 2. confirmation dialogs for the actions;
// 3. the one poller of the pages that follow something in flight (`poller`): a schedule's
//    page polls /live while a run is in flight, a run's page (run_poll.js) its state.
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

  // Never a busy loop: one request at a time, always after a wait: 1 s, growing by 1.6x to
  // 15 s while nothing changes (2x after a failed request), 1 s again after a change. It
  // waits while the tab is hidden, stops once `apply` says nothing more will change or the
  // thing is gone (404), and a 401 (the key changed, the JWT expired) reloads the page,
  // which goes to the login. `url()` is asked before each request; `apply(data)` puts the
  // answer on the page and returns {changed, more}. polling(): is a request out or a next
  // one due? (false: the page asks nothing more)
  function poller(url, apply) {
    var FIRST = 1000, MOST = 15000, wait = FIRST, pending = true;
    function later() {
      setTimeout(function () {
        if (!document.hidden) { poll(); return; }
        document.addEventListener("visibilitychange", function shown() {
          if (document.hidden) return;
          document.removeEventListener("visibilitychange", shown);
          poll();
        });
      }, wait);
    }
    function poll() {
      fetch(url(), { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (answer) {
          if (answer.status === 401) { location.reload(); return null; } // to the login
          if (answer.status === 404) return null; // gone (deleted, pruned): nothing to follow
          if (!answer.ok) throw new Error("HTTP " + answer.status);
          return answer.json();
        })
        .then(function (data) {
          var seen = data === null ? { changed: false, more: false } : apply(data);
          wait = seen.changed ? FIRST : Math.min(MOST, wait * 1.6);
          pending = seen.more;
          if (pending) later();
        })
        .catch(function () { wait = Math.min(MOST, wait * 2); later(); });
    }
    later();
    return { polling: function () { return pending; } };
  }

  // A part of the page replaced by a poll's answer, its times in the viewer's zone again.
  function fill(id, html) {
    var el = document.getElementById(id);
    if (el) { el.innerHTML = html; localTimes(el); }
  }

  function live() {
    var box = document.getElementById("schedule-facts");
    if (!box) return;
    if (!(Number(box.getAttribute("data-in-flight")) > 0)) {
      window.kernLive = { polling: function () { return false; } }; // nothing in flight: nothing to follow
      return;
    }
    var url = box.getAttribute("data-live") + (asked ? "?tz=" + encodeURIComponent(asked) : "");
    var parts = { status: "live-status", timeline: "live-timeline", attempts: "live-attempts" }, last = null;
    window.kernLive = poller(function () { return url; }, function (data) {
      var seen = data.status + data.timeline + data.attempts, changed = seen !== last;
      if (changed) {
        Object.keys(parts).forEach(function (key) { fill(parts[key], data[key]); });
        last = seen;
      }
      box.setAttribute("data-in-flight", String(data.in_flight));
      return { changed: changed, more: data.in_flight > 0 }; // nothing in flight: stop
    });
  }

  window.kernPoller = poller; // for run_poll.js
  window.kernFill = fill;
  localTimes(document);
  dialogs();
  live();
})();
