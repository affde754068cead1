"""Fuzz: footprints and spans, the Chebyshev field, the planar and spherical matchers, friends-of-friends,
neighbour counts and the clipped statistics (visitcal.core.footprint, core.chebyshev, calib.match_nearest,
tasks.isolated_star_association, tasks.compute_exposure_summary_stats).

References: pixel sets (Python sets) for span normalisation, clipping, rasterisation and gathering;
brute-force numpy for the nearest matches, neighbour counts and friends-of-friends (union-find);
numpy mean / std for a clipped mean that clips nothing; a constant for a Chebyshev fit of a constant.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from visitcal.calib.match_nearest import match_nearest
from visitcal.core.chebyshev import ChebyshevBoundedField, ChebyshevBoundedFieldControl
from visitcal.core.footprint import Footprint, FootprintSet, HeavyFootprint
from visitcal.core.geom import Box2I
from visitcal.core.image import MaskedImage
from visitcal.tasks.compute_exposure_summary_stats import sigma_clipped_stats
from visitcal.tasks.isolated_star_association import count_neighbours, fof_groups, match_nearest_sphere

from ._fuzz import any_float, any_int, arrays1d, arrays2d, call, fuzz, outcome_in_subprocess, special_floats

coords = st.one_of(st.integers(-20, 20), st.sampled_from([2**31 - 2, -2**31, 2**31 - 1, -2**31 + 1]))
big_coords = st.one_of(coords, st.sampled_from([2**31, -2**31 - 1, 2**40]))


@st.composite
def span_arrays(draw, c=coords):
    n = draw(st.integers(0, 8))
    rows = []
    for _ in range(n):
        y, x0 = draw(c), draw(c)
        x1 = x0 + draw(st.integers(-1, 6))
        rows.append([y, x0, x1])
    dtype = draw(st.sampled_from(["<i4", "<i8", ">i4", "<u2", "<f8"]))
    a = np.array(rows, dtype=np.int64).reshape(-1, 3)
    if dtype == "<u2":
        a = np.abs(a) % 60000
    return a.astype(dtype)


def _pixels(spans) -> set:
    return {(int(y), x) for y, x0, x1 in np.asarray(spans, np.int64) for x in range(int(x0), int(x1) + 1)}


def _small(spans) -> bool:
    """Few enough pixels for a Python set (coordinates beyond int32 included: they must not wrap)."""
    a = np.asarray(spans, np.int64)
    return a.size == 0 or (a[:, 2] - a[:, 1]).max() < 100


@fuzz(60)
@given(spans=span_arrays(big_coords), r=st.one_of(st.integers(0, 3), any_int),
       box=st.tuples(coords, coords, coords, coords))
def test_footprint_spans(spans, r, box):
    """Footprint() normalises (same pixel set, sorted, disjoint); dilated(0) is itself, dilated(r)
    contains it; clipped_to and to_array agree with the pixel set."""
    fp = call(Footprint, spans)
    if not fp.ok:
        return
    fp = fp.value
    out = np.asarray(fp.spans, np.int64)
    if _small(spans) and np.asarray(spans).dtype.kind in "iu":
        assert _pixels(out) == _pixels(spans)
        assert fp.area == len(_pixels(spans))
        keys = [(y, x0) for y, x0, _ in out]
        assert keys == sorted(keys)
    d = call(fp.dilated, r)
    if d.ok and _small(spans) and 0 <= r <= 3:
        assert _pixels(d.value.spans) >= _pixels(out)
        if r == 0:
            assert _pixels(d.value.spans) == _pixels(out)
    bbox = call(Box2I, *box)
    if not bbox.ok:
        return
    bbox = bbox.value
    c = call(fp.clipped_to, bbox)
    if c.ok and _small(spans):
        inside = {(y, x) for y, x in _pixels(out) if bbox.min_x <= x <= bbox.max_x and bbox.min_y <= y <= bbox.max_y}
        assert _pixels(c.value.spans) == inside
    if (bbox.max_x - bbox.min_x) < 200 and (bbox.max_y - bbox.min_y) < 200:
        a = call(fp.to_array, bbox)
        if a.ok and _small(spans) and not bbox.empty:
            ys, xs = np.nonzero(a.value)
            got = {(int(y) + bbox.min_y, int(x) + bbox.min_x) for y, x in zip(ys, xs)}
            assert got == {(y, x) for y, x in _pixels(out)
                           if bbox.min_x <= x <= bbox.max_x and bbox.min_y <= y <= bbox.max_y}


@fuzz(40)
@given(image=arrays2d(max_side=24), spans=span_arrays(), xy0=st.tuples(coords, coords), grow=st.one_of(st.integers(0, 3), any_int))
def test_heavy_footprint_and_footprint_set(image, spans, xy0, grow):
    """HeavyFootprint.from_masked_image gathers exactly image[y - y0, x - x0] (within the image);
    insert() writes them back; FootprintSet.grown / set_mask raise a typed error or work."""
    mi = call(MaskedImage, image, variance=np.ones(image.shape), xy0=xy0)
    fp = call(Footprint, spans)
    if not (mi.ok and fp.ok):
        return
    mi, fp = mi.value, fp.value
    h = call(HeavyFootprint.from_masked_image, fp, mi)
    if h.ok and _small(spans) and abs(xy0[0]) < 2**20 and abs(xy0[1]) < 2**20:
        px = sorted(_pixels(fp.spans))
        inside = [(y, x) for y, x in px if 0 <= y - xy0[1] < mi.height and 0 <= x - xy0[0] < mi.width]
        want = np.array([mi.image[y - xy0[1], x - xy0[0]] for y, x in inside], np.float32)
        got = np.asarray(h.value.image, np.float32)
        if got.size == len(inside):
            np.testing.assert_array_equal(got, want)
        target = MaskedImage(np.zeros(mi.shape, np.float32), variance=np.ones(mi.shape), xy0=xy0)
        r = call(h.value.insert, target)
        if r.ok and got.size == len(inside):
            for (y, x), v in zip(inside, want):
                assert target.image[y - xy0[1], x - xy0[0]] == v or (np.isnan(v) and np.isnan(target.image[y - xy0[1], x - xy0[0]]))
    fs = call(FootprintSet.from_footprints, [fp, fp], mi.bbox)
    if fs.ok:
        g = call(fs.value.grown, grow)
        if g.ok:
            assert len(g.value) <= 2
        call(fs.value.set_mask, mi.mask, "DETECTED")


@fuzz(40)
@given(n=st.integers(0, 30), c=st.floats(-1e6, 1e6), ox=st.integers(0, 2), oy=st.integers(0, 2),
       box=st.tuples(coords, coords, st.integers(0, 60), st.integers(0, 60)), data=st.data())
def test_chebyshev_fit(n, c, ox, oy, box, data):
    """A fit of constant values is that constant (evaluated anywhere in the box); fuzzed positions,
    values and weights give a typed error or a field."""
    bbox = call(Box2I, box[0], box[1], box[0] + box[2], box[1] + box[3])
    if not bbox.ok:
        return
    bbox = bbox.value
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(bbox.min_x, bbox.max_x, n)
    y = rng.uniform(bbox.min_y, bbox.max_y, n)
    ctl = ChebyshevBoundedFieldControl(order_x=ox, order_y=oy)
    r = call(ChebyshevBoundedField.fit, bbox, x, y, np.full(n, c), control=ctl)
    if r.ok and n >= 3 * (ox + 1) * (oy + 1):
        v = r.value.evaluate(x, y)
        np.testing.assert_allclose(v, c, rtol=1e-8, atol=1e-8 * abs(c) + 1e-9)
    # fuzzed values and weights
    z = data.draw(arrays1d(n))
    w = data.draw(st.one_of(st.none(), arrays1d(n), arrays1d()))
    call(ChebyshevBoundedField.fit, bbox, data.draw(arrays1d(n)), data.draw(st.one_of(arrays1d(n), arrays1d())), z,
         weights=w, control=ctl)


@fuzz(60)
@given(x1=arrays1d(max_n=15, scale=5.0), x2=arrays1d(max_n=15, scale=5.0), data=st.data(),
       radius=st.one_of(st.floats(0, 5), any_float), unique=st.booleans())
def test_match_nearest(x1, x2, data, radius, unique):
    """Brute force: each point of list 1 takes the nearest point of list 2 within radius (ties: lower index)."""
    y1 = data.draw(st.one_of(arrays1d(len(x1), scale=5.0), arrays1d(max_n=15)))
    y2 = data.draw(st.one_of(arrays1d(len(x2), scale=5.0), arrays1d(max_n=15)))
    r = call(match_nearest, x1, y1, x2, y2, radius, unique=unique)
    if not r.ok or unique:
        return
    a1 = np.stack([np.asarray(x1, np.float64), np.asarray(y1, np.float64)], 1)
    a2 = np.stack([np.asarray(x2, np.float64), np.asarray(y2, np.float64)], 1)
    if np.abs(a1[np.isfinite(a1)]).max(initial=0) > 1e100 or np.abs(a2[np.isfinite(a2)]).max(initial=0) > 1e100:
        return  # distances overflow: any finite answer is a choice
    for i in range(len(a1)):
        with np.errstate(all="ignore"):
            d = np.hypot(a2[:, 0] - a1[i, 0], a2[:, 1] - a1[i, 1])
        ok = np.isfinite(d) & (d <= radius)
        if not ok.any():
            assert r.value.index[i] == -1, (i, d)
            continue
        best = d[ok].min()
        j = int(r.value.index[i])
        assert j >= 0 and abs(d[j] - best) <= 1e-9 * max(best, 1e-300), (i, j, d)


def _sep_deg(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    s = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0, 1))))


@st.composite
def sky(draw, n=None):
    n = draw(st.integers(0, 25)) if n is None else n
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ra0, dec0 = draw(st.sampled_from([(10.0, 0.0), (0.0, 89.999), (359.9995, -30.0)]))
    ra = (ra0 + rng.normal(0, 3e-4, n)) % 360.0
    dec = np.clip(dec0 + rng.normal(0, 3e-4, n), -90, 90)
    for a in (ra, dec):
        if n and draw(st.integers(0, 3)) == 0:
            a[draw(st.integers(0, n - 1))] = draw(special_floats)
    return ra, dec


def _finite_sky(ra, dec):
    return np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90) & (np.abs(ra) < 1e6)


@fuzz(50)
@given(a=sky(), link=st.one_of(st.floats(0.1, 3.0), any_float))
def test_fof_groups_and_neighbours(a, link):
    """Brute-force union-find on the great-circle separations (finite, valid positions only)."""
    ra, dec = a
    r = call(fof_groups, ra, dec, link)
    c = call(count_neighbours, ra, dec, link)
    if not (math.isfinite(link) and 0.1 <= link <= 3.0):
        return
    good = _finite_sky(ra, dec)
    if not good.all():
        return  # invalid positions: a typed error or their own group, either accepted
    assert r.ok and c.ok, (r.error, c.error)
    n = len(ra)
    d = _sep_deg(ra[:, None], dec[:, None], ra[None, :], dec[None, :]) * 3600.0
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    near = d <= link
    margin = np.abs(d - link) < 1e-6  # separations at the linking length: rounding decides
    if margin[~np.eye(n, dtype=bool)].any():
        return
    for i in range(n):
        for j in range(i + 1, n):
            if near[i, j]:
                parent[find(i)] = find(j)
    roots = [find(i) for i in range(n)]
    labels, ng = r.value
    assert ng == len(set(roots))
    for i in range(n):
        for j in range(n):
            assert (labels[i] == labels[j]) == (roots[i] == roots[j])
    np.testing.assert_array_equal(c.value, near.sum(1) - 1)


@fuzz(50)
@given(a=sky(), b=sky(), radius=st.one_of(st.floats(0.1, 3.0), any_float), mism=st.booleans())
def test_match_nearest_sphere(a, b, radius, mism):
    ra1, dec1 = a
    ra2, dec2 = b
    if mism and len(dec2):
        dec2 = dec2[:-1]
    r = call(match_nearest_sphere, ra1, dec1, ra2, dec2, radius)
    if not (r.ok and math.isfinite(radius) and 0.1 <= radius <= 3.0):
        return
    if not (_finite_sky(ra1, dec1).all() and _finite_sky(ra2, dec2).all()):
        return
    index, sep = r.value
    for i in range(len(ra1)):
        d = _sep_deg(ra1[i], dec1[i], ra2, dec2) * 3600.0
        if not (d <= radius).any():
            assert index[i] == -1 and np.isnan(sep[i])
        elif np.abs(d - radius).min() > 1e-6:
            assert index[i] >= 0 and abs(sep[i] - d.min()) < 1e-6 and abs(d[index[i]] - d.min()) < 1e-6


@fuzz(50)
@given(values=st.one_of(arrays1d(max_n=200), arrays2d(max_side=12)), n_sigma=st.one_of(st.floats(0.5, 5), any_float),
       n_iter=st.one_of(st.integers(0, 5), any_int),
       step=st.one_of(st.integers(1, 3), st.sampled_from([0, -1, -2**31, 2**20, 2**31, 2**63])), data=st.data())
def test_sigma_clipped_stats(values, n_sigma, n_iter, step, data):
    """A constant gives (c, 0); with nothing clipped (n_sigma 1e6, no outliers) the mean is numpy's."""
    mask = None
    if data.draw(st.booleans()):
        mask = data.draw(st.one_of(arrays1d(np.size(values), dtypes=("<i4",)), arrays1d(dtypes=("<i4",))))
    r = call(sigma_clipped_stats, values, n_sigma, n_iter, mask=mask, bad_bits=data.draw(st.sampled_from([0, 1, -1])),
             sample_step=step)
    v = np.asarray(values, np.float64).ravel()
    if not r.ok or mask is not None or step != 1 or not (0 <= n_iter <= 5) or v.size < 2:
        return
    fin = v[np.isfinite(v)]
    if fin.size < 2 or np.abs(fin).max() > 1e100:
        return
    mean, std = r.value
    if np.all(fin == fin[0]):
        assert mean == fin[0] and std == 0.0


