"""ApplyApCorrTask (lsst-spec §4.9) and NormalizedCalibrationFluxTask (§5.3 step 8.7, §6.4) on hand-made
catalogs whose every value is worked out below."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from visitcal.core.apcorr import ApCorrMap
from visitcal.measurement.apply_ap_corr import ApplyApCorrConfig, ApplyApCorrTask, NormalizedCalibrationFluxConfig, \
    NormalizedCalibrationFluxTask
from visitcal.core.chebyshev import ChebyshevBoundedField
from visitcal.core.geom import Box2I
from visitcal.core.image import Exposure
from visitcal.measurement.measure_ap_corr import PIXEL_BAD_FLAGS, MeasureApCorrConfig
from visitcal.measurement.source_selector import RequireFlags, ScienceSourceSelectorConfig, SignalToNoiseLimit

BOX = Box2I(0, 0, 99, 99)  # continuous x in [-0.5, 99.5]: x' = (2x - 99) / 100


def _catalog():
    t = Table({"id": np.arange(1, 5, dtype=np.int64),
               "base_SdssCentroid_x": [24.5, 74.5, np.nan, -200.5],   # x' = -0.5, 0.5, NaN, -5
               "base_SdssCentroid_y": [10.0, 20.0, 30.0, 40.0],
               "base_PsfFlux_instFlux": [100.0, 200.0, 300.0, 400.0],
               "base_PsfFlux_instFluxErr": [1.0, 2.0, 3.0, 4.0],
               "base_PsfFlux_flag": [False, True, False, False],
               "base_GaussianFlux_instFlux": [10.0, 20.0, 30.0, 40.0],
               "base_GaussianFlux_instFluxErr": [1.0, 1.0, 1.0, 1.0],
               "base_GaussianFlux_flag": [False, False, False, False]})
    t.meta["slots"] = {"Centroid": "base_SdssCentroid"}
    return t


def _map():
    # a(x) = 1 + 0.2 x': 0.9, 1.1, NaN (no centroid), 0.0 (not > 0)
    m = ApCorrMap()
    m["base_PsfFlux_instFlux"] = ChebyshevBoundedField(BOX, [[1.0, 0.2]])
    m["base_PsfFlux_instFluxErr"] = ChebyshevBoundedField(BOX, [[0.01]])
    m["base_CircularApertureFlux_12_0_instFlux"] = ChebyshevBoundedField(BOX, [[2.0]])  # not registered: ignored
    return m


def test_values_and_flags_as_lsst():
    cat = ApplyApCorrTask().run(_catalog(), _map())
    np.testing.assert_allclose(cat["base_PsfFlux_instFlux"], [90.0, 220.0, 300.0, 400.0])
    np.testing.assert_allclose(cat["base_PsfFlux_instFluxErr"], [0.9, 2.2, 3.0, 4.0])  # naive: err * a
    np.testing.assert_array_equal(cat["base_PsfFlux_flag_apCorr"], [False, False, True, True])
    # failures set the flux flag; corrected rows get their own flag back
    np.testing.assert_array_equal(cat["base_PsfFlux_flag"], [False, True, True, True])
    # visitcal writes the correction (LSST HEAD leaves NaN, lsst-spec §7.1); aErr = 0 in naive mode
    np.testing.assert_allclose(cat["base_PsfFlux_apCorr"], [0.9, 1.1, np.nan, 0.0], atol=1e-12)
    np.testing.assert_array_equal(cat["base_PsfFlux_apCorrErr"], [0.0, 0.0, 0.0, 0.0])
    # no map entry: every row flagged, fluxes untouched, columns NaN
    np.testing.assert_array_equal(cat["base_GaussianFlux_flag_apCorr"], [True] * 4)
    np.testing.assert_array_equal(cat["base_GaussianFlux_instFlux"], [10.0, 20.0, 30.0, 40.0])
    np.testing.assert_array_equal(cat["base_GaussianFlux_flag"], [False] * 4)
    assert np.isnan(cat["base_GaussianFlux_apCorr"]).all()
    assert "base_CircularApertureFlux_12_0_apCorr" not in cat.colnames


def test_ignore_list_and_no_failure_flags():
    cat = ApplyApCorrTask(ApplyApCorrConfig(ignore_list=("base_GaussianFlux",), do_flag_ap_corr_failures=False)
                          ).run(_catalog(), _map())
    assert "base_GaussianFlux_apCorr" not in cat.colnames
    np.testing.assert_array_equal(cat["base_PsfFlux_flag"], [False, True, False, False])
    with pytest.raises(TypeError, match="ApCorrMap"):
        ApplyApCorrTask().run(_catalog(), {"base_PsfFlux_instFlux": None})


def _norm_catalog(n=50, seed=2):
    rng = np.random.default_rng(seed)
    raw = rng.uniform(1e5, 1e6, n)
    t = Table({"id": np.arange(1, n + 1, dtype=np.int64),
               "base_SdssCentroid_x": rng.uniform(0, 99, n), "base_SdssCentroid_y": rng.uniform(0, 99, n),
               "base_CompensatedTophatFlux_12_instFlux": raw, "base_CompensatedTophatFlux_12_instFluxErr": raw / 500,
               "base_CompensatedTophatFlux_12_flag": np.zeros(n, bool),
               "base_CircularApertureFlux_12_0_instFlux": raw * 1.05 * (1 + 1e-3 * rng.standard_normal(n)),
               "base_CircularApertureFlux_12_0_instFluxErr": raw / 500,
               "base_CircularApertureFlux_12_0_flag": np.zeros(n, bool),
               "base_PsfFlux_instFlux": raw, "base_PsfFlux_instFluxErr": raw / 300,
               "calib_psf_used": np.ones(n, bool),
               # the default selector's columns: unresolved by size, not deblended, no bad pixel
               "base_ClassificationSizeExtendedness_value": np.zeros(n), "parent": np.zeros(n, np.int64),
               "deblend_nChild": np.zeros(n, np.int32),
               **{flag: np.zeros(n, bool) for flag in PIXEL_BAD_FLAGS}})
    t["base_CompensatedTophatFlux_12_flag"][3] = True
    t.meta["slots"] = {"Centroid": "base_SdssCentroid", "CalibFlux": "base_CircularApertureFlux_12_0"}
    return t


def test_normalization_measured_and_applied():
    exp = Exposure.from_arrays(np.zeros((100, 100), np.float32))
    cat = _norm_catalog()
    apc = NormalizedCalibrationFluxTask().run(exposure=exp, catalog=cat).ap_corr_map
    assert list(apc) == ["base_CompensatedTophatFlux_12_instFlux", "base_CompensatedTophatFlux_12_instFluxErr"]
    field = apc["base_CompensatedTophatFlux_12_instFlux"]
    assert field.coefficients.shape == (1, 1)  # order 0
    assert field.evaluate(50.0, 50.0) == pytest.approx(1.05, abs=5e-4)
    assert apc["base_CompensatedTophatFlux_12_instFluxErr"].evaluate(0.0, 0.0) == 0.0
    c = field.evaluate(50.0, 50.0)
    np.testing.assert_allclose(cat["base_NormalizedCompensatedTophatFlux_instFlux"],
                               cat["base_CompensatedTophatFlux_12_instFlux"] * c, rtol=1e-15)
    np.testing.assert_allclose(cat["base_NormalizedCompensatedTophatFlux_instFluxErr"],
                               cat["base_CompensatedTophatFlux_12_instFluxErr"] * c, rtol=1e-15)
    assert np.flatnonzero(cat["base_NormalizedCompensatedTophatFlux_flag"]).tolist() == [3]
    assert cat.meta["slots"]["CalibFlux"] == "base_NormalizedCompensatedTophatFlux"

    # apply mode: the exposure's map gives the field; without it, factor 1
    exp.ap_corr_map = ApCorrMap({"base_CompensatedTophatFlux_12_instFlux": ChebyshevBoundedField(BOX, [[-1.0]])})
    cfg = NormalizedCalibrationFluxConfig(do_measure_ap_corr=False)
    cat2 = _norm_catalog()
    NormalizedCalibrationFluxTask(cfg).run(exposure=exp, catalog=cat2)
    np.testing.assert_array_equal(cat2["base_NormalizedCompensatedTophatFlux_instFlux"],
                                  -cat2["base_CompensatedTophatFlux_12_instFlux"])
    assert np.asarray(cat2["base_NormalizedCompensatedTophatFlux_flag"]).all()  # c <= 0
    exp.ap_corr_map = None
    cat3 = _norm_catalog()
    NormalizedCalibrationFluxTask(cfg).run(exposure=exp, catalog=cat3)
    np.testing.assert_array_equal(cat3["base_NormalizedCompensatedTophatFlux_instFlux"],
                                  cat3["base_CompensatedTophatFlux_12_instFlux"])


def test_normalization_falls_back_to_the_median_ratio():
    exp = Exposure.from_arrays(np.zeros((100, 100), np.float32))
    cat = _norm_catalog(n=5)
    cat["base_ClassificationSizeExtendedness_value"][1:] = 1.0  # one star left: MeasureApCorr fails
    field = NormalizedCalibrationFluxTask().run(exposure=exp, catalog=cat).ap_corr_map[
        "base_CompensatedTophatFlux_12_instFlux"]
    ratio = cat["base_CircularApertureFlux_12_0_instFlux"][0] / cat["base_CompensatedTophatFlux_12_instFlux"][0]
    assert field.evaluate(1.0, 1.0) == pytest.approx(ratio, rel=1e-14)


def _noisy_norm_catalog(c_true=1.02, n=40, seed=7):
    """A sparse field's stars: the ratio circular-12 / compensated-tophat is ``c_true`` for every star plus noise
    of the stated error, ``sigma_i = 2e-3 (3e5 / raw_i)`` (the background-limited annulus: relative error
    inversely proportional to the flux); the faint half (raw < 3e5) also carries +2% of neighbour light in the
    12-px aperture (a bias no error bar covers). Returns the catalog and the inverse-variance weighted mean's
    standard error over the bright stars."""
    rng = np.random.default_rng(seed)
    raw = 10 ** rng.uniform(4.5, 6.3, n)
    sigma = 2e-3 * (3e5 / raw)
    ratio = c_true * (1 + sigma * rng.standard_normal(n)) * np.where(raw < 3e5, 1.02, 1.0)
    t = _norm_catalog(n=n, seed=seed)
    t["base_CompensatedTophatFlux_12_flag"][:] = False
    t["base_CompensatedTophatFlux_12_instFlux"] = raw
    t["base_CompensatedTophatFlux_12_instFluxErr"] = raw * sigma / np.sqrt(2)
    t["base_CircularApertureFlux_12_0_instFlux"] = raw * ratio
    t["base_CircularApertureFlux_12_0_instFluxErr"] = raw * ratio * sigma / np.sqrt(2)
    t["base_PsfFlux_instFlux"] = raw
    t["base_PsfFlux_instFluxErr"] = raw * sigma / 3  # PSF-flux S/N = 3 / sigma >= 158: every star selected
    bright = raw >= 3e5
    return t, float(1 / np.sqrt(np.sum(1 / sigma[bright] ** 2)))


def test_normalization_is_inverse_variance_weighted():
    """The default normalisation weights each star by its ratio's error, so the bright stars set it: within
    4 standard errors of the truth, where LSST's unweighted fit on the same stars (median of the ratios) is
    pulled ~1% off by the faint stars' neighbour light."""
    exp = Exposure.from_arrays(np.zeros((100, 100), np.float32))
    cat, stderr = _noisy_norm_catalog()
    c = NormalizedCalibrationFluxTask().run(exposure=exp, catalog=cat).ap_corr_map[
        "base_CompensatedTophatFlux_12_instFlux"].evaluate(50.0, 50.0)
    assert abs(c / 1.02 - 1) < 4 * stderr
    assert stderr < 1e-3  # ~0.5 mmag: the test can tell 1 mmag
    lsst = NormalizedCalibrationFluxConfig(measure_ap_corr=MeasureApCorrConfig(
        ref_flux_name="base_CircularApertureFlux_12_0", fit_weighted=False,
        fit_config=NormalizedCalibrationFluxConfig().measure_ap_corr.fit_config,
        source_selector=ScienceSourceSelectorConfig(
            do_flags=True, do_signal_to_noise=True, flags=RequireFlags(good=("calib_psf_used",)),
            signal_to_noise=SignalToNoiseLimit(flux_field="base_PsfFlux_instFlux",
                                               err_field="base_PsfFlux_instFluxErr", minimum=50.0))))
    cat2, _ = _noisy_norm_catalog()
    c_lsst = NormalizedCalibrationFluxTask(lsst).run(exposure=exp, catalog=cat2).ap_corr_map[
        "base_CompensatedTophatFlux_12_instFlux"].evaluate(50.0, 50.0)
    assert abs(c_lsst / 1.02 - 1) > 5e-3
