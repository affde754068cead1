// The PSF interface: every PSF model, analytic or fitted, answers the same questions at
// a pixel position. Measurement plugins and the deblender only ever see a `const Psf&`; the fitted
// models of the PSF issue (pixel grid, PCA) implement it, and Python models implement it through the
// binding's trampoline (as afw's Psf / Piff's PiffPsf do).
//
// Conventions (afw's): pixel centres at integers; a PsfImage is (height, width) row-major
// doubles with the parent position (x0, y0) of its [0][0] pixel. Images have unit sum over the stamp.
// Implementations must be thread-safe for concurrent const calls (no mutable caches without locks).
#pragma once

#include <array>
#include <cmath>
#include <vector>

#include "visitcal/core/image_view.hpp"
#include "visitcal/core/geom.hpp"      // position_to_index

namespace visitcal {

/// A PSF stamp on the pixel grid.
struct PsfImage {
    std::vector<double> data;  // (height, width) row-major
    int width = 0;
    int height = 0;
    int x0 = 0;  // parent x of column 0
    int y0 = 0;  // parent y of row 0

    PsfImage() = default;
    PsfImage(int w, int h, int x0_, int y0_) : data(static_cast<std::size_t>(w) * h, 0.0), width(w), height(h), x0(x0_), y0(y0_) {}
    double& at(int ix, int iy) { return data[static_cast<std::size_t>(iy) * width + ix]; }        // local index
    double at(int ix, int iy) const { return data[static_cast<std::size_t>(iy) * width + ix]; }  // local index
    ImageView<const double> view() const { return {data.data(), height, width, width}; }
};

/// Second moments in pixel^2 (afw's Quadrupole): xx = <dx^2>, yy = <dy^2>, xy = <dx dy>.
struct Moments {
    double xx = NAN;
    double yy = NAN;
    double xy = NAN;
    double determinant_radius() const { return std::pow(xx * yy - xy * xy, 0.25); }
    double trace_radius() const { return std::sqrt(0.5 * (xx + yy)); }
};

class Psf {
public:
    virtual ~Psf() = default;

    /// Unit-sum image of the PSF of position (x, y), centred at (x, y): the stamp's middle pixel is the
    /// one holding (x, y) (floor(x + 0.5)), and the light sits at the sub-pixel offset (afw computeImage).
    virtual PsfImage compute_image(double x, double y) const = 0;

    /// Unit-sum image of the PSF of position (x, y) centred on the stamp's middle pixel, with
    /// x0 = y0 = -(size / 2) so the centre is at (0, 0) (afw computeKernelImage).
    virtual PsfImage compute_kernel_image(double x, double y) const = 0;

    /// Adaptive second moments of the PSF at (x, y), pixel^2. The default measures the kernel image
    /// with the SdssShape adaptive-moment algorithm (measurement/sdss_shape.hpp).
    virtual Moments compute_shape(double x, double y) const;

    /// Fraction of the PSF's light within `radius` px of its centre at (x, y). The default sums the
    /// kernel image with exact pixel/circle overlap (measurement/aperture_flux.hpp).
    virtual double compute_aperture_flux(double radius, double x, double y) const;

    /// A representative position (typically the detector centre), where summaries are evaluated.
    virtual std::array<double, 2> average_position() const = 0;
};

/// A circular Gaussian sampled at pixel centres and normalised to unit sum over a (size x size) stamp,
/// the same at every position (afw's GaussianPsf). Its shape is the analytic sigma^2.
class GaussianPsf : public Psf {
public:
    GaussianPsf(int size, double sigma, std::array<double, 2> average_position = {0.0, 0.0});
    PsfImage compute_image(double x, double y) const override;
    PsfImage compute_kernel_image(double x, double y) const override;
    Moments compute_shape(double x, double y) const override;
    std::array<double, 2> average_position() const override { return average_position_; }
    int size() const { return size_; }
    double sigma() const { return sigma_; }

private:
    int size_;
    double sigma_;
    std::array<double, 2> average_position_;
};

/// One fixed kernel image, the same at every position (meas_algorithms' KernelPsf of a FixedKernel).
/// compute_image shifts it to the sub-pixel position with a Lanczos-5 interpolant (afw offsetImage).
class FixedImagePsf : public Psf {
public:
    /// `kernel` is (size, size) row-major with odd size, centred on its middle pixel; it is normalised
    /// to unit sum on construction (a non-positive or non-finite sum throws std::invalid_argument).
    FixedImagePsf(std::vector<double> kernel, int size, std::array<double, 2> average_position = {0.0, 0.0});
    PsfImage compute_image(double x, double y) const override;
    PsfImage compute_kernel_image(double x, double y) const override;
    std::array<double, 2> average_position() const override { return average_position_; }
    int size() const { return size_; }
    const std::vector<double>& kernel() const { return kernel_; }

private:
    std::vector<double> kernel_;
    int size_;
    std::array<double, 2> average_position_;
};

}  // namespace visitcal
