"""Integer arguments just beyond int32 (2**31, -2**31 - 1, 2**63) for every public C++-backed function
with an integer parameter: a Python int the caller may pass, which the compiled signature cannot
take. Deterministic (no generation), so these edges are checked on every run: a typed exception without
the binding's signature dump, or a result. The fuzzed tests reach them only by chance.
"""

from __future__ import annotations

import numpy as np
import pytest

from visitcal.core.footprint import Footprint, FootprintSet
from visitcal.core.geom import Box2I
from visitcal.core.image import Exposure, MaskedImage
from visitcal.detection.convolve import gaussian_kernel_1d, gaussian_smooth
from visitcal.detection.noise_replacer import noise_statistics
from visitcal.measurement.deblend import deblend_sigma1
from visitcal.psf.models import GaussianPsf
from visitcal.tasks.compute_exposure_summary_stats import sigma_clipped_stats

from ._fuzz import call

BEYOND = [2**31, -2**31 - 1, 2**63]


def _mi():
    return MaskedImage(np.ones((8, 8), np.float32), variance=np.ones((8, 8), np.float32))


CASES = {
    "gaussian_kernel_1d(half_width)": lambda v: call(gaussian_kernel_1d, 1.0, v),
    "gaussian_smooth(half_width)": lambda v: call(gaussian_smooth, np.ones((8, 8)), 1.0, half_width=v),
    "Footprint.dilated(radius)": lambda v: call(Footprint([[0, 0, 3]]).dilated, v),
    "FootprintSet.grown(radius)": lambda v: call(
        FootprintSet.from_footprints([Footprint([[1, 1, 3]])], Box2I(0, 0, 7, 7)).grown, v),
    "sigma_clipped_stats(n_iter)": lambda v: call(sigma_clipped_stats, np.arange(10.0), 3.0, v),
    "sigma_clipped_stats(sample_step)": lambda v: call(sigma_clipped_stats, np.arange(10.0), 3.0, 2, sample_step=v),
    "noise_statistics(n_iter)": lambda v: call(noise_statistics, _mi(), n_iter=v),
    "noise_statistics(sample_step)": lambda v: call(noise_statistics, _mi(), sample_step=v),
    "deblend_sigma1(sample_step)": lambda v: call(deblend_sigma1, Exposure(_mi()), ("SAT",), None, sample_step=v),
    "GaussianPsf(size)": lambda v: call(GaussianPsf, 1.0, size=v | 1),
}


@pytest.mark.parametrize("value", BEYOND)
@pytest.mark.parametrize("name", sorted(CASES))
def test_int_argument_beyond_int32(name, value):
    r = CASES[name](value)  # call() asserts the outcome: typed, and no C++ / binding text
    assert r.ok or r.error is not None
