"""Key the book's execution cache by what changes its output: the run profile, the library and
the committed results.

myst-nb's cache (``execute_notebooks: cache``) re-runs a notebook only when its code cells
change. The book's numbers also depend on ``CCOAT_PROFILE`` (smoke, cpu, gpu size every run),
on the ``ccoat`` code the cells call and on the files under ``results/`` they read; with one
cache, a ``cpu`` build after a ``smoke`` one showed the smoke numbers without executing a cell.
Here each build uses the cache folder ``<build>/.jupyter_cache/<profile>-<fingerprint>``, where
the fingerprint hashes the library's sources and the results files, so a change to any of them
executes the notebooks again. The same key is a Sphinx setting that rebuilds the environment
when it changes: without it an incremental build would not even re-read an unchanged notebook.

A ``CCOAT_PROFILE`` that is not a profile stops the build before any notebook runs.
"""
import hashlib
import shutil
from pathlib import Path

from sphinx.util import logging

LOGGER = logging.getLogger(__name__)


def _fingerprint(folders) -> str:
    """A short hash of the names and contents of every file under ``folders``."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            if "__pycache__" in path.parts or path.name.startswith("."):
                continue  # bytecode and temporary/lock files do not change what a cell prints
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def _key(srcdir) -> str:
    import ccoat
    from ccoat.profile import get_profile
    from ccoat.provenance import find_results

    try:
        profile = get_profile()
    except ValueError as error:  # one line, not jupyter-book's traceback of a Sphinx error
        raise SystemExit(f"error: cannot build the book: {error}") from None
    results = find_results(start=srcdir)
    folders = [Path(ccoat.__file__).parent, *([results] if results else [])]
    return f"{profile}-{_fingerprint(folders)}"


def _set_cache(app, config):
    key = _key(app.srcdir)
    config.ccoat_book_key = key
    if config.nb_execution_cache_path:  # the user chose a cache folder: keep it
        return
    caches = Path(app.outdir).parent / ".jupyter_cache"
    profile = key.split("-")[0]
    for old in caches.glob(f"{profile}-*"):  # one cache per profile: drop this profile's stale
        if old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    config.nb_execution_cache_path = str(caches / key)
    LOGGER.info(f"ccoat: profile {profile}, execution cache {caches / key}")


def setup(app):
    app.add_config_value("ccoat_book_key", "", "env")  # a new key re-reads every page
    app.connect("config-inited", _set_cache, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
