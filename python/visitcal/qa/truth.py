"""Truth mode of ``visitcal qa`` (``--truth``): a processed simulated repository against the simulator's truth.

The section (`build`, key ``"truth"``) compares, per detector and pooled over the visit, what the pipeline
produced with what `visitcal.sim` rendered: the refit PSF at the reserved stars against the true PSF, the
fitted WCS against the true WCS on a grid over the detector, the zero point against the true calibration, the
final PSF fluxes of isolated stars against their true fluxes, and the detection completeness of the true
objects. Its per-detector table is the accuracy table users ask for.

The helpers are public: ``bench/bench_matrix.py`` and the ``tests/sim`` accuracy tests compute their figures
with them, so the report, the benchmark and the tests agree by construction. They take a
`visitcal.sim.SimRepository`; GalSim (the ``sim`` extra) is needed only to evaluate the true PSF, and is
imported by `visitcal.sim` lazily, so ``import visitcal.qa`` works without it. `open_truth` raises
`TruthUnavailable` (in words) for a repository that is not a simulation or when GalSim is missing;
`is_simulated` tells without raising.

Conventions: pixel centres at integers (LSST's), positions ``(x, y)``; sky positions in degrees unless named
otherwise (``coord_ra``/``coord_dec`` of the catalogs are radians); zero-point and photometric offsets in
mmag with the sign of ``-2.5 log10(measured / true)`` (positive: the calibrated fluxes are too low).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .figures import draw_detector_outlines, new_figure, thin
from .metrics import Metric, MetricSpec, QaConfig, Threshold, median_error, register, robust_sigma
from .section import HtmlTable, Section

__all__ = ["APERTURE_RADIUS_PX", "GRID", "ISOLATION_LIMIT", "ISOLATION_SIGMA_PX", "MIN_PULLS", "NOTES", "SNR_PHOT",
           "PULL_MIN_COUNT", "PULL_SNR_RANGE", "SNR_PULL",
           "TruthUnavailable", "build", "completeness_50_mag", "completeness_curve", "contamination",
           "detected", "encircled_energy", "is_simulated", "matched_stars", "open_truth", "photometry",
           "psf_errors", "psf_errors_at", "reserved_psf_errors", "shape_vector", "sky_separation_mas",
           "true_zero_point", "wcs_grid", "wcs_offsets_mas", "wcs_vs_truth", "zp_offset_mmag",
           "zp_reference_noise_mmag"]

#: Points per axis of the grid over the whole detector (corners included) on which WCSs are compared.
GRID = 21
#: calibrate's ``slot_CalibFlux`` is normalised to this circular aperture radius (px): the true zero point of
#: the fitted PhotoCalib is the total-flux one plus 2.5 log10 of the true PSF's encircled energy within it.
APERTURE_RADIUS_PX = 12.0
#: Stars measured for the photometry (S/N of the measured PsfFlux above this) ...
SNR_PHOT = 50.0
#: ... and the brighter ones whose pulls give the pull width.
SNR_PULL = 300.0
#: The S/N range of the graded pull width: there fluxErr (photon noise) dominates, so a width of 1 says the
#: errors are right. Above ~300 the calibrations' own error (zero point, ap-corr field, PSF model: a few mmag,
#: which fluxErr does not carry) widens the pulls of even a perfect pipeline (2 mmag at S/N 1000: width 2.1), so
#: the S/N > `SNR_PULL` width is shown but not graded.
PULL_SNR_RANGE = (50.0, 200.0)
#: Fewest S/N > `SNR_PULL` stars whose pulls' robust width is reported (NaN below: one or two pulls have no
#: meaningful width).
MIN_PULLS = 5
#: Gaussian width (px) of the PSF-overlap weight of the truth's isolation (`contamination`) ...
ISOLATION_SIGMA_PX = 2.0
#: ... and the largest neighbour light (relative to the star's own) of an isolated star.
ISOLATION_LIMIT = 1e-3


class TruthUnavailable(RuntimeError):
    """Truth mode cannot run: the repository is not a `visitcal.sim` simulation, or GalSim is missing."""


# --- the truth ----------------------------------------------------------------------------------------------

def is_simulated(root) -> bool:
    """True when ``root`` holds a simulator's truth (``repo.json`` and ``truth/``), which `open_truth` needs.

    Parameters
    ----------
    root : path
        A data repository.
    """
    root = Path(root)
    return (root / "repo.json").is_file() and (root / "truth").is_dir()


def open_truth(root):
    """The simulator's truth of the repository ``root``, a `visitcal.sim.SimRepository`.

    Parameters
    ----------
    root : path
        A data repository written by ``visitcal sim`` (and processed in place or cloned with its truth).

    Raises
    ------
    TruthUnavailable
        ``root`` has no ``repo.json`` or ``truth/`` (not a simulation), its truth is unreadable, or GalSim (the
        ``sim`` extra, which draws the true PSF) is not installed; the message says which.
    """
    root = Path(root)
    if not is_simulated(root):
        missing = [n for n in ("repo.json", "truth/") if not (root / n.rstrip("/")).exists()]
        raise TruthUnavailable(f"{root} is not a simulated repository (no {' or '.join(missing)}): the truth "
                               f"comparisons need one written by `visitcal sim`")
    try:
        import galsim  # noqa: F401 - the true PSF is drawn with it
    except ImportError as err:
        raise TruthUnavailable("the truth comparisons draw the true PSF with GalSim, which is not installed: "
                               "pip install 'visitcal[sim]'") from err
    from ..sim import SimRepository

    try:
        return SimRepository(root)
    except (OSError, ValueError, KeyError) as err:
        raise TruthUnavailable(f"{root}: the simulator's truth is unreadable: {type(err).__name__}: {err}") from err


# --- astrometry -----------------------------------------------------------------------------------------------

def sky_separation_mas(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation (haversine) of positions in degrees, in milliarcseconds."""
    r1, d1, r2, d2 = (np.radians(np.asarray(v, np.float64)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin(0.5 * (d2 - d1)) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(0.5 * (r2 - r1)) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3.6e6


def wcs_grid(bbox, n: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """``n x n`` pixel positions spanning ``bbox`` (a `Box2I`) corner to corner (pixel centres), flattened
    row by row (y outer): ``(x, y)``."""
    gx, gy = np.meshgrid(np.linspace(bbox.min_x, bbox.max_x, n), np.linspace(bbox.min_y, bbox.max_y, n))
    return gx.ravel().astype(float), gy.ravel().astype(float)


def wcs_vs_truth(wcs, true_wcs, bbox, n: int = GRID) -> dict:
    """On-sky distance between ``wcs`` and ``true_wcs`` (astropy WCSs of the parent frame) on the `wcs_grid`
    of ``bbox``: ``{"rms_mas": ..., "max_mas": ...}``."""
    from ..core.wcs import pixel_to_sky

    gx, gy = wcs_grid(bbox, n)
    (ra, dec), (tra, tdec) = pixel_to_sky(wcs, gx, gy), pixel_to_sky(true_wcs, gx, gy)
    sep = sky_separation_mas(ra, dec, tra, tdec)
    return {"rms_mas": float(np.sqrt(np.mean(sep**2))), "max_mas": float(np.max(sep))}


def wcs_offsets_mas(wcs, true_wcs, x, y) -> tuple[np.ndarray, np.ndarray]:
    """East and north offsets (mas) of ``wcs``'s sky positions of pixels ``(x, y)`` from the true WCS's
    (small-angle: ``dRA cos(dec)``, ``dDec``); for drawing the error field."""
    from ..core.wcs import pixel_to_sky

    (ra, dec), (tra, tdec) = pixel_to_sky(wcs, x, y), pixel_to_sky(true_wcs, x, y)
    dra = (np.asarray(ra) - tra + 180.0) % 360.0 - 180.0
    return dra * np.cos(np.radians(tdec)) * 3.6e6, (np.asarray(dec) - tdec) * 3.6e6


# --- zero point -------------------------------------------------------------------------------------------------

def encircled_energy(psf, x, y, radius: float = APERTURE_RADIUS_PX, size: int = 101) -> float:
    """Fraction of ``psf``'s kernel image at ``(x, y)`` (``size`` px square, centred) within ``radius`` px of its
    centre (whole pixels whose centres are within it)."""
    k = np.asarray(psf.compute_kernel_image(x, y, size), np.float64)
    yy, xx = np.mgrid[:size, :size] - size // 2
    return float(k[np.hypot(xx, yy) <= radius].sum() / k.sum())


def true_zero_point(sim, v, d, bbox=None) -> float:
    """The zero point (mag of 1 ADU of the snap sum) of calibrate's ``slot_CalibFlux`` (the 12-px aperture) that
    the truth implies: ``2.5 log10`` of the true PhotoCalib's instflux at magnitude zero (total flux) plus
    ``2.5 log10`` of the true PSF's `encircled_energy` within 12 px at the centre of ``bbox`` (default: the
    detector's)."""
    bbox = sim.camera[d].detector.bbox if bbox is None else bbox
    cx, cy = bbox.center
    return (2.5 * math.log10(sim.true_photo_calib(v, d).instflux_at_zero_magnitude)
            + 2.5 * math.log10(encircled_energy(sim.true_psf(v, d), cx, cy)))


def zp_offset_mmag(photo_calib, true_zp) -> float:
    """``photo_calib``'s zero point less ``true_zp`` (`true_zero_point`), mmag: positive when the calibrated
    fluxes are too low."""
    return 1000.0 * (2.5 * math.log10(photo_calib.instflux_at_zero_magnitude) - true_zp)


def zp_reference_noise_mmag(repo, sim, v, d, *, single_visit_star=None, refcat=None) -> float:
    """The zero-point error (mmag, the sign of `zp_offset_mmag`) that the simulated reference catalog's own
    noise makes on the stars calibrate's PhotoCal used.

    ``single_visit_star``'s ``calib_photometry_used`` rows are matched within 0.25" to the reference catalog;
    the result is the inverse-variance mean of ``-2.5 log10(reference / true flux)`` with PhotoCal's weights
    (source and reference magnitude errors in quadrature). The zero point's error minus this is the pipeline's
    own: what the same fit would give with exact reference fluxes.

    Parameters
    ----------
    repo : `visitcal.pipeline.repository.Repository`
        The processed repository (its ``single_visit_star`` is read unless given).
    sim : `visitcal.sim.SimRepository`
        The truth.
    v, d : int
        Visit and detector.
    single_visit_star, refcat : astropy.table.Table, optional
        The tables already read (default: read from ``repo`` and ``sim``).

    Raises
    ------
    LookupError
        No photometric star matched the reference catalog.
    """
    from ..io import read_catalog
    from ..tasks.isolated_star_association import match_nearest_sphere

    src = read_catalog(repo.dataset_path("single_visit_star", v, d, "parquet")) if single_visit_star is None \
        else single_visit_star
    src = src[np.asarray(src["calib_photometry_used"], bool)]
    ref = sim.refcat() if refcat is None else refcat
    band = sim.band
    obj = sim.objects(v, d)
    true = dict(zip(np.asarray(obj["id"]).tolist(), np.asarray(obj["flux_nJy"], float).tolist()))
    idx, _ = match_nearest_sphere(np.degrees(np.asarray(src["coord_ra"], float)),
                                  np.degrees(np.asarray(src["coord_dec"], float)), np.asarray(ref["ra"], float),
                                  np.asarray(ref["dec"], float), 0.25)
    ok = idx >= 0
    if not ok.any():
        raise LookupError("no photometric star matched to the reference catalog")
    r = ref[idx[ok]]
    tf = np.array([true.get(int(i), math.nan) for i in r["id"]])
    rf, rfe = np.asarray(r[f"{band}_flux"], float), np.asarray(r[f"{band}_fluxErr"], float)
    f = np.asarray(src["base_NormalizedCompensatedTophatFlux_instFlux"], float)[ok]
    fe = np.asarray(src["base_NormalizedCompensatedTophatFlux_instFluxErr"], float)[ok]
    w = 1.0 / ((fe / f) ** 2 + (rfe / rf) ** 2)
    good = np.isfinite(tf) & np.isfinite(w) & (tf > 0) & (rf > 0)
    return float(1000.0 * np.average(-2.5 * np.log10(rf[good] / tf[good]), weights=w[good]))


# --- PSF --------------------------------------------------------------------------------------------------------

def shape_vector(m) -> np.ndarray:
    """``[determinant radius (px), e1, e2]`` of second moments ``m`` (`Moments`): the size
    ``(Ixx Iyy - Ixy^2)^(1/4)`` and the distortions ``(Ixx - Iyy) / (Ixx + Iyy)``, ``2 Ixy / (Ixx + Iyy)``."""
    return np.array([m.determinant_radius, (m.xx - m.yy) / (m.xx + m.yy), 2 * m.xy / (m.xx + m.yy)])


def psf_errors_at(psf, true_psf, x, y) -> np.ndarray:
    """(n, 3) errors of ``psf`` against ``true_psf`` at the positions ``(x, y)`` (px): the fractional size
    error ``size / true size - 1`` and the e1 and e2 differences (`shape_vector`), each from the models'
    adaptive moments (``compute_shape``, one C++ call per position)."""
    err = []
    for xi, yi in zip(np.asarray(x, float), np.asarray(y, float)):
        t, m = shape_vector(true_psf.compute_shape(xi, yi)), shape_vector(psf.compute_shape(xi, yi))
        err.append([m[0] / t[0] - 1, m[1] - t[1], m[2] - t[2]])
    return np.array(err, float).reshape(-1, 3)


def reserved_psf_errors(models, stars, sim, v, d) -> np.ndarray:
    """(n, 3) `psf_errors_at` of detector ``d``'s refit PSF at its reserved stars.

    Parameters
    ----------
    models : astropy.table.Table
        Finalize's ``refit_psf_models`` of visit ``v`` (``detector``, ``psf``, ``status``).
    stars : astropy.table.Table
        Finalize's ``refit_psf_star`` of visit ``v`` (``detector``, ``calib_psf_reserved``,
        ``base_SdssCentroid_x``/``_y``).
    sim : `visitcal.sim.SimRepository`
    v, d : int

    Raises
    ------
    LookupError
        No refit PSF for the detector (its status named).
    """
    rows = [r for r in models if int(r["detector"]) == d]
    if not rows or rows[0]["psf"] is None:
        raise LookupError(f"no refit PSF for detector {d} (status {rows[0]['status'] if rows else 'no row'})")
    sel = (np.asarray(stars["detector"]) == d) & np.asarray(stars["calib_psf_reserved"], bool)
    return psf_errors_at(rows[0]["psf"], sim.true_psf(v, d, size=61), np.asarray(stars["base_SdssCentroid_x"])[sel],
                         np.asarray(stars["base_SdssCentroid_y"])[sel])


def psf_errors(work, sim, v, d) -> np.ndarray:
    """(n, 3) `reserved_psf_errors` of (v, d), reading ``refit_psf_models`` and ``refit_psf_star`` from the
    repository directory ``work``."""
    from ..io import read_catalog
    from ..tasks.finalize_characterization import read_psf_ap_corr_cat

    work = Path(work)
    models = read_psf_ap_corr_cat(work / "refit_psf_models" / f"refit_psf_models_{v:06d}.fits")
    stars = read_catalog(work / "refit_psf_star" / f"refit_psf_star_{v:06d}.parquet")
    return reserved_psf_errors(models, stars, sim, v, d)


# --- photometry -------------------------------------------------------------------------------------------------

def contamination(everything, stars, sigma: float = ISOLATION_SIGMA_PX) -> np.ndarray:
    """Per star, the PSF-overlap-weighted flux of every other true object over the star's own:
    ``sum_n f_n / f exp(-r_n^2 / (4 sigma^2))`` over the objects within ``6 sigma`` (px), the star itself (and
    any object within 1e-3 px of it) left out (C++: `visitcal.calib.match_nearest.gaussian_overlap_sum`).

    Parameters
    ----------
    everything : astropy.table.Table
        The true objects that may contaminate (``x``, ``y``, ``flux_nJy``).
    stars : astropy.table.Table
        The stars (``x``, ``y``, ``flux_nJy``).
    sigma : float
        PSF width, px.
    """
    from ..calib.match_nearest import gaussian_overlap_sum

    ox, oy, of = (np.asarray(everything[c], float) for c in ("x", "y", "flux_nJy"))
    sx, sy, sf = (np.asarray(stars[c], float) for c in ("x", "y", "flux_nJy"))
    if sx.size == 0:
        return np.zeros(0)
    return gaussian_overlap_sum(sx, sy, ox, oy, of, sigma=sigma, radius=6 * sigma, min_distance=1e-3) / sf


def matched_stars(sources, sim, visit, detector):
    """The true unsaturated stars of (visit, detector) matched within 1 px to ``sources``.

    Returns
    -------
    obj : astropy.table.Table
        The true unsaturated stars.
    i1, i2 : (n,) int64
        ``obj[i1]`` <-> ``sources[i2]`` (each true star to its closest source, ``base_SdssCentroid``).
    f, fe : (n,) float64
        The pairs' calibrated ``base_PsfFlux_flux`` and its error (nJy).
    base : (n,) bool
        S/N > `SNR_PHOT`, primary, unblended (``deblend_nChild == 0``, ``parent == 0``).
    isolated : (n,) bool
        Isolated by the truth: `contamination` under `ISOLATION_LIMIT` (the light of every other true object,
        detected or not, under the star's PSF cannot move its PsfFlux by a millimagnitude).
    """
    from ..calib.match_nearest import match_nearest

    obj = sim.objects(visit, detector)
    obj = obj[obj["is_star"] & ~obj["saturated"]]
    x, y = np.asarray(sources["base_SdssCentroid_x"]), np.asarray(sources["base_SdssCentroid_y"])
    i1, i2, _ = match_nearest(np.asarray(obj["x"], float), np.asarray(obj["y"], float), x, y, 1.0).pairs()
    f, fe = np.asarray(sources["base_PsfFlux_flux"])[i2], np.asarray(sources["base_PsfFlux_fluxErr"])[i2]
    base = ((f / fe > SNR_PHOT) & np.asarray(sources["detect_isPrimary"])[i2]
            & (np.asarray(sources["deblend_nChild"])[i2] == 0) & (np.asarray(sources["parent"])[i2] == 0))
    isolated = contamination(sim.objects(visit, detector), obj[i1]) < ISOLATION_LIMIT
    return obj, i1, i2, f, fe, base, isolated


def photometry(source, sim, v, d) -> dict:
    """The final PSF fluxes of the isolated unblended S/N > 50 stars (`matched_stars`) against their true fluxes:
    ``dm_mmag`` = ``-2500 log10(measured / true)``, ``pull`` = ``(measured - true) / fluxErr``, ``snr``
    (measured), ``mag`` (true AB magnitude), ``x``, ``y`` (true, px), arrays of one length."""
    obj, i1, i2, f, fe, base, isolated = matched_stars(source, sim, v, d)
    good = base & isolated
    true = np.asarray(obj["flux_nJy"], float)[i1][good]
    f, fe = f[good], fe[good]
    sel = obj[i1][good]
    return {"dm_mmag": -2500.0 * np.log10(f / true), "pull": (f - true) / fe, "snr": f / fe,
            "mag": np.asarray(sel["mag"], float), "x": np.asarray(sel["x"], float), "y": np.asarray(sel["y"], float)}


# --- completeness -----------------------------------------------------------------------------------------------

def detected(objects, sources, radius: float = 1.0) -> np.ndarray:
    """(n,) bool: the true ``objects`` (``x``, ``y``) that a source (``base_SdssCentroid_x``/``_y``, sky sources
    left out) lies within ``radius`` px of, each source claimed by its closest object only."""
    from ..calib.match_nearest import match_nearest

    keep = ~np.asarray(sources["sky_source"], bool) if "sky_source" in sources.colnames else slice(None)
    sx = np.asarray(sources["base_SdssCentroid_x"], float)[keep]
    sy = np.asarray(sources["base_SdssCentroid_y"], float)[keep]
    m = match_nearest(np.asarray(objects["x"], float), np.asarray(objects["y"], float), sx, sy, radius, unique=True)
    return m.matched


def completeness_curve(mag, found, bin_mag: float = 0.5, *, lo: float | None = None,
                       hi: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detected fraction per magnitude bin: ``(centres, fraction, count)`` over bins of ``bin_mag`` from
    ``lo`` (default the floor of the smallest finite ``mag``) to ``hi`` (default: the bin holding the largest);
    fraction NaN in an empty bin; magnitudes outside go to the first or last bin."""
    mag, found = np.asarray(mag, float), np.asarray(found, bool)
    ok = np.isfinite(mag)
    mag, found = mag[ok], found[ok]
    if mag.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    lo = math.floor(mag.min()) if lo is None else lo
    if hi is None:
        n_bins = int(math.floor((mag.max() - lo) / bin_mag)) + 1
    else:
        n_bins = max(1, int(math.ceil((hi - lo) / bin_mag)))
    edges = lo + bin_mag * np.arange(n_bins + 1)
    k = np.clip(np.searchsorted(edges, mag, side="right") - 1, 0, edges.size - 2)
    count = np.bincount(k, minlength=edges.size - 1)
    hits = np.bincount(k, weights=found.astype(float), minlength=edges.size - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    return 0.5 * (edges[:-1] + edges[1:]), frac, count


def completeness_50_mag(centres, fraction, count, min_count: int = 5) -> float:
    """The magnitude where the completeness first falls below 0.5 going faint: linear interpolation between
    the centres of the last bin at or above 0.5 and the next below it (bins with fewer than ``min_count``
    objects skipped); NaN when it never crosses."""
    ok = np.asarray(count) >= min_count
    c, f = np.asarray(centres, float)[ok], np.asarray(fraction, float)[ok]
    for k in range(1, c.size):
        if f[k - 1] >= 0.5 > f[k]:
            return float(c[k - 1] + (f[k - 1] - 0.5) / (f[k - 1] - f[k]) * (c[k] - c[k - 1]))
    return math.nan


# --- metrics ----------------------------------------------------------------------------------------------------

#: The fewest stars whose pull width is graded: the robust width of n pulls is uncertain by ~1.1/sqrt(n) (35% at
#: 10 stars, too much to tell 1 from 1.25 below that).
PULL_MIN_COUNT = 10


def _spec(name, unit, description, threshold=None, scope="detector"):
    return MetricSpec(name, "truth", unit, description, scope=scope, threshold=threshold,
                      min_count=PULL_MIN_COUNT if name.startswith("truthPsfFluxPullWidth") else 0)


_PSF_SIZE_MEAN = Threshold(warn_above=0.005, absolute=True)
_WCS_RMS = Threshold(warn_above=10.0, fail_above=50.0)
_ZP = Threshold(warn_above=10.0, fail_above=30.0, absolute=True)
_FLUX_BIAS = Threshold(warn_above=5.0, absolute=True)
_PULL = Threshold(warn_above=1.25, warn_below=0.8)

_DETECTOR_SPECS = [
    ("truthPsfSizeErrorRms", "", "Rms of the refit PSF's fractional size error (determinant radius) against the "
                                 "true PSF at the reserved stars.", None),
    ("truthPsfSizeErrorMean", "", "Mean of the refit PSF's fractional size error at the reserved stars.",
     _PSF_SIZE_MEAN),
    ("truthPsfE1ErrorMean", "", "Mean e1 (distortion) error of the refit PSF against the true PSF at the reserved "
                                "stars.", None),
    ("truthPsfE2ErrorMean", "", "Mean e2 (distortion) error of the refit PSF at the reserved stars.", None),
    ("nTruthPsfReserved", "", "Reserved PSF stars at which the refit PSF was compared with the truth.", None),
    ("truthWcsRms", "mas", "Rms on-sky distance between the final WCS (visit summary) and the true WCS on a 21 x 21 "
                           "grid over the detector.", _WCS_RMS),
    ("truthWcsMax", "mas", "Largest on-sky distance between the final WCS and the true WCS on the grid.", None),
    ("truthWcsPreliminaryRms", "mas", "Rms distance between calibrate's WCS (preliminary_visit_image) and the true "
                                      "WCS on the grid.", _WCS_RMS),
    ("truthZeroPointOffset", "mmag", "Final zero point (visit summary PhotoCalib) less the true one of the 12-px "
                                     "aperture flux; positive: fluxes too low.", _ZP),
    ("truthZeroPointOffsetPreliminary", "mmag", "Calibrate's zero point (preliminary_visit_image) less the true "
                                                "one.", _ZP),
    ("truthZeroPointReferenceNoise", "mmag", "The zero-point shift the simulated reference catalog's own noise "
                                             "makes on the stars calibrate's PhotoCal used.", None),
    ("truthPsfFluxBias", "mmag", "Median of -2.5 log10(PsfFlux / true flux) of the isolated unblended S/N > 50 "
                                 "true stars of the final source catalog (graded on its significance: standard error "
                                 "1.2533 sigmaMAD/sqrt(n)).", _FLUX_BIAS),
    ("truthPsfFluxPullWidth", "", "Robust width (1.4826 MAD) of (PsfFlux - true) / fluxErr of those stars with "
                                  "50 < S/N < 200, where fluxErr dominates (NaN for fewer than 5).", _PULL),
    ("truthPsfFluxPullWidthBright", "", "The same for S/N > 300, where the calibrations' own few-mmag error, which "
                                        "fluxErr does not carry, widens the pulls (informative).", None),
    ("nTruthPhotometry", "", "Isolated unblended S/N > 50 true stars in the photometry comparison.", None),
    ("truthCompletenessStarsBright", "", "Fraction of the true unsaturated stars on the detector with true S/N > "
                                         "50 (sky-limited) that a final source lies within 1 px of.", None),
    ("truthCompleteness50Mag", "mag", "AB magnitude at which the fraction of true stars detected within 1 px "
                                      "falls to 50% (interpolated; NaN if it never does).", None),
]

register(*[_spec(n, u, t, th) for n, u, t, th in _DETECTOR_SPECS])
register(*[_spec(n + "Visit", u, "Visit pooled: " + t[0].lower() + t[1:]
                 if not n.startswith("truthZeroPoint") else
                 "Visit: the detector's value of largest magnitude; " + t[0].lower() + t[1:], th, scope="visit")
           for n, u, t, th in _DETECTOR_SPECS])

#: The section's notes: one sentence per figure's definition.
NOTES = [
    "PSF: the refit PSF (refit_psf_models) against the true PSF at the reserved PSF stars, from both models' "
    "adaptive moments: fractional error of the determinant radius (Ixx Iyy - Ixy^2)^1/4 and differences of the "
    "distortions e1 = (Ixx - Iyy)/(Ixx + Iyy), e2 = 2 Ixy/(Ixx + Iyy).",
    f"WCS: on-sky distance between the fitted and the true WCS on a {GRID} x {GRID} grid spanning the whole "
    "detector; final = the visit summary's WCS, preliminary = calibrate's (preliminary_visit_image).",
    "Zero point: 2.5 log10(instFluxAtZeroMagnitude) of the fitted PhotoCalib less the truth's for the 12-px "
    "aperture flux that calibrate calibrates (true total-flux zero point plus 2.5 log10 of the true PSF's "
    "encircled energy within 12 px at the detector's centre), mmag; reference noise: the part the simulated "
    "reference catalog's own errors cause (the inverse-variance mean of -2.5 log10(reference / true flux) over "
    "the stars calibrate's PhotoCal used).",
    "Photometry: final source base_PsfFlux_flux of the true unsaturated stars matched within 1 px, S/N > 50, "
    "primary, unblended and isolated by the truth (the PSF-overlap-weighted light of every other true object "
    "under 1e-3 of the star's); bias = median of -2.5 log10(measured / true); pull width = 1.4826 MAD of "
    "(measured - true) / fluxErr for 50 < S/N < 200, where fluxErr dominates (at least 5 stars); the S/N > 300 "
    "width is shown apart: the calibrations' own few-mmag error, not in fluxErr, widens it.",
    "Completeness: the fraction of the true objects on the detector (unsaturated stars and galaxies apart) that a "
    "final source (sky sources left out) lies within 1 px of, each source claimed by its closest object; bright "
    "stars: true flux above 50 times the sky-limited PsfFlux error (the median fluxErr of the sky sources, else "
    "of the sources of S/N < 20); the 50% magnitude is interpolated between the 0.5-mag bins (of >= 5 stars) "
    "around the first fall below one half.",
]


# --- the section ------------------------------------------------------------------------------------------------

def _rms(a) -> float:
    a = np.asarray(a, float)
    return float(np.sqrt(np.mean(a**2))) if a.size else math.nan


def _mean(a) -> float:
    a = np.asarray(a, float)
    return float(np.mean(a)) if a.size else math.nan


def _median(a) -> float:
    a = np.asarray(a, float)
    return float(np.median(a)) if a.size else math.nan


def _noise_dominated(snr) -> np.ndarray:
    """The stars of the graded pull width: ``PULL_SNR_RANGE[0] < S/N < PULL_SNR_RANGE[1]``."""
    snr = np.asarray(snr, float)
    return (snr > PULL_SNR_RANGE[0]) & (snr < PULL_SNR_RANGE[1])


def _pull_width(pull) -> float:
    """`robust_sigma` of the pulls; NaN for fewer than `MIN_PULLS` of them."""
    return robust_sigma(pull) if np.isfinite(pull).sum() >= MIN_PULLS else math.nan


def _sky_limited_flux_err(source) -> float:
    """Median base_PsfFlux_fluxErr (nJy) of the sky sources, else of the non-sky sources of S/N < 20."""
    fe = np.asarray(source["base_PsfFlux_fluxErr"], float)
    f = np.asarray(source["base_PsfFlux_flux"], float)
    sky = np.asarray(source["sky_source"], bool) if "sky_source" in source.colnames else np.zeros(len(fe), bool)
    for sel in (sky & np.isfinite(fe), ~sky & np.isfinite(fe) & (np.abs(f / fe) < 20)):
        if sel.any():
            return float(np.median(fe[sel]))
    return math.nan


def _missing(notes, products, d, name, what):
    """Note (once) that product ``name`` is missing and what is therefore not measured."""
    key = f"{name} {products.visit:06d}" + ("" if d is None else f"/{d:03d}")
    note = f"{key}: {products.problems.get(key, 'not available')}: {what}"
    if note not in notes:
        notes.append(note)


class _Detector:
    """What one detector gives: values by metric name, and arrays for the visit's pooling and the figures."""

    def __init__(self, d):
        self.d = d
        self.values: dict[str, float] = {name: math.nan for name, *_ in _DETECTOR_SPECS}
        self.psf = np.zeros((0, 3))
        self.psf_xy = np.zeros((0, 2))
        self.wcs_quiver = None
        self.phot = None
        self.stars = None  # (mag, found, bright) of the unsaturated stars on the detector
        self.galaxies = None


def _analyse_detector(products, sim, d, config, notes) -> _Detector:
    from ..tasks.update_visit_summary import calibrations_for

    v = products.visit
    out = _Detector(d)
    val = out.values

    def attempt(what, fn):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - a missing or broken product is a note, not the end of the report
            notes.append(f"detector {d}: {what}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                         [:300])
            return None

    bbox = sim.camera[d].detector.bbox
    true_wcs = attempt("true WCS", lambda: sim.true_wcs(v, d))
    tzp = attempt("true zero point", lambda: true_zero_point(sim, v, d, bbox))

    # --- calibrate's WCS and zero point
    prelim = products.exposure("preliminary_visit_image", d)
    if prelim is None:
        _missing(notes, products, d, "preliminary_visit_image", "calibrate's WCS and zero point not compared")
    else:
        if true_wcs is not None and prelim.wcs is not None:
            r = attempt("preliminary WCS", lambda: wcs_vs_truth(prelim.wcs, true_wcs, bbox, config.truth_wcs_grid))
            if r:
                val["truthWcsPreliminaryRms"] = r["rms_mas"]
        if tzp is not None and prelim.photo_calib is not None:
            z = attempt("preliminary zero point", lambda: zp_offset_mmag(prelim.photo_calib, tzp))
            val["truthZeroPointOffsetPreliminary"] = math.nan if z is None else z
    del prelim
    svs = products.single_visit_star(d)
    if svs is not None:
        z = attempt("reference noise", lambda: zp_reference_noise_mmag(
            products.repo, sim, v, d, single_visit_star=svs, refcat=products.refcat))
        val["truthZeroPointReferenceNoise"] = math.nan if z is None else z

    # --- the final calibrations (visit summary)
    cal = None
    if products.visit_summary is None:
        _missing(notes, products, None, "visit_summary", "the final WCS and zero point not compared")
    else:
        cal = attempt("visit summary", lambda: calibrations_for(products.visit_summary, d))
    if cal is not None and true_wcs is not None:
        r = attempt("final WCS", lambda: wcs_vs_truth(cal.wcs, true_wcs, bbox, config.truth_wcs_grid))
        if r:
            val["truthWcsRms"], val["truthWcsMax"] = r["rms_mas"], r["max_mas"]
            gx, gy = wcs_grid(bbox, config.truth_wcs_grid)
            de, dn = wcs_offsets_mas(cal.wcs, true_wcs, gx, gy)
            out.wcs_quiver = (gx, gy, de, dn)
    if cal is not None and tzp is not None:
        z = attempt("final zero point", lambda: zp_offset_mmag(cal.photo_calib, tzp))
        val["truthZeroPointOffset"] = math.nan if z is None else z

    # --- the refit PSF at the reserved stars
    models, stars = products.refit_psf_models, products.refit_psf_star
    if models is None or stars is None:
        _missing(notes, products, None, "refit_psf_models" if models is None else "refit_psf_star",
                 "the refit PSF not compared")
    else:
        err = attempt("refit PSF", lambda: reserved_psf_errors(models, stars, sim, v, d))
        if err is not None:
            sel = (np.asarray(stars["detector"]) == d) & np.asarray(stars["calib_psf_reserved"], bool)
            xy = np.c_[np.asarray(stars["base_FPPosition_x"], float)[sel], np.asarray(stars["base_FPPosition_y"],
                                                                                      float)[sel]] \
                if "base_FPPosition_x" in stars.colnames else np.full((len(err), 2), np.nan)
            finite = np.all(np.isfinite(err), axis=1)  # a model whose adaptive moments fail gives NaN
            if (~finite).any():
                notes.append(f"detector {d}: {int((~finite).sum())} reserved star(s) with non-finite PSF moments "
                             "left out")
            out.psf, out.psf_xy = err[finite], xy[finite]
            val["nTruthPsfReserved"] = float(len(out.psf))
            val["truthPsfSizeErrorRms"] = _rms(out.psf[:, 0])
            val["truthPsfSizeErrorMean"] = _mean(out.psf[:, 0])
            val["truthPsfE1ErrorMean"] = _mean(out.psf[:, 1])
            val["truthPsfE2ErrorMean"] = _mean(out.psf[:, 2])

    # --- photometry and completeness (the final source catalog)
    source = products.source(d)
    if source is None:
        _missing(notes, products, d, "source", "photometry and completeness not measured")
    else:
        ph = attempt("photometry", lambda: photometry(source, sim, v, d))
        if ph is not None:
            out.phot = ph
            bright = ph["snr"] > SNR_PULL
            val["nTruthPhotometry"] = float(ph["dm_mmag"].size)
            val["truthPsfFluxBias"] = _median(ph["dm_mmag"])
            val["truthPsfFluxPullWidth"] = _pull_width(ph["pull"][_noise_dominated(ph["snr"])])
            val["truthPsfFluxPullWidthBright"] = _pull_width(ph["pull"][bright])

        def completeness():
            obj = sim.objects(v, d)
            obj = obj[np.asarray(obj["inside"], bool)] if "inside" in obj.colnames else obj
            found = detected(obj, source, config.truth_match_radius_px)
            star = np.asarray(obj["is_star"], bool)
            unsat = star & ~np.asarray(obj["saturated"], bool)
            limit = config.truth_bright_snr * _sky_limited_flux_err(source)
            mag, flux = np.asarray(obj["mag"], float), np.asarray(obj["flux_nJy"], float)
            out.stars = (mag[unsat], found[unsat], flux[unsat] > limit)
            out.galaxies = (mag[~star], found[~star])

        attempt("completeness", completeness)
        if out.stars is not None:
            mag, found, bright = out.stars
            val["truthCompletenessStarsBright"] = float(found[bright].mean()) if bright.any() else math.nan
            val["truthCompleteness50Mag"] = completeness_50_mag(
                *completeness_curve(mag, found, config.truth_completeness_bin_mag))
    return out


def _photometry_uncertainties(phots) -> dict[str, tuple[float, int | None]]:
    """``{metric: (standard error, count)}`` of the photometry metrics over the photometry arrays ``phots`` (None
    entries skipped): the bias's standard error (of a median), so that it is graded on its significance, and the
    star counts of the pull widths, which are graded from `PULL_MIN_COUNT` stars."""
    phots = [p for p in phots if p is not None]
    if not phots:
        return {}
    dm = np.concatenate([p["dm_mmag"] for p in phots])
    snr = np.concatenate([p["snr"] for p in phots])
    return {"truthPsfFluxBias": (median_error(dm), int(dm.size)),
            "truthPsfFluxPullWidth": (math.nan, int(_noise_dominated(snr).sum())),
            "truthPsfFluxPullWidthBright": (math.nan, int((snr > SNR_PULL).sum()))}


def _visit_values(dets: list[_Detector], config) -> dict[str, float]:
    """The pooled figures: stars of every detector together; WCS grids together; zero points: the worst."""
    val: dict[str, float] = {}
    psf = np.concatenate([x.psf for x in dets]) if dets else np.zeros((0, 3))
    val["nTruthPsfReservedVisit"] = float(len(psf))
    val["truthPsfSizeErrorRmsVisit"] = _rms(psf[:, 0])
    val["truthPsfSizeErrorMeanVisit"] = _mean(psf[:, 0])
    val["truthPsfE1ErrorMeanVisit"] = _mean(psf[:, 1])
    val["truthPsfE2ErrorMeanVisit"] = _mean(psf[:, 2])
    # every detector has the same grid: the rms over all grid points is the rms of the detectors' rms
    for name in ("truthWcsRms", "truthWcsPreliminaryRms"):
        val[name + "Visit"] = _rms([x.values[name] for x in dets if math.isfinite(x.values[name])])
    mx = [x.values["truthWcsMax"] for x in dets if math.isfinite(x.values["truthWcsMax"])]
    val["truthWcsMaxVisit"] = float(max(mx)) if mx else math.nan
    for name in ("truthZeroPointOffset", "truthZeroPointOffsetPreliminary", "truthZeroPointReferenceNoise"):
        z = np.array([x.values[name] for x in dets if math.isfinite(x.values[name])])
        val[name + "Visit"] = float(z[np.argmax(np.abs(z))]) if z.size else math.nan
    phot = [x.phot for x in dets if x.phot is not None]
    dm = np.concatenate([p["dm_mmag"] for p in phot]) if phot else np.zeros(0)
    pull = np.concatenate([p["pull"][p["snr"] > SNR_PULL] for p in phot]) if phot else np.zeros(0)
    pull_mid = np.concatenate([p["pull"][_noise_dominated(p["snr"])] for p in phot]) if phot else np.zeros(0)
    val["nTruthPhotometryVisit"] = float(dm.size)
    val["truthPsfFluxBiasVisit"] = _median(dm)
    val["truthPsfFluxPullWidthVisit"] = _pull_width(pull_mid)
    val["truthPsfFluxPullWidthBrightVisit"] = _pull_width(pull)
    stars = [x.stars for x in dets if x.stars is not None]
    if stars:
        mag, found, bright = (np.concatenate(a) for a in zip(*stars))
        val["truthCompletenessStarsBrightVisit"] = float(found[bright].mean()) if bright.any() else math.nan
        val["truthCompleteness50MagVisit"] = completeness_50_mag(
            *completeness_curve(mag, found, config.truth_completeness_bin_mag))
    else:
        val["truthCompletenessStarsBrightVisit"] = val["truthCompleteness50MagVisit"] = math.nan
    return val


_TABLE_COLUMNS = [("truthPsfSizeErrorRms", "PSF size err rms", "{:.2e}"),
                  ("truthPsfSizeErrorMean", "PSF size err mean", "{:.2e}"),
                  ("truthPsfE1ErrorMean", "e1 err", "{:.1e}"), ("truthPsfE2ErrorMean", "e2 err", "{:.1e}"),
                  ("nTruthPsfReserved", "reserved", "{:.0f}"),
                  ("truthWcsRms", "WCS rms (mas)", "{:.2f}"), ("truthWcsMax", "WCS max (mas)", "{:.2f}"),
                  ("truthWcsPreliminaryRms", "calibrate WCS rms (mas)", "{:.2f}"),
                  ("truthZeroPointOffset", "zp - true (mmag)", "{:.2f}"),
                  ("truthZeroPointOffsetPreliminary", "calibrate zp - true (mmag)", "{:.2f}"),
                  ("truthZeroPointReferenceNoise", "refcat noise part (mmag)", "{:.2f}"),
                  ("truthPsfFluxBias", "PsfFlux bias (mmag)", "{:.2f}"),
                  ("truthPsfFluxPullWidth", "pull width S/N 50-200", "{:.2f}"),
                  ("truthPsfFluxPullWidthBright", "pull width S/N>300", "{:.2f}"),
                  ("nTruthPhotometry", "phot stars", "{:.0f}"),
                  ("truthCompletenessStarsBright", "bright-star completeness", "{:.3f}"),
                  ("truthCompleteness50Mag", "50% mag (stars)", "{:.2f}")]


def build(products, config: QaConfig, figures) -> Section:
    """The truth section of one visit's page (see the module docstring).

    Parameters
    ----------
    products : `visitcal.qa.products.VisitProducts`
        The visit's products.
    config : `QaConfig`
        ``truth_*`` fields: the WCS grid, the completeness match radius, bins and bright-star S/N.
    figures : `visitcal.qa.figures.FigureWriter`
        Where the figures go.

    Returns
    -------
    `Section`
        Key ``"truth"``. On a repository without a simulator's truth (or without GalSim) a note saying so and
        nothing else; a detector whose products are missing gets NaN metrics and a note.
    """
    sec = Section(key="truth", title="Against the simulator's truth")
    try:
        sim = open_truth(products.repo.root)
    except TruthUnavailable as err:
        sec.notes.append(f"No truth comparisons: {err}")
        return sec
    sec.notes.extend(NOTES)
    dets = []
    for d in products.detectors:
        if d not in sim.detectors or products.visit not in sim.visits:
            sec.notes.append(f"detector {d}: not in the simulation's truth")
            continue
        dets.append(_analyse_detector(products, sim, d, config, sec.notes))
    for x in dets:
        unc = _photometry_uncertainties([x.phot])
        sec.metrics.extend(Metric(name, value, x.d, *unc.get(name, (math.nan, None)))
                           for name, value in x.values.items())
    pooled = _visit_values(dets, config)
    unc = _photometry_uncertainties([x.phot for x in dets])
    sec.metrics.extend(Metric(name, value, None, *unc.get(name.removesuffix("Visit"), (math.nan, None)))
                       for name, value in pooled.items())

    rows = []
    for x in dets:
        st = products.status("reprocess", x.d)
        rows.append([str(x.d), st.status if st is not None else "not run",
                     *[x.values[name] for name, *_ in _TABLE_COLUMNS]])
    rows.append(["visit", "", *[pooled.get(name + "Visit", math.nan) for name, *_ in _TABLE_COLUMNS]])
    sec.tables.append(HtmlTable(
        caption="Accuracy against the truth, per detector and pooled over the visit (zero points: the worst "
                "detector)", columns=["detector", "status", *[c for _, c, _ in _TABLE_COLUMNS]], rows=rows,
        formats={c: f for _, c, f in _TABLE_COLUMNS}))
    for draw in (_psf_figure, _wcs_figure, _completeness_figure, _photometry_figure):
        try:
            ref = draw(products, dets, config, figures)
        except Exception as err:  # noqa: BLE001 - a figure that cannot be drawn is a note
            sec.notes.append(f"figure {draw.__name__.strip('_')}: {type(err).__name__}: {err}"[:300])
            continue
        if ref is not None:
            sec.figures.append(ref)
    return sec


# --- figures ----------------------------------------------------------------------------------------------------

def _psf_figure(products, dets, config, figures):
    xy = np.concatenate([x.psf_xy for x in dets]) if dets else np.zeros((0, 2))
    err = np.concatenate([x.psf for x in dets]) if dets else np.zeros((0, 3))
    ok = np.all(np.isfinite(xy), axis=1)
    if not ok.any():
        return None
    xy, err = xy[ok], err[ok]
    fig, (a, b) = new_figure(2, 1, width=5.0, height=4.4)
    lim = float(np.max(np.abs(err[:, 0]))) or 1e-3
    sc = a.scatter(xy[:, 0], xy[:, 1], c=err[:, 0], cmap="coolwarm", vmin=-lim, vmax=lim, s=18)
    fig.colorbar(sc, ax=a, label="fractional size error")
    draw_detector_outlines(a, products)
    a.set_title("PSF size error at the reserved stars")
    de = np.hypot(err[:, 1], err[:, 2])
    sc = b.scatter(xy[:, 0], xy[:, 1], c=de, cmap="viridis", vmin=0.0, s=18)
    fig.colorbar(sc, ax=b, label="|e - e_true|")
    # whiskers of the ellipticity error, their length scaled so the largest spans ~1/15 of the field
    span = float(np.ptp(xy[:, 0]) + np.ptp(xy[:, 1])) / 2 or 1.0
    scale = span / 15.0 / (float(de.max()) or 1.0)
    ang = 0.5 * np.arctan2(err[:, 2], err[:, 1])
    for (x0, y0), r, t in zip(xy, de * scale, ang):
        b.plot([x0 - 0.5 * r * np.cos(t), x0 + 0.5 * r * np.cos(t)],
               [y0 - 0.5 * r * np.sin(t), y0 + 0.5 * r * np.sin(t)], color="k", lw=0.8)
    draw_detector_outlines(b, products)
    b.set_title("PSF ellipticity error (whiskers)")
    return figures.save(fig, "truth_psf_errors", "Refit PSF against the true PSF at the reserved stars on the focal "
                                                 "plane: fractional size error (left) and e1, e2 error (right).")


def _wcs_figure(products, dets, config, figures):
    from ..measurement.plugins.catalog_plugins import fp_position

    xs, ys, us, vs = [], [], [], []
    for x in dets:
        if x.wcs_quiver is None:
            continue
        geo = products.detector_geometry(x.d)
        if geo is None:
            continue
        gx, gy, de, dn = x.wcs_quiver
        fp = fp_position(geo, gx, gy)
        if np.any(fp["base_FPPosition_flag"]):
            continue
        xs.append(np.asarray(fp["base_FPPosition_x"], float))
        ys.append(np.asarray(fp["base_FPPosition_y"], float))
        us.append(de)
        vs.append(dn)
    if not xs:
        return None
    x, y, u, v = (np.concatenate(a) for a in (xs, ys, us, vs))
    fig, ax = new_figure(1, 1, width=6.0, height=5.5)
    amp = float(np.max(np.hypot(u, v))) or 1.0
    q = ax.quiver(x, y, u, v, np.hypot(u, v), angles="xy", scale_units="xy",
                  scale=amp / (0.06 * max(float(np.ptp(x)), float(np.ptp(y)), 1.0)), cmap="viridis", width=0.003)
    fig.colorbar(q, ax=ax, label="|WCS - true WCS| (mas)")
    if not draw_detector_outlines(ax, products):
        ax.set_xlabel("focal plane x (mm)")
        ax.set_ylabel("focal plane y (mm)")
    ax.set_title(f"Final WCS - true WCS (east, north), max {amp:.2f} mas")
    return figures.save(fig, "truth_wcs_quiver", f"The final WCS's sky position less the true WCS's on a "
                                                 f"{config.truth_wcs_grid} x {config.truth_wcs_grid} grid per "
                                                 "detector (arrows: east, north offsets; the longest "
                                                 f"{amp:.2f} mas).")


def _completeness_figure(products, dets, config, figures):
    stars = [x.stars for x in dets if x.stars is not None]
    gals = [x.galaxies for x in dets if x.galaxies is not None]
    if not stars:
        return None
    fig, ax = new_figure(1, 1, width=6.0, height=4.2)
    for kind, parts, colour in (("stars", stars, "C0"), ("galaxies", gals, "C1")):
        if not parts:
            continue
        mag = np.concatenate([p[0] for p in parts])
        found = np.concatenate([p[1] for p in parts])
        c, f, n = completeness_curve(mag, found, config.truth_completeness_bin_mag)
        ok = n >= 5
        ax.plot(c[ok], f[ok], "o-", color=colour, label=f"{kind} ({len(mag)})", ms=3)
    m50 = completeness_50_mag(*completeness_curve(np.concatenate([p[0] for p in stars]),
                                                  np.concatenate([p[1] for p in stars]),
                                                  config.truth_completeness_bin_mag))
    if math.isfinite(m50):
        ax.axvline(m50, color="0.5", ls="--", lw=0.8, label=f"stars 50%: {m50:.2f}")
    ax.axhline(0.5, color="0.8", lw=0.6)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("true AB magnitude")
    ax.set_ylabel("fraction detected within 1 px")
    ax.legend(fontsize=8)
    ax.set_title("Detection completeness (all detectors)")
    return figures.save(fig, "truth_completeness", "Fraction of the true objects detected (a final source within "
                                                   f"{config.truth_match_radius_px:g} px) per "
                                                   f"{config.truth_completeness_bin_mag:g}-mag bin of >= 5 objects.")


def _photometry_figure(products, dets, config, figures):
    phot = [(x.d, x.phot) for x in dets if x.phot is not None and x.phot["dm_mmag"].size]
    if not phot:
        return None
    fig, ax = new_figure(1, 1, width=6.0, height=4.2)
    for k, (d, p) in enumerate(phot):
        idx = thin(p["mag"].size, max(1, config.max_plot_points // len(phot)))
        ax.scatter(p["mag"][idx], p["dm_mmag"][idx], s=8, color=f"C{k % 10}", label=f"detector {d}")
    dm = np.concatenate([p["dm_mmag"] for _, p in phot])
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.axhline(float(np.median(dm)), color="k", ls="--", lw=0.8, label=f"median {np.median(dm):+.2f} mmag")
    ax.set_xlabel("true AB magnitude")
    ax.set_ylabel("-2.5 log10(PsfFlux / true) (mmag)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("PsfFlux against the truth: isolated unblended stars, S/N > 50")
    return figures.save(fig, "truth_photometry", "Final base_PsfFlux against the true flux of the isolated, "
                                                 "unblended S/N > 50 true stars, against their true magnitude.")
