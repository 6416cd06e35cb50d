"""Sphinx extension of the book: keep the rendered book readable offline, and Colab links right.

1. The chapters' first cell carries the usual "Open in Colab" badge, an image on
   colab.research.google.com. It is what readers on GitHub and in Colab see; in the rendered
   book it would be the only file fetched from the internet (and a broken image offline). This
   extension swaps the image for a local copy, ``book/_static/colab-badge.svg``; the link around
   it still goes to Colab.
2. The badge's link must open *this* notebook from *this* repository: it is compared with the
   URL that the Colab launch button is built from (``repository.url``/``branch`` and
   ``launch_buttons.colab_url`` in ``_config.yml``, the one place the repository URL is kept).
   A mismatch is a build warning, so the strict build (``-W``) fails on it.
3. MathJax is served from ``book/_static/mathjax`` (installed by ``make mathjax`` from the npm
   registry). If it is missing the build warns instead of producing pages with unrendered math.
4. MathJax is loaded on every page, not only on pages whose body has math: a chapter title with
   math appears in the navigation of every page (and in the search results).
5. The chapters are numbered (so equations read "(3.2)") and their titles already say
   "Chapter 3: ...": the navigation drops the automatic "3. " in front of such titles (titles and
   previous/next links carry it in a <span class="section-number">, hidden by custom.css).
6. Each page lists every script once. (jupyter-book 1.x registers sphinx-thebe's inline
   configuration twice, so the page declares ``const THEBE_JS_URL`` twice and the browser reports
   a SyntaxError on every page; the browser check in tests/browser/ catches exactly that.)
"""

from __future__ import annotations

import functools
import posixpath
import re
from pathlib import Path

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

REMOTE_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "/book/_static/colab-badge.svg"  # absolute = relative to the source directory


def expected_colab_url(config, docname: str) -> str | None:
    """The Colab URL of a notebook page, built exactly as sphinx-book-theme builds its button."""
    opts = config.html_theme_options or {}
    repo = (opts.get("repository_url") or "").rstrip("/")
    colab = ((opts.get("launch_buttons") or {}).get("colab_url") or "").rstrip("/")
    if not repo or not colab or not repo.startswith("https://github.com/"):
        return None
    org_repo = repo[len("https://github.com/"):]
    branch = opts.get("repository_branch") or "main"
    book = (opts.get("path_to_docs") or "").strip("/")
    path = posixpath.join(book, docname + ".ipynb") if book else docname + ".ipynb"
    return f"{colab}/github/{org_repo}/blob/{branch}/{path}"


class LocalColabBadge(SphinxTransform):
    """Point the Colab badge image at the local copy and check the link around it."""

    default_priority = 400  # before images are collected (doctree-read)

    def apply(self, **kwargs) -> None:
        docname = self.env.docname
        for image in self.document.findall(nodes.image):
            if image.get("uri") != REMOTE_BADGE:
                continue
            image["uri"] = LOCAL_BADGE
            parent = image.parent
            href = parent.get("refuri") if isinstance(parent, nodes.reference) else None
            if not str(self.env.doc2path(docname)).endswith(".ipynb"):
                continue
            want = expected_colab_url(self.config, docname)
            if want is not None and href != want:
                logger.warning(
                    "Colab badge of %s links to %r; the launch button (from _config.yml) opens %r",
                    docname, href, want, location=image, type="colab", subtype="badge",
                )


def check_mathjax(app) -> None:
    """Warn when the locally shipped MathJax is not where ``mathjax_path`` points."""
    if app.builder.format != "html":
        return
    path = app.config.mathjax_path
    if "://" in path or path.startswith("/"):
        logger.warning("mathjax_path %r is not a local file: the book would not read offline", path)
        return
    for static in app.config.html_static_path:
        if (Path(app.confdir) / static / path).is_file():
            return
    logger.warning(
        "MathJax not found at %s in html_static_path %s: run `make mathjax` (the book's math "
        "would not render)", path, app.config.html_static_path,
    )


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated <script> entries (same file, same inline body, same attributes)."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # An inline script is registered with filename None by some extensions and "" by others.
        filename = str(getattr(js, "filename", js) or "")
        attrs = tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items()))
        key = (filename, attrs)
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    context["script_files"] = unique


# "3. Chapter 3: ..." in a navigation link: the number Sphinx adds, then the title's own.
REDUNDANT_NUMBER = re.compile(r"(>\s*)(\d+)\.\s+(Chapter\s+\2\b)")


def drop_redundant_chapter_numbers(app, pagename, templatename, context, doctree) -> None:
    """Wrap pydata-sphinx-theme's sidebar generator so that "3. Chapter 3: X" reads "Chapter 3: X"."""
    generate = context.get("generate_toctree_html")
    if generate is None or getattr(generate, "_ddpm_wrapped", False):
        return

    @functools.wraps(generate)
    def wrapped(kind, *args, **kwargs):
        out = generate(kind, *args, **kwargs)
        if kind != "sidebar":
            return out
        return REDUNDANT_NUMBER.sub(r"\1\3", str(out))

    wrapped._ddpm_wrapped = True
    context["generate_toctree_html"] = wrapped


def setup(app):
    app.set_html_assets_policy("always")
    app.add_transform(LocalColabBadge)
    app.connect("builder-inited", check_mathjax)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("html-page-context", drop_redundant_chapter_numbers, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
