"""Models: every model at hand (packaged, here, --models, HF cache, recent), its header facts
and layers, and validate/convert as child processes so a long scan never freezes the screen."""

from __future__ import annotations

import textwrap

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable

from ..actions import Action
from ..core.errors import EntrenarError
from ..core.sizes import format_bytes
from ..widgets.job import JobDone, JobPanel, as_entrenar_error, error_text, short_label
from ..widgets.table import Table
from .base import EntrenarScreen
from .model_dialogs import ConvertModal, ConvertRequest, PathModal

SOURCE_LABELS = {
    "packaged": "packaged",
    "local": "working directory",
    "runs": "runs (final)",
    "models-dir": "--models folders",
    "hf-cache": "Hugging Face cache",
    "recent": "recent",
}
GROUP = "group:"  # row keys of the group titles
LIST_WIDTH = 24
LAYER_COLUMNS = ("block", "tensors", "dtype", "params", "bytes")
READ_FROM = {"tensors": "tensor names (some fields guessed)"}  # no config.json to read
PLAIN_FIELDS = (
    ("layers", "layers"),
    ("hidden size", "hidden_size"),
    ("intermediate", "intermediate_size"),
    ("vocab size", "vocab_size"),
    ("max positions", "max_positions"),
    ("tied embeddings", "tied_embeddings"),
)


class CatalogListed(Message):
    """A new listing; `select`: refs to put the cursor on, the first found wins."""

    def __init__(self, entries: list, select: tuple[str | None, ...] = ()) -> None:
        super().__init__()
        self.entries, self.select = entries, select


class DetailsLoaded(Message):
    """Header facts of `ref`, or why it cannot be read. `force`: show it even if the cursor is
    elsewhere (a model typed into open is not on the list)."""

    def __init__(self, ref: str, info=None, layers=None, error=None, force: bool = False):
        super().__init__()
        self.ref, self.info, self.layers, self.error, self.force = ref, info, layers, error, force


# --------------------------------------------------------------------------- rendering


def info_rows(info) -> list[tuple[str, str]]:
    """What `entrenar inspect info` prints; fields guessed from tensor names say so."""
    inferred = set(getattr(info, "inferred", None) or [])

    def shown(value, *fields: str) -> str:
        guessed = " (inferred)" if inferred.intersection(fields) else ""
        return f"{'-' if value is None else value}{guessed}"

    heads = f"{info.heads} (kv {info.kv_heads})" if info.heads else None
    arch = f"{info.architecture} ({info.model_type})"
    plain = [(label, shown(getattr(info, name), name)) for label, name in PLAIN_FIELDS]
    return [
        ("architecture", shown(arch, "model_type", "family")),
        ("read from", READ_FROM.get(info.arch_source, info.arch_source)),
        ("format", info.kind),
        ("parameters", f"{info.parameters:,}"),
        ("attention heads", shown(heads, "heads", "kv_heads")),
        *plain,
        ("precision", ", ".join(info.dtypes)),
        ("tensors", str(info.tensor_count)),
        ("files", f"{info.file_count} ({format_bytes(info.file_size_bytes)})"),
        ("tokenizer", "yes" if info.has_tokenizer else "no"),
    ]


def validate_text(document: dict) -> Text:
    """The verdict first (it must stay in view), then each problem with its hint."""
    ok = document.get("ok")
    text = Text(
        f"{'ok' if ok else 'FAILED'}: {document.get('tensors_checked', '?')} tensors checked, "
        f"{document.get('errors', 0)} errors, {document.get('warnings', 0)} warnings",
        style="bold green" if ok else "bold red",
    )
    for problem in document.get("problems", []):
        where = f" [{problem['tensor']}]" if problem.get("tensor") else ""
        style = "red" if problem.get("severity") == "error" else "yellow"
        text.append(
            f"\n{problem.get('severity')}: {problem.get('code')}{where}: {problem.get('message')}",
            style,
        )
        if problem.get("hint"):
            text.append(f"\n  hint: {problem['hint']}", style="dim")
    return text


def convert_text(document: dict) -> Text:
    text = Text(f"converted to {document.get('format')}: {document.get('output')}", "bold green")
    size = format_bytes(document.get("file_size_bytes") or 0)
    text.append(
        f"\n{document.get('tensors')} tensors, {size}, verified {document.get('verified')}, "
        f"{document.get('seconds', 0):.1f} s"
    )
    for note in document.get("notes") or []:
        text.append(f"\nnote: {note}", style="dim")
    return text


# --------------------------------------------------------------------------- the screen


