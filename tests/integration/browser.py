"""A real browser for the web pages: Debian's Chromium, driven by Playwright.

Playwright's own browser download cannot reach the network here, so it drives
`/usr/bin/chromium` (`.ci/run` installs it). Without it the browser tests skip with
the reason, except on CI, where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("TAYORI_TEST_CHROMIUM", "/usr/bin/chromium"))
ON_CI = os.environ.get("CI", "").lower() == "true"
# As a careful headless run wants it: no first-run pages, no calls home (the network
# is closed and refused connections would only slow it down).
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 375, "height": 740}


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"browser tests are required on CI: {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


def require_a_browser() -> None:
    """Skip (off CI) or fail (on CI) the test when no browser can be driven."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt install chromium)")


def fits_the_width(page: Any) -> bool:
    """No horizontal scrolling: the page is no wider than the window."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))
