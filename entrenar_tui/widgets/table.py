"""The app's DataTable: one that redraws its header and rows once it has measured new rows."""

from __future__ import annotations

from textual.widgets import DataTable


class Table(DataTable):
    """Textual (8.2.8, pinned) caches each rendered row, the header too, under a key that does
    not hold the column widths, and measures rows added since its last idle pass only in that
    pass: a header drawn in between kept its old widths above the wider rows (seen in CI's
    Sweeps and Models snapshots, and so on a user's screen). Bumping the update counter that
    every cache key holds, after each measuring pass, redraws every row at the new widths."""

    def _update_dimensions(self, new_rows) -> None:
        super()._update_dimensions(new_rows)
        self._update_count += 1
        self.refresh()

    def _update_column_widths(self, updated_cells) -> None:
        super()._update_column_widths(updated_cells)
        self._update_count += 1
        self.refresh()
