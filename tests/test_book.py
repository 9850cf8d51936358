"""The book as a reader gets it: built with warnings as errors, every page there, figures that
load, no error in any cell output, internal links that resolve, Colab launch buttons that open
real notebooks, and outputs that read as a reader should see them (rendered, quiet)."""
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from bs4 import BeautifulSoup

from ccoat.data import data_root
from conftest import ROOT, toc_files

PAGES = toc_files()
NOTEBOOK_PAGES = [p for p in PAGES if p.startswith("notebooks/")]
IMAGE_MAGIC = (b"\x89PNG", b"<svg", b"<?xml", b"\xff\xd8\xff", b"GIF8")


def soup(html_dir: Path, page: str) -> BeautifulSoup:
    return BeautifulSoup((html_dir / f"{page}.html").read_text(encoding="utf-8"), "html.parser")


def test_every_page_of_the_toc_is_built(built_book):
    missing = [p for p in PAGES if not (built_book / f"{p}.html").exists()]
    assert not missing, f"pages missing from the built book: {missing}"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_chapter_shows_figures_that_load(built_book, page):
    images = soup(built_book, page).select("article img")
    assert images, f"{page} shows no figure"
    for img in images:
        src = img.get("src", "")
        if src.startswith("data:"):
            continue
        path = (built_book / page).parent / unquote(urlparse(src).path)
        assert path.is_file(), f"{page}: image {src} is missing"
        assert path.read_bytes()[:5].startswith(IMAGE_MAGIC) or path.read_bytes().lstrip()[:5].startswith(IMAGE_MAGIC), \
            f"{page}: {src} is not an image"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_no_cell_output_holds_an_error(built_book, page):
    for output in soup(built_book, page).select("div.cell_output"):
        text = output.get_text()
        assert "Traceback (most recent call last)" not in text, f"{page}: a cell output holds a traceback"
        assert "error" not in " ".join(output.get("class", [])), f"{page}: an error output"
    assert not soup(built_book, page).select(".output.error, .output.traceback"), f"{page}: error output"


def test_internal_links_resolve(built_book):
    broken = []
    for page in PAGES:
        for a in soup(built_book, page).select("a[href]"):
            href = a["href"]
            parsed = urlparse(href)
            if parsed.scheme or href.startswith(("#", "mailto:")) or not parsed.path:
                continue
            target = ((built_book / page).parent / unquote(parsed.path)).resolve()
            if not target.exists():
                broken.append(f"{page}: {href}")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_chapter_has_colab_launch_and_download_buttons(built_book, page):
    html = (built_book / f"{page}.html").read_text(encoding="utf-8")
    assert "colab.research.google.com/github/" in html, f"{page}: no Colab launch button"
    assert f"{Path(page).name}.ipynb" in html, f"{page}: no notebook download button"


def test_bibliography_lists_the_cited_papers(built_book):
    text = soup(built_book, "bibliography").select_one("article").get_text().lower()
    for needle in ("co-scale conv-attentional", "adaptive clustering transformer"):
        assert needle in text, f"bibliography lacks {needle!r}"


