"""DECam CP triplets from legacypipe's test cases (realdata/legacypipe_decam, see its README).

testcase4: plain ImageHDU 'N2', z band, 177 weight-0 pixels all with DQ code 5 (cosmic ray).
testcase8: tile-compressed CompImageHDU 'N6', r band, DQ all 0.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from visitcal.io import FitsReadError, read_decam_cp, read_exposure, write_exposure
from visitcal.io.fits import assert_exposures_equal

pytestmark = pytest.mark.realdata

CASES = {
    "testcase4": "testcase4/images/decam/CP/V4.8.2/CP20170315/c4d_170316_062107_{}_z_ls9.N2.fits",
    "testcase8": "testcase8/images/decam/CP/V4.8.2a/CP20171112/c4d_171113_060340_{}_r_ls9.N6.fits",
}


@pytest.fixture(params=sorted(CASES))
def triplet(request, realdata_dir):
    pattern = str(realdata_dir / "legacypipe_decam" / CASES[request.param])
    return request.param, [pattern.format(kind) for kind in ("ooi", "oow", "ood")]


def ext_data(path):
    with fits.open(path) as hdul:
        return hdul[0].header.copy(), hdul[1].header.copy(), np.asarray(hdul[1].data)


def test_variance_mask_and_pixels(triplet):
    case, paths = triplet
    exp = read_decam_cp(*paths)
    _, _, image = ext_data(paths[0])
    _, _, weight = ext_data(paths[1])
    _, _, dq = ext_data(paths[2])
    assert np.array_equal(exp.image, image) and exp.image.dtype == np.float32
    good = weight > 0
    assert np.array_equal(exp.variance[good], (1.0 / weight[good]).astype(np.float32))
    assert np.isposinf(exp.variance[~good]).all()
    assert np.array_equal(exp.mask.test("NO_DATA"), ~good)
    assert np.array_equal(exp.mask.test("CR"), dq == 5)
    if case == "testcase4":
        assert (~good).sum() == 177 and (dq[~good] == 5).all()
        assert exp.mask.test("CR").sum() == 177 and (exp.mask.test(["CR", "NO_DATA"]) == ~good).all()
    else:
        assert not exp.mask.array.any()


def test_xy0_and_wcs_agree_with_plain_astropy(triplet):
    _, paths = triplet
    exp = read_decam_cp(*paths)
    _, header, _ = ext_data(paths[0])
    assert exp.xy0 == (-int(header["LTV1"]), -int(header["LTV2"])) == (1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        plain = WCS(header)
    i, j = np.meshgrid(np.linspace(0, exp.height - 1, 9), np.linspace(0, exp.width - 1, 9), indexing="ij")
    ra, dec = exp.wcs.all_pix2world(j + exp.xy0[0], i + exp.xy0[1], 0)
    ra0, dec0 = plain.all_pix2world(j, i, 0)
    assert np.max(np.abs(ra - ra0)) < 1e-9 and np.max(np.abs(dec - dec0)) < 1e-9
    assert exp.wcs.to_header(relax=True)["CTYPE1"] == "RA---TPV"  # wcslib holds TPV as TAN + distortion


def test_visit_info_detector_metadata(triplet):
    _, paths = triplet
    exp = read_decam_cp(*paths)
    primary, header, _ = ext_data(paths[0])
    vi = exp.visit_info
    assert vi.id == primary["EXPNUM"] and vi.exposure_time == primary["EXPTIME"]
    assert vi.physical_filter == primary["FILTER"] and vi.band == primary["FILTER"].split()[0] == primary["BAND"].strip()
    assert vi.airmass == primary["AIRMASS"]
    assert abs(vi.mjd - (primary["MJD-OBS"] + primary["EXPTIME"] / 2 / 86400)) < 1e-10  # middle of the exposure
    assert vi.boresight_ra_dec == (Angle(primary["TELRA"], unit="hourangle").deg, Angle(primary["TELDEC"], unit="deg").deg)
    assert vi.observatory == (-primary["OBS-LONG"], primary["OBS-LAT"], primary["OBS-ELEV"])
    det = exp.detector
    assert (det.id, det.name) == (header["CCDNUM"], header["DETPOS"].strip())
    assert det.bbox.contains_box(exp.bbox)
    assert exp.metadata["GAINA"] == header["GAINA"] and exp.metadata["PLVER"] == primary["PLVER"]
    assert "CRPIX1" not in exp.metadata and "EXPNUM" not in exp.metadata


def test_decam_to_visitcal_fits_is_lossless(triplet, tmp_path):
    _, paths = triplet
    exp = read_decam_cp(*paths)
    write_exposure(exp, tmp_path / "decam.fits")
    assert_exposures_equal(exp, read_exposure(tmp_path / "decam.fits"), wcs_tol_deg=1e-10)


def test_hdu_selection_and_dq_style(realdata_dir):
    paths = [str(realdata_dir / "legacypipe_decam" / CASES["testcase4"]).format(k) for k in ("ooi", "oow", "ood")]
    assert read_decam_cp(*paths, hdu="N2").shape == (251, 245)
    with pytest.raises(FitsReadError, match=r"ooi_z_ls9.N2.fits: no HDU 'S1'"):
        read_decam_cp(*paths, hdu="S1")
    as_bits = read_decam_cp(*paths, dq_style="bits")  # code 5 read as bits 1 | 4
    assert as_bits.mask.test("BAD").sum() == 177 and as_bits.mask.test("INTRP").sum() == 177
    with pytest.raises(ValueError, match="dq_style"):
        read_decam_cp(*paths, dq_style="guess")


def test_mismatched_triplet_names_both_files(realdata_dir):
    root = realdata_dir / "legacypipe_decam"
    p4, p8 = (str(root / CASES[c]) for c in ("testcase4", "testcase8"))
    with pytest.raises(FitsReadError, match=r"ooi_z_ls9.N2.fits has shape \(251, 245\) but .*oow_r_ls9.N6.fits has "
                                            r"shape \(375, 280\)"):
        read_decam_cp(p4.format("ooi"), p8.format("oow"), p4.format("ood"))


def test_unknown_dq_code_names_file_and_code(realdata_dir, tmp_path):
    paths = [str(realdata_dir / "legacypipe_decam" / CASES["testcase4"]).format(k) for k in ("ooi", "oow", "ood")]
    with fits.open(paths[2]) as hdul:
        hdus = fits.HDUList([h.copy() for h in hdul])
    hdus[1].data[10, 10] = 9
    hdus.writeto(tmp_path / "bad_ood.fits")
    with pytest.raises(FitsReadError, match=r"bad_ood.fits: unknown CP data-quality code\(s\) \[9\]"):
        read_decam_cp(paths[0], paths[1], tmp_path / "bad_ood.fits")
    hdus[1].data[10, 10] = 8  # bits 8 is not a known pre-V3.5 bit
    hdus.writeto(tmp_path / "bad_ood2.fits")
    with pytest.raises(FitsReadError, match=r"bad_ood2.fits: unknown CP data-quality bit"):
        read_decam_cp(paths[0], paths[1], tmp_path / "bad_ood2.fits", dq_style="bits")


def test_truncated_decam_file(realdata_dir, tmp_path):
    paths = [str(realdata_dir / "legacypipe_decam" / CASES["testcase4"]).format(k) for k in ("ooi", "oow", "ood")]
    data = Path(paths[0]).read_bytes()
    (tmp_path / "cut.fits").write_bytes(data[: len(data) - 5000])
    with pytest.raises(FitsReadError, match=r"cut.fits"):
        read_decam_cp(tmp_path / "cut.fits", paths[1], paths[2])
