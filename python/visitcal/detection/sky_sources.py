"""Sky sources: footprints of empty sky, measured like sources to characterise the background and noise
(LSST's ``SkyObjectsTask`` / ``generateSkyObjects`` in meas_algorithms).

1. Trial positions: the first ``n_trial_sources`` points of a scrambled 2-D Halton sequence seeded with
   ``seed`` (LSST seeds it with the catalog id, `DetectorVisitIdGenerator.catalog_id`), identical to
   ``scipy.stats.qmc.Halton(d=2, seed=seed)`` (`scrambled_halton`; scipy is not needed at run time),
   scaled to the image box shrunk by ``int(source_radius) + 1`` px on each side,
   ``x = x_min + u (x_max - x_min)``, then truncated to int.
2. In order, a trial is accepted when the disc of radius ``int(source_radius)`` (``dx^2 + dy^2 <= r^2``)
   around it misses every avoided pixel: the ``avoid_mask`` planes grown by ``grow_mask`` px, plus the
   discs of the sky sources accepted so far dilated by ``r`` (so sky sources stay ~2r apart). The loop
   (C++) stops after ``n_sources`` acceptances.
3. Each accepted disc becomes a `Footprint` with one peak at its centre (value 0). Fewer than
   ``n_sources`` on a crowded image is not an error; the count is logged.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import _core
from ..core.footprint import Footprint, make_peaks
from ..core.image import Exposure, Mask, MaskedImage

__all__ = ["SkyObjectsConfig", "SkyObjectsTask", "generate_sky_objects", "scrambled_halton", "trial_positions"]

_log = logging.getLogger(__name__)

_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71)


def scrambled_halton(n: int, seed: int, d: int = 2) -> np.ndarray:
    """The first ``n`` points of a scrambled Halton sequence in ``[0, 1)^d``.

    Equal, bit for bit, to ``scipy.stats.qmc.Halton(d=d, scramble=True, seed=seed).random(n)``
    (checked against scipy 1.17 in the tests): Owen's (2017) random digit permutations, column ``j`` a
    van der Corput sequence in the ``j``-th prime base ``b``.

    - Permutations: ``rng = numpy.random.default_rng(seed)``; for each base in turn,
      ``ceil(54 / log2(b)) - 1`` copies of ``arange(b)``, each shuffled in place by ``rng.shuffle``
      (the digits whose weight ``b^-k`` still matters in double precision).
    - Point ``i``: with the base-``b`` digits ``a_k`` of ``i`` (least significant first),
      ``sum_k perm_k[a_k] * w_k`` summed in digit order, ``w_1 = 1 / b``, ``w_{k+1} = w_k / b``.

    Parameters
    ----------
    n : int
        Number of points (>= 0).
    seed : int
        Non-negative; any size numpy's `default_rng` accepts.
    d : int
        Dimension, 1..20.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if int(d) != d or not 1 <= d <= len(_PRIMES):
        raise ValueError(f"d must be an integer in 1..{len(_PRIMES)}, got {d!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    bases = _PRIMES[:int(d)]
    perms = []
    for b in bases:  # all permutations first, base after base: that is the RNG's consumption order
        p = np.repeat(np.arange(b)[None], math.ceil(54 / math.log2(b)) - 1, axis=0)
        for row in p:
            rng.shuffle(row)
        perms.append(p)
    out = np.zeros((int(n), int(d)))
    index = np.arange(int(n), dtype=np.int64)
    for j, (b, p) in enumerate(zip(bases, perms)):
        q = index.copy()
        w = 1.0 / b
        col = np.zeros(int(n))
        for perm in p:
            col += perm[q % b] * w
            w /= b
            q //= b
        out[:, j] = col
    return out


class SkyObjectsConfig(BaseModel):
    """Configuration of `SkyObjectsTask` (LSST's SkyObjectsConfig, snake_case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    avoid_mask: tuple[str, ...] = Field(("DETECTED", "DETECTED_NEGATIVE", "BAD", "NO_DATA"),
                                        description="Avoid pixels masked with these mask planes.")
    grow_mask: int = Field(0, ge=0, le=100, description="Grow the avoided pixels by a disc of this many pixels. At "
                                                        "most 100 px: the growth disc's area sizes the time.")
    source_radius: float = Field(8.0, ge=0, le=200, description="Radius of the sky sources (px); int(source_radius) "
                                                                "is used. At most 200 px.")
    n_sources: int = Field(100, le=100000, description="Try to add this many sky sources (<= 0: none). At most 1e5.")
    n_trial_sources: int | None = Field(
        None, ge=0, le=10000000, description="Maximum number of trial positions (None: n_sources * "
                                             "n_trial_sources_multiplier). At most 1e7: it sizes the trial arrays.")
    n_trial_sources_multiplier: int = Field(
        5, ge=0, le=1000, description="n_trial_sources = n_sources * this when n_trial_sources is None. At most 1000.")

    @property
    def effective_n_trial_sources(self) -> int:
        """Trial positions to draw: `n_trial_sources`, else ``n_sources * n_trial_sources_multiplier``."""
        if self.n_trial_sources is not None:
            return self.n_trial_sources
        return self.n_sources * self.n_trial_sources_multiplier


def _mask_and_xy0(mask) -> tuple[Mask, tuple[int, int]]:
    if isinstance(mask, Exposure):
        return mask.mask, mask.xy0
    if isinstance(mask, MaskedImage):
        return mask.mask, mask.xy0
    if isinstance(mask, Mask):
        return mask, (0, 0)
    raise TypeError(f"expected a Mask, MaskedImage or Exposure, got {type(mask).__name__}")


def trial_positions(bbox_shape: tuple[int, int], xy0: tuple[int, int], seed: int,
                    config: SkyObjectsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Integer trial centres ``(x, y)`` (parent frame) for an image of ``bbox_shape`` (ny, nx) at ``xy0``."""
    ny, nx = bbox_shape
    shrink = int(config.source_radius) + 1
    x_min, y_min = xy0[0] + shrink, xy0[1] + shrink
    x_max, y_max = xy0[0] + nx - 1 - shrink, xy0[1] + ny - 1 - shrink
    if not (x_min < x_max and y_min < y_max):
        raise ValueError(f"image of shape {bbox_shape} is too small for sky sources of radius {config.source_radius}")
    u = scrambled_halton(config.effective_n_trial_sources, seed, 2)
    lower = np.array([x_min, y_min])
    upper = np.array([x_max, y_max])
    scaled = u * (upper - lower) + lower  # scipy.stats.qmc.scale, operation for operation
    return scaled[:, 0].astype(int), scaled[:, 1].astype(int)


def generate_sky_objects(mask, seed: int, config: SkyObjectsConfig | None = None) -> list[Footprint]:
    """Footprints of sky objects (see the module docstring).

    Parameters
    ----------
    mask : `Mask`, `MaskedImage` or `Exposure`
        The planes in ``config.avoid_mask`` mark pixels to avoid (a bare `Mask` sits at ``xy0 = (0, 0)``).
    seed : int
        Seeds the Halton scrambling (LSST: the catalog id).
    config : `SkyObjectsConfig`

    Returns
    -------
    list of `Footprint`
        Discs (parent frame) with one peak at the centre, in acceptance order.
    """
    config = config or SkyObjectsConfig()
    if config.n_sources <= 0:
        return []
    m, xy0 = _mask_and_xy0(mask)
    xs, ys = trial_positions(m.shape, xy0, seed, config)
    bits = m.get_plane_bitmask(*config.avoid_mask)
    r = int(config.source_radius)
    accepted = _core.select_sky_sources(np.ascontiguousarray(m.array), bits, config.grow_mask, r,
                                        xs.astype(np.int32), ys.astype(np.int32), config.n_sources, xy0[0], xy0[1])
    footprints = []
    for i in accepted:
        x, y = int(xs[i]), int(ys[i])
        peaks = make_peaks([[x, y]], [0.0], [0.0], ids=[0])
        footprints.append(Footprint._from_normalized(_core.disc_spans(r, x, y), peaks))
    return footprints


class SkyObjectsTask:
    """Place sky sources (LSST's ``SkyObjectsTask``).

    Parameters
    ----------
    config : `SkyObjectsConfig`, optional
    """

    ConfigClass = SkyObjectsConfig
    _DefaultName = "skySources"

    def __init__(self, config: SkyObjectsConfig | None = None):
        self.config = config or SkyObjectsConfig()
        self.metadata: dict[str, int] = {}

    def run(self, mask, seed: int) -> list[Footprint]:
        """Sky-object footprints for ``mask`` (see `generate_sky_objects`); records
        ``metadata["sky_footprint_count"]`` and logs how many of the requested sources were placed."""
        footprints = generate_sky_objects(mask, seed, self.config)
        n_req = self.config.n_sources
        if n_req > 0:
            level = logging.INFO if len(footprints) == n_req else logging.WARNING
            _log.log(level, "Added %d of %d requested sky sources (%.0f%%)", len(footprints), n_req,
                     100 * len(footprints) / n_req)
        self.metadata["sky_footprint_count"] = len(footprints)
        return footprints

    def __repr__(self) -> str:
        return f"SkyObjectsTask(config={self.config!r})"
