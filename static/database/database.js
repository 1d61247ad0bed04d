// The database page's panels poll every 10 s; a hidden tab does not poll.
// EXPLAIN and the integrity check answer 400 with a readable message, which
// htmx would otherwise not swap in.
document.addEventListener("htmx:beforeRequest", function (event) {
  if (document.hidden && event.detail.elt.hasAttribute("data-poll")) {
    event.preventDefault();
  }
});
document.addEventListener("htmx:beforeSwap", function (event) {
  if (event.detail.xhr.status === 400 && event.detail.target.hasAttribute("data-show-errors")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
