"""The whole chain on a simulated repository, on a Dask LocalCluster of N workers and with -j N (issue 20).

The chain is calibrate -> associate -> finalize -> visit summaries -> reprocess (``visitcal run``); the Dask
cluster has N single-threaded worker processes.

A *scaling* benchmark: unlike the other scripts in ``bench/`` it does **not** pin itself to one core. Its N
workers (one thread each, ``processes=True``, set up as `visitcal.pipeline.dask_executor.dask_executor` sets
them up) share the machine's cores with the scheduler, which lives in this process.

The repository (``visitcal.sim``, ``small`` preset 2048 x 2048 by default, one 30-s snap) is simulated once
and cached in ``bench/results/sim_repo_scale_<preset>_<V>x<D>_<density>_<seed>`` (``--repo`` reuses any
simulated repository). Each run starts from a fresh copy of its inputs (hard links) in ``--work``.
Reported per step: wall time, units per second (units: detectors for calibrate and reprocess, tracts for
associate, visits for finalize and the visit summaries), per-unit time from the units' provenance
(``timings['total']``; ``timings['visit_total']`` for finalize, whose unit is the visit), and the peak
resident memory of each worker during the step (``VmHWM``, reset with ``/proc/self/clear_refs`` at each
step's end, so a worker's peak is per step, not per life) and of this process (client and scheduler).
Also: a rerun on the finished repository (every unit up to date: the cost of the up-to-date check), the files
written per dataset, the same chain with ``jobs=N`` local processes and no executor, and whether the two runs
wrote the same bytes. visitcal's loggers are set to errors (routine per-detector warnings would fill the
output). Optional extras for the scale plan (``docs/scale_plan.rst``):
``--scheduler-tasks K`` submits K no-op units shaped like calibrate's to the cluster (scheduler throughput and
memory); ``--listing-files F`` times the per-unit listing of an F-file ``post_isr_image`` tree.

    PYTHONPATH=python python bench/bench_scale.py [--visits 2] [--detectors 8] [--workers 2] [--repo PATH]
        [--preset small|lsst] [--star-density 30000] [--no-jobs] [--scheduler-tasks K] [--listing-files F]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads

INPUTS = ("repo.json", "camera.json", "refcat.parquet", "truth", "post_isr_image")
UNIT = {"calibrate": "detectors", "associate": "tracts", "finalize": "visits", "visit_summary": "visits",
        "reprocess": "detectors"}


def vm_hwm_mb() -> float:
    """This process's peak resident memory (``VmHWM``, MB) since the last call; then reset it to the current
    resident size (``/proc/self/clear_refs``, Linux >= 4.0). Run on the Dask workers with ``client.run``."""
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024.0
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return peak


@contextlib.contextmanager
def dask_client(n_workers: int):
    """A `distributed.Client` on a new LocalCluster set up as `dask_executor(workers=n_workers)` sets it up (its
    client kept, for ``client.run``)."""
    import distributed
    from visitcal.pipeline.dask_executor import init_dask_worker

    with distributed.LocalCluster(n_workers=n_workers, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.run(init_dask_worker)  # what dask_executor's worker plugin does on each worker
        client.run(quiet_logs)
        yield client


def quiet_logs() -> None:
    """Only errors from visitcal's loggers (each detector's routine warnings, e.g. PSF candidates clipped, would
    fill the output). Run in this process (the -j workers fork from it) and on the Dask workers."""
    logging.getLogger("visitcal").setLevel(logging.ERROR)


def _noop(*unit) -> None:
    """A unit that does nothing (the scheduler test)."""


def simulated_repo(args) -> Path:
    """The simulated repository: ``--repo``, or the cached one (simulated in a child process when absent, so this
    process's memory stays the client's)."""
    from visitcal.sim import SimConfig, simulate

    if args.repo is not None:
        return Path(args.repo)
    path = _common.RESULTS_DIR / (f"sim_repo_scale_{args.preset}_{args.visits}x{args.detectors}_"
                                  f"{args.star_density:g}_{args.seed}")
    if not (path / "repo.json").is_file():
        config = SimConfig(preset=args.preset, n_visits=args.visits, n_detectors=args.detectors, n_snaps=1,
                           seed=args.seed, star_density=args.star_density)
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        child = multiprocessing.get_context("fork").Process(target=simulate, args=(config, path),
                                                              kwargs={"overwrite": True})
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"simulation of {path} failed (exit code {child.exitcode})")
        print(f"simulated {path} in {time.perf_counter() - t0:.0f} s")
    return path


def fresh_copy(src: Path, dst: Path) -> Path:
    """``dst`` with only the inputs of ``src`` (hard links: the pipeline never writes its inputs)."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in INPUTS:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, copy_function=os.link)
        elif (src / name).is_file():
            os.link(src / name, dst / name)
    return dst


