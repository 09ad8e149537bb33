"""MkDocs hooks for nasforge's documentation site (``hooks:`` in mkdocs.yml).

- The repository's README.md is the site's front page: ``docs/index.md`` is a placeholder
  whose content is replaced by README's, its ``docs/...`` links made relative to the site.
- The API pages are rendered by mkdocstrings from an import tree that mirrors the installed
  package: pyproject's ``[tool.setuptools] package-dir`` (the one place that says where
  ``nasforge.controllers`` and ``nasforge.search_spaces`` come from) is laid out as symbolic
  links under ``build/docs-api-src``, so the static analysis finds every module without
  importing anything.
- Every public module of that tree (no ``_``-prefixed part, no ``__main__``) must appear on an
  API page (mkdocstrings gives each rendered module a heading with its dotted path as its id);
  the build fails naming the modules that do not.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parent.parent
API_SOURCE = ROOT / "build" / "docs-api-src"  # mkdocs.yml's mkdocstrings `paths` names it
PACKAGE = "nasforge"
API_DIR = "api/"
HEADING_ID = re.compile(r'<h\d[^>]*\bid="(' + PACKAGE + r'(?:\.\w+)*)"')

_rendered: set[str] = set()


def package_dirs() -> dict[str, Path]:
    """Dotted package name -> source folder, as pyproject installs them."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools.get("package-dir", {})
    return {name: ROOT / mapping.get(name, name.replace(".", "/"))
            for name in [PACKAGE, *sorted(n for n in mapping if n.startswith(PACKAGE + "."))]}


def build_api_source() -> None:
    """Lay out ``API_SOURCE/nasforge`` as the installed package: links to the source files,
    with the mapped subpackages linked in where they install."""
    dirs = package_dirs()
    top = API_SOURCE / PACKAGE
    if top.exists():
        for link in sorted(top.iterdir()):
            link.unlink()
    top.mkdir(parents=True, exist_ok=True)
    for entry in sorted(dirs[PACKAGE].iterdir()):
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry)
    for name, folder in dirs.items():
        if name != PACKAGE:
            link = API_SOURCE.joinpath(*name.split("."))
            if link.is_symlink():
                link.unlink()
            link.symlink_to(folder, target_is_directory=True)


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
@event_priority(100)  # before mkdocstrings sets up its handler, which resolves `paths` once
def on_config(config, **kwargs):
    build_api_source()
    return config


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
    expected = public_modules(API_SOURCE / PACKAGE, PACKAGE)
    missing = missing_api_pages(expected, _rendered)
    if missing:
        raise PluginError(
            f"{len(missing)} public module(s) without an API page: {', '.join(missing)}. "
            f"Document each on a page of docs/{API_DIR} (`::: {missing[0]}`, or its package "
            f"with `show_submodules: true`); a module renders once it or one of its members has a "
            f"docstring.")
