// A workflow run's page: refresh its status and step tree while the run is in flight.
// One request at a time, always after a wait: 1 s, growing by 1.6x to 15 s while nothing
// changes, 1 s again after a change; it stops once the run ended (or the page is hidden
// long enough for the browser to throttle it, which only slows it down). Each poll sends
// the mark of the tree shown, so an unchanged run costs the server one cheap query.
(function () {
  "use strict";
  var box = document.getElementById("workflow-run");
  if (!box || box.getAttribute("data-ended") === "true") return;
  var FIRST = 1000, MOST = 15000, wait = FIRST;
  var url = box.getAttribute("data-tree");
  var tz = new URLSearchParams(location.search).get("tz");

  function later() { setTimeout(poll, wait); }
  function poll() {
    var query = "?mark=" + encodeURIComponent(box.getAttribute("data-mark") || "") + (tz ? "&tz=" + encodeURIComponent(tz) : "");
    fetch(url + query, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (answer) {
        if (!answer.ok) throw new Error("HTTP " + answer.status);
        return answer.json();
      })
      .then(function (data) {
        if (data.changed) {
          document.getElementById("step-tree").innerHTML = data.tree;
          document.getElementById("run-status").innerHTML = data.status;
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
