"""PSF candidates from the ``VIGNET`` stamps of a SExtractor LDAC catalogue (the PSFEx input format).

DES and other SExtractor/PSFEx users keep their PSF stars as ``VIGNET`` stamps (e.g. 63 x 63,
background subtracted, ADU; -1e30 marks pixels with no data); `visitcal.io.ldac.read_ldac` reads the
catalogue and `candidates_from_vignets` turns its rows into `PsfCandidates` for a PSF determiner.

Conventions (SExtractor): ``X_IMAGE``, ``XWIN_IMAGE`` ... are 1-based, pixel centres at integers, so
visitcal's 0-based parent position is ``x = X_IMAGE - 1``. The ``VIGNET`` centre pixel
``[n // 2, n // 2]`` (``[31, 31]`` of 63 x 63) is the 1-based pixel ``(nint(X_IMAGE), nint(Y_IMAGE))``,
i.e. the 0-based pixel ``nint(X_IMAGE) - 1``; arrays are ``(y, x)`` as FITS stores them.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from ..core.image import MaskPlanes
from .candidates import PsfCandidates

__all__ = ["VIGNET_NO_DATA", "candidates_from_vignets"]

#: SExtractor's value for vignet pixels outside the image or flagged (any value at or below it).
VIGNET_NO_DATA = -1e30


def _header_float(header, key: str, what: str) -> float:
    if header is None or key not in header:
        raise ValueError(f"{what} not given and the header has no {key} card")
    return float(header[key])


def _column(table, name: str) -> np.ndarray:
    if name not in table.colnames:
        raise ValueError(f"table has no column {name!r} (columns: {', '.join(table.colnames)})")
    return np.asarray(table[name], dtype=np.float64)


def candidates_from_vignets(table, header: fits.Header | None = None, *, stamp_size: int = 27,
                            gain: float | None = None, sky_sigma: float | None = None,
                            max_flags: int | None = None) -> PsfCandidates:
    """PSF candidates from the ``VIGNET`` stamps of an LDAC table (see the module docstring).

    Parameters
    ----------
    table : `astropy.table.Table`
        ``LDAC_OBJECTS`` with columns ``VIGNET`` (n, V, V) (V odd), ``X_IMAGE``, ``Y_IMAGE`` (stamp
        placement) and ``XWIN_IMAGE``, ``YWIN_IMAGE`` (the centroid), 1-based SExtractor pixels.
    header : `astropy.io.fits.Header`, optional
        Image header giving ``GAINA`` (e-/ADU) and ``SKYSIGMA`` (ADU) when ``gain`` / ``sky_sigma`` are not given.
    stamp_size : int
        Odd side of the stamps, cut around the vignet centre; at most V.
    gain : float, optional
        Electrons per ADU for the Poisson part of the variance.
    sky_sigma : float, optional
        Sky noise, ADU per pixel.
    max_flags : int, optional
        Keep only the rows with ``FLAGS <= max_flags`` (needs a ``FLAGS`` column); default all rows.

    Returns
    -------
    `PsfCandidates`
        ``image`` float32 (vignet pixels; no-data pixels set to 0), ``mask`` int32 (``NO_DATA`` on the
        no-data pixels), ``variance`` float32 ``sky_sigma**2 + max(image, 0) / gain`` (ADU^2; no-data
        pixels get ``sky_sigma**2`` but are masked), ``xy0`` the 0-based parent pixel of ``[k, 0, 0]``.
        The table: ``x``, ``y`` = ``XWIN_IMAGE - 1``, ``YWIN_IMAGE - 1``; ``index`` the row;
        ``psf_max_value`` the stamp maximum; ``used`` True; ``footprint_index`` -1; ``skip_reason`` "".
        Rows dropped by ``max_flags`` are absent from the table.
    """
    if stamp_size <= 0 or stamp_size % 2 == 0:
        raise ValueError(f"stamp_size must be odd and positive, got {stamp_size}")
    gain = _header_float(header, "GAINA", "gain") if gain is None else float(gain)
    sky_sigma = _header_float(header, "SKYSIGMA", "sky_sigma") if sky_sigma is None else float(sky_sigma)
    if not gain > 0:
        raise ValueError(f"gain must be positive, got {gain}")
    if not sky_sigma >= 0:
        raise ValueError(f"sky_sigma must be >= 0, got {sky_sigma}")
    if "VIGNET" not in table.colnames:
        raise ValueError("table has no VIGNET column")
    vig = np.asarray(table["VIGNET"], dtype=np.float32)
    if vig.ndim != 3 or vig.shape[1] != vig.shape[2] or vig.shape[1] % 2 == 0:
        raise ValueError(f"VIGNET must be (n, V, V) with V odd, got shape {vig.shape}")
    if stamp_size > vig.shape[1]:
        raise ValueError(f"stamp_size {stamp_size} exceeds the vignet size {vig.shape[1]}")
    rows = np.arange(len(table), dtype=np.int64)
    if max_flags is not None:
        rows = rows[_column(table, "FLAGS")[rows] <= max_flags]
    vig = vig[rows]
    x_img, y_img = _column(table, "X_IMAGE")[rows], _column(table, "Y_IMAGE")[rows]
    xwin, ywin = _column(table, "XWIN_IMAGE")[rows], _column(table, "YWIN_IMAGE")[rows]

    v_half, s_half = vig.shape[1] // 2, stamp_size // 2
    cut = slice(v_half - s_half, v_half + s_half + 1)
    image = np.ascontiguousarray(vig[:, cut, cut])
    no_data = ~np.isfinite(image) | (image <= VIGNET_NO_DATA)
    image[no_data] = 0.0
    mask = np.where(no_data, np.int32(1 << MaskPlanes()["NO_DATA"]), np.int32(0)).astype(np.int32)
    variance = (sky_sigma**2 + np.maximum(image, 0.0) / gain).astype(np.float32)
    # SExtractor's nint is round-half-up; the vignet centre is 1-based pixel nint(X_IMAGE).
    cx = np.floor(x_img + 0.5).astype(np.int64) - 1
    cy = np.floor(y_img + 0.5).astype(np.int64) - 1
    xy0 = np.stack([cx - s_half, cy - s_half], axis=1).astype(np.int32)
    n = rows.size
    peak = image.reshape(n, -1).max(axis=1).astype(np.float64) if n else np.zeros(0)
    out_table = {
        "index": rows,
        "x": xwin - 1.0,
        "y": ywin - 1.0,
        "footprint_index": np.full(n, -1, np.int64),
        "psf_max_value": peak,
        "used": np.ones(n, bool),
        "skip_reason": np.full(n, "", dtype="<U13"),
    }
    return PsfCandidates(image, mask, variance, xy0, out_table)
