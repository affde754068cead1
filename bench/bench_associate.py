"""Isolated-star association, one core (issue 8).

Scene (seeded): 20000 point sources uniformly over a 1 x 1 deg tract at (150, -30) (Poisson, so ~1.7%
have a neighbour within 2"), each observed in 24 visits (8 per band in r, i, g) with 0.05" scatter:
480000 single-visit sources in 24 tables with the afw columns of ``single_visit_star``.

Timed (best and median of --repeat after a warm-up):
1. Friends-of-friends of the 160000 r-band sources at 1" (`fof_groups`, the C++ spherical grid hash),
   beside scipy's cKDTree ``query_pairs`` on unit vectors + ``connected_components`` (the peer); the
   partitions are compared.
2. The nested HEALPix pixels (nside 32, LSST's ``nside_split``) of the 480000 sources that order the star
   table (`healpix_nest_pixel`, C++), beside ``hpgeom.angle_to_pixel`` (the peer, when installed); the
   pixels are compared.
3. `IsolatedStarAssociationTask.run` end to end on the 24 tables (selection, FoF per band, dedup,
   isolation, crop, source association, sorting, tables).
4. With ``--repo PATH``: the ``associate`` step on a calibrated repository (``run_associate(overwrite=True)``,
   reading included).

Run from the repository root: ``python bench/bench_associate.py`` [--repeat N] [--cpu C] [--repo PATH].
"""

from __future__ import annotations

import argparse

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np

RA0, DEC0 = 150.0, -30.0
ARCSEC = 1.0 / 3600.0


def scene(n_star=20000, visits_per_band=8, bands=("r", "i", "g"), seed=1):
    from astropy.table import Table

    rng = np.random.default_rng(seed)
    cosd = np.cos(np.radians(DEC0))
    ra = RA0 + rng.uniform(-0.45, 0.45, n_star) / cosd
    dec = DEC0 + rng.uniform(-0.45, 0.45, n_star)
    tables = []
    for b in bands:
        for v in range(visits_per_band):
            n = n_star
            t = Table()
            t["id"] = np.arange(n, dtype=np.int64) + 10**9 * (len(tables) + 1)
            t["parent"] = np.zeros(n, np.int64)
            t["deblend_nChild"] = np.zeros(n, np.int32)
            t["detect_isPrimary"] = np.ones(n, bool)
            t["coord_ra"] = np.radians(ra + rng.normal(0, 0.05, n) * ARCSEC / cosd)
            t["coord_dec"] = np.radians(dec + rng.normal(0, 0.05, n) * ARCSEC)
            for c in ("x", "y", "xErr", "yErr"):
                t[f"base_SdssCentroid_{c}"] = rng.uniform(0, 4000, n)
            t["base_SdssCentroid_flag"] = np.zeros(n, bool)
            for f in ("edge", "interpolatedCenter", "saturatedCenter", "crCenter", "bad", "interpolated",
                      "saturated"):
                t[f"base_PixelFlags_flag_{f}"] = np.zeros(n, bool)
            t["base_NormalizedCompensatedTophatFlux_instFlux"] = np.full(n, 1000.0)
            t["base_NormalizedCompensatedTophatFlux_instFluxErr"] = np.full(n, 10.0)
            t["base_NormalizedCompensatedTophatFlux_flag"] = np.zeros(n, bool)
            t["base_ClassificationSizeExtendedness_value"] = np.zeros(n)
            for r in ("12_0", "17_0"):
                t[f"base_CircularApertureFlux_{r}_instFlux"] = np.full(n, 900.0)
                t[f"base_CircularApertureFlux_{r}_instFluxErr"] = np.full(n, 9.0)
                t[f"base_CircularApertureFlux_{r}_flag"] = np.zeros(n, bool)
            t["base_LocalBackground_instFlux"] = np.zeros(n)
            t["base_LocalBackground_flag"] = np.zeros(n, bool)
            for m in ("xx", "yy", "xy"):
                t[f"base_SdssShape_{m}"] = np.full(n, 4.0)
            t["visit"] = np.full(n, len(tables) + 1, np.int64)
            t["detector"] = np.zeros(n, np.int16)
            t["band"] = np.full(n, b)
            t["physical_filter"] = np.full(n, b + "_sim")
            t.meta["slots"] = {"Centroid": "base_SdssCentroid", "Shape": "base_SdssShape"}
            tables.append(t)
    return tables


