"""The ``calibrate`` step over a repository: per detector, snap sum -> `CharacterizeImageTask` ->
`CalibrateTask` -> ``preliminary_visit_image`` (FITS, counts, with PSF, ap-corr map, WCS, PhotoCalib and
summary statistics), ``preliminary_visit_image_background`` (FITS table of the subtracted background),
``single_visit_star`` (Parquet: the calibrated source catalog with ``visit``, ``detector``, ``band`` and
``physical_filter`` columns; LSST's afw column names) and ``single_visit_star_footprints`` (the sources'
heavy footprints by id, `visitcal.io.footprints`).

Each detector is independent: its failure (a typed error such as `AstrometryError`, `PhotoCalError`,
`PsfTooFewStarsError`) is recorded in its provenance with the error's type and message, its outputs are
not written, and the other detectors go on.

A detector calibrated with a documented fallback (an aperture correction of lower order or from fainter stars,
the calibration-flux normalisation's median ratio, a zero point from fewer than ``min_n_stars`` stars) is
``degraded``: its products are written and used downstream, and the reasons are in its provenance
(``message``, ``summary["degraded_reasons"]``, with ``summary["ap_corr_orders"]``), in the
``single_visit_star`` metadata (``DEGRADED``, ``DEGRADED_REASON``) and in the step's summary lines.

Crowded-field mode (not LSST, `visitcal.detection.crowding`): characterisation decides per detector whether it is
crowded (``characterize.crowded_field``, "auto" by default) and calibration follows; the decision, the measure and
the threshold are in the provenance's ``summary`` (``crowded_field``, ``crowding``, ``crowding_threshold``), in the
``preliminary_visit_image`` metadata (``CROWDED_FIELD``, ``CROWDING``, ``CROWDING_THRESHOLD``, which finalize
reads), in the ``single_visit_star`` metadata (``CROWDED_FIELD``) and in the step's summary lines (``crowded``). It is
a mode, not a fallback: such a detector is ``ok`` unless a fallback made it ``degraded``.

The provenance's ``summary`` also records the detector's sky footprint (`sky_boundary`), which ``associate``
uses to place a ``single_visit_star`` it cannot read.

A detector's inputs are its ``post_isr_image`` snaps and ``refcat.parquet``; its provenance records their
SHA-256 digests and those of its outputs, and a rerun skips it only when it is up to date: status ok, same
config, the same input digests, outputs present and unchanged (`Repository.unit_action`). A redone detector
whose products come out byte-identical leaves the files as they were (`write_product`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..tasks.calibrate import CalibrateConfig, CalibrateTask
from ..tasks.characterize_image import CharacterizeImageConfig, CharacterizeImageTask
from ..io import read_catalog, write_catalog
from ..io.fits import write_exposure
from ..io.footprints import write_footprints
from ..calib.ref_loader import ReferenceObjectLoader
from ..core.table import DetectorVisitIdGenerator
from ..core.wcs import pixel_to_sky
from .repository import (DEGRADED, SKIPPED, SKIPPED_CRASHED, config_hash, crashed_unit_status, degraded_meta,
                         recorded, Repository, summary_field, unit_line, UnitStatus, write_product)
from .runner import run_units
from .snaps import read_summed_snaps

__all__ = ["CalibrateStepConfig", "OUTPUTS", "calibrate_detector", "run_calibrate", "sky_boundary"]

STEP = "calibrate"
#: dataset name -> file extension
OUTPUTS = {"preliminary_visit_image": "fits", "preliminary_visit_image_background": "fits",
           "single_visit_star": "parquet", "single_visit_star_footprints": "fits"}


class CalibrateStepConfig(BaseModel):
    """The step's configuration: its two tasks' configs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    characterize: CharacterizeImageConfig = Field(default_factory=CharacterizeImageConfig,
                                                  description="CharacterizeImageTask")
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig, description="CalibrateTask")

    @classmethod
    def preset(cls, name: str) -> "CalibrateStepConfig":
        """A named configuration: ``"lsst"`` (the defaults, LSST's, for 4k x 4k detectors with hundreds of
        bright stars) or ``"sparse"`` (for small or shallow detectors with a few dozen stars, such as
        ``visitcal sim``'s 2048 x 2048 ones: PSF-star detection peaks above 10 sigma instead of 50, the
        objectSize selector on PSF-flux S/N > 20 instead of 50, the aperture corrections and
        the calibration-flux normalisation on stars with S/N > 50 instead of 200). Astrometry is the same in
        both: an affine correction on top of the preliminary WCS's camera distortion, which a few dozen stars
        fix, with the offset search as the pattern matcher's fallback."""
        if name == "lsst":
            return cls()
        if name != "sparse":
            raise ValueError(f"unknown preset {name!r}: 'lsst' or 'sparse'")
        from ..detection.detection import SourceDetectionConfig
        from ..measurement.object_size_star_selector import ObjectSizeStarSelectorConfig

        def with_snr(mac, minimum):
            sel = mac.source_selector
            return mac.model_copy(update={"source_selector": sel.model_copy(
                update={"signal_to_noise": sel.signal_to_noise.model_copy(update={"minimum": minimum})})})

        base = CharacterizeImageConfig()
        norm = base.normalized_calibration_flux
        characterize = base.model_copy(update={
            "detection": SourceDetectionConfig(threshold_value=5.0, include_threshold_multiplier=2.0),
            "star_selector": ObjectSizeStarSelectorConfig(do_flux_limit=False, do_signal_to_noise_limit=True,
                                                          signal_to_noise_min=20.0),
            "measure_ap_corr": with_snr(base.measure_ap_corr, 50.0),
            "normalized_calibration_flux": norm.model_copy(
                update={"measure_ap_corr": with_snr(norm.measure_ap_corr, 50.0)}),
        })
        return cls(characterize=characterize, calibrate=CalibrateConfig())


