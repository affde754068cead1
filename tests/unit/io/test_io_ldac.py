"""visitcal.io.ldac: LDAC catalogues and PSF candidates from their VIGNET stamps, on synthetic LDAC files
written here with astropy the way SExtractor writes them (empty primary, LDAC_IMHEAD cell, LDAC_OBJECTS)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from visitcal.core.image import MaskPlanes
from visitcal.io.ldac import read_ldac
from visitcal.psf.vignets import VIGNET_NO_DATA, candidates_from_vignets

V = 63  # DES vignet side


def write_ldac(path, header: fits.Header, table: Table) -> None:
    """An LDAC file as SExtractor writes it: the header as one (80, ncards) character cell."""
    cards = [c.image for c in header.cards] + ["END".ljust(80)]
    col = fits.Column(name="Field Header Card", format=f"{80 * len(cards)}A", dim=f"(80, {len(cards)})",
                      array=np.array([cards], dtype="S80"))
    imhead = fits.BinTableHDU.from_columns([col], name="LDAC_IMHEAD")
    objects = fits.BinTableHDU(table, name="LDAC_OBJECTS")
    fits.HDUList([fits.PrimaryHDU(), imhead, objects]).writeto(path, overwrite=True)


def parent_scene(rng, nx=300, ny=260):
    """A parent image (y, x) with sky noise and Gaussian stars at 0-based positions (pixel centres at integers)."""
    xs = rng.uniform(40, nx - 41, 6)
    ys = rng.uniform(40, ny - 41, 6)
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = rng.normal(0.0, 5.0, (ny, nx))
    for x, y in zip(xs, ys):
        img += 4000.0 * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 1.7**2)
    return img.astype(np.float32), xs, ys


def sextractor_vignets(img, xs, ys):
    """VIGNETs as SExtractor cuts them: centre [V//2, V//2] is 1-based pixel nint(X_IMAGE); outside -> -1e30."""
    ny, nx = img.shape
    h = V // 2
    out = np.full((len(xs), V, V), VIGNET_NO_DATA, np.float32)
    for k, (x, y) in enumerate(zip(xs, ys)):
        X, Y = x + 1.0, y + 1.0  # SExtractor 1-based
        cx, cy = int(np.floor(X + 0.5)) - 1, int(np.floor(Y + 0.5)) - 1  # back to 0-based indices
        for i in range(V):
            for j in range(V):
                py, px = cy - h + i, cx - h + j
                if 0 <= py < ny and 0 <= px < nx:
                    out[k, i, j] = img[py, px]
    return out


@pytest.fixture
def ldac_file(tmp_path):
    rng = np.random.default_rng(11)
    img, xs, ys = parent_scene(rng)
    vig = sextractor_vignets(img, xs, ys)
    vig[2, 30:33, 40] = VIGNET_NO_DATA  # a flagged column segment inside the 27-px cut
    t = Table()
    t["VIGNET"] = vig
    t["X_IMAGE"] = xs + 1.0
    t["Y_IMAGE"] = ys + 1.0
    t["XWIN_IMAGE"] = xs + 1.0 + 0.01
    t["YWIN_IMAGE"] = ys + 1.0 - 0.02
    t["FLAGS"] = np.array([0, 0, 3, 0, 16, 0], np.int16)
    hdr = fits.Header()
    hdr["NAXIS1"] = img.shape[1]
    hdr["NAXIS2"] = img.shape[0]
    hdr["GAINA"] = 4.0
    hdr["SKYSIGMA"] = 5.0
    hdr["FILTER"] = "r DECam SDSS c0002 6415.0 1480.0"
    path = tmp_path / "cat_ldac.fits"
    write_ldac(path, hdr, t)
    return path, img, xs, ys, hdr, t


def test_read_ldac_round_trip(ldac_file):
    path, _, xs, _, hdr, t = ldac_file
    header, table = read_ldac(path)
    assert isinstance(header, fits.Header)
    for key in hdr:
        assert header[key] == hdr[key]
    assert table.colnames == t.colnames
    assert len(table) == len(t)
    np.testing.assert_array_equal(np.asarray(table["VIGNET"]), np.asarray(t["VIGNET"]))
    np.testing.assert_array_equal(np.asarray(table["X_IMAGE"]), xs + 1.0)
    assert np.asarray(table["VIGNET"]).shape == (len(xs), V, V)


def test_not_ldac_names_the_file(tmp_path):
    path = tmp_path / "plain.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4))), fits.BinTableHDU(Table({"a": [1, 2]}))]).writeto(path)
    with pytest.raises(ValueError, match="plain.fits is not an LDAC catalogue"):
        read_ldac(path)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not fits at all" * 100)
    with pytest.raises(ValueError, match="junk.fits"):
        read_ldac(junk)


@pytest.mark.parametrize("size", [27, 25, 63])
def test_stamp_pixels_are_the_parent_pixels(ldac_file, size):
    """Every stamp pixel [k, i, j] equals parent pixel (xy0 + (j, i)) of the image SExtractor cut from."""
    path, img, xs, ys, _, _ = ldac_file
    header, table = read_ldac(path)
    cand = candidates_from_vignets(table, header, stamp_size=size)
    assert cand.image.shape == (len(xs), size, size)
    ny, nx = img.shape
    for k in range(len(xs)):
        x0, y0 = cand.xy0[k]
        assert x0 == int(np.floor(xs[k] + 0.5)) - size // 2
        assert y0 == int(np.floor(ys[k] + 0.5)) - size // 2
        good = cand.mask[k] == 0
        ii, jj = np.nonzero(good)
        inside = (y0 + ii >= 0) & (y0 + ii < ny) & (x0 + jj >= 0) & (x0 + jj < nx)
        assert inside.all()
        np.testing.assert_array_equal(cand.image[k][good], img[y0 + ii, x0 + jj])
        # the star's peak is the stamp centre pixel, the nearest pixel to the true position
        c = size // 2
        assert np.unravel_index(np.argmax(np.where(good, cand.image[k], -np.inf)), good.shape) == (c, c)
    np.testing.assert_allclose(cand.table["x"], xs + 0.01, atol=1e-12)
    np.testing.assert_allclose(cand.table["y"], ys - 0.02, atol=1e-12)
    np.testing.assert_array_equal(cand.table["index"], np.arange(len(xs)))
    assert cand.table["used"].all() and (cand.table["footprint_index"] == -1).all()
    assert list(cand.table["skip_reason"]) == [""] * len(xs)
    np.testing.assert_array_equal(cand.table["psf_max_value"], cand.image.reshape(len(xs), -1).max(1))
    assert cand.image.dtype == np.float32 and cand.variance.dtype == np.float32
    assert cand.mask.dtype == np.int32 and cand.xy0.dtype == np.int32


def test_masked_pixels_and_variance(ldac_file):
    path, _, xs, _, _, _ = ldac_file
    header, table = read_ldac(path)
    cand = candidates_from_vignets(table, header, stamp_size=27)
    bit = 1 << MaskPlanes()["NO_DATA"]
    # vignet [2, 30:33, 40] -> stamp rows 30-18 .. 32-18, column 40-18 (cut offset (63-27)/2 = 18)
    expect = np.zeros((len(xs), 27, 27), bool)
    expect[2, 12:15, 22] = True
    np.testing.assert_array_equal(cand.mask == bit, expect)
    assert (cand.mask[~expect] == 0).all()
    assert (cand.image[expect] == 0).all()
    ref = 5.0**2 + np.maximum(cand.image.astype(np.float64), 0.0) / 4.0
    np.testing.assert_allclose(cand.variance, ref, rtol=1e-6)
    # explicit arguments override the header
    c2 = candidates_from_vignets(table, None, gain=2.0, sky_sigma=1.0)
    np.testing.assert_allclose(c2.variance, 1.0 + np.maximum(c2.image.astype(np.float64), 0) / 2.0, rtol=1e-6)


def test_vignet_edge_is_masked(tmp_path):
    """A star near the image corner: vignet pixels off the image are -1e30 and end up NO_DATA."""
    rng = np.random.default_rng(3)
    img = rng.normal(0, 1, (60, 60)).astype(np.float32)
    xs, ys = np.array([5.3]), np.array([50.6])
    t = Table({"VIGNET": sextractor_vignets(img, xs, ys), "X_IMAGE": xs + 1, "Y_IMAGE": ys + 1,
               "XWIN_IMAGE": xs + 1, "YWIN_IMAGE": ys + 1})
    cand = candidates_from_vignets(t, gain=1.0, sky_sigma=1.0, stamp_size=27)
    x0, y0 = cand.xy0[0]
    assert (x0, y0) == (5 - 13, 51 - 13)
    jj = np.arange(27) + x0
    ii = np.arange(27) + y0
    off = ~(((ii >= 0) & (ii < 60))[:, None] & ((jj >= 0) & (jj < 60))[None, :])
    np.testing.assert_array_equal(cand.mask[0] != 0, off)


def test_max_flags_and_bad_arguments(ldac_file):
    path, _, _, _, header, _ = ldac_file
    _, table = read_ldac(path)
    cand = candidates_from_vignets(table, header, max_flags=3)
    np.testing.assert_array_equal(cand.table["index"], [0, 1, 2, 3, 5])
    assert len(cand) == 5
    with pytest.raises(ValueError, match="stamp_size"):
        candidates_from_vignets(table, header, stamp_size=26)
    with pytest.raises(ValueError, match="stamp_size"):
        candidates_from_vignets(table, header, stamp_size=65)
    with pytest.raises(ValueError, match="GAINA"):
        candidates_from_vignets(table, None)
    with pytest.raises(ValueError, match="gain"):
        candidates_from_vignets(table, header, gain=0.0)
    with pytest.raises(ValueError, match="VIGNET"):
        candidates_from_vignets(Table({"X_IMAGE": [1.0]}), header)
