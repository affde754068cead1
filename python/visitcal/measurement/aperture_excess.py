"""Stars whose calibration aperture holds light their PSF does not explain (not LSST; crowded fields).

The calibration flux (``slot_CalibFlux``: the compensated tophat normalised to the 12-px circular aperture), the
aperture corrections fitted against it and the zero point fitted with it all assume that a star's aperture holds
that star's light only. In a crowded field a large part of the stars do not: at 150 000 stars/deg^2 (the
``crowded`` row of ``bench/bench_matrix.py``) 27% of the photometric-calibration stars carry neighbour light of 1%
or more of their own inside 12 px, and their calibration flux is 38 mmag too bright on average. Most of those
neighbours are faint stars and galaxies 5-11 px away that detection merges into the star's footprint (no peak of
their own, so no catalog row): a cut on catalogued neighbours misses them. Their light is seen in the star's own
fluxes: it raises the aperture flux much more than the PSF flux, which weighs the core.

`aperture_excess` measures that, per star, as a significance: the ratio ``q = aperture flux / PSF flux`` against
its smooth model over the detector (a Chebyshev field of ``order`` fitted to the reference stars, weighted by
``1 / sigma_q^2`` and clipped three times at -3 and +2 MAD-sigma: the contaminated stars are all on the high side),
in units of the ratio's own error::

    z = (q / model - 1) / sqrt(s_q^2 + floor^2),    s_q^2 = (s_ap / ap)^2 - (s_psf / psf)^2

(the PSF flux's noise is part of the aperture's, so the variances subtract: for a star on a flat background the
covariance of the two fluxes is the PSF flux's variance times the aperture's encircled energy, and the ratio of the
two fluxes scatters by the difference). ``floor`` is a relative error added in quadrature: the PSF model's own
error on the ratio, so that the brightest stars are not cut for a model that is off by a few 1e-4. When the
reference stars' ``z`` scatter more than the errors say (a sigma above 1, measured on the low side, which the
contaminated stars do not widen), ``z`` is divided by that scatter.

`ApertureExcessConfig` is the cut used by `visitcal.measurement.measure_ap_corr.MeasureApCorrTask` (the stars that
fit the normalisation of the calibration flux and the aperture corrections) and by
`visitcal.calib.photo_cal.PhotoCalTask` (the zero point's stars), off by default there and turned on for crowded detectors (``crowded_field`` of the tasks,
`visitcal.detection.crowding`, with the source-masked background: alone, it removes a bias that offset the high sky's, and sparse fields'
zero points move away from the truth): keep ``z <= max_excess_sigma``. The cut is
one-sided (neighbour light only adds) and leaves the stars it cannot test (a non-finite flux or error) to the
other criteria. It is not applied to fewer than ``min_reference_stars`` (20) candidates (a sparse field: the
ratio's model is not determined well enough, and it is not needed), nor when it would leave fewer than ``min_stars``
stars, which the caller records as a fallback. Measured on the ``crowded`` row's calibrated stars (after the
background fix of `visitcal.detection.background`): the zero point's inverse-variance mean went from +4.3 to
+2.2 mmag with ``max_excess_sigma = 3`` (12% of the stars dropped, among them 95% of the truly contaminated
ones); the rest was the normalisation's own contamination, which the same cut in `MeasureApCorrTask` removes.

The work is whole-array numpy over the catalog and two or three C++ Chebyshev fits; no loop over stars in Python.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from ..core.chebyshev import ChebyshevBoundedField, ChebyshevBoundedFieldControl
from ..core.geom import Box2I
from .source_selector import resolve_column

__all__ = ["ApertureExcessConfig", "ApertureExcessResult", "aperture_excess", "apply_aperture_excess_cut"]

#: A normal distribution's sigma over its median absolute deviation.
_MAD_TO_SIGMA = 1.482602218505602


class ApertureExcessConfig(BaseModel):
    """The aperture-excess cut (module docstring): stars whose aperture holds more light than their PSF flux
    predicts are left out of calibration fits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_cut: bool = Field(True, description="Apply the cut (False: every star is kept, LSST's behaviour).")
    aperture_flux_name: str = Field("base_CircularApertureFlux_12_0", description="The aperture flux prefix "
                                    "(_instFlux, _instFluxErr): the calibration aperture, 12 px.")
    psf_flux_name: str = Field("base_PsfFlux", description="The PSF flux prefix (_instFlux, _instFluxErr).")
    max_excess_sigma: float = Field(3.0, gt=0, le=1000, description="Keep stars whose aperture excess is at most this "
                                    "many sigma (one-sided). At most 1000.")
    floor: float = Field(5e-4, ge=0, le=0.1, description="Relative error added in quadrature to the ratio's "
                         "(the PSF model's own error on it).")
    order: int = Field(2, ge=0, le=4, description="Chebyshev order of the ratio's model over the detector (the "
                       "aperture corrections' LSST order) "
                       "(lowered when the stars are too few for it).")
    min_stars: int = Field(5, ge=1, le=100000, description="When fewer stars would be left, the cut is not "
                           "applied (and the caller records it).")
    min_reference_stars: int = Field(20, ge=2, le=100000, description="Below this many candidate stars the cut is "
                                     "not applied: the ratio's model and its scatter are not determined well enough "
                                     "to call a star contaminated, and so few stars is not a crowded field (the "
                                     "fits' own clipping deals with an outlier there).")


