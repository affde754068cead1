"""SingleFrameMeasurementTask: analytic truths through the whole driver, and bad sources that must come
out flagged with NaN values, one row each, never as an exception (issue 5)."""

import numpy as np
import pytest
from astropy.table import Table
from visitcal.core.footprint import Footprint, make_peaks
from visitcal.core.image import Exposure
from visitcal.measurement.plugins.aperture_flux import ApertureFluxConfig
from visitcal.psf.models import GaussianPsf
from visitcal.measurement.single_frame_measurement import (
    SingleFrameMeasurementConfig,
    SingleFrameMeasurementTask,
)

SIGMA = 2.0


def _disc(x, y, r, shape):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    fp = Footprint.from_mask((xx - x) ** 2 + (yy - y) ** 2 <= r * r)
    return Footprint(fp.spans, make_peaks([[int(round(x)), int(round(y))]], [1.0], [10.0]))


def _scene():
    psf = GaussianPsf(SIGMA, size=25, average_position=(100.0, 75.0))
    shape = (150, 200)
    image = np.zeros(shape)
    stars = [(50.3, 60.7, 1e4), (150.6, 40.2, 2e4), (1.2, 100.4, 5e3), (100.0, 110.0, 8e3), (160.0, 120.0, 6e3)]
    for x, y, f in stars:
        box = psf.compute_image_bbox(x, y)
        stamp = f * psf.compute_image(x, y)
        y0, x0 = max(box.min_y, 0), max(box.min_x, 0)
        y1, x1 = min(box.max_y + 1, shape[0]), min(box.max_x + 1, shape[1])
        image[y0:y1, x0:x1] += stamp[y0 - box.min_y:y1 - box.min_y, x0 - box.min_x:x1 - box.min_x]
    exp = Exposure.from_arrays(image.astype(np.float32), variance=np.full(shape, 4.0, np.float32), psf=psf)
    fps = [_disc(x, y, 12, shape) for x, y, _ in stars]
    return exp, stars, fps


def _table(n):
    return Table({"id": np.arange(1, n + 1, dtype=np.int64), "parent": np.zeros(n, np.int64)})


def test_isolated_gaussians_measure_exactly():
    exp, stars, fps = _scene()
    before = exp.image.copy()
    cat = SingleFrameMeasurementTask().run(_table(2), exp, fps[:2])
    np.testing.assert_array_equal(exp.image, before)  # noise replacement undone bit for bit
    for k, (x, y, f) in enumerate(stars[:2]):
        assert cat["base_SdssCentroid_x"][k] == pytest.approx(x, abs=1e-4)
        assert cat["base_SdssCentroid_y"][k] == pytest.approx(y, abs=1e-4)
        # the image is F times the PSF model: PSF flux is F (float32 pixels)
        assert cat["base_PsfFlux_instFlux"][k] == pytest.approx(f, rel=1e-6)
        assert cat["base_SdssShape_xx"][k] == pytest.approx(SIGMA**2, rel=1e-3)
        assert cat["base_SdssShape_psf_xx"][k] == pytest.approx(SIGMA**2, rel=1e-12)
        assert cat["base_GaussianFlux_instFlux"][k] == pytest.approx(f, rel=2e-3)
        assert cat["base_CircularApertureFlux_12_0_instFlux"][k] == pytest.approx(
            f * (1 - np.exp(-72 / SIGMA**2)), rel=2e-3)
        assert not cat["base_PsfFlux_flag"][k] and not cat["base_SdssCentroid_flag"][k]
        assert cat["base_ClassificationExtendedness_value"][k] == 0.0
    assert cat.meta["slots"]["Centroid"] == "base_SdssCentroid"
    assert cat.meta["slots"]["CalibFlux"] == "base_CircularApertureFlux_12_0"
    assert list(cat["base_FootprintArea_value"]) == [fp.area for fp in fps[:2]]


