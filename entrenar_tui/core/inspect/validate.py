"""`inspect validate`: is this model's every file well formed and every value usable?

Structure first (the strict safetensors header rules, GGUF via gguf-py, shard indexes,
config.json), then values (NaN, Inf, all-zero tensors; streamed from a memory map one
tensor at a time, see validate_scan), then architecture (shapes and layer count against
config.json). Each finding is a `Problem`; a broken file is a problem, not an exception,
so one run reports everything. Only a reference that names no model at all raises
(ModelNotFoundError, exit 2).
"""

from __future__ import annotations

import json
import mmap
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, UnsupportedError
from ..models import Model, ModelSource, resolve
from ..models.resolve import PACKAGED, WEIGHT_SUFFIXES, packaged_path
from ..models.safetensors_format import LFS_POINTER_PREFIX, read_header
from ..models.tensors import FLOAT_DTYPES, TensorInfo
from . import validate_shapes
from .validate_scan import SCANNABLE, ValueCounts, scan_array, scan_bytes, scan_gguf_tensor

MAX_PER_CODE = 50  # beyond this, one summary line per code instead of thousands of lines
_JSON_FILES = ("config.json", "model.safetensors.index.json", "adapter_config.json")
_WEIGHT_PATTERNS = {
    "safetensors": ("*.safetensors",),
    "gguf": ("*.gguf",),
    "pth": ("*.bin", "*.pth", "*.pt"),
}
_SUFFIX_KINDS = {**WEIGHT_SUFFIXES, ".json": "config"}
_HINTS = {
    "nan": "the weights are corrupt or training diverged; re-download them or use an earlier checkpoint",
    "inf": "the weights overflowed (often an fp16 export); re-export in bf16/fp32 or use an earlier checkpoint",
    "all_zero": "a tensor of zeros usually means a failed save, merge or conversion; re-export the model",
    "shape_vs_config": "the weights do not match config.json (wrong config or edited file); transformers would refuse to load them",
    "layer_count": "layers are missing from the weights, or num_hidden_layers in config.json is wrong",
    "config_inconsistent": "fix config.json: the architecture it describes cannot exist",
    "missing_shard": "download the missing shard again (or the whole model)",
    "missing_tensor": "the shard does not hold what the index says; download the shard or the index again",
    "unindexed_tensor": "the index does not list this tensor, so loaders will ignore it; regenerate the index",
    "duplicate_tensor": "two files define the same tensor; remove the stale file",
    "mixed_dtypes": "often harmless (norms kept in F32), but a half-finished conversion looks the same",
    "bad_json": "fix the file or download it again",
    "unreadable": "check the file's permissions",
    "bad_index": "the index must map tensor names to shard files under weight_map; download it again",
    "no_weights": "point validate at the weights (a file or the model folder) to check values",
}


@dataclass
class Problem:
    """One finding, renderable on one line: `severity: code [tensor]: message (hint: ...)`."""

    severity: str  # "error" | "warning"
    code: str  # short slug: nan, inf, all_zero, truncated, overlap, shape_vs_config, ...
    message: str
    hint: str = ""
    tensor: str | None = None
    file: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ValidationReport:
    ref: str
    kind: str
    strict: bool = False
    files_checked: int = 0
    tensors_checked: int = 0
    bytes_scanned: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.severity == "warning" for p in self.problems)

    @property
    def ok(self) -> bool:
        """No errors; with strict, no warnings either."""
        return self.errors == 0 and not (self.strict and self.warnings)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(ok=self.ok, errors=self.errors, warnings=self.warnings)
        return data


