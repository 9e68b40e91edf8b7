"""GGUF export of LLaMA-family models, laid out the way llama.cpp's convert_hf_to_gguf.py does.

Input: a transformers safetensors model (one file or sharded) with its config.json, or a GGUF
file (requantised: dequantised, then quantised again; its metadata, tokenizer included, kept).
Tensors stream one at a time: their infos are written first, then each tensor is read,
converted and appended, so memory holds one tensor, never the model.

Types: 1-D tensors (norms, biases) stay F32; 2-D tensors take the requested type, and Q8_0/Q4_0
fall back to F16 when a row is not a whole number of 32-value blocks. With q4_0 the output head
(output.weight, or token_embd when the head is tied to it) stays at Q8_0: llama-quantize keeps it
at Q6_K, because 4-bit logits cost the most accuracy for the fewest bytes; gguf-py has no Q6_K
quantizer, and Q8_0 is at least as accurate.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from hashlib import sha256
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, UnsupportedError
from ..fsutil import atomic_path
from ..models.handle import Model, is_buffer
from . import quants

# transformers model_type -> GGUF architecture (llama.cpp converts Mistral as llama)
SUPPORTED = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
QUANTIZE = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
UNSUPPORTED_HINT = "GGUF export supports llama, mistral and qwen2; convert others to safetensors"
# Keys the writer sets again, or that describe the old file rather than the new one.
_DROPPED_KEYS = {
    "general.architecture",
    "general.file_type",
    "general.quantization_version",
    "general.alignment",
}

# llama.cpp names a BPE pre-tokenizer by hashing the ids its tokenizer gives for this text
# (convert_hf_to_gguf.py, get_vocab_base_pre); these are the hashes of common ones.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作"
    "1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told "
    "he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
KNOWN_PRE = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
}


@dataclass
class GGUFExportResult:
    output: Path
    quantize: str
    architecture: str
    tensor_count: int
    parameters: int
    file_size_bytes: int
    types: dict[str, int]  # GGML type name -> number of tensors of that type
    verified: bool = False
    verification: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output"] = str(self.output)
        data["tensors"] = self.tensor_count  # the key convert_model reads
        return data


@dataclass
class _Tensor:
    name: str  # llama.cpp name
    shape: tuple[int, ...]  # row-major
    qtype: object  # gguf.GGMLQuantizationType
    load: Callable[[], np.ndarray]  # float32 values, in llama.cpp's layout


@dataclass
class _Plan:
    arch: str
    tensors: list[_Tensor]
    metadata: Callable  # (GGUFWriter) -> None
    notes: list[str]


def write_gguf(
    model: Model, output: str | Path, quantize: str = "f16", verify: bool = True
) -> GGUFExportResult:
    """Write `model` as one GGUF file at `output`, atomically; quantize: f32|f16|bf16|q8_0|q4_0.

    `verify` reads the file back (before it replaces `output`) and checks every tensor's name,
    type, shape and bytes."""
    import gguf

    quant = str(quantize).lower()
    if quant not in QUANTIZE:
        raise InvalidInputError(
            f"unknown GGUF quantization {quantize!r}", f"use one of: {', '.join(QUANTIZE)}"
        )
    output = Path(output)
    if any(output.resolve() == p.resolve() for p in model.source.weight_files):
        raise InvalidInputError(
            f"{output} is the input file", "write to another path; inputs are never modified"
        )
    qtype = gguf.GGMLQuantizationType[QUANTIZE[quant][0]]
    plan = _plan_gguf(model, qtype) if model.kind == "gguf" else _plan_safetensors(model, qtype)
    with atomic_path(output) as tmp:
        writer = gguf.GGUFWriter(tmp, plan.arch)
        plan.metadata(writer)
        writer.add_file_type(gguf.LlamaFileType[QUANTIZE[quant][1]])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        checksums = _write_tensors(writer, plan.tensors)
        verification = _verify(tmp, plan.tensors, checksums) if verify else {}
    return GGUFExportResult(
        output=output,
        quantize=quant,
        architecture=plan.arch,
        tensor_count=len(plan.tensors),
        parameters=sum(int(np.prod(t.shape)) for t in plan.tensors),
        file_size_bytes=output.stat().st_size,
        types=dict(Counter(t.qtype.name for t in plan.tensors)),
        verified=verify,
        verification=verification,
        notes=plan.notes,
    )


def _write_tensors(writer, tensors: list[_Tensor]) -> list[int]:
    """Tensor infos first, then each tensor's data: one tensor in memory at a time."""
    import gguf

    for tensor in tensors:
        nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(tensor.shape, tensor.qtype)))
        writer.add_tensor_info(
            tensor.name, tensor.shape, np.dtype(np.float32), nbytes, raw_dtype=tensor.qtype
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    checksums = []
    for tensor in tensors:
        data = quants.quantize(tensor.load(), tensor.qtype)
        checksums.append(zlib.crc32(data))
        writer.write_tensor_data(data)
    writer.close()
    return checksums


def _verify(path: Path, tensors: list[_Tensor], checksums: list[int]) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    found = [(t.name, t.tensor_type, tuple(reversed(t.shape.tolist()))) for t in reader.tensors]
    expected = [(t.name, t.qtype, tuple(t.shape)) for t in tensors]
    if found != expected or [zlib.crc32(t.data) for t in reader.tensors] != checksums:
        raise RuntimeError(f"{path}: the GGUF file read back differs from what was written")
    return {"tensors_checked": len(found), "checksum": "crc32"}


def _target_type(shape: tuple[int, ...], requested, head: bool = False):
    import gguf

    T = gguf.GGMLQuantizationType
    if len(shape) < 2:
        return T.F32  # norms and biases: tiny, and llama.cpp expects them F32
    if requested in (T.Q8_0, T.Q4_0) and not quants.can_quantize(shape):
        return T.F16
    return T.Q8_0 if head and requested == T.Q4_0 else requested


def _is_head(name: str, names: set[str]) -> bool:
    """The tensor that produces the logits: output.weight, or token_embd when it is tied."""
    return name == "output.weight" or (name == "token_embd.weight" and "output.weight" not in names)


# --------------------------------------------------------------------------- safetensors input


def _model_type(model: Model) -> str:
    """The transformers model_type, when it is one this exporter writes."""
    if model.kind == "config":
        raise InvalidInputError(
            f"{model.source.path}: a config.json without weights",
            "give the model folder or weights file",
        )
    if not model.source.config:
        raise InvalidInputError(
            f"{model.source.path}: no config.json beside the weights",
            "GGUF export needs the model's config.json",
        )
    model_type = str(model.source.config.get("model_type", "unknown"))
    if model_type not in SUPPORTED:
        raise UnsupportedError(f"cannot export a {model_type!r} model to GGUF", UNSUPPORTED_HINT)
    return model_type


def _plan_safetensors(model: Model, qtype) -> _Plan:
    import gguf

    model_type, config = _model_type(model), model.source.config
    arch, info = SUPPORTED[model_type], model.arch
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], info.layers)
    # llama.cpp's llama rotary pairs each head's two halves; qwen2 (NEOX style) keeps HF order
    heads = (
        {".attn_q.": info.heads, ".attn_k.": info.kv_heads or info.heads} if arch == "llama" else {}
    )
    tensors = _rope_freqs(config, info.head_dim)
    for tensor in model.tensors:
        if is_buffer(tensor) or (info.tied_embeddings and tensor.name == "lm_head.weight"):
            continue
        name = name_map.get_name(tensor.name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UnsupportedError(
                f"tensor {tensor.name!r} has no llama.cpp name", UNSUPPORTED_HINT
            )
        load = partial(model.read, tensor)
        for part, count in heads.items():
            if part in name:
                load = partial(_permuted, load, count)
        tensors.append(_Tensor(name, tuple(tensor.shape), qtype, load))
    names = {t.name for t in tensors}
    for tensor in tensors:
        tensor.qtype = _target_type(tensor.shape, qtype, _is_head(tensor.name, names))
    notes = []
    if not info.tied_embeddings and not any(t.name == "output.weight" for t in tensors):
        notes.append("no lm_head.weight in the input: llama.cpp will reuse token_embd as output")
    if model_type == "mistral" and config.get("sliding_window"):
        notes.append("sliding_window is not written: llama.cpp's llama architecture has none")
    return _Plan(arch, tensors, partial(_hf_metadata, model, notes), notes)


def permute_qk_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute: rows (head, half, i) -> (head, i, half). Used for
    q/k weights here and for the rows of a LoRA's lora_b (core/lora/convert.py)."""
    rows = w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
    return np.ascontiguousarray(rows.swapaxes(1, 2).reshape(w.shape))


def _permuted(load: Callable[[], np.ndarray], heads: int) -> np.ndarray:
    return permute_qk_rows(load(), heads)


def _rope(config: dict) -> tuple[float, dict, str]:
    """rope theta, scaling parameters and type: transformers 5's rope_parameters or older keys."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or params
    theta = config.get("rope_theta") or params.get("rope_theta") or 10000.0
    return float(theta), scaling, scaling.get("rope_type") or scaling.get("type") or "default"


def _rope_freqs(config: dict, head_dim: int) -> list[_Tensor]:
    """Llama 3.1-style scaling: llama.cpp reads per-frequency factors from a rope_freqs tensor."""
    import gguf

    theta, scaling, kind = _rope(config)
    if kind in ("default", "linear", "yarn"):
        return []
    if kind != "llama3":
        raise UnsupportedError(
            f"rope scaling {kind!r} is not supported for GGUF export",
            "supported: none, linear, yarn, llama3",
        )
    factor = scaling.get("factor", 8.0)
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    context = scaling.get("original_max_position_embeddings", 8192)
    wavelen = 2 * np.pi * theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    smooth = (context / wavelen - low) / (high - low)
    middle = 1 / ((1 - smooth) / factor + smooth)
    values = np.where(
        wavelen < context / high, 1.0, np.where(wavelen > context / low, factor, middle)
    )
    values = values.astype(np.float32)
    return [
        _Tensor("rope_freqs.weight", values.shape, gguf.GGMLQuantizationType.F32, lambda: values)
    ]


def _hf_metadata(model: Model, notes: list[str], writer) -> None:
    import gguf

    config, info = model.source.config, model.arch
    theta, scaling, kind = _rope(config)
    writer.add_name(model.source.name)
    writer.add_context_length(int(info.max_positions or 2048))
    writer.add_embedding_length(info.hidden_size)
    writer.add_block_count(info.layers)
    writer.add_feed_forward_length(info.intermediate_size)
    writer.add_head_count(info.heads)
    writer.add_head_count_kv(info.kv_heads or info.heads)
    writer.add_rope_freq_base(theta)
    writer.add_rope_dimension_count(info.head_dim)
    if info.head_dim != info.hidden_size // info.heads:
        writer.add_key_length(info.head_dim)
        writer.add_value_length(info.head_dim)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(info.vocab_size)
    if kind in ("linear", "yarn"):
        writer.add_rope_scaling_type(gguf.RopeScalingType[kind.upper()])
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        if "original_max_position_embeddings" in scaling:
            writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
    _add_tokenizer(writer, model.source.tokenizer_dir, info.vocab_size, notes)


# --------------------------------------------------------------------------- tokenizer


def _add_tokenizer(writer, folder: Path | None, vocab_size: int, notes: list[str]) -> None:
    """tokenizer.ggml.*: byte-level BPE as "gpt2", SentencePiece(-like) as "llama"; then the
    special tokens, merges and chat template through gguf-py's SpecialVocab."""
    import gguf

    path = folder / "tokenizer.json" if folder else None
    spec = json.loads(path.read_text(encoding="utf-8")) if path and path.exists() else {}
    model = spec.get("model", {})
    byte_level = model.get("type") == "BPE" and not model.get("byte_fallback")
    if byte_level:
        _add_bpe(writer, spec, path, vocab_size, notes)
    elif folder and ((folder / "tokenizer.model").exists() or model.get("type") == "BPE"):
        _add_sentencepiece(writer, folder, vocab_size)
    else:
        notes.append(
            "no tokenizer beside the model: the GGUF has no vocabulary (llama.cpp needs one)"
        )
        return
    special = gguf.SpecialVocab(folder, load_merges=byte_level, n_vocab=vocab_size)
    special.add_to_gguf(writer, quiet=True)


def _check_vocab(count: int, vocab_size: int) -> None:
    if count > vocab_size:
        raise InvalidInputError(
            f"the tokenizer has {count} tokens but config.json says vocab_size={vocab_size}",
            "the tokenizer does not belong to this model; fix vocab_size or the tokenizer files",
        )


def _add_bpe(writer, spec: dict, path: Path, vocab_size: int, notes: list[str]) -> None:
    """Tokens by id, padded to vocab_size; added tokens are CONTROL (special) or USER_DEFINED."""
    import gguf

    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    by_id = {i: token for token, i in spec["model"]["vocab"].items()}
    by_id |= {i: t["content"] for i, t in added.items()}
    _check_vocab(max(by_id, default=-1) + 1, vocab_size)
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    types = [
        gguf.TokenType.UNUSED
        if i not in by_id
        else gguf.TokenType.NORMAL
        if i not in added
        else gguf.TokenType.CONTROL
        if added[i].get("special")
        else gguf.TokenType.USER_DEFINED
        for i in range(vocab_size)
    ]
    pre = _bpe_pre(path)
    if pre == "default":
        notes.append("BPE pre-tokenizer not one llama.cpp names: wrote tokenizer.ggml.pre=default")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)


