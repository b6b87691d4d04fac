"""The book as a reader meets it: every page of the smoke run's book, opened in headless Chromium.

The smoke run of every notebook (fixture ``smoke_run``, shared with test_notebooks.py) is rendered
as a book with the strict build (``-W -n --keep-going``: any warning fails), served on 127.0.0.1,
and every page is opened in the system's Chromium through selenium and the system's chromedriver
(nothing is downloaded). Each page must load, show no broken image, log no console error, show no
TeX source (MathJax is served from the book itself), hold no table wider than the text column and
show no absolute path. Screenshots of the intro, the results page and notebook 50 are saved under
the smoke run's results root (``browser_screenshots/``).

Skipped, with the reason, where Chromium or its driver is missing (Debian packages ``chromium`` and
``chromium-driver``; ``.ci/run`` installs them).
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT_PAGES = {"intro.html": "intro", "executed/55_results_at_a_glance.html": "results_at_a_glance",
                    "executed/50_evaluate.html": "50_evaluate"}

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium is not installed (Debian packages chromium and chromium-driver; .ci/run installs them)",
)

# TeX that MathJax should have turned into math: delimiters, or a command with an argument.
TEX_SOURCE = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\(?:frac|sum|mathrm|operatorname|lVert|cdot|sigma|alpha|hat|bar)\b")
# An absolute path of a machine (a folder at the root of a Unix or macOS file system).
ABSOLUTE_PATH = re.compile(r"(?<![\w.~$/])/(?:home|tmp|work|Users|root|mnt|var|opt|usr|private|srv|data)/[\w.-]+")


@pytest.fixture(scope="module")
def smoke_book(smoke_run, tmp_path_factory):
    """The smoke run's book, built strictly; returns (html folder, results root, machine paths)."""
    from i2o_utils.book import build_book, stage_book
    from i2o_utils.paths import REPO_ROOT

    root, outcome = smoke_run
    failed = {k: v for k, v in outcome.items() if isinstance(v, Exception)}
    if failed:
        pytest.fail(f"the smoke run failed, so its book cannot be checked: {failed}")
    book = stage_book(tmp_path_factory.mktemp("book"), root / "executed")
    try:
        index = build_book(book, strict=True, results_root=root / "results", quiet=True)
    except subprocess.CalledProcessError as e:
        warnings = [ln for ln in (e.stdout + e.stderr).splitlines() if "WARNING" in ln or "ERROR" in ln]
        pytest.fail("the strict book build failed:\n" + "\n".join(warnings[:40] or (e.stdout + e.stderr)[-3000:]))
    machine_paths = {str(root), str(root.resolve()), str(REPO_ROOT), str(Path.home()), str(book)}
    return index.parent, root / "results", machine_paths


@pytest.fixture(scope="module")
def server(smoke_book):
    httpd, url = _serve(smoke_book[0])
    yield url
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _pages(html_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(html_dir)) for p in html_dir.rglob("*.html")
                  if not p.relative_to(html_dir).parts[0].startswith("_"))


# Waits for MathJax (when the page has math) to finish typesetting, opens every folded table,
# then reports what the checks need.
_INSPECT = """
const done = arguments[arguments.length - 1];
const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) ? MathJax.startup.promise : Promise.resolve();
ready.then(() => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const col = article.getBoundingClientRect();
  const tables = Array.from(article.querySelectorAll('table')).filter(t => t.offsetParent !== null).map(t => {
    const r = t.getBoundingClientRect();
    return {width: r.width, left: r.left, head: (t.innerText || '').slice(0, 80)};
  });
  const images = Array.from(document.images).filter(i => i.offsetParent !== null || i.closest('article'))
    .map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
  const clone = article.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, mjx-assistive-mml, .highlight').forEach(e => e.remove());
  const math = Array.from(article.querySelectorAll('.math')).map(m => m.querySelector('mjx-container') !== null);
  done({title: document.title, colLeft: col.left, colWidth: col.width, tables: tables, images: images,
        text: document.body.innerText, proseText: clone.textContent, math: math,
        mathjax: !!(window.MathJax && MathJax.version)});
}).catch(e => done({error: String(e)}));
"""


