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


def isolated_star_tables(sim_repo, sources_by_data_id, *, tracts=(9813,), match_radius_px: float = 1.0,
                         isolation_radius_arcsec: float = 2.0):
    """Isolated-star tables in lsst-spec §3's format, built from the simulator's truth instead of the
    association task: the true stars with no other true object (star or galaxy) within
    ``isolation_radius_arcsec``, each associated with the calibrated sources (top level, not deblended,
    not sky sources) lying within ``match_radius_px`` of its true position in that visit and detector.

    ``sources_by_data_id`` maps ``(visit, detector)`` to the calibrated source table (``single_visit_star``).
    With several ``tracts`` the stars are dealt to them by RA (equal-count strips, sorted by RA), so every
    tract has its own star and source tables.

    Returns ``(star_dict, source_dict, truth_id_of_star)``: tract -> star table, tract -> source table, and
    tract -> the true object id of each star-table row.
    """
    from astropy.table import Table

    band = sim_repo.band
    objects = sim_repo.objects()
    uniq_ids, first = np.unique(np.asarray(objects["id"]), return_index=True)
    ra = np.asarray(objects["ra"])[first]
    dec = np.asarray(objects["dec"])[first]
    is_star = np.asarray(objects["is_star"])[first]
    # isolation on the sky (all objects, flat-sky within a few arcmin)
    cosd = np.cos(np.deg2rad(np.mean(dec)))
    xs, ys = ra * cosd * 3600.0, dec * 3600.0
    order = np.argsort(xs)
    isolated = np.ones(uniq_ids.size, bool)
    xs_sorted = xs[order]
    for k in range(uniq_ids.size):
        lo = np.searchsorted(xs_sorted, xs[k] - isolation_radius_arcsec)
        hi = np.searchsorted(xs_sorted, xs[k] + isolation_radius_arcsec)
        j = order[lo:hi]
        d2 = (xs[j] - xs[k]) ** 2 + (ys[j] - ys[k]) ** 2
        isolated[k] = np.sum(d2 < isolation_radius_arcsec**2) == 1
    keep_star = is_star & isolated
    star_index = np.full(uniq_ids.size, -1, np.int64)
    # associate the calibrated sources
    assoc = []  # (star position in uniq_ids, sourceId, visit, detector, x, y)
    for (visit, detector), src in sorted(sources_by_data_id.items()):
        truth = sim_repo.objects(visit, detector)
        truth = truth[np.asarray(truth["is_star"]) & np.asarray(truth["inside"])]
        pos = np.searchsorted(uniq_ids, np.asarray(truth["id"]))
        truth_ok = keep_star[pos]
        tx, ty, tpos = np.asarray(truth["x"])[truth_ok], np.asarray(truth["y"])[truth_ok], pos[truth_ok]
        top = (np.asarray(src["parent"]) == 0) & (np.asarray(src["deblend_nChild"]) == 0)
        if "sky_source" in src.colnames:
            top &= ~np.asarray(src["sky_source"], bool)
        sx = np.asarray(src["base_SdssCentroid_x"])
        sy = np.asarray(src["base_SdssCentroid_y"])
        for r in np.flatnonzero(top & np.isfinite(sx) & np.isfinite(sy)):
            d2 = (tx - sx[r]) ** 2 + (ty - sy[r]) ** 2
            if d2.size == 0:
                continue
            j = int(np.argmin(d2))
            if d2[j] < match_radius_px**2:
                assoc.append((tpos[j], int(src["id"][r]), visit, detector, sx[r], sy[r]))
    if not assoc:
        raise ValueError("no calibrated source matched an isolated true star")
    a = np.array([row[0] for row in assoc], np.int64)
    used = np.unique(a)
    # tracts: equal-count RA strips of the used stars
    strips = np.array_split(used[np.argsort(ra[used], kind="stable")], len(tracts))
    star_dict, source_dict, truth_dict = {}, {}, {}
    for tract, members in zip(tracts, strips):
        members = np.sort(members)
        star_index[:] = -1
        star_index[members] = np.arange(members.size)
        rows = [k for k in range(len(assoc)) if star_index[a[k]] >= 0]
        rows.sort(key=lambda k: (star_index[a[k]], assoc[k][2], assoc[k][3], assoc[k][1]))
        obj_index = np.array([star_index[a[k]] for k in rows], np.int64)
        sources = Table()
        sources["sourceId"] = np.array([assoc[k][1] for k in rows], np.int64)
        sources["obj_index"] = obj_index
        sources["visit"] = np.array([assoc[k][2] for k in rows], np.int64)
        sources["detector"] = np.array([assoc[k][3] for k in rows], np.int32)
        sources["ra"] = ra[a[rows]]
        sources["dec"] = dec[a[rows]]
        sources["band"] = np.full(len(rows), band)
        sources["x"] = np.array([assoc[k][4] for k in rows])
        sources["y"] = np.array([assoc[k][5] for k in rows])
        nsource = np.bincount(obj_index, minlength=members.size)
        first_row = np.concatenate([[0], np.cumsum(nsource)[:-1]])
        stars = Table()
        stars["isolated_star_id"] = (np.arange(members.size, dtype=np.int64) + 1) * 100000 + tract
        stars["ra"] = ra[members]
        stars["dec"] = dec[members]
        stars["primary_band"] = np.full(members.size, band)
        stars["source_cat_index"] = first_row.astype(np.int64)
        stars["nsource"] = nsource.astype(np.int32)
        stars[f"source_cat_index_{band}"] = first_row.astype(np.int64)
        stars[f"nsource_{band}"] = nsource.astype(np.int32)
        star_dict[tract], source_dict[tract], truth_dict[tract] = stars, sources, uniq_ids[members]
    return star_dict, source_dict, truth_dict


#: The small repository of the chain-level tests (run, Dask, kill -9): 2 visits x 2 detectors of
#: 1024 x 1024 px, dense enough for every step with ``--preset sparse``.
CHAIN_SIM = dict(preset="small", n_visits=2, n_detectors=2, detector_width=1024, detector_height=1024, n_snaps=1,
                 seed=5, star_density=120000.0)


def product_digests(root, *, skip=("provenance/", "post_isr_image/", "truth/")) -> dict[str, str]:
    """``{path relative to root: sha256}`` of every ``.fits`` and ``.parquet`` product under ``root``, leaving
    out the folders in ``skip`` (provenance records timings; the inputs are not products)."""
    import hashlib
    from pathlib import Path

    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and path.suffix in (".fits", ".parquet") and not rel.startswith(tuple(skip)):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def clone(sim_repo, dest):
    """A repository sharing the simulation's images (symlinked) with its own outputs."""
    import shutil

    dest.mkdir()
    for name in ("repo.json", "camera.json", "refcat.parquet"):
        shutil.copy(sim_repo.path / name, dest / name)
    (dest / "truth").symlink_to(sim_repo.path / "truth")
    (dest / "post_isr_image").symlink_to(sim_repo.path / "post_isr_image")
    return dest
