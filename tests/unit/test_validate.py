"""`inspect validate` (core): a corpus of broken models, each built here from a valid one.

Every structural break must give a report that is not ok, names the broken rule with a
one-line message and a hint, and must also make `Model.open(...).tensors` (what `inspect
info` shows) raise CorruptFileError/ModelNotFoundError with a hint. Value problems (NaN,
Inf, zeros) leave the structure readable and are validate's alone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from entrenar_tui.core.errors import CorruptFileError, ModelNotFoundError
from entrenar_tui.core.inspect.validate import MAX_PER_CODE, validate_model
from entrenar_tui.core.inspect.validate_scan import scan_bytes
from entrenar_tui.core.models import Model

RNG = np.random.default_rng(7)


def valid_file(folder: Path, name: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "w.weight": RNG.standard_normal((4, 8)).astype(np.float32),
        "n.weight": np.ones(8, np.float32),
    }
    save_file(tensors, str(folder / name))
    return folder / name


def raw_file(path: Path, header: dict | bytes, data: bytes) -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def f32(begin: int, end: int, dtype: str = "F32") -> dict:
    return {"dtype": dtype, "shape": [(end - begin) // 4], "data_offsets": [begin, end]}


def with_prefix(path: Path, n: int) -> Path:
    path.write_bytes(struct.pack("<Q", n) + path.read_bytes()[8:])
    return path


def sharded(folder: Path, index: str | dict) -> Path:
    valid_file(folder, "model-00001-of-00002.safetensors")
    text = index if isinstance(index, str) else json.dumps(index)
    (folder / "model.safetensors.index.json").write_text(text)
    return folder


def write_gguf(path: Path, arrays: dict, quant=None) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    for name, arr in arrays.items():
        if quant is not None and arr.ndim == 2:
            with np.errstate(invalid="ignore"):  # NaN in, NaN block scale out: on purpose
                blocks = gguf.quants.quantize(arr, quant)
            writer.add_tensor(name, blocks, raw_dtype=quant)
        else:
            writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


LFS = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 4096\n"

# name -> builder(tmp_path) -> (model reference, expected problem code)
STRUCTURAL = {
    "truncated": lambda d: (lambda p: (p.write_bytes(p.read_bytes()[:-5]), p)[1])(valid_file(d)),
    "lfs_pointer": lambda d: (d / "model.safetensors", (d / "model.safetensors").write_text(LFS))[
        0
    ],
    "header_past_eof": lambda d: with_prefix(valid_file(d), 10_000),
    "header_too_large": lambda d: with_prefix(valid_file(d), 100_000_001),
    "overlap": lambda d: raw_file(
        d / "m.safetensors", {"a": f32(0, 16), "b": f32(8, 24)}, bytes(24)
    ),
    "hole": lambda d: raw_file(d / "m.safetensors", {"a": f32(0, 16), "b": f32(24, 40)}, bytes(40)),
    "unknown_dtype": lambda d: raw_file(d / "m.safetensors", {"a": f32(0, 16, "F7")}, bytes(16)),
    "not_utf8": lambda d: raw_file(d / "m.safetensors", b'{"\xff\xfe": 1}', b""),
    "bad_json": lambda d: raw_file(d / "m.safetensors", b'{"a": {"dtype": "F32",, }', bytes(16)),
    "size_mismatch": lambda d: raw_file(
        d / "m.safetensors",
        {"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}},
        bytes(16),
    ),
    "trailing_bytes": lambda d: (lambda p: (p.write_bytes(p.read_bytes() + bytes(4)), p)[1])(
        valid_file(d)
    ),
    "missing_shard": lambda d: sharded(
        d,
        {
            "weight_map": {
                "w.weight": "model-00001-of-00002.safetensors",
                "n.weight": "model-00001-of-00002.safetensors",
                "x.weight": "model-00002-of-00002.safetensors",
            }
        },
    ),
    "bad_index_json": lambda d: sharded(d, '{"weight_map": {"w.weight": '),
    "bad_index": lambda d: sharded(d, '{"metadata": {}}'),
    "bad_config_json": lambda d: (
        valid_file(d),
        (d / "config.json").write_text("{'model_type': llama"),
        d,
    )[2],
    "bad_gguf": lambda d: (lambda p: (p.write_bytes(p.read_bytes()[:-100]), p)[1])(
        write_gguf(d / "m.gguf", {"a.weight": np.ones((4, 64), np.float32)})
    ),
    "bad_pth": lambda d: (d / "m.pth", (d / "m.pth").write_bytes(b"PK\x03\x04 not a zip at all"))[
        0
    ],
}
EXPECTED = {"bad_index_json": "bad_json", "bad_config_json": "bad_json"}


def one_line_with_hint(problem) -> None:
    assert problem.message and "\n" not in problem.message
    assert problem.hint and "\n" not in problem.hint


@pytest.mark.parametrize("case", list(STRUCTURAL))
def test_structural_break_is_reported_and_refused_by_open(tmp_path, case):
    ref = STRUCTURAL[case](tmp_path)
    report = validate_model(str(ref))
    expected = EXPECTED.get(case, case)
    assert not report.ok
    matching = [p for p in report.problems if p.code == expected]
    assert matching, [p.to_dict() for p in report.problems]
    assert matching[0].severity == "error"
    one_line_with_hint(matching[0])
    json.dumps(report.to_dict())  # JSON-ready
    with pytest.raises((CorruptFileError, ModelNotFoundError)) as caught:
        Model.open(str(ref)).tensors  # noqa: B018 (the property read is the test)
    assert caught.value.hint


def nan_bf16(d: Path) -> Path:
    bits = (RNG.standard_normal(64).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    bits[[3, 40]] = 0x7FC0
    return raw_file(
        d / "m.safetensors",
        {"a.weight": {"dtype": "BF16", "shape": [8, 8], "data_offsets": [0, 128]}},
        bits.tobytes(),
    )


def inject(d: Path, value: float, dtype=np.float32, count: int = 3) -> Path:
    arr = RNG.standard_normal((16, 8)).astype(dtype)
    arr.reshape(-1)[RNG.choice(arr.size, count, replace=False)] = value
    save_file({"a.weight": arr}, str(d / "model.safetensors"))
    return d / "model.safetensors"


def gguf_nan(d: Path, quant=None) -> Path:
    import gguf

    arr = RNG.standard_normal((4, 64)).astype(np.float32)
    arr[1, 5] = np.nan
    return write_gguf(d / "m.gguf", {"a.weight": arr}, quant and gguf.GGMLQuantizationType[quant])


def pth_nan(d: Path) -> Path:
    import torch

    state = {"a.weight": torch.ones(4, 4, dtype=torch.bfloat16)}
    state["a.weight"][0, 0] = float("nan")
    torch.save(state, d / "m.pth")
    return d / "m.pth"


# name -> builder -> (ref, code, text the message must contain)
VALUES = {
    "nan_f32": (lambda d: inject(d, np.nan, count=3), "nan", "3 NaN values of 128"),
    "inf_f32": (lambda d: inject(d, -np.inf, count=2), "inf", "2 Inf values of 128"),
    "inf_f16": (lambda d: inject(d, np.inf, np.float16, count=5), "inf", "5 Inf values"),
    "nan_bf16": (nan_bf16, "nan", "2 NaN values of 64"),
    "nan_gguf_f32": (gguf_nan, "nan", "1 NaN values of 256"),
    "nan_gguf_q8_0": (lambda d: gguf_nan(d, "Q8_0"), "nan", "32 NaN values of 256"),  # one block
    "nan_pth": (pth_nan, "nan", "1 NaN values of 16"),
    "all_zero_matrix": (lambda d: inject(d, 0.0, count=128), "all_zero", "all 128 values are zero"),
    "missing_tensor": (
        lambda d: sharded(
            d,
            {
                "weight_map": {
                    "w.weight": "model-00001-of-00002.safetensors",
                    "n.weight": "model-00001-of-00002.safetensors",
                    "gone.weight": "model-00001-of-00002.safetensors",
                }
            },
        ),
        "missing_tensor",
        "lacks it",
    ),
}


@pytest.mark.parametrize("case", list(VALUES))
def test_value_problem_is_counted_but_structure_stays_readable(tmp_path, case):
    build, code, text = VALUES[case]
    ref = build(tmp_path)
    report = validate_model(str(ref))
    assert not report.ok
    problem = next(p for p in report.problems if p.code == code)
    assert problem.severity == "error" and text in problem.message
    assert problem.tensor
    one_line_with_hint(problem)
    assert Model.open(str(ref)).tensors  # inspect info still works: the file is well formed


@pytest.mark.parametrize(
    "arch", ["llama", "mistral", "qwen2", "gpt2", "gpt_neox", "bert", "roberta", "t5"]
)
def test_tiny_models_of_every_arch_validate_clean(tiny_model_dir, arch):
    report = validate_model(str(tiny_model_dir(arch)), strict=True)
    assert report.ok, [p.to_dict() for p in report.problems]
    assert report.tensors_checked > 10 and report.bytes_scanned > 100_000


@pytest.mark.slow  # gguf-py takes seconds to parse SmolLM2's 49k-token vocabulary
@pytest.mark.parametrize("ref", ["minilm-l6", "smollm2-135m"])
def test_packaged_models_validate_clean(ref):
    report = validate_model(ref, strict=True)
    assert report.ok, [p.to_dict() for p in report.problems]
    assert report.bytes_scanned > 50_000_000 and report.files_checked == 1


SHAPE_EDITS = [
    ("llama", {"num_key_value_heads": 4}, "shape_vs_config", "self_attn.k_proj.weight"),
    ("llama", {"vocab_size": 300}, "shape_vs_config", "embed_tokens.weight"),
    ("qwen2", {"intermediate_size": 100}, "shape_vs_config", "mlp.gate_proj.weight"),
    ("gpt2", {"n_embd": 128}, "shape_vs_config", "attn.c_attn.weight"),
    ("gpt_neox", {"intermediate_size": 128}, "shape_vs_config", "dense_h_to_4h.weight"),
    ("bert", {"intermediate_size": 64}, "shape_vs_config", "intermediate.dense.weight"),
    ("t5", {"d_ff": 96}, "shape_vs_config", "DenseReluDense.wi.weight"),
    ("llama", {"num_hidden_layers": 4}, "layer_count", None),
    ("bert", {"num_hidden_layers": 1}, "layer_count", None),
    ("t5", {"num_decoder_layers": 3}, "layer_count", None),
    ("mistral", {"num_key_value_heads": 3}, "config_inconsistent", None),
]


@pytest.mark.parametrize(("arch", "edit", "code", "tensor"), SHAPE_EDITS)
def test_shapes_are_checked_against_config(tiny_model_dir, tmp_path, arch, edit, code, tensor):
    folder = shutil.copytree(tiny_model_dir(arch), tmp_path / arch)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **edit}))
    report = validate_model(str(folder))
    assert not report.ok
    found = [p for p in report.problems if p.code == code]
    assert found, [p.to_dict() for p in report.problems]
    if tensor:
        assert any(p.tensor and p.tensor.endswith(tensor) for p in found)
    one_line_with_hint(found[0])


def test_sharded_index_is_checked_both_ways(tmp_path):
    shard = {
        f"model-0000{i}-of-00002.safetensors": {f"t{i}.weight": np.ones((2, 2), np.float32)}
        for i in (1, 2)
    }
    for name, tensors in shard.items():
        save_file(tensors, str(tmp_path / name))
    weight_map = {t: name for name, tensors in shard.items() for t in tensors}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    clean = validate_model(str(tmp_path / "model.safetensors.index.json"), strict=True)
    assert clean.ok and clean.files_checked == 2 and clean.tensors_checked == 2
    # shard 2 now also holds t1 (a duplicate) and an extra tensor the index does not list
    extra = {
        "t2.weight": np.ones((2, 2), np.float32),
        "t1.weight": np.ones((2, 2), np.float32),
        "stray.weight": np.ones((2, 2), np.float32),
    }
    save_file(extra, str(tmp_path / "model-00002-of-00002.safetensors"))
    found = {(p.severity, p.code, p.tensor) for p in validate_model(str(tmp_path)).problems}
    assert found == {
        ("error", "duplicate_tensor", "t1.weight"),
        ("warning", "unindexed_tensor", "stray.weight"),
    }


def test_strict_turns_warnings_into_failure(tmp_path):
    tensors = {
        "w.weight": RNG.standard_normal((4, 8)).astype(np.float32),
        "v.weight": RNG.standard_normal((4, 8)).astype(np.float16),
        "norm.weight": np.zeros(8, np.float32),
        "b.bias": np.zeros(8, np.float32),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    lenient = validate_model(str(tmp_path))
    strict = validate_model(str(tmp_path), strict=True)
    codes = {(p.severity, p.code, p.tensor) for p in lenient.problems}
    assert codes == {("warning", "mixed_dtypes", None), ("warning", "all_zero", "norm.weight")}
    assert lenient.ok and not strict.ok
    assert lenient.to_dict()["warnings"] == 2 and strict.to_dict()["ok"] is False


def test_many_bad_tensors_are_summarised_not_listed(tmp_path):
    count = MAX_PER_CODE + 7
    save_file(
        {f"t{i}.weight": np.full((2, 2), np.nan, np.float32) for i in range(count)},
        str(tmp_path / "model.safetensors"),
    )
    problems = [p for p in validate_model(str(tmp_path)).problems if p.code == "nan"]
    assert len(problems) == MAX_PER_CODE + 1
    assert problems[-1].message == "7 more nan problems not listed"


def test_validation_leaves_the_input_byte_identical(tmp_path):
    path = inject(tmp_path, np.nan)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    stamp = path.stat().st_mtime_ns
    assert not validate_model(str(path)).ok
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # nothing written


def test_a_reference_to_nothing_is_an_exception(tmp_path):
    with pytest.raises(ModelNotFoundError):
        validate_model(str(tmp_path / "absent.safetensors"))


@pytest.mark.parametrize("dtype", ["F64", "F32", "F16", "BF16"])
def test_scan_counts_match_numpy_across_chunks(dtype):
    import torch

    torch_dtype = {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
    }[dtype]
    values = torch.from_numpy(RNG.standard_normal(700_001)).to(torch_dtype)  # spans chunks
    values[RNG.choice(values.numel(), 11, replace=False)] = float("nan")
    values[RNG.choice(values.numel(), 4, replace=False)] = float("inf")
    values[-1] = float("-inf")
    wide = values.double().numpy()
    counts = scan_bytes(values.view(torch.uint8).numpy(), dtype)
    assert (counts.nan, counts.inf) == (int(np.isnan(wide).sum()), int(np.isinf(wide).sum()))
    assert counts.numel == values.numel() and counts.nonzero


def test_scan_tells_tiny_values_from_zero():
    values = np.zeros(300_000, np.float32)
    assert scan_bytes(values.view(np.uint8), "F32").all_zero
    values[-1] = 1e-30  # its square underflows to 0: the exact path must still see it
    assert not scan_bytes(values.view(np.uint8), "F32").all_zero
    assert scan_bytes((-np.zeros(16, np.float32)).view(np.uint8), "F32").all_zero  # -0.0 is zero
