"""The ``reprocess`` step: per detector of every finalized visit, `ReprocessVisitImageTask` with the
calibrations of the visit summary (built here when missing).

Products per detector (LSST v2 names)::

    REPO/visit_image/<visit>/visit_image_<visit>_<detector>.fits          nJy, identity PhotoCalib, BUNIT
    REPO/source/<visit>/source_<visit>_<detector>.parquet                 the catalog, no footprints
    REPO/source_footprints/<visit>/source_footprints_<visit>_<detector>.fits   heavy footprints by id
    REPO/visit_image_background/<visit>/visit_image_background_<visit>_<detector>.fits
    REPO/provenance/reprocess/<visit>_<detector>.json                     status, counts, timings

A detector whose visit-summary row lacks a calibration is recorded as ``UpstreamFailureNoWorkFound``; any
other failure with its type and message; the other detectors go on, finished ones are skipped on a rerun.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..detection.background import BackgroundList
from ..io import read_catalog, read_exposure, read_mask, write_catalog
from ..io.fits import write_exposure
from ..io.footprints import write_footprints
from ..tasks.reprocess_visit_image import ReprocessVisitImageConfig, ReprocessVisitImageTask
from ..core.table import DetectorVisitIdGenerator
from ..tasks.update_visit_summary import calibrations_for, read_visit_summary
from .repository import Repository, UnitStatus, config_hash, recorded, summary_field
from .runner import run_units
from .visit_summary_step import run_visit_summary, visit_summary_path

__all__ = ["OUTPUTS", "ReprocessStepConfig", "reprocess_detector", "run_reprocess", "summary_lines"]

STEP = "reprocess"
OUTPUTS = {"visit_image": "fits", "source": "parquet", "source_footprints": "fits", "visit_image_background": "fits"}


class ReprocessStepConfig(BaseModel):
    """The step's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reprocess: ReprocessVisitImageConfig = Field(default_factory=ReprocessVisitImageConfig,
                                                 description="ReprocessVisitImageTask")


