"""Single-frame measurement: the LSST source catalog from footprints (meas_base ``SingleFrameMeasurementTask``,
its ``NoiseReplacer`` and the default single-frame plugins).

`SingleFrameMeasurementTask.run` takes a catalog (one row per footprint: parents, deblended children,
sky sources), the footprints aligned with its rows and the exposure, and adds the columns of the
configured plugins. The per-source work is one C++ call (`visitcal._core.measure_sources`): with
noise replacement on (the default), every top-level footprint is replaced by Gaussian noise of the
image's clipped mean and sigma, and each record's pixels (a parent's own, a child's heavy footprint)
are put back only while it is measured, so neighbours do not leak into apertures. The plugins run in
LSST's execution order: pixel flags and centroid, shape, then fluxes.

Plugins (``config.plugins``; LSST's default list plus the focal-plane position and Jacobian that LSST's
``ReprocessVisitImageTask`` adds):

========================================  =========================================================
``base_PixelFlags``                       mask planes in the footprint / the 3x3 centre
``base_SdssCentroid``                     PSF-smoothed quadratic peak, with errors (slot_Centroid)
``base_SdssShape``                        adaptive moments of the source and of the PSF (slot_Shape)
``base_PsfFlux``                          linear fit of the PSF model (slot_PsfFlux)
``base_GaussianFlux``                     flux in the adaptive Gaussian weight (slot_GaussianFlux)
``base_CircularApertureFlux``             exact-overlap apertures, radii 3 .. 70 px (slot_CalibFlux)
``base_CompensatedTophatFlux``            top hat minus a scaled annulus (12 px)
``base_LocalBackground``                  clipped mean in a 7-15 PSF-sigma annulus
``base_Variance``                         median variance under the shape ellipse
``base_SkyCoord``                         ``coord_ra``, ``coord_dec`` (radians)
``base_FPPosition``                       focal-plane mm
``base_Jacobian``                         pixel area relative to 0.2"
``base_FootprintArea``                    pixels in the footprint
``base_ClassificationSizeExtendedness``   size-based star/galaxy value
``base_ClassificationExtendedness``       flux-ratio star/galaxy value (catalog calculation)
========================================  =========================================================

Failures never raise: a plugin that cannot measure a source sets its ``_flag`` (and a specific
flag) and leaves NaN, and every row of the input catalog gets its measurement.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import _core
from ..core.footprint import Footprint, FootprintSet, HeavyFootprint
from ..core.geom import Box2I
from ..core.image import Exposure
from .plugins import catalog_plugins
from .plugins._phot_common import flag_columns
from .plugins.aperture_flux import ApertureFluxConfig
from .plugins.compensated_tophat import CompensatedTophatConfig
from .plugins.gaussian_flux import GaussianFluxConfig
from .plugins.local_background import LocalBackgroundConfig
from .plugins.psf_flux import PsfFluxConfig
from .plugins.sdss_centroid import SdssCentroidConfig
from .plugins.sdss_shape import SdssShapeConfig
from .plugins.variance import VarianceConfig
from ..detection.noise_replacer import NoiseReplacerConfig, noise_seed, noise_statistics

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PLUGINS",
    "SingleFrameMeasurementConfig",
    "SingleFrameMeasurementTask",
    "SlotsConfig",
    "mask_suspect_pixels",
]

#: LSST's default single-frame plugin list (meas_base ``SingleFrameMeasurementConfig``, without
#: base_Blendedness), plus the catalog calculations (footprint area, extendedness) and the focal-plane
#: position and Jacobian that ReprocessVisitImageTask adds.
DEFAULT_PLUGINS = (
    "base_PixelFlags",
    "base_SdssCentroid",
    "base_SdssShape",
    "base_GaussianFlux",
    "base_PsfFlux",
    "base_CircularApertureFlux",
    "base_SkyCoord",
    "base_Variance",
    "base_LocalBackground",
    "base_CompensatedTophatFlux",
    "base_ClassificationSizeExtendedness",
    "base_FootprintArea",
    "base_FPPosition",
    "base_Jacobian",
    "base_ClassificationExtendedness",
)

#: C++ plugins: name -> (control switch, the plugin's flag names from its C++ registry).
_PIXEL_PLUGINS = {
    "base_PixelFlags": "do_pixel_flags",
    "base_SdssCentroid": "do_centroid",
    "base_SdssShape": "do_shape",
    "base_PsfFlux": "do_psf_flux",
    "base_GaussianFlux": "do_gaussian_flux",
    "base_CircularApertureFlux": "do_apertures",
    "base_CompensatedTophatFlux": "do_compensated_tophat",
    "base_LocalBackground": "do_local_background",
    "base_Variance": "do_variance",
}
_CATALOG_PLUGINS = ("base_SkyCoord", "base_FPPosition", "base_Jacobian", "base_FootprintArea",
                    "base_ClassificationSizeExtendedness", "base_ClassificationExtendedness")
KNOWN_PLUGINS = tuple(_PIXEL_PLUGINS) + _CATALOG_PLUGINS

#: Plugins a plugin reads (through slots); enabling it without them is a configuration error.
_NEEDS = {
    "base_GaussianFlux": ("base_SdssShape",),
    "base_Variance": ("base_SdssShape",),
    "base_ClassificationSizeExtendedness": ("base_SdssShape",),
    "base_ClassificationExtendedness": ("base_PsfFlux", "base_GaussianFlux"),
}


def _flag_names() -> dict[str, list[str]]:
    return {
        "base_PixelFlags": list(_core.pixel_flags_flag_names()),
        "base_SdssCentroid": list(_core.sdss_centroid_flag_names()),
        "base_SdssShape": list(_core.sdss_shape_flag_names()),
        "base_PsfFlux": list(_core.psf_flux_flag_names()),
        "base_GaussianFlux": list(_core.gaussian_flux_flag_names()),
        "base_CircularApertureFlux": list(_core.aperture_flux_flag_names()),
        "base_CompensatedTophatFlux": list(_core.compensated_tophat_flag_names()),
        "base_LocalBackground": list(_core.local_background_flag_names()),
        "base_Variance": list(_core.variance_flag_names()),
    }


class SlotsConfig(BaseModel):
    """Slot aliases: ``slot_<Name>_*`` columns resolve to these prefixes (None: the slot is not set).

    The defaults are meas_base's: centroid ``base_SdssCentroid``, shape ``base_SdssShape``, PSF shape
    ``base_SdssShape_psf``, ap and calib flux ``base_CircularApertureFlux_12_0``, Gaussian and model flux
    ``base_GaussianFlux``, PSF flux ``base_PsfFlux``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    centroid: str | None = Field("base_SdssCentroid", description="slot_Centroid")
    shape: str | None = Field("base_SdssShape", description="slot_Shape")
    psf_shape: str | None = Field("base_SdssShape_psf", description="slot_PsfShape")
    psf_flux: str | None = Field("base_PsfFlux", description="slot_PsfFlux")
    ap_flux: str | None = Field("base_CircularApertureFlux_12_0", description="slot_ApFlux")
    calib_flux: str | None = Field("base_CircularApertureFlux_12_0", description="slot_CalibFlux")
    gaussian_flux: str | None = Field("base_GaussianFlux", description="slot_GaussianFlux")
    model_flux: str | None = Field("base_GaussianFlux", description="slot_ModelFlux")

    def as_meta(self) -> dict[str, str]:
        """The slots as stored in a catalog's ``meta["slots"]``: LSST slot name -> column prefix.

        Returns
        -------
        slots : dict of str to str
            E.g. ``{"Centroid": "base_SdssCentroid", "PsfFlux": "base_PsfFlux", ...}``; the slots set to
            None are left out.
        """
        names = {"centroid": "Centroid", "shape": "Shape", "psf_shape": "PsfShape", "psf_flux": "PsfFlux",
                 "ap_flux": "ApFlux", "calib_flux": "CalibFlux", "gaussian_flux": "GaussianFlux",
                 "model_flux": "ModelFlux"}
        return {names[k]: v for k, v in self.model_dump().items() if v is not None}


