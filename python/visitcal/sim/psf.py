"""The simulator's true PSF: Kolmogorov atmosphere convolved with aberrated optics.

``PSF(visit, detector, x, y) = Kolmogorov(fwhm_v).shear(g_v)  (*)  Optics(aberrations(fp(x, y)))``

- The atmosphere is fixed on the sky for a visit: FWHM drawn in `SimConfig.seeing_fwhm_range`
  and a small shear (wind shake, guiding).
- The optics are GalSim's ``OpticalPSF`` of an 8.36 m annular pupil (obscuration 0.61) whose
  Zernike wavefront (Noll indices) varies over the focal plane as third-order (Seidel) optics
  does: field curvature (Z4 ~ h^2), astigmatism (Z5, Z6 ~ h^2 cos 2a, h^2 sin 2a), coma
  (Z7, Z8 ~ h along the field direction), with a static defocus and spherical term and per-visit
  misalignments (constant Z4-Z8 offsets). ``h`` is the focal-plane radius over the field radius.
  The optical PSF is fixed to the camera, so it turns with the camera on the sky.
- The PSF is drawn through the *local* Jacobian of the true WCS at (x, y), convolved with the
  pixel response (GalSim's default), exactly as every star and galaxy of the simulation is.

The pupil is sampled so that the optical PSF is computed on a 1.2" field (``pupil_plane_scale =
lambda / 1.2"``, padded 2x): about 160^2 pupil pixels in r. A finer sampling changes the PSF size by
< 0.3% at these aberrations but costs 5x; since this same function renders the images *and*
defines the truth, the truth is exact either way.

Positions are pixel positions in the detector's parent frame (pixel centres at integers).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from ..core.geom import Box2I
from ..psf.models import Moments, Psf
from ..core.wcs import local_cd_matrix

__all__ = ["OpticsDesign", "TruePsf", "VisitAtmosphere", "import_galsim"]

OPTICAL_FIELD_ARCSEC = 1.2


def import_galsim():
    """GalSim, or an ImportError saying how to get it."""
    try:
        import galsim
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("visitcal.sim needs GalSim: pip install 'visitcal[sim]'") from err
    return galsim


@dataclasses.dataclass(frozen=True)
class OpticsDesign:
    """Wavefront of the optics as a function of field position, nm (Noll-indexed Zernikes).

    Values are chosen so that the PSF size changes by 1-5% and its ellipticity by ~0.05 across a
    detector away from the field centre (``|e|`` up to ~0.08 at the edge): a PSF that visibly varies.
    """

    defocus_static: float = 100.0      # Z4 everywhere
    field_curvature: float = 300.0     # Z4 at the field edge (~ h^2), relative to the centre
    astigmatism: float = 220.0         # |Z5, Z6| at the field edge (~ h^2)
    coma: float = 130.0                # |Z7, Z8| at the field edge (~ h)
    spherical: float = 40.0            # Z11 everywhere

    def wavefront_nm(self, hx, hy, offsets=(0.0, 0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
        """Zernike coefficients Z0..Z11 (Z0..Z3 zero) in nm at normalised field position (hx, hy).

        ``offsets`` are the visit's misalignment terms added to Z4..Z8.
        """
        h2 = hx * hx + hy * hy
        z = np.zeros(12)
        z[4] = self.defocus_static + self.field_curvature * h2 + offsets[0]
        z[5] = self.astigmatism * (hx * hx - hy * hy) + offsets[1]
        z[6] = self.astigmatism * 2.0 * hx * hy + offsets[2]
        z[7] = self.coma * hy + offsets[3]  # Noll Z7: coma along y
        z[8] = self.coma * hx + offsets[4]  # Noll Z8: coma along x
        z[11] = self.spherical
        return z


@dataclasses.dataclass(frozen=True)
class VisitAtmosphere:
    """What of the PSF belongs to one visit: seeing, atmospheric shear, optics misalignment, rotation."""

    seeing_fwhm: float            # arcsec
    g1: float
    g2: float
    aberration_offsets_nm: tuple[float, float, float, float, float]  # Z4..Z8
    rotation_deg: float           # the camera's rotation on the sky


class TruePsf(Psf):
    """The true PSF of one (visit, detector), drawable at any pixel position.

    Parameters
    ----------
    camera : SimCamera
    detector_id : int
    atmosphere : VisitAtmosphere
    wcs : astropy.wcs.WCS
        The detector's true WCS for the visit (its local Jacobian maps the sky profile to pixels).
    band : str
    optics : OpticsDesign
    size : int
        Default stamp size (odd) of `compute_image` and `compute_kernel_image`, pixels.

    Notes
    -----
    Images are normalised to unit sum over the stamp (the profile's flux beyond a 41 px stamp is
    below 0.5% at 0.8" seeing); ``draw(..., normalize=False)`` gives the raw pixel-integrated
    profile of unit total flux, i.e. exactly what a star of flux 1 adds to the image.
    Thread-safe: nothing is cached across calls except GalSim's own aperture cache.
    """

    def __init__(self, camera, detector_id: int, atmosphere: VisitAtmosphere, wcs, band: str, *,
                 optics: OpticsDesign | None = None, size: int = 41):
        from .config import BAND_WAVELENGTH_NM

        if size < 3 or size % 2 == 0:
            raise ValueError(f"size must be odd and >= 3, got {size}")
        galsim = import_galsim()
        self.camera = camera
        self.detector_id = int(detector_id)
        self.atmosphere = atmosphere
        self.wcs = wcs
        self.band = band
        self.optics = optics if optics is not None else OpticsDesign()
        self.size = int(size)
        self.wavelength_nm = BAND_WAVELENGTH_NM[band]
        cfg = camera.config
        lam_m = self.wavelength_nm * 1e-9
        with warnings.catch_warnings():
            # GalSim asks for a finer pupil sampling than our 1.2" field needs (module docstring).
            warnings.simplefilter("ignore", galsim.GalSimWarning)
            self._aperture = galsim.Aperture(
                diam=cfg.diameter_m, lam=self.wavelength_nm, obscuration=cfg.obscuration,
                pupil_plane_size=2.0 * cfg.diameter_m,
                pupil_plane_scale=lam_m / math.radians(OPTICAL_FIELD_ARCSEC / 3600.0))
            _ = self._aperture.illuminated  # evaluated lazily by GalSim; the check that warns runs here
        # The optical image's Fourier extent is known exactly (the pupil cutoff D / lambda) and its
        # real-space field is the 1.2" computed: giving both saves GalSim a search per object (20%).
        arcsec = math.radians(1.0 / 3600.0)
        self._optical_kw = {"_force_stepk": 2 * math.pi / OPTICAL_FIELD_ARCSEC,
                            "_force_maxk": 2 * math.pi * cfg.diameter_m / lam_m * arcsec}
        self._atm = galsim.Kolmogorov(fwhm=atmosphere.seeing_fwhm).shear(g1=atmosphere.g1, g2=atmosphere.g2)
        # focal plane (x_fp, y_fp) -> sky (east, north): parity then the visit's rotation, as the WCS
        # (`SimCamera.cd_matrix` without the detector rotation, which the focal-plane frame already has).
        c, s = math.cos(math.radians(atmosphere.rotation_deg)), math.sin(math.radians(atmosphere.rotation_deg))
        self._fp_to_sky = np.diag([-1.0, 1.0]) @ np.array([[c, -s], [s, c]])
        self._tilt_matrix = _tilt_compensation(cfg.diameter_m, cfg.obscuration)

    def __reduce__(self):
        # Rebuilt from its arguments, the WCS as 17-digit header text: astropy pickles a WCS through a
        # header of fewer digits, which moves the PSF's local Jacobian in the last bits.
        from ..core.wcs import wcs_to_header

        return (_make_true_psf, (self.camera, self.detector_id, self.atmosphere,
                                 wcs_to_header(self.wcs).tostring(), self.band, self.optics, self.size))

    # --- the profile --------------------------------------------------------------------------------
    def aberrations(self, x, y) -> np.ndarray:
        """Zernike coefficients (Noll Z0..Z11) in waves at pixel (x, y)."""
        fx, fy = self.camera.pixel_to_focal_plane(self.detector_id, x, y)
        r = self.camera.field_radius_mm
        nm = self.optics.wavefront_nm(float(fx) / r, float(fy) / r, self.atmosphere.aberration_offsets_nm)
        waves = nm / self.wavelength_nm
        waves[2:4] = self._tilt_matrix @ waves  # keep the PSF's light centroid on the true position
        return waves

    def profile(self, x: float, y: float):
        """The GalSim profile (unit flux) on the sky at pixel (x, y), in arcsec, (east, north) axes."""
        galsim = import_galsim()
        cfg = self.camera.config
        optical = galsim.OpticalPSF(lam=self.wavelength_nm, diam=cfg.diameter_m, aper=self._aperture,
                                    aberrations=self.aberrations(x, y), suppress_warning=True,
                                    **self._optical_kw)
        m = self._fp_to_sky
        return galsim.Convolve(self._atm, optical.transform(m[0, 0], m[0, 1], m[1, 0], m[1, 1]))

    def jacobian(self, x, y) -> np.ndarray:
        """Local d(east, north)/d(x, y) of the true WCS in arcsec per pixel; (2, 2) or (n, 2, 2)."""
        return 3600.0 * local_cd_matrix(self.wcs, x, y)

    @staticmethod
    def galsim_wcs(jacobian):
        """A ``galsim.JacobianWCS`` from a (2, 2) Jacobian ``[[du/dx, du/dy], [dv/dx, dv/dy]]`` in arcsec per
        pixel (e.g. one matrix of `jacobian`). Needs GalSim (an ImportError saying how to install it)."""
        galsim = import_galsim()
        j = np.asarray(jacobian, dtype=float)
        return galsim.JacobianWCS(j[0, 0], j[0, 1], j[1, 0], j[1, 1])

    # --- drawing ------------------------------------------------------------------------------------
    def compute_image_bbox(self, x: float, y: float, size: int | None = None) -> Box2I:
        """The stamp of `compute_image`: ``size`` pixels square, centred on the pixel holding (x, y)."""
        n = self.size if size is None else int(size)
        ix, iy = math.floor(x + 0.5), math.floor(y + 0.5)
        h = n // 2
        return Box2I(ix - h, iy - h, ix - h + n - 1, iy - h + n - 1)

    def draw(self, x: float, y: float, *, center=None, size: int | None = None, normalize: bool = True):
        """The pixelised PSF of position (x, y) drawn centred at ``center`` (default (x, y)).

        Returns ``(array, bbox)``: a (size, size) float64 array indexed (y, x) and its `Box2I`.
        """
        galsim = import_galsim()
        cx, cy = (x, y) if center is None else center
        box = self.compute_image_bbox(cx, cy, size)
        image = galsim.ImageD(box.width, box.height, xmin=box.min_x, ymin=box.min_y,
                              wcs=self.galsim_wcs(self.jacobian(x, y)))
        self.profile(x, y).drawImage(image=image, center=galsim.PositionD(cx, cy))
        array = image.array.astype(np.float64, copy=True)
        if normalize:
            array /= array.sum()
        return array, box

    def compute_image(self, x: float, y: float, size: int | None = None) -> np.ndarray:
        """Unit-sum PSF image centred at (x, y) on `compute_image_bbox` (LSST's ``computeImage``)."""
        return self.draw(x, y, size=size)[0]

    def compute_kernel_image(self, x: float, y: float, size: int | None = None) -> np.ndarray:
        """Unit-sum PSF image of position (x, y) centred on the middle pixel (``computeKernelImage``)."""
        n = self.size if size is None else int(size)
        return self.draw(x, y, center=(float(n // 2), float(n // 2)), size=n)[0]

    def compute_shape(self, x: float, y: float, size: int | None = None) -> Moments:
        """Adaptive second moments ``(xx, yy, xy)`` in pixel^2 of the kernel image (HSM)."""
        galsim = import_galsim()
        kernel = self.compute_kernel_image(x, y, size)
        return Moments(*moments_of(galsim.ImageD(kernel)))

    @property
    def average_position(self) -> tuple[float, float]:
        return self.camera[self.detector_id].detector.bbox.center

    def __repr__(self) -> str:
        a = self.atmosphere
        return (f"TruePsf(detector={self.detector_id}, band={self.band!r}, seeing={a.seeing_fwhm:.3f}\", "
                f"g=({a.g1:+.4f}, {a.g2:+.4f}))")


def _make_true_psf(camera, detector_id, atmosphere, wcs_header: str, band, optics, size):
    from astropy.io import fits

    from ..core.wcs import read_wcs

    wcs = read_wcs(fits.Header.fromstring(wcs_header), where="pickled TruePsf")
    return TruePsf(camera, detector_id, atmosphere, wcs, band, optics=optics, size=size)


def _tilt_compensation(diameter: float, obscuration: float) -> np.ndarray:
    """(2, 12) matrix giving the Z2, Z3 tilts (waves) that cancel the mean wavefront slope of Z4..Z11.

    The light centroid of a Fraunhofer PSF is ``lambda`` times the pupil-averaged wavefront gradient
    (waves per metre), linear in the Zernike coefficients. Coma (Z7, Z8) over an *annular* pupil
    has a net slope, which would move every star by up to ~0.15 px from where the WCS puts it;
    the tilts remove it, as a telescope's pointing model and the WCS fit would. Noll's circular
    Zernikes on the outer radius, as GalSim's OpticalPSF uses by default.
    """
    galsim = import_galsim()
    radius = diameter / 2.0
    g = np.linspace(-radius, radius, 401)
    u, v = np.meshgrid(g, g)
    rho = np.hypot(u, v)
    pupil = (rho <= radius) & (rho >= obscuration * radius)
    u, v = u[pupil], v[pupil]
    matrix = np.zeros((2, 12))
    for j in range(4, 12):
        coef = np.zeros(12)
        coef[j] = 1.0
        z = galsim.zernike.Zernike(coef, R_outer=radius)
        # Z2 = 2 rho cos(theta) and Z3 = 2 rho sin(theta) have slopes 2 / R along x and y.
        matrix[0, j] = -np.mean(z.gradX(u, v)) * radius / 2.0
        matrix[1, j] = -np.mean(z.gradY(u, v)) * radius / 2.0
    return matrix


def moments_of(image) -> tuple[float, float, float]:
    """HSM adaptive moments ``(ixx, iyy, ixy)`` (pixel^2) of a GalSim image."""
    galsim = import_galsim()
    res = galsim.hsm.FindAdaptiveMom(image, strict=True)
    sigma2 = res.moments_sigma**2
    e1, e2 = res.observed_shape.e1, res.observed_shape.e2
    root = math.sqrt(max(1.0 - e1 * e1 - e2 * e2, 1e-300))
    return sigma2 * (1 + e1) / root, sigma2 * (1 - e1) / root, sigma2 * e2 / root
