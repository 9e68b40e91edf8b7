"""The readers `--resume` uses turn a damaged run directory into the project's own error."""

from __future__ import annotations

import pytest

from entrenar_tui.core.distill.rundir import RunDir
from entrenar_tui.core.errors import EntrenarError


@pytest.mark.parametrize(
    "text",
    ["a: [1, 2", "- just\n- a list\n", "!!python/object:os.system 'x'", "\udcff", "BOMB"],
)
def test_a_damaged_config_yaml_is_an_error_not_a_crash(tmp_path, text):
    if text == "BOMB":  # billion laughs: 9**6 values from a few hundred bytes
        text = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
            for p, n in zip("abcde", "bcdef", strict=True)
        )
    (tmp_path / "config.yaml").write_text(text, errors="surrogateescape")
    with pytest.raises(EntrenarError) as caught:
        RunDir(tmp_path).read_config()
    assert caught.value.hint


def test_a_folder_in_place_of_a_file_is_an_error_not_a_crash(tmp_path):
    (tmp_path / "config.yaml").mkdir()
    (tmp_path / "metrics.jsonl").mkdir()
    (tmp_path / "checkpoints").write_text("not a folder")
    run = RunDir(tmp_path)
    with pytest.raises(EntrenarError):
        run.read_config()
    with pytest.raises(EntrenarError):
        run.truncate_metrics_after(3)
    assert run.latest_checkpoint() is None
    assert run.status() == {}
