"""The typed failures of astrometric calibration (`AstrometryError` and the fitters' `AstrometryFitError`),
shared by the fitters, the WCS check and `AstrometryTask`."""

from __future__ import annotations

__all__ = ["AstrometryError", "AstrometryFitError"]


class AstrometryError(RuntimeError):
    """An astrometric calibration that could not be made (LSST's ``BadAstrometryFit`` family).

    Like the other typed failures of visitcal's algorithms (`visitcal.psf.determiner.PsfDeterminerError`,
    `visitcal.detection.background.BackgroundError`), a `RuntimeError`: the detector fails, the visit goes on.
    """


def _rebuild_fit_error(message, reason, details):
    return AstrometryFitError(message, reason=reason, **details)


class AstrometryFitError(AstrometryError):
    """A WCS fitter (`FitTanSipWcsTask`, `FitAffineWcsTask`) could not fit a WCS, or the WCS failed
    `check_wcs`.

    Attributes
    ----------
    reason : str
        ``"too_few_pairs"`` (``n_pairs``, ``n_required``), ``"non_finite"`` (``argument``, ``n_bad``),
        ``"scatter_too_large"`` (``scatter_arcsec``, ``limit_arcsec``), ``"degenerate"`` (the sources do
        not span two dimensions), ``"unsupported_wcs"`` (the affine fit's preliminary WCS is not TAN /
        TAN-SIP), ``"fold_over"`` (``n_bad``) or ``"area_change"`` (``ratio``).
    details : dict
        The numbers named above.
    """

    def __init__(self, message: str, *, reason: str, **details):
        super().__init__(message)
        self.reason = reason
        self.details = dict(details)
        for k, v in self.details.items():
            setattr(self, k, v)

    def __reduce__(self):
        return (_rebuild_fit_error, (self.args[0], self.reason, self.details))
