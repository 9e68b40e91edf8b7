"""The HTML report: every section, SVG charts drawn from the sweep's own data, and a real
headless Chromium that renders it to a screenshot that is not blank (kept as an artifact)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_recorded_sweep
from entrenar_tui.cli.main import app

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SECTIONS = ("Summary", "Methodology", "Results", "Statistical Analysis", "Recommendations")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


@pytest.fixture
def report(tmp_path) -> Path:
    sweep = write_recorded_sweep(tmp_path)
    result = CliRunner().invoke(app, ["bench", "report", str(sweep), "--format", "html"])
    assert result.exit_code == 0, result.output
    return sweep / "report.html"


def test_the_html_report_has_every_section_and_charts_of_the_sweeps_data(report):
    text = report.read_text()
    assert [re.sub("<.*?>", "", h) for h in re.findall("<h2>.*?</h2>", text)] == list(SECTIONS)
    assert text.count("<svg") == 3  # metric per setting, loss curves, throughput
    assert "<script" not in text and not re.search(r'(src|href)="https?:', text)  # offline
    for label in ("T=1", "T=4"):  # one marker per seed, in the chart of the compared metric
        group = re.search(rf'<g id="seeds-{label}">(.*?)</g>\s*</g>', text, re.S)
        assert group is not None and group.group(1).count("<use") == 3
    assert "T=4 is best" in text and "T=4 vs T=1" in text


def test_headless_chromium_renders_the_report(report):
    from PIL import Image

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "bench-report.png"
    shot.unlink(missing_ok=True)
    command = [_chromium(), "--headless", "--disable-gpu", "--hide-scrollbars"]
    if os.geteuid() == 0:
        command.append("--no-sandbox")  # Chromium refuses to sandbox as root
    command += [f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=180)
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2400)
    histogram = image.histogram()
    white = sum(histogram[250:]) / sum(histogram)
    assert white < 0.97, "the screenshot is (almost) blank"
    dark = sum(histogram[:100]) / sum(histogram)
    assert dark > 0.005, "no text or chart lines were drawn"
