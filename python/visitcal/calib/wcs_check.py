"""Checks a fitted WCS must pass before it is kept (DESIGN: "a WCS with a small residual and no fold-over").

A polynomial WCS fitted to a few dozen stars is only constrained where the stars are; between and beyond
them it can bend until the mapping folds over (two pixels on one sky position) or its pixel area changes by
a factor no optics produce. `check_wcs` evaluates the local linear map (the Jacobian of pixel -> tangent
plane, `visitcal.core.wcs.local_cd_matrix`) on a grid spanning the whole detector, corners included:

- every value finite;
- the determinant keeps the sign it has at the detector's centre (no fold-over);
- its magnitude (the pixel area) stays within a factor ``max_area_ratio`` of the centre's.

The residual at the stars is the other check; `AstrometryTask` applies it (``max_mean_distance_arcsec``).
"""

from __future__ import annotations

import numpy as np

from ..core.wcs import local_cd_matrix
from .errors import AstrometryFitError

__all__ = ["check_wcs"]


def check_wcs(wcs, bbox, *, n_grid: int = 21, max_area_ratio: float = 2.0) -> dict:
    """Raise `AstrometryFitError` unless ``wcs`` is finite, does not fold over and keeps its pixel area over
    ``bbox``.

    Parameters
    ----------
    wcs : `astropy.wcs.WCS`
        The WCS to check (0-based pixels).
    bbox : (float, float, float, float)
        ``(xmin, xmax, ymin, ymax)`` pixels: the detector's full area (pixel edges).
    n_grid : int
        Grid points per axis (>= 2).
    max_area_ratio : float
        Largest ratio (either way) of the local pixel area to the centre's.

    Returns
    -------
    dict
        ``min_area_ratio`` and ``max_area_ratio`` found on the grid.

    Raises
    ------
    AstrometryFitError
        ``reason`` ``"non_finite"`` (the WCS gives NaN or inf somewhere on the detector), ``"fold_over"``
        (the Jacobian determinant changes sign; ``n_bad`` points) or ``"area_change"`` (``ratio``).
    """
    xmin, xmax, ymin, ymax = (float(v) for v in bbox)
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, n_grid), np.linspace(ymin, ymax, n_grid))
    with np.errstate(all="ignore"):
        det = np.linalg.det(local_cd_matrix(wcs, gx.ravel(), gy.ravel()))
        det_c = float(np.linalg.det(local_cd_matrix(wcs, 0.5 * (xmin + xmax), 0.5 * (ymin + ymax))))
    if not (np.all(np.isfinite(det)) and np.isfinite(det_c) and det_c != 0):
        raise AstrometryFitError(f"the WCS is not finite over the detector ({int((~np.isfinite(det)).sum())} of "
                                 f"{det.size} grid points)", reason="non_finite", argument="wcs",
                                 n_bad=int((~np.isfinite(det)).sum()))
    ratio = det / det_c
    folded = ratio <= 0
    if folded.any():
        raise AstrometryFitError(f"the WCS folds over inside the detector: its Jacobian changes sign at "
                                 f"{int(folded.sum())} of {det.size} grid points", reason="fold_over",
                                 n_bad=int(folded.sum()))
    lo, hi = float(ratio.min()), float(ratio.max())
    if lo < 1.0 / max_area_ratio or hi > max_area_ratio:
        worst = lo if 1.0 / lo > hi else hi
        raise AstrometryFitError(f"the WCS's pixel area changes by a factor {worst:.3g} over the detector "
                                 f"(limit {max_area_ratio:g})", reason="area_change", ratio=worst)
    return {"min_area_ratio": lo, "max_area_ratio": hi}
