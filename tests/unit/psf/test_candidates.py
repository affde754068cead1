"""PSF candidate stamps (lsst-spec §4.6) against a numpy/scipy reference."""

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage
from visitcal.core.footprint import Footprint, FootprintSet, make_peaks
from visitcal.core.image import MaskedImage
from visitcal.psf.candidates import (
    PsfCandidatesConfig,
    footprint_index_of,
    make_psf_candidates,
)

INTRP = 1 << 2
DETECTED = 1 << 5
S = 27
H = S // 2


def _disc(r):
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return xx**2 + yy**2 <= r * r


def _scene(shape=(120, 140), xy0=(7, 11), seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 1, shape).astype(np.float32)
    var = rng.uniform(0.5, 2, shape).astype(np.float32)
    return MaskedImage(img, np.zeros(shape, np.int32), var, xy0=xy0)


def _footprints(mi, boxes):
    """One rectangular footprint per (x0, y0, w, h, [peaks]) in the parent frame; sets DETECTED."""
    fps = []
    for x0, y0, w, h, peaks in boxes:
        fp = Footprint(np.array([[y, x0, x0 + w - 1] for y in range(y0, y0 + h)], np.int32),
                       make_peaks(np.array(peaks, np.int32), np.ones(len(peaks), np.float32),
                                  np.ones(len(peaks), np.float32)))
        fps.append(fp)
        ys, xs = fp.indices()
        mi.mask.array[ys - mi.xy0[1], xs - mi.xy0[0]] |= DETECTED
    return FootprintSet.from_footprints(fps, mi.bbox)


def _reference_mask(mi, fs, fidx, x, y, grow=3, blends=True):
    """§4.6 steps 2-3 in numpy/scipy for one star: returns the expected stamp mask."""
    cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    ox, oy = cx - H - mi.xy0[0], cy - H - mi.xy0[1]
    m = mi.mask.array[oy:oy + S, ox:ox + S].copy()
    if blends and fidx >= 0 and len(fs[fidx].peaks) > 1:
        pk = fs[fidx].peaks
        px, py = pk["i_x"].astype(float), pk["i_y"].astype(float)
        c = int(np.argmin((px - x) ** 2 + (py - y) ** 2))
        ys, xs = fs[fidx].indices()
        d = (xs[:, None] - px[None]) ** 2 + (ys[:, None] - py[None]) ** 2
        other = (np.delete(d, c, axis=1) < d[:, [c]]).any(axis=1)
        sy, sx = ys[other] - (cy - H), xs[other] - (cx - H)
        inside = (sy >= 0) & (sy < S) & (sx >= 0) & (sx < S)
        m[sy[inside], sx[inside]] = (m[sy[inside], sx[inside]] | INTRP) & ~DETECTED
    lab, n = ndimage.label((m & DETECTED) != 0, structure=np.ones((3, 3), bool))
    grown = np.zeros((S, S), bool)
    for k in range(1, n + 1):
        if lab[H, H] == k:
            continue
        grown |= ndimage.binary_dilation(lab == k, structure=_disc(grow))
    m[grown] = (m[grown] | INTRP) & ~DETECTED
    return m


def _src(x, y):
    return {"base_SdssCentroid_x": np.asarray(x, float), "base_SdssCentroid_y": np.asarray(y, float)}


def test_stamps_are_slices_of_the_image():
    mi = _scene()
    fs = _footprints(mi, [])
    x = np.array([40.4, 80.0, 100.49, 55.5])
    y = np.array([50.0, 70.6, 90.2, 60.5])
    r = make_psf_candidates(mi, _src(x, y), fs)
    assert len(r) == 4 and r.table["used"].all()
    for k in range(4):
        cx, cy = int(np.floor(x[k] + 0.5)), int(np.floor(y[k] + 0.5))
        sl = np.s_[cy - H - 11:cy + H + 1 - 11, cx - H - 7:cx + H + 1 - 7]
        np.testing.assert_array_equal(r.image[k], mi.image[sl])
        np.testing.assert_array_equal(r.variance[k], mi.variance[sl])
        np.testing.assert_array_equal(r.mask[k], mi.mask.array[sl])
        assert tuple(r.xy0[k]) == (cx - H, cy - H)
        assert r.table["psf_max_value"][k] == pytest.approx(float(mi.image[sl].max()), abs=0)


