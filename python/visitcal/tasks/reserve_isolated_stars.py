"""Reserve a fixed fraction of isolated stars from PSF fitting, the same stars in every visit (pipe_tasks
``ReserveIsolatedStarsTask``, as ``FinalizeCharacterizationTask`` uses it).

For ``nstar`` stars and an ``extra`` string (FinalizeCharacterization passes ``f"{band}_{tract}"``):

* ``name = reserve_name + "_" + extra``, always joined (``"reserved_"`` when ``extra`` is empty, as LSST's),
  e.g. ``reserved_r_9813``;
* ``seed = int(sha256(name.encode("utf-8")).hexdigest(), 16) & 0xFFFFFFFF`` (the digest's low 32 bits);
* a boolean array whose first ``int(nstar * reserve_fraction)`` entries are True, shuffled in place by
  ``numpy.random.default_rng(seed).shuffle``.

Star ``i`` is reserved iff the array's entry ``i`` is True. The flags depend only on the name and the
star count (the tract's isolated-star table in one band), never on the visit, so a star is reserved in
every visit and detector or in none, and the reserved fraction is exactly ``floor(f N) / N`` per
(band, tract). numpy's SeedSequence -> PCG64 seeding and its ``Generator.shuffle`` make the result
bit-identical to LSST's.
"""

from __future__ import annotations

import hashlib

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ReserveIsolatedStarsConfig", "ReserveIsolatedStarsTask", "reserve_seed"]


def reserve_seed(name: str) -> int:
    """The low 32 bits of the SHA-256 digest of ``name`` (UTF-8), as an int."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16) & 0xFFFFFFFF


class ReserveIsolatedStarsConfig(BaseModel):
    """Configuration of `ReserveIsolatedStarsTask` (LSST names in snake_case, LSST defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reserve_name: str = Field("reserved", description="Prefix of the name that seeds the shuffle.")
    reserve_fraction: float = Field(0.1, ge=0, le=1, description="Fraction of the stars reserved (floor(f N)).")


class ReserveIsolatedStarsTask:
    """Choose the reserved stars (see the module docstring)."""

    ConfigClass = ReserveIsolatedStarsConfig
    _DefaultName = "reserve_selection"

    def __init__(self, config: ReserveIsolatedStarsConfig | None = None):
        self.config = config if config is not None else ReserveIsolatedStarsConfig()

    def name(self, extra: str = "") -> str:
        """The seeding name ``reserve_name + "_" + extra``, joined even when ``extra`` is empty (as LSST's
        ``ReserveIsolatedStarsTask``: ``"reserved_"``, never ``"reserved"``)."""
        return f"{self.config.reserve_name}_{extra}"

    def run(self, nstar: int, extra: str = "") -> np.ndarray:
        """(nstar,) bool: True for the reserved stars.

        Parameters
        ----------
        nstar : int
            Number of stars (>= 0).
        extra : str
            Appended to the name after ``"_"`` (``"<band>_<tract>"`` in FinalizeCharacterization; the
            separator is kept when it is empty).
        """
        nstar = int(nstar)
        if nstar < 0:
            raise ValueError(f"nstar must be >= 0, got {nstar}")
        reserved = np.zeros(nstar, dtype=bool)
        reserved[: int(nstar * self.config.reserve_fraction)] = True
        np.random.default_rng(reserve_seed(self.name(extra))).shuffle(reserved)
        return reserved

    def __repr__(self) -> str:
        return f"ReserveIsolatedStarsTask({self.config!r})"
