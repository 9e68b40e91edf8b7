"""`convert_model`: exact round trips between safetensors, pth and APR, casts, sharded inputs,
Hugging Face folders that transformers loads, and the errors (with nothing left half-written)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from entrenar_tui.core.convert import convert_model
from entrenar_tui.core.convert.apr import read_apr
from entrenar_tui.core.errors import (
    CorruptFileError,
    EntrenarError,
    InvalidInputError,
    UnsupportedError,
)
from entrenar_tui.core.models import Model
from entrenar_tui.core.models.safetensors_format import read_header

ROUND_TRIP_ARCHES = ["llama", "gpt2", "bert", "t5"]


# --------------------------------------------------------------------------- helpers


def safetensors_bytes(path: Path) -> dict[str, tuple[str, tuple, bytes]]:
    """name -> (dtype, shape, raw bytes), read straight from the file(s)."""
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    out = {}
    for file in files:
        with open(file, "rb") as f:
            for t in read_header(file).tensors:
                f.seek(t.offset)
                out[t.name] = (t.dtype, t.shape, f.read(t.nbytes))
    return out


def folder_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def mixed_dtype_file(tmp_path_factory) -> Path:
    """A safetensors file holding every common dtype, a scalar and an empty tensor."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensors = {
        "w.f32": torch.randn(5, 7),
        "w.f16": torch.randn(3, 4).half(),
        "w.bf16": torch.randn(4, 3).bfloat16(),
        "w.f64": torch.randn(6, dtype=torch.float64),
        "ids.i64": torch.arange(10, dtype=torch.int64) - 3,
        "ids.i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "mask.bool": torch.tensor([True, False, True]),
        "bytes.u8": torch.arange(9, dtype=torch.uint8),
        "bits.u16": torch.arange(4).to(torch.uint16),
        "ids.i16": torch.arange(4, dtype=torch.int16) - 2,
        "w.f8": torch.randn(2, 8).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    folder = tmp_path_factory.mktemp("mixed")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt", "note": "mixed"})
    return folder / "model.safetensors"


# --------------------------------------------------------------------------- exact round trips


@pytest.mark.parametrize("arch", ROUND_TRIP_ARCHES)
def test_safetensors_pth_apr_round_trip_is_byte_exact(arch, tiny_model_dir, tmp_path):
    source = tiny_model_dir(arch) / "model.safetensors"
    pth = convert_model(str(source), "pth", tmp_path / "m.pth")
    apr = convert_model(str(tmp_path / "m.pth"), "apr", tmp_path / "m.apr")
    back = convert_model(str(tmp_path / "m.apr"), "safetensors", tmp_path / "back.safetensors")

    assert safetensors_bytes(tmp_path / "back.safetensors") == safetensors_bytes(source)
    for result in (pth, apr, back):
        assert result.verified and result.verification["lossless"]
        assert result.tensors == len(read_header(source).tensors)
        assert result.file_size_bytes == sum(Path(f).stat().st_size for f in result.files)
    assert pth.parameters == Model.open(str(source)).parameters > 0


@pytest.mark.parametrize("data", ["inline", "sidecar"])
def test_every_dtype_round_trips_through_apr_and_pth(mixed_dtype_file, tmp_path, data):
    before = file_digest(mixed_dtype_file)
    convert_model(str(mixed_dtype_file), "apr", tmp_path / "m.apr", apr_data=data)
    convert_model(str(tmp_path / "m.apr"), "pth", tmp_path / "m.pth")
    convert_model(str(tmp_path / "m.pth"), "safetensors", tmp_path / "back.safetensors")

    original = safetensors_bytes(mixed_dtype_file)
    assert safetensors_bytes(tmp_path / "back.safetensors") == original
    assert {dtype for dtype, _, _ in original.values()} >= {
        "F32",
        "F16",
        "BF16",
        "F64",
        "I64",
        "BOOL",
        "F8_E4M3",
        "U16",
    }
    assert (tmp_path / "m.apr.bin").exists() == (data == "sidecar")
    assert file_digest(mixed_dtype_file) == before  # the input is never modified
    assert read_apr(tmp_path / "m.apr").metadata["note"] == "mixed"  # safetensors metadata kept


