"""The command line on a real DECam CP triplet, and its argument errors (exit code 2)."""

import pytest

from visitcal.cli import main
from visitcal.io import read_decam_cp, read_exposure
from visitcal.io.fits import assert_exposures_equal

pytestmark = pytest.mark.realdata

PREFIX = "legacypipe_decam/testcase4/images/decam/CP/V4.8.2/CP20170315/c4d_170316_062107_oo{}_z_ls9.N2.fits"


def triplet(realdata_dir):
    return [str(realdata_dir / PREFIX.format(k)) for k in "iwd"]


def test_convert_decam_then_info(realdata_dir, tmp_path, capsys):
    out = tmp_path / "n2.fits"
    assert main(["convert-decam", *triplet(realdata_dir), str(out)]) == 0
    assert_exposures_equal(read_exposure(out), read_decam_cp(*triplet(realdata_dir)))
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "visit 630780, band 'z'" in text and "NO_DATA=177" in text and "TPV distortion" in text


def test_bad_arguments_exit_2_and_write_nothing(realdata_dir, tmp_path, capsys):
    files = triplet(realdata_dir)
    with pytest.raises(SystemExit) as exc:
        main(["convert-decam", files[0], str(tmp_path / "missing_oow.fits"), files[2], str(tmp_path / "x.fits")])
    assert exc.value.code == 2
    assert "weight" in capsys.readouterr().err
    out = tmp_path / "exists.fits"
    out.write_bytes(b"keep")
    with pytest.raises(SystemExit) as exc:
        main(["convert-decam", *files, str(out)])
    assert exc.value.code == 2 and out.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.fits"]


def test_unreadable_file_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    assert main(["info", str(bad)]) == 1
    assert "bad.fits" in capsys.readouterr().err
