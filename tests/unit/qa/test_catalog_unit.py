"""The catalog section's completeness proxies and sky statistics on hand-built catalogs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.table import Table

from visitcal.qa.catalog import SKY_FLUX, catalog_metrics


def _catalog(mag, snr, *, sky_flux=(), sky_err=(), ext=None):
    n, k = len(mag), len(sky_flux)
    flux = 10 ** (-0.4 * (np.asarray(mag) - 31.4))
    t = Table()
    t["base_PsfFlux_mag"] = np.r_[mag, np.full(k, np.nan)]
    t["base_PsfFlux_flux"] = np.r_[flux, np.full(k, np.nan)]
    t["base_PsfFlux_fluxErr"] = np.r_[flux / np.asarray(snr), np.full(k, np.nan)]
    t["base_ClassificationExtendedness_value"] = np.r_[np.zeros(n) if ext is None else ext, np.full(k, np.nan)]
    t["sky_source"] = np.r_[np.zeros(n, bool), np.ones(k, bool)]
    t["detect_isPrimary"] = np.r_[np.ones(n, bool), np.zeros(k, bool)]
    t[f"{SKY_FLUX}_flux"] = np.r_[np.full(n, np.nan), sky_flux]
    t[f"{SKY_FLUX}_fluxErr"] = np.r_[np.full(n, np.nan), sky_err]
    t["base_PsfFlux_flag"] = np.r_[np.arange(n) % 4 == 0, np.ones(k, bool)]
    return t


def test_mag_at_snr10_on_a_power_law():
    # S/N = 10 at m0 = 23.3, log S/N linear in magnitude; in each 0.25-mag bin the magnitudes sit symmetrically
    # about the bin centre, so the bin median of S/N is its value at the centre and the interpolation is exact
    m0 = 23.3
    centres = np.arange(18.125, 25.0, 0.25)
    mag = np.concatenate([c + np.array([-0.1, -0.05, 0.0, 0.05, 0.1]) for c in centres])
    snr = 10 * 10 ** (-0.4 * (mag - m0))
    m = catalog_metrics(_catalog(mag, snr))
    assert m["magAtSnr10"] == pytest.approx(m0, abs=1e-9)
    assert m["nSources"] == mag.size
    assert m["fractionPsfFluxFlagged"] == pytest.approx(np.mean(np.arange(mag.size) % 4 == 0))


def test_mag_at_snr10_is_nan_when_never_reached():
    mag = np.linspace(18, 20, 50)
    assert math.isnan(catalog_metrics(_catalog(mag, np.full(50, 100.0)))["magAtSnr10"])


def test_number_counts_peak_and_extended_fraction():
    mag = np.r_[np.full(3, 20.1), np.full(9, 22.6), np.full(5, 23.1)]
    ext = np.r_[np.zeros(3), np.ones(9), np.zeros(5)]
    m = catalog_metrics(_catalog(mag, np.full(mag.size, 50.0), ext=ext))
    assert m["numberCountsPeakMag"] == pytest.approx(22.625)
    assert m["fractionExtended"] == pytest.approx(9 / 17)


def test_sky_source_statistics():
    rng = np.random.default_rng(3)
    flux, err = rng.normal(12.0, 40.0, 101), np.full(101, 40.0)
    m = catalog_metrics(_catalog(np.linspace(20, 22, 10), np.full(10, 30.0), sky_flux=flux, sky_err=err))
    assert m["nSkySources"] == 101
    assert m["medianSky"] == pytest.approx(np.median(flux), rel=1e-12)
    assert m["sigmaMADSky"] == pytest.approx(1.4826 * np.median(np.abs(flux - np.median(flux))), rel=1e-12)
    assert m["skySourceSignificanceMedian"] == pytest.approx(np.median(flux / err), rel=1e-12)


def test_missing_columns_give_nan_not_an_error():
    t = Table({"base_PsfFlux_mag": [20.0], "base_PsfFlux_flux": [1e4], "base_PsfFlux_fluxErr": [1e2]})
    m = catalog_metrics(t)
    assert m["nSources"] == 1 and math.isnan(m["medianSky"]) and math.isnan(m["fractionSaturatedCenter"])
