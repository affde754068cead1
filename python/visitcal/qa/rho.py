"""The rho statistics of PSF-model residuals (Rowe 2010; Jarvis et al. 2016, MNRAS 460, 2245, eqs. 3-7).

With ``e`` the PSF model's ellipticity, ``T`` its size, ``de = e_star - e_model`` and ``dT = T_star - T_model``
at each PSF star (our sign convention: star minus model, so ``rho2`` and ``rho5`` have the opposite sign of
Jarvis et al.'s model-minus-star ones; ``rho1``, ``rho3``, ``rho4`` do not depend on it)::

    rho1 = <de* de>                      rho2 = <e* de>
    rho3 = <(e dT/T)* (e dT/T)>          rho4 = <de* (e dT/T)>        rho5 = <e* (e dT/T)>

each the shear-shear correlation xi+ (and xi-) of the two spin-2 fields in logarithmic bins of separation,
``T`` in ``dT/T`` being the model's. Ellipticities are "distortions" (e1 = (Ixx - Iyy)/(Ixx + Iyy),
e2 = 2 Ixy/(Ixx + Iyy), as LSST's ``psfStarDeltaE1Median`` and Piff's rho code), sizes ``T = Ixx + Iyy``.

Positions are projected gnomonically (`tangent_plane`) about the field's centre to a flat (x, y) in arcmin,
x towards +ra (east), y towards +dec (north); the ellipticities must be given in that same (x, y) frame (the
PSF section transforms each star's moments with the local Jacobian of its WCS). Pairs are counted by the C++
kernel ``_core.shear_correlation`` (every pair, exactly: rho1 and rho3 over unordered pairs i < j, the cross
terms over ordered pairs i != j, TreeCorr's counting), or by TreeCorr (``backend="treecorr"``, the ``qa``
extra, flat coordinates, ``bin_slop=0``, ``angle_slop=0``), which agree to rounding (TreeCorr keeps weights in
single precision: with weights that are not exact in float32 the two differ by ~1e-8 relative).

The error is TreeCorr's ``'shot'`` estimate: ``varxip = 2 var(a) var(b) / weight`` per bin, with var the
per-component weighted variance of each field (``Catalog.varg``), i.e. shape noise only, no cosmic/sample
variance and no pair covariance: enough to ask whether a rho is consistent with zero.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .. import _core
from ..core.wcs import _gnomonic

__all__ = ["RHO_NAMES", "RhoStatistics", "rho_statistics", "shear_correlation", "tangent_plane"]

#: The five statistics, in the order of `RhoStatistics.xip`'s first axis.
RHO_NAMES = ("rho1", "rho2", "rho3", "rho4", "rho5")

#: The most points `shear_correlation` accepts (its cost is n^2 / 2 pairs: ~10^11 at this bound).
MAX_POINTS = 10_000_000


def tangent_plane(ra_deg, dec_deg, center_deg=None) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection of ``(ra, dec)`` (degrees) about ``center_deg`` (ra, dec degrees; default: the
    direction of the mean unit vector of the points), as (x, y) in arcmin: x towards +ra, y towards +dec.

    Points more than 90 degrees from the centre have no projection: a `ValueError`.
    """
    ra = np.radians(np.asarray(ra_deg, np.float64))
    dec = np.radians(np.asarray(dec_deg, np.float64))
    if center_deg is None:
        v = np.array([np.sum(np.cos(dec) * np.cos(ra)), np.sum(np.cos(dec) * np.sin(ra)), np.sum(np.sin(dec))])
        norm = float(np.linalg.norm(v))
        if not norm > 0:
            raise ValueError("tangent_plane: no centre (no points, or points spread over the whole sky)")
        ra0, dec0 = math.atan2(v[1], v[0]), math.asin(max(-1.0, min(1.0, v[2] / norm)))
    else:
        ra0, dec0 = (math.radians(float(c)) for c in center_deg)
    cosc = math.sin(dec0) * np.sin(dec) + math.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    if np.any(cosc <= 0):
        raise ValueError("tangent_plane: points 90 degrees or more from the centre")
    # the projection of visitcal.core.wcs (local_cd_matrix's), so the moments' frame is the positions' frame
    xi, eta = _gnomonic(np.degrees(ra), np.degrees(dec), math.degrees(ra0), math.degrees(dec0))
    return xi * 60.0, eta * 60.0


