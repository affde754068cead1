"""visitcal qa end to end on a small processed simulated repository: the metrics against an independent
computation on the products, the HTML's validity (every image it references exists and is a PNG), a failed
detector still reported, same bytes on a rerun, the command line, and a screenshot in headless Chromium."""

from __future__ import annotations

import html.parser
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from visitcal.io import read_catalog
from visitcal.qa.metrics import metric_spec
from visitcal.qa.report import SECTIONS, make_report

from .conftest import copy_repo

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(processed_repo, tmp_path_factory):
    out = tmp_path_factory.mktemp("qa_out")
    return make_report(processed_repo, out=out)


def _metrics(report, visit) -> dict:
    r = next(r for r in report.visits if r.visit == visit)
    t = pq.read_table(r.metrics_path).to_pydict()
    return {(d, m): v for d, m, v in zip(t["detector"], t["metric"], t["value"])}


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.images, self.links, self.ids, self.errors = [], [], [], set(), []

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src"))
            if not a.get("alt"):
                self.errors.append(f"img without alt: {a.get('src')}")
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if "id" in a:
            self.ids.add(a["id"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def _parse(path: Path) -> _Page:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page = _Page()
    page.feed(text)
    page.close()
    assert not page.errors, page.errors[:5]
    assert page.stack == [], f"unclosed tags: {page.stack}"
    return page


def test_every_page_is_valid_and_every_image_exists(report):
    index = _parse(report.index)
    pages = [report.out / link for link in index.links if link.endswith(".html")]
    assert sorted(pages) == sorted(r.page for r in report.visits)
    for r in report.visits:
        page = _parse(r.page)
        assert page.images, "a visit page without figures"
        for src in page.images:
            path = r.page.parent / src
            data = path.read_bytes()
            assert len(data) > 1000 and data[:8] == PNG, src
        for link in page.links:
            if link.startswith("#"):
                assert link[1:] in page.ids
            else:
                assert (r.page.parent / link).exists(), link
        for key in SECTIONS:
            assert key in page.ids, f"section {key} missing from {r.page}"
        assert not r.section_errors


def test_every_metric_is_registered_and_graded(report):
    for r in report.visits:
        t = pq.read_table(r.metrics_path).to_pydict()
        assert set(t["visit"]) == {r.visit}
        for name, unit, g in zip(t["metric"], t["unit"], t["grade"]):
            assert metric_spec(name).unit == unit
            assert g in ("ok", "warn", "fail", "n/a")


def test_catalog_metrics_equal_a_numpy_recomputation(report, processed_repo):
    for r in report.visits:
        m = _metrics(report, r.visit)
        sky_all = []
        for d in r.detector_grades:
            cat = read_catalog(processed_repo / "source" / f"{r.visit:06d}" / f"source_{r.visit:06d}_{d:03d}.parquet")
            sky = np.asarray(cat["sky_source"], bool)
            objects = np.asarray(cat["detect_isPrimary"], bool) & ~sky
            assert m[(d, "nSources")] == objects.sum()
            assert m[(d, "nSkySources")] == sky.sum()
            f = np.asarray(cat["base_CircularApertureFlux_9_0_flux"], float)[sky]
            fe = np.asarray(cat["base_CircularApertureFlux_9_0_fluxErr"], float)[sky]
            ok = np.isfinite(f) & np.isfinite(fe) & (fe > 0)
            sky_all.append(f[np.isfinite(f)])
            assert m[(d, "medianSky")] == pytest.approx(np.median(f[ok]), rel=1e-12)
            assert m[(d, "skySourceSignificanceMedian")] == pytest.approx(np.median(f[ok] / fe[ok]), rel=1e-12)
            flag = np.asarray(cat["base_PixelFlags_flag_edge"], bool)
            assert m[(d, "fractionEdge")] == pytest.approx(flag[objects].mean(), rel=1e-12)
            snr = np.asarray(cat["base_PsfFlux_flux"]) / np.asarray(cat["base_PsfFlux_fluxErr"])
            ext = np.asarray(cat["base_ClassificationExtendedness_value"], float)
            sel = objects & (snr > 10) & np.isfinite(ext)
            assert m[(d, "fractionExtended")] == pytest.approx(np.mean(ext[sel] > 0.5), rel=1e-12)
        assert m[(-1, "medianSkyVisit")] == pytest.approx(np.median(np.concatenate(sky_all)), rel=1e-12)


def test_processing_metrics_equal_the_provenance(report, processed_repo):
    for r in report.visits:
        m = _metrics(report, r.visit)
        for d in r.detector_grades:
            records = [json.loads((processed_repo / "provenance" / step / f"{r.visit:06d}_{d:03d}.json").read_text())
                       for step in ("calibrate", "finalize", "reprocess")]
            assert m[(d, "nStepsFailed")] == sum(rec["status"] == "failed" for rec in records)
            assert m[(d, "nStepsDegraded")] == sum(rec["status"] == "degraded" for rec in records)
            assert m[(d, "peakMemory")] == pytest.approx(max(rec["peak_rss_mb"] for rec in records), rel=1e-12)
            # a unit's "total", or for finalize per visit the detector's own stages (not the visit's total)
            own = [rec["timings"]["total"] if "total" in rec["timings"] else
                   sum(v for k, v in rec["timings"].items() if "." not in k and k != "visit_total")
                   for rec in records]
            assert m[(d, "processingTime")] == pytest.approx(sum(own), rel=1e-12)


def test_a_failed_detector_is_reported_and_graded_fail(processed_repo, tmp_path):
    root = copy_repo(processed_repo, tmp_path / "repo")
    record = root / "provenance" / "reprocess" / "001000_001.json"
    rec = json.loads(record.read_text())
    rec.update(status="failed", error_type="WorkerCrashed", message="the worker died (signal 9)")
    record.write_text(json.dumps(rec))
    for name, ext in (("source", "parquet"), ("visit_image", "fits")):
        (root / name / "001000" / f"{name}_001000_001.{ext}").unlink()
    report = make_report(root, visits=[1000], out=tmp_path / "qa")
    (r,) = report.visits
    assert r.detector_states[1][0] == "failed" and "WorkerCrashed" in r.detector_states[1][1]
    assert r.detector_grades[1] == "fail" and r.visit_grade == "fail"
    assert not r.section_errors
    m = _metrics(report, 1000)
    assert m[(1, "nStepsFailed")] == 1 and math.isnan(m[(1, "nSources")])
    assert m[(0, "nSources")] > 0
    text = r.page.read_text()
    assert "WorkerCrashed" in text and "detector 1: no source catalog" in text
    _parse(r.page)


def test_a_rerun_in_two_processes_gives_the_same_bytes_and_no_stale_figure(report, processed_repo, tmp_path):
    stale = tmp_path / "again" / "001000" / "figures" / "psf_stamps_d007.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG)
    again = make_report(processed_repo, out=tmp_path / "again", jobs=2)
    assert not stale.exists() and not again.failed
    assert report.index.read_bytes() == again.index.read_bytes()
    for a, b in zip(report.visits, again.visits):
        assert a.page.read_bytes() == b.page.read_bytes()
        assert a.metrics_path.read_bytes() == b.metrics_path.read_bytes()
        for png in sorted((a.page.parent / "figures").glob("*.png")):
            assert png.read_bytes() == (b.page.parent / "figures" / png.name).read_bytes(), png.name


def test_command_line(processed_repo, tmp_path, capsys):
    from visitcal.cli import main

    out = tmp_path / "cli"
    assert main(["qa", str(processed_repo), "--visits", "1001", "--out", str(out), "-q"]) == 0
    assert (out / "index.html").is_file() and (out / "001001" / "metrics_001001.parquet").is_file()
    assert not (out / "001000").exists()
    assert "qa report:" in capsys.readouterr().out
    code = main(["qa", str(processed_repo), "--visits", "1001", "--out", str(out), "-q", "--fail-on", "warn"])
    visit_grade = next(g for g in ["fail", "warn", "ok"] if f">{g}</span></h1>" in
                       (out / "001001" / "index.html").read_text())
    assert code == (3 if visit_grade in ("warn", "fail") else 0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"thresholds": {"noSuchMetric": {"warn_above": 1}}}))
    with pytest.raises(SystemExit) as exc:
        main(["qa", str(processed_repo), "--config", str(bad)])
    assert exc.value.code == 2
    assert "unknown metric(s) noSuchMetric" in capsys.readouterr().err
    assert main(["qa", str(processed_repo), "--visits", "999", "--out", str(out)]) == 1
    assert "visit(s) 999 not in the repository" in capsys.readouterr().err


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_headless_chromium_renders_a_page_that_is_not_blank(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium; .ci/run installs it)")
    shot = tmp_path / "page.png"
    page = report.visits[0].page
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2000",
           f"--screenshot={shot}", page.resolve().as_uri()]
    run = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), run.stderr.decode(errors="replace")[-2000:]
    matplotlib = pytest.importorskip("matplotlib.image")
    img = matplotlib.imread(shot)[..., :3]
    # a blank page is one colour; the report has text, tables in colour and figures
    assert img.std() > 0.05
    assert len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    non_white = np.mean(img.min(axis=2) < 0.9)
    assert non_white > 0.02
