"""Plain-text descriptions of the files visitcal writes, for ``visitcal info``.

`file_kind` tells a file's format from its first bytes (not its name); `describe_catalog` summarises a
Parquet or FITS catalog (rows, columns, the key columns, the visits and detectors it covers);
`describe_fits_tables` a FITS file of binary tables, HDU by HDU: a per-visit model file (``refit_psf_models``,
``visit_summary``: an ``INDEX`` table, one row per detector, and one table per PSF, aperture-correction map
or PhotoCalib), a footprint file (``*_footprints``) or a background; `describe_provenance` a step's
provenance record. Each returns lines without a trailing newline; the first names the file and its kind.
Exposures are described by the CLI from the `Exposure` itself.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

__all__ = ["KEY_COLUMNS", "describe_catalog", "describe_fits_tables", "describe_provenance", "file_kind"]

#: Catalog columns shown first when present: identifiers, the data id and positions (LSST names, then ours).
KEY_COLUMNS = ("id", "sourceId", "isolated_star_id", "parent", "visit", "detector", "tract", "band",
               "coord_ra", "coord_dec", "ra", "dec", "x", "y", "slot_Centroid_x", "slot_Centroid_y")

#: The component columns of an ``INDEX`` table: column -> what the HDU it points at holds.
_INDEX_POINTERS = {"psf_hdu": "PSF", "ap_corr_hdu": "aperture-correction map", "ap_corr_map_hdu":
                   "aperture-correction map", "photo_calib_hdu": "PhotoCalib"}


def file_kind(path) -> str | None:
    """``"fits"``, ``"parquet"`` or ``"json"`` from the file's first bytes; None for anything else.

    A file named ``*.json`` whose text starts like JSON is ``"json"`` even when it does not parse, so that its
    reader says what is wrong with it (`visitcal.io.read_json`)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip().startswith((b"{", b"[")):
        try:
            json.loads(Path(path).read_text())
        except (ValueError, UnicodeDecodeError):
            return "json" if Path(path).suffix == ".json" else None
        return "json"
    return None


def _ids(values, limit: int = 12) -> str:
    """``[1000, 1001]`` for a few values, ``[0, 1, ... 188] (189)`` for many."""
    unique = sorted({v.item() if hasattr(v, "item") else v for v in np.asarray(values).ravel()})
    if len(unique) <= limit:
        return "[" + ", ".join(str(v) for v in unique) + "]"
    return f"[{', '.join(str(v) for v in unique[:3])}, ... {unique[-1]}] ({len(unique)})"


def _column_line(table, name: str) -> str:
    col = table[name]
    shape = f"{col.shape[1:]}" if col.ndim > 1 else ""
    unit = f" [{col.unit}]" if col.unit is not None else ""
    return f"{name}: {col.dtype}{shape}{unit}"


def describe_catalog(path, table=None, *, kind: str = "Parquet") -> list[str]:
    """Rows, columns, the key columns (`KEY_COLUMNS`, slot aliases), the visits/detectors/tracts covered,
    then every column with its dtype and unit. ``table`` is read with `visitcal.io.read_catalog` when None."""
    if table is None:
        from .catalog import read_catalog

        table = read_catalog(path)
    lines = [f"{path}: catalog ({kind}), {len(table)} rows, {len(table.colnames)} columns"]
    keys = [c for c in KEY_COLUMNS if c in table.colnames]
    if keys:
        lines.append("  key columns: " + "; ".join(_column_line(table, c) for c in keys))
    covered = [f"{name}s {_ids(table[name])}" for name in ("visit", "detector", "tract", "band")
               if name in table.colnames and table[name].ndim == 1 and len(table)]
    if covered:
        lines.append("  " + "; ".join(covered))
    slots = table.meta.get("slots")
    if isinstance(slots, dict) and slots:
        lines.append("  slots: " + ", ".join(f"{k} -> {v}" for k, v in slots.items()))
    lines.append("  columns:")
    lines.extend("    " + _column_line(table, c) for c in table.colnames)
    return lines


def _hdu_shape(hdu) -> str:
    if hdu.data is None:
        return "no data"
    if hasattr(hdu, "columns"):
        n = len(hdu.data)
        return f"{n} row{'s' if n != 1 else ''}, {len(hdu.columns)} columns"
    return "image " + " x ".join(str(n) for n in hdu.data.shape)


def describe_fits_tables(path, hdul) -> list[str]:
    """A FITS file of binary tables (``hdul``, open), one line per HDU saying what it holds.

    Recognised: a per-visit model file (``INDEX`` with component pointers: ``visit_summary`` when it has
    ``wcs_header``, ``refit_psf_models`` otherwise), a footprint file (``FOOTPRINTS``/``SPANS``/``PEAKS``/
    ``HEAVY``), a background (one ``BackgroundList`` table) and a single-table catalog; anything else is
    listed HDU by HDU.
    """
    names = [hdu.name for hdu in hdul]
    tables = [hdu for hdu in hdul[1:] if hasattr(hdu, "columns")]
    if "INDEX" in names and any(c in hdul["INDEX"].columns.names for c in _INDEX_POINTERS):
        return _describe_indexed(path, hdul)
    if {"FOOTPRINTS", "SPANS", "PEAKS", "HEAVY"} <= set(names):
        return _describe_footprints(path, hdul)
    if len(tables) == 1 and tables[0].header.get("VCKIND") == "BackgroundList":
        return _describe_background(path, hdul, tables[0])
    if len(tables) == 1 and len(hdul) == 2 and "VCKIND" not in tables[0].header:
        from astropy.table import Table

        return describe_catalog(path, Table.read(tables[0]), kind="FITS")
    lines = [f"{path}: FITS file, {len(hdul)} HDUs"]
    for k, hdu in enumerate(hdul):
        kind = f" {hdu.header['VCKIND']}" if "VCKIND" in hdu.header else ""
        lines.append(f"  HDU {k} {hdu.name}:{kind} {_hdu_shape(hdu)}")
    return lines


