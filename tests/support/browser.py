"""Debian's Chromium for the browser tests (never a browser download), started with no GPU, no network
beyond loopback, and no first-run or background traffic; and the steps the annotator app's tests share."""

import re
from collections.abc import Iterator

import pytest

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


@pytest.fixture
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def log_in(page, url: str, name: str, password: str) -> None:
    page.goto(f"{url}/annotate/")
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()


def choose(page, elem_id: str, option: str) -> None:
    """Pick an option of a Gradio dropdown (its list is tied to the input by aria-controls)."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    page.locator(f"#{box.get_attribute('aria-controls')} [role=option][aria-label='{option}']").click()


def pick(page, elem_id: str, value: str) -> None:
    """Pick a Gradio radio button's option by its label."""
    page.locator(f"#{elem_id} label").filter(has_text=re.compile(f"^\\s*{value}\\s*$")).click()


def rank(page, i: int, value: str) -> None:
    """Pick candidate i's rank (a radio button labelled with the rank)."""
    pick(page, f"rank-{i}", value)
