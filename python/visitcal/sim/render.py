"""Rendering one detector of one visit: objects, sky, noise, defects, ISR-like masks.

The order follows the physics of a CCD exposure, then what ISR leaves behind:

1. the noiseless scene in electrons: each star is the true PSF (`TruePsf.profile`) and each galaxy
   its profile convolved with it, drawn by GalSim at its true pixel position through the local
   Jacobian of the true WCS; both snaps of a visit see the same scene, each half of it;
2. per snap: the sky (a quadratic over the focal plane, held exactly as an order-2 Chebyshev field
   per detector), Poisson noise, cosmic-ray tracks, charge above full well bled along the columns
   (conserving charge until it reaches the detector edge), Gaussian read noise, conversion to ADU;
3. ISR's view: SAT on pixels at full well, BAD on the camera's dead columns, both interpolated
   along rows (INTRP, as ISR interpolates defects and saturation), EDGE on a border, variance
   ``max(image, 0) / gain + (read_noise / gain)^2`` in ADU^2. Cosmic rays are left in the pixels and
   listed only in the truth (finding them is the pipeline's job).

Images are in ADU, float32, pixel centres at integers, with the *preliminary* WCS attached (what
a camera model gives before astrometric calibration); the true WCS is in the truth.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from astropy.table import Table

from ..core.chebyshev import ChebyshevBoundedField, ChebyshevBoundedFieldControl
from ..core.image import Exposure, Mask, MaskedImage, VisitInfo
from ..core.photocalib import AB_REFERENCE_NJY
from ..core.wcs import local_cd_matrix, pixel_to_sky, sky_to_pixel
from .camera import perturb_wcs
from .psf import TruePsf, import_galsim
from .scene import (
    STREAM_COSMIC_RAYS,
    STREAM_NOISE,
    STREAM_PRELIM_WCS,
    mag_to_njy,
    rng_for,
)

__all__ = ["LSST_OBSERVATORY", "DetectorTruth", "SnapImage", "render_detector"]

#: Rubin Observatory: east longitude (deg), latitude (deg), elevation (m).
LSST_OBSERVATORY = (-70.749417, -30.244639, 2663.0)


@dataclasses.dataclass
class SnapImage:
    """One rendered snap: the post-ISR exposure and its own truth."""

    snap: int
    exposure: Exposure
    background: ChebyshevBoundedField     # true sky, ADU per pixel
    cosmic_rays: Table                    # x, y, electrons, adu of every pixel a cosmic ray hit


@dataclasses.dataclass
class DetectorTruth:
    """Truth of one (visit, detector), shared by its snaps."""

    visit: int
    detector: int
    true_wcs: object
    preliminary_wcs: object
    preliminary_offset: dict              # shift / rotation / scale and measured offsets, arcsec
    zero_point: float                     # AB mag of 1 ADU in the visit image (all snaps summed)
    calibration: float                    # nJy per ADU in the visit image
    objects: Table
    snaps: list[SnapImage]


def _stamp_radius_star(flux_e: float) -> int:
    # The Kolmogorov wing falls as r^-11/3: a radius growing as flux^0.3 keeps the light beyond the
    # stamp below ~0.2% of the star's Poisson noise for unsaturated stars.
    return int(min(max(12.0 * (max(flux_e, 1.0) / 1e4) ** 0.3, 12.0), 150.0))


def _stamp_radius_galaxy(hlr_arcsec: float, seeing: float, pixel_scale: float) -> int:
    return int(min(max(math.ceil((4.0 * hlr_arcsec + 1.5 * seeing) / pixel_scale), 12), 100))


def _galaxy_profile(galsim, n: float, hlr: float, g1: float, g2: float):
    if n == 1.0:
        prof = galsim.Exponential(half_light_radius=hlr)
    else:
        # truncated at 5 hlr with the flux defined inside the truncation: the truth flux is exact.
        prof = galsim.Sersic(n=n, half_light_radius=hlr, trunc=5.0 * hlr, flux_untruncated=False)
    return prof.shear(g1=g1, g2=g2)


def preliminary_wcs(config, plan, detector, true_wcs):
    """The upstream WCS guess of a detector and what it got wrong (`SimConfig.preliminary_wcs_max_offset`).

    Shift, rotation and scale error are drawn so that their sum at the detector's corners stays
    below the limit: a shift of up to half of it, a rotation and a scale error worth 30% and 20% of
    it at the corner. The offsets are then measured on a 9 x 9 grid over the detector.
    """
    rng = rng_for(config.seed, STREAM_PRELIM_WCS, plan.visit, detector.id)
    limit = config.preliminary_wcs_max_offset
    bbox = detector.bbox
    half_diag = 0.5 * math.hypot(bbox.width, bbox.height) * config.camera.pixel_scale  # arcsec
    radius = 0.5 * limit * math.sqrt(rng.uniform())
    angle = rng.uniform(0, 2 * math.pi)
    shift = (radius * math.cos(angle), radius * math.sin(angle))
    rotation = float(rng.uniform(-0.3, 0.3) * limit / half_diag)  # rad
    scale_error = float(rng.uniform(-0.2, 0.2) * limit / half_diag)
    prelim = perturb_wcs(true_wcs, bbox, shift_arcsec=shift, rotation_rad=rotation, scale_error=scale_error)
    gx, gy = np.meshgrid(np.linspace(bbox.min_x - 0.5, bbox.max_x + 0.5, 9),
                         np.linspace(bbox.min_y - 0.5, bbox.max_y + 0.5, 9))
    sep = _separation_arcsec(*pixel_to_sky(true_wcs, gx.ravel(), gy.ravel()),
                             *pixel_to_sky(prelim, gx.ravel(), gy.ravel()))
    cx, cy = bbox.center
    center = float(_separation_arcsec(*pixel_to_sky(true_wcs, cx, cy), *pixel_to_sky(prelim, cx, cy)))
    # The rotation and scale stated are those of the local linear maps at the centre: moving CRVAL
    # to place the centre turns the local north by ~1e-6 rad relative to the drawn rotation.
    ratio = local_cd_matrix(prelim, cx, cy) @ np.linalg.inv(local_cd_matrix(true_wcs, cx, cy))
    info = {"prelim_shift_east": shift[0], "prelim_shift_north": shift[1],
            "prelim_rotation": math.atan2(ratio[1, 0] - ratio[0, 1], ratio[0, 0] + ratio[1, 1]),
            "prelim_scale_error": math.sqrt(abs(np.linalg.det(ratio))) - 1.0,
            "prelim_center_offset": center, "prelim_max_offset": float(np.max(sep))}
    return prelim, info


def _separation_arcsec(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2))
    # haversine: accurate at milliarcsecond separations
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600.0


def _select(wcs, bbox, ra, dec, margin: float, pixel_scale: float):
    """Indices and pixel positions of sky positions within ``margin`` px of ``bbox``."""
    cx, cy = bbox.center
    ra0, dec0 = (float(v) for v in pixel_to_sky(wcs, cx, cy))
    reach = (0.5 * math.hypot(bbox.width, bbox.height) + margin) * pixel_scale * 1.05  # arcsec, 5% for distortion
    near = np.nonzero(_separation_arcsec(ra0, dec0, ra, dec) < reach)[0]
    if near.size == 0:
        return near, np.zeros(0), np.zeros(0)
    x, y = sky_to_pixel(wcs, np.asarray(ra)[near], np.asarray(dec)[near])
    inside = ((x > bbox.min_x - 0.5 - margin) & (x < bbox.max_x + 0.5 + margin)
              & (y > bbox.min_y - 0.5 - margin) & (y < bbox.max_y + 0.5 + margin))
    return near[inside], x[inside], y[inside]


def _sky_field(camera, plan, detector_id: int, adu_per_electron: float, snap_time: float) -> ChebyshevBoundedField:
    """The sky of one snap in ADU per pixel, exactly (a quadratic in focal-plane position)."""
    bbox = camera[detector_id].detector.bbox
    gx, gy = np.meshgrid(np.linspace(bbox.min_x, bbox.max_x, 7), np.linspace(bbox.min_y, bbox.max_y, 7))
    fx, fy = camera.pixel_to_focal_plane(detector_id, gx.ravel(), gy.ravel())
    r = camera.field_radius_mm
    rel = (1.0 + plan.sky_gradient[0] * fx / r + plan.sky_gradient[1] * fy / r
           + plan.sky_curvature * (fx * fx + fy * fy) / (r * r))
    values = plan.sky_rate * snap_time * adu_per_electron * rel
    return ChebyshevBoundedField.fit(bbox, gx.ravel(), gy.ravel(), values,
                                     control=ChebyshevBoundedFieldControl(order_x=2, order_y=2, triangular=True))


def _cosmic_rays(rng, shape, pixel_size_mm: float, rate: float, snap_time: float):
    """Flat pixel indices and electrons deposited by the cosmic-ray tracks of one snap."""
    ny, nx = shape
    area_cm2 = nx * ny * (pixel_size_mm / 10.0) ** 2
    n = int(rng.poisson(rate * area_cm2 * snap_time))
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    x0 = rng.uniform(-0.5, nx - 0.5, n)
    y0 = rng.uniform(-0.5, ny - 0.5, n)
    length = np.minimum(rng.exponential(10.0, n), 60.0)   # px; muons at all incidences, short events
    angle = rng.uniform(0, np.pi, n)
    per_px = rng.uniform(800.0, 5000.0, n)                # electrons per pixel of track
    step = 0.1
    counts = np.maximum(np.ceil(length / step).astype(np.int64), 1)
    track = np.repeat(np.arange(n), counts)
    t = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)) * step
    px = np.floor(x0[track] + t * np.cos(angle[track]) + 0.5).astype(np.int64)
    py = np.floor(y0[track] + t * np.sin(angle[track]) + 0.5).astype(np.int64)
    charge = per_px[track] * np.where(counts[track] > 1, step, 1.0)
    ok = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    flat = py[ok] * nx + px[ok]
    index, inverse = np.unique(flat, return_inverse=True)
    return index, np.bincount(inverse, weights=charge[ok])


def _bleed(electrons: np.ndarray, full_well: float) -> None:
    """Spill charge above full well along columns, half up and half down, in place.

    Charge moves pixel to pixel filling each to full well (a sequential scan along the column,
    vectorised over the affected columns); charge reaching the detector edge is lost.
    """
    cols = np.nonzero((electrons > full_well).any(axis=0))[0]
    if cols.size == 0:
        return
    sub = electrons[:, cols]
    excess = np.maximum(sub - full_well, 0.0)
    np.minimum(sub, full_well, out=sub)
    half = 0.5 * excess
    for order in (range(sub.shape[0]), range(sub.shape[0] - 1, -1, -1)):  # upwards, then downwards
        carry = np.zeros(cols.size)
        for row in order:
            carry += half[row]
            value = sub[row] + carry
            np.minimum(value, full_well, out=sub[row])
            carry = value - sub[row]
            carry[carry < 0] = 0.0
    electrons[:, cols] = sub


def _interpolate_rows(image: np.ndarray, bad: np.ndarray) -> None:
    """Replace ``bad`` pixels by linear interpolation between the nearest good pixels of their row.

    Works on each run of columns holding bad pixels (plus one column either side), so a dead
    column costs three columns of work, not the whole image.
    """
    cols = np.nonzero(bad.any(axis=0))[0]
    if cols.size == 0:
        return
    breaks = np.nonzero(np.diff(cols) > 2)[0]
    for lo, hi in zip(np.r_[cols[0], cols[breaks + 1]], np.r_[cols[breaks], cols[-1]]):
        x0, x1 = max(lo - 1, 0), min(hi + 2, image.shape[1])
        rows = np.nonzero(bad[:, lo:hi + 1].any(axis=1))[0]
        sub, m = image[rows, x0:x1], bad[rows, x0:x1]
        nx = x1 - x0
        idx = np.arange(nx)
        left = np.maximum.accumulate(np.where(~m, idx, -1), axis=1)
        right = np.minimum.accumulate(np.where(~m, idx, nx)[:, ::-1], axis=1)[:, ::-1]
        r = np.arange(rows.size)[:, None]
        vl = sub[r, np.clip(left, 0, nx - 1)]
        vr = sub[r, np.clip(right, 0, nx - 1)]
        has_l, has_r = left >= 0, right < nx
        w = np.where(has_l & has_r, (idx - left) / np.maximum(right - left, 1), np.where(has_l, 0.0, 1.0))
        value = np.where(has_l | has_r, (1 - w) * vl + w * vr, 0.0)
        image[rows, x0:x1] = np.where(m, value, sub)


def render_detector(config, camera, plan, detector_id: int, stars: Table, galaxies: Table, *,
                    optics=None) -> DetectorTruth:
    """Render every snap of one (visit, detector) and gather its truth (module docstring)."""
    galsim = import_galsim()
    sim_det = camera[detector_id]
    det = sim_det.detector
    bbox = det.bbox
    cam = camera.config
    band = plan.band
    true_wcs = camera.true_wcs(detector_id, plan.boresight_ra, plan.boresight_dec, plan.rotation_deg)
    prelim_wcs, prelim_info = preliminary_wcs(config, plan, det, true_wcs)
    psf = TruePsf(camera, detector_id, plan.atmosphere, true_wcs, band, optics=optics)

    zero_point = plan.zero_point_electrons + sim_det.qe_offset_mag - 2.5 * math.log10(sim_det.gain)
    calibration = AB_REFERENCE_NJY * 10.0 ** (-0.4 * zero_point)  # nJy per ADU, all snaps summed
    seeing = plan.atmosphere.seeing_fwhm

    # --- the objects on (or near) this detector ---
    s_idx, s_x, s_y = _select(true_wcs, bbox, stars["ra"], stars["dec"], margin=60.0, pixel_scale=cam.pixel_scale)
    g_idx, g_x, g_y = _select(true_wcs, bbox, galaxies["ra"], galaxies["dec"], margin=30.0, pixel_scale=cam.pixel_scale)
    s_flux = mag_to_njy(np.asarray(stars[f"{band}_mag"])[s_idx])
    g_flux = mag_to_njy(np.asarray(galaxies["mag"])[g_idx])
    n_obj = s_idx.size + g_idx.size
    xs = np.concatenate([s_x, g_x])
    ys = np.concatenate([s_y, g_y])
    flux_njy = np.concatenate([s_flux, g_flux])
    flux_adu = flux_njy / calibration
    is_star = np.arange(n_obj) < s_idx.size
    jac = psf.jacobian(xs, ys) if n_obj else np.zeros((0, 2, 2))

    # --- the noiseless scene of the whole visit, electrons ---
    ny, nx = bbox.height, bbox.width
    scene = np.zeros((ny, nx), dtype=np.float64)
    canvas = galsim.ImageD(scene, xmin=bbox.min_x, ymin=bbox.min_y)
    g_rows = galaxies[g_idx] if g_idx.size else None
    for k in range(n_obj):
        x, y = float(xs[k]), float(ys[k])
        flux_e = float(flux_adu[k]) * sim_det.gain
        if is_star[k]:
            prof = psf.profile(x, y)
            radius = _stamp_radius_star(flux_e)
        else:
            row = g_rows[k - s_idx.size]
            gal = _galaxy_profile(galsim, float(row["sersic_n"]), float(row["hlr"]), float(row["g1"]),
                                  float(row["g2"]))
            prof = galsim.Convolve(gal, psf.profile(x, y))
            radius = _stamp_radius_galaxy(float(row["hlr"]), seeing, cam.pixel_scale)
        ix, iy = math.floor(x + 0.5), math.floor(y + 0.5)
        bounds = galsim.BoundsI(ix - radius, ix + radius, iy - radius, iy + radius) & canvas.bounds
        if not bounds.isDefined():
            continue
        stamp = canvas[bounds]
        stamp.wcs = psf.galsim_wcs(jac[k])
        prof.withFlux(flux_e).drawImage(image=stamp, center=galsim.PositionD(x, y), add_to_image=True)

    # --- truth table of the objects ---
    inside = (xs > bbox.min_x - 0.5) & (xs < bbox.max_x + 0.5) & (ys > bbox.min_y - 0.5) & (ys < bbox.max_y + 0.5)
    objects = Table()
    objects["visit"] = np.full(n_obj, plan.visit, dtype=np.int64)
    objects["detector"] = np.full(n_obj, det.id, dtype=np.int32)
    objects["id"] = np.concatenate([np.asarray(stars["id"])[s_idx], np.asarray(galaxies["id"])[g_idx]]).astype(np.int64)
    objects["is_star"] = is_star
    objects["ra"] = np.concatenate([np.asarray(stars["ra"])[s_idx], np.asarray(galaxies["ra"])[g_idx]])
    objects["dec"] = np.concatenate([np.asarray(stars["dec"])[s_idx], np.asarray(galaxies["dec"])[g_idx]])
    objects["x"] = xs
    objects["y"] = ys
    objects["inside"] = inside
    objects["flux_nJy"] = flux_njy
    objects["flux_adu"] = flux_adu
    objects["mag"] = -2.5 * np.log10(flux_njy / AB_REFERENCE_NJY)
    for name in ("sersic_n", "hlr", "g1", "g2"):
        col = np.full(n_obj, np.nan)
        if g_idx.size:
            col[s_idx.size:] = np.asarray(g_rows[name], dtype=np.float64)
        objects[name] = col
    moments = np.full((n_obj, 3), np.nan)
    for k in np.nonzero(is_star & inside)[0]:
        moments[k] = psf.compute_shape(float(xs[k]), float(ys[k]))
    objects["psf_ixx"], objects["psf_iyy"], objects["psf_ixy"] = moments.T
    objects["saturated"] = np.zeros(n_obj, dtype=bool)

    # --- the snaps: same sky, defects and edge; own noise and cosmic rays ---
    snap_time = plan.exposure_time / plan.n_snaps
    sky = _sky_field(camera, plan, detector_id, 1.0 / sim_det.gain, snap_time)
    mean_electrons = sky.evaluate_image() * sim_det.gain + scene * (1.0 / plan.n_snaps)
    bad = np.zeros((ny, nx), dtype=bool)
    for x, y0, y1 in sim_det.bad_columns:
        bad[y0:y1 + 1, x] = True
    edge = np.ones((ny, nx), dtype=bool)
    e = cam.edge_width
    edge[e:ny - e, e:nx - e] = False
    snaps = []
    for snap in range(plan.n_snaps):
        rng = rng_for(config.seed, STREAM_NOISE, plan.visit, det.id, snap)
        electrons = rng.poisson(mean_electrons).astype(np.float64)
        cr_index, cr_e = _cosmic_rays(rng_for(config.seed, STREAM_COSMIC_RAYS, plan.visit, det.id, snap),
                                      (ny, nx), cam.pixel_size_mm, config.cosmic_ray_rate, snap_time)
        electrons.ravel()[cr_index] += cr_e
        _bleed(electrons, sim_det.full_well)
        saturated = electrons >= sim_det.full_well
        electrons += rng.normal(0.0, sim_det.read_noise, size=electrons.shape)
        adu = electrons / sim_det.gain
        _interpolate_rows(adu, bad | saturated)
        mask = Mask(shape=(ny, nx))
        mask.set("SAT", saturated)
        mask.set("BAD", bad)
        mask.set("INTRP", bad | saturated)
        mask.set("EDGE", edge)
        rn_adu = sim_det.read_noise / sim_det.gain
        variance = np.maximum(adu, 0.0) / sim_det.gain + rn_adu * rn_adu
        visit_info = VisitInfo(
            id=plan.visit, band=band, physical_filter=f"{band}_sim", exposure_time=snap_time,
            date=_snap_date(plan, snap), airmass=plan.airmass,
            boresight_ra_dec=(plan.boresight_ra, plan.boresight_dec), boresight_rot_angle=plan.rotation_deg,
            observatory=LSST_OBSERVATORY)
        exposure = Exposure(MaskedImage(adu.astype(np.float32), mask, variance.astype(np.float32)),
                            wcs=prelim_wcs, visit_info=visit_info, detector=det)
        md = exposure.metadata
        md["BUNIT"] = ("adu", "pixel unit")
        md["GAIN"] = (sim_det.gain, "[e-/adu] gain")
        md["RDNOISE"] = (sim_det.read_noise, "[e-] read noise")
        md["SATURATE"] = (sim_det.saturation_adu, "[adu] saturation (full well / gain)")
        md["SNAP"] = (snap, "snap index within the visit")
        md["NSNAPS"] = (plan.n_snaps, "snaps in the visit")
        md["SIMULATD"] = (True, "rendered by visitcal.sim")
        cr = Table()
        cr["x"] = (cr_index % nx).astype(np.int32) + bbox.min_x
        cr["y"] = (cr_index // nx).astype(np.int32) + bbox.min_y
        cr["electrons"] = cr_e
        cr["adu"] = cr_e / sim_det.gain
        snaps.append(SnapImage(snap, exposure, sky, cr))
        if snap == 0:
            ix = np.clip(np.floor(xs + 0.5).astype(int) - bbox.min_x, 0, nx - 1)
            iy = np.clip(np.floor(ys + 0.5).astype(int) - bbox.min_y, 0, ny - 1)
            objects["saturated"] = inside & saturated[iy, ix]
    return DetectorTruth(plan.visit, det.id, true_wcs, prelim_wcs, prelim_info, zero_point, calibration,
                         objects, snaps)


def _snap_date(plan, snap: int) -> str:
    """Middle of snap ``snap``: snaps are back to back around the visit's middle."""
    from astropy.time import Time, TimeDelta

    t_snap = plan.exposure_time / plan.n_snaps
    offset = -0.5 * plan.exposure_time + (snap + 0.5) * t_snap
    return (Time(plan.date, format="isot", scale="utc") + TimeDelta(offset, format="sec")).isot