def _column(name, v, n=None) -> np.ndarray:
    a = np.ascontiguousarray(v, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} values, expected {n} (one per point)")
    return a


def shear_correlation(x, y, a1, a2, b1=None, b2=None, w=None, *, min_sep: float, max_sep: float,
                      nbins: int) -> dict:
    """Raw pair sums of the spin-2 fields a = a1 + i a2 and b = b1 + i b2 at points (x, y), by the C++
    kernel (see ``cpp/include/visitcal/qa/shear_correlation.hpp`` for the exact conventions).

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Flat coordinates (any unit; ``min_sep``/``max_sep`` in the same unit).
    a1, a2 : array_like, shape (n,)
        The first field.
    b1, b2 : array_like, shape (n,), optional
        The second field at the same points; None: the auto-correlation of a (unordered pairs i < j),
        else the cross-correlation over ordered pairs i != j. An auto-correlation's ``xip_im`` is 0 by
        definition (the imaginary part is odd in the order of a pair).
    w : array_like, shape (n,), optional
        Weights (1 by default); a pair weighs ``w_i w_j``.
    min_sep, max_sep : float
        Range of separations, ``min_sep <= r < max_sep``.
    nbins : int
        Logarithmic bins.

    Returns
    -------
    dict of numpy.ndarray, each (nbins,)
        ``weight``, ``npairs``, ``sum_wr``, ``sum_wlogr``, ``xip``, ``xip_im``, ``xim``, ``xim_im`` (sums,
        not yet divided by ``weight``).
    """
    x = _column("x", x)
    n = x.shape[0]
    if n > MAX_POINTS:
        raise ValueError(f"shear_correlation: {n} points, more than the {MAX_POINTS} allowed (thin them first)")
    y, a1, a2 = _column("y", y, n), _column("a1", a1, n), _column("a2", a2, n)
    cross = b1 is not None or b2 is not None
    if cross and (b1 is None or b2 is None):
        raise ValueError("shear_correlation: give both b1 and b2, or neither")
    b1, b2 = (_column("b1", b1, n), _column("b2", b2, n)) if cross else (a1, a2)
    w = np.ones(n) if w is None else _column("w", w, n)
    return _core.shear_correlation(x, y, a1, a2, b1, b2, w, float(min_sep), float(max_sep), int(nbins), cross)


@dataclasses.dataclass(frozen=True)
class RhoStatistics:
    """The five rho statistics in ``nbins`` logarithmic separation bins.

    Attributes
    ----------
    min_sep, max_sep : float
        The binned range, arcmin.
    edges : numpy.ndarray, (nbins + 1,)
        Bin edges, arcmin.
    meanr : numpy.ndarray, (nbins,)
        Weighted mean separation of the pairs in each bin, arcmin (NaN for an empty bin).
    npairs, weight : numpy.ndarray, (nbins,)
        Unordered pairs and their summed weights ``w_i w_j`` per bin (the same for every rho: one set of
        points and weights).
    xip, xim, xip_im, xim_im : numpy.ndarray, (5, nbins)
        xi+ and xi- (real and imaginary parts) of rho1..rho5 (`RHO_NAMES`), NaN in an empty bin.
    varxip : numpy.ndarray, (5, nbins)
        TreeCorr's shot-noise variance of ``xip`` (and of ``xim``), NaN in an empty bin.
    n_stars : int
        Points used.
    backend : str
        ``"visitcal"`` or ``"treecorr"``.
    """

    min_sep: float
    max_sep: float
    edges: np.ndarray
    meanr: np.ndarray
    npairs: np.ndarray
    weight: np.ndarray
    xip: np.ndarray
    xim: np.ndarray
    xip_im: np.ndarray
    xim_im: np.ndarray
    varxip: np.ndarray
    n_stars: int
    backend: str

    @property
    def nbins(self) -> int:
        """The number of separation bins."""
        return int(self.meanr.shape[0])

    def bin_of(self, sep_arcmin: float) -> int | None:
        """Index of the bin holding ``sep_arcmin`` (``edges[k] <= sep < edges[k + 1]``); None outside."""
        sep = float(sep_arcmin)
        if not (self.min_sep <= sep < self.max_sep):
            return None
        bin_size = math.log(self.max_sep / self.min_sep) / self.nbins
        return min(int(math.floor(math.log(sep / self.min_sep) / bin_size)), self.nbins - 1)

    def value_at(self, sep_arcmin: float, rho: int = 1, *, part: str = "xip") -> float:
        """``xip`` (or ``part="xim"``) of rho ``rho`` (1..5) in the bin containing ``sep_arcmin``; NaN when
        the separation is outside the binned range or its bin holds no pair."""
        if rho not in range(1, 6):
            raise ValueError(f"rho must be 1..5, got {rho}")
        if part not in ("xip", "xim"):
            raise ValueError(f"part must be 'xip' or 'xim', got {part!r}")
        k = self.bin_of(sep_arcmin)
        return math.nan if k is None else float(getattr(self, part)[rho - 1, k])

    def sigma_at(self, sep_arcmin: float, rho: int = 1) -> float:
        """Shot-noise standard deviation of rho ``rho``'s xi+ in the bin containing ``sep_arcmin`` (NaN as in
        `value_at`)."""
        if rho not in range(1, 6):
            raise ValueError(f"rho must be 1..5, got {rho}")
        k = self.bin_of(sep_arcmin)
        return math.nan if k is None else float(np.sqrt(self.varxip[rho - 1, k]))


