"""Fixtures for the app's Pilot tests (helpers live in tuihelp.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def tui_env(tmp_path, monkeypatch):
    """The app runs in an empty folder with its own HF cache and ENTRENAR_HOME."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("ENTRENAR_HOME", str(tmp_path / ".entrenar"))
    return tmp_path
