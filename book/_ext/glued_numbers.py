"""Numbers in the prose that read well in the book and in a plain notebook (Colab, Jupyter).

A number a chapter computes is written in its Markdown as a link: the link's text is the number
as the book's ``cpu`` build printed it, the target names the value the chapter glued
(``ccoat.prose.glue``) and its format, as myst-nb's ``{glue:text}`` role would::

    CoaT-Lite at 96 px runs [1.95](#gr_speed96:.2f)× as many images per second

A plain notebook shows "1.95". The book replaces the link by the value glued in this build,
formatted (``1.95``), so the page is always this build's number. A value that does not depend on
the profile or the machine must read the same in both: where the link's text and the value
disagree the build warns, and a warnings-as-errors build (the tests') fails. A value this build
measures or sizes (a timing, a live run, a count set by the profile) carries the link title
"live" and is replaced without that check; a plain notebook shows the ``cpu`` build's number and
the title as its tooltip::

    one forward pass took [54](#t_b32:.0f "live") ms

``python book/_ext/glued_numbers.py [BUILD]`` writes the link texts again from a build's glued
values (``BUILD`` defaults to ``book/_build``, the ``cpu`` build of the README's command).
"""
import json
import re
import sys
from pathlib import Path
from urllib.parse import unquote

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
LIVE = "live"
# [text](#key:format "live"): the key a Python name; the format optional; the title optional.
LINK = re.compile(r'\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]\(#(?P<target>[A-Za-z_]\w*(?::[^)\s"]*)?)'
                  r'(?P<title> "[^"]*")?\)')


def split_target(target: str) -> tuple[str, str]:
    """``"gr_speed96:.2f"`` -> ``("gr_speed96", ".2f")``; no format gives ``""``."""
    key, _, fmt = unquote(target).partition(":")
    return key, fmt


def format_value(text_plain: str, fmt: str) -> str:
    """A glued value's ``text/plain`` formatted as myst-nb's ``{glue:text}`key:fmt``` shows it."""
    from myst_nb.core.variables import format_plain_text
    return format_plain_text(text_plain, fmt)


def glued_values(folder: Path, docname: str) -> dict[str, str] | None:
    """The ``text/plain`` of every value a page glued in the build whose executed notebooks are
    in ``folder`` (myst-nb's ``jupyter_execute``), or ``None`` if the page glued nothing."""
    path = folder / f"{docname}.glue.json"
    if not path.is_file():
        return None
    return {key: out["data"].get("text/plain", "") for key, out in
            json.loads(path.read_text()).items()}


class GluedNumbers(SphinxTransform):
    """Replace each ``[number](#key:format)`` link by the value the page glued under ``key``."""

    default_priority = 400  # before myst-parser resolves ``#anchor`` links (879)

    def apply(self, **kwargs) -> None:
        links = [ref for ref in self.document.findall(nodes.reference)
                 if ref.get("id_link") and ref.get("refuri", "").startswith("#")]
        if not links:
            return
        folder = Path(self.env.mystnb_config.output_folder)
        values = glued_values(folder, self.env.docname) or {}
        for ref in links:
            key, fmt = split_target(ref["refuri"][1:])
            if key not in values:
                continue  # an ordinary link to a heading or label: not ours
            try:
                text = format_value(values[key], fmt)
            except (TypeError, ValueError) as error:
                LOGGER.warning("glued value %r cannot be formatted as %r: %s", key, fmt, error,
                               location=ref)
                continue
            written = ref.astext()
            if ref.get("reftitle") != LIVE and written != text:
                LOGGER.warning("the text says %r where %r is %r in this build; run "
                               "`python book/_ext/glued_numbers.py` after a cpu build, or mark "
                               "the link \"live\" if it depends on the profile or the machine",
                               written, key, text, location=ref)
            ref.replace_self(nodes.inline(text, text, classes=["pasted-text"]))


def rewrite(source: str, values: dict[str, str]) -> str:
    """``source`` with every glued link's text written from ``values`` (key -> text/plain)."""
    def one(match: re.Match) -> str:
        key, fmt = split_target(match["target"])
        if key not in values:
            return match[0]
        text = format_value(values[key], fmt)
        return f"[{text}](#{match['target']}{match['title'] or ''})"
    return LINK.sub(one, source)


def main(argv=None) -> int:
    import argparse
    import subprocess
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("build", nargs="?", default="book/_build", type=Path,
                        help="a book build folder (default: book/_build)")
    build = parser.parse_args(argv).build
    folder = build / "jupyter_execute"
    if not folder.is_dir():
        print(f"no executed notebooks under {folder}: build the book first", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[2]
    for page in [*sorted((root / "notebooks").glob("*.py")), root / "book" / "intro.md"]:
        docname = f"notebooks/{page.stem}" if page.suffix == ".py" else page.stem
        values = glued_values(folder, docname)
        if values is None:
            continue
        before = page.read_text()
        after = rewrite(before, values)
        if after != before:
            page.write_text(after)
            print(f"{page.relative_to(root)}: link texts written from {folder}")
            if page.suffix == ".py":  # keep the paired notebook in step
                subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--sync", str(page)],
                               check=True)
    return 0


def setup(app):
    app.add_transform(GluedNumbers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.exit(main())
