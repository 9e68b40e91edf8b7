"""`inspect compare`: what differs between two models, tensor by tensor, streamed."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..models import Model


@dataclass
class TensorDiff:
    name: str
    max_abs_diff: float
    relative_l2: float  # ||a - b|| / ||a||; inf when a is zero and b is not


@dataclass
class CompareResult:
    a: str
    b: str
    common: int
    added: list[str] = field(default_factory=list)  # in B, not in A
    removed: list[str] = field(default_factory=list)  # in A, not in B
    shape_changed: list[dict] = field(default_factory=list)
    dtype_changed: list[dict] = field(default_factory=list)
    values: list[TensorDiff] | None = None
    parameters_a: int = 0
    parameters_b: int = 0

    @property
    def identical_structure(self) -> bool:
        return not (self.added or self.removed or self.shape_changed or self.dtype_changed)

    @property
    def max_abs_diff(self) -> float | None:
        if not self.values:
            return None
        return max(v.max_abs_diff for v in self.values)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["identical_structure"] = self.identical_structure
        out["max_abs_diff"] = self.max_abs_diff
        return out


def _diff(values_a: np.ndarray, values_b: np.ndarray) -> TensorDiff:
    """Accumulate in float64 chunks so huge tensors neither overflow nor need a full copy."""
    values_a = values_a.reshape(-1)
    values_b = values_b.reshape(-1)
    max_abs, num, den = 0.0, 0.0, 0.0
    step = 1 << 22
    for i in range(0, values_a.size, step):
        chunk_a = np.asarray(values_a[i : i + step], dtype=np.float64)
        chunk_b = np.asarray(values_b[i : i + step], dtype=np.float64)
        delta = chunk_a - chunk_b
        if delta.size:
            max_abs = max(max_abs, float(np.max(np.abs(delta))))
        num += float(np.dot(delta, delta))
        den += float(np.dot(chunk_a, chunk_a))
    rel = math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)
    return TensorDiff("", max_abs, rel)


def compare_models(ref_a: str, ref_b: str, values: bool = False) -> CompareResult:
    """Structural differences; with `values`, max |a-b| and relative L2 per matching tensor."""
    model_a, model_b = Model.open(ref_a), Model.open(ref_b)
    tensors_a = {t.name: t for t in model_a.tensors}
    tensors_b = {t.name: t for t in model_b.tensors}
    result = CompareResult(
        a=str(ref_a),
        b=str(ref_b),
        common=len(tensors_a.keys() & tensors_b.keys()),
        added=sorted(tensors_b.keys() - tensors_a.keys()),
        removed=sorted(tensors_a.keys() - tensors_b.keys()),
        parameters_a=model_a.parameters,
        parameters_b=model_b.parameters,
    )
    same_shape = []
    for name in sorted(tensors_a.keys() & tensors_b.keys()):
        tensor_a, tensor_b = tensors_a[name], tensors_b[name]
        if tensor_a.shape != tensor_b.shape:
            result.shape_changed.append(
                {"name": name, "a": list(tensor_a.shape), "b": list(tensor_b.shape)}
            )
            continue
        if tensor_a.dtype != tensor_b.dtype:
            result.dtype_changed.append({"name": name, "a": tensor_a.dtype, "b": tensor_b.dtype})
        same_shape.append(name)
    if values:
        result.values = []
        for name in same_shape:
            diff = _diff(model_a.read(tensors_a[name]), model_b.read(tensors_b[name]))
            diff.name = name
            result.values.append(diff)
    return result
