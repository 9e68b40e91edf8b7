"""Sweeps: the sweep directories `entrenar bench` writes (under ./runs/sweeps and ./sweeps),
how far each has got, and for the selected one its results per setting, the corrected
comparisons and the recommendation (computed in a thread: scipy's bootstrap takes a moment)."""

from __future__ import annotations

import math
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from ..actions import Action
from ..core.bench.sweepdir import SWEEP_ROOTS, SweepSummary, list_sweeps
from ..core.errors import EntrenarError
from ..widgets.table import Table
from .base import EntrenarScreen

HOW_TO = (
    "No sweeps yet. A sweep is a folder with sweep.yaml, jobs/ and results.jsonl, written by "
    "`entrenar bench`, e.g. `entrenar bench temperature --config demo --range 1..4 --step 1 "
    "--seeds 3 --steps 30` (it lands in runs/sweeps/temperature-TIME)."
)
REFRESH_S = 2.0


class SweepAnalysed(Message):
    def __init__(self, path: Path, analysis=None, error: EntrenarError | None = None) -> None:
        super().__init__()
        self.path = path
        self.analysis = analysis
        self.error = error


class ReportWritten(Message):
    def __init__(self, text: str, error: bool = False) -> None:
        super().__init__()
        self.text = text
        self.error = error


class SweepsScreen(EntrenarScreen):
    MODE = "sweeps"
    TITLE_TEXT = "Sweeps"
    ACTIONS = (
        Action("w", "write_report", "Report", "write SWEEP/report.md (bench report)"),
        Action("g", "refresh_sweeps", "Refresh", "read the sweep directories again"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.sweeps: list[SweepSummary] = []
        self.selected: Path | None = None
        self._seen: dict[Path, tuple] = {}  # what the last analysis was made from

    def compose_body(self) -> ComposeResult:
        yield Table(id="sweeps-table", cursor_type="row")
        yield Static(HOW_TO, id="sweeps-note")
        with Vertical(id="sweep-detail"):
            yield Table(id="sweep-results", cursor_type="row")
            yield Table(id="sweep-comparisons", cursor_type="none")
            yield Static("", id="sweep-recommendation")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#sweeps-table", DataTable)
        table.add_columns("sweep", "command", "jobs", "finished", "failed", "running")
        self.query_one("#sweep-results", DataTable).add_columns(
            "setting", "seeds", "eval ppl", "eval loss", "top-1 agree", "tok/s"
        )
        self.query_one("#sweep-comparisons", DataTable).add_columns(
            "comparison", "difference", "Holm p", "Hedges g", "detectable", "signif."
        )
        self.action_refresh_sweeps()
        self.every(REFRESH_S, self.action_refresh_sweeps)

    def action_refresh_sweeps(self) -> None:
        self.sweeps = list_sweeps(*SWEEP_ROOTS)
        table = self.query_one("#sweeps-table", DataTable)
        rows = [
            (str(s.path), s.command, s.jobs, s.finished, s.failed, s.running) for s in self.sweeps
        ]
        current = [tuple(table.get_row_at(i)) for i in range(table.row_count)]
        if [tuple(map(str, row)) for row in rows] != [tuple(map(str, r)) for r in current]:
            table.clear()
            for row in rows:
                table.add_row(*map(str, row), key=row[0])
        self.query_one("#sweeps-note").display = not self.sweeps
        self.query_one("#sweep-detail").display = bool(self.sweeps)
        if self.sweeps and self.selected is None:
            self.selected = self.sweeps[0].path
        self._analyse_if_changed()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "sweeps-table" and event.row_key.value:
            self.selected = Path(event.row_key.value)
            self._analyse_if_changed()

    def _analyse_if_changed(self) -> None:
        summary = next((s for s in self.sweeps if s.path == self.selected), None)
        if summary is None:
            return
        progress = (summary.finished, summary.failed, summary.running)
        if self._seen.get(summary.path) != progress:
            self._seen[summary.path] = progress
            self.analyse(summary.path)

    @work(thread=True, exclusive=True, group="sweep-analysis")
    def analyse(self, path: Path) -> None:
        from ..core.bench.analysis import analyze
        from ..core.bench.report import load_sweep

        try:
            _, spec, results = load_sweep(path)
            self.post_message(SweepAnalysed(path, analysis=analyze(spec, results)))
        except EntrenarError as exc:
            self.post_message(SweepAnalysed(path, error=exc))

    def on_sweep_analysed(self, message: SweepAnalysed) -> None:
        if message.path != self.selected:
            return
        note = self.query_one("#sweep-recommendation", Static)
        if message.error is not None:
            note.update(f"{message.error.message} ({message.error.hint})")
            return
        analysis = message.analysis
        self._fill_results(analysis)
        self._fill_comparisons(analysis)
        note.update(f"Recommendation: {analysis.recommendation}")

    def _fill_results(self, analysis) -> None:
        from ..core.bench.report import cell

        table = self.query_one("#sweep-results", DataTable)
        table.clear()
        for row in analysis.rows:
            mark = " ★" if row.label == analysis.best else ""
            seeds = f"{row.finished}" + (f" +{row.failed} failed" if row.failed else "")
            metrics = ("eval_ppl", "eval_loss", "eval_top1_agreement", "tokens_per_s")
            table.add_row(row.label + mark, seeds, *(cell(row.summaries[m], m) for m in metrics))

    def _fill_comparisons(self, analysis) -> None:
        from ..core.bench.report import amount

        table = self.query_one("#sweep-comparisons", DataTable)
        table.clear()
        for c in analysis.comparisons:
            table.add_row(
                f"{c.first} vs {c.second}",
                amount(c.difference, signed=True),
                "-" if math.isnan(c.p_adjusted) else f"{c.p_adjusted:.3f}",
                f"{c.hedges_g:+.2f}" if math.isfinite(c.hedges_g) else "-",
                amount(c.detectable_difference),
                "yes" if c.significant else "no",
            )

    def action_write_report(self) -> None:
        if self.selected is not None:
            self.write_report(self.selected)

    @work(thread=True, exclusive=True, group="sweep-report")
    def write_report(self, path: Path) -> None:
        from ..core.bench.report import markdown_report
        from ..core.fsutil import write_text_atomic

        try:
            write_text_atomic(path / "report.md", markdown_report(path))
            self.post_message(ReportWritten(f"written: {path / 'report.md'}"))
        except EntrenarError as exc:
            self.post_message(ReportWritten(f"{exc.message} ({exc.hint})", error=True))

    def on_report_written(self, message: ReportWritten) -> None:
        self.notify(message.text, severity="error" if message.error else "information")
