"""The ``visitcal`` command line.

Subcommands available now:

``visitcal convert-decam IMAGE WEIGHT DQ OUT``
    Read a DECam Community Pipeline triplet (ooi image, oow inverse variance, ood data quality)
    into an `Exposure` and write it in visitcal's FITS layout (IMAGE/MASK/VARIANCE + components).
``visitcal info PATH``
    Summarise any file visitcal writes (an exposure, ours or an LSST calexp; a background; a per-visit model
    file, ``refit_psf_models`` or ``visit_summary``, HDU by HDU; a footprint file; a Parquet or FITS catalog;
    a provenance JSON), a repository root (visits, detectors, each dataset's file count, provenance) or a
    dataset folder; exit code 2 for anything else.
``visitcal sim OUT [--visits N] [--detectors M] [--preset small|lsst] [--band r] [--snaps 1|2] ...``
    Simulate a repository of post-ISR images with their truth (needs the ``sim`` extra, GalSim); also
    ``--seed S`` and ``--star-density D`` (stars per square degree).
``visitcal calibrate REPO [--visits V ...] [--detectors D ...] [-j N] [--overwrite] ...``
    Characterize and calibrate every detector of a repository (initial PSF, ap corr, astrometry,
    zero point), with the task configuration ``--preset lsst|sparse`` or ``--config FILE`` (a JSON
    ``CalibrateStepConfig``): writes ``preliminary_visit_image``, ``preliminary_visit_image_background`` and
    ``single_visit_star`` per detector and its provenance; finished detectors are skipped on a rerun;
    ``-j N`` runs N detectors in parallel processes. Prints a per-detector summary.
``visitcal associate REPO [--tracts T ...] [--overwrite]``
    Isolated-star association per tract over every calibrated ``single_visit_star``: writes
    ``isolated_star_association/isolated_star_association_<tract>.parquet`` (stars) and
    ``isolated_star/isolated_star_<tract>.parquet`` (their sources) and ``provenance/associate/<tract>.json``;
    the tracts come from ``REPO/skymap.json`` (written with the default sky map when absent); finished
    tracts are skipped on a rerun. Prints a per-tract summary.
``visitcal finalize REPO [--visits V ...] [--per-detector] [-j N] [--overwrite] [--config FILE]``
    FinalizeCharacterization per visit (associating first when needed): ``refit_psf_models`` and
    ``refit_psf_star`` per visit, a per-detector summary.
``visitcal reprocess REPO [--visits V ...] [--detectors D ...] [-j N] [--overwrite] [--config FILE] [--source-table]``
    The visit summaries (written when missing), then ReprocessVisitImage per detector: ``visit_image``
    (nJy), ``source``, ``source_footprints``, ``visit_image_background``; with ``--source-table`` also
    ``source_table``, the sources in LSST's standardized form (``write_source_table``).

``visitcal run REPO [--visits V ...] [--detectors D ...] [-j N] [--overwrite] [--preset lsst|sparse] [--config FILE]``
    The whole chain: calibrate, associate, finalize, the visit summaries and reprocess, skipping the units that
    are up to date; ``--config`` holds a section per step (a JSON ``RunConfig``).
``visitcal status REPO [--json] [--preset lsst|sparse] [--config FILE]``
    Per step, the units done and up to date, out of date (with why: an input or output changed, or the
    configuration differs from what ``visitcal run`` would use with the same ``--preset``/``--config``), failed
    (by error type) and missing; degraded units with their reason.

``visitcal qa REPO [--visits V ...] [-j N] [--out DIR] [--truth] [--config FILE] [--fail-on never|warn|fail]``
    A static HTML report of a processed repository (`visitcal.qa.report`): ``REPO/qa/index.html`` and a page per
    visit of figures, tables and metrics graded ok / warn / fail (``metrics_<visit>.parquet``); ``--truth`` adds
    the comparison with the simulator's truth; ``-j N`` reports N visits at once. Needs the ``qa`` extra
    (matplotlib). Exit code 3 with ``--fail-on`` when a visit grades that or worse, 1 when a visit's report could
    not be made.

calibrate, associate, finalize, reprocess and run also take ``--executor process|dask``: with ``dask`` the
units run on a Dask cluster, a local one of ``--dask-workers N`` single-threaded processes (default ``-j``) or
the running scheduler at ``--dask-scheduler ADDRESS``; the products are the same bytes as with ``-j``.

Every command takes ``-v`` (visitcal's info lines; ``-vv`` its debug lines) or ``-q`` (no progress line and no
per-unit table: errors and the final line only). Progress is one line on stderr, redrawn in place on a
terminal (``visitcal run`` shows one line over the whole chain, with the time left); log records and
warnings are written on lines of their own above it (`visitcal.pipeline.console`).

Every command that writes into a repository holds its lock (``REPO/.visitcal.lock``, with the holder's pid
and host) while it runs: a second one on the same repository stops with a message naming the holder.

Exit codes: 0 success, 1 a file could not be read or written (or nothing to do), 2 bad arguments, 3 some
detectors (or tracts) failed (each failure is recorded in ``REPO/provenance/<step>/``; the others' outputs
are written).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from . import __version__

__all__ = ["main"]


def _describe_exposure(exp) -> list[str]:
    lines = [f"shape (ny, nx): {exp.shape}, xy0: {exp.xy0}, bbox: {exp.bbox!r}"]
    if exp.visit_info is not None:
        vi = exp.visit_info
        lines.append(f"visit {vi.id}, band {vi.band!r}, exposure time {vi.exposure_time} s, "
                     f"date {vi.date}, airmass {vi.airmass}")
    if exp.detector is not None:
        lines.append(f"detector {exp.detector.id} ({exp.detector.name})")
    finite = np.isfinite(exp.image)
    if finite.any():
        lines.append(f"image: median {np.median(exp.image[finite]):.6g}, {int((~finite).sum())} non-finite pixels")
    var = exp.variance
    good = np.isfinite(var) & (var > 0)
    if good.any():
        lines.append(f"variance: median {np.median(var[good]):.6g}, {int((~np.isfinite(var)).sum())} infinite")
    planes = []
    for name, bit in exp.mask.planes.items():
        n = int(np.count_nonzero(exp.mask.array & np.int32(1 << bit) if bit < 31 else exp.mask.array < 0))
        if n:
            planes.append(f"{name}={n}")
    lines.append("mask planes set (pixels): " + (", ".join(planes) or "none"))
    if exp.wcs is not None:
        from .core.wcs import pixel_scale_arcsec, pixel_to_sky, wcs_to_header

        cx, cy = exp.bbox.center
        ra, dec = pixel_to_sky(exp.wcs, cx, cy)
        kind = "/".join(exp.wcs.wcs.ctype)
        if exp.wcs.sip is not None:
            kind += " (SIP)"
        elif any(key.startswith("PV1_") for key in wcs_to_header(exp.wcs)):
            kind += " (TPV distortion)"  # WCSLIB holds TPV as TAN plus a distortion
        lines.append(f"wcs: {kind}, centre (ra, dec) = ({float(ra):.6f}, {float(dec):.6f}) deg, "
                     f"scale {float(pixel_scale_arcsec(exp.wcs, cx, cy)):.4f} arcsec/px")
    comps = [k for k, v in exp.components().items() if v is not None and k not in ("wcs", "visit_info", "detector")]
    lines.append("components: " + (", ".join(comps) or "none"))
    if exp.photo_calib is not None:
        lines.append(f"photo_calib: {exp.photo_calib!r}")
    return lines


#: A product file in a repository: ``<dataset>_<ids>.<ext>``, ids (visit, detector[, snap]), a visit or a tract.
_PRODUCT_FILE = re.compile(r"^(?P<name>[a-z][a-z_]*?)_(?P<ids>\d+(?:_\d+)*)\.(?P<ext>fits|parquet)$")


def _cmd_info(args) -> int:
    path = Path(args.file)
    if path.is_dir():
        lines = _describe_directory(path)
    else:
        lines = _describe_file(path)
    if lines is None:
        why = ("not a directory visitcal knows: neither a repository (no repo.json, post_isr_image/ or "
               "provenance/) nor a dataset folder (no <dataset>_<ids>.fits or .parquet files)" if path.is_dir() else
               "not a file visitcal knows (expected an exposure, background, per-visit model, footprint or "
               "table FITS file, a Parquet catalog or a provenance JSON)")
        print(f"visitcal info: error: {path}: {why}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _describe_file(path: Path) -> list[str] | None:
    """``visitcal info`` on a file; None when it is not one visitcal writes or reads."""
    from .io import read_json
    from .io.describe import describe_catalog, describe_fits_tables, describe_provenance, file_kind

    kind = file_kind(path)
    if kind == "parquet":
        return describe_catalog(path)
    if kind == "json":
        record = read_json(path, expect=None)  # malformed: a JsonReadError naming the file, line and column
        if isinstance(record, dict) and {"step", "status", "visit", "detector"} <= set(record):
            return describe_provenance(path, record)
        known = {"repo.json": "visitcal.sim repository manifest", "camera.json": "camera geometry (visitcal.sim)",
                 "skymap.json": "sky map of the per-tract steps"}
        if isinstance(record, dict) and path.name in known:
            return [f"{path}: {known[path.name]}; keys: {', '.join(record)}"]
        return None
    if kind != "fits":
        return None
    from .io import FitsReadError, read_exposure, read_lsst_calexp
    from .io.fits import open_fits

    with open_fits(path) as hdul:
        names = [h.name for h in hdul]
        ours = hdul[0].header.get("VCFORMAT") == "visitcal-exposure"
        if "IMAGE" not in names:
            try:
                return describe_fits_tables(path, hdul)
            except (KeyError, AttributeError, TypeError, IndexError, ValueError) as err:
                # a table HDU without the column or card its kind has (an INDEX without detector, ...)
                raise FitsReadError(f"{path}: malformed table HDU: {type(err).__name__}: {err}", path=path) from err
    exp = read_exposure(path) if ours else read_lsst_calexp(path)
    return [f"{path}: {'visitcal' if ours else 'LSST-style'} exposure"] + ["  " + line for line in
                                                                          _describe_exposure(exp)]


def _product_files(folder: Path, depth: int = 2) -> dict[str, list[tuple[Path, tuple[int, ...]]]]:
    """``{dataset: [(path, ids), ...]}`` of the product files in ``folder`` and ``depth - 1`` levels below."""
    found: dict[str, list] = {}
    patterns = ["*"] + ["/".join(["*"] * (k + 1)) for k in range(1, depth)]
    for pattern in patterns:
        for p in sorted(folder.glob(pattern)):
            m = _PRODUCT_FILE.match(p.name)
            if m and p.is_file():
                found.setdefault(m["name"], []).append((p, tuple(m["ids"].split("_"))))
    return found


def _dataset_line(name: str, files) -> str:
    exts = sorted({p.suffix for p, _ in files})
    ids = [i for _, i in files]
    if all(len(i) >= 2 for i in ids):
        unit = "per detector" + (" and snap" if any(len(i) == 3 for i in ids) else "")
        cover = f"visits {_id_list(i[0] for i in ids)}, detectors {_id_list(i[1] for i in ids)}"
    elif all(len(i) == 1 and len(i[0]) == 6 for i in ids):  # visits are zero-padded to 6 digits, tracts are not
        unit, cover = "per visit", f"visits {_id_list(i[0] for i in ids)}"
    else:
        unit, cover = "per tract", f"tracts {_id_list(i[0] for i in ids)}"
    return f"{name}: {len(files)} file{'s' if len(files) != 1 else ''} ({', '.join(exts)}), {unit}: {cover}"


def _id_list(values) -> str:
    return "[" + ", ".join(str(v) for v in sorted({int(v) for v in values})) + "]"


def _describe_directory(path: Path) -> list[str] | None:
    """``visitcal info`` on a repository root or a dataset folder; None for any other directory."""
    is_root = any((path / name).exists() for name in ("repo.json", "post_isr_image", "provenance"))
    if not is_root:
        datasets = _product_files(path)
        if not datasets:
            return None
        lines = []
        for name, files in sorted(datasets.items()):
            lines.append(f"{path}: dataset folder, " + _dataset_line(name, files))
        return lines
    from .pipeline.repository import Repository

    ids = Repository(path).data_ids()
    lines = [f"{path}: visitcal repository, {len({v for v, _ in ids})} visits {_id_list(v for v, _ in ids)}, "
             f"{len({d for _, d in ids})} detectors {_id_list(d for _, d in ids)}"]
    if (path / "repo.json").is_file():
        lines.extend(_describe_sim_repository(path))
    inputs = [name for name in ("repo.json", "camera.json", "refcat.parquet", "skymap.json") if (path / name).is_file()]
    if (path / "truth").is_dir():
        inputs.append(f"truth/ ({sum(1 for p in (path / 'truth').iterdir() if p.is_file())} files)")
    lines.append("  inputs: " + (", ".join(inputs) or "none"))
    lines.append("  datasets:")
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and p.name not in ("truth", "provenance")):
        files = _product_files(sub).get(sub.name)
        if files:
            lines.append("    " + _dataset_line(sub.name, files))
    prov = path / "provenance"
    if prov.is_dir():
        import json

        steps = []
        for step in sorted(p for p in prov.iterdir() if p.is_dir()):
            statuses = Counter()
            for record in step.glob("*.json"):
                try:
                    statuses[str(json.loads(record.read_text()).get("status"))] += 1
                except (OSError, ValueError, AttributeError):
                    statuses["unreadable"] += 1
            steps.append(f"{step.name} {sum(statuses.values())} ("
                         + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ")")
        lines.append("  provenance: " + ("; ".join(steps) or "none"))
        if steps:  # where it stands (files only: visitcal status also compares a configuration)
            from .pipeline.status import repository_status

            lines.append("  status (inputs and outputs against their recorded digests; see visitcal status):")
            lines.extend("    " + line for line in _status_lines(repository_status(path)))
    return lines


def _describe_sim_repository(path: Path) -> list[str]:
    from .io import JsonReadError, json_fields
    from .sim import SimRepository

    try:
        repo = SimRepository(path)  # a malformed repo.json / camera.json: a JsonReadError naming file and field
    except ImportError as err:  # GalSim missing
        return [f"  written by visitcal.sim (not described: {err})"]
    with json_fields(path / "repo.json", "counts."):
        counts = repo.manifest["counts"]
        lines = [f"  visitcal.sim repository, {len(repo.visits)} visits x {len(repo.detectors)} detectors x "
                 f"{repo.manifest['n_snaps']} snaps, band {repo.band!r}, preset {repo.config.preset!r}, "
                 f"seed {repo.config.seed}",
                 f"  {repo.camera!r}",
                 f"  reference catalog: {counts['refcat']} stars; truth: {counts['stars']} stars, "
                 f"{counts['galaxies']} galaxies, {counts['cosmic_ray_pixels']} cosmic-ray pixels"]
    for visit in repo.visits:
        if visit not in repo.plans:
            raise JsonReadError(f"{path / 'repo.json'}: field visits: visit {visit} is not in truth/visits.parquet",
                                path=path / "repo.json")
        plan = repo.plans[visit]
        lines.append(f"  visit {visit}: seeing {plan.atmosphere.seeing_fwhm:.3f}\", airmass {plan.airmass:.3f}, "
                     f"boresight ({plan.boresight_ra:.5f}, {plan.boresight_dec:.5f}), "
                     f"rotation {plan.rotation_deg:+.2f} deg")
    return lines


def _cmd_convert_decam(args) -> int:
    from .io import read_decam_cp, write_exposure

    exp = read_decam_cp(args.image, args.weight, args.dq, hdu=args.hdu)
    write_exposure(exp, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")
    for line in _describe_exposure(exp):
        print("  " + line)
    return 0


def _progress(args, unit: str):
    """The progress callback of a command: a bar on stderr through the command's console (none with -q)."""
    from .pipeline.console import ProgressBar

    return ProgressBar(args.console, unit=unit)