def _severe_console_entries(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def check_page(driver, url: str, machine_paths) -> tuple[list[str], int]:
    """Open ``url`` and return (the problems found, the number of formulas on the page)."""
    driver.get(url)
    info = driver.execute_async_script(_INSPECT)
    if "error" in info:
        return [f"page script failed: {info['error']}"], 0
    found = []
    if not info["title"] or "404" in info["title"]:
        found.append(f"did not load (title {info['title']!r})")
    found += [f"console error: {m}" for m in _severe_console_entries(driver)]
    found += [f"broken image {i['src']}" for i in info["images"] if not i["ok"]]
    if info["math"]:
        if not info["mathjax"]:
            found.append("MathJax did not load")
        if not all(info["math"]):
            found.append(f"{info['math'].count(False)} of {len(info['math'])} formulas not typeset")
    tex = TEX_SOURCE.search(info["proseText"])
    if tex:
        s = info["proseText"]
        found.append(f"TeX source visible: ...{s[max(tex.start() - 40, 0):tex.end() + 40]!r}...")
    for t in info["tables"]:
        if t["width"] > info["colWidth"] + 1:
            found.append(f"table {t['width']:.0f} px wide in a {info['colWidth']:.0f} px column: {t['head']!r}")
    text = info["text"]
    leaks = [p for p in machine_paths if p and p != "/" and p in text]
    m = ABSOLUTE_PATH.search(text)
    if leaks or m:
        found.append(f"absolute path in the text: {leaks or m.group(0)}")
    return found, len(info["math"])


def _serve(directory: Path):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@needs_chromium
def test_every_page_reads_well_in_a_browser(smoke_book, server, browser):
    html_dir, results_root, machine_paths = smoke_book
    pages = _pages(html_dir)
    expected = {"intro.html", "executed/55_results_at_a_glance.html", "executed/50_evaluate.html"}
    assert expected <= set(pages), f"pages missing from the book: {sorted(expected - set(pages))}"
    shots = results_root / "browser_screenshots"
    shots.mkdir(exist_ok=True)
    problems: dict[str, list[str]] = {}
    n_math = 0
    for page in pages:
        found, n = check_page(browser, f"{server}/{page}", machine_paths)
        n_math += n
        if found:
            problems[page] = found
        if page in SCREENSHOT_PAGES:
            height = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(1280, min(max(height, 1000), 12000))
            browser.save_screenshot(str(shots / f"{SCREENSHOT_PAGES[page]}.png"))
            browser.set_window_size(1280, 1000)
    assert not problems, "\n".join(f"{page}: {p}" for page, ps in problems.items() for p in ps)
    assert n_math > 0, "no formula found in the whole book: the math check checked nothing"
    assert sorted(p.name for p in shots.glob("*.png")) == sorted(f"{v}.png" for v in SCREENSHOT_PAGES.values())


@needs_chromium
def test_the_page_checks_find_what_a_reader_would_see(tmp_path, browser):
    """A page with every fault the book must not have: each one is reported."""
    cells = "".join(f"<td>column {i} with a long heading</td>" for i in range(40))
    (tmp_path / "bad.html").write_text(f"""<!doctype html><html><head><title>bad page</title></head><body>
      <article class="bd-article" style="width: 600px">
        <p>SMAPE per well, \\(|F-A| / (|A|+|F|) \\cdot 100\\)</p>
        <span class="math">\\(x^2\\)</span>
        <table><tr>{cells}</tr></table>
        <img src="missing.png" alt="a figure">
        <p>written to /home/someone/i2o/results/00_download_data/plate_maps.png</p>
      </article>
      <script>console.error("something broke");</script>
    </body></html>""")
    httpd, url = _serve(tmp_path)
    try:
        found, n_math = check_page(browser, f"{url}/bad.html", set())
    finally:
        httpd.shutdown()
        httpd.server_close()
    text = "\n".join(found)
    assert n_math == 1
    for fault in ("console error", "broken image", "formulas not typeset", "TeX source visible",
                  "px wide in a 600 px column", "absolute path in the text: /home/someone"):
        assert fault in text, f"the checks missed: {fault}\n{text}"


def test_checks_catch_what_they_look_for():
    """The patterns find TeX source and machine paths, and leave ordinary prose alone."""
    assert TEX_SOURCE.search(r"SMAPE \(|F-A| / (|A|+|F|) \cdot 100\)")
    assert TEX_SOURCE.search(r"$$H^k = \frac{1}{N}$$")
    assert not TEX_SOURCE.search("SMAPE per well is |F−A| / (|A|+|F|) · 100; costs $5")
    assert ABSOLUTE_PATH.search("written to /home/ana/i2o/results/00_download_data/plate_maps.png")
    assert ABSOLUTE_PATH.search("data root /tmp/pytest-1/nb0/data")
    assert not ABSOLUTE_PATH.search("$I2O_RESULTS_DIR/00_download_data/plate_maps.png and data/ICF/x.h5")
    assert not ABSOLUTE_PATH.search("see https://github.com/GSK-AI/image2omics/tmp/x")
