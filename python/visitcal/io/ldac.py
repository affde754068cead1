"""SExtractor LDAC catalogues (the PSFEx input format).

The PSF candidates cut from their ``VIGNET`` stamps are made by `visitcal.psf.vignets.candidates_from_vignets`.

An LDAC file (``FITS_LDAC``) holds, after an empty primary HDU, pairs of binary tables:
``LDAC_IMHEAD``, whose single cell is the image header as 80-character cards, and ``LDAC_OBJECTS``,
the catalogue. DES and other SExtractor/PSFEx users keep their PSF stars this way, with a
``VIGNET`` column of stamps (e.g. 63 x 63, background subtracted, ADU; -1e30 marks pixels with no data).

Conventions (SExtractor): ``X_IMAGE``, ``XWIN_IMAGE`` ... are 1-based, pixel centres at integers, so
visitcal's 0-based parent position (afw's convention) is ``x = X_IMAGE - 1``. The ``VIGNET`` centre
pixel ``[n // 2, n // 2]`` (``[31, 31]`` of 63 x 63) is the 1-based pixel ``(nint(X_IMAGE),
nint(Y_IMAGE))``, i.e. the 0-based pixel ``nint(X_IMAGE) - 1``; arrays are ``(y, x)`` as FITS stores them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from . import FitsReadError

__all__ = ["read_ldac"]


def read_ldac(path) -> tuple[fits.Header, Table]:
    """Read an LDAC catalogue: the image header of ``LDAC_IMHEAD`` and the ``LDAC_OBJECTS`` table.

    Parameters
    ----------
    path : str or path-like
        A ``FITS_LDAC`` file. With several header/objects pairs (several extensions), the first pair is read.

    Returns
    -------
    header : `astropy.io.fits.Header`
        The cards of the ``LDAC_IMHEAD`` cell (the image header SExtractor ran on).
    table : `astropy.table.Table`
        ``LDAC_OBJECTS``, columns as stored (``VIGNET`` is (n, ny, nx)).

    Raises
    ------
    FitsReadError
        (a `ValueError`) The file is not LDAC (no ``LDAC_IMHEAD`` / ``LDAC_OBJECTS`` extension); the message names it.
    """
    path = Path(path)
    try:
        hdul = fits.open(path, memmap=False)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise FitsReadError(f"{path} is not an LDAC catalogue: not a FITS file ({err})", path=path) from None
    with hdul:
        names = [h.name for h in hdul]
        if "LDAC_IMHEAD" not in names or "LDAC_OBJECTS" not in names:
            raise FitsReadError(f"{path} is not an LDAC catalogue: it has extensions {names}, "
                                "expected LDAC_IMHEAD and LDAC_OBJECTS", path=path)
        imhead = hdul["LDAC_IMHEAD"]
        if not isinstance(imhead, fits.BinTableHDU) or len(imhead.columns) != 1 or len(imhead.data) < 1:
            raise FitsReadError(f"{path}: LDAC_IMHEAD is not a one-cell binary table", path=path,
                                hdu="LDAC_IMHEAD")
        cell = imhead.data[imhead.columns[0].name][0]
        cards = np.atleast_1d(cell)
        if cards.ndim == 1 and cards.size == 1 and len(str(cards[0])) > 80:  # stored without a TDIM
            text = str(cards[0])
        else:
            text = "".join(str(c).ljust(80) for c in cards.ravel())
        header = fits.Header.fromstring(text)
        table = Table(hdul["LDAC_OBJECTS"].data, copy=True)
    return header, table
