"""SimpleSkyMap: the gnomonic projection, the partition of the plane into inner tracts, outer regions,
polygons and the default map (analytic truths)."""

import json
import pickle

import numpy as np
import pytest
from pydantic import ValidationError
from visitcal.core.skymap import SimpleSkyMap, default_skymap, load_skymap, write_skymap


def test_projection_round_trip_and_centre():
    sky = SimpleSkyMap(ra0=359.5, dec0=-30.0, tract_size_deg=0.5, n_tracts_per_side=5)
    rng = np.random.default_rng(1)
    xi, eta = rng.uniform(-2, 2, 200), rng.uniform(-2, 2, 200)
    ra, dec = sky.deproject(xi, eta)
    assert np.all((ra >= 0) & (ra < 360))
    xi2, eta2 = sky.project(ra, dec)
    np.testing.assert_allclose(xi2, xi, atol=1e-10)
    np.testing.assert_allclose(eta2, eta, atol=1e-10)
    # the tangent point; a point 1 deg North along the meridian is at eta = tan(1 deg)
    assert sky.project(359.5, -30.0) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    assert sky.project(359.5, -29.0)[1] == pytest.approx(np.degrees(np.tan(np.radians(1.0))), rel=1e-12)
    # RA increases to the East (+xi); the antipode has no image
    assert sky.project(0.0, -30.0)[0] > 0
    assert np.isnan(sky.project(179.5, 30.0)[0])


def test_inner_tracts_partition_and_ids():
    sky = SimpleSkyMap(ra0=150.0, dec0=-30.0, tract_size_deg=1.0, n_tracts_per_side=3)
    assert sky.n_tracts == 9
    xi = np.array([0.0, 0.49, 0.5001, -0.4999, -0.51, 1.2, 1.6, 0.0])
    eta = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -1.2, 0.0, 1.49])
    ra, dec = sky.deproject(xi, eta)
    # id = (j + 1) * 3 + (i + 1): half-open squares [i - 1/2, i + 1/2)
    assert sky.tract_of(ra, dec).tolist() == [4, 4, 5, 4, 3, 2, -1, 7]
    for t in range(9):
        assert sky.tract_indices(t) == (t % 3 - 1, t // 3 - 1)
        inside = sky.contains(t, ra, dec)
        np.testing.assert_array_equal(inside, sky.tract_of(ra, dec) == t)
    c_ra, c_dec = sky.tract_center(5)
    assert sky.project(c_ra, c_dec)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tract 9"):
        sky.tract_indices(9)


def test_outer_regions_find_tracts_and_polygon():
    sky = SimpleSkyMap(ra0=10.0, dec0=45.0, tract_size_deg=1.0, n_tracts_per_side=3)
    o = sky.tract_overlap_deg
    ra, dec = sky.deproject(np.array([0.5 + 0.5 * o]), np.array([0.5 - 0.5 * o]))
    assert sky.contains(4, ra, dec, inner=False)[0] and not sky.contains(4, ra, dec)[0]
    # inner tract 5; outer regions of 4, 5, 7 and 8 (within o of the corner of all four)
    assert sky.find_tracts(ra, dec) == [4, 5, 7, 8]
    ra2, dec2 = sky.deproject(np.array([0.5 + 2 * o]), np.array([0.0]))
    assert sky.find_tracts(ra2, dec2) == [5]
    poly = sky.tract_polygon(4)
    pxi, peta = sky.project(poly[:, 0], poly[:, 1])
    np.testing.assert_allclose(pxi, [-0.5, 0.5, 0.5, -0.5], atol=1e-10)
    np.testing.assert_allclose(peta, [-0.5, -0.5, 0.5, 0.5], atol=1e-10)
    outer = sky.tract_polygon(4, inner=False)
    np.testing.assert_allclose(sky.project(outer[:, 0], outer[:, 1])[0], [-0.5 - o, 0.5 + o, 0.5 + o, -0.5 - o],
                               atol=1e-10)


def test_default_io_and_validation(tmp_path):
    sky = default_skymap([359.9, 0.1, 0.0], [-10.0, -10.0, -10.1])
    assert sky.ra0 == pytest.approx(0.0, abs=1e-6) or sky.ra0 == pytest.approx(360.0, abs=1e-6)
    assert sky.n_tracts == 121 and sky.tract_size_deg == 1.0 and sky.tract_overlap_deg == pytest.approx(1 / 60)
    assert sky.tract_of(0.0, -10.03).tolist() == 60
    path = tmp_path / "skymap.json"
    write_skymap(sky, path)
    assert load_skymap(path) == sky
    assert pickle.loads(pickle.dumps(sky)) == sky
    path.write_text(json.dumps({"type": "simple", "ra0": 1.0, "dec0": 2.0, "n_tracts_per_side": 4}))
    with pytest.raises(ValueError, match="odd"):
        load_skymap(path)
    with pytest.raises(ValidationError):
        SimpleSkyMap(ra0=1.0, dec0=2.0, bogus=3)
    with pytest.raises(ValueError, match="no finite"):
        default_skymap([np.nan], [0.0])