def test_neighbour_footprints_dilated_and_masked_like_scipy():
    mi = _scene(seed=1)
    boxes = [(60, 60, 6, 5, [(62, 62)]), (72, 58, 3, 2, [(73, 58)]), (50, 70, 2, 8, [(50, 72)]),
             (66, 49, 1, 1, [(66, 49)]), (40, 40, 4, 4, [(41, 41)])]
    fs = _footprints(mi, boxes)
    x = np.array([62.2, 41.0, 73.0])
    y = np.array([61.7, 41.0, 58.0])
    for grow in (0, 3, 5):
        r = make_psf_candidates(mi, _src(x, y), fs, PsfCandidatesConfig(neighbour_grow=grow))
        fidx = r.table["footprint_index"]
        np.testing.assert_array_equal(fidx, [0, 4, 1])
        for k in range(3):
            np.testing.assert_array_equal(r.mask[k], _reference_mask(mi, fs, fidx[k], x[k], y[k], grow))
    # the star's own footprint keeps DETECTED and is not INTRP; a neighbour 1 px box grows to a disc
    r = make_psf_candidates(mi, _src(x[:1], y[:1]), fs)
    m = r.mask[0]
    cy0, cx0 = 62 - H, 62 - H
    assert not (m[60 - cy0:65 - cy0, 60 - cx0:66 - cx0] & INTRP).any()
    assert (m[49 - cy0, 66 - cx0] & INTRP) and not (m[49 - cy0, 66 - cx0] & DETECTED)
    assert (m[49 - cy0 + 3, 66 - cx0] & INTRP) and (m[49 - cy0, 66 - cx0 - 3] & INTRP)  # (0, 3) is on the disc
    assert not (m[49 - cy0 + 3, 66 - cx0 + 1] & INTRP)  # 1^2 + 3^2 > 9


def test_blended_pair_masks_the_other_peaks_side():
    mi = _scene(seed=2)
    fs = _footprints(mi, [(50, 60, 21, 7, [(55, 63), (65, 63)])])
    r = make_psf_candidates(mi, _src([55.3, 64.8], [63.1, 62.9]), fs)
    for k, (xc, own_left) in enumerate(((55, True), (65, False))):
        m = r.mask[k]
        ox, oy = r.xy0[k]
        for yy in range(60, 67):
            for xx in range(50, 71):
                sx, sy = xx - ox, yy - oy
                if not (0 <= sx < S and 0 <= sy < S):
                    continue
                nearer_other = (xx > 60) if own_left else (xx < 60)
                assert bool(m[sy, sx] & INTRP) == nearer_other, (k, xx, yy)
                assert bool(m[sy, sx] & DETECTED) == (not nearer_other)
        np.testing.assert_array_equal(m, _reference_mask(mi, fs, 0, [55.3, 64.8][k], [63.1, 62.9][k]))
    # with do_mask_blends off, nothing of the parent is masked
    r = make_psf_candidates(mi, _src([55.3], [63.1]), fs, PsfCandidatesConfig(do_mask_blends=False))
    assert not (r.mask[0] & INTRP).any()


