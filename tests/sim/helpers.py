"""Independent numpy references used by the simulator tests."""

from __future__ import annotations

import numpy as np


def adaptive_moments(image: np.ndarray, *, x0: float | None = None, y0: float | None = None,
                     sigma: float = 2.0, max_iter: int = 500, tol: float = 1e-11):
    """Adaptive (elliptical-Gaussian-weighted) moments of ``image`` (y, x): ``(x, y, ixx, iyy, ixy)``.

    The fixed point of ``M = 2 <d d^T>_w`` with weight ``exp(-d^T M^-1 d / 2)`` and the centroid
    ``<x>_w``, as in Bernstein & Jarvis (2002) and SdssShape; pixel indices are the coordinates.
    """
    ny, nx = image.shape
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    cx = (nx - 1) / 2 if x0 is None else x0
    cy = (ny - 1) / 2 if y0 is None else y0
    m = np.array([[sigma**2, 0.0], [0.0, sigma**2]])
    for _ in range(max_iter):
        inv = np.linalg.inv(m)
        dx, dy = xx - cx, yy - cy
        w = np.exp(-0.5 * (inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy))
        iw = image * w
        s = iw.sum()
        ncx, ncy = (iw * xx).sum() / s, (iw * yy).sum() / s
        dx, dy = xx - ncx, yy - ncy
        new = 2.0 * np.array([[(iw * dx * dx).sum(), (iw * dx * dy).sum()],
                              [(iw * dx * dy).sum(), (iw * dy * dy).sum()]]) / s
        done = np.max(np.abs(new - m)) < tol and abs(ncx - cx) < tol and abs(ncy - cy) < tol
        m, cx, cy = new, ncx, ncy
        if done:
            break
    else:
        raise RuntimeError("adaptive moments did not converge")
    return cx, cy, m[0, 0], m[1, 1], m[0, 1]


def combined_snaps(sim_repo, visit, detector, *, mask_cosmic_rays: bool = False):
    """The snap-summed exposure minus the summed true background (as reprocessing's snap combine and
    background subtraction give), and the true cosmic-ray pixels ``(x, y)`` of all snaps; with
    ``mask_cosmic_rays`` those pixels get the CR plane (a perfect repair's mask)."""
    n_snaps = sim_repo.manifest["n_snaps"]
    exp = sim_repo.post_isr_image(visit, detector, 0)
    mi = exp.masked_image
    image = mi.image.astype(np.float64) - sim_repo.true_background(visit, detector, 0).evaluate_image()
    for snap in range(1, n_snaps):
        other = sim_repo.post_isr_image(visit, detector, snap).masked_image
        image += other.image - sim_repo.true_background(visit, detector, snap).evaluate_image()
        mi.variance[:] += other.variance
        mi.mask.array[:] |= other.mask.array
    mi.image[:] = image.astype(np.float32)
    crs = [sim_repo.cosmic_rays(visit, detector, snap) for snap in range(n_snaps)]
    cr_xy = (np.concatenate([np.asarray(c["x"]) for c in crs]), np.concatenate([np.asarray(c["y"]) for c in crs]))
    if mask_cosmic_rays and len(cr_xy[0]):
        hit = np.zeros(mi.image.shape, bool)
        hit[np.asarray(cr_xy[1], int), np.asarray(cr_xy[0], int)] = True
        mi.mask.set("CR", hit)
    return exp, cr_xy
