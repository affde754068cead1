"""`ComputeExposureSummaryStatsTask`: an exposure's summary statistics (LSST pipe_tasks'
``ComputeExposureSummaryStatsTask``, filling afw's ``ExposureSummaryStats``).

This module computes the statistics known once a detector is calibrated: the PSF's size,
shape and effective area at the detector centre, the PSF-star count, the zero point, the sky level and
noise, the mean variance, the astrometric offsets, and the WCS-derived centre, corners and pixel scale.
The PSF-star residual statistics, the grid metrics and the depth figures (``magLim``, ``effTime`` and its
three factors) follow from the same inputs once the final calibrations are attached (the reprocessing step);
fields whose inputs are missing are NaN.

Field names are LSST's (``ExposureSummaryStats``) so that users find them where they expect.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import _core
from ..core.arguments import checked_int, checked_step
from ..detection.background import sky_bg
from ..detection.noise_replacer import MAX_CLIP_ITERATIONS
from ..core.wcs import pixel_scale_arcsec, pixel_to_sky

__all__ = ["ComputeExposureSummaryStatsConfig", "ComputeExposureSummaryStatsTask", "compute_magnitude_limit",
           "sigma_clipped_stats"]

_BANDS = ("u", "g", "r", "i", "z", "y")
#: LSSTCam fiducials (obs_lsst config/lsstCam/computeExposureSummaryStats.py): PSF sigma (px), zero point
#: (mag for 1 s), sky (counts per second per pixel).
LSSTCAM_FIDUCIAL_PSF_SIGMA = dict(zip(_BANDS, (1.72, 1.63, 1.56, 1.51, 1.47, 1.44)))
LSSTCAM_FIDUCIAL_ZERO_POINT = dict(zip(_BANDS, (25.97, 27.96, 27.81, 27.62, 27.23, 26.27)))
LSSTCAM_FIDUCIAL_SKY_BACKGROUND = dict(zip(_BANDS, (0.91, 9.35, 19.94, 32.04, 48.05, 54.81)))


class ComputeExposureSummaryStatsConfig(BaseModel):
    """Configuration of `ComputeExposureSummaryStatsTask`: LSST's ``ComputeExposureSummaryStatsConfig``
    defaults, snake_case, with the LSSTCam fiducials of obs_lsst."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sigma_clip: float = Field(3.0, gt=0, description="clip of skyNoise / meanVar, in sigma")
    clip_iter: int = Field(2, ge=1, le=100, description="clipping iterations At most 100.")
    bad_mask_planes: list[str] = Field(default_factory=lambda: ["NO_DATA", "SUSPECT"],
                                       description="pixels excluded from skyNoise and meanVar")
    statistics_sample_step: int = Field(2, ge=1, le=1024, description="skyNoise and meanVar from the pixels on a "
                                                                      "lattice of "
                                        "this step (1: all, as afw). 2 reads a quarter of the pixels (0.28 -> 0.07 s "
                                        "on 16 Mpx) for statistics of a few million values; the noise replacer "
                                        "makes the same choice At most 1024 px.")
    psf_sampling: int = Field(8, ge=1, le=4096, description="grid step (px) of maxDistToNearestPsf At most 4096 px.")
    psf_grid_sampling: int = Field(96, ge=1, le=4096, description="grid step (px) of the PSF grid metrics At most "
                                                                  "4096 px.")
    min_psf_ap_radius_pix: float = Field(2.0, gt=0, le=1000, description="smallest radius of psfApFluxDelta's "
                                                                         "aperture At most 1000 px.")
    psf_ap_corr_field_name: str = Field("base_PsfFlux_instFlux", description="ap-corr entry of "
                                        "psfApCorrSigmaScaledDelta")
    psf_bad_mask_planes: list[str] = Field(
        default_factory=lambda: ["BAD", "CR", "EDGE", "INTRP", "NO_DATA", "SAT", "SUSPECT"],
        description="grid points on these planes are skipped by the grid metrics")
    mag_lim_snr: float = Field(5.0, gt=0, description="S/N of magLim's point source")
    fiducial_psf_sigma: dict[str, float] = Field(default_factory=lambda: dict(LSSTCAM_FIDUCIAL_PSF_SIGMA),
                                                 description="per band: PSF sigma (px) of the fiducial visit")
    fiducial_zero_point: dict[str, float] = Field(default_factory=lambda: dict(LSSTCAM_FIDUCIAL_ZERO_POINT),
                                                  description="per band: zero point (mag, 1 s) of the fiducial visit")
    fiducial_sky_background: dict[str, float] = Field(
        default_factory=lambda: dict(LSSTCAM_FIDUCIAL_SKY_BACKGROUND),
        description="per band: sky (counts per second per pixel) of the fiducial visit")
    fiducial_read_noise: float = Field(
        9.0, ge=0, description="read noise (counts) of the fiducial visit, for fiducialMagLim. visitcal's "
        "own value, not one of the LSSTCam fiducials above; 9 is the order of an LSSTCam amplifier's. It "
        "matters little: the fiducial sky (600 counts per pixel in r) dominates 81")
    fiducial_exp_time: float = Field(30.0, gt=0, description="exposure time (s) of the fiducial visit")
    max_effective_transparency: float | None = Field(None, gt=0, le=1e6, description="cap of effTimeZeroPointScale "
                                                                                     "(None: "
                                                     "none, LSST's inf; JSON has no infinity) At most 1e6.")