def unit_seconds(step: str, statuses) -> list[float]:
    """Per-unit times from the provenance of the units that ran (skipped ones replay old timings)."""
    ran = [s for s in statuses if not s.skipped]
    if step == "finalize":  # per-detector records of a per-visit unit
        return list({s.visit: s.timings["visit_total"] for s in ran if "visit_total" in s.timings}.values())
    return [s.timings["total"] for s in ran if "total" in s.timings]


def n_units(step: str, statuses) -> int:
    """Units of a step: its statuses, but visits for finalize (one status per detector)."""
    return len({s.visit for s in statuses}) if step == "finalize" else len(statuses)


def run_measured(root: Path, config, *, executor=None, jobs: int = 1, client=None) -> dict:
    """`run_chain` on ``root`` (its lock held, as ``visitcal run``), with per-step figures and peaks."""
    from visitcal.pipeline.chain import run_chain
    from visitcal.pipeline.lock import repository_lock

    peaks = {}

    def on_step(name, statuses):
        workers = sorted(client.run(vm_hwm_mb).values()) if client is not None else None
        peaks[name] = {"client_mb": vm_hwm_mb(), "workers_mb": workers}

    vm_hwm_mb()
    if client is not None:
        client.run(vm_hwm_mb)
    t0 = time.perf_counter()
    with repository_lock(root):
        result = run_chain(root, jobs=jobs, config=config, executor=executor, on_step=on_step)
    total = time.perf_counter() - t0
    steps = {}
    for name, statuses in result.statuses.items():
        times = unit_seconds(name, statuses)
        units = n_units(name, statuses)
        recorded = [s.peak_rss_mb for s in statuses if s.peak_rss_mb and not s.skipped]
        steps[name] = {
            "units": units, "unit": UNIT[name], "failed": sum(not s.ok for s in statuses),
            "degraded": sum(bool(getattr(s, "degraded", False)) for s in statuses),
            "skipped": sum(s.skipped for s in statuses), "wall_s": result.seconds[name],
            "units_per_s": units / result.seconds[name],
            "unit_s_median": statistics.median(times) if times else None, "unit_s_max": max(times, default=None),
            "unit_s_sum": sum(times),
            "provenance_peak_rss_mb_max": max(recorded, default=None), **peaks[name]}
    n_det = steps["calibrate"]["units"]
    return {"total_s": total, "detectors": n_det, "detectors_per_s": n_det / total, "steps": steps}


def step_table(run: dict, *, workers: bool) -> str:
    """A run's per-step table; peak memory per Dask worker (``workers``) or from the provenance."""
    rows = []
    for name, s in run["steps"].items():
        peak = max(s["workers_mb"]) if workers else s["provenance_peak_rss_mb_max"]
        rows.append([name, f"{s['units']} {s['unit']}", s["skipped"], s["degraded"], s["failed"], s["wall_s"],
                     s["units_per_s"], s["unit_s_median"], s["unit_s_max"], peak, s["client_mb"]])
    rows.append(["total", f"{run['detectors']} detectors", "", "", "", run["total_s"], run["detectors_per_s"],
                 None, None, None, None])
    worker = "peak MB/worker (max)" if workers else "peak MB (provenance)"
    return _common.format_table(["step", "units", "skipped", "degraded", "failed", "wall s", "units/s",
                                 "unit s median", "unit s max", worker, "client MB"], rows, ".3g")


