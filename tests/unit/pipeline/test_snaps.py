"""read_summed_snaps (visitcal.pipeline.snaps): two snap files summed with one exposure and one plane held."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from visitcal.core.image import Exposure, VisitInfo
from visitcal.detection.snap_combine import combine_snaps
from visitcal.io import read_exposure, write_exposure
from visitcal.io.fits import ExposureFitsReader
from visitcal.pipeline.snaps import read_summed_snaps

SHAPE = (400, 500)  # 0.8 MB per float32 plane: large enough for tracemalloc to see the planes


def _write_snaps(tmp_path, seed=5):
    rng = np.random.default_rng(seed)
    paths = []
    for k, rn in enumerate((6.0, 8.0)):
        e = Exposure.from_arrays(rng.normal(100.0, 10.0, SHAPE).astype(np.float32), None,
                                 rng.uniform(1.0, 9.0, SHAPE).astype(np.float32), xy0=(3, -2),
                                 visit_info=VisitInfo(id=7, band="r", exposure_time=15.0))
        e.mask.set("CR" if k == 0 else "SAT", rng.random(SHAPE) < 0.1)
        e.metadata["RDNOISE"] = rn
        paths.append(tmp_path / f"snap{k}.fits")
        write_exposure(e, paths[-1])
    return paths


@pytest.mark.parametrize("bad", [(), ("CR", "SAT")])
def test_summed_snaps_equal_the_sum_of_the_read_exposures(tmp_path, bad):
    paths = _write_snaps(tmp_path)
    ref = combine_snaps([read_exposure(p) for p in paths], bad)
    out = read_summed_snaps(paths, bad)
    for a, b in ((out.image, ref.image), (out.variance, ref.variance)):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(out.mask.array, ref.mask.array)
    assert out.xy0 == ref.xy0 == (3, -2)
    assert out.visit_info.exposure_time == 30.0 and out.metadata["RDNOISE"] == ref.metadata["RDNOISE"] == 10.0
    one = read_summed_snaps(paths[:1])
    np.testing.assert_array_equal(one.image, read_exposure(paths[0]).image)


def test_summing_holds_one_plane_of_the_second_snap(tmp_path):
    """The second snap costs its mask alone (tracemalloc sees numpy's buffers; image and variance are added a
    chunk at a time as they are read): the peak while summing stays within ~1.2 planes above the first snap,
    where two read exposures cost three more planes."""
    paths = _write_snaps(tmp_path)
    plane = SHAPE[0] * SHAPE[1] * 4
    first = read_exposure(paths[0])
    tracemalloc.start()
    try:
        with ExposureFitsReader(paths[1]) as second:
            combine_snaps([first, second], in_place=True)
        _, peak_reader = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        first = read_exposure(paths[0])
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        combine_snaps([first, read_exposure(paths[1])], in_place=True)
        _, peak_whole = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_reader < 1.2 * plane
    assert peak_whole - base > 2.9 * plane


def test_a_reader_snap_is_summed_in_place_only(tmp_path):
    paths = _write_snaps(tmp_path)
    with ExposureFitsReader(paths[1]) as second:
        with pytest.raises(ValueError, match="in place only"):
            combine_snaps([read_exposure(paths[0]), second])
    with pytest.raises(ValueError, match="an Exposure or an exposure file reader, got str"):
        combine_snaps([read_exposure(paths[0]), "snap.fits"], in_place=True)
