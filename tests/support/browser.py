"""Debian's Chromium for the browser tests (never a browser download), started with no GPU, no network
beyond loopback, and no first-run or background traffic."""

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
