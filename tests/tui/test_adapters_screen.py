"""The Adapters screen on real PEFT adapters of a tiny LLaMA: `lora inspect` and `lora merge`
run as real `entrenar` children."""

from __future__ import annotations

import shutil

import pytest
from safetensors import safe_open
from tuihelp import make_app, settle, wait_until

pytestmark = pytest.mark.anyio


def _save_adapter(base_dir, folder, trained: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=not trained,  # False: B random too, as if trained
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """(base, trained, untrained): two real PEFT adapters of the same tiny LLaMA."""
    base = tiny_model_dir("llama")
    root = tmp_path_factory.mktemp("tui-adapters")
    trained = _save_adapter(base, root / "trained", trained=True)
    untrained = _save_adapter(base, root / "untrained", trained=False)
    return base, trained, untrained


def lora_modules(folder) -> list[str]:
    with safe_open(str(folder / "adapter_model.safetensors"), "np") as f:
        names = f.keys()  # a safe_open handle is not a dict: it cannot be iterated itself
    return sorted({k.split(".lora_A")[0] for k in names if ".lora_A" in k})


async def open_adapters(pilot) -> None:
    await settle(pilot)
    await pilot.press("4")
    await settle(pilot)
    assert type(pilot.app.screen).__name__ == "AdaptersScreen"


async def load_typed(pilot, path) -> None:
    """Type a folder into the path field (shift+tab reaches it) and press enter."""
    screen = pilot.app.screen
    await pilot.press("shift+tab")
    field = screen.query_one("#adapters-path")
    assert screen.focused is field
    field.value = str(path)
    await pilot.press("enter")
    await wait_until(
        pilot, lambda: not screen.query_one("#adapters-summary").loading, 60, "inspect"
    )
    await settle(pilot)


def summary(screen) -> str:
    return str(screen.query_one("#adapters-summary").content)


async def test_a_trained_adapter_shows_every_module_and_its_spectrum(tui_env, adapters):
    _, trained, _ = adapters
    shutil.copytree(trained, tui_env / "my-adapter")
    expected = lora_modules(trained)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_adapters(pilot)
        screen = app.screen
        found = screen.query_one("#adapters-found")
        assert found.row_count == 1 and str(found.get_row_at(0)[0]) == "my-adapter"
        await pilot.press("enter")  # the list has the focus: enter inspects its row
        await wait_until(pilot, lambda: screen.report is not None, 60, "lora inspect")
        await settle(pilot)
        modules = screen.query_one("#adapters-modules")
        assert modules.row_count == len(expected) == 6
        assert sorted(screen.modules) == [m.removeprefix("base_model.model.") for m in expected]
        assert "no problems found" in summary(screen) and "rank       4" in summary(screen)
        plot = screen.query_one("#adapters-spectrum")
        first = next(iter(screen.modules))
        assert plot.module == first and len(plot.values) == 4 and plot.note == ""
        assert plot.values == sorted(plot.values, reverse=True) and plot.values[-1] > 0
        for _ in range(4):  # tab to the modules table (past the summary, which scrolls)
            if screen.focused is modules:
                break
            await pilot.press("tab")
        assert screen.focused is modules
        await pilot.press("down")
        await pilot.pause()
        assert plot.module == list(screen.modules)[1]
        assert plot.values == screen.modules[plot.module]["singular_values"]
        svg = app.export_screenshot()
        assert "effective" in svg and "singular" in svg  # the plot is drawn, not just stored


async def test_an_untrained_adapter_shows_its_problem(tui_env, adapters):
    _, _, untrained = adapters
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_adapters(pilot)
        screen = app.screen
        await load_typed(pilot, untrained)
        text = summary(screen)
        assert "error: zero_b: 6 of 6 modules: lora_B is all zeros" in text, text
        assert "hint: PEFT initialises lora_B to zero" in text
        assert screen.query_one("#adapters-modules").row_count == 6
        assert "untrained" in screen.query_one("#adapters-spectrum").note


async def test_a_folder_without_an_adapter_shows_the_error(tui_env):
    (tui_env / "empty").mkdir()
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_adapters(pilot)
        screen = app.screen
        await load_typed(pilot, tui_env / "empty")
        assert summary(screen).startswith("error: ") and "hint: " in summary(screen)
        assert screen.report is None and app.is_running
        await pilot.press("escape", "m")  # merge needs a loaded adapter: a warning, no modal
        await pilot.pause()
        assert type(app.screen).__name__ == "AdaptersScreen"


@pytest.mark.slow
async def test_merge_into_its_base_writes_a_merged_folder(tui_env, adapters):
    base, trained, _ = adapters
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_adapters(pilot)
        screen = app.screen
        await load_typed(pilot, trained)
        await pilot.press("escape", "m")
        await pilot.pause()
        modal = app.screen
        assert type(modal).__name__ == "MergeModal"
        assert modal.query_one("#merge-base").value == str(base)  # from adapter_config.json
        assert modal.query_one("#merge-output").value == "trained-merged"
        await pilot.press("enter", "enter")  # base -> output -> merge
        panel = screen.query_one("#adapters-job")
        await wait_until(pilot, lambda: not panel.busy, 180, "lora merge")
        assert panel.result.startswith("merged into trained-merged"), panel.result
        merged = tui_env / "trained-merged" / "model.safetensors"
        with (
            safe_open(str(merged), "np") as got,
            safe_open(str(base / "model.safetensors"), "np") as b,
        ):
            assert set(got.keys()) == set(b.keys())
            name = "model.layers.0.self_attn.q_proj.weight"
            assert not (got.get_tensor(name) == b.get_tensor(name)).all()  # the update is in
