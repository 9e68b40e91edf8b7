"""The app starts, keys 1-6 switch between six different screens, ? opens the help."""

from __future__ import annotations

import pytest
from tuihelp import make_app, settle

pytestmark = pytest.mark.anyio


async def test_keys_switch_between_six_screens(tui_env):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        seen = []
        for key in "123456":
            await pilot.press(key)
            await pilot.pause()
            seen.append(type(app.screen).__name__)
        assert len(set(seen)) == 6, seen
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "ShellScreen"


async def test_palette_offers_the_screens_actions_from_the_same_table(tui_env):
    from entrenar_tui.app import ActionCommands
    from entrenar_tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        provider = ActionCommands(app.screen)
        offered = [hit.text async for hit in provider.discover()]
        for action in RunsScreen.ACTIONS:
            assert f"{action.description} ({action.key_label})" in offered
            assert any(b.key == action.key for b in RunsScreen.BINDINGS)
        assert "Quit (q)" in offered


async def test_theme_toggle_and_no_color(tui_env, monkeypatch):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        before = app.theme
        await pilot.press("d")
        await pilot.pause()
        assert app.theme != before and "light" in app.theme + before
    monkeypatch.setenv("NO_COLOR", "1")
    plain = make_app()
    async with plain.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert plain.no_color


def test_a_system_sample_with_no_screen_on_the_stack_is_kept_not_raised(tui_env):
    """The sampler thread's last message can land after exit popped the screens (CI saw it)."""
    from tuihelp import NO_GPU

    from entrenar_tui.app import SystemSampled

    app = make_app()
    app.on_system_sampled(SystemSampled(NO_GPU))
    assert list(app.system_history) == [NO_GPU]
