"""Turning model references into transformers models: teacher, student, tokenizer.

GGUF references (the packaged SmolLM2) are dequantised once into a Hugging Face folder in
the user cache; transformers' GGUF path rebuilds the tokenizer from 49k tokens and merges on
every load, which costs more than a short training run.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from pathlib import Path

from ..errors import InvalidInputError, UnsupportedError
from ..models import Model
from ..models.resolve import resolve

CAUSAL_TYPES = {"llama", "mistral", "qwen2", "gpt2", "gpt_neox"}


def cache_root() -> Path:
    base = os.environ.get("ENTRENAR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "entrenar"
    )
    return Path(base)


def hf_folder(ref: str, revision: str | None = None, fmt: str = "auto") -> Path:
    """A folder transformers can load with from_pretrained, for any supported reference.

    `revision` and `fmt` are teacher.revision and teacher.format: a hub revision, and which
    weights to use where a folder or repo holds both safetensors and GGUF."""
    src = Model(resolve(ref, revision, fmt)).source
    if src.kind == "safetensors" and src.path.is_dir():
        return src.path
    if src.kind == "safetensors" and (src.path.parent / "config.json").exists():
        return src.path.parent
    if src.kind == "gguf":  # the file itself: a folder may also hold safetensors
        gguf = src.weight_files[0]
        stat = gguf.stat()
        key = hashlib.sha256(
            f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        ).hexdigest()[:16]
        target = cache_root() / "hf" / f"{gguf.stem}-{key}"
        if not (target / "config.json").exists():
            from ..convert import convert_model

            convert_model(str(gguf), "safetensors", target)
        return target
    raise UnsupportedError(
        f"{ref}: a {src.kind} model cannot be trained from directly",
        "give a Hugging Face folder (config.json + model.safetensors), a hub id or a GGUF file",
    )


def quiet_transformers() -> None:
    """transformers' and huggingface_hub's own progress bars ("Loading weights", "Writing
    model shards", "Converting and de-quantizing GGUF tensors") would interleave with ours."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    disable_progress_bars()
    # the GGUF reader calls tqdm.auto directly, past transformers' switch
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    if not isinstance(gguf_utils.tqdm, functools.partial):
        gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "device: cuda was requested but no CUDA device is available", "use device: auto or cpu"
        )
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def load_tokenizer(ref: str, revision: str | None = None, fmt: str = "auto"):
    from transformers import AutoTokenizer

    quiet_transformers()
    folder = hf_folder(ref, revision, fmt)
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def torch_dtype(precision: str):
    import torch

    return getattr(torch, TORCH_DTYPES[precision])


def load_causal_lm(
    ref: str,
    device: str = "cpu",
    attn_implementation: str = "sdpa",
    revision: str | None = None,
    fmt: str = "auto",
    precision: str = "fp32",
    quantization=None,
):
    """Load a causal LM on `device` with its weights in `precision`; `quantization` (a
    QuantizationConfig) stores the block linears in 4 or 8 bits through bitsandbytes, with
    everything else upcast to fp32 for training (PEFT's k-bit preparation, done by the caller)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    quiet_transformers()
    folder = hf_folder(ref, revision, fmt)
    config = AutoConfig.from_pretrained(folder)
    if config.model_type not in CAUSAL_TYPES:
        raise UnsupportedError(
            f"{ref} is a {config.model_type} model; distillation needs a causal LM",
            f"supported: {', '.join(sorted(CAUSAL_TYPES))}",
        )
    options = {"dtype": torch_dtype(precision), "attn_implementation": attn_implementation}
    if quantization is not None:
        options["quantization_config"] = _bitsandbytes_config(quantization, precision)
        options["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(folder, **options)
    return model if quantization is not None else model.to(device)


def _bitsandbytes_config(quantization, precision: str):
    from transformers import BitsAndBytesConfig

    if quantization.method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(precision),
    )


def _layer_list(model):
    """The decoder block list of a causal LM (LLaMA-likes: model.layers; GPT-2: transformer.h)."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return path, obj
    raise UnsupportedError(
        f"cannot find the decoder layers of {type(model).__name__}",
        "use a LLaMA, Mistral, Qwen2, GPT-2 or GPT-NeoX model",
    )


def student_from_teacher(teacher, layers: list[int], precision: str = "fp32"):
    """A shallower copy of the teacher keeping the given blocks (as DistilBERT initialised its student)."""
    path, blocks = _layer_list(teacher)
    layer_count = len(blocks)
    bad = [i for i in layers if i >= layer_count]
    if bad:
        raise InvalidInputError(
            f"student.init_from_teacher.layers {bad} out of range: the teacher has {layer_count} layers",
            f"use indices 0..{layer_count - 1}",
        )
    config = copy.deepcopy(teacher.config)
    for attr in ("num_hidden_layers", "n_layer"):
        if hasattr(config, attr):
            setattr(config, attr, len(layers))
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    student = type(teacher)(config)
    new_state = _select_layers(teacher.state_dict(), path + ".", layers)
    missing, unexpected = student.load_state_dict(new_state, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise UnsupportedError(
            f"could not copy teacher layers into the student (missing {missing[:3]}, unexpected {unexpected[:3]})",
            "report this with the teacher's model id",
        )
    if teacher.config.tie_word_embeddings:
        student.tie_weights()
    return student.to(next(teacher.parameters()).device, dtype=torch_dtype(precision))


def _select_layers(state: dict, prefix: str, layers: list[int]) -> dict:
    """Keep blocks `layers` of the state dict, renumbered 0..k-1; everything else as is."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            out[key] = value.clone()
            continue
        index, rest = key[len(prefix) :].split(".", 1)
        if int(index) in layers:
            out[f"{prefix}{layers.index(int(index))}.{rest}"] = value.clone()
    return out


def num_layers(model) -> int:
    return len(_layer_list(model)[1])
