"""`inspect_adapter`: what a LoRA adapter holds and whether it looks trained and sound.

Per module it reports the singular values of the update dW = scaling * B @ A. They come from
QR factors of A and B (an r x r SVD) rather than an SVD of the full [out, in] product: the same
values at a tiny fraction of the cost, so inspecting a 7B adapter stays fast.

`effective_rank` is the number of singular values needed to hold 99% of the update's energy
(sum of squared singular values): a rank-16 adapter whose effective rank is 2 wastes most of
its rank. `energy_top_k` is the share the top-k hold.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, UnsupportedError
from ..models.handle import Model
from ..models.tensors import TensorInfo
from .adapter import Adapter, LoraModule, base_tensor_name, read_adapter

ENERGY_THRESHOLD = 0.99
_HINTS = {
    "zero_b": "PEFT initialises lora_B to zero, so an all-zero B means no training step reached this module: check that training ran and that you saved the trained model",
    "nonfinite": "the adapter diverged or was damaged: use an earlier checkpoint or a lower learning rate",
    "missing_in_base": "the adapter targets modules this base does not have: pass the base it was trained on",
    "shape_mismatch": "the adapter was trained on a model of another size: pass the base it was trained on",
}


@dataclass
class Problem:
    severity: str  # "error" (the CLI exits 3) or "warning"
    code: str  # zero_b | nonfinite | missing_in_base | shape_mismatch
    module: str | None  # None when it concerns several modules (the message names them)
    message: str
    hint: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModuleReport:
    name: str
    kind: str
    layer: int | None
    rank: int
    alpha: float
    scaling: float
    shape: list[int]  # the update's [out, in]
    parameters: int
    dora: bool
    effective_rank: int | None  # None when the values are not finite
    energy_top_k: float | None
    singular_values: list[float]  # the top-k singular values of dW = scaling * B @ A
    sparsity: float  # share of exact zeros in A and B
    norm_a: float
    norm_b: float
    norm_delta: float | None  # Frobenius norm of dW
    relative_delta: float | None = None  # ||dW|| / ||W||, with a base
    finite: bool = True
    b_zero: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdapterReport:
    adapter: str
    base: str | None
    rank: int  # adapter_config.json's r
    ranks: list[int]  # every rank in use (rank_pattern)
    alpha: float
    scale: float  # alpha / r, or alpha / sqrt(r) with rsLoRA
    use_rslora: bool
    use_dora: bool
    fan_in_fan_out: bool
    target_modules: list[str]  # module kinds found in the weights (q_proj, ...)
    config_target_modules: list[str] | str | None  # as adapter_config.json says
    targets: dict[str, dict]  # kind -> {"modules": n, "layers": [...]}
    layers: int
    parameters: int  # LoRA parameters: A, B, DoRA magnitudes, LoRA biases
    modules_to_save: list[str]
    saved_parameters: int  # the modules_to_save copies
    total_parameters: int  # parameters + saved_parameters == PEFT's trainable parameter count
    dtype: str
    top_k: int
    modules: list[ModuleReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        return data


# --------------------------------------------------------------------------- per module


def singular_values(a: np.ndarray, b: np.ndarray, scaling: float) -> np.ndarray:
    """Singular values of scaling * B @ A from the r x r core of their QR factors."""
    _, r_b = np.linalg.qr(b.astype(np.float64))
    _, r_a = np.linalg.qr(a.astype(np.float64).T)
    return np.linalg.svd(r_b @ r_a.T, compute_uv=False) * abs(scaling)


def spectrum_stats(values: np.ndarray, top_k: int) -> tuple[int, float]:
    """(effective rank at ENERGY_THRESHOLD, energy share of the top k)."""
    energy = values.astype(np.float64) ** 2
    total = energy.sum()
    if total == 0:
        return 0, 0.0
    cumulative = np.cumsum(energy) / total
    effective = int(np.searchsorted(cumulative, ENERGY_THRESHOLD - 1e-12) + 1)
    return min(effective, len(values)), float(cumulative[min(top_k, len(values)) - 1])


def _module_report(adapter: Adapter, module: LoraModule, top_k: int) -> ModuleReport:
    lora_a, lora_b = adapter.read(module.a), adapter.read(module.b)
    extras = [adapter.read(t) for t in (module.magnitude, module.bias) if t is not None]
    finite = all(np.isfinite(x).all() for x in (lora_a, lora_b, *extras))
    report = ModuleReport(
        name=module.name,
        kind=module.kind,
        layer=module.layer,
        rank=module.rank,
        alpha=module.alpha,
        scaling=module.scaling,
        shape=[module.out_features, module.in_features],
        parameters=module.parameters,
        dora=module.magnitude is not None,
        effective_rank=None,
        energy_top_k=None,
        singular_values=[],
        sparsity=float(
            (np.count_nonzero(lora_a == 0) + np.count_nonzero(lora_b == 0))
            / (lora_a.size + lora_b.size)
        ),
        norm_a=float(np.linalg.norm(lora_a)),
        norm_b=float(np.linalg.norm(lora_b)),
        norm_delta=None,
        finite=finite,
        b_zero=finite and not np.any(lora_b),
    )
    if finite:
        values = singular_values(lora_a, lora_b, module.scaling)
        report.effective_rank, report.energy_top_k = spectrum_stats(values, top_k)
        report.singular_values = [float(v) for v in values[:top_k]]
        report.norm_delta = float(np.sqrt(np.sum(values**2)))
    return report


# --------------------------------------------------------------------------- against a base


def _gguf_namer(base: Model):
    """HF module name -> GGUF tensor name, through gguf-py's own table."""
    import gguf

    arch_name = str(base.metadata.get("general.architecture", ""))
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name), None)
    if arch is None:
        raise UnsupportedError(
            f"GGUF architecture {arch_name!r} is unknown to gguf-py", "pass a safetensors base"
        )
    table = gguf.get_tensor_name_map(arch, base.arch.layers or 0)
    return lambda name: (table.get_name(name) or name) + ".weight"


