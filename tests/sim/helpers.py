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


def product_digests(root, *, skip=("provenance/", "post_isr_image/", "truth/"),
                    parquet_content: bool = False) -> dict[str, str]:
    """``{path relative to root: sha256}`` of every ``.fits`` and ``.parquet`` product under ``root``, leaving
    out the folders in ``skip`` (provenance records timings; the inputs are not products).

    With ``parquet_content`` a Parquet file is hashed by content (its schema with visitcal's metadata and its
    columns, as one Arrow IPC stream) instead of by its bytes, which also record the writing pyarrow's version:
    for digests stored in the repository. FITS files are always hashed whole (visitcal writes their bytes).
    """
    import hashlib
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not (path.is_file() and path.suffix in (".fits", ".parquet")) or rel.startswith(tuple(skip)):
            continue
        if parquet_content and path.suffix == ".parquet":
            table = pq.read_table(path).combine_chunks()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            out[rel] = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
        else:
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


# --- LSST's isolated-star order and reserve, written out plainly (issue 24) ----------------------------------

def _unit_vectors(ra, dec):
    a, d = np.radians(np.asarray(ra, np.float64)), np.radians(np.asarray(dec, np.float64))
    return np.column_stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)])


def _chord(arcsec: float) -> float:
    return 2.0 * np.sin(np.radians(arcsec / 3600.0) / 2.0)


