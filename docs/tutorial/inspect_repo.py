"""The tutorial's Python: look at the products of ``commands.sh`` and compare them with the truth.

Run from the directory that holds ``tutorial_repo`` (tests/sim/test_tutorial.py runs this file).
"""
# --- status
from visitcal.pipeline import Repository

repo = Repository("tutorial_repo")
for step in ("calibrate", "finalize", "reprocess"):
    for visit, detector in [(1000, 0), (1000, 1), (1001, 0), (1001, 1)]:
        status = repo.read_status(step, visit, detector)
        print(step, visit, detector, status.status, sorted(status.summary))
# --- visit_image
from visitcal.io import read_catalog, read_exposure

exposure = read_exposure("tutorial_repo/visit_image/001000/visit_image_001000_000.fits")
print(exposure)                                   # image, mask, variance + wcs, psf, photo_calib, ...
print(exposure.metadata["BUNIT"])                 # nJy
print(dict(exposure.mask.planes))                 # mask plane name -> bit
print(exposure.summary_stats)                     # psfSigma, zeroPoint, skyBg, magLim, effTime, ...
# --- source
import numpy as np

sources = read_catalog("tutorial_repo/source/001000/source_001000_000.parquet")
stars = sources[sources["calib_psf_used"]]
print(len(sources), "sources,", len(stars), "PSF stars")
print(stars["id", "coord_ra", "coord_dec", "base_PsfFlux_flux", "base_PsfFlux_mag"][:5])
# --- truth
from visitcal.sim import SimRepository

truth = SimRepository("tutorial_repo")
for x, y in [(200.0, 200.0), (1024.0, 1024.0), (1850.0, 1850.0)]:
    fitted = exposure.psf.compute_shape(x, y)
    true = truth.true_psf(1000, 0).compute_shape(x, y)
    size_error = (fitted.xx + fitted.yy) / (true.xx + true.yy) - 1
    print(f"PSF at ({x:.0f}, {y:.0f}): trace error {size_error:+.4f}")
# --- photometry
from visitcal.calib import match_nearest_sky

objects = truth.objects(1000, 0)
objects = objects[objects["is_star"] & objects["inside"]]
match = match_nearest_sky(np.degrees(stars["coord_ra"].value), np.degrees(stars["coord_dec"].value),
                          objects["ra"], objects["dec"], 0.5)      # coord_* in radians, truth in degrees
i_src = np.flatnonzero(match.index >= 0)
i_true = match.index[i_src]
dmag = 2.5 * np.log10(np.asarray(stars["base_PsfFlux_flux"])[i_src] / np.asarray(objects["flux_nJy"])[i_true])
print(f"{len(i_src)} PSF stars matched; median PsfFlux - truth = {1000 * np.median(dmag):+.1f} mmag")
