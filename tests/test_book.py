"""The book as a reader gets it: built with warnings as errors, every page there, figures that
load, no error in any cell output, internal links that resolve, Colab launch buttons."""
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from bs4 import BeautifulSoup

from conftest import toc_files

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
