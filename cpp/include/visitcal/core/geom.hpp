// Integer boxes in afw's pixel convention (lsst.geom Box2I / Box2D): pixel centres at integers, an integer box
// [min, max] (inclusive) covers the continuous box [min - 0.5, max + 0.5].
#pragma once

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "visitcal/core/checked.hpp"

namespace visitcal {

/// Index of the pixel holding continuous coordinate c (afw positionToIndex): floor(c + 0.5).
// The pixel whose centre is nearest c (centres at integers). Saturated to the int range (NaN gives
// INT_MIN): a plain cast of a position beyond 2^31 or of NaN is undefined behaviour.
inline int position_to_index(double c) { return saturate_to_int(std::floor(c + 0.5), std::numeric_limits<int>::min()); }

struct Box2I {
    int min_x = 0;
    int min_y = 0;
    int max_x = -1;  // inclusive; an empty box has max < min
    int max_y = -1;

    Box2I() = default;
    Box2I(int min_x_, int min_y_, int max_x_, int max_y_)
        : min_x(min_x_), min_y(min_y_), max_x(max_x_), max_y(max_y_) {}

    int width() const { return max_x - min_x + 1; }
    int height() const { return max_y - min_y + 1; }
    bool empty() const { return max_x < min_x || max_y < min_y; }

    // Continuous edges (Box2D(bbox) in afw): pixel edges sit half a pixel outside the centres.
    double min_x_edge() const { return min_x - 0.5; }
    double max_x_edge() const { return max_x + 0.5; }
    double min_y_edge() const { return min_y - 0.5; }
    double max_y_edge() const { return max_y + 0.5; }

    bool operator==(const Box2I& o) const {
        return min_x == o.min_x && min_y == o.min_y && max_x == o.max_x && max_y == o.max_y;
    }
    bool operator!=(const Box2I& o) const { return !(*this == o); }

    std::string to_string() const {
        return "Box2I(min=(" + std::to_string(min_x) + ", " + std::to_string(min_y) + "), max=(" +
               std::to_string(max_x) + ", " + std::to_string(max_y) + "))";
    }
};

}  // namespace visitcal
