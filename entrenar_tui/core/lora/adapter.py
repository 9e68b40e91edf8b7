"""Reading PEFT LoRA adapters: `adapter_config.json` plus `adapter_model.safetensors` (or .bin).

Merge, inspect and convert all read adapters here, so PEFT's conventions (tensor names with or
without the adapter-name segment, rank/alpha patterns, rsLoRA, DoRA, fan_in_fan_out,
modules_to_save) are interpreted in one place. Only headers are read up front; tensor data is
read per module (memory-mapped), so inspecting a big adapter does not load it whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CorruptFileError, InvalidInputError, UnsupportedError
from ..models.handle import Model
from ..models.tensors import FLOAT_DTYPES, TensorInfo

if TYPE_CHECKING:
    import numpy as np

PEFT_PREFIX = "base_model.model."
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_SAVE_HINT = "a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors, as written by model.save_pretrained(folder)"

# module . part [. adapter name] [. weight|bias]; PEFT's files drop the adapter name, raw
# state dicts (model.state_dict() of a PeftModel) keep it: `lora_A.default.weight`.
_LORA_NAME = re.compile(
    r"^(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.(?!(?:weight|bias)$)(?P<adapter>[^.]+))?(?:\.(?P<leaf>weight|bias))?$"
)
# modules_to_save copies in a raw state dict: `lm_head.modules_to_save.default.weight`
_SAVED_WRAPPER = re.compile(r"\.modules_to_save\.[^.]+\.")
_LAYER_NUMBER = re.compile(r"\.(\d+)(?:\.|$)")
MAX_RANK = 1 << 20  # no layer is this wide; a larger r is a corrupt config


@dataclass
class LoraModule:
    """One adapted module: its A/B (and DoRA magnitude, LoRA bias) tensors and its scaling."""

    name: str  # the module's name in the base model, e.g. model.layers.0.self_attn.q_proj
    a: TensorInfo  # [r, in]   (embeddings: [r, num_embeddings])
    b: TensorInfo  # [out, r]  (embeddings: [embedding_dim, r])
    magnitude: TensorInfo | None = None  # DoRA: one value per output feature
    bias: TensorInfo | None = None  # lora_B.bias, when trained with lora_bias=True
    embedding: bool = False
    rank: int = 0
    alpha: float = 0.0
    scaling: float = 0.0
    fan_in_fan_out: bool = False  # GPT-2's Conv1D stores the weight as [in, out]

    @property
    def kind(self) -> str:
        """The module's own name (q_proj, c_attn, ...), the unit `target_modules` lists."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def layer(self) -> int | None:
        found = _LAYER_NUMBER.search(self.name)
        return int(found.group(1)) if found else None

    @property
    def out_features(self) -> int:
        return self.b.shape[0]

    @property
    def in_features(self) -> int:
        return self.a.shape[1]

    @property
    def transposed(self) -> bool:
        """Whether the base stores this weight as [in, out] (Conv1D, embeddings)."""
        return self.embedding or self.fan_in_fan_out

    @property
    def base_shape(self) -> tuple[int, int]:
        """The shape the base model's weight must have for this module to apply."""
        out_in = (self.out_features, self.in_features)
        return out_in[::-1] if self.transposed else out_in

    @property
    def tensors(self) -> list[TensorInfo]:
        return [t for t in (self.a, self.b, self.magnitude, self.bias) if t is not None]

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)


@dataclass
class Adapter:
    """A PEFT LoRA adapter: normalized config fields, modules keyed by base module name."""

    path: Path
    model: Model  # the adapter's files (Model.open of the folder; kind "adapter")
    config: dict
    r: int
    lora_alpha: float
    use_rslora: bool = False
    use_dora: bool = False
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    fan_in_fan_out: bool = False
    target_modules: list[str] | str | None = None
    modules_to_save: list[str] = field(default_factory=list)
    lora_bias: bool = False
    base_model_name_or_path: str | None = None
    modules: dict[str, LoraModule] = field(default_factory=dict)
    saved: dict[str, TensorInfo] = field(default_factory=dict)  # modules_to_save, by base name

    def rank_for(self, module_name: str) -> int:
        return int(self.rank_pattern.get(pattern_key(self.rank_pattern, module_name), self.r))

    def alpha_for(self, module_name: str) -> float:
        key = pattern_key(self.alpha_pattern, module_name)
        return float(self.alpha_pattern.get(key, self.lora_alpha))

    def scaling_for(self, module_name: str) -> float:
        """alpha / r, or alpha / sqrt(r) for rsLoRA, with PEFT's per-module patterns applied."""
        r, alpha = self.rank_for(module_name), self.alpha_for(module_name)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    @property
    def scale(self) -> float:
        """The config-level scaling (modules matched by a pattern may differ)."""
        return self.lora_alpha / math.sqrt(self.r) if self.use_rslora else self.lora_alpha / self.r

    @property
    def parameters(self) -> int:
        """LoRA parameters: A, B, DoRA magnitudes and LoRA biases (modules_to_save excluded)."""
        return sum(m.parameters for m in self.modules.values())

    @property
    def saved_parameters(self) -> int:
        return sum(t.numel for t in self.saved.values())

    @property
    def trained_on(self) -> str:
        """For hints: which base this adapter says it was trained on."""
        origin = self.base_model_name_or_path
        return f"it was trained on {origin}" if origin else "it was trained on a different model"

    def read(self, info: TensorInfo) -> np.ndarray:
        """One adapter tensor as float32."""
        return self.model.read(info)