def sigma_clipped_stats(values: np.ndarray, n_sigma: float, n_iter: int, *, mask=None, bad_bits: int = 0,
                        sample_step: int = 1) -> tuple[float, float]:
    """afw's MEANCLIP / STDEVCLIP, in C++ (`visitcal.detection.noise_replacer.noise_statistics`'s kernel): start from
    the median with sigma = 0.7413 IQR, then ``n_iter`` passes keeping ``|v - mean| <= n_sigma sigma`` and
    recomputing the mean and the (n - 1) standard deviation. Non-finite values and, with ``mask``, pixels
    with any of ``bad_bits`` never count. ``n_iter`` in [0, 1000] and ``sample_step`` >= 1 (integers), else a
    `ValueError` / `TypeError` naming them.

    Returns (mean, std); (nan, nan) for no usable value.
    """
    n_iter = checked_int(n_iter, "n_iter", 0, MAX_CLIP_ITERATIONS)
    sample_step = checked_step(sample_step)
    v = np.ascontiguousarray(values, dtype=np.float32)
    if v.ndim == 1:
        v = v.reshape(1, -1)
        mask = None if mask is None else np.ascontiguousarray(mask, np.int32).reshape(1, -1)
    m = None if mask is None else np.ascontiguousarray(mask, np.int32)
    mean, std, _, _ = _core.clipped_mean_stdev(v, m, int(bad_bits) if m is not None else 0, float(n_sigma),
                                               int(n_iter), int(sample_step))
    return float(mean), float(std)


def compute_magnitude_limit(psf_area: float, sky_bg: float, zero_point: float, read_noise: float, gain: float,
                            snr: float) -> float:
    """Point-source magnitude at S/N ``snr`` (SMTN-002; LSST's ``magLim`` summary statistic).

    The source counts C solve ``snr^2 = C^2 / (C / g + (B / g + sigma_read^2) neff)``:
    ``C = snr^2 / (2 g) + sqrt(snr^4 / (4 g^2) + snr^2 (B / g + sigma_read^2) neff)``, and the limit is
    ``zero_point - 2.5 log10(C)``.

    Parameters
    ----------
    psf_area : float
        Effective number of pixels of the PSF, ``neff`` (``psfArea``).
    sky_bg : float
        Sky per pixel, counts (``skyBg``).
    zero_point : float
        Magnitude of one count (``zeroPoint``, for the whole exposure).
    read_noise : float
        Read noise in counts (electrons / gain).
    gain : float
        Electrons per count (1 for an image in electrons).
    snr : float
        Signal-to-noise ratio of the limit.
    """
    g = float(gain)
    background = (sky_bg / g + read_noise**2) * psf_area
    counts = snr**2 / (2 * g) + math.sqrt(snr**4 / (4 * g * g) + snr**2 * background)
    return float(zero_point - 2.5 * math.log10(counts)) if counts > 0 else math.nan


