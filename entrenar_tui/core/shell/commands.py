"""The shell's command table: arguments, options (with their types) and help, in one place that
the parser, the evaluator's `help` and tab completion all read."""

from __future__ import annotations

from dataclasses import dataclass, field


def int_list(text: str) -> list[int]:
    """`0,3,6,9` -> [0, 3, 6, 9]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(text) from None


int_list.__name__ = "a list of integers like 0,3,6"


def size(text: str) -> str:
    """`16GB`, `512MiB`: checked here so a typo is a usage error, kept as text for core."""
    from ..errors import InvalidInputError
    from ..sizes import parse_size

    try:
        parse_size(text)
    except InvalidInputError:
        raise ValueError(text) from None
    return text


size.__name__ = "a size like 16GB"
LABELS = {int: "N", float: "X", str: "TEXT", int_list: "0,3,6", size: "SIZE"}


@dataclass(frozen=True)
class CommandSpec:
    name: str
    help: str
    args: tuple[str, ...] = ()  # names; a trailing "?" marks an optional one
    options: dict[str, type] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # --batch-size -> batch
    first_words: tuple[str, ...] = ()  # what the first argument can be (for completion)

    @property
    def min_args(self) -> int:
        return sum(1 for arg in self.args if not arg.endswith("?"))

    @property
    def max_args(self) -> int:
        return len(self.args)

    def arity_text(self) -> str:
        if self.min_args == self.max_args:
            return f"{self.max_args} argument{'s' * (self.max_args != 1)}"
        return f"{self.min_args} to {self.max_args} arguments"

    def usage(self) -> str:
        args = " ".join(f"[{a[:-1]}]" if a.endswith("?") else a.upper() for a in self.args)
        options = " ".join(
            f"[--{name}]" if kind is bool else f"[--{name} {LABELS[kind]}]"
            for name, kind in self.options.items()
        )
        return " ".join(part for part in (self.name, args, options) if part)


MEMORY_ALIASES = {"batch-size": "batch", "sequence-length": "seq"}
FORMATS = ("safetensors", "gguf", "pth", "apr")  # what convert and export write
DISTILL_OPTIONS = {"temperature": float, "alpha": float, "epochs": int, "steps": int}

_SPECS = [
    CommandSpec("fetch", "resolve a model (packaged, local or hub) and describe it", ("model",)),
    CommandSpec("load", "the same as fetch: make a model the current one", ("model",)),
    CommandSpec(
        "inspect",
        "info, layers or validate of the current model (or MODEL)",
        ("what?", "model?"),
        {"strict": bool},
        first_words=("info", "layers", "validate"),
    ),
    CommandSpec("compare", "tensor-by-tensor differences of two models", ("a", "b")),
    CommandSpec(
        "memory",
        "training memory of the current model per weight precision",
        ("model?",),
        {"batch": int, "seq": int, "rank": int},
        MEMORY_ALIASES,
    ),
    CommandSpec(
        "estimate",
        "memory and time of the distill run the session's settings describe (2 steps timed)",
        (),
        DISTILL_OPTIONS,
    ),
    CommandSpec(
        "profile",
        "measure one training step's memory (full, or LoRA with --rank) beside the estimate",
        ("model?",),
        {"batch": int, "seq": int, "rank": int},
        MEMORY_ALIASES,
    ),
    CommandSpec(
        "optimize",
        "the best full/LoRA/QLoRA plan that fits --vram SIZE (as `lora plan`: 2048 tokens,"
        " batch 16 unless given)",
        ("model?",),
        {"vram": size, "method": str, "batch": int, "seq": int},
        MEMORY_ALIASES,
    ),
    CommandSpec(
        "set",
        "set teacher MODEL, student MODEL [--layers 0,3,6] or a setting KEY VALUE",
        ("key", "value"),
        {"layers": int_list},
    ),
    CommandSpec("config", "the session's models and settings"),
    CommandSpec(
        "distill",
        "distil the teacher into the student: a run in the background (--dry-run: the plan)",
        (),
        {**DISTILL_OPTIONS, "dry-run": bool, "yes": bool, "output": str},
    ),
    CommandSpec(
        "finetune",
        "LoRA training of the current model (distillation alpha 0) in the background",
        (),
        {
            "steps": int,
            "epochs": int,
            "rank": int,
            "learning-rate": float,
            "output": str,
            "dry-run": bool,
        },
        {"lr": "learning-rate"},
    ),
    CommandSpec(
        "evaluate",
        "held-out loss and perplexity of a run's student (default: the latest run) or a model",
        ("target?",),
    ),
    CommandSpec("runs", "the runs this session started, and their state"),
    CommandSpec("watch", "follow a run until it ends (Ctrl-C stops watching)", ("run?",)),
    CommandSpec(
        "save",
        "write a run's student (default: the latest run) in its output.format",
        ("output", "run?"),
    ),
    CommandSpec(
        "export",
        "export a run's student: export FORMAT OUTPUT [RUN]",
        ("format", "output", "run?"),
        first_words=FORMATS,
    ),
    CommandSpec(
        "convert",
        "convert the current model (or MODEL) to gguf, safetensors, pth or apr",
        ("format", "output", "model?"),
        {"quantize": str},
        first_words=FORMATS,
    ),
    CommandSpec(
        "quantize",
        "write the current model (or MODEL) as a q8_0 or q4_0 GGUF",
        ("type", "output", "model?"),
        first_words=("q8_0", "q4_0"),
    ),
    CommandSpec("history", "the commands of this session, with duration and status"),
    CommandSpec("help", "the commands, or one command's usage", ("command?",)),
    CommandSpec("quit", "save the session and leave"),
    CommandSpec("exit", "the same as quit"),
]
COMMANDS = {spec.name: spec for spec in _SPECS}