def _table(args, lines) -> None:
    """Print a per-unit summary table on stdout (not with -q), the progress line cleared first."""
    if args.quiet:
        return
    args.console.clear()
    for line in lines:
        print(line)
    sys.stdout.flush()


def _cmd_sim(args) -> int:
    from .sim import simulate

    summary = simulate(args.config, args.out, overwrite=args.overwrite, progress=_progress(args, "images"))
    _table(args, summary.lines())
    return 0


def _cmd_calibrate(args) -> int:
    from .pipeline.calibrate_step import run_calibrate, summary_lines
    from .pipeline.repository import Repository

    repo = Repository(args.repo)
    ids = repo.data_ids(args.visits, args.detectors)
    if not ids:
        print(f"visitcal calibrate: error: no post_isr_image under {repo.root} for the selected visits/detectors",
              file=sys.stderr)
        return 1
    statuses = run_calibrate(repo.root, visits=args.visits, detectors=args.detectors, jobs=args.jobs,
                             overwrite=args.overwrite, progress=_progress(args, "detectors"), config=args.config,
                             executor=args.pool)
    _table(args, summary_lines(statuses))
    n_bad = sum(not s.ok for s in statuses)
    print(f"{len(statuses) - n_bad} of {len(statuses)} detectors calibrated; provenance in "
          f"{repo.root / 'provenance' / 'calibrate'}")
    return 3 if n_bad else 0


