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


# --- the visit zero point of a detector with too few photometric stars or too large an error -----------------

def _calexp(zp: float, n: int, rms: float, err: float | None, gain: float):
    from visitcal.core.image import Exposure, MaskedImage

    md = fits.Header()
    md["HIERARCH MAGZERO_NOBJ"] = n
    md["HIERARCH MAGZERO_MIN_NOBJ"] = 5
    md["HIERARCH MAGZERO_RMS"] = rms
    if err is not None:
        md["HIERARCH MAGZERO_ERR"] = err
    md["GAIN"] = gain
    return Exposure(MaskedImage(np.zeros((8, 8), np.float32)), wcs=_wcs(0.0),
                    photo_calib=PhotoCalib.from_zero_point(zp), metadata=md)


def _run_zero_points(calexps, **kw):
    from visitcal.tasks.update_visit_summary import UpdateVisitSummaryTask

    cat = [{"detector": d, "psf": None, "ap_corr_map": None, "status": "ok", "message": ""} for d in calexps]
    return {int(r["detector"]): r for r in UpdateVisitSummaryTask(**kw).run(1000, cat, calexps)}


def test_visit_zero_point_is_the_inverse_variance_mean_per_electron():
    """Detector 2 (3 stars) and detector 3 (9 stars but a 30 mmag error) take the inverse-variance mean of
    their own zero point and the others', per electron, the others' variances their error^2 + 0.01^2 (the
    detector scatter); detectors 0 and 1 (enough stars, errors under 0.01 mag) keep theirs, ok. Computed here
    by hand: zero points per electron z + 2.5 log10(gain)."""
    import math

    specs = {0: (30.00, 20, 0.002, 0.003, 1.0), 1: (30.05, 15, 0.002, 0.004, 1.2),
             2: (30.20, 3, 0.005, 0.02, 0.9), 3: (30.50, 9, 0.004, 0.03, 1.1)}
    rows = _run_zero_points({d: _calexp(*s) for d, s in specs.items()})
    per_e = {d: s[0] + 2.5 * math.log10(s[4]) for d, s in specs.items()}
    for d in (0, 1):
        assert str(rows[d]["status"]) == "ok" and rows[d]["photo_calib"].zero_point == pytest.approx(specs[d][0])
    for d in (2, 3):
        w = {k: 1.0 / (specs[k][3] ** 2 + (0.0 if k == d else 0.01 ** 2)) for k in specs}
        want = sum(w[k] * per_e[k] for k in specs) / sum(w.values()) - 2.5 * math.log10(specs[d][4])
        assert rows[d]["photo_calib"].zero_point == pytest.approx(want, abs=1e-9)
        assert str(rows[d]["status"]) == "degraded"
        assert f"instead of its own {specs[d][0]:.4f} +- {specs[d][3]:.4f}" in str(rows[d]["message"])
    assert "fewer than 5" in str(rows[2]["message"])
    assert "its error over the detector scatter 0.0100" in str(rows[3]["message"])
    # the big-error detector moves most of the way to the visit, the 3-star one part of the way
    assert abs(rows[3]["photo_calib"].zero_point - 30.5) > 0.3
    # without MAGZERO_ERR (an older calibration) the error is MAGZERO_RMS; a zero scatter weights the others fully
    rows = _run_zero_points({d: _calexp(*s[:3], None, s[4]) for d, s in specs.items()},
                            detector_zero_point_scatter=0.0)
    w = {k: 1.0 / specs[k][2] ** 2 for k in specs}
    want = sum(w[k] * per_e[k] for k in specs) / sum(w.values()) - 2.5 * math.log10(specs[2][4])
    assert rows[2]["photo_calib"].zero_point == pytest.approx(want, abs=1e-9)
    # a zero scatter says the detectors are alike: each one's error is over it, every one takes the same visit value
    assert all(str(r["status"]) == "degraded" for r in rows.values())
    visit_per_e = {d: r["photo_calib"].zero_point + 2.5 * math.log10(specs[d][4]) for d, r in rows.items()}
    assert max(visit_per_e.values()) - min(visit_per_e.values()) < 1e-9


def test_visit_zero_point_alone_keeps_its_own_and_bounds_the_scatter():
    rows = _run_zero_points({7: _calexp(30.3, 2, 0.01, 0.02, 1.0)})
    assert rows[7]["photo_calib"].zero_point == pytest.approx(30.3)
    assert str(rows[7]["status"]) == "degraded" and "kept: no other detector" in str(rows[7]["message"])
    from visitcal.tasks.update_visit_summary import UpdateVisitSummaryTask

    for bad in (-0.1, 2.0, float("nan"), "0.01"):
        with pytest.raises(ValueError, match="detector_zero_point_scatter"):
            UpdateVisitSummaryTask(detector_zero_point_scatter=bad)
