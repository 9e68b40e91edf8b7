"""Typer front end: parse arguments, call one core function, render its result."""
