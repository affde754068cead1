"""Configuration of the visit simulator: the camera presets and `SimConfig`.

Numbers that describe LSST (pixel scale, detector size, fiducial zero points and sky, band
wavelengths) come from LSST's published system and the LSSTCam fiducials of obs_lsst
(``config/lsstCam/computeExposureSummaryStats.py``); the rest (defect rates, dither
size, aberration amplitudes) are plausible values chosen so that every effect the pipeline must
handle is present and measurable on a few detectors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BANDS",
    "BAND_WAVELENGTH_NM",
    "CAMERA_PRESETS",
    "EXTINCTION",
    "FIDUCIAL_SKY",
    "FIDUCIAL_ZERO_POINT",
    "CameraConfig",
    "SimConfig",
]

BANDS = ("u", "g", "r", "i", "z", "y")

#: Effective wavelengths of the LSST filters, nm.
BAND_WAVELENGTH_NM = {"u": 367.0, "g": 482.0, "r": 622.0, "i": 755.0, "z": 869.0, "y": 971.0}
#: Magnitude giving 1 electron per second at airmass 1 (obs_lsst's LSSTCam fiducial zero points).
FIDUCIAL_ZERO_POINT = {"u": 25.97, "g": 27.96, "r": 27.81, "i": 27.62, "z": 27.23, "y": 26.27}
#: Dark-sky level, electrons per second per 0.2" pixel (obs_lsst's LSSTCam fiducial sky).
FIDUCIAL_SKY = {"u": 0.91, "g": 9.35, "r": 19.94, "i": 32.04, "z": 48.05, "y": 54.81}
#: Atmospheric extinction, mag per airmass (typical Cerro Pachon values).
EXTINCTION = {"u": 0.48, "g": 0.21, "r": 0.13, "i": 0.10, "z": 0.08, "y": 0.08}


class CameraConfig(BaseModel):
    """A camera: identical detectors tiled on a focal plane, plus its optics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Preset name, recorded in the repository.")
    detector_width: int = Field(gt=16, le=10000, description="Detector width (x), pixels.")
    detector_height: int = Field(gt=16, le=10000, description="Detector height (y), pixels.")
    pixel_scale: float = Field(0.2, gt=0, le=10, description="Nominal pixel scale, arcsec per pixel. At most 10 "
                                                             "arcsec.")
    pixel_size_mm: float = Field(0.010, gt=0, le=1, description="Pixel pitch, mm (LSST: 10 um). At most 1 mm.")
    gap_px: int = Field(50, ge=0, le=10000, description="Gap between neighbouring detectors, pixels. At most 10000 px.")
    rotation_sigma_deg: float = Field(0.05, ge=0, description="RMS of the detectors' in-plane rotations, deg.")
    gain: float = Field(1.5, gt=0, description="Mean gain, electrons per ADU (each detector within 5%).")
    read_noise: float = Field(6.0, ge=0, description="Mean read noise, electrons (each detector within 10%).")
    full_well: float = Field(1.0e5, gt=0, description="Full well, electrons: charge above it bleeds along columns.")
    qe_sigma_mag: float = Field(0.01, ge=0, description="RMS of the detectors' throughput offsets, mag.")
    bad_columns_per_detector: int = Field(2, ge=0, le=10000, description="Bad (dead) columns per detector, whole or "
                                                                         "partial. At most 10000.")
    edge_width: int = Field(4, ge=0, le=1000, description="Border masked EDGE in every detector, pixels. At most "
                                                          "1000 px.")
    distortion_at_edge_arcsec: float = Field(
        3.0, description="Radial optical distortion (cubic in field radius) at the field edge, arcsec.")
    diameter_m: float = Field(8.36, gt=0, description="Telescope aperture diameter, m.")
    obscuration: float = Field(0.61, ge=0, lt=1, description="Linear central obscuration.")
    seed: int = Field(20261123, description="Seed of the camera's own geometry and defects (fixed per preset).")


CAMERA_PRESETS: dict[str, CameraConfig] = {
    # LSSTCam ITL science sensor: 4072 x 4000 px of 10 um at 0.2"/px (obs_lsst's camera description).
    "lsst": CameraConfig(name="lsst", detector_width=4072, detector_height=4000, gap_px=50),
    # A small camera for fast tests: same pixels, a quarter of the area.
    "small": CameraConfig(name="small", detector_width=2048, detector_height=2048, gap_px=50),
}


