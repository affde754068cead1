"""The PCA PSF determiner (``psf_determiner.name = "pca"``) and its model `PcaPsf`, after meas_algorithms'
``PcaPsfDeterminerTask`` (``pcaPsfDeterminer``).

The model is a Karhunen-Loeve (PCA) basis of K images ``B_k`` (n x n, centred on the middle pixel) with
amplitudes that vary over the detector as polynomials of order ``spatial_order`` in coordinates scaled to
[-1, 1] over the detector box (`visitcal` ``SpatialPolynomial``: terms ``1, u, v, u^2, u v, v^2, ...``)::

    kernel(x, y) = sum_k a_k(x, y) B_k / sum(...),    a_k(x, y) = sum_t C[k, t] f_t(x, y)

The fit makes ``B_0`` the unit-sum leading eigen-image and the others zero-sum, with ``a_0 = 1``: the
flux of a star and the PSF's shape separate, as in LSST's KL kernel. The fit (C++, one call, GIL
released; pixel centres at integers, stamps ``(y, x)``):

1. each candidate is centred on the kernel grid by a sub-pixel Lanczos shift (order
   ``interpolant_order``) and normalised to unit sum; bad pixels (``zero_weight_mask_planes``,
   non-finite values, variance <= 0) are filled first, on the first pass with the pixel mirrored through
   the star's centre pixel, afterwards with the current model;
2. the basis: the leading ``n_eigen_components`` eigen-images of the used stars (eigen-decomposition of
   their Gram matrix; fewer when there are fewer stars or fewer non-degenerate components); signs fixed
   by making the largest pixel positive;
3. each star's amplitudes, by an inverse-variance weighted least-squares fit of the basis shifted to the
   star (bad pixels have zero weight);
4. one joint pixel-level inverse-variance weighted least-squares fit of every spatial coefficient
   (``constant_weight`` shapes only the KL basis, as in LSST); then, not in LSST and with two components
   or more, ``n_basis_refinements`` times: every basis pixel refitted by inverse-variance weighted least
   squares over the used stars with the spatial amplitudes held (B_0 renormalised, the others made
   zero-sum and orthonormal), and 3-4 again; the fits after the first start from the previous fit's
   refined basis instead of a new KL basis. This is a weighted rank-K fit of the stars: the KL
   eigen-images carry every faint star's noise at the weight of a bright one, and that noise made the
   reserved stars' size error 3-5x the pixel grid's;
5. each star's flux (fitted) and chi2 against the model, reserved stars included; used stars with
   ``chi2 / dof > reduced_chi2_for_psf_candidates``, or whose amplitudes deviate from the spatial fit by
   more than ``spatial_reject`` sigma (their own error plus the robust scatter of all deviations), are
   rejected as outliers and the fit restarts at 1. At most ``n_iter_for_psf`` fits; the last fit has no
   rejection after it, so the returned model fits exactly the stars marked used.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import _core
from ..core.geom import Box2I
from ..core.image import MaskPlanes
from ..core.persistence import persistable
from .models import _check_average_position, _CorePsf
from .candidates import PsfCandidates
from .checks import PsfCheckConfig
from .determiner import (PsfDeterminerResult, PsfTooFewStarsError, fit_screened, fit_with_order_step_down,
                         screen_candidates)

__all__ = ["STATUS_NAMES", "PcaPsf", "PcaPsfDeterminer", "PcaPsfDeterminerConfig"]

#: Candidate status strings, by the C++ code.
STATUS_NAMES = tuple(_core.pca_status_names())


class PcaPsfDeterminerConfig(BaseModel):
    """Configuration of `PcaPsfDeterminer` (LSST ``pcaPsfDeterminer`` names in snake_case, LSST defaults).

    LSST's ``sizeCellX/Y``, ``nStarPerCell*`` (the cell grid that thins stars; candidates are already
    capped at 300), ``pixelThreshold`` and the blend options (done by `visitcal.psf.candidates`) have no
    counterpart here.
    """

    model_config = ConfigDict(extra="forbid")

    n_eigen_components: int = Field(4, ge=1, le=100, description="Number of KL basis images (LSST nEigenComponents); "
                                    "reduced automatically only when there are fewer used stars or fewer "
                                    "non-degenerate components. At most 100: each is a basis image fitted at every "
                                    "pixel.")
    component_noise_threshold: float = Field(0.0, ge=0, description="0 (LSST): keep n_eigen_components. > 0: "
                                             "components beyond the first are kept only while their eigenvalue "
                                             "exceeds this times the pure-noise edge (see build_basis in "
                                             "cpp/src/psf/pca.cpp). At 1.0 one component survived on every field "
                                             "tried, so the PSF could not vary: 1-3% size errors where the pixel "
                                             "grid had 0.1%.")
    spatial_order: int = Field(2, ge=0, le=15, description="Order of the polynomials in x, y (scaled to [-1, 1] "
                               "over the detector) giving each basis amplitude.")
    kernel_size: int = Field(25, gt=0, le=1001, description="Side (px, odd) of the model's images. 25 fits inside the "
                             "27-px candidate stamps (LSST's PCA default stampSize 41 needs larger stamps; 25 is "
                             "the size LSST's Piff models use on the same candidates). At most 1001 px.")
    n_iter_for_psf: int = Field(3, ge=1, le=20, description="At most this many fits, with outlier rejection between "
                                "them.")
    n_basis_refinements: int = Field(3, ge=0, le=50, description="Not LSST: rounds of refitting every basis pixel by "
                                     "inverse-variance weighted least squares with the spatial amplitudes held, after "
                                     "the KL basis (0: LSST's KL basis as it is; with one component, which has no "
                                     "spatial freedom, there is none). The KL basis carries the faint stars' "
                                     "noise: on 270 simulated stars of a varying Gaussian PSF (three seeds) the "
                                     "reserved stars' size error is 0.06-0.09% rms with 3 (the pixel grid's "
                                     "0.07-0.09%), 0.28-0.38% with 0 (Lanczos-11 centring both). Each fit after "
                                     "the first starts from the previous fit's refined basis, so the rounds add up "
                                     "over the outlier iterations; a round costs about one fit without refinement.")
    reduced_chi2_for_psf_candidates: float = Field(2.0, gt=0, le=1e6, description="A used star whose chi2 / dof "
                                                                                  "against "
                                                   "the model exceeds this is rejected as an outlier. At most 1e6.")
    spatial_reject: float = Field(3.0, gt=0, description="A used star whose basis amplitudes deviate from the "
                                  "spatial fit by more than this many sigma is rejected as an outlier.")
    constant_weight: bool = Field(True, description="Give every star the same weight in the KL basis, whatever "
                                  "its brightness (LSST's default), or weight it by its S/N^2 (False). The "
                                  "amplitude, spatial and basis-refinement fits weight pixels by inverse variance "
                                  "either way, as LSST's spatial fit does; after the refinement the choice no "
                                  "longer changes the reserved stars' size error (270 simulated stars).")
    lam: float = Field(0.05, ge=0, description="Fractional model-error floor of each star's chi2 (the outlier "
                       "test and the reported chi2): pixel variances var + (lam * model)^2. (LSST's lam is a linear "
                       "floor lam * data, which depends on the gain; this form is unit-free.) The fits themselves "
                       "weight pixels by 1 / var alone: as a weight the floor capped a bright star's per-pixel S/N at "
                       "1 / lam, and the reserved stars' size error doubled.")
    tolerance: float = Field(1e-2, ge=0, description="Stop iterating early when a fit rejects no star and the "
                             "used stars' total chi2 changed by less than this fraction.")
    zero_weight_mask_planes: tuple[str, ...] = Field(("BAD", "CR", "INTRP", "SAT", "SUSPECT", "NO_DATA"),
                                                     description="Mask planes whose pixels get zero weight.")
    interpolant_order: int = Field(11, ge=1, le=20, description="Lanczos order of the sub-pixel shifts (star "
                                   "centring in the fit and compute_image of the model). 11, as the pixel grid's "
                                   "Lanczos(11): LSST's Lanczos 5 biased the size of a sampled Gaussian of sigma "
                                   "1.6-2 px by +0.085% (noise-free stars), 11 by 0.01%.")
    zeroth_order_interp_not_enough_stars: bool = Field(False, description="With fewer usable stars than spatial "
                                                       "terms, fit a constant (order 0) PSF instead of failing.")
    min_star_snr: float = Field(3.0, ge=0, le=1000, description="Not LSST: before any fit, a candidate whose flux "
                                "(the sum of its usable pixels) is positive in none of its central 5, 9, 15 px and "
                                "kernel_size boxes is refused as bad_flux, one whose flux reaches this many times "
                                "its noise (the square root of their summed variance) in none of them as low_snr "
                                "(visitcal.psf.determiner.screen_candidates). At most 1000.")
    min_unmasked_fraction: float = Field(0.5, ge=0, le=1, description="A star needs at least this fraction of "
                                         "good pixels in its kernel_size^2 box (Piff's minimumUnmaskedFraction).")
    order_step_down: bool = Field(True, description="With too few stars per spatial term, or a model that fails "
                                  "its checks, refit at the next lower spatial order, down to 0, before failing "
                                  "(the result's metadata says why).")
    min_stars_per_parameter: float = Field(3.0, ge=1, description="Fewest used stars per spatial polynomial term "
                                           "for orders above 0 (order 2: 18 stars).")
    checks: PsfCheckConfig = Field(default_factory=PsfCheckConfig, description="Checks the fitted model must pass "
                                   "(visitcal.psf.checks).")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {v}")
        return v

    @property
    def min_stamp_size(self) -> int:
        """Smallest candidate stamp the kernel fits in: ``kernel_size + 2``. A stamp is centred on the pixel
        nearest the centroid it was cut with; the fit centres the kernel on the pixel nearest the star's
        centroid, which may be the next pixel when the two centroids differ (refined centroids, SExtractor's
        ``X_IMAGE`` against ``XWIN_IMAGE``), so one pixel of margin is needed on each side."""
        return self.kernel_size + 2

    def to_control(self, planes: MaskPlanes | None = None, *, spatial_order: int | None = None) -> _core.PcaPsfControl:
        """The C++ control struct; mask bits from the plane names (``planes``: default standard planes);
        ``spatial_order`` overrides the configured order."""
        planes = planes if planes is not None else MaskPlanes()
        c = _core.PcaPsfControl()
        for name in ("n_eigen_components", "component_noise_threshold", "n_basis_refinements", "spatial_order",
                     "kernel_size", "n_iter_for_psf",
                     "reduced_chi2_for_psf_candidates", "spatial_reject", "constant_weight", "lam", "tolerance",
                     "interpolant_order", "zeroth_order_interp_not_enough_stars", "min_unmasked_fraction"):
            setattr(c, name, getattr(self, name))
        bits = 0
        for name in self.zero_weight_mask_planes:
            bits |= 1 << planes[name]
        c.bad_mask_bits = int(np.int32(np.uint32(bits)))
        if spatial_order is not None:
            c.spatial_order = int(spatial_order)
        return c


def _box_of(bbox: Box2I) -> tuple[float, float, float, float]:
    """The continuous box (xmin, xmax, ymin, ymax) of an integer box: pixel edges half a pixel out."""
    if not isinstance(bbox, Box2I):
        raise TypeError(f"bbox must be a visitcal.core.geom.Box2I, got {type(bbox).__name__}")
    if bbox.width < 1 or bbox.height < 1:
        raise ValueError(f"bbox must not be empty, got {bbox}")
    return (bbox.min_x - 0.5, bbox.max_x + 0.5, bbox.min_y - 0.5, bbox.max_y + 0.5)


class PcaPsfDeterminer:
    """Fit a `PcaPsf` to PSF candidates (see the module docstring for the algorithm)."""

    def __init__(self, config: PcaPsfDeterminerConfig | None = None):
        self.config = config if config is not None else PcaPsfDeterminerConfig()

    def determine_psf(self, candidates: PsfCandidates, bbox: Box2I, *, reserved=None) -> PsfDeterminerResult:
        """Fit the PSF of one detector.

        Parameters
        ----------
        candidates : `visitcal.psf.candidates.PsfCandidates`
            ``m`` stamps (image/variance float32, mask int32, (m, S, S)) with parent origins ``xy0``; the
            stars' centroids are ``table["x"][table["used"]]``, ``table["y"][...]`` (parent pixels,
            centres at integers).
        bbox : `visitcal.core.geom.Box2I`
            The detector; the spatial polynomials' coordinates are scaled to [-1, 1] over its pixel edges.
        reserved : (m,) bool, optional
            Stars kept out of the fit; their flux and chi2 against the model are still reported.

        Returns
        -------
        `visitcal.psf.determiner.PsfDeterminerResult`
            ``status`` is one of `STATUS_NAMES` per candidate; ``metadata`` holds ``spatialFitChi2`` (the
            used stars' total chi2 under the final model), ``numAvailStars`` (non-reserved candidates),
            ``numGoodStars`` (used), ``avgX``, ``avgY`` (their mean position), ``n_iter`` (fits made),
            ``spatial_order`` (0 after the fallback) and ``n_components`` (K fitted).

            After `visitcal.psf.determiner.fit_with_order_step_down`: ``spatial_order_used``,
            ``order_step_down_reason``, ``n_dropped`` (candidates not used nor reserved, counted by status,
            e.g. ``bad_centroid``, ``outlier``), ``dropped_candidates`` (their indices by status; logged at INFO)
            and the checks' ``chi2_ratio``.

        Raises
        ------
        PsfTooFewStarsError
            Too few usable non-reserved stars (before or after rejection) even at the lowest order tried.
        PsfFitError
            The model failed a check of `visitcal.psf.checks` at every order tried (attribute ``check``).
        ValueError
            Stamps smaller than ``kernel_size + 2`` (`PcaPsfDeterminerConfig.min_stamp_size`).
        """
        if not isinstance(candidates, PsfCandidates):
            raise TypeError(f"candidates must be PsfCandidates, got {type(candidates).__name__}")
        box = _box_of(bbox)
        m = len(candidates)
        image = np.ascontiguousarray(candidates.image, dtype=np.float32)
        mask = np.ascontiguousarray(candidates.mask, dtype=np.int32)
        variance = np.ascontiguousarray(candidates.variance, dtype=np.float32)
        if image.ndim != 3 or image.shape[1] != image.shape[2]:
            raise ValueError(f"candidates.image must be (m, S, S), got shape {image.shape}")
        if mask.shape != image.shape or variance.shape != image.shape:
            raise ValueError("candidates.mask and candidates.variance must have the image's shape")
        if image.shape[1] < self.config.kernel_size:
            raise ValueError(f"kernel_size {self.config.kernel_size} is larger than the stamps ({image.shape[1]})")
        if m and image.shape[1] < self.config.min_stamp_size:
            raise ValueError(f"the candidate stamps ({image.shape[1]} px) must be at least kernel_size + 2 = "
                             f"{self.config.min_stamp_size} px for the PCA PSF, so that a star up to a pixel off the "
                             "stamp's centre still has its kernel inside: cut larger stamps (PsfCandidatesConfig."
                             "stamp_size, candidates_from_vignets(stamp_size=...)) or lower kernel_size")
        xy0 = np.ascontiguousarray(candidates.xy0, dtype=np.int32).reshape(-1, 2) if m else np.zeros((0, 2), np.int32)
        if xy0.shape != (m, 2):
            raise ValueError(f"candidates.xy0 must be (m, 2), got {np.shape(candidates.xy0)}")
        try:
            sel = np.asarray(candidates.table["used"], dtype=bool)
            x = np.ascontiguousarray(np.asarray(candidates.table["x"], dtype=np.float64)[sel])
            y = np.ascontiguousarray(np.asarray(candidates.table["y"], dtype=np.float64)[sel])
        except KeyError as err:
            raise ValueError(f"candidates.table has no column {err}") from None
        if x.shape != (m,):
            raise ValueError(f"candidates.table has {x.size} used rows but there are {m} stamps")
        if reserved is None:
            res = np.zeros(m, dtype=bool)
        else:
            res = np.asarray(reserved)
            if res.shape != (m,) or res.dtype != bool:
                raise ValueError(f"reserved must be a ({m},) bool array, got {res.dtype} {res.shape}")
        cfg = self.config
        refused = screen_candidates(candidates, size=cfg.kernel_size, bad_mask_bits=cfg.to_control().bad_mask_bits,
                                    min_snr=cfg.min_star_snr, min_usable_fraction=cfg.min_unmasked_fraction)

        def fit(_, keep, o):
            keep = slice(None) if keep.all() else keep  # no copies of the stamps when none was refused
            r = res[keep]
            return self._fit_order(image[keep], mask[keep], variance[keep], xy0[keep], x[keep], y[keep], r,
                                   np.ascontiguousarray(r, dtype=np.uint8), box, o)

        return fit_with_order_step_down(
            fit_screened(fit, candidates, res, refused, "PCA PSF"), cfg.spatial_order, candidates, bbox, res,
            step_down=cfg.order_step_down, min_stars_per_parameter=cfg.min_stars_per_parameter, checks=cfg.checks,
            zeroth_order_fallback=cfg.zeroth_order_interp_not_enough_stars, what="PCA PSF", refused=refused)

    def _fit_order(self, image, mask, variance, xy0, x, y, res, res_u8, box, order: int) -> PsfDeterminerResult:
        """One fit at spatial ``order`` (no step-down, no checks)."""
        # LSST's determiner reduces nEigenComponents when the fit cannot be made with them; here when a fit
        # with K components loses every star (too few left), K - 1 is tried, down to 1.
        ctl = self.config.to_control(spatial_order=order)
        # Each component beyond the first is a spatial polynomial of its own, fitted to the same stars: at
        # most one component per min_stars_per_parameter x n_terms stars (15 stars at order 1 -> 1; 54 at
        # order 2 -> 3; 72 and more at order 2 -> LSST's 4). Without the cap, 4 components on ~16 simulated
        # stars made the size at the detector centre 2.1% too large; one, 0.6%.
        n_fit = int(np.count_nonzero(~res))
        per_component = self.config.min_stars_per_parameter * (order + 1) * (order + 2) / 2
        ctl.n_eigen_components = int(min(ctl.n_eigen_components, max(1, n_fit // math.ceil(per_component))))
        if order == 0:  # constant amplitudes: components beyond the mean PSF fit only the stars' noise
            ctl.n_eigen_components = 1
        while True:
            r = _core.fit_pca_psf(image, mask, variance, xy0, x, y, res_u8, ctl, box)
            if not r["too_few_stars"] or ctl.n_eigen_components <= 1 or r["n_stars"] > 0 or not np.any(~res):
                break
            ctl.n_eigen_components -= 1
        if r["too_few_stars"]:
            raise PsfTooFewStarsError(r["n_stars"], r["n_required"], f"for the PCA PSF at spatial order {order}")
        status = np.array(STATUS_NAMES, dtype=object)[r["status"]].astype(str)
        core = r["psf"]
        psf = PcaPsf(core.basis, core.coefficients, spatial_order=core.spatial_order, box=core.box,
                     average_position=core.average_position(), interpolant_order=core.interpolant_order)
        metadata = {
            "spatialFitChi2": float(r["spatial_fit_chi2"]),
            "numAvailStars": int(r["n_available"]),
            "numGoodStars": int(r["n_good"]),
            "avgX": float(r["avg_x"]),
            "avgY": float(r["avg_y"]),
            "n_iter": int(r["n_iter"]),
            "spatial_order": int(r["spatial_order"]),
            "n_components": int(r["n_components"]),
        }
        return PsfDeterminerResult(psf=psf, used=status == "used", reserved=res.copy(), flux=r["flux"],
                                   chi2=r["chi2"], dof=r["dof"], status=status, metadata=metadata,
                                   chi2_expected=r["chi2_expected"])


@persistable("PcaPsf", 1)
class PcaPsf(_CorePsf):
    """A PCA PSF model: K basis images whose amplitudes are polynomials in the position.

    Parameters
    ----------
    basis : (K, n, n) array
        Basis images, centred on the middle pixel; n odd.
    coefficients : (K, (order + 1)(order + 2) / 2) array
        ``C[k, t]``: amplitude ``a_k(x, y) = sum_t C[k, t] f_t(u, v)`` with the terms ``1, u, v, u^2, u v,
        v^2, ...`` (total degree ascending, then the power of v) of ``u, v`` = x, y scaled to [-1, 1] over
        ``box``.
    spatial_order : int
        The polynomials' order.
    box : (xmin, xmax, ymin, ymax)
        The continuous box (parent pixels) mapped to [-1, 1]^2.
    average_position : (float, float)
        Reported by `average_position` (the fit: the used stars' mean position), px.
    interpolant_order : int
        Lanczos order of `compute_image`'s sub-pixel shift.

    Notes
    -----
    `compute_kernel_image` is ``sum_k a_k B_k`` normalised to unit sum; `compute_image` shifts it to the
    sub-pixel position with the Lanczos interpolant (on the stamp centred on pixel ``floor(x + 0.5),
    floor(y + 0.5)``) and renormalises. `compute_shape` measures the kernel's adaptive moments. Arrays
    are kept as given, so persistence and pickling reproduce the same images bit for bit.
    """

    def __init__(self, basis, coefficients, *, spatial_order: int, box, average_position=(0.0, 0.0),
                 interpolant_order: int = 5):
        b = np.array(basis, dtype=np.float64, order="C")
        c = np.array(coefficients, dtype=np.float64, order="C")
        if b.ndim != 3 or b.shape[1] != b.shape[2] or b.shape[1] % 2 == 0 or b.shape[0] < 1:
            raise ValueError(f"basis must be (K, n, n) with n odd and K >= 1, got shape {b.shape}")
        spatial_order = int(spatial_order)
        if not 0 <= spatial_order <= 15:
            raise ValueError(f"spatial_order must be in 0..15, got {spatial_order}")
        n_terms = (spatial_order + 1) * (spatial_order + 2) // 2
        if c.shape != (b.shape[0], n_terms):
            raise ValueError(f"coefficients must be ({b.shape[0]}, {n_terms}), got shape {c.shape}")
        if not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
            raise ValueError("basis and coefficients must be finite")
        try:
            box = tuple(float(v) for v in box)
        except (TypeError, ValueError):
            raise ValueError(f"box must be (xmin, xmax, ymin, ymax), got {box!r}") from None
        if len(box) != 4 or not (box[1] > box[0] and box[3] > box[2]) or not all(map(math.isfinite, box)):
            raise ValueError(f"box must be finite (xmin, xmax, ymin, ymax) with positive extent, got {box!r}")
        interpolant_order = int(interpolant_order)
        if interpolant_order < 1:
            raise ValueError(f"interpolant_order must be >= 1, got {interpolant_order}")
        b.flags.writeable = False
        c.flags.writeable = False
        self._basis, self._coefficients, self._box = b, c, box
        self._core_obj = _core.PcaPsf(b, c, spatial_order, box, _check_average_position(average_position),
                                      interpolant_order)

    @property
    def basis(self) -> np.ndarray:
        """(K, n, n) basis images (read-only)."""
        return self._basis

    @property
    def coefficients(self) -> np.ndarray:
        """(K, n_terms) spatial coefficients (read-only)."""
        return self._coefficients

    @property
    def spatial_order(self) -> int:
        """Total order of the polynomials giving each basis amplitude over the detector."""
        return self._core_obj.spatial_order

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(xmin, xmax, ymin, ymax)``: the continuous parent-pixel box mapped to ``[-1, 1]^2``."""
        return self._box

    @property
    def interpolant_order(self) -> int:
        """Order of the Lanczos interpolant of `compute_image`'s sub-pixel shift."""
        return self._core_obj.interpolant_order

    @property
    def size(self) -> int:
        """Side ``n`` of the (odd, square) kernel images, px."""
        return self._core_obj.size

    @property
    def n_components(self) -> int:
        """Number ``K`` of basis images."""
        return self._core_obj.n_components

    def to_table(self) -> Table:
        """The model as a one-row table.

        Columns: ``basis`` ``(K, n, n)`` and ``coefficients`` ``(K, n_terms)`` (float64, as given),
        ``spatial_order`` and ``interpolant_order`` (int32), ``box_xmin``, ``box_xmax``, ``box_ymin``,
        ``box_ymax`` and ``average_x``, ``average_y`` (px). The round trip through `from_table` is
        lossless: the model draws the same images bit for bit.
        """
        x, y = self.average_position
        xmin, xmax, ymin, ymax = self.box
        return Table({"basis": self.basis[None], "coefficients": self.coefficients[None],
                      "spatial_order": np.array([self.spatial_order], dtype=np.int32),
                      "interpolant_order": np.array([self.interpolant_order], dtype=np.int32),
                      "box_xmin": [xmin], "box_xmax": [xmax], "box_ymin": [ymin], "box_ymax": [ymax],
                      "average_x": [x], "average_y": [y]})

    @classmethod
    def from_table(cls, table: Table) -> PcaPsf:
        """Rebuild the model from the first row of a `to_table` table.

        Raises
        ------
        KeyError
            A column is missing.
        ValueError
            The arrays' shapes disagree with each other or with ``spatial_order``, a value is not
            finite, the box is empty, or ``interpolant_order < 1``.
        """
        row = table[0]
        return cls(np.asarray(row["basis"], dtype=np.float64), np.asarray(row["coefficients"], dtype=np.float64),
                   spatial_order=int(row["spatial_order"]),
                   box=(float(row["box_xmin"]), float(row["box_xmax"]), float(row["box_ymin"]),
                        float(row["box_ymax"])),
                   average_position=(float(row["average_x"]), float(row["average_y"])),
                   interpolant_order=int(row["interpolant_order"]))

    def __reduce__(self):
        return (_pca_psf, (self.basis, self.coefficients, self.spatial_order, self.box, self.average_position,
                           self.interpolant_order))

    def __repr__(self) -> str:
        return (f"PcaPsf({self.n_components} x {self.size}x{self.size} basis, spatial_order={self.spatial_order}, "
                f"average_position={self.average_position})")


def _pca_psf(basis, coefficients, spatial_order, box, average_position, interpolant_order):
    return PcaPsf(basis, coefficients, spatial_order=spatial_order, box=box, average_position=average_position,
                  interpolant_order=interpolant_order)