def test_edge_nan_and_bad_centroid_are_skipped_with_reason():
    mi = _scene()  # parent box x 7..146, y 11..130
    mi.image[60 - 11, 90 - 7 + 5] = np.nan  # inside the stamp of the star at (90, 60)
    fs = _footprints(mi, [])
    x = np.array([7 + 13, 7 + 12.4, 146 - 13, 146 - 12.4, 90.0, np.nan, 50.0])
    y = np.array([11 + 13, 50.0, 50.0, 50.0, 60.0, 50.0, 130 - 13.0])
    r = make_psf_candidates(mi, _src(x, y), fs)
    assert list(r.table["skip_reason"]) == ["", "off_edge", "", "off_edge", "nonfinite_max", "bad_centroid", ""]
    np.testing.assert_array_equal(r.table["used"], [1, 0, 1, 0, 0, 0, 1])
    assert len(r) == 3 and np.isnan(r.table["psf_max_value"][[1, 3, 4, 5]]).all()
    mi.image[60 - 11, 90 - 7 + 5] = np.inf
    r = make_psf_candidates(mi, _src(x, y), fs)
    assert r.table["skip_reason"][4] == "nonfinite_max" and r.table["psf_max_value"][4] == np.inf


def test_cap_is_seeded_deterministic_and_bounded():
    mi = _scene(shape=(200, 200), xy0=(0, 0))
    fs = _footprints(mi, [])
    rng = np.random.default_rng(5)
    x = rng.uniform(20, 180, 60)
    y = rng.uniform(20, 180, 60)
    x[3] = 2.0  # one off the edge: the cap draws among the good ones only
    cfg = PsfCandidatesConfig(max_candidates=25)
    a = make_psf_candidates(mi, _src(x, y), fs, cfg)
    b = make_psf_candidates(mi, _src(x, y), fs, cfg)
    assert len(a) == 25 and a.table["used"].sum() == 25
    np.testing.assert_array_equal(a.table["used"], b.table["used"])
    np.testing.assert_array_equal(a.image, b.image)
    good = np.flatnonzero(np.arange(60) != 3)
    expect = good[np.sort(np.random.RandomState(98765).choice(59, 25, replace=False))]
    np.testing.assert_array_equal(np.flatnonzero(a.table["used"]), expect)
    assert (a.table["skip_reason"] == "over_cap").sum() == 34
    c = make_psf_candidates(mi, _src(x, y), fs, PsfCandidatesConfig(max_candidates=25, seed=1))
    assert not np.array_equal(c.table["used"], a.table["used"]) and len(c) == 25
    assert len(make_psf_candidates(mi, _src(x, y), fs, PsfCandidatesConfig(max_candidates=100))) == 59


def test_footprint_index_of_matches_brute_force():
    mi = _scene(seed=3)
    boxes = [(20, 20, 10, 10, [(25, 25)]), (40, 30, 5, 20, [(42, 40)]), (31, 20, 3, 3, [(32, 21)])]
    fs = _footprints(mi, boxes)
    rng = np.random.default_rng(0)
    x = rng.uniform(15, 50, 400)
    y = rng.uniform(15, 55, 400)
    got = footprint_index_of(fs, x, y)
    want = np.full(400, -1)
    for k, fp in enumerate(fs):
        want[fp.contains(np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int))] = k
    np.testing.assert_array_equal(got, want)
    assert footprint_index_of(fs, [np.nan], [20.0])[0] == -1


def test_config_and_argument_checks():
    with pytest.raises(ValidationError):
        PsfCandidatesConfig(stamp_size=26)
    with pytest.raises(ValidationError):
        PsfCandidatesConfig(kernel_size=21)
    c = PsfCandidatesConfig()
    assert (c.stamp_size, c.do_mask_blends, c.neighbour_grow, c.max_candidates, c.seed) == (27, True, 3, 300, 98765)
    mi = _scene()
    fs = _footprints(mi, [])
    with pytest.raises(ValueError, match="base_SdssCentroid_x"):
        make_psf_candidates(mi, {"x": [1.0]}, fs)
    with pytest.raises(ValueError, match="footprint_index"):
        make_psf_candidates(mi, _src([50.0], [50.0]), fs, footprint_index=[3])
