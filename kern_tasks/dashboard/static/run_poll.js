// A run's page (a workflow's, an agent's, a team's): refresh its parts while the run is in
// flight, with dashboard.js's poller (its waits, hidden tabs, 401 and 404). The element
// marked `data-poll` names the URL to poll; an answer that changed carries `parts`, each
// an element id with the HTML to put in it. Each poll sends the mark of what is shown, so
// an unchanged run costs one cheap query; it stops once the run ended.
(function () {
  "use strict";
  var box = document.querySelector("[data-poll]");
  if (!box || box.getAttribute("data-ended") === "true") return;
  var tz = new URLSearchParams(location.search).get("tz");

  function url() {
    return box.getAttribute("data-poll") + "?mark=" + encodeURIComponent(box.getAttribute("data-mark") || "") +
      (tz ? "&tz=" + encodeURIComponent(tz) : "");
  }
  function apply(data) {
    if (!data.changed) return { changed: false, more: true };
    Object.keys(data.parts || {}).forEach(function (id) { window.kernFill(id, data.parts[id]); });
    box.setAttribute("data-mark", data.mark);
    box.setAttribute("data-ended", data.ended ? "true" : "false");
    return { changed: true, more: !data.ended }; // the run is over: nothing will change any more
  }
  // Deferred scripts run in document order and this one comes before dashboard.js (base.html):
  // its poller is there once the document is parsed.
  document.addEventListener("DOMContentLoaded", function () { window.kernPoller(url, apply); });
})();