class ModelsScreen(EntrenarScreen):
    MODE = "models"
    TITLE_TEXT = "Models"
    ACTIONS = (
        Action("v", "validate", "Validate", "check structure and values (inspect validate)"),
        Action("c", "convert", "Convert", "convert to safetensors, gguf, apr or pth"),
        Action("r", "refresh", "Refresh", "look for models again"),
        Action("o", "open", "Open", "open a model path, hub id or packaged name"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, object] = {}  # row key -> CatalogEntry
        self.shown_ref: str | None = None  # whose details are on screen (or being loaded)
        self._last_row = 0  # to step over group titles in the direction the cursor moves

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="models-main"):
            yield Table(id="models-list", cursor_type="row", zebra_stripes=True)
            with Vertical(id="models-right"):
                yield Table(id="models-info", cursor_type="row", show_header=False)
                yield Table(id="models-layers", cursor_type="row")
                yield JobPanel(id="models-job")

    def on_mount(self) -> None:
        super().on_mount()
        models = self.query_one("#models-list", DataTable)
        models.add_columns("model", "size", "kind")
        models.border_title = "models"
        self.query_one("#models-info", DataTable).border_title = "info"
        self.query_one("#models-layers", DataTable).border_title = "layers"
        self.list_models(select=self.app.selected_model)

    # ---------------------------------------------------------------- the list

    @work(thread=True, exclusive=True, group="models-catalog")
    def list_models(self, select: str | None = None) -> None:
        """Discovery walks folders and the HF cache: a thread, never the event loop."""
        from ..core.models.catalog import discover
        from ..core.recent import load_recent

        options = self.app.options
        try:
            entries = discover(".", options.model_dirs, options.runs_dir, load_recent())
        except Exception as exc:  # an unreadable folder must not end the app
            error = as_entrenar_error(exc)
            self.app.call_from_thread(
                self.notify, f"listing failed: {error.message}", severity="error"
            )
            return
        self.post_message(CatalogListed(entries, (select,)))

    def on_catalog_listed(self, message: CatalogListed) -> None:
        table = self.query_one("#models-list", DataTable)
        previous = self._current_key()
        previous_ref = self.entries[previous].ref if previous else None
        table.clear()
        self.entries = {}
        groups: set[str] = set()
        for entry in message.entries:
            if entry.source not in groups:
                groups.add(entry.source)
                label = Text(SOURCE_LABELS.get(entry.source, entry.source), style="bold")
                table.add_row(label, "", "", key=f"{GROUP}{entry.source}")
            size = format_bytes(entry.size_bytes) if entry.size_bytes is not None else entry.note
            table.add_row(
                Text("  " + short_label(entry.ref, LIST_WIDTH)), size, entry.kind, key=entry.key
            )
            self.entries[entry.key] = entry
        table.border_title = f"models ({len(self.entries)})"
        keys = [self._key_for(ref) for ref in message.select if ref]
        if previous_ref is not None and previous_ref in message.select:
            keys.insert(0, previous)  # the row the user is on stays, even if listed twice
        self._move_to(next((k for k in keys if k in self.entries), previous))

    def _key_for(self, ref: str | None) -> str | None:
        return next((key for key, e in self.entries.items() if e.ref == ref), None)

    def _current_key(self) -> str | None:
        """The model under the cursor; None on a group title or an empty list."""
        table = self.query_one("#models-list", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return key if key in self.entries else None

    def _move_to(self, key: str | None) -> None:
        table = self.query_one("#models-list", DataTable)
        key = key if key in self.entries else next(iter(self.entries), None)
        if key is not None:
            table.move_cursor(row=table.get_row_index(key))
            self._show(self.entries[key])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "models-list" or event.cursor_row != event.data_table.cursor_row:
            return  # another table, or an event from before the list was rebuilt
        key = event.row_key.value
        if key in self.entries:
            self._last_row = event.cursor_row
            self._show(self.entries[key])
        elif self.entries:  # a group title: step over it, the way the cursor was going
            step = 1 if event.cursor_row >= self._last_row else -1
            target = event.cursor_row + step
            if not 0 <= target < event.data_table.row_count:
                target = event.cursor_row - step
            event.data_table.move_cursor(row=target)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a model: it goes to the recent list."""
        if event.data_table.id == "models-list" and event.row_key.value in self.entries:
            self.open_model(self.entries[event.row_key.value].ref)

    def _show(self, entry) -> None:
        self.app.selected_model = entry.ref
        if entry.ref == self.shown_ref:
            return
        self.shown_ref = entry.ref
        self.query_one("#models-info", DataTable).border_title = f"info: {short_label(entry.ref)}"
        self.load_details(entry.ref)

    # ---------------------------------------------------------------- details

    @work(thread=True, exclusive=True, group="models-details")
    def load_details(self, ref: str) -> None:
        """Header reads only (no tensor data), cheap enough for a thread in this process."""
        from ..core.inspect.info import model_info, model_layers

        try:
            self.post_message(DetailsLoaded(ref, model_info(ref), model_layers(ref)))
        except Exception as exc:  # shown in the screen: a bad file must not end the app
            self.post_message(DetailsLoaded(ref, error=as_entrenar_error(exc)))

    def on_details_loaded(self, message: DetailsLoaded) -> None:
        if message.ref != self.shown_ref and not message.force:
            return  # the cursor moved on while this one loaded
        self.shown_ref = message.ref
        info = self.query_one("#models-info", DataTable)
        info.border_title = f"info: {short_label(message.ref)}"
        layers = self.query_one("#models-layers", DataTable)
        info.clear(columns=True).add_columns("field", "value")  # columns fit the new model
        layers.clear(columns=True).add_columns(*LAYER_COLUMNS)
        if message.error is not None:
            self._show_error(info, message.error)
            layers.border_title = "layers"
            return
        for name, value in info_rows(message.info):
            info.add_row(name, value)
        result = message.layers
        for group in result.groups:
            layers.add_row(
                group.name,
                group.tensors,
                ",".join(group.dtypes),
                f"{group.parameters:,}",
                format_bytes(group.bytes),
            )
        layers.border_title = f"layers: {result.parameters:,} params, {format_bytes(result.bytes)}"

    def _show_error(self, info: DataTable, error: EntrenarError) -> None:
        """Message and hint wrapped over rows: a table cell does not wrap by itself."""
        width = max(20, info.size.width - 12)
        for label, line, style in (("error", error.message, "bold red"), ("hint", error.hint, "")):
            for n, part in enumerate(textwrap.wrap(line, width)):
                info.add_row(label if n == 0 else "", Text(part, style=style))

    # ---------------------------------------------------------------- open and recent

    @work(thread=True, exclusive=True, group="models-open")
    def open_model(self, ref: str) -> None:
        """Remember a model that opens; one that does not is shown as an error, not stored."""
        from ..core.inspect.info import model_info
        from ..core.models.catalog import discover
        from ..core.recent import add_recent

        try:
            model_info(ref)
            refs = add_recent(ref)
        except Exception as exc:  # shown in the screen, like every other error
            self.post_message(DetailsLoaded(ref, error=as_entrenar_error(exc), force=True))
            self.app.call_from_thread(self.notify, f"cannot open {ref}", severity="error")
            return
        options = self.app.options
        entries = discover(".", options.model_dirs, options.runs_dir, refs)
        self.post_message(CatalogListed(entries, (ref, refs[0])))

    # ---------------------------------------------------------------- actions

    def _selected_ref(self) -> str | None:
        key = self._current_key()
        return self.entries[key].ref if key else None

    def action_refresh(self) -> None:
        self.list_models()
        self.notify("looking for models")

    def action_open(self) -> None:
        def opened(ref: str | None) -> None:
            if ref:
                self.open_model(ref)

        self.app.push_screen(PathModal("Open a model: path, hub id or packaged name"), opened)

    def action_validate(self) -> None:
        ref = self._selected_ref()
        if ref:
            args = ["inspect", "validate", ref]
            self.query_one(JobPanel).run("validate", ref, args, f"validating {short_label(ref)}")

    def action_convert(self) -> None:
        ref = self._selected_ref()
        if not ref or self.query_one(JobPanel).busy:
            self.notify("select a model; one job at a time", severity="warning")
            return

        def chosen(request: ConvertRequest | None) -> None:
            if request is None:
                return
            args = ["inspect", "convert", ref, "--to", request.target, "--output", request.output]
            if request.quantize:
                args += ["--quantize", request.quantize]
            what = f"converting {short_label(ref)} to {request.target}"
            self.query_one(JobPanel).run("convert", ref, args, what)

        self.app.push_screen(ConvertModal(ref), chosen)

    def on_job_done(self, message: JobDone) -> None:
        panel = self.query_one(JobPanel)
        if message.error is not None:
            panel.finish(error_text(message.error))
            self.notify(f"{message.job} failed: {message.error.message}", severity="error")
        elif message.job == "validate":
            panel.finish(validate_text(message.document))
            ok = message.document.get("ok")
            self.notify(
                f"{message.ref}: {'ok' if ok else 'problems found'}",
                severity="information" if ok else "warning",
            )
        else:
            panel.finish(convert_text(message.document))
            self.notify(f"wrote {message.document.get('output')}")
            self.list_models()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        key = self._key_for(self.app.selected_model)
        if key and key != self._current_key():
            self._move_to(key)
