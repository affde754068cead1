"""The simulator against its own truth and independent computations (issue 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from visitcal.core.photocalib import AB_REFERENCE_NJY
from visitcal.sim import CAMERA_PRESETS, SimCamera, SimConfig, simulate
from visitcal.core.wcs import local_cd_matrix, pixel_to_sky, sky_to_pixel

from .conftest import SMALL
from .helpers import adaptive_moments


def _isolated_bright_stars(repo, visit, detector, *, lo, hi, radius, margin=8, isolation=30.0, snap=0):
    """Unsaturated stars in [lo, hi] ADU with nothing within ``isolation`` px and a clean box."""
    objects = repo.objects(visit, detector)
    exposure = repo.post_isr_image(visit, detector, snap)
    ny, nx = exposure.shape
    picks = []
    for s in objects[objects["is_star"] & objects["inside"]]:
        if not (lo < s["flux_adu"] < hi) or s["saturated"]:
            continue
        ix, iy = math.floor(s["x"] + 0.5), math.floor(s["y"] + 0.5)
        if not (radius + margin <= ix < nx - radius - margin and radius + margin <= iy < ny - radius - margin):
            continue
        dist = np.hypot(objects["x"] - s["x"], objects["y"] - s["y"])
        if np.sum(dist < isolation) > 1:
            continue
        box = (slice(iy - radius, iy + radius + 1), slice(ix - radius, ix + radius + 1))
        if np.any(exposure.mask.array[box]):
            continue
        picks.append((s, ix, iy, box))
    return exposure, picks


# --- the PSF ----------------------------------------------------------------------------------------
def test_true_psf_has_unit_sum_and_the_tabulated_moments(sim_repo):
    visit = sim_repo.visits[0]
    for detector in sim_repo.detectors:
        psf = sim_repo.true_psf(visit, detector)
        stars = sim_repo.objects(visit, detector)
        stars = stars[stars["is_star"] & stars["inside"]][:4]
        assert len(stars) >= 2
        for s in stars:
            image = psf.compute_image(s["x"], s["y"])
            assert image.shape == (41, 41)
            assert image.sum() == pytest.approx(1.0, abs=1e-12)
            # the raw profile conserves flux: a 41-px stamp holds > 99% of it, a 201-px one > 99.9%
            assert 0.99 < psf.draw(s["x"], s["y"], normalize=False)[0].sum() < 1.0
            assert 0.999 < psf.draw(s["x"], s["y"], size=201, normalize=False)[0].sum() < 1.0 + 1e-6
            # the table's moments (GalSim HSM) against an independent numpy adaptive-moments fit
            kernel = psf.compute_kernel_image(s["x"], s["y"])
            _, _, ixx, iyy, ixy = adaptive_moments(kernel)
            assert ixx == pytest.approx(s["psf_ixx"], rel=2e-4)
            assert iyy == pytest.approx(s["psf_iyy"], rel=2e-4)
            assert ixy == pytest.approx(s["psf_ixy"], abs=2e-4 * s["psf_ixx"])
            # the light centroid sits on the position (coma's net tilt is compensated)
            yy, xx = np.mgrid[:41, :41]
            assert abs((kernel * xx).sum() - 20) < 0.01 and abs((kernel * yy).sum() - 20) < 0.01


def test_true_psf_varies_across_each_detector(sim_repo):
    """Size and ellipticity change over every detector (optics fixed to the focal plane)."""
    visit = sim_repo.visits[0]
    for detector in sim_repo.detectors:
        psf = sim_repo.true_psf(visit, detector)
        shapes = np.array([psf.compute_shape(x, y) for x, y in ((50, 50), (970, 50), (50, 970), (970, 970))])
        size = np.sqrt(0.5 * (shapes[:, 0] + shapes[:, 1]))
        e1 = (shapes[:, 0] - shapes[:, 1]) / (shapes[:, 0] + shapes[:, 1])
        e2 = 2 * shapes[:, 2] / (shapes[:, 0] + shapes[:, 1])
        assert np.ptp(size) / size.mean() > 0.005
        assert max(np.ptp(e1), np.ptp(e2)) > 0.002
        # seeing: 0.6-1.0" FWHM atmosphere broadened by optics: sigma 1.2-2.6 px at 0.2"/px
        assert np.all((size > 1.2) & (size < 2.6))


def test_psf_seeing_within_configured_range(sim_repo):
    for visit in sim_repo.visits:
        fwhm = sim_repo.plans[visit].atmosphere.seeing_fwhm
        assert SMALL.seeing_fwhm_range[0] <= fwhm <= SMALL.seeing_fwhm_range[1]


# --- photometry -------------------------------------------------------------------------------------
def test_bright_isolated_star_flux_matches_truth_within_poisson_error(sim_repo):
    """Background-subtracted pixel sums over a box = true flux x the PSF's encircled fraction, to noise.

    Every isolated star above 1000 ADU in both snaps (~190 sums): the pulls must be unit normal.
    """
    radius = 12
    n_snaps = sim_repo.manifest["n_snaps"]
    pulls = []
    for visit in sim_repo.visits:
        for detector in sim_repo.detectors:
            psf = sim_repo.true_psf(visit, detector)
            for snap in range(n_snaps):
                background = sim_repo.true_background(visit, detector, snap).evaluate_image()
                exposure, picks = _isolated_bright_stars(sim_repo, visit, detector, lo=1e3, hi=4e5, radius=radius,
                                                         snap=snap)
                for s, ix, iy, box in picks:
                    fraction = psf.draw(s["x"], s["y"], size=2 * radius + 1, normalize=False)[0].sum()
                    expected = s["flux_adu"] / n_snaps * fraction
                    measured = (exposure.image[box] - background[box]).sum()
                    sigma = math.sqrt(exposure.variance[box].sum())
                    pulls.append((measured - expected) / sigma)
    pulls = np.array(pulls)
    assert pulls.size >= 100
    assert np.all(np.abs(pulls) < 4.5), pulls
    assert abs(pulls.mean()) < 3.0 / math.sqrt(pulls.size)
    assert 0.85 < pulls.std() < 1.15  # std of n unit normals: 1 +/- 1/sqrt(2n) = 0.05 at n = 190


def test_star_residuals_from_true_psf_are_noise(sim_repo):
    """image - background - flux * PSF over a star's core has chi^2 / pixel ~ 1."""
    chi2, npix = 0.0, 0
    visit = sim_repo.visits[0]
    for detector in sim_repo.detectors:
        background = sim_repo.true_background(visit, detector, 0).evaluate_image()
        exposure, picks = _isolated_bright_stars(sim_repo, visit, detector, lo=2e4, hi=4e5, radius=7)
        psf = sim_repo.true_psf(visit, detector)
        for s, ix, iy, box in picks:
            model = s["flux_adu"] / sim_repo.manifest["n_snaps"] * psf.draw(s["x"], s["y"], size=15,
                                                                              normalize=False)[0]
            resid = exposure.image[box] - background[box] - model
            chi2 += float(np.sum(resid**2 / exposure.variance[box]))
            npix += resid.size
    assert npix >= 225 * 3
    assert 0.8 < chi2 / npix < 1.25


