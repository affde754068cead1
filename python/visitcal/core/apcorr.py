"""Aperture-correction maps, as afw's ``lsst.afw.image.ApCorrMap``.

An ordered map from a name (at most 64 characters) to a bounded field. By convention (LSST's
``MeasureApCorrTask`` and ``ApplyApCorrTask``) the key ``"<alg>_instFlux"`` holds the multiplicative
correction that brings ``<alg>`` fluxes onto the calibration aperture, and ``"<alg>_instFluxErr"`` a
constant field holding its scatter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

from astropy.table import Table

from .chebyshev import ChebyshevBoundedField, fields_from_table, fields_to_table
from .persistence import persistable

__all__ = ["ApCorrMap"]

MAX_NAME_LENGTH = 64


@persistable("ApCorrMap", 1)
class ApCorrMap(MutableMapping):
    """Ordered ``name -> ChebyshevBoundedField`` map of aperture corrections.

    Parameters
    ----------
    fields : mapping or iterable of (name, field), optional
        Initial entries, kept in the order given.

    Examples
    --------
    >>> ap_corr["base_PsfFlux_instFlux"].evaluate(x, y)   # doctest: +SKIP
    """

    def __init__(self, fields: Mapping[str, ChebyshevBoundedField] | None = None):
        self._fields: dict[str, ChebyshevBoundedField] = {}
        if fields is not None:
            items = fields.items() if isinstance(fields, Mapping) else fields
            for name, field in items:
                self[name] = field

    def __getitem__(self, name: str) -> ChebyshevBoundedField:
        try:
            return self._fields[name]
        except KeyError:
            known = ", ".join(self._fields) or "none"
            raise KeyError(f"no aperture correction named {name!r} (entries: {known})") from None

    def __setitem__(self, name: str, field: ChebyshevBoundedField) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"ApCorrMap keys must be non-empty strings, got {name!r}")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"ApCorrMap key {name!r} is longer than {MAX_NAME_LENGTH} characters")
        if not isinstance(field, ChebyshevBoundedField):
            raise TypeError(f"ApCorrMap[{name!r}] must be a ChebyshevBoundedField, got {type(field).__name__}")
        self._fields[name] = field

    def __delitem__(self, name: str) -> None:
        del self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    @property
    def algorithms(self) -> list[str]:
        """Algorithm names ``<alg>`` that have an ``<alg>_instFlux`` entry, in map order."""
        suffix = "_instFlux"
        return [name[: -len(suffix)] for name in self._fields if name.endswith(suffix)]

    def to_table(self) -> Table:
        """The map as a table with one row per entry, in map order.

        Columns: ``name``, ``bbox_min_x``, ``bbox_min_y``, ``bbox_max_x``, ``bbox_max_y`` (inclusive
        pixel box of the field), ``order_x``, ``order_y``, ``n_coefficients`` and ``coefficients``
        (float64, flattened by y order then x order, zero-padded to the longest row). The round trip
        through `from_table` is lossless: names, order, boxes and coefficients are restored exactly.
        """
        return fields_to_table(self._fields)

    @classmethod
    def from_table(cls, table: Table) -> "ApCorrMap":
        """Rebuild a map from a `to_table` table (entries in row order).

        Parameters
        ----------
        table : `astropy.table.Table`
            One row per field, with the columns written by `to_table`.

        Returns
        -------
        ap_corr_map : `ApCorrMap`

        Raises
        ------
        PersistenceError
            A column is missing, ``n_coefficients`` disagrees with the orders, or a coefficient is not
            finite (the message names the row).
        """
        return cls(fields_from_table(table))

    def __eq__(self, other):
        if not isinstance(other, ApCorrMap):
            return NotImplemented
        return list(self._fields) == list(other._fields) and all(
            self._fields[k] == other._fields[k] for k in self._fields
        )

    def __reduce__(self):
        return (ApCorrMap, (list(self._fields.items()),))

    def __repr__(self) -> str:
        return f"ApCorrMap({list(self._fields)})"