def base_tensor_name(wanted: str, names: set[str]) -> str | None:
    """The base tensor for an adapter's name: exact, or under a different top-level prefix (an
    adapter trained on LlamaModel applied to LlamaForCausalLM, or the reverse)."""
    if wanted in names:
        return wanted
    parts = wanted.split(".")
    for start in range(1, len(parts) - 1):
        if ".".join(parts[start:]) in names:
            return ".".join(parts[start:])
    matches = [n for n in names if n.endswith("." + wanted)]
    return matches[0] if len(matches) == 1 else None


def pattern_key(patterns: dict, module_name: str) -> str | None:
    """PEFT's rule (peft.utils.other.get_pattern_key): the first key that matches the end of
    the module name at a dot boundary, as a regular expression."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module_name):
            return key
    return None


def _adapter_folder(path: str | Path) -> str | Path:
    """The adapter folder for a local path (the folder or one of its files); hub ids pass through."""
    local = Path(path).expanduser()
    if not local.exists():
        return path
    folder = local.parent if local.is_file() else local
    if not (folder / "adapter_config.json").is_file():
        has_weights = any((folder / f).exists() for f in WEIGHT_FILES)
        what = (
            "has adapter weights but no adapter_config.json"
            if has_weights
            else "is not a PEFT adapter (no adapter_config.json)"
        )
        raise InvalidInputError(f"{folder} {what}", _SAVE_HINT)
    return folder


def _open(path: str | Path) -> Model:
    model = Model.open(_adapter_folder(path))
    if model.kind != "adapter":
        raise InvalidInputError(
            f"{path} is a {model.kind} model, not a PEFT adapter (no adapter_config.json)",
            _SAVE_HINT,
        )
    if not model.source.weight_files:
        raise CorruptFileError(
            f"{model.source.path}: adapter_config.json but no adapter_model.safetensors or .bin",
            "copy the adapter weights next to adapter_config.json, or save the adapter again",
        )
    return model


def _strip_name(name: str) -> str:
    name = name.removeprefix(PEFT_PREFIX)
    return _SAVED_WRAPPER.sub(".", name)


def _group_tensors(tensors: list[TensorInfo]) -> tuple[dict[str, dict], dict[str, TensorInfo]]:
    """Split tensor names into LoRA parts per module and plain (modules_to_save) tensors."""
    parts: dict[str, dict[str, TensorInfo]] = {}
    saved: dict[str, TensorInfo] = {}
    for info in tensors:
        name = _strip_name(info.name)
        if ".base_layer." in name:
            continue  # the base's own weights, saved with embedding targets (save_embedding_layers)
        found = _LORA_NAME.match(name)
        if found is None:
            if "trainable_tokens" in name:
                raise UnsupportedError(
                    f"{info.name}: PEFT trainable-token deltas are not supported",
                    "save the adapter without trainable_token_indices (use modules_to_save for the embeddings)",
                )
            saved[name] = info
            continue
        part = found["part"] + (".bias" if found["leaf"] == "bias" else "")
        parts.setdefault(found["module"], {})[part] = info
    return parts, saved


def _check_shapes(path: Path, module: LoraModule, lora_a: TensorInfo, lora_b: TensorInfo) -> None:
    if len(lora_a.shape) != 2 or len(lora_b.shape) != 2:
        raise UnsupportedError(
            f"{path}: module {module.name} has {len(lora_a.shape)}-D LoRA weights",
            "only Linear, Conv1D and Embedding LoRA layers are supported (not Conv2d)",
        )
    if lora_a.shape[0] != lora_b.shape[1]:
        raise CorruptFileError(
            f"{path}: module {module.name}: lora_A {list(lora_a.shape)} and lora_B {list(lora_b.shape)} disagree on the rank",
            "the adapter file is damaged; save the adapter again",
        )
    for extra, what in ((module.magnitude, "DoRA magnitude"), (module.bias, "lora_B bias")):
        if extra is not None and extra.shape != (lora_b.shape[0],):
            raise CorruptFileError(
                f"{path}: module {module.name}: {what} has shape {list(extra.shape)}, expected [{lora_b.shape[0]}]",
                "the adapter file is damaged; save the adapter again",
            )


def _build_module(adapter: Adapter, name: str, parts: dict[str, TensorInfo]) -> LoraModule:
    embedding = "lora_embedding_A" in parts or "lora_embedding_B" in parts
    lora_a = parts.get("lora_embedding_A" if embedding else "lora_A")
    lora_b = parts.get("lora_embedding_B" if embedding else "lora_B")
    if lora_a is None or lora_b is None:
        raise CorruptFileError(
            f"{adapter.path}: module {name} has {'lora_B' if lora_a is None else 'lora_A'} but not its partner",
            "the adapter file is incomplete; save the adapter again",
        )
    module = LoraModule(
        name,
        lora_a,
        lora_b,
        parts.get("lora_magnitude_vector"),
        parts.get("lora_B.bias"),
        embedding,
    )
    _check_shapes(adapter.path, module, lora_a, lora_b)
    bad = [t.name for t in module.tensors if t.dtype not in FLOAT_DTYPES]
    if bad:
        raise UnsupportedError(
            f"{adapter.path}: {bad[0]} is not a float tensor",
            "quantized adapters are not supported; save the adapter in float32, float16 or bfloat16",
        )
    if adapter.use_dora and module.magnitude is None:
        raise CorruptFileError(
            f"{adapter.path}: adapter_config.json says use_dora but {name} has no lora_magnitude_vector",
            "adapter_config.json does not belong to these weights; save the adapter again",
        )
    module.rank, module.alpha = adapter.rank_for(name), adapter.alpha_for(name)
    if module.rank != lora_a.shape[0]:
        raise CorruptFileError(
            f"{adapter.path}: module {name} has rank {lora_a.shape[0]}, but adapter_config.json says r={module.rank}",
            "adapter_config.json does not belong to these weights (check r and rank_pattern)",
        )
    module.scaling = adapter.scaling_for(name)
    module.fan_in_fan_out = adapter.fan_in_fan_out and not embedding
    return module


def _bad_field(path: Path, key: str, value: object, wanted: str) -> CorruptFileError:
    shown = repr(value)[:60]
    return CorruptFileError(
        f"{path}: adapter_config.json has {key}={shown}, expected {wanted}", _SAVE_HINT
    )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX_RANK


def _patterns(path: Path, config: dict, key: str, check, wanted: str) -> dict:
    """rank_pattern / alpha_pattern: {regex: value}; each regex must compile, as PEFT's does."""
    patterns = config.get(key) or {}
    if not isinstance(patterns, dict):
        raise _bad_field(path, key, patterns, "an object of {module regex: value}")
    for pattern, value in patterns.items():
        if not check(value):
            raise _bad_field(path, f"{key}[{pattern!r}]", value, wanted)
        try:
            re.compile(rf"(.*\.)?({pattern})$")
        except (re.error, RecursionError, OverflowError) as exc:
            raise _bad_field(path, key, pattern, f"a regular expression ({exc})") from exc
    return dict(patterns)


