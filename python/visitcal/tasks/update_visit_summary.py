"""The per-visit ``visit_summary`` (LSST drp_tasks' ``UpdateVisitSummaryTask``, the DRP step between
finalize and reprocessing): one row per detector, sorted, joining the refit PSF and aperture corrections
of finalize (``refit_psf_models``) with the WCS and PhotoCalib of calibration (``preliminary_visit_image``;
in LSST these come from gbdes and FGCM, here from our own per-detector fits), and the summary statistics
recomputed with the refit PSF (`ComputeExposureSummaryStatsTask`).

A detector whose zero point comes from fewer stars than calibration's ``min_n_stars`` (its calexp's
``MAGZERO_NOBJ`` < ``MAGZERO_MIN_NOBJ``), or whose error ``MAGZERO_ERR`` exceeds ``detector_zero_point_scatter``
(its own stars know its zero point less well than the visit's other detectors do), takes the visit's zero point: the inverse-variance mean of its own
zero point and every other calibrated detector's, per electron (through each detector's ``GAIN``, when every
one has it), each other detector's variance its error (``MAGZERO_ERR``, the error with its stars' excess
scatter; ``MAGZERO_RMS`` without it) squared plus ``detector_zero_point_scatter`` squared (the detectors'
throughputs differ by that much per electron, which no visit-level value can know). Its row's status becomes
``degraded`` (a finalize failure stays) and the message gives the value, the detectors and the weight of its
own. Not LSST (FGCM calibrates the whole visit). A median over the detectors with enough stars, the rule
before, gave the one detector of a u-band visit that had five stars, 34 mmag off, to three detectors whose own
zero points were closer (bench/README.md).

Reprocessing reads its calibrations from this table. A detector whose row lacks one of them (its PSF fit or
ap-corr fit failed in finalize, its calibration failed) is an upstream failure: `calibrations_for` raises
`UpstreamFailureNoWorkFound` naming what is missing, as LSST's ``ReprocessVisitImageTask`` does.

Persistence (`write_visit_summary` / `read_visit_summary`): FITS, an ``INDEX`` binary table with the scalar
columns (detector, visit, bbox, status, the WCS as FITS header text, the summary statistics; list-valued
statistics such as ``raCorners`` as fixed-length array columns) and one table HDU per PSF, ap-corr map and
PhotoCalib (`visitcal.core.persistence`, float64: lossless).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .compute_exposure_summary_stats import ComputeExposureSummaryStatsConfig, ComputeExposureSummaryStatsTask
from ..core.atomic import atomic_write_fits
from ..core.persistence import component_from_table, component_to_table
from ..core.photocalib import PhotoCalib
from ..core.wcs import read_wcs, wcs_to_header

__all__ = ["UpdateVisitSummaryTask", "UpstreamFailureNoWorkFound", "VisitCalibrations", "calibrations_for",
           "detector_row", "make_visit_summary_table", "read_visit_summary", "write_visit_summary",
           "zero_point_of"]

#: The object columns of a visit_summary (None where missing).
COMPONENTS = ("psf", "ap_corr_map", "photo_calib")


class UpstreamFailureNoWorkFound(RuntimeError):
    """The detector's visit_summary row lacks a calibration: an earlier step failed there, no work to do."""


@dataclasses.dataclass(frozen=True)
class VisitCalibrations:
    """What reprocessing attaches to a detector: ``psf``, ``ap_corr_map``, ``wcs``, ``photo_calib``; and the
    row's ``status`` and ``message`` (``"degraded"`` and why, when one of them is a documented fallback)."""

    psf: object
    ap_corr_map: object
    wcs: object
    photo_calib: object
    status: str = "ok"
    message: str = ""

    @property
    def degraded(self) -> bool:
        """Whether a calibration of the row is a documented fallback (``status == "degraded"``)."""
        return self.status == "degraded"


