"""Export of a visitcal PixelGridPsf as a Piff file: ``piff.read`` loads it and draws what visitcal draws."""

from __future__ import annotations

import numpy as np
import pytest

from visitcal.psf.pixel_grid import PixelGridPsf


def _psf(sigma=1.5, model_size=25, sampling=0.8, order=2, box=(-0.5, 2047.5, -0.5, 4095.5)):
    """A grid that has fallen to ~1e-9 of its peak at its border (a grid wide enough for its PSF), varying in
    size and ellipticity with x and y (every term of the polynomial non-zero)."""
    g = (np.arange(model_size) - model_size // 2) * sampling
    gx, gy = np.meshgrid(g, g)
    terms = [(d - q, q) for d in range(order + 1) for q in range(d + 1)]
    coeffs = []
    for k, (p, r) in enumerate(terms):
        base = np.exp(-0.5 * (gx**2 + gy**2) / sigma**2)
        coeffs.append(base if k == 0 else 0.03 * base * ((gx**2 - gy**2) / sigma**2 + 0.5 * (p - r) * gx * gy))
    return PixelGridPsf(np.array(coeffs), sampling_size=sampling, interpolant_order=11, spatial_order=order,
                        box=box, draw_size=25, average_position=(1000.0, 2000.0))


def test_piff_file_draws_what_visitcal_draws(tmp_path):
    piff = pytest.importorskip("piff", reason="the Piff export needs piff (pip install piff)")
    import galsim

    from visitcal.io.piff_export import write_piff

    psf = _psf()
    path = tmp_path / "psf.piff"
    write_piff(psf, path)
    loaded = piff.read(str(path))
    for x, y in [(10.0, 20.0), (1500.3, 3900.7), (1000.5, 3.2), (2047.0, 0.0), (300.25, 2048.75)]:
        # the grid Piff interpolates is visitcal's (the polynomial re-expanded, not refitted)
        star = piff.Star.makeTarget(x=x, y=y, wcs=loaded.wcs[0], pointing=None)
        grid = loaded.interp.interpolate(star).fit.params.reshape(psf.model_size, psf.model_size)
        np.testing.assert_allclose(grid, psf.grid_at(x, y), rtol=0, atol=1e-12 * psf.grid_at(x, y).max())
        # the images, both normalised by the model's flux (not by the stamp), agree to 1e-6 of the peak, on the
        # grid's support and beyond it, where both carry the Lanczos(11) kernel's side lobes (~2.5e-4 of the peak)
        ours = psf.compute_image(x, y)
        box = psf.compute_image_bbox(x, y)
        image = galsim.ImageD(galsim.BoundsI(box.min_x, box.max_x, box.min_y, box.max_y))
        loaded.draw(x, y, image=image)
        theirs = image.array
        reach = (psf.model_size // 2) * psf.sampling_size + 1e-9
        px = np.arange(box.min_x, box.max_x + 1) - x
        py = np.arange(box.min_y, box.max_y + 1) - y
        support = (np.abs(py)[:, None] <= reach) & (np.abs(px)[None, :] <= reach)
        assert support.sum() >= 19 * 19  # the 25 x 0.8 px grid covers 19 x 19 of the 25 x 25 pixels
        assert np.abs(theirs - ours).max() < 1e-6 * ours.max()
        assert 1e-5 * ours.max() < np.abs(ours[~support]).max() < 5e-4 * ours.max()  # the side lobes are there


def test_piff_export_rejects_inconsistent_models():
    pytest.importorskip("piff", reason="the Piff export needs piff (pip install piff)")
    from visitcal.io.piff_export import pixel_grid_psf_to_piff

    class Bad:
        coefficients = np.zeros((5, 3, 3))
        spatial_order, model_size, sampling_size, interpolant_order = 2, 3, 1.0, 3
        box = (0.0, 10.0, 0.0, 10.0)

    with pytest.raises(ValueError, match="do not fit spatial order 2"):
        pixel_grid_psf_to_piff(Bad())
