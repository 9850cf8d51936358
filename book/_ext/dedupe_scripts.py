"""Drop repeated <script> entries from every page.

With jupyter-book 1.x, sphinx-thebe's configuration script (``const THEBE_JS_URL = ...``) is
added twice, and the browser reports "Identifier 'THEBE_JS_URL' has already been declared" on
every page. Keeping the first copy of each script removes that console error.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        attributes = tuple(sorted((str(k), str(v)) for k, v in script.attributes.items()))
        key = (str(script.filename or ""), attributes)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedupe, priority=999)  # last: others add scripts too
    return {"parallel_read_safe": True, "parallel_write_safe": True}