def _cmd_associate(args) -> int:
    from .pipeline.associate_step import run_associate, summary_lines
    from .pipeline.repository import Repository

    repo = Repository(args.repo)
    ok = [k for k in repo.single_visit_star_paths()
          if (st := repo.read_status("calibrate", *k)) is not None and st.ok]
    if not ok:
        print(f"visitcal associate: error: no calibrated single_visit_star under {repo.root} (run visitcal calibrate "
              f"first)", file=sys.stderr)
        return 1
    statuses = run_associate(repo.root, tracts=args.tracts, overwrite=args.overwrite,
                             progress=_progress(args, "tracts"), executor=args.pool)
    _table(args, summary_lines(statuses))
    n_bad = sum(not s.ok for s in statuses)
    print(f"{len(statuses) - n_bad} of {len(statuses)} tracts associated from {len(ok)} detectors; provenance in "
          f"{repo.root / 'provenance' / 'associate'}")
    return 3 if n_bad else 0


def _cmd_finalize(args) -> int:
    from .pipeline.finalize_step import run_finalize, summary_lines
    from .pipeline.repository import Repository

    repo = Repository(args.repo)
    ok = [k for k in repo.data_ids(args.visits) if (st := repo.read_status("calibrate", *k)) is not None and st.ok]
    if not ok:
        print(f"visitcal finalize: error: no calibrated detector under {repo.root} for the selected visits (run "
              f"visitcal calibrate first)", file=sys.stderr)
        return 1
    statuses = run_finalize(repo.root, visits=args.visits, per_detector=args.per_detector, jobs=args.jobs,
                            overwrite=args.overwrite, config=args.config, progress=_progress(args, "visits"),
                            executor=args.pool)
    _table(args, summary_lines(statuses))
    n_bad = sum(not s.ok for s in statuses)
    print(f"{len(statuses) - n_bad} of {len(statuses)} detectors finalized; products in {repo.root / 'refit_psf_models'}"
          f" and {repo.root / 'refit_psf_star'}, provenance in {repo.root / 'provenance' / 'finalize'}")
    return 3 if n_bad else 0


