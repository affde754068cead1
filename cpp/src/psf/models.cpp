#include "visitcal/psf/models.hpp"

#include <cmath>
#include <stdexcept>

#include "visitcal/psf/lanczos.hpp"
#include "visitcal/measurement/aperture_flux.hpp"
#include "visitcal/measurement/sdss_shape.hpp"

namespace visitcal {

namespace {
// afw offsetImage uses a Lanczos-5 warping kernel for computeImage of image PSFs.
constexpr int kShiftOrder = 5;

PsfImage centred_stamp(int size, double x, double y) {
    const int h = size / 2;
    return PsfImage(size, size, position_to_index(x) - h, position_to_index(y) - h);
}
}  // namespace

Moments Psf::compute_shape(double x, double y) const {
    const PsfImage k = compute_kernel_image(x, y);
    const SdssShapeResult r = adaptive_moments(k.view(), k.x0, k.y0, 0.0, 0.0, SdssShapeControl{});
    return Moments{r.xx, r.yy, r.xy};
}

double Psf::compute_aperture_flux(double radius, double x, double y) const {
    const PsfImage k = compute_kernel_image(x, y);
    return circular_aperture_sum<double>(k.view(), k.x0, k.y0, 0.0, 0.0, radius);
}

// --- GaussianPsf ---------------------------------------------------------------------------------
GaussianPsf::GaussianPsf(int size, double sigma, std::array<double, 2> average_position)
    : size_(size), sigma_(sigma), average_position_(average_position) {
    if (size < 1 || size % 2 == 0) throw std::invalid_argument("GaussianPsf size must be odd and positive");
    if (!(sigma > 0.0) || !std::isfinite(sigma)) throw std::invalid_argument("GaussianPsf sigma must be positive");
}

namespace {
// Unit-sum Gaussian sampled at pixel centres of `img`, centred at parent (cx, cy).
void fill_gaussian(PsfImage& img, double cx, double cy, double sigma) {
    // Separable: exp(-(dx^2 + dy^2) / 2s^2) = gx(dx) gy(dy); normalise the product by the product of sums.
    std::vector<double> gx(img.width), gy(img.height);
    const double a = -0.5 / (sigma * sigma);
    double sx = 0.0, sy = 0.0;
    for (int i = 0; i < img.width; ++i) { const double d = img.x0 + i - cx; gx[i] = std::exp(a * d * d); sx += gx[i]; }
    for (int j = 0; j < img.height; ++j) { const double d = img.y0 + j - cy; gy[j] = std::exp(a * d * d); sy += gy[j]; }
    const double norm = 1.0 / (sx * sy);
    for (int j = 0; j < img.height; ++j)
        for (int i = 0; i < img.width; ++i) img.at(i, j) = gx[i] * gy[j] * norm;
}
}  // namespace

PsfImage GaussianPsf::compute_image(double x, double y) const {
    PsfImage img = centred_stamp(size_, x, y);
    fill_gaussian(img, x, y, sigma_);
    return img;
}

PsfImage GaussianPsf::compute_kernel_image(double, double) const {
    const int h = size_ / 2;
    PsfImage img(size_, size_, -h, -h);
    fill_gaussian(img, 0.0, 0.0, sigma_);
    return img;
}

Moments GaussianPsf::compute_shape(double, double) const { return Moments{sigma_ * sigma_, sigma_ * sigma_, 0.0}; }

// --- FixedImagePsf -------------------------------------------------------------------------------
FixedImagePsf::FixedImagePsf(std::vector<double> kernel, int size, std::array<double, 2> average_position)
    : kernel_(std::move(kernel)), size_(size), average_position_(average_position) {
    if (size < 1 || size % 2 == 0) throw std::invalid_argument("FixedImagePsf kernel must be square with an odd size");
    if (kernel_.size() != static_cast<std::size_t>(size) * size)
        throw std::invalid_argument("FixedImagePsf kernel has size*size elements");
    double sum = 0.0;
    for (double v : kernel_) {
        if (!std::isfinite(v)) throw std::invalid_argument("FixedImagePsf kernel has non-finite pixels");
        sum += v;
    }
    if (!(sum > 0.0)) throw std::invalid_argument("FixedImagePsf kernel must have a positive sum");
    for (double& v : kernel_) v /= sum;
}

PsfImage FixedImagePsf::compute_kernel_image(double, double) const {
    const int h = size_ / 2;
    PsfImage img(size_, size_, -h, -h);
    img.data = kernel_;
    return img;
}

PsfImage FixedImagePsf::compute_image(double x, double y) const {
    PsfImage img = centred_stamp(size_, x, y);
    const double dx = x - position_to_index(x), dy = y - position_to_index(y);
    if (dx == 0.0 && dy == 0.0) {
        img.data = kernel_;
        return img;
    }
    shift_image_lanczos(kernel_.data(), size_, size_, dx, dy, kShiftOrder, img.data.data());
    // Unit sum over the stamp, as computeImage promises (the shift loses light off the stamp's edge).
    double sum = 0.0;
    for (double v : img.data) sum += v;
    for (double& v : img.data) v /= sum;
    return img;
}

}  // namespace visitcal