def test_photo_calib_and_zero_point_are_consistent(sim_repo):
    for visit in sim_repo.visits:
        for detector in sim_repo.detectors:
            calib = sim_repo.true_photo_calib(visit, detector)
            zp = sim_repo.true_zero_point(visit, detector)
            assert calib.calibration_mean == pytest.approx(AB_REFERENCE_NJY * 10 ** (-0.4 * zp), rel=1e-12)
            objects = sim_repo.objects(visit, detector)
            np.testing.assert_allclose(objects["flux_adu"] * calib.calibration_mean, objects["flux_nJy"], rtol=1e-12)
            # a fiducial r zero point (27.81 for 1 e-/s) + 2.5 log10(30 s) - gain - extinction - clouds
            assert 30.3 < zp < 31.5


def test_refcat_holds_the_true_stars_with_stated_errors(sim_repo):
    ref = sim_repo.refcat()
    assert {"id", "ra", "dec", "r_flux", "r_fluxErr", "u_flux", "y_fluxErr"} <= set(ref.colnames)
    assert str(ref["r_flux"].unit) == "nJy"
    truth = sim_repo.objects()
    truth = truth[truth["is_star"]]
    _, first = np.unique(np.asarray(truth["id"]), return_index=True)
    truth = truth[first]
    common, i_ref, i_true = np.intersect1d(ref["id"], truth["id"], return_indices=True)
    assert common.size > 20
    pull = (ref["r_flux"][i_ref] - truth["flux_nJy"][i_true]) / ref["r_fluxErr"][i_ref]
    assert abs(np.mean(pull)) < 0.3 and 0.7 < np.std(pull) < 1.3
    np.testing.assert_array_equal(ref["ra"][i_ref], truth["ra"][i_true])