def _base_lookup(base: Model):
    """module name -> the base's TensorInfo for its weight, or None."""
    if base.kind == "config":
        raise InvalidInputError(
            f"base {base.source.ref} is a config without weights",
            "pass the base model's folder or weights file to check the adapter against it",
        )
    by_name = {t.name: t for t in base.tensors}
    names = set(by_name)
    if base.kind == "gguf":
        to_gguf = _gguf_namer(base)
        return lambda module: by_name.get(to_gguf(module))
    return lambda module: by_name.get(base_tensor_name(module + ".weight", names) or "")


def _check_against_base(
    adapter: Adapter, base: Model, reports: dict[str, ModuleReport]
) -> list[tuple[str, str, str]]:
    """Fill relative_delta; return (code, module, message) for modules that do not fit."""
    lookup, found = _base_lookup(base), []
    for module in adapter.modules.values():
        info = lookup(module.name)
        if info is None:
            found.append(("missing_in_base", module.name, f"{module.name}: not in the base"))
        elif tuple(info.shape) != _expected_shape(base, module):
            what = f"{module.name}: base weight is {list(info.shape)}, the adapter needs {list(module.base_shape)}"
            found.append(("shape_mismatch", module.name, what))
        else:
            _relative_delta(base, info, reports[module.name])
    if len(found) == len(adapter.modules) and all(c == "missing_in_base" for c, *_ in found):
        raise InvalidInputError(
            f"base {base.source.ref} has none of the {len(found)} modules this adapter targets (e.g. {found[0][1]})",
            "this adapter was trained on a different model; pass its base"
            + (f" ({adapter.base_model_name_or_path})" if adapter.base_model_name_or_path else ""),
        )
    return found


