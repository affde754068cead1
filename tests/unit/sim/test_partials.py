"""Half-built repositories of killed simulator runs (``.<name>.<host>.partial-<pid>``) are removed by the
next run into the same folder; a running one's are kept."""

from __future__ import annotations

import os
import subprocess
import sys

from visitcal.core.atomic import host_tag
from visitcal.sim.repository import remove_stale_partials


def test_only_dead_runs_partials_are_removed(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = tmp_path / f".repo.{host_tag()}.partial-{child.pid}"
    live = tmp_path / f".repo.{host_tag()}.partial-{os.getpid()}"
    other_host = tmp_path / f".repo.otherhost.partial-{child.pid}"
    repo = tmp_path / "repo"
    for folder in (dead, live, other_host, repo):
        (folder / "post_isr_image").mkdir(parents=True)
    assert remove_stale_partials(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, other_host, repo))
