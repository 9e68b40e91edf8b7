"""The memory planner: will this training setup fit the GPU, and if not, what will?

Inputs on the left, the estimator's breakdown (bars and a table), the verdict against VRAM and
the planner's best fit on the right, recomputed 150 ms after the last change. Opening a model
reads its headers once, in a worker; the estimate and the plan are arithmetic over them
(milliseconds) and rerun on the open Model for every change.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Checkbox, DataTable, Input, Label, Select, Static

from ..actions import Action, bindings
from ..core.errors import EntrenarError, InvalidInputError, bug_hint
from ..core.lora.plan import LoraPlan, plan_lora, write_plan_config
from ..core.memory import MemoryEstimate, estimate_for_model
from ..core.sizes import format_bytes
from ..widgets.bars import Bar, BreakdownBars
from ..widgets.table import Table
from .base import EntrenarScreen
from .memory_form import (
    DEBOUNCE_S,
    DEFAULT_MODEL,
    DEFAULT_PLAN_PATH,
    FIELDS,
    LABELS,
    FieldError,
    Settings,
    human_count,
    parse_form,
    plan_label,
    plan_text,
    verdict,
)


class ModelRead(Message):
    """A model's headers were read (`model`), or could not be (`error`)."""

    def __init__(self, ref: str, model=None, error: FieldError | None = None) -> None:
        super().__init__()
        self.ref, self.model, self.error = ref, model, error


