"""Sky sources (lsst-spec §5.9): the scrambled Halton sequence against scipy, the C++ acceptance loop
against a brute-force numpy loop, and the geometric promises (no overlap with the avoided pixels nor
with each other)."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from visitcal import _core
from visitcal.core.image import Mask, MaskedImage
from visitcal.detection.sky_sources import (
    SkyObjectsConfig,
    SkyObjectsTask,
    generate_sky_objects,
    scrambled_halton,
    trial_positions,
)

# ---------------------------------------------------------------------------------------------------
# numpy references


def disc_offsets(r: int) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dx * dx + dy * dy <= r * r
    return dy[keep], dx[keep]


def dilate(plane: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by the disc dx^2 + dy^2 <= r^2 (pixels off the plane dropped)."""
    out = plane.copy()
    ny, nx = plane.shape
    for dy, dx in zip(*disc_offsets(r)):
        src = plane[max(0, -dy):ny - max(0, dy), max(0, -dx):nx - max(0, dx)]
        out[max(0, dy):ny - max(0, -dy), max(0, dx):nx - max(0, -dx)] |= src
    return out


def reference_sky(mask: np.ndarray, bits: int, grow: int, r: int, xs, ys, n_sources: int, xy0=(0, 0)) -> list[int]:
    """Brute-force acceptance loop on a boolean avoid plane."""
    avoid = (mask & bits) != 0
    if grow:
        avoid = dilate(avoid, grow)
    ny, nx = mask.shape
    ody, odx = disc_offsets(r)
    # the disc dilated by r, as offsets
    big = np.zeros((4 * r + 1, 4 * r + 1), bool)
    big[ody + 2 * r, odx + 2 * r] = True
    bdy, bdx = np.nonzero(dilate(big, r))
    bdy, bdx = bdy - 2 * r, bdx - 2 * r
    accepted = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        if len(accepted) == n_sources:
            break
        cx, cy = x - xy0[0], y - xy0[1]
        py, px = cy + ody, cx + odx
        ok = (py >= 0) & (py < ny) & (px >= 0) & (px < nx)
        if avoid[py[ok], px[ok]].any():
            continue
        accepted.append(i)
        py, px = cy + bdy, cx + bdx
        ok = (py >= 0) & (py < ny) & (px >= 0) & (px < nx)
        avoid[py[ok], px[ok]] = True
    return accepted


def region(shape, sl) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[sl] = True
    return out


