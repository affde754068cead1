"""The "science" source selector (LSST meas_algorithms ``ScienceSourceSelectorTask``).

Every enabled sub-criterion is ANDed, per row of an `astropy.table.Table` catalog:

* ``flags``: every ``good`` column True and every ``bad`` column False (a missing column is an error
  naming it);
* ``unresolved``: ``name`` strictly between ``minimum`` and ``maximum`` (either may be None);
* ``signal_to_noise``: ``flux_field / err_field`` strictly between the limits. As in LSST, the row's
  ``<flux_field>_flag`` also vetoes it *when that column exists*; for ``base_PsfFlux_instFlux`` it
  normally does not (the flag is ``base_PsfFlux_flag``), so the implicit veto is a silent no-op there;
  list real flags in ``flags.bad``;
* ``isolated``: ``parent == 0`` and ``deblend_nChild == 0``;
* ``require_primary``: ``detect_isPrimary``;
* ``sky_sources``: rows with ``sky_source`` True are OR-ed in at the end.

Limits are strict (``> min``, ``< max``) and NaN fails every limit. Column names may be slot names
(``slot_PsfFlux_instFlux``), resolved through ``table.meta["slots"]`` (`visitcal.core.table.slot_column`).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from ..core.table import slot_column

__all__ = [
    "RequireFlags",
    "RequireIsolated",
    "RequireUnresolved",
    "ScienceSourceSelectorConfig",
    "ScienceSourceSelectorTask",
    "SignalToNoiseLimit",
    "resolve_column",
]


def resolve_column(catalog: Table, name: str) -> str:
    """The real column behind ``name``: itself, or the target of a ``slot_<Slot>_<suffix>`` alias.

    Raises
    ------
    KeyError
        Naming the column (and the slot aliases) when it does not exist.
    """
    if name in catalog.colnames:
        return name
    if name.startswith("slot_"):
        slot, _, suffix = name[len("slot_"):].partition("_")
        if suffix:
            return slot_column(catalog, slot, suffix)
    raise KeyError(f"catalog has no column {name!r}")


def _column(catalog: Table, name: str, dtype=np.float64) -> np.ndarray:
    return np.asarray(catalog[resolve_column(catalog, name)], dtype=dtype)


def _limit(values: np.ndarray, minimum: float | None, maximum: float | None) -> np.ndarray:
    keep = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        if minimum is not None:
            keep &= values > minimum
        if maximum is not None:
            keep &= values < maximum
    return keep


class RequireFlags(BaseModel):
    """Columns that must be True (``good``) or False (``bad``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    good: tuple[str, ...] = Field((), description="Boolean columns that must all be True.")
    bad: tuple[str, ...] = Field((), description="Boolean columns that must all be False.")

    def apply(self, catalog: Table) -> np.ndarray:
        """Rows whose ``good`` columns are all True and whose ``bad`` columns are all False.

        Parameters
        ----------
        catalog : `astropy.table.Table`
            The sources; column names may be slot aliases (``slot_Centroid_flag``).

        Returns
        -------
        keep : `numpy.ndarray` of bool
            One entry per row; all True when both lists are empty.

        Raises
        ------
        KeyError
            When a listed column (or the target of a slot alias) does not exist.
        """
        keep = np.ones(len(catalog), dtype=bool)
        for name in self.good:
            keep &= _column(catalog, name, bool)
        for name in self.bad:
            keep &= ~_column(catalog, name, bool)
        return keep


class RequireUnresolved(BaseModel):
    """A size/extendedness value strictly between the limits (LSST RequireUnresolved)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("base_ClassificationSizeExtendedness_value", description="Column of the value.")
    minimum: float | None = Field(None, description="Exclusive lower limit (None: none).")
    maximum: float | None = Field(0.1, description="Exclusive upper limit (None: none).")

    def apply(self, catalog: Table) -> np.ndarray:
        """Rows whose ``name`` column is finite and strictly between ``minimum`` and ``maximum``.

        Parameters
        ----------
        catalog : `astropy.table.Table`
            The sources; ``name`` may be a slot alias.

        Returns
        -------
        keep : `numpy.ndarray` of bool
            One entry per row; NaN values fail.

        Raises
        ------
        KeyError
            When the column does not exist.
        """
        return _limit(_column(catalog, self.name), self.minimum, self.maximum)


class SignalToNoiseLimit(BaseModel):
    """``flux_field / err_field`` strictly between the limits (LSST SignalToNoiseLimit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flux_field: str = Field("base_PsfFlux_instFlux", description="Flux column.")
    err_field: str = Field("base_PsfFlux_instFluxErr", description="Flux error column.")
    minimum: float | None = Field(None, description="Exclusive lower S/N limit (None: none).")
    maximum: float | None = Field(None, description="Exclusive upper S/N limit (None: none).")

    def apply(self, catalog: Table) -> np.ndarray:
        """Rows whose S/N ``flux_field / err_field`` is finite and strictly between the limits.

        As in LSST, a ``<flux_field>_flag`` column also vetoes a row when the catalog has one; for the usual
        ``*_instFlux`` fields it does not exist and the check does nothing.

        Parameters
        ----------
        catalog : `astropy.table.Table`
            The sources; either field may be a slot alias (``slot_PsfFlux_instFlux``).

        Returns
        -------
        keep : `numpy.ndarray` of bool
            One entry per row; a NaN or infinite S/N (as from a zero error) fails.

        Raises
        ------
        KeyError
            When either column does not exist.
        """
        flux = _column(catalog, self.flux_field)
        err = _column(catalog, self.err_field)
        with np.errstate(invalid="ignore", divide="ignore"):
            keep = _limit(flux / err, self.minimum, self.maximum)
        flag = f"{self.flux_field}_flag"  # LSST's implicit veto; the column usually does not exist
        if flag in catalog.colnames:
            keep &= ~np.asarray(catalog[flag], dtype=bool)
        return keep


class RequireIsolated(BaseModel):
    """Top-level sources that were not deblended into children."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parent_name: str = Field("parent", description="Parent id column.")
    n_child_name: str = Field("deblend_nChild", description="Number-of-children column.")
    allow_deblended_children: bool = Field(
        False, description="Also keep deblended children (``parent_name != 0``); parents are still "
                           "rejected. Not LSST, which keeps unblended sources only.")

    def apply(self, catalog: Table) -> np.ndarray:
        """Rows with ``parent_name == 0`` (not a deblended child) and ``n_child_name == 0`` (not a parent);
        with ``allow_deblended_children``, the children pass too (``n_child_name == 0`` only).

        Parameters
        ----------
        catalog : `astropy.table.Table`
            The sources, with the two columns (real names, not slot aliases).

        Returns
        -------
        keep : `numpy.ndarray` of bool
            One entry per row.

        Raises
        ------
        KeyError
            When either column does not exist.
        """
        not_parent = np.asarray(catalog[self.n_child_name]) == 0
        if self.allow_deblended_children:
            return not_parent
        return (np.asarray(catalog[self.parent_name]) == 0) & not_parent


class ScienceSourceSelectorConfig(BaseModel):
    """Configuration of `ScienceSourceSelectorTask` (LSST ScienceSourceSelectorConfig in snake_case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_flags: bool = Field(False, description="Apply `flags`.")
    do_unresolved: bool = Field(False, description="Apply `unresolved`.")
    do_signal_to_noise: bool = Field(False, description="Apply `signal_to_noise`.")
    do_isolated: bool = Field(False, description="Apply `isolated`.")
    do_require_primary: bool = Field(False, description="Require detect_isPrimary.")
    do_sky_sources: bool = Field(False, description="Also select sky sources (OR-ed in).")
    flags: RequireFlags = Field(default_factory=RequireFlags, description="Flag requirements.")
    unresolved: RequireUnresolved = Field(default_factory=RequireUnresolved, description="Unresolved cut.")
    signal_to_noise: SignalToNoiseLimit = Field(default_factory=SignalToNoiseLimit, description="S/N cut.")
    isolated: RequireIsolated = Field(default_factory=RequireIsolated, description="Isolation columns.")


class ScienceSourceSelectorTask:
    """Select sources by the enabled criteria of `ScienceSourceSelectorConfig` (see the module docstring)."""

    ConfigClass = ScienceSourceSelectorConfig
    _DefaultName = "science"

    def __init__(self, config: ScienceSourceSelectorConfig | None = None):
        self.config = config if config is not None else ScienceSourceSelectorConfig()

    def run(self, catalog: Table) -> np.ndarray:
        """Boolean selection, one entry per row of ``catalog``."""
        c = self.config
        keep = np.ones(len(catalog), dtype=bool)
        if c.do_flags:
            keep &= c.flags.apply(catalog)
        if c.do_unresolved:
            keep &= c.unresolved.apply(catalog)
        if c.do_signal_to_noise:
            keep &= c.signal_to_noise.apply(catalog)
        if c.do_isolated:
            keep &= c.isolated.apply(catalog)
        if c.do_require_primary:
            keep &= np.asarray(catalog["detect_isPrimary"], dtype=bool)
        if c.do_sky_sources:
            keep |= np.asarray(catalog["sky_source"], dtype=bool)
        return keep

    def __repr__(self) -> str:
        return f"ScienceSourceSelectorTask({self.config!r})"
