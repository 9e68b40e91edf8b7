"""`lora plan` and `lora compare` on the configs of real models (no weights, no torch).

The expected plans follow from the one memory estimator at the defaults (2048 tokens, an
effective batch of 16, 10% headroom); each test says why its answer is the sensible one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIGS
from entrenar_tui.core.distill.config import DistillConfig, LoraConfig, TrainingConfig
from entrenar_tui.core.errors import InvalidInputError
from entrenar_tui.core.lora.compare import compare_methods
from entrenar_tui.core.lora.plan import (
    QLORA_SPEED,
    Method,
    parse_method,
    plan_lora,
    relative_speed,
)
from entrenar_tui.core.memory import estimate_memory
from entrenar_tui.core.memory.shape import count_parameters, model_shape
from entrenar_tui.core.models.arch import from_config

CONFIGS = Path(__file__).parents[1] / "data" / "configs"
LLAMA = str(CONFIGS / "llama-2-7b.json")
GIB = 2**30
LLAMA_PARAMETERS = 6_738_415_616  # published for meta-llama/Llama-2-7b-hf
LLAMA_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def llama_plans():
    return {gb: plan_lora(LLAMA, f"{gb}GB") for gb in (16, 24, 80)}


def _config(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


# ---- the test data are the published configs ---------------------------------------------------


@pytest.mark.parametrize(
    "name, published",
    [
        ("llama-2-7b.json", 6_738_415_616),
        ("mistral-7b-v0.1.json", 7_241_732_096),
        ("qwen2-0.5b.json", 494_032_768),
        ("gpt2.json", 124_439_808),
    ],
)
def test_config_files_give_the_published_parameter_counts(name, published):
    config = _config(name)
    assert count_parameters(from_config(config), config) == published


# ---- Llama-2-7B at 16, 24 and 80 GB ------------------------------------------------------------


def test_16gb_needs_qlora(llama_plans):
    """The bf16 base alone is 12.55 GiB; LoRA at micro-batch 1 with checkpointing is over the
    14.4 GiB budget, so QLoRA is the answer, as in the original example. Its activations are
    fp32 (PEFT's k-bit preparation upcasts the embeddings and norms), so micro-batch 4 needs
    15.3 GiB and the plan takes micro-batch 2 (11.0 GiB) with 8 accumulation steps."""
    plan = llama_plans[16]
    assert (plan.method, plan.rank, plan.alpha, plan.target_set) == ("qlora", 64, 128, "all-linear")
    assert plan.target_modules == LLAMA_ALL_LINEAR and plan.quantize_base == "nf4"
    assert (plan.batch_size, plan.gradient_accumulation, plan.gradient_checkpointing) == (
        2,
        8,
        True,
    )
    n, a = LLAMA_PARAMETERS, 64 * 32 * (4 * 8192 + 3 * (4096 + 11008))
    assert plan.trainable_parameters == a
    assert plan.trainable_share == pytest.approx(a / n, rel=1e-6)
    assert 0.6 < plan.utilization <= 0.9  # within the budget: micro-batch 4 is over it
    # FLOPs per token: forward, its recomputation and the input gradients each 2(N + A), the
    # adapters' weight gradients 2A; against full fine-tuning's 6N, slowed by dequantisation
    flops = 3 * 2 * (n + a) + 2 * a
    assert plan.relative_speed == pytest.approx(6 * n / flops * QLORA_SPEED, rel=1e-9)
    rejected = [(r.method, r.rank, r.optimizer) for r in plan.rejected]
    assert rejected == [("full", None, "adamw"), ("full", None, "adamw8bit")] + [
        ("lora", r, "adamw") for r in (64, 32, 16, 8)
    ]
    assert all(r.memory_bytes > plan.budget_bytes for r in plan.rejected)
    # the LoRA ranks below 64 fit the raw 16 GiB: the reason says the headroom rules them out
    assert all("only without the headroom" in r.reason for r in plan.rejected[3:])


def test_24gb_takes_16_bit_lora_rank_64(llama_plans):
    """LoRA r=64 on every linear layer needs 16.9 GiB at micro-batch 1 and 20.7 at micro-batch 4
    with checkpointing: it fits 21.6 GiB; without checkpointing it needs 34 GiB."""
    plan = llama_plans[24]
    assert (plan.method, plan.rank, plan.target_set, plan.quantize_base) == (
        "lora",
        64,
        "all-linear",
        None,
    )
    assert (plan.batch_size, plan.gradient_accumulation, plan.gradient_checkpointing) == (
        4,
        4,
        True,
    )
    # by hand: bf16 base (2 bytes x N), fp32 adapters and AdamW's two fp32 moments (4 + 8
    # bytes x A), each block's bf16 input kept by checkpointing (layers x tokens x hidden x 2)
    # and the fp32 loss buffers (log-softmax, its gradient, the logits' gradient: 3 x tokens x
    # vocabulary x 4), at the peak (the loss backward, adapter gradients not yet there)
    n, a, tokens = LLAMA_PARAMETERS, plan.trainable_parameters, 4 * 2048
    by_hand = 2 * n + 12 * a + 32 * tokens * 4096 * 2 + 3 * tokens * 32000 * 4
    assert plan.memory.peak_phase == "the loss backward"
    assert plan.memory.peak_tensor_bytes == pytest.approx(by_hand, rel=1e-3)
    assert [r.method for r in plan.rejected] == ["full", "full"]
    assert any("without it micro-batch 1 needs" in n for n in plan.notes)


def test_80gb_fine_tunes_everything_with_8_bit_adamw(llama_plans):
    """Full fine-tuning with fp32 master weights and AdamW is 16 bytes a parameter (101 GiB):
    too much. With 8-bit AdamW it is 10 bytes a parameter (66.6 GiB), which fits at micro-batch 1
    without checkpointing; full fine-tuning ranks above LoRA r=64 in expected quality."""
    plan = llama_plans[80]
    assert (plan.method, plan.optimizer, plan.rank, plan.target_modules) == (
        "full",
        "adamw8bit",
        None,
        [],
    )
    assert (plan.batch_size, plan.gradient_accumulation, plan.gradient_checkpointing) == (
        1,
        16,
        False,
    )
    assert plan.trainable_parameters == plan.parameters == 6_738_415_616
    assert plan.relative_speed == 1.0
    assert [(r.method, r.optimizer, r.memory_bytes > 100 * GIB) for r in plan.rejected] == [
        ("full", "adamw", True)
    ]


def test_plans_are_the_estimators_numbers(llama_plans):
    for plan in llama_plans.values():
        settings = dict(
            batch_size=plan.batch_size,
            sequence_length=2048,
            precision="bf16",
            optimizer=plan.optimizer,
            gradient_checkpointing=plan.gradient_checkpointing,
            config=_config("llama-2-7b.json"),
        )
        if plan.rank:
            settings.update(
                lora_rank=plan.rank,
                lora_targets=plan.target_modules,
                lora_dropout=0.05,  # what the written config trains with
                quantize_base=plan.quantize_base,
            )
        direct = estimate_memory(from_config(_config("llama-2-7b.json")), **settings)
        assert plan.memory.total_bytes == direct.total_bytes
        assert plan.memory.total_bytes <= plan.budget_bytes == int(plan.vram_bytes * 0.9)
        assert plan.utilization == plan.memory.total_bytes / plan.vram_bytes <= 1
        data = plan.to_dict()
        assert json.loads(json.dumps(data))["memory"]["total_bytes"] == direct.total_bytes
        assert {
            "method",
            "rank",
            "alpha",
            "target_modules",
            "batch_size",
            "gradient_accumulation",
            "gradient_checkpointing",
            "sequence_length",
            "trainable_parameters",
            "trainable_share",
            "memory",
            "vram_bytes",
            "utilization",
            "relative_speed",
            "rejected",
            "notes",
        } <= set(data)


def test_without_headroom_lora_squeezes_into_16gb():
    """Why the default headroom: at 0% LoRA r=32 "fits" 16 GiB at 99% of the card."""
    plan = plan_lora(LLAMA, "16GB", headroom=0)
    assert (plan.method, plan.rank, plan.batch_size) == ("lora", 32, 1)
    assert 0.99 < plan.utilization <= 1


def test_defaults_are_stated_and_given_values_are_not_called_defaults(llama_plans):
    notes = " ".join(llama_plans[16].notes)
    assert "2048 tokens (the default" in notes and "effective batch 16 (the default" in notes
    assert "10% headroom" in notes and "alpha = 2 x rank" in notes and "NF4" in notes
    plan = plan_lora(LLAMA, "24GB", sequence_length=512, batch_size=12)
    assert plan.sequence_length == 512 and plan.effective_batch_size == 12
    assert plan.batch_size * plan.gradient_accumulation == 12 and 12 % plan.batch_size == 0
    assert not any("(the default" in n for n in plan.notes)


def test_shorter_sequences_can_drop_gradient_checkpointing():
    """At 512 tokens LoRA r=64 fits without checkpointing at micro-batch 1; the search prefers
    that (no recomputation: 1.45x against 0.97x) over a bigger micro-batch with checkpointing."""
    short = plan_lora(LLAMA, "24GB", sequence_length=512)
    assert (short.method, short.rank, short.gradient_checkpointing) == ("lora", 64, False)
    n, a = LLAMA_PARAMETERS, short.trainable_parameters  # forward and input gradients 2(N + A)
    assert short.relative_speed == pytest.approx(6 * n / (2 * 2 * (n + a) + 2 * a), rel=1e-9)


# ---- methods -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("full", Method("full")),
        ("lora", Method("lora")),
        ("lora-16", Method("lora", 16)),
        ("LoRA-64", Method("lora", 64)),
        ("qlora", Method("qlora")),
        ("qlora-8", Method("qlora", 8)),
        ("qlora-4bit", Method("qlora")),
        ("qlora-4bit-32", Method("qlora", 32)),
    ],
)
def test_method_names_parse(text, expected):
    assert parse_method(text) == expected


@pytest.mark.parametrize(
    "text", ["lora16", "full-16", "lora-4bit", "dora", "lora-0", "qlora-x", ""]
)
def test_bad_method_names_say_what_is_accepted(text):
    with pytest.raises(InvalidInputError) as err:
        parse_method(text)
    assert "lora-RANK" in err.value.hint


def test_a_fixed_method_plans_its_own_ranks_and_settings():
    plan = plan_lora(LLAMA, "24GB", method="qlora-16")
    assert (plan.method, plan.rank, plan.alpha, plan.target_set) == ("qlora", 16, 32, "all-linear")
    assert plan.rejected == []
    plan = plan_lora(LLAMA, "24GB", method="lora")
    assert (plan.method, plan.rank) == ("lora", 64)


def test_a_fixed_method_that_cannot_fit_points_to_auto():
    with pytest.raises(InvalidInputError) as err:
        plan_lora(LLAMA, "16GB", method="lora")
    assert "needs at least" in err.value.message and "--method auto" in err.value.hint


def test_nothing_fits_says_how_much_is_needed():
    """QLoRA r=8 on the attention projections at micro-batch 1 with checkpointing is the least
    any method needs (6.92 GiB); 4 GB is not enough."""
    with pytest.raises(InvalidInputError) as err:
        plan_lora(LLAMA, "4GB")
    assert "needs at least 6.92 GiB" in err.value.message
    assert "qlora r=8 attention-only" in err.value.message and "3.60 GiB" in err.value.message
    assert "shorter --sequence-length" in err.value.hint


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(vram="lots"),
        dict(vram="0GB"),
        dict(vram="16GB", headroom=1.0),
        dict(vram="16GB", batch_size=0),
        dict(vram="16GB", sequence_length=-1),
        dict(vram="16GB", method="auto-16"),
    ],
)
def test_bad_arguments_are_input_errors(kwargs):
    with pytest.raises(InvalidInputError):
        plan_lora(LLAMA, **kwargs)


# ---- the distill.yaml fragment -----------------------------------------------------------------


@pytest.mark.parametrize("gb", [16, 24, 80])
def test_written_config_trains_exactly_what_was_estimated(tmp_path, gb):
    """The fragment merged into a config gives back the plan's own TrainSettings: the object
    the estimate counted is the one `distill run` builds from."""
    out = tmp_path / "plan.yaml"
    plan = plan_lora(LLAMA, f"{gb}GB", write_config=out)
    assert plan.config_written == str(out)
    text = out.read_text()
    assert text.startswith("# entrenar lora plan")
    fragment = yaml.safe_load(text)
    assert set(fragment) == {"student", "training", "dataset"}
    lora = LoraConfig.model_validate(fragment["student"]["lora"])
    training = TrainingConfig.model_validate(fragment["training"])
    assert lora.enabled == (plan.method != "full")
    if lora.enabled:
        assert (lora.rank, lora.alpha, lora.target_modules) == (
            plan.rank,
            plan.alpha,
            plan.target_modules,
        )
    assert ("quantization" in fragment["student"]) == (plan.method == "qlora")
    assert (training.batch_size, training.gradient_accumulation) == (
        plan.batch_size,
        plan.gradient_accumulation,
    )
    assert training.optimizer == plan.optimizer and training.mixed_precision == "no"
    whole = {
        "teacher": {"model_id": "t"},
        "student": {"model_id": "s", **fragment["student"]},
        "training": fragment["training"],
        "dataset": fragment["dataset"],
    }
    config = DistillConfig.model_validate(whole)
    assert config.student_settings("cuda") == plan.settings
    assert plan.memory.inputs == plan.settings.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["plan.yaml"]  # no temp file left behind


def test_the_three_plans_are_full_lora_and_qlora(llama_plans):
    methods = {gb: (plan.method, plan.optimizer) for gb, plan in llama_plans.items()}
    assert methods[80][0] == "full" and methods[16][0] == "qlora"


def test_write_config_with_a_base_writes_a_config_distill_run_takes(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "teacher": {"model_id": "t"},
                "student": {"init_from_teacher": {"layers": [0, 2]}},
                "training": {"max_steps": 7, "learning_rate": 1e-4},
                "distillation": {"temperature": 3.0},
            }
        )
    )
    out = tmp_path / "planned.yaml"
    plan = plan_lora(LLAMA, "16GB", write_config=out, config=base, device="cpu")
    written = yaml.safe_load(out.read_text())
    config = DistillConfig.model_validate(written)
    assert config.student.model_id == plan.model and config.student.init_from_teacher is None
    assert (config.training.max_steps, config.distillation.temperature) == (7, 3.0)  # kept
    assert config.student_settings("cpu") == plan.settings and plan.settings.device == "cpu"
    assert "base.yaml with the plan applied" in out.read_text()


def test_a_cpu_plan_counts_no_cuda_context():
    cuda = plan_lora(LLAMA, "80GB", method="full")
    cpu = plan_lora(LLAMA, "80GB", method="full", device="cpu")
    assert cuda.memory.inputs["device"] == "cuda" and cpu.memory.inputs["device"] == "cpu"
    assert cpu.memory.breakdown["overhead"] != cuda.memory.breakdown["overhead"]
    assert not any("CUDA context" in note for note in cpu.memory.notes)


def test_write_config_into_a_folder_is_refused(tmp_path):
    with pytest.raises(InvalidInputError):
        plan_lora(LLAMA, "16GB", write_config=tmp_path)


# ---- all-linear target names -------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_all_linear_names_select_exactly_the_blocks_linears(tmp_path, arch):
    """The written target_modules must make PEFT wrap what the estimate counted: every linear
    layer in the blocks and nothing outside (BERT's bare `dense` would catch its head)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_CONFIGS[arch]))
    plan = plan_lora(str(path), "1GB", method="lora-8", sequence_length=64)
    shape = model_shape(from_config(TINY_CONFIGS[arch]), TINY_CONFIGS[arch])
    assert set(shape.lora_targets(plan.target_modules)) == set(shape.lora_targets(["all-linear"]))


# ---- compare -----------------------------------------------------------------------------------


def test_compare_rows_match_the_plans(llama_plans):
    plan = llama_plans[16]
    (qlora,) = compare_methods(LLAMA, ["qlora-64"], batch_size=plan.batch_size).rows
    assert qlora.memory_bytes == plan.memory.total_bytes
    assert qlora.trainable_parameters == plan.trainable_parameters
    assert qlora.relative_speed == plan.relative_speed
    lora_plan = llama_plans[24]
    (lora,) = compare_methods(LLAMA, ["lora-64"], batch_size=lora_plan.batch_size).rows
    assert lora.memory_bytes == lora_plan.memory.total_bytes
    rejected_lora = compare_methods(LLAMA, ["lora-32"]).rows[0]  # micro-batch 1, checkpointing
    assert rejected_lora.memory_bytes == plan.rejected[3].memory_bytes


def test_compare_the_issue_example():
    table = compare_methods(LLAMA, "full,lora-16,lora-64,qlora-4bit", vram="24GB")
    rows = {r.method: r for r in table.rows}
    assert list(rows) == ["full", "lora-16", "lora-64", "qlora-4bit"]
    assert rows["qlora-4bit"].rank == 16 and rows["qlora-4bit"].kind == "qlora"
    assert (
        rows["lora-16"].trainable_parameters
        == rows["qlora-4bit"].trainable_parameters
        == 39_976_960
    )
    assert (
        rows["qlora-4bit"].memory_bytes
        < rows["lora-16"].memory_bytes
        < rows["lora-64"].memory_bytes
        < rows["full"].memory_bytes
    )
    assert [r.fits for r in table.rows] == [False, True, True, True]
    assert rows["full"].quality_note.startswith("reference")
    assert "Dettmers" in rows["qlora-4bit"].quality_note
    assert rows["qlora-4bit"].relative_speed == pytest.approx(
        0.7 * rows["lora-16"].relative_speed, rel=0.01
    )
    json.dumps(table.to_dict())
    assert all(r.fits is None for r in compare_methods(LLAMA, ["full"]).rows)  # no --vram given


def test_compare_refuses_empty_and_unknown_methods():
    with pytest.raises(InvalidInputError):
        compare_methods(LLAMA, [])
    with pytest.raises(InvalidInputError):
        compare_methods(LLAMA, ["full", "adapter"])


def test_relative_speed_follows_flops_per_token():
    n = 7_000_000_000
    assert relative_speed("full", n, n, False) == 1.0
    assert relative_speed("full", n, n, True) == 0.75  # 6N of 8N
    assert relative_speed("lora", n, 0, False) == 1.5  # no weight gradients: 4N
    assert relative_speed("lora", n, 0, True) == 1.0
    assert relative_speed("qlora", n, 0, False) == pytest.approx(1.05)
    assert relative_speed("lora", n, n // 100, False) < 1.5  # adapters cost FLOPs too


# ---- other models ------------------------------------------------------------------------------


def test_other_published_configs_plan_sensibly():
    mistral = plan_lora(str(CONFIGS / "mistral-7b-v0.1.json"), "16GB")
    assert mistral.method == "qlora"  # 7.2B parameters: a 16-bit base is 13.5 GiB
    qwen = plan_lora(str(CONFIGS / "qwen2-0.5b.json"), "24GB")
    assert (qwen.method, qwen.optimizer) == (
        "full",
        "adamw",
    )  # 0.5B: 16 bytes a parameter is 7.4 GiB
    gpt2 = plan_lora(str(CONFIGS / "gpt2.json"), "8GB", sequence_length=1024)
    assert gpt2.method == "full" and gpt2.target_modules == []


def test_packaged_gguf_model_plans():
    plan = plan_lora("smollm2-135m", "8GB")
    assert plan.method == "full" and plan.parameters == 134_515_008
    assert any("GGUF" in n for n in plan.notes)
    # 3 GB: the fp32 logits of 2048 tokens x 49152 words dominate; full fine-tuning does not fit
    tight = plan_lora("smollm2-135m", "3GB")
    assert (tight.method, tight.rank, tight.gradient_checkpointing) == ("lora", 64, True)
    assert [r.method for r in tight.rejected] == ["full", "full"]


def test_tiny_model_folder_plans(tiny_model_dir):
    folder = tiny_model_dir("llama")
    plan = plan_lora(str(folder), "1GB", sequence_length=128)
    assert (plan.method, plan.batch_size, plan.gradient_checkpointing) == ("full", 16, False)
    assert plan.model == str(folder)
    lora = plan_lora(str(folder), "1GB", method="lora-4", sequence_length=128)
    assert lora.target_modules == LLAMA_ALL_LINEAR and lora.alpha == 8
