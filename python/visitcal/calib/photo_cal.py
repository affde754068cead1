"""Photometric zero point against a reference catalog (LSST pipe_tasks' ``PhotoCalTask``).

1. Source selection (``PhotoCalSourceSelectorConfig``): primary (``detect_isPrimary``, when the column
   exists), none of the bad flags, unresolved (extendedness < 0.5, when the column exists: the
   obs_lsst value; LSST's task default is 0.1 on ``base_ClassificationSizeExtendedness_value``), and
   S/N = flux / err > 10 on ``flux_field``; then, not LSST and off by default (on for a crowded detector: `visitcal.tasks.CalibrateTask`'s
   ``crowded_field``), the aperture-excess cut (``aperture_excess``: the
   sources whose 12-px aperture holds neighbour light, `visitcal.measurement.aperture_excess`; when it would
   leave too few stars it is not applied and the result is degraded). References: finite position and flux > 0.
2. Direct match within ``match_radius`` (0.25 arcsec): each reference to its closest selected source
   (each source at most once). The matched sources get ``calib_photometry_used = True`` (all matches,
   before clipping, as LSST does); ``calib_photometry_reserved`` is False (reserve fraction 0).
3. ``src_mag = -2.5 log10(instFlux)`` (instFlux treated as if in units of 3631 Jy),
   ``ref_mag = 31.4 - 2.5 log10(flux / nJy)`` (AB), optionally with a colour term
   ``ref_mag += c0 + c1 col + c2 col^2``, ``col = m_primary - m_secondary`` of the reference; errors
   ``1.0857 err / flux`` added in quadrature with each other and ``mag_err_floor``. Finite pairs only.
4. `get_zero_point` on ``dmag = ref_mag - src_mag``: a 20-bin histogram start, clipping iterations,
   and the inverse-variance mean (see its docstring).
5. ``photo_calib = make_photo_calib_from_calib_zero_point(10^(0.4 zp), 0.4 ln10 10^(0.4 zp) sigma)``: the
   zero point is for instFlux in counts (not per second); ``c = 3.631e12 10^(-0.4 zp)`` nJy per count.
   LSST's header ``MAGZERO = zp - 2.5 log10(exptime)`` is the per-second value.

Not LSST: a zero point from fewer than ``min_n_stars`` good stars is returned, marked
(``degraded_reason``), rather than trusted or raised: calibration records the detector as ``degraded`` and the
visit summary gives it the visit's zero point. No match at all is still a `PhotoCalError`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field

from .match_nearest import match_nearest_sky
from ..core.photocalib import AB_ZERO_POINT_NJY, PhotoCalib, make_photo_calib_from_calib_zero_point
from ..measurement.aperture_excess import ApertureExcessConfig, apply_aperture_excess_cut

__all__ = ["ColorTerm", "PhotoCalConfig", "PhotoCalError", "PhotoCalResult", "PhotoCalSourceSelectorConfig",
           "PhotoCalTask", "ZeroPointResult", "fit_color_term", "get_zero_point", "zero_point_from_fluxes"]

_log = logging.getLogger(__name__)

#: 2.5 / ln(10): magnitude error per relative flux error.
MAG_ERR_PER_REL_FLUX = 2.5 / math.log(10.0)
#: A normal distribution's sigma over its median absolute deviation.
MAD_TO_SIGMA = 1.482602218505602
#: 1 sigma of a Gaussian in units of its interquartile range, 1 / (2 * 0.6744897...).
IQR_TO_SIGMA = 0.741301109252802


class PhotoCalError(RuntimeError):
    """No zero point could be measured (LSST raises RuntimeError "No matches to use for photocal").

    Attributes
    ----------
    reason : str
        ``"no_sources"`` (none selected), ``"no_references"``, ``"no_matches"`` or ``"no_good_stars"``
        (no match with finite magnitudes).
    n_sources, n_references, n_matches, n_good : int
        Selected sources, usable references, matches, matches with finite magnitudes.
    """

    def __init__(self, reason: str, n_sources: int, n_references: int, n_matches: int = 0, n_good: int = 0):
        self.reason = str(reason)
        self.n_sources = int(n_sources)
        self.n_references = int(n_references)
        self.n_matches = int(n_matches)
        self.n_good = int(n_good)
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"photometric calibration failed ({self.reason}): {self.n_sources} selected sources, "
                f"{self.n_references} references, {self.n_matches} matches, {self.n_good} with finite magnitudes")

    def __reduce__(self):
        return (type(self), (self.reason, self.n_sources, self.n_references, self.n_matches, self.n_good))


class ColorTerm(BaseModel):
    """A colour term (LSST ``Colorterm``): the reference magnitude in the instrument's system is
    ``m_primary + c0 + c1 col + c2 col^2`` with ``col = m_primary - m_secondary`` (AB, from the reference
    fluxes ``<primary>_flux`` and ``<secondary>_flux``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    primary: str = Field(..., description="Reference band of the magnitude being transformed.")
    secondary: str = Field(..., description="Second reference band of the colour.")
    c0: float = Field(0.0, description="Constant term (mag).")
    c1: float = Field(0.0, description="Linear colour coefficient.")
    c2: float = Field(0.0, description="Quadratic colour coefficient.")

    def apply(self, mag_primary, color) -> np.ndarray:
        """``m_primary + c0 + c1 col + c2 col^2``."""
        color = np.asarray(color, dtype=np.float64)
        return np.asarray(mag_primary, dtype=np.float64) + self.c0 + color * (self.c1 + color * self.c2)


class PhotoCalSourceSelectorConfig(BaseModel):
    """Source selection of `PhotoCalTask` (LSST's photoCal ``sourceSelection``, science selector)."""

    model_config = ConfigDict(extra="forbid")

    do_require_primary: bool = Field(True, description="Keep detect_isPrimary sources (if the column exists).")
    bad_flags: list[str] = Field(
        default_factory=lambda: ["base_PixelFlags_flag_edge", "base_PixelFlags_flag_nodata",
                                 "base_PixelFlags_flag_interpolated", "base_PixelFlags_flag_saturated"],
        description="Sources with any of these flags set are dropped (flags absent from the catalog are "
                    "skipped with a debug message).")
    do_unresolved: bool = Field(True, description="Keep unresolved sources (if an extendedness column exists).")
    extendedness_fields: list[str] = Field(
        default_factory=lambda: ["base_ClassificationSizeExtendedness_value", "base_ClassificationExtendedness_value"],
        description="Extendedness columns, the first present is used.")
    extendedness_max: float = Field(0.5, description="Unresolved: extendedness < this (obs_lsst: 0.5).")
    signal_to_noise_min: float = Field(10.0, description="S/N = flux / err on flux_field must exceed this.")


class PhotoCalConfig(BaseModel):
    """Configuration of `PhotoCalTask` (LSST's ``PhotoCalConfig`` in snake_case, with its defaults)."""

    model_config = ConfigDict(extra="forbid")

    match_radius: float = Field(0.25, gt=0, le=60, description="Direct-match radius (arcsec). At most 60 arcsec.")
    flux_field: str = Field("slot_CalibFlux_instFlux", description="Source instFlux column (counts); its error "
                            "is the column with 'instFlux' replaced by 'instFluxErr'.")
    sigma_max: float | None = Field(0.25, le=10, description="Largest clipping sigma (mag); None: 2x the first "
                                                             "estimate. At most 10 mag.")
    n_sigma: float = Field(3.0, gt=0, le=100, description="Clip at this many sigma. At most 100.")
    use_median: bool = Field(True, description="Centre the clipping on the median (False: LSST's error-weighted "
                             "mean, weighted by the error itself rather than its inverse square, as "
                             "LSST's code does).")
    n_iter: int = Field(20, ge=1, le=1000, description="Most clipping iterations. At most 1000.")
    mag_err_floor: float = Field(0.0, ge=0, description="Added in quadrature to each magnitude difference's error.")
    apply_color_terms: bool = Field(False, description="Apply color_term to the reference magnitudes.")
    color_term: ColorTerm | None = Field(None, description="The colour term (needed if apply_color_terms).")
    band: str | None = Field(None, description="Reference band (<band>_flux, <band>_fluxErr); None: the "
                             "exposure's band.")
    source_selector: PhotoCalSourceSelectorConfig = Field(default_factory=PhotoCalSourceSelectorConfig)
    aperture_excess: ApertureExcessConfig = Field(
        default_factory=lambda: ApertureExcessConfig(do_cut=False), description="Not LSST (off by default; "
        "`visitcal.tasks.CalibrateTask` turns it on for a crowded detector, crowded_field): leave out of the zero point the selected "
        "sources whose 12-px aperture holds light their PSF flux does not explain (neighbours merged into their "
        "footprint: the calibration flux is measured in that aperture; `visitcal.measurement.aperture_excess`). "
        "At 150000 stars/deg^2 a quarter of the stars carry 1% or more of neighbour light there.")
    min_n_stars: int = Field(5, ge=1, le=2**31 - 1, description="Not LSST: a zero point from fewer good stars is "
                                                                "kept but marked "
                             "degraded (`PhotoCalResult.degraded_reason`), and a visit summary replaces it by the "
                             "visit's zero point (its own and the other detectors', inverse-variance weighted). 5: "
                             "fewer values leave the quartile clipping unable to reject an outlier, while 5 bright "
                             "stars (S/N > 50) still give the zero point to ~3 mmag, better than a visit value, "
                             "which carries the detectors' throughput differences (10 mmag rms in visitcal.sim); visitcal sim's default field gives "
                             "11-17 good stars on a 2048 x 2048 detector. Within int32.")


@dataclass(frozen=True)
class ZeroPointResult:
    """Outcome of `get_zero_point`.

    Attributes
    ----------
    zp : float
        Zero point (mag): inverse-variance mean of ``dmag`` over the good set (the clipping centre if
        no star is good).
    sigma : float
        ``sqrt(1 / sum(w))`` (mag; the last clipping sigma if no star is good).
    ngood : int
        Stars in the good set.
    good : (n,) bool
        The good set, in the order of the input arrays (False for non-finite pairs).
    n_iter : int
        Iterations run.
    """

    zp: float
    sigma: float
    ngood: int
    good: np.ndarray
    n_iter: int


def _histogram_start(d: np.ndarray, sigma_max: float | None) -> tuple[float, float, float]:
    """Iteration 0 on the sorted ``d``: (centre, sigma, sigma_max)."""
    n = d.size
    nhist = 20
    hist, edges = np.histogram(d, nhist)
    modes = np.flatnonzero(hist == hist.max())
    if modes[-1] - modes[0] + 1 == modes.size:
        # Contiguous modal bins: centre between their outer edges; walk out to half the peak height.
        centre = 0.5 * (edges[modes[0]] + edges[modes[-1] + 1])
        peak = hist[modes].sum() / modes.size
        lo = modes[0]
        while lo >= 0 and hist[lo] > 0.5 * peak:
            lo -= 1
        lo = max(lo, 0)
        q1 = d[hist[:lo].sum()]  # first value in bin lo
        hi = modes[-1]
        while hi < nhist and hist[hi] > 0.5 * peak:
            hi += 1
        hi = min(hi, nhist - 1)
        q3 = d[min(hist[:hi].sum(), n - 1)]  # first value in bin hi
        if q1 == q3:
            q1, q3 = d[int(0.25 * n)], d[int(0.75 * n)]
        sig = (q3 - q1) / 2.3  # half-peak width: 2.355 sigma for a Gaussian
    else:
        centre = float(np.median(d))
        sig = (d[int(0.75 * n)] - d[int(0.25 * n)]) / 2.3
    if sigma_max is None:
        sigma_max = 2.0 * sig
    return float(centre), float(sig), float(sigma_max)


def get_zero_point(dmag, dmag_err=None, *, sigma_max: float | None = 0.25, n_sigma: float = 3.0,
                   use_median: bool = True, n_iter: int = 20) -> ZeroPointResult:
    """Clipped zero point of magnitude differences (LSST ``PhotoCalTask.getZeroPoint``).

    On the finite pairs, sorted by ``dmag``:

    - iteration 0: a 20-bin histogram. If the modal bins (all bins at the maximum count) are contiguous,
      the centre is the middle of their outer edges; from the first modal bin walk down while a bin holds
      more than half the peak (the mean modal count), and ``q1`` is the first value of the bin where the
      walk stops (index = count of the bins before it); likewise upward from the last modal bin for ``q3``
      (index capped at n - 1); if ``q1 == q3`` they become ``d[int(0.25 n)]`` and ``d[int(0.75 n)]``;
      ``sigma = (q3 - q1) / 2.3``. Otherwise the centre is the median and ``sigma`` the same quantile
      difference / 2.3. ``sigma_max = None`` becomes 2 sigma.
    - iterations >= 1, on the current good set of ``m`` values ``g`` (sorted): the centre is the median
      (``use_median``; else LSST's ``average(g, weights=err)``, weighted by the error itself rather
      than its inverse square, a quirk of LSST's code kept here), ``q1 = g[min(int(0.25 m + 0.5), m - 1)]``,
      ``q3 = g[min(int(0.75 m + 0.5), m - 1)]``, ``sigma = 0.741301 (q3 - q1)``.
    - good = ``|dmag - centre| < n_sigma min(sigma, sigma_max)``; stop when its count no longer changes
      (the count before iteration 0 is n), or after ``n_iter`` iterations. If none is good: a warning,
      and ``zp = centre``, ``sigma`` the clipping sigma, ``ngood = 0``.
    - not LSST: when the clipping width ``n_sigma min(sigma, sigma_max)`` is 0 (a single star, or identical
      values: no spread to clip against) the current good set is kept and the iterations stop. LSST's strict
      inequality then keeps nothing and returns the histogram bin's centre (0.025 mag off a single star) with
      ``ngood = 0``; here one star gives its own ``dmag``, ``ngood = 1`` and ``sigma`` its error.
    - final: ``zp = sum(w dmag) / sum(w)`` over the good set with ``w = 1 / err^2`` (err = 1 without
      ``dmag_err``), ``sigma = sqrt(1 / sum(w))``.

    Parameters
    ----------
    dmag : (n,) array_like
        ``ref_mag - src_mag`` (mag).
    dmag_err : (n,) array_like, optional
        Their errors (mag, > 0).
    sigma_max, n_sigma, use_median, n_iter
        As in `PhotoCalConfig`.

    Raises
    ------
    ValueError
        No finite pair, or arrays of different lengths.
    """
    dmag = np.asarray(dmag, dtype=np.float64).ravel()
    err = np.ones_like(dmag) if dmag_err is None else np.asarray(dmag_err, dtype=np.float64).ravel()
    if err.shape != dmag.shape:
        raise ValueError(f"dmag_err has {err.size} values for {dmag.size} dmag")
    finite = np.flatnonzero(np.isfinite(dmag) & np.isfinite(err))
    if finite.size == 0:
        raise ValueError("get_zero_point: no finite magnitude difference")
    order = finite[np.argsort(dmag[finite], kind="stable")]
    d, e = dmag[order], err[order]
    n = d.size
    ngood = n
    good = np.ones(n, dtype=bool)
    centre = sig = 0.0
    it = 0
    for it in range(int(n_iter)):
        if it == 0:
            centre, sig, sigma_max = _histogram_start(d, sigma_max)
        else:
            g, ge = d[good], e[good]
            m = g.size
            centre = float(np.median(g)) if use_median else float(np.average(g, weights=ge))
            q3 = g[min(int(0.75 * m + 0.5), m - 1)]
            q1 = g[min(int(0.25 * m + 0.5), m - 1)]
            sig = float(IQR_TO_SIGMA * (q3 - q1))
        width = n_sigma * min(sig, sigma_max)
        if not width > 0:
            # No spread to clip against (one star, or identical values): keep the current set. LSST's strict
            # |d - centre| < 0 keeps nothing and returns the histogram bin's centre, 0.025 mag from a single
            # star's value, with ngood = 0 (MAGZERO_NOBJ = 0, MAGZERO_RMS = 0.0 for a one-star zero point).
            _log.debug("photometric zero point: no spread to clip %d value(s) against; none clipped", int(good.sum()))
            break
        good = np.abs(d - centre) < width
        count = int(good.sum())
        if count == 0:
            _log.warning("photometric zero point: no star within %.3g mag of %.4f after %d iterations",
                         n_sigma * min(sig, sigma_max), centre, it + 1)
            return ZeroPointResult(float(centre), float(sig), 0, np.zeros(dmag.size, bool), it + 1)
        if count == ngood:
            break
        ngood = count
    w = 1.0 / e[good] ** 2
    wsum = float(w.sum())
    zp = float((w * d[good]).sum() / wsum)
    out_good = np.zeros(dmag.size, dtype=bool)
    out_good[order[good]] = True
    return ZeroPointResult(zp, math.sqrt(1.0 / wsum), int(good.sum()), out_good, it + 1)


def _mags(flux, flux_err):
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, -2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
        mag_err = MAG_ERR_PER_REL_FLUX * np.asarray(flux_err, dtype=np.float64) / np.where(flux > 0, flux, np.nan)
    return mag, mag_err


def zero_point_from_fluxes(src_flux, src_flux_err, ref_flux, ref_flux_err, *, color=None,
                           color_term: ColorTerm | None = None, config: PhotoCalConfig | None = None
                           ) -> tuple[ZeroPointResult, np.ndarray, np.ndarray]:
    """The zero-point core on pre-matched arrays (steps 3-4 of the module docstring).

    Parameters
    ----------
    src_flux, src_flux_err : (n,) array_like
        Source instFlux and error (counts).
    ref_flux, ref_flux_err : (n,) array_like
        Reference flux and error (nJy) of the same objects.
    color : (n,) array_like, optional
        Reference colour ``m_primary - m_secondary`` (mag), for ``color_term``.
    color_term : `ColorTerm`, optional
        Applied to the reference magnitudes when given (needs ``color``).
    config : `PhotoCalConfig`, optional
        ``sigma_max``, ``n_sigma``, ``use_median``, ``n_iter``, ``mag_err_floor``.

    Returns
    -------
    (`ZeroPointResult`, dmag, dmag_err)
        The zero point (AB magnitude of one count), and the per-pair ``ref_mag - src_mag`` and errors
        (NaN where a flux is not positive or not finite).
    """
    config = config or PhotoCalConfig()
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (src_flux, src_flux_err, ref_flux, ref_flux_err)]
    if len({a.size for a in arrays}) != 1:
        raise ValueError("src_flux, src_flux_err, ref_flux and ref_flux_err must have one length, got "
                         f"{[a.size for a in arrays]}")
    src_mag, src_err = _mags(arrays[0], arrays[1])
    ref_mag, ref_err = _mags(arrays[2], arrays[3])
    ref_mag = ref_mag + AB_ZERO_POINT_NJY
    if color_term is not None:
        if color is None:
            raise ValueError("color_term needs color")
        color = np.asarray(color, dtype=np.float64).ravel()
        if color.size != ref_mag.size:
            raise ValueError(f"color has {color.size} values for {ref_mag.size} pairs")
        ref_mag = color_term.apply(ref_mag, color)
    dmag = ref_mag - src_mag
    dmag_err = np.sqrt(src_err**2 + ref_err**2 + config.mag_err_floor**2)
    zp = get_zero_point(dmag, dmag_err, sigma_max=config.sigma_max, n_sigma=config.n_sigma,
                        use_median=config.use_median, n_iter=config.n_iter)
    return zp, dmag, dmag_err


