"""Footprint files: a catalog's (heavy) footprints keyed by source id (the ``source_footprints`` product).

Layout (`visitcal.core.footprint.footprints_to_hdus`): a primary HDU, then FOOTPRINTS, SPANS, PEAKS and
HEAVY binary tables; written atomically with checksums, so the same footprints give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits

from ..core.footprint import footprints_from_hdus, footprints_to_hdus
from . import FitsReadError
from ..core.atomic import atomic_write_fits

__all__ = ["read_footprints", "write_footprints"]


def write_footprints(path, footprints, ids=None, *, overwrite: bool = False) -> Path:
    """Write ``footprints`` (Footprint or HeavyFootprint, one per id) to the FITS file ``path``."""
    primary = fits.PrimaryHDU()
    primary.header["VCPROD"] = ("footprints", "visitcal product")
    hdus = fits.HDUList([primary, *footprints_to_hdus(footprints, ids)])
    atomic_write_fits(hdus, path, overwrite=overwrite)
    return Path(path)


def read_footprints(path):
    """Read a file written by `write_footprints`: ``(ids, footprints)``; `FitsReadError` when malformed."""
    path = Path(path)
    try:
        with fits.open(path, checksum=True) as hdul:
            by_name = {hdu.name: hdu for hdu in hdul[1:]}
            return footprints_from_hdus(by_name, where=str(path))
    except FileNotFoundError:
        raise FitsReadError(f"{path}: no such file", path=path) from None
    except (OSError, ValueError, KeyError, AttributeError, TypeError, IndexError, AssertionError) as err:
        # astropy and a table without its columns raise all of these on a malformed file
        if isinstance(err, FitsReadError):
            raise
        raise FitsReadError(f"{path}: {type(err).__name__ + ': ' if isinstance(err, KeyError) else ''}{err}",
                            path=path) from None
