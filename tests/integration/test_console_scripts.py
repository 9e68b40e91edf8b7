"""The installed console scripts, as real processes (a few only: each costs a Python start)."""

import json
import os
import shutil
import subprocess
import sys

import pytest


def run(*args):
    # the venv's scripts sit beside its python, whether or not the venv is on PATH
    exe = shutil.which(args[0], path=os.path.dirname(sys.executable)) or shutil.which(args[0])
    if exe is None:
        pytest.skip(f"{args[0]} not on PATH (package not installed)")
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=120)


def test_alias_equals_subcommand():
    a = run("entrenar", "inspect", "info", "minilm-l6", "--json")
    b = run("entrenar-inspect", "info", "minilm-l6", "--json")
    assert a.returncode == b.returncode == 0
    da, db = json.loads(a.stdout), json.loads(b.stdout)
    da.pop("seconds"), db.pop("seconds")
    assert da == db


def test_error_goes_to_stderr_with_exit_2():
    out = run("entrenar", "inspect", "info", "/nonexistent/model.safetensors")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines()[0].startswith("error: ")


def test_shell_alias_runs_a_script():
    out = run("entrenar-shell", "-c", "help memory; set seq 64; config")
    assert out.returncode == 0, out.stderr
    assert "memory [model] [--batch N] [--seq N] [--rank N]" in out.stdout
    assert "seq" in out.stdout and "64" in out.stdout


def test_distill_alias_validates_the_demo():
    out = run("entrenar-distill", "validate", "--config", "demo", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ok"] is True
