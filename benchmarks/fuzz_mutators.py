"""Mutations and per-reader cases for benchmarks/fuzz_readers.py.

`make_case(reader, seeds, rng, workdir)` copies one seed into `workdir`, mutates it (bytes, a
JSON/YAML value, a file replaced by a folder, a half-written tail) and returns the function
that feeds it to the reader and the commands built on it.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from pathlib import Path

READERS = {
    "safetensors": "safetensors (+ info/validate/memory)",
    "gguf": "GGUF (+ info/validate/read)",
    "config": "distill config + `--set`",
    "adapter": "LoRA adapter folder",
    "apr": "APR",
    "pth": "pth",
    "run": "run directory (follow)",
    "resume": "run directory (rundir, --resume)",
}

INTERESTING_INTS = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    16,
    31,
    32,
    64,
    255,
    256,
    1023,
    4096,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -1,
    -2,
    -(2**31),
    -(2**63),
]
BIG_DIGITS = "9" * 5000
DEEP = 100_000


def warm_imports() -> None:
    """Import everything the readers need once, in the parent, so forked workers start warm."""
    import gguf  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import yaml  # noqa: F401

    from entrenar_tui.core import memory  # noqa: F401
    from entrenar_tui.core.convert import apr  # noqa: F401
    from entrenar_tui.core.distill import config, rundir  # noqa: F401
    from entrenar_tui.core.inspect import info, validate  # noqa: F401
    from entrenar_tui.core.lora import inspect  # noqa: F401
    from entrenar_tui.core.models import gguf_format, handle, tensor_data  # noqa: F401
    from entrenar_tui.core.runs import follow  # noqa: F401


# --------------------------------------------------------------------------- bytes


def _pack(rng: random.Random) -> bytes:
    value = rng.choice(INTERESTING_INTS)
    width = rng.choice((1, 2, 4, 8))
    endian = "<" if rng.random() < 0.85 else ">"
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
    return struct.pack(endian + fmt, value % (1 << (8 * width)))


def mutate_bytes(data: bytes, rng: random.Random, hot: int | None = None) -> bytes:
    """1-4 byte-level edits; positions favour the first `hot` bytes (the header)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        span = hot if hot and rng.random() < 0.8 else len(buf)
        pos = rng.randrange(max(1, min(span, len(buf)) or 1))
        op = rng.random()
        if op < 0.3:
            chunk = _pack(rng)
            if rng.random() < 0.7:
                pos -= pos % len(chunk)
            buf[pos : pos + len(chunk)] = chunk
        elif op < 0.5 and buf:
            buf[pos % len(buf)] ^= 1 << rng.randrange(8)
        elif op < 0.6 and buf:
            buf[pos % len(buf)] = rng.randrange(256)
        elif op < 0.7:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op < 0.8:
            del buf[pos : pos + rng.randint(1, 64)]
        elif op < 0.9:
            del buf[pos:]
        else:
            width = rng.randint(1, 256)
            buf[pos:pos] = buf[pos : pos + width] * rng.randint(1, 8)
    return bytes(buf)


# --------------------------------------------------------------------------- JSON values


def _odd_value(rng: random.Random, near=None):
    choices = [
        None,
        True,
        False,
        "",
        "x",
        "F32",
        "12",
        "é\u0000",
        "\\ud800",
        [],
        {},
        [1, 2],
        {"a": 1},
        1.5,
        -0.0,
        1e308,
        float("nan"),
        float("inf"),
        "__BIG__",
        "__DEEP__",
        "__SURROGATE__",
        [2**63] * 3,
        [0] * 70,
        ["a"] * 3,
        "(",
        "[",
        "*",
        "a{99999}",
        "(a+)+$",
    ]
    if rng.random() < 0.45:
        return rng.choice(INTERESTING_INTS)
    if isinstance(near, list) and near and rng.random() < 0.5:
        copy = list(near)
        copy[rng.randrange(len(copy))] = _odd_value(rng)
        return copy
    if isinstance(near, int) and not isinstance(near, bool) and rng.random() < 0.5:
        return near * rng.choice((2, 1000, 2**40)) + rng.choice((0, 1, -1))
    return rng.choice(choices)


def _nodes(obj, path=()):
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj[:64]):
            yield from _nodes(value, (*path, index))


