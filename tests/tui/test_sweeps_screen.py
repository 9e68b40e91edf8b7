"""The Sweeps screen reads what `entrenar bench` writes: the sweep list, the results per
setting, the corrected comparison and the recommendation."""

from __future__ import annotations

import pytest
from tuihelp import make_app, settle, wait_until

from conftest import write_recorded_sweep

pytestmark = pytest.mark.anyio


def cells(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_an_empty_folder_says_how_to_make_a_sweep(tui_env):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        note = str(app.screen.query_one("#sweeps-note").content)
        assert "entrenar bench temperature" in note
        assert not app.screen.query_one("#sweep-detail").display


async def test_a_finished_sweep_shows_its_results_and_names_the_winner(tui_env):
    path = write_recorded_sweep(tui_env)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        screen = app.screen
        await wait_until(
            pilot, lambda: screen.query_one("#sweep-results").row_count == 2, 60, "results"
        )
        (listed,) = cells(screen.query_one("#sweeps-table"))
        assert listed[:4] == [str(path.relative_to(tui_env)), "temperature", "6", "6"]
        results = cells(screen.query_one("#sweep-results"))
        assert results[1][0] == "T=4 ★" and results[1][2].startswith("30.500 ±")
        (comparison,) = cells(screen.query_one("#sweep-comparisons"))
        assert comparison[0] == "T=4 vs T=1" and comparison[-1] == "yes"
        text = str(screen.query_one("#sweep-recommendation").content)
        assert text.startswith("Recommendation: T=4 is best")

        await pilot.press("w")
        await wait_until(pilot, lambda: (path / "report.md").exists(), 60, "report")
        assert "## Statistical Analysis" in (path / "report.md").read_text()
