"""The ``reprocess`` step: per detector of every finalized visit, `ReprocessVisitImageTask` with the
calibrations of the visit summary (built here when missing).

Products per detector (LSST v2 names)::

    REPO/visit_image/<visit>/visit_image_<visit>_<detector>.fits          nJy, identity PhotoCalib, BUNIT
    REPO/source/<visit>/source_<visit>_<detector>.parquet                 the catalog, no footprints
    REPO/source_footprints/<visit>/source_footprints_<visit>_<detector>.fits   heavy footprints by id
    REPO/visit_image_background/<visit>/visit_image_background_<visit>_<detector>.fits
    REPO/source_table/<visit>/source_table_<visit>_<detector>.parquet     with write_source_table only
    REPO/provenance/reprocess/<visit>_<detector>.json                     status, counts, timings

``source_table`` (not written by default) is ``source`` in LSST's standardized form
(`visitcal.io.afw_catalog.to_source_table`: ``psfFlux``, ``calibFlux`` in nJy, ``ra`` / ``dec`` in degrees,
``pixelFlags_*`` ...), what LSST's ``TransformSourceTableTask`` makes of its ``source_unstandardized``; the
afw-named ``source`` is written either way. The flag is part of the step's config hash: turning it on redoes
the detectors (their other products come out byte-identical and are left as they were), turning it off
redoes them too and removes the ``source_table`` files a previous run wrote, so that the repository holds
what its last configuration asked for.

A detector whose visit-summary row is ``degraded`` (a fallback calibration: see `visitcal.tasks.update_visit_summary`)
is reprocessed and recorded ``degraded``, the row's message in its provenance and in the ``source`` metadata
(``DEGRADED``, ``DEGRADED_REASON``). A detector whose visit-summary row lacks a calibration is recorded as
``UpstreamFailureNoWorkFound``; any
other failure (an unreadable input among them) with its type and message; the other detectors go on.

A detector's inputs are its ``post_isr_image`` snaps, its visit's ``visit_summary`` and ``refit_psf_star``,
its ``preliminary_visit_image_background``, its ``preliminary_visit_image`` (for the mask planes, when
``copy_mask_planes``) and its ``sky_corr`` (when ``do_use_sky_corr``); its provenance records their SHA-256
digests and its outputs'. A rerun skips a detector only when it is up to date (`Repository.unit_action`), so
a visit summary that changes redoes its visit's detectors; products that come out byte-identical are left
as they were.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..detection.background import BackgroundList
from ..io import read_catalog, read_mask, write_catalog
from ..io.afw_catalog import to_source_table
from ..io.fits import write_exposure
from ..io.footprints import write_footprints
from ..tasks.reprocess_visit_image import ReprocessVisitImageConfig, ReprocessVisitImageTask
from ..core.table import DetectorVisitIdGenerator
from ..tasks.update_visit_summary import calibrations_for, read_visit_summary
from .repository import (DEGRADED, SKIPPED, SKIPPED_CRASHED, config_hash, crashed_unit_status, degraded_meta,
                         recorded, Repository, summary_field, unit_line, UnitStatus, write_product)
from .runner import run_units
from .snaps import read_summed_snaps
from .visit_summary_step import run_visit_summary, visit_summary_path

__all__ = ["OPTIONAL_OUTPUTS", "OUTPUTS", "ReprocessStepConfig", "reprocess_detector", "run_reprocess",
           "summary_lines"]

STEP = "reprocess"
OUTPUTS = {"visit_image": "fits", "source": "parquet", "source_footprints": "fits", "visit_image_background": "fits"}
#: Products written only when the step's config asks for them (its flag -> dataset, extension).
OPTIONAL_OUTPUTS = {"write_source_table": ("source_table", "parquet")}


class ReprocessStepConfig(BaseModel):
    """The step's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reprocess: ReprocessVisitImageConfig = Field(default_factory=ReprocessVisitImageConfig,
                                                 description="ReprocessVisitImageTask")
    write_source_table: bool = Field(
        False, description="Also write source_table: the source catalog in LSST's standardized (DPDD) form "
        "(psfFlux, calibFlux in nJy, ra/dec in degrees, pixelFlags_*; visitcal.io.afw_catalog.to_source_table), "
        "as LSST's TransformSourceTableTask makes it. Not part of LSST's ReprocessVisitImageTask.")


