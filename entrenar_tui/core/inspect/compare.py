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


def _diff(a: np.ndarray, b: np.ndarray) -> TensorDiff:
    """Accumulate in float64 chunks so huge tensors neither overflow nor need a full copy."""
    a = a.reshape(-1)
    b = b.reshape(-1)
    max_abs, num, den = 0.0, 0.0, 0.0
    step = 1 << 22
    for i in range(0, a.size, step):
        ca = np.asarray(a[i : i + step], dtype=np.float64)
        cb = np.asarray(b[i : i + step], dtype=np.float64)
        d = ca - cb
        if d.size:
            max_abs = max(max_abs, float(np.max(np.abs(d))))
        num += float(np.dot(d, d))
        den += float(np.dot(ca, ca))
    rel = math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)
    return TensorDiff("", max_abs, rel)


def compare_models(ref_a: str, ref_b: str, values: bool = False) -> CompareResult:
    """Structural differences; with `values`, max |a-b| and relative L2 per matching tensor."""
    model_a, model_b = Model.open(ref_a), Model.open(ref_b)
    ta = {t.name: t for t in model_a.tensors}
    tb = {t.name: t for t in model_b.tensors}
    result = CompareResult(
        a=str(ref_a),
        b=str(ref_b),
        common=len(ta.keys() & tb.keys()),
        added=sorted(tb.keys() - ta.keys()),
        removed=sorted(ta.keys() - tb.keys()),
        parameters_a=model_a.parameters,
        parameters_b=model_b.parameters,
    )
    same_shape = []
    for name in sorted(ta.keys() & tb.keys()):
        x, y = ta[name], tb[name]
        if x.shape != y.shape:
            result.shape_changed.append({"name": name, "a": list(x.shape), "b": list(y.shape)})
            continue
        if x.dtype != y.dtype:
            result.dtype_changed.append({"name": name, "a": x.dtype, "b": y.dtype})
        same_shape.append(name)
    if values:
        result.values = []
        for name in same_shape:
            diff = _diff(model_a.read(ta[name]), model_b.read(tb[name]))
            diff.name = name
            result.values.append(diff)
    return result
