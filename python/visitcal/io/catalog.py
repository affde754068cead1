"""Catalogs (astropy Tables) to and from Parquet and FITS binary tables.

Parquet is visitcal's default catalog format. It is written with pyarrow directly (astropy's own Parquet
reader needs pandas, which visitcal does not depend on). Astropy's metadata travel with the file:
the table's ``meta`` (nested dicts included, e.g. the ``slots`` aliases) and each column's unit,
description, format and dtype are stored as astropy's YAML table header under the schema metadata
key ``table_meta_yaml``, the key astropy itself uses, so a round trip gives back the same dtypes
(int64 ids, uint8, float32, bool, strings), multidimensional columns, units and NaNs.

FITS tables use astropy's writer; nested ``meta`` values that a FITS header cannot hold are kept as
the same YAML in ``COMMENT`` cards by astropy's ``serialize`` machinery where it can, and refused
with a clear error otherwise.

Writes are atomic: a temporary file in the destination folder, then a rename.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.table import Table
from astropy.table import meta as table_meta

from . import VisitcalIOError
from ..core.atomic import atomic_write

__all__ = ["CatalogIOError", "write_catalog", "read_catalog"]

_YAML_KEY = b"table_meta_yaml"
_SHAPES_KEY = b"visitcal_shapes"


class CatalogIOError(VisitcalIOError, ValueError):
    """A catalog cannot be read or written; the message names the file and column."""


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in ("parquet", "fits"):
            raise ValueError(f"format must be 'parquet' or 'fits', got {format!r}")
        return format
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".fits", ".fit", ".fits.gz", ".fts")):
        return "fits"
    raise ValueError(f"{path}: cannot tell the catalog format from the name; pass format='parquet' or 'fits'")


def write_catalog(table: Table, path, *, format: str | None = None, overwrite: bool = False) -> Path:
    """Write ``table`` to ``path`` (Parquet by default for ``.parquet``; FITS for ``.fits``).

    Returns the path written. Nothing is left behind if writing fails.
    """
    path = Path(path)
    fmt = _format_of(path, format)
    if not isinstance(table, Table):
        raise TypeError(f"write_catalog takes an astropy Table, got {type(table).__name__}")
    if fmt == "parquet":
        arrow = _to_arrow(table, path)
        with atomic_write(path, "wb", overwrite=overwrite) as fh:
            pq.write_table(arrow, fh)
    else:
        with atomic_write(path, "wb", overwrite=overwrite) as fh:
            with warnings.catch_warnings():
                # astropy warns, then drops, meta values a header cannot hold; make that an error.
                warnings.simplefilter("error")
                try:
                    table.write(fh, format="fits")
                except Warning as warning:
                    raise CatalogIOError(f"{path}: cannot store in FITS: {warning}", path=path) from None
    return path


def _to_arrow(table: Table, path: Path) -> pa.Table:
    arrays, shapes = [], {}
    for name in table.colnames:
        col = table[name]
        data = np.asarray(col)
        mask = np.asarray(col.mask) if getattr(col, "mask", None) is not None and np.any(col.mask) else None
        try:
            if data.ndim == 1:
                if data.dtype.kind == "S":
                    data = np.char.decode(data, "ascii")
                arr = pa.array(data, mask=mask)
            else:
                shapes[name] = list(data.shape[1:])
                flat = pa.array(data.reshape(-1))
                arr = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(data.shape[1:])))
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
            raise CatalogIOError(f"{path}: column {name!r} ({data.dtype}) cannot be stored in Parquet: {err}",
                                 path=path) from err
        arrays.append(arr)
    arrow = pa.Table.from_arrays(arrays, names=list(table.colnames))
    yaml_lines = table_meta.get_yaml_from_table(table)
    metadata = {_YAML_KEY: "\n".join(yaml_lines).encode(), _SHAPES_KEY: json.dumps(shapes).encode()}
    return arrow.replace_schema_metadata(metadata)


def read_catalog(path, *, format: str | None = None, columns=None) -> Table:
    """Read a catalog written by `write_catalog` (or any Parquet / FITS table).

    Parameters
    ----------
    columns : list of str, optional
        Read only these columns (Parquet reads just their bytes). Unknown names are an error.

    Raises
    ------
    CatalogIOError
        Missing, truncated or malformed file, or an unknown column; the message names the file.
    """
    path = Path(path)
    fmt = _format_of(path, format)
    if not path.exists():
        raise CatalogIOError(f"{path}: no such file", path=path)
    if fmt == "fits":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                table = Table.read(path, format="fits", mask_invalid=False)
        except Exception as err:
            raise CatalogIOError(f"{path}: cannot read the FITS table: {err}", path=path) from err
        # FITS stores big-endian numbers and byte strings: hand back native numbers and str.
        for name in table.colnames:
            col = table[name]
            if col.dtype.byteorder not in ("=", "|") and col.dtype.kind in "iufb":
                table.replace_column(name, col.astype(col.dtype.newbyteorder("=")))
        table.convert_bytestring_to_unicode()
        if columns is not None:
            _check_columns(path, table.colnames, columns)
            table = table[list(columns)]
        return table
    try:
        schema = pq.read_schema(path)
        if columns is not None:
            _check_columns(path, schema.names, columns)
        arrow = pq.read_table(path, columns=None if columns is None else list(columns))
    except CatalogIOError:
        raise
    except (pa.ArrowException, OSError) as err:
        raise CatalogIOError(f"{path}: cannot read the Parquet file: {err}", path=path) from err
    return _from_arrow(arrow, schema.metadata or {}, path)


def _check_columns(path, available, columns):
    missing = [c for c in columns if c not in available]
    if missing:
        raise CatalogIOError(f"{path}: no column(s) {', '.join(map(repr, missing))}", path=path)


def _from_arrow(arrow: pa.Table, metadata: dict, path: Path) -> Table:
    header = {}
    if _YAML_KEY in metadata:
        try:
            header = table_meta.get_header_from_yaml(metadata[_YAML_KEY].decode().splitlines())
        except Exception as err:
            raise CatalogIOError(f"{path}: malformed table_meta_yaml metadata: {err}", path=path) from err
    shapes = json.loads(metadata.get(_SHAPES_KEY, b"{}").decode())
    info = {d["name"]: d for d in header.get("datatype", [])}
    table = Table(meta=header.get("meta", {}))
    for name in arrow.column_names:
        chunked = arrow.column(name)
        column = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
        if name in shapes:
            data = column.flatten().to_numpy(zero_copy_only=False).reshape((len(column), *shapes[name]))
        else:
            data = column.to_numpy(zero_copy_only=False)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                data = np.array(data.tolist(), dtype=str) if len(data) else np.zeros(0, dtype="U1")
        if column.null_count and name not in shapes:
            table[name] = np.ma.MaskedArray(data, mask=column.is_null().to_numpy(zero_copy_only=False))
        else:
            table[name] = data
        attrs = info.get(name, {})
        for attr in ("unit", "description", "format"):
            if attrs.get(attr) is not None:
                setattr(table[name].info, attr, attrs[attr])
        if attrs.get("meta"):
            table[name].info.meta = attrs["meta"]
    return table