class WritePlanScreen(ModalScreen[str | None]):
    """Asks where to write the plan; enter writes, escape cancels."""

    AUTO_FOCUS = "Input"
    BINDINGS = bindings((Action("escape", "cancel", "Cancel", "write nothing"),))

    def compose(self) -> ComposeResult:
        with Vertical(id="write-plan"):
            yield Label("Write the plan as a distill.yaml fragment to:")
            yield Input(DEFAULT_PLAN_PATH, id="write-plan-path")
            yield Static("enter writes, esc cancels", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _field(name: str, default: str, choices) -> Input | Select:
    if choices is None:
        return Input(default, id=f"memory-{name}", compact=True)
    pairs = [c if isinstance(c, tuple) else (c, c) for c in choices]
    return Select(pairs, value=default, allow_blank=False, compact=True, id=f"memory-{name}")


class MemoryScreen(EntrenarScreen):
    MODE = "memory"
    TITLE_TEXT = "Memory"
    AUTO_FOCUS = ""  # single-key actions work at once; tab enters the form
    ACTIONS = (
        Action("w", "write_plan", "Write plan", "write the plan that fits as a config (YAML)"),
        Action("p", "apply_plan", "Apply plan", "put the plan's settings into the inputs"),
    )

    def __init__(self) -> None:
        super().__init__()
        self._models: dict[str, object] = {}  # ref -> open Model, read once
        self._failed: dict[str, FieldError] = {}
        self._opening: str | None = None
        self._debounce: Timer | None = None
        self.estimate: MemoryEstimate | None = None
        self.plan: LoraPlan | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="memory-body"):
            with VerticalScroll(id="memory-form", can_focus=False):
                for name, label, default, choices in FIELDS:
                    if name == "model":
                        default = self.app.selected_model or DEFAULT_MODEL
                    widget = _field(name, default, choices)
                    yield Horizontal(
                        Label(label), widget, id=f"memory-row-{name}", classes="form-row"
                    )
                yield Checkbox("gradient checkpointing", id="memory-checkpointing", compact=True)
                yield Static(id="memory-errors", classes="error")
            with VerticalScroll(id="memory-results"):
                yield Static(id="memory-verdict")
                yield Static(id="memory-summary", classes="hint")
                yield BreakdownBars(id="memory-bars")
                yield Static(id="memory-plan")
                yield Table(id="memory-table", show_cursor=False, zebra_stripes=True)
                yield Static(id="memory-notes", classes="hint")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(DataTable).add_columns("term", "bytes", "share")
        self.watch(self.app, "selected_model", self._follow_selected_model)
        self._recompute()

    def _follow_selected_model(self, ref: str | None) -> None:
        if ref:
            self.query_one("#memory-model", Input).value = ref

    # ---- inputs -------------------------------------------------------------------------------

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _schedule(self) -> None:
        """Recompute once typing pauses (each change restarts the timer)."""
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE_S, self._recompute)

    def _form_values(self) -> dict:
        names = [name for name, *_ in FIELDS] + ["checkpointing"]
        return {name: self.query_one(f"#memory-{name}").value for name in names}

    # ---- the model, opened once in a worker ---------------------------------------------------

    @work(thread=True, exclusive=True, group="memory-model")
    def open_model(self, ref: str) -> None:
        from ..core.models.handle import Model

        try:
            model = Model.open(ref)
            _ = model.arch  # the header reads happen here, not on the UI thread
            if model.source.config is None:
                _ = model.tensors
        except EntrenarError as exc:
            self.post_message(ModelRead(ref, error=FieldError("model", exc.message, exc.hint)))
        except Exception as exc:  # a bug, or an OSError: say so, keep the app
            error = FieldError("model", f"{ref}: {type(exc).__name__}: {exc}", bug_hint())
            self.post_message(ModelRead(ref, error=error))
        else:
            self.post_message(ModelRead(ref, model=model))

    def on_model_read(self, message: ModelRead) -> None:
        if message.error is None:
            self._models[message.ref] = message.model
        else:
            self._failed[message.ref] = message.error
        if self._opening == message.ref:
            self._opening = None
        if message.ref == self.query_one("#memory-model", Input).value.strip():
            self._recompute()

    def _model_for(self, settings: Settings):
        """The open Model, or None while it opens (a worker starts) or after it failed."""
        ref = settings.model
        self._failed = {ref: self._failed[ref]} if ref in self._failed else {}  # retry the rest
        if not ref or ref in self._models:
            return self._models.get(ref)
        if ref in self._failed:
            settings.errors.insert(0, self._failed[ref])
        elif ref != self._opening:
            self._opening = ref
            self.open_model(ref)
        return None

    # ---- recomputing and showing --------------------------------------------------------------

    def _recompute(self) -> None:
        self._debounce = None
        settings = parse_form(self._form_values())
        for name in ("rank", "targets"):
            self.query_one(f"#memory-{name}").disabled = settings.method == "full"
        model = self._model_for(settings)
        self.estimate = self.plan = None
        if model is not None and settings.can_estimate:
            try:
                self.estimate = estimate_for_model(model, **settings.estimate_settings())
            except EntrenarError as exc:
                settings.errors.append(FieldError("estimate", exc.message, exc.hint))
        self._show_errors(settings.errors)
        if self.estimate is None:
            self._clear_results(settings)
            return
        self._show_estimate(self.estimate, settings.vram)
        if not settings.errors:
            self._show_plan(model, settings)
        else:
            self.query_one("#memory-plan", Static).update("no plan: fix the inputs on the left")

    def _show_errors(self, errors: list[FieldError]) -> None:
        text = Text()
        for error in errors:
            text.append(f"{LABELS[error.field]}: {error.message}\n", style="bold")
            if error.hint:
                text.append(f"  {error.hint}\n", style="dim")
        text.rstrip()
        self.query_one("#memory-errors", Static).update(text)
        bad = {f"memory-row-{e.field}" for e in errors}
        for row in self.query(".form-row"):
            row.set_class(row.id in bad, "-bad")

    def _clear_results(self, settings: Settings) -> None:
        if self._opening and self._opening == settings.model:
            reason = f"reading {settings.model}..."
        else:
            reason = "no estimate: fix the inputs on the left"
        self._set_verdict(reason, None)
        for widget_id in ("#memory-summary", "#memory-plan", "#memory-notes"):
            self.query_one(widget_id, Static).update("")
        self.query_one(BreakdownBars).show([])
        self.query_one(DataTable).display = False

    def _set_verdict(self, line: str, fits: bool | None) -> None:
        widget = self.query_one("#memory-verdict", Static)
        widget.update(line)
        widget.set_class(fits is True, "-fits")
        widget.set_class(fits is False, "-over")

    def _show_estimate(self, est: MemoryEstimate, vram: int | None) -> None:
        total = est.total_bytes
        if vram is None:
            self._set_verdict(f"needs {format_bytes(total)} (no VRAM to compare with)", None)
        else:
            self._set_verdict(*verdict(total, vram))
        self.query_one("#memory-summary", Static).update(
            f"peak at {est.peak_phase}; {human_count(est.parameters)} parameters,"
            f" {human_count(est.trainable_parameters)} trainable"
        )
        self.query_one(BreakdownBars).show(
            [Bar(term, size, format_bytes(size)) for term, size in est.breakdown.items()]
        )
        table = self.query_one(DataTable)
        table.clear()
        table.display = True
        rows = [(term, size, f"{100 * size / total:.1f}%") for term, size in est.breakdown.items()]
        for term, size, share in [*rows, ("total", total, "100%")]:
            cells = (format_bytes(size), share)
            table.add_row(term, *(Text(c, justify="right") for c in cells), key=term)
        self.query_one("#memory-notes", Static).update("\n".join(f"· {n}" for n in est.notes))

    def _show_plan(self, model, settings: Settings) -> None:
        widget = self.query_one("#memory-plan", Static)
        try:
            self.plan = plan_lora(
                model,
                settings.vram,
                batch_size=settings.batch * settings.accumulation,
                sequence_length=settings.sequence_length,
                device=settings.values["device"],
            )
        except EntrenarError as exc:
            text = Text(f"no plan fits: {exc.message}", style="bold red")
            text.append(f"\n{exc.hint}", style="dim")
            widget.update(text)
            return
        widget.update(plan_text(self.plan))

    # ---- actions ------------------------------------------------------------------------------

    def _no_plan(self, what: str) -> bool:
        if self.plan is None:
            why = "nothing fits these inputs" if self.estimate else "fix the inputs first"
            self.notify(f"no plan to {what}: {why}", severity="warning")
        return self.plan is None

    def action_write_plan(self) -> None:
        if self._no_plan("write"):
            return
        self.app.push_screen(WritePlanScreen(), self._write_plan)

    def _write_plan(self, path: str | None) -> None:
        if not path or self.plan is None:
            return
        target = Path(path).expanduser()
        try:
            if target.is_dir():
                raise InvalidInputError(f"{path} is a folder", "give a file, e.g. lora-plan.yaml")
            written = write_plan_config(self.plan, target)
        except (EntrenarError, OSError) as exc:
            message = exc.message if isinstance(exc, EntrenarError) else str(exc)
            self.notify(f"not written: {message}", severity="error")
            return
        self.notify(f"plan written to {written.resolve()}", title="Write plan")

    def action_apply_plan(self) -> None:
        if self._no_plan("apply"):
            return
        plan = self.plan
        values = {"method": plan.method, "batch": str(plan.batch_size)}
        values |= {"accumulation": str(plan.gradient_accumulation), "optimizer": plan.optimizer}
        values |= {"precision": "bf16", "device": "cuda"}
        values["checkpointing"] = plan.gradient_checkpointing
        if plan.rank is not None:
            values |= {"rank": str(plan.rank), "targets": plan.target_set}
        for name, value in values.items():
            self.query_one(f"#memory-{name}").value = value
        self.notify(f"applied: {plan_label(plan)}", title="Apply plan")