class SingleFrameMeasurementConfig(BaseModel):
    """Configuration of `SingleFrameMeasurementTask` (meas_base's SingleFrameMeasurementConfig, snake_case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plugins: tuple[str, ...] = Field(DEFAULT_PLUGINS, description="plugins to run, by LSST name")
    slots: SlotsConfig = Field(default_factory=SlotsConfig, description="slot aliases")
    do_replace_with_noise: bool = Field(True, description="replace other sources by noise while measuring one")
    noise_replacer: NoiseReplacerConfig = Field(default_factory=NoiseReplacerConfig,
                                                description="noise source, offset and seed multiplier")
    noise_mask_planes: tuple[str, ...] = Field(
        ("DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT", "NO_DATA", "EDGE"),
        description="pixels left out of the noise's clipped mean and sigma (LSST clips the whole image; "
                    "leaving sources out makes the noise level independent of how crowded the field is)")
    sdss_centroid: SdssCentroidConfig = Field(default_factory=SdssCentroidConfig, description="base_SdssCentroid")
    sdss_shape: SdssShapeConfig = Field(default_factory=SdssShapeConfig, description="base_SdssShape")
    psf_flux: PsfFluxConfig = Field(default_factory=PsfFluxConfig, description="base_PsfFlux")
    gaussian_flux: GaussianFluxConfig = Field(default_factory=GaussianFluxConfig, description="base_GaussianFlux")
    circular_aperture_flux: ApertureFluxConfig = Field(default_factory=ApertureFluxConfig,
                                                       description="base_CircularApertureFlux (radii)")
    compensated_tophat: CompensatedTophatConfig = Field(default_factory=CompensatedTophatConfig,
                                                        description="base_CompensatedTophatFlux")
    local_background: LocalBackgroundConfig = Field(default_factory=LocalBackgroundConfig,
                                                    description="base_LocalBackground")
    variance: VarianceConfig = Field(default_factory=VarianceConfig, description="base_Variance")
    extendedness_flux_ratio: float = Field(0.95, description="base_ClassificationExtendedness fluxRatio")
    suspect_level: float = Field(1e30, gt=0, le=3.4e38, description="Not LSST: before measuring, pixels whose "
                                 "absolute value exceeds this (image units) get the SUSPECT plane, so a source "
                                 "touching them carries base_PixelFlags_flag_suspect (and _suspectCenter at its "
                                 "centre) instead of being an ordinary source with an absurd flux (a block of 3e38 "
                                 "pixels once measured as a clean source of flux 9e39). No detector holds 1e30 "
                                 "counts; at most 3.4e38, the largest float32.")

    @field_validator("plugins")
    @classmethod
    def _known(cls, plugins):
        for name in plugins:
            if name not in KNOWN_PLUGINS:
                raise ValueError(f"unknown measurement plugin {name!r}; known: {', '.join(KNOWN_PLUGINS)}")
        for name in plugins:
            for need in _NEEDS.get(name, ()):
                if need not in plugins:
                    raise ValueError(f"plugin {name} needs {need} in the plugin list")
        return tuple(plugins)


def mask_suspect_pixels(masked_image, level: float) -> int:
    """Set SUSPECT on the pixels whose absolute value exceeds ``level`` (image units); return their number.

    Non-finite pixels are left alone (they are masked invalid, or an error, upstream). The SUSPECT plane is
    added to the mask's planes when it lacks it.
    """
    image = np.asarray(masked_image.image)
    level = float(level)
    rows = 256  # a band at a time: no |image| and boolean planes of the whole detector (81 MB for a 4k one)
    hits = []
    for y0 in range(0, image.shape[0], rows):
        with np.errstate(invalid="ignore"):
            absurd = np.abs(image[y0:y0 + rows]) > level  # NaN compares False
        if absurd.any():
            hits.append((y0, absurd))
    n = sum(int(np.count_nonzero(absurd)) for _, absurd in hits)
    if n:
        mask = masked_image.mask
        if "SUSPECT" not in mask.planes:
            mask.add_plane("SUSPECT", "pixel value beyond the suspect level")
        for y0, absurd in hits:
            mask[y0:y0 + absurd.shape[0]].set("SUSPECT", absurd)
    return n


def _top_level_index(sources: Table) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are top level (``parent == 0``), and each row's top-level ancestor as an index into
    the top-level rows (children of children are followed)."""
    n = len(sources)
    ids = np.asarray(sources["id"], dtype=np.int64)
    parent = np.asarray(sources["parent"], dtype=np.int64)
    is_top = parent == 0
    row_of_id = {int(i): k for k, i in enumerate(ids)}
    top_rows = np.flatnonzero(is_top)
    parent_index = np.full(n, -1, dtype=np.int64)
    parent_index[top_rows] = np.arange(len(top_rows))
    top = np.empty(n, dtype=np.int64)
    for k in range(n):
        if is_top[k]:
            top[k] = parent_index[k]
            continue
        j, hops = k, 0
        while parent[j] != 0:
            j = row_of_id.get(int(parent[j]), -1)
            hops += 1
            if j < 0 or hops > n:
                raise ValueError(f"source id {ids[k]} has parent {parent[k]} that is not in the catalog")
        top[k] = parent_index[j]
    return is_top, top


