"""``ROOT/.visitcal.lock`` admits one command at a time, and a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest

from visitcal.core.atomic import host_tag
from visitcal.pipeline.lock import LOCK_NAME, RepositoryLockedError, repository_lock


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_second_holder_gets_a_clear_error(tmp_path):
    with repository_lock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text()) == {"pid": os.getpid(), "host": host_tag(),
                                                                   "since": lock.since}
        with pytest.raises(RepositoryLockedError) as info, repository_lock(tmp_path):
            pass
        message = str(info.value)
        assert message == (f"repository {tmp_path} is being processed by pid {os.getpid()} on host {host_tag()} "
                           f"since {lock.since}; wait for it or remove {tmp_path / LOCK_NAME} if that process "
                           "is gone")
        copy = pickle.loads(pickle.dumps(info.value))
        assert (copy.pid, copy.host, str(copy)) == (os.getpid(), host_tag(), message)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_dead_holders_lock_is_taken_over_and_another_hosts_is_not(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"pid": _dead_pid(), "host": host_tag(), "since": "2024-01-01T00:00:00+00:00"}))
    with repository_lock(tmp_path) as lock:
        assert lock.pid == os.getpid() and json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists() and [p.name for p in tmp_path.iterdir()] == []
    path.write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere", "since": "T"}))
    with pytest.raises(RepositoryLockedError, match="by pid .* on host elsewhere since T"), \
            repository_lock(tmp_path):
        pass
    assert path.exists()


def test_the_lock_removes_stale_temporaries(tmp_path):
    dead = tmp_path / "calexp" / f".x.fits.{host_tag()}.{_dead_pid()}.abcd_123.tmp"
    dead.parent.mkdir()
    dead.write_bytes(b"half")
    with repository_lock(tmp_path) as lock:
        assert lock.removed_temporaries == (dead,)
    assert not dead.exists()
