"""A plain `pip install .` maps search_spaces/ and controllers/ into the nasforge package
(through the links nasforge/search_spaces and nasforge/controllers)."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_subpackages_under_nasforge_only(tmp_path):
    source = tmp_path / "src"  # setuptools builds in the source folder: keep the checkout clean
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", "runs", ".venv*"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                            "--no-build-isolation", "-w", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("nasforge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "nasforge/search_spaces/nasnet.py" in names
    assert "nasforge/controllers/__init__.py" in names
    top_level = {n.split("/")[0] for n in names if not n.startswith("nasforge-")}
    assert top_level == {"nasforge"}
    expected = {f"{installed_as}/{p.relative_to(ROOT / folder).as_posix()}"
                for folder, installed_as in (("nasforge", "nasforge"),
                                             ("search_spaces", "nasforge/search_spaces"),
                                             ("controllers", "nasforge/controllers"))
                for p in (ROOT / folder).rglob("*.py")}
    missing = sorted(expected - set(names))
    assert not missing, f"not packaged (a folder without __init__.py?): {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "nasforge = nasforge.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what pip install puts in site-packages
    probe = ("import importlib.util, nasforge.search_spaces as s, nasforge.controllers;"
             "assert s.__file__.startswith(%r), s.__file__;"
             "assert importlib.util.find_spec('search_spaces') is None;"
             "assert importlib.util.find_spec('controllers') is None;"
             "print(s.get_space('nasnet').size() > 0)" % str(target))
    env = dict(os.environ, PYTHONPATH=str(target))
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "True"
