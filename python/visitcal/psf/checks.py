"""Checks a fitted PSF model must pass before a determiner returns it (both determiners use them).

A polynomial PSF fitted to too few stars for its spatial order can come out finite at the stars and
absurd between them: a 6-star order-2 fit was seen with a kernel peak of 8.8 and a minimum of -16.9
(unit-sum kernel), whose adaptive moments are NaN. LSST's determiners return such a model; the failure
then surfaces far downstream (cosmic-ray repair, PSF photometry). Here a model is accepted only if, on a
``grid`` x ``grid`` lattice of positions over the detector (corners and edges included), every check
below passes; the first one that fails is named:

``"finite"``
    The kernel image can be drawn and every pixel is finite.
``"peak_centred"``
    Its brightest pixel is the middle pixel (the kernel is centred on it by definition; a model whose
    light peaks elsewhere is not a PSF).
``"core_non_negative"``
    No pixel within ``core_radius`` star sigmas of the centre is below ``-negative_core_tolerance``
    times the peak. The core of any PSF is positive (a Gaussian is above 13% of its peak inside 2
    sigma); ringing wings far out may dip slightly below zero and are not checked.
``"size"``
    The adaptive-moment determinant radius is finite and within a factor ``max_size_ratio`` of the
    median size of the stars the model was fitted to (their own adaptive moments); without star sizes,
    finite, positive and under half the kernel.
``"overfit"``
    The fitted stars' total chi-square over the chi-square pure noise would give a perfect model
    (``sum chi2 / sum chi2_expected``) is at least ``min_chi2_ratio``, when there are fewer than
    ``overfit_max_stars_per_parameter`` used stars per spatial term (with more, overfitting is not the
    explanation of a low chi-square: noise-free or over-estimated variances are). A linear model with ``P`` free
    parameters fitted to ``N`` data points leaves a residual chi-square of about ``(1 - P / N)`` times the
    noise's: a pixel-grid term has as many grid values as a star has pixels, so a fit with ``n`` stars
    per polynomial term leaves about ``1 - 1 / n`` of the noise; below 0.5 (two stars per term) the model
    is fitting noise it should not see (a 10-star order-2 pixel grid: 0.32, reserve chi2/dof 15.7).

`check_psf_model` runs them; `measure_star_sizes` gives the stars' sizes in one C++ call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import _core
from ..core.geom import Box2I
from .models import Psf

__all__ = ["CHECKS", "PsfCheckConfig", "PsfCheckResult", "check_psf_model", "measure_star_sizes"]

#: The checks, in the order they are applied.
CHECKS = ("finite", "peak_centred", "core_non_negative", "size", "overfit")


class PsfCheckConfig(BaseModel):
    """Thresholds of `check_psf_model` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_checks: bool = Field(True, description="Check the fitted model (False: return it unchecked, as LSST).")
    grid: int = Field(5, ge=1, le=50, description="Positions per axis of the lattice the model is checked on "
                      "(grid x grid over the detector, edges included; 1: the centre only).")
    core_radius: float = Field(2.0, gt=0, le=100, description="Radius of the core, in units of the stars' median "
                               "sigma (at least 1 px). At most 100.")
    negative_core_tolerance: float = Field(0.01, ge=0, description="A core pixel below -this x the kernel's "
                                           "peak fails core_non_negative.")
    max_size_ratio: float = Field(1.5, gt=1, le=100, description="The model's size must be within this factor of the "
                                  "stars' median size. At most 100.")
    min_chi2_ratio: float = Field(0.5, ge=0, lt=1, description="Fitted stars' sum chi2 / sum chi2 expected "
                                  "from noise below this fails overfit (0: off)...")
    overfit_max_stars_per_parameter: float = Field(10.0, gt=0, le=1e6, description="... when the fit has fewer used "
                                                                                   "stars "
                                                   "per spatial term than this. With more, a low chi2 is not "
                                                   "overfitting but data whose noise is below their variance plane "
                                                   "(noise-free tests, overestimated variances). At most 1e6.")