# --- astrometry ---------------------------------------------------------------------------------------
def test_true_wcs_round_trips_to_a_micro_pixel(sim_repo):
    rng = np.random.default_rng(1)
    for visit in sim_repo.visits:
        for detector in sim_repo.detectors:
            wcs = sim_repo.true_wcs(visit, detector)
            x, y = rng.uniform(-0.5, 1023.5, 2000), rng.uniform(-0.5, 1023.5, 2000)
            x2, y2 = sky_to_pixel(wcs, *pixel_to_sky(wcs, x, y))
            assert np.max(np.hypot(x2 - x, y2 - y)) < 1e-6


def test_true_wcs_is_the_camera_geometry_with_radial_distortion(sim_repo):
    """Independent reference: focal plane -> radial cubic -> rotation/parity -> gnomonic deprojection."""
    camera = sim_repo.camera
    visit = sim_repo.visits[1]
    plan = sim_repo.plans[visit]
    scale = camera.config.pixel_scale / 3600.0
    for detector in sim_repo.detectors:
        x, y = np.meshgrid(np.linspace(0, 1023, 7), np.linspace(0, 1023, 7))
        fx, fy = camera.pixel_to_focal_plane(detector, x.ravel(), y.ravel())
        u, v = fx / camera.config.pixel_size_mm, fy / camera.config.pixel_size_mm  # px from the axis
        k = 1 + camera.distortion_k * (u * u + v * v)
        rot = math.radians(plan.rotation_deg)
        xi = -scale * (math.cos(rot) * u * k - math.sin(rot) * v * k)   # east
        eta = scale * (math.sin(rot) * u * k + math.cos(rot) * v * k)   # north
        xi, eta = np.radians(xi), np.radians(eta)
        ra0, dec0 = math.radians(plan.boresight_ra), math.radians(plan.boresight_dec)
        rho = np.hypot(xi, eta)
        c = np.arctan(rho)
        dec = np.arcsin(np.cos(c) * math.sin(dec0) + eta * np.sin(c) * math.cos(dec0) / rho)
        ra = ra0 + np.arctan2(xi * np.sin(c), rho * math.cos(dec0) * np.cos(c) - eta * math.sin(dec0) * np.sin(c))
        ra_w, dec_w = pixel_to_sky(sim_repo.true_wcs(visit, detector), x.ravel(), y.ravel())
        sep = np.hypot((ra_w - np.degrees(ra)) * math.cos(dec0), dec_w - np.degrees(dec)) * 3.6e6
        assert np.max(sep) < 0.01  # milliarcsec
    # the distortion amounts to the configured arcsec at the field edge
    edge_px = camera.field_radius_mm / camera.config.pixel_size_mm
    assert camera.distortion_k * edge_px**3 * camera.config.pixel_scale == pytest.approx(
        min(camera.config.distortion_at_edge_arcsec, 0.005 * edge_px * camera.config.pixel_scale))
    assert camera.distortion_k * edge_px**3 * camera.config.pixel_scale > 1.0  # arcsec: a real distortion


