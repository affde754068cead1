"""`check_wcs`: a fitted WCS is finite, does not fold over and keeps its pixel area over the detector (issue 21).

Analytic cases: a TAN-SIP with ``A_2_0 = c`` has ``dU/du = 1 + 2 c u``, so its Jacobian determinant changes
sign at ``u = -1 / (2 c)``: inside a 2048-px detector for ``c = -4e-4`` (u = 1250 px), outside for
``c = -1e-5`` (u = 50000 px); ``c = -2e-4`` folds beyond the detector but changes the pixel area 3.3-fold within it.
"""

from __future__ import annotations

import numpy as np
import pytest
from visitcal.calib.fit_tan_sip_wcs import AstrometryFitError
from visitcal.calib.wcs_check import check_wcs
from visitcal.core.wcs import make_tan_sip_wcs

BOX = (-0.5, 2047.5, -0.5, 2047.5)


def wcs_with_a20(c):
    a, b = np.zeros((3, 3)), np.zeros((3, 3))
    a[2, 0] = c
    return make_tan_sip_wcs((0.0, 0.0), (40.0, 10.0), np.diag([-1.0, 1.0]) * 0.2 / 3600, sip_a=a, sip_b=b)


def test_a_good_wcs_passes_with_its_area_range():
    out = check_wcs(wcs_with_a20(-1e-5), BOX)
    # area ratio to the centre (u = 1023.5): (1 + 2 c u) / (1 + 2 c 1023.5), u from -0.5 to 2047.5
    lo = (1 + 2 * -1e-5 * 2047.5) / (1 + 2 * -1e-5 * 1023.5)
    assert out["min_area_ratio"] == pytest.approx(lo, rel=1e-4)


def test_fold_over_inside_the_detector_is_an_error():
    with pytest.raises(AstrometryFitError, match="folds over") as exc:
        check_wcs(wcs_with_a20(-4e-4), BOX)
    assert exc.value.reason == "fold_over" and exc.value.n_bad > 0


def test_large_area_change_is_an_error():
    with pytest.raises(AstrometryFitError, match="pixel area changes") as exc:
        check_wcs(wcs_with_a20(-2e-4), BOX)  # 1 - 0.82 at the far edge vs 1 - 0.41 at the centre: x3.3
    assert exc.value.reason == "area_change"
    check_wcs(wcs_with_a20(-2e-4), BOX, max_area_ratio=4.0)


def test_non_finite_wcs_is_an_error():
    w = wcs_with_a20(0.0)
    w.wcs.cd = np.array([[np.nan, 0.0], [0.0, 1e-4]])
    w.wcs.set()
    with pytest.raises(AstrometryFitError, match="not finite") as exc:
        check_wcs(w, BOX)
    assert exc.value.reason == "non_finite"
