"""The sky of a simulation (stars, galaxies) and the plan of each visit.

Everything random is drawn from ``numpy.random.Generator(PCG64)`` streams keyed by
``(seed, purpose[, visit, detector, snap])`` through `numpy.random.SeedSequence`, so each image's
randomness is independent of the order (or process) in which images are rendered.

Stars: r magnitudes from cumulative counts ``N(<m) = star_density * 10**(star_slope (m - m_max))``
(a high-latitude slope), colours along an approximate main-sequence locus (g-r from a mix of
halo turn-off and disc M dwarfs; the other colours as smooth functions of g-r, after the SDSS
stellar locus of Covey et al. 2007, AJ 134, 2398), positions uniform on the sky.
Galaxies: magnitudes in the simulated band with a steeper count slope; exponential discs and
truncated Sersic profiles (n in 1.5, 2, ..., 4) with log-normal half-light radii shrinking with
magnitude, and random shapes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from astropy.table import Table
from astropy.time import Time

from ..core.photocalib import AB_REFERENCE_NJY
from .config import BANDS, EXTINCTION, FIDUCIAL_SKY, FIDUCIAL_ZERO_POINT, SimConfig
from .psf import VisitAtmosphere

__all__ = [
    "GALAXY_ID_OFFSET",
    "VisitPlan",
    "mag_to_njy",
    "make_galaxies",
    "make_stars",
    "make_visit_plans",
    "reference_catalog",
    "rng_for",
]

# Purposes of the random streams (part of each stream's key; never renumber).
(STREAM_STARS, STREAM_GALAXIES, STREAM_VISIT, STREAM_NOISE, STREAM_COSMIC_RAYS, STREAM_REFCAT,
 STREAM_PRELIM_WCS) = range(1, 8)
GALAXY_ID_OFFSET = 1_000_000_000
MJD_START = 61000.1  # 2025-11-..; visits follow every exposure time + 10 s
REFCAT_DEPTH_5SIGMA = {"u": 22.5, "g": 23.3, "r": 23.2, "i": 23.0, "z": 22.3, "y": 21.4}  # a PS1-like survey
REFCAT_FLOOR = 0.005  # fractional calibration floor of the reference survey


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for ``(seed, *key)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *map(int, key)])))


def mag_to_njy(mag):
    """AB magnitudes to fluxes in nJy: ``3.631e12 * 10**(-0.4 mag)`` (float64, shaped as ``mag``)."""
    return AB_REFERENCE_NJY * 10.0 ** (-0.4 * np.asarray(mag, dtype=np.float64))


# --- positions ----------------------------------------------------------------------------------------
def _offset(ra0: float, dec0: float, theta, azimuth):
    """Sky positions at angular distance ``theta`` (rad) and position angle ``azimuth`` (rad, N through E)."""
    d0 = math.radians(dec0)
    sin_dec = np.sin(d0) * np.cos(theta) + np.cos(d0) * np.sin(theta) * np.cos(azimuth)
    dec = np.arcsin(np.clip(sin_dec, -1, 1))
    dra = np.arctan2(np.sin(azimuth) * np.sin(theta) * np.cos(d0), np.cos(theta) - np.sin(d0) * sin_dec)
    return (ra0 + np.degrees(dra)) % 360.0, np.degrees(dec)


def _uniform_in_cap(rng, n: int, ra0: float, dec0: float, radius_deg: float):
    cos_r = math.cos(math.radians(radius_deg))
    theta = np.arccos(1.0 - rng.uniform(size=n) * (1.0 - cos_r))
    return _offset(ra0, dec0, theta, rng.uniform(0, 2 * np.pi, size=n))


def sky_radius_deg(config: SimConfig, camera) -> float:
    """Radius of the sky cap holding every visit's footprint (plus a 1' margin)."""
    return camera.field_radius_deg * (1.0 + config.dither_fraction) + 1.0 / 60.0


def cap_area_deg2(radius_deg: float) -> float:
    return 2 * math.pi * (1 - math.cos(math.radians(radius_deg))) * (180 / math.pi) ** 2


def _power_law_mags(rng, n: int, lo: float, hi: float, slope: float):
    if slope <= 0:
        return rng.uniform(lo, hi, size=n)
    umin = 10.0 ** (slope * (lo - hi))
    return hi + np.log10(rng.uniform(umin, 1.0, size=n)) / slope


def _population(rng, config: SimConfig, camera, density: float, mag_range, slope: float):
    """Positions (uniform over the simulated sky cap) and power-law magnitudes of a Poisson number
    of objects: ``density`` per deg^2 brighter than ``mag_range[1]``."""
    radius = sky_radius_deg(config, camera)
    lo, hi = mag_range
    frac = 1.0 - 10.0 ** (slope * (lo - hi)) if slope > 0 else 1.0
    n = int(rng.poisson(density * frac * cap_area_deg2(radius)))
    ra, dec = _uniform_in_cap(rng, n, config.field_ra, config.field_dec, radius)
    return ra, dec, _power_law_mags(rng, n, lo, hi, slope)


# --- stars ---------------------------------------------------------------------------------------------
def _stellar_colours(rng, n: int) -> dict[str, np.ndarray]:
    """Magnitude offsets from r for each band along the stellar locus."""
    disc = rng.uniform(size=n) < 0.4
    gr = np.where(disc, rng.normal(1.30, 0.15, n), rng.normal(0.42, 0.12, n))
    gr = np.clip(gr, -0.2, 1.6)
    ri = np.where(gr < 1.2, 0.40 * gr - 0.03, 0.45 + 2.0 * (gr - 1.2))
    ri = np.maximum(ri, -0.1) + rng.normal(0, 0.02, n)
    ug = np.clip(0.7 + 1.3 * gr, 0.7, 2.8) + rng.normal(0, 0.03, n)
    iz = 0.5 * ri + rng.normal(0, 0.02, n)
    zy = 0.25 * ri + rng.normal(0, 0.02, n)
    return {"u": gr + ug, "g": gr, "r": np.zeros(n), "i": -ri, "z": -ri - iz, "y": -ri - iz - zy}


def make_stars(config: SimConfig, camera) -> Table:
    """The true stars: ``id, ra, dec`` (deg) and ``<band>_mag`` (AB) for ugrizy."""
    rng = rng_for(config.seed, STREAM_STARS)
    ra, dec, r = _population(rng, config, camera, config.star_density, config.star_mag_range, config.star_slope)
    n = r.size
    colours = _stellar_colours(rng, n)
    table = Table()
    table["id"] = np.arange(1, n + 1, dtype=np.int64)
    table["ra"] = ra
    table["dec"] = dec
    for band in BANDS:
        table[f"{band}_mag"] = r + colours[band]
    return table


def reference_catalog(config: SimConfig, stars: Table) -> Table:
    """The reference catalog: stars brighter than ``refcat_mag_limit`` in the simulated band.

    Columns ``id, ra, dec`` (deg, exact) and ``<band>_flux, <band>_fluxErr`` in nJy for ugrizy: the
    fluxes a PS1-like reference survey measured (true flux plus Gaussian noise of the stated error:
    a 0.5% floor plus the survey's 5-sigma depth).
    """
    rng = rng_for(config.seed, STREAM_REFCAT)
    keep = np.asarray(stars[f"{config.band}_mag"]) < config.refcat_mag_limit
    out = Table()
    for name in ("id", "ra", "dec"):
        out[name] = np.asarray(stars[name])[keep]
    out["ra"].unit = out["dec"].unit = "deg"
    for band in BANDS:
        flux = mag_to_njy(np.asarray(stars[f"{band}_mag"])[keep])
        err = np.hypot(REFCAT_FLOOR * flux, mag_to_njy(REFCAT_DEPTH_5SIGMA[band]) / 5.0)
        out[f"{band}_flux"] = flux + rng.normal(size=flux.size) * err
        out[f"{band}_fluxErr"] = err
        out[f"{band}_flux"].unit = out[f"{band}_fluxErr"].unit = "nJy"
    out.meta["description"] = "visitcal.sim reference catalog (stars only; fluxes with measurement noise)"
    return out


# --- galaxies ------------------------------------------------------------------------------------------
def make_galaxies(config: SimConfig, camera) -> Table:
    """The true galaxies: ``id, ra, dec, mag`` (in the simulated band), profile and shape.

    ``sersic_n`` is 1 for exponential discs; ``hlr`` is the half-light radius in arcsec;
    ``g1, g2`` the reduced shear of the shape on the sky (east, north axes).
    """
    rng = rng_for(config.seed, STREAM_GALAXIES)
    ra, dec, mag = _population(rng, config, camera, config.galaxy_density, config.galaxy_mag_range,
                               config.galaxy_slope)
    n = mag.size
    disc = rng.uniform(size=n) < 0.65
    # n on a 0.5 grid: GalSim tabulates each Sersic index once (a new n costs ~10 ms).
    sersic_n = np.where(disc, 1.0, rng.choice([1.5, 2.0, 2.5, 3.0, 3.5, 4.0], n))
    hlr = np.clip(0.8 * 10 ** (-0.1 * (mag - 20.0)) * 10 ** rng.normal(0, 0.2, n), 0.15, 3.0)
    g = np.clip(np.abs(rng.normal(0, 0.25, n)), 0, 0.7)
    angle = rng.uniform(0, np.pi, n)
    table = Table()
    table["id"] = GALAXY_ID_OFFSET + np.arange(1, n + 1, dtype=np.int64)
    table["ra"] = ra
    table["dec"] = dec
    table["mag"] = mag
    table["sersic_n"] = sersic_n
    table["hlr"] = hlr
    table["g1"] = g * np.cos(2 * angle)
    table["g2"] = g * np.sin(2 * angle)
    return table


# --- visits --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VisitPlan:
    """Everything about one visit that is shared by its detectors."""

    visit: int
    band: str
    exposure_time: float          # s, all snaps
    n_snaps: int
    date: str                     # ISO UTC, middle of the visit
    airmass: float
    boresight_ra: float           # deg
    boresight_dec: float          # deg
    rotation_deg: float
    atmosphere: VisitAtmosphere
    transparency_loss: float      # mag of cloud extinction
    zero_point_electrons: float   # AB mag of 1 electron in the whole visit, before detector QE offsets
    sky_rate: float               # electrons / s / px at the optical axis
    sky_gradient: tuple[float, float]  # fractional sky change per field radius along focal-plane (x, y)
    sky_curvature: float          # fractional sky change at the field edge ~ h^2

    def to_row(self) -> dict:
        """A flat dict of scalars, one row of ``truth/visits.parquet``.

        The plan's scalar fields keep their names; ``sky_gradient`` becomes ``sky_gradient_x`` / ``_y``, and
        the atmosphere ``seeing_fwhm`` (arcsec), ``atm_g1``, ``atm_g2`` and ``z4_offset_nm`` ...
        ``z8_offset_nm`` (Zernike aberration offsets, nm).
        """
        a = self.atmosphere
        row = {k: getattr(self, k) for k in ("visit", "band", "exposure_time", "n_snaps", "date", "airmass",
                                             "boresight_ra", "boresight_dec", "rotation_deg",
                                             "transparency_loss", "zero_point_electrons", "sky_rate",
                                             "sky_curvature")}
        row["sky_gradient_x"], row["sky_gradient_y"] = self.sky_gradient
        row["seeing_fwhm"], row["atm_g1"], row["atm_g2"] = a.seeing_fwhm, a.g1, a.g2
        for k, v in zip((4, 5, 6, 7, 8), a.aberration_offsets_nm):
            row[f"z{k}_offset_nm"] = v
        return row

    @classmethod
    def from_row(cls, row) -> VisitPlan:
        """Inverse of `to_row`: ``row`` is a mapping (or table row) with those keys (KeyError otherwise)."""
        g = lambda k: row[k]
        atm = VisitAtmosphere(float(g("seeing_fwhm")), float(g("atm_g1")), float(g("atm_g2")),
                              tuple(float(g(f"z{k}_offset_nm")) for k in (4, 5, 6, 7, 8)),
                              float(g("rotation_deg")))
        return cls(visit=int(g("visit")), band=str(g("band")), exposure_time=float(g("exposure_time")),
                   n_snaps=int(g("n_snaps")), date=str(g("date")), airmass=float(g("airmass")),
                   boresight_ra=float(g("boresight_ra")), boresight_dec=float(g("boresight_dec")),
                   rotation_deg=float(g("rotation_deg")), atmosphere=atm,
                   transparency_loss=float(g("transparency_loss")),
                   zero_point_electrons=float(g("zero_point_electrons")), sky_rate=float(g("sky_rate")),
                   sky_gradient=(float(g("sky_gradient_x")), float(g("sky_gradient_y"))),
                   sky_curvature=float(g("sky_curvature")))


def make_visit_plans(config: SimConfig, camera) -> list[VisitPlan]:
    """Draw the conditions of every visit of ``config`` (deterministic in ``config.seed`` and the visit id).

    Per visit: a dither of the boresight uniform over a disc of ``dither_fraction`` times the camera's
    field radius, a sky rotation in ``+/- rotation_range_deg``, airmass and seeing FWHM (arcsec) uniform in
    their ranges, a small atmospheric shear and optics aberrations (Z4-Z8, nm), a cloud loss in
    ``[0, transparency_loss_max]`` mag, the sky from the fiducial dark sky (within +/- 0.3 mag) with a
    random gradient, and a date (UTC) every exposure time + 10 s.

    Parameters
    ----------
    config : `SimConfig`
        The simulation's configuration.
    camera : `SimCamera`
        The camera (its field radius sets the dither scale, its pixel scale the sky per pixel).

    Returns
    -------
    plans : list of `VisitPlan`
        One per visit id of ``config.visits``, in order. ``zero_point_electrons`` is the fiducial zero
        point plus ``2.5 log10(exposure_time)``, minus the extinction at the airmass and the cloud loss.
    """
    plans = []
    band = config.band
    for k, visit in enumerate(config.visits):
        rng = rng_for(config.seed, STREAM_VISIT, visit)
        dither = camera.field_radius_deg * config.dither_fraction * math.sqrt(rng.uniform())
        ra, dec = _offset(config.field_ra, config.field_dec, math.radians(dither), rng.uniform(0, 2 * math.pi))
        rotation = float(rng.uniform(-config.rotation_range_deg, config.rotation_range_deg))
        airmass = float(rng.uniform(*config.airmass_range))
        seeing = float(rng.uniform(*config.seeing_fwhm_range))
        g1, g2 = (float(v) for v in rng.normal(0, 0.01, 2))
        offsets = tuple(float(v) for v in rng.normal(0, [60.0, 30.0, 30.0, 30.0, 30.0]))
        loss = float(rng.uniform(0, config.transparency_loss_max))
        zp = (FIDUCIAL_ZERO_POINT[band] + 2.5 * math.log10(config.exposure_time)
              - EXTINCTION[band] * (airmass - 1.0) - loss)
        sky = FIDUCIAL_SKY[band] * (camera.config.pixel_scale / 0.2) ** 2 * 10 ** (0.4 * rng.uniform(-0.3, 0.3))
        angle = rng.uniform(0, 2 * math.pi)
        amp = config.sky_gradient * rng.uniform(0.5, 1.0)
        mjd = MJD_START + k * (config.exposure_time + 10.0) / 86400.0
        date = Time(mjd, format="mjd", scale="utc").isot
        plans.append(VisitPlan(
            visit=visit, band=band, exposure_time=config.exposure_time, n_snaps=config.n_snaps, date=date,
            airmass=airmass, boresight_ra=float(ra), boresight_dec=float(dec), rotation_deg=rotation,
            atmosphere=VisitAtmosphere(seeing, g1, g2, offsets, rotation), transparency_loss=loss,
            zero_point_electrons=zp, sky_rate=float(sky),
            sky_gradient=(amp * math.cos(angle), amp * math.sin(angle)), sky_curvature=0.02))
    return plans
