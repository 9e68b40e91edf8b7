"""`inspect validate` value scan vs a numpy `np.isfinite(arr).all()` loop over the same tensors.

Goal: scan throughput >= 1.5x the numpy loop. Both read the same memory-mapped tensors of a
Llama-shaped file (~470 MB float32, and the same shapes in bf16) written to a temp dir, in
the same process, interleaved, warm page cache; best and median of several rounds. The
entrenar side is the whole `validate_model` call (header, structure, shapes, values).
A third line times the reference reader (`safe_open(...).get_tensor` + isfinite).

    python benchmarks/bench_validate.py [--repeats N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_info import llama_shapes as llama_shape_table  # one table, run from benchmarks/

from entrenar_tui.core.inspect.validate import validate_model
from entrenar_tui.core.models.safetensors_format import read_header
from entrenar_tui.core.models.tensor_data import read_safetensors_tensor

LAYERS, HIDDEN, INTER, VOCAB = 8, 1024, 2816, 8192


def llama_shapes() -> dict[str, list[int]]:
    return llama_shape_table(LAYERS, HIDDEN, INTER, VOCAB)


def write_model(folder: Path, dtype: str) -> Path:
    """config.json + model.safetensors with random normal weights, written tensor by tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(
        model_type="llama",
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        vocab_size=VOCAB,
        num_hidden_layers=LAYERS,
        num_attention_heads=16,
        num_key_value_heads=16,
    )
    (folder / "config.json").write_text(json.dumps(config))
    width = 4 if dtype == "F32" else 2
    header, offset, shapes = {}, 0, llama_shapes()
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * width
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(0)
    path = folder / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for shape in shapes.values():
            values = rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * 0.02
            f.write((values.view(np.uint32) >> 16).astype(np.uint16) if width == 2 else values)
    return path


def numpy_loop(path: Path) -> int:
    """What a numpy user writes: map each tensor (bf16 widened to f32), isfinite, all."""
    scanned = 0
    for info in read_header(path).tensors:
        assert np.isfinite(read_safetensors_tensor(info)).all()
        scanned += info.nbytes
    return scanned


def reference_loop(path: Path) -> int:
    from safetensors import safe_open

    scanned = 0
    with safe_open(str(path), framework="np") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            arr = f.get_tensor(key)
            assert np.isfinite(arr).all()
            scanned += arr.nbytes
    return scanned


def entrenar(path: Path) -> int:
    report = validate_model(str(path.parent))
    assert report.ok, [p.to_dict() for p in report.problems]
    return report.bytes_scanned


def measure(path: Path, repeats: int, with_reference: bool) -> dict[str, tuple[list[float], int]]:
    contenders = {"numpy isfinite loop": numpy_loop, "entrenar validate": entrenar}
    if with_reference:
        contenders["safe_open+isfinite"] = reference_loop
    times: dict[str, list[float]] = {name: [] for name in contenders}
    sizes: dict[str, int] = {}
    for name, run in contenders.items():  # warm-up: page cache, imports, BLAS threads
        sizes[name] = run(path)
    for _ in range(repeats):  # interleaved, so background load hits both alike
        for name, run in contenders.items():
            start = time.perf_counter()
            run(path)
            times[name].append(time.perf_counter() - start)
    return {name: (times[name], sizes[name]) for name in contenders}


def report(title: str, results: dict[str, tuple[list[float], int]]) -> float:
    print(f"\n{title}")
    base_best = min(results["numpy isfinite loop"][0])
    base_median = statistics.median(results["numpy isfinite loop"][0])
    for name, (times, nbytes) in results.items():
        best, median = min(times), statistics.median(times)
        print(
            f"  {name:22s} best {nbytes / best / 1e6:8.0f} MB/s  median {nbytes / median / 1e6:8.0f} MB/s"
            f"   ratio vs numpy: best {base_best / best:4.2f}x  median {base_median / median:4.2f}x"
        )
    return base_median / statistics.median(results["entrenar validate"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--keep", type=Path, help="write the files here (and keep them)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        root = args.keep or Path(tmp)
        ratios = {}
        for dtype in ("F32", "BF16"):
            path = write_model(root / dtype.lower(), dtype)
            size_mb = path.stat().st_size / 1e6
            results = measure(path, args.repeats, with_reference=dtype == "F32")
            ratios[dtype] = report(
                f"{dtype}: {size_mb:.0f} MB, {len(llama_shapes())} tensors", results
            )
    verdict = "meets" if ratios["F32"] >= 1.5 else "MISSES"
    print(
        f"\nF32 median ratio {ratios['F32']:.2f}x ({verdict} the 1.5x goal); BF16 {ratios['BF16']:.2f}x"
    )


if __name__ == "__main__":
    main()
