"""Source ids and catalog slots.

Ids follow LSST's meas_base ``IdGenerator`` (``DetectorVisitIdGeneratorConfig``): a catalog id packs
``(visit, detector)`` and a release id::

    catalog_id = (visit * n_detectors + detector) + n_data_ids * release_id,
    n_data_ids = max_visit * n_detectors,

and a source id is ``catalog_id * n_counters + counter``, so ids of different detectors, visits and
releases never collide and unpack with two ``divmod`` calls. ``n_counters`` is the power of two
left in 63 bits once the catalog ids are accommodated: ids stay non-negative int64 (afw uses all
64 bits, so its largest ids turn negative; we keep the sign bit clear).

Slots are afw's slot aliases, as meas_base's measurement framework uses them:
``table.meta["slots"]`` maps a slot name (``"Centroid"``, ``"Shape"``, ``"PsfFlux"``, ``"CalibFlux"`` …)
to the column prefix it aliases (``"base_SdssCentroid"``), so ``slot_Centroid_x`` resolves to
``base_SdssCentroid_x``. A real ``slot_*`` column wins over an alias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

__all__ = ["DetectorVisitIdGenerator", "unpack_source_ids", "slot_column", "set_slot"]


@dataclass(frozen=True)
class DetectorVisitIdGenerator:
    """Packs source ids for one (visit, detector) catalog.

    Parameters
    ----------
    visit, detector : int
        The data id; ``0 <= visit < max_visit`` and ``0 <= detector < n_detectors``.
    release_id : int
        Data-release number, ``0 <= release_id < n_releases`` (64 by default, as LSST).
    max_visit, n_detectors, n_releases : int
        Sizes of the id spaces; every catalog of one repository must use the same values.
        The defaults (2**30 visits, 256 detectors, 64 releases) leave 2**19 = 524288 sources per
        catalog.
    """

    visit: int
    detector: int
    release_id: int = 0
    max_visit: int = 2**30
    n_detectors: int = 256
    n_releases: int = 64

    def __post_init__(self):
        for name, value, limit in (
            ("visit", self.visit, self.max_visit),
            ("detector", self.detector, self.n_detectors),
            ("release_id", self.release_id, self.n_releases),
        ):
            if not (0 <= int(value) < int(limit)):
                raise ValueError(f"{name}={value} is outside [0, {limit})")
        if self.counter_bits < 1:
            raise ValueError("max_visit * n_detectors * n_releases leaves no bits for the source counter")

    @property
    def n_data_ids(self) -> int:
        """Number of distinct ``(visit, detector)`` pairs: ``max_visit * n_detectors``."""
        return self.max_visit * self.n_detectors

    @property
    def counter_bits(self) -> int:
        """Bits left for the per-catalog source counter: 63 minus the bits of the largest catalog id."""
        catalog_bits = (self.n_data_ids * self.n_releases - 1).bit_length()
        return 63 - catalog_bits

    @property
    def n_counters(self) -> int:
        """``2**counter_bits``: how many source ids one catalog can hold (counters 0 .. n_counters - 1)."""
        return 1 << self.counter_bits

    @property
    def catalog_id(self) -> int:
        """Packed (visit, detector, release); also the seed of per-catalog random streams."""
        return (self.visit * self.n_detectors + self.detector) + self.n_data_ids * self.release_id

    def source_ids(self, n: int, start: int = 1) -> np.ndarray:
        """``n`` consecutive source ids, counters ``start .. start + n - 1`` (afw counts from 1)."""
        counters = np.arange(start, start + n, dtype=np.int64)
        if n and (counters[0] < 0 or counters[-1] >= self.n_counters):
            raise ValueError(f"source counter exceeds {self.n_counters - 1}: too many sources in one catalog")
        return np.int64(self.catalog_id) * np.int64(self.n_counters) + counters

    def unpack(self, ids):
        """``(visit, detector, release_id, counter)`` arrays of packed ids made with these sizes."""
        return unpack_source_ids(ids, max_visit=self.max_visit, n_detectors=self.n_detectors,
                                 n_releases=self.n_releases)


def unpack_source_ids(ids, *, max_visit: int = 2**30, n_detectors: int = 256, n_releases: int = 64):
    """Inverse of `DetectorVisitIdGenerator.source_ids`: ``(visit, detector, release_id, counter)``."""
    probe = DetectorVisitIdGenerator(0, 0, max_visit=max_visit, n_detectors=n_detectors, n_releases=n_releases)
    ids = np.asarray(ids, dtype=np.int64)
    if np.any(ids < 0):
        raise ValueError("source ids must be non-negative")
    catalog_id, counter = np.divmod(ids, np.int64(probe.n_counters))
    release_id, packed = np.divmod(catalog_id, np.int64(probe.n_data_ids))
    visit, detector = np.divmod(packed, np.int64(n_detectors))
    return visit, detector, release_id, counter


def set_slot(table: Table, slot: str, prefix: str) -> None:
    """Alias ``slot_<slot>_*`` to ``<prefix>_*`` in ``table.meta["slots"]``."""
    table.meta.setdefault("slots", {})[slot] = prefix


def slot_column(table: Table, slot: str, suffix: str) -> str:
    """Column name that ``slot_<slot>_<suffix>`` refers to in ``table``.

    Raises
    ------
    KeyError
        Naming the slot when neither a ``slot_*`` column nor an alias to an existing column exists.
    """
    direct = f"slot_{slot}_{suffix}"
    if direct in table.colnames:
        return direct
    prefix = table.meta.get("slots", {}).get(slot)
    if prefix is not None and f"{prefix}_{suffix}" in table.colnames:
        return f"{prefix}_{suffix}"
    raise KeyError(
        f"catalog has no {direct!r} column and no slot alias {slot!r} to an existing column "
        f"(aliases: {table.meta.get('slots', {})})"
    )
