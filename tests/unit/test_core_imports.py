"""The core stays free of UI libraries and of torch at import time (ARCHITECTURE.md's one rule)."""

import subprocess
import sys

CHECK = """
import sys
import entrenar_tui.core, entrenar_tui.core.models, entrenar_tui.core.inspect.info
import entrenar_tui.core.inspect.compare, entrenar_tui.core.errors, entrenar_tui.core.fsutil
loaded = sorted(m for m in ("textual", "rich", "torch", "transformers") if m in sys.modules)
print(",".join(loaded))
"""


def test_importing_core_loads_no_textual_rich_or_torch():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_importing_package_is_cheap():
    code = "import sys, entrenar_tui; print(len([m for m in sys.modules if m.startswith(('torch','numpy'))]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