def test_every_launch_button_opens_a_tracked_notebook(built_book):
    """Colab opens <repository>/blob/<branch>/<path>: the path must be a regular file in git
    (a path through book/notebooks, a symbolic link, is served by GitHub as nothing)."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    prefix = f"https://colab.research.google.com/github/{urlparse(repo['url']).path.strip('/')}" \
             f"/blob/{repo['branch']}/"
    for page in NOTEBOOK_PAGES:
        urls = [a["href"] for a in soup(built_book, page).select("a[href]")
                if "colab.research.google.com" in a["href"]]
        assert urls, f"{page}: no Colab launch button"
        for url in urls:
            assert url.startswith(prefix), f"{page}: launch URL {url} does not start with {prefix}"
            path = url[len(prefix):]
            listed = subprocess.run(["git", "ls-files", "-s", "--", path], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout.split()
            assert listed, f"{page}: launch URL {url} opens {path}, which git does not track"
            assert listed[0] == "100644", f"{page}: {path} is tracked with mode {listed[0]}, " \
                                          "not as a regular file (120000 is a symbolic link)"
            assert path == f"{page}.ipynb", f"{page}: launch URL opens {path}"


# What a reader must never see in an output. Each pattern names what it catches.
READER_FAULTS = {
    "a Markdown table line left unrendered": re.compile(r"\|\s*:?(?:-{3,}|[—–]+)\s*:?\|"),
    "a Python repr": re.compile(r"<[^<>\n]* at 0x[0-9a-fA-F]+>"),
    # a cell ending in fig.suptitle(...) or ax.set_title(...) shows what the call returned
    "a matplotlib return value": re.compile(r"^\[?Text\(-?[\d.]+, -?[\d.]+, ", re.M),
    "a warning": re.compile(r"\b\w*Warning\b|\bWARNING\b"),
    "a traceback": re.compile(r"Traceback \(most recent call last\)|^\w+Error: ", re.M),
    "a progress bar": re.compile(r"\d+%\|.*\||\d+(\.\d+)?\s*(it|s)/(s|it)\]"),
    "an absolute path": re.compile(
        r"(?<![\w.:/~-])/(?:home|work|tmp|usr|root|opt|mnt|var|srv|Users|content|private)/"),
}
# Maths in the text that MathJax never got: a $...$ pair, outside rendered maths.
UNRENDERED_MATH = re.compile(r"(?<![\\$\w])\$(?!\s)[^$\n]{1,80}(?<!\s)\$(?![\w$])")


def reader_faults(output) -> list[str]:
    """What is wrong with one rendered cell output, in words (empty if nothing is)."""
    for math in output.select(".math"):
        math.decompose()  # typeset by MathJax; its source may hold anything
    text = output.get_text("\n")
    faults = [f"{what}: {m.group(0)[:80]!r}" for what, pattern in READER_FAULTS.items()
              for m in [pattern.search(text)] if m]
    if (m := UNRENDERED_MATH.search(text)):
        faults.append(f"maths left unrendered: {m.group(0)!r}")
    for path in {str(ROOT), str(data_root() or ROOT), str(Path.home())}:
        if path in text:
            faults.append(f"a path of this machine: {path}")
    if "stderr" in output.get("class", []) or output.select(".stderr"):
        faults.append("a stderr stream")
    return faults


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_every_output_reads_as_a_reader_should_see_it(built_book, page):
    page_soup = soup(built_book, page)
    outputs = page_soup.select("div.cell_output")
    assert outputs, f"{page} shows no output"
    found = [f"output {i}: {fault}" for i, output in enumerate(outputs) for fault in reader_faults(output)]
    assert not found, f"{page}:\n" + "\n".join(found)


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_every_solution_is_a_dropdown_and_no_directive_shows_raw(built_book, page):
    """A fence closed too early (a ```python block inside a ``` admonition) leaves the
    directive's source on the page and the rest of the solution outside its dropdown."""
    article = soup(built_book, page).select_one("article")
    raw = [line.strip() for line in article.get_text("\n").splitlines()
           if line.strip().startswith(("```{", ":class: dropdown"))]
    assert not raw, f"{page} shows directive source: {raw[:3]}"
    titles = article.find_all(string=re.compile(r"^\s*Solution to exercise"))
    outside = [t.strip() for t in titles if not t.find_parent(class_="dropdown")]
    assert not outside, f"{page}: not in a dropdown: {outside}"


@pytest.mark.parametrize("text, fault", [
    ("<p>| model | px |\n|---|---|</p>", "Markdown table"),
    ("<p>At $N = 4097$ tokens</p>", "maths left unrendered"),
    ("<pre>&lt;matplotlib.legend.Legend at 0x7f3a2c1d&gt;</pre>", "a Python repr"),
    ("<pre>Text(0.5, 0.98, 'E2LSH clusters of the first head')</pre>", "a matplotlib return value"),
    ("<pre>TqdmWarning: IProgress not found</pre>", "a warning"),
    ("<pre>Traceback (most recent call last):</pre>", "a traceback"),
    ("<pre>epoch 1/3:  40%|####      | 4/10 [00:02&lt;00:03,  1.9it/s]</pre>", "a progress bar"),
    ("<pre>data_dir: /work/shared/data</pre>", "an absolute path"),
    ("<div class='output stderr'><pre>hello</pre></div>", "a stderr stream"),
])
def test_reader_faults_catch_what_they_name(text, fault):
    output = BeautifulSoup(f"<div class='cell_output'>{text}</div>", "html.parser").div
    assert any(fault in f for f in reader_faults(output)), reader_faults(output)


@pytest.mark.parametrize("text", [
    "<p>At <span class='math'>\\(N = 4097\\)</span> tokens: 12.5 M MACs, 3.1x, $CCOAT_DATA/cifar10</p>",
    "<pre>results/cifar10_coat_lite_tiny_cifar/run.json https://github.com/a/b</pre>",
])
def test_reader_faults_pass_what_a_reader_should_see(text):
    output = BeautifulSoup(f"<div class='cell_output'>{text}</div>", "html.parser").div
    assert reader_faults(output) == []
