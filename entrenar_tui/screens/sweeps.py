"""Sweeps: the sweep directories `entrenar bench` writes. The sweep engine is a later issue, so
this lists what it finds and says how one will be made."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from .base import EntrenarScreen

HOW_TO = (
    "No sweeps yet. A sweep is a folder with sweep.yaml and results.jsonl, written by "
    "`entrenar bench` (not built yet in this version). When it lands: "
    "`entrenar bench temperature --config demo --values 1,2,4 --seeds 3 --output sweeps/t`."
)


def find_sweeps(*roots: Path) -> list[Path]:
    found = []
    for root in roots:
        if root.is_dir():
            found += sorted(p for p in root.iterdir() if (p / "sweep.yaml").is_file())
    return found


class SweepsScreen(EntrenarScreen):
    MODE = "sweeps"
    TITLE_TEXT = "Sweeps"

    def compose_body(self) -> ComposeResult:
        yield DataTable(id="sweeps-table", cursor_type="row")
        yield Static(HOW_TO, id="sweeps-note")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one(DataTable)
        table.add_columns("sweep", "jobs", "results")
        sweeps = find_sweeps(Path("sweeps"))
        for sweep in sweeps:
            jobs = sum(1 for _ in (sweep / "jobs").iterdir()) if (sweep / "jobs").is_dir() else 0
            results = sweep / "results.jsonl"
            ended = len(results.read_text().splitlines()) if results.is_file() else 0
            table.add_row(sweep.name, str(jobs), str(ended))
        self.query_one("#sweeps-note").display = not sweeps
