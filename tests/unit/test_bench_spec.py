"""Sweep specs, overlays and the verdict, on configs and results built in the test."""

from __future__ import annotations

import math

import pytest

from conftest import write_recorded_sweep
from entrenar_tui.core.bench.analysis import analyze
from entrenar_tui.core.bench.export import results_csv
from entrenar_tui.core.bench.overlays import (
    ablation_variants,
    even_mapping,
    parse_range,
    parse_values,
    strategy_overlay,
    strategy_variants,
)
from entrenar_tui.core.bench.report import load_sweep, markdown_report
from entrenar_tui.core.bench.spec import SweepSpec, apply_overlay, job_key, resolve_axis
from entrenar_tui.core.bench.sweepdir import SweepDir, read_results
from entrenar_tui.core.distill.config import DistillConfig
from entrenar_tui.core.errors import InvalidInputError

MAPPED = {
    "teacher": {"model_id": "t"},
    "student": {"model_id": "s"},
    "distillation": {"progressive": {"layer_mapping": [[0, 1], [1, 3]]}},
}


def config(**distillation) -> DistillConfig:
    data = apply_overlay(MAPPED, {f"distillation.{k}": v for k, v in distillation.items()})
    return DistillConfig.model_validate(data)


def test_axis_names_resolve_by_path_then_section_then_anywhere():
    assert resolve_axis("alpha") == "distillation.alpha"
    assert resolve_axis("temperature") == "distillation.temperature"
    assert resolve_axis("batch_size") == "training.batch_size"
    assert resolve_axis("max_length") == "dataset.max_length"
    assert resolve_axis("student.lora.rank") == "student.lora.rank"
    with pytest.raises(InvalidInputError, match="ambiguous.*progressive.weight.*attention.weight"):
        resolve_axis("weight")
    with pytest.raises(InvalidInputError) as caught:
        resolve_axis("temprature")
    assert "temperature" in caught.value.hint


def test_job_keys_are_stable_and_distinct_and_overlays_leave_the_base_alone():
    assert job_key({"a.b": 1}, 0) == job_key({"a.b": 1}, 0)
    assert len({job_key({"a.b": 1}, 0), job_key({"a.b": 1}, 1), job_key({"a.b": 2}, 0)}) == 3
    merged = apply_overlay(MAPPED, {"distillation.alpha": 0.1, "training.max_steps": 5})
    assert merged["distillation"]["alpha"] == 0.1 and merged["training"] == {"max_steps": 5}
    assert "alpha" not in MAPPED["distillation"] and "training" not in MAPPED


@pytest.mark.parametrize(
    ("student", "teacher", "expected"),
    [
        (2, 4, [[0, 1], [1, 3]]),
        (3, 3, [[0, 0], [1, 1], [2, 2]]),
        (4, 6, [[0, 1], [1, 2], [2, 4], [3, 5]]),
    ],
)
def test_the_even_map_ends_each_student_layer_at_its_teacher_span(student, teacher, expected):
    assert even_mapping(student, teacher) == expected
    assert even_mapping(10, 30)[-1] == [9, 29]


def test_strategies_switch_the_losses_and_keep_what_they_need():
    base = config(alpha=0.6)
    assert strategy_overlay("ce-only", base)[0]["distillation.alpha"] == 0.0
    kd, _ = strategy_overlay("kd-only", base)
    assert kd["distillation.alpha"] == 0.6 and kd["distillation.progressive.enabled"] is False
    attention, _ = strategy_overlay("attention", base)
    assert attention["distillation.progressive.enabled"] is False
    assert attention["distillation.attention.layer_mapping"] == [[0, 1], [1, 3]]  # not inherited
    combined, notes = strategy_overlay("combined", base)
    assert (
        combined["distillation.progressive.enabled"] and combined["distillation.attention.enabled"]
    )
    assert notes == []  # the base had a mapping: nothing filled in
    variants, _ = strategy_variants(["kd-only", "combined"], base)
    assert [label for label, _ in variants] == ["ce-only", "kd-only", "combined"]
    for _, overlay in variants:  # every overlay makes a valid config
        DistillConfig.model_validate(apply_overlay(MAPPED, overlay))
    with pytest.raises(InvalidInputError, match="unknown strategy"):
        strategy_variants(["distil-everything"], base)


def test_ablation_flips_booleans_and_halves_and_doubles_numbers_within_bounds():
    variants, notes = ablation_variants(
        config(alpha=0.7), ["progressive.enabled", "alpha", "batch_size", "temperature"]
    )
    labels = [label for label, _ in variants]
    assert labels == [
        "base",
        "distillation.progressive.enabled=true",
        "distillation.alpha=0.35",
        "distillation.alpha=1",  # 1.4 clipped to alpha's upper bound
        "training.batch_size=2",
        "training.batch_size=8",
        "distillation.temperature=1",
        "distillation.temperature=4",
    ]
    flipped = dict(variants)["distillation.progressive.enabled=true"]
    assert flipped["distillation.progressive.layer_mapping"] == [[0, 1], [1, 3]]
    assert notes and "layer mapping" in notes[0]
    given, _ = ablation_variants(config(), ["temperature"], parse_values(["temperature=1,8"]))
    assert [label for label, _ in given] == [
        "base",
        "distillation.temperature=1",
        "distillation.temperature=8",
    ]
    with pytest.raises(InvalidInputError, match="only booleans and numbers"):
        ablation_variants(config(), ["divergence"])