def _output_paths(repo: Repository, config: "ReprocessStepConfig", visit: int, detector: int):
    """The detector's products under ``config`` (``{dataset: path}``) and the optional ones it does not write."""
    paths = {name: repo.dataset_path(name, visit, detector, ext) for name, ext in OUTPUTS.items()}
    unwanted = {}
    for flag, (name, ext) in OPTIONAL_OUTPUTS.items():
        (paths if getattr(config, flag) else unwanted)[name] = repo.dataset_path(name, visit, detector, ext)
    return paths, unwanted


def _input_paths(repo: Repository, visit: int, detector: int):
    """A detector's possible inputs: visit summary, snaps, background, preliminary image, sky correction and
    the visit's refit PSF stars."""
    vs_path = visit_summary_path(repo, visit)
    snap_paths = repo.post_isr_snaps().get((visit, detector), [])
    bg_path = repo.dataset_path("preliminary_visit_image_background", visit, detector, "fits")
    # LSST's preliminary_mask input: calibrate's mask, for its SPIKE planes; a sky correction only when asked for
    prelim = repo.dataset_path("preliminary_visit_image", visit, detector, "fits")
    sky_path = repo.dataset_path("sky_corr", visit, detector, "fits")
    stars_path = repo.root / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet"
    return vs_path, snap_paths, bg_path, prelim, sky_path, stars_path


def _input_digests(repo: Repository, config: "ReprocessStepConfig", vs_path, snap_paths, bg_path, prelim, sky_path,
                   stars_path) -> dict[str, str]:
    """The digests of the files the detector reads with ``config``."""
    read = [vs_path, *snap_paths, bg_path] + ([prelim] if config.reprocess.copy_mask_planes else []) \
        + ([sky_path] if config.reprocess.do_use_sky_corr else []) + ([stars_path] if stars_path.is_file() else [])
    return repo.digests(read)


