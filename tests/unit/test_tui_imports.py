"""The app imports no torch or transformers (heavy work runs in children, core/runs/launch.py),
and the core modules the app polls import no UI library either. Each check runs in a fresh
interpreter so that nothing this test process already imported hides a load."""

from __future__ import annotations

import json
import subprocess
import sys

APP_MODULES = """
import importlib, json, pkgutil, sys
import entrenar_tui.app, entrenar_tui.screens, entrenar_tui.widgets
names = ["entrenar_tui.app"]
for package in (entrenar_tui.screens, entrenar_tui.widgets):
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
print(json.dumps({"imported": names, "heavy": heavy}))
"""

CORE_MODULES = """
import json, sys
import entrenar_tui.core.runs.follow, entrenar_tui.core.runs.launch, entrenar_tui.core.system
loaded = sorted(m for m in ("textual", "rich", "torch", "transformers") if m in sys.modules)
print(json.dumps(loaded))
"""


def run_python(code: str):
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_app_screens_and_widgets_load_no_torch_or_transformers():
    report = run_python(APP_MODULES)
    imported = set(report["imported"])
    assert {"entrenar_tui.screens.runs", "entrenar_tui.widgets.system"} <= imported
    assert len(imported) >= 5  # discovery found the packages' modules
    assert report["heavy"] == []


def test_run_follow_launch_and_system_load_no_ui_library_or_torch():
    assert run_python(CORE_MODULES) == []