class ApertureExcessResult:
    """``z``: (n,) the excess significance of every row (NaN where it cannot be measured); ``model_order``: the
    order of the ratio's model (-1 when none could be fitted, then ``z`` is all NaN)."""

    def __init__(self, z: np.ndarray, model_order: int):
        self.z = z
        self.model_order = model_order

    def __repr__(self) -> str:
        return f"ApertureExcessResult(n={self.z.size}, model_order={self.model_order})"


def _columns(catalog: Table, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    flux = np.asarray(catalog[resolve_column(catalog, prefix + "_instFlux")], dtype=np.float64)
    err = np.asarray(catalog[resolve_column(catalog, prefix + "_instFluxErr")], dtype=np.float64)
    return flux, err


def aperture_excess(catalog: Table, reference: np.ndarray, config: ApertureExcessConfig | None = None, *,
                    bbox: Box2I | None = None) -> ApertureExcessResult:
    """The aperture-excess significance ``z`` of every row of ``catalog`` (module docstring).

    Parameters
    ----------
    catalog : astropy.table.Table
        With ``slot_Centroid_x`` / ``_y`` (pixels) and the aperture and PSF fluxes and errors (counts) of
        ``config``.
    reference : (n,) bool array
        The rows the ratio's model is fitted to (the candidate calibration stars).
    config : `ApertureExcessConfig`, optional
    bbox : `Box2I`, optional
        The model's domain (pixels); default the reference stars' bounding box.

    Returns
    -------
    `ApertureExcessResult`
        ``z`` is dimensionless (sigma); NaN where a flux or an error is not finite or not positive, and
        everywhere when fewer than two reference rows have a measurable ratio.

    Raises
    ------
    KeyError
        A flux or centroid column is missing (named).
    ValueError
        ``reference`` is not a boolean array of the catalog's length.
    """
    cfg = config or ApertureExcessConfig()
    n = len(catalog)
    reference = np.asarray(reference)
    if reference.dtype != bool or reference.shape != (n,):
        raise ValueError(f"reference must be a boolean array of the catalog's length {n}, got dtype "
                         f"{reference.dtype} and shape {reference.shape}")
    ap, ap_err = _columns(catalog, cfg.aperture_flux_name)
    psf, psf_err = _columns(catalog, cfg.psf_flux_name)
    x = np.asarray(catalog[resolve_column(catalog, "slot_Centroid_x")], dtype=np.float64)
    y = np.asarray(catalog[resolve_column(catalog, "slot_Centroid_y")], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = ap / psf
        rel2 = (ap_err / ap) ** 2 - (psf_err / psf) ** 2
        sq = np.sqrt(np.maximum(rel2, 0.0) + cfg.floor**2)
    ok = (np.isfinite(q) & np.isfinite(sq) & (ap > 0) & (psf > 0) & (sq > 0) & np.isfinite(x) & np.isfinite(y))
    z = np.full(n, np.nan)
    rows = np.flatnonzero(ok & reference)
    if rows.size < 2:
        return ApertureExcessResult(z, -1)
    if bbox is None:
        bbox = Box2I(int(math.floor(x[rows].min())), int(math.floor(y[rows].min())),
                     int(math.ceil(x[rows].max())), int(math.ceil(y[rows].max())))
    # The ratio's model: a weighted Chebyshev fit (weights 1 / sigma of q), the outliers -- the contaminated stars
    # among them, on the high side -- clipped at -3 / +2 MAD-sigma of the normalised residuals, three times.
    keep = rows
    field = None
    order = cfg.order
    for _ in range(3):
        while order > 0 and keep.size < 2 * ChebyshevBoundedFieldControl(order_x=order, order_y=order).size:
            order -= 1
        try:
            field = ChebyshevBoundedField.fit(bbox, x[keep], y[keep], q[keep], weights=1.0 / (q[keep] * sq[keep]),
                                              control=ChebyshevBoundedFieldControl(order_x=order, order_y=order))
        except ValueError:  # positions that cannot determine the terms (e.g. on one line): a constant
            order = 0
            field = ChebyshevBoundedField.fit(bbox, x[keep], y[keep], q[keep], weights=1.0 / (q[keep] * sq[keep]),
                                              control=ChebyshevBoundedFieldControl(order_x=0, order_y=0))
        r = (q[rows] / field.evaluate(x[rows], y[rows]) - 1.0) / sq[rows]
        sigma = _MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r))))
        d = (r - np.median(r)) / max(sigma, 1.0)
        nxt = rows[(d >= -3.0) & (d <= 2.0)]  # tighter on the high side, where the contaminated stars are
        if nxt.size < 2 or np.array_equal(nxt, keep):
            break
        keep = nxt
    # In units of the reference stars' own scatter when that exceeds the stated errors (errors that leave out part
    # of the noise must not turn the one-sided cut into a cut of the ordinary stars on the high side). The scatter
    # from the low side only (median minus the 15.87th percentile: one sigma of a normal), which the contaminated
    # stars, all on the high side, hardly widen.
    r = (q[keep] / field.evaluate(x[keep], y[keep]) - 1.0) / sq[keep]
    lo, mid = np.percentile(r, [15.865525393145708, 50.0])
    scale = max(1.0, float(mid - lo))
    good = np.flatnonzero(ok)
    z[good] = (q[good] / field.evaluate(x[good], y[good]) - 1.0) / (sq[good] * scale)
    return ApertureExcessResult(z, order)


