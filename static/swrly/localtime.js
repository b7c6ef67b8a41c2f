// Show every <time datetime="…"> in the viewer's timezone. The server renders UTC; the UTC
// value stays in the element's title, so hovering shows it. Loaded with `defer` (no inline
// script: the CSP allows scripts from this origin only).
(function () {
  "use strict";
  var pad = function (n) { return (n < 10 ? "0" : "") + n; };
  var zoneName = function (date) {
    try {
      var parts = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(date);
      for (var i = 0; i < parts.length; i++) {
        if (parts[i].type === "timeZoneName") { return parts[i].value; }
      }
    } catch (e) { /* an old browser: no zone name */ }
    return "";
  };
  var localize = function (element) {
    var value = element.getAttribute("datetime");
    var date = new Date(value);
    if (!value || value.length < 11 || isNaN(date.getTime())) { return; }
    var text = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
    // A value with milliseconds (the key timeline's) keeps them.
    if (/\.\d{3}Z$/.test(value)) { text += "." + ("00" + date.getMilliseconds()).slice(-3); }
    var zone = zoneName(date);
    element.textContent = zone ? text + " " + zone : text;
    if (!element.title) { element.title = value.replace("T", " ").replace("Z", " UTC"); }
    element.setAttribute("data-localized", "");
  };
  var run = function () {
    var elements = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < elements.length; i++) { localize(elements[i]); }
  };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", run);
  } else {
    run();
  }
})();
