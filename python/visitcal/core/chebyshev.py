"""2-D Chebyshev fields over a pixel box (afw's ``ChebyshevBoundedField``).

The field is ``f(x, y) = sum_ij a[j, i] T_i(x') T_j(y')`` with ``x' = (2x - (xmin + xmax)) / W``,
where ``xmin, xmax`` are the box's continuous edges (pixel centre +/- 0.5) and ``W`` its width in
pixels; likewise in y. This is afw's mapping (``lsst.afw.math.ChebyshevBoundedField`` maps the
``Box2D`` of its integer box onto ``[-1, 1]``). Coefficients are stored as an array of shape
``(order_y + 1, order_x + 1)`` indexed ``[j, i]`` (y order first, as afw persists them). A
*triangular* field keeps only the terms with ``i + j <= max(order_x, order_y)``: 6 terms at order 2
(afw's default, ``ChebyshevBoundedFieldControl.triangular = True``).

Evaluation, fitting and the grid are C++ (`visitcal._core`); this module owns the API, the
configuration and persistence. The grid evaluation is separable, so a 4072 x 4000 image of an
order-6 field costs about as much as writing the array (bench/README.md).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from .. import _core
from .geom import Box2I
from .persistence import PersistenceError, persistable

__all__ = ["ChebyshevBoundedFieldControl", "ChebyshevBoundedField"]


class ChebyshevBoundedFieldControl(BaseModel):
    """Shape of a Chebyshev field to fit; mirrors the C++ ``ChebyshevBoundedFieldControl``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_x: int = Field(2, ge=0, le=64, description="Maximum Chebyshev order in x.")
    order_y: int = Field(2, ge=0, le=64, description="Maximum Chebyshev order in y.")
    triangular: bool = Field(
        True, description="Keep only terms with i + j <= max(order_x, order_y) (afw's default)."
    )

    def to_core(self) -> "_core.ChebyshevBoundedFieldControl":
        """The same settings as the compiled ``visitcal._core.ChebyshevBoundedFieldControl`` struct.

        Used to pass the control to the C++ fit; a new struct is returned on each call.
        """
        ctrl = _core.ChebyshevBoundedFieldControl()
        ctrl.order_x = self.order_x
        ctrl.order_y = self.order_y
        ctrl.triangular = self.triangular
        return ctrl

    @property
    def size(self) -> int:
        """Number of free coefficients (6 for the default order-2 triangular field)."""
        return self.to_core().size()

    def terms(self) -> list[tuple[int, int]]:
        """``(j, i)`` = (y order, x order) of each free term, ordered by j then i."""
        return [tuple(t) for t in self.to_core().terms()]


def _as_box(bbox) -> Box2I:
    if isinstance(bbox, Box2I):
        return bbox
    raise TypeError(f"bbox must be a visitcal.core.geom.Box2I, got {type(bbox).__name__}")


