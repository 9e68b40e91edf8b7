"""A sweep's progress: an overall bar and one bar per running job on stderr, or its events as
JSON Lines on stdout with --json."""

from __future__ import annotations

from . import render


class SweepProgress:
    def __init__(self, json_out: bool) -> None:
        self.json_out = json_out
        self._progress = None
        self._overall = None
        self._jobs: dict[str, int] = {}
        self._labels: dict[str, str] = {}

    def __enter__(self) -> SweepProgress:
        if not self.json_out:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _print(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def on_event(self, event: dict) -> None:
        if self.json_out:
            render.emit_json(event)
            return
        handler = getattr(self, f"_on_{event.get('event')}", None)
        if handler is not None:
            handler(event)

    def _on_sweep_start(self, event: dict) -> None:
        self._overall = self._progress.add_task(
            "[bold]sweep", total=event["jobs"], completed=event["skipped"], info=""
        )
        self._print(f"sweep: {event['sweep_dir']} ({event['jobs']} jobs)")
        if event["skipped"]:
            self._print(f"{event['skipped']} jobs already finished: skipped")

    def _on_job_start(self, event: dict) -> None:
        key = event["key"]
        name = f"{event['label']} seed {event['seed']}"
        self._labels[key] = name
        if key in self._jobs:
            self._progress.update(self._jobs[key], info=f"retry {event['attempt']}")
            self._print(f"{name}: retrying (attempt {event['attempt']}) from its checkpoint")
            return
        self._jobs[key] = self._progress.add_task(f"  {name}", total=None, info="")

    def _on_job_progress(self, event: dict) -> None:
        task = self._jobs.get(event["key"])
        if task is not None and event.get("total_steps"):
            self._progress.update(task, completed=event["step"], total=event["total_steps"])

    def _on_job_end(self, event: dict) -> None:
        task = self._jobs.pop(event["key"], None)
        if task is not None:
            self._progress.remove_task(task)
        name = self._labels.get(event["key"], event["key"])
        if event["status"] == "finished":
            ppl = event["metrics"].get("eval_ppl")
            self._print(f"{name}: finished" + (f", eval ppl {ppl:.3f}" if ppl else ""))
        else:
            self._print(f"{name}: failed: {(event.get('error') or {}).get('message')}")
        if self._overall is not None:
            self._progress.advance(self._overall)

    def _on_enqueued(self, event: dict) -> None:
        self._print(f"study {event['study']}: {event['added']} jobs enqueued")

    def _on_worker_start(self, event: dict) -> None:
        self._print(f"worker {event['pid']}: taking jobs from study {event['study']}")

    def _on_note(self, event: dict) -> None:
        self._print(f"note: {event['message']}")
