"""The built book in a real browser: headless Chromium opens every page at the theme's full
width, saves a full-page screenshot under screenshots/ (ignored by git), and fails on console
errors, images that do not load, maths that MathJax did not typeset, and anything wider than
the content column (an output, a figure or a line of code cut off on the right).

The book loads MathJax from a CDN; this machine reaches none, so the test's server hands the
browser Debian's MathJax (``libjs-mathjax``) in its place, as an online reader's CDN would.
Needs Debian's ``chromium``, ``chromium-driver`` and ``libjs-mathjax`` (``.ci/run`` installs
them). Without them the test is skipped with a message saying so.
"""
import functools
import http.server
import re
import shutil
import threading
from pathlib import Path

import pytest

from conftest import ROOT, toc_files

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MATHJAX = Path("/usr/share/javascript/mathjax")  # Debian's libjs-mathjax (MathJax 2.7)
SCREENSHOTS = ROOT / "screenshots"
# A laptop's window: sphinx-book-theme keeps both sidebars here, so the content column is as
# narrow as a reader with a wide screen ever sees; book/_static/ccoat.css sizes the code so that
# pyproject.toml's line length fits it.
WINDOW_WIDTH = 1280

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and (MATHJAX / "MathJax.js").is_file()),
    reason="no browser or MathJax found: install Debian's chromium, chromium-driver and "
           "libjs-mathjax (apt-get install chromium chromium-driver libjs-mathjax) to run the "
           "real-browser test",
)

CDN_MATHJAX = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
LOCAL_MATHJAX = "/_local_mathjax/MathJax.js?config=TeX-AMS_CHTML"
# Sphinx configures MathJax 3; MathJax 2 reads the same global with its own keys: the maths
# Sphinx writes is \(...\) and \[...\] inside elements of class "math".
CDN_CONFIG = re.compile(r"window\.MathJax = \{.*?\}\}")
LOCAL_CONFIG = ('window.MathJax = {tex2jax: {inlineMath: [["\\\\(", "\\\\)"]], '
                'displayMath: [["\\\\[", "\\\\]"]], processClass: "math", ignoreClass: "tex2jax_ignore"}, '
                'messageStyle: "none"}')


class BookHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the built book, with MathJax from the local Debian package instead of the CDN."""

    def __init__(self, *args, book: Path, **kwargs):
        self.book = book
        super().__init__(*args, directory=str(book), **kwargs)

    def translate_path(self, path):
        if path.startswith("/_local_mathjax/"):
            return str(MATHJAX / path.split("?")[0][len("/_local_mathjax/"):])
        return super().translate_path(path)

    def do_GET(self):
        local = Path(self.translate_path(self.path))
        if not local.suffix == ".html" or not local.is_file():
            return super().do_GET()
        html = local.read_text(encoding="utf-8")
        assert CDN_MATHJAX in html or "class=\"math" not in html, \
            f"{local.name}: MathJax is no longer loaded from {CDN_MATHJAX}; update this test"
        html = CDN_CONFIG.sub(lambda _: LOCAL_CONFIG, html)
        body = html.replace(CDN_MATHJAX, LOCAL_MATHJAX).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def server(built_book):
    handler = functools.partial(BookHandler, book=built_book)
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
                 "--disable-component-update", "--disable-sync", f"--window-size={WINDOW_WIDTH},1600",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


# Messages from the outside world that a closed network causes, not faults of the book
# (the theme links fonts and icons from CDNs; this machine reaches none).
OFFLINE_NOISE = ("net::ERR_NAME_NOT_RESOLVED", "net::ERR_INTERNET_DISCONNECTED",
                 "net::ERR_CONNECTION_REFUSED", "net::ERR_ADDRESS_UNREACHABLE")

# Waits for MathJax 2 to finish typesetting, then reports maths it did not typeset.
TYPESET = """
const done = arguments[arguments.length - 1];
if (!document.querySelector('.math')) { done([]); return; }
const check = () => {
  const bad = [];
  document.querySelectorAll('.MathJax_Error, merror, .mjx-merror').forEach(
      e => bad.push('MathJax error: ' + e.textContent.slice(0, 80)));
  document.querySelectorAll('span.math.notranslate, div.math.notranslate').forEach(e => {
    if (!e.querySelector('.MathJax_CHTML, .MathJax, .MathJax_Display, .MathJax_SVG, mjx-container'))
      bad.push('not typeset: ' + e.textContent.slice(0, 80));
  });
  done(bad);
};
const wait = (tries) => {
  if (window.MathJax && MathJax.Hub && MathJax.isReady) { MathJax.Hub.Queue(check); }
  else if (tries > 0) { setTimeout(() => wait(tries - 1), 100); }
  else { done(['MathJax did not load']); }
};
wait(300);
"""

# Anything in the article wider than the content column, or cut off inside its own box.
OVERFLOW = """
const column = document.querySelector('article.bd-article').getBoundingClientRect();
const bad = [];
const name = e => e.tagName.toLowerCase() + (e.className && typeof e.className === 'string'
    ? '.' + e.className.trim().split(/\\s+/).slice(0, 2).join('.') : '');
const where = e => (e.closest('.cell') ? 'cell ' + [...document.querySelectorAll('article .cell')]
    .indexOf(e.closest('.cell')) : 'text');
document.querySelectorAll('article .cell_output *, article img, article .cell_input pre').forEach(e => {
  if (e.closest('.MathJax, .MathJax_Display, .MathJax_CHTML, mjx-container')) return;  // its own
  const r = e.getBoundingClientRect();
  if (r.width === 0) return;
  if (r.right > column.right + 1)
    bad.push(`${where(e)}: ${name(e)} ends ${Math.round(r.right - column.right)} px right of the column`);
  else if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
    bad.push(`${where(e)}: ${name(e)} hides ${e.scrollWidth - e.clientWidth} px on the right`);
});
return [...new Set(bad)];
"""


@pytest.mark.parametrize("page", toc_files())
def test_page_in_a_real_browser(server, browser, page):
    browser.set_window_size(WINDOW_WIDTH, 1600)
    browser.get(f"{server}/{page}.html")
    browser.execute_script("return document.readyState")
    not_typeset = browser.execute_async_script(TYPESET)
    broken = browser.execute_script(
        "return Array.from(document.images)"
        ".filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src);")
    overflow = browser.execute_script(OVERFLOW)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(WINDOW_WIDTH, min(height + 100, 30000))  # the whole page, to look at
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"{page.replace('/', '_')}.png"))
    errors = [entry["message"] for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE" and not any(n in entry["message"] for n in OFFLINE_NOISE)]
    assert not broken, f"{page}: images that did not load: {broken}"
    assert not errors, f"{page}: console errors: {errors}"
    assert not not_typeset, f"{page}: maths MathJax did not typeset: {not_typeset[:10]}"
    assert not overflow, f"{page}: wider than the content column:\n" + "\n".join(overflow[:20])