def zenith_distance(visit_info) -> float:
    """The boresight's zenith distance (deg) at the middle of the exposure, from its ICRS position, the date
    (``mjd``, UTC) and the observatory's longitude and latitude: ``90 - altitude`` with the hour angle from the
    mean sidereal time (IAU 1982, UT1 taken as UTC: < 1 s, 15 arcsec) and no refraction, precession or
    nutation (< 0.5 deg; LSST's ``zenithDistance`` is ``90 - boresightAzAlt.altitude`` from the observatory's
    own record). NaN when any input is unknown."""
    if visit_info is None or visit_info.observatory is None or not math.isfinite(visit_info.mjd):
        return math.nan
    ra, dec = visit_info.boresight_ra_dec
    lon, lat = visit_info.observatory[0], visit_info.observatory[1]
    if not all(math.isfinite(v) for v in (ra, dec, lon, lat)):
        return math.nan
    d = visit_info.mjd + 2400000.5 - 2451545.0          # days from J2000.0
    t = d / 36525.0
    gmst = 280.46061837 + 360.98564736629 * d + 0.000387933 * t * t - t ** 3 / 38710000.0
    ha = math.radians((gmst + lon - ra) % 360.0)
    phi, delta = math.radians(lat), math.radians(dec)
    sin_alt = math.sin(phi) * math.sin(delta) + math.cos(phi) * math.cos(delta) * math.cos(ha)
    return 90.0 - math.degrees(math.asin(max(-1.0, min(1.0, sin_alt))))


