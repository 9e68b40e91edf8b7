"""The snapshot tests run in an empty folder with their own HF cache and ENTRENAR_HOME."""

from __future__ import annotations

import pytest


@pytest.fixture
def snapshot_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("ENTRENAR_HOME", str(tmp_path / ".entrenar"))
    return tmp_path
