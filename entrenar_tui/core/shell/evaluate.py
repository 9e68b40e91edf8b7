"""The shell's evaluator: each command calls the same core function as its CLI twin and returns
an Output for a front end to print (the terminal REPL, or the TUI's Shell pane). It knows
nothing of terminals: a command that needs a yes/no returns `confirm` and the front end asks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import EntrenarError, InvalidInputError
from .commands import COMMANDS
from .measure import MeasureCommands
from .output import Output
from .parse import Command
from .session import SETTINGS, Session
from .work import WorkCommands

__all__ = ["Evaluator", "Output"]


@dataclass
class Evaluator(MeasureCommands, WorkCommands):
    session: Session
    pending: dict = field(default_factory=dict)  # what a confirmed `distill` will start

    def run(self, command: Command) -> Output:
        """Run one command and record it in the history (an error is recorded, then raised)."""
        started, clock = _now(), time.perf_counter()
        status = "ok"
        try:
            return getattr(self, f"_{command.name}")(command)
        except EntrenarError:
            status = "error"
            raise
        except KeyboardInterrupt:
            status = "cancelled"
            raise
        finally:
            self.session.history.append(
                {
                    "command": command.text,
                    "started_at": started,
                    "duration_s": round(time.perf_counter() - clock, 3),
                    "status": status,
                }
            )

    # ------------------------------------------------------------------ models
    def _current(self, given: str | None = None) -> str:
        ref = given or self.session.model or self.session.teacher
        if not ref:
            raise InvalidInputError("no model yet", "fetch one first: fetch smollm2-135m")
        return ref

    def _fetch(self, command: Command) -> Output:
        from ..inspect.info import model_info

        info = model_info(command.args[0])
        self.session.model = command.args[0]
        if self.session.teacher is None:
            self.session.teacher = command.args[0]
        size = info.file_size_bytes / 2**20
        message = (
            f"✓ Fetched {command.args[0]} ({size:,.0f} MB, {info.kind})\n"
            f"  Architecture: {info.architecture}, Layers: {info.layers}, "
            f"Hidden: {info.hidden_size}"
        )
        return Output("text", info, message)

    _load = _fetch

    def _inspect(self, command: Command) -> Output:
        what = command.args[0] if command.args else "info"
        ref = self._current(command.args[1] if len(command.args) > 1 else None)
        if what == "info":
            from ..inspect.info import model_info

            return Output("info", model_info(ref))
        if what == "layers":
            from ..inspect.info import model_layers

            return Output("layers", model_layers(ref))
        if what == "validate":
            from ..inspect.validate import validate_model

            return Output(
                "validate", validate_model(ref, strict=bool(command.options.get("strict")))
            )
        raise InvalidInputError(
            f"inspect {what!r}?", "inspect info, inspect layers or inspect validate"
        )

    def _compare(self, command: Command) -> Output:
        from ..inspect.compare import compare_models

        return Output("compare", compare_models(command.args[0], command.args[1]))

    # ------------------------------------------------------------------ settings
    def _set(self, command: Command) -> Output:
        key, value = command.args
        if key in ("teacher", "student"):
            from ..models import Model

            Model.open(value)  # fails here, not at distill time
            layers = command.options.get("layers") if key == "student" else None
            if layers and value != (self.session.teacher or value):
                raise InvalidInputError(
                    f"--layers makes the student from the teacher's layers, and {value} is not"
                    f" the teacher ({self.session.teacher})",
                    f"set teacher {value} first, or drop --layers",
                )
            if layers and self.session.teacher is None:
                self.session.teacher = value
            setattr(self.session, key, value)
            if key == "student":
                self.session.student_layers = layers
            layers = (
                f" (teacher layers {self.session.student_layers})"
                if key == "student" and self.session.student_layers
                else ""
            )
            return Output("text", None, f"✓ {key.capitalize()} model configured: {value}{layers}")
        if key not in SETTINGS:
            raise InvalidInputError(
                f"no setting {key!r}", f"settings: teacher, student, {', '.join(SETTINGS)}"
            )
        kind = SETTINGS[key][0]
        try:
            self.session.settings[key] = kind(value)
        except ValueError:
            raise InvalidInputError(
                f"{key} must be {kind.__name__}, not {value!r}", f"set {key} {SETTINGS[key][1]}"
            ) from None
        return Output("text", None, f"✓ {key} = {self.session.settings[key]}")

    def _config(self, command: Command) -> Output:
        session = self.session
        rows = [
            ["model", session.model],
            ["teacher", session.teacher],
            [
                "student",
                session.student
                or (
                    f"teacher layers {session.student_layers}"
                    if session.student_layers
                    else "every third teacher layer"
                ),
            ],
            *([key, value] for key, value in session.settings.items()),
        ]
        return Output(
            "table",
            {"title": f"Session {session.id}", "header": ["setting", "value"], "rows": rows},
        )

    # ------------------------------------------------------------------ training
    def _distill(self, command: Command) -> Output:
        from .training import distill_config, estimate_plan, plan_text, start_run

        config = distill_config(self.session, command.options)
        if command.options.get("dry-run"):
            self.pending = {"config": config, "output": command.options.get("output")}
            text = plan_text(*estimate_plan(config))
            return Output("text", None, text, confirm="Proceed with training?")
        return start_run(self.session, config, command.options.get("output"))

    def confirm(self, output: Output, yes: bool) -> Output:
        """The answer to `output.confirm`: start what the dry run showed, or not."""
        from .training import start_run

        pending, self.pending = self.pending, {}
        if not yes or not pending:
            return Output("text", None, "Not started.")
        prefix = pending.get("prefix", "shell")
        return start_run(self.session, pending["config"], pending["output"], prefix)

    def _runs(self, command: Command) -> Output:
        from ..runs.follow import read_run

        rows = []
        for path in self.session.runs:
            summary = read_run(path)
            rows.append([path, summary.state, f"{summary.step}/{summary.total_steps}"])
        return Output(
            "table",
            {"title": "Runs of this session", "header": ["run", "state", "step"], "rows": rows},
        )

    def _watch(self, command: Command) -> Output:
        from .training import follow_run

        if command.args:
            run_dir = command.args[0]
        elif self.session.runs:
            run_dir = self.session.runs[-1]
        else:
            raise InvalidInputError("no run to watch", "start one with `distill`, or watch RUN_DIR")
        if not Path(run_dir).is_dir():
            raise InvalidInputError(f"no run directory {run_dir}", "see `runs`")
        return Output("follow", run_dir, follow=lambda: follow_run(Path(run_dir)))

    # ------------------------------------------------------------------ the shell itself
    def _history(self, command: Command) -> Output:
        rows = [
            [
                str(index),
                item["command"],
                _duration(item["duration_s"]),
                "✓" if item["status"] == "ok" else "✗",
            ]
            for index, item in enumerate(self.session.history, 1)
        ]
        return Output(
            "table",
            {
                "title": "Session History",
                "header": ["#", "Command", "Duration", "Status"],
                "rows": rows,
            },
        )

    def _help(self, command: Command) -> Output:
        if command.args:
            spec = COMMANDS.get(command.args[0])
            if spec is None:
                raise InvalidInputError(
                    f"no command {command.args[0]!r}", "type `help` for the list"
                )
            return Output("text", None, f"{spec.usage()}\n  {spec.help}")
        rows = [[spec.name, spec.help] for spec in COMMANDS.values()]
        return Output(
            "table", {"title": "Commands", "header": ["command", "what it does"], "rows": rows}
        )

    def _quit(self, command: Command) -> Output:
        return Output("text", None, "", quit=True)

    _exit = _quit


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"
