"""The Piff-style pixel-grid PSF: `PixelGridPsfDeterminer` fits it, `PixelGridPsf` is the model
(``psf_determiner.name = "pixelgrid"``), after LSST's ``PiffPsfDeterminerTask`` (meas_extensions_piff)
with Piff's ``PixelGrid`` + ``BasisPolynomial`` + ``Chisq`` outliers (Jarvis et al. 2021, MNRAS 501, 1282).

The model
    A grid of ``model_size`` x ``model_size`` values, ``sampling_size`` image pixels apart, centred on the
    star. An image pixel at offset ``(u, v)`` px from the star's centre takes the grid's value
    interpolated at ``(u / sampling_size, v / sampling_size)`` grid steps with a Lanczos(n) kernel
    (n = 11 by default, its weights renormalised to unit sum as GalSim's ``conserve_dc``), times the
    star's flux. Pixels beyond the grid are zero. The grid varies over the detector as a polynomial of
    order ``spatial_order`` in ``x`` and ``y`` scaled to [-1, 1] over the detector's bounding box
    (Piff's ``BasisPolynomial`` uses raw pixel coordinates; scaling keeps order 4 well conditioned).

The fit (all in C++, one call, the GIL released), as Piff's ``SimplePSF.fit``:
    1. Each candidate's central ``stamp_size`` pixels. Usable pixels have a finite image, a finite,
       non-zero variance and none of ``zero_weight_mask_planes``; a star with under
       ``minimum_unmasked_fraction`` of them is dropped. Weights are ``1 / b``, where ``var = a * img + b``
       is fitted over the usable pixels, so only the sky's variance weighs (the star's Poisson noise
       is left out, as LSST does). They are scaled down so that the star's S/N is at most ``max_snr``
       (``F = sum w I^2``, ``SNR = (F - N) / sqrt(F)``).
    2. Iterate (at most ``max_iter``): solve for the grid coefficients of all stars at once with every
       star's flux and centre held; refit every star's flux (and, with ``fit_center``, its centre:
       one linearised step); from the second iteration on, reject stars whose chi-square exceeds the
       chi-square distribution's ``outlier_n_sigma`` point for their degrees of freedom, times
       ``max(1, chi2 / dof)`` (at most ``outlier_max_remove`` of the stars per iteration, the worst
       first). Stop when nothing was rejected and the total chi-square improved by less than
       ``0.1 * dof``, after at least 2 iterations.

    From the second iteration on, the solve is a Gauss-Newton step for the grid and every star's
    flux and centre together (each star's parameters profiled out of its chi-square, "variable
    projection"), not a solve with them held: Piff's alternation converges only linearly (on exact
    data its fluxes are still 1e-4 off after 15 iterations); the joint step reaches 1e-8 in two.
    The joint system is never formed: it is solved by conjugate gradients with a Kronecker
    preconditioner (see ``cpp/include/visitcal/psf/pixel_grid.hpp``). The model's normalisation and,
    with ``fit_center``, its centroid are exact linear constraints on every polynomial term.

The smoothness prior (``smoothness`` > 0; off by default, as in Piff and LSST)
    A supersampled grid (``sampling_size`` < 1) has modes above the image pixels' band that few stars
    pin down: with 94 real DES stars, a 31 x 0.57 px grid at order 2 fits their noise and predicts
    reserved stars worse (reserve chi2/dof median 1.62) than at order 0 (1.26). The prior adds
    ``smoothness * kappa * sum(f_xx^2 + 2 f_xy^2 + f_yy^2)`` over every polynomial term's grid (the
    thin-plate energy in finite differences: rotation invariant, zero only for planes) to the
    chi-square. ``kappa`` is the stars' mean weight on one grid value of the constant term, so the
    value is dimensionless and independent of the number and brightness of the stars; the spatial
    terms, which carry less data weight, are smoothed relatively more (a shrinkage towards a
    constant PSF). The prior enters the conjugate-gradient operator exactly; the preconditioner
    handles it in the prior's eigenbasis, so CG takes as few iterations with it as without.
    Choose the value by `PixelGridPsfDeterminer.cross_validate_smoothness` (K-fold cross-validation
    on the fitting stars, the reserve kept out) once per instrument set-up; on the DES stars it picks
    0.1 (held-out median 1.20 against 1.44 without), and 0.03-0.3 are within 0.01 of it. It is no
    default: on a grid at the image sampling (``sampling_size`` 1) the PSF itself has curvature at the
    grid's scale, and the same weights bias it (sigma 1.6-1.9 px, order 4, ~700 stars of a simulated
    4k detector: the size is 1.5% too large at 0.03, 4.7% at 0.1, against 2.4e-4 without the prior).

Reserved stars never enter the fit; their flux, centre and chi-square under the final model are
reported, which is what the reserve is for.

Known limit: Lanczos(11) is not an exact interpolant. A sampled Gaussian of sigma 2 px, shifted
by a fraction of a pixel with it, is off by up to 3.0e-4 of its peak (1-D; sigma 1.5-4 px alike). A
fitted model cannot beat its interpolant: with the default it reproduces a noise-free constant
Gaussian (sigma 2 px, order 2) to 6e-4 of the peak at sub-pixel positions (Piff, with the same
kernel, has the same limit). ``interpolant="Lanczos(15)"`` gives 5e-5, Lanczos(20) 2e-8.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import _core
from ..core.geom import Box2I
from ..core.image import MaskPlanes
from ..core.persistence import persistable
from .models import _check_average_position, _CorePsf
from .candidates import PsfCandidates
from .checks import PsfCheckConfig
from .determiner import (PsfDeterminerError, PsfDeterminerResult, PsfTooFewStarsError, fit_screened,
                         fit_with_order_step_down, screen_candidates)

__all__ = ["STAR_STATUS", "PixelGridPsf", "PixelGridPsfDeterminer", "PixelGridPsfDeterminerConfig"]

#: Per-candidate outcome strings by the C++ status code.
STAR_STATUS = ("used", "reserved", "outlier", "too_few_pixels", "bad_variance", "fit_failed")

_INTERPOLANT = re.compile(r"^\s*Lanczos\s*\(\s*(\d+)\s*\)\s*$", re.IGNORECASE)


def _lanczos_order(interpolant: str) -> int:
    match = _INTERPOLANT.match(interpolant)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"interpolant must be 'Lanczos(n)' with n >= 1, got {interpolant!r}")
    return int(match.group(1))


@persistable("PixelGridPsf", 1)
class PixelGridPsf(_CorePsf):
    """A pixel-grid PSF whose grid varies over the detector as a polynomial.

    Parameters
    ----------
    coefficients : (n_terms, model_size, model_size) array
        Grid coefficients of each polynomial term, indexed ``[term, gy, gx]``. Terms run by total
        degree, then by increasing power of y: ``1, u, v, u^2, u v, v^2, ...``, with ``u, v`` the
        position scaled to [-1, 1] over ``box``.
    sampling_size : float
        Grid step in image pixels.
    interpolant_order : int
        n of the Lanczos(n) interpolant.
    spatial_order : int
        Polynomial order.
    box : (xmin, xmax, ymin, ymax)
        The parent-pixel box mapped to [-1, 1]^2 (the fitted detector).
    draw_size : int
        Odd side of the images; LSST's ``2 floor(stamp_size / (2 sampling_size)) + 1``.
    average_position : (float, float)
        Mean position of the stars used, px.

    Notes
    -----
    Images are float64, normalised by the model's flux (``sum(grid) * sampling_size**2``, 1 for a fitted
    model), not by their own sum: at a sub-pixel phase the edge row or column of the grid's support falls
    off the stamp, and that light (~1e-3 of the flux at a half-pixel offset for the simulator's PSFs) is
    left out rather than put back into the core, so ``base_PsfFlux`` does not depend on the star's phase
    (as Piff's drawn stars). The images are the grid's Lanczos interpolation as Piff draws it (GalSim's
    ``InterpolatedImage``), including the kernel's side lobes beyond the grid's support (up to ~2.5e-4 of the
    peak), which the fit leaves out as Piff's does. Resampled on the pixel lattice, the interpolation keeps the
    flux to ~2e-4 at any phase (e.g. 1.00016 for `compute_kernel_image` and 0.99991 at phase (0.3, 0.6) for a
    1.5-px Gaussian on a 25 x 0.8 px grid).
    `compute_image` puts the star's centre at (x, y) on the stamp centred on the pixel holding it;
    `compute_kernel_image` centres it on the middle pixel.
    """

    def __init__(self, coefficients, *, sampling_size: float, interpolant_order: int, spatial_order: int, box,
                 draw_size: int, average_position=(0.0, 0.0)):
        c = np.ascontiguousarray(coefficients, dtype=np.float64)
        if c.ndim != 3 or c.shape[1] != c.shape[2]:
            raise ValueError(f"coefficients must have shape (n_terms, model_size, model_size), got {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError("coefficients has non-finite values")
        box = tuple(float(v) for v in box)
        if len(box) != 4:
            raise ValueError(f"box must be (xmin, xmax, ymin, ymax), got {box!r}")
        self._core_obj = _core.PixelGridPsf(c, float(sampling_size), int(interpolant_order), int(spatial_order), box,
                                            int(draw_size), _check_average_position(average_position))

    @classmethod
    def _from_core(cls, core: _core.PixelGridPsf) -> PixelGridPsf:
        self = cls.__new__(cls)
        self._core_obj = core
        return self

    @property
    def coefficients(self) -> np.ndarray:
        """(n_terms, model_size, model_size) grid coefficients (a copy)."""
        return self._core_obj.coefficients

    @property
    def model_size(self) -> int:
        """Side of the square grid, in grid (model) pixels."""
        return self._core_obj.model_size

    @property
    def sampling_size(self) -> float:
        """Grid step in image pixels (1: the image's sampling; 0.5: 2x oversampled)."""
        return self._core_obj.sampling_size

    @property
    def interpolant_order(self) -> int:
        """``n`` of the Lanczos(n) kernel that interpolates the grid."""
        return self._core_obj.interpolant_order

    @property
    def spatial_order(self) -> int:
        """Total order of the polynomial in the scaled position that gives the grid over the detector."""
        return self._core_obj.spatial_order

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(xmin, xmax, ymin, ymax)``: parent-pixel box mapped to ``[-1, 1]^2`` (the fitted detector)."""
        return tuple(self._core_obj.box)

    @property
    def draw_size(self) -> int:
        """Side of the (odd, square) images drawn by `compute_image` and `compute_kernel_image`, px."""
        return self._core_obj.draw_size

    def grid_at(self, x: float, y: float) -> np.ndarray:
        """The (model_size, model_size) grid at (x, y), indexed ``[gy, gx]`` (not normalised)."""
        return self._core_obj.grid_at(float(x), float(y))

    def to_table(self) -> Table:
        """The model as a one-row table.

        Columns: ``coefficients`` ``(n_terms, model_size, model_size)`` float64, ``sampling_size``,
        ``interpolant_order`` and ``spatial_order`` (int32), ``box`` (4 float64: xmin, xmax, ymin,
        ymax), ``draw_size`` (int32), ``average_x`` and ``average_y`` (px). This replaces LSST's
        ``PiffPsf`` persistence (a pickle of the Piff object, which only Piff can read). The round trip
        through `from_table` is lossless: the model draws the same images bit for bit.
        """
        x, y = self.average_position
        return Table({
            "coefficients": self.coefficients[None],
            "sampling_size": [self.sampling_size],
            "interpolant_order": np.array([self.interpolant_order], np.int32),
            "spatial_order": np.array([self.spatial_order], np.int32),
            "box": np.array([self.box], np.float64),
            "draw_size": np.array([self.draw_size], np.int32),
            "average_x": [x],
            "average_y": [y],
        })

    @classmethod
    def from_table(cls, table: Table) -> PixelGridPsf:
        """Rebuild the model from the first row of a `to_table` table.

        Raises
        ------
        KeyError
            A column is missing.
        ValueError
            Inconsistent values: coefficients not ``(n_terms, m, m)`` or not finite, a term count that
            does not match ``spatial_order``, ``box`` without 4 values, a non-positive ``sampling_size``,
            or an even ``draw_size``.
        """
        row = table[0]
        return cls(np.asarray(row["coefficients"], np.float64), sampling_size=float(row["sampling_size"]),
                   interpolant_order=int(row["interpolant_order"]), spatial_order=int(row["spatial_order"]),
                   box=tuple(float(v) for v in row["box"]), draw_size=int(row["draw_size"]),
                   average_position=(float(row["average_x"]), float(row["average_y"])))

    def __reduce__(self):
        return (_pixel_grid_psf, (self.coefficients, self.sampling_size, self.interpolant_order, self.spatial_order,
                                  self.box, self.draw_size, self.average_position))

    def __repr__(self) -> str:
        return (f"PixelGridPsf({self.model_size}x{self.model_size} grid at {self.sampling_size} px, "
                f"Lanczos({self.interpolant_order}), order {self.spatial_order}, draw_size {self.draw_size})")


def _pixel_grid_psf(coefficients, sampling_size, interpolant_order, spatial_order, box, draw_size, average_position):
    return PixelGridPsf(coefficients, sampling_size=sampling_size, interpolant_order=interpolant_order,
                        spatial_order=spatial_order, box=box, draw_size=draw_size, average_position=average_position)


class PixelGridPsfDeterminerConfig(BaseModel):
    """Configuration of `PixelGridPsfDeterminer`: LSST's ``PiffPsfDeterminerConfig`` (meas_extensions_piff)
    in snake_case, with its defaults."""

    model_config = ConfigDict(extra="forbid")

    stamp_size: int = Field(25, gt=0, le=1001, description="Pixels cut from the centre of each candidate (odd). At "
                                                           "most 1001 px.")
    model_size: int = Field(25, gt=0, le=401, description="Side of the model's pixel grid (model pixels). At most "
                                                          "401: the grid times the spatial terms sizes the solve (at "
                                                          "order 15, 136 terms of 401^2 values, 175 MB a vector).")
    sampling_size: float = Field(1.0, gt=0, le=10, description="Model pixel size in image pixels (0.5: 2x "
                                                               "oversampled). At most 10 px.")
    spatial_order: int = Field(2, ge=0, le=15, description="Order of the polynomial over the detector.")
    spatial_order_per_band: dict[str, Annotated[int, Field(ge=0, le=15)]] = Field(
        default_factory=dict, description="Per-band overrides of spatial_order (band name -> order), each 0 to 15 "
        "as spatial_order.")
    fit_center: bool = Field(True, description="Refit each star's centre and constrain the model's centroid to "
                             "zero (LSST piffPixelGridFitCenter, Piff PixelGrid centered).")
    interpolant: str = Field("Lanczos(11)", description="Interpolant of the grid: 'Lanczos(n)'.")
    outlier_n_sigma: float = Field(4.0, gt=0, le=100, description="Chi-square outlier threshold, in Gaussian sigma. "
                                                                  "At most 100.")
    outlier_max_remove: float = Field(0.05, ge=0, le=1, description="Largest fraction of the stars removed as "
                                      "outliers per iteration.")
    max_iter: int = Field(15, ge=1, le=100, description="Most fit iterations (LSST piffMaxIter). At most 100 (each "
                                                        "is a full fit).")
    min_iter: int = Field(2, ge=1, le=100, description="Fewest fit iterations (Piff min_iter). At most 100 (each is "
                                                       "a full fit).")
    chisq_thresh: float = Field(0.1, ge=0, description="Converged when nothing was rejected and the total "
                                "chi-square improved by less than chisq_thresh * dof (Piff chisq_thresh).")
    min_star_snr: float = Field(3.0, ge=0, le=1000, description="Not Piff: before any fit, a candidate whose flux "
                                "(the sum of its usable pixels) is positive in none of its central 5, 9, 15 px and "
                                "stamp_size boxes is refused as bad_flux, one whose flux reaches this many times "
                                "its noise (the square root of their summed variance) in none of them as low_snr "
                                "(visitcal.psf.determiner.screen_candidates): an empty or negative stamp must not "
                                "become a model. At most 1000.")
    max_snr: float = Field(200.0, gt=0, le=1e15, description="Per-star S/N cap on the weights. At most 1e15 (in "
                           "effect no cap).")
    zero_weight_mask_planes: list[str] = Field(
        default_factory=lambda: ["BAD", "CR", "INTRP", "SAT", "SUSPECT", "NO_DATA"],
        description="Mask planes whose pixels get zero weight (LSST zeroWeightMaskBits).")
    minimum_unmasked_fraction: float = Field(0.5, ge=0, le=1, description="Stars with a smaller fraction of "
                                             "usable stamp pixels are dropped.")
    zeroth_order_interp_not_enough_stars: bool = Field(False, description="With too few stars for the order, fit "
                                                       "order 0 (one iteration) instead of failing.")
    order_step_down: bool = Field(True, description="With too few stars per spatial term, or a model that fails "
                                  "its checks, refit at the next lower spatial order, down to 0 (a constant PSF), "
                                  "before failing; the result's metadata says why (not LSST: Piff raises).")
    min_stars_per_parameter: float = Field(3.0, ge=1, description="Fewest used stars per spatial polynomial term "
                                           "for orders above 0 (order 2 has 6 terms: 18 stars). Each term has as "
                                           "many grid values as a star has pixels, so with n stars per term the "
                                           "model absorbs ~1/n of the noise (LSST's rule is 1 per term).")
    checks: PsfCheckConfig = Field(default_factory=PsfCheckConfig, description="Checks the fitted model must pass "
                                   "(visitcal.psf.checks).")
    cg_tolerance: float = Field(1e-10, gt=0, lt=1, description="Relative residual at which the conjugate-gradient "
                                "solves stop.")
    cg_chi2_tolerance: float = Field(0.01, ge=0, description="The conjugate-gradient solves also stop when a step "
                                     "lowers the total chi-square by less than this (0: off). At 0.01 the model moves "
                                     "by ~3e-4 of its peak along directions the data do not constrain (a change of "
                                     "0.05 in a chi-square of 1e5) and the fit is 2-3x faster.")
    smoothness: float = Field(0.0, ge=0, description="Weight of a smoothness prior on the grid (0: none, as Piff "
                              "and LSST). The chi-square gains smoothness * kappa * (sum of the squared second "
                              "differences of every polynomial term's grid along x and y), kappa the stars' mean "
                              "weight on one grid value of the constant term, so the value is dimensionless. For "
                              "supersampled grids (sampling_size < 1) on few stars; see the module notes.")

    varying_radius: float = Field(0.0, ge=0, le=1001, description="Not Piff: > 0 restricts the polynomial terms "
                                                                  "above the "
                                  "constant to the grid pixels within this radius (image pixels) of the centre, so "
                                  "the core varies over the detector and the wings are the constant term's (0: "
                                  "every term spans the grid, as Piff). The wings' noise then no longer moves the "
                                  "model's PsfFlux normalisation from place to place; see bench/README.md. At most "
                                  "1001 px.")

    @field_validator("stamp_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"stamp_size must be odd, got {v}")
        return v

    @field_validator("interpolant")
    @classmethod
    def _interp(cls, v: str) -> str:
        _lanczos_order(v)
        return v

    @model_validator(mode="after")
    def _stamp_covers_model(self):
        # LSST's PiffPsfDeterminerConfig.validate() guards against Piff issue #131: a grid larger than the
        # stamps fitted silently badly. Our check is on the grid's extent in image pixels.
        extent = self.model_size * self.sampling_size
        if self.stamp_size < int(extent):
            raise ValueError(f"stamp_size {self.stamp_size} is smaller than the model's extent "
                             f"model_size * sampling_size = {extent:g} px")
        return self

    @property
    def draw_size(self) -> int:
        """Side of the model's images: ``2 floor(stamp_size / (2 sampling_size)) + 1`` (LSST)."""
        return 2 * math.floor(0.5 * self.stamp_size / self.sampling_size) + 1

    def order_for_band(self, band: str | None) -> int:
        """The spatial order to fit for ``band``: its `spatial_order_per_band` entry, else `spatial_order`.

        ``band=None`` (band unknown) gives `spatial_order`.
        """
        return self.spatial_order_per_band.get(band, self.spatial_order) if band is not None else self.spatial_order


class PixelGridPsfDeterminer:
    """Fit a `PixelGridPsf` to PSF candidates (see the module docstring)."""

    ConfigClass = PixelGridPsfDeterminerConfig

    def __init__(self, config: PixelGridPsfDeterminerConfig | None = None):
        self.config = config if config is not None else PixelGridPsfDeterminerConfig()

    def _control(self, order: int, mask_planes: MaskPlanes) -> _core.PixelGridControl:
        cfg = self.config
        ctl = _core.PixelGridControl()
        ctl.model_size = cfg.model_size
        ctl.sampling_size = cfg.sampling_size
        ctl.interpolant_order = _lanczos_order(cfg.interpolant)
        ctl.spatial_order = order
        ctl.fit_center = cfg.fit_center
        ctl.stamp_size = cfg.stamp_size
        ctl.draw_size = cfg.draw_size
        ctl.max_snr = cfg.max_snr
        ctl.outlier_n_sigma = cfg.outlier_n_sigma
        ctl.outlier_max_remove = cfg.outlier_max_remove
        ctl.max_iter = cfg.max_iter
        ctl.min_iter = cfg.min_iter
        ctl.chisq_thresh = cfg.chisq_thresh
        bits = 0
        for name in cfg.zero_weight_mask_planes:
            bits |= 1 << mask_planes[name]
        ctl.zero_weight_mask = int(np.int32(np.uint32(bits)))
        ctl.minimum_unmasked_fraction = cfg.minimum_unmasked_fraction
        ctl.zeroth_order_fallback = cfg.zeroth_order_interp_not_enough_stars
        ctl.cg_tolerance = cfg.cg_tolerance
        ctl.cg_chi2_tolerance = cfg.cg_chi2_tolerance
        ctl.smoothness = cfg.smoothness
        ctl.varying_radius = cfg.varying_radius
        return ctl

    def cross_validate_smoothness(self, candidates: PsfCandidates, bbox: Box2I, *, values=(0.0, 0.01, 0.03, 0.1, 0.3, 1.0),
                                  n_folds: int = 5, reserved=None, band: str | None = None,
                                  mask_planes: MaskPlanes | None = None, seed: int = 0) -> tuple[float, Table]:
        """Choose ``smoothness`` by K-fold cross-validation on the stars that may enter the fit.

        The non-reserved candidates are dealt into ``n_folds`` folds by a permutation seeded with
        ``seed``; for each value and fold the model is fitted without that fold and scored by the
        held-out stars' chi-square per degree of freedom under it (their flux and centre fitted, as
        for reserved stars). The value with the lowest median over all held-out stars wins (ties: the
        smaller value). ``reserved`` stars take no part, so a reserve stays an independent check.

        Parameters
        ----------
        candidates, bbox, reserved, band, mask_planes
            As for `determine_psf`.
        values : sequence of float
            Smoothness values to try (>= 0).
        n_folds : int
            Number of folds (>= 2).
        seed : int
            Seed of the fold assignment.

        Returns
        -------
        best : float
            The chosen value.
        scores : `astropy.table.Table`
            One row per value: ``smoothness``, ``median_chi2dof``, ``mean_chi2dof``, ``n_scored``.

        Notes
        -----
        Costs ``len(values) * n_folds`` fits. A fold whose fit fails (too few stars) scores nothing.
        """
        values = [float(v) for v in values]
        if not values or any(not (v >= 0) or not math.isfinite(v) for v in values):
            raise ValueError(f"values must be finite smoothness values >= 0, got {values!r}")
        if int(n_folds) < 2:
            raise ValueError(f"n_folds must be >= 2, got {n_folds}")
        m = len(candidates)
        base = np.zeros(m, bool) if reserved is None else np.asarray(reserved, bool)
        if base.shape != (m,):
            raise ValueError(f"reserved must have shape ({m},), got {base.shape}")
        pool = np.flatnonzero(~base)
        if pool.size < int(n_folds):
            raise ValueError(f"{pool.size} non-reserved candidates cannot make {n_folds} folds")
        fold = np.empty(m, np.int64)
        fold[:] = -1
        fold[pool[np.random.default_rng(seed).permutation(pool.size)]] = np.arange(pool.size) % int(n_folds)
        rows = []
        for value in values:
            det = PixelGridPsfDeterminer(self.config.model_copy(update={"smoothness": value}))
            scores = []
            for k in range(int(n_folds)):
                held = fold == k
                try:
                    res = det.determine_psf(candidates, bbox, reserved=base | held, band=band, mask_planes=mask_planes)
                except PsfTooFewStarsError:
                    continue
                ok = held & (res.dof > 0) & np.isfinite(res.chi2)
                scores.append(res.chi2[ok] / res.dof[ok])
            s = np.concatenate(scores) if scores else np.empty(0)
            rows.append((value, float(np.median(s)) if s.size else math.nan, float(np.mean(s)) if s.size else math.nan,
                         int(s.size)))
        table = Table(rows=rows, names=("smoothness", "median_chi2dof", "mean_chi2dof", "n_scored"))
        med = np.asarray(table["median_chi2dof"], np.float64)
        if not np.any(np.isfinite(med)):
            raise PsfDeterminerError("cross-validation: no fold could be fitted")
        order = np.lexsort((np.asarray(table["smoothness"]), np.where(np.isfinite(med), med, np.inf)))
        return float(table["smoothness"][order[0]]), table

    def determine_psf(self, candidates: PsfCandidates, bbox: Box2I, *, reserved=None, band: str | None = None,
                      mask_planes: MaskPlanes | None = None) -> PsfDeterminerResult:
        """Fit the PSF.

        Parameters
        ----------
        candidates : `PsfCandidates`
            The stamps (m of them); their centroids are ``table["x"]``, ``table["y"]`` of the kept rows.
        bbox : `Box2I`
            The detector; the spatial polynomial's coordinates are scaled to [-1, 1] over it.
        reserved : (m,) bool, optional
            Candidates kept out of the fit (the reserve).
        band : str, optional
            Selects ``spatial_order_per_band``.
        mask_planes : `MaskPlanes`, optional
            Bit numbers of the candidates' mask (default: visitcal's standard planes).

        Returns
        -------
        `PsfDeterminerResult`

        Raises
        ------
        PsfTooFewStarsError
            Too few usable stars, before or after outlier rejection, even at the lowest order tried.
        PsfFitError
            The model failed a check of `visitcal.psf.checks` at every order tried (attribute ``check``).

        Notes
        -----
        The fit starts at the configured order and steps down (`order_step_down`) as
        `visitcal.psf.determiner.fit_with_order_step_down` describes: fewer than
        ``min_stars_per_parameter`` stars per polynomial term, or a failed check, try the next lower order.
        """
        if not isinstance(candidates, PsfCandidates):
            raise TypeError(f"candidates must be PsfCandidates, got {type(candidates).__name__}")
        if not isinstance(bbox, Box2I) or bbox.width < 2 or bbox.height < 2:
            raise ValueError(f"bbox must be a Box2I of at least 2x2 pixels, got {bbox!r}")
        m = len(candidates)
        kept = np.asarray(candidates.table["used"], bool)
        x = np.ascontiguousarray(np.asarray(candidates.table["x"], np.float64)[kept])
        y = np.ascontiguousarray(np.asarray(candidates.table["y"], np.float64)[kept])
        if x.shape != (m,):
            raise ValueError(f"candidates.table has {x.size} kept rows for {m} stamps")
        if reserved is None:
            res = np.zeros(m, bool)
        else:
            res = np.asarray(reserved, bool)
            if res.shape != (m,):
                raise ValueError(f"reserved must have shape ({m},), got {res.shape}")
        order = self.config.order_for_band(band)
        planes = mask_planes if mask_planes is not None else MaskPlanes()
        cfg = self.config
        refused = screen_candidates(candidates, size=cfg.stamp_size, min_snr=cfg.min_star_snr,
                                    bad_mask_bits=self._control(0, planes).zero_weight_mask,
                                    min_usable_fraction=cfg.minimum_unmasked_fraction)
        fit = fit_screened(lambda c, keep, o: self._fit_order(c, bbox, x[keep], y[keep], res[keep], o, planes),
                           candidates, res, refused, "pixel-grid PSF")
        return fit_with_order_step_down(
            fit, order, candidates, bbox, res, step_down=cfg.order_step_down,
            min_stars_per_parameter=cfg.min_stars_per_parameter, checks=cfg.checks,
            zeroth_order_fallback=cfg.zeroth_order_interp_not_enough_stars, what="pixel-grid PSF", refused=refused)

    def _fit_order(self, candidates: PsfCandidates, bbox: Box2I, x, y, res, order: int,
                   mask_planes: MaskPlanes) -> PsfDeterminerResult:
        """One fit at spatial ``order`` (no step-down, no checks)."""
        ctl = self._control(order, mask_planes)
        box = (float(bbox.min_x), float(bbox.max_x), float(bbox.min_y), float(bbox.max_y))
        image = np.ascontiguousarray(candidates.image, np.float32)
        mask = np.ascontiguousarray(candidates.mask, np.int32)
        variance = np.ascontiguousarray(candidates.variance, np.float32)
        xy0 = np.ascontiguousarray(candidates.xy0, np.int32)
        if image.ndim != 3 or image.shape[1] < self.config.stamp_size:
            raise ValueError(f"candidate stamps of shape {image.shape[1:]} are smaller than stamp_size "
                             f"{self.config.stamp_size}")
        r = _core.fit_pixel_grid_psf(image, mask, variance, xy0, x, y, res.astype(np.uint8), box, ctl)
        if r["too_few_n_stars"] >= 0:
            raise PsfTooFewStarsError(r["too_few_n_stars"], r["too_few_n_required"], f"for spatial order {order}")
        if r["psf"] is None:  # pragma: no cover - the C++ sets one or the other
            raise PsfDeterminerError("pixel-grid fit returned no model")
        status = np.array(STAR_STATUS, dtype=object)[r["status"]].astype(str)
        used = r["status"] == 0
        metadata = {
            "spatialFitChi2": float(r["chi2_total"]),
            "numAvailStars": int(r["n_available"]),
            "numGoodStars": int(r["n_used"]),
            "avgX": float(np.mean(r["x"][used])),
            "avgY": float(np.mean(r["y"][used])),
            "n_iter": int(r["n_iter"]),
            "converged": bool(r["converged"]),
            "spatial_order": int(r["spatial_order"]),
            "dof": int(r["dof_total"]),
            "cg_iterations": int(r["cg_iterations"]),
        }
        return PsfDeterminerResult(psf=PixelGridPsf._from_core(r["psf"]), used=used, reserved=res.copy(),
                                   flux=r["flux"], chi2=r["chi2"], dof=r["dof"], status=status,
                                   metadata=metadata, x=r["x"], y=r["y"], chi2_expected=r["chi2_expected"])