def calibrations_for(visit_summary: Table, detector: int) -> VisitCalibrations:
    """The calibrations of ``detector`` from a visit summary.

    Raises
    ------
    UpstreamFailureNoWorkFound
        No row for the detector, or its row lacks a PSF, an ap-corr map, a WCS or a PhotoCalib (named).
    """
    hit = np.flatnonzero(np.asarray(visit_summary["detector"]) == int(detector))
    if hit.size == 0:
        raise UpstreamFailureNoWorkFound(f"detector {detector}: no row in the visit summary (no finalize output)")
    row = visit_summary[int(hit[0])]
    missing = [name for name in ("psf", "ap_corr_map", "wcs", "photo_calib") if row[name] is None]
    if missing:
        raise UpstreamFailureNoWorkFound(f"detector {detector}: the visit summary row has no {', '.join(missing)} "
                                         f"(status {str(row['status'])!r}: {row['message']})")
    return VisitCalibrations(psf=row["psf"], ap_corr_map=row["ap_corr_map"], wcs=row["wcs"],
                             photo_calib=row["photo_calib"], status=str(row["status"]), message=str(row["message"]))


class UpdateVisitSummaryTask:
    """Build a visit summary from finalize's ``psf_ap_corr_cat`` and the calibrated exposures.

    Parameters
    ----------
    config : `ComputeExposureSummaryStatsConfig`, optional
        Of the summary statistics.
    detector_zero_point_scatter : float, optional
        Not LSST: the rms (mag) of the detectors' zero points per electron about the visit's, for the visit
        zero point of a detector with too few stars (module docstring); 0.01, the simulator's throughput
        offsets. In [0, 1].
    """

    def __init__(self, config: ComputeExposureSummaryStatsConfig | None = None, *,
                 detector_zero_point_scatter: float = 0.01):
        if not (isinstance(detector_zero_point_scatter, (int, float)) and 0.0 <= detector_zero_point_scatter <= 1.0):
            raise ValueError(f"detector_zero_point_scatter must be a number of magnitudes in [0, 1], got "
                             f"{detector_zero_point_scatter!r}")
        self.compute_summary_stats = ComputeExposureSummaryStatsTask(config)
        self.detector_zero_point_scatter = float(detector_zero_point_scatter)

    def run(self, visit: int, psf_ap_corr_cat: Table, calexp_dict: Mapping, *, background_dict: Mapping | None = None,
            source_dict: Mapping | None = None) -> Table:
        """One row per detector of ``calexp_dict`` (sorted).

        Parameters
        ----------
        visit : int
        psf_ap_corr_cat : `astropy.table.Table`
            finalize's ``refit_psf_models`` (``detector``, ``psf``, ``ap_corr_map``, ``status``, ``message``).
        calexp_dict : mapping detector -> `Exposure` (or a callable returning it)
            The calibrated exposures (``preliminary_visit_image``): WCS, PhotoCalib, pixels for the statistics.
        background_dict : mapping detector -> `BackgroundList` (or callable), optional
            For ``skyBg``.
        source_dict : mapping detector -> Table (or callable), optional
            finalize's star table rows of the detector, for ``nPsfStar`` (``calib_psf_used``) and the
            ``psfStarDelta*`` statistics (its stars' and the refit model's moments).
        """
        models = {int(r["detector"]): r for r in psf_ap_corr_cat}
        rows = []
        zps = {}  # detector -> _ZeroPoint of its own stars
        waiting = {}  # detector -> (row, exposure): a zero point from too few stars, finished below
        for det in sorted(int(d) for d in calexp_dict):
            exposure = _load(calexp_dict[det])
            row = detector_row(visit, det, models.get(det), exposure.wcs, exposure.photo_calib, exposure.bbox)
            rows.append(row)
            zps[det] = _ZeroPoint.of(exposure)
            if self.waits_for_visit_zero_point(zps[det]):
                waiting[det] = (row, exposure)  # its stats wait for the visit's zero point
                continue
            self._stats(row, exposure, det, background_dict, source_dict)
        for det, (row, exposure) in waiting.items():
            self.apply_visit_zero_point(row, det, zps)
            self._stats(row, exposure, det, background_dict, source_dict)
        return _make_table(rows)

    def waits_for_visit_zero_point(self, zero_point: "_ZeroPoint | None") -> bool:
        """Whether a detector whose own zero point is ``zero_point`` (`zero_point_of`) takes the visit's (fewer
        than its ``MAGZERO_MIN_NOBJ`` stars, or an error over ``detector_zero_point_scatter``): its statistics
        are then computed after `apply_visit_zero_point`."""
        return zero_point is not None and (not zero_point.enough
                                           or zero_point.error > self.detector_zero_point_scatter)

    def detector_stats(self, row: dict, exposure, background=None, sources=None) -> None:
        """Set ``row["stats"]`` (the summary statistics of the detector's ``exposure`` with the row's PSF and
        PhotoCalib, its ``background`` and finalize's ``sources`` rows); nothing for a row without a PSF.
        ``exposure``'s PSF and PhotoCalib are replaced by the row's."""
        if row["psf"] is None:
            return
        exposure.psf = row["psf"]
        exposure.photo_calib = row["photo_calib"]
        row["stats"] = self.compute_summary_stats.run(exposure, sources, background)

    def _stats(self, row, exposure, det, background_dict, source_dict) -> None:
        if row["psf"] is None:
            return
        background = _load(background_dict[det]) if background_dict and det in background_dict else None
        sources = _load(source_dict[det]) if source_dict and det in source_dict else None
        self.detector_stats(row, exposure, background, sources)

    def apply_visit_zero_point(self, row: dict, det: int, zps: Mapping) -> None:
        """Give a waiting detector's row (`waits_for_visit_zero_point`: a zero point from fewer than its
        ``MAGZERO_MIN_NOBJ`` stars, or with an error over ``detector_zero_point_scatter``) the visit's zero point
        (module docstring) and mark it degraded; with no other calibrated detector it keeps its own, marked too.

        ``zps`` is ``{detector: zero point}`` (`zero_point_of`, None where there is none) of every detector
        with a row, in detector order. The row's statistics are computed after this (`detector_stats`)."""
        have = {d: z for d, z in zps.items() if z is not None and math.isfinite(z.zero_point)}
        use_gain = all(math.isfinite(z.gain) and z.gain > 0 for z in have.values())

        def per_e(z):
            return z.zero_point + (2.5 * math.log10(z.gain) if use_gain else 0.0)

        tau2 = self.detector_zero_point_scatter ** 2
        own = zps[det]
        others = {d: z for d, z in have.items() if d != det}
        if others:
            values = [per_e(own)] + [per_e(z) for z in others.values()]
            variances = [own.error ** 2] + [z.error ** 2 + tau2 for z in others.values()]
            w = 1.0 / np.array(variances)
            value = float(np.sum(w * np.array(values)) / np.sum(w))
            err = float(math.sqrt(1.0 / np.sum(w)))
            zp = value - (2.5 * math.log10(own.gain) if use_gain else 0.0)
            row["photo_calib"] = PhotoCalib.from_zero_point(zp, err)
            why = (f"zero point: the visit's {zp:.4f} +- {err:.4f} (inverse-variance mean of its own and "
                   f"{len(others)} other detector(s)' [{', '.join(str(d) for d in sorted(others))}], "
                   f"{'per electron, with each GAIN' if use_gain else 'per count, no GAIN'}, detector scatter "
                   f"{self.detector_zero_point_scatter:.4f} mag; its own weight {w[0] / np.sum(w):.2f}) instead "
                   f"of its own {own.zero_point:.4f} +- {own.error:.4f} from {own.n_stars} star(s), "
                   + (f"fewer than {own.min_n_stars}" if not own.enough else
                      f"its error over the detector scatter {self.detector_zero_point_scatter:.4f}"))
        else:
            why = (f"zero point: its own {own.zero_point:.4f} +- {own.error:.4f} from {own.n_stars} star(s), "
                   + (f"fewer than {own.min_n_stars}" if not own.enough else "an error over the detector scatter")
                   + ", kept: no other detector of the visit is calibrated")
        if row["status"] == "ok":
            row["status"] = "degraded"
        row["message"] = f"{row['message']}; {why}" if row["message"] else why


