"""`merge_adapter` vs PEFT's PeftModel.from_pretrained -> merge_and_unload -> save_pretrained.

Same base, same adapter, same run. Each merge runs in a fresh child process (so peak RSS is
that merge's own: ru_maxrss of the child, with MALLOC_MMAP_THRESHOLD_=65536 so freed buffers
go back to the OS), alternating the two, best time of `--repeats`. The parent stays small and
builds the models in another child: Linux starts a child's ru_maxrss at its parent's RSS. The base is a ~170M-param
LLaMA (hidden 1024, 8 layers, vocab 32000, untied head); the adapter is LoRA r=16 on
q,k,v,o,gate,up,down with non-zero B. The two outputs are compared tensor by tensor.

Goals: time ratio (PEFT / ours) >= 1x; peak RSS ratio (ours / PEFT) <= 0.5x.

    python benchmarks/bench_merge.py [--dtype bf16|f32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OURS = """
import json, sys, time
start = time.perf_counter()
from entrenar_tui.core.lora.merge import merge_adapter
imported = time.perf_counter()
merge_adapter(sys.argv[1], sys.argv[2], sys.argv[3])
done = time.perf_counter()
print(json.dumps({"op_s": done - imported, "import_s": imported - start}))
"""
PEFT = """
import json, sys, time
start = time.perf_counter()
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
imported = time.perf_counter()
dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[sys.argv[4]]
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=dtype)
model = PeftModel.from_pretrained(model, sys.argv[2]).merge_and_unload()
model.save_pretrained(sys.argv[3])
done = time.perf_counter()
print(json.dumps({"op_s": done - imported, "import_s": imported - start}))
"""


def build(root: Path, dtype: str) -> tuple[Path, Path, int]:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    config = transformers.LlamaConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=16,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(
        torch.bfloat16 if dtype == "bf16" else torch.float32
    )
    model.save_pretrained(root / "base")
    params = sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False)
    )
    peft_model.save_pretrained(root / "adapter")
    return root / "base", root / "adapter", params


def run_child(code: str, args: list[str]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(os.cpu_count()))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {args}")
    result = json.loads(out)
    result["process_s"] = time.perf_counter() - start
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024
    return result


def compare_outputs(ours: Path, theirs: Path) -> float:
    """Largest absolute difference over every tensor of the two merged models."""
    import torch
    from safetensors.torch import load_file

    a, b = {}, {}
    for f in sorted(ours.glob("*.safetensors")):
        a.update(load_file(f))
    for f in sorted(theirs.glob("*.safetensors")):
        b.update(load_file(f))
    assert set(a) == set(b), set(a) ^ set(b)
    floats = [k for k in a if torch.is_floating_point(a[k])]
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in floats)


def helper(*args: str) -> str:
    """Run this script's build/compare step in a child, keeping the parent's RSS small."""
    cmd = [sys.executable, __file__, *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def report(runs: dict[str, list[dict]], diff: str) -> None:
    best = {k: min(r["op_s"] for r in v) for k, v in runs.items()}
    whole = {k: min(r["process_s"] for r in v) for k, v in runs.items()}
    rss = {k: max(r["peak_rss_bytes"] for r in v) for k, v in runs.items()}
    for k in runs:
        print(
            f"{k:5s} merge {best[k]:6.2f} s   whole process {whole[k]:6.2f} s   peak RSS {rss[k] / 2**20:7.0f} MiB"
        )
    print(
        f"time ratio (PEFT / ours): merge {best['peft'] / best['ours']:.2f}x, whole process {whole['peft'] / whole['ours']:.2f}x  (goal >= 1x)"
    )
    print(f"peak RSS ratio (ours / PEFT): {rss['ours'] / rss['peft']:.2f}x  (goal <= 0.5x)")
    print(f"largest difference between the two outputs: {diff}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    parser.add_argument("--compare", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(Path(args.build), args.dtype)[2]))
        return
    if args.compare:
        print(f"{compare_outputs(Path(args.compare[0]), Path(args.compare[1])):.3g}")
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        params = json.loads(helper("--build", tmp, "--dtype", args.dtype))
        base, adapter = root / "base", root / "adapter"
        size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
        print(
            f"base: {params / 1e6:.0f}M params, {args.dtype}, {size / 2**20:.0f} MiB; adapter r=16 on {len(TARGETS)} kinds"
        )
        runs: dict[str, list[dict]] = {"ours": [], "peft": []}
        for i in range(args.repeats):
            for name, code in (("ours", OURS), ("peft", PEFT)):
                out = root / f"{name}-{i}"
                runs[name].append(run_child(code, [str(base), str(adapter), str(out), args.dtype]))
                if i > 0:
                    shutil.rmtree(out)
        diff = helper("--compare", str(root / "ours-0"), str(root / "peft-0"))
    report(runs, diff)


if __name__ == "__main__":
    main()
