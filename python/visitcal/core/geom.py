"""Integer boxes and the pixel convention.

Pixel centres sit at integer coordinates, as in LSST's afw: the integer box ``[min_x, max_x]``
covers the continuous interval ``[min_x - 0.5, max_x + 0.5]`` (afw's ``Box2D(Box2I)``), and the pixel
holding a point ``x`` is ``floor(x + 0.5)`` (afw's ``positionToIndex``). Boxes are inclusive at both
ends, as afw's ``Box2I``. Arrays are indexed
``(y, x)``; a sub-image's ``xy0`` is the parent-frame position of its pixel ``[0, 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _core

__all__ = ["Box2I", "position_to_index"]


def position_to_index(x):
    """The integer pixel whose centre is nearest ``x`` (``floor(x + 0.5)``), elementwise."""
    return np.floor(np.asarray(x, dtype=float) + 0.5).astype(np.int64)


@dataclass(frozen=True)
class Box2I:
    """An inclusive integer pixel box in a parent frame.

    Parameters
    ----------
    min_x, min_y, max_x, max_y : int
        Inclusive pixel bounds. A box with ``max < min`` on either axis is empty.
    """

    min_x: int
    min_y: int
    max_x: int
    max_y: int

    def __post_init__(self):
        for name in ("min_x", "min_y", "max_x", "max_y"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"Box2I.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    @classmethod
    def from_shape(cls, shape, xy0=(0, 0)) -> "Box2I":
        """The box of an array of ``shape = (ny, nx)`` whose pixel ``[0, 0]`` sits at ``xy0 = (x0, y0)``."""
        ny, nx = (int(s) for s in shape)
        x0, y0 = (int(v) for v in xy0)
        return cls(x0, y0, x0 + nx - 1, y0 + ny - 1)

    @property
    def width(self) -> int:
        """Width in pixels (``max_x - min_x + 1``; 0 when the box is empty along x)."""
        return max(self.max_x - self.min_x + 1, 0)

    @property
    def height(self) -> int:
        """Height in pixels (``max_y - min_y + 1``; 0 when the box is empty along y)."""
        return max(self.max_y - self.min_y + 1, 0)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``: the shape of an array covering this box."""
        return (self.height, self.width)

    @property
    def xy0(self) -> tuple[int, int]:
        """``(min_x, min_y)``: parent-frame position of element ``[0, 0]`` of an array covering the box."""
        return (self.min_x, self.min_y)

    @property
    def empty(self) -> bool:
        """Whether the box holds no pixel (``max < min`` on either axis)."""
        return self.width == 0 or self.height == 0

    @property
    def center(self) -> tuple[float, float]:
        """``(x, y)`` of the box centre in pixel coordinates."""
        return (0.5 * (self.min_x + self.max_x), 0.5 * (self.min_y + self.max_y))

    def contains(self, x, y):
        """Whether the pixel nearest each ``(x, y)`` lies inside the box (elementwise)."""
        ix, iy = position_to_index(x), position_to_index(y)
        return (ix >= self.min_x) & (ix <= self.max_x) & (iy >= self.min_y) & (iy <= self.max_y)

    def contains_box(self, other: "Box2I") -> bool:
        """Whether every pixel of ``other`` lies inside this box.

        Only the bounds are compared: an empty ``other`` counts as contained only if its bounds lie
        within this box's.
        """
        return (
            other.min_x >= self.min_x
            and other.max_x <= self.max_x
            and other.min_y >= self.min_y
            and other.max_y <= self.max_y
        )

    def intersection(self, other: "Box2I") -> "Box2I":
        """The box of the pixels common to both boxes; an empty box (check `empty`) if they do not overlap."""
        return Box2I(
            max(self.min_x, other.min_x),
            max(self.min_y, other.min_y),
            min(self.max_x, other.max_x),
            min(self.max_y, other.max_y),
        )

    def slices(self, xy0=(0, 0)) -> tuple[slice, slice]:
        """``(y, x)`` slices selecting this box from an array whose pixel ``[0, 0]`` is at ``xy0``."""
        x0, y0 = xy0
        return (
            slice(self.min_y - y0, self.max_y - y0 + 1),
            slice(self.min_x - x0, self.max_x - x0 + 1),
        )

    def pixel_x(self) -> np.ndarray:
        """Pixel-centre x coordinates of the box's columns."""
        return np.arange(self.min_x, self.max_x + 1, dtype=np.float64)

    def pixel_y(self) -> np.ndarray:
        """Pixel-centre y coordinates of the box's rows."""
        return np.arange(self.min_y, self.max_y + 1, dtype=np.float64)

    def _to_core(self) -> "_core.Box2I":
        return _core.Box2I(self.min_x, self.min_y, self.max_x, self.max_y)

    def __repr__(self) -> str:
        return f"Box2I(min=({self.min_x}, {self.min_y}), max=({self.max_x}, {self.max_y}))"
