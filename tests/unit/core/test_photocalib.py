"""PhotoCalib against hand-computed numbers (lsst-spec §2.5, afw at HEAD)."""

import math
import pickle

import numpy as np
import pytest
from astropy.table import Table

from visitcal.core.chebyshev import ChebyshevBoundedField
from visitcal.core.geom import Box2I
from visitcal.core.persistence import component_from_table, component_to_table
from visitcal.core.photocalib import (
    AB_ZERO_POINT_NJY,
    PhotoCalib,
    make_photo_calib_from_calib_zero_point,
)


def test_ab_constant_is_3631_jansky():
    # A source of 3631 Jy = 3.631e12 nJy has AB magnitude 0.
    pc = PhotoCalib(1.0)
    assert pc.instflux_to_magnitude(3.631e12) == pytest.approx(0.0, abs=1e-12)
    assert AB_ZERO_POINT_NJY == pytest.approx(31.4, abs=1e-4)


def test_zero_point_27_by_hand():
    # zp = 27: F0 = 10**10.8 counts for 0 mag, c = 3.631e12 / 10**10.8 = 57.54747... nJy/count.
    pc = PhotoCalib.from_zero_point(27.0)
    assert pc.calibration_mean == pytest.approx(3.631e12 / 10**10.8, rel=1e-14)
    assert pc.calibration_mean == pytest.approx(57.5474, rel=1e-5)
    assert pc.zero_point == pytest.approx(27.0, abs=1e-12)
    assert pc.instflux_at_zero_magnitude == pytest.approx(10**10.8, rel=1e-14)
    # 1000 counts: 57547.47 nJy and 27 - 7.5 = 19.5 mag.
    assert pc.instflux_to_nanojansky(1000.0) == pytest.approx(57547.47, rel=1e-6)
    assert pc.instflux_to_magnitude(1000.0) == pytest.approx(19.5, abs=1e-12)
    flux, flux_err = pc.instflux_to_nanojansky(1000.0, 10.0)
    assert flux_err == pytest.approx(575.4747, rel=1e-6)
    mag, mag_err = pc.instflux_to_magnitude(1000.0, 10.0)
    assert mag_err == pytest.approx(2.5 / math.log(10) * 0.01, rel=1e-14)  # 0.0108574
    assert pc.magnitude_to_instflux(19.5) == pytest.approx(1000.0, rel=1e-12)


def test_calibration_error_is_not_propagated_at_head():
    # afw since 2025-03: fluxErr = instFluxErr * c, whatever calibration_err is.
    pc = PhotoCalib(2.0, 0.5)
    assert pc.instflux_to_nanojansky(100.0, 3.0) == (200.0, 6.0)


def test_make_photo_calib_from_calib_zero_point():
    pc = make_photo_calib_from_calib_zero_point(1e10, 1e8)
    assert pc.calibration_mean == pytest.approx(363.1, rel=1e-14)
    assert pc.calibration_err == pytest.approx(3.631, rel=1e-14)


def test_non_positive_flux_has_nan_magnitude():
    pc = PhotoCalib(1.0)
    mags = pc.instflux_to_magnitude(np.array([-5.0, 0.0, 1.0]))
    assert np.isnan(mags[0]) and np.isnan(mags[1]) and mags[2] == pytest.approx(AB_ZERO_POINT_NJY)


def spatial_calib():
    box = Box2I(0, 0, 99, 49)
    # c(x, y) = 10 + 2 T_1(x') + 1 T_1(y'); mean over the box = 10.
    field = ChebyshevBoundedField(box, [[10.0, 2.0], [1.0, 0.0]])
    return PhotoCalib.from_field(field, 0.1)


def test_spatial_calibration_by_hand():
    pc = spatial_calib()
    assert not pc.is_constant and pc.calibration_mean == pytest.approx(10.0, abs=1e-14)
    # At (x, y) = (99.5, -0.5): x' = 1, y' = -1 -> c = 11; at the centre (49.5, 24.5) -> c = 10.
    assert pc.local_calibration(99.5, -0.5) == pytest.approx(11.0, abs=1e-13)
    assert pc.instflux_to_nanojansky(5.0, x=49.5, y=24.5) == pytest.approx(50.0, abs=1e-12)


def test_calibrate_catalog_columns_and_values():
    pc = spatial_calib()
    cat = Table({
        "base_SdssCentroid_x": [99.5, 49.5],
        "base_SdssCentroid_y": [-0.5, 24.5],
        "base_PsfFlux_instFlux": [100.0, 200.0],
        "base_PsfFlux_instFluxErr": [1.0, 2.0],
        "base_GaussianFlux_instFlux": [50.0, -1.0],
    })
    cat.meta["slots"] = {"Centroid": "base_SdssCentroid"}
    out = pc.calibrate_catalog(cat)
    np.testing.assert_allclose(out["base_PsfFlux_flux"], [1100.0, 2000.0], atol=1e-10)
    np.testing.assert_allclose(out["base_PsfFlux_fluxErr"], [11.0, 20.0], atol=1e-12)
    np.testing.assert_allclose(out["base_PsfFlux_mag"], AB_ZERO_POINT_NJY - 2.5 * np.log10([1100.0, 2000.0]), atol=1e-12)
    np.testing.assert_allclose(out["base_PsfFlux_magErr"], 2.5 / np.log(10) * 0.01, rtol=1e-14)
    assert "base_GaussianFlux_fluxErr" not in out.colnames and "base_GaussianFlux_magErr" not in out.colnames
    assert np.isnan(out["base_GaussianFlux_mag"][1])
    assert str(out["base_PsfFlux_flux"].unit) == "nJy"
    assert "base_PsfFlux_flux" not in cat.colnames  # the input is not modified


def test_calibrate_catalog_without_centroid_names_the_slot():
    pc = spatial_calib()
    cat = Table({"base_PsfFlux_instFlux": [1.0]})
    with pytest.raises(KeyError, match="slot_Centroid_x"):
        pc.calibrate_catalog(cat)


@pytest.mark.parametrize("make", [
    lambda: PhotoCalib(57.5, 0.3),
    lambda: PhotoCalib(1.25e-3, 0.0, bbox=Box2I(0, 0, 4071, 3999)),
    spatial_calib,
])
def test_persistence_and_pickle_are_lossless(make):
    pc = make()
    back = component_from_table(component_to_table(pc))
    assert back == pc
    assert back.calibration_mean == pc.calibration_mean and back.calibration_err == pc.calibration_err
    assert pickle.loads(pickle.dumps(pc)) == pc
    assert "PhotoCalib(" in repr(pc)


@pytest.mark.parametrize("mean,err", [(0.0, 0.0), (-1.0, 0.0), (np.nan, 0.0), (1.0, -0.1), (1.0, np.inf)])
def test_bad_calibration_values(mean, err):
    with pytest.raises(ValueError, match="calibration_"):
        PhotoCalib(mean, err)
