// The console's one script. Pages work without it; with it, a page marked
// data-live fetches itself again when the daemon says something changed
// (server-sent events on /live) and swaps in its new <main>. A reader who
// is typing in a field keeps the page they have.
(function () {
  "use strict";
  var main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource || !window.fetch) return;
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    var active = document.activeElement;
    if (active && main.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) return;
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var next = new DOMParser().parseFromString(html, "text/html").querySelector("main[data-live]");
        if (next) { main.innerHTML = next.innerHTML; document.dispatchEvent(new Event("dealflow:refreshed")); }
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  var live = new EventSource("/live");
  live.addEventListener("changed", refresh);
  // Browsers allow six connections per site; a page left must give its
  // stream's back at once, not when the server next writes to it.
  window.addEventListener("pagehide", function () { live.close(); });
  document.documentElement.setAttribute("data-live-ready", "");
})();
