"""The Models screen on real models: packaged ones, a tiny model saved in the working dir, a
corrupt file; validate and convert run as real `entrenar` children."""

from __future__ import annotations

import json
import shutil

import pytest
from tuihelp import make_app, settle, wait_until

pytestmark = pytest.mark.anyio

MINILM_PARAMETERS = "22,713,216"  # `entrenar inspect info minilm-l6`


def cells(table) -> list[str]:
    return [str(cell) for row in range(table.row_count) for cell in table.get_row_at(row)]


async def highlight(pilot, ref: str, presses: int = 20) -> None:
    """Move the cursor with the keyboard until `ref` is the selected model."""
    app = pilot.app
    for _ in range(presses):
        if app.selected_model == ref:
            break
        await pilot.press("down")
        await pilot.pause()
    assert app.selected_model == ref


async def details_of(pilot, ref: str) -> tuple[list[str], list[str]]:
    screen = pilot.app.screen
    info, layers = screen.query_one("#models-info"), screen.query_one("#models-layers")
    await wait_until(pilot, lambda: screen.shown_ref == ref and info.row_count > 0, 60, "details")
    await settle(pilot)
    return cells(info), cells(layers)


async def job_result(pilot) -> str:
    panel = pilot.app.screen.query_one("#models-job")
    await wait_until(pilot, lambda: not panel.busy, 180, "the child to finish")
    return panel.result


async def test_packaged_models_are_listed_and_minilm_shows_info_and_layers(tui_env):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert type(screen).__name__ == "ModelsScreen"
        assert {"packaged:smollm2-135m", "packaged:minilm-l6"} <= set(screen.entries)
        assert app.selected_model == "smollm2-135m"  # the first model is shown at once
        await highlight(pilot, "minilm-l6")
        info, layers = await details_of(pilot, "minilm-l6")
        assert MINILM_PARAMETERS in info and "BERT (bert)" in info
        assert "encoder.layer.5" in layers and "pooler.dense" in layers
        assert MINILM_PARAMETERS in str(screen.query_one("#models-layers").border_title)


async def test_a_model_saved_in_the_working_dir_appears_after_refresh(tui_env, tiny_model_dir):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert "local:tiny" not in screen.entries
        shutil.copytree(tiny_model_dir("llama"), tui_env / "tiny")
        await pilot.press("r")
        await wait_until(pilot, lambda: "local:tiny" in screen.entries, 30, "the new folder")
        assert screen.entries["local:tiny"].kind == "safetensors"
        await highlight(pilot, "tiny")
        info, _ = await details_of(pilot, "tiny")
        assert "LLaMA (llama)" in info and "3" in info  # three layers, read from config.json


async def test_models_folders_given_on_the_command_line_are_listed(tui_env, tiny_model_dir):
    shelf = tui_env / "shelf"
    shutil.copytree(tiny_model_dir("llama"), shelf / "tiny-llama")
    (shelf / "notes.txt").write_text("not a model")
    app = make_app(model_dirs=[str(shelf)])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        listed = [e.ref for e in app.screen.entries.values() if e.source == "models-dir"]
        assert listed == [str(shelf / "tiny-llama")]


async def test_validate_of_a_real_model_shows_ok(tui_env):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await highlight(pilot, "minilm-l6")
        await pilot.press("v")
        result = await job_result(pilot)
        assert result.startswith("ok: 104 tensors checked, 0 errors"), result


async def test_a_corrupt_safetensors_file_shows_its_error_and_the_app_lives_on(tui_env):
    (tui_env / "broken.safetensors").write_bytes(b"this is not a safetensors file at all")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await highlight(pilot, "broken.safetensors")
        info, layers = await details_of(pilot, "broken.safetensors")
        assert info[0] == "error" and "header" in " ".join(info) and layers == []
        await pilot.press("v")
        result = await job_result(pilot)
        assert result.startswith("FAILED") and "header_too_large" in result, result
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        assert app.is_running and type(app.screen).__name__ == "ModelsScreen"


@pytest.mark.slow
async def test_convert_minilm_to_apr_writes_the_file(tui_env):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await highlight(pilot, "minilm-l6")
        await pilot.press("c")
        await pilot.pause()
        assert type(app.screen).__name__ == "ConvertModal"
        assert app.screen.query_one("#convert-output").value == "minilm-l6.apr"
        await pilot.press("tab", "tab", "enter")  # format apr, keep dtypes, the default output
        result = await job_result(pilot)
        assert result.startswith("converted to apr"), result
        assert "verified True" in result
        assert (tui_env / "minilm-l6.apr").is_file()
        screen = app.screen
        await wait_until(pilot, lambda: "local:minilm-l6.apr" in screen.entries, 30, "listing")
        assert app.selected_model == "minilm-l6"  # the cursor stayed where it was


async def test_open_remembers_a_model_and_refuses_a_missing_one(tui_env, tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir("llama"), tui_env / "elsewhere" / "deep" / "tiny")
    recent = tui_env / ".entrenar" / "recent.json"
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        for key in "oc":  # both dialogs close with escape, changing nothing
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is not screen
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen
        await pilot.press("o")
        await pilot.pause()
        app.screen.query_one("#path-input").value = str(folder)
        await pilot.press("enter")
        key = f"recent:{folder}"
        await wait_until(pilot, lambda: key in screen.entries, 30, "the recent entry")
        assert json.loads(recent.read_text())["models"] == [str(folder)]
        assert app.selected_model == str(folder)
        info, _ = await details_of(pilot, str(folder))
        assert "LLaMA (llama)" in info
        await pilot.press("o")
        await pilot.pause()
        app.screen.query_one("#path-input").value = "no/such/model-here"
        await pilot.press("enter")
        info, _ = await details_of(pilot, "no/such/model-here")
        assert info[0] == "error"
        assert json.loads(recent.read_text())["models"] == [str(folder)]
