"""Shared fixtures. Tests build their own data; nothing is downloaded."""
import shutil
import subprocess
import sys
import time

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


# how long a test waits for an event of a run it started (a line in a run file): long enough
# for a machine whose cores are shared many times over; the wait ends as soon as it happens
EVENT_DEADLINE_S = 900


def wait_for(event, proc: subprocess.Popen, what: str, deadline_s: float = EVENT_DEADLINE_S,
             poll_s: float = 0.05):
    """Poll ``event()`` until it returns something true (returned) while ``proc`` runs: the
    test acts on what happened in the run folder, never on how long things usually take.
    Fails with ``proc``'s stderr if it ended first, or after ``deadline_s`` seconds."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        found = event()
        if found:
            return found
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the process ended (exit code {proc.returncode}) before {what}: "
                        f"{err.decode() if isinstance(err, bytes) else err}")
        time.sleep(poll_s)
    pytest.fail(f"no {what} within {deadline_s} s")


def lines_of(path) -> int:
    """Complete lines in ``path`` (0 while it does not exist)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


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
