"""Snap combination (visitcal.detection.snap_combine, lsst-spec §5.3 step 1) against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from visitcal.core.image import Exposure, VisitInfo
from visitcal.detection.snap_combine import combine_snaps


def _snap(value, var, t=15.0, rn=6.0, shape=(20, 30)):
    e = Exposure.from_arrays(np.full(shape, value, np.float32), None, np.full(shape, var, np.float32),
                             visit_info=VisitInfo(id=7, band="r", exposure_time=t))
    e.metadata["RDNOISE"] = rn
    return e


def test_plain_sum_by_default():
    a, b = _snap(10.0, 4.0), _snap(12.0, 5.0, rn=8.0)
    a.mask.set("CR", np.eye(20, 30, dtype=bool))
    out = combine_snaps([a, b])
    np.testing.assert_array_equal(out.image, 22.0)
    np.testing.assert_array_equal(out.variance, 9.0)
    np.testing.assert_array_equal(out.mask.test("CR"), np.eye(20, 30, dtype=bool))  # OR-ed
    assert out.visit_info.exposure_time == 30.0 and out.metadata["RDNOISE"] == pytest.approx(10.0)
    one = _snap(1.0, 1.0)
    assert combine_snaps([one]) is one


def test_bad_planes_weighted_mean_times_two_and_edge():
    a, b = _snap(10.0, 4.0), _snap(12.0, 5.0)
    a.mask.set("CR", _at((20, 30), (3, 4)))
    b.mask.set("SAT", _at((20, 30), (5, 6)))
    a.mask.set("SAT", _at((20, 30), (7, 8)))
    b.mask.set("CR", _at((20, 30), (7, 8)))
    out = combine_snaps([a, b], ("CR", "SAT"))
    assert out.image[3, 4] == 24.0 and out.variance[3, 4] == 20.0  # only b: 2 x 12, 4 x 5
    assert out.image[5, 6] == 20.0 and out.variance[5, 6] == 16.0  # only a
    assert out.image[7, 8] == 0.0 and math.isinf(out.variance[7, 8]) and out.mask.test("EDGE")[7, 8]
    assert out.image[0, 0] == 22.0 and out.variance[0, 0] == 9.0 and not out.mask.test("EDGE")[0, 0]
    assert out.mask.test("EDGE").sum() == 1
    with pytest.raises(ValueError, match="bad_mask_planes"):
        combine_snaps([_snap(1.0, 1.0), _snap(1.0, 1.0)], ("NOT_A_PLANE",))


def test_bad_snap_sets_are_errors():
    with pytest.raises(ValueError, match="1 or 2 snaps, got 3"):
        combine_snaps([_snap(1.0, 1.0)] * 3)
    with pytest.raises(ValueError, match="differ in shape"):
        combine_snaps([_snap(1.0, 1.0), _snap(1.0, 1.0, shape=(20, 31))])
    with pytest.raises(ValueError, match="1 or 2 snaps, got 0"):
        combine_snaps([])


def _at(shape, yx):
    m = np.zeros(shape, bool)
    m[yx] = True
    return m


@pytest.mark.parametrize("bad", [(), ("CR", "SAT")])
def test_in_place_gives_the_same_sum_in_the_first_snaps_planes(bad):
    rng = np.random.default_rng(3)

    def pair():
        a, b = _snap(0.0, 1.0), _snap(0.0, 1.0, rn=8.0)
        for e in (a, b):
            e.image[...] = rng.normal(100.0, 10.0, e.image.shape).astype(np.float32)
            e.variance[...] = rng.uniform(1.0, 9.0, e.variance.shape).astype(np.float32)
        a.mask.set("CR", rng.random(a.image.shape) < 0.1)
        b.mask.set("SAT", rng.random(b.image.shape) < 0.1)
        return a, b

    state = rng.bit_generator.state
    ref = combine_snaps(list(pair()), bad)
    rng.bit_generator.state = state
    a, b = pair()
    planes = (a.image, a.mask.array, a.variance)
    out = combine_snaps([a, b], bad, in_place=True)
    # the same bits, held in the first snap's arrays (no third exposure)
    assert out.image is planes[0] and out.mask.array is planes[1] and out.variance is planes[2]
    np.testing.assert_array_equal(out.image.view(np.uint32), ref.image.view(np.uint32))
    np.testing.assert_array_equal(out.variance.view(np.uint32), ref.variance.view(np.uint32))
    np.testing.assert_array_equal(out.mask.array, ref.mask.array)
    assert out.visit_info.exposure_time == ref.visit_info.exposure_time
    assert out.metadata["RDNOISE"] == ref.metadata["RDNOISE"]
