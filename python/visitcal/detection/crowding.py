"""How crowded a detector is, and whether it is processed in crowded-field mode (not LSST; issue 21).

The measure is the **detected fraction**: the fraction of the detector's usable pixels (not ``NO_DATA``) that a
plain 5-sigma detection (LSST's threshold, per-pixel variance, the image smoothed by the PSF, footprints grown by
2.4 PSF sigma) puts in a footprint, measured once per detector in characterisation, after its first background fit
and with its initial Gaussian PSF (before any PSF is known: the same smoothing on every detector). It is what the
crowd does to the pipeline's own assumptions: LSST's sky is a clipped mean of the pixels *outside* the footprints,
so the larger the fraction, the fewer sky pixels are left and the more of them hold the wings of detected stars and
the light of undetected ones (the sky comes out high); and the more the 12-px calibration apertures hold neighbour
light. It does not depend on the detector's size, on the PSF-star cuts of a preset, or on how detection merges
touching sources (a count of detections saturates as they merge; their area does not). Its cost is one detection
(0.04 s on a 2k x 2k detector, 0.12-0.14 s on a 4k x 4k one).

Measured (min-max over the detectors; bench/README.md): 0.010-0.027 on ``bench/bench_matrix.py``'s rows at 6000
stars/deg^2 (``default``, ``lsst``, ``u_sparse``, ``seeing_0.5``, ``seeing_1.2``); 0.051-0.067 on the sim tests'
repositories at 60 000 stars/deg^2 with 60-s exposures, where the source-masked background trips PSF checks and the
cut moves zero points away from the truth (the mode must stay off); 0.096-0.109 at 150 000 stars/deg^2
(``crowded``), where it is needed. The default threshold, 0.08, is the geometric mean of the last two bounds: a
margin of ~1.2 on each side (the fraction grows about linearly with the density of detectable stars).

`is_crowded` decides from the mode (``"auto"``: the measure against the threshold; ``"on"`` / ``"off"``: forced).
The decision travels with the detector's products as metadata cards (`write_crowding_metadata`:
``CROWDED_FIELD``, ``CROWDING``, ``CROWDING_THRESHOLD``), which calibration and finalize read back
(`read_crowded_field`), so that every task applies the crowded-field options to the same detectors.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..core.image import Exposure
from ..core.mask_bits import planes_restored
from .detection import SourceDetectionConfig, SourceDetectionTask

__all__ = ["CROWDING_KEYS", "CrowdedFieldMode", "detected_fraction", "is_crowded", "measure_crowding",
           "read_crowded_field", "resolve_crowded_field", "write_crowding_metadata"]

#: ``"auto"``: decide from the measure; ``"on"`` / ``"off"``: forced (``"off"`` is LSST's behaviour).
CrowdedFieldMode = Literal["auto", "on", "off"]

#: The metadata cards (written with ``HIERARCH``): the decision (bool), the measure and the threshold.
CROWDING_KEYS = ("CROWDED_FIELD", "CROWDING", "CROWDING_THRESHOLD")

#: The measure's detection: LSST's 5 sigma, every footprint kept (no peak multiplier).
_DETECTION = SourceDetectionConfig(threshold_value=5.0)
#: The planes the measure's detection sets (`SourceDetectionTask.run`), restored after it.
_DETECTION_PLANES = ("DETECTED", "DETECTED_NEGATIVE", "EDGE")


def detected_fraction(detected: np.ndarray, usable: np.ndarray | None = None) -> float:
    """The fraction of the ``usable`` pixels that are ``detected`` (both boolean ``(y, x)`` arrays; all pixels
    usable by default); NaN when no pixel is usable."""
    detected = np.asarray(detected, dtype=bool)
    usable = np.ones(detected.shape, dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    n = int(np.count_nonzero(usable))
    return float(np.count_nonzero(detected & usable)) / n if n else float("nan")


def measure_crowding(exposure: Exposure) -> float:
    """The detected fraction of a background-subtracted ``exposure`` with a PSF (module docstring). The exposure is
    left as it was: the planes the detection sets (DETECTED, DETECTED_NEGATIVE, EDGE) are restored after it, kept
    one byte per pixel (`visitcal.core.mask_bits.planes_restored`) rather than as a copy of the mask; a mask
    lacking one of them is copied whole, as before."""
    mask = exposure.mask
    if all(p in mask.planes for p in _DETECTION_PLANES):
        with planes_restored(mask, _DETECTION_PLANES):
            return _detected_fraction_of(exposure)
    saved = mask.array.copy()
    try:
        return _detected_fraction_of(exposure)
    finally:
        exposure.mask.array[...] = saved


def _detected_fraction_of(exposure: Exposure, rows: int = 256) -> float:
    """`detected_fraction` of the DETECTED plane over the pixels without NO_DATA, counted a band of ``rows`` rows
    at a time (no whole-detector boolean and bit-test planes: 97 MB for a 4k detector)."""
    SourceDetectionTask(_DETECTION).run(exposure)
    mask = exposure.mask
    n_usable = n_detected = 0
    for y0 in range(0, mask.shape[0], rows):
        band = mask[y0:y0 + rows]
        detected = band.test("DETECTED")
        if "NO_DATA" in mask.planes:
            usable = ~band.test("NO_DATA")
            n_usable += int(np.count_nonzero(usable))
            n_detected += int(np.count_nonzero(detected & usable))
        else:
            n_usable += detected.size
            n_detected += int(np.count_nonzero(detected))
    return n_detected / n_usable if n_usable else float("nan")


def _forced(mode: CrowdedFieldMode) -> bool | None:
    """``"on"`` / ``"off"``: True / False; ``"auto"``: None (decided from the data)."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"crowded_field must be 'auto', 'on' or 'off', got {mode!r}")
    return None if mode == "auto" else mode == "on"


def is_crowded(mode: CrowdedFieldMode, value: float, threshold: float) -> bool:
    """The crowded-field decision: ``mode`` ``"on"`` / ``"off"`` forces it; ``"auto"`` is ``value > threshold``
    (a NaN measure is not crowded)."""
    forced = _forced(mode)
    return forced if forced is not None else bool(np.isfinite(value) and value > threshold)


def write_crowding_metadata(metadata, crowded: bool, value: float, threshold: float) -> None:
    """Record the decision, the measure and the threshold as ``HIERARCH`` cards of ``metadata``."""
    metadata["HIERARCH CROWDED_FIELD"] = bool(crowded)
    metadata["HIERARCH CROWDING"] = float(value) if np.isfinite(value) else -1.0
    metadata["HIERARCH CROWDING_THRESHOLD"] = float(threshold)


def read_crowded_field(metadata) -> bool | None:
    """The characterisation's decision from ``metadata`` (with or without ``HIERARCH``); None when absent."""
    if metadata is None:
        return None
    for name in ("CROWDED_FIELD", "HIERARCH CROWDED_FIELD"):
        if name in metadata:
            return bool(metadata[name])
    return None


def resolve_crowded_field(mode: CrowdedFieldMode, metadata) -> bool:
    """A downstream task's decision: ``"on"`` / ``"off"`` forced, ``"auto"`` the characterisation's (recorded in
    ``metadata``; not crowded when it is absent)."""
    forced = _forced(mode)
    return forced if forced is not None else bool(read_crowded_field(metadata))
