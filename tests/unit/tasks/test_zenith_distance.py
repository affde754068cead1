"""The visit summary's zenithDistance against astropy's horizontal coordinates (offline: no IERS download)."""

from __future__ import annotations

import math
import warnings

import pytest

from visitcal.core.image import VisitInfo
from visitcal.tasks.compute_exposure_summary_stats import zenith_distance


def _astropy_zenith_distance(ra, dec, mjd, lon, lat):
    from astropy.utils import iers

    import astropy.units as u
    from astropy.coordinates import AltAz, EarthLocation, SkyCoord
    from astropy.time import Time

    with warnings.catch_warnings(), iers.conf.set_temp("auto_download", False):
        warnings.simplefilter("ignore")  # IERS tables not downloaded: astropy's predicted UT1 is enough here
        where = EarthLocation(lon=lon * u.deg, lat=lat * u.deg, height=2663 * u.m)
        altaz = SkyCoord(ra * u.deg, dec * u.deg).transform_to(
            AltAz(obstime=Time(mjd, format="mjd", scale="utc"), location=where))
        return 90.0 - float(altaz.alt.deg)


@pytest.mark.parametrize("ra, dec, mjd", [(150.0, -30.0, 61000.1), (20.0, -60.0, 60500.3), (300.0, 5.0, 60100.9),
                                          (80.0, -25.0, 59900.05)])
def test_zenith_distance_matches_astropy_within_half_a_degree(ra, dec, mjd):
    lon, lat = -70.749417, -30.244639
    vi = VisitInfo(boresight_ra_dec=(ra, dec), date=None, observatory=(lon, lat, 2663.0))
    object.__setattr__(vi, "mjd", mjd)
    # no refraction, precession or nutation: within 0.5 deg of astropy's apparent altitude for 2022-2026 dates
    assert zenith_distance(vi) == pytest.approx(_astropy_zenith_distance(ra, dec, mjd, lon, lat), abs=0.5)


def test_zenith_distance_unknown_inputs_give_nan():
    assert math.isnan(zenith_distance(None))
    assert math.isnan(zenith_distance(VisitInfo(boresight_ra_dec=(10.0, 10.0))))
