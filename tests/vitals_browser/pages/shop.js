// The page's own script, external so that `default-src 'self'` holds.
"use strict";

// A slow click handler: about 150 ms of main-thread work, for INP.
document.getElementById("add-to-cart").addEventListener("click", function addToCart() {
  const start = performance.now();
  while (performance.now() - start < 150) {
    // Busy-wait, as a heavy framework re-render would.
  }
  document.querySelector(".status").textContent = "Added to your cart.";
});

// A banner inserted late, above the fold, pushing everything down: the
// layout shift CLS measures. The test waits for data-shifted.
setTimeout(function insertPromo() {
  const promo = document.createElement("div");
  promo.className = "promo";
  promo.textContent = "Free shipping this week only!";
  const main = document.getElementById("product");
  main.insertBefore(promo, main.firstChild);
  requestAnimationFrame(function () {
    requestAnimationFrame(function () {
      document.documentElement.dataset.shifted = "1";
    });
  });
}, 600);
