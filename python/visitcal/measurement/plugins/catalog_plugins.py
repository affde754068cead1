"""Measurement plugins that need no pixels: positions on the sky and the focal plane, the pixel-area
Jacobian, footprint areas and the two extendedness classifiers (LSST meas_base's plugins of those names).

Each is whole-column numpy arithmetic (or one vectorised astropy WCS call) over the catalog, so it
stays in Python; the per-source pixel work is in C++ (`visitcal.measurement.single_frame_measurement`).
"""

from __future__ import annotations

import math

import numpy as np

from ...core.wcs import local_cd_matrix, pixel_to_sky

__all__ = [
    "NOMINAL_PIXEL_SCALE_ARCSEC",
    "classification_extendedness",
    "classification_size_extendedness",
    "fp_position",
    "jacobian",
    "local_calibration",
    "sky_coord",
]

#: base_Jacobian's reference pixel scale, arcsec (LSST's configured ``pixelScale``: LSSTCam's 0.2").
NOMINAL_PIXEL_SCALE_ARCSEC = 0.2


def sky_coord(wcs, x, y) -> dict[str, np.ndarray]:
    """``coord_ra``, ``coord_dec`` (radians, as afw tables convert to astropy) at pixel (x, y).

    NaN where the position is NaN or there is no WCS.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ra = np.full(x.shape, np.nan)
    dec = np.full(x.shape, np.nan)
    ok = np.isfinite(x) & np.isfinite(y)
    if wcs is not None and ok.any():
        r, d = pixel_to_sky(wcs, x[ok], y[ok])
        ra[ok] = np.radians(np.asarray(r, dtype=np.float64))
        dec[ok] = np.radians(np.asarray(d, dtype=np.float64))
    return {"coord_ra": ra, "coord_dec": dec}


def fp_position(detector, x, y) -> dict[str, np.ndarray]:
    """``base_FPPosition_x/_y`` (focal-plane mm) from the detector's centre, rotation and pixel pitch.

    The detector's pixel (x, y) lies at ``centre + R(rotation) ((x, y) - bbox centre) * pitch``.
    ``_flag`` and ``_missingDetector_flag`` are set (values NaN) when the detector geometry is unknown.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = {"base_FPPosition_x": np.full(x.shape, np.nan), "base_FPPosition_y": np.full(x.shape, np.nan)}
    missing = (detector is None or not all(math.isfinite(v) for v in detector.focal_plane_center)
               or not math.isfinite(detector.pixel_size_mm))
    if not missing:
        cx, cy = detector.bbox.center
        c, s = math.cos(math.radians(detector.rotation)), math.sin(math.radians(detector.rotation))
        dx, dy = (x - cx) * detector.pixel_size_mm, (y - cy) * detector.pixel_size_mm
        out["base_FPPosition_x"] = detector.focal_plane_center[0] + c * dx - s * dy
        out["base_FPPosition_y"] = detector.focal_plane_center[1] + s * dx + c * dy
    bad = ~(np.isfinite(out["base_FPPosition_x"]) & np.isfinite(out["base_FPPosition_y"]))
    out["base_FPPosition_flag"] = bad
    out["base_FPPosition_missingDetector_flag"] = np.full(x.shape, missing)
    return out


def jacobian(wcs, x, y, *, pixel_scale: float = NOMINAL_PIXEL_SCALE_ARCSEC) -> dict[str, np.ndarray]:
    """``base_Jacobian_value``: the local pixel area over ``pixel_scale^2`` (as meas_base's base_Jacobian)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    value = np.full(x.shape, np.nan)
    ok = np.isfinite(x) & np.isfinite(y)
    if wcs is not None and ok.any():
        cd = local_cd_matrix(wcs, x[ok], y[ok]) * 3600.0  # arcsec / px
        cd = cd.reshape(-1, 2, 2)
        area = np.abs(cd[:, 0, 0] * cd[:, 1, 1] - cd[:, 0, 1] * cd[:, 1, 0])
        value[ok] = area / pixel_scale**2
    return {"base_Jacobian_value": value, "base_Jacobian_flag": ~np.isfinite(value)}


def classification_size_extendedness(xx, yy, psf_xx, psf_yy) -> dict[str, np.ndarray]:
    """``base_ClassificationSizeExtendedness_value`` = 1 - exp(-chi^2 / 2), with
    ``chi^2 = ((T - T_psf) / sqrt(T_psf))^2`` and T = Ixx + Iyy (as meas_base's plugin)."""
    t = np.asarray(xx, dtype=np.float64) + np.asarray(yy, dtype=np.float64)
    t_psf = np.asarray(psf_xx, dtype=np.float64) + np.asarray(psf_yy, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2 = (t - t_psf) ** 2 / t_psf
        value = 1.0 - np.exp(-0.5 * chi2)
    bad = ~np.isfinite(value)
    value[bad] = np.nan
    return {"base_ClassificationSizeExtendedness_value": value, "base_ClassificationSizeExtendedness_flag": bad}


def classification_extendedness(psf_flux, psf_flux_flag, model_flux, model_flux_flag,
                                *, flux_ratio: float = 0.95) -> dict[str, np.ndarray]:
    """``base_ClassificationExtendedness_value``: 0 when ``flux_ratio * modelFlux < psfFlux``, else 1;
    NaN with ``_flag`` when either flux is NaN or flagged (as meas_base's plugin)."""
    psf_flux = np.asarray(psf_flux, dtype=np.float64)
    model_flux = np.asarray(model_flux, dtype=np.float64)
    bad = (~np.isfinite(psf_flux) | ~np.isfinite(model_flux) | np.asarray(psf_flux_flag, bool)
           | np.asarray(model_flux_flag, bool))
    value = np.where(flux_ratio * model_flux < psf_flux, 0.0, 1.0)
    value[bad] = np.nan
    return {"base_ClassificationExtendedness_value": value, "base_ClassificationExtendedness_flag": bad}


def local_calibration(cat, photo_calib, wcs) -> dict[str, np.ndarray]:
    """LSST's post-calculation plugins of a calibrated catalog, at each slot centroid: ``base_LocalPhotoCalib``
    (nJy per count) and ``base_LocalPhotoCalibErr`` (the PhotoCalib's calibration error), and
    ``base_LocalWcs_CDMatrix_{1,2}_{1,2}`` (the local linear WCS, radians per pixel). NaN where the centroid is
    not finite, and for the columns of a missing ``photo_calib`` / ``wcs``."""
    from ..source_selector import resolve_column

    x = np.asarray(cat[resolve_column(cat, "slot_Centroid_x")], np.float64)
    y = np.asarray(cat[resolve_column(cat, "slot_Centroid_y")], np.float64)
    n = len(cat)
    ok = np.isfinite(x) & np.isfinite(y)
    out = {}
    local = np.full(n, np.nan)
    if photo_calib is not None and ok.any():
        local[ok] = photo_calib.local_calibration(x[ok], y[ok])
    out["base_LocalPhotoCalib"] = local
    out["base_LocalPhotoCalibErr"] = np.where(ok & (photo_calib is not None),
                                              photo_calib.calibration_err if photo_calib is not None else np.nan,
                                              np.nan)
    cd = np.full((n, 2, 2), np.nan)
    if wcs is not None and ok.any():
        cd[ok] = np.radians(local_cd_matrix(wcs, x[ok], y[ok]))
    for i in range(2):
        for j in range(2):
            out[f"base_LocalWcs_CDMatrix_{i + 1}_{j + 1}"] = cd[:, i, j]
    return out