def _cmd_reprocess(args) -> int:
    from .pipeline.reprocess_step import run_reprocess, summary_lines
    from .pipeline.visit_summary_step import run_visit_summary
    from .pipeline.visit_summary_step import summary_lines as visit_summary_lines
    from .pipeline.repository import Repository

    repo = Repository(args.repo)
    if not (repo.root / "refit_psf_models").is_dir():
        print(f"visitcal reprocess: error: no refit_psf_models under {repo.root} (run visitcal finalize first)",
              file=sys.stderr)
        return 1
    summaries = run_visit_summary(repo.root, visits=args.visits, overwrite=args.overwrite, return_status=True,
                                  jobs=args.jobs, executor=args.pool)
    _table(args, visit_summary_lines(summaries))
    statuses = run_reprocess(repo.root, visits=args.visits, detectors=args.detectors, jobs=args.jobs,
                             config=args.config, overwrite=args.overwrite, progress=_progress(args, "detectors"),
                             visit_summaries=False, executor=args.pool)
    _table(args, summary_lines(statuses))
    n_bad = sum(not s.ok for s in statuses)
    print(f"{len(statuses) - n_bad} of {len(statuses)} detectors reprocessed; provenance in "
          f"{repo.root / 'provenance' / 'reprocess'}")
    return 3 if n_bad else 0


def _step_summary_lines():
    """``{step: summary_lines}`` of the chain's steps (each step's per-unit table)."""
    from .pipeline import associate_step, calibrate_step, finalize_step, reprocess_step, visit_summary_step

    return {"calibrate": calibrate_step.summary_lines, "associate": associate_step.summary_lines,
            "finalize": finalize_step.summary_lines, "visit_summary": visit_summary_step.summary_lines,
            "reprocess": reprocess_step.summary_lines}


def _cmd_run(args) -> int:
    from .pipeline.chain import CHAIN_STEPS, run_chain
    from .pipeline.console import ChainProgress
    from .pipeline.repository import Repository

    repo = Repository(args.repo)
    ids = repo.data_ids(args.visits, args.detectors)
    if not ids:
        print(f"visitcal run: error: no post_isr_image under {repo.root} for the selected visits/detectors",
              file=sys.stderr)
        return 1
    tables = _step_summary_lines()

    def on_step(name, statuses):
        n_bad = sum(not s.ok for s in statuses)
        n_skip = sum(bool(getattr(s, "skipped", False)) for s in statuses)
        n_degraded = sum(bool(getattr(s, "degraded", False)) for s in statuses)
        _table(args, [f"== {name}: {len(statuses)} units, {len(statuses) - n_bad} done ({n_degraded} degraded, "
                      f"{n_skip} skipped, up to date), {n_bad} failed", *tables[name](statuses)])

    chain = ChainProgress(CHAIN_STEPS, len(ids), args.console.progress, every_tenth=not args.console.tty)
    result = run_chain(repo.root, visits=args.visits, detectors=args.detectors, jobs=args.jobs, config=args.config,
                       overwrite=args.overwrite, progress=chain, on_step=on_step, executor=args.pool)
    times = ", ".join(f"{name} {sec:.1f} s" for name, sec in result.seconds.items())
    print(f"chain finished with {result.n_failed} failed unit(s) ({times}); provenance in {repo.root / 'provenance'}")
    return 3 if result.n_failed else 0