def test_preliminary_wcs_differs_by_the_stated_amount(sim_repo):
    for visit in sim_repo.visits:
        for detector in sim_repo.detectors:
            err = sim_repo.preliminary_wcs_error(visit, detector)
            true, prelim = sim_repo.true_wcs(visit, detector), sim_repo.preliminary_wcs(visit, detector)
            cx, cy = 511.5, 511.5
            ra_t, dec_t = pixel_to_sky(true, cx, cy)
            ra_p, dec_p = pixel_to_sky(prelim, cx, cy)
            east = float((ra_p - ra_t) * math.cos(math.radians(dec_t))) * 3600
            north = float(dec_p - dec_t) * 3600
            assert east == pytest.approx(err["shift_east"], abs=1e-3)
            assert north == pytest.approx(err["shift_north"], abs=1e-3)
            assert err["center_offset"] == pytest.approx(math.hypot(east, north), abs=1e-3)
            # local linear maps: prelim = (1 + s) R(theta) true
            ratio = local_cd_matrix(prelim, cx, cy) @ np.linalg.inv(local_cd_matrix(true, cx, cy))
            scale = math.sqrt(abs(np.linalg.det(ratio)))
            theta = math.atan2(ratio[1, 0] - ratio[0, 1], ratio[0, 0] + ratio[1, 1])
            assert scale - 1 == pytest.approx(err["scale_error"], abs=2e-7)
            assert theta == pytest.approx(err["rotation"], abs=2e-7)
            # the largest offset over the detector is the stated one, within the configured limit
            gx, gy = np.meshgrid(np.linspace(-0.5, 1023.5, 9), np.linspace(-0.5, 1023.5, 9))
            ra1, dec1 = pixel_to_sky(true, gx.ravel(), gy.ravel())
            ra2, dec2 = pixel_to_sky(prelim, gx.ravel(), gy.ravel())
            sep = np.hypot((ra2 - ra1) * np.cos(np.radians(dec1)), dec2 - dec1) * 3600
            assert np.max(sep) == pytest.approx(err["max_offset"], abs=1e-3)
            assert 0 < err["max_offset"] <= SMALL.preliminary_wcs_max_offset
            # and the image carries the preliminary WCS
            attached = sim_repo.post_isr_image(visit, detector).wcs
            np.testing.assert_allclose(pixel_to_sky(attached, cx, cy), (ra_p, dec_p), rtol=0, atol=1e-11)


def test_reference_stars_land_where_the_true_wcs_puts_them(sim_repo):
    """Adaptive-moment centroids of bright refcat stars vs the true WCS at their catalog position."""
    ref = sim_repo.refcat()
    offsets = []
    for visit in sim_repo.visits:
        for detector in sim_repo.detectors:
            wcs = sim_repo.true_wcs(visit, detector)
            background = sim_repo.true_background(visit, detector, 0).evaluate_image()
            exposure, picks = _isolated_bright_stars(sim_repo, visit, detector, lo=1e4, hi=4e5, radius=10)
            for s, ix, iy, box in picks:
                row = np.nonzero(ref["id"] == s["id"])[0]
                assert row.size == 1
                x_ref, y_ref = sky_to_pixel(wcs, ref["ra"][row[0]], ref["dec"][row[0]])
                stamp = exposure.image[box] - background[box]
                cx, cy, *_ = adaptive_moments(stamp.astype(np.float64))
                offsets.append((box[1].start + cx - x_ref, box[0].start + cy - y_ref))
    offsets = np.array(offsets)
    assert len(offsets) >= 8
    assert np.all(np.hypot(*offsets.T) < 0.15)
    assert np.all(np.abs(offsets.mean(axis=0)) < 0.03)