@dataclass(frozen=True)
class PsfCheckResult:
    """The outcome of `check_psf_model`.

    Attributes
    ----------
    failed : str or None
        The first check in `CHECKS` that failed, None when all passed.
    message : str
        What failed, where, with the numbers ("" when all passed).
    sizes : (grid * grid,) float64
        Determinant radius of the model at each lattice position (px; NaN where not measurable).
    chi2_ratio : float
        ``sum chi2 / sum chi2_expected`` of the fitted stars (NaN when not given).
    """

    failed: str | None
    message: str
    sizes: np.ndarray
    chi2_ratio: float

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return self.failed is None


def _lattice(bbox: Box2I, grid: int) -> tuple[np.ndarray, np.ndarray]:
    if grid == 1:
        return np.array([0.5 * (bbox.min_x + bbox.max_x)]), np.array([0.5 * (bbox.min_y + bbox.max_y)])
    xs = np.linspace(bbox.min_x, bbox.max_x, grid)
    ys = np.linspace(bbox.min_y, bbox.max_y, grid)
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def measure_star_sizes(image: np.ndarray, mask: np.ndarray | None = None, variance: np.ndarray | None = None, *,
                       x_offset=None, y_offset=None) -> np.ndarray:
    """Adaptive-moment determinant radius (px) of each stamp's star, in one C++ call.

    Parameters
    ----------
    image : (m, S, S) array
        Stamps, the star near the middle pixel.
    mask, variance : (m, S, S) arrays, optional
        Their mask (int32) and variance; default no mask, unit variance.
    x_offset, y_offset : (m,) arrays, optional
        The star's centre minus the middle pixel, px (default 0): the starting centre.

    Returns
    -------
    (m,) float64
        NaN where the moments failed.

    Notes
    -----
    The stamps are laid side by side in one row and measured with ``base_SdssShape``'s adaptive moments;
    the Gaussian weight of a star ~2 px wide is below 1e-18 at the next stamp, 13 px away.
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[1] != img.shape[2]:
        raise ValueError(f"image must be (m, S, S), got shape {img.shape}")
    m, s, _ = img.shape
    if m == 0:
        return np.zeros(0)
    msk = np.zeros(img.shape, np.int32) if mask is None else np.asarray(mask, np.int32)
    var = np.ones(img.shape, np.float32) if variance is None else np.asarray(variance, np.float32)
    row = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2).reshape(s, m * s))
    dx = np.zeros(m) if x_offset is None else np.nan_to_num(np.asarray(x_offset, np.float64))
    dy = np.zeros(m) if y_offset is None else np.nan_to_num(np.asarray(y_offset, np.float64))
    x = np.ascontiguousarray(np.arange(m) * s + s // 2 + np.clip(dx, -1, 1), np.float64)
    y = np.ascontiguousarray(np.full(m, s // 2, np.float64) + np.clip(dy, -1, 1))
    ctl = _core.SdssShapeControl()
    r = _core.sdss_shape_batch(row(img), row(msk), row(var), 0, 0, x, y, ctl)
    xx, yy, xy = (np.asarray(r[k], np.float64) for k in ("xx", "yy", "xy"))
    det = xx * yy - xy * xy
    with np.errstate(invalid="ignore"):
        out = np.where(det > 0, np.sqrt(np.sqrt(np.where(det > 0, det, 1.0))), np.nan)
    flags = np.asarray(r.get("flags", np.zeros(m, np.int64)))
    out[(flags & 1) != 0] = np.nan
    return out


def check_psf_model(psf: Psf, bbox: Box2I, star_sizes=None, *, chi2=None, chi2_expected=None,
                    stars_per_parameter: float | None = None, config: PsfCheckConfig | None = None) -> PsfCheckResult:
    """Check a fitted PSF model over the detector (see the module docstring).

    Parameters
    ----------
    psf : `visitcal.psf.Psf`
        The model.
    bbox : `visitcal.core.geom.Box2I`
        The detector; the lattice spans it.
    star_sizes : array of float, optional
        The fitted stars' own determinant radii (px; NaNs ignored), for the ``size`` and core checks.
    chi2, chi2_expected : arrays of float, optional
        The fitted stars' chi-square under the model and the chi-square noise alone would give (the
        determiners' ``chi2`` and ``chi2_expected``), for the ``overfit`` check; skipped without them.
    stars_per_parameter : float, optional
        Used stars per spatial polynomial term; the ``overfit`` check applies only below
        ``overfit_max_stars_per_parameter`` (always when not given).
    config : `PsfCheckConfig`, optional

    Returns
    -------
    `PsfCheckResult`
    """
    cfg = config if config is not None else PsfCheckConfig()
    if not isinstance(bbox, Box2I):
        raise TypeError(f"bbox must be a visitcal.core.geom.Box2I, got {type(bbox).__name__}")
    sizes_in = np.asarray([] if star_sizes is None else star_sizes, np.float64).ravel()
    sizes_in = sizes_in[np.isfinite(sizes_in) & (sizes_in > 0)]
    ref = float(np.median(sizes_in)) if sizes_in.size else math.nan
    xs, ys = _lattice(bbox, cfg.grid)
    sizes = np.full(xs.size, np.nan)
    ratio = math.nan
    if chi2 is not None and chi2_expected is not None:
        c, e = np.asarray(chi2, np.float64), np.asarray(chi2_expected, np.float64)
        ok = np.isfinite(c) & np.isfinite(e)
        ratio = float(c[ok].sum() / e[ok].sum()) if ok.any() and e[ok].sum() > 0 else math.nan

    def fail(name, message):
        return PsfCheckResult(name, message, sizes, ratio)

    for i, (x, y) in enumerate(zip(xs, ys)):
        where = f"at ({x:.0f}, {y:.0f})"
        try:
            k = np.asarray(psf.compute_kernel_image(x, y), np.float64)
        except (RuntimeError, ValueError) as err:
            return fail("finite", f"the kernel image cannot be drawn {where}: {err}")
        if k.ndim != 2 or k.size == 0 or not np.all(np.isfinite(k)):
            return fail("finite", f"the kernel image has non-finite pixels {where}")
        ny, nx = k.shape
        cy, cx = ny // 2, nx // 2
        peak = float(k[cy, cx])
        iy, ix = np.unravel_index(int(np.argmax(k)), k.shape)
        if (iy, ix) != (cy, cx) and k[iy, ix] > peak:
            return fail("peak_centred", f"the kernel's brightest pixel is ({ix - cx:+d}, {iy - cy:+d}) px from its "
                                        f"centre {where} ({k[iy, ix]:.3g} against {peak:.3g} at the centre)")
        try:
            size = psf.compute_shape(x, y).determinant_radius
        except (RuntimeError, ValueError):
            size = math.nan
        sizes[i] = size
        sigma = ref if math.isfinite(ref) else (size if math.isfinite(size) else 2.0)
        r_core = max(1.0, cfg.core_radius * sigma)
        yy, xx = np.mgrid[:ny, :nx]
        core = (xx - cx) ** 2 + (yy - cy) ** 2 <= r_core**2
        lowest = float(k[core].min())
        if lowest < -cfg.negative_core_tolerance * peak:
            return fail("core_non_negative", f"the kernel's core (r <= {r_core:.1f} px) has a pixel at "
                                             f"{lowest:.3g} with a peak of {peak:.3g} {where}")
        if not (math.isfinite(size) and size > 0):
            return fail("size", f"the model's size is not finite {where}")
        if math.isfinite(ref):
            if not ref / cfg.max_size_ratio <= size <= ref * cfg.max_size_ratio:
                return fail("size", f"the model's size {size:.3f} px {where} is not within a factor "
                                    f"{cfg.max_size_ratio:g} of the stars' median size {ref:.3f} px")
        elif size >= 0.5 * min(nx, ny):
            return fail("size", f"the model's size {size:.3f} px {where} is not under half the kernel ({nx} px)")
    few = stars_per_parameter is None or stars_per_parameter < cfg.overfit_max_stars_per_parameter
    if cfg.min_chi2_ratio > 0 and few and math.isfinite(ratio) and ratio < cfg.min_chi2_ratio:
        return fail("overfit", f"the fitted stars' chi2 is {ratio:.2f} of what noise alone gives a perfect model "
                               f"(< {cfg.min_chi2_ratio:g}): the model fits their noise")
    return PsfCheckResult(None, "", sizes, ratio)