def _cmd_qa(args) -> int:
    from .qa.report import make_report

    report = make_report(args.repo, visits=args.visits, out=args.out, truth=args.truth, config=args.config,
                         progress=None if args.quiet else print, jobs=args.jobs)
    for v, why in report.failed.items():
        print(f"visitcal qa: visit {v}: no report: {why}", file=sys.stderr)
    grades = [g for r in report.visits for g in (r.visit_grade,)]
    print(f"qa report: {report.index} ({len(report.visits)} visit(s): "
          + ", ".join(f"{g} {grades.count(g)}" for g in ("ok", "warn", "fail") if grades.count(g)) + ")")
    worst = {"ok": 0, "warn": 1, "fail": 2}
    limit = {"never": 3, "warn": 1, "fail": 2}[args.fail_on]
    if report.failed:
        return 1
    return 3 if any(worst[g] >= limit for g in grades) else 0


def _cmd_status(args) -> int:
    import json

    from .pipeline.calibrate_step import CalibrateStepConfig
    from .pipeline.chain import RunConfig
    from .pipeline.status import repository_status

    # the configuration visitcal run would use with the same --preset / --config (the defaults without them)
    base = RunConfig(calibrate=CalibrateStepConfig.preset(args.preset))
    config = _load_config(args.status_parser, args.config, RunConfig, base=base) if args.config is not None else base
    states = repository_status(args.repo, config=config)
    if args.json:
        print(json.dumps([s.as_dict() for s in states], indent=1, sort_keys=True))
        return 0
    for line in _status_lines(states):
        print(line)
    if any(reason == "config changed" for st in states for reason in st.reasons.values()):
        print("(config compared with " + (f"--config {args.config}" if args.config is not None else
                                          f"--preset {args.preset}") + ", as visitcal run would use it)")
    return 0


def _status_lines(states) -> list[str]:
    """The table of `visitcal.pipeline.status.repository_status`, then the units not done, with why."""
    lines = [f"{'step':<14} {'done':>6} {'out of date':>12} {'failed':>7} {'missing':>8}"]
    for st in states:
        lines.append(f"{st.step:<14} {len(st.done):>6} {len(st.out_of_date):>12} {len(st.failed):>7} "
                     f"{len(st.missing):>8}")
    for st in states:
        if st.failed:
            kinds = ", ".join(f"{k} x{n}" for k, n in st.failed_by_type.items())
            lines.append(f"{st.step} failed: {kinds}: {', '.join(sorted(st.failed))}")
        if st.out_of_date:
            lines.append(f"{st.step} out of date: " + ", ".join(f"{u} ({st.reasons[u]})" for u in st.out_of_date))
        if st.missing:
            lines.append(f"{st.step} missing: {', '.join(st.missing)}")
        for unit, reason in st.degraded.items():
            lines.append(f"{st.step} degraded: {unit}: {reason[:300]}")
    return lines


def _sim_config(parser, args):
    """The SimConfig of ``visitcal sim`` arguments; a bad value is a usage error (exit 2)."""
    from pydantic import ValidationError

    from .sim.config import SimConfig

    try:
        extra = {} if args.star_density is None else {"star_density": args.star_density}
        return SimConfig(preset=args.preset, n_visits=args.visits, n_detectors=args.detectors, band=args.band,
                         n_snaps=args.snaps, seed=args.seed, **extra)
    except ValidationError as err:
        option = {"n_visits": "--visits", "n_detectors": "--detectors", "n_snaps": "--snaps",
                  "star_density": "--star-density"}
        problems = []
        for e in err.errors():
            field = str(e["loc"][0]) if e["loc"] else "config"
            problems.append(f"{option.get(field, '--' + field)}: {e['msg']}")
        parser.error("; ".join(problems))


