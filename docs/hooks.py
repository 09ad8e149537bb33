"""MkDocs hooks for nasforge's documentation site (``hooks:`` in mkdocs.yml).

- The repository's README.md is the site's front page: ``docs/index.md`` is a placeholder
  whose content is replaced by README's, its ``docs/...`` links made relative to the site.
- The API pages are rendered by mkdocstrings from the source tree (``nasforge/controllers`` and
  ``nasforge/search_spaces`` are links to the top-level folders, so the tree is the installed
  package), by static analysis without importing anything.
- Every public module of that tree (no ``_``-prefixed part, no ``__main__``) must appear on an
  API page (mkdocstrings gives each rendered module a heading with its dotted path as its id);
  the build fails naming the modules that do not.
"""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "nasforge"
API_DIR = "api/"
HEADING_ID = re.compile(r'<h\d[^>]*\bid="(' + PACKAGE + r'(?:\.\w+)*)"')

_rendered: set[str] = set()


def public_modules(folder: Path, dotted: str) -> set[str]:
    """``dotted`` and every public module and package below ``folder``."""
    found = {dotted}
    for entry in sorted(folder.iterdir()):
        name = entry.name.removesuffix(".py")
        if name.startswith("_"):
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            found |= public_modules(entry, f"{dotted}.{name}")
        elif entry.suffix == ".py":
            found.add(f"{dotted}.{name}")
    return found


def missing_api_pages(expected: set[str], rendered: set[str]) -> list[str]:
    return sorted(expected - rendered)


# ----------------------------------------------------------------------------- events
def on_pre_build(config, **kwargs):
    _rendered.clear()


def on_serve(server, config, builder, **kwargs):
    server.watch(str(ROOT / "README.md"))
    return server


def on_page_markdown(markdown, page, config, files, **kwargs):
    if page.file.src_uri != "index.md":
        return markdown
    readme = (ROOT / "README.md").read_text()
    return re.sub(r"\]\(docs/", "](", readme)


def on_page_content(html, page, config, files, **kwargs):
    if page.file.src_uri.startswith(API_DIR):
        _rendered.update(HEADING_ID.findall(html))
    return html


def on_post_build(config, **kwargs):
    expected = public_modules(ROOT / PACKAGE, PACKAGE)
    missing = missing_api_pages(expected, _rendered)
    if missing:
        raise PluginError(
            f"{len(missing)} public module(s) without an API page: {', '.join(missing)}. "
            f"Document each on a page of docs/{API_DIR} (`::: {missing[0]}`, or its package "
            f"with `show_submodules: true`); a module renders once it or one of its members has a "
            f"docstring.")