def dataset_sizes(root: Path) -> dict:
    """Files and bytes per file at the root and per dataset folder (``provenance/<step>`` per step), inputs
    included."""
    out = {p.name: {"files": 1, "bytes": p.stat().st_size} for p in sorted(root.iterdir()) if p.is_file()}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for sub in (sorted(p for p in folder.iterdir() if p.is_dir()) if folder.name == "provenance" else [folder]):
            files = [p for p in sub.rglob("*") if p.is_file()]
            out[str(sub.relative_to(root))] = {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    return out


def product_digest(root: Path) -> str:
    """One SHA-256 over every product (not provenance, inputs or truth), to compare two runs' bytes."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and p.suffix in (".fits", ".parquet") and rel.parts[0] not in ("provenance", *INPUTS):
            h.update(str(rel).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def catalog_rows(root: Path) -> dict:
    """Rows, columns and bytes per row (in memory, on disk) of the first table of each catalog dataset."""
    from visitcal.io import read_catalog

    out = {}
    for name in ("single_visit_star", "isolated_star", "isolated_star_association", "refit_psf_star", "source"):
        path = next(iter(sorted((root / name).rglob("*.parquet"))), None)
        if path is None:
            continue
        table = read_catalog(path)
        n = max(len(table), 1)
        out[name] = {"rows": len(table), "columns": len(table.colnames),
                     "bytes_per_row_memory": sum(table[c].nbytes for c in table.colnames) / n,
                     "bytes_per_row_disk": path.stat().st_size / n}
    return out


def scheduler_test(executor, root: Path, config, n: int) -> dict:
    """Submit ``n`` no-op units carrying calibrate's arguments (root, visit, detector, config JSON) the way the
    steps do (`run_units`): wall time, units per second, and this process's (client and scheduler) peak."""
    from visitcal.pipeline.runner import run_units

    cfg = config.calibrate.model_dump_json()
    units = [(str(root), 1000 + k // 189, k % 189, cfg, False) for k in range(n)]
    vm_hwm_mb()
    base = _rss_mb()
    t0 = time.perf_counter()
    run_units(_noop, units, executor=executor)
    wall = time.perf_counter() - t0
    peak = vm_hwm_mb()
    return {"tasks": n, "payload_bytes": len(cfg), "wall_s": wall, "tasks_per_s": n / wall,
            "client_rss_before_mb": base, "client_peak_mb": peak, "client_mb_per_1000_tasks": (peak - base) / n * 1e3}


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024.0


def listing_test(n_files: int, per_visit: int = 189) -> dict:
    """Seconds of one `Repository.post_isr_snaps` (each calibrate and reprocess unit calls it once, through
    ``data_ids`` or directly) and of the lock's stale-temporary walk, on a tree of ``n_files`` empty snaps."""
    from visitcal.core.atomic import remove_stale_temporaries
    from visitcal.pipeline.repository import Repository

    with tempfile.TemporaryDirectory(dir=_common.RESULTS_DIR) as tmp:
        root = Path(tmp)
        for k in range(n_files):
            visit, det = divmod(k, per_visit)
            folder = root / "post_isr_image" / f"{1000 + visit:06d}"
            if det == 0:
                folder.mkdir(parents=True)
            (folder / f"post_isr_image_{1000 + visit:06d}_{det:03d}_0.fits").touch()
        snaps = _common.time_it(lambda: Repository(root).post_isr_snaps(), repeat=3)
        walk = _common.time_it(lambda: remove_stale_temporaries(root), repeat=3)
    return {"files": n_files, "post_isr_snaps_s": snaps.median, "stale_walk_s": walk.median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=2, help="visits to simulate")
    parser.add_argument("--detectors", type=int, default=8, help="detectors per visit to simulate")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (and -j of the comparison)")
    parser.add_argument("--preset", choices=("small", "lsst"), default="small", help="camera of the simulation")
    parser.add_argument("--star-density", type=float, default=30000.0, help="stars per deg^2 (simulation)")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--repo", default=None, help="a simulated repository to use instead of the cached one")
    parser.add_argument("--work", default=str(_common.RESULTS_DIR / "scale_runs"), help="where the runs' copies go")
    parser.add_argument("--no-jobs", action="store_true", help="skip the jobs=N comparison")
    parser.add_argument("--keep", action="store_true", help="keep the processed copies in --work")
    parser.add_argument("--scheduler-tasks", type=int, default=0, help="also submit this many no-op units")
    parser.add_argument("--listing-files", type=int, default=0, help="also time listing a tree of this many snaps")
    parser.add_argument("--json", default=None, help="output (default bench/results/bench_scale.json)")
    args = parser.parse_args()
    from visitcal.pipeline.calibrate_step import CalibrateStepConfig
    from visitcal.pipeline.chain import RunConfig

    sim = simulated_repo(args)
    quiet_logs()
    _common.tune_allocator_as_the_cli()
    _common.print_header(f"visitcal run on {sim.name}: Dask LocalCluster of {args.workers} workers x 1 thread", None)
    # the calibrate preset `visitcal run --preset` would take: sparse for the small 2048^2 detectors
    config = RunConfig(calibrate=CalibrateStepConfig.preset("sparse" if args.preset == "small" else "lsst"))
    work = Path(args.work)
    payload = {"repository": str(sim), "preset": args.preset, "workers": args.workers, "visits": args.visits,
               "detectors": args.detectors, "star_density": args.star_density, "seed": args.seed,
               "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg()}

    t0 = time.perf_counter()
    with dask_client(args.workers) as client:
        payload["cluster_start_s"] = time.perf_counter() - t0
        executor = client.get_executor()
        on_dask = fresh_copy(sim, work / "dask")
        payload["dask"] = run_measured(on_dask, config, executor=executor, client=client)
        print(f"\nDask, {args.workers} workers (cluster started in {payload['cluster_start_s']:.1f} s):")
        print(step_table(payload["dask"], workers=True))
        payload["rerun"] = run_measured(on_dask, config, executor=executor, client=client)
        print("\nRerun on the finished repository (Dask; every unit up to date):")
        print(step_table(payload["rerun"], workers=True))
    payload["datasets"] = dataset_sizes(on_dask)
    payload["catalogs"] = catalog_rows(on_dask)
    print("\nFiles per dataset (Dask run):")
    print(_common.format_table(["dataset", "files", "MB", "MB per file"],
                               [[k, v["files"], v["bytes"] / 1e6, v["bytes"] / 1e6 / max(v["files"], 1)]
                                for k, v in payload["datasets"].items()], ".4g"))
    print(_common.format_table(["catalog", "rows", "columns", "B/row memory", "B/row disk"],
                               [[k, v["rows"], v["columns"], v["bytes_per_row_memory"], v["bytes_per_row_disk"]]
                                for k, v in payload["catalogs"].items()], ".4g"))
    if not args.no_jobs:
        on_jobs = fresh_copy(sim, work / "jobs")
        payload["jobs"] = run_measured(on_jobs, config, jobs=args.workers)
        payload["same_bytes"] = product_digest(on_dask) == product_digest(on_jobs)
        print(f"\njobs={args.workers} local processes, no executor (peaks from the units' provenance, ru_maxrss):")
        print(step_table(payload["jobs"], workers=False))
        print(f"same bytes as the Dask run: {payload['same_bytes']}")
    if args.scheduler_tasks:
        with dask_client(args.workers) as client:
            payload["scheduler"] = scheduler_test(client.get_executor(), on_dask, config, args.scheduler_tasks)
        print("\nScheduler:", payload["scheduler"])
    if args.listing_files:
        payload["listing"] = listing_test(args.listing_files)
        print("\nListing:", payload["listing"])
    payload["load_average_end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at the start {payload['load_average_start']}, at the end "
          f"{payload['load_average_end']}: other processes on the machine change the figures")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nwrote {_common.write_json('bench_scale', payload, args.json)}")


if __name__ == "__main__":
    main()
