"""Headless Chromium (the system's, driven by Playwright) for the browser tests.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it) or ``SPARSEARCH_TEST_CHROMIUM``;
Playwright's own browser downloads are never used. Without a browser the tests skip, except on CI.
"""

from __future__ import annotations

import os

import pytest
from _browser import CHROMIUM_ARGS, WatchedPage, chromium_path


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (each test opens its own context: fresh storage, no cookies)."""
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Chromium (see .ci/run: Debian's chromium package)")
        pytest.skip("no Chromium installed: apt-get install chromium, or set SPARSEARCH_TEST_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def watched(browser):
    """Make pages that record their errors (see ``WatchedPage``); closed after the test."""
    pages: list[WatchedPage] = []

    def make() -> WatchedPage:
        pages.append(WatchedPage(browser))
        return pages[-1]

    yield make
    for p in pages:
        p.close()
