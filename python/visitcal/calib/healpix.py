"""HEALPix pixel indices in the NESTED scheme (Gorski et al. 2005, ApJ 622, 759), computed in C++
(``cpp/include/visitcal/calib/healpix.hpp``).

`healpix_nest_pixel` returns what ``hpgeom.angle_to_pixel(nside, ra, dec)`` returns (``nest=True``,
``lonlat=True``, ``degrees=True``), bit for bit, including points on pixel boundaries (same floating-point
path; tests/unit/calib/test_healpix_nest.py), without making hpgeom a run-time dependency. LSST's
``IsolatedStarAssociationTask`` orders its star table by the nested nside-32 pixel of each star
(`visitcal.tasks.isolated_star_association`).
"""

from __future__ import annotations

import numpy as np

from .. import _core

__all__ = ["HEALPIX_MAX_NSIDE", "healpix_nest_pixel"]

#: Largest nside accepted: 2**29 (12 * 4**29 pixels still fit an int64).
HEALPIX_MAX_NSIDE = 2**29


def healpix_nest_pixel(nside: int, ra, dec) -> np.ndarray:
    """Nested HEALPix pixel of each sky position.

    Parameters
    ----------
    nside : int
        Resolution: a power of two from 1 to ``2**29`` (``12 * nside**2`` pixels).
    ra, dec : array_like of float
        Positions in degrees, of one shape. RA is taken modulo 360; Dec must lie in [-90, 90].

    Returns
    -------
    pixel : `numpy.ndarray` of int64
        Shaped as ``ra``: the nested pixel index in ``[0, 12 nside**2)``, or -1 where RA or Dec is not
        finite (so such rows can be masked rather than failing a whole table).

    Raises
    ------
    TypeError
        ``nside`` is not an integer.
    ValueError
        ``nside`` is not a power of two in [1, 2**29], the shapes differ, or a finite Dec is outside
        [-90, 90] degrees.

    Notes
    -----
    The inputs are read in place when they are C-contiguous float64 arrays (no copy); the computation
    runs without the GIL.
    """
    if isinstance(nside, bool) or not isinstance(nside, (int, np.integer)):
        raise TypeError(f"nside must be an integer power of two, got {nside!r}")
    nside = int(nside)
    if not (1 <= nside <= HEALPIX_MAX_NSIDE and nside & (nside - 1) == 0):
        raise ValueError(f"nside must be a power of two from 1 to 2**29, got {nside}")
    ra = np.asarray(ra, dtype=np.float64, order="C")
    dec = np.asarray(dec, dtype=np.float64, order="C")
    if ra.shape != dec.shape:
        raise ValueError(f"healpix_nest_pixel: ra and dec must have one shape, got {ra.shape} and {dec.shape}")
    return _core.healpix_nest_pixel(nside, ra.reshape(-1), dec.reshape(-1)).reshape(ra.shape)