class SingleFrameMeasurementTask:
    """Measure a catalog's sources on one exposure (meas_base ``SingleFrameMeasurementTask``).

    Parameters
    ----------
    config : `SingleFrameMeasurementConfig`, optional
    """

    ConfigClass = SingleFrameMeasurementConfig
    _DefaultName = "measurement"

    def __init__(self, config: SingleFrameMeasurementConfig | None = None):
        self.config = config if config is not None else SingleFrameMeasurementConfig()

    def _control(self, masked_image) -> _core.SingleFrameMeasurementControl:
        c = self.config
        ctrl = _core.SingleFrameMeasurementControl()
        for name, switch in _PIXEL_PLUGINS.items():
            setattr(ctrl, switch, name in c.plugins)
        ctrl.replace_with_noise = c.do_replace_with_noise
        ctrl.centroid = c.sdss_centroid.to_core()
        ctrl.shape = c.sdss_shape.to_core()
        ctrl.psf_flux = c.psf_flux.to_control(masked_image)
        ctrl.gaussian_flux = c.gaussian_flux.to_control()
        ctrl.aperture_radii = list(c.circular_aperture_flux.radii)
        ctrl.compensated_tophat = c.compensated_tophat.to_control()
        ctrl.local_background = c.local_background.to_control(masked_image)
        ctrl.variance = c.variance.to_control(masked_image)
        return ctrl

    def run(self, sources: Table, exposure: Exposure, footprints, *, exposure_id: int | None = None,
            centroids=None, noise_footprints=None, noise_index=None) -> Table:
        """Add the measurement columns to ``sources`` (in place; also returned).

        Parameters
        ----------
        sources : astropy.table.Table
            One row per record with ``id`` and ``parent`` (0 for top-level footprints: isolated sources,
            blended parents, sky sources). Children's parents must be in the table.
        exposure : `Exposure`
            Background-subtracted, with a PSF (`visitcal.psf.Psf`); a WCS and detector for the sky and
            focal-plane columns. Its image is used for noise replacement during the call and restored
            bit for bit.
        footprints : sequence of `Footprint` / `HeavyFootprint`
            ``footprints[i]`` belongs to ``sources[i]``; children carry heavy footprints (their deblended
            pixels), parents may be plain footprints (their pixels are the image's).
        exposure_id : int, optional
            Seeds the noise: ``exposure_id * noise_seed_multiplier`` (1 when None, as LSST).
        centroids : (x, y) pair of (n,) float arrays, optional
            Each row's centroid (parent pixels): every plugin after the centroid stage measures there,
            instead of at the centroid plugin's result or the peak (a non-finite entry falls back to them).
            This is LSST's measurement with the centroid slot left to the input catalog (as
            ``FinalizeCharacterizationTask`` configures it: its centroid slot is None, so the input
            catalog's centroid is used).
        noise_footprints : sequence of `Footprint`, optional
            The top-level footprints replaced by noise, when they are not the catalog's own (finalize
            measures a few rows but replaces every source of the input catalog by noise, as
            ``FinalizeCharacterizationTask`` does when it passes all the input footprints).
            Needs ``noise_index``; each row's ``footprints[i]`` is then measured from the original pixels
            of ``noise_footprints[noise_index[i]]`` (no heavy footprints, ``parent`` is not followed).
        noise_index : (n,) int array, optional
            The entry of ``noise_footprints`` holding each row.

        Returns
        -------
        astropy.table.Table
            ``sources`` with the plugin columns, ``meta["slots"]`` set from ``config.slots``.
        """
        cfg = self.config
        n = len(sources)
        if len(footprints) != n:
            raise ValueError(f"footprints has {len(footprints)} entries for {n} sources")
        for col in ("id", "parent"):
            if col not in sources.colnames:
                raise ValueError(f"sources lacks the column {col!r}")
        needs_psf = [p for p in ("base_SdssCentroid", "base_SdssShape", "base_PsfFlux", "base_LocalBackground")
                     if p in cfg.plugins]
        if exposure.psf is None and needs_psf:
            raise ValueError(f"exposure has no PSF; {', '.join(needs_psf)} need one")
        mi = exposure.masked_image
        bbox = Box2I.from_shape(mi.image.shape, mi.xy0)
        x0, y0 = mi.xy0
        # absurd pixel values are SUSPECT (the mask keeps the plane), so base_PixelFlags flags their sources
        n_suspect = mask_suspect_pixels(mi, cfg.suspect_level)
        if n_suspect:
            log.warning("%d pixels beyond the suspect level %g set SUSPECT", n_suspect, cfg.suspect_level)

        if noise_footprints is not None:
            if noise_index is None:
                raise ValueError("noise_footprints needs noise_index (the entry holding each row)")
            top = np.ascontiguousarray(noise_index, dtype=np.int64)
            if top.shape != (n,):
                raise ValueError(f"noise_index must have shape ({n},), got {top.shape}")
            if n and (top.min() < 0 or top.max() >= len(noise_footprints)):
                raise ValueError("noise_index has entries outside 0..len(noise_footprints)-1")
            is_top = np.ones(n, dtype=bool)  # every row measured from the original pixels
        else:
            is_top, top = _top_level_index(sources)
        top_rows = np.flatnonzero(is_top)

        fps = [fp if isinstance(fp, Footprint) else Footprint(fp) for fp in footprints]
        heavy_offsets = np.full(n, -1, dtype=np.int64)
        chunks, offset = [], 0
        for k, fp in enumerate(fps):
            if isinstance(fp, HeavyFootprint) and not is_top[k]:
                heavy_offsets[k] = offset
                chunks.append(np.asarray(fp.image, dtype=np.float32))
                offset += len(chunks[-1])  # one value per pixel (checked when the heavy footprint was made)
        heavy_values = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        record_set = FootprintSet.from_footprints(fps, bbox)
        if noise_footprints is None:
            parent_set = FootprintSet.from_footprints([fps[k] for k in top_rows], bbox)
        elif isinstance(noise_footprints, FootprintSet):
            parent_set = noise_footprints
        else:
            parent_set = FootprintSet.from_footprints(list(noise_footprints), bbox)
        cx = cy = None
        if centroids is not None:
            cx = np.ascontiguousarray(centroids[0], dtype=np.float64)
            cy = np.ascontiguousarray(centroids[1], dtype=np.float64)
            if cx.shape != (n,) or cy.shape != (n,):
                raise ValueError(f"centroids must be two arrays of shape ({n},), got {cx.shape} and {cy.shape}")

        ctrl = self._control(mi)
        if cfg.do_replace_with_noise and n > 0:  # nothing to measure: no noise statistics needed
            mean, sigma = noise_statistics(mi, ignored_mask_planes=cfg.noise_mask_planes,
                                           sample_step=cfg.noise_replacer.statistics_sample_step)
            if not (math.isfinite(mean) and math.isfinite(sigma)):
                mean, sigma = 0.0, 0.0  # nothing to estimate from: the footprints become flat
            ctrl.noise_mean, ctrl.noise_sigma = mean + cfg.noise_replacer.noise_offset, sigma
            ctrl.noise_seed = noise_seed(exposure_id, cfg.noise_replacer)

        psf = exposure.psf
        # Without a PSF no enabled plugin reads it (checked above); the driver still asks for its shape.
        core_psf = psf.core if psf is not None else _core.GaussianPsf(3, 1.0, (0.0, 0.0))
        image = mi.image
        if not image.flags.writeable or image.dtype != np.float32:
            raise ValueError("exposure image must be a writeable float32 array")
        columns = _core.measure_sources(image, mi.mask.array, mi.variance, int(x0), int(y0),
                                        record_set._core_tuple(), parent_set._core_tuple(), top,
                                        np.ascontiguousarray(heavy_values, np.float32), heavy_offsets,
                                        core_psf, ctrl, cx, cy)
        self._add_columns(sources, columns, _flag_names())
        if cx is not None:
            ok = np.isfinite(cx) & np.isfinite(cy)
            columns = dict(columns)
            columns["peak_x"] = np.where(ok, cx, columns["peak_x"])
            columns["peak_y"] = np.where(ok, cy, columns["peak_y"])
            columns.pop("base_SdssCentroid_x", None)
            columns.pop("base_SdssCentroid_y", None)
        self._catalog_plugins(sources, exposure, record_set, columns)
        sources.meta["slots"] = cfg.slots.as_meta()
        return sources

    def _add_columns(self, sources: Table, columns: dict, flag_names: dict) -> None:
        units = {"x": "pix", "y": "pix", "xErr": "pix", "yErr": "pix", "xx": "pix2", "yy": "pix2", "xy": "pix2",
                 "instFlux": "ct", "instFluxErr": "ct"}
        for key, values in columns.items():
            if key in ("peak_x", "peak_y"):
                continue
            if key.endswith("__flags"):
                prefix = key[: -len("__flags")]
                plugin = next(p for p in flag_names if prefix == p or prefix.startswith(p + "_"))
                for name, column in flag_columns(prefix, flag_names[plugin],
                                                 np.asarray(values, dtype=np.uint32)).items():
                    sources[name] = column
                continue
            sources[key] = values
            suffix = key.rsplit("_", 1)[-1]
            if suffix in units:
                sources[key].unit = units[suffix]

    def _catalog_plugins(self, sources: Table, exposure: Exposure, record_set: FootprintSet, columns) -> None:
        cfg = self.config
        slot_x = columns.get("base_SdssCentroid_x", columns["peak_x"])
        slot_y = columns.get("base_SdssCentroid_y", columns["peak_y"])
        # afw's centroid extractor: a centroid without a value falls back to the peak
        x = np.where(np.isfinite(slot_x), slot_x, columns["peak_x"])
        y = np.where(np.isfinite(slot_y), slot_y, columns["peak_y"])
        plugins = cfg.plugins
        if "base_SkyCoord" in plugins:
            for k, v in catalog_plugins.sky_coord(exposure.wcs, x, y).items():
                sources[k] = v
                sources[k].unit = "rad"
        if "base_FPPosition" in plugins:
            for k, v in catalog_plugins.fp_position(exposure.detector, x, y).items():
                sources[k] = v
        if "base_Jacobian" in plugins:
            for k, v in catalog_plugins.jacobian(exposure.wcs, x, y).items():
                sources[k] = v
        if "base_FootprintArea" in plugins:
            widths = (record_set.spans[:, 2].astype(np.int64) - record_set.spans[:, 1] + 1).cumsum()
            ends = np.concatenate([[0], widths])[record_set.span_offsets]  # pixels before each record's spans
            sources["base_FootprintArea_value"] = np.diff(ends).astype(np.int32)
        if "base_ClassificationSizeExtendedness" in plugins:
            out = catalog_plugins.classification_size_extendedness(
                sources["base_SdssShape_xx"], sources["base_SdssShape_yy"],
                sources["base_SdssShape_psf_xx"], sources["base_SdssShape_psf_yy"])
            for k, v in out.items():
                sources[k] = v
        if "base_ClassificationExtendedness" in plugins:
            out = catalog_plugins.classification_extendedness(
                sources["base_PsfFlux_instFlux"], sources["base_PsfFlux_flag"],
                sources["base_GaussianFlux_instFlux"], sources["base_GaussianFlux_flag"],
                flux_ratio=cfg.extendedness_flux_ratio)
            for k, v in out.items():
                sources[k] = v
