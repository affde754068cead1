"""base_PixelFlags (visitcal.measurement.plugins.pixel_flags, lsst-spec §5.7) against a numpy reference."""

from __future__ import annotations

import numpy as np

from visitcal.core.footprint import Footprint
from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins.pixel_flags import flag_names, pixel_flags, schema

P = "base_PixelFlags"
ANY = {"edge": "EDGE", "nodata": "NO_DATA", "interpolated": "INTRP", "saturated": "SAT", "cr": "CR", "bad": "BAD",
       "suspect": "SUSPECT", "streak": "STREAK"}
CENTER = {"interpolated": "INTRP", "saturated": "SAT", "cr": "CR", "suspect": "SUSPECT", "bad": "BAD",
          "streak": "STREAK"}


def reference(mask, planes, x, y, fp_pixels, x0=0, y0=0):
    ny, nx = mask.shape
    out = {f"{P}_{n}": False for n in flag_names()}
    on = [(px, py) for px, py in fp_pixels if x0 <= px < x0 + nx and y0 <= py < y0 + ny]
    bits = 0
    for px, py in on:
        bits |= int(mask[py - y0, px - x0])
    for name, plane in ANY.items():
        out[f"{P}_flag_{name}"] = bool(bits & planes.get_plane_bitmask(plane))
    if not (np.isfinite(x) and np.isfinite(y)):
        out[f"{P}_flag"] = True
        return out
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    if not (x0 <= ix < x0 + nx and y0 <= iy < y0 + ny):
        out[f"{P}_flag_offimage"] = out[f"{P}_flag_edge"] = True
        return out
    box = mask[max(iy - 1 - y0, 0):iy + 2 - y0, max(ix - 1 - x0, 0):ix + 2 - x0]
    for name, plane in CENTER.items():
        b = planes.get_plane_bitmask(plane)
        out[f"{P}_flag_{name}Center"] = bool(((box & b) != 0).any())
        out[f"{P}_flag_{name}CenterAll"] = bool(((box & b) != 0).all())
    return out


def test_matches_numpy_reference():
    rng = np.random.default_rng(2)
    shape = (40, 50)
    mi = MaskedImage(np.zeros(shape, np.float32), xy0=(10, 20))
    planes = mi.mask.planes
    # sparse random planes, plus a block that is entirely SAT + CR
    for plane in set(ANY.values()):
        mi.mask.array[rng.random(shape) < 0.02] |= planes.get_plane_bitmask(plane)
    mi.mask.array[10:15, 10:15] |= planes.get_plane_bitmask("SAT", "CR")
    n = 60
    x = rng.uniform(5, 65, n)
    y = rng.uniform(15, 65, n)
    x[:5] = 22 + rng.uniform(-0.4, 0.4, 5)   # inside the SAT block (parent 20..24, 30..34)
    y[:5] = 32 + rng.uniform(-0.4, 0.4, 5)
    x[5] = np.nan
    fps, pix = [], []
    for k in range(n):
        cx = int(np.nan_to_num(x[k], nan=30.0))
        cy = int(y[k])
        r = int(rng.integers(0, 4))
        spans = [[yy, cx - r - 2, cx + r] for yy in range(cy - r, cy + r + 1)] if k != 6 else np.zeros((0, 3))
        fp = Footprint(np.array(spans, dtype=np.int32).reshape(-1, 3))
        fps.append(fp)
        ys, xs = fp.indices()
        pix.append(list(zip(xs.tolist(), ys.tolist())))
    out = pixel_flags(mi, x, y, fps)
    assert set(out) == set(schema())
    for k in range(n):
        ref = reference(mi.mask.array, planes, x[k], y[k], pix[k], 10, 20)
        for key, val in ref.items():
            assert out[key][k] == val, (k, key)
    assert out[f"{P}_flag_saturatedCenterAll"][:5].all() and out[f"{P}_flag_crCenterAll"][:5].all()
    assert out[f"{P}_flag"][5] and out[f"{P}_flag_offimage"].any()
    # the flat (spans, offsets) form gives the same answer
    spans = np.concatenate([f.spans for f in fps])
    offsets = np.r_[0, np.cumsum([len(f.spans) for f in fps])]
    flat = pixel_flags(mi, x, y, (spans, offsets))
    for key in out:
        np.testing.assert_array_equal(out[key], flat[key])


def test_names():
    names = flag_names()
    assert names[0] == "flag" and "flag_offimage" in names and "flag_nodata" in names
    for n in ("interpolated", "saturated", "cr", "suspect", "bad", "streak"):
        assert f"flag_{n}Center" in names and f"flag_{n}CenterAll" in names