def crowded_mask(seed=0, shape=(300, 340), n_blobs=40, radius=9) -> Mask:
    rng = np.random.default_rng(seed)
    m = Mask(shape=shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    det = np.zeros(shape, bool)
    for _ in range(n_blobs):
        cx, cy = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        det |= (xx - cx) ** 2 + (yy - cy) ** 2 <= rng.uniform(2, radius) ** 2
    m.set("DETECTED", det)
    m.set("BAD", region(shape, np.s_[:, 100:102]))  # a bad column pair
    m.set("SAT", rng.random(shape) < 0.002)  # not avoided by default
    return m


# ---------------------------------------------------------------------------------------------------
# Halton


@pytest.mark.parametrize("seed", [0, 1, 42, 987654321, 2**33 + 5, 2**63 - 1])
@pytest.mark.parametrize("n", [0, 1, 13, 500, 4096])
def test_scrambled_halton_equals_scipy(seed, n):
    qmc = pytest.importorskip("scipy.stats.qmc")
    want = qmc.Halton(d=2, scramble=True, seed=seed).random(n)
    got = scrambled_halton(n, seed)
    assert got.shape == (n, 2)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("d", [1, 3, 6])
def test_scrambled_halton_other_dimensions_equal_scipy(d):
    qmc = pytest.importorskip("scipy.stats.qmc")
    np.testing.assert_array_equal(scrambled_halton(300, 7, d), qmc.Halton(d=d, seed=7).random(300))


def test_scrambled_halton_is_a_low_discrepancy_permutation():
    """Without scipy: point i's base-2 digits are permuted, so the first 2^k points of column 0 fall one
    per dyadic interval of width 2^-k (the stratification the Halton sequence is chosen for)."""
    u = scrambled_halton(1024, 5)
    assert np.all((u >= 0) & (u < 1))
    for k in (3, 6, 10):
        cells = np.floor(u[:2**k, 0] * 2**k).astype(int)
        assert np.array_equal(np.sort(cells), np.arange(2**k))
    cells3 = np.floor(u[:243, 1] * 243).astype(int)  # 3^5 points, one per triadic cell
    assert np.array_equal(np.sort(cells3), np.arange(243))
    assert not np.array_equal(u, scrambled_halton(1024, 6))
    np.testing.assert_array_equal(u, scrambled_halton(1024, 5))
    with pytest.raises(ValueError, match="seed"):
        scrambled_halton(4, -1)
    with pytest.raises(ValueError, match="n must"):
        scrambled_halton(-4, 1)


# ---------------------------------------------------------------------------------------------------
# acceptance loop


def test_disc_spans_is_the_integer_disc():
    spans = _core.disc_spans(8, 50, 60)
    dy, dx = disc_offsets(8)
    assert int(np.sum(spans[:, 2] - spans[:, 1] + 1)) == dy.size == 197
    mask = np.zeros((200, 200), bool)
    mask[dy + 60, dx + 50] = True
    for y, x0, x1 in spans:
        assert mask[y, x0:x1 + 1].all()


@pytest.mark.parametrize("grow", [0, 3])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_acceptance_loop_equals_numpy_brute_force(seed, grow):
    m = crowded_mask(seed)
    config = SkyObjectsConfig(grow_mask=grow, n_sources=30)
    xs, ys = trial_positions(m.shape, (0, 0), seed, config)
    bits = m.get_plane_bitmask(*config.avoid_mask)
    got = _core.select_sky_sources(m.array, bits, grow, 8, xs.astype(np.int32), ys.astype(np.int32), 30)
    want = reference_sky(m.array, bits, grow, 8, xs, ys, 30)
    assert got.tolist() == want
    fps = generate_sky_objects(m, seed, config)
    assert [(fp.peaks["i_x"][0], fp.peaks["i_y"][0]) for fp in fps] == [(xs[i], ys[i]) for i in want]


def test_sky_sources_avoid_the_mask_and_each_other():
    m = crowded_mask(4)
    fps = SkyObjectsTask(SkyObjectsConfig(n_sources=60)).run(m, 2024)
    assert 10 < len(fps) <= 60
    avoid = m.test(["DETECTED", "DETECTED_NEGATIVE", "BAD", "NO_DATA"])
    r = 8
    planes = []
    for fp in fps:
        disc = fp.to_array(MaskedImage(np.zeros(m.shape)).bbox)
        assert disc.sum() == 197 and fp.area == 197
        assert not (disc & avoid).any()
        (px, py) = fp.peaks["i_x"][0], fp.peaks["i_y"][0]
        assert disc[py, px] and len(fp.peaks) == 1 and fp.peaks["peak_value"][0] == 0
        # inside the box shrunk by int(r) + 1: the whole disc is on the image, one pixel clear
        assert r + 1 <= px <= m.shape[1] - 1 - (r + 1) and r + 1 <= py <= m.shape[0] - 1 - (r + 1)
        planes.append(disc)
    for i, a in enumerate(planes):
        grown = dilate(a, r)
        for b in planes[i + 1:]:
            assert not (grown & b).any()


def test_empty_mask_reaches_n_sources_and_is_deterministic():
    m = Mask(shape=(512, 600))
    task = SkyObjectsTask()
    a = task.run(m, 77)
    assert len(a) == 100 and task.metadata["sky_footprint_count"] == 100
    b = SkyObjectsTask().run(m, 77)
    c = SkyObjectsTask().run(m, 78)
    assert [fp.spans.tobytes() for fp in a] == [fp.spans.tobytes() for fp in b]
    assert [fp.spans.tobytes() for fp in a] != [fp.spans.tobytes() for fp in c]


def test_crowded_mask_gives_fewer_with_a_warning(caplog):
    m = Mask(shape=(200, 200))
    m.set("DETECTED")
    m.clear("DETECTED", region(m.shape, np.s_[20:60, 20:60]))  # room for only a few discs
    with caplog.at_level(logging.INFO, logger="visitcal.detection.sky_sources"):
        fps = SkyObjectsTask().run(m, 3)
    assert 0 < len(fps) < 10
    assert any(rec.levelno == logging.WARNING and "of 100 requested" in rec.getMessage() for rec in caplog.records)
    m.set("DETECTED")
    assert SkyObjectsTask().run(m, 3) == []


def test_origin_shifts_positions_and_config():
    m = crowded_mask(5)
    mi = MaskedImage(np.zeros(m.shape), m, xy0=(300, -40))
    shifted = generate_sky_objects(mi, 9)
    # Positions are not exactly translation invariant (LSST scales to the parent-frame box and truncates
    # toward zero, so negative coordinates round up), hence the check against the reference with xy0.
    xs, ys = trial_positions(m.shape, (300, -40), 9, SkyObjectsConfig())
    assert xs.min() >= 309 and ys.min() >= -31 and xs.max() <= 300 + 339 - 9 and ys.max() <= -40 + 299 - 9
    bits = m.get_plane_bitmask("DETECTED", "DETECTED_NEGATIVE", "BAD", "NO_DATA")
    want = reference_sky(m.array, bits, 0, 8, xs, ys, 100, xy0=(300, -40))
    assert len(shifted) == len(want) > 50
    for fp, i in zip(shifted, want):
        np.testing.assert_array_equal(fp.spans, _core.disc_spans(8, int(xs[i]), int(ys[i])))
        assert not (fp.to_array(mi.bbox) & m.test(["DETECTED", "BAD"])).any()
    assert generate_sky_objects(m, 9, SkyObjectsConfig(n_sources=0)) == []
    with pytest.raises(ValueError, match="too small"):
        generate_sky_objects(Mask(shape=(18, 100)), 1)
    c = SkyObjectsConfig()
    assert (c.avoid_mask, c.grow_mask, c.source_radius, c.n_sources, c.effective_n_trial_sources) == (
        ("DETECTED", "DETECTED_NEGATIVE", "BAD", "NO_DATA"), 0, 8.0, 100, 500)
    assert SkyObjectsConfig(n_trial_sources=7).effective_n_trial_sources == 7
    assert pickle.loads(pickle.dumps(c)) == c
    with pytest.raises(ValueError):
        SkyObjectsConfig(nSources=3)
    with pytest.raises(TypeError, match="Mask"):
        generate_sky_objects(np.zeros((50, 50), np.int32), 1)
