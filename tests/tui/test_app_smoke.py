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
