"""`distill validate`: a table of bad configs, each with its field path and hint (exit 2)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from entrenar_tui.cli.main import app
from entrenar_tui.core.distill.config import apply_overrides, load_config
from entrenar_tui.core.distill.starter import starter_config
from entrenar_tui.core.errors import ConfigError

runner = CliRunner()


@pytest.fixture(scope="module")
def base(tiny_lm_pair):
    teacher, student = tiny_lm_pair
    return {
        "teacher": {"model_id": str(teacher)},
        "student": {"model_id": str(student)},
        "training": {"max_steps": 10},
    }


def _set(cfg: dict, path: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return cfg


_DELETE = object()

# (field to change, bad value, expected problem path, text expected in message or hint)
BAD = [
    ("teacher.modle_id", "x", "teacher.modle_id", "did you mean 'model_id'"),
    ("distillation.temprature", 2, "distillation.temprature", "did you mean 'temperature'"),
    ("training.learnig_rate", 1e-4, "training.learnig_rate", "did you mean 'learning_rate'"),
    ("distillation.alpha", 1.5, "distillation.alpha", "KD against CE"),
    ("distillation.alpha", -0.1, "distillation.alpha", "KD against CE"),
    ("distillation.temperature", 0, "distillation.temperature", "positive"),
    ("distillation.divergence", "kl", "distillation.divergence", "one of the listed values"),
    ("training.batch_size", "four", "training.batch_size", "whole number"),
    ("training.learning_rate", -1, "training.learning_rate", "positive"),
    ("training.mixed_precision", "fp8", "training.mixed_precision", "one of the listed values"),
    ("training.scheduler", "exp", "training.scheduler", "one of the listed values"),
    ("dataset.source", "text", "dataset", "needs dataset.path"),
    ("device", "tpu", "device", "one of the listed values"),
    ("teacher", _DELETE, "teacher", "add teacher"),
    ("student.init_from_teacher", {"layers": [0, 1]}, "student", "exactly one of"),
    ("teacher.model_id", "./no/such/model", "teacher.model_id", "path"),
    (
        "distillation.progressive",
        {"enabled": True, "layer_mapping": [[0, 1], [5, 2]]},
        "distillation.progressive.layer_mapping[1][0]",
        "student has layers 0..1",
    ),
    (
        "distillation.progressive",
        {"enabled": True, "layer_mapping": [[0, 9]]},
        "distillation.progressive.layer_mapping[0][1]",
        "teacher has layers 0..3",
    ),
    ("distillation.progressive", {"enabled": True}, "(top level)", "layer_mapping"),
    (
        "distillation.teacher_cache",
        {"enabled": True, "top_k": 100000},
        "distillation.teacher_cache.top_k",
        "below",
    ),
    ("output.keep_checkpoints", 0, "output.keep_checkpoints", ""),
]


@pytest.mark.parametrize("field,value,path,text", BAD, ids=[f"{b[0]}={b[1]!r}"[:40] for b in BAD])
def test_bad_config_reports_path_and_hint(base, tmp_path, field, value, path, text):
    cfg = _set(base, field, value)
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["distill", "validate", "--config", str(file), "--json"])
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    match = [p for p in report["problems"] if p["path"] == path]
    assert match, report["problems"]
    assert text in match[0]["message"] + " " + match[0]["hint"]


def test_every_problem_is_reported_at_once(base, tmp_path):
    cfg = _set(
        _set(_set(base, "distillation.alpha", 2), "training.batch_size", 0),
        "student.init_from_teacher",
        {"layers": [99]},
    )
    cfg["student"].pop("model_id")
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["distill", "validate", "--config", str(file), "--json"])
    paths = {p["path"] for p in json.loads(result.stdout)["problems"]}
    assert {
        "distillation.alpha",
        "training.batch_size",
        "student.init_from_teacher.layers",
    } <= paths


def test_vocab_mismatch_is_caught(base, tmp_path, tiny_model_dir):
    cfg = _set(base, "student.model_id", str(tiny_model_dir("gpt2")))
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["distill", "validate", "--config", str(file)])
    assert result.exit_code == 2 and "vocabulary mismatch" in result.stdout


def test_good_config_and_demo_validate(base, tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(base))
    assert runner.invoke(app, ["distill", "validate", "--config", str(file)]).exit_code == 0
    assert runner.invoke(app, ["distill", "validate", "--config", "demo"]).exit_code == 0


def test_yaml_syntax_error_is_one_line(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("teacher:\n  model_id: x\n   bad: indent\n")
    result = runner.invoke(app, ["distill", "validate", "--config", str(file)])
    assert result.exit_code == 2 and "line" in result.stderr and "Traceback" not in result.output


def test_set_overrides_parse_as_yaml():
    data = apply_overrides(
        {},
        [
            "training.max_steps=50",
            "distillation.progressive.layer_mapping=[[0, 1]]",
            "dataset.streaming=true",
        ],
    )
    assert data == {
        "training": {"max_steps": 50},
        "distillation": {"progressive": {"layer_mapping": [[0, 1]]}},
        "dataset": {"streaming": True},
    }
    with pytest.raises(ConfigError):
        apply_overrides({}, ["no-equals-sign"])


def test_demo_is_reachable_by_name():
    cfg = load_config("demo", ["training.max_steps=7"])
    assert cfg.teacher.model_id == "smollm2-135m" and cfg.training.max_steps == 7


def test_init_writes_a_config_that_validates(tmp_path, tiny_lm_pair):
    teacher, _ = tiny_lm_pair
    out = tmp_path / "distill.yaml"
    result = runner.invoke(
        app, ["distill", "init", "--teacher", str(teacher), "--output", str(out)]
    )
    assert result.exit_code == 0
    text = out.read_text()
    assert "# " in text and "layers: [0, 3]" in text
    assert runner.invoke(app, ["distill", "validate", "--config", str(out)]).exit_code == 0
    again = runner.invoke(app, ["distill", "init", "--teacher", str(teacher), "--output", str(out)])
    assert again.exit_code == 2 and "--force" in again.stderr
    assert yaml.safe_load(starter_config("x"))["teacher"]["model_id"] == "x"


def test_run_that_cannot_fit_is_a_warning_not_an_error(base, tmp_path):
    # attention transfer runs eager attention: batch x heads x 4096^2 attention maps
    cfg = _set(_set(base, "training.batch_size", 64), "dataset", {"max_length": 4096})
    cfg = _set(cfg, "distillation", {"attention": {"enabled": True, "layer_mapping": [[0, 1]]}})
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["distill", "validate", "--config", str(file), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["ok"]
    warning = [p for p in report["problems"] if p["severity"] == "warning"]
    assert warning and "needs about" in warning[0]["message"] and "batch_size" in warning[0]["hint"]


def test_a_packaged_example_gets_a_new_run_directory_each_time(tmp_path, monkeypatch):
    from entrenar_tui.core.distill.config import default_run_dir, load_config

    monkeypatch.chdir(tmp_path)
    demo = load_config("demo")
    first = default_run_dir("demo", demo)
    assert first.parent == Path("runs") and first.name.startswith("demo-")
    first.mkdir(parents=True)
    second = default_run_dir("demo", demo)
    assert second != first and second.name.startswith("demo-") and not second.exists()
    own = tmp_path / "mine.yaml"
    own.write_text((Path(__file__).parents[2] / "examples" / "demo.yaml").read_text())
    assert default_run_dir(str(own), load_config(own)) == Path("runs/demo")


def test_field_line_finds_each_problem_in_the_yaml_text():
    from entrenar_tui.core.distill.config_lines import field_line

    text = "teacher:\n  model_id: x\ntraining:\n  # a comment\n  batch_size: 4\n  lr: 1\n"
    assert field_line(text, "training.batch_size") == 4
    assert field_line(text, "training.max_steps") == 2  # the deepest present parent
    assert field_line(text, "student.model_id") is None
    assert (
        field_line(
            "student:\n  init_from_teacher:\n    layers: [0, 40]\n",
            "student.init_from_teacher.layers[1]",
        )
        == 2
    )
