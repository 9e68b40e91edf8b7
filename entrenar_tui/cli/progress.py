"""Progress for long runs: a rich bar on stderr, or JSON Lines events on stdout with --json."""

from __future__ import annotations

from . import render


class RunProgress:
    def __init__(self, json_out: bool) -> None:
        self.json_out = json_out
        self._progress = None
        self._task = None

    def __enter__(self) -> RunProgress:
        if not self.json_out:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]distill"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_event(self, event: dict) -> None:
        if self.json_out:
            render.emit_json(event)
            return
        kind = event.get("event")
        if kind == "start":
            self._task = self._progress.add_task(
                "distill", total=event["total_steps"], completed=event["step"], info=""
            )
        elif kind == "train" and self._task is not None:
            info = f"loss {event['loss']:.4f} | {event['tokens_per_s']:.0f} tok/s"
            self._progress.update(self._task, completed=event["step"], info=info)
            if not self._progress.console.is_terminal:  # a log file: the bar never draws
                total = self._progress.tasks[0].total
                self._progress.console.print(f"step {event['step']}/{total:.0f}: {info}")
        elif kind == "baseline":
            self._progress.console.print(
                f"teacher held-out ppl {event['teacher_ppl']:.2f}; student before {event['student_ppl']:.2f}"
            )
        elif kind == "eval":
            self._progress.console.print(
                f"step {event['step']}: eval ppl {event['eval_ppl']:.2f}, top-1 agreement {event['eval_top1_agreement']:.1%}"
            )
        elif kind == "note":
            self._progress.console.print(f"note: {event['message']}")
        elif kind in ("checkpoint", "resume"):
            self._progress.console.print(f"{kind}: step {event['step']}")
