// Stands in for web-vitals on bulk.html: keeps rum.js's callbacks so that the
// test can report as many metrics, with as much attribution, as it likes.
"use strict";

window.webVitals = (function () {
  const callbacks = {};
  const api = {
    report: function (metric) {
      callbacks[metric.name](metric);
    },
  };
  for (const name of ["LCP", "INP", "CLS", "FCP", "TTFB"]) {
    api["on" + name] = function (callback) {
      callbacks[name] = callback;
    };
  }
  return api;
})();