def _bpe_pre(tokenizer_json: Path) -> str:
    from tokenizers import Tokenizer

    try:
        ids = Tokenizer.from_file(str(tokenizer_json)).encode(CHKTXT).ids
    except Exception:  # a tokenizer.json this tokenizers version cannot load: name unknown
        return "default"
    return KNOWN_PRE.get(sha256(str(ids).encode()).hexdigest(), "default")


def _add_sentencepiece(writer, folder: Path, vocab_size: int) -> None:
    """tokenizer.model through sentencepiece, or a byte-fallback tokenizer.json (Llama 2 style)."""
    import gguf

    has_model = (folder / "tokenizer.model").exists()
    vocab = (gguf.vocab.SentencePieceVocab if has_model else gguf.vocab.LlamaHfVocab)(folder)
    entries = list(vocab.all_tokens())
    _check_vocab(len(entries), vocab_size)
    entries += [
        (f"[PAD{i}]".encode(), -1000.0, gguf.TokenType.UNUSED)
        for i in range(len(entries), vocab_size)
    ]
    tokens, scores, types = zip(*entries, strict=True)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(list(tokens))
    writer.add_token_scores(list(scores))
    writer.add_token_types(list(types))


# --------------------------------------------------------------------------- GGUF input


def _plan_gguf(model: Model, qtype) -> _Plan:
    from ..models.gguf_format import open_gguf

    arch = str(model.metadata.get("general.architecture", "unknown"))
    if arch not in SUPPORTED.values():
        raise UnsupportedError(f"cannot export a GGUF {arch!r} model", UNSUPPORTED_HINT)
    names = {t.name for t in model.tensors}
    tensors = [
        _Tensor(
            t.name,
            tuple(t.shape),
            _target_type(t.shape, qtype, _is_head(t.name, names)),
            partial(_dequantized, model, t),
        )
        for t in model.tensors
    ]
    reader = open_gguf(model.source.weight_files[0]).reader
    return _Plan(arch, tensors, partial(_copy_metadata, reader), [])


def _dequantized(model: Model, info) -> np.ndarray:
    try:
        return model.read(info)
    except NotImplementedError as exc:
        raise UnsupportedError(
            f"cannot dequantize {info.name} ({info.dtype})",
            "convert from the original safetensors model",
        ) from exc


def _copy_metadata(reader, writer) -> None:
    """Every key of the source (tokenizer and chat template included); strings as raw bytes."""
    import gguf

    value_type = gguf.GGUFValueType
    for name, fld in reader.fields.items():
        if name.startswith("GGUF.") or name in _DROPPED_KEYS:
            continue
        kind, parts = fld.types[0], [fld.parts[i] for i in fld.data]
        if kind != value_type.ARRAY:
            writer.add_key_value(
                name, bytes(parts[0]) if kind == value_type.STRING else parts[0].tolist()[0], kind
            )
        elif fld.types[-1] != value_type.ARRAY and parts:
            # (nested and empty arrays are skipped: none in llama models)
            sub = fld.types[-1]
            values = [bytes(p) if sub == value_type.STRING else p.tolist()[0] for p in parts]
            writer.add_key_value(name, values, value_type.ARRAY, sub_type=sub)
