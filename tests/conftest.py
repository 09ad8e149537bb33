"""Shared fixtures. Tests build their own data; nothing is downloaded."""
import shutil
import subprocess
import sys

import pytest
import torch


# Graphviz is a system package, not a pip dependency: without its ``dot`` program the tests that
# render DOT skip (CI installs it, so they run there); cells are drawn with matplotlib instead.
requires_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="needs Graphviz's 'dot' program, not on PATH (apt-get install graphviz)")


@pytest.fixture
def no_dot(tmp_path, monkeypatch):
    """PATH without Graphviz's ``dot``: only an empty folder (rendering finds no program)."""
    empty = tmp_path / "no-graphviz"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def run_cli(*args, cwd=None, timeout=300):
    """Run `python -m nasforge ARGS` in a fresh interpreter; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "nasforge", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of small models: on shared 2-core machines, OpenMP's
    thread barriers cost far more than a second thread gains (seen: 50 s -> 5.5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
