"""Shared fixtures. Tests build their own data; nothing is downloaded."""
import subprocess
import sys

import pytest


def run_cli(*args, cwd=None, timeout=300):
    """Run `python -m nasforge ARGS` in a fresh interpreter; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "nasforge", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
