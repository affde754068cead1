"""Export a visitcal `visitcal.psf.pixel_grid.PixelGridPsf` as a Piff file (``piff.read`` loads it).

The Piff model is a ``SimplePSF`` of a ``PixelGrid`` (the same ``model_size`` x ``model_size`` grid, Lanczos(n)
with ``conserve_dc``) and a ``BasisPolynomial`` of the same total order in the field coordinates ``(u, v)``.
The file's WCS is an affine map that makes ``(u, v)`` visitcal's scaled position:

    u = (x - cx) / h,   v = (y - cy) / h,   h = max(hx, hy),

with ``cx, hx`` (``cy, hy``) the centre and half-width of the PSF's ``box`` in x (y); visitcal's polynomial
in ``((x - cx) / hx, (y - cy) / hy)`` is re-expanded exactly in ``(u, v)`` (a term ``u^p v^q`` takes the factor
``(h / hx)^p (h / hy)^q``), and the grid step in ``(u, v)`` is ``sampling_size / h``, so one grid step is
``sampling_size`` image pixels along both axes. Positions are visitcal's (0-based parent-frame pixels).

What agrees and what does not:

- the grid Piff interpolates at any position equals `PixelGridPsf.grid_at` to rounding (the polynomial is
  re-expanded, not refitted);
- the drawn images agree to 1e-7 of the peak (GalSim's ``conserve_dc`` Lanczos against visitcal's
  renormalised weights), both normalised by the model's flux, not by the stamp, on the grid's support
  (pixels within ``(model_size // 2) * sampling_size`` px of the centre along both axes) and beyond it, where
  both carry the Lanczos kernel's side lobes (up to ~2.5e-4 of the peak for a 25 x 0.8 px grid; visitcal's
  drawing extends to the kernel's reach as GalSim's ``InterpolatedImage`` does, while both fits use the
  pixels on the support only).

Needs piff and galsim (``pip install piff``), imported only here. The PSF object is read duck-typed
(``coefficients``, ``sampling_size``, ``interpolant_order``, ``spatial_order``, ``box``, ``model_size``).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["pixel_grid_psf_to_piff", "write_piff"]


def _import_piff():
    try:
        import galsim
        import piff
    except ImportError as err:
        raise ImportError("exporting a PSF to Piff needs piff and galsim (optional dependencies of visitcal): "
                          "pip install piff") from err
    return piff, galsim


def _visitcal_terms(order: int) -> list[tuple[int, int]]:
    """visitcal's polynomial terms ``(power of x, power of y)``: by total degree, then increasing power of y."""
    return [(d - q, q) for d in range(order + 1) for q in range(d + 1)]


def pixel_grid_psf_to_piff(psf, *, chipnum: int = 0):
    """The ``piff.SimplePSF`` that draws as ``psf`` (see the module docstring for the exact agreement).

    Parameters
    ----------
    psf : `visitcal.psf.pixel_grid.PixelGridPsf`
    chipnum : int
        The chip number of the Piff model's WCS (``psf.wcs = {chipnum: ...}``).

    Returns
    -------
    piff_psf : ``piff.SimplePSF``

    Raises
    ------
    ImportError
        piff or galsim is not installed.
    ValueError
        The PSF's coefficients do not match its spatial order, or its box is empty.
    """
    piff, galsim = _import_piff()
    coeffs = np.asarray(psf.coefficients, np.float64)
    order, m = int(psf.spatial_order), int(psf.model_size)
    terms = _visitcal_terms(order)
    if coeffs.shape != (len(terms), m, m):
        raise ValueError(f"coefficients of shape {coeffs.shape} do not fit spatial order {order} "
                         f"({len(terms)} terms) and model size {m}")
    xmin, xmax, ymin, ymax = (float(v) for v in psf.box)
    cx, cy, hx, hy = 0.5 * (xmin + xmax), 0.5 * (ymin + ymax), 0.5 * (xmax - xmin), 0.5 * (ymax - ymin)
    if not (hx > 0 and hy > 0):
        raise ValueError(f"the PSF's box {psf.box} is empty")
    h = max(hx, hy)
    wcs = galsim.AffineTransform(1.0 / h, 0.0, 0.0, 1.0 / h, origin=galsim.PositionD(cx, cy))
    model = piff.PixelGrid(scale=float(psf.sampling_size) / h, size=m,
                           interp=galsim.Lanczos(int(psf.interpolant_order), conserve_dc=True), centered=True)
    interp = piff.BasisPolynomial(order=order, keys=("u", "v"))
    # Piff's basis: u^i v^j at [i, j] of an (order + 1)^2 table, those with i + j <= order, row-major
    column = {ij: k for k, ij in enumerate(zip(*(a.tolist() for a in np.nonzero(interp._mask))))}
    if len(column) != len(terms):
        raise ValueError(f"Piff's order-{order} basis has {len(column)} terms, visitcal's {len(terms)}")
    q = np.zeros((m * m, len(terms)))
    for t, (p, r) in enumerate(terms):
        q[:, column[(p, r)]] = coeffs[t].ravel() * (h / hx) ** p * (h / hy) ** r
    interp.q = q
    out = piff.SimplePSF(model, interp)
    out.wcs = {int(chipnum): wcs}
    out.pointing = None
    return out


def write_piff(psf, path: str | os.PathLike, *, chipnum: int = 0) -> None:
    """Write ``psf`` (a `visitcal.psf.pixel_grid.PixelGridPsf`) as a Piff file that ``piff.read(path)`` loads.

    Parameters
    ----------
    psf : `visitcal.psf.pixel_grid.PixelGridPsf`
    path : str or os.PathLike
        The FITS file to write (overwritten).
    chipnum : int
        The chip number of the Piff model (``piff_psf.draw(x, y, chipnum=...)``).

    Raises
    ------
    ImportError
        piff or galsim is not installed.
    ValueError
        See `pixel_grid_psf_to_piff`.
    """
    pixel_grid_psf_to_piff(psf, chipnum=chipnum).write(os.fspath(path))
