/* PerfHub Web Vitals dashboards: live refresh and charts.
 *
 * Live: every element with [data-live] carries hx-get and
 * hx-trigger="perfhub:poll"; this file decides when that event fires. It
 * polls every 5 s while the user is active, backs off to 10, 30 and 60 s
 * as they stay idle, stops while the tab is hidden and polls at once when it
 * shows again or the user comes back. Each poll sends the ETag of what the
 * element already shows; the server answers 304 when nothing changed, and
 * nothing is swapped.
 *
 * Charts: [data-chart-source] names a JSON <script type="application/json">
 * block (json_script) with the series; uPlot draws it with the threshold
 * lines and release markers. No inline script anywhere: the strict CSP holds.
 */
(() => {
  "use strict";

  // [idle for less than (ms), poll every (ms)]
  const BACKOFF = [
    [30_000, 5_000],
    [120_000, 10_000],
    [300_000, 30_000],
    [Infinity, 60_000],
  ];
  const ACTIVITY = ["pointermove", "pointerdown", "keydown", "wheel", "scroll", "touchstart", "focusin"];
  const POLL = "perfhub:poll";
  // ETag per fragment: the target's id and the URL (the overview's two
  // fragments share one URL, told apart by the HX-Target header).
  const etags = new Map();
  const etagKey = (target, path) => `${target && target.id} ${path}`;
  let lastInput = Date.now();
  let timer = null;

  function pollEvery() {
    const idle = Date.now() - lastInput;
    return BACKOFF.find(([limit]) => idle < limit)[1];
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = null;
    if (document.hidden || !document.querySelector("[data-live]")) return;
    timer = setTimeout(poll, delay === undefined ? pollEvery() : delay);
    document.documentElement.dataset.pollEvery = String(pollEvery());
  }

  function poll() {
    timer = null;
    if (document.hidden || !window.htmx) return;
    document.querySelectorAll("[data-live]").forEach((element) => window.htmx.trigger(element, POLL));
    schedule();
  }

  function onActivity() {
    const wasIdle = Date.now() - lastInput >= BACKOFF[0][0];
    lastInput = Date.now();
    // Back from idle: refresh now rather than at the end of a long wait.
    if (wasIdle) schedule(0);
  }

  ACTIVITY.forEach((type) => addEventListener(type, onActivity, { passive: true, capture: true }));

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else {
      lastInput = Date.now();
      schedule(0);
    }
  });

  document.addEventListener("htmx:configRequest", (event) => {
    if (event.detail.triggeringEvent?.type !== POLL) return;
    const etag = etags.get(etagKey(event.detail.target, event.detail.path));
    if (etag) event.detail.headers["If-None-Match"] = etag;
  });

  document.addEventListener("htmx:afterRequest", (event) => {
    const xhr = event.detail.xhr;
    const etag = xhr && xhr.getResponseHeader("ETag");
    if (xhr && xhr.status === 200 && etag) etags.set(etagKey(event.detail.target, event.detail.pathInfo.requestPath), etag);
  });

  // 304: the element already shows this answer. (htmx 2 treats every 2xx
  // and 3xx status as one to swap, which would empty the element.)
  document.addEventListener("htmx:beforeSwap", (event) => {
    if (event.detail.xhr.status === 304) event.detail.shouldSwap = false;
  });

  // ---- Charts ----

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function formatValue(value, unit) {
    if (value == null) return "–";
    return unit === "ms" ? `${Math.round(value).toLocaleString("en")} ms` : value.toFixed(3);
  }

  function drawSeries(element) {
    const source = document.getElementById(element.dataset.chartSource);
    if (!source || !window.uPlot) return;
    const data = JSON.parse(source.textContent);
    const n = data.x.length;
    const text = cssVar("--text");
    const muted = cssVar("--muted");
    const releases = {
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            const { left, top, width, height } = u.bbox;
            ctx.save();
            ctx.strokeStyle = muted;
            ctx.fillStyle = muted;
            ctx.lineWidth = devicePixelRatio;
            ctx.setLineDash([3 * devicePixelRatio, 3 * devicePixelRatio]);
            ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
            data.releases.forEach(([at, name]) => {
              const x = Math.round(u.valToPos(at, "x", true));
              if (x < left || x > left + width) return;
              ctx.beginPath();
              ctx.moveTo(x, top);
              ctx.lineTo(x, top + height);
              ctx.stroke();
              ctx.fillText(name, x + 4 * devicePixelRatio, top + 12 * devicePixelRatio);
            });
            ctx.restore();
          },
        ],
      },
    };
    const options = {
      width: element.clientWidth || 800,
      height: 280,
      plugins: [releases],
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max ?? 0, data.poor) * 1.1] } },
      axes: [
        { stroke: text, grid: { stroke: cssVar("--border") } },
        {
          stroke: text,
          grid: { stroke: cssVar("--border") },
          size: 70,
          values: (u, ticks) => ticks.map((v) => formatValue(v, data.unit)),
        },
      ],
      series: [
        {},
        {
          label: `p${data.percentile} ${data.name}`,
          stroke: cssVar("--accent"),
          width: 2,
          value: (u, v) => formatValue(v, data.unit),
        },
        { label: "good up to", stroke: cssVar("--good"), dash: [6, 4], width: 1, value: () => formatValue(data.good, data.unit) },
        { label: "poor above", stroke: cssVar("--poor"), dash: [6, 4], width: 1, value: () => formatValue(data.poor, data.unit) },
      ],
    };
    const plot = new window.uPlot(
      options,
      [data.x, data.y, new Array(n).fill(data.good), new Array(n).fill(data.poor)],
      element,
    );
    addEventListener("resize", () => plot.setSize({ width: element.clientWidth, height: 280 }));
    element.dataset.chartReady = "true";
  }

  function start() {
    document.querySelectorAll("[data-chart-source]").forEach(drawSeries);
    schedule();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