def _paths(repo: Repository, visit: int, detector: int) -> dict[str, Path]:
    return {name: repo.dataset_path(name, visit, detector, ext) for name, ext in OUTPUTS.items()}


def _inputs(repo: Repository, visit: int, detector: int) -> tuple[list[Path], dict[str, str]]:
    """A detector's snaps and the digests of everything it reads (its snaps and the reference catalog)."""
    snaps_paths = repo.post_isr_snaps().get((visit, detector)) or []
    return snaps_paths, repo.digests([*snaps_paths, repo.refcat_path])


def calibrate_detector(root, visit: int, detector: int, config_json: str, overwrite: bool = False) -> UnitStatus:
    """Characterize and calibrate one detector of the repository at ``root``; never raises for a
    failure of the data (it is recorded in the returned and stored `UnitStatus`)."""
    repo = Repository(root)
    config = CalibrateStepConfig.model_validate_json(config_json)
    chash = config_hash(config)
    paths = _paths(repo, visit, detector)
    snaps_paths, inputs = _inputs(repo, visit, detector)
    previous = repo.read_status(STEP, visit, detector)
    action = repo.unit_action(previous, chash, inputs, paths.values(), overwrite)
    if action in (SKIPPED, SKIPPED_CRASHED):  # up to date, or left failed after crashing twice
        return dataclasses.replace(previous, action=action)
    timings: dict[str, float] = {}
    status = UnitStatus(step=STEP, visit=visit, detector=detector, status="failed", config_hash=chash,
                        timings=timings, versions={"visitcal": __version__, "numpy": np.__version__},
                        inputs=inputs, action=action)
    with recorded(repo, status):  # a failure is recorded, the other units go on
        if not snaps_paths:
            raise FileNotFoundError(f"no post_isr_image for visit {visit} detector {detector} under {repo.root}")
        t0 = time.perf_counter()
        # summed into the first snap's planes, the second added as it is read (issue 25's memory budget)
        exposure = read_summed_snaps(snaps_paths)
        loader = ReferenceObjectLoader(read_catalog(repo.refcat_path), name=str(repo.refcat_path))
        timings["read"] = time.perf_counter() - t0
        idg = DetectorVisitIdGenerator(visit, detector)
        t0 = time.perf_counter()
        char = CharacterizeImageTask(config.characterize).run(exposure, id_generator=idg)
        timings["characterize"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cal = CalibrateTask(config.calibrate, ref_obj_loader=loader).run(
            char.exposure, background=char.background, ic_source_cat=char.source_cat, id_generator=idg)
        timings["calibrate"] = time.perf_counter() - t0
        for k, v in cal.output_summary_metrics.get("timings", {}).items():
            timings[f"calibrate.{k}"] = v
        # documented fallbacks (an ap corr of lower order or from fainter stars, a zero point from too few
        # stars): the products are usable, the detector degraded, with the reasons everywhere it is looked at
        reasons = list(char.metadata.get("degraded_reasons", [])) + list(
            cal.output_summary_metrics.get("degraded_reasons", []))
        degraded_meta(cal.output_cat.meta, reasons)
        cal.output_cat.meta["CROWDED_FIELD"] = bool(char.metadata.get("crowded_field", False))
        t0 = time.perf_counter()
        status.outputs = _write_outputs(repo, cal, paths, visit, detector)
        timings["write"] = time.perf_counter() - t0
        stats = cal.output_exposure.summary_stats or {}
        m = cal.output_summary_metrics
        status.summary = {k: m.get(k) for k in ("zero_point", "zero_point_err", "photo_cal_n_good",
                                                  "astrom_offset_mean", "astrom_offset_std", "astrom_n_matches",
                                                  "astrom_rms_arcsec", "astrom_n_stars", "astrom_fitter",
                                                  "astrom_matcher", "astrom_min_snr", "astrom_transform")}
        status.summary.update({k: stats.get(k) for k in ("psfSigma", "skyBg", "skyNoise", "nPsfStar")})
        status.summary["n_sources"] = len(cal.output_cat)
        status.summary["sky_boundary"] = sky_boundary(cal.output_exposure)
        status.summary["psf_spatial_order"] = char.metadata.get("psf_spatial_order")
        status.summary["psf_min_snr"] = char.metadata.get("psf_min_snr")  # the fainter-star fallback's cut, or None
        status.summary["zero_point_scatter"] = m.get("zero_point_scatter")
        ap_corr_md = char.metadata.get("ap_corr", {})
        status.summary["ap_corr_orders"] = {k[len("ap_corr_order_"):]: v for k, v in ap_corr_md.items()
                                            if k.startswith("ap_corr_order_")}
        status.summary["degraded_reasons"] = reasons
        # the crowded-field mode (visitcal.detection.crowding): a mode, not a fallback (never degraded)
        status.summary["crowded_field"] = bool(char.metadata.get("crowded_field", False))
        status.summary["crowding"] = char.metadata.get("crowding")
        status.summary["crowding_threshold"] = char.metadata.get("crowding_threshold")
        status.status = DEGRADED if reasons else "ok"
        status.message = "; ".join(reasons) if reasons else None
    return status


def sky_boundary(exposure) -> list[list[float]] | None:
    """The detector's sky footprint, recorded in calibrate's provenance (``summary["sky_boundary"]``) so that
    ``associate`` can place a ``single_visit_star`` it cannot read in the tracts the detector reaches.

    Parameters
    ----------
    exposure : `Exposure`
        The calibrated exposure (its bbox and WCS).

    Returns
    -------
    list of [ra, dec] or None
        Eight points in degrees on the outer pixel edges (pixel centres at integers, so the edges at
        ``min - 0.5`` and ``max + 0.5``), counter-clockwise from the (min x, min y) corner: each corner and
        the middle of each edge; None without a WCS or if a point is not finite.
    """
    wcs, bbox = exposure.wcs, exposure.bbox
    if wcs is None:
        return None
    x0, x1, y0, y1 = bbox.min_x - 0.5, bbox.max_x + 0.5, bbox.min_y - 0.5, bbox.max_y + 0.5
    xm, ym = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    ra, dec = pixel_to_sky(wcs, np.array([x0, xm, x1, x1, x1, xm, x0, x0]), np.array([y0, y0, y0, ym, y1, y1, y1, ym]))
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        return None
    return [[float(r), float(d)] for r, d in zip(ra, dec)]


def _write_outputs(repo: Repository, cal, paths: dict[str, Path], visit: int, detector: int) -> dict[str, str]:
    """Write the four products (each left untouched when its bytes would not change); their digests."""
    exposure = cal.output_exposure
    background = cal.output_background
    exposure.background = None  # a separate dataset, as LSST's calexpBackground
    out = {}
    out["preliminary_visit_image"] = write_product(paths["preliminary_visit_image"],
                                                   lambda p: write_exposure(exposure, p, overwrite=True),
                                                   root=repo.root)
    out["preliminary_visit_image_background"] = write_product(paths["preliminary_visit_image_background"],
                                                              lambda p: background.write_fits(p, overwrite=True),
                                                              root=repo.root)
    cat = cal.output_cat.copy(copy_data=False)
    vi = exposure.visit_info
    n = len(cat)
    cat["visit"] = np.full(n, visit, np.int64)
    cat["detector"] = np.full(n, detector, np.int16)
    cat["band"] = np.full(n, (vi.band or "") if vi is not None else "")
    cat["physical_filter"] = np.full(n, (vi.physical_filter or "") if vi is not None else "")
    out["single_visit_star"] = write_product(paths["single_visit_star"],
                                             lambda p: write_catalog(cat, p, overwrite=True), root=repo.root)
    # The sources' (heavy) footprints by id, for noise replacement downstream (LSST's src carries them).
    out["single_visit_star_footprints"] = write_product(
        paths["single_visit_star_footprints"],
        lambda p: write_footprints(p, cal.footprints, np.asarray(cal.output_cat["id"]), overwrite=True),
        root=repo.root)
    return {repo.relpath(paths[name]): digest for name, digest in out.items()}


def run_calibrate(root, *, visits=None, detectors=None, jobs: int = 1, config: CalibrateStepConfig | None = None,
                  overwrite: bool = False, progress=None, executor=None) -> list[UnitStatus]:
    """Run the step on every (visit, detector) of the repository (or the selected ones).

    Returns the `UnitStatus` of each, in (visit, detector) order. ``jobs > 1`` runs detectors in that
    many processes; the outputs are the same bytes whatever ``jobs``.
    """
    repo = Repository(root)
    config = config or CalibrateStepConfig()
    cfg_json = config.model_dump_json()
    units = [(str(repo.root), v, d, cfg_json, overwrite) for v, d in repo.data_ids(visits, detectors)]
    return run_units(calibrate_detector, units, jobs=jobs, executor=executor, progress=progress, crashed=_crashed)


def _crashed(unit, message):
    """The recorded status of a detector whose worker died (`run_units`' ``crashed`` callback)."""
    root, visit, detector, config_json = unit[:4]
    chash = config_hash(CalibrateStepConfig.model_validate_json(config_json))
    _, inputs = _inputs(Repository(root), visit, detector)
    return crashed_unit_status(STEP, root, visit, [detector], message, chash, inputs)[0]


def summary_lines(statuses: list[UnitStatus]) -> list[str]:
    """A per-detector summary table (text) of a run: one line per detector, its state and numbers followed by
    its action (``done``, ``redone (<why>)``); a skipped detector's line says ``skipped (up to date)`` only."""
    head = (f"{'visit':>7} {'det':>4} {'status':<22} {'nSrc':>6} {'psfSigma':>8} {'zp':>8} {'astrom mean':>12} "
            f"{'time s':>7}")
    lines = [head]
    for s in statuses:
        sm = s.summary or {}

        def f(key, fmt):
            return summary_field(sm, key, fmt)
        state = s.status if s.ok else (s.error_type or "failed")
        if s.ok and sm.get("crowded_field"):
            state += " (crowded)"
        lines.append(unit_line(s, f"{s.visit:>7} {s.detector:>4}",
                               f"{state:<22} {f('n_sources', 'd'):>6} {f('psfSigma', '.3f'):>8} "
                               f"{f('zero_point', '.4f'):>8} {f('astrom_offset_mean', '.4f'):>12} "
                               f"{s.timings.get('total', float('nan')):>7.2f}"))
        if (s.degraded or not s.ok) and s.message and not s.skipped:
            lines.append(f"{'':>13}{s.message[:200]}")
    return lines