# --- defects, snaps, sky ------------------------------------------------------------------------------
def test_snaps_share_sky_and_scene_with_independent_noise_and_cosmic_rays(sim_repo):
    visit, detector = sim_repo.visits[0], sim_repo.detectors[0]
    a, b = sim_repo.post_isr_image(visit, detector, 0), sim_repo.post_isr_image(visit, detector, 1)
    assert a.visit_info.exposure_time == b.visit_info.exposure_time == SMALL.exposure_time / 2
    assert sim_repo.true_background(visit, detector, 0) == sim_repo.true_background(visit, detector, 1)
    clean = (a.mask.array == 0) & (b.mask.array == 0)
    cr = sim_repo.truth_mask(visit, detector, 0).test("CR") | sim_repo.truth_mask(visit, detector, 1).test("CR")
    clean &= ~cr
    diff = (a.image - b.image)[clean]
    # the difference is pure noise: mean 0, variance the sum of both variance planes
    assert abs(diff.mean()) < 5 * diff.std() / math.sqrt(diff.size)
    ratio = diff.var() / (a.variance[clean] + b.variance[clean]).mean()
    assert 0.95 < ratio < 1.05
    cr_a = sim_repo.cosmic_rays(visit, detector, 0)
    cr_b = sim_repo.cosmic_rays(visit, detector, 1)
    assert len(cr_a) > 0 and len(cr_b) > 0
    assert set(zip(cr_a["x"], cr_a["y"])) != set(zip(cr_b["x"], cr_b["y"]))


def test_cosmic_rays_are_in_the_pixels_but_not_the_mask(sim_repo):
    visit, detector = sim_repo.visits[1], sim_repo.detectors[1]
    exposure = sim_repo.post_isr_image(visit, detector, 0)
    assert not np.any(exposure.mask.test("CR"))
    cr = sim_repo.cosmic_rays(visit, detector, 0)
    strong = cr[cr["adu"] > 500]
    assert len(strong) > 0
    background = sim_repo.true_background(visit, detector, 0).evaluate_image()
    excess = exposure.image[strong["y"], strong["x"]] - background[strong["y"], strong["x"]]
    noise = np.sqrt(exposure.variance[strong["y"], strong["x"]])
    unmasked = exposure.mask.array[strong["y"], strong["x"]] == 0
    assert np.median((excess / noise)[unmasked]) > 5
    assert np.all(sim_repo.truth_mask(visit, detector, 0).test("CR")[cr["y"], cr["x"]])


def test_masks_bad_columns_edges_and_saturation(sim_repo):
    camera = sim_repo.camera
    for visit in sim_repo.visits:
        for detector in sim_repo.detectors:
            exposure = sim_repo.post_isr_image(visit, detector, 0)
            bad = exposure.mask.test("BAD")
            expected = np.zeros_like(bad)
            for x, y0, y1 in camera[detector].bad_columns:
                expected[y0:y1 + 1, x] = True
            np.testing.assert_array_equal(bad, expected)
            edge = exposure.mask.test("EDGE")
            w = camera.config.edge_width
            assert edge[:w].all() and edge[-w:].all() and edge[:, :w].all() and not edge[w:-w, w:-w].any()
            sat = exposure.mask.test("SAT")
            assert np.all(exposure.mask.test("INTRP")[bad | sat])
            # interpolated bad columns carry the level of their neighbours, not zero
            x, y0, y1 = camera[detector].bad_columns[0]
            rows = slice(max(y0, 10), min(y1, 1013))
            col = exposure.image[rows, x]
            neighbours = 0.5 * (exposure.image[rows, x - 1] + exposure.image[rows, x + 1])
            ok = ~exposure.mask.array[rows, x - 1].astype(bool) & ~exposure.mask.array[rows, x + 1].astype(bool)
            np.testing.assert_allclose(col[ok & ~sat[rows, x]], neighbours[ok & ~sat[rows, x]], rtol=1e-5, atol=1e-3)
            # the mask carries the standard plane names; units and gain are recorded
            assert exposure.metadata["BUNIT"] == "adu"
            assert exposure.metadata["GAIN"] == pytest.approx(camera[detector].gain)


