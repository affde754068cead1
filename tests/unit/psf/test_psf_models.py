"""The PSF interface (DESIGN.md §3): analytic truths for GaussianPsf and FixedImagePsf, the C++
view of Python-implemented models, persistence."""

import math
import pickle

import numpy as np
import pytest
from visitcal import _core
from visitcal.core.geom import Box2I
from visitcal.core.image import Exposure
from visitcal.io import read_exposure, write_exposure
from visitcal.core.persistence import component_from_table, component_to_table
from visitcal.psf.models import FixedImagePsf, GaussianPsf, Moments, Psf


def _centroid(image, box):
    yy, xx = np.mgrid[box.min_y:box.max_y + 1, box.min_x:box.max_x + 1]
    return (image * xx).sum() / image.sum(), (image * yy).sum() / image.sum()


def _sampled_gaussian(box, cx, cy, sigma):
    yy, xx = np.mgrid[box.min_y:box.max_y + 1, box.min_x:box.max_x + 1]
    g = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / sigma**2)
    return g / g.sum()


@pytest.mark.parametrize("x, y", [(10.0, 20.0), (5.3, 7.8), (-3.49, 100.51), (1000.2, 0.0)])
def test_gaussian_psf_image_is_the_sampled_gaussian_at_the_position(x, y):
    psf = GaussianPsf(1.7)
    image = psf.compute_image(x, y)
    box = psf.compute_image_bbox(x, y)
    assert image.shape == (box.height, box.width) == (psf.size, psf.size) == (19, 19)
    # the stamp's middle pixel holds (x, y)
    assert (box.min_x + box.max_x) // 2 == math.floor(x + 0.5)
    assert (box.min_y + box.max_y) // 2 == math.floor(y + 0.5)
    np.testing.assert_allclose(image, _sampled_gaussian(box, x, y, 1.7), rtol=0, atol=1e-15)
    assert image.sum() == pytest.approx(1.0, abs=1e-14)
    cx, cy = _centroid(image, box)
    assert (cx, cy) == (pytest.approx(x, abs=1e-5), pytest.approx(y, abs=1e-5))


def test_gaussian_psf_kernel_shape_and_aperture_flux():
    psf = GaussianPsf(2.0, size=41, average_position=(100.0, 200.0))
    kernel = psf.compute_kernel_image(3.0, 4.0)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=0)
    np.testing.assert_allclose(kernel, kernel.T, atol=0)
    assert np.unravel_index(kernel.argmax(), kernel.shape) == (20, 20)
    assert psf.compute_shape(0.0, 0.0) == Moments(4.0, 4.0, 0.0)
    assert psf.compute_shape(0.0, 0.0).determinant_radius == pytest.approx(2.0)
    assert psf.average_position == (100.0, 200.0)
    assert psf.core.average_position() == (100.0, 200.0)


def test_fixed_image_psf_matches_its_kernel_and_shifts_with_lanczos():
    truth = GaussianPsf(2.0)
    psf = FixedImagePsf(3.0 * truth.compute_kernel_image(0, 0), average_position=(7.0, 8.0))
    # integer positions: the normalised kernel itself
    np.testing.assert_allclose(psf.compute_image(12.0, -4.0), truth.compute_kernel_image(0, 0), atol=1e-16)
    np.testing.assert_allclose(psf.compute_kernel_image(1.0, 2.0).sum(), 1.0, atol=1e-14)
    # sub-pixel positions: Lanczos-5 reproduces the shifted Gaussian to 2.5e-3 of its peak (the
    # windowed sinc's accuracy; see FixedImagePsf's notes)
    for x, y in [(5.3, 7.8), (0.5, -0.5), (10.1, 3.45)]:
        image = psf.compute_image(x, y)
        box = psf.compute_image_bbox(x, y)
        expected = truth.compute_image(x, y)
        assert np.abs(image - expected).max() < 2.5e-3 * expected.max()
        assert image.sum() == pytest.approx(1.0, abs=1e-14)
        cx, cy = _centroid(image, box)
        assert abs(cx - x) < 0.012 and abs(cy - y) < 0.012


@pytest.mark.parametrize("bad, match", [
    (np.ones((4, 4)), "odd"), (np.ones((3, 5)), "square"), (np.zeros((3, 3)), "positive sum"),
    (np.full((3, 3), np.nan), "non-finite"), (np.ones(9), "square"),
])
def test_fixed_image_psf_rejects_bad_kernels(bad, match):
    with pytest.raises(ValueError, match=match):
        FixedImagePsf(bad)


def test_gaussian_psf_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sigma"):
        GaussianPsf(0.0)
    with pytest.raises(ValueError, match="size"):
        GaussianPsf(1.0, size=4)
    with pytest.raises(ValueError, match="finite"):
        GaussianPsf(1.0).compute_image(np.nan, 0.0)
    with pytest.raises(ValueError, match="average_position"):
        GaussianPsf(1.0, average_position=3.0)


@pytest.mark.parametrize("psf", [GaussianPsf(1.3, average_position=(1.5, 2.5)),
                                 FixedImagePsf(np.outer([1, 3, 5, 3, 1], [1, 2, 4, 2, 1]) * 0.1)])
def test_psf_pickles_and_persists_losslessly(psf, tmp_path):
    assert pickle.loads(pickle.dumps(psf)) == psf
    assert component_from_table(component_to_table(psf)) == psf
    exposure = Exposure.from_arrays(np.zeros((20, 30), np.float32), psf=psf)
    write_exposure(exposure, tmp_path / "e.fits")
    back = read_exposure(tmp_path / "e.fits").psf
    assert type(back) is type(psf) and back == psf
    np.testing.assert_array_equal(back.compute_image(3.3, 4.4), psf.compute_image(3.3, 4.4))
    assert repr(psf).startswith(type(psf).__name__)


class _NumpyGaussianPsf(Psf):
    """A model written in Python: C++ reaches it through Psf.core."""

    def __init__(self, sigma, size=15):
        self.sigma, self.size = sigma, size

    def compute_image(self, x, y):
        return _sampled_gaussian(self.compute_image_bbox(x, y), x, y, self.sigma)

    def compute_kernel_image(self, x, y):
        h = self.size // 2
        return _sampled_gaussian(Box2I(-h, -h, h, h), 0.0, 0.0, self.sigma)

    @property
    def average_position(self):
        return (3.0, 4.0)


def test_python_psf_is_callable_from_cpp():
    psf = _NumpyGaussianPsf(1.5)
    core = psf.core
    assert isinstance(core, _core.Psf)
    image, x0, y0 = core.compute_image(10.4, 20.6)
    box = psf.compute_image_bbox(10.4, 20.6)
    assert (x0, y0) == (box.min_x, box.min_y)
    np.testing.assert_array_equal(image, psf.compute_image(10.4, 20.6))
    kernel, kx0, ky0 = core.compute_kernel_image(0.0, 0.0)
    assert (kx0, ky0) == (-7, -7)
    assert core.average_position() == (3.0, 4.0)
    # the C++ GaussianPsf and the Python one agree to rounding
    np.testing.assert_allclose(image, GaussianPsf(1.5, size=15).compute_image(10.4, 20.6), atol=1e-16)
