"""A LoRA module's singular-value spectrum (textual-plotext bars) with its effective rank marked.

The values come from `lora inspect --json` (the SVD ran in a child); this widget only draws."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .plot import CachedPlot

BAR_COLOR = "cyan"
RANK_COLOR = "red"


class SpectrumPlot(CachedPlot):
    """`show(...)` one module's values, or `show_note(text)` when there is nothing to draw."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.module: str | None = None  # whose spectrum is drawn
        self.values: list[float] = []
        self.note = ""

    def on_mount(self) -> None:
        super().on_mount()
        self.show_note("load an adapter to see its spectra")

    def show(
        self,
        module: str,
        values: Sequence[float],
        effective_rank: int | None,
        rank: int,
        label: str | None = None,
    ) -> None:
        """Bars for `values` (largest first), a line after the effective rank."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        self.module, self.values = module, [float(v) for v in values]
        label = label or module
        finite = all(math.isfinite(v) for v in self.values)
        if not self.values or not finite or max(self.values) == 0:
            why = "NaN or Inf in A/B" if not finite else "no update (all zero: untrained?)"
            self._text(f"{label}: {why}")
            return
        self.note = ""
        plt.title(f"{label}: effective rank {effective_rank}/{rank}")
        positions = list(range(1, len(self.values) + 1))
        plt.bar(positions, self.values, color=BAR_COLOR, width=0.6)
        plt.ylim(0, max(self.values) * 1.05)  # bars rise from zero, not from the smallest value
        if effective_rank:
            plt.vline(effective_rank + 0.5, RANK_COLOR)
        plt.xlabel("singular value")
        plt.xticks(positions if len(positions) <= 16 else positions[:: len(positions) // 8])
        self.changed()

    def show_note(self, note: str) -> None:
        self.plt.clear_data()
        self.plt.clear_figure()
        self.module, self.values = None, []
        self._text(note)

    def _text(self, note: str) -> None:
        self.note = note
        self.plt.title(note)
        self.plt.text("", 0, 0)
        self.plt.xlim(-1, 1)
        self.plt.ylim(-1, 1)
        self.plt.xticks([])
        self.plt.yticks([])
        self.changed()
