"""One error base the CLI catches; library messages in the library's words, the CLI's flags
added by the CLI."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from nasforge.api import ArchitectureError
from nasforge.cli import main
from nasforge.cluster import ClusterError
from nasforge.data import DataError
from nasforge.dsl import CellError
from nasforge.errors import NasforgeError
from nasforge.export import ExportError
from nasforge.latency import LatencyError, LatencyTableError
from nasforge.oneshot import SupernetError
from nasforge.safe_load import RefusedFileError
from nasforge.search import SearchConfig, SearchError
from nasforge.search.objectives import ObjectiveError
from nasforge.transfer import TransferError, TransferFailed
from nasforge.weights import WeightImportError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("error", [
    ArchitectureError, CellError, ClusterError, DataError, ExportError, LatencyError,
    LatencyTableError, ObjectiveError, RefusedFileError, SearchError, SupernetError,
    TransferError, TransferFailed, WeightImportError])
def test_every_reported_error_derives_from_the_one_base(error):
    assert issubclass(error, NasforgeError)


def test_bad_input_is_one_line_with_the_cli_flag_and_exit_code_2(tmp_path, capsys):
    assert main(["search", "--trials", "0", "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("nasforge: error: trials must be at least 1, got 0 "
                                       "(option --trials)\n")
    assert main(["search", "--gpus-per-trial", "0", "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("nasforge: error: gpus_per_trial and cpus_per_trial "
                                       "must be positive (options --gpus-per-trial, "
                                       "--cpus-per-trial)\n")


def test_the_library_error_names_its_parameter_not_a_flag():
    with pytest.raises(SearchError, match=r"^trials must be at least 1, got 0$") as caught:
        SearchConfig(trials=0)
    assert caught.value.options == ("trials",)


def test_nasforge_debug_shows_the_error_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("NASFORGE_DEBUG", "1")
    with pytest.raises(SearchError, match="trials must be at least 1"):
        main(["search", "--trials", "0", "--runs-dir", str(tmp_path)])


# library files whose raise statements may still name a --flag (none: the CLI adds them)
FLAG_MESSAGES_LEFT: dict[str, int] = {}
FLAG = re.compile(r"(?:^|[\s'\"(/])--[a-z]")


def _flag_messages() -> dict[str, int]:
    """Per library file: raise statements whose message text names a ``--flag``."""
    found: dict[str, int] = {}
    for folder in ("nasforge", "controllers", "search_spaces"):
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith("nasforge/cli/"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Raise) and node.exc is not None and any(
                        isinstance(s, ast.Constant) and isinstance(s.value, str)
                        and FLAG.search(s.value) for s in ast.walk(node.exc)):
                    found[rel] = found.get(rel, 0) + 1
    return found


def test_library_messages_do_not_name_cli_flags():
    assert _flag_messages() == FLAG_MESSAGES_LEFT
