"""The main job of `make run`: a tour of `entrenar inspect` on the packaged models.

Each step is a real command, run in-process and printed with its command line, so the
output doubles as documentation. Converted files go to a temp folder that is removed after.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path


def _steps(tmp: Path) -> list[str]:
    smol_st = tmp / "smollm2-135m"
    return [
        "inspect info smollm2-135m",
        "inspect info minilm-l6",
        "inspect layers minilm-l6",
        "inspect memory smollm2-135m --batch-size 4 --sequence-length 512 --precision bf16",
        "inspect memory smollm2-135m --batch-size 4 --sequence-length 512 --lora-rank 16 --gradient-checkpointing",
        "inspect validate minilm-l6",
        "inspect validate smollm2-135m",
        f"inspect convert minilm-l6 --to apr --output {tmp / 'minilm.apr'}",
        f"inspect compare minilm-l6 {tmp / 'minilm.apr'} --values",
        f"inspect convert smollm2-135m --to safetensors --output {smol_st}",
        f"inspect convert {smol_st} --to gguf --quantize q8_0 --output {tmp / 'smollm2-q8_0.gguf'}",
        f"inspect info {tmp / 'smollm2-q8_0.gguf'}",
        f"inspect compare smollm2-135m {tmp / 'smollm2-q8_0.gguf'}",
    ]


def main() -> int:
    from typer.testing import CliRunner  # noqa: F401  (keeps typer's import cost out of the timing)

    from .cli.main import app

    failures = 0
    with tempfile.TemporaryDirectory(prefix="entrenar-tour-") as tmp:
        for step in _steps(Path(tmp)):
            print(f"\n$ entrenar {step}", flush=True)
            start = time.perf_counter()
            try:
                app(shlex.split(step), standalone_mode=False)
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
            except Exception as exc:  # the tour reports and goes on
                print(f"error: {exc}", file=sys.stderr)
                code = 1
            print(f"[exit {code}, {time.perf_counter() - start:.1f} s]", flush=True)
            failures += code not in (0,)
    print(f"\ntour finished: {failures} failing step(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
