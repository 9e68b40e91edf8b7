"""`convert_model`: one model reference -> gguf | safetensors | pth | apr, written atomically and
verified by reading the output back before it is renamed into place.

Sources are streamed tensor by tensor (safetensors shards, pth, apr): safetensors and APR
outputs hold one tensor in memory at a time; pth output keeps memory-mapped views until
`torch.save` (see pth.py). GGUF sources are loaded whole by transformers, which dequantises
them and undoes llama.cpp's q/k permutation; GGUF output is gguf_writer.py's.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InvalidInputError, UnsupportedError
from ..fsutil import atomic_dir, atomic_path
from ..models.handle import Model, is_buffer
from ..models.resolve import ModelSource, resolve
from ..models.safetensors_format import read_header
from .apr import choose_data_mode, read_apr, sha256_of
from .planning import PlannedTensor, plan_model, plan_state_dict, raw_reader, verify_output
from .safetensors_writer import check_replaceable_folder, safetensors_raw

TARGETS = ("gguf", "safetensors", "pth", "apr")
CASTS = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
TORCH_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
GGUF_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0")
GGUF_DEFAULT = "f16"  # what --to gguf writes when --quantize is not given
FILE_SUFFIXES = {"pth": (".pth", ".pt", ".bin"), "apr": (".apr",), "gguf": (".gguf",)}


@dataclass
class ConvertResult:
    """What a conversion wrote and how it was checked."""

    source: str
    format: str
    output: str
    quantize: str | None
    tensors: int
    parameters: int
    file_size_bytes: int
    seconds: float
    verified: bool
    verification: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- checks


def _check_request(to: str, quantize: str | None) -> tuple[str, str | None]:
    target = str(to).lower()
    if target not in TARGETS:
        raise InvalidInputError(
            f"unknown target format {to!r}", f"use one of: {', '.join(TARGETS)}"
        )
    quant = quantize.lower() if quantize else None
    if target == "gguf":
        if quant is not None and quant not in GGUF_QUANTS:
            raise InvalidInputError(
                f"unknown GGUF quantization {quantize!r}", f"use one of: {', '.join(GGUF_QUANTS)}"
            )
    elif quant is not None and quant not in CASTS:
        hint = (
            f"{quant} blocks exist only in GGUF: use --to gguf, or cast with f32, f16 or bf16"
            if quant in GGUF_QUANTS
            else f"use one of: {', '.join(CASTS)} (or leave it out to keep the source dtypes)"
        )
        raise InvalidInputError(f"--quantize {quantize} is not available for {target} output", hint)
    return target, quant


def _writable_folder(folder: Path) -> None:
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputError(
            f"cannot write into {folder}: {existing} is not a writable folder",
            "choose an output path in a folder you can write to",
        )


def _check_output(source: ModelSource, target: str, output: Path) -> bool:
    """Refuse outputs that would overwrite the input or cannot be written; True for a folder."""
    as_folder = target == "safetensors" and output.suffix.lower() != ".safetensors"
    if not as_folder and output.is_dir():
        raise InvalidInputError(
            f"{output} is a folder", f"give a file name, e.g. {output / 'model'}"
        )
    suffixes = FILE_SUFFIXES.get(target)
    if suffixes and output.suffix.lower() not in suffixes:
        raise InvalidInputError(
            f"{target} output {output.name!r} should end in {' or '.join(suffixes)}",
            f"name it like {output.stem or 'model'}{suffixes[0]}",
        )
    if as_folder and output.is_file():
        raise InvalidInputError(
            f"{output} is a file, but safetensors output without a .safetensors suffix is a folder",
            "give a folder path, or a file name ending in .safetensors",
        )
    out = output.resolve()
    written = [out] + ([out.with_name(out.name + ".bin")] if target == "apr" else [])
    for path in [source.path, *source.weight_files]:
        src = Path(path).resolve()
        if src in written or (as_folder and out in src.parents):
            raise InvalidInputError(
                f"output {output} would overwrite the input {path}",
                "write the converted model somewhere else",
            )
    if as_folder and output.is_dir():
        check_replaceable_folder(output)
    _writable_folder(output if as_folder else output.parent)
    return as_folder


# --------------------------------------------------------------------------- writers


def _metadata(model: Model) -> dict[str, str]:
    """The source's string metadata (safetensors and apr sources), kept across conversions."""
    base = model.metadata if model.kind in ("safetensors", "apr") else {}
    return {str(k): v for k, v in base.items() if isinstance(v, str) and k != "format"}


