"""The crowding measure and the crowded-field switch (`visitcal.detection.crowding`, issue 21)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from astropy.io import fits
from pydantic import ValidationError
from visitcal.core.image import Exposure, MaskedImage
from visitcal.detection.crowding import (
    detected_fraction,
    is_crowded,
    measure_crowding,
    read_crowded_field,
    resolve_crowded_field,
    write_crowding_metadata,
)
from visitcal.psf.models import GaussianPsf
from visitcal.tasks.calibrate import CalibrateConfig, CalibrateTask
from visitcal.tasks.characterize_image import (
    CharacterizeImageConfig,
    CharacterizeImageTask,
    with_crowded_field_options,
)
from visitcal.tasks.finalize_characterization import (
    FinalizeCharacterizationConfig,
    FinalizeCharacterizationDetectorTask,
)

THRESHOLD = CharacterizeImageConfig().crowded_field_threshold


def test_detected_fraction_analytic():
    det = np.zeros((100, 200), bool)
    det[:10, :] = True  # 2000 of 20000 pixels
    assert detected_fraction(det) == pytest.approx(0.1)
    usable = np.ones_like(det)
    usable[50:, :] = False  # half the detector has no data: 2000 of 10000
    assert detected_fraction(det, usable) == pytest.approx(0.2)
    assert math.isnan(detected_fraction(det, np.zeros_like(det)))


def _star_field(n_stars: int, *, size: int = 512, sigma_psf: float = 1.7, noise: float = 10.0, seed: int = 3):
    """A background-subtracted exposure of ``n_stars`` Gaussian stars (peaks 20-100 sigma) on white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    img = rng.normal(0.0, noise, (size, size))
    for cx, cy, peak in zip(rng.uniform(5, size - 5, n_stars), rng.uniform(5, size - 5, n_stars),
                            rng.uniform(20, 100, n_stars) * noise):
        sl = (slice(max(0, int(cy) - 12), int(cy) + 13), slice(max(0, int(cx) - 12), int(cx) + 13))
        img[sl] += peak * np.exp(-0.5 * ((x[sl] - cx) ** 2 + (y[sl] - cy) ** 2) / sigma_psf ** 2)
    mi = MaskedImage(img.astype(np.float32), variance=np.full((size, size), noise ** 2, np.float32))
    return Exposure(mi, psf=GaussianPsf(sigma_psf, average_position=(size / 2, size / 2)))


@pytest.mark.parametrize("n_stars, crowded", [(20, False), (150, True)])
def test_measure_crowding_on_each_side_of_the_threshold(n_stars, crowded):
    exp = _star_field(n_stars)
    mask_before = exp.mask.array.copy()
    value = measure_crowding(exp)
    assert (value > THRESHOLD) is crowded
    assert 0.0 <= value <= 1.0
    np.testing.assert_array_equal(exp.mask.array, mask_before)  # the exposure is left as it was
    assert is_crowded("auto", value, THRESHOLD) is crowded
    assert is_crowded("on", value, THRESHOLD) is True
    assert is_crowded("off", value, THRESHOLD) is False


def test_measure_crowding_of_pure_noise_is_small():
    assert measure_crowding(_star_field(0)) < 0.01


def test_is_crowded_switch():
    assert is_crowded("auto", 0.081, 0.08) and not is_crowded("auto", 0.08, 0.08)
    assert not is_crowded("auto", math.nan, 0.08)
    assert is_crowded("on", 0.0, 0.08) and not is_crowded("off", 1.0, 0.08)
    with pytest.raises(ValueError, match="auto"):
        is_crowded("maybe", 0.5, 0.08)


def test_metadata_round_trip_and_downstream_decision():
    md = fits.Header()
    assert read_crowded_field(md) is None and resolve_crowded_field("auto", md) is False
    write_crowding_metadata(md, True, 0.1, 0.08)
    md2 = fits.Header.fromstring(md.tostring())  # as written to and read from a FITS file
    assert read_crowded_field(md2) is True
    assert md2["CROWDING"] == pytest.approx(0.1) and md2["CROWDING_THRESHOLD"] == pytest.approx(0.08)
    assert resolve_crowded_field("auto", md2) is True
    assert resolve_crowded_field("off", md2) is False
    assert resolve_crowded_field("on", None) is True
    write_crowding_metadata(md, False, math.nan, 0.08)
    assert read_crowded_field(md) is False and md["CROWDING"] == -1.0


def test_threshold_is_bounded():
    with pytest.raises(ValidationError):
        CharacterizeImageConfig(crowded_field_threshold=0.0)
    with pytest.raises(ValidationError):
        CharacterizeImageConfig(crowded_field_threshold=1.0)
    with pytest.raises(ValidationError):
        CharacterizeImageConfig(crowded_field="maybe")


