"""Model discovery (core/models/catalog.py) and the recent-models store (core/recent.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from entrenar_tui.core import recent
from entrenar_tui.core.models import catalog
from entrenar_tui.core.models.resolve import PACKAGED, resolve


def _weights(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(path))
    return path


def _model_folder(folder: Path) -> Path:
    _weights(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def _adapter_folder(folder: Path) -> Path:
    _weights(folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(
        json.dumps({"r": 2, "base_model_name_or_path": "org/base"})
    )
    return folder


def _refs(entries) -> list[str]:
    return [e.ref for e in entries]


# --------------------------------------------------------------------------- packaged


def test_packaged_models_are_listed_with_kind_and_size():
    entries = {e.ref: e for e in catalog.packaged_models()}
    assert set(entries) == set(PACKAGED)
    assert entries["smollm2-135m"].kind == "gguf"
    assert entries["minilm-l6"].kind == "safetensors"
    assert entries["minilm-l6"].size_bytes == resolve("minilm-l6").file_size_bytes


def test_a_packaged_model_that_is_not_installed_says_so(monkeypatch):
    monkeypatch.setitem(PACKAGED, "ghost", ("no_such_package_xyz", "m.gguf", "ghost-dist"))
    ghost = next(e for e in catalog.packaged_models() if e.ref == "ghost")
    assert ghost.note.startswith("not installed") and "ghost-dist" in ghost.note
    assert ghost.size_bytes is None


# --------------------------------------------------------------------------- folders


def test_scan_finds_model_folders_and_weight_files_to_depth_two(tmp_path):
    _model_folder(tmp_path / "tiny")
    _weights(tmp_path / "loose.safetensors")
    (tmp_path / "q.gguf").write_bytes(b"GGUF")
    (tmp_path / "m.apr").write_text("{}")
    _weights(tmp_path / "models" / "w.pth")
    _model_folder(tmp_path / "a" / "b" / "too-deep")
    (tmp_path / "notes.txt").write_text("not a model")
    found = {e.ref: e for e in catalog.scan_models(tmp_path, "local")}
    root = str(tmp_path)
    assert set(found) == {
        f"{root}/loose.safetensors",
        f"{root}/m.apr",
        f"{root}/models/w.pth",
        f"{root}/q.gguf",
        f"{root}/tiny",
    }
    tiny = found[f"{root}/tiny"]
    assert tiny.kind == "safetensors"
    assert tiny.size_bytes == (tmp_path / "tiny" / "model.safetensors").stat().st_size
    assert found[f"{root}/q.gguf"].kind == "gguf"


def test_scan_skips_hidden_venv_checkpoints_and_adapters(tmp_path):
    _model_folder(tmp_path / ".hidden" / "m")
    _weights(tmp_path / ".venv" / "x.safetensors")
    _weights(tmp_path / "venv" / "x.safetensors")
    _model_folder(tmp_path / "run" / "checkpoints")
    _adapter_folder(tmp_path / "adapter")
    _model_folder(tmp_path / "kept")
    assert _refs(catalog.scan_models(tmp_path, "local")) == [f"{tmp_path}/kept"]


def test_a_model_folder_is_one_entry_not_its_files(tmp_path):
    folder = _model_folder(tmp_path / "sharded")
    _weights(folder / "model-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model.safetensors", "b": "model-00002.safetensors"}})
    )
    (entry,) = catalog.scan_models(tmp_path, "local")
    assert entry.ref == f"{tmp_path}/sharded"
    assert entry.size_bytes == sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def test_scan_of_the_working_dir_gives_relative_refs_that_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _model_folder(tmp_path / "tiny")
    (entry,) = catalog.scan_models(".", "local")
    assert entry.ref == "tiny"
    assert resolve(entry.ref).path == Path("tiny")


def test_scan_of_a_model_folder_itself_and_of_a_missing_folder(tmp_path):
    folder = _model_folder(tmp_path / "m")
    assert _refs(catalog.scan_models(folder, "models-dir")) == [str(folder)]
    assert catalog.scan_models(tmp_path / "nope", "models-dir") == []


def test_run_outputs_lists_final_models_and_adapters_separately(tmp_path):
    _model_folder(tmp_path / "runs" / "kd" / "final")
    _adapter_folder(tmp_path / "runs" / "lora" / "final")
    (tmp_path / "runs" / "empty").mkdir()
    runs = tmp_path / "runs"
    assert _refs(catalog.run_outputs(runs)) == [f"{runs}/kd/final"]
    assert _refs(catalog.run_outputs(runs, want_adapters=True)) == [f"{runs}/lora/final"]


# --------------------------------------------------------------------------- HF cache


def _cached_repo(cache: Path, repo_id: str, files: dict[str, bytes], repo_type="model") -> None:
    """The hub cache layout: blobs, a snapshot of symlinks, refs/main."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for n, (name, data) in enumerate(files.items()):
        blob = repo / "blobs" / f"blob{n}"
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)