def scipy_fof(ra, dec, link_arcsec):
    """Friends-of-friends labels as smatch's ``query_groups`` gives them: the pairs within ``link_arcsec``
    (a k-d tree on unit vectors) as a graph, labelled by scipy's ``connected_components``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(ra)
    pairs = cKDTree(_unit_vectors(ra, dec)).query_pairs(_chord(link_arcsec), output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def lsst_mean_position(ra, dec):
    """A group's mean RA/Dec (deg) as LSST takes it: the mean Dec, and the mean RA about the first member's
    RA (so a group across RA = 0/360 is averaged correctly), wrapped to [0, 360)."""
    ra = np.asarray(ra, np.float64)
    d_ra = np.mod(ra - ra[0] + 180.0, 360.0) - 180.0
    return float(np.mod(ra[0] + d_ra.mean(), 360.0)), float(np.mean(dec))


def lsst_primary_stars(ra, dec, band, *, band_order, match_radius, nside):
    """LSST's primary stars, in LSST's order, from the selected sources (deg; in input order).

    For each band of ``band_order``: the band's sources; their nested HEALPix pixels at ``nside`` (hpgeom);
    for each pixel in increasing order, the band's sources in the pixel and its eight neighbours (wider
    than LSST's border ring, so the groups are whole), friends-of-friends (`scipy_fof`), and, in label
    order, the groups whose mean position lies in the pixel. Then the band's stars within ``match_radius``
    of an earlier band's star are dropped. Returns (ra, dec, band) arrays.
    """
    import hpgeom
    from scipy.spatial import cKDTree

    ra, dec, band = np.asarray(ra, np.float64), np.asarray(dec, np.float64), np.asarray(band).astype(str)
    out_ra, out_dec, out_band = [], [], []
    for b in band_order:
        idx = np.flatnonzero(band == b)
        if idx.size == 0:
            continue
        pix = hpgeom.angle_to_pixel(nside, ra[idx], dec[idx])
        band_ra, band_dec = [], []
        for p in np.unique(pix):
            near = np.append(hpgeom.neighbors(nside, p), p)
            sub = idx[np.isin(pix, near)]
            labels = scipy_fof(ra[sub], dec[sub], match_radius)
            for g in range(labels.max() + 1):
                members = sub[labels == g]
                mra, mdec = lsst_mean_position(ra[members], dec[members])
                if hpgeom.angle_to_pixel(nside, mra, mdec) == p:
                    band_ra.append(mra)
                    band_dec.append(mdec)
        band_ra, band_dec = np.array(band_ra), np.array(band_dec)
        if out_ra:
            tree = cKDTree(_unit_vectors(out_ra, out_dec))
            dist, _ = tree.query(_unit_vectors(band_ra, band_dec), k=1)
            new = dist > _chord(match_radius)
            band_ra, band_dec = band_ra[new], band_dec[new]
        out_ra += band_ra.tolist()
        out_dec += band_dec.tolist()
        out_band += [b] * band_ra.size
    return np.array(out_ra), np.array(out_dec), np.array(out_band, dtype=str)


def lsst_isolated_stars(ra, dec, band, *, tract, skymap, band_order=("i", "z", "r", "g", "y", "u"),
                        match_radius=1.0, isolation_radius=2.0, nside=32):
    """LSST's isolated-star table rows from the selected sources (deg, input order): `lsst_primary_stars`,
    then the stars with another star within ``isolation_radius`` removed, the crop to the tract's inner
    region, and the stars no source matches (nearest star within ``match_radius``) dropped; the order kept.

    Returns a dict: ``ra``, ``dec``, ``primary_band`` and ``nsource_<band>`` per row.
    """
    from scipy.spatial import cKDTree

    sra, sdec, sband = lsst_primary_stars(ra, dec, band, band_order=band_order, match_radius=match_radius,
                                          nside=nside)
    if sra.size:
        tree = cKDTree(_unit_vectors(sra, sdec))
        crowded = np.array([len(n) > 1 for n in tree.query_ball_point(_unit_vectors(sra, sdec),
                                                                      _chord(isolation_radius))])
        keep = ~crowded & skymap.contains(tract, sra, sdec, inner=True)
        sra, sdec, sband = sra[keep], sdec[keep], sband[keep]
    counts = {b: np.zeros(sra.size, int) for b in band_order}
    if sra.size and len(ra):
        dist, star = cKDTree(_unit_vectors(sra, sdec)).query(_unit_vectors(ra, dec), k=1)
        matched = dist <= _chord(match_radius)
        for s, b in zip(star[matched], np.asarray(band).astype(str)[matched]):
            counts[b][s] += 1
    used = np.sum(list(counts.values()), axis=0) > 0
    out = {"ra": sra[used], "dec": sdec[used], "primary_band": sband[used]}
    out.update({f"nsource_{b}": c[used] for b, c in counts.items()})
    return out


def selected_sources(repo, tract: int, skymap):
    """The association's input, re-selected: every single_visit_star in (visit, detector) order, the rows
    passing the selector, finite, in ``band_order`` and in the tract's outer region; a deblended child only
    without another childless detected source within the isolation radius. (ra, dec, band) in input order."""
    from scipy.spatial import cKDTree
    from visitcal.io import read_catalog
    from visitcal.measurement.source_selector import ScienceSourceSelectorTask
    from visitcal.tasks.isolated_star_association import IsolatedStarAssociationConfig

    cfg = IsolatedStarAssociationConfig()
    selector = ScienceSourceSelectorTask(cfg.source_selector)
    chord = 2 * np.sin(np.radians(cfg.isolation_radius / 3600.0) / 2)
    ra_all, dec_all, band_all = [], [], []
    for _, path in sorted(repo.single_visit_star_paths().items()):
        t = read_catalog(path)
        keep = selector.run(t)
        ra, dec = np.degrees(np.asarray(t["coord_ra"])), np.degrees(np.asarray(t["coord_dec"]))
        keep &= np.isfinite(ra) & np.isfinite(dec) & np.isin(np.asarray(t["band"]).astype(str), cfg.band_order)
        leaf = np.flatnonzero((np.asarray(t["deblend_nChild"]) == 0) & np.isfinite(ra) & np.isfinite(dec))
        tree = cKDTree(_unit_vectors(ra[leaf], dec[leaf]))
        for i in np.flatnonzero(keep & (np.asarray(t["parent"]) != 0)):
            keep[i] = len(tree.query_ball_point(_unit_vectors(ra[i:i + 1], dec[i:i + 1])[0], chord)) <= 1  # itself only
        keep[keep] &= skymap.contains(tract, ra[keep], dec[keep], inner=False)
        ra_all.append(ra[keep])
        dec_all.append(dec[keep])
        band_all.append(np.asarray(t["band"]).astype(str)[keep])
    return np.concatenate(ra_all), np.concatenate(dec_all), np.concatenate(band_all)


def lsst_reserved(nstar: int, band: str, tract: int, *, fraction: float = 0.1) -> np.ndarray:
    """LSST's ReserveIsolatedStarsTask draw (lsst-spec §4.4): name ``"reserved_<band>_<tract>"``, seed = the
    SHA-256 digest's low 32 bits, the first floor(f N) of N flags True, shuffled by numpy's default_rng."""
    import hashlib

    seed = int(hashlib.sha256(f"reserved_{band}_{tract}".encode("utf-8")).hexdigest(), 16) & 0xFFFFFFFF
    flags = np.zeros(nstar, dtype=bool)
    flags[: int(nstar * fraction)] = True
    np.random.default_rng(seed).shuffle(flags)
    return flags


def check_lsst_rows_and_reserve(root, band: str) -> dict:
    """Assert, for every tract of the finalized repository ``root``, that the isolated-star table's rows are
    `lsst_isolated_stars`' rows from `selected_sources` (same stars, same order, same primary band and
    ``nsource_<band>``), and that every isolated source FinalizeCharacterization used as a PSF candidate
    carries LSST's reserve flag (`lsst_reserved` over that order). Returns counts: the nested nside-32
    pixels of the stars, the (source, flag) pairs checked and the reserved ones among them, and how many of
    LSST's reserved stars a (band, first source) order would also reserve (nside 1: one pixel)."""
    import hpgeom
    from visitcal.core.skymap import load_skymap
    from visitcal.io import read_catalog
    from visitcal.pipeline.repository import Repository

    def sep_arcsec(ra1, dec1, ra2, dec2):
        chord = np.linalg.norm(_unit_vectors(ra1, dec1) - _unit_vectors(ra2, dec2), axis=1)
        return np.degrees(2 * np.arcsin(chord / 2)) * 3600.0

    def reserved_positions(ref, tract):
        use = np.flatnonzero(ref[f"nsource_{band}"] > 0)
        drawn = np.zeros(len(ref["ra"]), bool)
        drawn[use] = lsst_reserved(len(use), band, tract)
        return drawn, set(zip(np.round(ref["ra"][drawn], 7).tolist(), np.round(ref["dec"][drawn], 7).tolist()))

    repo = Repository(root)
    skymap = load_skymap(repo.root / "skymap.json")
    out = {"pixels": set(), "checked": 0, "reserved_seen": 0, "reserved": 0, "reserved_by_old_order": 0}
    for path in sorted((repo.root / "isolated_star_association").glob("*.parquet")):
        tract = int(path.stem.rsplit("_", 1)[1])
        stars = read_catalog(path)
        ra, dec, bands = selected_sources(repo, tract, skymap)
        ref = lsst_isolated_stars(ra, dec, bands, tract=tract, skymap=skymap)
        # the rows: the same stars in the same order (LSST's arithmetic mean and our unit-vector mean differ
        # by ~1e-9 arcsec for 1"-wide groups)
        assert len(stars) == len(ref["ra"]), (tract, len(stars), len(ref["ra"]))
        if len(stars) == 0:
            continue
        assert np.all(sep_arcsec(np.asarray(stars["ra"]), np.asarray(stars["dec"]), ref["ra"], ref["dec"]) < 1e-6)
        assert list(stars["primary_band"]) == list(ref["primary_band"])
        np.testing.assert_array_equal(stars[f"nsource_{band}"], ref[f"nsource_{band}"])
        out["pixels"] |= set(hpgeom.angle_to_pixel(32, ref["ra"], ref["dec"]).tolist())
        drawn, reserved = reserved_positions(ref, tract)
        _, reserved_old = reserved_positions(lsst_isolated_stars(ra, dec, bands, tract=tract, skymap=skymap, nside=1),
                                             tract)
        out["reserved"] += len(reserved)
        out["reserved_by_old_order"] += len(reserved & reserved_old)
        # what finalize flagged, in every visit and detector
        sources = read_catalog(repo.tract_dataset_path("isolated_star", tract, "parquet"))
        star_of = dict(zip(np.asarray(sources["sourceId"]).tolist(), np.asarray(sources["obj_index"]).tolist()))
        for visit in sorted({v for v, _ in repo.data_ids()}):
            table = read_catalog(repo.root / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet")
            for sid, flag in zip(np.asarray(table["id"]).tolist(), np.asarray(table["calib_psf_reserved"])):
                if sid in star_of:
                    assert bool(flag) == bool(drawn[star_of[sid]]), (tract, visit, sid)
                    out["checked"] += 1
                    out["reserved_seen"] += bool(flag)
    return out

