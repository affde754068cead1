"""base_PsfFlux: the least-squares amplitude of the PSF model at each source (LSST meas_base's plugin
of that name).

``M`` is the PSF image at the centroid (unit sum, parent-frame origin ``(model_x0, model_y0)``; a
`Psf`'s ``compute_image``), clipped to the image; pixels with a ``bad_mask_planes`` bit are dropped
(none by default, as LSST). Then

* ``instFlux = sum(M D) / sum(M^2)``; ``instFluxErr = sqrt(sum(M^2 V)) / sum(M^2)`` (LSST's: the pixel noise
  alone), or, with ``model_error`` = e > 0 (not LSST, off by default), ``sqrt(sum(M^2 V) / sum(M^2)^2 + (e
  instFlux)^2)``: the PSF model's own error (see "PSF-flux errors and the PSF model" below);
* ``_area = (sum M)^2 / sum(M^2)``; ``_chi2 = sum((D - instFlux M)^2 / V)``; ``_npixels`` (pixels used);
* ``_flag_edge`` (with ``_flag``): the stamp is clipped by the image; values still computed (as LSST);
* ``_flag_noGoodPixels`` (with ``_flag``): no usable pixel or ``sum(M^2) == 0``;
* a non-finite image or variance pixel among those used: NaN values and ``_flag``.

PSF-flux errors and the PSF model
    If the model ``M`` differs from the star's true PSF ``P`` (both of unit sum) by ``d = P - M``, the
    amplitude of a star of flux ``F`` is ``F (1 + sum(M d) / sum(M^2))``: a *fractional* error ``e`` that does
    not shrink with the star's S/N, while the pixel-noise error does (``1 / SNR`` of the flux). The aperture
    correction removes its mean over the detector (as a smooth field fitted on the stars); what is left, the
    model's error from place to place and from star to star, adds ``e F`` in quadrature: a star's pull
    ``(measured - true) / instFluxErr`` has a width ``sqrt(1 + (e SNR)^2)``, which reaches 1.1 at
    ``SNR = 0.46 / e`` (150 for e = 0.3%). ``model_error`` adds that term to ``instFluxErr``. It caps the S/N
    at ``1 / e``, so it belongs where the errors are reported (reprocessing's measurement), not where a
    PSF-flux S/N selects stars (the aperture-correction and PSF-star selectors, S/N > 200): with e = 0.5%
    no star would pass them.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ... import _core
from . import _phot_common as _c

__all__ = ["PLUGIN_NAME", "PsfFluxConfig", "flag_names", "psf_flux", "schema"]

PLUGIN_NAME = "base_PsfFlux"


class PsfFluxConfig(BaseModel):
    """Configuration of `psf_flux` (mirrors the C++ ``PsfFluxControl``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bad_mask_planes: tuple[str, ...] = Field((), description="Mask planes whose pixels are left out of the fit.")
    model_error: float = Field(0.0, ge=0.0, le=0.1, description="Not LSST: the PSF model's fractional flux "
                               "error, added in quadrature to instFluxErr as model_error * instFlux (0: off, "
                               "LSST's pixel-noise error). Caps the S/N at 1 / model_error: set it where errors "
                               "are reported, not where a PSF-flux S/N selects stars (module docstring).")

    def to_control(self, masked_image):
        """The C++ ``PsfFluxControl``, whose ``bad_mask`` is the OR of ``bad_mask_planes``' bits (0 if none).

        Parameters
        ----------
        masked_image : `MaskedImage` or `Exposure`
            The image to be measured: plane names are resolved to bits in its own mask dictionary.

        Returns
        -------
        control : `visitcal._core.PsfFluxControl`
            A new control struct; the config is unchanged.

        Raises
        ------
        UnknownMaskPlaneError
            When a plane in ``bad_mask_planes`` is not defined in the image's mask.
        """
        c = _core.PsfFluxControl()
        c.bad_mask = int(_c.plane_bits(masked_image, self.bad_mask_planes))
        if self.model_error > 0:  # 0 is the control's own default (LSST's error)
            c.model_error = float(self.model_error)
        return c


def flag_names() -> list[str]:
    """Flag suffixes, bit i <-> entry i (the C++ registry ``kPsfFluxFlagNames``)."""
    return list(_core.psf_flux_flag_names())


def schema(config: PsfFluxConfig | None = None) -> list[str]:
    """The output column names, in order."""
    p = PLUGIN_NAME
    return [f"{p}_instFlux", f"{p}_instFluxErr", f"{p}_area", f"{p}_chi2", f"{p}_npixels"] + \
        [f"{p}_{n}" for n in flag_names()]


def psf_flux(masked_image, models, model_x0, model_y0, config: PsfFluxConfig | None = None) -> dict[str, np.ndarray]:
    """PSF fluxes of many sources.

    Parameters
    ----------
    masked_image : MaskedImage or Exposure
    models : array_like, shape (n, height, width), float64
        Each source's PSF image at its centroid (unit sum), ``(y, x)``.
    model_x0, model_y0 : array_like of int, shape (n,)
        Parent-frame position of each stamp's ``[0, 0]`` pixel, in the int32 range (a stamp off the
        image is flagged ``_flag_noGoodPixels``).
    config : PsfFluxConfig, optional

    Returns
    -------
    dict
        ``base_PsfFlux_instFlux``, ``_instFluxErr`` (counts), ``_area`` (pixels), ``_chi2``, ``_npixels``
        (float64) and the flag columns.

    Raises
    ------
    ValueError
        Shapes that do not agree, non-integer offsets, offsets (or the image's ``xy0`` box) outside
        the int32 range; the message names the argument.
    """
    config = config or PsfFluxConfig()
    image, mask, variance, x0, y0 = _c.planes(masked_image)
    models = np.ascontiguousarray(models, dtype=np.float64)
    if models.ndim != 3:
        raise ValueError(f"models must be 3-D (n, height, width), got shape {models.shape}")
    n = models.shape[0]
    # int32 offsets (the C++ clips each stamp to the image in 64 bits, so its far edge may pass 2**31)
    mx0 = _c.as_int32_offsets("model_x0", model_x0, n)
    my0 = _c.as_int32_offsets("model_y0", model_y0, n)
    out = _core.measure_psf_flux(image, mask, variance, x0, y0, models, mx0, my0, config.to_control(masked_image))
    p = PLUGIN_NAME
    cols = {f"{p}_instFlux": out["instFlux"], f"{p}_instFluxErr": out["instFluxErr"], f"{p}_area": out["area"],
            f"{p}_chi2": out["chi2"], f"{p}_npixels": out["npixels"]}
    cols.update(_c.flag_columns(p, flag_names(), out["flags"]))
    return cols