def test_hf_cache_lists_model_repos_by_id(tmp_path):
    cache = tmp_path / "hub"
    _cached_repo(cache, "org/tiny", {"config.json": b"{}", "model.safetensors": b"x" * 100})
    _cached_repo(cache, "org/data", {"train.json": b"[]"}, repo_type="dataset")
    (entry,) = catalog.hf_cache_models(cache)
    assert (entry.ref, entry.source, entry.kind) == ("org/tiny", "hf-cache", "safetensors")
    assert entry.size_bytes == 102


def test_a_missing_or_empty_hf_cache_is_no_models(tmp_path, monkeypatch):
    assert catalog.hf_cache_models(tmp_path / "missing") == []
    (tmp_path / "empty").mkdir()
    assert catalog.hf_cache_models(tmp_path / "empty") == []
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert catalog.hf_cache_dir() == tmp_path / "empty"


def test_hf_cache_dir_follows_hf_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert catalog.hf_cache_dir() == tmp_path / "home" / "hub"


# --------------------------------------------------------------------------- discover


def test_discover_groups_sources_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _model_folder(tmp_path / "tiny")
    _model_folder(tmp_path / "runs" / "kd" / "final")
    extra = _model_folder(tmp_path / "elsewhere" / "m")
    cache = tmp_path / "hub"
    _cached_repo(cache, "org/tiny", {"config.json": b"{}", "model.safetensors": b"x"})
    entries = catalog.discover(
        ".",
        [str(extra)],
        "runs",
        recent=["minilm-l6", str(tmp_path / "gone.gguf")],
        cache_dir=cache,
    )
    sources = [e.source for e in entries]
    assert sources == sorted(sources, key=list(catalog.SOURCE_LABELS).index)
    by_source = {s: [e.ref for e in entries if e.source == s] for s in catalog.SOURCE_LABELS}
    assert by_source["local"] == ["elsewhere/m", "tiny"]
    assert by_source["runs"] == ["runs/kd/final"]
    assert by_source["models-dir"] == [str(extra)]
    assert by_source["hf-cache"] == ["org/tiny"]
    recent_entries = [e for e in entries if e.source == "recent"]
    assert recent_entries[0].kind == "safetensors"
    assert recent_entries[1].note == "missing"
    assert len({e.key for e in entries}) == len(entries)


def test_overlapping_models_folders_list_a_model_once(tmp_path):
    folder = _model_folder(tmp_path / "m")
    entries = catalog.discover(tmp_path / "nothing", [str(folder), str(folder)], tmp_path / "r")
    assert [e.ref for e in entries if e.source == "models-dir"] == [str(folder)]


# --------------------------------------------------------------------------- adapters


def test_find_adapters_under_the_folder_and_in_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _adapter_folder(tmp_path / "adapters" / "a1")
    _adapter_folder(tmp_path / "runs" / "lora" / "final")
    _model_folder(tmp_path / "not-an-adapter")
    assert _refs(catalog.find_adapters(".", "runs")) == ["adapters/a1", "runs/lora/final"]
    assert catalog.adapter_base("adapters/a1") == "org/base"
    assert catalog.adapter_base("not-an-adapter") is None


# --------------------------------------------------------------------------- recent


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRENAR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_recent_is_newest_first_without_duplicates(home):
    assert recent.load_recent() == []
    recent.add_recent("minilm-l6")
    recent.add_recent("smollm2-135m")
    assert recent.add_recent("minilm-l6") == ["minilm-l6", "smollm2-135m"]
    assert json.loads((home / "recent.json").read_text()) == {
        "models": ["minilm-l6", "smollm2-135m"]
    }


def test_recent_keeps_at_most_twenty(home):
    for n in range(25):
        recent.add_recent(f"org/model-{n}")
    kept = recent.load_recent()
    assert len(kept) == recent.MAX_RECENT == 20
    assert kept[0] == "org/model-24" and kept[-1] == "org/model-5"


def test_recent_stores_existing_paths_absolute(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _weights(tmp_path / "w.safetensors")
    assert recent.add_recent("w.safetensors") == [str(tmp_path / "w.safetensors")]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]", b'{"models": 3}'])
def test_a_corrupt_recent_file_is_ignored_and_replaced(home, content):
    home.mkdir(parents=True)
    (home / "recent.json").write_bytes(content)
    assert recent.load_recent() == []
    assert recent.add_recent("minilm-l6") == ["minilm-l6"]
    assert recent.load_recent() == ["minilm-l6"]


def test_an_apr_model_counts_its_sidecar(tmp_path):
    (tmp_path / "m.apr").write_text("{}")
    (tmp_path / "m.apr.bin").write_bytes(b"\0" * 1000)
    (entry,) = catalog.scan_models(tmp_path, "local")
    assert (entry.kind, entry.size_bytes) == ("apr", 1002)
