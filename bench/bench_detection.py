"""Detection on a 4072 x 4000 simulated detector, one core: visitcal vs sep.extract (issue 4).

visitcal: `visitcal.detection.detect_footprints` with LSST's defaults (lsst-spec §5.4) on the image
minus its true background: input check, Gaussian smoothing of image and variance by the PSF sigma,
EDGE, the pixel_stdev threshold at 5 sigma, 8-connected footprints, peaks with significance, disc
growth by 2.4 sigma with merging, DETECTED plane.

sep.extract, beside it, on the same background-subtracted image with thresh=5 in units of the
per-pixel rms (err = sqrt(variance)) and its default 3x3 filter; by default it also deblends (32
levels) and measures every object, so it is timed twice: with its defaults, and with deblending off
(deblend_cont=1.0), the closer match to what detection alone does.

Run from the repository root: ``python bench/bench_detection.py``.
"""

from __future__ import annotations

import argparse

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np
from _sim_image import sim_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("Detection, 4072 x 4000 simulated detector", cpu)

    from visitcal.detection.detection import SourceDetectionConfig, detect_footprints
    from visitcal.core.image import Mask, MaskedImage

    data = sim_detector()
    image = (data["image"] - data["background"]).astype(np.float32)
    variance = data["variance"]
    sigma = float(data["psf_sigma"])
    mi = MaskedImage(image, Mask(data["mask"].copy()), variance)
    cfg = SourceDetectionConfig()
    found = {}

    def ours():
        found["ours"] = detect_footprints(mi, sigma, cfg)[0]

    rows, payload = [], {"psf_sigma": sigma}
    t_ours = _common.time_it(ours, repeat=args.repeat)
    n_ours = len(found["ours"])
    rows.append(["visitcal detect_footprints", t_ours.best, t_ours.median, n_ours, len(found["ours"].peaks), ""])
    payload["visitcal"] = {**t_ours.as_dict(), "n_footprints": n_ours, "n_peaks": len(found["ours"].peaks)}
    try:
        import sep
    except ImportError:
        sep = None
        print("sep is not installed (pip install sep): peer skipped")
    if sep is not None:
        err = np.sqrt(variance).astype(np.float32)
        sep.set_extract_pixstack(10_000_000)
        sep.set_sub_object_limit(4096)
        for label, kwargs in (("sep.extract (defaults)", {}), ("sep.extract (no deblending)", {"deblend_cont": 1.0})):
            def peer(label=label, kwargs=kwargs):
                found[label] = sep.extract(image, 5.0, err=err, **kwargs)

            t = _common.time_it(peer, repeat=max(2, args.repeat // 2))
            rows.append([label, t.best, t.median, len(found[label]), "", f"{t.best / t_ours.best:.1f}x"])
            payload[label] = {**t.as_dict(), "n_objects": len(found[label]), "ratio_to_visitcal": t.best / t_ours.best}
    print(_common.format_table(["what", "best s", "median s", "footprints/objects", "peaks", "peer / visitcal"],
                               rows))
    print(f"target: visitcal <= 0.3 s -> {'met' if t_ours.best <= 0.3 else 'MISSED'} ({t_ours.best:.3f} s)")
    print(f"wrote {_common.write_json('detection', payload)}")


if __name__ == "__main__":
    main()
