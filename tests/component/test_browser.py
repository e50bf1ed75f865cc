"""Drives the real web page in headless Chromium: type a query, submit, see highlights, open a document."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (Debian package 'chromium')", allow_module_level=True)

import uvicorn  # noqa: E402

from rankstack.index import Index  # noqa: E402
from rankstack.serve.app import create_app  # noqa: E402
from rankstack.serve.service import SearchService  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(tiny_index: Index):
    port = _free_port()
    config = uvicorn.Config(create_app(SearchService.open(tiny_index)), host="127.0.0.1", port=port,
                            log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def test_search_page_in_a_real_browser(server: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            page.fill("input[name=q]", "loyal dogs")
            page.press("input[name=q]", "Enter")
            page.wait_for_selector("ol.results li")
            first_title = page.locator("ol.results li a.title").first
            assert first_title.inner_text() == "Dogs"
            marks = page.locator("ol.results mark").all_inner_texts()
            assert "loyal" in marks and "dogs" in [m.lower() for m in marks]
            assert "bm25" in page.locator(".timings").inner_text()
            page.screenshot(path=str(ARTIFACTS / "search-results.png"), full_page=True)
            first_title.click()
            page.wait_for_selector("article h1")
            assert page.locator("article h1").inner_text() == "Dogs"
            assert "loyal" in page.locator("article mark").all_inner_texts()
            page.screenshot(path=str(ARTIFACTS / "document.png"), full_page=True)
        finally:
            browser.close()
