"""distill.yaml keys that used to be accepted and ignored (issue 10, bug 10), `distill export`'s
`merged_adapter` (bug 12), and what a run prints (the demo's noise and the eval/checkpoint
order): each on tiny real models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from entrenar_tui.cli.main import app
from entrenar_tui.core.distill.config import DistillConfig
from entrenar_tui.core.errors import InvalidInputError, ModelNotFoundError
from entrenar_tui.core.models import resolve

runner = CliRunner()


def _config(model_id: str, **sections) -> dict:
    cfg = {
        "seed": 3,
        "device": "cpu",
        "teacher": {"model_id": model_id},
        "student": {"init_from_teacher": {"layers": [0, 2]}},
        "training": {"max_steps": 2, "batch_size": 2, "log_every": 1, "eval_max_blocks": 2},
        "dataset": {"source": "builtin", "max_length": 32, "max_documents": 40},
        "output": {"keep_checkpoints": 2},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def _lm_head(config: dict):
    from entrenar_tui.core.distill.trainer import build

    return build(DistillConfig.model_validate(config)).teacher.lm_head.weight.detach().clone()


@pytest.fixture(scope="module")
def both_formats(tiny_lm_pair, tmp_path_factory):
    """A folder holding the tiny teacher as safetensors and as a q8_0 GGUF of it."""
    from entrenar_tui.core.convert import convert_model

    teacher, _ = tiny_lm_pair
    folder = tmp_path_factory.mktemp("both") / "teacher"
    shutil.copytree(teacher, folder)
    convert_model(str(teacher), "gguf", folder / "teacher-q8_0.gguf", "q8_0")
    return folder


@pytest.fixture
def hub_cache(tiny_lm_pair, tmp_path, monkeypatch):
    """A real HF cache layout for acme/tiny-teacher: `main` and tag `v1` are different weights."""
    import huggingface_hub.constants as hc
    from transformers import AutoModelForCausalLM

    teacher, _ = tiny_lm_pair
    repo = tmp_path / "hub" / "models--acme--tiny-teacher"
    (repo / "refs").mkdir(parents=True)
    for ref, commit, shift in (("main", "a" * 40, 0.0), ("v1", "b" * 40, 1.0)):
        snap = repo / "snapshots" / commit
        shutil.copytree(teacher, snap)
        model = AutoModelForCausalLM.from_pretrained(teacher)
        with torch.no_grad():
            model.lm_head.weight.add_(shift)
        model.save_pretrained(snap)
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return teacher


# ---- teacher.revision --------------------------------------------------------------------------


@pytest.mark.slow
def test_teacher_revision_reaches_the_hub_download(hub_cache):
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(hub_cache).lm_head.weight.detach()
    main = _lm_head(_config("acme/tiny-teacher"))
    tagged = _lm_head(_config("acme/tiny-teacher", teacher={"revision": "v1"}))
    assert torch.equal(main, original)
    assert torch.equal(tagged, original + 1.0)
    with pytest.raises(ModelNotFoundError) as caught:  # offline, and v2 is not cached
        resolve("acme/tiny-teacher", revision="v2")
    assert "'v2'" in caught.value.message and "--revision v2" in caught.value.hint


def test_a_revision_for_a_local_model_is_refused(tiny_lm_pair):
    teacher, _ = tiny_lm_pair
    with pytest.raises(InvalidInputError, match="not a hub id"):
        resolve(teacher, revision="v1")


# ---- teacher.format -----------------------------------------------------------------------------


def test_format_picks_the_weights_of_a_folder_that_has_both(both_formats):
    assert resolve(both_formats).kind == "safetensors"  # auto: safetensors first
    assert resolve(both_formats, fmt="safetensors").kind == "safetensors"
    gguf = resolve(both_formats, fmt="gguf")
    assert gguf.kind == "gguf" and gguf.weight_files == [both_formats / "teacher-q8_0.gguf"]
    with pytest.raises(InvalidInputError, match="is a gguf file"):
        resolve(both_formats / "teacher-q8_0.gguf", fmt="safetensors")


@pytest.mark.slow
def test_teacher_format_gguf_trains_from_the_gguf(both_formats, tmp_path, monkeypatch):
    from gguf import GGUFReader, dequantize

    monkeypatch.setenv("ENTRENAR_CACHE", str(tmp_path / "cache"))
    from_gguf = _lm_head(_config(str(both_formats), teacher={"format": "gguf"}))
    from_safetensors = _lm_head(_config(str(both_formats), teacher={"format": "safetensors"}))
    reader = GGUFReader(both_formats / "teacher-q8_0.gguf")
    output = next(t for t in reader.tensors if t.name == "output.weight")
    q8 = torch.from_numpy(dequantize(output.data, output.tensor_type).copy())
    assert torch.equal(from_gguf, q8.reshape(from_gguf.shape))
    assert not torch.equal(from_gguf, from_safetensors)  # q8_0 rounding: a different teacher


# ---- output.format and distill export of a LoRA run (bug 12) ------------------------------------


@pytest.fixture(scope="module")
def lora_run(tiny_lm_pair, tmp_path_factory):
    teacher, _ = tiny_lm_pair
    root = tmp_path_factory.mktemp("lora-run")
    cfg = _config(
        str(teacher),
        student={"lora": {"enabled": True, "rank": 4, "target_modules": ["q_proj", "v_proj"]}},
        output={"format": "gguf", "checkpoint_every": 2},
    )
    (root / "distill.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(
        app,
        [
            "distill",
            "run",
            "--config",
            str(root / "distill.yaml"),
            "--output",
            str(root / "run"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return root / "run", [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_output_format_exports_the_final_student(lora_run):
    from transformers import AutoModelForCausalLM

    run_dir, events = lora_run
    assert (run_dir / "final" / "adapter_config.json").exists()
    exported = run_dir / "final.gguf"
    assert exported.is_file()
    assert any("final.gguf" in e.get("message", "") for e in events if e["event"] == "note")
    from_gguf = AutoModelForCausalLM.from_pretrained(run_dir, gguf_file="final.gguf")
    names = {n for n, _ in from_gguf.named_parameters()}
    assert "model.layers.1.self_attn.q_proj.weight" in names and not any("lora" in n for n in names)


@pytest.mark.slow
def test_export_of_a_lora_checkpoint_says_it_merged(lora_run, tmp_path):
    run_dir, _ = lora_run
    checkpoint = run_dir / "checkpoints" / "step-000002"
    for source in (checkpoint, run_dir):
        result = runner.invoke(
            app,
            [
                "distill",
                "export",
                "--input",
                str(source),
                "--format",
                "safetensors",
                "--output",
                str(tmp_path / source.name),
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["merged_adapter"] is True, source


# ---- what a run prints --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_prints_no_library_progress_and_evaluates_before_it_checkpoints(
    both_formats, tmp_path
):
    """A GGUF teacher in an empty cache: the dequantisation, loading and saving all happen."""
    cfg = _config(
        str(both_formats / "teacher-q8_0.gguf"),
        training={"eval_every": 2},
        output={"checkpoint_every": 2},
    )
    (tmp_path / "distill.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "ENTRENAR_CACHE": str(tmp_path / "cache"), "COLUMNS": "120"}
    env.pop("TRANSFORMERS_VERBOSITY", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "entrenar_tui.cli.main",
            "distill",
            "run",
            "--config",
            str(tmp_path / "distill.yaml"),
            "--output",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    for noise in (
        "Converting and de-quantizing",
        "Loading weights",
        "Writing model shards",
        "it/s]",
    ):
        assert noise not in done.stderr, noise
    lines = done.stderr.splitlines()
    assert any(line.startswith("step 1/2: loss") for line in lines)  # a log gets progress lines
    eval_at = next(i for i, line in enumerate(lines) if line.startswith("step 2: eval ppl"))
    checkpoint_at = next(i for i, line in enumerate(lines) if line.startswith("checkpoint: step 2"))
    assert eval_at < checkpoint_at
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if e["kind"] == "eval"] == [0, 2]  # the final eval, once
