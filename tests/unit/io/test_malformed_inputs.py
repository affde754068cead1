"""Malformed inputs are one-line errors naming the file and the field, in the readers and on the command line
(issue 22): ``repo.json``, ``camera.json``, ``skymap.json`` and FITS headers. ``visitcal info`` prints
``visitcal info: error: <file>: <why>`` and exits non-zero, never a traceback."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from astropy.io import fits

from visitcal.cli import main
from visitcal.core.image import Exposure
from visitcal.core.skymap import load_skymap
from visitcal.io import FitsReadError, JsonReadError, read_exposure, read_json, write_exposure
from visitcal.psf.models import GaussianPsf
from visitcal.sim.camera import SimCamera
from visitcal.sim.config import SimConfig
from visitcal.sim.psf import OpticsDesign
from visitcal.sim.repository import FORMAT_NAME, FORMAT_VERSION, SimRepository


def _manifest(config: SimConfig) -> dict:
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.model_dump(mode="json"),
            "band": config.band, "visits": [1000], "detectors": [0], "n_snaps": 1, "data_ids": [[1000, 0, 0]],
            "counts": {"refcat": 0, "stars": 0, "galaxies": 0, "cosmic_ray_pixels": 0}}


def _camera_doc(config: SimConfig) -> dict:
    doc = SimCamera(config.camera, config.n_detectors).to_dict()
    doc["optics"] = dataclasses.asdict(OpticsDesign())
    return doc


def _sim_root(tmp_path, manifest=None, camera=None):
    root = tmp_path / "repo"
    (root / "post_isr_image").mkdir(parents=True)
    config = SimConfig(n_detectors=1, n_visits=1)
    for name, doc in (("repo.json", manifest if manifest is not None else _manifest(config)),
                      ("camera.json", camera if camera is not None else _camera_doc(config))):
        (root / name).write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return root


def _info(path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["info", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def _bad_manifests():
    config = SimConfig(n_detectors=1, n_visits=1)
    good = _manifest(config)
    no_band = {k: v for k, v in good.items() if k != "band"}
    bad_config = {**good, "config": {**good["config"], "n_visits": 0}}
    return [
        ("{not json", "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 2"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps(no_band), "missing field band"),
        (json.dumps({**good, "visits": "1000"}), "malformed: field visits is str, expected list"),
        (json.dumps(bad_config), "field config.n_visits: Input should be greater than or equal to 1"),
    ]


@pytest.mark.parametrize("text, why", _bad_manifests())
def test_info_on_a_repository_with_a_malformed_repo_json_is_one_line_naming_file_and_field(tmp_path, capsys, text,
                                                                                          why):
    root = _sim_root(tmp_path, manifest=text)
    code, err = _info(root, capsys)
    assert code != 0
    assert err == f"visitcal info: error: {root / 'repo.json'}: {why}\n"


@pytest.mark.parametrize("change, why", [
    (lambda doc: "{", "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 2"),
    (lambda doc: {k: v for k, v in doc.items() if k != "optics"}, "missing field optics"),
    (lambda doc: {k: v for k, v in doc.items() if k != "n_detectors"}, "missing field n_detectors"),
    (lambda doc: {**doc, "config": {**doc["config"], "pixel_scale": -1}},
     "field config.pixel_scale: Input should be greater than 0"),
    (lambda doc: {**doc, "optics": {"no_such_term": 1.0}}, "malformed optics: "),
])
def test_a_malformed_camera_json_is_one_line_naming_file_and_field(tmp_path, capsys, change, why):
    config = SimConfig(n_detectors=1, n_visits=1)
    doc = change(_camera_doc(config))
    root = _sim_root(tmp_path, camera=doc)
    with pytest.raises(JsonReadError) as info:
        SimRepository(root)
    msg = str(info.value)
    assert msg.startswith(f"{root / 'camera.json'}: {why}") and "\n" not in msg
    assert info.value.path == str(root / "camera.json")
    code, err = _info(root, capsys)
    assert code != 0 and err == f"visitcal info: error: {msg}\n"


def test_info_on_a_malformed_json_file_names_the_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "camera.json"
    path.write_text('{"config": {"name": "small",\n "gain": }}')
    code, err = _info(path, capsys)
    assert code != 0
    assert err == f"visitcal info: error: {path}: not valid JSON: Expecting value at line 2, column 10\n"


def test_read_json_and_the_sky_map(tmp_path):
    path = tmp_path / "skymap.json"
    path.write_text(json.dumps({"ra0": 400.0, "dec0": 0.0}))
    with pytest.raises(JsonReadError, match=rf"^{path}: field ra0: Input should be less than 360$"):
        load_skymap(path)
    path.write_text(json.dumps({"ra0": 10.0, "dec0": 0.0, "n_tracts_per_side": 4}))
    with pytest.raises(JsonReadError, match=rf"^{path}: n_tracts_per_side must be odd, got 4$"):
        load_skymap(path)
    path.write_text("[]")
    with pytest.raises(JsonReadError, match="expected a JSON object, got list"):
        read_json(path)
    assert read_json(path, expect=None) == []


def _exposure_file(tmp_path):
    exp = Exposure.from_arrays(np.zeros((20, 30), np.float32), variance=np.ones((20, 30), np.float32),
                               psf=GaussianPsf(2.0, size=11, average_position=(5.0, 5.0)))
    path = tmp_path / "e.fits"
    write_exposure(exp, path)
    return path


@pytest.mark.parametrize("hdu, cards, why", [
    ("PSF", {"TTYPE1": 3}, "not a readable FITS file (truncated or corrupt?): Column name must be a string"),
    ("IMAGE", {"CRVAL1A": "garbage"}, "[IMAGE]: card CRVAL1A = 'garbage' is not a number"),
    ("IMAGE", {"CRVAL1A": 0.5}, "[IMAGE]: CRVAL1A/CRVAL2A give a non-integer xy0"),
    ("PSF", {"VCKIND": "garbage"}, "[PSF]: unknown component kind 'garbage'"),
    ("PSF", {"VCVERS": "garbage"}, "[PSF]: invalid literal for int() with base 10: 'garbage'"),
    ("MASK", {"MP_SAT": "garbage"}, "card MP_SAT = 'garbage' is not a bit number 0..31"),
    ("PRIMARY", {"VCVINFO": True, "DATE-AVG": "2026-01-01T00:00:00", "TIMESYS": "garbage"},
     "[PRIMARY]: bad VisitInfo/Detector card: Scale 'garbage' is not in the allowed scales"),
    ("PRIMARY", {"VCDET": True, "DETID": 1}, "[PRIMARY]: bad VisitInfo/Detector card: "),
])
def test_a_malformed_fits_header_is_one_line_naming_file_and_card(tmp_path, capsys, hdu, cards, why):
    path = _exposure_file(tmp_path)
    with fits.open(path) as hdul:
        hdul[hdu].header.update(cards)
        for h in hdul:  # no stale checksums: the card itself is what must be reported
            h.header.remove("CHECKSUM", ignore_missing=True)
            h.header.remove("DATASUM", ignore_missing=True)
        hdul.writeto(path, overwrite=True, checksum=False, output_verify="silentfix+ignore")
    with pytest.raises(FitsReadError) as info:
        read_exposure(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and why in msg and "\n" not in msg
    code, err = _info(path, capsys)
    assert code != 0 and err == f"visitcal info: error: {msg}\n"


def test_a_per_visit_model_file_without_its_detector_column_is_one_line(tmp_path, capsys):
    path = tmp_path / "refit_psf_models_001000.fits"
    index = fits.BinTableHDU.from_columns([fits.Column(name="psf_hdu", format="K", array=np.array([1]))],
                                          name="INDEX")
    fits.HDUList([fits.PrimaryHDU(), index]).writeto(path)
    code, err = _info(path, capsys)
    assert code != 0
    assert err == f"visitcal info: error: {path}: malformed table HDU: KeyError: \"Key 'detector' does not exist.\"\n"


def test_json_read_error_pickles_with_its_path():
    import pickle

    err = JsonReadError("repo.json: missing field band", path="repo.json")
    clone = pickle.loads(pickle.dumps(err))
    assert (type(clone), str(clone), clone.path) == (JsonReadError, "repo.json: missing field band", "repo.json")
    assert isinstance(clone, ValueError)
