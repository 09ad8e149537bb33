"""Shared fixtures. Tests build their own data; nothing is downloaded."""
import subprocess
import sys

import pytest
import torch


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
