"""`inspect info` and `inspect layers`: what a model is, from headers alone (no tensor data)."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

from ..models import Model
from ..models.handle import is_buffer
from ..models.tensors import TensorInfo


@dataclass
class ModelInfo:
    ref: str
    kind: str
    path: str
    architecture: str
    model_type: str
    parameters: int
    layers: int | None
    hidden_size: int | None
    heads: int | None
    kv_heads: int | None
    intermediate_size: int | None
    vocab_size: int | None
    max_positions: int | None
    tied_embeddings: bool | None
    dtypes: dict[str, int]
    tensor_count: int
    file_count: int
    file_size_bytes: int
    arch_source: str
    has_tokenizer: bool
    seconds: float
    metadata: dict = field(default_factory=dict)
    inferred: list[str] = field(default_factory=list)  # fields guessed from tensor shapes

    def to_dict(self) -> dict:
        return asdict(self)


def model_info(ref: str) -> ModelInfo:
    """Architecture, exact parameter count and dtypes of a model, from its headers."""
    start = time.perf_counter()
    model = Model.open(ref)
    arch = model.arch
    src = model.source
    return ModelInfo(
        ref=str(ref),
        kind=src.kind,
        path=str(src.path),
        architecture=arch.family,
        model_type=arch.model_type,
        parameters=model.parameters,
        layers=arch.layers,
        hidden_size=arch.hidden_size,
        heads=arch.heads,
        kv_heads=arch.kv_heads,
        intermediate_size=arch.intermediate_size,
        vocab_size=arch.vocab_size,
        max_positions=arch.max_positions,
        tied_embeddings=arch.tied_embeddings,
        dtypes=model.dtypes,
        tensor_count=len(model.tensors),
        file_count=len(src.weight_files),
        file_size_bytes=src.file_size_bytes,
        arch_source=arch.source,
        has_tokenizer=src.tokenizer_dir is not None or "tokenizer.ggml.model" in model.metadata,
        seconds=time.perf_counter() - start,
        metadata={
            k: v for k, v in model.metadata.items() if isinstance(v, (str, int, float, bool))
        },
        inferred=list(arch.inferred),
    )


# Block index in the common naming schemes: "layers.3.", "h.3.", "layer.3.", "block.3.", "blk.3."
_BLOCK = re.compile(r"^(.*?\b(?:layers|layer|h|block|blocks|blk))\.(\d+)\.")


@dataclass
class LayerGroup:
    name: str
    tensors: int
    parameters: int
    bytes: int
    dtypes: list[str]
    shapes: list[list[int]] = field(default_factory=list)


@dataclass
class LayersResult:
    ref: str
    verbose: bool
    parameters: int
    bytes: int
    groups: list[LayerGroup] = field(default_factory=list)
    tensors: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        if not self.verbose:
            out.pop("tensors")
        return out


def group_name(tensor_name: str) -> str:
    """'model.layers.3.mlp.up_proj.weight' -> 'model.layers.3'; outside blocks, the module path."""
    match = _BLOCK.match(tensor_name)
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    return tensor_name.rsplit(".", 1)[0] if "." in tensor_name else tensor_name


def _group(tensors: list[TensorInfo]) -> list[LayerGroup]:
    groups: OrderedDict[str, LayerGroup] = OrderedDict()
    for t in tensors:
        key = group_name(t.name)
        g = groups.setdefault(key, LayerGroup(key, 0, 0, 0, []))
        g.tensors += 1
        g.parameters += 0 if is_buffer(t) else t.numel
        g.bytes += t.nbytes
        if t.dtype not in g.dtypes:
            g.dtypes.append(t.dtype)
    return list(groups.values())


def _block_sort_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def model_layers(ref: str, verbose: bool = False) -> LayersResult:
    """Tensors grouped by block (or every tensor with `verbose`): shape, dtype, params, bytes."""
    model = Model.open(ref)
    tensors = sorted(model.tensors, key=lambda t: _block_sort_key(t.name))
    return LayersResult(
        ref=str(ref),
        verbose=verbose,
        parameters=model.parameters,
        bytes=sum(t.nbytes for t in tensors),
        groups=_group(tensors),
        tensors=[t.to_dict() for t in tensors] if verbose else [],
    )
