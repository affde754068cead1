"""Persistence of model components (ApCorrMap, PhotoCalib, PSF, background, summary) as tables.

Every component that an `Exposure` can carry, or that a per-visit model catalog stores, turns
itself into an `astropy.table.Table` and back. A FITS file stores each such table as one binary-table
HDU whose header carries two cards:

``VCKIND``
    the component's persistence name (e.g. ``"ApCorrMap"``), which selects the class on reading;
``VCVERS``
    the integer schema version the table was written with.

A class opts in with the `persistable` decorator. Readers refuse a version newer than the class
knows, naming the file and HDU, instead of guessing.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Protocol, runtime_checkable

from astropy.table import Table

__all__ = [
    "Persistable",
    "PersistenceError",
    "persistable",
    "get_persistable",
    "component_to_table",
    "component_from_table",
]


class PersistenceError(ValueError):
    """A persisted component cannot be read: unknown kind, unsupported version or bad schema."""


@runtime_checkable
class Persistable(Protocol):
    """What a component stored as a table provides (a runtime-checkable protocol).

    A class satisfies it by being decorated with `persistable`, which sets the class attributes
    ``persistence_name`` (the ``VCKIND`` value that selects the class on reading) and
    ``persistence_version`` (the newest table schema version it writes and reads), and by defining
    `to_table` and `from_table`. ``isinstance(obj, Persistable)`` checks that the attributes and
    methods exist, not their behaviour.
    """

    persistence_name: ClassVar[str]
    persistence_version: ClassVar[int]

    def to_table(self) -> Table:
        """The component as an `astropy.table.Table`; `from_table` must rebuild an equal object.

        The ``VCKIND`` / ``VCVERS`` metadata are added by `component_to_table`, not by this method.
        """
        ...

    @classmethod
    def from_table(cls, table: Table) -> Any:
        """Rebuild a component from a `to_table` table.

        Raises
        ------
        PersistenceError, KeyError, ValueError, TypeError, IndexError
            The table is malformed; `component_from_table` turns all of these into a
            `PersistenceError` naming the file and HDU.
        """
        ...


_REGISTRY: dict[str, type] = {}


def persistable(name: str, version: int):
    """Class decorator registering a component under a persistence ``name`` and schema ``version``."""

    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"persistence name {name!r} is already taken by {_REGISTRY[name]!r}")
        cls.persistence_name = name
        cls.persistence_version = int(version)
        _REGISTRY[name] = cls
        return cls

    return decorate


#: Where each built-in kind is defined, so a file can be read in a process that has not imported
#: the module yet (a fresh ``read_exposure`` of an exposure with a BACKGROUND HDU, say).
_PROVIDERS = {
    "ApCorrMap": "visitcal.core.apcorr",
    "PhotoCalib": "visitcal.core.photocalib",
    "BackgroundList": "visitcal.detection.background",
    "ChebyshevBoundedField": "visitcal.core.chebyshev",
    "SummaryMapping": "visitcal.io.fits",
    "GaussianPsf": "visitcal.psf",
    "FixedImagePsf": "visitcal.psf",
    "PixelGridPsf": "visitcal.psf.pixel_grid",
    "PcaPsf": "visitcal.psf.pca",
}


def get_persistable(name: str) -> type:
    """The class registered under ``name``; `PersistenceError` if there is none."""
    if name not in _REGISTRY and name in _PROVIDERS:
        importlib.import_module(_PROVIDERS[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise PersistenceError(f"unknown component kind {name!r} (known: {known})") from None


def component_to_table(obj: Persistable) -> Table:
    """``obj.to_table()`` with ``VCKIND`` / ``VCVERS`` set in its metadata."""
    if not isinstance(obj, Persistable):
        raise TypeError(f"{type(obj).__name__} is not a persistable component")
    table = obj.to_table()
    table.meta["VCKIND"] = obj.persistence_name
    table.meta["VCVERS"] = obj.persistence_version
    return table


def component_from_table(table: Table, *, where: str = "table") -> Any:
    """Rebuild the component a `component_to_table` table describes.

    ``where`` names the source (file and HDU) in error messages.
    """
    kind = table.meta.get("VCKIND")
    if kind is None:
        raise PersistenceError(f"{where}: no VCKIND card, so the component kind is unknown")
    cls = get_persistable(str(kind))
    version = int(table.meta.get("VCVERS", -1))
    if version < 1 or version > cls.persistence_version:
        raise PersistenceError(
            f"{where}: {kind} schema version {version} is not supported "
            f"(this visitcal reads versions 1..{cls.persistence_version})"
        )
    try:
        return cls.from_table(table)
    except PersistenceError as err:
        raise PersistenceError(f"{where}: malformed {kind} table: {err}") from err
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise PersistenceError(f"{where}: malformed {kind} table: {err}") from err
