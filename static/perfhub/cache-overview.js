// Fragments that poll (data-poll-while-visible) skip their refresh while the
// tab is hidden; their "visibilitychange from:document" trigger refreshes
// them as soon as it is shown again. A file, not an hx-trigger filter
// expression: those need eval, which the Content-Security-Policy forbids.
document.addEventListener('htmx:beforeRequest', (event) => {
  if (document.hidden && event.detail.elt.hasAttribute('data-poll-while-visible')) {
    event.preventDefault();
  }
});