class _Findings:
    """Collects problems; caps each code at MAX_PER_CODE lines plus one summary."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.seen: Counter = Counter()

    def add(
        self,
        severity: str,
        code: str,
        message: str,
        hint: str | None = None,
        tensor: str | None = None,
        file: Path | str | None = None,
    ) -> None:
        self.seen[(severity, code)] += 1
        if self.seen[(severity, code)] <= MAX_PER_CODE:
            hint = _HINTS.get(code, "") if hint is None else hint
            message = " ".join(message.split())  # one line, whatever the source said
            self.problems.append(Problem(severity, code, message, hint, tensor, file and str(file)))

    def corrupt(self, exc: CorruptFileError, file: Path | str | None, code: str) -> None:
        self.add("error", getattr(exc, "problem_code", code), exc.message, exc.hint, file=file)

    def finish(self) -> list[Problem]:
        for (severity, code), count in self.seen.items():
            if count > MAX_PER_CODE:
                more = f"{count - MAX_PER_CODE} more {code} problems not listed"
                self.problems.append(Problem(severity, code, more, _HINTS.get(code, "")))
        return self.problems


def validate_model(ref: str, strict: bool = False) -> ValidationReport:
    """Check a model's structure, values and shapes; raises only if `ref` names no model."""
    start = time.perf_counter()
    findings = _Findings()
    report = ValidationReport(str(ref), "unknown", strict)
    source = _open_source(str(ref), findings)
    if source is not None:
        report.kind = source.kind
        tensors, arch = _CHECKERS.get(source.kind, _check_via_model)(source, report, findings)
        report.tensors_checked = len(tensors)
        _check_dtypes(tensors, source.kind, findings)
        if arch is not None:
            _check_architecture(tensors, arch, source.config, findings)
    report.problems = findings.finish()
    report.seconds = time.perf_counter() - start
    return report


# --- finding the files -------------------------------------------------------------------


def _local_path(ref: str) -> Path | None:
    path = Path(ref).expanduser()
    if path.exists():
        return path
    return packaged_path(ref) if ref in PACKAGED else None


def _json_problem(path: Path) -> tuple[str, str] | None:
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        return "unreadable", f"{path.name} cannot be read ({exc.strerror})"
    except UnicodeDecodeError as exc:
        return "bad_json", f"{path.name} is not UTF-8 (byte {exc.start})"
    except (ValueError, RecursionError) as exc:
        return "bad_json", f"{path.name} is not valid JSON ({str(exc)[:120]})"
    if not isinstance(obj, dict):
        return "bad_json", f"{path.name} is not a JSON object"
    weight_map = obj.get("weight_map")
    if path.name == "model.safetensors.index.json" and not (
        isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())
    ):
        return "bad_index", f"{path.name} has no weight_map of tensor name -> shard file"
    return None


def _open_source(ref: str, findings: _Findings) -> ModelSource | None:
    """resolve(), except that a broken config.json or index is reported, not raised."""
    path = _local_path(ref)
    if path is not None:
        folder = path if path.is_dir() else path.parent
        broken = [
            (f, p)
            for f in (folder / n for n in _JSON_FILES)
            if f.is_file() and (p := _json_problem(f))
        ]
        for file, (code, message) in broken:
            findings.add("error", code, message, file=file)
        if broken:
            return _fallback_source(ref, path, folder)
    try:
        return resolve(ref)
    except CorruptFileError as exc:  # ModelNotFoundError (no model at all) propagates
        findings.corrupt(exc, path, "bad_json")
        return None


def _fallback_source(ref: str, path: Path, folder: Path) -> ModelSource:
    """The weights next to an unreadable config/index, so their own checks still run."""
    if path.is_file() and path.name != "model.safetensors.index.json":
        kind = _SUFFIX_KINDS.get(path.suffix.lower(), "config")
        return ModelSource(ref, kind, path, [] if kind == "config" else [path])
    for kind, patterns in _WEIGHT_PATTERNS.items():
        files = sorted(f for pattern in patterns for f in folder.glob(pattern))
        if files:
            return ModelSource(ref, kind, folder, files)
    return ModelSource(ref, "config", folder, [])


# --- safetensors ------------------------------------------------------------------------