class SimConfig(BaseModel):
    """Everything `visitcal.sim.simulate` needs; the same config and seed give the same bytes.

    Magnitudes are AB. Object densities are per square degree brighter than the faint limit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["small", "lsst"] = Field("small", description="Camera preset (`CAMERA_PRESETS`).")
    n_visits: int = Field(2, ge=1, le=1000, description="Number of visits.")
    n_detectors: int = Field(4, ge=1, le=189, description="Number of detectors (LSSTCam has 189).")
    band: Literal["u", "g", "r", "i", "z", "y"] = Field("r", description="Band of every visit.")
    n_snaps: Literal[1, 2] = Field(1, description="Snaps per visit (2: the exposure time is split in two).")
    seed: int = Field(1, ge=0, description="Seed of everything random except the camera's geometry.")
    detector_width: int | None = Field(None, gt=16, le=10000, description="Override the preset's detector width, px. "
                                                                          "At most 10000 px: it sizes every image.")
    detector_height: int | None = Field(None, gt=16, le=10000, description="Override the preset's detector height, "
                                                                           "px. At most 10000 px: it sizes every "
                                                                           "image.")

    first_visit: int = Field(1000, ge=0, description="Id of the first visit; the others follow.")
    exposure_time: float = Field(30.0, gt=0, description="Exposure time of a visit (all snaps), s.")
    field_ra: float = Field(150.0, ge=0, lt=360, description="Field centre RA, deg.")
    field_dec: float = Field(-30.0, gt=-85, lt=85, description="Field centre Dec, deg.")
    dither_fraction: float = Field(
        0.5, ge=0, le=2, description="Dither radius as a fraction of the camera's field radius.")
    rotation_range_deg: float = Field(20.0, ge=0, le=180, description="Sky rotation drawn in +/- this, deg.")
    seeing_fwhm_range: tuple[float, float] = Field(
        (0.6, 1.0), description="Atmospheric (Kolmogorov) FWHM drawn uniformly in this range, arcsec.")
    airmass_range: tuple[float, float] = Field((1.0, 1.5), description="Airmass drawn in this range.")
    transparency_loss_max: float = Field(0.1, ge=0, le=10, description="Cloud extinction drawn in [0, this], mag. At "
                                                                       "most 10 mag.")
    sky_gradient: float = Field(0.04, ge=0, description="Sky gradient across the field radius, fraction of the sky.")

    star_density: float = Field(6000.0, ge=0, le=2e6, description="Stars per deg^2 brighter than star_mag_range[1]. "
                                                                  "At most 2e6 per deg^2 (the densest bulge fields): "
                                                                  "it sizes the scene.")
    star_slope: float = Field(0.2, ge=0, description="d log10 N(<m) / dm of the star counts.")
    star_mag_range: tuple[float, float] = Field((14.0, 24.5), description="r magnitudes of the stars.")
    refcat_mag_limit: float = Field(23.5, description="Faintest star (in `band`) of the reference catalog.")
    galaxy_density: float = Field(40000.0, ge=0, le=2e6, description="Galaxies per deg^2 brighter than "
                                                                     "galaxy_mag_range[1]. At most 2e6 per deg^2: it "
                                                                     "sizes the scene.")
    galaxy_slope: float = Field(0.35, ge=0, description="d log10 N(<m) / dm of the galaxy counts.")
    galaxy_mag_range: tuple[float, float] = Field((18.0, 24.0), description="Magnitudes (in `band`) of galaxies.")
    cosmic_ray_rate: float = Field(
        0.1, ge=0, le=100, description="Cosmic rays per cm^2 per second (~50 per LSST CCD in 30 s). At most 100 per "
                                       "cm^2 per s.")
    preliminary_wcs_max_offset: float = Field(
        2.0, gt=0, le=3600, description="Largest offset of the preliminary WCS from the truth over a detector, "
                                        "arcsec. At most 3600 arcsec.")

    @model_validator(mode="after")
    def _check_ranges(self):
        for name in ("seeing_fwhm_range", "airmass_range", "star_mag_range", "galaxy_mag_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
        if self.seeing_fwhm_range[0] <= 0 or self.airmass_range[0] < 1:
            raise ValueError("seeing must be positive and airmass at least 1")
        return self

    @property
    def camera(self) -> CameraConfig:
        """The preset's camera with the detector-size overrides applied."""
        base = CAMERA_PRESETS[self.preset]
        update = {}
        if self.detector_width is not None:
            update["detector_width"] = self.detector_width
        if self.detector_height is not None:
            update["detector_height"] = self.detector_height
        return base.model_copy(update=update) if update else base

    @property
    def visits(self) -> list[int]:
        """The visit ids: ``first_visit``, ``first_visit + 1``, ... (``n_visits`` of them)."""
        return [self.first_visit + k for k in range(self.n_visits)]

    @property
    def snap_time(self) -> float:
        """Exposure time of one snap, seconds: ``exposure_time / n_snaps``."""
        return self.exposure_time / self.n_snaps
