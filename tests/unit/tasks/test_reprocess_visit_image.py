"""ReprocessVisitImageTask's calib-source cross-match: 0.2 arcsec on the sky (lsst-spec §7's unit slip
would make it 0.2 degrees, or 0.2 radians): a neighbour 0.3" away must not match, one 0.1" away must."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from visitcal.tasks.reprocess_visit_image import ReprocessVisitImageTask


def test_calib_match_radius_is_arcsec_on_the_sky():
    """Five sources 10" apart, each with a calib star offset on the sky by 0.1" (RA), 0.3" (RA), 0.19" (Dec),
    0.25" (Dec), 0.15" (RA). At Dec -60, 0.15" of sky is 0.3" of RA coordinate: a radius applied to the
    coordinates instead of the sky would miss it."""
    ra0, dec0 = 1.0, np.radians(-60.0)
    arcsec = np.radians(1 / 3600)
    dec_src = dec0 + 10 * arcsec * np.arange(5)
    src = Table({"coord_ra": np.full(5, ra0), "coord_dec": dec_src})
    d_ra = np.array([0.1, 0.3, 0.0, 0.0, 0.15]) * arcsec / np.cos(dec_src)
    d_dec = np.array([0.0, 0.0, 0.19, 0.25, 0.0]) * arcsec
    calib = Table({"coord_ra": ra0 + d_ra, "coord_dec": dec_src + d_dec, "calib_psf_candidate": [True] * 5,
                   "calib_psf_used": [True, True, True, True, False], "calib_psf_reserved": [False] * 4 + [True]})
    ReprocessVisitImageTask()._match_calib_sources(src, calib)
    assert list(src["calib_psf_candidate"]) == [True, False, True, False, True]
    assert list(src["calib_psf_used"]) == [True, False, True, False, False]
    assert list(src["calib_psf_reserved"]) == [False, False, False, False, True]
    assert not src["calib_photometry_used"].any() and not src["calib_astrometry_used"].any()


def test_no_calib_sources_gives_false_flags():
    src = Table({"coord_ra": [1.0], "coord_dec": [0.5]})
    ReprocessVisitImageTask()._match_calib_sources(src, None)
    assert not src["calib_psf_used"][0] and not src["calib_psf_reserved"][0]


def test_local_photo_calib_and_wcs_columns():
    from visitcal.core.photocalib import PhotoCalib
    from visitcal.tasks.reprocess_visit_image import _post_calculations
    from visitcal.core.wcs import make_tan_sip_wcs

    scale = 0.2 / 3600
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    wcs = make_tan_sip_wcs((100.0, 200.0), (150.0, 10.0), scale * np.array([[-c, s], [s, c]]))
    cat = Table({"base_SdssCentroid_x": [100.0, 300.0, np.nan], "base_SdssCentroid_y": [200.0, 50.0, 1.0]})
    cat.meta["slots"] = {"Centroid": "base_SdssCentroid"}
    _post_calculations(cat, PhotoCalib(57.5, 0.3), wcs)
    assert list(cat["base_LocalPhotoCalib"][:2]) == [57.5, 57.5] and np.isnan(cat["base_LocalPhotoCalib"][2])
    assert cat["base_LocalPhotoCalibErr"][0] == 0.3
    # at the reference pixel the local CD matrix is the WCS's CD, in radians
    np.testing.assert_allclose([[cat[f"base_LocalWcs_CDMatrix_{i}_{j}"][0] for j in (1, 2)] for i in (1, 2)],
                               np.radians(scale * np.array([[-c, s], [s, c]])), rtol=1e-6)


def test_bad_inputs_are_clear_errors():
    import pytest
    from visitcal.detection.background import BackgroundConfig, BackgroundList, make_background
    from visitcal.core.image import Exposure
    from visitcal.core.photocalib import PhotoCalib
    from visitcal.psf.models import GaussianPsf
    from visitcal.core.wcs import make_tan_sip_wcs

    rng = np.random.default_rng(1)

    def snap(shape=(128, 128)):
        return Exposure.from_arrays(rng.normal(100, 5, shape).astype(np.float32), None,
                                    np.full(shape, 25, np.float32))

    bg = BackgroundList([make_background(snap().masked_image, BackgroundConfig(bin_size=64))])
    kw = dict(psf=GaussianPsf(1.5), ap_corr={}, photo_calib=PhotoCalib(10.0), background=bg,
              wcs=make_tan_sip_wcs((64, 64), (10.0, 0.0), np.diag([-5e-5, 5e-5])))
    task = ReprocessVisitImageTask()
    with pytest.raises(ValueError, match="1 or 2 snaps, got 3"):
        task.run(exposures=[snap(), snap(), snap()], **kw)
    with pytest.raises(ValueError, match="differ in shape"):
        task.run(exposures=[snap(), snap((128, 120))], **kw)
    other = BackgroundList([make_background(snap((96, 128)).masked_image, BackgroundConfig(bin_size=64))])
    with pytest.raises(ValueError, match="background: layer 0 was fitted on"):
        task.run(exposures=[snap()], **{**kw, "background": other})
    with pytest.raises(ValueError, match="psf is None"):
        task.run(exposures=[snap()], **{**kw, "psf": None})


def _remove_initial_kw():
    from visitcal.core.apcorr import ApCorrMap
    from visitcal.core.photocalib import PhotoCalib
    from visitcal.psf.models import GaussianPsf
    from visitcal.core.wcs import make_tan_sip_wcs

    return dict(psf=GaussianPsf(1.5), ap_corr=ApCorrMap(), photo_calib=PhotoCalib(10.0),
                wcs=make_tan_sip_wcs((48, 48), (10.0, 0.0), np.diag([-5e-5, 5e-5])))


def _snaps_with_stars(rng, shape=(96, 96), sky=50.0):
    """Two post-ISR snaps in counts: a sky of ``sky`` counts, Gaussian noise and a few Gaussian stars."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    stars = np.zeros(shape)
    for x0, y0, flux in ((20.3, 30.7, 4000.0), (70.1, 60.4, 9000.0), (50.0, 15.2, 2500.0)):
        stars += flux / (2 * np.pi * 1.5**2) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5**2))
    return [(sky + stars / 2 + rng.normal(0, 5, shape)).astype(np.float32) for _ in range(2)]