def detector_row(visit: int, det: int, model, wcs, photo_calib, bbox) -> dict:
    """A detector's visit-summary row before its statistics: finalize's ``model`` (its ``refit_psf_models`` row:
    ``psf``, ``ap_corr_map``, ``status``, ``message``; None when finalize gave it none) and the calibrated
    exposure's ``wcs``, ``photo_calib`` and ``bbox`` (`visitcal.core.geom.Box2I`)."""
    return {"detector": det, "visit": int(visit), "psf": model["psf"] if model is not None else None,
            "ap_corr_map": model["ap_corr_map"] if model is not None else None, "wcs": wcs,
            "photo_calib": photo_calib, "bbox": (bbox.min_x, bbox.min_y, bbox.max_x, bbox.max_y),
            "status": str(model["status"]) if model is not None else "no_finalize_row",
            "message": str(model["message"]) if model is not None else "finalize gave this detector no row",
            "stats": {}}


def zero_point_of(exposure) -> "_ZeroPoint | None":
    """A calibrated exposure's zero point from its own stars as calibration recorded it (its PhotoCalib and the
    ``MAGZERO_*`` / ``GAIN`` cards; picklable), None without them; for `UpdateVisitSummaryTask`'s visit zero
    point."""
    return _ZeroPoint.of(exposure)