def _write_file(target: str, output: Path, planned: list[PlannedTensor], metadata: dict) -> dict:
    """One .safetensors or .pth file under a temp name; verified, then renamed into place."""
    from .pth import write_pth
    from .safetensors_writer import write_safetensors

    with atomic_path(output) as tmp:
        if target == "pth":
            digests = write_pth(tmp, planned)
            check = Model(ModelSource(str(tmp), "pth", tmp, [tmp]))
            return verify_output(planned, digests, check.tensors, raw_reader(check))
        # transformers refuses safetensors files without `format: pt`
        digests = write_safetensors(tmp, planned, metadata | {"format": "pt"})
        # what Model.tensors does for a .safetensors file (the temp name has another suffix)
        tensors = read_header(tmp).tensors
        return verify_output(planned, digests, tensors, safetensors_raw)


def _write_apr(
    output: Path, planned: list[PlannedTensor], metadata: dict, config: dict | None, data: str
) -> dict:
    from .apr import write_apr_inline, write_apr_sidecar

    mode = choose_data_mode(planned, data)
    sidecar = output.with_name(output.name + ".bin")
    # the sidecar's context is entered last, so it is renamed first: the JSON never dangles
    with atomic_path(output) as tmp_json, contextlib.ExitStack() as stack:
        if mode == "inline":
            tmp_bin, digests = None, write_apr_inline(tmp_json, planned, metadata, config)
        else:
            tmp_bin = stack.enter_context(atomic_path(sidecar))
            digests = write_apr_sidecar(tmp_json, tmp_bin, sidecar.name, planned, metadata, config)
        check = read_apr(tmp_json, sidecar=tmp_bin)
        report = verify_output(planned, digests, check.tensors, lambda i: check.read_raw(i.name))
    return report | {"apr_data": mode}


def _write_folder(
    output: Path, planned: list[PlannedTensor], model: Model, config: dict | None
) -> dict:
    """A Hugging Face folder (model.safetensors, config, tokenizer) built in a temp dir."""
    from .safetensors_writer import write_hf_folder

    source_dir = model.source.path if model.source.path.is_dir() else model.source.path.parent
    with atomic_dir(output) as tmp:
        metadata = _metadata(model) | {"format": "pt"}
        digests = write_hf_folder(tmp, planned, metadata, config, source_dir)
        check = Model(resolve(str(tmp)))
        return verify_output(planned, digests, check.tensors, raw_reader(check))


def _source_config(model: Model) -> dict | None:
    if model.kind == "apr":
        return model._apr.config
    return model.source.config


def _convert_streamed(model: Model, job: _Job) -> tuple[list[PlannedTensor], dict, list[str]]:
    planned = plan_model(model, job.cast)
    config = _source_config(model)
    if config is not None and job.cast:  # transformers loads weights in the config's dtype
        config = config | {"dtype": TORCH_DTYPE_NAMES[job.cast]}
        config.pop("torch_dtype", None)
    if job.as_folder:
        return planned, _write_folder(job.output, planned, model, config), []
    if job.target == "apr":
        metadata = _metadata(model) | {"converted_from": model.source.ref}
        return planned, _write_apr(job.output, planned, metadata, config, job.apr_data), []
    return planned, _write_file(job.target, job.output, planned, _metadata(model)), []


def _convert_gguf_source(model: Model, job: _Job) -> tuple[list[PlannedTensor], dict, list[str]]:
    """GGUF in, via transformers: dequantised, q/k un-permuted, Hugging Face names (loaded whole)."""
    from .safetensors_writer import aliases, load_gguf_with_transformers, save_transformers_folder

    hf_model, config = load_gguf_with_transformers(model.source.path, job.cast or "F32")
    state = hf_model.state_dict()
    planned = plan_state_dict(state, None)  # transformers already loaded it in the target dtype
    how = (
        f"GGUF loaded whole by transformers: dequantised to {TORCH_DTYPE_NAMES[job.cast or 'F32']}"
    )
    if job.as_folder:
        with atomic_dir(job.output) as tmp:
            notes = [how, *save_transformers_folder(hf_model, model.source.path, tmp)]
            digests = {p.name: sha256_of(p.load()) for p in planned}
            check = Model(resolve(str(tmp)))
            verification = verify_output(
                planned, digests, check.tensors, raw_reader(check), aliases(state)
            )
        return planned, verification, notes
    if job.target == "apr":
        metadata = {"converted_from": model.source.ref, "source_format": "gguf"}
        return planned, _write_apr(job.output, planned, metadata, config, job.apr_data), [how]
    return planned, _write_file(job.target, job.output, planned, {}), [how]


