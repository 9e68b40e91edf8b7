"""Adapters: a PEFT adapter's ranks, targets and per-module spectra (`lora inspect`, run as a
child: its SVDs never hold this process's GIL), and merging it into a base (`lora merge`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from ..actions import Action
from ..core.errors import EntrenarError
from ..core.sizes import format_bytes
from ..widgets.job import JobDone, JobPanel, as_entrenar_error, error_text, short_label
from ..widgets.spectrum import SpectrumPlot
from ..widgets.table import Table
from .base import EntrenarScreen

TOP_K = 32  # singular values per module: enough to see the spectrum of any usual rank
MODULE_COLUMNS = ("kind", "layer", "rank", "eff.", f"top-{TOP_K}", "||dW||", "module")


class AdaptersFound(Message):
    def __init__(self, entries: list) -> None:
        super().__init__()
        self.entries = entries


class AdapterInspected(Message):
    """`lora inspect`'s report (exit 3 still brings one: problems found), or its error."""

    def __init__(self, path: str, report: dict | None, error: EntrenarError | None) -> None:
        super().__init__()
        self.path, self.report, self.error = path, report, error


@dataclass
class MergeRequest:
    base: str
    output: str


class MergeModal(ModalScreen[MergeRequest | None]):
    """Base model and output folder for `lora merge` (enter on the output merges)."""

    BINDINGS = [("escape", "dismiss_none", "Cancel")]

    def __init__(self, adapter: str, base: str, output: str) -> None:
        super().__init__()
        self.adapter, self.base, self.output = adapter, base, output

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-form"):
            yield Static(f"Merge {short_label(self.adapter, 50)}", classes="pane-title")
            yield Static("base model (path, hub id or packaged name)")
            yield Input(self.base, placeholder="base model", id="merge-base")
            yield Static("output folder (enter merges, esc cancels)")
            yield Input(self.output, placeholder="output folder", id="merge-output")

    @on(Input.Submitted, "#merge-base")
    def _next(self) -> None:
        self.query_one("#merge-output", Input).focus()

    @on(Input.Submitted, "#merge-output")
    def _submitted(self) -> None:
        base = self.query_one("#merge-base", Input).value.strip()
        output = self.query_one("#merge-output", Input).value.strip()
        if not base or not output:
            self.notify("give a base model and an output folder", severity="warning")
            return
        self.dismiss(MergeRequest(base, output))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


def summary_text(report: dict) -> Text:
    """The adapter's facts, then its problems (each with its hint), or that there are none."""
    ranks = report.get("ranks") or [report.get("rank")]
    rank = f"{report.get('rank')}" + (f" (in use: {ranks})" if len(ranks) > 1 else "")
    scale = f"{report.get('scale', 0):.4g}" + (" rsLoRA" if report.get("use_rslora") else "")
    targets = ", ".join(f"{k} x{v['modules']}" for k, v in (report.get("targets") or {}).items())
    text = Text()
    problems = report.get("problems") or []
    for problem in problems:  # first: at 80x24 the end of the summary may be out of view
        style = "bold red" if problem.get("severity") == "error" else "yellow"
        text.append(
            f"{problem.get('severity')}: {problem.get('code')}: {problem.get('message')}\n",
            style=style,
        )
        text.append(f"hint: {problem.get('hint')}\n", style="dim")
    if not problems:
        text.append("no problems found\n", style="green")
    for label, value in (
        ("rank", rank),
        ("alpha", f"{report.get('alpha'):g}"),
        ("scale", scale),
        ("targets", targets or "-"),
        ("layers", report.get("layers")),
        ("parameters", f"{report.get('parameters', 0):,}"),
        ("DoRA", "yes" if report.get("use_dora") else "no"),
    ):
        text.append(f"{label:<11}", style="bold")
        text.append(f"{value}\n")
    text.rstrip()
    return text


