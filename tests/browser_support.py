"""What every browser test shares: the Chromium to drive, how to catch CSP
violations and console errors, and a hero image that counts for LCP."""

import random
import struct
import zlib
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Error, Page

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium tries Google's hosts, and
# this machine's closed network refuses them.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Logs CSP violations as console errors with their directive and blocked URL,
# which the console message alone does not always name (e.g. for inline
# styles). Playwright injects init scripts over CDP, so the page's CSP does
# not block this one.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(
    `CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}` +
      ` in ${event.sourceFile || event.documentURI}:${event.lineNumber}`,
  );
});
"""


def record_console_errors(page: Page, errors: list[str]) -> None:
    """Append the page's console errors and uncaught exceptions to ``errors``."""

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def on_page_error(error: Error) -> None:
        errors.append(f"pageerror: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)


def png(width: int, height: int) -> bytes:
    """A noisy greyscale PNG. Chromium ignores low-entropy images (under
    0.05 bits per pixel) as LCP candidates, so a flat colour would not do."""
    noise = random.Random(42)
    rows = b"".join(b"\x00" + noise.randbytes(width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


HERO_PNG = png(960, 480)
