"""The wheel carries what the app reads at run time: its styles and the packaged examples."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_wheel_contains_the_styles_and_examples(tmp_path):
    source = tmp_path / "src"  # setuptools writes build/ beside the sources: not in the checkout
    shutil.copytree(
        ROOT / "entrenar_tui", source / "entrenar_tui", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("entrenar_tui-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for style in (ROOT / "entrenar_tui" / "styles").glob("*.tcss"):
        assert f"entrenar_tui/styles/{style.name}" in names
    assert "entrenar_tui/examples/demo.yaml" in names
    from entrenar_tui.app import STYLES

    assert {p.name for p in STYLES} == {
        p.name for p in (ROOT / "entrenar_tui/styles").glob("*.tcss")
    }
