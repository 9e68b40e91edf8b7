"""The memory planner screen: its numbers are the estimator's and the planner's, it follows the
inputs, writes the plan it shows, and survives bad input. Expected values are computed here,
independently, with the core functions the screen calls."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from tuihelp import NO_GPU, settle, wait_until

from entrenar_tui.core.errors import EntrenarError
from entrenar_tui.core.lora.plan import plan_lora
from entrenar_tui.core.memory import estimate_for_model
from entrenar_tui.core.models.handle import Model
from entrenar_tui.core.sizes import format_bytes
from entrenar_tui.core.system import RecordedSampler
from entrenar_tui.widgets.bars import BreakdownBars, bar_cells

pytestmark = pytest.mark.anyio

LLAMA_CONFIG = Path(__file__).parents[1] / "data" / "configs" / "llama-2-7b.json"
# The screen's defaults: full fine-tuning, bf16, AdamW, batch 4 x 4 accumulation, 512 tokens.
DEFAULTS = dict(
    batch_size=4,
    sequence_length=512,
    optimizer="adamw",
    precision="bf16",
    gradient_checkpointing=False,
    device="cuda",
)


def make_app():
    """The app, started on the memory screen: the screen under test does not wait for (or
    depend on) the models screen, the default one."""
    from entrenar_tui.app import EntrenarApp, LaunchOptions

    class StartOnMemory(EntrenarApp):
        DEFAULT_MODE = "memory"

    return StartOnMemory(LaunchOptions(), sampler=RecordedSampler([NO_GPU]))


async def open_memory(pilot):
    await settle(pilot)
    await pilot.press("2")
    screen = pilot.app.screen
    assert type(screen).__name__ == "MemoryScreen"
    await wait_until(pilot, lambda: screen.estimate is not None, 60, "the first estimate")
    return screen


def cell(screen, term: str) -> str:
    """The bytes column of the breakdown table's row for `term`."""
    return str(screen.query_one("#memory-table").get_row(term)[1])


def text(screen, widget_id: str) -> str:
    return str(screen.query_one(widget_id).content)


def bars(screen) -> dict[str, int]:
    return {bar.label: bar.value for bar in screen.query_one(BreakdownBars).bars}


async def test_default_breakdown_is_the_estimators(tui_env):
    torch_before = "torch" in sys.modules or "transformers" in sys.modules
    expected = estimate_for_model("smollm2-135m", **DEFAULTS)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_memory(pilot)
        assert screen.query_one("#memory-model").value == "smollm2-135m"
        assert cell(screen, "total") == format_bytes(expected.total_bytes)
        for term, size in expected.breakdown.items():
            assert cell(screen, term) == format_bytes(size), term
        assert bars(screen) == {k: v for k, v in expected.breakdown.items() if v}
        spare = format_bytes(16 * 2**30 - expected.total_bytes)
        assert text(screen, "#memory-verdict") == (
            f"fits: {format_bytes(expected.total_bytes)} of 16.00 GiB, {spare} to spare"
        )
        assert screen.query_one("#memory-verdict").has_class("-fits")
        assert "plan for 16.00 GiB" in text(screen, "#memory-plan")
    if not torch_before:
        assert "torch" not in sys.modules and "transformers" not in sys.modules


async def test_typing_a_bigger_batch_grows_the_activations_row(tui_env):
    at_4 = estimate_for_model("smollm2-135m", **DEFAULTS)
    at_8 = estimate_for_model("smollm2-135m", **{**DEFAULTS, "batch_size": 8})
    assert at_8.breakdown["activations"] > at_4.breakdown["activations"]
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_memory(pilot)
        assert cell(screen, "activations") == format_bytes(at_4.breakdown["activations"])
        screen.query_one("#memory-batch").focus()
        await pilot.press("end", "backspace", "8")
        await wait_until(
            pilot,
            lambda: cell(screen, "activations") == format_bytes(at_8.breakdown["activations"]),
            what="the activations row at batch 8",
        )
        assert cell(screen, "total") == format_bytes(at_8.total_bytes)
        assert bars(screen)["activations"] == at_8.breakdown["activations"]


async def test_too_small_vram_does_not_fit_and_nothing_plans(tui_env):
    total = estimate_for_model("smollm2-135m", **DEFAULTS).total_bytes
    with pytest.raises(EntrenarError) as nothing_fits:
        plan_lora("smollm2-135m", "1GB", batch_size=16, sequence_length=512)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_memory(pilot)
        screen.query_one("#memory-vram").value = "2GB"
        over = format_bytes(total - 2 * 2**30)
        expected = f"does not fit: needs {format_bytes(total)} of 2.00 GiB, {over} over"
        await wait_until(pilot, lambda: text(screen, "#memory-verdict") == expected)
        assert screen.query_one("#memory-verdict").has_class("-over")
        screen.query_one("#memory-vram").value = "1GB"
        await wait_until(pilot, lambda: "no plan fits" in text(screen, "#memory-plan"))
        shown = text(screen, "#memory-plan")
        assert nothing_fits.value.message in shown and nothing_fits.value.hint in shown
        assert screen.plan is None
        await pilot.press("w")  # nothing to write: a warning, no modal
        await pilot.pause()
        assert type(app.screen).__name__ == "MemoryScreen"


