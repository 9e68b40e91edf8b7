"""Training text: a built-in offline corpus, local text/JSONL, or Hugging Face datasets;
tokenised with the teacher's tokenizer and packed into fixed-length blocks.

The built-in corpus is the docstrings of Python's standard library, read with `ast` (nothing
is imported or executed): real English prose about programming that exists wherever Python
does. It varies slightly between Python versions; run.json records the version.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InvalidInputError

MIN_DOC_CHARS = 200


def _docstrings(tree: ast.AST) -> list[str]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, kinds):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= MIN_DOC_CHARS:
                docs.append(doc)
    return docs


def builtin_corpus(max_documents: int | None = None) -> list[str]:
    """Docstrings of the standard library, in a fixed order (sorted paths, then source order)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "idlelib", "lib2to3", "site-packages", "dist-packages", "ensurepip", "tkinter")
    docs: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(part in skip or part.startswith("test") for part in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        docs.extend(_docstrings(tree))
        if max_documents and len(docs) >= max_documents:
            return docs[:max_documents]
    return docs


def _read_text(path: Path) -> list[str]:
    """Blank-line separated paragraphs become documents."""
    text = path.read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def _read_jsonl(path: Path, field: str) -> list[str]:
    docs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"{path}:{number}: not valid JSON ({exc.msg})", "each line must be one JSON object"
            ) from exc
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise InvalidInputError(
                f"{path}:{number}: no string field {field!r}",
                f"set dataset.text_field to the key holding the text (now {field!r})",
            )
        docs.append(row[field])
    return docs


def _read_hub(name: str, split: str, field: str, streaming: bool, limit: int | None) -> list[str]:
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(
            "dataset.source 'huggingface' needs the datasets package", "pip install datasets"
        ) from exc
    config_name = None
    if ":" in name:
        name, config_name = name.split(":", 1)
    try:
        ds = datasets.load_dataset(name, config_name, split=split, streaming=streaming)
    except Exception as exc:  # datasets raises many kinds for missing/offline data
        raise InvalidInputError(
            f"cannot load dataset {name!r} ({type(exc).__name__}: {exc})",
            "check the name and network, or use dataset.source: text with a local file",
        ) from exc
    docs = []
    for row in ds:
        if isinstance(row.get(field), str) and row[field].strip():
            docs.append(row[field])
        if limit and len(docs) >= limit:
            break
    return docs


def load_documents(
    source: str,
    path: str | None,
    name: str | None,
    split: str,
    text_field: str,
    streaming: bool,
    max_documents: int | None,
) -> list[str]:
    if source == "builtin":
        return builtin_corpus(max_documents)
    if source == "huggingface":
        return _read_hub(name or "", split, text_field, streaming, max_documents)
    file = Path(path or "")
    if not file.is_file():
        raise InvalidInputError(
            f"dataset file {file} does not exist",
            "set dataset.path to a readable .txt or .jsonl file",
        )
    docs = _read_text(file) if source == "text" else _read_jsonl(file, text_field)
    return docs[:max_documents] if max_documents else docs


def is_eval_document(doc: str, eval_fraction: float) -> bool:
    """A stable split: by content hash, so adding documents never moves old ones across."""
    h = int.from_bytes(hashlib.blake2b(doc.encode(), digest_size=8).digest(), "little")
    return (h % 10_000) < eval_fraction * 10_000


@dataclass
class PackedData:
    train: list[list[int]]  # blocks of exactly block_size token ids
    eval: list[list[int]]
    block_size: int
    documents: int
    tokens: int


def pack(token_lists: list[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate documents (each ending in EOS) and cut into full blocks; drop the tail."""
    flat = [t for ids in token_lists for t in ids]
    return [flat[i : i + block_size] for i in range(0, len(flat) - block_size + 1, block_size)]


def build_dataset(docs: list[str], tokenizer, block_size: int, eval_fraction: float) -> PackedData:
    if not docs:
        raise InvalidInputError(
            "the dataset has no documents",
            "check dataset.source/path; text files need non-empty paragraphs",
        )
    eos = tokenizer.eos_token_id
    train_docs = [d for d in docs if not is_eval_document(d, eval_fraction)]
    eval_docs = [d for d in docs if is_eval_document(d, eval_fraction)]

    def encode(batch: list[str]) -> list[list[int]]:
        ids = tokenizer(batch, add_special_tokens=False)["input_ids"] if batch else []
        return [x + ([eos] if eos is not None else []) for x in ids]

    train_ids, eval_ids = encode(train_docs), encode(eval_docs)
    train, evals = pack(train_ids, block_size), pack(eval_ids, block_size)
    if not train:
        raise InvalidInputError(
            f"the dataset yields no full block of {block_size} tokens",
            "lower dataset.max_length or add text",
        )
    return PackedData(
        train, evals, block_size, len(docs), sum(map(len, train_ids)) + sum(map(len, eval_ids))
    )


def dataset_for(config, tokenizer) -> PackedData:
    """The packed blocks a run of `config` trains on (what `distill validate` counts)."""
    ds = config.dataset
    docs = load_documents(
        ds.source, ds.path, ds.name, ds.split, ds.text_field, ds.streaming, ds.max_documents
    )
    return build_dataset(docs, tokenizer, ds.max_length, ds.eval_fraction)


def batch_size_problem(train_blocks: int, batch_size: int, block_size: int) -> str | None:
    """Why a batch cannot be drawn from the data, or None: a batch is `batch_size` distinct
    blocks of one epoch's permutation, so an epoch must hold at least one batch."""
    if train_blocks >= batch_size:
        return None
    return (
        f"batch_size {batch_size} is larger than the {train_blocks} training blocks "
        f"of {block_size} tokens the dataset yields"
    )


def batch_size_hint(train_blocks: int) -> str:
    return (
        f"set training.batch_size to {train_blocks} or less (use gradient_accumulation for a "
        "bigger effective batch), lower dataset.max_length, or add text"
    )


def check_batch_fits(train_blocks: int, batch_size: int, block_size: int) -> None:
    problem = batch_size_problem(train_blocks, batch_size, block_size)
    if problem:
        raise ConfigError(f"training.batch_size: {problem}", batch_size_hint(train_blocks))
