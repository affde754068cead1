"""The pixel-grid determiner on the 117 real DES Y1 stars (../shared/realdata/piff_des_y1): the smoothness
prior, its weight chosen by cross-validation on the fitting stars, predicts the reserved stars better than
Piff's unregularised model at DES's supersampled settings (grid 31 at 0.15" on 0.263" pixels, order 2)."""

from __future__ import annotations

import numpy as np
import pytest
from visitcal.core.geom import Box2I
from visitcal.io.ldac import read_ldac
from visitcal.psf.vignets import candidates_from_vignets
from visitcal.psf.pixel_grid import PixelGridPsfDeterminer, PixelGridPsfDeterminerConfig

pytestmark = pytest.mark.realdata

NAME = "DECam_00241238_01_psfcat_tb_maxmag_17.0_magcut_3.0_findstars.fits"


@pytest.fixture(scope="module")
def des(realdata_dir):
    header, table = read_ldac(realdata_dir / "piff_des_y1" / NAME)
    cand = candidates_from_vignets(table, header, stamp_size=25)
    n = len(cand)
    reserved = np.zeros(n, bool)  # the bench's reserve (bench/bench_psf.py)
    reserved[np.random.RandomState(12345).choice(n, round(0.2 * n), replace=False)] = True
    bbox = Box2I(0, 0, int(header["NAXIS1"]) - 1, int(header["NAXIS2"]) - 1)
    return cand, reserved, bbox


def config(**kw):
    return PixelGridPsfDeterminerConfig(model_size=31, sampling_size=0.15 / 0.263, stamp_size=25, **kw)


def test_cross_validation_on_the_fitting_stars_chooses_a_prior_that_helps_the_reserve(des):
    cand, reserved, bbox = des
    best, table = PixelGridPsfDeterminer(config()).cross_validate_smoothness(
        cand, bbox, values=(0.0, 0.1, 1.0), reserved=reserved)
    assert best == 0.1
    assert set(table["n_scored"]) == {int((~reserved).sum())}
    medians = {}
    for lam in (0.0, best):
        r = PixelGridPsfDeterminer(config(smoothness=lam)).determine_psf(cand, bbox, reserved=reserved)
        assert not r.used[reserved].any()
        medians[lam] = float(np.median(r.chi2[reserved] / r.dof[reserved]))
    # The fit's own reserve chi2 (sky-only weights, S/N cap): 1.33 without the prior, 1.23 with it.
    assert medians[best] < 1.25 and medians[0.0] - medians[best] > 0.07