def mutate_json(obj, rng: random.Random):
    """Replace, delete or add one value somewhere in a JSON document (1-3 times)."""
    for _ in range(rng.randint(1, 3)):
        nodes = list(_nodes(obj))
        path, node = rng.choice(nodes)
        if not path:
            if rng.random() < 0.1:
                obj = _odd_value(rng)
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        op = rng.random()
        if op < 0.7:
            parent[last] = _odd_value(rng, node)
        elif op < 0.85:
            del parent[last]
        elif isinstance(parent, dict):
            parent[
                rng.choice(["__metadata__", "extra", "dtype", "shape", "r", str(last) + "x"])
            ] = _odd_value(rng)
        else:
            parent.append(_odd_value(rng))
    return obj


def dump_json(obj) -> bytes:
    text = json.dumps(obj)
    text = text.replace('"__BIG__"', BIG_DIGITS).replace('"__DEEP__"', "[" * DEEP + "]" * DEEP)
    return text.replace('"__SURROGATE__"', '"\\udc00x"').encode("utf-8", "surrogatepass")


def mutate_json_file(path: Path, rng: random.Random) -> None:
    raw = path.read_bytes()
    if rng.random() < 0.3:
        path.write_bytes(mutate_bytes(raw, rng))
        return
    path.write_bytes(dump_json(mutate_json(json.loads(raw), rng)))


def mutate_safetensors(path: Path, rng: random.Random) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    if rng.random() < 0.5:
        path.write_bytes(mutate_bytes(raw, rng, hot=8 + n))
        return
    header = mutate_json(json.loads(raw[8 : 8 + n]), rng)
    text = dump_json(header)
    data = raw[8 + n :]
    if rng.random() < 0.3:
        data = data[: rng.randrange(len(data) + 1)]
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


# --------------------------------------------------------------------------- YAML

YAML_PAYLOADS = [
    "!!bool 'x'",
    "!!int 'x'",
    "!!float 'x'",
    "!!timestamp 'x'",
    "!!binary '%%%'",
    "!!str",
    "!!python/object:os.system 'echo pwned'",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "*undefined",
    "&a [1, 2]",
    "[" * 5000 + "]" * 5000,
    "{a: " * 3000 + "1" + "}" * 3000,
    BIG_DIGITS,
    "0x" + "f" * 4400,
    "1e99999",
    ".nan",
    "-.inf",
    "~",
    "null",
    "yes",
    "[1, 2",
    "{a: 1",
    "'",
    '"\\ud800"',
    "\t1",
    "? [a, b]\n: c",
    "2026-13-45",
    "0o777",
    "1_000",
    "- a\n- b",
    "|",
    ">-",
    "%YAML 1.1",
    "---",
    "...",
    "@x",
    "`x`",
    "[*a, *a]",
]
ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
    "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
)
SET_KEYS = [
    "training.max_steps",
    "training.batch_size",
    "training.learning_rate",
    "distillation.alpha",
    "distillation.temperature",
    "teacher.model_id",
    "student.init_from_teacher.layers",
    "seed",
    "dataset.max_length",
    "output.dir",
    "training",
    "training.max_steps.x",
    "a.b.c",
    "",
    "..",
    "student",
    "distillation.hidden_states.layer_mapping",
]


def mutate_yaml(text: str, rng: random.Random) -> bytes:
    lines = text.splitlines()
    op = rng.random()
    if op < 0.45 and lines:
        index = rng.randrange(len(lines))
        key, sep, _ = lines[index].partition(":")
        value = (
            rng.choice(YAML_PAYLOADS) if rng.random() < 0.8 else str(rng.choice(INTERESTING_INTS))
        )
        lines[index] = f"{key}: {value}" if sep else value
    elif op < 0.55:
        prefix = ALIAS_BOMB if rng.random() < 0.5 else ALIAS_BOMB.replace("h: &h", "training: &h")
        lines = prefix.splitlines() + lines
    elif op < 0.65 and lines:
        del lines[rng.randrange(len(lines))]
    elif op < 0.75:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(YAML_PAYLOADS))
    else:
        return mutate_bytes(text.encode(), rng)
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def random_overrides(rng: random.Random) -> list[str]:
    out = []
    for _ in range(rng.randint(0, 3)):
        key = rng.choice(SET_KEYS)
        value = rng.choice(YAML_PAYLOADS + [str(v) for v in INTERESTING_INTS] + ["", "1", "[0, 2]"])
        if rng.random() < 0.2:
            value = ALIAS_BOMB.replace("\n", ", ").join("{}")
        out.append(f"{key}={value}" if rng.random() < 0.95 else key)
    return out


