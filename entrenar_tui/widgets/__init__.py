"""Widgets that draw: they take plain data and know nothing of core."""