def test_saturated_stars_bleed_along_columns():
    """A bright star on a tiny detector: SAT pixels form a vertical trail centred on the star."""
    config = SimConfig(n_visits=1, n_detectors=1, detector_width=256, detector_height=256, seed=3,
                       star_density=0.0, galaxy_density=0.0, cosmic_ray_rate=0.0)
    from astropy.table import Table
    from visitcal.sim.camera import SimCamera
    from visitcal.sim.render import render_detector
    from visitcal.sim.scene import make_visit_plans

    camera = SimCamera(config.camera, 1)
    plan = make_visit_plans(config, camera)[0]
    wcs = camera.true_wcs(0, plan.boresight_ra, plan.boresight_dec, plan.rotation_deg)
    ra, dec = pixel_to_sky(wcs, 128.2, 127.7)
    stars = Table({"id": [1], "ra": [float(ra)], "dec": [float(dec)],
                   **{f"{b}_mag": [12.0] for b in "ugrizy"}})
    galaxies = Table({"id": np.zeros(0, int), "ra": np.zeros(0), "dec": np.zeros(0), "mag": np.zeros(0),
                      "sersic_n": np.zeros(0), "hlr": np.zeros(0), "g1": np.zeros(0), "g2": np.zeros(0)})
    truth = render_detector(config, camera, plan, 0, stars, galaxies)
    sat = truth.snaps[0].exposure.mask.test("SAT")
    ys, xs = np.nonzero(sat)
    assert truth.objects["saturated"][0]
    assert np.ptp(ys) > 3 * np.ptp(xs)          # a column trail, not a blob
    assert abs(np.median(xs) - 128) <= 1
    assert ys.min() < 127.7 < ys.max()


def test_camera_presets_and_layout():
    lsst = SimCamera(CAMERA_PRESETS["lsst"], 9)
    det = lsst[4].detector
    assert (det.bbox.width, det.bbox.height) == (4072, 4000)
    assert lsst.config.pixel_scale == 0.2
    # detectors do not overlap: centres are at least a detector plus the gap apart
    centres = np.array([d.detector.focal_plane_center for d in lsst.detectors])
    d = np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    assert np.min(d[d > 0]) >= 4000 * 0.010
    assert 0 < np.std([d.detector.rotation for d in lsst.detectors]) < 0.2
    # the same preset is the same camera, whatever the simulation seed
    assert SimCamera(CAMERA_PRESETS["lsst"], 9).detectors == lsst.detectors


# --- determinism ---------------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(tmp_path):
    config = SimConfig(n_visits=1, n_detectors=2, detector_width=384, detector_height=320, n_snaps=2, seed=11)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate(config, a)
    simulate(config, b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 + 4 + 5  # repo.json, camera.json, refcat; 4 images; 5 truth tables
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    simulate(config.model_copy(update={"seed": 12}), c)
    image = "post_isr_image/001000/post_isr_image_001000_000_0.fits"
    assert (a / image).read_bytes() != (c / image).read_bytes()


def test_simulate_refuses_a_non_empty_output_and_leaves_it_alone(tmp_path):
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    config = SimConfig(n_visits=1, n_detectors=1, detector_width=64, detector_height=64)
    with pytest.raises(FileExistsError, match="not empty"):
        simulate(config, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    simulate(config, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "repo.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no staging directory left behind


def test_true_psf_pickles_to_the_same_pixels(sim_repo):
    import pickle

    psf = sim_repo.true_psf(sim_repo.visits[0], sim_repo.detectors[1])
    clone = pickle.loads(pickle.dumps(psf))
    np.testing.assert_array_equal(clone.compute_image(300.25, 700.6), psf.compute_image(300.25, 700.6))
    assert "TruePsf(detector=1" in repr(clone)
