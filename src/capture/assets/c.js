/* touchgate client snippet: adds the context object to conversion form
   submits and sends a beacon per submit. No dependencies, no cookies. */
(function (w, d) {
  var P = "__PREFIX__", F = __FORMS__, n = w.navigator;
  function b64(s) {
    return btoa(unescape(encodeURIComponent(s))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function cid() {
    var c = w.crypto;
    return c && c.randomUUID ? c.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2);
  }
  function ux() {
    var o = {}, p = w.performance, t = p && p.getEntriesByType && p.getEntriesByType("navigation")[0];
    if (t) { o.ttfb = Math.round(t.responseStart); o.dcl = Math.round(t.domContentLoadedEventEnd); o.load = Math.round(t.loadEventEnd); }
    var f = p && p.getEntriesByName && p.getEntriesByName("first-contentful-paint")[0];
    if (f) o.fcp = Math.round(f.startTime);
    return o;
  }
  function match(path) {
    for (var i = 0; i < F.length; i++) {
      var r = F[i][0];
      if (r.slice(-1) === "*" ? path.indexOf(r.slice(0, -1)) === 0 : path === r) return F[i][1];
    }
  }
  d.addEventListener("submit", function (e) {
    var f = e.target, a = new URL(f.action || location.href, location.href);
    if ((f.method || "").toUpperCase() !== "POST" || a.origin !== location.origin) return;
    var name = match(a.pathname);
    if (!name) return;
    var id = cid(), ctx = { cid: id, ux: ux() };
    if (w.tgExperiments) ctx.exp = w.tgExperiments;
    var i = f.querySelector("input[name=_tg_ctx]") || d.createElement("input");
    i.type = "hidden"; i.name = "_tg_ctx"; i.value = b64(JSON.stringify(ctx));
    f.appendChild(i);
    var body = JSON.stringify({ event_name: name, cid: id });
    if (n.sendBeacon) n.sendBeacon(P + "/b", body);
  }, true);
})(window, document);
