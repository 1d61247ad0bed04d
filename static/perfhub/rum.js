/*! PerfHub real-user monitoring: sends Core Web Vitals to PerfHub.
 * Load it after web-vitals' attribution IIFE build, both deferred:
 *   <script src=".../web-vitals-6.2.3.attribution.iife.js" defer></script>
 *   <script src=".../rum.js" data-perfhub-key="SITE_PUBLIC_KEY" defer></script>
 * Optional attributes: data-perfhub-endpoint, -release, -route (or set
 * window.perfhubRoute, read at each send), -sample-rate (default 1).
 * Body format: "The beacon contract" in PerfHub's DESIGN.md. */
(() => {
  'use strict';
  // Only set while this file's top level runs.
  const tag = document.currentScript;
  const data = (tag && tag.dataset) || {};
  const vitals = window.webVitals;
  if (!data.perfhubKey || !vitals) {
    console.warn('PerfHub: ' + (vitals ? 'no data-perfhub-key, nothing sent' : 'load web-vitals first'));
    return;
  }
  // Default: PerfHub's endpoint on the origin this file came from.
  const url = new URL(data.perfhubEndpoint || '/api/v1/vitals/collect', tag.src || location.href);
  url.searchParams.set('key', data.perfhubKey);
  // Absent or unparsable means every page view. A rate of 0 or less samples
  // none, so every beacon sent has a sample_rate in (0, 1] and the server's
  // 1 / sample_rate weight stays finite.
  const parsed = parseFloat(data.perfhubSampleRate);
  const rate = isFinite(parsed) ? Math.min(parsed, 1) : 1;
  if (!(Math.random() < rate)) return;

  // sendBeacon and keepalive fetch share a 64 KiB in-flight quota; PerfHub
  // takes at most 50 metrics per beacon.
  const LIMIT = 60 * 1024;
  const MAX_METRICS = 50;
  const FIELDS = {
    LCP: 'target url timeToFirstByte resourceLoadDelay resourceLoadDuration elementRenderDelay',
    INP: 'interactionTarget interactionType inputDelay processingDuration presentationDelay loadState',
    CLS: 'largestShiftTarget largestShiftValue largestShiftTime loadState',
    FCP: 'timeToFirstByte firstByteToFCP loadState',
    TTFB: 'waitingDuration cacheDuration dnsDuration connectionDuration requestDuration',
  };
  // Selectors and URLs are cut to 500 characters; route and release to what
  // PerfHub stores.
  const clip = (value, max = 500) => (typeof value === 'string' ? value.slice(0, max) : value);
  const bytes = (text) => new Blob([text]).size;
  // randomUUID needs a secure context; elsewhere, a version 4 UUID from
  // getRandomValues (each 0, 1 or 8 of the template becomes a random digit
  // keeping the version and variant bits).
  const uuid = () => (crypto.randomUUID ? crypto.randomUUID()
    : '10000000-1000-4000-8000-100000000000'.replace(/[018]/g,
      (c) => (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16)));
  let pageview = uuid();
  const queue = new Map();
  // Metric id to the value last sent: with reportAllChanges, web-vitals'
  // delta is since its last report, which may never have left the page.
  const sent = new Map();

  // A flat copy of the attribution: the raw one holds DOM nodes and
  // performance entries, which neither serialise nor stay small.
  const project = (metric) => {
    const a = metric.attribution || {};
    const out = {};
    for (const key of FIELDS[metric.name].split(' ')) {
      if (typeof a[key] === 'string' || typeof a[key] === 'number') out[key] = clip(a[key]);
    }
    // web-vitals picks the Long Animation Frame script that overlaps the
    // interaction the most.
    const script = a.longestScript;
    if (script && script.entry) {
      out.longestScriptURL = clip(script.entry.sourceURL);
      out.longestScriptInvoker = clip(script.entry.invoker);
      out.longestScriptDuration = script.entry.duration;
      out.longestScriptSubpart = script.subpart;
    }
    // PerfHub's own Server-Timing names. The entry is the page's navigation
    // entry, and absent for a back/forward cache restore, whose TTFB the
    // original response's timings do not explain.
    const timings = (metric.name === 'TTFB' && a.navigationEntry && a.navigationEntry.serverTiming) || [];
    for (const timing of timings) {
      if (/^(db|cache|app)$/.test(timing.name)) (out.serverTiming = out.serverTiming || {})[timing.name] = timing.duration;
    }
    const projected = {};
    for (const key of 'name value delta id rating navigationType'.split(' ')) projected[key] = metric[key];
    projected.attribution = out;
    return projected;
  };

  // Splits metrics into bodies of at most LIMIT bytes and MAX_METRICS
  // metrics. A metric too big on its own loses its attribution strings, and
  // is dropped if still too big.
  const encode = (metrics) => {
    const route = typeof window.perfhubRoute === 'string' ? window.perfhubRoute : data.perfhubRoute;
    const head = JSON.stringify({
      v: 1, pageview, url: clip(location.href), route: clip(route || undefined, 200),
      release: clip(data.perfhubRelease || undefined, 100), sample_rate: rate,
      connection: (navigator.connection || {}).effectiveType, sent_at: Date.now(), metrics: [],
    }).slice(0, -2);
    const base = bytes(head) + 2;
    const bodies = [];
    let batch = [];
    let size = base;
    for (const metric of metrics) {
      let json = JSON.stringify(metric);
      if (base + bytes(json) > LIMIT) {
        json = JSON.stringify(metric, function (key, value) {
          return this === metric.attribution && typeof value === 'string' ? undefined : value;
        });
      }
      const more = bytes(json) + 1;
      if (base + more > LIMIT) continue;
      if (size + more > LIMIT || batch.length === MAX_METRICS) {
        bodies.push(head + batch.join(',') + ']}');
        batch = [];
        size = base;
      }
      batch.push(json);
      size += more;
    }
    if (batch.length) bodies.push(head + batch.join(',') + ']}');
    return bodies;
  };

  // text/plain is a CORS-safelisted type: no preflight before the POST.
  const post = (body, keepalive) => fetch(url, {
    method: 'POST', body, keepalive, headers: {'Content-Type': 'text/plain'}, credentials: 'omit', mode: 'cors',
  });
  // sendBeacon returns false, and a keepalive fetch fails, once the bodies
  // in flight pass the quota; a plain fetch still goes while the page lives.
  const send = (body) => {
    if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], {type: 'text/plain'}))) return;
    post(body, true).catch(() => post(body, false)).catch(() => {});
  };

  const flush = () => {
    const metrics = [...queue.values()];
    queue.clear();
    for (const metric of metrics) {
      metric.delta = metric.value - (sent.get(metric.id) || 0);
      sent.set(metric.id, metric.value);
    }
    encode(metrics).forEach(send);
  };

  // reportAllChanges keeps the queue current, so pagehide (which Chromium
  // fires before visibilitychange on navigation) finds the values so far;
  // what web-vitals reports only on visibilitychange goes in a beacon of its
  // own. A metric id reported again replaces its queued copy.
  const report = (metric) => queue.set(metric.id, project(metric));
  for (const name in FIELDS) vitals['on' + name](report, {reportAllChanges: true});
  // On document: web-vitals' capture-phase listeners on window report the
  // final values first.
  document.addEventListener('visibilitychange', () => document.visibilityState === 'hidden' && flush());
  addEventListener('pagehide', flush);
  // A back/forward cache restore is a new page view; web-vitals gives its
  // metrics new ids.
  addEventListener('pageshow', (event) => event.persisted && (pageview = uuid()));
  window.perfhub = {flush, encode};
})();
