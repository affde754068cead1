"""The finalize tasks on a simulated, calibrated repository, against the simulator's truth.

The isolated-star inputs are built from the truth (`tests.sim.helpers.isolated_star_tables`), in the
association task's table format (lsst-spec §3), over two tracts. The repository: 3 visits x 2 detectors of
1024 x 1024 px with a dense star field, calibrated with the ``sparse`` preset (~60 s for the module).

Figures measured when this was written (pixelgrid, order 2, ~55 isolated stars per 1024^2 detector): at the
25 reserved stars the PSF size error is 2.4e-3 rms and the mean e1 / e2 errors 4e-4 / -7e-4; the base_PsfFlux
aperture correction is 9.8 mmag rms from the truth over the detector, with only 15-20 stars of S/N > 200 per
detector for a 6-term Chebyshev field. On the 2048^2 repository of the brief (~100 stars per detector,
bench/README.md) the same code gives 1.4e-3, -2e-4 / 7e-5 and 2.3-2.8 mmag (35 stars of S/N > 200; measured
against the calexp's own tophat normalisation, 2.3 / 2.8 mmag too): the limit is the number and S/N of the stars,
not the model (order 1 or 3, fit_center off, or a Lanczos(15) grid do no better). The brief's targets (1e-3,
5e-4, 1 mmag) are therefore not reached on these star counts; the tolerances below sit above the measured values.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.table import Table

from visitcal.tasks.finalize_characterization import (
    ConsolidateFinalizeCharacterizationDetectorTask,
    FinalizeCharacterizationConfig,
    FinalizeCharacterizationDetectorTask,
    FinalizeCharacterizationTask,
    NoWorkFound,
    apply_visit_level_ap_corr,
    read_psf_ap_corr_cat,
    write_psf_ap_corr_cat,
)
from visitcal.core.footprint import Footprint
from visitcal.core.image import Exposure
from visitcal.io import read_catalog, read_exposure
from visitcal.measurement.plugins.aperture_flux import ApertureFluxConfig
from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate
from visitcal.sim import SimConfig, SimRepository, simulate
from visitcal.measurement.single_frame_measurement import SingleFrameMeasurementConfig, SingleFrameMeasurementTask

from .helpers import isolated_star_tables

CONFIG = SimConfig(preset="small", n_visits=3, n_detectors=2, detector_width=1024, detector_height=1024, n_snaps=1,
                   seed=5, star_density=200000.0, galaxy_density=20000.0)
TRACTS = (9813, 9814)


class Inputs:
    def __init__(self, root):
        self.root = root
        self.repo = SimRepository(root)
        self.band = self.repo.band
        self.src = {}
        for v in self.repo.visits:
            for d in self.repo.detectors:
                self.src[(v, d)] = read_catalog(root / "single_visit_star" / f"{v:06d}" /
                                                f"single_visit_star_{v:06d}_{d:03d}.parquet")
        self.stars, self.sources, self.truth_ids = isolated_star_tables(self.repo, self.src, tracts=TRACTS)

    def exposure(self, v, d) -> Exposure:
        return read_exposure(self.root / "preliminary_visit_image" / f"{v:06d}" /
                             f"preliminary_visit_image_{v:06d}_{d:03d}.fits")

    def run_visit(self, v, task=None, sources=None):
        task = task or FinalizeCharacterizationTask()
        return task.run(v, self.band, self.stars, sources or self.sources,
                        {d: self.src[(v, d)] for d in self.repo.detectors},
                        {d: (lambda d=d: self.exposure(v, d)) for d in self.repo.detectors})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("finalize") / "repo"
    simulate(CONFIG, root)
    statuses = run_calibrate(root, config=CalibrateStepConfig.preset("sparse"), jobs=1)
    assert all(s.ok for s in statuses), [(s.visit, s.detector, s.message) for s in statuses]
    return Inputs(root)


@pytest.fixture(scope="module")
def results(inputs):
    return {v: inputs.run_visit(v) for v in inputs.repo.visits}


def _tables_equal(a: Table, b: Table):
    assert a.colnames == b.colnames
    assert a.meta.get("slots") == b.meta.get("slots")
    for name in a.colnames:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype, name
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), name
        else:
            assert np.array_equal(x, y), name


def _cats_equal(a: Table, b: Table):
    assert list(a["detector"]) == list(b["detector"]) and list(a["visit"]) == list(b["visit"])
    assert list(a["status"]) == list(b["status"])
    for ra, rb in zip(a, b):
        assert (ra["psf"] is None) == (rb["psf"] is None)
        if ra["psf"] is not None:
            assert ra["psf"] == rb["psf"]
        assert (ra["ap_corr_map"] is None) == (rb["ap_corr_map"] is None)
        if ra["ap_corr_map"] is not None:
            assert ra["ap_corr_map"] == rb["ap_corr_map"]


def test_outputs(inputs, results):
    for v, res in results.items():
        cat, table = res.psf_ap_corr_cat, res.output_table
        assert list(cat["detector"]) == inputs.repo.detectors and all(cat["status"] == "ok")
        assert table["visit"].dtype == np.int64 and table["detector"].dtype == np.int32
        assert np.all(table["visit"] == v) and np.all(table["calib_psf_candidate"])
        assert not np.any(table["calib_psf_used"] & table["calib_psf_reserved"])
        for row in cat:
            st = res.detector_status[int(row["detector"])]
            assert st.n_used >= 30 and st.n_reserved >= 1
            assert "base_CompensatedTophatFlux_12_instFlux" in row["ap_corr_map"]   # merged from the calexp
            assert "base_PsfFlux_instFlux" in row["ap_corr_map"]
        assert np.all(np.isfinite(table["base_PsfFlux_instFlux"])) and np.all(np.isfinite(table["psf_max_value"]))
        assert not np.any(table["base_PsfFlux_flag_apCorr"])
        assert res.output_table.meta["slots"]["Centroid"] == "base_SdssCentroid"
        assert res.output_table.meta["slots"]["CalibFlux"] == "base_NormalizedCompensatedTophatFlux"


def test_detector_task_and_consolidate_give_identical_outputs(inputs, results, tmp_path):
    v = inputs.repo.visits[0]
    task = FinalizeCharacterizationDetectorTask()
    cats, tables = {}, {}
    for d in inputs.repo.detectors:
        r = task.run(v, inputs.band, d, inputs.stars, inputs.sources, inputs.src[(v, d)], inputs.exposure(v, d))
        # through disk, as the pipeline would store them
        cats[d] = read_psf_ap_corr_cat(write_psf_ap_corr_cat(r.psf_ap_corr_cat, tmp_path / f"cat_{d}.fits"))
        tables[d] = r.output_table
    out = ConsolidateFinalizeCharacterizationDetectorTask().run(psf_ap_corr_detector_dict=cats,
                                                                src_detector_table_dict=tables)
    _cats_equal(out.psf_ap_corr_cat, results[v].psf_ap_corr_cat)
    _tables_equal(out.output_table, results[v].output_table)
    # and the lossless round trip of the fitted models: identical images
    back = read_psf_ap_corr_cat(write_psf_ap_corr_cat(results[v].psf_ap_corr_cat, tmp_path / "visit.fits"))
    for a, b in zip(results[v].psf_ap_corr_cat, back):
        for x, y in ((10.2, 20.7), (512.0, 511.5), (1000.9, 3.3)):
            assert np.array_equal(a["psf"].compute_image(x, y), b["psf"].compute_image(x, y))
        assert a["ap_corr_map"] == b["ap_corr_map"]


def test_reserve_flags_consistent_across_visits(inputs, results):
    star_of = {}
    for tract in TRACTS:
        src = inputs.sources[tract]
        for sid, obj in zip(src["sourceId"], src["obj_index"]):
            star_of[int(sid)] = (tract, int(obj))
    flags: dict = {}
    for res in results.values():
        for sid, flag in zip(res.output_table["id"], res.output_table["calib_psf_reserved"]):
            flags.setdefault(star_of[int(sid)], set()).add(bool(flag))
    assert len(flags) > 100
    assert all(len(f) == 1 for f in flags.values())
    # the tract-level draw: floor(0.1 N) of the band's stars, whichever visits they were seen in
    from visitcal.tasks.reserve_isolated_stars import ReserveIsolatedStarsTask
    for tract in TRACTS:
        n = len(inputs.stars[tract])
        drawn = ReserveIsolatedStarsTask().run(n, extra=f"{inputs.band}_{tract}")
        assert drawn.sum() == n // 10
        for (t, obj), f in flags.items():
            if t == tract:
                assert f == {bool(drawn[obj])}


def test_psf_matches_truth_on_reserved_stars(inputs, results):
    def shape(m):
        return np.array([m.determinant_radius, (m.xx - m.yy) / (m.xx + m.yy), 2 * m.xy / (m.xx + m.yy)])

    err = []
    for v, res in results.items():
        table = res.output_table
        for row in res.psf_ap_corr_cat:
            d = int(row["detector"])
            truth = inputs.repo.true_psf(v, d, size=61)
            sel = (table["detector"] == d) & table["calib_psf_reserved"]
            for x, y in zip(table["base_SdssCentroid_x"][sel], table["base_SdssCentroid_y"][sel]):
                t = shape(truth.compute_shape(x, y))
                m = shape(row["psf"].compute_shape(x, y))
                err.append([m[0] / t[0] - 1, m[1] - t[1], m[2] - t[2]])
    err = np.array(err)
    size_rms = float(np.sqrt(np.mean(err[:, 0] ** 2)))
    e1, e2 = float(err[:, 1].mean()), float(err[:, 2].mean())
    print(f"\nreserved stars {len(err)}: size rms {size_rms:.2e}, mean e1 {e1:.2e}, mean e2 {e2:.2e}")
    assert len(err) >= 15
    assert size_rms < 4e-3
    assert abs(e1) < 2.5e-3 and abs(e2) < 2.5e-3


def _true_ap_corr(truth_psf, fitted_psf, x, y):
    """12-px aperture flux / base_PsfFlux (fitted PSF) of a noise-free image of the true PSF at (x, y)."""
    w = 121
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    x0, y0 = ix - w // 2, iy - w // 2
    img = np.zeros((w, w), np.float32)
    bb = truth_psf.compute_image_bbox(x, y)
    img[bb.min_y - y0:bb.max_y - y0 + 1, bb.min_x - x0:bb.max_x - x0 + 1] = truth_psf.compute_image(x, y) * 1e5
    exp = Exposure.from_arrays(img, None, np.ones((w, w), np.float32), xy0=(x0, y0), psf=fitted_psf)
    t = Table({"id": [1], "parent": [0]})
    fp = Footprint(np.array([[yy, x0, x0 + w - 1] for yy in range(y0, y0 + w)]))
    cfg = SingleFrameMeasurementConfig(plugins=("base_PsfFlux", "base_CircularApertureFlux"),
                                       do_replace_with_noise=False,
                                       circular_aperture_flux=ApertureFluxConfig(radii=(12.0,)))
    SingleFrameMeasurementTask(cfg).run(t, exp, [fp], centroids=(np.array([x]), np.array([y])))
    return float(t["base_CircularApertureFlux_12_0_instFlux"][0] / t["base_PsfFlux_instFlux"][0])


def test_psf_flux_ap_corr_matches_truth(inputs, results):
    dm = []
    v = inputs.repo.visits[0]
    for row in results[v].psf_ap_corr_cat:
        d = int(row["detector"])
        truth = inputs.repo.true_psf(v, d, size=61)
        field = row["ap_corr_map"]["base_PsfFlux_instFlux"]
        for x in np.linspace(100, 923, 4):
            for y in np.linspace(100, 923, 4):
                a = float(field.evaluate(np.array([x]), np.array([y]))[0])
                dm.append(-2.5 * np.log10(a / _true_ap_corr(truth, row["psf"], x, y)))
    rms = 1000 * float(np.sqrt(np.mean(np.square(dm))))
    print(f"\nbase_PsfFlux ap corr vs truth: {rms:.2f} mmag rms over {len(dm)} points")
    assert rms < 15.0


def _iso_subset(inputs, keep_ids):
    """The isolated-source tables with only the sources in ``keep_ids`` (star tables unchanged, so the
    reserve flags are too)."""
    out = {}
    for tract, src in inputs.sources.items():
        out[tract] = src[np.isin(np.asarray(src["sourceId"]), np.asarray(sorted(keep_ids), np.int64))]
    return out


def _selected_matched(inputs, v, d, task):
    src = inputs.src[(v, d)]
    sel = task.source_selector.run(src)
    all_iso = np.concatenate([np.asarray(s["sourceId"]) for s in inputs.sources.values()])
    res = FinalizeCharacterizationTask().reserve_selection
    reserved = set()
    for tract in TRACTS:
        flags = res.run(len(inputs.stars[tract]), extra=f"{inputs.band}_{tract}")
        s = inputs.sources[tract]
        reserved |= {int(i) for i, o in zip(s["sourceId"], s["obj_index"]) if flags[o]}
    rows = np.flatnonzero(sel & np.isin(np.asarray(src["id"]), all_iso))
    snr = np.asarray(src["base_PsfFlux_instFlux"]) / np.asarray(src["base_PsfFlux_instFluxErr"])
    return src, rows, reserved, snr


#: LSST's semantics: no fainter stars, no visit-level PSF or aperture correction (issue 21's fallbacks off).
LSST_FAILURES = FinalizeCharacterizationConfig(
    measure_ap_corr=FinalizeCharacterizationConfig().measure_ap_corr.model_copy(update={"fallback_min_snr": None}),
    do_visit_level_ap_corr=False, do_faint_psf_fallback=False, do_visit_level_psf=False)


@pytest.mark.parametrize("case", ["no_matches", "too_few_stars", "ap_corr", "candidates", "measurement"])
def test_failure_semantics(inputs, results, case, monkeypatch):
    v = inputs.repo.visits[0]
    d_bad, d_good = inputs.repo.detectors[1], inputs.repo.detectors[0]
    task = FinalizeCharacterizationTask(LSST_FAILURES)
    src, rows, reserved, snr = _selected_matched(inputs, v, d_bad, task)
    bad_ids = [int(i) for i in src["id"][rows] if int(i) not in reserved]
    good_ids = {int(i) for s in inputs.sources.values() for i, dd in zip(s["sourceId"], s["detector"]) if dd == d_good}
    sources = inputs.sources
    if case == "no_matches":
        sources = _iso_subset(inputs, good_ids)
    elif case == "too_few_stars":
        # 4 stars: without the order step-down (LSST's behaviour) a typed failure; with it see
        # test_too_few_stars_for_the_order_step_down.
        sources = _iso_subset(inputs, good_ids | set(bad_ids[:4]))
        c = task.config
        task = FinalizeCharacterizationTask(c.model_copy(update={"psf_determiner": c.psf_determiner.model_copy(
            update={"pixelgrid": c.psf_determiner.pixelgrid.model_copy(update={"order_step_down": False})})}))
    elif case == "ap_corr":
        faint = [int(i) for i, s in zip(src["id"][rows], snr[rows]) if int(i) not in reserved and s < 120]
        assert len(faint) >= 10
        sources = _iso_subset(inputs, good_ids | set(faint[:12]))
    else:
        import visitcal.tasks.finalize_characterization as fc

        real = fc.make_psf_candidates if case == "candidates" else task.measurement.run

        def flaky(*args, **kwargs):
            if flaky.detector == d_bad:
                raise RuntimeError(f"injected {case} failure")
            return real(*args, **kwargs)

        flaky.detector = None
        original = task.compute_psf_and_ap_corr_map

        def compute(visit, detector, *a, **k):
            flaky.detector = detector
            return original(visit, detector, *a, **k)

        monkeypatch.setattr(task, "compute_psf_and_ap_corr_map", compute)
        if case == "candidates":
            monkeypatch.setattr(fc, "make_psf_candidates", flaky)
        else:
            monkeypatch.setattr(task.measurement, "run", flaky)
    res = inputs.run_visit(v, task=task, sources=sources)
    cat, table = res.psf_ap_corr_cat, res.output_table
    ref = results[v]
    expected_status = {"no_matches": "no_isolated_matches", "too_few_stars": "psf_too_few_stars",
                       "ap_corr": "ap_corr_failed", "candidates": "candidates_failed",
                       "measurement": "measurement_failed"}[case]
    assert res.detector_status[d_bad].status == expected_status
    # the good detector is unaffected
    good_ref = ref.output_table[ref.output_table["detector"] == d_good]
    _tables_equal(table[table["detector"] == d_good], good_ref)
    assert cat["psf"][list(cat["detector"]).index(d_good)] == ref.psf_ap_corr_cat["psf"][0]
    bad_rows = table[table["detector"] == d_bad]
    if case == "no_matches":
        assert list(cat["detector"]) == [d_good] and len(bad_rows) == 0
        return
    k = list(cat["detector"]).index(d_bad)
    assert cat["status"][k] == expected_status and cat["ap_corr_map"][k] is None
    has_psf = case in ("ap_corr", "measurement")
    assert (cat["psf"][k] is not None) == has_psf
    assert len(bad_rows) > 0 and np.all(bad_rows["calib_psf_candidate"])
    if case in ("too_few_stars", "candidates", "measurement"):
        # unmeasured: the used flags False (except after a successful fit) and the measurement columns NaN
        assert np.all(np.isnan(bad_rows["base_PsfFlux_instFlux"]))
        assert np.all(np.isnan(bad_rows["base_SdssShape_xx"]))
    if case in ("too_few_stars", "candidates"):
        assert not np.any(bad_rows["calib_psf_used"])
    if case == "ap_corr":
        assert np.all(np.isfinite(bad_rows["base_PsfFlux_instFlux"])) and np.any(bad_rows["calib_psf_used"])
        assert np.all(np.isnan(bad_rows["base_PsfFlux_apCorr"]))
    with pytest.raises(NoWorkFound):
        FinalizeCharacterizationDetectorTask().run(v, inputs.band, d_bad, inputs.stars, _iso_subset(inputs, good_ids),
                                                   inputs.src[(v, d_bad)], inputs.exposure(v, d_bad))


def test_too_few_stars_for_the_order_step_down(inputs, results):
    """Issue 21: 4 isolated stars on a detector no longer fail its PSF: the fit steps down to a constant
    (order 0), and the detector's status records the fallback (``degraded_reason``; the status itself is
    ``degraded``, the reason in its message, unless a later stage failed)."""
    from visitcal.tasks.finalize_characterization import DEGRADED_STATUSES

    v = inputs.repo.visits[0]
    d_bad, d_good = inputs.repo.detectors[1], inputs.repo.detectors[0]
    task = FinalizeCharacterizationTask()
    src, rows, reserved, snr = _selected_matched(inputs, v, d_bad, task)
    bad_ids = [int(i) for i in src["id"][rows] if int(i) not in reserved]
    good_ids = {int(i) for s in inputs.sources.values() for i, dd in zip(s["sourceId"], s["detector"]) if dd == d_good}
    res = inputs.run_visit(v, task=task, sources=_iso_subset(inputs, good_ids | set(bad_ids[:4])))
    st = res.detector_status[d_bad]
    assert st.psf_spatial_order == 0 and st.degraded_reason.startswith("psf_order_reduced: spatial order 0 instead of 2")
    assert st.status in DEGRADED_STATUSES + ("ap_corr_failed",)
    assert st.status != "degraded" or st.message.startswith(st.degraded_reason)
    k = list(res.psf_ap_corr_cat["detector"]).index(d_bad)
    assert res.psf_ap_corr_cat["psf"][k] is not None


# --- sparse fields (issue 21) -----------------------------------------------------------------------------------

def _faint_only(inputs, v, d_bad, d_good, task, snr_max=120.0, n=12):
    """Isolated-source tables where ``d_bad`` keeps only ``n`` non-reserved stars of PSF-flux S/N below ``snr_max``
    (none reaches LSST's S/N > 200 for the aperture correction) and ``d_good`` all of its own."""
    src, rows, reserved, snr = _selected_matched(inputs, v, d_bad, task)
    faint = [int(i) for i, s in zip(src["id"][rows], snr[rows]) if int(i) not in reserved and s < snr_max]
    assert len(faint) >= n
    good_ids = {int(i) for s in inputs.sources.values() for i, dd in zip(s["sourceId"], s["detector"]) if dd == d_good}
    return _iso_subset(inputs, good_ids | set(faint[:n]))


def test_ap_corr_from_fainter_stars(inputs, results):
    """A detector whose PSF stars all have S/N < 120 (LSST fails its aperture correction: S/N > 200): the limit
    is relaxed to 100, the fit steps down in order, and the detector is degraded with both reasons."""
    v = inputs.repo.visits[0]
    d_bad, d_good = inputs.repo.detectors[1], inputs.repo.detectors[0]
    task = FinalizeCharacterizationTask()
    res = inputs.run_visit(v, task=task, sources=_faint_only(inputs, v, d_bad, d_good, task))
    ds = res.detector_status[d_bad]
    assert ds.status == "degraded" and ds.ok and ds.degraded
    # the limit halves (200 -> 100 -> 50) until stars are found; with 12 stars the PSF is also fitted below
    # order 2, the first of the reasons
    assert re.search(r"S/N limit 200 -> (100|50) ", ds.message)
    assert re.search(r"base_PsfFlux: order \d( -> \d)? of 2, S/N > (100|50), \d+ stars", ds.message)
    assert ds.message.startswith("psf_order_reduced: ") == bool(ds.degraded_reason)
    k = list(res.psf_ap_corr_cat["detector"]).index(d_bad)
    assert res.psf_ap_corr_cat["status"][k] == "degraded" and res.psf_ap_corr_cat["message"][k] == ds.message
    assert res.psf_ap_corr_cat["ap_corr_map"][k] is not None
    assert res.output_table.meta["DEGRADED"] and f"detector {d_bad}: " in res.output_table.meta["DEGRADED_REASON"]
    assert results[v].output_table.meta["DEGRADED"] is False  # the full visit needs no fallback


def _per_detector_mode(inputs, v, sources, dtask, tmp_path):
    """The per-detector mode up to the consolidation: ``dtask`` on each detector of visit ``v``, each
    detector's PSF/ap-corr catalog through a FITS round trip, then the consolidated result."""
    models, stars = {}, {}
    for d in inputs.repo.detectors:
        r = dtask.run(v, inputs.band, d, inputs.stars, sources, inputs.src[(v, d)], inputs.exposure(v, d))
        models[d] = read_psf_ap_corr_cat(write_psf_ap_corr_cat(r.psf_ap_corr_cat, tmp_path / f"cat_{d}.fits"))
        stars[d] = r.output_table
    return ConsolidateFinalizeCharacterizationDetectorTask().run(psf_ap_corr_detector_dict=models,
                                                               src_detector_table_dict=stars)


def test_visit_level_ap_corr_for_a_detector_without_enough_stars(inputs, results, tmp_path):
    """The aperture correction's S/N limit at the second-brightest star of one detector and no fainter stars
    allowed (fallback_min_snr None): that detector's own fit has one star and fails, and it takes the visit's
    constant, fitted on the stars of both detectors above the limit; degraded, with the reason; its star-table
    rows are corrected with it. Against the truth (the 12-px aperture flux over the PSF flux of a noise-free true
    PSF, with the detector's fitted PSF) at 16 points. The per-detector mode gives the same bytes."""
    v = inputs.repo.visits[0]
    ref = results[v].output_table
    snr = np.asarray(ref["base_PsfFlux_instFlux"]) / np.asarray(ref["base_PsfFlux_instFluxErr"])
    det = np.asarray(ref["detector"])
    second = {d: float(np.sort(snr[(det == d) & np.isfinite(snr)])[-2]) for d in inputs.repo.detectors}
    d_bad = min(second, key=second.get)  # the detector whose second-brightest star is the fainter
    d_good = next(d for d in inputs.repo.detectors if d != d_bad)
    limit = second[d_bad]
    n_pool = int(np.sum(snr[np.isfinite(snr)] > limit))
    assert np.sum(snr[det == d_good] > limit) >= 2
    mac = FinalizeCharacterizationConfig().measure_ap_corr
    mac = mac.model_copy(update={"fallback_min_snr": None, "source_selector": mac.source_selector.model_copy(
        update={"signal_to_noise": mac.source_selector.signal_to_noise.model_copy(update={"minimum": limit})})})
    config = FinalizeCharacterizationConfig(measure_ap_corr=mac)
    task = FinalizeCharacterizationTask(config)
    sources = inputs.sources
    res = inputs.run_visit(v, task=task)
    cat, table = res.psf_ap_corr_cat, res.output_table
    k = list(cat["detector"]).index(d_bad)
    ds = res.detector_status[d_bad]
    assert ds.status == "degraded" and cat["status"][k] == "degraded"
    used = int(ds.message.split("visit-level ap corr (")[1].split(" stars")[0])
    assert 2 <= used <= n_pool and ": base_PsfFlux " in ds.message  # 4-sigma clipping may drop a few
    assert "own fit: unable to measure the aperture correction for 'base_PsfFlux': 1 sources" in ds.message
    assert cat["message"][k] == ds.message and f"detector {d_bad}: visit-level" in table.meta["DEGRADED_REASON"]
    apc = cat["ap_corr_map"][k]
    for name in ("base_PsfFlux", "base_GaussianFlux"):
        assert apc[name + "_instFlux"].coefficients.shape == (1, 1)
    assert "base_CompensatedTophatFlux_12_instFlux" in apc  # the input's normalisation, carried
    bad_rows = table[table["detector"] == d_bad]
    a = apc["base_PsfFlux_instFlux"].mean()
    assert np.all(~np.asarray(bad_rows["base_PsfFlux_flag_apCorr"]))
    np.testing.assert_allclose(np.asarray(bad_rows["base_PsfFlux_apCorr"]), a, rtol=0, atol=0)
    truth = inputs.repo.true_psf(v, d_bad, size=61)
    dm = [-2.5 * np.log10(a / _true_ap_corr(truth, cat["psf"][k], x, y))
          for x in np.linspace(100, 923, 4) for y in np.linspace(100, 923, 4)]
    rms, mean = 1000 * float(np.sqrt(np.mean(np.square(dm)))), 1000 * float(np.mean(dm))
    print(f"\nvisit-level base_PsfFlux ap corr {a:.4f} vs truth: mean {mean:.2f}, rms {rms:.2f} mmag")
    # measured: mean 2.3, rms 17.2 mmag (the detector's own order-2 field: 8.1 rms); a constant cannot follow the
    # correction's variation over the detector
    assert abs(mean) < 10.0 and rms < 25.0
    # the per-detector mode: detector tasks, consolidation, then the same fallback
    dtask = FinalizeCharacterizationDetectorTask(config)
    out = _per_detector_mode(inputs, v, sources, dtask, tmp_path)
    apply_visit_level_ap_corr(out, {d: (lambda d=d: (inputs.exposure(v, d).bbox, inputs.exposure(v, d).ap_corr_map))
                                    for d in inputs.repo.detectors}, config)
    _cats_equal(out.psf_ap_corr_cat, cat)
    _tables_equal(out.output_table, table)
    assert out.output_table.meta["DEGRADED_REASON"] == table.meta["DEGRADED_REASON"]


def test_faint_psf_stars_only_when_needed(inputs, results):
    """The full visit keeps the selector's S/N > 50 (enough stars for a linear PSF); a detector left with
    isolated stars of S/N 12-45 only (none above the cut) takes them through the fainter-star fallback
    (S/N > 10), fits its PSF on them, and is degraded with the reason. The PSF's size at the centre: +1.5% of the
    truth measured (12 stars of S/N < 45 for a constant model), within 2%."""
    v = inputs.repo.visits[0]
    assert not any("psf_faint_stars" in str(m) for m in results[v].psf_ap_corr_cat["message"])
    d_bad, d_good = inputs.repo.detectors[1], inputs.repo.detectors[0]
    task = FinalizeCharacterizationTask()
    faint_task = FinalizeCharacterizationTask(FinalizeCharacterizationConfig(
        source_selector=task.config.source_selector.model_copy(update={
            "signal_to_noise": task.config.source_selector.signal_to_noise.model_copy(update={"minimum": 12.0})})))
    src, rows, reserved, snr = _selected_matched(inputs, v, d_bad, faint_task)
    gsnr = np.asarray(src["base_GaussianFlux_instFlux"]) / np.asarray(src["base_GaussianFlux_instFluxErr"])
    faint = [int(i) for i, s in zip(src["id"][rows], gsnr[rows]) if int(i) not in reserved and s < 45]
    assert len(faint) >= 12
    good_ids = {int(i) for s in inputs.sources.values() for i, dd in zip(s["sourceId"], s["detector"]) if dd == d_good}
    res = inputs.run_visit(v, task=task, sources=_iso_subset(inputs, good_ids | set(faint[:12])))
    ds = res.detector_status[d_bad]
    assert ds.ok and ds.status == "degraded" and ds.n_candidates == 12
    assert ds.message.startswith("psf_faint_stars: PSF candidates down to S/N 10 (12 to fit, a constant PSF: spatial "
                                 "order 0 instead of 2), the configured S/N cut leaving 0, fewer than the 9 of a "
                                 "linear PSF")
    assert ds.psf_spatial_order == 0
    assert "psf_faint_stars" not in res.detector_status[d_good].message
    k = list(res.psf_ap_corr_cat["detector"]).index(d_bad)
    psf = res.psf_ap_corr_cat["psf"][k]
    cx, cy = inputs.exposure(v, d_bad).bbox.center
    size = psf.compute_shape(cx, cy).determinant_radius
    truth = inputs.repo.true_psf(v, d_bad).compute_shape(cx, cy).determinant_radius
    print(f"\nPSF from 12 faint stars: size {size / truth - 1:+.4f} of the truth at the centre")
    assert abs(size / truth - 1) < 0.02


def test_visit_level_psf_for_a_detector_deprived_of_stars(inputs, results, tmp_path):
    """A detector left with one isolated star: its own PSF fails its checks (a single star is fitted to its
    noise, or too few), and it takes the visit-level PSF, a constant fitted on the candidates of both detectors
    (each in its own pixels), checked; degraded with the reason, in the catalog and the star table's metadata, and
    remeasured with it (ap corr included). Against the truth: the size at the detector's centre within 1.5%
    (the PSF varies over the focal plane; measured +0.09% from 50 stars). The per-detector mode gives the same bytes."""
    v = inputs.repo.visits[0]
    d_bad, d_good = inputs.repo.detectors[1], inputs.repo.detectors[0]
    task = FinalizeCharacterizationTask()
    src, rows, reserved, snr = _selected_matched(inputs, v, d_bad, task)
    one = [int(i) for i in src["id"][rows] if int(i) not in reserved][:1]
    good_ids = {int(i) for s in inputs.sources.values() for i, dd in zip(s["sourceId"], s["detector"]) if dd == d_good}
    sources = _iso_subset(inputs, good_ids | set(one))
    res = inputs.run_visit(v, task=task, sources=sources)
    cat, table = res.psf_ap_corr_cat, res.output_table
    ds = res.detector_status[d_bad]
    k = list(cat["detector"]).index(d_bad)
    assert ds.status == "degraded" and cat["status"][k] == "degraded" and ds.psf_spatial_order == 0
    assert ds.message.startswith("psf_visit_level: a constant PSF from ") and "own fit: " in ds.message
    n_used = int(ds.message.split("a constant PSF from ")[1].split(" stars")[0])
    assert n_used > 10 and "of 2 detectors" in ds.message
    assert cat["message"][k] == ds.message and f"detector {d_bad}: psf_visit_level" in table.meta["DEGRADED_REASON"]
    psf = cat["psf"][k]
    assert psf is not None and cat["ap_corr_map"][k] is not None
    assert type(psf).__name__ == type(cat["psf"][list(cat["detector"]).index(d_good)]).__name__
    bb = inputs.exposure(v, d_bad).bbox
    for x, y in ((bb.center[0], bb.center[1]), (bb.min_x + 100, bb.min_y + 100)):  # a constant: the same anywhere
        assert psf.compute_shape(x, y).determinant_radius == pytest.approx(
            psf.compute_shape(*bb.center).determinant_radius, rel=1e-9)
    size = psf.compute_shape(*bb.center).determinant_radius
    truth = inputs.repo.true_psf(v, d_bad).compute_shape(*bb.center).determinant_radius
    print(f"\nvisit-level PSF ({n_used} stars): size {size / truth - 1:+.4f} of the truth at the detector centre")
    assert abs(size / truth - 1) < 0.015
    bad_rows = table[table["detector"] == d_bad]
    assert len(bad_rows) >= 1 and np.all(np.isfinite(bad_rows["base_PsfFlux_instFlux"]))
    # LSST's semantics without the fallback: the detector's PSF fails
    off = inputs.run_visit(v, task=FinalizeCharacterizationTask(FinalizeCharacterizationConfig(do_visit_level_psf=False)),
                           sources=sources)
    assert off.detector_status[d_bad].status in ("psf_check_failed", "psf_too_few_stars")
    # the per-detector mode: detector tasks, consolidation, then the same fallback
    from visitcal.tasks.finalize_characterization import apply_visit_level_psf, concat_isolated_star_cats

    dtask = FinalizeCharacterizationDetectorTask()
    out = _per_detector_mode(inputs, v, sources, dtask, tmp_path)
    iso = concat_isolated_star_cats(inputs.band, inputs.stars, sources, visit=v, reserve_selection=dtask.reserve_selection)
    apply_visit_level_psf(out, {d: (lambda d=d: (inputs.src[(v, d)], inputs.exposure(v, d))) for d in inputs.repo.detectors},
                          dtask.config, visit=v, band=inputs.band, isolated_source_table=iso)
    apply_visit_level_ap_corr(out, {d: (lambda d=d: (inputs.exposure(v, d).bbox, inputs.exposure(v, d).ap_corr_map))
                                    for d in inputs.repo.detectors}, dtask.config)
    _cats_equal(out.psf_ap_corr_cat, cat)
    _tables_equal(out.output_table, table)


def test_visit_zero_point(inputs, results):
    """A detector whose calibration had fewer good photometric stars than its MAGZERO_MIN_NOBJ (here raised
    above its MAGZERO_NOBJ, as a calibration with a larger min_n_stars would have written) takes the visit's zero
    point: the inverse-variance mean, per electron through each GAIN, of its own and the other detectors'
    (their variance MAGZERO_ERR^2 + 0.01^2); its row is degraded with the reason. The mechanism is checked
    against that formula computed here from the headers; against the truth, the detectors' throughputs differ
    (0.01 mag rms in the simulator), which no visit-level value can know, so the tolerance is 3 x that."""
    import math

    from visitcal.tasks.update_visit_summary import UpdateVisitSummaryTask

    from visitcal.qa.truth import encircled_energy

    v = inputs.repo.visits[0]
    d_bad = inputs.repo.detectors[1]
    exposures = {d: inputs.exposure(v, d) for d in inputs.repo.detectors}
    bad_md = exposures[d_bad].metadata
    n_own = int(bad_md["MAGZERO_NOBJ"])
    assert n_own >= int(bad_md["MAGZERO_MIN_NOBJ"])  # enough stars as calibrated
    own_zp = exposures[d_bad].photo_calib.zero_point
    bad_md["HIERARCH MAGZERO_MIN_NOBJ"] = n_own + 1
    zero_points = {d: exp.photo_calib.zero_point for d, exp in exposures.items()}  # run() attaches the new one
    table = UpdateVisitSummaryTask().run(v, results[v].psf_ap_corr_cat, exposures)
    rows = {int(r["detector"]): r for r in table}
    bad = rows[d_bad]
    assert str(bad["status"]) == "degraded"
    assert all(str(rows[d]["status"]) == "ok" for d in rows if d != d_bad)
    assert f"instead of its own {own_zp:.4f} +- " in str(bad["message"])
    assert f"from {n_own} star(s), fewer than {n_own + 1}" in str(bad["message"])
    # the expected value, from the headers
    values, weights = [], []
    for d, exp in exposures.items():
        md = exp.metadata
        err = max(float(md["MAGZERO_ERR"]), 0.001)
        assert err >= float(md["MAGZERO_RMS"]) > 0
        values.append(zero_points[d] + 2.5 * math.log10(float(md["GAIN"])))
        weights.append(1.0 / (err**2 + (0.0 if d == d_bad else 0.01**2)))
    want = float(np.average(values, weights=weights)) - 2.5 * math.log10(float(bad_md["GAIN"]))
    assert bad["photo_calib"].zero_point == pytest.approx(want, abs=1e-9)
    assert bad["zeroPoint"] == pytest.approx(want, abs=1e-9)
    cx, cy = exposures[d_bad].bbox.center
    true_zp = (2.5 * math.log10(inputs.repo.true_photo_calib(v, d_bad).instflux_at_zero_magnitude)
               + 2.5 * math.log10(encircled_energy(inputs.repo.true_psf(v, d_bad), cx, cy)))
    print(f"\nvisit zero point {want:.4f} vs truth {true_zp:.4f}: {1000 * (want - true_zp):+.1f} mmag "
          f"(own, from {n_own} stars: {1000 * (own_zp - true_zp):+.1f} mmag)")
    assert abs(want - true_zp) < 0.03