def _check_safetensors(source: ModelSource, report: ValidationReport, findings: _Findings):
    if not all(f.suffix == ".safetensors" for f in source.weight_files):
        return _check_via_model(source, report, findings)  # an adapter saved as .bin
    headers = {}
    for file in source.weight_files:
        if source.index is not None and not file.exists():
            message = f"{file.name} is named by model.safetensors.index.json but does not exist"
            findings.add("error", "missing_shard", message, file=file)
            continue
        report.files_checked += 1
        try:
            headers[file] = read_header(file)
        except CorruptFileError as exc:
            findings.corrupt(exc, file, "corrupt")
    if source.index is not None:
        _check_index(source, headers, findings)
    tensors = [t for header in headers.values() for t in header.tensors]
    for name, count in Counter(t.name for t in tensors).items():
        if count > 1:
            findings.add(
                "error", "duplicate_tensor", f"tensor is defined in {count} files", tensor=name
            )
    for file, header in headers.items():
        _scan_mapped(file, header.tensors, report, findings)
    return tensors, _config_arch(source, findings)


def _check_index(source: ModelSource, headers: dict, findings: _Findings) -> None:
    """Every tensor the index names is in the shard it names, and nothing is unlisted."""
    folder = source.path if source.path.is_dir() else source.path.parent
    weight_map: dict = source.index.get("weight_map", {})
    held = {file: {t.name for t in header.tensors} for file, header in headers.items()}
    for name, shard in weight_map.items():
        names = held.get(folder / shard)
        if names is not None and name not in names:
            findings.add(
                "error",
                "missing_tensor",
                f"the index puts it in {shard}, which lacks it",
                tensor=name,
                file=folder / shard,
            )
    for file, names in held.items():
        for name in sorted(names - weight_map.keys()):
            findings.add(
                "warning",
                "unindexed_tensor",
                f"{file.name} holds it but the index does not list it",
                tensor=name,
                file=file,
            )


def _scan_mapped(file: Path, tensors: list[TensorInfo], report, findings: _Findings) -> None:
    """Scan one file's float tensors from a read-only memory map, in file order."""
    wanted = sorted(
        (t for t in tensors if t.dtype in SCANNABLE and t.nbytes), key=lambda t: t.offset
    )
    if not wanted:
        return
    with open(file, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    data = np.frombuffer(mapped, dtype=np.uint8)
    for tensor in wanted:
        counts = scan_bytes(data[tensor.offset : tensor.offset + tensor.nbytes], tensor.dtype)
        # hand the pages back: resident memory stays at one tensor, not the whole model
        page = tensor.offset - tensor.offset % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, page, tensor.offset + tensor.nbytes - page)
        report.bytes_scanned += tensor.nbytes
        _judge(tensor, counts, findings)
    del data
    mapped.close()


# --- GGUF, PyTorch, APR -----------------------------------------------------------------


def _lfs_pointer(file: Path, findings: _Findings) -> bool:
    with open(file, "rb") as handle:
        is_pointer = handle.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX
    if is_pointer:
        findings.add(
            "error",
            "lfs_pointer",
            f"{file.name} is a Git-LFS pointer, not the weights",
            "run `git lfs pull` in its repository (or download the file itself)",
            file=file,
        )
    return is_pointer


def _check_gguf(source: ModelSource, report: ValidationReport, findings: _Findings):
    from ..models.gguf_format import arch_from_gguf, open_gguf

    file = source.weight_files[0]
    report.files_checked = 1
    if _lfs_pointer(file, findings):
        return [], None
    try:
        gguf_file = open_gguf(file)
    except CorruptFileError as exc:
        findings.corrupt(exc, file, "bad_gguf")
        return [], None
    _check_gguf_layout(gguf_file.tensors, file, findings)
    for info, tensor in zip(gguf_file.tensors, gguf_file.reader.tensors, strict=True):
        counts = scan_gguf_tensor(tensor)
        if counts is not None:
            report.bytes_scanned += info.nbytes
            _judge(info, counts, findings)
    return gguf_file.tensors, arch_from_gguf(gguf_file)


