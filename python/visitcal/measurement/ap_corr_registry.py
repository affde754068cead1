"""The names of the fluxes that aperture corrections apply to (LSST meas_base ``apCorrRegistry``).

A plugin whose fluxes should be aperture-corrected registers its result name here. meas_base registers
``base_PsfFlux`` and ``base_GaussianFlux``; the extension packages register ``modelfit_CModel`` (and its
``_initial``, ``_exp``, ``_dev`` parts), ``ext_photometryKron_KronFlux`` and the ext_convolved / ext_gaap
results. ``base_CompensatedTophatFlux`` and ``base_CircularApertureFlux_*`` are *not* registered: the
former is normalised by `visitcal.measurement.apply_ap_corr.NormalizedCalibrationFluxTask` instead, the latter are
the reference. A name is only used where the catalog has its ``_instFlux`` (and, for measuring,
``_instFluxErr`` and ``_flag``) columns, so registering names of plugins visitcal does not run is
harmless.
"""

from __future__ import annotations

__all__ = ["add_ap_corr_name", "get_ap_corr_name_set"]

_NAMES: list[str] = [
    "base_PsfFlux",
    "base_GaussianFlux",
    "modelfit_CModel",
    "modelfit_CModel_initial",
    "modelfit_CModel_exp",
    "modelfit_CModel_dev",
    "ext_photometryKron_KronFlux",
]


def add_ap_corr_name(name: str) -> None:
    """Register ``name`` (a flux result prefix such as ``"base_PsfFlux"``) for aperture correction."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"an aperture-correction name must be a non-empty string, got {name!r}")
    if name not in _NAMES:
        _NAMES.append(name)


def get_ap_corr_name_set() -> tuple[str, ...]:
    """The registered names, in registration order (deterministic, unlike LSST's set)."""
    return tuple(_NAMES)
