import pickle

import numpy as np
import pytest

from visitcal.core.apcorr import ApCorrMap
from visitcal.core.chebyshev import ChebyshevBoundedField
from visitcal.core.geom import Box2I
from visitcal.core.persistence import PersistenceError, component_from_table, component_to_table

BOX = Box2I(0, 0, 4071, 3999)


def make_map():
    rng = np.random.default_rng(4)
    m = ApCorrMap()
    m["base_PsfFlux_instFlux"] = ChebyshevBoundedField(BOX, 1 + 0.01 * rng.normal(size=(3, 3)))
    m["base_PsfFlux_instFluxErr"] = ChebyshevBoundedField(BOX, [[0.004]])
    m["base_GaussianFlux_instFlux"] = ChebyshevBoundedField(BOX, 1 + 0.01 * rng.normal(size=(2, 2)))
    m["base_GaussianFlux_instFluxErr"] = ChebyshevBoundedField(BOX, [[0.006]])
    return m


def test_mapping_behaviour_and_order():
    m = make_map()
    assert list(m) == ["base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr",
                       "base_GaussianFlux_instFlux", "base_GaussianFlux_instFluxErr"]
    assert m.algorithms == ["base_PsfFlux", "base_GaussianFlux"]
    assert m["base_PsfFlux_instFluxErr"].evaluate(100, 200) == pytest.approx(0.004)
    assert "base_PsfFlux_instFlux" in m and len(m) == 4


def test_round_trip_and_pickle_are_lossless():
    m = make_map()
    back = component_from_table(component_to_table(m))
    assert back == m and list(back) == list(m)
    assert pickle.loads(pickle.dumps(m)) == m


def test_empty_map_round_trips():
    assert component_from_table(component_to_table(ApCorrMap())) == ApCorrMap()


def test_bad_entries():
    m = ApCorrMap()
    with pytest.raises(ValueError, match="longer than 64"):
        m["x" * 65] = ChebyshevBoundedField(BOX, [[1.0]])
    with pytest.raises(TypeError, match="ChebyshevBoundedField"):
        m["base_PsfFlux_instFlux"] = 1.0
    with pytest.raises(KeyError, match="no aperture correction named 'nope'"):
        m["nope"]


def test_malformed_table_is_named():
    table = component_to_table(make_map())
    table["coefficients"][0, 0] = np.nan
    with pytest.raises(PersistenceError, match=r"APCORR HDU.*non-finite coefficient"):
        component_from_table(table, where="x.fits APCORR HDU")
    table = component_to_table(make_map())
    table.remove_column("order_x")
    with pytest.raises(PersistenceError, match="missing column"):
        component_from_table(table)
    table = component_to_table(make_map())
    table.meta["VCVERS"] = 99
    with pytest.raises(PersistenceError, match="version 99 is not supported"):
        component_from_table(table)