def make_visit_summary_table(rows: list) -> Table:
    """The visit-summary table of rows (`detector_row` with their ``stats``), in the given order."""
    return _make_table(rows)


def _header_value(metadata, key):
    """A metadata card by its name, written with or without ``HIERARCH`` (None when absent)."""
    if metadata is None:
        return None
    for name in (key, "HIERARCH " + key):
        if name in metadata:
            return metadata[name]
    return None


@dataclasses.dataclass(frozen=True)
class _ZeroPoint:
    """A calibrated detector's zero point (mag of one count) from its own stars, as calibration recorded it."""

    zero_point: float
    sigma: float
    n_stars: int
    min_n_stars: int
    gain: float
    error: float  # MAGZERO_ERR (with the stars' excess scatter); MAGZERO_RMS without it; a floor of 1 mmag

    @property
    def enough(self) -> bool:
        return self.n_stars >= self.min_n_stars

    @classmethod
    def of(cls, exposure) -> "_ZeroPoint | None":
        """None without a PhotoCalib or without the calibration's ``MAGZERO_NOBJ`` / ``MAGZERO_MIN_NOBJ``."""
        pc, md = exposure.photo_calib, exposure.metadata
        n, need = _header_value(md, "MAGZERO_NOBJ"), _header_value(md, "MAGZERO_MIN_NOBJ")
        if pc is None or n is None or need is None:
            return None
        gain = _header_value(md, "GAIN")
        sigma = _header_value(md, "MAGZERO_RMS")
        sigma = float(sigma) if sigma is not None else math.nan
        error = _header_value(md, "MAGZERO_ERR")
        error = float(error) if error is not None and math.isfinite(float(error)) else sigma
        # a floor: a zero point is never known better than 1 mmag, and a zero or NaN error must not take all the weight
        error = max(error, 0.001) if math.isfinite(error) else 0.1
        return cls(float(pc.zero_point), sigma, int(n), int(need), float(gain) if gain is not None else math.nan,
                   error)


def _stat_names(rows) -> list[str]:
    names: list[str] = []
    for r in rows:
        for k in r["stats"]:
            if k not in names:
                names.append(k)
    return names