def test_temperature_ranges_include_both_ends():
    assert parse_range("1.0..8.0", 0.5) == [1.0 + 0.5 * i for i in range(15)]
    assert parse_range("2..2", 1) == [2.0]
    for bad in ("1-8", "8..1", "0..2"):
        with pytest.raises(InvalidInputError):
            parse_range(bad, 0.5)


def test_a_clear_difference_names_the_winner(tmp_path):
    path = write_recorded_sweep(tmp_path)
    _, spec, results = load_sweep(path)
    analysis = analyze(spec, results)
    assert analysis.best == analysis.winner == "T=4"
    (comparison,) = analysis.comparisons
    assert comparison.first == "T=4" and comparison.second == "T=1"
    assert comparison.difference == pytest.approx(-10.0) and comparison.significant
    assert analysis.recommendation.startswith("T=4 is best")
    # agreement is higher-is-better: the same sweep read on it still picks T=4
    assert analyze(spec, results, "eval_top1_agreement").best == "T=4"


def test_no_winner_without_significance_and_the_power_note_says_what_could_be_seen(tmp_path):
    spec = SweepSpec("compare", MAPPED, [("a", {"x.y": 1}), ("b", {"x.y": 2})], [0, 1, 2])
    sweep = SweepDir(tmp_path / "s")
    sweep.write_spec(spec)
    for job, ppl in zip(spec.jobs(), [10.0, 11.0, 12.0, 10.5, 11.5, 12.5], strict=True):
        sweep.append_result(
            {
                "key": job.key,
                "label": job.label,
                "seed": job.seed,
                "status": "finished",
                "metrics": {"eval_ppl": ppl},
            }
        )
    analysis = analyze(spec, sweep.results())
    assert analysis.best == "a" and analysis.winner is None
    assert "not significant" in analysis.recommendation
    assert "could detect only differences of about" in analysis.recommendation


def test_results_lines_survive_a_partial_last_line_and_the_latest_wins(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(
        '{"key": "a", "status": "failed"}\n{"key": "a", "status": "finished"}\n{"key": "b", "sta'
    )
    assert read_results(path) == {"a": {"key": "a", "status": "finished"}}


def test_a_sweep_directory_refuses_a_different_base(tmp_path):
    spec = SweepSpec("temperature", MAPPED, [("T=1", {"distillation.temperature": 1.0})], [0])
    sweep = SweepDir(tmp_path / "s")
    sweep.write_spec(spec)
    other = SweepSpec("temperature", {**MAPPED, "seed": 9}, spec.variants, [0])
    with pytest.raises(InvalidInputError, match="different sweep"):
        sweep.write_spec(other)


def test_the_report_and_csv_come_from_the_sweep_directory_alone(tmp_path):
    path = write_recorded_sweep(tmp_path)
    text = markdown_report(path)
    for section in ("Summary", "Methodology", "Results", "Statistical Analysis", "Recommendations"):
        assert f"\n## {section}\n" in text
    assert "| T=4 (best) | 3 | 30.500 ± 0.500 |" in text
    lines = results_csv(path).splitlines()
    assert lines[0].startswith("key,setting,seed,status,attempts,final_loss")
    assert len(lines) == 7 and all(",finished,1," in line for line in lines[1:])
    assert not math.isnan(float(lines[1].split(",")[7]))  # eval_ppl column


def test_a_best_baseline_names_what_is_significantly_worse(tmp_path):
    variants = [("a", {"x.y": 1}), ("b", {"x.y": 2}), ("c", {"x.y": 3})]
    spec = SweepSpec("temperature", MAPPED, variants, [0, 1, 2], baseline="a")
    sweep = SweepDir(tmp_path / "s")
    sweep.write_spec(spec)
    ppl = {"a": [10.0, 10.1, 9.9], "b": [20.0, 20.2, 19.8], "c": [10.2, 9.6, 10.5]}
    for job in spec.jobs():
        sweep.append_result(
            {
                "key": job.key,
                "label": job.label,
                "seed": job.seed,
                "status": "finished",
                "metrics": {"eval_ppl": ppl[job.label][job.seed]},
            }
        )
    analysis = analyze(spec, sweep.results())
    assert analysis.best == "a" and analysis.winner is None
    assert "Significantly worse after Holm correction: b." in analysis.recommendation
