"""``visitcal sim``: arguments, exit codes, output (issue 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from visitcal.cli import main
from visitcal.sim import SimConfig, SimRepository


@pytest.mark.parametrize("args, message", [
    (["--detectors", "0"], "--detectors"),
    (["--visits", "0"], "--visits"),
    (["--preset", "huge"], "--preset"),
    (["--band", "q"], "--band"),
    (["--snaps", "3"], "--snaps"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "repo"
    with pytest.raises(SystemExit) as exc:
        main(["sim", str(out), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_non_empty_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "repo"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["sim", str(out)])
    assert exc.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "keep me"


def test_output_that_is_a_file_or_has_no_parent_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for out in (f, tmp_path / "missing" / "repo"):
        with pytest.raises(SystemExit) as exc:
            main(["sim", str(out)])
        assert exc.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_sim_writes_a_repository_with_progress_and_summary(tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["sim", str(out), "--visits", "1", "--detectors", "1", "--snaps", "2", "--seed", "5",
                 "--band", "i"]) == 0
    captured = capsys.readouterr()
    assert "2/2 images" in captured.err                       # progress bar
    assert "wrote" in captured.out and "2 post_isr_image files" in captured.out
    repo = SimRepository(out)
    assert repo.band == "i" and repo.data_ids == [(1000, 0, 0), (1000, 0, 1)]
    manifest = json.loads((out / "repo.json").read_text())
    assert manifest["config"]["seed"] == 5 and manifest["config"]["preset"] == "small"
    exposure = repo.post_isr_image(1000, 0, 1)
    assert exposure.shape == (2048, 2048) and exposure.visit_info.band == "i"
    # an existing repository is replaced only with --overwrite
    with pytest.raises(SystemExit):
        main(["sim", str(out), "--visits", "1", "--detectors", "1"])
    assert main(["info", str(out)]) == 0
    assert "1 visits x 1 detectors x 2 snaps" in capsys.readouterr().out


@pytest.mark.slow
def test_default_command_renders_the_readme_repository(tmp_path, capsys):
    """``visitcal sim OUT`` alone: 2 visits x 4 small detectors (the README's main command, ~35 s)."""
    out = tmp_path / "visitcal_sim"
    assert main(["sim", str(out)]) == 0
    repo = SimRepository(out)
    assert len(repo.data_ids) == 8 and repo.config == SimConfig()
    objects = repo.objects()
    assert np.sum(objects["is_star"] & objects["inside"]) > 200
    assert np.sum(~objects["is_star"] & objects["inside"]) > 1000