@persistable("ChebyshevBoundedField", 1)
class ChebyshevBoundedField:
    """A 2-D Chebyshev series over an integer pixel box.

    Parameters
    ----------
    bbox : `visitcal.core.geom.Box2I`
        The box the series is defined on (its continuous edges map to -1 and 1). The field may be
        evaluated outside it; the series is then extrapolated.
    coefficients : array_like, shape (order_y + 1, order_x + 1)
        ``a[j, i]`` multiplies ``T_i(x') T_j(y')``. Must be finite.

    Notes
    -----
    Immutable and thread-safe: C++ calls release the GIL. Coordinates are pixel positions in the
    box's (parent) frame, with pixel centres at integers.
    """

    __slots__ = ("_impl", "_bbox")

    def __init__(self, bbox: Box2I, coefficients):
        self._bbox = _as_box(bbox)
        if self._bbox.empty:
            raise ValueError(f"bbox is empty: {self._bbox!r}")
        coeffs = np.array(coefficients, dtype=np.float64, ndmin=2, copy=True)
        if coeffs.ndim != 2 or coeffs.size == 0:
            raise ValueError(
                f"coefficients must be a non-empty 2-D array (order_y+1, order_x+1), got shape {coeffs.shape}"
            )
        if not np.all(np.isfinite(coeffs)):
            bad = np.argwhere(~np.isfinite(coeffs))[0]
            raise ValueError(f"coefficients[{bad[0]}, {bad[1]}] is not finite")
        self._impl = _core.ChebyshevBoundedField(self._bbox._to_core(), coeffs)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def fit(cls, bbox: Box2I, x, y, z, *, weights=None, control: ChebyshevBoundedFieldControl | None = None):
        """Least-squares fit of values ``z`` at pixel positions ``(x, y)``.

        Parameters
        ----------
        bbox : `Box2I`
            Box of the fitted field.
        x, y, z : array_like, shape (n,)
            Positions (pixels, parent frame) and values; all finite.
        weights : array_like, shape (n,), optional
            Inverse standard deviations ``1/sigma`` (afw's convention): the fit minimises
            ``sum (w (z - f))^2``. Zero weights drop a point.
        control : `ChebyshevBoundedFieldControl`, optional
            Orders and truncation; defaults to order 2 triangular.

        Raises
        ------
        ValueError
            Non-finite input (named), mismatched lengths, fewer points than terms, or points that
            cannot determine every term.
        """
        control = control or ChebyshevBoundedFieldControl()
        box = _as_box(bbox)
        arrays = {}
        for name, value in (("x", x), ("y", y), ("z", z)):
            arr = np.ascontiguousarray(value, dtype=np.float64)
            if arr.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
            arrays[name] = arr
        w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
        impl = _core.ChebyshevBoundedField.fit(box._to_core(), arrays["x"], arrays["y"], arrays["z"], w, control.to_core())
        return cls._from_impl(box, impl)

    @classmethod
    def _from_impl(cls, bbox: Box2I, impl) -> "ChebyshevBoundedField":
        self = cls.__new__(cls)
        self._bbox = bbox
        self._impl = impl
        return self

    # --- properties ---------------------------------------------------------------------------
    @property
    def bbox(self) -> Box2I:
        """The integer pixel box (parent frame) whose continuous edges map to ``[-1, 1]``."""
        return self._bbox

    @property
    def coefficients(self) -> np.ndarray:
        """A copy of the ``(order_y + 1, order_x + 1)`` coefficient array."""
        return self._impl.coefficients

    @property
    def order_x(self) -> int:
        """Highest Chebyshev order in x (``coefficients.shape[1] - 1``)."""
        return self.coefficients.shape[1] - 1

    @property
    def order_y(self) -> int:
        """Highest Chebyshev order in y (``coefficients.shape[0] - 1``)."""
        return self.coefficients.shape[0] - 1

    # --- evaluation ---------------------------------------------------------------------------
    def evaluate(self, x, y):
        """Field values at pixel positions ``(x, y)``; scalars give a float, arrays broadcast."""
        if np.ndim(x) == 0 and np.ndim(y) == 0:
            return self._impl.evaluate_point(float(x), float(y))
        xb, yb = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        values = self._impl.evaluate_points(np.ravel(xb), np.ravel(yb))
        return values.reshape(xb.shape)

    __call__ = evaluate

    def evaluate_grid(self, x, y, *, dtype=np.float64, out: np.ndarray | None = None) -> np.ndarray:
        """Values on the separable grid ``out[r, c] = f(x[c], y[r])``.

        Parameters
        ----------
        x, y : array_like, 1-D
            Column and row pixel coordinates.
        dtype : {numpy.float64, numpy.float32}
            Output type when ``out`` is not given; sums are always accumulated in float64.
        out : numpy.ndarray, optional
            Array of shape ``(len(y), len(x))``, float32 or float64, contiguous along x (a view
            into a larger image is fine); filled in place and returned.
        """
        xs = np.ascontiguousarray(x, dtype=np.float64).ravel()
        ys = np.ascontiguousarray(y, dtype=np.float64).ravel()
        if out is None:
            dtype = np.dtype(dtype)
            if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
                raise ValueError(f"dtype must be float32 or float64, got {dtype}")
            out = np.empty((ys.size, xs.size), dtype=dtype)
        elif out.dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"out must be float32 or float64, got {out.dtype}")
        self._impl.evaluate_grid_into(xs, ys, out)
        return out

    def evaluate_image(self, bbox: Box2I | None = None, *, dtype=np.float64, out=None) -> np.ndarray:
        """Values at the pixel centres of ``bbox`` (default: the field's own box), shape ``(height, width)``."""
        box = self._bbox if bbox is None else _as_box(bbox)
        return self.evaluate_grid(box.pixel_x(), box.pixel_y(), dtype=dtype, out=out)

    def mean(self) -> float:
        """Exact mean of the field over its continuous box (an integral, not a pixel average)."""
        return self._impl.mean()

    # --- arithmetic ---------------------------------------------------------------------------
    def __mul__(self, factor):
        if not np.isscalar(factor):
            return NotImplemented
        return ChebyshevBoundedField._from_impl(self._bbox, self._impl.scaled(float(factor)))

    __rmul__ = __mul__

    def __truediv__(self, factor):
        if not np.isscalar(factor):
            return NotImplemented
        return self * (1.0 / float(factor))

    # --- persistence, pickling, comparison ----------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dict: ``{"bbox": [min_x, min_y, max_x, max_y], "coefficients": [[...], ...]}``.

        ``coefficients`` is the ``(order_y + 1, order_x + 1)`` array as nested lists of floats;
        `from_dict` rebuilds an equal field (float64 values survive a JSON round trip exactly).
        """
        return {
            "bbox": [self._bbox.min_x, self._bbox.min_y, self._bbox.max_x, self._bbox.max_y],
            "coefficients": self.coefficients.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ChebyshevBoundedField":
        """Inverse of `to_dict`.

        Raises
        ------
        KeyError
            ``d`` lacks ``"bbox"`` or ``"coefficients"``.
        ValueError
            The box is empty, or the coefficients are not a finite non-empty 2-D array.
        """
        return cls(Box2I(*d["bbox"]), np.asarray(d["coefficients"], dtype=np.float64))

    def to_table(self) -> Table:
        """The field as a one-row table (the row's ``name`` is ``"field"``).

        Columns: ``name``, ``bbox_min_x``, ``bbox_min_y``, ``bbox_max_x``, ``bbox_max_y``,
        ``order_x``, ``order_y``, ``n_coefficients`` and ``coefficients`` (float64, flattened by y order
        then x order, as afw persists its fields). The round trip through `from_table` is lossless.
        """
        return fields_to_table({"field": self})

    @classmethod
    def from_table(cls, table: Table) -> "ChebyshevBoundedField":
        """Rebuild the field of a `to_table` table.

        Raises
        ------
        PersistenceError
            The table does not have exactly one row, a column is missing, ``n_coefficients`` disagrees
            with the orders, or a coefficient is not finite.
        """
        fields = fields_from_table(table)
        if len(fields) != 1:
            raise PersistenceError(f"expected one field, found {len(fields)}")
        return next(iter(fields.values()))

    def __reduce__(self):
        return (ChebyshevBoundedField, (self._bbox, self.coefficients))

    def __copy__(self):
        return self  # immutable

    def __deepcopy__(self, memo):
        return self

    def __eq__(self, other):
        if not isinstance(other, ChebyshevBoundedField):
            return NotImplemented
        return self._bbox == other._bbox and np.array_equal(self.coefficients, other.coefficients)

    def __hash__(self):
        return hash((self._bbox, self.coefficients.tobytes()))

    def __repr__(self) -> str:
        return (
            f"ChebyshevBoundedField(order_x={self.order_x}, order_y={self.order_y}, "
            f"bbox={self._bbox!r}, mean={self.mean():.6g})"
        )


def fields_to_table(fields: dict[str, ChebyshevBoundedField]) -> Table:
    """A table with one row per named field: ``name``, bbox, orders and padded flat coefficients.

    ``coefficients`` holds ``(order_y + 1) * (order_x + 1)`` values per row, ordered by y order then
    x order, padded with zeros to the longest row; ``n_coefficients`` says how many are real. Shared
    by every component that stores Chebyshev fields (ApCorrMap, PhotoCalib).
    """
    names = list(fields)
    flat = [fields[n].coefficients.ravel() for n in names]
    width = max((f.size for f in flat), default=1)
    coeffs = np.zeros((len(names), width), dtype=np.float64)
    for k, f in enumerate(flat):
        coeffs[k, : f.size] = f
    table = Table()
    table["name"] = np.array(names, dtype="U64") if names else np.zeros(0, dtype="U64")
    for attr in ("min_x", "min_y", "max_x", "max_y"):
        table[f"bbox_{attr}"] = np.array([getattr(fields[n].bbox, attr) for n in names], dtype=np.int32)
    table["order_x"] = np.array([fields[n].order_x for n in names], dtype=np.int16)
    table["order_y"] = np.array([fields[n].order_y for n in names], dtype=np.int16)
    table["n_coefficients"] = np.array([f.size for f in flat], dtype=np.int32)
    table["coefficients"] = coeffs
    return table


def fields_from_table(table: Table) -> dict[str, ChebyshevBoundedField]:
    """Inverse of `fields_to_table`; raises `PersistenceError` naming the column or row at fault."""
    required = ["name", "bbox_min_x", "bbox_min_y", "bbox_max_x", "bbox_max_y", "order_x", "order_y",
                "n_coefficients", "coefficients"]
    missing = [c for c in required if c not in table.colnames]
    if missing:
        raise PersistenceError(f"missing column(s) {', '.join(missing)}")
    out: dict[str, ChebyshevBoundedField] = {}
    coeffs = np.asarray(table["coefficients"], dtype=np.float64)
    if coeffs.ndim == 1:
        coeffs = coeffs[:, None]
    for k, row in enumerate(table):
        name = str(row["name"]).strip()
        ox, oy, n = int(row["order_x"]), int(row["order_y"]), int(row["n_coefficients"])
        if n != (ox + 1) * (oy + 1) or n > coeffs.shape[1]:
            raise PersistenceError(f"row {k} ({name!r}): n_coefficients={n} does not match orders ({ox}, {oy})")
        values = coeffs[k, :n].reshape(oy + 1, ox + 1)
        if not np.all(np.isfinite(values)):
            raise PersistenceError(f"row {k} ({name!r}): non-finite coefficient")
        box = Box2I(int(row["bbox_min_x"]), int(row["bbox_min_y"]), int(row["bbox_max_x"]), int(row["bbox_max_y"]))
        out[name] = ChebyshevBoundedField(box, values)
    return out