def _merge(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s values put in, recursively for nested objects (lists and values replace)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _load_config(parser, path: str, cls, base=None):
    """``cls`` from the JSON file ``path``, laid over ``cls()``'s defaults: a file may give only the fields it
    changes, at any depth (``{"finalize": {"measure_ap_corr": {"fit_weighted": true}}}`` keeps finalize's own
    ap-corr selector, which a sub-model built from the file alone would replace by the generic default).
    A usage error (exit 2) names the file and the first bad field."""
    import json

    from pydantic import ValidationError

    try:
        user = json.loads(Path(path).read_text())
        if not isinstance(user, dict):
            parser.error(f"--config {path!r}: expected a JSON object, got {type(user).__name__}")
        defaults = (base if base is not None else cls()).model_dump(mode="json")
        return cls.model_validate(_merge(defaults, user))
    except OSError as err:
        parser.error(f"--config {path!r}: {err}")
    except json.JSONDecodeError as err:
        parser.error(f"--config {path!r}: not JSON: {err}")
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        parser.error(f"--config {path!r}: {where}: {first['msg']} ({err.error_count()} error(s))")


def _check_qa_args(parser, args) -> None:
    """``visitcal qa``'s usage errors (exit 2): matplotlib missing, a bad ``--config`` (its thresholds' metric
    names too); ``args.config`` becomes the `QaConfig`."""
    from .qa.figures import require_matplotlib
    from .qa.metrics import QaConfig

    try:
        require_matplotlib()
    except ImportError as err:
        parser.error(str(err))
    if not 1 <= args.jobs <= 256:
        parser.error(f"-j/--jobs: must be in [1, 256], got {args.jobs}")
    path = args.config
    args.config = _load_config(parser, path, QaConfig) if path is not None else QaConfig()
    from .qa.report import check_thresholds

    try:
        check_thresholds(args.config)
    except ValueError as err:
        parser.error(f"--config {path!r}: {err}")


def _check_step_args(parser, args) -> None:
    """The repository steps' shared checks; ``args.config`` becomes the step's config object (or None)."""
    if not Path(args.repo).is_dir():
        parser.error(f"repo {args.repo!r}: no such directory")
    if getattr(args, "jobs", 1) < 1:
        parser.error(f"-j/--jobs: must be >= 1, got {args.jobs}")
    _check_executor_args(parser, args)
    if args.command == "calibrate":
        from .pipeline.calibrate_step import CalibrateStepConfig

        args.config = (_load_config(parser, args.config, CalibrateStepConfig) if args.config is not None
                       else CalibrateStepConfig.preset(args.preset))
    elif args.command == "finalize" and (args.config is not None or args.preset != "lsst"):
        from .pipeline.finalize_step import FinalizeStepConfig
        from .tasks.finalize_characterization import FinalizeCharacterizationConfig

        base = FinalizeStepConfig(finalize=FinalizeCharacterizationConfig.preset(args.preset))
        args.config = _load_config(parser, args.config, FinalizeStepConfig, base=base) if args.config is not None \
            else base
    elif args.command == "run":
        from .pipeline.calibrate_step import CalibrateStepConfig
        from .pipeline.chain import RunConfig

        base = RunConfig(calibrate=CalibrateStepConfig.preset(args.preset))
        args.config = _load_config(parser, args.config, RunConfig, base=base) if args.config is not None else base
    elif args.command == "reprocess" and (args.config is not None or args.source_table):
        from .pipeline.reprocess_step import ReprocessStepConfig

        config = _load_config(parser, args.config, ReprocessStepConfig) if args.config is not None \
            else ReprocessStepConfig()
        args.config = config.model_copy(update={"write_source_table": True}) if args.source_table else config


def _add_executor_arguments(parser) -> None:
    """``--executor``, ``--dask-scheduler`` and ``--dask-workers`` of the commands that run units."""
    group = parser.add_argument_group("executor", "where the units run: local processes (-j) or Dask")
    group.add_argument("--executor", choices=("process", "dask"), default="process",
                       help="process: -j local worker processes (default); dask: a Dask cluster (needs "
                            "pip install 'visitcal[dask]')")
    dask = group.add_mutually_exclusive_group()
    dask.add_argument("--dask-scheduler", metavar="ADDRESS", default=None,
                      help="with --executor dask: the address of a running scheduler, e.g. tcp://host:8786 "
                           "(a dask-jobqueue cluster's scheduler_address)")
    dask.add_argument("--dask-workers", metavar="N", type=int, default=None,
                      help="with --executor dask: start a local cluster of N single-threaded worker processes "
                           "(default: -j)")


def _check_executor_args(parser, args) -> None:
    """Usage errors (exit 2) of the executor options; ``args.pool`` is set to None (the executor is opened
    by `main` around the command)."""
    args.pool = None
    if getattr(args, "executor", "process") != "dask":
        for name in ("dask_scheduler", "dask_workers"):
            if getattr(args, name, None) is not None:
                parser.error(f"--{name.replace('_', '-')}: only with --executor dask")
        return
    from .pipeline.dask_executor import DASK_MISSING, dask_available

    if not dask_available():
        parser.error(f"--executor dask: {DASK_MISSING}")
    if args.dask_workers is not None and args.dask_workers < 1:
        parser.error(f"--dask-workers: must be >= 1, got {args.dask_workers}")


def _open_executor(args):
    """The context manager of the command's executor: Dask's client (and local cluster), or nothing."""
    import contextlib

    if getattr(args, "executor", "process") != "dask":
        return contextlib.nullcontext(None)
    from .pipeline.dask_executor import dask_executor

    if args.dask_scheduler is not None:
        return dask_executor(scheduler=args.dask_scheduler)
    return dask_executor(workers=args.dask_workers or getattr(args, "jobs", 1))


def _add_selection_arguments(sub, *, parallel: str, detectors: bool = True) -> None:
    """The repository steps' ``--visits``, ``--detectors`` (unless ``detectors`` is False) and ``-j``, whose
    help says what runs in parallel (``parallel``: "detectors", "visits" or "units")."""
    sub.add_argument("--visits", type=int, nargs="+", default=None, help="only these visits")
    if detectors:
        sub.add_argument("--detectors", type=int, nargs="+", default=None, help="only these detectors")
    sub.add_argument("-j", "--jobs", type=int, default=1, help=f"{parallel} run in parallel processes (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visitcal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"visitcal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # -v/-q on every command (after its name: visitcal calibrate -v REPO)
    common = argparse.ArgumentParser(add_help=False)
    talk = common.add_argument_group("output")
    loud = talk.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="count", default=0,
                      help="more log lines: -v visitcal's progress notes (INFO), -vv its debug lines")
    loud.add_argument("-q", "--quiet", action="store_true",
                      help="no progress line and no per-unit table: errors and the final line only")

    info = sub.add_parser("info", parents=[common], help="summarise any file visitcal writes, a repository or a dataset folder",
                          description="Describe FILE: an exposure, a background, a per-visit model file "
                                      "(refit_psf_models, visit_summary: HDU by HDU), a footprint file, a Parquet "
                                      "or FITS catalog, a provenance JSON, a repository root or a dataset folder. "
                                      "Exit code 2 for anything else.")
    info.add_argument("file", help="a file, a repository root or a dataset folder")
    info.set_defaults(func=_cmd_info)

    conv = sub.add_parser("convert-decam", parents=[common], help="DECam CP image/weight/dq triplet -> visitcal exposure FITS")
    conv.add_argument("image", help="ooi image file")
    conv.add_argument("weight", help="oow inverse-variance file")
    conv.add_argument("dq", help="ood data-quality file")
    conv.add_argument("out", help="output FITS path")
    conv.add_argument("--hdu", default=None, help="extension name or index (default: the first image extension)")
    conv.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    conv.set_defaults(func=_cmd_convert_decam)

    sim = sub.add_parser("sim", parents=[common], help="simulate post-ISR images of dithered visits with their truth (GalSim)",
                         description="Render a data repository of post-ISR images with truth into OUT "
                                     "(layout: visitcal.sim.repository). The same seed gives the same bytes.")
    sim.add_argument("out", help="output directory (created; must be empty or absent unless --overwrite)")
    sim.add_argument("--visits", type=int, default=2, help="number of visits (default 2)")
    sim.add_argument("--detectors", type=int, default=4, help="number of detectors (default 4)")
    sim.add_argument("--preset", default="small", help="camera: small (2048x2048 px) or lsst (4072x4000 px)")
    sim.add_argument("--band", default="r", help="band of the visits: u, g, r, i, z or y (default r)")
    sim.add_argument("--snaps", type=int, default=1, help="snaps per visit, 1 or 2 (default 1)")
    sim.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    sim.add_argument("--star-density", type=float, default=None,
                     help="stars per deg^2 brighter than r = 24.5 (default 6000; 60000 for a rich field)")
    sim.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    sim.set_defaults(func=_cmd_sim)

    cal = sub.add_parser("calibrate", parents=[common], help="characterize and calibrate every detector of a repository",
                         description="Per detector: snap sum, background, cosmic rays, detection, measurement, "
                                     "PCA PSF, aperture corrections, astrometry (TAN-SIP), zero point. Writes "
                                     "preliminary_visit_image, preliminary_visit_image_background and "
                                     "single_visit_star under REPO.")
    cal.add_argument("repo", help="data repository (e.g. written by visitcal sim)")
    _add_selection_arguments(cal, parallel="detectors")
    cal.add_argument("--overwrite", action="store_true", help="redo detectors already calibrated")
    cal.add_argument("--preset", choices=("lsst", "sparse"), default="lsst",
                     help="task configuration: lsst (LSST's defaults, for 4k x 4k detectors) or sparse (a few dozen "
                          "stars per detector, e.g. visitcal sim's; see CalibrateStepConfig.preset)")
    cal.add_argument("--config", default=None, help="JSON file of a CalibrateStepConfig: only the fields it changes, "
                     "at any depth, laid over the defaults (overrides --preset)")
    _add_executor_arguments(cal)
    cal.set_defaults(func=_cmd_calibrate)

    asc = sub.add_parser("associate", parents=[common], help="associate isolated stars across visits and bands, per tract",
                         description="Per tract of REPO/skymap.json (the default sky map is written when absent): "
                                     "select isolated point sources of every calibrated single_visit_star, "
                                     "friends-of-friends across visits band by band, drop stars with a neighbour "
                                     "within 2 arcsec. Writes isolated_star_association and isolated_star.")
    asc.add_argument("repo", help="data repository, calibrated (visitcal calibrate)")
    asc.add_argument("--tracts", type=int, nargs="+", default=None, help="only these tracts")
    asc.add_argument("--overwrite", action="store_true", help="redo tracts already associated")
    _add_executor_arguments(asc)
    asc.set_defaults(func=_cmd_associate)

    fin = sub.add_parser("finalize", parents=[common], help="refit PSF and aperture corrections per visit with consistent reserved stars",
                         description="After visitcal calibrate (and associate, run here if its products are "
                                     "missing): FinalizeCharacterization per visit. Writes refit_psf_models and "
                                     "refit_psf_star per visit and prints a per-detector summary.")
    fin.add_argument("repo", help="data repository, calibrated (visitcal calibrate)")
    _add_selection_arguments(fin, parallel="visits", detectors=False)
    fin.add_argument("--per-detector", action="store_true",
                     help="the detector task per detector, then the consolidation (same products)")
    fin.add_argument("--overwrite", action="store_true", help="redo visits already finalized")
    fin.add_argument("--preset", choices=("lsst", "lsstcam"), default="lsst",
                     help="lsst: LSST's defaults; lsstcam: obs_lsst's LSSTCam overrides (PSF spatial order 4, "
                          "2 in u; star centres not refitted)")
    fin.add_argument("--config", default=None, help="JSON file of a FinalizeStepConfig: only the fields it changes, "
                     "at any depth (laid over the defaults, or --preset)")
    _add_executor_arguments(fin)
    fin.set_defaults(func=_cmd_finalize)

    rep = sub.add_parser("reprocess", parents=[common], help="the final calibrated visit images (nJy) and source catalogs",
                         description="After visitcal finalize: the visit summaries (written when missing), then "
                                     "ReprocessVisitImageTask per detector. Writes visit_image, source, "
                                     "source_footprints and visit_image_background.")
    rep.add_argument("repo", help="data repository, finalized (visitcal finalize)")
    _add_selection_arguments(rep, parallel="detectors")
    rep.add_argument("--overwrite", action="store_true", help="redo detectors already reprocessed")
    rep.add_argument("--config", default=None, help="JSON file of a ReprocessStepConfig: only the fields it changes, "
                     "at any depth, e.g. {\"reprocess\": {\"do_use_sky_corr\": true}}")
    rep.add_argument("--source-table", action="store_true",
                     help="also write source_table: the sources in LSST's standardized form (psfFlux, calibFlux "
                          "in nJy, ra/dec in degrees, pixelFlags_*); the config's write_source_table")
    _add_executor_arguments(rep)
    rep.set_defaults(func=_cmd_reprocess)

    run = sub.add_parser("run", parents=[common], help="the whole chain: calibrate, associate, finalize, visit summaries, reprocess",
                         description="Run calibrate -> associate -> finalize -> visit summaries -> reprocess over "
                                     "REPO. Units that are up to date (same config, same input digests) are "
                                     "skipped; a failed unit is recorded and the chain goes on with the others.")
    run.add_argument("repo", help="data repository (e.g. written by visitcal sim)")
    _add_selection_arguments(run, parallel="units")
    run.add_argument("--overwrite", action="store_true", help="redo every unit, up to date or not")
    run.add_argument("--preset", choices=("lsst", "sparse"), default="lsst",
                     help="calibrate's task configuration (as visitcal calibrate --preset)")
    run.add_argument("--config", default=None, help="JSON file of a RunConfig: sections calibrate, associate, "
                     "finalize, reprocess, each giving only the fields it changes (laid over the defaults and "
                     "--preset)")
    _add_executor_arguments(run)
    run.set_defaults(func=_cmd_run)

    status = sub.add_parser("status", parents=[common], help="where a repository stands: per step, units done, out of date, failed, "
                                                           "missing",
                            description="Per step, the units done and up to date, out of date (a file changed, or "
                                        "the configuration: compared with what visitcal run would use with the same "
                                        "--preset/--config, the lsst preset's defaults without them), failed (by "
                                        "error type) and missing; degraded units are listed with their reason.")
    status.add_argument("repo", help="data repository")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--preset", choices=("lsst", "sparse"), default="lsst",
                        help="calibrate's task configuration to compare with (as visitcal run --preset)")
    status.add_argument("--config", default=None, help="JSON file of a RunConfig to compare with (as visitcal run "
                        "--config: laid over the defaults and --preset)")
    status.set_defaults(func=_cmd_status, status_parser=status)

    qa = sub.add_parser("qa", parents=[common], help="a static HTML report of a processed repository: figures, metrics "
                                                   "graded ok / warn / fail, the truth with --truth",
                        description="Write REPO/qa (or --out): index.html, and per visit a page of figures and "
                                    "tables (processing, PSF, aperture corrections, astrometry, photometry, "
                                    "catalog) and metrics_<visit>.parquet. Reads only; opens from disk.")
    qa.add_argument("repo", help="a processed data repository (visitcal run)")
    qa.add_argument("--visits", type=int, nargs="+", default=None, help="only these visits")
    qa.add_argument("-j", "--jobs", type=int, default=1, help="visits reported in parallel processes (default 1)")
    qa.add_argument("--out", default=None, help="output folder (default REPO/qa); its report files are replaced")
    qa.add_argument("--truth", action="store_true",
                    help="add the comparison with the simulator's truth (a repository written by visitcal sim)")
    qa.add_argument("--config", default=None, help="JSON file of a QaConfig, e.g. {\"thresholds\": "
                    "{\"astromResidualRms\": {\"warn_above\": 10}}}")
    qa.add_argument("--fail-on", choices=("never", "warn", "fail"), default="never",
                    help="exit with code 3 when a visit grades this or worse (default: never)")
    qa.set_defaults(func=_cmd_qa)
    return parser


