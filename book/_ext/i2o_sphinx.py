"""Small fixes to the HTML the book's theme stack emits, so pages load without console errors.

sphinx-thebe and sphinx-togglebutton register their inline configuration scripts twice (once with
no file name, once with an empty one), and a page that declares ``const THEBE_JS_URL`` twice throws
"Identifier 'THEBE_JS_URL' has already been declared". Scripts with the same file and body are
kept once.
"""

from __future__ import annotations


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for js in context.get("script_files", []):
        attributes = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", None) or "", tuple(sorted(attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedupe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