def test_bad_sources_are_flagged_with_nan_never_raised():
    exp, stars, fps = _scene()
    yy, xx = np.mgrid[0:150, 0:200]
    exp.mask.set("SAT", (xx - 100) ** 2 + (yy - 110) ** 2 <= 4)
    exp.image[120, 160] = np.nan
    empty = Footprint(np.zeros((0, 3), np.int32))
    fps = fps[:2] + [fps[2], fps[3], fps[4], empty]
    cat = SingleFrameMeasurementTask().run(_table(6), exp, fps)
    assert len(cat) == 6
    # edge star (x = 1.2): its PSF model and apertures are clipped
    assert cat["base_PixelFlags_flag_edge"][2] or cat["base_PsfFlux_flag_edge"][2]
    assert cat["base_CircularApertureFlux_12_0_flag"][2]
    assert np.isnan(cat["base_CircularApertureFlux_12_0_instFlux"][2])
    # saturated core
    assert cat["base_PixelFlags_flag_saturated"][3] and cat["base_PixelFlags_flag_saturatedCenter"][3]
    # NaN pixel on the source: the sums that include it are NaN and flagged
    assert cat["base_CircularApertureFlux_12_0_flag"][4]
    assert np.isnan(cat["base_CircularApertureFlux_12_0_instFlux"][4])
    assert cat["base_PsfFlux_flag"][4] and np.isnan(cat["base_PsfFlux_instFlux"][4])
    # zero-area footprint: every pixel plugin flags, values NaN
    for name in ("base_SdssCentroid", "base_PsfFlux", "base_SdssShape", "base_GaussianFlux",
                 "base_CircularApertureFlux_12_0", "base_LocalBackground"):
        assert cat[f"{name}_flag"][5], name
    for col in ("base_PsfFlux_instFlux", "base_SdssShape_xx", "base_CircularApertureFlux_12_0_instFlux"):
        assert np.isnan(cat[col][5]), col
    assert cat["base_FootprintArea_value"][5] == 0
    # the good stars are untouched by their bad neighbours
    assert cat["base_PsfFlux_instFlux"][0] == pytest.approx(stars[0][2], rel=1e-6)


def test_results_are_deterministic_and_seeded():
    exp, _, fps = _scene()
    rng = np.random.default_rng(3)
    exp.image[:] += rng.normal(0, 2, exp.image.shape).astype(np.float32)
    a = SingleFrameMeasurementTask().run(_table(5), exp, fps, exposure_id=12)
    b = SingleFrameMeasurementTask().run(_table(5), exp, fps, exposure_id=12)
    for col in a.colnames:
        np.testing.assert_array_equal(a[col], b[col])


def test_each_record_measures_as_if_alone_whatever_the_order():
    """measure_sources visits the records in a cache-friendly order of its own (bands of rows, serpentine in x;
    issue 25), which is allowed only because no record's result depends on the others having been measured:
    every record sees its own pixels and the fixed noise elsewhere. Each record measured alone, and all of them
    in a shuffled catalogue, give every column of the full run to the bit."""
    exp, _, fps = _scene()
    rng = np.random.default_rng(11)
    exp.image[:] += rng.normal(0, 2, exp.image.shape).astype(np.float32)
    n = len(fps)
    task = SingleFrameMeasurementTask()
    full = task.run(_table(n), exp, fps, exposure_id=5, noise_footprints=fps, noise_index=np.arange(n))
    measured = [c for c in full.colnames if c.startswith("base_")]
    assert len(measured) > 50
    for k in range(n):
        alone = task.run(_table(1), exp, [fps[k]], exposure_id=5, noise_footprints=fps, noise_index=np.array([k]))
        for col in measured:
            np.testing.assert_array_equal(np.asarray(alone[col]), np.asarray(full[col])[k:k + 1], err_msg=col)
    perm = rng.permutation(n)
    shuffled = task.run(_table(n), exp, [fps[k] for k in perm], exposure_id=5, noise_footprints=fps,
                        noise_index=perm)
    for col in measured:
        np.testing.assert_array_equal(np.asarray(shuffled[col]), np.asarray(full[col])[perm], err_msg=col)


def test_plugin_list_is_configurable_and_checked():
    exp, _, fps = _scene()
    cfg = SingleFrameMeasurementConfig(plugins=("base_SdssCentroid", "base_CircularApertureFlux"),
                                       circular_aperture_flux=ApertureFluxConfig(radii=(5.0,)))
    cat = SingleFrameMeasurementTask(cfg).run(_table(5), exp, fps)
    assert "base_CircularApertureFlux_5_0_instFlux" in cat.colnames
    assert "base_PsfFlux_instFlux" not in cat.colnames and "base_SdssShape_xx" not in cat.colnames
    with pytest.raises(ValueError, match="unknown measurement plugin"):
        SingleFrameMeasurementConfig(plugins=("base_Nope",))
    with pytest.raises(ValueError, match="needs base_SdssShape"):
        SingleFrameMeasurementConfig(plugins=("base_GaussianFlux",))
    with pytest.raises(ValueError, match="footprints has"):
        SingleFrameMeasurementTask().run(_table(4), exp, fps)


