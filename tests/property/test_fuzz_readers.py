"""Every reader turns malformed input into the project's own error, within bounded memory.

Regression tests for each crash class benchmarks/fuzz_readers.py found (one input each), and
hypothesis fuzzing of each reader with byte and value mutations of real seed files. Anything
other than an EntrenarError (or a clean result) fails the test: that is what a user would see
as "a bug in entrenar" with a traceback.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrenar_tui.core.convert.apr import read_apr
from entrenar_tui.core.distill.config import apply_overrides, load_config, load_yaml
from entrenar_tui.core.errors import (
    ConfigError,
    CorruptFileError,
    EntrenarError,
    UnsupportedError,
)
from entrenar_tui.core.inspect.info import model_info
from entrenar_tui.core.inspect.validate import validate_model
from entrenar_tui.core.lora.adapter import read_adapter
from entrenar_tui.core.memory import estimate_for_model
from entrenar_tui.core.models import gguf_format
from entrenar_tui.core.models.handle import Model

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
DEMO = "entrenar_tui/examples/demo.yaml"
ODD_INTS = [0, 1, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1]


def commands(ref) -> None:
    """What `inspect info`, `inspect validate` and `inspect memory` run on a model."""
    gguf_format._open_cached.cache_clear()
    for run in (
        lambda: model_info(str(ref)),
        lambda: validate_model(str(ref)),
        lambda: estimate_for_model(str(ref), batch_size=1, sequence_length=8),
    ):
        try:
            run()
        except EntrenarError as exc:
            assert exc.hint and exc.message


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


# ------------------------------------------------------------------------------ seeds


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    import gguf

    path = tmp_path_factory.mktemp("gguf") / "m.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("model-name")
    writer.add_block_count(1)
    writer.add_embedding_length(32)
    writer.add_head_count(4)
    writer.add_token_list([f"t{i}" for i in range(8)])
    writer.add_tensor("token_embd.weight", np.ones((8, 32), dtype=np.float32))
    q8 = gguf.quants.quantize(np.ones((4, 32), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_gguf(path, tensors: dict, endian=None, **kv):
    import gguf

    writer = gguf.GGUFWriter(path, "llama", endianess=endian or gguf.GGUFEndian.LITTLE)
    for key, (value, vtype) in kv.items():
        writer.add_key_value(key, value, vtype)
    for name, (array, raw_dtype) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    from conftest import build_tiny_model

    folder = tmp_path_factory.mktemp("adapter")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    get_peft_model(build_tiny_model("llama"), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def apr_file(tiny_model_dir, tmp_path_factory):
    from entrenar_tui.core.convert.dispatch import convert_model

    path = tmp_path_factory.mktemp("apr") / "m.apr"
    convert_model(tiny_model_dir("llama"), "apr", path, apr_data="inline")
    return path


# ------------------------------------------------------------------ safetensors / config.json


@pytest.mark.parametrize("value", ["64", [64], 2**64, 64.0, True, None, {"a": 1}])
def test_config_json_values_of_the_wrong_type_never_reach_arithmetic(
    tiny_model_dir, tmp_path, value
):
    folder = tmp_path / "m"
    folder.mkdir()
    source = tiny_model_dir("llama")
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    config = json.loads((source / "config.json").read_text())
    config.update(hidden_size=value, num_hidden_layers=value, num_attention_heads=value)
    (folder / "config.json").write_text(json.dumps(config))
    info = model_info(str(folder))
    assert info.hidden_size is None or info.hidden_size == 64
    commands(folder)


def test_a_2_to_the_64_layer_count_is_not_a_set_of_2_to_the_64_indices(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    source = tiny_model_dir("llama")
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2**64}))
    started = time.perf_counter()
    report = validate_model(str(folder))
    assert time.perf_counter() - started < 5
    assert report.kind == "safetensors"


def test_a_2_to_the_40_layer_count_lists_missing_layers_without_building_them(
    tiny_model_dir, tmp_path
):
    folder = tmp_path / "m"
    folder.mkdir()
    source = tiny_model_dir("llama")
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2**40}))
    started = time.perf_counter()
    report = validate_model(str(folder))
    assert time.perf_counter() - started < 5
    assert any(p.code == "layer_count" and str(2**40) in p.message for p in report.problems)


@pytest.mark.parametrize("shape", [[1] * 65, [2**63, 0], [2**64 - 1, 0]])
def test_shapes_numpy_cannot_hold_are_refused_when_read(tmp_path, shape):
    path = tmp_path / "m.safetensors"
    path.write_bytes(
        safetensors_bytes(
            {
                "w": {
                    "dtype": "F32",
                    "shape": shape,
                    "data_offsets": [0, 4 if 0 not in shape else 0],
                }
            },
            b"\0" * (0 if 0 in shape else 4),
        )
    )
    model = Model.open(path)
    with pytest.raises(UnsupportedError, match="numpy cannot hold"):
        model.read(model.tensors[0])
    commands(path)


@pytest.mark.parametrize(
    "text", ["9" * 5000, "[" * 100_000 + "]" * 100_000, '{"a": [1'], ids=["digits", "deep", "cut"]
)
def test_unreadable_config_json_is_a_corrupt_file(tiny_model_dir, tmp_path, text):
    folder = tmp_path / "m"
    folder.mkdir()
    source = tiny_model_dir("llama")
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    (folder / "config.json").write_text(text)
    with pytest.raises(CorruptFileError, match="config.json"):
        Model.open(folder)


# ------------------------------------------------------------------------------------ GGUF


def test_a_gguf_array_claiming_2_to_the_63_items_is_corrupt_not_a_hang(gguf_file, tmp_path):
    blob = bytearray(gguf_file.read_bytes())
    at = blob.index(b"tokenizer.ggml.tokens") + len(b"tokenizer.ggml.tokens")
    # value type (u32 ARRAY=9), item type (u32 STRING=8), then the u64 item count
    assert struct.unpack_from("<II", blob, at) == (9, 8)
    struct.pack_into("<Q", blob, at + 8, 2**63)
    path = tmp_path / "bomb.gguf"
    path.write_bytes(bytes(blob))
    gguf_format._open_cached.cache_clear()
    started = time.perf_counter()
    with pytest.raises(CorruptFileError, match="past the end"):
        gguf_format.open_gguf(path)
    assert time.perf_counter() - started < 5


def test_invalid_utf8_in_a_gguf_string_is_corrupt(gguf_file, tmp_path):
    blob = bytearray(gguf_file.read_bytes())
    at = blob.index(b"model-name")
    blob[at : at + 2] = b"\xff\xfe"
    path = tmp_path / "utf8.gguf"
    path.write_bytes(bytes(blob))
    gguf_format._open_cached.cache_clear()
    with pytest.raises(CorruptFileError):
        gguf_format.open_gguf(path)
    commands(path)


@pytest.mark.parametrize(
    "name, dtype", [("I8", np.int8), ("I32", np.int32), ("I64", np.int64), ("F64", np.float64)]
)
def test_plain_gguf_tensor_types_read_as_their_values(tmp_path, name, dtype):
    import gguf

    values = np.arange(32, dtype=dtype).reshape(1, 32)
    path = write_gguf(tmp_path / "m.gguf", {"t": (values, gguf.GGMLQuantizationType[name])})
    gguf_format._open_cached.cache_clear()
    model = Model.open(path)
    assert model.tensors[0].dtype == name
    np.testing.assert_array_equal(model.read(model.tensors[0]), values)
    commands(path)


def test_a_big_endian_gguf_reads_the_same_values(tmp_path):
    import gguf

    values = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    path = write_gguf(tmp_path / "be.gguf", {"t": (values, None)}, endian=gguf.GGUFEndian.BIG)
    assert path.read_bytes()[4:8] == struct.pack(">I", 3)  # version 3, written big-endian
    gguf_format._open_cached.cache_clear()
    model = Model.open(path)
    np.testing.assert_array_equal(model.read(model.tensors[0]), values)
    assert not validate_model(str(path)).errors


def test_a_gguf_tensor_type_without_a_reader_is_unsupported(gguf_file, tmp_path):
    import gguf

    blob = bytearray(gguf_file.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = blob.index(name) + len(name)
    n_dims = struct.unpack_from("<I", blob, at)[0]
    type_at = at + 4 + 8 * n_dims
    assert struct.unpack_from("<I", blob, type_at)[0] == gguf.GGMLQuantizationType.Q8_0
    struct.pack_into("<I", blob, type_at, gguf.GGMLQuantizationType.Q8_1)
    path = tmp_path / "q81.gguf"
    path.write_bytes(bytes(blob))
    gguf_format._open_cached.cache_clear()
    with pytest.raises(UnsupportedError, match="Q8_1"):
        gguf_format.open_gguf(path)


def test_an_empty_quantised_gguf_tensor_reads_as_empty(tmp_path):
    import gguf

    Q8 = gguf.GGMLQuantizationType.Q8_0
    empty = np.zeros((0, 34), dtype=np.uint8)  # 0 rows of one Q8_0 block (32 values)
    path = write_gguf(tmp_path / "m.gguf", {"t": (empty, Q8)})
    gguf_format._open_cached.cache_clear()
    model = Model.open(path)
    assert model.read(model.tensors[0]).shape == (0, 32)


def test_gguf_metadata_of_the_wrong_type_never_reaches_arithmetic(tmp_path):
    import gguf

    V = gguf.GGUFValueType
    path = write_gguf(
        tmp_path / "m.gguf",
        {"token_embd.weight": (np.ones((8, 32), dtype=np.float32), None)},
        **{
            "llama.embedding_length": ("32", V.STRING),
            "llama.attention.head_count": (0, V.UINT32),
            "llama.block_count": (2**64 - 1, V.UINT64),
        },
    )
    gguf_format._open_cached.cache_clear()
    info = model_info(str(path))
    assert info.hidden_size is None and info.layers is None
    commands(path)


# ---------------------------------------------------------------------------------- YAML

BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [x, x, x, x, x, x, x, x, x]\n" + BILLION_LAUGHS + "training: *i\n",
        "teacher: " + "[" * 5000 + "]" * 5000,
        "seed: " + "9" * 4400,
        "seed: !!bool 'x'",
        "seed: !!timestamp 'x'",
        "seed: !!python/object:os.system 'true'",
        "teacher: {model_id: '\\ud800'}",
    ],
    ids=[
        "billion-laughs",
        "deep",
        "digits",
        "bool-tag",
        "timestamp-tag",
        "python-tag",
        "surrogate",
    ],
)
def test_hostile_yaml_is_a_config_error_quickly(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert time.perf_counter() - started < 2
    assert caught.value.hint


def test_invalid_utf8_in_a_config_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"seed: \xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_yaml(path)


@pytest.mark.parametrize(
    "value",
    ["[1, 2", "{a: 1", "!!bool 'x'", "'", "*a", "9" * 5000, "\t1"],
    ids=["list", "map", "bool-tag", "quote", "alias", "digits", "tab"],
)
def test_every_yaml_error_in_a_set_value_is_a_config_error(value):
    with pytest.raises(ConfigError, match="--set training.max_steps"):
        apply_overrides({}, [f"training.max_steps={value}"])


def test_a_few_anchors_still_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: &lr 0.5\nb: [*lr, *lr]\n")
    assert load_yaml(path) == {"a": 0.5, "b": [0.5, 0.5]}


# ------------------------------------------------------------------------ LoRA adapters


@pytest.mark.parametrize(
    "field, value",
    [
        ("r", "8"),
        ("r", [4]),
        ("r", 2**64),
        ("lora_alpha", [8]),
        ("lora_alpha", "x"),
        ("rank_pattern", {"(": 2}),
        ("rank_pattern", {"v_proj": "2"}),
        ("alpha_pattern", [1]),
        ("alpha_pattern", {"q_proj": None}),
        ("target_modules", 3),
        ("modules_to_save", True),
        ("modules_to_save", {"a": 1}),
    ],
)
def test_adapter_config_fields_of_the_wrong_type_are_corrupt(adapter_dir, tmp_path, field, value):
    folder = tmp_path / "a"
    folder.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (folder / name).write_bytes((adapter_dir / name).read_bytes())
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(CorruptFileError, match=field):
        read_adapter(folder)


def test_adapter_modules_named_with_words_and_numbers_at_one_depth_sort(adapter_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((adapter_dir / "adapter_config.json").read_bytes())
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    name = next(n for n in tensors if n.endswith("lora_A.weight"))
    for a_or_b in ("lora_A", "lora_B"):
        tensors[f"x.1.{a_or_b}.weight"] = tensors[name.replace("lora_A", a_or_b)]
        tensors[f"x.y.{a_or_b}.weight"] = tensors[name.replace("lora_A", a_or_b)]
    save_file(tensors, folder / "adapter_model.safetensors")
    modules = list(read_adapter(folder).modules)
    assert modules.index("x.1") < modules.index("x.y")


# ------------------------------------------------------------------------------------ APR


@pytest.mark.parametrize(
    "key, value",
    [("dtype", {"F32": 1}), ("dtype", ["F32"]), ("shape", [1] * 70), ("shape", [2**63, 2])],
)
def test_apr_entries_of_the_wrong_type_are_corrupt(apr_file, tmp_path, key, value):
    doc = json.loads(apr_file.read_text())
    doc["tensors"][0][key] = value
    path = tmp_path / "m.apr"
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptFileError):
        read_apr(path)


@pytest.mark.parametrize("text", ["9" * 5000, "[" * 100_000], ids=["digits", "deep"])
def test_unparseable_apr_json_is_corrupt(tmp_path, text):
    path = tmp_path / "m.apr"
    path.write_text(text)
    with pytest.raises(CorruptFileError):
        read_apr(path)


# ------------------------------------------------------------------------------------ pth


@pytest.mark.parametrize(
    "tensor, match",
    [
        (lambda: torch.empty(4, 4, device="meta"), "meta"),
        (lambda: torch.eye(4).to_sparse(), "sparse"),
        (lambda: torch.zeros(1).expand(1 << 20, 1 << 20), "stride 0"),
    ],
    ids=["meta", "sparse", "stride0-4TiB"],
)
def test_pth_tensors_without_their_bytes_are_refused(tmp_path, tensor, match):
    path = tmp_path / "m.pth"
    torch.save({"w": tensor()}, path)
    assert path.stat().st_size < 4096
    with pytest.raises(UnsupportedError, match=match):
        assert Model.open(path).tensors is None
    report = validate_model(str(path))  # reported as a problem, not raised
    assert report.errors == 1


def test_a_pth_zip_record_claiming_4_gib_is_corrupt_before_torch_allocates_it(tmp_path):
    import zipfile

    path = tmp_path / "m.pth"
    torch.save({"w": torch.ones(2)}, path)
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        record = next(r for r in archive.infolist() if r.filename.endswith("/version"))
    name = record.filename.encode()
    central = blob.rindex(b"PK\x01\x02", 0, blob.rindex(name))  # its central directory entry
    struct.pack_into("<I", blob, central + 24, 0xFFFFFFFF)  # uncompressed size
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptFileError, match="claims 4294967295 bytes"):
        assert Model.open(path).tensors is None


def test_a_saved_parameter_that_requires_grad_reads(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"w": torch.nn.Parameter(torch.ones(4, 4))}, path)
    model = Model.open(path)
    np.testing.assert_array_equal(model.read(model.tensors[0]), np.ones((4, 4), np.float32))
    assert validate_model(str(path)).ok


# ---------------------------------------------------------------------------- hypothesis

edits = st.lists(
    st.tuples(
        st.floats(0, 1),
        st.one_of(
            st.sampled_from(ODD_INTS).map(lambda v: struct.pack("<Q", v)),
            st.binary(min_size=1, max_size=8),
        ),
        st.booleans(),
    ),
    min_size=1,
    max_size=4,
)


def mutate(blob: bytes, changes, hot: int) -> bytes:
    buf = bytearray(blob)
    for where, chunk, truncate in changes:
        at = int(where * min(hot, len(buf)))
        if truncate and where < 0.1:
            del buf[at:]
        else:
            buf[at : at + len(chunk)] = chunk
    return bytes(buf)


@FUZZ
@given(changes=edits)
def test_mutated_safetensors_folder(tiny_model_dir, tmp_path_factory, changes):
    folder = tmp_path_factory.mktemp("st")
    source = tiny_model_dir("llama")
    raw = (source / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    (folder / "model.safetensors").write_bytes(mutate(raw, changes, 8 + n))
    (folder / "config.json").write_bytes((source / "config.json").read_bytes())
    commands(folder)


@FUZZ
@given(changes=edits)
def test_mutated_gguf(gguf_file, tmp_path_factory, changes):
    path = tmp_path_factory.mktemp("gguf") / "m.gguf"
    path.write_bytes(mutate(gguf_file.read_bytes(), changes, 1024))
    commands(path)


YAML_VALUES = st.one_of(
    st.sampled_from(
        ["!!bool 'x'", "[1, 2", "*a", "&a [1]", "9" * 4400, "{a: 1", "'", "~", "1e400"]
    ),
    st.text(max_size=12),
    st.integers().map(str),
)


@FUZZ
@given(line=st.integers(0, 40), value=YAML_VALUES, overrides=st.lists(YAML_VALUES, max_size=2))
def test_mutated_distill_config_and_set(tmp_path_factory, line, value, overrides):
    lines = Path(DEMO).read_text().splitlines()
    key = lines[line % len(lines)].partition(":")[0]
    lines[line % len(lines)] = f"{key}: {value}"
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path, [f"training.max_steps={v}" for v in overrides])
    except ConfigError as exc:
        assert exc.hint
        return
    assert config.config_hash


@FUZZ
@given(
    field=st.sampled_from(["r", "lora_alpha", "rank_pattern", "alpha_pattern", "target_modules"]),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=6),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    ),
)
def test_mutated_adapter_config(adapter_dir, tmp_path_factory, field, value):
    folder = tmp_path_factory.mktemp("ad")
    (folder / "adapter_model.safetensors").write_bytes(
        (adapter_dir / "adapter_model.safetensors").read_bytes()
    )
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, field: value}))
    try:
        adapter = read_adapter(folder)
    except EntrenarError as exc:
        assert exc.hint
        return
    assert all(m.scaling > 0 or m.scaling <= 0 for m in adapter.modules.values())


@FUZZ
@given(changes=edits)
def test_mutated_apr(apr_file, tmp_path_factory, changes):
    path = tmp_path_factory.mktemp("apr") / "m.apr"
    path.write_bytes(mutate(apr_file.read_bytes(), changes, 4096))
    commands(path)


@FUZZ
@given(changes=edits)
def test_mutated_pth(tmp_path_factory, changes):
    folder = tmp_path_factory.mktemp("pth")
    torch.save({"w": torch.ones(4, 8), "b": torch.zeros(8)}, folder / "seed.pth")
    path = folder / "m.pth"
    path.write_bytes(mutate((folder / "seed.pth").read_bytes(), changes, 2048))
    commands(path)