# --------------------------------------------------------------------------- cases


def _copy_seed(seed: Path, workdir: Path) -> Path:
    target = workdir / seed.name
    if seed.is_dir():
        shutil.copytree(seed, target)
    else:
        shutil.copy(seed, target)
    return target


def _file_to_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _mutate_folder_file(folder: Path, rng: random.Random, weights_hot: bool = True) -> None:
    """Mutate one file of a model folder (JSON files by value, weights in their header)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    target = rng.choice(files)
    if rng.random() < 0.03:
        _file_to_folder(target)
    elif target.suffix == ".json":
        mutate_json_file(target, rng)
    elif target.suffix == ".safetensors":
        mutate_safetensors(target, rng)
    else:
        target.write_bytes(
            mutate_bytes(target.read_bytes(), rng, hot=4096 if weights_hot else None)
        )


def _model_commands(ref: Path, with_memory: bool = True):
    from entrenar_tui.core.inspect.info import model_info, model_layers
    from entrenar_tui.core.inspect.validate import validate_model

    model_info(str(ref))
    model_layers(str(ref))
    validate_model(str(ref))
    if with_memory:
        from entrenar_tui.core.memory import estimate_for_model

        estimate_for_model(str(ref), batch_size=1, sequence_length=8)


def _fresh_gguf_cache() -> None:
    from entrenar_tui.core.models import gguf_format

    gguf_format._open_cached.cache_clear()


def case_safetensors(seeds, rng, workdir):
    folder = _copy_seed(rng.choice(seeds["safetensors"]), workdir)
    _mutate_folder_file(folder, rng)

    def run(_):
        from entrenar_tui.core.models.safetensors_format import read_header

        weights = folder / "model.safetensors"
        if weights.is_file():
            try:
                read_header(weights)
            except Exception as exc:
                from entrenar_tui.core.errors import EntrenarError

                if not isinstance(exc, EntrenarError):
                    raise
        _model_commands(folder)

    return run


def case_gguf(seeds, rng, workdir):
    path = _copy_seed(rng.choice(seeds["gguf"]), workdir)
    raw = path.read_bytes()
    if rng.random() < 0.05:
        path.write_bytes(raw[: rng.randrange(len(raw))])
    else:
        path.write_bytes(mutate_bytes(raw, rng, hot=min(len(raw), 8192)))

    def run(_):
        from entrenar_tui.core.models.handle import Model

        _fresh_gguf_cache()
        _model_commands(path)
        model = Model.open(str(path))
        for info in model.tensors[:8]:
            model.read(info)

    return run


def case_config(seeds, rng, workdir):
    seed = rng.choice(seeds["config"])
    path = workdir / "config.yaml"
    mutate_text = rng.random() < 0.7
    path.write_bytes(mutate_yaml(seed.read_text(), rng) if mutate_text else seed.read_bytes())
    overrides = random_overrides(rng) if (not mutate_text or rng.random() < 0.3) else []

    def run(_):
        from entrenar_tui.core.distill.config import load_config

        config = load_config(path, overrides)
        config.model_dump()
        assert config.config_hash

    return run


def case_adapter(seeds, rng, workdir):
    folder = _copy_seed(seeds["adapter"][0], workdir)
    config = folder / "adapter_config.json"
    if rng.random() < 0.6:
        doc = json.loads(config.read_text())
        key = rng.choice(
            [
                "r",
                "lora_alpha",
                "rank_pattern",
                "alpha_pattern",
                "target_modules",
                "modules_to_save",
                "use_rslora",
                "use_dora",
                "peft_type",
                "fan_in_fan_out",
                "base_model_name_or_path",
                "lora_bias",
            ]
        )
        if key in ("rank_pattern", "alpha_pattern") and rng.random() < 0.6:
            doc[key] = {
                rng.choice(["(", "[", "*", "v_proj", "a{99999}", "(?P<x>", "\\"]): _odd_value(rng)
            }
        else:
            doc[key] = _odd_value(rng, doc.get(key))
        config.write_bytes(dump_json(doc))
    else:
        _mutate_folder_file(folder, rng)

    def run(_):
        from entrenar_tui.core.lora.inspect import inspect_adapter

        inspect_adapter(folder).to_dict()

    return run


def case_apr(seeds, rng, workdir):
    seed = rng.choice(seeds["apr"])
    target = _copy_seed(seed, workdir)
    path = target if target.is_file() else target / "tiny-llama.apr"
    if rng.random() < 0.25 and target.is_dir():
        _mutate_folder_file(target, rng, weights_hot=False)
    elif rng.random() < 0.3:
        path.write_bytes(mutate_bytes(path.read_bytes(), rng, hot=2048))
    else:
        doc = json.loads(path.read_text())
        if rng.random() < 0.5 and doc["tensors"]:
            entry = rng.choice(doc["tensors"])
            key = rng.choice(["dtype", "shape", "nbytes", "sha256", "b64", "offset", "name"])
            entry[key] = _odd_value(rng, entry.get(key))
            if key == "shape" and rng.random() < 0.5:
                entry["nbytes"] = rng.choice(INTERESTING_INTS)
        else:
            doc = mutate_json(doc, rng)
        path.write_bytes(dump_json(doc))

    def run(_):
        from entrenar_tui.core.convert.apr import read_apr

        apr = read_apr(path)
        for info in apr.tensors[:16]:
            apr.read(info.name)
        _model_commands(path)

    return run


def case_pth(seeds, rng, workdir):
    path = _copy_seed(rng.choice(seeds["pth"]), workdir)
    if rng.random() < 0.8:
        path.write_bytes(mutate_bytes(path.read_bytes(), rng))

    def run(_):
        _model_commands(path)

    return run


def _mutate_run(folder: Path, rng: random.Random) -> None:
    name = rng.choice(
        [
            "status.json",
            "metrics.jsonl",
            "config.yaml",
            "run.json",
            "events.log",
            "checkpoints",
            "status.json",
            "metrics.jsonl",
        ]
    )
    target = folder / name
    op = rng.random()
    if op < 0.05:
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    elif op < 0.1 and target.is_file():
        _file_to_folder(target)
    elif target.is_dir():
        (target / rng.choice(["step-x", "step-000030", "step-000040"])).mkdir(exist_ok=True)
    elif op < 0.4:
        raw = target.read_bytes()
        target.write_bytes(raw[: rng.randrange(len(raw) + 1)])  # half written
    elif op < 0.7 and target.suffix == ".json":
        mutate_json_file(target, rng)
    elif op < 0.8 and target.suffix == ".yaml":
        target.write_bytes(mutate_yaml(target.read_text(), rng))
    elif target.suffix == ".jsonl" and op < 0.9:
        line = dump_json(mutate_json({"step": 5, "loss": 1.0}, rng))
        target.write_bytes(target.read_bytes() + line + (b"\n" if rng.random() < 0.5 else b""))
    else:
        target.write_bytes(mutate_bytes(target.read_bytes(), rng))


def case_run(seeds, rng, workdir):
    folder = _copy_seed(seeds["run"][0], workdir)
    _mutate_run(folder, rng)

    def run(_):
        from entrenar_tui.core.runs.follow import MetricsTail, list_runs, read_run, tail_lines

        read_run(folder).to_dict()
        list_runs(workdir)
        tail = MetricsTail(folder / "metrics.jsonl")
        tail.poll()
        tail.poll()
        tail_lines(folder / "events.log")

    return run


def case_resume(seeds, rng, workdir):
    folder = _copy_seed(seeds["run"][0], workdir)
    _mutate_run(folder, rng)

    def run(_):
        from entrenar_tui.core.distill.config import parse_config
        from entrenar_tui.core.distill.rundir import RunDir

        run_dir = RunDir(folder)
        parse_config(run_dir.read_config())
        run_dir.status()
        checkpoint = run_dir.latest_checkpoint()
        run_dir.truncate_metrics_after(checkpoint and int(checkpoint.name[5:]) or 0)

    return run


CASES = {
    "safetensors": case_safetensors,
    "gguf": case_gguf,
    "config": case_config,
    "adapter": case_adapter,
    "apr": case_apr,
    "pth": case_pth,
    "run": case_run,
    "resume": case_resume,
}


def make_case(reader: str, seeds: dict, rng: random.Random, workdir: Path):
    return CASES[reader](seeds, rng, workdir)