def apply_aperture_excess_cut(catalog: Table, selected: np.ndarray, config: ApertureExcessConfig | None = None, *,
                              bbox: Box2I | None = None) -> tuple[np.ndarray, dict]:
    """``selected`` without the stars whose aperture excess exceeds ``config.max_excess_sigma``.

    Parameters
    ----------
    catalog : astropy.table.Table
        As for `aperture_excess`.
    selected : (n,) bool array
        The candidate stars (the reference of the ratio's model).
    config : `ApertureExcessConfig`, optional
    bbox : `Box2I`, optional
        The model's domain (pixels).

    Returns
    -------
    kept : (n,) bool array
        ``selected`` after the cut; ``selected`` itself when the cut is off, cannot be measured or would
        leave fewer than ``min_stars`` stars.
    info : dict
        ``n_in``, ``n_cut`` (stars removed), ``model_order``, ``skipped``: None, or why the cut was not applied (a
        sentence), and ``too_few_left``: whether that was because it would leave fewer than ``min_stars`` (a
        fallback the caller records; fewer than 2 measurable stars is not: there is nothing to cut against).
    """
    cfg = config or ApertureExcessConfig()
    selected = np.asarray(selected, dtype=bool)
    n_in = int(selected.sum())
    info = {"n_in": n_in, "n_cut": 0, "model_order": -1, "skipped": None, "too_few_left": False}
    if not cfg.do_cut or n_in == 0:
        return selected, info
    if n_in < cfg.min_reference_stars:
        info["skipped"] = (f"aperture-excess cut not applied: {n_in} stars, fewer than min_reference_stars = "
                           f"{cfg.min_reference_stars}")
        return selected, info
    res = aperture_excess(catalog, selected, cfg, bbox=bbox)
    info["model_order"] = res.model_order
    if res.model_order < 0:
        info["skipped"] = f"aperture-excess cut not applied: fewer than 2 of the {n_in} stars have a measurable ratio"
        return selected, info
    with np.errstate(invalid="ignore"):
        bad = selected & (res.z > cfg.max_excess_sigma)  # NaN (not measurable): left to the other criteria
    kept = selected & ~bad
    if int(kept.sum()) < cfg.min_stars and bad.any():
        info["skipped"] = (f"aperture-excess cut not applied: it would leave {int(kept.sum())} of {n_in} stars, "
                           f"fewer than min_stars = {cfg.min_stars}")
        info["too_few_left"] = True
        return selected, info
    info["n_cut"] = int(bad.sum())
    return kept, info