def _exposure(image, variance):
    from visitcal.core.image import Exposure

    return Exposure.from_arrays(np.array(image, np.float32), None, np.array(variance, np.float32))


def test_remove_initial_photo_calib_matches_the_plain_path():
    """LSST's remove_initial_photo_calib (lsst-spec §5.3 steps 4-6): the post-ISR snaps are in counts, the
    preliminary background is in nJy (calibrateImage ran with do_calibrate_pixels=True, initial PhotoCalib
    c = 57.3 nJy/count). Calibrating the snaps with c, subtracting the nJy background and dividing by c must give
    the plain path's image (counts snaps, counts background) to float precision.

    (This replaces ``test_remove_initial_photo_calib_returns_to_counts``, which encoded the old order: it fed
    snaps already in nJy and subtracted the background before any calibration.)"""
    from visitcal.detection.background import BackgroundConfig, BackgroundList, make_background
    from visitcal.core.photocalib import PhotoCalib
    from visitcal.tasks.reprocess_visit_image import ReprocessVisitImageConfig

    rng = np.random.default_rng(2)
    snaps = _snaps_with_stars(rng)
    var = np.full(snaps[0].shape, 25, np.float32)
    c = 57.3
    prelim_counts = snaps[0] + snaps[1]
    bcfg = BackgroundConfig(bin_size=32)
    bg_counts = BackgroundList([make_background(_exposure(prelim_counts, 2 * var).masked_image, bcfg)])
    # the preliminary image and its background in nJy, as calibrateImage with do_calibrate_pixels=True writes
    bg_njy = BackgroundList([make_background(_exposure(prelim_counts * c, 2 * var * c * c).masked_image, bcfg)])
    np.testing.assert_allclose(bg_njy.get_image(np.float64) / c, bg_counts.get_image(np.float64), rtol=1e-5)
    kw = _remove_initial_kw()
    cfg = ReprocessVisitImageConfig(do_calibrate_pixels=False, do_repair=False)
    # the task works in place on its snaps (as LSST's): each run gets its own arrays
    a = ReprocessVisitImageTask(cfg).run(exposures=[_exposure(s, var) for s in snaps], background=bg_counts, **kw)
    b = ReprocessVisitImageTask(cfg.model_copy(update={"remove_initial_photo_calib": True})).run(
        exposures=[_exposure(s, var) for s in snaps], background=bg_njy, initial_photo_calib=PhotoCalib(c), **kw)
    # pixels reach ~900 counts: float32 rounding of image * c / c and of the nJy background fit
    np.testing.assert_allclose(b.exposure.image, a.exposure.image, rtol=0, atol=2e-3)
    np.testing.assert_allclose(b.exposure.variance, a.exposure.variance, rtol=1e-6)
    assert abs(float(np.median(b.exposure.image))) < 1.0
    # the same sources are found and measured alike
    assert len(b.sources) == len(a.sources) >= 3
    np.testing.assert_allclose(b.sources["base_PsfFlux_instFlux"], a.sources["base_PsfFlux_instFlux"], rtol=1e-5)


