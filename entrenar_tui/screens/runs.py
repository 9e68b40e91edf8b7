"""Runs: every run directory under ./runs and any attached one; live curves, progress and logs of
the selected run; start, stop, resume, export. Runs are child processes in their own session
(core/runs/launch.py), so they outlive the app; the screen follows them through their files."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, Static

from ..actions import Action
from ..core.errors import EntrenarError
from ..core.runs.follow import MetricsTail, RunSummary, list_runs, read_run, tail_lines
from ..widgets.plot import CurvePlot, Series
from ..widgets.table import Table
from .base import EntrenarScreen
from .run_dialogs import AttachScreen, ExportScreen, NewRunRequest, NewRunScreen

LOSS_TERMS = ("loss", "loss_kd", "loss_ce", "loss_hidden", "loss_attention")
STATE_STYLE = {
    "running": "bold green",
    "starting": "green",
    "finished": "bold cyan",
    "failed": "bold red",
    "stale": "bold yellow",
    "stopped": "yellow",
    "unreadable": "red",
}
REFRESH_S = 1.0


@dataclass
class FollowedRun:
    """What the screen has read of one run: its metrics so far, tailed from an offset."""

    path: Path
    tail: MetricsTail
    train: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, path: Path) -> FollowedRun:
        return cls(path, MetricsTail(path / "metrics.jsonl"))

    def poll(self) -> bool:
        records = self.tail.poll()
        if self.tail.reset:
            self.train, self.evals = [], []
        for record in records:
            kind = record.get("kind")
            (self.train if kind == "train" else self.evals if kind == "eval" else []).append(record)
        return bool(records) or self.tail.reset


STAMPED = re.compile(r"^(?P<base>.+)-(?P<date>\d{8})-(?P<time>\d{6})$")


def run_label(name: str) -> str:
    """`demo-20261201-234524` -> `demo 12-01 23:45`: the part that tells same-day runs apart
    fits the list (the whole name is in the run's details)."""
    match = STAMPED.match(name)
    if match is None:
        return name
    day, clock = match["date"], match["time"]
    return f"{match['base'][:5]} {day[4:6]}-{day[6:]} {clock[:2]}:{clock[2:4]}"


class RunActionDone(Message):
    """A worker finished starting, stopping, resuming or exporting a run."""

    def __init__(self, text: str, run_dir: str | None = None, error=None) -> None:
        super().__init__()
        self.text = text
        self.run_dir = run_dir
        self.error = error


class RunsScreen(EntrenarScreen):
    MODE = "runs"
    TITLE_TEXT = "Runs"
    ACTIONS = (
        Action("n", "new_run", "New", "start a new run: pick a config or demo, edit, validate"),
        Action("t", "stop_run", "Stop", "SIGTERM: the run checkpoints, then stops"),
        Action("r", "resume_run", "Resume", "continue a stopped, failed or stale run"),
        Action("e", "export_run", "Export", "export the student (gguf, safetensors, ...)"),
        Action("a", "attach_run", "Attach", "follow a run directory outside ./runs"),
        Action("space", "mark_run", "Mark", "overlay this run's curves on the others"),
        Action("s", "toggle_smooth", "Smooth", "EMA smoothing over the faded raw curve"),
        Action("y", "toggle_log", "Log-Y", "logarithmic y axis"),
        Action("x", "toggle_x", "X axis", "x axis by step or by wall time"),
        Action("p", "toggle_plot", "Plot", "short terminals: show the loss or the ppl plot"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, RunSummary] = {}
        self.followed: dict[str, FollowedRun] = {}
        self.marked: set[str] = set()
        self.attached: list[Path] = []
        self.x_by_time = False
        self._plotted_for: str | None = None  # the run the plots show, to redraw on a new one

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="runs-body"):
            yield Table(id="runs-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="run-detail"):
                yield CurvePlot("loss", id="loss-plot")
                yield CurvePlot("held-out ppl", id="eval-plot")
                yield ProgressBar(total=1, show_eta=False, id="run-progress")
                yield Static("", id="run-info")
                yield Static("", id="run-events")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#runs-table", DataTable)
        table.add_column(" ", key="mark", width=1)
        table.add_column("run", key="run", width=16)
        table.add_column("state", key="state", width=8)
        table.add_column("step", key="step", width=8)
        self.query_one("#eval-plot", CurvePlot).log_y = True
        options = self.app.options
        if options.attach:
            self.attach_dir(Path(options.attach))
        self.refresh_runs()
        if options.start:
            request = NewRunRequest(options.start, None, options.output)
            self._start(request, list(options.overrides))
        self.every(REFRESH_S, self.refresh_runs)

    # ------------------------------------------------------------------ following
    @property
    def selected(self) -> str | None:
        return self.app.selected_run

    def refresh_runs(self) -> None:
        roots = [Path(self.app.options.runs_dir), *self.attached]
        # keyed by resolved path, as attached runs and started runs are: a run under ./runs that
        # is also attached is one row
        summaries = {str(s.path.resolve()): s for s in list_runs(*roots)}
        for path in self.attached:
            summaries.setdefault(str(path), read_run(path))
        self.runs = summaries
        self._update_table()
        changed = False
        for key in {self.selected, *self.marked} - {None}:
            followed = self.followed.setdefault(key, FollowedRun.of(Path(key)))
            changed |= followed.poll()
        self._show_detail(redraw_plots=changed)

    def _update_table(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        rows = {key: self._row(key, summary) for key, summary in self.runs.items()}
        for key in [k.value for k in table.rows if k.value not in rows]:
            table.remove_row(key)
        for key, cells in rows.items():
            if key in table.rows:
                shown = table.get_row(key)
                for column, cell, old in zip(
                    ("mark", "run", "state", "step"), cells, shown, strict=True
                ):
                    if cell != old:  # an unchanged cell is not redrawn
                        table.update_cell(key, column, cell)
            else:
                table.add_row(*cells, key=key)
        if self.selected not in rows and rows:
            self.app.selected_run = next(iter(rows))
        if self.selected in rows:
            index = table.get_row_index(self.selected)
            if table.cursor_row != index:
                table.move_cursor(row=index)

    def _row(self, key: str, summary: RunSummary) -> tuple:
        mark = "●" if key in self.marked else ""
        state = Text(summary.state, style=STATE_STYLE.get(summary.state, ""))
        step = f"{summary.step}/{summary.total_steps}" if summary.total_steps else str(summary.step)
        return mark, run_label(summary.name), state, step

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if key and key != self.selected:
            self.app.selected_run = key
            self.followed.setdefault(key, FollowedRun.of(Path(key))).poll()
            self._show_detail(redraw_plots=True)

    # ------------------------------------------------------------------ drawing
    def _show_detail(self, redraw_plots: bool) -> None:
        summary = self.runs.get(self.selected) if self.selected else None
        followed = self.followed.get(self.selected) if self.selected else None
        if redraw_plots or self._plotted_for != self.selected:
            self._draw_plots()
        progress = self.query_one("#run-progress", ProgressBar)
        if summary is None:
            self._set_text("#run-info", self._empty_text())
            self._set_text("#run-events", Text(""))
            progress.update(total=1, progress=0)
            return
        total = max(1, summary.total_steps)
        if (progress.total, progress.progress) != (total, summary.step):
            progress.update(total=total, progress=summary.step)
        self._set_text("#run-info", run_info_text(summary, followed))
        events = tail_lines(summary.path / "events.log", 4)
        self._set_text("#run-events", Text("\n".join(events), style="dim"))

    def _set_text(self, selector: str, text: Text) -> None:
        """Update a Static only when its text changed: each update re-lays out the screen."""
        widget = self.query_one(selector, Static)
        if getattr(widget, "_shown", None) != text:
            widget._shown = text
            widget.update(text)

    def _empty_text(self) -> Text:
        runs_dir = self.app.options.runs_dir
        return Text(f"No runs under ./{runs_dir}. Press n to start one (demo: a SmolLM2 student).")

    def _draw_plots(self) -> None:
        loss_series, eval_series = [], []
        self._plotted_for = self.selected
        selected = self.followed.get(self.selected) if self.selected else None
        if selected is not None:
            for term in LOSS_TERMS:
                series = self._series(selected, term, selected.train)
                if series.y and any(value != 0 for value in series.y):
                    loss_series.append(series)
            eval_series.append(self._series(selected, "eval_ppl", selected.evals))
        for key in sorted(self.marked - {self.selected}):
            other = self.followed.get(key)
            if other is not None:
                loss_series.append(self._series(other, "loss", other.train, Path(key).name))
                eval_series.append(self._series(other, "eval_ppl", other.evals, Path(key).name))
        x_label = "wall time (s)" if self.x_by_time else "step"
        for plot_id, series in (("#loss-plot", loss_series), ("#eval-plot", eval_series)):
            plot = self.query_one(plot_id, CurvePlot)
            plot.x_label = x_label
            plot.draw(series)

    def _series(self, run: FollowedRun, key: str, records: list[dict], label=None) -> Series:
        points = [r for r in records if isinstance(r.get(key), int | float)]
        xs = [self._x(run, r) for r in points]
        return Series(label or key, xs, [float(r[key]) for r in points])

    def _x(self, run: FollowedRun, record: dict) -> float:
        if not self.x_by_time:
            return float(record.get("step", 0))
        if isinstance(record.get("time_s"), int | float):
            return float(record["time_s"])
        earlier = [r for r in run.train if r.get("step", 0) <= record.get("step", 0)]
        return float(earlier[-1].get("time_s", 0.0)) if earlier else 0.0

    # ------------------------------------------------------------------ view keys
    def action_toggle_smooth(self) -> None:
        for plot in self.query(CurvePlot):
            plot.smooth = not plot.smooth
        self._draw_plots()

    def action_toggle_log(self) -> None:
        for plot in self.query(CurvePlot):
            plot.log_y = not plot.log_y
        self._draw_plots()

    def action_toggle_x(self) -> None:
        self.x_by_time = not self.x_by_time
        self._draw_plots()

    def on_resize(self) -> None:
        """Under 32 rows one plot at a time (p switches): two would each be too short to read."""
        self.set_class(self.size.height < 32, "-short")

    def action_toggle_plot(self) -> None:
        self.toggle_class("-eval-first")

    def action_mark_run(self) -> None:
        if self.selected:
            self.marked ^= {self.selected}
            self.refresh_runs()
            self._draw_plots()

    # ------------------------------------------------------------------ run actions
    def action_new_run(self) -> None:
        self.app.push_screen(NewRunScreen(self.app.selected_config or "demo"), self._start)

    def _start(self, request: NewRunRequest | None, overrides: list[str] | None = None) -> None:
        if request is not None:
            self.app.selected_config = request.config_ref
            self._launch(request, overrides or [])

    @work(thread=True, group="run-actions")
    def _launch(self, request: NewRunRequest, overrides: list[str]) -> None:
        from ..core.runs.launch import start_from_app

        try:
            launched = start_from_app(
                request.config_ref, request.edited_text, request.output, overrides
            )
        except EntrenarError as exc:
            self.post_message(RunActionDone("could not start the run", error=exc))
            return
        text = f"started {launched.run_dir} (pid {launched.pid})"
        self.post_message(RunActionDone(text, str(launched.run_dir)))

    def action_stop_run(self) -> None:
        if self.selected:
            self._stop(self.selected)

    @work(thread=True, group="run-actions")
    def _stop(self, run_dir: str) -> None:
        from ..core.runs.launch import stop_run

        try:
            pid = stop_run(run_dir)
        except EntrenarError as exc:
            self.post_message(RunActionDone("could not stop the run", error=exc))
            return
        self.post_message(RunActionDone(f"asked pid {pid} to checkpoint and stop", run_dir))

    def action_resume_run(self) -> None:
        if self.selected:
            self._resume(self.selected)

    @work(thread=True, group="run-actions")
    def _resume(self, run_dir: str) -> None:
        from ..core.runs.launch import resume_run

        try:
            launched = resume_run(run_dir)
        except EntrenarError as exc:
            self.post_message(RunActionDone("could not resume the run", error=exc))
            return
        self.post_message(RunActionDone(f"resumed (pid {launched.pid})", run_dir))

    def action_export_run(self) -> None:
        run_dir = self.selected
        if run_dir:
            self.app.push_screen(ExportScreen(run_dir), lambda c: c and self._export(run_dir, c))

    @work(thread=True, group="run-actions")
    def _export(self, run_dir: str, choice: dict) -> None:
        from ..core.runs.launch import run_entrenar_json

        args = ["distill", "export", "--input", run_dir, "--format", choice["format"]]
        args += ["--output", choice["output"]]
        if choice["quantize"]:
            args += ["--quantize", choice["quantize"]]
        self.post_message(RunActionDone(f"exporting to {choice['output']}..."))
        try:
            result = run_entrenar_json(args, timeout=3600)
        except EntrenarError as exc:
            self.post_message(RunActionDone("export failed", error=exc))
            return
        self.post_message(RunActionDone(f"exported {result.get('output', choice['output'])}"))

    def action_attach_run(self) -> None:
        self.app.push_screen(AttachScreen(), lambda path: path and self.attach_dir(Path(path)))

    def attach_dir(self, path: Path) -> None:
        path = path.resolve()
        if path not in self.attached:
            self.attached.append(path)
        self.app.selected_run = str(path)
        if self.is_mounted:
            self.refresh_runs()

    def on_run_action_done(self, message: RunActionDone) -> None:
        if message.error is not None:
            error = message.error
            self.notify(f"{message.text}: {error.message}\nhint: {error.hint}", severity="error")
            return
        self.notify(message.text)
        if message.run_dir:
            self.app.selected_run = str(Path(message.run_dir).resolve())
            if not Path(message.run_dir).resolve().is_relative_to(Path.cwd()):
                self.attach_dir(Path(message.run_dir))
        self.refresh_runs()


def run_info_text(summary: RunSummary, followed: FollowedRun | None) -> Text:
    """Progress, ETA, speed, the latest losses and evaluation, samples, and any error."""
    text = Text()
    text.append(summary.state, style=STATE_STYLE.get(summary.state, ""))
    text.append(f"  step {summary.step}/{summary.total_steps or '?'}")
    train = followed.train if followed else []
    evals = followed.evals if followed else []
    if train:
        last = train[-1]
        text.append(f"  {_eta(last, summary)}  {last.get('tokens_per_s', 0):,.0f} tok/s")
        text.append(f"  loss {last.get('loss', float('nan')):.4f}")
    scored = [e for e in evals if isinstance(e.get("eval_ppl"), int | float)]
    if scored:
        latest, first = scored[-1], scored[0]
        text.append(f"\nheld-out ppl {first['eval_ppl']:,.1f} -> {latest['eval_ppl']:,.1f}")
        agreement = latest.get("eval_top1_agreement")
        if isinstance(agreement, int | float):
            text.append(f"  top-1 agreement {agreement:.1%}")
        teacher = latest.get("teacher_eval_ppl")
        if isinstance(teacher, int | float):
            text.append(f"  teacher {teacher:,.1f}")
        for sample in (latest.get("samples") or [])[:2]:
            if isinstance(sample, dict):
                completion = str(sample.get("completion", "")).replace("\n", "⏎")[:60]
                text.append(
                    f"\n{str(sample.get('prompt', ''))[:30]!r} -> {completion!r}", style="italic"
                )
    if summary.error:
        text.append(f"\nerror: {summary.error['message']}", style="bold red")
        if summary.error.get("hint"):
            text.append(f"\nhint: {summary.error['hint']}", style="red")
    elif summary.state == "stale":
        text.append(
            "\nthe run's process is gone without an end state: resume it (r)", style="yellow"
        )
    return text


def _eta(last: dict, summary: RunSummary) -> str:
    step, seconds = last.get("step"), last.get("time_s")
    if not summary.alive or not isinstance(step, int) or not step or not summary.total_steps:
        return ""
    if not isinstance(seconds, int | float):
        return ""
    remaining = (summary.total_steps - step) * seconds / step
    minutes, secs = divmod(int(remaining), 60)
    return f"ETA {minutes}:{secs:02d}"