# --------------------------------------------------------------------------- entry point


@dataclass
class _Job:
    target: str
    output: Path
    quantize: str | None
    cast: str | None  # safetensors dtype name of the cast, None keeps source dtypes
    as_folder: bool
    apr_data: str


def _output_files(output: Path, verification: dict) -> list[Path]:
    if output.is_dir():
        return sorted(p for p in output.iterdir() if p.is_file())
    if verification.get("apr_data") == "sidecar":
        return [output, output.with_name(output.name + ".bin")]
    return [output]


def _result(model: Model, job: _Job, outcome: tuple, started: float) -> ConvertResult:
    planned, verification, notes = outcome
    files = _output_files(job.output, verification)
    written = [p for p in planned if p.name not in verification.get("aliases_dropped", ())]
    return ConvertResult(
        source=model.source.ref,
        format=job.target,
        output=str(job.output),
        quantize=job.quantize,
        tensors=verification["tensors_checked"],
        parameters=sum(p.numel for p in written if not is_buffer(p)),
        file_size_bytes=sum(f.stat().st_size for f in files),
        seconds=round(time.perf_counter() - started, 3),
        verified=True,
        verification=verification,
        files=[str(f) for f in files],
        notes=notes,
    )


def _to_gguf(model: Model, job: _Job, started: float) -> ConvertResult:
    from .gguf_writer import write_gguf  # its own atomic write and read-back verification

    exported = write_gguf(model, job.output, job.quantize or GGUF_DEFAULT).to_dict()
    return ConvertResult(
        source=model.source.ref,
        format="gguf",
        output=str(job.output),
        quantize=exported["quantize"],
        tensors=exported["tensors"],
        parameters=exported["parameters"],
        file_size_bytes=exported["file_size_bytes"],
        seconds=round(time.perf_counter() - started, 3),
        verified=exported["verified"],
        verification=exported["verification"] | {"types": exported["types"]},
        files=[str(job.output)],
        notes=exported["notes"],
    )


def convert_model(
    ref: str | Path,
    to: str,
    output: str | Path,
    quantize: str | None = None,
    *,
    apr_data: str = "auto",
) -> ConvertResult:
    """Convert a model to gguf | safetensors | pth | apr; the input is never modified.

    `quantize`: f32 | f16 | bf16 cast float tensors (None keeps the source dtypes; GGUF sources
    become f32); q8_0 | q4_0 only for gguf. `apr_data`: auto | inline | sidecar. A `.safetensors`
    output is one file; any other safetensors output is a Hugging Face folder.
    """
    started = time.perf_counter()
    target, quant = _check_request(to, quantize)
    if apr_data not in ("auto", "inline", "sidecar"):
        raise InvalidInputError(
            f"unknown APR data mode {apr_data!r}", "use auto, inline or sidecar"
        )
    model = Model.open(ref)
    if model.kind == "config":
        raise InvalidInputError(f"{ref} has no weights to convert", "give a model with weights")
    if model.kind == "adapter":
        raise UnsupportedError(
            f"{ref} is a LoRA adapter", "convert adapters with `entrenar lora convert`"
        )
    output = Path(output).expanduser().absolute()
    as_folder = _check_output(model.source, target, output)
    job = _Job(target, output, quant, CASTS.get(quant or ""), as_folder, apr_data)
    if target == "gguf":
        return _to_gguf(model, job, started)
    try:
        if model.kind == "gguf":
            outcome = _convert_gguf_source(model, job)
        else:
            outcome = _convert_streamed(model, job)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write {output}: {exc.strerror or exc}", "check free space and permissions"
        ) from exc
    return _result(model, job, outcome, started)
