"""The FITS writers of the per-visit model files (``visit_summary``: `write_visit_summary`; ``refit_psf_models``:
`write_psf_ap_corr_cat`): every HDU's CHECKSUM and DATASUM match the bytes written (issue 20: the INDEX
table's string columns used to change, trailing blanks to NULs, after the checksum was computed), the layout
and round trip are kept, and the same table gives the same bytes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits

from visitcal.core.apcorr import ApCorrMap
from visitcal.core.chebyshev import ChebyshevBoundedField
from visitcal.core.geom import Box2I
from visitcal.core.photocalib import PhotoCalib
from visitcal.core.wcs import make_tan_sip_wcs, wcs_to_header
from visitcal.psf.models import GaussianPsf
from visitcal.tasks.finalize_characterization import (_make_psf_ap_corr_cat, read_psf_ap_corr_cat,
                                                      write_psf_ap_corr_cat)
from visitcal.tasks.update_visit_summary import _make_table, read_visit_summary, write_visit_summary

BOX = Box2I(0, 0, 1023, 1023)


def assert_checksums_match(path) -> None:
    """Every HDU's CHECKSUM and DATASUM cards present and equal to the bytes on disk (astropy's check,
    whose failures are warnings: made errors here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(path, checksum=True) as hdul:
            for k, hdu in enumerate(hdul):
                assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header, (path, k)
                assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1, (path, k, hdu.name)


def _wcs(rot_deg: float):
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    return make_tan_sip_wcs((511.5, 511.5), (150.0, -30.0), 0.2 / 3600 * np.array([[-c, s], [s, c]]))


def _summary_table():
    """Three detectors: one complete, one whose finalize failed (no PSF, no ap-corr map), one without WCS;
    messages with trailing blanks, the case astropy rewrites while writing."""
    rows = []
    for det, status, message in ((0, "ok", ""), (4, "psf_too_few_stars", "too few PSF stars   "),
                                 (9, "ok", "no WCS ")):
        ok = status == "ok"
        rows.append({"detector": det, "visit": 1000,
                     "psf": GaussianPsf(1.5 + 0.1 * det) if ok else None,
                     "ap_corr_map": ApCorrMap({"base_PsfFlux_instFlux": ChebyshevBoundedField(BOX, np.array([[0.98]]))})
                     if ok else None,
                     "wcs": _wcs(0.1 * det) if det != 9 else None, "photo_calib": PhotoCalib(1.0 + det),
                     "bbox": (0, 0, 1023, 1023), "status": status, "message": message,
                     "stats": {"psfSigma": 1.5 + 0.1 * det, "raCorners": [150.0, 150.1, 150.1, 150.0]} if ok else {}})
    return _make_table(rows)


def test_visit_summary_checksums_match_and_round_trip(tmp_path):
    table = _summary_table()
    path = write_visit_summary(table, tmp_path / "visit_summary_001000.fits")
    assert_checksums_match(path)
    with fits.open(path) as hdul:
        index = hdul["INDEX"]
        assert index.columns["message"].format == "20A"     # width of the longest message, blanks included
        assert index.columns["wcs_header"].format == f"{len(wcs_to_header(_wcs(0)).tostring())}A"
        assert [h.name for h in hdul] == ["PRIMARY", "INDEX", "PSF_0", "PSF_9", "AP_CORR_MAP_0", "AP_CORR_MAP_9",
                                          "PHOTO_CALIB_0", "PHOTO_CALIB_4", "PHOTO_CALIB_9"]
    back = read_visit_summary(path)
    assert list(back["detector"]) == [0, 4, 9] and list(back["status"]) == list(table["status"])
    assert [m.rstrip() for m in back["message"]] == [m.rstrip() for m in table["message"]]
    assert back["psf"][1] is None and back["wcs"][2] is None
    assert back["photo_calib"][1].calibration_mean == table["photo_calib"][1].calibration_mean
    assert np.array_equal(back["raCorners"][0], table["raCorners"][0])
    assert wcs_to_header(back["wcs"][0]) == wcs_to_header(table["wcs"][0])
    # the same table gives the same bytes
    assert write_visit_summary(table, tmp_path / "again.fits").read_bytes() == path.read_bytes()


def test_psf_ap_corr_cat_checksums_match_with_blank_padded_messages(tmp_path):
    cat = _make_psf_ap_corr_cat([0, 3], [1000, 1000], [GaussianPsf(1.7), None], [None, None],
                                ["ok", "psf_fit_failed"], ["", "singular matrix  "])
    path = write_psf_ap_corr_cat(cat, tmp_path / "refit_psf_models_001000.fits")
    assert_checksums_match(path)
    back = read_psf_ap_corr_cat(path)
    assert list(back["message"]) == ["", "singular matrix"]   # FITS drops trailing blanks
    assert write_psf_ap_corr_cat(cat, tmp_path / "again.fits").read_bytes() == path.read_bytes()