def _names(path: Path, config: dict, key: str, allow_str: bool) -> list[str] | str | None:
    value = config.get(key)
    if value is None or (allow_str and isinstance(value, str)):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    wanted = "a list of module names" + (" or a regex string" if allow_str else "")
    raise _bad_field(path, key, value, wanted)


def _config_fields(path: Path, config: dict) -> dict:
    """adapter_config.json's fields, type-checked: a wrong type is a corrupt file, not a bug."""
    peft_type = str(config.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        raise UnsupportedError(
            f"{path}: a {peft_type[:40]} adapter, not LoRA",
            "only PEFT LoRA (and DoRA) adapters are supported",
        )
    rank, alpha = config.get("r", 8), config.get("lora_alpha", 8)
    if not _positive_int(rank):
        raise _bad_field(path, "r", rank, f"a positive integer (at most {MAX_RANK})")
    if not _number(alpha):
        raise _bad_field(path, "lora_alpha", alpha, "a number")
    targets = _names(path, config, "target_modules", allow_str=True)
    base = config.get("base_model_name_or_path")
    return dict(
        r=rank,
        lora_alpha=float(alpha),
        use_rslora=bool(config.get("use_rslora")),
        use_dora=bool(config.get("use_dora")),
        rank_pattern=_patterns(path, config, "rank_pattern", _positive_int, "a positive integer"),
        alpha_pattern=_patterns(path, config, "alpha_pattern", _number, "a number"),
        fan_in_fan_out=bool(config.get("fan_in_fan_out")),
        target_modules=sorted(targets) if isinstance(targets, list) else targets,
        modules_to_save=list(_names(path, config, "modules_to_save", allow_str=False) or []),
        lora_bias=bool(config.get("lora_bias")),
        base_model_name_or_path=base if isinstance(base, str) else None,
    )


def read_adapter(path: str | Path) -> Adapter:
    """Open a PEFT LoRA adapter (folder, one of its files, or a hub id); reads headers only."""
    model = _open(path)
    config = model.source.config or {}
    folder = Path(model.source.path)
    adapter = Adapter(folder, model, config, **_config_fields(folder, config))
    parts, adapter.saved = _group_tensors(model.tensors)
    if not parts:
        raise CorruptFileError(
            f"{folder}: the adapter holds no lora_A/lora_B tensors",
            "the weights file is empty or not a LoRA adapter; save the adapter again",
        )
    for name in sorted(parts, key=_natural_key):
        adapter.modules[name] = _build_module(adapter, name, parts[name])
    return adapter


def _natural_key(name: str) -> list:
    """Sort layer 10 after layer 9."""
    # (kind, number, text): a number and a word at the same depth must still compare
    return [(0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p) for p in name.split(".")]