def test_remove_initial_photo_calib_constant_sky_known_answer():
    """Hand-built: two snaps of a constant 50-count sky (100 counts combined), initial calibration 5 nJy/count,
    so the preliminary background is a constant 500 nJy. LSST: (100 * 5 - 500) / 5 = 0 everywhere; the old order
    ((100 - 500) / 5) gave -80. The variance 2 * 4 counts^2 comes back as 8 counts^2 (* 25 / 25)."""
    from visitcal.detection.background import BackgroundConfig, BackgroundList, make_background
    from visitcal.core.photocalib import PhotoCalib
    from visitcal.tasks.reprocess_visit_image import ReprocessVisitImageConfig

    shape = (64, 64)
    snaps = [np.full(shape, 50.0, np.float32)] * 2
    var = np.full(shape, 4.0, np.float32)
    bg_njy = BackgroundList([make_background(_exposure(np.full(shape, 500.0), np.full(shape, 200.0)).masked_image,
                                             BackgroundConfig(bin_size=32))])
    np.testing.assert_allclose(bg_njy.get_image(np.float64), 500.0, rtol=1e-6)
    cfg = ReprocessVisitImageConfig(do_calibrate_pixels=False, do_repair=False, remove_initial_photo_calib=True)
    out = ReprocessVisitImageTask(cfg).run(exposures=[_exposure(s, var) for s in snaps], background=bg_njy,
                                           initial_photo_calib=PhotoCalib(5.0), **_remove_initial_kw())
    assert float(np.median(out.exposure.image)) == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(out.exposure.image, 0.0, atol=1e-3)
    np.testing.assert_allclose(out.exposure.variance, 8.0, rtol=1e-6)


def test_remove_initial_photo_calib_spatially_varying():
    """A spatially varying initial calibration c(x, y) (a Chebyshev field): the result is
    (snaps * c(x, y) - background_nJy) / mean(c), with c evaluated here independently from the afw definition
    (x' = (2x - (xmin + xmax)) / W on the box's continuous edges) and the variance (var * c^2) / mean^2."""
    from numpy.polynomial import chebyshev as C
    from visitcal.core.chebyshev import ChebyshevBoundedField
    from visitcal.core.geom import Box2I
    from visitcal.detection.background import BackgroundConfig, BackgroundList, make_background
    from visitcal.core.photocalib import PhotoCalib
    from visitcal.tasks.reprocess_visit_image import ReprocessVisitImageConfig

    rng = np.random.default_rng(5)
    shape = (96, 96)
    snaps = _snaps_with_stars(rng, shape)
    var = np.full(shape, 25, np.float32)
    coeffs = np.array([[60.0, 3.0, -1.0], [2.0, 0.5, 0.0], [-1.5, 0.0, 0.0]])  # [order_y + 1, order_x + 1]
    box = Box2I(0, 0, shape[1] - 1, shape[0] - 1)
    initial = PhotoCalib.from_field(ChebyshevBoundedField(box, coeffs))
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    xp = (2 * xx - (-0.5 + shape[1] - 0.5)) / shape[1]
    yp = (2 * yy - (-0.5 + shape[0] - 0.5)) / shape[0]
    c = C.chebval2d(yp, xp, coeffs)  # sum a_ij T_i(y') T_j(x'), a indexed [y, x]
    counts = snaps[0].astype(np.float64) + snaps[1]
    bg_njy = BackgroundList([make_background(_exposure(counts * c, 2 * var * c * c).masked_image,
                                             BackgroundConfig(bin_size=32))])
    mean = initial.calibration_mean
    expected = (counts * c - bg_njy.get_image(np.float64)) / mean
    cfg = ReprocessVisitImageConfig(do_calibrate_pixels=False, do_repair=False, remove_initial_photo_calib=True)
    out = ReprocessVisitImageTask(cfg).run(exposures=[_exposure(s, var) for s in snaps], background=bg_njy,
                                           initial_photo_calib=initial, **_remove_initial_kw())
    np.testing.assert_allclose(out.exposure.image, expected, rtol=0, atol=2e-3)
    np.testing.assert_allclose(out.exposure.variance, 2 * 25 * c * c / mean**2, rtol=1e-5)


