"""The docs build's own check (docs/hooks.py): which modules must have an API page, and which
a rendered page documents. The build itself is `mkdocs build --strict` in .ci/run."""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('"""doc"""\n')


def test_public_modules_are_the_tree_minus_private_names(tmp_path):
    _tree(tmp_path / "pkg", ["__init__.py", "__main__.py", "api.py", "_private.py",
                             "sub/__init__.py", "sub/records.py", "sub/_helper.py",
                             "_hidden/__init__.py", "_hidden/mod.py",
                             "notapackage/loose.py", "data.json"])
    assert hooks.public_modules(tmp_path / "pkg", "pkg") == {
        "pkg", "pkg.api", "pkg.sub", "pkg.sub.records"}


def test_a_module_missing_from_the_rendered_pages_is_reported():
    html = ('<h2 id="nasforge.search" class="doc doc-heading">nasforge.search</h2>'
            '<h3 id="nasforge.search.runner" class="doc doc-heading">runner</h3>'
            '<h4 id="nasforge.search.runner.run_search">run_search</h4>'
            '<a href="#nasforge.search.screen">screen</a>')  # a link, not a heading
    rendered = set(hooks.HEADING_ID.findall(html))
    expected = {"nasforge.search", "nasforge.search.runner", "nasforge.search.screen"}
    assert hooks.missing_api_pages(expected, rendered) == ["nasforge.search.screen"]
