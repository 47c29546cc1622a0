// A run's page (a workflow's, an agent's, a team's): refresh its parts while the run is in
// flight. The element marked `data-poll` names the URL to poll; an answer that changed
// carries `parts`, each an element id with the HTML to put in it. One request at a time,
// always after a wait: 1 s, growing by 1.6x to 15 s while nothing changes, 1 s again after
// a change; it stops once the run ended or is gone (404), waits while the tab is hidden,
// and a 401 (the key changed, the JWT expired) reloads the page, which goes to the login.
// Each poll sends the mark of what is shown, so an unchanged run costs one cheap query.
(function () {
  "use strict";
  var box = document.querySelector("[data-poll]");
  if (!box || box.getAttribute("data-ended") === "true") return;
  var FIRST = 1000, MOST = 15000, wait = FIRST;
  var url = box.getAttribute("data-poll");
  var tz = new URLSearchParams(location.search).get("tz");

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
    var query = "?mark=" + encodeURIComponent(box.getAttribute("data-mark") || "") + (tz ? "&tz=" + encodeURIComponent(tz) : "");
    fetch(url + query, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (answer) {
        if (answer.status === 401) { location.reload(); return null; } // to the login
        if (answer.status === 404) return null; // the run is gone (pruned): nothing to follow
        if (!answer.ok) throw new Error("HTTP " + answer.status);
        return answer.json();
      })
      .then(function (data) {
        if (data === null) return;
        if (data.changed) {
          Object.keys(data.parts || {}).forEach(function (id) {
            var el = document.getElementById(id);
            if (!el) return;
            el.innerHTML = data.parts[id];
            if (window.kernLocalTimes) window.kernLocalTimes(el); // times in the viewer's zone again
          });
          box.setAttribute("data-mark", data.mark);
          box.setAttribute("data-ended", data.ended ? "true" : "false");
          wait = FIRST;
          if (data.ended) return; // the run is over: nothing will change any more
        } else {
          wait = Math.min(MOST, wait * 1.6);
        }
        later();
      })
      .catch(function () { wait = Math.min(MOST, wait * 2); later(); });
  }
  later();
})();
