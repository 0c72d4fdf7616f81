/* The client-only baseline: a small first-party tracker of the kind sites
   run today. It keeps the first and last non-direct touch in a JS cookie
   (two years, as analytics tags set it), sends a page-view beacon per page
   and a conversion beacon when the confirmation page shows, all to its
   collector host, whose origin the bench fills in. */
(function () {
  var C = "__COLLECTOR__", q = new URLSearchParams(location.search), r = document.referrer, t = null;
  var m = (q.get("utm_medium") || "").toLowerCase();
  if (q.get("gclid") || m === "cpc") t = "Paid Search";
  else if (m === "email") t = "Email";
  else if (m === "social" || m === "paid_social") t = "Organic Social";
  else if (r && new URL(r).host !== location.host) {
    var h = new URL(r).hostname;
    t = /(^|\.)(google|bing|duckduckgo)\./.test(h) ? "Organic Search" : /(^|\.)(facebook|instagram|linkedin|x|t)\.(com|co)$/.test(h) ? "Organic Social" : "Referral";
  }
  var c = document.cookie.match(/(?:^|; )_bt=([^;]*)/), s = {};
  try { s = c ? JSON.parse(decodeURIComponent(c[1])) : {}; } catch (e) { s = {}; }
  if (t) { s.ft = s.ft || t; s.lt = t; }
  document.cookie = "_bt=" + encodeURIComponent(JSON.stringify(s)) + "; path=/; max-age=63072000; samesite=lax";
  function send(kind) {
    navigator.sendBeacon(C + "/e", JSON.stringify({ kind: kind, journey: window.__benchJourney, first: s.ft || "Direct", last: s.lt || "Direct", path: location.pathname }));
  }
  send("page_view");
  var h1 = document.querySelector("h1");
  if (h1 && /welcome/i.test(h1.textContent)) send("conversion");
})();