def _mad_scatter(v: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else math.nan


def psf_star_residual_stats(sources) -> dict:
    """LSST's PSF-star summary fields: over the ``calib_psf_used`` stars with 50 < S/N < 1000 on
    ``slot_PsfFlux`` and neither ``slot_Shape_flag`` nor ``slot_PsfFlux_flag``, with e1 = (xx - yy)/(xx + yy),
    e2 = 2 xy/(xx + yy), size = sqrt((xx + yy)/2) of ``slot_Shape`` (star) and ``slot_PsfShape`` (model):
    medians and MAD scatters (x 1.4826) of the star - model differences, and the size scatter over the
    median star size. Empty when the catalog lacks the columns."""
    from ..measurement.source_selector import resolve_column

    try:
        col = {k: np.asarray(sources[resolve_column(sources, n)], np.float64) for k, n in (
            ("xx", "slot_Shape_xx"), ("yy", "slot_Shape_yy"), ("xy", "slot_Shape_xy"),
            ("pxx", "slot_PsfShape_xx"), ("pyy", "slot_PsfShape_yy"), ("pxy", "slot_PsfShape_xy"),
            ("flux", "slot_PsfFlux_instFlux"), ("err", "slot_PsfFlux_instFluxErr"))}
        used = np.asarray(sources["calib_psf_used"], bool)
    except KeyError:
        return {}
    sel = used.copy()
    for flag in ("slot_Shape_flag", "slot_PsfFlux_flag"):
        try:
            sel &= ~np.asarray(sources[resolve_column(sources, flag)], bool)
        except KeyError:
            pass
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = col["flux"] / col["err"]
        sel &= (snr > 50) & (snr < 1000)
        t, pt = col["xx"] + col["yy"], col["pxx"] + col["pyy"]
        e1, e2, size = (col["xx"] - col["yy"]) / t, 2 * col["xy"] / t, np.sqrt(t / 2)
        pe1, pe2, psize = (col["pxx"] - col["pyy"]) / pt, 2 * col["pxy"] / pt, np.sqrt(pt / 2)
    sel &= np.isfinite(e1) & np.isfinite(e2) & np.isfinite(size) & np.isfinite(pe1) & np.isfinite(psize)
    d1, d2, ds = (e1 - pe1)[sel], (e2 - pe2)[sel], (size - psize)[sel]
    nan = math.nan
    return {"psfStarDeltaE1Median": float(np.median(d1)) if d1.size else nan,
            "psfStarDeltaE2Median": float(np.median(d2)) if d2.size else nan,
            "psfStarDeltaE1Scatter": _mad_scatter(d1), "psfStarDeltaE2Scatter": _mad_scatter(d2),
            "psfStarDeltaSizeMedian": float(np.median(ds)) if ds.size else nan,
            "psfStarDeltaSizeScatter": _mad_scatter(ds),
            "psfStarScaledDeltaSizeScatter": _mad_scatter(ds) / float(np.median(size[sel])) if ds.size else nan}


class ComputeExposureSummaryStatsTask:
    """Summary statistics of a calibrated exposure (see the module docstring)."""

    ConfigClass = ComputeExposureSummaryStatsConfig
    _DefaultName = "computeSummaryStats"

    def __init__(self, config: ComputeExposureSummaryStatsConfig | None = None):
        self.config = config or ComputeExposureSummaryStatsConfig()

    def run(self, exposure, sources=None, background=None) -> dict:
        """Return the statistics as a dict of LSST field names to floats (NaN where unknown).

        Parameters
        ----------
        exposure : `Exposure`
            With psf, wcs, photo_calib, visit_info when known; its image is the background-subtracted one.
        sources : `astropy.table.Table`, optional
            For ``nPsfStar`` (``calib_psf_used``).
        background : `BackgroundList`, optional
            The subtracted background, for ``skyBg`` (counts).
        """
        s: dict = {}
        bbox = exposure.bbox
        cx, cy = bbox.center
        vi = exposure.visit_info
        s["expTime"] = float(vi.exposure_time) if vi is not None else math.nan
        # the visit summary's identification columns (LSST: physical_filter, band from the exposure's filter)
        s["band"] = (vi.band or "") if vi is not None else ""
        s["physical_filter"] = (vi.physical_filter or "") if vi is not None else ""
        s["zenithDistance"] = zenith_distance(vi)
        psf = exposure.psf
        if psf is not None:
            shape = psf.compute_shape(cx, cy)
            s["psfSigma"] = float(shape.determinant_radius)
            s["psfIxx"], s["psfIyy"], s["psfIxy"] = float(shape.xx), float(shape.yy), float(shape.xy)
            k = np.asarray(psf.compute_kernel_image(cx, cy), np.float64)
            s["psfArea"] = float(k.sum() ** 2 / np.sum(k * k))
        else:
            for key in ("psfSigma", "psfIxx", "psfIyy", "psfIxy", "psfArea"):
                s[key] = math.nan
        s["nPsfStar"] = int(np.sum(sources["calib_psf_used"])) if sources is not None and "calib_psf_used" in sources.colnames else 0
        if sources is not None:
            s.update(psf_star_residual_stats(sources))
        s.update(self._grid_metrics(exposure, sources, s.get("psfSigma", math.nan)))
        pc = exposure.photo_calib
        s["zeroPoint"] = float(2.5 * math.log10(pc.instflux_at_zero_magnitude)) if pc is not None else math.nan
        s["skyBg"] = float(sky_bg(background)) if background is not None else math.nan
        bad = 0
        for name in self.config.bad_mask_planes:
            if name in exposure.mask.planes:
                bad |= 1 << exposure.mask.planes[name]
        bad = int(np.int32(np.uint32(bad)))
        c = self.config
        step = c.statistics_sample_step
        s["skyNoise"] = sigma_clipped_stats(exposure.image, c.sigma_clip, c.clip_iter, mask=exposure.mask.array,
                                            bad_bits=bad, sample_step=step)[1]
        s["meanVar"] = sigma_clipped_stats(exposure.variance, c.sigma_clip, c.clip_iter, mask=exposure.mask.array,
                                           bad_bits=bad, sample_step=step)[0]
        md = exposure.metadata
        s.update(self._depth(s, md, vi))
        s["astromOffsetMean"] = float(md.get("SFM_ASTROM_OFFSET_MEAN", math.nan))
        s["astromOffsetStd"] = float(md.get("SFM_ASTROM_OFFSET_STD", math.nan))
        wcs = exposure.wcs
        if wcs is not None:
            ra, dec = pixel_to_sky(wcs, np.array([cx]), np.array([cy]))
            s["ra"], s["dec"] = float(ra[0]), float(dec[0])
            # Box2D corners: the outer pixel edges, (min, min), (max, min), (max, max), (min, max) as afw.
            x0, x1, y0, y1 = bbox.min_x - 0.5, bbox.max_x + 0.5, bbox.min_y - 0.5, bbox.max_y + 0.5
            cra, cdec = pixel_to_sky(wcs, np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1]))
            s["raCorners"] = [float(v) for v in cra]
            s["decCorners"] = [float(v) for v in cdec]
            s["pixelScale"] = float(pixel_scale_arcsec(wcs, cx, cy))
        else:
            s["ra"] = s["dec"] = s["pixelScale"] = math.nan
            s["raCorners"] = s["decCorners"] = [math.nan] * 4
        return s

    def _depth(self, s: dict, metadata, visit_info) -> dict:
        """``magLim`` (SMTN-002), ``effTime`` and its three factors, as LSST computes them.

        The gain and read noise (electrons) are the exposure's ``GAIN`` and ``RDNOISE`` cards; without them
        ``magLim`` and ``effTime`` are NaN. ``fiducialMagLim`` is the same limit for the band's fiducial visit:
        PSF area 4 pi sigma^2 (a Gaussian's), sky ``fiducial_sky_background * fiducial_exp_time``, zero point
        ``fiducial_zero_point + 2.5 log10(fiducial_exp_time)``, read noise ``fiducial_read_noise``, gain 1.
        The factors are NaN for a band without fiducials.
        """
        c = self.config
        nan = math.nan
        out = {k: nan for k in ("magLim", "effTime", "effTimePsfSigmaScale", "effTimeSkyBgScale",
                                "effTimeZeroPointScale")}
        area, sky, zp, t = s.get("psfArea", nan), s.get("skyBg", nan), s.get("zeroPoint", nan), s.get("expTime", nan)
        gain = float(metadata.get("GAIN", nan)) if metadata is not None else nan
        rn = float(metadata.get("RDNOISE", nan)) if metadata is not None else nan
        if all(math.isfinite(v) for v in (area, sky, zp, gain, rn)) and gain > 0 and area > 0:
            out["magLim"] = compute_magnitude_limit(area, sky, zp, rn / gain, gain, c.mag_lim_snr)
        band = visit_info.band if visit_info is not None else None
        if band in c.fiducial_psf_sigma and band in c.fiducial_zero_point and band in c.fiducial_sky_background:
            fid_sigma, fid_zp = c.fiducial_psf_sigma[band], c.fiducial_zero_point[band]
            fid_sky, fid_t = c.fiducial_sky_background[band], c.fiducial_exp_time
            if math.isfinite(t) and t > 0:
                out["effTimePsfSigmaScale"] = float((s.get("psfSigma", nan) / fid_sigma) ** -2)
                out["effTimeSkyBgScale"] = float(fid_sky / (sky / t)) if sky > 0 else nan
                cap = math.inf if c.max_effective_transparency is None else c.max_effective_transparency
                out["effTimeZeroPointScale"] = float(min(10 ** (-0.8 * (fid_zp - (zp - 2.5 * math.log10(t)))), cap))
            fid_lim = compute_magnitude_limit(4 * math.pi * fid_sigma**2, fid_sky * fid_t,
                                              fid_zp + 2.5 * math.log10(fid_t), c.fiducial_read_noise, 1.0,
                                              c.mag_lim_snr)
            if math.isfinite(out["magLim"]):
                out["effTime"] = float(10 ** (0.8 * (out["magLim"] - fid_lim)) * fid_t)
        return out

    def _grid_metrics(self, exposure, sources, psf_sigma: float) -> dict:
        """LSST's grid metrics: ``maxDistToNearestPsf`` (largest distance, px, from an unmasked point
        of a ``psf_sampling`` grid to the nearest ``calib_psf_used`` star), and over a ``psf_grid_sampling``
        grid of unmasked points the max - min of the PSF's trace radius (``psfTraceRadiusDelta``), of its
        aperture flux within max(``min_psf_ap_radius_pix``, 3 psfSigma) (``psfApFluxDelta``; NaN when one
        is negative) and of the base_PsfFlux ap corr over psfSigma (``psfApCorrSigmaScaledDelta``)."""
        from ..calib.match_nearest import match_nearest
        from ..measurement.source_selector import resolve_column

        c = self.config
        out = {"maxDistToNearestPsf": math.nan, "psfTraceRadiusDelta": math.nan, "psfApFluxDelta": math.nan,
               "psfApCorrSigmaScaledDelta": math.nan}
        bbox = exposure.bbox
        bad = 0
        for name in c.psf_bad_mask_planes:
            if name in exposure.mask.planes:
                bad |= 1 << exposure.mask.planes[name]
        bad = np.int32(np.uint32(bad).astype(np.int32))
        mask = exposure.mask.array
        x0, y0 = bbox.min_x, bbox.min_y

        def grid(step):
            gx, gy = np.meshgrid(np.arange(bbox.min_x, bbox.max_x + 1, step),
                                 np.arange(bbox.min_y, bbox.max_y + 1, step))
            gx, gy = gx.ravel(), gy.ravel()
            ok = (mask[gy - y0, gx - x0] & bad) == 0
            return gx[ok].astype(np.float64), gy[ok].astype(np.float64)

        if sources is not None and "calib_psf_used" in sources.colnames:
            try:
                used = np.asarray(sources["calib_psf_used"], bool)
                sx = np.asarray(sources[resolve_column(sources, "slot_Centroid_x")], np.float64)[used]
                sy = np.asarray(sources[resolve_column(sources, "slot_Centroid_y")], np.float64)[used]
            except KeyError:
                sx = sy = np.zeros(0)
            good = np.isfinite(sx) & np.isfinite(sy)
            sx, sy = sx[good], sy[good]
            gx, gy = grid(c.psf_sampling)
            if sx.size and gx.size:
                # Each grid point's nearest star by the C++ grid hash, the radius doubled for the points with
                # none within it (exact: a point's nearest star is found once the radius reaches it).
                dist = np.full(gx.size, np.nan)
                todo = np.arange(gx.size)
                radius = 4.0 * c.psf_sampling
                while todo.size:
                    m = match_nearest(gx[todo], gy[todo], sx, sy, radius)
                    hit = m.index >= 0
                    dist[todo[hit]] = m.distance[hit]
                    todo = todo[~hit]
                    radius *= 2.0
                out["maxDistToNearestPsf"] = float(np.max(dist))
        psf = exposure.psf
        if psf is not None:
            gx, gy = grid(c.psf_grid_sampling)
            if gx.size:
                shapes = [psf.compute_shape(x, y) for x, y in zip(gx, gy)]
                trace = np.array([math.sqrt(0.5 * (m.xx + m.yy)) for m in shapes])
                out["psfTraceRadiusDelta"] = float(trace.max() - trace.min())
                if math.isfinite(psf_sigma):
                    radius = max(c.min_psf_ap_radius_pix, 3.0 * psf_sigma)
                    ap = np.array([psf.compute_aperture_flux(radius, x, y) for x, y in zip(gx, gy)])
                    out["psfApFluxDelta"] = float(ap.max() - ap.min()) if np.all(ap >= 0) else math.nan
                apc = exposure.ap_corr_map
                if (apc is not None and c.psf_ap_corr_field_name in apc and math.isfinite(psf_sigma)
                        and psf_sigma > 0):
                    a = np.asarray(apc[c.psf_ap_corr_field_name].evaluate(gx, gy), np.float64)
                    out["psfApCorrSigmaScaledDelta"] = float((a.max() - a.min()) / psf_sigma)
        return out