def reprocess_detector(root, visit: int, detector: int, config_json: str, overwrite: bool = False) -> UnitStatus:
    """Reprocess one detector; failures are recorded in the returned and stored status, never raised."""
    repo = Repository(root)
    config = ReprocessStepConfig.model_validate_json(config_json)
    chash = config_hash(config)
    paths, unwanted = _output_paths(repo, config, visit, detector)
    vs_path, snap_paths, bg_path, prelim, sky_path, stars_path = _input_paths(repo, visit, detector)
    inputs = _input_digests(repo, config, vs_path, snap_paths, bg_path, prelim, sky_path, stars_path)
    previous = repo.read_status(STEP, visit, detector)
    action = repo.unit_action(previous, chash, inputs, paths.values(), overwrite)
    if action in (SKIPPED, SKIPPED_CRASHED):  # up to date, or left failed after crashing twice
        return dataclasses.replace(previous, action=action)
    timings: dict[str, float] = {}
    status = UnitStatus(step=STEP, visit=visit, detector=detector, status="failed", config_hash=chash,
                        timings=timings, versions={"visitcal": __version__, "numpy": np.__version__},
                        inputs=inputs, action=action)
    with recorded(repo, status):  # a failure is recorded, the other units go on
        t0 = time.perf_counter()
        if not vs_path.is_file():
            raise FileNotFoundError(f"{vs_path}: no visit summary (run visitcal finalize first)")
        cal = calibrations_for(read_visit_summary(vs_path), detector)
        if not snap_paths:
            raise FileNotFoundError(f"no post_isr_image for visit {visit} detector {detector}")
        task = ReprocessVisitImageTask(config.reprocess)
        # summed here, into the first snap's planes, the second added as it is read (the task gets the sum:
        # one snap passes through it unchanged); the same bytes as the task's own combination
        exposure = read_summed_snaps(snap_paths, config.reprocess.snap_combine_bad_mask_planes)
        background = BackgroundList.read_fits(bg_path)
        prelim_mask = read_mask(prelim) if config.reprocess.copy_mask_planes else None
        sky_corr = None
        if config.reprocess.do_use_sky_corr:
            if not sky_path.is_file():
                raise FileNotFoundError(f"{sky_path}: do_use_sky_corr is set but there is no sky_corr")
            sky_corr = BackgroundList.read_fits(sky_path)
        calib = None
        if stars_path.is_file():
            stars = read_catalog(stars_path)
            calib = stars[np.asarray(stars["detector"]) == detector]
        timings["read"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = task.run(
            exposures=exposure, psf=cal.psf, background=background, ap_corr=cal.ap_corr_map,
            photo_calib=cal.photo_calib, wcs=cal.wcs, calib_sources=calib,
            id_generator=DetectorVisitIdGenerator(visit, detector), preliminary_mask=prelim_mask, sky_corr=sky_corr)
        timings["reprocess"] = time.perf_counter() - t0
        reasons = [f"visit summary: {cal.message}"] if cal.degraded else []
        degraded_meta(res.sources.meta, reasons)
        t0 = time.perf_counter()
        res.exposure.background = None
        writers = {
            "visit_image": lambda p: write_exposure(res.exposure, p, overwrite=True),
            "source": lambda p: write_catalog(res.sources, p, overwrite=True),
            "source_footprints": lambda p: write_footprints(p, res.sources_footprints, np.asarray(res.sources["id"]),
                                                            overwrite=True),
            "visit_image_background": lambda p: res.background.write_fits(p, overwrite=True),
        }
        if "source_table" in paths:
            writers["source_table"] = lambda p: write_catalog(to_source_table(res.sources), p, overwrite=True)
        for path in unwanted.values():  # a previous configuration's optional product: no longer ours
            path.unlink(missing_ok=True)
        status.outputs = {repo.relpath(paths[name]): write_product(paths[name], w, root=repo.root)
                          for name, w in writers.items()}
        timings["write"] = time.perf_counter() - t0
        stats = res.exposure.summary_stats or {}
        status.summary = {"n_sources": len(res.sources),
                          "n_calib_psf_used": int(np.sum(res.sources["calib_psf_used"])),
                          **{k: stats.get(k) for k in ("psfSigma", "zeroPoint", "skyBg", "skyNoise")}}
        status.status = DEGRADED if reasons else "ok"
        status.message = "; ".join(reasons) if reasons else None
    return status


def run_reprocess(root, *, visits=None, detectors=None, jobs: int = 1, config: ReprocessStepConfig | None = None,
                  overwrite: bool = False, progress=None, executor=None, visit_summaries: bool = True
                  ) -> list[UnitStatus]:
    """Reprocess every (visit, detector) of the finalized visits; returns the statuses in (visit, detector)
    order. With ``visit_summaries`` (the default) the visit summaries are brought up to date first
    (`run_visit_summary`); pass False when the caller has just done so."""
    repo = Repository(root)
    config = config or ReprocessStepConfig()
    if visit_summaries:
        run_visit_summary(repo.root, visits=visits, jobs=jobs, executor=executor)
    finalized = {int(p.stem.rsplit("_", 1)[1]) for p in (repo.root / "visit_summary").glob("visit_summary_*.fits")}
    ids = [(v, d) for v, d in repo.data_ids(visits, detectors) if v in finalized]
    units = [(str(repo.root), v, d, config.model_dump_json(), overwrite) for v, d in ids]
    return run_units(reprocess_detector, units, jobs=jobs, executor=executor, progress=progress, crashed=_crashed)


def _crashed(unit, message):
    """The recorded status of a detector whose worker died (`run_units`' ``crashed`` callback)."""
    root, visit, detector, config_json = unit[:4]
    config = ReprocessStepConfig.model_validate_json(config_json)
    repo = Repository(root)
    inputs = _input_digests(repo, config, *_input_paths(repo, visit, detector))
    return crashed_unit_status(STEP, root, visit, [detector], message, config_hash(config), inputs)[0]


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
        ``calib_psf_used`` stars, ``psfSigma`` (pixels), ``zeroPoint`` (mag), the unit's total time
        (seconds) and its action (``done``, ``redone (<why>)``); "-" for a missing value. A skipped unit's
        line says ``skipped (up to date)`` only. A failed unit is followed by an indented line with the first
        200 characters of its error message.
    """
    lines = [f"{'visit':>7} {'det':>4} {'status':<28} {'nSrc':>6} {'psfUsed':>7} {'psfSigma':>8} {'zp':>8} "
             f"{'time s':>7}"]
    for s in statuses:
        sm = s.summary or {}

        def f(key, fmt):
            return summary_field(sm, key, fmt)
        state = s.status if s.ok else (s.error_type or "failed")
        lines.append(unit_line(s, f"{s.visit:>7} {s.detector:>4}",
                               f"{state:<28} {f('n_sources', 'd'):>6} {f('n_calib_psf_used', 'd'):>7} "
                               f"{f('psfSigma', '.3f'):>8} {f('zeroPoint', '.4f'):>8} "
                               f"{s.timings.get('total', float('nan')):>7.2f}"))
        if (s.degraded or not s.ok) and s.message and not s.skipped:
            lines.append(f"{'':>13}{s.message[:200]}")
    return lines