def main(argv=None) -> int:
    """Run the ``visitcal`` command line (the console-script entry point).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    code : int
        The exit code: 0 success, 1 a file could not be read or written (or nothing to do), 3 some detectors
        or tracts failed (see the module docstring). Bad arguments, and a missing input file, exit with
        code 2 through ``SystemExit`` raised by argparse, as do ``--help`` and ``--version`` (code 0).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from .pipeline.console import Console, logging_to

    args.console = Console(show_progress=not args.quiet)
    with logging_to(args.console, -1 if args.quiet else args.verbose):
        return _main(parser, args)


def _main(parser, args) -> int:
    from .pipeline.runner import tune_allocator

    tune_allocator()  # the command's own process (its -j workers do it too): see its docstring
    for name in ("file", "image", "weight", "dq"):
        value = getattr(args, name, None)
        if name == "file" and value is not None and Path(value).is_dir():
            continue  # visitcal info on a repository or a dataset folder
        if value is not None and not Path(value).is_file():
            parser.error(f"{name} {value!r}: no such file")
    if args.command == "sim":
        args.config = _sim_config(parser, args)
        from .sim.psf import import_galsim
        from .sim.repository import check_output_dir

        try:
            import_galsim()
            check_output_dir(args.out, args.overwrite)
        except (ImportError, OSError) as err:
            parser.error(f"out {args.out!r}: {err}" if isinstance(err, OSError) else str(err))
    elif args.command in ("associate", "calibrate", "finalize", "reprocess", "run"):
        _check_step_args(parser, args)
    elif args.command in ("status", "qa") and not Path(args.repo).is_dir():
        parser.error(f"repo {args.repo!r}: no such directory")
    elif args.command == "qa":
        _check_qa_args(parser, args)
    elif args.command != "qa" and getattr(args, "out", None) is not None and Path(args.out).exists() \
            and not args.overwrite:
        parser.error(f"out {args.out!r} exists; pass --overwrite to replace it")
    from pydantic import ValidationError

    from .io import VisitcalIOError
    from .core.jsonfile import validation_message

    from .pipeline.lock import RepositoryLockedError, repository_lock

    try:
        if args.command in ("associate", "calibrate", "finalize", "reprocess", "run"):
            # one writer at a time; the lock also removes the temporaries of this host's dead writers
            with repository_lock(args.repo), _open_executor(args) as pool:
                args.pool = pool
                return args.func(args)
        return args.func(args)
    except RepositoryLockedError as err:
        args.console.clear()
        print(f"visitcal {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (VisitcalIOError, OSError, ValueError) as err:
        args.console.clear()
        # one line, in our words: a validation error's first field, never pydantic's multi-line dump
        why = validation_message(err) if isinstance(err, ValidationError) else err
        print(f"visitcal {args.command}: error: {why}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