def _var_per_component(g1, g2, w) -> float:
    """TreeCorr's ``Catalog.varg``: the mean over the two components of sum w^2 (g - <g>_w)^2 / sum w."""
    use = w != 0
    sw = float(np.sum(w))
    if not sw > 0:
        return math.nan
    out = 0.0
    for g in (g1, g2):
        mean = np.sum(w[use] * g[use]) / sw
        out += np.sum(w[use] ** 2 * (g[use] - mean) ** 2) / sw
    return float(out / 2)


def _fields(e1_star, e2_star, T_star, e1_model, e2_model, T_model):
    de1, de2 = e1_star - e1_model, e2_star - e2_model
    dtt = (T_star - T_model) / T_model
    e, de, we = (e1_model, e2_model), (de1, de2), (e1_model * dtt, e2_model * dtt)
    # (a, b) of rho1..rho5; b None: an auto-correlation
    return [(de, None), (e, de), (we, None), (de, we), (e, we)]


def rho_statistics(ra_deg, dec_deg, e1_star, e2_star, T_star, e1_model, e2_model, T_model, *,
                   min_sep_arcmin: float, max_sep_arcmin: float, nbins: int, weights=None,
                   backend: str = "visitcal", center_deg=None) -> RhoStatistics:
    """The rho statistics of PSF stars (module docstring for the definitions and conventions).

    Parameters
    ----------
    ra_deg, dec_deg : array_like, shape (n,)
        Star positions, degrees.
    e1_star, e2_star, T_star : array_like, shape (n,)
        The stars' distortion ellipticity and size ``Ixx + Iyy`` (any unit of area, the same for the model),
        e1/e2 in the tangent-plane frame of `tangent_plane` (x east, y north).
    e1_model, e2_model, T_model : array_like, shape (n,)
        The same of the PSF model at each star.
    min_sep_arcmin, max_sep_arcmin : float
        The range of separations, arcmin (``0 < min < max``).
    nbins : int
        Logarithmic bins (1..10000).
    weights : array_like, shape (n,), optional
        Per-star weights (1 by default).
    backend : {"visitcal", "treecorr"}
        The pair counter: the C++ kernel (exact, O(n^2)) or TreeCorr (the ``qa`` extra).
    center_deg : (float, float), optional
        The projection centre (ra, dec degrees); default the stars' mean direction.

    Returns
    -------
    RhoStatistics

    Raises
    ------
    ValueError
        Arrays of different lengths, a non-finite value (the caller drops such stars), a non-positive
        ``T_model``, a bad range or backend.
    ImportError
        ``backend="treecorr"`` without TreeCorr.
    """
    if backend not in ("visitcal", "treecorr"):
        raise ValueError(f"backend must be 'visitcal' or 'treecorr', got {backend!r}")
    min_sep, max_sep, nbins = float(min_sep_arcmin), float(max_sep_arcmin), int(nbins)
    if not (math.isfinite(min_sep) and min_sep > 0 and math.isfinite(max_sep) and max_sep > min_sep):
        raise ValueError(f"need 0 < min_sep_arcmin < max_sep_arcmin, got {min_sep} and {max_sep}")
    if not 1 <= nbins <= 10000:
        raise ValueError(f"nbins must be in 1..10000, got {nbins}")
    ra = _column("ra_deg", ra_deg)
    n = ra.shape[0]
    cols = {name: _column(name, v, n) for name, v in (
        ("dec_deg", dec_deg), ("e1_star", e1_star), ("e2_star", e2_star), ("T_star", T_star),
        ("e1_model", e1_model), ("e2_model", e2_model), ("T_model", T_model))}
    w = np.ones(n) if weights is None else _column("weights", weights, n)
    for name, v in [("ra_deg", ra), *cols.items(), ("weights", w)]:
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise ValueError(f"{name} is not finite at {bad.size} star(s) (first index {bad[0]}); drop them first")
    if np.any(cols["T_model"] <= 0):
        raise ValueError("T_model must be positive (it divides dT)")
    edges = min_sep * np.exp(np.arange(nbins + 1) * (math.log(max_sep / min_sep) / nbins))
    x, y = tangent_plane(ra, cols["dec_deg"], center_deg) if n else (np.zeros(0), np.zeros(0))
    fields = _fields(cols["e1_star"], cols["e2_star"], cols["T_star"], cols["e1_model"], cols["e2_model"],
                     cols["T_model"])
    out = {k: np.full((5, nbins), np.nan) for k in ("xip", "xim", "xip_im", "xim_im", "varxip")}
    weight = npairs = meanr = None
    if backend == "treecorr":
        try:
            import treecorr
        except ImportError as err:
            raise ImportError("backend='treecorr' needs TreeCorr: pip install 'visitcal[qa]'") from err
    for k, (a, b) in enumerate(fields):
        if backend == "visitcal":
            s = shear_correlation(x, y, a[0], a[1], *(b if b is not None else (None, None)), w,
                                  min_sep=min_sep, max_sep=max_sep, nbins=nbins)
            wt, sums = s["weight"], s
            pairs = s["npairs"] / (1.0 if b is None else 2.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                mr = np.where(wt != 0, s["sum_wr"] / wt, np.nan)
        else:
            cfg = dict(min_sep=min_sep, max_sep=max_sep, nbins=nbins, bin_slop=0.0, angle_slop=0.0)
            gg = treecorr.GGCorrelation(**cfg)
            ca = treecorr.Catalog(x=x, y=y, g1=a[0], g2=a[1], w=w)
            if b is None:
                gg.process(ca)
            else:
                gg.process(ca, treecorr.Catalog(x=x, y=y, g1=b[0], g2=b[1], w=w))
            wt = gg.weight.copy()
            # an auto-correlation's xip_im is 0 by definition (see shear_correlation); TreeCorr's depends on
            # its tree order
            sums = {"xip": gg.xip * wt, "xim": gg.xim * wt, "xim_im": gg.xim_im * wt,
                    "xip_im": gg.xip_im * wt if b is not None else np.zeros_like(wt)}
            pairs = gg.npairs / (1.0 if b is None else 2.0)
            mr = np.where(wt != 0, gg.meanr, np.nan)
        if weight is None:
            # unordered pairs and their weight: the cross terms count each pair in both orders
            weight, npairs, meanr = wt / (1.0 if b is None else 2.0), pairs, mr
        with np.errstate(invalid="ignore", divide="ignore"):
            for part in ("xip", "xim", "xip_im", "xim_im"):
                out[part][k] = np.where(wt != 0, sums[part] / wt, np.nan)
            bb = b if b is not None else a
            var = 2.0 * _var_per_component(a[0], a[1], w) * _var_per_component(bb[0], bb[1], w)
            out["varxip"][k] = np.where(wt != 0, var / wt, np.nan)
    return RhoStatistics(min_sep=min_sep, max_sep=max_sep, edges=edges, meanr=meanr, npairs=npairs, weight=weight,
                         n_stars=n, backend=backend, **out)