def _describe_indexed(path, hdul) -> list[str]:
    index = hdul["INDEX"].data
    cols = hdul["INDEX"].columns.names
    product = "visit_summary" if "wcs_header" in cols else "refit_psf_models"
    detectors = [int(d) for d in index["detector"]]
    visits = _ids(index["visit"]) if "visit" in cols and len(index) else "[]"
    statuses = Counter(str(s) for s in index["status"]) if "status" in cols else Counter()
    lines = [f"{path}: {product}, visit {visits.strip('[]')}, {len(index)} detectors {_ids(detectors)}"
             + (f"; status {', '.join(f'{s} {n}' for s, n in sorted(statuses.items()))}" if statuses else "")]
    owner = {}
    for col, what in _INDEX_POINTERS.items():
        if col in cols:
            for det, k in zip(detectors, index[col]):
                if int(k) >= 0:
                    owner[int(k)] = (what, det)
    for k, hdu in enumerate(hdul):
        if k == 0:
            lines.append(f"  HDU 0 {hdu.name}: empty primary")
        elif hdu.name == "INDEX":
            lines.append(f"  HDU {k} INDEX: one row per detector, {_hdu_shape(hdu)}, detectors {_ids(detectors)}")
        elif k in owner:
            what, det = owner[k]
            lines.append(f"  HDU {k} {hdu.name}: {what} of detector {det} ({hdu.header.get('VCKIND', '?')}), "
                         f"{_hdu_shape(hdu)}")
        else:
            lines.append(f"  HDU {k} {hdu.name}: not referenced by INDEX, {_hdu_shape(hdu)}")
    for det, row in zip(detectors, index):
        if "status" in cols and str(row["status"]) != "ok":
            lines.append(f"  detector {det}: {row['status']}: {row['message']}")
    return lines


def _describe_footprints(path, hdul) -> list[str]:
    index = hdul["FOOTPRINTS"].data
    n, heavy = len(index), int(np.count_nonzero(index["heavy"]))
    ids = f", source ids {int(index['id'].min())}..{int(index['id'].max())}" if n else ""
    planes = sorted(k.removeprefix("MP_") for k in hdul["HEAVY"].header if k.startswith("MP_"))
    what = {"FOOTPRINTS": "one row per footprint (id, span/peak/pixel offsets and counts, heavy flag)",
            "SPANS": "spans (y, x0, x1)", "PEAKS": "peaks", "HEAVY": "pixels of the heavy footprints "
            "(image, mask, variance" + (f"; mask planes {', '.join(planes)})" if planes else ")")}
    lines = [f"{path}: footprints, {n} footprints ({heavy} heavy){ids}"]
    for k, hdu in enumerate(hdul):
        lines.append(f"  HDU {k} {hdu.name}: {what.get(hdu.name, 'empty primary' if k == 0 else '?')}"
                     + (f", {_hdu_shape(hdu)}" if k else ""))
    return lines


def _describe_background(path, hdul, hdu) -> list[str]:
    data = hdu.data
    lines = [f"{path}: background (BackgroundList), {len(data)} model(s)"]
    for k, row in enumerate(data):
        lines.append(f"  model {k}: {int(row['nx_bins'])} x {int(row['ny_bins'])} bins over bbox "
                     f"({int(row['bbox_min_x'])}, {int(row['bbox_min_y'])})-"
                     f"({int(row['bbox_max_x'])}, {int(row['bbox_max_y'])})")
    for k, h in enumerate(hdul):
        lines.append(f"  HDU {k} {h.name}: " + ("empty primary" if k == 0 else
                                                f"{h.header.get('VCKIND', '?')}, {_hdu_shape(h)}"))
    return lines


def describe_provenance(path, record: dict) -> list[str]:
    """A step's provenance record (``REPO/provenance/<step>/<unit>.json``): unit, status, error, timings."""
    if record.get("tract") is not None:
        unit = f"tract {record['tract']}"
    else:
        unit = f"visit {record.get('visit')} detector {record.get('detector')}"
    status = record.get("status")
    lines = [f"{path}: provenance of step {record.get('step')}, {unit}: {status}"]
    if status == "degraded":
        lines.append(f"  why: {record.get('message')}")
    elif status != "ok":
        lines.append(f"  {record.get('error_type')}: {record.get('message')}")
    rss = record.get("peak_rss_mb")
    versions = ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items())
    lines.append(f"  config hash {record.get('config_hash')}"
                 + (f", peak RSS {rss:.0f} MB" if isinstance(rss, (int, float)) else "")
                 + (f", versions: {versions}" if versions else ""))
    timings = record.get("timings") or {}
    if timings:
        lines.append("  timings (s): " + ", ".join(f"{k} {v:.3g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                                   for k, v in timings.items()))
    summary = record.get("summary") or {}
    if summary:
        lines.append("  summary: " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in summary.items()))
    return lines
