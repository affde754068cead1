"""Every product of a processed repository (issue 20): each FITS file passes its own CHECKSUM/DATASUM, and
``visitcal info`` describes each kind of file, the repository root and a dataset folder (and refuses, with
exit code 2, what visitcal does not write). The repository: 2 visits x 2 detectors of 1024 x 1024 px,
simulated, calibrated, finalized and reprocessed (~30 s on two cores)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path

import pytest

pytest.importorskip("galsim", reason="visitcal.sim needs GalSim (pip install 'visitcal[sim]')")

from astropy.io import fits  # noqa: E402

from visitcal.cli import main  # noqa: E402
from visitcal.core.fits_checksum import CHECKSUM_COMMENT, write_hdulist  # noqa: E402
from visitcal.io import read_catalog, read_exposure  # noqa: E402
from visitcal.io.fits import exposure_to_hdulist  # noqa: E402
from visitcal.sim import SimConfig, simulate  # noqa: E402
from visitcal.tasks.lsst_compat import COLUMNS, column_rows  # noqa: E402
from visitcal.tasks.update_visit_summary import read_visit_summary  # noqa: E402

from .helpers import product_digests  # noqa: E402

CONFIG = SimConfig(preset="small", n_visits=2, n_detectors=2, detector_width=1024, detector_height=1024,
                   n_snaps=1, seed=11, star_density=120000.0)
VISITS, DETECTORS = [1000, 1001], [0, 1]
#: The per-detector FITS and Parquet products of the chain, and the per-visit ones.
PER_DETECTOR = ["post_isr_image", "preliminary_visit_image", "preliminary_visit_image_background",
                "single_visit_star", "single_visit_star_footprints", "visit_image", "visit_image_background",
                "source", "source_footprints"]
PER_VISIT = ["refit_psf_models", "refit_psf_star", "visit_summary"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("products") / "repo"
    simulate(CONFIG, root)
    for argv in (["calibrate", str(root), "-j", "2", "--preset", "sparse"], ["finalize", str(root), "-j", "2"],
                 ["reprocess", str(root), "-j", "2"]):
        assert main(argv) == 0, argv
    return root


def _one(repo, dataset):
    files = sorted((repo / dataset).rglob(f"{dataset}_*.*"))
    assert files, f"no {dataset} product"
    return files[0]


def _info(capsys, path):
    capsys.readouterr()
    code = main(["info", str(path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_every_fits_file_passes_its_checksums(repo):
    paths = sorted(repo.rglob("*.fits"))
    kinds = {p.parent.name if p.parent.name in PER_VISIT else p.parent.parent.name for p in paths}
    assert kinds == {d for d in PER_DETECTOR + PER_VISIT if d not in ("single_visit_star", "source",
                                                                        "refit_psf_star")}
    bad = []
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # astropy reports a checksum mismatch as a warning
            try:
                with fits.open(path, checksum=True) as hdul:
                    for k, hdu in enumerate(hdul):
                        if "CHECKSUM" not in hdu.header or "DATASUM" not in hdu.header:
                            bad.append((path.name, k, "no checksum cards"))
                        elif hdu.verify_checksum() != 1 or hdu.verify_datasum() != 1:
                            bad.append((path.name, k, hdu.name))
            except Warning as w:
                bad.append((path.name, str(w)))
    assert not bad, bad


def _former_writer(hdulist, f) -> None:
    """atomic_write_fits before issue 25: astropy's add_checksum on every HDU (tables with character columns
    serialised once first), then HDUList.writeto."""
    for hdu in hdulist:
        if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)) and any("A" in str(fmt) for fmt in hdu.columns.formats):
            hdu.writeto(io.BytesIO())
        hdu.add_checksum(when=CHECKSUM_COMMENT)
    hdulist.writeto(f, checksum=False)


def test_the_kernel_writer_gives_the_former_writers_bytes(repo):
    """Issue 25: the C++ checksum writer and the former astropy one give the same bytes (sha256), on every
    simulated exposure (read back, then written both ways from the same Exposure) and on the HDUs of every
    other FITS product (read back, then written both ways); the chain's exposures also come back as the very
    bytes it wrote (not the simulator's post_isr_image, whose SIP cards WCSLIB formatted: '-2.0350179156560E-08'
    is rewritten '-2.035017915656E-08', the same value)."""
    paths = sorted(repo.rglob("*.fits"))
    exposures = [p for p in paths if fits.getheader(p, 0).get("VCFORMAT") == "visitcal-exposure"]
    assert len(exposures) >= 12
    differ = []
    for path in paths:
        old, new = io.BytesIO(), io.BytesIO()
        if path in exposures:
            exposure = read_exposure(path)
            _former_writer(exposure_to_hdulist(exposure), old)
            write_hdulist(exposure_to_hdulist(exposure), new)
            if "post_isr_image" not in path.name and new.getvalue() != path.read_bytes():
                differ.append((path.name, "not the file's bytes"))
        else:
            for out, write in ((old, _former_writer), (new, write_hdulist)):
                with fits.open(path, memmap=False) as hdul:
                    write(fits.HDUList([hdu.copy() for hdu in hdul]), out)
        if hashlib.sha256(old.getvalue()).digest() != hashlib.sha256(new.getvalue()).digest():
            differ.append((path.name, "former and kernel writers differ"))
    assert not differ, differ


@pytest.mark.parametrize("dataset", ["post_isr_image", "preliminary_visit_image", "visit_image"])
def test_info_on_an_exposure(repo, capsys, dataset):
    path = _one(repo, dataset)
    out = _info(capsys, path)
    assert out.startswith(f"{path}: visitcal exposure") and "shape (ny, nx): (1024, 1024)" in out
    assert re.search(r"detector \d \(", out) and "mask planes set" in out


@pytest.mark.parametrize("dataset", ["preliminary_visit_image_background", "visit_image_background"])
def test_info_on_a_background(repo, capsys, dataset):
    path = _one(repo, dataset)
    with fits.open(path) as hdul:
        n = len(hdul["BACKGROUND"].data)
    out = _info(capsys, path)
    assert f"background (BackgroundList), {n} model(s)" in out
    assert len(re.findall(r"model \d+: \d+ x \d+ bins over bbox \(0, 0\)-\(1023, 1023\)", out)) == n


@pytest.mark.parametrize("dataset", ["refit_psf_models", "visit_summary"])
def test_info_on_a_per_visit_model_file_says_what_each_hdu_is(repo, capsys, dataset):
    path = _one(repo, dataset)
    out = _info(capsys, path)
    assert out.startswith(f"{path}: {dataset}, visit 1000, 2 detectors [0, 1]")
    with fits.open(path) as hdul:
        index = hdul["INDEX"].data
        assert len(index) == 2
        for k, hdu in enumerate(hdul[1:], start=1):
            rows = len(hdu.data)
            line = next(line for line in out.splitlines() if line.startswith(f"  HDU {k} {hdu.name}:"))
            assert f"{rows} row{'s' if rows != 1 else ''}, {len(hdu.columns)} columns" in line
            if hdu.name != "INDEX":
                det = int(hdu.name.rsplit("_", 1)[1])
                assert f"of detector {det} ({hdu.header['VCKIND']})" in line
    assert "HDU 1 INDEX: one row per detector, 2 rows" in out


@pytest.mark.parametrize("dataset", ["single_visit_star_footprints", "source_footprints"])
def test_info_on_a_footprint_file(repo, capsys, dataset):
    path = _one(repo, dataset)
    with fits.open(path) as hdul:
        n, spans = len(hdul["FOOTPRINTS"].data), len(hdul["SPANS"].data)
    out = _info(capsys, path)
    assert out.startswith(f"{path}: footprints, {n} footprints (") and n > 10
    assert f"HDU 2 SPANS: spans (y, x0, x1), {spans} rows" in out


@pytest.mark.parametrize("dataset", ["single_visit_star", "source", "refit_psf_star", "isolated_star"])
def test_info_on_a_parquet_catalog(repo, capsys, dataset):
    path = _one(repo, dataset)
    table = read_catalog(path)
    out = _info(capsys, path)
    assert out.startswith(f"{path}: catalog (Parquet), {len(table)} rows, {len(table.colnames)} columns")
    assert "key columns: " in out and "visits [" in out
    assert sum(1 for line in out.splitlines() if line.startswith("    ")) == len(table.colnames)


def test_info_on_a_provenance_record(repo, capsys):
    path = repo / "provenance" / "finalize" / "001001_001.json"
    record = json.loads(path.read_text())
    out = _info(capsys, path)
    assert out.startswith(f"{path}: provenance of step finalize, visit 1001 detector 1: {record['status']}")
    assert f"config hash {record['config_hash']}" in out and "timings (s): " in out


def test_info_on_the_repository_root(repo, capsys):
    out = _info(capsys, repo)
    assert out.startswith(f"{repo}: visitcal repository, 2 visits [1000, 1001], 2 detectors [0, 1]")
    assert "2 visits x 2 detectors x 1 snaps" in out  # the simulator's own description
    for dataset in PER_DETECTOR:
        n = len(list((repo / dataset).rglob(f"{dataset}_*.*")))
        assert n == 4 and f"    {dataset}: 4 files (" in out, dataset
    for dataset in PER_VISIT:
        assert f"    {dataset}: 2 files (" in out and "per visit: visits [1000, 1001]" in out
    assert re.search(r"    isolated_star: \d+ files? \(\.parquet\), per tract: tracts \[\d+", out)
    # every detector done in each step; on this sparse field some are degraded (e.g. a PSF fitted below the
    # configured order), which the status lines name with the reason
    for step in ("calibrate", "finalize", "reprocess"):
        counts = re.search(rf"{step} 4 \(((\d+) degraded, )?(\d+) ok\)", out)
        assert counts is not None and int(counts.group(2) or 0) + int(counts.group(3)) == 4, step
        assert out.count(f"{step} degraded: ") == int(counts.group(2) or 0), step
    assert "failed" not in out.split("provenance:")[1].split("\n")[0]


@pytest.mark.parametrize("folder", ["source", "source/001001"])
def test_info_on_a_dataset_folder(repo, capsys, folder):
    out = _info(capsys, repo / folder)
    n = 4 if "/" not in folder else 2
    visits = "[1000, 1001]" if n == 4 else "[1001]"
    assert out.strip() == (f"{repo / folder}: dataset folder, source: {n} files (.parquet), per detector: "
                           f"visits {visits}, detectors [0, 1]")


def test_info_refuses_what_visitcal_does_not_write(repo, capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a product\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (text, empty):
        capsys.readouterr()
        assert main(["info", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"{path}: not a " in err and "visitcal knows" in err


@pytest.mark.parametrize("table", COLUMNS, ids=lambda t: t.dataset)
def test_lsst_compat_columns_exist_in_the_products(repo, table):
    """The compatibility table's output columns (`visitcal.tasks.lsst_compat.COLUMNS`, issue 24): each of ours
    is a column of the product, each one marked absent is not (so the table changes when the code does)."""
    path = _one(repo, table.dataset)
    cat = read_visit_summary(path) if table.dataset == "visit_summary" else read_catalog(path)
    rows = column_rows(table)
    missing = sorted({r.ours for r in rows if r.ours is not None} - set(cat.colnames))
    assert not missing, f"{table.dataset}: the compat table names columns the product lacks: {missing}"
    present = sorted(r.lsst for r in rows if r.ours is None and r.lsst in cat.colnames)
    assert not present, f"{table.dataset}: marked absent but written: {present}"


def test_reprocess_writes_the_standardized_source_table_only_when_asked(repo, tmp_path, capsys):
    """``visitcal reprocess --source-table`` (``write_source_table``, issue 24) writes ``source_table``: the
    ``source`` rows in LSST's standardized form, psfFlux the calibrated base_PsfFlux_flux, ra/dec coord_ra/dec in
    degrees; the default run wrote none. Turning the flag on redoes the detectors (their other products come out
    byte-identical); turning it off again removes the tables."""
    import shutil

    import numpy as np

    from visitcal.pipeline.repository import Repository

    assert not (repo / "source_table").exists()
    root = shutil.copytree(repo, tmp_path / "repo", symlinks=True)
    r = Repository(root)
    before = {d: r.dataset_path("source", 1000, d, "parquet").read_bytes() for d in DETECTORS}
    assert main(["reprocess", str(root), "--visits", "1000", "--source-table"]) == 0
    assert "redone (config changed)" in capsys.readouterr().out
    for d in DETECTORS:
        src = read_catalog(r.dataset_path("source", 1000, d, "parquet"))
        assert r.dataset_path("source", 1000, d, "parquet").read_bytes() == before[d]
        table = read_catalog(r.dataset_path("source_table", 1000, d, "parquet"))
        assert len(table) == len(src) > 100
        np.testing.assert_array_equal(table["sourceId"], src["id"])
        flux, ref = np.asarray(table["psfFlux"], float), np.asarray(src["base_PsfFlux_flux"], float)
        good = np.isfinite(ref)
        assert good.sum() > 100 and np.array_equal(np.isfinite(flux), good)
        np.testing.assert_allclose(flux[good], ref[good], rtol=2e-6, atol=0)  # float32 in the table
        np.testing.assert_allclose(table["psfFluxErr"][good], src["base_PsfFlux_fluxErr"][good], rtol=2e-6)
        np.testing.assert_allclose(table["ra"], np.degrees(src["coord_ra"]), rtol=0, atol=1e-12)
        np.testing.assert_allclose(table["dec"], np.degrees(src["coord_dec"]), rtol=0, atol=1e-12)
        assert str(table["ra"].unit) == "deg"
        np.testing.assert_array_equal(table["pixelFlags_edge"], src["base_PixelFlags_flag_edge"])
    assert not r.dataset_path("source_table", 1001, 0, "parquet").exists()  # the visit not asked for
    assert main(["reprocess", str(root), "--visits", "1000"]) == 0
    assert not any((root / "source_table").rglob("*.parquet"))


#: The digests of this module's repository as the code wrote it when they were last stored (issue 25). A change
#: meant to be only faster must leave every one alone; a change meant to alter results updates the file
#: (``VISITCAL_UPDATE_DIGESTS=1 python -m pytest tests/sim/test_products_sim.py -k digests``) and says why in
#: its commit.
DIGESTS = Path(__file__).parent / "data" / "product_digests.json"


def _blas_reproduces_the_digests() -> str | None:
    """Why this machine cannot reproduce the stored digests' last bits, or None when it can: they were
    written with numpy's OpenBLAS on its Haswell kernels (tests/conftest.py pins them on x86-64 with AVX2)."""
    import numpy as np

    try:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {}).get("name", "")
    except TypeError:  # numpy < 1.25 cannot say
        blas = ""
    if "openblas" not in blas.lower():
        return f"numpy's BLAS is {blas or 'unknown'}, not OpenBLAS"
    if os.environ.get("OPENBLAS_CORETYPE", "").lower() != "haswell":
        return "OpenBLAS's Haswell kernels are not pinned (OPENBLAS_CORETYPE; needs x86-64 with AVX2 and FMA)"
    return None


def test_products_equal_the_stored_digests(repo):
    reason = _blas_reproduces_the_digests()
    if reason and os.environ.get("VISITCAL_UPDATE_DIGESTS") != "1":
        pytest.skip(f"the stored digests were written with OpenBLAS's Haswell kernels: {reason}")
    digests = product_digests(repo, parquet_content=True)
    if os.environ.get("VISITCAL_UPDATE_DIGESTS") == "1":
        DIGESTS.parent.mkdir(exist_ok=True)
        DIGESTS.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    stored = json.loads(DIGESTS.read_text())
    changed = sorted(k for k in stored.keys() & digests.keys() if stored[k] != digests[k])
    assert not changed and stored.keys() == digests.keys(), (
        f"{len(changed)} products changed ({changed[:6]}...), new {sorted(digests.keys() - stored.keys())}, "
        f"gone {sorted(stored.keys() - digests.keys())}; if the change is meant, store the new digests (see DIGESTS)")
