"""CalibrateTask's copy of the characterization flags (lsst-spec §6.1 step 9) on hand-made catalogs."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from visitcal.measurement.measure_ap_corr import PIXEL_BAD_FLAGS
from visitcal.tasks.calibrate import CalibrateConfig, CalibrateTask


def test_each_characterization_source_flags_its_nearest_target_within_3_px():
    task = CalibrateTask(CalibrateConfig(do_astrometry=False, do_photo_cal=False))
    cat = Table({"base_SdssCentroid_x": [10.0, 12.5, 50.0, 50.5, 80.0, 200.0],
                 "base_SdssCentroid_y": [10.0, 10.0, 50.0, 50.0, 80.0, 200.0],
                 "deblend_nChild": [0, 0, 2, 0, 0, 0],       # row 2 is a deblended parent: not a target
                 "sky_source": [False, False, False, False, True, False]})  # row 4: a sky source
    cat.meta["slots"] = {"Centroid": "base_SdssCentroid"}
    ic = Table({"base_SdssCentroid_x": [10.4, 50.1, 80.0, 203.5, np.nan],
                "base_SdssCentroid_y": [10.0, 50.0, 80.0, 200.0, 5.0],
                "calib_psf_candidate": [True, True, True, True, True],
                "calib_psf_used": [True, False, True, True, True],
                "calib_psf_reserved": [False, True, False, False, False]})
    ic.meta["slots"] = {"Centroid": "base_SdssCentroid"}
    task._copy_ic_source_fields(cat, ic)
    # ic 0 -> row 0 (0.4 px; row 1 is 2.1 px away), ic 1 -> row 3 (the parent at 0.1 px is not a target),
    # ic 2 -> nothing (only a sky source there), ic 3 -> nothing (3.5 px), ic 4 -> nothing (NaN)
    assert list(cat["calib_detected"]) == [True, False, False, True, False, False]
    assert list(cat["calib_psf_candidate"]) == [True, False, False, True, False, False]
    assert list(cat["calib_psf_used"]) == [True, False, False, False, False, False]
    assert list(cat["calib_psf_reserved"]) == [False, False, False, True, False, False]


def test_no_characterization_catalog_gives_false_flags():
    task = CalibrateTask(CalibrateConfig(do_astrometry=False, do_photo_cal=False))
    cat = Table({"base_SdssCentroid_x": [1.0], "base_SdssCentroid_y": [2.0]})
    task._copy_ic_source_fields(cat, None)
    assert not cat["calib_psf_used"][0] and not cat["calib_detected"][0]


def _normalisation_case(n=60, true_norm=1.01, seed=2):
    """Stars whose 12-px aperture flux is ``true_norm`` x their compensated tophat (0.1% noise), and an input map
    from a characterisation that found 1.02 (its catalog's annuli held more faint neighbours) with a PsfFlux
    correction of 0.99 measured against that."""
    from types import SimpleNamespace

    from visitcal.core.apcorr import ApCorrMap
    from visitcal.core.chebyshev import ChebyshevBoundedField
    from visitcal.core.geom import Box2I

    rng = np.random.default_rng(seed)
    box = Box2I(0, 0, 2047, 2047)
    flux = 10 ** rng.uniform(5, 6, n)
    cat = Table({"base_SdssCentroid_x": rng.uniform(0, 2047, n), "base_SdssCentroid_y": rng.uniform(0, 2047, n),
                 "base_PsfFlux_instFlux": flux, "base_PsfFlux_instFluxErr": flux / 500,
                 "base_CompensatedTophatFlux_12_instFlux": flux,
                 "base_CompensatedTophatFlux_12_instFluxErr": flux / 400,
                 "base_CompensatedTophatFlux_12_flag": np.zeros(n, bool),
                 "base_CircularApertureFlux_12_0_instFlux": flux * true_norm * (1 + 1e-3 * rng.standard_normal(n)),
                 "base_CircularApertureFlux_12_0_instFluxErr": flux * true_norm / 400,
                 "base_CircularApertureFlux_12_0_flag": np.zeros(n, bool),
                 "calib_psf_used": np.ones(n, bool),
                 # the normalisation's star selector: unresolved, unblended, no bad pixel flag
                 "base_ClassificationSizeExtendedness_value": np.zeros(n), "parent": np.zeros(n, np.int64),
                 "deblend_nChild": np.zeros(n, np.int32)})
    for flag in PIXEL_BAD_FLAGS:
        cat[flag] = np.zeros(n, bool)
    cat.meta["slots"] = {"Centroid": "base_SdssCentroid"}
    const = lambda v: ChebyshevBoundedField(box, np.array([[v]]))  # noqa: E731
    apc = ApCorrMap({"base_CompensatedTophatFlux_12_instFlux": const(1.02),
                     "base_CompensatedTophatFlux_12_instFluxErr": const(0.0),
                     "base_PsfFlux_instFlux": const(0.99), "base_PsfFlux_instFluxErr": const(0.002)})
    return cat, SimpleNamespace(bbox=box, ap_corr_map=apc)


def _measuring() -> CalibrateConfig:
    cfg = CalibrateConfig(do_astrometry=False, do_photo_cal=False)
    return cfg.model_copy(update={"normalized_calibration_flux": cfg.normalized_calibration_flux.model_copy(
        update={"do_measure_ap_corr": True})})


def test_calibration_flux_normalisation_is_measured_on_this_catalog():
    """Not LSST (an option for crowded fields): the normalisation of the compensated tophat is measured again on calibration's catalog (the
    normalisation's star selector: unresolved, unblended, unflagged, S/N > 50) and replaces the characterisation's; the flux corrections measured against the old
    calibration flux are scaled by the change (1.01 / 1.02), so that they correct to the new one."""
    cat, exposure = _normalisation_case()
    task = CalibrateTask(_measuring())
    metrics = {}
    task._normalize_calib_flux(exposure, cat, metrics)
    apc = exposure.ap_corr_map
    norm = apc["base_CompensatedTophatFlux_12_instFlux"].mean()
    assert norm == pytest.approx(1.01, abs=5e-4)  # 0.1% per star over 60 stars: ~1.5e-4
    assert apc["base_PsfFlux_instFlux"].mean() == pytest.approx(0.99 * norm / 1.02, rel=1e-12)
    assert metrics["calib_flux_normalization_change"] == pytest.approx(norm / 1.02, rel=1e-12)
    assert "degraded_reasons" not in metrics
    np.testing.assert_allclose(cat["base_NormalizedCompensatedTophatFlux_instFlux"],
                               cat["base_CompensatedTophatFlux_12_instFlux"] * norm, rtol=1e-12)


def test_calibration_flux_normalisation_falls_back_to_the_characterisation_visibly():
    cat, exposure = _normalisation_case()
    cat["base_ClassificationSizeExtendedness_value"] = 1.0  # no star to measure it on
    metrics = {}
    CalibrateTask(_measuring())._normalize_calib_flux(exposure, cat, metrics)
    assert exposure.ap_corr_map["base_CompensatedTophatFlux_12_instFlux"].mean() == 1.02
    assert exposure.ap_corr_map["base_PsfFlux_instFlux"].mean() == 0.99
    np.testing.assert_allclose(cat["base_NormalizedCompensatedTophatFlux_instFlux"],
                               cat["base_CompensatedTophatFlux_12_instFlux"] * 1.02, rtol=1e-12)
    (why,) = metrics["degraded_reasons"]
    assert why.startswith("calibration flux normalisation: the characterisation's, not measured again")
    # LSST's behaviour, the default: applied from the map, nothing recorded
    cat, exposure = _normalisation_case()
    metrics = {}
    CalibrateTask(CalibrateConfig(do_astrometry=False, do_photo_cal=False))._normalize_calib_flux(
        exposure, cat, metrics)
    assert exposure.ap_corr_map["base_CompensatedTophatFlux_12_instFlux"].mean() == 1.02 and metrics == {}
