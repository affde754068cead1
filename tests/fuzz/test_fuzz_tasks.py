"""Fuzz: the per-source C++ batch entries driven by the tasks (SingleFrameMeasurementTask.run ->
measure_sources, SourceDeblendTask.run -> deblend_footprints, make_psf_candidates,
footprints_from_detected) and the Chebyshev field's constructor, on fuzzed scenes: a few stars on
noise, with NaN / inf / 1e308 pixels, random mask bits and variances, detected for real, then deblended,
measured and cut into PSF candidates. A typed exception or a result; the measurement restores the
image bit for bit and returns one row per source.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from hypothesis import given
from hypothesis import strategies as st

from visitcal.core.chebyshev import ChebyshevBoundedField
from visitcal.core.geom import Box2I
from visitcal.core.image import Exposure, MaskedImage
from visitcal.detection.detection import detect_footprints
from visitcal.measurement.deblend import SourceDeblendTask
from visitcal.measurement.single_frame_measurement import SingleFrameMeasurementTask
from visitcal.psf.candidates import make_psf_candidates
from visitcal.psf.models import GaussianPsf
from visitcal.tasks.finalize_characterization import footprints_from_detected

from ._fuzz import any_int, arrays2d, call, fuzz, gaussian_image, special_floats


@st.composite
def scenes(draw):
    ny, nx = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    img = rng.normal(0, 1, (ny, nx))
    for _ in range(draw(st.integers(0, 4))):
        img += gaussian_image((ny, nx), rng.uniform(-2, nx + 1), rng.uniform(-2, ny + 1), 1.5, rng.uniform(50, 5e3))
    for _ in range(draw(st.integers(0, 3))):
        img[rng.integers(ny), rng.integers(nx)] = draw(special_floats)
    var = np.ones((ny, nx))
    if draw(st.booleans()):
        var[rng.integers(ny), rng.integers(nx)] = draw(special_floats)
    mask = np.where(rng.random((ny, nx)) < 0.05, draw(st.sampled_from([1, 1 << 2, 1 << 8, -1])), 0).astype(np.int32)
    xy0 = draw(st.sampled_from([(0, 0), (-7, 13), (2**31 - 100, 0), (0, -2**31)]))
    with np.errstate(all="ignore"):  # 1e308 -> inf in float32, as intended
        mi = MaskedImage(img.astype(draw(st.sampled_from(["<f4", ">f8"]))), mask=mask, variance=var.astype(np.float32),
                         xy0=xy0)
    return Exposure(mi, psf=GaussianPsf(1.5))


@fuzz(30)
@given(exp=scenes(), id_start=st.one_of(st.integers(1, 100), any_int))
def test_detect_deblend_measure(exp, id_start):
    det = call(detect_footprints, exp.masked_image, 1.5)
    if not det.ok or det.value[0] is None:
        return
    fps = det.value[0]
    n = len(fps)
    src = Table({"id": np.arange(1, n + 1, dtype=np.int64), "parent": np.zeros(n, np.int64)})
    deb = call(SourceDeblendTask().run, exp, src, fps)
    before = exp.image.copy()
    meas = call(SingleFrameMeasurementTask().run, src.copy(), exp, list(fps))
    np.testing.assert_array_equal(exp.image, before)
    if meas.ok:
        assert len(meas.value) == n
    if deb.ok:
        res = deb.value
        meas2 = call(SingleFrameMeasurementTask().run, res.sources, exp, res.footprints)
        np.testing.assert_array_equal(exp.image, before)
        if meas2.ok:
            assert len(meas2.value) == len(res.sources)
    if meas.ok and n:
        t = meas.value
        cols = {"base_SdssCentroid_x": np.asarray(t["base_SdssCentroid_x"], float),
                "base_SdssCentroid_y": np.asarray(t["base_SdssCentroid_y"], float)}
        cands = call(make_psf_candidates, exp, cols, fps)
        if cands.ok:
            assert len(cands.value.image) <= n
        call(footprints_from_detected, exp, t)


@fuzz(40)
@given(coeffs=st.one_of(arrays2d(max_side=6), st.just(np.zeros((0, 0))), st.just(np.ones((65, 65)))),
       box=st.tuples(any_int, any_int, st.integers(-3, 200), st.integers(-3, 200)),
       x=st.one_of(st.floats(-10, 210), st.sampled_from([np.nan, np.inf, 1e308])))
def test_chebyshev_field(coeffs, box, x):
    bb = call(Box2I, box[0], box[1], box[0] + box[2], box[1] + box[3])
    if not bb.ok:
        return
    f = call(ChebyshevBoundedField, bb.value, coeffs)
    if f.ok:
        call(f.value.evaluate, np.array([x]), np.array([x]))
        if box[2] < 100 and box[3] < 100:
            call(f.value.evaluate_image)
