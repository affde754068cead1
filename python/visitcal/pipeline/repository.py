"""A data repository: a directory of inputs and of each step's outputs, with a status file per unit
of work so that a run can resume.

Layout (visits 6-digit, detectors 3-digit, zero-padded)::

    ROOT/
      repo.json, camera.json, refcat.parquet, truth/           inputs (`visitcal.sim` writes them)
      post_isr_image/<visit>/post_isr_image_<visit>_<detector>_<snap>.fits
      <dataset>/<visit>/<dataset>_<visit>_<detector>.<ext>      a step's per-detector outputs, e.g.
          preliminary_visit_image (.fits), preliminary_visit_image_background (.fits),
          single_visit_star (.parquet)
      provenance/<step>/<visit>_<detector>.json                 per detector: status ("ok" or the
          failure's type and message), timings, peak memory, config hash, versions
      skymap.json                                               the sky map of the per-tract steps
                                                                (`visitcal.core.skymap`)
      <dataset>/<dataset>_<tract>.parquet                       a per-tract step's outputs, e.g.
          isolated_star_association, isolated_star (tracts not zero-padded)
      provenance/<step>/<tract>.json                            per tract, as per detector

A unit (a step on one detector, or on one tract) is done when its provenance says ``ok`` with the same config
hash and its outputs exist; reruns skip it. Every file is written atomically, so an interrupted run leaves no
half-written product, and a failure on one detector is recorded without touching the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import resource
import time
from pathlib import Path

from ..core.atomic import atomic_write

__all__ = ["Repository", "UnitStatus", "config_hash", "recorded", "summary_field"]

_POST_ISR = re.compile(r"^post_isr_image_(\d+)_(\d+)_(\d+)\.fits$")
_SINGLE_VISIT_STAR = re.compile(r"^single_visit_star_(\d+)_(\d+)\.parquet$")


def summary_field(summary: dict | None, key: str, fmt: str) -> str:
    """``summary[key]`` formatted with ``fmt`` for the steps' per-detector tables; "-" when absent or not finite."""
    v = (summary or {}).get(key)
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def config_hash(config) -> str:
    """SHA-256 (16 hex digits) of a pydantic config's JSON: a rerun with another config is not skipped."""
    text = config.model_dump_json() if hasattr(config, "model_dump_json") else json.dumps(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass
class UnitStatus:
    """What became of one step on one detector (stored as ``provenance/<step>/<visit>_<detector>.json``)
    or on one tract (``visit`` and ``detector`` None, ``tract`` set; ``provenance/<step>/<tract>.json``)."""

    step: str
    visit: int | None
    detector: int | None
    status: str                      # "ok" or "failed"
    error_type: str | None = None    # the exception's class name on failure
    message: str | None = None
    config_hash: str | None = None
    timings: dict = dataclasses.field(default_factory=dict)
    peak_rss_mb: float | None = None
    versions: dict = dataclasses.field(default_factory=dict)
    summary: dict = dataclasses.field(default_factory=dict)
    tract: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the unit completed (``status == "ok"``)."""
        return self.status == "ok"


class Repository:
    """A data repository rooted at ``root`` (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a directory")

    # --- inputs ---------------------------------------------------------------------------------
    def post_isr_snaps(self) -> dict[tuple[int, int], list[Path]]:
        """``{(visit, detector): [snap paths in snap order]}`` of every post_isr_image present."""
        found: dict[tuple[int, int], dict[int, Path]] = {}
        base = self.root / "post_isr_image"
        if base.is_dir():
            for path in sorted(base.glob("*/post_isr_image_*.fits")):
                m = _POST_ISR.match(path.name)
                if m:
                    v, d, s = (int(g) for g in m.groups())
                    found.setdefault((v, d), {})[s] = path
        return {k: [snaps[s] for s in sorted(snaps)] for k, snaps in sorted(found.items())}

    def data_ids(self, visits=None, detectors=None) -> list[tuple[int, int]]:
        """Sorted ``(visit, detector)`` with a post_isr_image, restricted to ``visits`` / ``detectors``."""
        ids = list(self.post_isr_snaps())
        if visits is not None:
            ids = [i for i in ids if i[0] in set(visits)]
        if detectors is not None:
            ids = [i for i in ids if i[1] in set(detectors)]
        return ids

    @property
    def refcat_path(self) -> Path:
        """``ROOT/refcat.parquet``: the reference catalog (ICRS degrees, fluxes in nJy); it may not exist."""
        return self.root / "refcat.parquet"

    # --- outputs --------------------------------------------------------------------------------
    def dataset_path(self, name: str, visit: int, detector: int, ext: str) -> Path:
        """Path of a per-detector product, ``ROOT/<name>/<visit>/<name>_<visit>_<detector>.<ext>``.

        The visit is zero-padded to 6 digits, the detector to 3.

        Parameters
        ----------
        name : str
            The dataset name, e.g. ``"preliminary_visit_image"``.
        visit, detector : int
            The data id.
        ext : str
            The extension without its dot: ``"fits"`` or ``"parquet"``.

        Returns
        -------
        path : `pathlib.Path`
            The path; neither it nor its folder is created.
        """
        return self.root / name / f"{visit:06d}" / f"{name}_{visit:06d}_{detector:03d}.{ext}"

    def status_path(self, step: str, visit: int, detector: int) -> Path:
        """Path of a per-detector unit's provenance, ``ROOT/provenance/<step>/<visit>_<detector>.json``."""
        return self.root / "provenance" / step / f"{visit:06d}_{detector:03d}.json"

    def tract_dataset_path(self, name: str, tract: int, ext: str) -> Path:
        """Path of a per-tract product: ``ROOT/<name>/<name>_<tract>.<ext>`` (tract not zero-padded)."""
        return self.root / name / f"{name}_{int(tract)}.{ext}"

    def tract_status_path(self, step: str, tract: int) -> Path:
        """Path of a per-tract unit's provenance: ``ROOT/provenance/<step>/<tract>.json``."""
        return self.root / "provenance" / step / f"{int(tract)}.json"

    def single_visit_star_paths(self) -> dict[tuple[int, int], Path]:
        """``{(visit, detector): path}`` of every single_visit_star present, sorted."""
        found = {}
        base = self.root / "single_visit_star"
        if base.is_dir():
            for path in sorted(base.glob("*/single_visit_star_*.parquet")):
                m = _SINGLE_VISIT_STAR.match(path.name)
                if m:
                    found[(int(m.group(1)), int(m.group(2)))] = path
        return dict(sorted(found.items()))

    def read_status(self, step: str, visit: int, detector: int) -> UnitStatus | None:
        """The recorded `UnitStatus` of ``step`` on one detector; None if absent or unreadable."""
        return self._read_status_file(self.status_path(step, visit, detector))

    def read_tract_status(self, step: str, tract: int) -> UnitStatus | None:
        """The recorded `UnitStatus` of ``step`` on one tract; None if absent or unreadable."""
        return self._read_status_file(self.tract_status_path(step, tract))

    @staticmethod
    def _read_status_file(path: Path) -> UnitStatus | None:
        if not path.is_file():
            return None
        try:
            return UnitStatus(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError):
            return None  # unreadable: the unit is not done

    def write_status(self, status: UnitStatus) -> None:
        """Write ``status`` as JSON, atomically, to its per-tract (``status.tract`` set) or per-detector path.

        The provenance folder is created if needed; an existing status of the same unit is replaced.
        """
        if status.tract is not None:
            path = self.tract_status_path(status.step, status.tract)
        else:
            path = self.status_path(status.step, status.visit, status.detector)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as f:
            json.dump(dataclasses.asdict(status), f, indent=1, sort_keys=True, default=_json_default)

    def is_done(self, step: str, visit: int, detector: int, cfg_hash: str, outputs) -> bool:
        """Whether a unit can be skipped: its status is ok with this config hash and all its outputs exist.

        Parameters
        ----------
        step : str
            The step name (``"calibrate"``, ``"finalize"`` ...).
        visit, detector : int
            The data id.
        cfg_hash : str
            The `config_hash` of the step's current config.
        outputs : iterable of path-like
            The unit's products; every one must be a file.

        Returns
        -------
        done : bool
            False when there is no status, it is a failure, the config changed or a product is missing.
        """
        st = self.read_status(step, visit, detector)
        return bool(st and st.ok and st.config_hash == cfg_hash and all(Path(p).is_file() for p in outputs))

    def is_tract_done(self, step: str, tract: int, cfg_hash: str, outputs) -> bool:
        """As `is_done`, for a per-tract unit: status ok, same ``cfg_hash``, every output a file."""
        st = self.read_tract_status(step, tract)
        return bool(st and st.ok and st.config_hash == cfg_hash and all(Path(p).is_file() for p in outputs))


@contextlib.contextmanager
def recorded(repo: "Repository", status: UnitStatus):
    """Run one unit's work in the block: an exception is recorded in ``status`` (its type and message; the
    unit stays "failed") instead of propagating, so the other units go on (a failure never stops a whole
    visit); the block sets ``status.status = "ok"`` when it completes. Then the total time and the peak RSS
    are added and the status is written."""
    t0 = time.perf_counter()
    try:
        yield status
    except Exception as err:
        status.status = "failed"
        status.error_type = type(err).__name__
        status.message = str(err)
    finally:
        status.timings["total"] = time.perf_counter() - t0
        status.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        repo.write_status(status)


def _json_default(obj):
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)