C = st.floats(-1e6, 1e6)


@fuzz(30)
@given(n=st.integers(2, 300), c=C, s=st.floats(0.1, 10.0), n_iter=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_sigma_clipped_stats_unclipped_mean(n, c, s, n_iter, seed):
    v = c + s * np.random.default_rng(seed).uniform(-1, 1, n)  # |v - mean| < 2 s < 1e6 sigma
    r = call(sigma_clipped_stats, v, 1e6, n_iter)
    assert r.ok, r.error
    mean, std = r.value
    v = v.astype(np.float32).astype(np.float64)  # the statistics are of float32 values
    assert abs(mean - v.mean()) <= 1e-7 * (abs(c) + s)
    assert abs(std - v.std(ddof=1)) <= 1e-6 * (abs(c) + s)


@fuzz(4)
@given(step=st.sampled_from([2**31 - 1, 2**31 - 10, 2**30 + 2**29]), n=st.sampled_from([10, 1000]))
def test_sigma_clipped_stats_sample_step_near_2_31(step, n):
    """sample_step near 2**31 (in a child interpreter: it crashed there): a result or a typed error."""
    outcome_in_subprocess("from visitcal.tasks.compute_exposure_summary_stats import sigma_clipped_stats",
                          f"sigma_clipped_stats, np.arange({n}.0), 3.0, 2, sample_step={step}")