def test_crowded_field_options():
    c = CharacterizeImageConfig()
    assert c.crowded_field == "auto" and c.background.source_mask_threshold is None
    assert not c.measure_ap_corr.aperture_excess.do_cut
    on = with_crowded_field_options(c)
    assert on.background.source_mask_threshold == 3.0
    assert on.measure_ap_corr.aperture_excess.do_cut
    assert on.normalized_calibration_flux.measure_ap_corr.aperture_excess.do_cut
    # "on" builds the task with them; "off" and "auto" keep the configuration as given
    assert CharacterizeImageTask(CharacterizeImageConfig(crowded_field="on")).config == on
    assert CharacterizeImageTask(CharacterizeImageConfig(crowded_field="off")).config.background.source_mask_threshold is None
    # an explicit source-masking threshold is kept
    mine = c.model_copy(update={"background": c.background.model_copy(update={"source_mask_threshold": 4.0})})
    assert with_crowded_field_options(mine).background.source_mask_threshold == 4.0

    cal = CalibrateTask(CalibrateConfig(crowded_field="on", do_astrometry=False, do_photo_cal=False)).config
    assert cal.normalized_calibration_flux.do_measure_ap_corr
    assert cal.normalized_calibration_flux.measure_ap_corr.aperture_excess.do_cut
    assert cal.photo_cal.aperture_excess.do_cut
    off = CalibrateTask(CalibrateConfig(do_astrometry=False, do_photo_cal=False)).config
    assert not off.normalized_calibration_flux.do_measure_ap_corr and not off.photo_cal.aperture_excess.do_cut

    fin = FinalizeCharacterizationConfig()
    assert fin.crowded_field == "auto" and not fin.measure_ap_corr.aperture_excess.do_cut
    task = FinalizeCharacterizationDetectorTask(fin)  # a crowded detector's aperture corrections: the cut
    assert task.crowded_measure_ap_corr.config.aperture_excess.do_cut
    assert not task.measure_ap_corr.config.aperture_excess.do_cut


def test_characterize_auto_switches_on_a_crowded_field_only():
    """The whole characterisation on the synthetic fields: the decision in the metadata and the exposure's cards,
    and the crowded one with the source-masked background (every layer)."""
    task = CharacterizeImageTask(CharacterizeImageConfig(psf_iterations=1, do_ap_corr=False))
    for n_stars, crowded in ((20, False), (150, True)):
        exp = _star_field(n_stars)
        exp.image[...] += 100.0  # a sky for the background to take
        res = task.run(exp)
        assert read_crowded_field(exp.metadata) is crowded
        assert exp.metadata["CROWDING_THRESHOLD"] == THRESHOLD
        assert res.metadata["crowded_field"] is crowded
        assert res.metadata["crowding"] == pytest.approx(exp.metadata["CROWDING"])
        assert res.metadata["crowding_threshold"] == THRESHOLD
        masking = [layer.config.source_mask_threshold for layer in res.background]
        assert masking == ([3.0] * len(masking) if crowded else [None] * len(masking))
        assert not any("crowd" in r for r in res.metadata.get("degraded_reasons", []))  # a mode, not a fallback
        # forced off: LSST's background on the crowded field too
        off = CharacterizeImageTask(CharacterizeImageConfig(psf_iterations=1, do_ap_corr=False, crowded_field="off"))
        exp = _star_field(n_stars)
        res = off.run(exp)
        assert res.metadata["crowded_field"] is False
        assert [layer.config.source_mask_threshold for layer in res.background] == [None] * len(res.background)
    pickle.loads(pickle.dumps(task))


def test_measure_crowding_restores_a_mask_with_every_plane_already_set():
    """The detection's planes are restored from one byte per pixel: bits set on entry (DETECTED from an earlier
    detection, EDGE from ISR, any other plane) come back exactly, and no other bit is touched."""
    exp = _star_field(60)
    rng = np.random.default_rng(11)
    exp.mask.array[...] = rng.integers(0, 1 << 12, exp.mask.array.shape, dtype=np.int32)
    bad = exp.mask.get_plane_bitmask("NO_DATA", "BAD", "SAT")  # usable pixels stay usable for the detection
    exp.mask.array[...] &= np.int32(~bad)
    before = exp.mask.array.copy()
    array = exp.mask.array
    measure_crowding(exp)
    assert exp.mask.array is array
    np.testing.assert_array_equal(exp.mask.array, before)


@pytest.mark.parametrize("no_data", [False, True])
def test_measure_crowding_counts_as_the_whole_plane_fraction(no_data):
    """The band-by-band count equals detected_fraction of the whole DETECTED and NO_DATA planes (a NO_DATA
    block across band edges), and the exposure's mask is left as it was."""
    from visitcal.detection.detection import SourceDetectionTask
    from visitcal.detection.crowding import _DETECTION

    exp = _star_field(150, size=600)
    if no_data:
        exp.mask.set("NO_DATA", np.pad(np.ones((300, 200), bool), ((200, 100), (250, 150))))
    before = exp.mask.array.copy()
    value = measure_crowding(exp)
    np.testing.assert_array_equal(exp.mask.array, before)
    SourceDetectionTask(_DETECTION).run(exp)
    usable = ~exp.mask.test("NO_DATA") if no_data else None
    assert value == detected_fraction(exp.mask.test("DETECTED"), usable) > 0.05