def _check_gguf_layout(tensors: list[TensorInfo], file: Path, findings: _Findings) -> None:
    """gguf-py does not check that tensor data stays in the file and does not overlap."""
    size, end, previous = file.stat().st_size, 0, None
    for tensor in sorted(tensors, key=lambda t: t.offset):
        if tensor.offset < end:
            findings.add(
                "error",
                "overlap",
                f"tensor data overlaps {previous}",
                "the file is corrupt",
                tensor=tensor.name,
                file=file,
            )
        if tensor.offset + tensor.nbytes > size:
            findings.add(
                "error",
                "truncated",
                f"tensor data ends past the end of the {size}-byte file",
                "the file is truncated; download it again",
                tensor=tensor.name,
                file=file,
            )
        end, previous = max(end, tensor.offset + tensor.nbytes), tensor.name


def _check_via_model(source: ModelSource, report: ValidationReport, findings: _Findings):
    """PyTorch state dicts (weights_only) and APR files, through the Model handle."""
    if not source.weight_files:
        message = "only a config.json: there are no weights to check"
        findings.add("warning" if source.kind == "config" else "error", "no_weights", message)
        return [], _config_arch(source, findings)
    report.files_checked = len(source.weight_files)
    if _lfs_pointer(source.weight_files[0], findings):
        return [], None
    model = Model(source)
    try:
        tensors = model.tensors
    except (CorruptFileError, UnsupportedError) as exc:
        findings.corrupt(exc, source.weight_files[0], f"bad_{source.kind}")
        return [], None
    for info in tensors:
        if info.dtype in FLOAT_DTYPES and info.numel:
            report.bytes_scanned += info.nbytes
            _judge(info, scan_array(np.asarray(model.read(info))), findings)
    return tensors, _config_arch(source, findings)


_CHECKERS = {"safetensors": _check_safetensors, "adapter": _check_safetensors, "gguf": _check_gguf}


# --- judging ----------------------------------------------------------------------------


def _judge(tensor: TensorInfo, counts: ValueCounts, findings: _Findings) -> None:
    file = tensor.file
    if counts.nan:
        findings.add(
            "error",
            "nan",
            f"{counts.nan} NaN values of {counts.numel}",
            tensor=tensor.name,
            file=file,
        )
    if counts.inf:
        findings.add(
            "error",
            "inf",
            f"{counts.inf} Inf values of {counts.numel}",
            tensor=tensor.name,
            file=file,
        )
    if counts.all_zero and not tensor.name.endswith("bias"):
        # Zero is every bias's initial value and many trained ones keep it (MiniLM's pooler):
        # not reported. A zero norm scale or untrained LoRA B is suspect (warning); a zero
        # weight matrix is a failed save or conversion (error).
        matrix = len(tensor.shape) >= 2 and min(tensor.shape) > 1 and tensor.name.endswith("weight")
        severity = "error" if matrix and "lora_B" not in tensor.name else "warning"
        findings.add(
            severity,
            "all_zero",
            f"all {counts.numel} values are zero",
            tensor=tensor.name,
            file=file,
        )


def _check_dtypes(tensors: list[TensorInfo], kind: str, findings: _Findings) -> None:
    if kind == "gguf":  # F32 norms beside F16/quantised weights is how GGUF is meant to be
        return
    floats = Counter(t.dtype for t in tensors if t.dtype in FLOAT_DTYPES)
    if len(floats) > 1:
        spread = ", ".join(f"{dtype} ({n} tensors)" for dtype, n in floats.most_common())
        findings.add("warning", "mixed_dtypes", f"float tensors mix dtypes: {spread}")


def _config_arch(source: ModelSource, findings: _Findings):
    if source.kind == "adapter" or not isinstance(source.config, dict):
        return None
    from ..models.arch import from_config

    try:
        return from_config(source.config)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        findings.add("error", "config_inconsistent", f"config.json has unusable values ({exc})")
        return None


def _check_architecture(tensors, arch, config: dict | None, findings: _Findings) -> None:
    issues = validate_shapes.check_config(arch, config)
    if tensors:
        issues += validate_shapes.check_shapes(tensors, arch)
        issues += validate_shapes.check_layers(tensors, arch)
    for issue in issues:
        findings.add("error", issue.code, issue.message, tensor=issue.tensor)