def test_input_centroids_and_caller_noise_footprints():
    """FinalizeCharacterization's mode: the input centroid is used (a PSF fit 1 px off the star's centre
    recovers exp(-d^2 / (4 sigma^2)) of a Gaussian's flux, analytically), and only the rows asked for are
    measured, from the original pixels of their noise footprint, the image restored bit for bit."""
    exp, stars, fps = _scene()
    cfg = SingleFrameMeasurementConfig(plugins=("base_PsfFlux", "base_CircularApertureFlux"),
                                       circular_aperture_flux=ApertureFluxConfig(radii=(12.0,)))
    rows = [0, 3]
    t = Table({"id": [1, 2], "parent": [0, 0]})
    x = np.array([stars[0][0], stars[3][0] + 1.0])   # star 3 measured 1 px off its centre
    y = np.array([stars[0][1], stars[3][1]])
    before = exp.image.copy()
    SingleFrameMeasurementTask(cfg).run(t, exp, [fps[k] for k in rows], centroids=(x, y),
                                        noise_footprints=fps, noise_index=np.array(rows))
    assert np.array_equal(exp.image, before)
    flux = np.asarray(t["base_PsfFlux_instFlux"])
    assert flux[0] == pytest.approx(stars[0][2], rel=1e-6)
    assert flux[1] == pytest.approx(stars[3][2] * np.exp(-1.0 / (4 * SIGMA**2)), rel=1e-4)
    # the aperture (12 px) holds the whole star; the other stars are outside it or replaced by noise
    assert t["base_CircularApertureFlux_12_0_instFlux"][0] == pytest.approx(stars[0][2], rel=1e-3)
    with pytest.raises(ValueError, match="noise_index"):
        SingleFrameMeasurementTask(cfg).run(t, exp, [fps[k] for k in rows], noise_footprints=fps)
    with pytest.raises(ValueError, match="centroids"):
        SingleFrameMeasurementTask(cfg).run(t, exp, [fps[k] for k in rows], centroids=(x[:1], y[:1]))


def test_a_block_of_absurd_pixels_is_flagged_suspect_not_an_ordinary_source():
    """Issue 22: a 100 x 100 block of 3e38 pixels was measured as an unflagged source of flux 9e39."""
    psf = GaussianPsf(SIGMA, size=25, average_position=(150.0, 150.0))
    shape = (300, 300)
    image = np.zeros(shape, np.float32)
    image[150:250, 150:250] = 3e38
    x, y, f = 60.3, 50.7, 1e4
    box = psf.compute_image_bbox(x, y)
    image[box.min_y:box.max_y + 1, box.min_x:box.max_x + 1] += f * psf.compute_image(x, y)
    exp = Exposure.from_arrays(image, variance=np.full(shape, 4.0, np.float32), psf=psf)
    yy, xx = np.mgrid[0:300, 0:300]
    block = Footprint(Footprint.from_mask((xx >= 145) & (xx < 255) & (yy >= 145) & (yy < 255)).spans,
                      make_peaks([[200, 200]], [3e38], [1e38]))
    cat = SingleFrameMeasurementTask().run(_table(2), exp, [_disc(x, y, 12, shape), block])
    suspect = exp.mask.test("SUSPECT")
    assert suspect.sum() == 100 * 100 and suspect[150:250, 150:250].all()  # exactly the block
    assert cat["base_PixelFlags_flag_suspect"][1] and cat["base_PixelFlags_flag_suspectCenterAll"][1]
    # the star beside it is an ordinary source, measured right
    assert not cat["base_PixelFlags_flag_suspect"][0] and not cat["base_PixelFlags_flag_suspectCenter"][0]
    assert cat["base_PsfFlux_instFlux"][0] == pytest.approx(f, rel=1e-5)


def test_the_suspect_level_is_configurable_and_bounded():
    exp, stars, fps = _scene()
    # peaks: 1e4 / (2 pi sigma^2) = 398 and 2e4 / (2 pi sigma^2) = 796: only the second star's core is beyond 500
    cfg = SingleFrameMeasurementConfig(suspect_level=500.0)
    cat = SingleFrameMeasurementTask(cfg).run(_table(2), exp, fps[:2])
    assert exp.mask.test("SUSPECT").sum() == (np.abs(exp.image) > 500.0).sum() > 0
    assert list(cat["base_PixelFlags_flag_suspectCenter"]) == [False, True]
    with pytest.raises(ValueError, match="suspect_level"):
        SingleFrameMeasurementConfig(suspect_level=1e39)


def test_mask_suspect_pixels_equals_the_whole_image_test_across_bands():
    """The band-by-band test marks exactly the pixels of |image| > level (NaN never), across band edges."""
    from visitcal.core.image import MaskedImage
    from visitcal.measurement.single_frame_measurement import mask_suspect_pixels

    rng = np.random.default_rng(4)
    image = rng.normal(0.0, 10.0, (700, 90)).astype(np.float32)
    image[rng.random(image.shape) < 0.002] = np.float32(3e30)
    image[250:262, 10:20] = np.float32(-2e31)  # a block across the first band edge (256)
    image[rng.random(image.shape) < 0.001] = np.nan
    mi = MaskedImage(image)
    n = mask_suspect_pixels(mi, 1e30)
    with np.errstate(invalid="ignore"):
        want = np.abs(image) > 1e30
    assert n == want.sum() > 120
    np.testing.assert_array_equal(mi.mask.test("SUSPECT"), want)
    clean = MaskedImage(rng.normal(0.0, 1.0, (300, 40)).astype(np.float32))
    assert mask_suspect_pixels(clean, 1e30) == 0 and not clean.mask.array.any()