def _make_table(rows) -> Table:
    n = len(rows)
    t = Table()
    t["detector"] = np.array([r["detector"] for r in rows], np.int32).reshape(n)
    t["visit"] = np.array([r["visit"] for r in rows], np.int64).reshape(n)
    for name in ("psf", "ap_corr_map", "wcs", "photo_calib"):
        col = np.empty(n, dtype=object)
        for k, r in enumerate(rows):
            col[k] = r[name]
        t[name] = col
    t["bbox"] = np.array([r["bbox"] for r in rows], np.int32).reshape(n, 4)
    t["status"] = np.array([r["status"] for r in rows], dtype=str).reshape(n) if n else np.zeros(0, "U1")
    t["message"] = np.array([r["message"] for r in rows], dtype=str).reshape(n) if n else np.zeros(0, "U1")
    t["id"] = t["detector"].copy()  # LSST's name of the detector column (visit summaries are ExposureCatalogs)
    for name in _stat_names(rows):
        values = [r["stats"].get(name) for r in rows]
        if any(isinstance(v, str) for v in values):
            t[name] = np.array(["" if v is None else str(v) for v in values], dtype=str).reshape(n)
        elif any(isinstance(v, (list, tuple)) for v in values):
            width = max(len(v) for v in values if isinstance(v, (list, tuple)))
            t[name] = np.array([v if isinstance(v, (list, tuple)) else [math.nan] * width for v in values],
                               np.float64).reshape(n, width)
        else:
            t[name] = np.array([math.nan if v is None else v for v in values], np.float64)
    return t


def write_visit_summary(table: Table, path, *, overwrite: bool = False, header: dict | None = None) -> Path:
    """Write a visit summary to FITS, losslessly (see the module docstring).

    ``header`` adds keywords to the ``INDEX`` HDU's header (``{keyword: value}``; a long string continues over
    CONTINUE cards), e.g. a degraded summary's status and reason."""
    index = Table()
    for name in table.colnames:
        if name in COMPONENTS or name == "wcs":
            continue
        index[name] = table[name]
    index["wcs_header"] = np.array([wcs_to_header(w).tostring() if w is not None else "" for w in table["wcs"]],
                                   dtype=str) if len(table) else np.zeros(0, "U1")
    hdus = [fits.PrimaryHDU()]
    components = []
    next_hdu = 2
    for name in COMPONENTS:
        where = np.full(len(table), -1, np.int32)
        for k, obj in enumerate(table[name]):
            if obj is None:
                continue
            hdu = fits.table_to_hdu(component_to_table(obj))
            hdu.name = f"{name.upper()}_{int(table['detector'][k])}"
            components.append(hdu)
            where[k] = next_hdu
            next_hdu += 1
        index[f"{name}_hdu"] = where
    index_hdu = fits.table_to_hdu(index)
    index_hdu.name = "INDEX"
    for key, value in (header or {}).items():
        index_hdu.header[key] = value
    hdus.append(index_hdu)
    hdus.extend(components)
    atomic_write_fits(fits.HDUList(hdus), path, overwrite=overwrite)
    return Path(path)


def read_visit_summary(path) -> Table:
    """Read a file written by `write_visit_summary`."""
    path = Path(path)
    with fits.open(path) as hdul:
        if "INDEX" not in hdul:
            raise ValueError(f"{path}: no INDEX HDU; not a visit_summary file")
        index = Table.read(hdul["INDEX"])
        comps = {name: [] for name in COMPONENTS}
        for row in index:
            for name in COMPONENTS:
                k = int(row[f"{name}_hdu"])
                comps[name].append(None if k < 0 else
                                   component_from_table(Table.read(hdul[k]), where=f"{path}[{k}]"))
    t = Table()
    t["detector"] = np.asarray(index["detector"], np.int32)
    t["visit"] = np.asarray(index["visit"], np.int64)
    n = len(index)
    for name in COMPONENTS:
        col = np.empty(n, dtype=object)
        for k, obj in enumerate(comps[name]):
            col[k] = obj
        t[name] = col
    wcs_col = np.empty(n, dtype=object)
    for k, text in enumerate(index["wcs_header"]):
        wcs_col[k] = read_wcs(fits.Header.fromstring(str(text)), where=f"{path} detector {t['detector'][k]}") \
            if str(text) else None
    t["wcs"] = wcs_col
    for name in index.colnames:
        if name in ("detector", "visit", "wcs_header") or name.endswith("_hdu"):
            continue
        t[name] = index[name]
    return t[["detector", "visit", "psf", "ap_corr_map", "wcs", "photo_calib"]
             + [c for c in t.colnames if c not in ("detector", "visit", *COMPONENTS, "wcs")]]


def _load(obj):
    if callable(obj) and not hasattr(obj, "masked_image") and not isinstance(obj, Table):
        return obj()
    return obj