def fit_color_term(dmag, dmag_err, color, *, order: int = 1, n_sigma: float = 3.0, n_iter: int = 10):
    """Fit ``dmag = c0 + c1 col (+ c2 col^2)`` by least squares (inverse-variance with ``dmag_err``,
    unweighted with None) with clipping at ``n_sigma`` times the MAD-sigma (1.4826 MAD) of the
    residuals, until the kept set stops changing.

    Ours (LSST derives colour terms offline). A slope ``k`` of dmag on colour is removed by a
    `ColorTerm` with ``c1 = -k``. Returns ``(coefficients [c0, c1, ...], residual MAD-sigma, kept)``.
    """
    dmag = np.asarray(dmag, dtype=np.float64).ravel()
    if dmag_err is None:
        dmag_err = np.ones_like(dmag)
    dmag, err, color = (np.asarray(a, dtype=np.float64).ravel() for a in (dmag, dmag_err, color))
    keep = np.isfinite(dmag) & np.isfinite(err) & np.isfinite(color) & (err > 0)
    coef = np.zeros(order + 1)
    mad = float("nan")
    for _ in range(n_iter):
        a = np.vander(color[keep], order + 1, increasing=True) / err[keep, None]
        coef = np.linalg.lstsq(a, dmag[keep] / err[keep], rcond=None)[0]
        res = dmag - np.vander(color, order + 1, increasing=True) @ coef
        mad = float(1.4826 * np.median(np.abs(res[keep] - np.median(res[keep]))))
        new = np.isfinite(res) & np.isfinite(err) & (err > 0) & (np.abs(res) <= n_sigma * mad)
        if np.array_equal(new, keep):
            break
        keep = new
    return coef, mad, keep