async def test_llama_2_7b_config_on_16gb_plans_qlora_and_p_applies_it(tui_env):
    config = tui_env / "llama-2-7b" / "config.json"
    config.parent.mkdir()
    shutil.copy(LLAMA_CONFIG, config)
    expected = plan_lora(str(config), "16GB", batch_size=16, sequence_length=2048)
    assert expected.method == "qlora"
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_memory(pilot)
        screen.query_one("#memory-model").value = str(config)
        screen.query_one("#memory-sequence_length").value = "2048"
        await wait_until(
            pilot,
            lambda: (
                screen.plan is not None
                and screen.plan.model == expected.model
                and screen.plan.sequence_length == 2048
            ),
            what="the Llama-2-7B plan",
        )
        plan = screen.plan
        assert (plan.method, plan.rank, plan.target_set) == ("qlora", expected.rank, "all-linear")
        assert (plan.batch_size, plan.gradient_accumulation) == (
            expected.batch_size,
            expected.gradient_accumulation,
        )
        shown = text(screen, "#memory-plan")
        assert f"qlora r={expected.rank} all-linear" in shown
        assert format_bytes(expected.memory.total_bytes) in shown
        assert text(screen, "#memory-verdict").startswith("does not fit")  # full fine-tuning

        await pilot.press("p")
        target = format_bytes(expected.memory.total_bytes)
        await wait_until(pilot, lambda: cell(screen, "total") == target, what="the applied plan")
        assert screen.query_one("#memory-method").value == "qlora"
        assert screen.query_one("#memory-checkpointing").value == expected.gradient_checkpointing
        assert screen.estimate.total_bytes == expected.memory.total_bytes
        assert text(screen, "#memory-verdict").startswith("fits: ")
        assert screen.plan.method == "qlora"  # applying the plan leaves the plan as it was


async def test_w_writes_the_plan_as_yaml(tui_env):
    app = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        screen = await open_memory(pilot)
        await wait_until(pilot, lambda: screen.plan is not None)
        plan = screen.plan
        await pilot.press("w")
        await pilot.pause()
        assert type(app.screen).__name__ == "WritePlanScreen"
        await pilot.press("escape")  # cancel: nothing written
        await pilot.pause()
        assert type(app.screen).__name__ == "MemoryScreen"
        assert not (tui_env / "lora-plan.yaml").exists()

        await pilot.press("w")
        await pilot.pause()
        await pilot.press("enter")  # the default path
        await pilot.pause()
        data = yaml.safe_load((tui_env / "lora-plan.yaml").read_text())
        assert data["training"]["batch_size"] == plan.batch_size
        assert data["training"]["gradient_accumulation"] == plan.gradient_accumulation
        assert data["training"]["gradient_checkpointing"] == plan.gradient_checkpointing
        assert data["student"]["lora"]["enabled"] == (plan.method != "full")
        messages = [n.message for n in app._notifications]
        assert any(str(tui_env / "lora-plan.yaml") in m for m in messages), messages

        await pilot.press("w")
        await pilot.pause()
        app.screen.query_one("#write-plan-path").value = "plans/other.yaml"
        await pilot.press("enter")
        await pilot.pause()
        assert yaml.safe_load((tui_env / "plans" / "other.yaml").read_text())["student"]


async def test_bad_input_shows_errors_and_the_app_lives_on(tui_env):
    with pytest.raises(EntrenarError) as unknown:
        Model.open("no-such-model-xyz")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_memory(pilot)
        screen.query_one("#memory-model").value = "no-such-model-xyz"
        await wait_until(pilot, lambda: unknown.value.message in text(screen, "#memory-errors"))
        assert screen.estimate is None
        assert text(screen, "#memory-verdict").startswith("no estimate")
        assert screen.query_one("#memory-row-model").has_class("-bad")

        screen.query_one("#memory-model").value = "smollm2-135m"
        screen.query_one("#memory-batch").value = "four"
        await wait_until(
            pilot, lambda: "batch: must be a positive" in text(screen, "#memory-errors")
        )
        assert screen.estimate is None and not screen.query_one("#memory-row-model").has_class(
            "-bad"
        )

        screen.query_one("#memory-batch").value = "4"
        screen.query_one("#memory-vram").value = "lots"  # the estimate needs no VRAM
        await wait_until(pilot, lambda: screen.estimate is not None)
        assert "VRAM: not a size" in text(screen, "#memory-errors")
        assert text(screen, "#memory-verdict").startswith("needs ")
        assert screen.plan is None

        await pilot.press("question_mark")  # the app still answers keys
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running and app.screen is screen


async def test_follows_the_selected_model_and_lora_via_the_keyboard(tui_env):
    lora = {**DEFAULTS, "lora_rank": 16, "lora_targets": None, "lora_dropout": 0.05}
    expected = estimate_for_model("minilm-l6", **lora)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_memory(pilot)
        assert screen.query_one("#memory-rank").disabled  # full fine-tuning has no rank
        app.selected_model = "minilm-l6"
        await pilot.pause()
        assert screen.query_one("#memory-model").value == "minilm-l6"
        screen.query_one("#memory-method").focus()
        await pilot.press("enter", "down", "enter")  # the menu: full -> LoRA
        await wait_until(pilot, lambda: cell(screen, "total") == format_bytes(expected.total_bytes))
        assert screen.query_one("#memory-method").value == "lora"
        assert not screen.query_one("#memory-rank").disabled
        assert cell(screen, "adapters") == format_bytes(expected.breakdown["adapters"]) != "0 B"


def test_bar_cells_are_exact_to_an_eighth():
    assert bar_cells(0.5, 10) == "█████     "
    assert bar_cells(1 / 16, 2) == "▏ "
    assert bar_cells(1.5, 3) == "███" and bar_cells(0, 3) == "   "
