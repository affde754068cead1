"""visitcal.io.ldac on the DES Y1 PSFEx input catalogue (../shared/realdata/piff_des_y1, see its README):
117 real DECam stars with 63 x 63 VIGNET stamps."""

from __future__ import annotations

import numpy as np
import pytest
from visitcal.core.image import MaskPlanes
from visitcal.io.ldac import read_ldac
from visitcal.psf.vignets import candidates_from_vignets

pytestmark = pytest.mark.realdata

NAME = "DECam_00241238_01_psfcat_tb_maxmag_17.0_magcut_3.0_findstars.fits"


@pytest.fixture(scope="module")
def des(realdata_dir):
    return read_ldac(realdata_dir / "piff_des_y1" / NAME)


def windowed_centroid(image, good, sigma=2.0, n_iter=30):
    """Gaussian-windowed centroid of a stamp relative to its centre pixel (numpy reference, px)."""
    n = image.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    img = np.where(good, image.astype(np.float64), 0.0)
    x = y = 0.0
    for _ in range(n_iter):
        w = np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2) * img
        x, y = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    return x, y


def test_header_and_table(des):
    header, table = des
    assert len(table) == 117
    assert len(header) > 300
    assert header["GAINA"] == pytest.approx(4.039)
    assert header["SKYSIGMA"] == pytest.approx(8.31, abs=0.01)
    assert (header["NAXIS1"], header["NAXIS2"]) == (2048, 4096)
    assert header["CTYPE1"].startswith("RA---TPV")
    assert np.asarray(table["VIGNET"]).shape == (117, 63, 63)


def test_stamps_centred_on_the_stars(des):
    header, table = des
    cand = candidates_from_vignets(table, header, stamp_size=27)
    assert len(cand) == 117
    c = 13
    good = cand.mask == 0
    img = np.where(good, cand.image, -np.inf)
    # the brightest pixel of every stamp is the centre pixel or one of its 8 neighbours ...
    peak = np.array([np.unravel_index(np.argmax(im), im.shape) for im in img])
    assert np.all(np.abs(peak - c).max(axis=1) <= 1)
    # ... and the centre pixel itself is the 3 x 3 local maximum for most (a star up to 0.5 px off
    # the pixel centre, with noise, often peaks next door: 78 of 117 here)
    centre_max = img[:, c, c] >= img[:, c - 1:c + 2, c - 1:c + 2].reshape(117, -1).max(axis=1)
    assert centre_max.sum() >= 70
    # a placement off by one pixel would put the peak 1-2 px from the centre for most stars
    assert np.mean(np.all(peak == c, axis=1)) > 0.6


def test_centroid_offsets_match_the_catalogue(des):
    """The stamps' own centroid relative to the centre pixel is XWIN - nint(X_IMAGE) (README: -0.008 +- 0.10 px)."""
    header, table = des
    cand = candidates_from_vignets(table, header, stamp_size=63)
    meas = np.array([windowed_centroid(cand.image[k], cand.mask[k] == 0) for k in range(len(cand))])
    centre = cand.xy0 + 31
    expect = np.stack([cand.table["x"] - centre[:, 0], cand.table["y"] - centre[:, 1]], axis=1)
    d = meas - expect
    assert abs(d.mean()) < 0.03
    assert d.std() < 0.12
    assert np.median(np.abs(d)) < 0.02
    # the catalogue centroids are 0-based parent positions of a 2048 x 4096 CCD
    assert np.all((cand.table["x"] > 0) & (cand.table["x"] < 2047))
    assert np.all((cand.table["y"] > 0) & (cand.table["y"] < 4095))
    np.testing.assert_allclose(cand.table["x"], np.asarray(table["XWIN_IMAGE"]) - 1.0)


def test_masked_pixels_and_variance(des):
    header, table = des
    cand = candidates_from_vignets(table, header, stamp_size=27)
    vig = np.asarray(table["VIGNET"])[:, 18:45, 18:45]
    flagged = vig < -1e29
    assert flagged.sum() > 0  # the DES vignets do have masked pixels near these stars
    no_data = 1 << MaskPlanes()["NO_DATA"]
    np.testing.assert_array_equal(cand.mask == no_data, flagged)
    assert np.all(cand.image[flagged] == 0)
    sky = header["SKYSIGMA"] ** 2
    np.testing.assert_allclose(cand.variance.min(), sky, rtol=1e-6)
    np.testing.assert_allclose(cand.variance, sky + np.maximum(cand.image, 0) / header["GAINA"], rtol=1e-5)
