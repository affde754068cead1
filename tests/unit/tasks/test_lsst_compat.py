"""The LSST compatibility registry (`visitcal.tasks.lsst_compat`, issue 24): every visitcal name it gives
exists, so the generated compatibility table cannot drift from the code. The output columns are checked
against a processed repository in ``tests/sim/test_products_sim.py``."""

from __future__ import annotations

import importlib

import pytest
from pydantic import BaseModel, ConfigDict, Field

from visitcal.tasks import lsst_compat as lc


def _resolve_object(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("task", lc.TASKS, ids=lambda t: t.lsst_task)
def test_every_ours_entry_resolves(task):
    """Every LSST field is mapped to a config path that resolves, or has a reason; the classes exist."""
    for path in task.visitcal:
        assert callable(_resolve_object(path)), path
    model = lc.config_model(task)
    rows = lc.field_rows(task)  # raises CompatError on a path that does not resolve
    assert [r.lsst for r in rows] == list(task.lsst_fields)
    for row in rows:
        if row.ours is None:
            assert row.note.strip(), f"{task.lsst_task}.{row.lsst}: absent without a reason"
        else:
            assert lc.resolve_config_path(model, row.ours) is not None
    only = {name for name, _ in lc.visitcal_only(task)}
    mapped = {r.ours.split(".")[0] for r in rows if r.ours}
    if model is not None:
        assert only | mapped == set(model.model_fields) and not only & mapped


@pytest.mark.parametrize("task", lc.TASKS, ids=lambda t: t.lsst_task)
def test_hand_written_renames_are_exceptions(task):
    """Only the exceptions to the automatic camelCase -> snake_case mapping are written by hand."""
    for lsst, ours in task.renamed.items():
        assert lc.snake_case(lsst) != ours, f"{task.lsst_task}.{lsst}: the rename is the automatic one"


def test_snake_case():
    assert lc.snake_case("thresholdValue") == "threshold_value"
    assert lc.snake_case("reserveSelection.reserveFraction") == "reserve_selection.reserve_fraction"
    assert lc.snake_case("maxSNR") == "max_snr"
    assert lc.snake_case("outlierNSigma") == "outlier_n_sigma"
    assert lc.snake_case("min_DN") == "min_dn"
    assert lc.snake_case("do_use_sky_corr") == "do_use_sky_corr"


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold_value: float = Field(5.0, description="x")


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detection: _Inner = Field(default_factory=_Inner, description="d")
    renamed_field: int = Field(1, description="r")


def test_a_renamed_field_fails_the_registry(monkeypatch):
    """A registry entry whose config field was renamed (or never existed) raises, naming the field."""
    task = lc.TaskCompat("FakeTask", "pkg", (), "visitcal.tasks.lsst_compat._FAKE",
                         ("detection.thresholdValue", "oldName"))
    monkeypatch.setattr(lc, "_FAKE", _Outer, raising=False)
    with pytest.raises(lc.CompatError, match="old_name"):
        lc.field_rows(task)
    ok = lc.TaskCompat("FakeTask", "pkg", (), "visitcal.tasks.lsst_compat._FAKE",
                       ("detection.thresholdValue", "oldName"), renamed={"oldName": "renamed_field"})
    assert [r.ours for r in lc.field_rows(ok)] == ["detection.threshold_value", "renamed_field"]
    assert lc.visitcal_only(ok) == []
    with pytest.raises(lc.CompatError, match="no field 'nope'"):
        lc.resolve_config_path(_Outer, "detection.nope")
    with pytest.raises(lc.CompatError, match="does not list"):
        lc.field_rows(lc.TaskCompat("FakeTask", "pkg", (), None, ("a",), absent={"a": "x", "b": "y"}))


def test_columns_registry_is_consistent():
    """Each column is named once per dataset; an absent one has a reason."""
    for table in lc.COLUMNS:
        rows = lc.column_rows(table)
        names = [r.lsst for r in rows]
        assert len(names) == len(set(names)), table.dataset
        assert all(r.note for r in rows if r.ours is None)
