"""Seed files for benchmarks/fuzz_readers.py, written once into a folder and reused.

Every seed is a real, readable file (each reader accepts it unmutated), small enough that one
fuzz input costs milliseconds: packaged models' headers with their data shrunk, tiny models
written by transformers and PEFT, files written by `entrenar convert`, crafted pth files.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

SEED_VERSION = "3"
TINY_LLAMA = dict(
    model_type="llama",
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=False,
)


def _tiny_llama(folder: Path):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**TINY_LLAMA)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


def _minilm_shrunk(target: Path) -> None:
    """minilm-l6's real header and config.json, every width divided by 96 (data is random)."""
    import numpy as np

    from entrenar_tui.core.models.resolve import packaged_path
    from entrenar_tui.core.models.safetensors_format import read_header

    source = packaged_path("minilm-l6")
    header = read_header(source / "model.safetensors")
    entries, offset, blobs = {}, 0, []
    rng = np.random.default_rng(0)
    for t in sorted(header.tensors, key=lambda t: t.offset):
        shape = [max(1, d // 96) for d in t.shape]
        count = int(np.prod(shape)) if shape else 1
        data = rng.standard_normal(count).astype(np.float32).tobytes()
        entries[t.name] = {
            "dtype": "F32",
            "shape": shape,
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    entries["__metadata__"] = {"format": "pt"}
    text = json.dumps(entries).encode()
    target.mkdir(parents=True, exist_ok=True)
    (target / "model.safetensors").write_bytes(
        struct.pack("<Q", len(text)) + text + b"".join(blobs)
    )
    config = json.loads((source / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "vocab_size", "max_position_embeddings"):
        config[key] = max(1, config[key] // 96)
    config["num_attention_heads"] = 2
    (target / "config.json").write_text(json.dumps(config, indent=1))


def _gguf_files(target: Path) -> None:
    """Tiny GGUFs carrying smollm2-135m's real scalar metadata (and 64 of its tokens)."""
    import gguf
    import numpy as np

    from entrenar_tui.core.models.resolve import packaged_path

    real = gguf.GGUFReader(packaged_path("smollm2-135m"))
    rng = np.random.default_rng(0)

    def write(name: str, types: list, endian=gguf.GGUFEndian.LITTLE) -> None:
        writer = gguf.GGUFWriter(target / name, "llama", endianess=endian)
        for key, fld in real.fields.items():
            if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
                continue
            value = fld.contents()
            if isinstance(value, list):
                value = value[:64]
                if not value:
                    continue
            vtype = fld.types[0]
            sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, value, vtype, sub_type=sub)
        writer.add_key_value("llama.block_count", 1, gguf.GGUFValueType.UINT32)
        writer.add_key_value("llama.embedding_length", 32, gguf.GGUFValueType.UINT32)
        writer.add_key_value("llama.attention.head_count", 4, gguf.GGUFValueType.UINT32)
        for index, qtype in enumerate(types):
            values = rng.standard_normal((4, 32)).astype(np.float32)
            if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                data = values.astype(np.float16 if qtype.name == "F16" else np.float32)
                writer.add_tensor(f"blk.0.t{index}.weight", data)
            elif qtype.name in ("I8", "I32", "I64", "F64", "I16"):
                dtype = {
                    "I8": np.int8,
                    "I16": np.int16,
                    "I32": np.int32,
                    "I64": np.int64,
                    "F64": np.float64,
                }[qtype.name]
                writer.add_tensor(f"blk.0.t{index}.weight", values.astype(dtype), raw_dtype=qtype)
            else:
                data = gguf.quants.quantize(values, qtype)
                writer.add_tensor(f"blk.0.t{index}.weight", data, raw_dtype=qtype)
        writer.add_tensor("token_embd.weight", rng.standard_normal((64, 32)).astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    Q = gguf.GGMLQuantizationType
    write("smollm2-meta-quant.gguf", [Q.F32, Q.F16, Q.Q8_0, Q.Q4_0, Q.Q4_1])
    write("ints-f64.gguf", [Q.I8, Q.I16, Q.I32, Q.I64, Q.F64])
    write("big-endian.gguf", [Q.F32, Q.F16], endian=gguf.GGUFEndian.BIG)
    with open(packaged_path("smollm2-135m"), "rb") as f:
        (target / "smollm2-prefix.gguf").write_bytes(f.read(1 << 18))  # truncated real header


def _adapter(base_model, target: Path) -> None:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        rank_pattern={"v_proj": 2},
        alpha_pattern={"layers\\.1\\..*q_proj": 16},
        lora_dropout=0.0,
    )
    peft_model = get_peft_model(base_model, config)
    peft_model.save_pretrained(target)


def _pth_files(target: Path, model) -> None:
    import torch

    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(state, target / "tiny-llama.pth")
    small = {"w": torch.randn(4, 4), "b": torch.zeros(4)}
    torch.save({"state_dict": small}, target / "nested.pth")
    torch.save({"w": torch.empty(4, 4, device="meta")}, target / "meta.pth")
    torch.save({"w": torch.eye(4).to_sparse()}, target / "sparse.pth")
    torch.save({"w": torch.nn.Parameter(torch.randn(4, 4))}, target / "requires-grad.pth")
    huge = torch.zeros(1).expand(1 << 20, 1 << 20)  # 1 TiB of float32 from one stored value
    torch.save({"w": huge}, target / "stride0.pth")


def _run_dir(target: Path) -> None:
    from entrenar_tui.core.distill.config import load_yaml

    target.mkdir(parents=True, exist_ok=True)
    demo = Path(__file__).resolve().parents[1] / "entrenar_tui" / "examples" / "demo.yaml"
    import yaml

    (target / "config.yaml").write_text(yaml.safe_dump(load_yaml(demo), sort_keys=False))
    status = {
        "state": "running",
        "pid": 999_999_999,
        "host": "fuzz-host",
        "step": 20,
        "total_steps": 100,
        "started_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:01:00+00:00",
        "error": None,
    }
    (target / "status.json").write_text(json.dumps(status))
    (target / "run.json").write_text(
        json.dumps({"command": ["distill", "run"], "config_hash": "ab"})
    )
    lines = [json.dumps({"step": s, "loss": 2.0 - s / 100, "lr": 3e-4}) for s in range(0, 30, 5)]
    (target / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (target / "events.log").write_text("2026-01-01T00:00:00 started\n")
    checkpoint = target / "checkpoints" / "step-000020"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer.pt").write_bytes(b"")


def build(folder: Path) -> None:
    """Write the seeds unless this version of them is already there."""
    stamp = folder / "VERSION"
    if stamp.exists() and stamp.read_text() == SEED_VERSION:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from entrenar_tui.core.convert.dispatch import convert_model

    llama_dir = folder / "tiny-llama"
    model = _tiny_llama(llama_dir)
    _minilm_shrunk(folder / "minilm-shrunk")
    (folder / "gguf").mkdir()
    _gguf_files(folder / "gguf")
    convert_model(llama_dir, "gguf", folder / "gguf" / "tiny-llama-q8.gguf", quantize="q8_0")
    _adapter(model, folder / "adapter")
    (folder / "apr").mkdir()
    convert_model(llama_dir, "apr", folder / "apr" / "tiny-llama.apr", apr_data="inline")
    convert_model(llama_dir, "apr", folder / "apr-sidecar" / "tiny-llama.apr", apr_data="sidecar")
    (folder / "pth").mkdir()
    _pth_files(folder / "pth", model)
    (folder / "configs").mkdir()
    examples = Path(__file__).resolve().parents[1] / "entrenar_tui" / "examples"
    for yaml_file in examples.glob("*.yaml"):
        shutil.copy(yaml_file, folder / "configs" / yaml_file.name)
    _run_dir(folder / "run")
    stamp.write_text(SEED_VERSION)


def load(folder: Path) -> dict:
    """Seed name -> path, grouped by reader."""
    return {
        "safetensors": [folder / "tiny-llama", folder / "minilm-shrunk"],
        "gguf": sorted((folder / "gguf").glob("*.gguf")),
        "adapter": [folder / "adapter"],
        "apr": [folder / "apr" / "tiny-llama.apr", folder / "apr-sidecar"],
        "pth": sorted((folder / "pth").glob("*.pth")),
        "config": sorted((folder / "configs").glob("*.yaml")),
        "run": [folder / "run"],
    }