def reprocess_detector(root, visit: int, detector: int, config_json: str, overwrite: bool = False) -> UnitStatus:
    """Reprocess one detector; failures are recorded in the returned and stored status, never raised."""
    repo = Repository(root)
    config = ReprocessStepConfig.model_validate_json(config_json)
    chash = config_hash(config)
    paths = {name: repo.dataset_path(name, visit, detector, ext) for name, ext in OUTPUTS.items()}
    if not overwrite and repo.is_done(STEP, visit, detector, chash, paths.values()):
        return repo.read_status(STEP, visit, detector)
    timings: dict[str, float] = {}
    status = UnitStatus(step=STEP, visit=visit, detector=detector, status="failed", config_hash=chash,
                        timings=timings, versions={"visitcal": __version__, "numpy": np.__version__})
    with recorded(repo, status):  # a failure is recorded, the other units go on
        t0 = time.perf_counter()
        vs_path = visit_summary_path(repo, visit)
        if not vs_path.is_file():
            raise FileNotFoundError(f"{vs_path}: no visit summary (run visitcal finalize first)")
        cal = calibrations_for(read_visit_summary(vs_path), detector)
        snaps = [read_exposure(p) for p in repo.post_isr_snaps().get((visit, detector), [])]
        if not snaps:
            raise FileNotFoundError(f"no post_isr_image for visit {visit} detector {detector}")
        background = BackgroundList.read_fits(repo.dataset_path("preliminary_visit_image_background", visit, detector,
                                                                "fits"))
        # LSST's preliminary_mask input: calibrate's mask, for its SPIKE planes; a sky correction only when
        # asked for
        prelim = repo.dataset_path("preliminary_visit_image", visit, detector, "fits")
        prelim_mask = read_mask(prelim) if config.reprocess.copy_mask_planes else None
        sky_corr = None
        if config.reprocess.do_use_sky_corr:
            sky_path = repo.dataset_path("sky_corr", visit, detector, "fits")
            if not sky_path.is_file():
                raise FileNotFoundError(f"{sky_path}: do_use_sky_corr is set but there is no sky_corr")
            sky_corr = BackgroundList.read_fits(sky_path)
        stars_path = repo.root / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet"
        calib = None
        if stars_path.is_file():
            stars = read_catalog(stars_path)
            calib = stars[np.asarray(stars["detector"]) == detector]
        timings["read"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = ReprocessVisitImageTask(config.reprocess).run(
            exposures=snaps, psf=cal.psf, background=background, ap_corr=cal.ap_corr_map,
            photo_calib=cal.photo_calib, wcs=cal.wcs, calib_sources=calib,
            id_generator=DetectorVisitIdGenerator(visit, detector), preliminary_mask=prelim_mask, sky_corr=sky_corr)
        timings["reprocess"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for p in paths.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        res.exposure.background = None
        write_exposure(res.exposure, paths["visit_image"], overwrite=True)
        write_catalog(res.sources, paths["source"], overwrite=True)
        write_footprints(paths["source_footprints"], res.sources_footprints, np.asarray(res.sources["id"]),
                         overwrite=True)
        res.background.write_fits(paths["visit_image_background"], overwrite=True)
        timings["write"] = time.perf_counter() - t0
        stats = res.exposure.summary_stats or {}
        status.summary = {"n_sources": len(res.sources),
                          "n_calib_psf_used": int(np.sum(res.sources["calib_psf_used"])),
                          **{k: stats.get(k) for k in ("psfSigma", "zeroPoint", "skyBg", "skyNoise")}}
        status.status = "ok"
    return status


def run_reprocess(root, *, visits=None, detectors=None, jobs: int = 1, config: ReprocessStepConfig | None = None,
                  overwrite: bool = False, progress=None, executor=None) -> list[UnitStatus]:
    """Reprocess every (visit, detector) of the finalized visits (the visit summaries are written first when
    missing); returns the statuses in (visit, detector) order."""
    repo = Repository(root)
    config = config or ReprocessStepConfig()
    run_visit_summary(repo.root, visits=visits)
    finalized = {int(p.stem.rsplit("_", 1)[1]) for p in (repo.root / "visit_summary").glob("visit_summary_*.fits")}
    ids = [(v, d) for v, d in repo.data_ids(visits, detectors) if v in finalized]
    units = [(str(repo.root), v, d, config.model_dump_json(), overwrite) for v, d in ids]
    return run_units(reprocess_detector, units, jobs=jobs, executor=executor, progress=progress)


def summary_lines(statuses: list[UnitStatus]) -> list[str]:
    """A fixed-width text table of the reprocess units, one line per detector after a header line.

    Parameters
    ----------
    statuses : list of `UnitStatus`
        The per-detector statuses of the ``reprocess`` step.

    Returns
    -------
    lines : list of str
        Columns: visit, detector, status (``ok`` or the failure's exception type), number of sources,
        ``calib_psf_used`` stars, ``psfSigma`` (pixels), ``zeroPoint`` (mag) and the unit's total time
        (seconds); "-" for a missing value. A failed unit is followed by an indented line with the first
        200 characters of its error message.
    """
    lines = [f"{'visit':>7} {'det':>4} {'status':<28} {'nSrc':>6} {'psfUsed':>7} {'psfSigma':>8} {'zp':>8} "
             f"{'time s':>7}"]
    for s in statuses:
        sm = s.summary or {}

        def f(key, fmt):
            return summary_field(sm, key, fmt)
        state = "ok" if s.ok else (s.error_type or "failed")
        lines.append(f"{s.visit:>7} {s.detector:>4} {state:<28} {f('n_sources', 'd'):>6} "
                     f"{f('n_calib_psf_used', 'd'):>7} {f('psfSigma', '.3f'):>8} {f('zeroPoint', '.4f'):>8} "
                     f"{s.timings.get('total', float('nan')):>7.2f}")
        if not s.ok and s.message:
            lines.append(f"{'':>13}{s.message[:200]}")
    return lines
