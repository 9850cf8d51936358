"""The built book in a real browser: headless Chromium opens every page, saves a screenshot
under screenshots/ (ignored by git), and fails on console errors or images that do not load.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Without them the
test is skipped with a message saying so.
"""
import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from conftest import ROOT, toc_files

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = ROOT / "screenshots"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no browser found: install Debian's chromium and chromium-driver (apt-get install "
           "chromium chromium-driver) to run the real-browser test",
)


@pytest.fixture(scope="module")
def server(built_book):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


# Messages from the outside world that a closed network causes, not faults of the book
# (the theme links fonts and icons from CDNs; this machine reaches none).
OFFLINE_NOISE = ("net::ERR_NAME_NOT_RESOLVED", "net::ERR_INTERNET_DISCONNECTED",
                 "net::ERR_CONNECTION_REFUSED", "net::ERR_ADDRESS_UNREACHABLE")


@pytest.mark.parametrize("page", toc_files())
def test_page_in_a_real_browser(server, browser, page):
    browser.get(f"{server}/{page}.html")
    browser.execute_script("return document.readyState")
    broken = browser.execute_script(
        "return Array.from(document.images)"
        ".filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src);")
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"{page.replace('/', '_')}.png"))
    errors = [entry["message"] for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE" and not any(n in entry["message"] for n in OFFLINE_NOISE)]
    assert not broken, f"{page}: images that did not load: {broken}"
    assert not errors, f"{page}: console errors: {errors}"
