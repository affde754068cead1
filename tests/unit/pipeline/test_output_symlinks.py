"""Outputs stay inside the repository (issue 22): an output folder that is a symbolic link leading out of the
repository is refused before anything is written; input folders linked from elsewhere (``post_isr_image/``,
``truth/``, as the sim tests and the benchmark share one simulation) are read as before."""

from __future__ import annotations

import shutil

import pytest

from visitcal.pipeline.associate_step import run_associate
from visitcal.pipeline.repository import (OutputOutsideRepositoryError, Repository, UnitStatus, check_output_path,
                                          write_product)

from test_associate_fault_isolation import make_repo


def _writer(text):
    return lambda p: p.write_text(text)


def test_a_dataset_folder_linked_outside_the_repository_is_refused_and_nothing_is_written(tmp_path):
    root, outside = tmp_path / "repo", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "single_visit_star").symlink_to(outside)
    path = Repository(root).dataset_path("single_visit_star", 1000, 5, "parquet")
    with pytest.raises(OutputOutsideRepositoryError) as info:
        write_product(path, _writer("x"), root=root)
    link = root / "single_visit_star"
    assert str(info.value).startswith(f"{link}: output folder leads outside the repository {root} (a symbolic "
                                      f"link to {outside.resolve()})")
    assert info.value.path == str(link)
    assert list(outside.iterdir()) == []  # not even the visit folder
    # the same folder as a real folder, or a link that stays inside the repository, is written
    (root / "elsewhere_inside").mkdir()
    link.unlink()
    link.symlink_to(root / "elsewhere_inside")
    write_product(path, _writer("x"), root=root)
    assert (root / "elsewhere_inside" / "001000" / path.name).read_text() == "x"


def test_a_provenance_folder_linked_outside_is_refused(tmp_path):
    root, outside = tmp_path / "repo", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "provenance").symlink_to(outside)
    with pytest.raises(OutputOutsideRepositoryError, match=f"^{root / 'provenance'}: output folder leads outside"):
        Repository(root).write_status(UnitStatus(step="calibrate", visit=1, detector=2, status="ok"))
    assert list(outside.iterdir()) == []


def test_linked_input_folders_are_read_and_outputs_beside_them_written(tmp_path):
    shared = tmp_path / "shared"
    (shared / "post_isr_image" / "001000").mkdir(parents=True)
    (shared / "post_isr_image" / "001000" / "post_isr_image_001000_005_0.fits").write_bytes(b"")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "post_isr_image").symlink_to(shared / "post_isr_image")
    repo = Repository(root)
    assert repo.data_ids() == [(1000, 5)]
    path = repo.dataset_path("preliminary_visit_image", 1000, 5, "fits")
    check_output_path(root, path)
    write_product(path, _writer("y"), root=root)
    assert path.read_text() == "y" and not path.parent.is_symlink()


def test_the_associate_step_fails_the_tracts_writing_through_a_link_outside(tmp_path):
    root = tmp_path / "repo"
    make_repo(root)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "isolated_star").symlink_to(outside)
    statuses = run_associate(root)
    assert statuses and all(not s.ok for s in statuses)
    for s in statuses:
        assert s.error_type == "OutputOutsideRepositoryError"
        assert s.message.startswith(f"{root / 'isolated_star'}: output folder leads outside the repository")
    assert list(outside.iterdir()) == []
    # replaced by a folder, the step writes every tract
    (root / "isolated_star").unlink()
    shutil.rmtree(root / "isolated_star_association", ignore_errors=True)
    assert all(s.ok for s in run_associate(root))