def test_spike_planes_and_sky_correction():
    """lsst-spec §5.3 steps 0 and 2: the preliminary mask's SPIKE bits are OR-ed into the combined snaps' mask
    (other planes are not copied), and with do_use_sky_corr the sky-correction layers are subtracted after the
    background's and returned with them."""
    import pytest
    from visitcal.core.apcorr import ApCorrMap
    from visitcal.detection.background import BackgroundConfig, BackgroundList, make_background
    from visitcal.core.image import Exposure, Mask
    from visitcal.core.photocalib import PhotoCalib
    from visitcal.psf.models import GaussianPsf
    from visitcal.tasks.reprocess_visit_image import ReprocessVisitImageConfig
    from visitcal.core.wcs import make_tan_sip_wcs

    rng = np.random.default_rng(3)
    shape = (96, 96)
    counts = rng.normal(100, 5, shape).astype(np.float32)

    def snap():
        return Exposure.from_arrays(counts.copy(), None, np.full(shape, 25, np.float32))

    prelim = Mask(shape=shape)
    prelim.add_plane("SPIKE", "diffraction spike of a bright star")
    spike = np.zeros(shape, bool)
    spike[40:44, 10:80] = True
    prelim.set("SPIKE", spike)
    prelim.set("CR", np.eye(96, dtype=bool))  # not in copy_mask_planes: stays behind
    bg = BackgroundList([make_background(snap().masked_image, BackgroundConfig(bin_size=32))])
    flat = snap()
    flat.image[...] = 2.5
    sky = BackgroundList([make_background(flat.masked_image, BackgroundConfig(bin_size=32))])
    kw = dict(psf=GaussianPsf(1.5), ap_corr=ApCorrMap(), photo_calib=PhotoCalib(10.0), background=bg,
              wcs=make_tan_sip_wcs((48, 48), (10.0, 0.0), np.diag([-5e-5, 5e-5])))
    cfg = ReprocessVisitImageConfig(do_calibrate_pixels=False, do_repair=False)
    base = ReprocessVisitImageTask(cfg).run(exposures=[snap()], **kw)
    r = ReprocessVisitImageTask(cfg.model_copy(update={"do_use_sky_corr": True})).run(
        exposures=[snap()], preliminary_mask=prelim, sky_corr=sky, **kw)
    np.testing.assert_array_equal(r.exposure.mask.test("SPIKE"), spike)
    assert not r.exposure.mask.test("CR")[np.eye(96, dtype=bool) & ~spike].any()
    assert "SPIKE" not in base.exposure.mask.planes or not base.exposure.mask.test("SPIKE").any()
    np.testing.assert_allclose(r.exposure.image, base.exposure.image - 2.5, rtol=0, atol=2e-5)
    assert len(r.background) == 2
    with pytest.raises(ValueError, match="do_use_sky_corr is set but sky_corr is None"):
        ReprocessVisitImageTask(cfg.model_copy(update={"do_use_sky_corr": True})).run(exposures=[snap()], **kw)
    with pytest.raises(ValueError, match="preliminary_mask has shape"):
        ReprocessVisitImageTask(cfg).run(exposures=[snap()], preliminary_mask=Mask(shape=(90, 96)), **kw)


def test_tune_allocator_switch(monkeypatch):
    """The CLI's allocator setting: applied on glibc Linux, never with VISITCAL_NO_MALLOPT=1."""
    import sys

    from visitcal.pipeline.runner import tune_allocator

    monkeypatch.setenv("VISITCAL_NO_MALLOPT", "1")
    assert tune_allocator() is False
    monkeypatch.delenv("VISITCAL_NO_MALLOPT")
    applied = tune_allocator()
    assert isinstance(applied, bool)
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert applied