def _expected_shape(base: Model, module: LoraModule) -> tuple[int, int]:
    if base.kind == "gguf" and not module.embedding:  # GGUF stores Conv1D weights as [out, in]
        return (module.out_features, module.in_features)
    return module.base_shape


def _relative_delta(base: Model, info: TensorInfo, report: ModuleReport) -> None:
    if report.norm_delta is None:
        return
    norm = float(np.linalg.norm(base.read(info)))
    report.relative_delta = report.norm_delta / norm if norm > 0 else None


# --------------------------------------------------------------------------- problems


def _aggregate(code: str, hits: list[tuple[str, str]], total: int) -> Problem:
    """One problem per kind: a single module is named, many are counted with examples."""
    if len(hits) == 1:
        module, message = hits[0]
        return Problem("error", code, module, message, _HINTS[code])
    examples = ", ".join(m for m, _ in hits[:3]) + (", ..." if len(hits) > 3 else "")
    what = {
        "zero_b": "lora_B is all zeros (never trained)",
        "nonfinite": "NaN or Inf values",
        "missing_in_base": "not in the base",
        "shape_mismatch": "shapes that do not fit the base",
    }[code]
    return Problem(
        "error", code, None, f"{len(hits)} of {total} modules: {what} ({examples})", _HINTS[code]
    )


def _problems(adapter: Adapter, reports: list[ModuleReport], base_hits: list) -> list[Problem]:
    hits: dict[str, list[tuple[str, str]]] = {}
    for report in reports:
        if not report.finite:
            hits.setdefault("nonfinite", []).append(
                (report.name, f"{report.name}: NaN or Inf in A/B")
            )
        elif report.b_zero:
            hits.setdefault("zero_b", []).append(
                (report.name, f"{report.name}: lora_B is all zeros")
            )
    for name, info in adapter.saved.items():
        if not np.isfinite(adapter.read(info)).all():
            hits.setdefault("nonfinite", []).append((name, f"{name}: NaN or Inf values"))
    for code, module, message in base_hits:
        hits.setdefault(code, []).append((module, message))
    return [_aggregate(code, found, len(reports)) for code, found in hits.items()]


def _targets(modules: list[LoraModule]) -> dict[str, dict]:
    targets: dict[str, dict] = {}
    for m in modules:
        entry = targets.setdefault(m.kind, {"modules": 0, "layers": []})
        entry["modules"] += 1
        if m.layer is not None and m.layer not in entry["layers"]:
            entry["layers"].append(m.layer)
    return dict(sorted(targets.items()))


def inspect_adapter(
    adapter: str | Path, base: str | Path | None = None, top_k: int = 4
) -> AdapterReport:
    """Ranks, scaling, targets, parameter counts, per-module spectra, and problems found."""
    if top_k < 1:
        raise InvalidInputError(f"top_k={top_k}", "top_k is a positive number of singular values")
    lora = read_adapter(adapter)
    modules = list(lora.modules.values())
    reports = {m.name: _module_report(lora, m, top_k) for m in modules}
    base_hits = _check_against_base(lora, Model.open(base), reports) if base is not None else []
    dtypes = Counter(t.dtype for m in modules for t in m.tensors)
    targets = _targets(modules)
    return AdapterReport(
        adapter=str(adapter),
        base=str(base) if base is not None else None,
        rank=lora.r,
        ranks=sorted({m.rank for m in modules}),
        alpha=lora.lora_alpha,
        scale=lora.scale,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        fan_in_fan_out=lora.fan_in_fan_out,
        target_modules=list(targets),
        config_target_modules=lora.target_modules,
        targets=targets,
        layers=len({m.layer for m in modules if m.layer is not None}),
        parameters=lora.parameters,
        modules_to_save=lora.modules_to_save,
        saved_parameters=lora.saved_parameters,
        total_parameters=lora.parameters + lora.saved_parameters,
        dtype=dtypes.most_common(1)[0][0],
        top_k=top_k,
        modules=list(reports.values()),
        problems=_problems(lora, list(reports.values()), base_hits),
    )