def peer_fof(ra, dec, link_arcsec):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    a, d = np.radians(ra), np.radians(dec)
    xyz = np.c_[np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)]
    pairs = cKDTree(xyz).query_pairs(2 * np.sin(np.radians(link_arcsec / 3600.0) / 2), output_type="ndarray")
    n = len(ra)
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)


def same_partition(a, b):
    # two labelings agree iff the (a, b) pairs biject
    pairs = np.unique(np.c_[a, b], axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--repo", default=None, help="a calibrated repository to time the associate step on")
    args = ap.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("isolated-star association (issue 8)", cpu)

    from visitcal.tasks.isolated_star_association import IsolatedStarAssociationTask, fof_groups
    from visitcal.core.skymap import SimpleSkyMap

    tables = scene()
    r_tabs = [t for t in tables if t["band"][0] == "r"]
    ra = np.degrees(np.concatenate([np.asarray(t["coord_ra"]) for t in r_tabs]))
    dec = np.degrees(np.concatenate([np.asarray(t["coord_dec"]) for t in r_tabs]))
    t_fof = _common.time_it(lambda: fof_groups(ra, dec, 1.0), args.repeat)
    t_peer = _common.time_it(lambda: peer_fof(ra, dec, 1.0), args.repeat)
    ours, n_ours = fof_groups(ra, dec, 1.0)
    n_peer, peer = peer_fof(ra, dec, 1.0)
    agree = bool(n_ours == n_peer and same_partition(ours, peer))

    from visitcal.calib.healpix import healpix_nest_pixel

    ra_all = np.degrees(np.concatenate([np.asarray(t["coord_ra"]) for t in tables]))
    dec_all = np.degrees(np.concatenate([np.asarray(t["coord_dec"]) for t in tables]))
    t_hp = _common.time_it(lambda: healpix_nest_pixel(32, ra_all, dec_all), args.repeat)
    try:
        import hpgeom
    except ImportError:
        hpgeom = None
    if hpgeom is not None:
        t_hpg = _common.time_it(lambda: hpgeom.angle_to_pixel(32, ra_all, dec_all), args.repeat)
        hp_agree = bool(np.array_equal(healpix_nest_pixel(32, ra_all, dec_all),
                                       hpgeom.angle_to_pixel(32, ra_all, dec_all)))

    sky = SimpleSkyMap(ra0=RA0, dec0=DEC0)
    task = IsolatedStarAssociationTask()
    res = task.run(tables, 60, sky)
    t_task = _common.time_it(lambda: task.run(tables, 60, sky), args.repeat)
    rows = [
        [f"fof_groups, {ra.size} r sources at 1\" (ours, C++)", t_fof.best, t_fof.median],
        ["  scipy cKDTree.query_pairs + connected_components (peer)", t_peer.best, t_peer.median],
        [f"healpix_nest_pixel, {ra_all.size} sources at nside 32 (ours, C++)", t_hp.best, t_hp.median],
    ]
    if hpgeom is not None:
        rows.append(["  hpgeom.angle_to_pixel (peer)", t_hpg.best, t_hpg.median])
    rows += [
        [f"IsolatedStarAssociationTask.run, {sum(len(t) for t in tables)} sources in {len(tables)} tables",
         t_task.best, t_task.median],
    ]
    payload = {"fof_agrees_with_scipy": agree, "healpix_equals_hpgeom": hp_agree if hpgeom is not None else None, "n_groups": n_ours, "n_stars": len(res.star_cat),
               "n_sources": len(res.source_cat)}
    if args.repo:
        from visitcal.pipeline.associate_step import run_associate

        st = run_associate(args.repo, overwrite=True)
        t_step = _common.time_it(lambda: run_associate(args.repo, overwrite=True), args.repeat)
        rows.append([f"associate step on {args.repo} ({sum(s.summary['n_inputs'] for s in st)} detectors, "
                     f"{sum(s.summary['n_stars'] for s in st)} stars)", t_step.best, t_step.median])
    print(_common.format_table(["what", "best s", "median s"], rows, ".3g"))
    print(f"FoF groups {n_ours} (scipy {n_peer}), same partition: {agree}; stars {len(res.star_cat)}, "
          f"sources {len(res.source_cat)}"
          + (f"; HEALPix pixels equal hpgeom's: {hp_agree}" if hpgeom is not None else ""))
    payload["rows"] = [{"what": r[0].strip(), "best_s": r[1], "median_s": r[2]} for r in rows]
    print(f"-> {_common.write_json('bench_associate', payload)}")


if __name__ == "__main__":
    main()