def test_apr_file_reads_like_the_source(tiny_model_dir, tmp_path):
    source = tiny_model_dir("qwen2")
    convert_model(str(source), "apr", tmp_path / "q.apr")
    apr_model, src_model = Model.open(str(tmp_path / "q.apr")), Model.open(str(source))

    assert [(t.name, t.shape, t.dtype) for t in apr_model.tensors] == [
        (t.name, t.shape, t.dtype) for t in src_model.tensors
    ]
    for info in src_model.tensors[:5]:
        np.testing.assert_array_equal(
            apr_model.read(apr_model.tensor(info.name)), src_model.read(info)
        )
    assert apr_model.arch.model_type == "qwen2"  # from the config stored in the APR document
    assert apr_model.metadata["converted_from"] == str(source)
    doc = json.loads((tmp_path / "q.apr").read_text())
    assert doc["format"] == "apr" and doc["version"] == 1 and doc["data"] == "inline"


def test_pth_output_loads_with_weights_only(tiny_model_dir, tmp_path):
    import torch

    convert_model(str(tiny_model_dir("gpt2")), "pth", tmp_path / "g.pth")
    state = torch.load(tmp_path / "g.pth", weights_only=True)
    source = safetensors_bytes(tiny_model_dir("gpt2") / "model.safetensors")
    assert set(state) == set(source)
    assert all(isinstance(t, torch.Tensor) for t in state.values())


# --------------------------------------------------------------------------- casts


@pytest.mark.parametrize("quantize,dtype", [("f16", "F16"), ("bf16", "BF16")])
def test_cast_writes_the_rounded_values(tiny_model_dir, tmp_path, quantize, dtype):
    import torch
    from safetensors.torch import load_file

    source = tiny_model_dir("llama") / "model.safetensors"
    result = convert_model(str(source), "safetensors", tmp_path / "c.safetensors", quantize)

    assert result.quantize == quantize and not result.verification["lossless"]
    torch_dtype = {"F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    cast, original = load_file(tmp_path / "c.safetensors"), load_file(source)
    assert {t.dtype for t in read_header(tmp_path / "c.safetensors").tensors} == {dtype}
    for name, tensor in original.items():
        assert torch.equal(cast[name], tensor.to(torch_dtype)), name
    assert result.file_size_bytes < source.stat().st_size * 0.55


def test_cast_folder_loads_in_transformers_in_that_dtype(tiny_model_dir, tmp_path):
    import torch
    import transformers

    out = tmp_path / "bf16"
    convert_model(str(tiny_model_dir("llama")), "safetensors", out, "bf16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"))
    ids = torch.tensor([[1, 5, 9, 200]])
    assert model.dtype == torch.bfloat16
    assert torch.allclose(logits(model, ids).float(), logits(reference, ids), atol=0.1)


# --------------------------------------------------------------------------- folders, shards


def test_sharded_input_becomes_one_file(tmp_path):
    import torch
    import transformers

    from conftest import build_tiny_model

    sharded = tmp_path / "sharded"
    build_tiny_model("mistral").save_pretrained(sharded, max_shard_size="50KB")
    shards = sorted(sharded.glob("*.safetensors"))
    assert len(shards) > 2 and (sharded / "model.safetensors.index.json").exists()

    single = convert_model(str(sharded), "safetensors", tmp_path / "one.safetensors")
    assert safetensors_bytes(tmp_path / "one.safetensors") == safetensors_bytes(sharded)
    assert single.files == [str(tmp_path / "one.safetensors")]

    convert_model(str(sharded), "safetensors", tmp_path / "folder")
    assert folder_listing(tmp_path / "folder") == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    original = transformers.AutoModelForCausalLM.from_pretrained(sharded)
    converted = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "folder")
    assert torch.equal(logits(converted, ids), logits(original, ids))


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_folders_from_pth_and_apr_load_in_transformers(arch, tiny_model_dir, tmp_path):
    import torch
    import transformers

    from conftest import MODEL_CLASSES

    source = tiny_model_dir(arch)
    cls = getattr(transformers, MODEL_CLASSES[arch])
    convert_model(str(source), "apr", tmp_path / "m.apr")
    convert_model(str(tmp_path / "m.apr"), "safetensors", tmp_path / "from_apr")  # config from APR
    ids = torch.tensor([[2, 7, 1, 8, 2]])
    original = cls.from_pretrained(source)
    converted = cls.from_pretrained(tmp_path / "from_apr")
    assert torch.equal(logits(converted, ids), logits(original, ids))


