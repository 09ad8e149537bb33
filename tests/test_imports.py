"""The import graph of nasforge, read from the source (AST), and the CLI's light start.

- No cycle among module-level imports. Python runs a package's ``__init__`` before any of its
  submodules, so ``pkg/__init__`` importing ``pkg.sub`` is how packages work and
  ``from pkg import sub`` (a submodule) depends on ``pkg.sub`` only. What is flagged is a module
  that needs another module's *names* while that module (directly or through others) needs it:
  e.g. ``pkg.sub`` doing ``from pkg import Name`` while ``pkg/__init__`` imports ``pkg.sub``,
  which only works while ``__init__`` happens to define ``Name`` first.
- Imports of nasforge's own modules sit at the top of each file; the few inside functions are
  listed in LAZY with their reason.
- Library code never imports the CLI.
- ``nasforge --help`` imports neither torch, Ray nor Optuna.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
# where each package's source lives (pyproject's package-dir)
PACKAGE_DIRS = {"nasforge": REPO / "nasforge",
                "nasforge.search_spaces": REPO / "search_spaces",
                "nasforge.controllers": REPO / "controllers"}

# (file, imported module) -> why the import is inside a function
LAZY = {
    ("nasforge/__init__.py", "nasforge.api"):
        "the package root stays free of torch, and nasforge.api's imports reach back to it",
}


def _module_name(path: Path) -> str:
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[0])):
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise ValueError(path)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for folder in PACKAGE_DIRS.values() for p in folder.rglob("*.py")}


MODULES = _sources()


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The nasforge modules an import statement needs: ``from pkg import sub`` needs the
    submodule ``pkg.sub``, ``from pkg import Name`` needs ``pkg`` itself."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    if node.level:
        base = module.split(".")
        if path.name != "__init__.py":
            base.pop()
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    out = set()
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        out.add(sub if sub in MODULES else source)
    return sorted(m for m in out if m in MODULES)


def _imports():
    """(module, file, imported module, inside a function?, line) for every import of a
    nasforge module; ``if TYPE_CHECKING:`` blocks are not imports at run time."""
    found = []
    for module, path in MODULES.items():
        def walk(node, in_function):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                inside = in_function or isinstance(child, (ast.FunctionDef,
                                                           ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(module, path, child):
                        found.append((module, path.relative_to(REPO).as_posix(), target,
                                      inside, child.lineno))
                walk(child, inside)
        walk(ast.parse(path.read_text(), str(path)), False)
    return found


IMPORTS = _imports()


def _cycles(edges) -> list[list[str]]:
    graph = nx.DiGraph([(a, b) for a, b in edges if a != b])
    return [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]


def test_the_module_level_import_graph_has_no_cycle():
    cycles = _cycles((m, t) for m, _, t, inside, _ in IMPORTS if not inside)
    assert cycles == [], f"import cycles (module-level): {cycles}"


def test_the_cycle_check_flags_what_python_cannot_order():
    """Independent cases for the rules above: the checker must be able to fail."""
    pkg, sub, other = "nasforge.dsl", "nasforge.dsl.cell", "nasforge.dsl.chain"
    assert _cycles([(pkg, sub)]) == []  # a package re-exporting its submodule
    assert _cycles([(pkg, sub), (sub, other)]) == []
    assert _cycles([(pkg, sub), (sub, pkg)]) == [[pkg, sub]]  # sub: from pkg import Name
    assert _cycles([(sub, other), (other, sub)]) == [[sub, other]]
    tree = ast.parse("from nasforge.data import cifar, DataError")
    assert _targets("nasforge.data.load", MODULES["nasforge.data.load"], tree.body[0]) == [
        "nasforge.data", "nasforge.data.cifar"]


def test_nasforge_modules_are_imported_at_the_top_of_each_file():
    lazy = {(f, t): line for _, f, t, inside, line in IMPORTS if inside}
    unexplained = sorted(f"{f}:{line} imports {t}" for (f, t), line in lazy.items()
                         if (f, t) not in LAZY)
    assert unexplained == [], ("function-level imports of nasforge modules; move them to the "
                               "top, or list them in LAZY with the reason")
    stale = sorted(set(LAZY) - set(lazy))
    assert stale == [], f"LAZY entries with no such import any more: {stale}"


def _is_cli(module: str) -> bool:
    return module in ("nasforge.cli", "nasforge.__main__") or module.startswith("nasforge.cli.")


def test_library_code_never_imports_the_cli():
    offenders = sorted(f"{f}:{line}" for m, f, t, _, line in IMPORTS
                       if _is_cli(t) and not _is_cli(m))
    assert offenders == []


def test_the_import_walk_sees_the_packages_and_the_cli():
    """Guards the tests above against reading nothing: known edges are found."""
    edges = {(m, t) for m, _, t, inside, _ in IMPORTS if not inside}
    assert ("nasforge.controllers", "nasforge.controllers.base") in edges
    assert ("nasforge.search.runner", "nasforge.controllers") in edges
    assert ("nasforge.cli.search", "nasforge.cli") in edges


# modules a process has loaded after `python -m nasforge ARGS`, printed by a small runner
_RUNNER = """
import runpy, sys
sys.argv = ["nasforge", *sys.argv[1:]]
try:
    runpy.run_module("nasforge", run_name="__main__")
except SystemExit:
    pass
print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""


def _modules_after(*args: str) -> tuple[set[str], str]:
    done = subprocess.run([sys.executable, "-c", _RUNNER, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    *_, loaded = done.stderr.strip().splitlines()
    return set(loaded.split()), done.stdout


@pytest.mark.parametrize("args", [("--help",), ()])
def test_nasforge_help_imports_no_torch_ray_or_optuna(args):
    loaded, out = _modules_after(*args)
    assert "usage: nasforge" in out and "search" in out and "export" in out
    assert "nasforge.cli" in loaded  # the runner saw the CLI run
    assert not {"torch", "ray", "optuna"} & loaded


def test_a_subcommand_loads_its_module_when_asked_for():
    loaded, out = _modules_after("compare", "--help")
    assert "usage: nasforge compare" in out
    assert "nasforge.cli.compare" in loaded and "nasforge.cli.train" not in loaded