def merge_text(document: dict) -> Text:
    text = Text(f"merged into {document.get('output')}", style="bold green")
    text.append(
        f"\n{document.get('modules')} modules, {document.get('tensors_merged')} tensors merged, "
        f"{document.get('tensors_copied')} copied, {document.get('dtype')}, "
        f"{format_bytes(document.get('bytes_written') or 0)} in {document.get('seconds', 0):.1f} s"
    )
    return text


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class AdaptersScreen(EntrenarScreen):
    MODE = "adapters"
    TITLE_TEXT = "Adapters"
    AUTO_FOCUS = "#adapters-found"  # single keys work at once; tab reaches the path field
    ACTIONS = (
        Action("l", "load", "Load", "inspect the adapter in the path field (lora inspect)"),
        Action("m", "merge", "Merge", "merge the adapter into a base model (lora merge)"),
        Action("r", "refresh", "Refresh", "look for adapter folders again"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.report: dict | None = None  # the loaded adapter's `lora inspect` document
        self.modules: dict[str, dict] = {}  # module name -> its report

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="adapter folder (enter inspects it)", id="adapters-path")
        with Horizontal(id="adapters-main"):
            with Vertical(id="adapters-left"):
                yield Table(id="adapters-found", cursor_type="row")
                with VerticalScroll(id="adapters-summary-box"):  # long problem lists scroll
                    yield Static("no adapter loaded", id="adapters-summary")
            with Vertical(id="adapters-right"):
                yield Table(id="adapters-modules", cursor_type="row", zebra_stripes=True)
                yield SpectrumPlot(id="adapters-spectrum")
        yield JobPanel(id="adapters-job")

    def on_mount(self) -> None:
        super().on_mount()
        found = self.query_one("#adapters-found", DataTable)
        found.add_columns("adapter", "size")
        found.border_title = "adapters found"
        self.query_one("#adapters-summary-box").border_title = "summary"
        modules = self.query_one("#adapters-modules", DataTable)
        modules.add_columns(*MODULE_COLUMNS)
        modules.border_title = "modules"
        self.find_adapters()

    # ---------------------------------------------------------------- finding

    @work(thread=True, exclusive=True, group="adapters-find")
    def find_adapters(self) -> None:
        from ..core.models.catalog import find_adapters

        try:
            self.post_message(AdaptersFound(find_adapters(".", self.app.options.runs_dir)))
        except Exception as exc:  # an unreadable folder must not end the app
            error = as_entrenar_error(exc)
            self.app.call_from_thread(
                self.notify, f"search failed: {error.message}", severity="error"
            )

    def on_adapters_found(self, message: AdaptersFound) -> None:
        table = self.query_one("#adapters-found", DataTable)
        table.clear()
        for entry in message.entries:
            size = format_bytes(entry.size_bytes) if entry.size_bytes is not None else "-"
            table.add_row(short_label(entry.ref, 24), size, key=entry.ref)
        table.border_title = f"adapters found ({len(message.entries)})"

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "adapters-found" and event.row_key.value:
            self.query_one("#adapters-path", Input).value = event.row_key.value
            self.load(event.row_key.value)

    @on(Input.Submitted, "#adapters-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.load(event.value.strip())

    # ---------------------------------------------------------------- inspecting

    def load(self, path: str) -> None:
        summary = self.query_one("#adapters-summary", Static)
        summary.update(Text(f"inspecting {short_label(path)} ...", style="italic"))
        summary.loading = True
        self.inspect_adapter(path)

    @work(thread=True, exclusive=True, group="adapters-inspect")
    def inspect_adapter(self, path: str) -> None:
        from ..core.runs.launch import run_entrenar_json

        try:
            report = run_entrenar_json(["lora", "inspect", path, "--top-k", str(TOP_K)])
            self.post_message(AdapterInspected(path, report, None))
        except Exception as exc:  # shown in the summary, never raised into the app
            self.post_message(AdapterInspected(path, None, as_entrenar_error(exc)))

    def on_adapter_inspected(self, message: AdapterInspected) -> None:
        summary = self.query_one("#adapters-summary", Static)
        summary.loading = False
        table = self.query_one("#adapters-modules", DataTable)
        table.clear()
        self.modules = {}
        if message.error is not None:
            self.report = None
            summary.update(error_text(message.error))
            self.query_one(SpectrumPlot).show_note("no adapter loaded")
            return
        self.report = message.report
        summary.update(summary_text(message.report))
        self.query_one(
            "#adapters-summary-box"
        ).border_title = f"summary: {short_label(message.path, 24)}"
        for module in message.report.get("modules", []):
            self.modules[module["name"]] = module
            table.add_row(
                module.get("kind"),
                _number(module.get("layer"), "d"),
                module.get("rank"),
                _number(module.get("effective_rank"), "d"),
                _number(module.get("energy_top_k"), ".1%"),
                _number(module.get("norm_delta"), ".3g"),
                module["name"],
                key=module["name"],
            )
        table.border_title = f"modules ({len(self.modules)})"
        if self.modules:
            self._show_spectrum(next(iter(self.modules)))
        else:
            self.query_one(SpectrumPlot).show_note("the adapter has no LoRA modules")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "adapters-modules" and event.row_key.value in self.modules:
            self._show_spectrum(event.row_key.value)

    def _show_spectrum(self, name: str) -> None:
        m = self.modules[name]
        label = f"{m.get('kind')} L{m.get('layer')}" if m.get("layer") is not None else name
        values = m.get("singular_values") or []
        plot = self.query_one(SpectrumPlot)
        plot.show(name, values, m.get("effective_rank"), m.get("rank"), label=label)

    # ---------------------------------------------------------------- actions

    def action_load(self) -> None:
        path = self.query_one("#adapters-path", Input).value.strip()
        if path:
            self.load(path)
        else:
            self.query_one("#adapters-path", Input).focus()
            self.notify("type an adapter folder, or pick one from the list", severity="warning")

    def action_refresh(self) -> None:
        self.find_adapters()
        self.notify("looking for adapters")

    def action_merge(self) -> None:
        from ..core.models.catalog import adapter_base

        if self.report is None:
            self.notify("load an adapter first (enter on its folder)", severity="warning")
            return
        adapter = self.report["adapter"]
        base = adapter_base(adapter) or self.app.selected_model or ""
        output = f"{Path(adapter.rstrip('/')).name or 'adapter'}-merged"

        def chosen(request: MergeRequest | None) -> None:
            if request is None:
                return
            args = ["lora", "merge", "--base", request.base, "--adapter", adapter]
            args += ["--output", request.output]
            what = f"merging {short_label(adapter)} into {short_label(request.base)}"
            self.query_one(JobPanel).run("merge", adapter, args, what)

        self.app.push_screen(MergeModal(adapter, base, output), chosen)

    def on_job_done(self, message: JobDone) -> None:
        panel = self.query_one(JobPanel)
        if message.error is not None:
            panel.finish(error_text(message.error))
            self.notify(f"merge failed: {message.error.message}", severity="error")
            return
        panel.finish(merge_text(message.document))
        self.notify(f"merged into {message.document.get('output')}")