def test_overwriting_an_output_replaces_it_whole(tiny_model_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    convert_model(str(tiny_model_dir("llama")), "safetensors", out, "f16")
    convert_model(str(tiny_model_dir("llama")), "safetensors", out)
    assert {t.dtype for t in read_header(out).tensors} == {"F32"}
    assert folder_listing(tmp_path) == ["m.safetensors"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "to,quantize,hint_word",
    [
        ("onnx", None, "safetensors"),
        ("pth", "q4_0", "gguf"),
        ("apr", "q8_0", "gguf"),
        ("safetensors", "int3", "bf16"),
    ],
)
def test_bad_requests_are_refused_with_a_hint(tiny_model_dir, tmp_path, to, quantize, hint_word):
    with pytest.raises(InvalidInputError) as err:
        convert_model(str(tiny_model_dir("llama")), to, tmp_path / "out.pth", quantize)
    assert hint_word in err.value.hint and err.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_the_input(tiny_model_dir, tmp_path):
    source = Path(shutil.copytree(tiny_model_dir("gpt2"), tmp_path / "src"))
    convert_model(str(source), "pth", tmp_path / "g.pth")
    before = file_digest(tmp_path / "g.pth")
    cases = [
        (tmp_path / "g.pth", "pth", tmp_path / "g.pth"),  # the same file
        (str(source), "safetensors", source / "model.safetensors"),
        (str(source), "safetensors", source),  # a folder output that would replace the input folder
        (str(source), "safetensors", source.parent),
    ]
    for ref, to, output in cases:
        with pytest.raises(InvalidInputError, match="overwrite the input"):
            convert_model(str(ref), to, output)
    assert file_digest(tmp_path / "g.pth") == before
    inside = convert_model(str(source), "pth", source / "beside.pth")  # next to the input is fine
    assert inside.verified and (source / "model.safetensors").exists()


def test_unwritable_or_misnamed_outputs_are_refused(tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    source = str(tiny_model_dir("llama"))
    with pytest.raises(InvalidInputError, match="not a writable folder") as err:
        convert_model(source, "pth", blocker / "out.pth")
    assert err.value.hint
    with pytest.raises(InvalidInputError, match=r"should end in \.apr"):
        convert_model(source, "apr", tmp_path / "out.json")
    with pytest.raises(InvalidInputError, match="is a folder"):
        convert_model(source, "pth", tmp_path)


def test_an_output_folder_with_other_files_is_not_replaced(tiny_model_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="notes.txt") as err:
        convert_model(str(tiny_model_dir("llama")), "safetensors", tmp_path / "out")
    assert "new or empty folder" in err.value.hint
    assert folder_listing(tmp_path / "out") == ["notes.txt"]


def test_failure_midway_leaves_nothing_behind(tiny_model_dir, tmp_path):
    """A corrupt last tensor fails the conversion after earlier tensors were written."""
    convert_model(str(tiny_model_dir("llama")), "apr", tmp_path / "m.apr", apr_data="sidecar")
    last = read_apr(tmp_path / "m.apr").tensors[-1]
    with open(tmp_path / "m.apr.bin", "r+b") as f:
        f.seek(last.offset)
        first = f.read(1)
        f.seek(last.offset)
        f.write(bytes([first[0] ^ 0xFF]))
    before = folder_listing(tmp_path)
    for to, output in [
        ("safetensors", "x.safetensors"),
        ("safetensors", "hf"),
        ("pth", "x.pth"),
        ("apr", "x.apr"),
    ]:
        with pytest.raises(CorruptFileError, match="sha256") as err:
            convert_model(str(tmp_path / "m.apr"), to, tmp_path / output, apr_data="sidecar")
        assert err.value.hint
        assert folder_listing(tmp_path) == before  # no output, no temp files


def _write_apr_doc(path: Path, **changes) -> Path:
    doc = {
        "format": "apr",
        "version": 1,
        "data": "inline",
        "metadata": {},
        "config": None,
        "tensors": [],
    }
    doc.update(changes)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "text_or_changes,message",
    [
        ("{not json", "not a JSON document"),
        ({"format": "gguf"}, "not an APR document"),
        ({"tensors": {}}, "'tensors'"),
        ({"data": "cloud"}, "'data'"),
        (
            {
                "tensors": [
                    {
                        "name": "w",
                        "dtype": "F33",
                        "shape": [2],
                        "nbytes": 8,
                        "sha256": "",
                        "b64": "",
                    }
                ]
            },
            "unknown dtype",
        ),
        (
            {
                "tensors": [
                    {
                        "name": "w",
                        "dtype": "F32",
                        "shape": [2],
                        "nbytes": 9,
                        "sha256": "",
                        "b64": "",
                    }
                ]
            },
            "claims 9 bytes",
        ),
        (
            {
                "tensors": [
                    {
                        "name": "w",
                        "dtype": "F32",
                        "shape": [-1],
                        "nbytes": 4,
                        "sha256": "",
                        "b64": "",
                    }
                ]
            },
            "invalid shape",
        ),
        ({"data": "sidecar", "sidecar": "../etc/passwd"}, "not a plain file name"),
        ({"data": "sidecar", "sidecar": "gone.bin"}, "missing"),
    ],
)
def test_malformed_apr_is_a_corrupt_file_error(tmp_path, text_or_changes, message):
    path = tmp_path / "bad.apr"
    if isinstance(text_or_changes, str):
        path.write_text(text_or_changes)
    else:
        _write_apr_doc(path, **text_or_changes)
    with pytest.raises(CorruptFileError, match=message) as err:
        read_apr(path)
    assert err.value.hint


def test_apr_data_errors_surface_on_read(tmp_path):
    good_b64 = "AACAPwAAAEA="  # float32 [1.0, 2.0]
    entry = {
        "name": "w",
        "dtype": "F32",
        "shape": [2],
        "nbytes": 8,
        "sha256": "0" * 64,
        "b64": good_b64,
    }
    apr = read_apr(_write_apr_doc(tmp_path / "hash.apr", tensors=[entry]))
    with pytest.raises(CorruptFileError, match="sha256"):
        apr.read("w")
    sidecar_entry = {k: v for k, v in entry.items() if k != "b64"} | {"offset": 4}
    (tmp_path / "d.bin").write_bytes(b"\0" * 8)
    doc = _write_apr_doc(
        tmp_path / "off.apr", data="sidecar", sidecar="d.bin", tensors=[sidecar_entry]
    )
    with pytest.raises(CorruptFileError, match="outside the data file"):
        read_apr(doc)
    with pytest.raises(UnsupportedError, match="version"):
        read_apr(_write_apr_doc(tmp_path / "v2.apr", version=2))


# --------------------------------------------------------------------------- GGUF, imports


def test_to_gguf_goes_through_the_gguf_writer(tiny_model_dir, tmp_path):
    pytest.importorskip("entrenar_tui.core.convert.gguf_writer")
    result = convert_model(str(tiny_model_dir("llama")), "gguf", tmp_path / "m.gguf")
    assert result.format == "gguf" and result.tensors > 0 and result.verified
    assert result.quantize == "f16" and result.verification["types"]["F16"] > 0
    assert Path(result.output).stat().st_size == result.file_size_bytes
    assert Model.open(str(tmp_path / "m.gguf")).kind == "gguf"


def test_gguf_source_comes_back_as_the_same_transformers_model(tiny_model_dir, tmp_path):
    """tiny llama -> f32 GGUF (q/k permuted by the writer) -> HF folder: identical logits."""
    pytest.importorskip("entrenar_tui.core.convert.gguf_writer")
    import torch
    import transformers

    source = tiny_model_dir("llama")
    convert_model(str(source), "gguf", tmp_path / "m.gguf", "f32")
    result = convert_model(str(tmp_path / "m.gguf"), "safetensors", tmp_path / "back")
    assert result.verified and "dequantised to float32" in result.notes[0]
    ids = torch.tensor([[1, 2, 30, 4, 250]])
    original = transformers.AutoModelForCausalLM.from_pretrained(source)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    assert torch.allclose(logits(back, ids), logits(original, ids), atol=1e-5)


def test_importing_convert_loads_no_torch():
    code = "import sys, entrenar_tui.core.convert.dispatch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


REFERENCE_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(1)
    path, name, out = sys.argv[1:]
    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=name, dtype=torch.float32)
    with torch.no_grad():
        np.save(out, model(input_ids=torch.tensor([[1, 504, 3000, 17, 42]])).logits.numpy())
    """
)


@pytest.mark.slow
def test_smollm2_gguf_becomes_a_folder_transformers_loads(tmp_path):
    """Reference logits come from transformers' own GGUF load, run beside the conversion."""
    import torch
    import transformers

    gguf = Model.open("smollm2-135m").source.path
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    reference = subprocess.Popen(
        [
            sys.executable,
            "-c",
            REFERENCE_SCRIPT,
            str(gguf.parent),
            gguf.name,
            str(tmp_path / "ref.npy"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        result = convert_model("smollm2-135m", "safetensors", tmp_path / "smol")
    finally:
        _, stderr = reference.communicate(timeout=300)
    assert reference.returncode == 0, stderr.decode()[-2000:]
    assert result.verified and result.verification["aliases_dropped"] == ["lm_head.weight"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(
        folder_listing(tmp_path / "smol")
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "smol")
        ours = logits(model, torch.tensor([[1, 504, 3000, 17, 42]])).numpy()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(ours, np.load(tmp_path / "ref.npy"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "smol")
    assert tokenizer.decode(tokenizer("Hello world").input_ids).endswith("Hello world")


def test_errors_are_entrenar_errors(tmp_path):
    with pytest.raises(EntrenarError):
        convert_model(str(tmp_path / "missing"), "pth", tmp_path / "o.pth")