@dataclass(frozen=True)
class PhotoCalResult:
    """Result of `PhotoCalTask.run` (LSST's attribute names, snake_case).

    Attributes
    ----------
    photo_calib : `PhotoCalib`
        Constant calibration, ``3.631e12 10^(-0.4 zp)`` nJy per count.
    zero_point : float
        AB magnitude of one count (for instFlux in counts, not per second).
    sigma : float
        Its uncertainty (mag).
    ngood : int
        Stars in the final mean.
    matches : `astropy.table.Table`
        One row per match: ``src_index``, ``ref_index`` (row numbers), ``distance`` (arcsec), ``src_mag``,
        ``ref_mag``, ``dmag``, ``dmag_err``, ``good``.
    scatter : float
        Not LSST: the scatter of ``dmag`` about the zero point over the good stars (mag; 1.4826 MAD about the
        zero point); NaN with fewer than 2 good stars, which have no scatter to estimate.
    degraded_reason : str or None
        Not LSST: why the zero point is not to be trusted as the detector's own (fewer good stars than
        ``min_n_stars``); None when it is.
    error : float
        Not LSST: the zero point's error with the stars' excess scatter, ``sigma`` times the Birge ratio
        ``max(1, sqrt(chi2 / (ngood - 1)))`` of the good stars about it (mag; ``sigma`` with one star).
        ``sigma`` counts only the stated errors; a handful of u-band stars whose calibration fluxes carry
        +-35 mmag of neighbour light gave sigma 4 mmag for a zero point 34 mmag off (bench/README.md).
    """

    photo_calib: PhotoCalib
    zero_point: float
    sigma: float
    ngood: int
    matches: Table
    scatter: float = math.nan
    degraded_reason: str | None = None
    error: float = math.nan

    @property
    def degraded(self) -> bool:
        """Whether the zero point comes from fewer than ``min_n_stars`` good stars."""
        return self.degraded_reason is not None


