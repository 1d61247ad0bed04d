// Live panels ([data-poll-while-visible], polled by htmx's "every Ns"
// trigger) send no request while the tab is hidden, and catch up at once
// when it is shown again. A file, not an hx-trigger filter, because filters
// need eval, which the Content-Security-Policy forbids.
document.addEventListener("htmx:beforeRequest", (event) => {
  if (document.hidden && event.detail.elt.matches("[data-poll-while-visible]")) {
    event.preventDefault();
  }
});
document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  document.querySelectorAll("[data-poll-while-visible]").forEach((element) => {
    htmx.trigger(element, "perfhub-visible");
  });
});