def _radec_deg(table: Table, candidates, what: str):
    """(ra, dec) in degrees from the first (ra_name, dec_name, unit_if_none) pair present."""
    for rn, dn, default_unit in candidates:
        if rn in table.colnames and dn in table.colnames:
            cols = []
            for name in (rn, dn):
                col = table[name]
                unit = getattr(col, "unit", None)
                v = np.asarray(col, dtype=np.float64)
                if unit is not None:
                    cols.append(np.asarray((v * unit).to_value("deg")))
                else:
                    cols.append(np.degrees(v) if default_unit == "rad" else v)
            return cols[0], cols[1]
    raise KeyError(f"{what} has no position columns: expected one of {[c[:2] for c in candidates]}")


class PhotoCalTask:
    """Measure the photometric zero point of an exposure (module docstring).

    Parameters
    ----------
    config : `PhotoCalConfig`, optional
    """

    ConfigClass = PhotoCalConfig
    _DefaultName = "photoCal"

    def __init__(self, config: PhotoCalConfig | None = None):
        self.config = config if config is not None else PhotoCalConfig()
        if not isinstance(self.config, PhotoCalConfig):
            raise TypeError(f"config must be a PhotoCalConfig, got {type(self.config).__name__}")
        if self.config.apply_color_terms and self.config.color_term is None:
            raise ValueError("apply_color_terms is True but color_term is not set")

    def __repr__(self) -> str:
        return f"PhotoCalTask(config={self.config!r})"

    def _flux_columns(self, source_cat: Table) -> tuple[str, str]:
        """The real flux and error columns behind ``config.flux_field`` (slot aliases resolved)."""
        from ..measurement.source_selector import resolve_column

        flux_field = self.config.flux_field
        out = []
        for name in (flux_field, flux_field.replace("instFlux", "instFluxErr")):
            try:
                out.append(resolve_column(source_cat, name))
            except KeyError:
                raise KeyError(f"source catalog has no column {name!r} (flux_field = {flux_field!r}; slot aliases "
                               f"{source_cat.meta.get('slots', {})})") from None
        return out[0], out[1]

    def select_sources(self, source_cat: Table) -> np.ndarray:
        """(n,) bool: sources passing the selection of ``config.source_selector``."""
        sel = self.config.source_selector
        flux_field, err_field = self._flux_columns(source_cat)
        n = len(source_cat)
        keep = np.ones(n, dtype=bool)
        if sel.do_require_primary and "detect_isPrimary" in source_cat.colnames:
            keep &= np.asarray(source_cat["detect_isPrimary"], dtype=bool)
        for flag in sel.bad_flags:
            if flag in source_cat.colnames:
                keep &= ~np.asarray(source_cat[flag], dtype=bool)
            else:
                _log.debug("photoCal source selection: no flag column %s, skipped", flag)
        if sel.do_unresolved:
            for name in sel.extendedness_fields:
                if name in source_cat.colnames:
                    with np.errstate(invalid="ignore"):
                        keep &= np.asarray(source_cat[name], dtype=np.float64) < sel.extendedness_max
                    break
        flux = np.asarray(source_cat[flux_field], dtype=np.float64)
        err = np.asarray(source_cat[err_field], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            keep &= flux / err > sel.signal_to_noise_min  # NaN fails
        return keep

    def _cut_aperture_excess(self, exposure_or_wcs, source_cat: Table, selected: np.ndarray):
        """``selected`` without the sources whose calibration aperture holds neighbour light
        (``config.aperture_excess``), and None or why the cut was not applied because it would leave too few stars
        (a fallback, recorded in the result's ``degraded_reason``). A catalog without the cut's columns, or with
        fewer than 2 measurable stars, is left as it is (logged)."""
        cfg = self.config.aperture_excess
        if not cfg.do_cut:
            return selected, None
        bbox = getattr(exposure_or_wcs, "bbox", None)
        try:
            kept, info = apply_aperture_excess_cut(source_cat, selected, cfg, bbox=bbox)
        except KeyError as err:
            _log.debug("photoCal: aperture-excess cut not applied: %s", err.args[0])
            return selected, None
        if info["n_cut"]:
            _log.info("photoCal: %d of %d selected sources left out for light in their aperture that their PSF "
                      "flux does not explain", info["n_cut"], info["n_in"])
        if info["too_few_left"]:
            _log.warning("photoCal: %s", info["skipped"])
            return kept, info["skipped"]
        if info["skipped"]:
            _log.info("photoCal: %s", info["skipped"])
        return kept, None

    def _band(self, exposure_or_wcs) -> str:
        if self.config.band is not None:
            return self.config.band
        info = getattr(exposure_or_wcs, "visit_info", None)
        band = getattr(info, "band", None)
        if band:
            return str(band)
        raise ValueError("PhotoCalConfig.band is None and the exposure has no band (visit_info.band)")

    def run(self, exposure_or_wcs, source_cat: Table, ref_cat: Table) -> PhotoCalResult:
        """Match, select and compute the zero point; set ``calib_photometry_used`` on ``source_cat``.

        Parameters
        ----------
        exposure_or_wcs : `visitcal.core.image.Exposure` or `astropy.wcs.WCS` or None
            Gives the band (``visit_info.band``) when ``config.band`` is None, and the WCS used for source
            positions when the catalog has no ``coord_ra`` / ``coord_dec``.
        source_cat : `astropy.table.Table`
            Sources: ``coord_ra``, ``coord_dec`` (radians unless the columns carry units), or
            ``slot_Centroid_x`` / ``_y`` with a WCS; ``flux_field`` and its error; the selection columns.
            Gains the bool columns ``calib_photometry_used`` and ``calib_photometry_reserved``.
        ref_cat : `astropy.table.Table`
            References in the simulator's refcat format: ``ra``, ``dec`` (degrees; or ``coord_ra`` /
            ``coord_dec`` in radians), ``<band>_flux``, ``<band>_fluxErr`` (nJy); the colour term's
            ``<primary>_flux`` and ``<secondary>_flux`` when ``apply_color_terms``.

        Raises
        ------
        PhotoCalError
            No selected source, no usable reference, no match, or no match with finite magnitudes.
        KeyError
            A required column is missing (named).
        """
        cfg = self.config
        band = self._band(exposure_or_wcs)
        n_src_all = len(source_cat)
        selected = self.select_sources(source_cat)
        selected, excess_skipped = self._cut_aperture_excess(exposure_or_wcs, source_cat, selected)
        src_ra, src_dec = self._source_positions(exposure_or_wcs, source_cat)
        selected &= np.isfinite(src_ra) & np.isfinite(src_dec)

        ref_ra, ref_dec = _radec_deg(ref_cat, [("ra", "dec", "deg"), ("coord_ra", "coord_dec", "rad")],
                                     "reference catalog")
        fcol, ecol = f"{band}_flux", f"{band}_fluxErr"
        for name in (fcol, ecol):
            if name not in ref_cat.colnames:
                raise KeyError(f"reference catalog has no column {name!r} (band {band!r})")
        ref_flux = np.asarray(ref_cat[fcol], dtype=np.float64)
        ref_err = np.asarray(ref_cat[ecol], dtype=np.float64)
        ref_ok = np.isfinite(ref_ra) & np.isfinite(ref_dec) & np.isfinite(ref_flux) & (ref_flux > 0)

        source_cat["calib_photometry_used"] = np.zeros(n_src_all, dtype=bool)
        source_cat["calib_photometry_reserved"] = np.zeros(n_src_all, dtype=bool)
        n_sel, n_ref = int(selected.sum()), int(ref_ok.sum())
        if n_sel == 0:
            raise PhotoCalError("no_sources", n_sel, n_ref)
        if n_ref == 0:
            raise PhotoCalError("no_references", n_sel, n_ref)

        src_idx = np.flatnonzero(selected)
        ref_idx = np.flatnonzero(ref_ok)
        m = match_nearest_sky(ref_ra[ref_idx], ref_dec[ref_idx], src_ra[src_idx], src_dec[src_idx],
                              cfg.match_radius, unique=True)
        first, second, dist = m.pairs()
        mr, ms = ref_idx[first], src_idx[second]
        if mr.size == 0:
            raise PhotoCalError("no_matches", n_sel, n_ref)
        source_cat["calib_photometry_used"][ms] = True

        flux_field, err_field = self._flux_columns(source_cat)
        color = None
        color_term = cfg.color_term if cfg.apply_color_terms else None
        if color_term is not None:
            for b in (color_term.primary, color_term.secondary):
                if f"{b}_flux" not in ref_cat.colnames:
                    raise KeyError(f"reference catalog has no column '{b}_flux' for the colour term")
            with np.errstate(divide="ignore", invalid="ignore"):
                fp = np.asarray(ref_cat[f"{color_term.primary}_flux"], dtype=np.float64)[mr]
                fs = np.asarray(ref_cat[f"{color_term.secondary}_flux"], dtype=np.float64)[mr]
                color = -2.5 * np.log10(fp / fs)
        src_flux = np.asarray(source_cat[flux_field], dtype=np.float64)[ms]
        src_err = np.asarray(source_cat[err_field], dtype=np.float64)[ms]
        finite_pairs = np.isfinite(src_flux) & (src_flux > 0) & np.isfinite(ref_flux[mr])
        if color is not None:
            finite_pairs &= np.isfinite(color)
        if not finite_pairs.any():
            raise PhotoCalError("no_good_stars", n_sel, n_ref, mr.size, 0)
        zp, dmag, dmag_err = zero_point_from_fluxes(src_flux, src_err, ref_flux[mr], ref_err[mr], color=color,
                                                    color_term=color_term, config=cfg)
        if not np.isfinite(dmag).any():
            raise PhotoCalError("no_good_stars", n_sel, n_ref, mr.size, 0)
        f0 = 10.0 ** (0.4 * zp.zp)
        photo_calib = make_photo_calib_from_calib_zero_point(f0, 0.4 * math.log(10.0) * f0 * zp.sigma)
        with np.errstate(divide="ignore", invalid="ignore"):
            src_mag = -2.5 * np.log10(src_flux)
        matches = Table({"src_index": ms, "ref_index": mr, "distance": dist, "src_mag": src_mag,
                         "ref_mag": dmag + src_mag, "dmag": dmag, "dmag_err": dmag_err, "good": zp.good})
        matches["distance"].unit = "arcsec"
        scatter, error = math.nan, float(zp.sigma)
        if zp.ngood >= 2:
            resid = dmag[zp.good] - zp.zp
            scatter = float(MAD_TO_SIGMA * np.median(np.abs(resid)))
            chi2 = float(np.sum((resid / dmag_err[zp.good]) ** 2))
            error = float(zp.sigma * max(1.0, math.sqrt(chi2 / (zp.ngood - 1))))
        degraded = None
        if zp.ngood < cfg.min_n_stars:
            degraded = (f"zero point from {zp.ngood} good star(s) of {mr.size} matches, fewer than min_n_stars = "
                        f"{cfg.min_n_stars}")
            _log.warning("photometric calibration degraded: %s", degraded)
        if excess_skipped:
            degraded = "; ".join(r for r in (degraded, excess_skipped) if r)
        _log.info("photometric zero point %.4f +- %.4f from %d of %d matches (%d selected sources, %d references)",
                  zp.zp, zp.sigma, zp.ngood, mr.size, n_sel, n_ref)
        return PhotoCalResult(photo_calib, zp.zp, zp.sigma, zp.ngood, matches, scatter=scatter,
                              degraded_reason=degraded, error=error)

    @staticmethod
    def _source_positions(exposure_or_wcs, source_cat: Table):
        if "coord_ra" in source_cat.colnames and "coord_dec" in source_cat.colnames:
            return _radec_deg(source_cat, [("coord_ra", "coord_dec", "rad")], "source catalog")
        wcs = exposure_or_wcs if isinstance(exposure_or_wcs, WCS) else getattr(exposure_or_wcs, "wcs", None)
        if wcs is None:
            raise KeyError("source catalog has no coord_ra/coord_dec and no WCS was given")
        for xn, yn in (("slot_Centroid_x", "slot_Centroid_y"), ("base_SdssCentroid_x", "base_SdssCentroid_y")):
            if xn in source_cat.colnames and yn in source_cat.colnames:
                ra, dec = wcs.all_pix2world(np.asarray(source_cat[xn], dtype=np.float64),
                                            np.asarray(source_cat[yn], dtype=np.float64), 0)
                return ra, dec
        raise KeyError("source catalog has no coord_ra/coord_dec nor slot_Centroid_x/_y")
