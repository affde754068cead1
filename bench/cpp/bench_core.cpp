// C++ harness for the core's per-detector kernels, without Python (issue 25): the pixel-grid and PCA PSF
// fits on stored candidate stamps, the Gaussian (sigma 2, separable) and 41 x 41 (FFT) convolutions of a
// 4072 x 4000 float32 image, the background (MEANCLIP statistics in 128-px bins + Akima model) and
// single-frame measurement (measure_sources, default plugins) of a simulated detector. Every input,
// control struct included, is what the Python API passes to visitcal._core for the same call, stored by
// bench/cpp/make_inputs.py in bench/results/cpp_inputs/ (.npy arrays, `key value` text); the Python
// figures on the same inputs come from the same script. One core: the thread pins itself to --cpu
// (default 0). See bench/README.md.
//
//   bench_core [--inputs DIR] [--json PATH] [--repeat N] [--cases pixel_grid,pca,conv,background,measure]
//              [--cpu C]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "inputs.hpp"
#include "timing.hpp"
#include "visitcal/core/footprint.hpp"
#include "visitcal/detection/background.hpp"
#include "visitcal/detection/convolve.hpp"
#include "visitcal/measurement/single_frame_measurement.hpp"
#include "visitcal/psf/models.hpp"
#include "visitcal/psf/pca.hpp"
#include "visitcal/psf/pixel_grid.hpp"

namespace vb = visitcal_bench;
namespace vc = visitcal;

namespace {

const std::vector<std::string> kAllCases{"pixel_grid", "pca", "conv", "background", "measure"};

struct Options {
    std::string inputs = "bench/results/cpp_inputs";
    std::string json_path;
    int repeat = 5;
    std::vector<std::string> cases = kAllCases;
    int cpu = 0;
    bool huge_pages = true;
};

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos <= s.size()) {
        const std::size_t comma = s.find(',', pos);
        const std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (!item.empty()) out.push_back(item);
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

Options parse(int argc, char** argv) {
    Options o;
    for (int k = 1; k < argc; ++k) {
        const std::string a = argv[k];
        auto next = [&]() -> std::string {
            if (k + 1 >= argc) throw std::invalid_argument(a + " needs a value");
            return argv[++k];
        };
        if (a == "--inputs") o.inputs = next();
        else if (a == "--json") o.json_path = next();
        else if (a == "--repeat") o.repeat = std::stoi(next());
        else if (a == "--cpu") o.cpu = std::stoi(next());
        else if (a == "--cases") o.cases = split(next());
        else if (a == "--hugepages") {
            const std::string v = next();
            if (v != "on" && v != "off") throw std::invalid_argument("--hugepages takes on or off");
            o.huge_pages = v == "on";
        }
        else if (a == "-h" || a == "--help") {
            std::printf("usage: %s [--inputs DIR (bench/results/cpp_inputs)] [--json PATH] [--repeat N (5)] "
                        "[--cases pixel_grid,pca,conv,background,measure] [--cpu C (0; -1: no pinning)] "
                        "[--hugepages on|off (on: 2 MiB pages advised for buffers >= 4 MiB, as numpy does)]\n", argv[0]);
            std::exit(0);
        } else {
            throw std::invalid_argument("unknown argument " + a);
        }
    }
    if (o.repeat < 1) throw std::invalid_argument("--repeat must be >= 1");
    for (const auto& c : o.cases) {
        bool known = false;
        for (const auto& k : kAllCases) known = known || c == k;
        if (!known) throw std::invalid_argument("unknown case " + c);
    }
    return o;
}

// One timed kernel: its timing and the numbers that show it computed what Python computes.
struct Row {
    std::string group;
    std::string kernel;
    vb::Timing t;
    std::vector<std::pair<std::string, double>> check;
};

// A check value in full (round-trip) precision; JsonObject::add keeps 9 digits, enough for timings.
std::string exact(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

// Python's value of each check (python_checks.txt, written by make_inputs.py), when present.
std::map<std::string, double> python_checks(const std::string& dir) {
    std::map<std::string, double> out;
    std::ifstream in(dir + "/python_checks.txt");
    std::string key, value;
    while (in >> key >> value) out[key] = std::stod(value);  // stod: also "nan" and "inf"
    return out;
}

template <typename T>
vc::ImageView<T> view2d(vb::NpyArray<typename std::remove_const<T>::type>& a) {
    if (a.shape.size() != 2) throw std::runtime_error("expected a 2-d array");
    return {a.data.data(), static_cast<int>(a.shape[0]), static_cast<int>(a.shape[1]),
            static_cast<std::ptrdiff_t>(a.shape[1])};
}

// --- PSF fits -----------------------------------------------------------------------------------
struct Stamps {
    vb::NpyArray<float> image, variance;
    vb::NpyArray<std::int32_t> mask, xy0;
    vb::NpyArray<double> x, y;
    vb::NpyArray<std::uint8_t> reserved;
    Stamps(const std::string& dir, const std::string& kind)
        : image(vb::read_npy<float>(dir + "/" + kind + "_image.npy")),
          variance(vb::read_npy<float>(dir + "/" + kind + "_variance.npy")),
          mask(vb::read_npy<std::int32_t>(dir + "/" + kind + "_mask.npy")),
          xy0(vb::read_npy<std::int32_t>(dir + "/" + kind + "_xy0.npy")),
          x(vb::read_npy<double>(dir + "/" + kind + "_x.npy")),
          y(vb::read_npy<double>(dir + "/" + kind + "_y.npy")),
          reserved(vb::read_npy<std::uint8_t>(dir + "/" + kind + "_reserved.npy")) {
        const std::size_t m = image.dim(0);
        if (image.shape.size() != 3 || image.dim(1) != image.dim(2) || mask.shape != image.shape ||
            variance.shape != image.shape || xy0.data.size() != 2 * m || x.data.size() != m || y.data.size() != m ||
            reserved.data.size() != m)
            throw std::runtime_error(kind + ": inconsistent candidate arrays");
    }
    int m() const { return static_cast<int>(image.dim(0)); }
    int side() const { return static_cast<int>(image.dim(1)); }
};

std::array<double, 4> read_box(vb::KeyValues& kv) {
    const auto b = kv.nums("box");
    if (b.size() != 4) throw std::runtime_error("box must have 4 values (xmin, xmax, ymin, ymax)");
    return {b[0], b[1], b[2], b[3]};
}

void bench_pixel_grid(const Options& o, std::vector<Row>& rows) {
    Stamps s(o.inputs, "pixel_grid");
    vb::KeyValues kv(o.inputs + "/pixel_grid.txt");
    const auto box = read_box(kv);
    vc::PixelGridControl c;
    kv.set("cg_chi2_tolerance", c.cg_chi2_tolerance);
    kv.set("cg_max_iter", c.cg_max_iter);
    kv.set("cg_tolerance", c.cg_tolerance);
    kv.set("chisq_thresh", c.chisq_thresh);
    kv.set("draw_size", c.draw_size);
    kv.set("fit_center", c.fit_center);
    kv.set("interpolant_order", c.interpolant_order);
    kv.set("max_iter", c.max_iter);
    kv.set("max_snr", c.max_snr);
    kv.set("min_iter", c.min_iter);
    kv.set("minimum_unmasked_fraction", c.minimum_unmasked_fraction);
    kv.set("model_size", c.model_size);
    kv.set("outlier_max_remove", c.outlier_max_remove);
    kv.set("outlier_n_sigma", c.outlier_n_sigma);
    kv.set("sampling_size", c.sampling_size);
    kv.set("smoothness", c.smoothness);
    kv.set("spatial_order", c.spatial_order);
    kv.set("stamp_size", c.stamp_size);
    kv.set("varying_radius", c.varying_radius);
    kv.set("zero_weight_mask", c.zero_weight_mask);
    kv.set("zeroth_order_fallback", c.zeroth_order_fallback);
    kv.check_all_used();
    vc::PixelGridFitResult r;
    const auto t = vb::time_it([&] {
        r = vc::fit_pixel_grid_psf(s.image.data.data(), s.mask.data.data(), s.variance.data.data(), s.m(), s.side(),
                                   s.xy0.data.data(), s.x.data.data(), s.y.data.data(), s.reserved.data.data(), box, c);
    }, o.repeat);
    if (!r.psf) throw std::runtime_error("pixel-grid fit returned no model");
    rows.push_back({"pixel_grid",
                    "fit_pixel_grid_psf (" + std::to_string(s.m()) + " stamps " + std::to_string(s.side()) + "^2, order " +
                        std::to_string(c.spatial_order) + ")",
                    t,
                    {{"n_used", double(r.n_used)}, {"n_iter", double(r.n_iter)}, {"chi2_total", r.chi2_total}}});
}

void bench_pca(const Options& o, std::vector<Row>& rows) {
    Stamps s(o.inputs, "pca");
    vb::KeyValues kv(o.inputs + "/pca.txt");
    const auto box = read_box(kv);
    vc::PcaPsfControl c;
    kv.set("bad_mask_bits", c.bad_mask_bits);
    kv.set("component_noise_threshold", c.component_noise_threshold);
    kv.set("constant_weight", c.constant_weight);
    kv.set("interpolant_order", c.interpolant_order);
    kv.set("kernel_size", c.kernel_size);
    kv.set("lam", c.lam);
    kv.set("min_unmasked_fraction", c.min_unmasked_fraction);
    kv.set("n_basis_refinements", c.n_basis_refinements);
    kv.set("n_eigen_components", c.n_eigen_components);
    kv.set("n_iter_for_psf", c.n_iter_for_psf);
    kv.set("reduced_chi2_for_psf_candidates", c.reduced_chi2_for_psf_candidates);
    kv.set("spatial_order", c.spatial_order);
    kv.set("spatial_reject", c.spatial_reject);
    kv.set("tolerance", c.tolerance);
    kv.set("zeroth_order_interp_not_enough_stars", c.zeroth_order_interp_not_enough_stars);
    kv.check_all_used();
    vc::PcaPsfCandidates cand;
    cand.image = s.image.data.data();
    cand.mask = s.mask.data.data();
    cand.variance = s.variance.data.data();
    cand.n = s.m();
    cand.stamp_size = s.side();
    cand.xy0 = s.xy0.data.data();
    cand.x = s.x.data.data();
    cand.y = s.y.data.data();
    cand.reserved = s.reserved.data.data();
    vc::PcaPsfFit r;
    const auto t = vb::time_it([&] { r = vc::fit_pca_psf(cand, c, box[0], box[1], box[2], box[3]); }, o.repeat);
    if (!r.psf) throw std::runtime_error("PCA fit returned no model");
    rows.push_back({"pca",
                    "fit_pca_psf (" + std::to_string(s.m()) + " stamps " + std::to_string(s.side()) + "^2, order " +
                        std::to_string(c.spatial_order) + ", K " + std::to_string(c.n_eigen_components) + ")",
                    t,
                    {{"n_used", double(r.n_good)}, {"n_iter", double(r.n_iter)}, {"chi2_total", r.spatial_fit_chi2}}});
}

// --- convolutions -------------------------------------------------------------------------------
double sum_of(const vb::Buffer<float>& v) {
    double s = 0.0;
    for (float x : v) s += x;
    return s;
}

void bench_conv(const Options& o, std::vector<Row>& rows) {
    auto image = vb::read_npy<float>(o.inputs + "/conv_image.npy");
    auto variance = vb::read_npy<float>(o.inputs + "/conv_variance.npy");
    const auto k41 = vb::read_npy<double>(o.inputs + "/conv_k41.npy");
    vb::KeyValues kv(o.inputs + "/conv.txt");
    const double sigma = kv.num("sigma");
    kv.check_all_used();
    if (variance.shape != image.shape || k41.shape.size() != 2) throw std::runtime_error("conv: inconsistent inputs");
    const int ny = static_cast<int>(image.dim(0)), nx = static_cast<int>(image.dim(1));
    const std::string size = std::to_string(ny) + " x " + std::to_string(nx);
    // Pre-faulted outputs (the Python binding allocates a fresh one each call: see the README's table).
    vb::Buffer<float> out(image.data.size(), 0.0f), out_var(image.data.size(), 0.0f);
    const vc::ImageView<const float> in{image.data.data(), ny, nx, nx}, vin{variance.data.data(), ny, nx, nx};
    const vc::ImageView<float> ov{out.data(), ny, nx, nx}, ovv{out_var.data(), ny, nx, nx};

    // gaussian_smooth: h = ceil(4 sigma) (scipy's truncate=4), the same 1-D kernel along x and y.
    const auto k = vc::gaussian_kernel_1d(sigma, static_cast<int>(std::ceil(4.0 * sigma)));
    std::vector<double> k2(k.size());
    for (std::size_t i = 0; i < k.size(); ++i) k2[i] = k[i] * k[i];
    auto t = vb::time_it([&] { vc::convolve_separable<float>(in, ov, k, k); vb::clobber(out.data()); }, o.repeat);
    rows.push_back({"conv", "convolve_separable, Gaussian sigma " + std::to_string(sigma).substr(0, 3) + " (" +
                                std::to_string(k.size()) + " taps), " + size + " float32",
                    t, {{"smooth_sum", sum_of(out)}}});
    t = vb::time_it([&] {
        vc::convolve_separable<float>(in, ov, k, k);
        vc::convolve_separable<float>(vin, ovv, k2, k2);
        vb::clobber(out.data());
        vb::clobber(out_var.data());
    }, o.repeat);
    rows.push_back({"conv", "  the same, image + variance (kernel^2)", t, {}});

    const int kny = static_cast<int>(k41.dim(0)), knx = static_cast<int>(k41.dim(1));
    const int tile = vc::fft_tile_size(ny, nx, kny, knx);
    t = vb::time_it([&] { vc::convolve_fft<float>(in, ov, k41.data.data(), kny, knx); vb::clobber(out.data()); }, o.repeat);
    rows.push_back({"conv", "convolve_fft, " + std::to_string(kny) + " x " + std::to_string(knx) + " kernel, tile " +
                                std::to_string(tile) + ", " + size + " float32",
                    t, {{"fft_sum", sum_of(out)}}});
}

// --- background ---------------------------------------------------------------------------------
vc::InterpStyle style_of(const std::string& s) {
    if (s == "CONSTANT") return vc::InterpStyle::CONSTANT;
    if (s == "LINEAR") return vc::InterpStyle::LINEAR;
    if (s == "NATURAL_SPLINE" || s == "CUBIC_SPLINE") return vc::InterpStyle::NATURAL_SPLINE;
    if (s == "AKIMA_SPLINE") return vc::InterpStyle::AKIMA_SPLINE;
    throw std::runtime_error("unknown interpolation style " + s);
}

void bench_background(const Options& o, std::vector<Row>& rows) {
    auto image = vb::read_npy<float>(o.inputs + "/bg_image.npy");
    vb::KeyValues kv(o.inputs + "/background.txt");
    vc::BackgroundControl c;
    kv.set("bin_size_x", c.bin_size_x);
    kv.set("bin_size_y", c.bin_size_y);
    kv.set("ignored_mask", c.ignored_mask);
    kv.set("n_iter", c.n_iter);
    kv.set("n_sigma_clip", c.n_sigma_clip);
    kv.set("baseline_only", c.baseline_only);  // false: the runtime-dispatched (AVX2) loops, as the pipeline
    c.statistic = static_cast<vc::BackgroundStatistic>(kv.integer("statistic"));
    const vc::InterpStyle style = style_of(kv.str("algorithm"));
    const std::string under = kv.str("undersample_style"), extra = kv.str("extrapolation");
    const auto undersample =
        under == "THROW_EXCEPTION" ? vc::UndersampleStyle::THROW_EXCEPTION : vc::UndersampleStyle::REDUCE_INTERP_ORDER;
    const auto extrapolation = extra == "END_SEGMENT" ? vc::Extrapolation::END_SEGMENT : vc::Extrapolation::TAYLOR2;
    kv.check_all_used();
    c.validate();
    if (image.shape.size() != 2) throw std::runtime_error("bg_image must be 2-d");
    const int ny = static_cast<int>(image.dim(0)), nx = static_cast<int>(image.dim(1));
    const std::string size = std::to_string(ny) + " x " + std::to_string(nx);

    vc::BackgroundStats st;
    auto t = vb::time_it([&] {
        st = vc::compute_background_stats(image.data.data(), nx, nullptr, 0, nullptr, 0, ny, nx, c);
    }, o.repeat);
    double stats_sum = 0.0;
    for (double v : st.value)
        if (std::isfinite(v)) stats_sum += v;
    rows.push_back({"background", "compute_background_stats (MEANCLIP, " + std::to_string(c.bin_size_x) + "-px bins, " +
                                      std::to_string(st.x.count()) + " x " + std::to_string(st.y.count()) + "), " + size,
                    t, {{"stats_sum", stats_sum}}});

    std::vector<double> xs(static_cast<std::size_t>(nx)), ys(static_cast<std::size_t>(ny));
    for (int i = 0; i < nx; ++i) xs[static_cast<std::size_t>(i)] = i;
    for (int j = 0; j < ny; ++j) ys[static_cast<std::size_t>(j)] = j;
    vb::Buffer<float> model(image.data.size(), 0.0f);
    t = vb::time_it([&] {
        vc::interpolate_background<float>(st.value.data(), st.y.count(), st.x.count(), st.x.center.data(),
                                          st.y.center.data(), style, undersample, extrapolation, xs.data(), xs.size(),
                                          ys.data(), ys.size(), model.data(), nx);
        vb::clobber(model.data());
    }, o.repeat);
    rows.push_back({"background", "interpolate_background (" + kv.all().at("algorithm") + ", float32), " + size, t,
                    {{"model_sum", sum_of(model)}}});
}

// --- measure_sources ----------------------------------------------------------------------------
vc::FootprintList read_footprints(const std::string& dir, const std::string& prefix) {
    const auto spans = vb::read_npy<std::int32_t>(dir + "/" + prefix + "_spans.npy");
    const auto so = vb::read_npy<std::int64_t>(dir + "/" + prefix + "_span_offsets.npy");
    const auto xy = vb::read_npy<std::int32_t>(dir + "/" + prefix + "_peak_xy.npy");
    const auto value = vb::read_npy<float>(dir + "/" + prefix + "_peak_value.npy");
    const auto sig = vb::read_npy<float>(dir + "/" + prefix + "_peak_significance.npy");
    const auto po = vb::read_npy<std::int64_t>(dir + "/" + prefix + "_peak_offsets.npy");
    const auto id = vb::read_npy<std::int64_t>(dir + "/" + prefix + "_peak_id.npy");
    const std::size_t m = value.data.size();
    if (spans.data.size() % 3 || xy.data.size() != 2 * m || sig.data.size() != m || id.data.size() != m ||
        so.data.size() != po.data.size() || so.data.empty() || so.data.back() != std::int64_t(spans.data.size() / 3) ||
        po.data.back() != std::int64_t(m))
        throw std::runtime_error(prefix + ": inconsistent footprint arrays");
    vc::FootprintList f;
    f.spans.resize(spans.data.size() / 3);
    for (std::size_t i = 0; i < f.spans.size(); ++i)
        f.spans[i] = {spans.data[3 * i], spans.data[3 * i + 1], spans.data[3 * i + 2]};
    f.span_offsets.assign(so.data.begin(), so.data.end());
    f.peak_offsets.assign(po.data.begin(), po.data.end());
    f.peaks.resize(m);
    for (std::size_t i = 0; i < m; ++i) f.peaks[i] = {xy.data[2 * i], xy.data[2 * i + 1], value.data[i], sig.data[i], id.data[i]};
    return f;
}

void bench_measure(const Options& o, std::vector<Row>& rows) {
    const std::string& d = o.inputs;
    auto image = vb::read_npy<float>(d + "/meas_image.npy");
    auto mask = vb::read_npy<std::int32_t>(d + "/meas_mask.npy");
    auto variance = vb::read_npy<float>(d + "/meas_variance.npy");
    const auto records = read_footprints(d, "meas_records");
    const auto parents = read_footprints(d, "meas_parents");
    const auto top = vb::read_npy<std::int64_t>(d + "/meas_top.npy");
    const auto heavy_values = vb::read_npy<float>(d + "/meas_heavy_values.npy");
    const auto heavy_offsets = vb::read_npy<std::int64_t>(d + "/meas_heavy_offsets.npy");
    if (mask.shape != image.shape || variance.shape != image.shape || top.data.size() != records.size() ||
        heavy_offsets.data.size() != records.size())
        throw std::runtime_error("measure: inconsistent inputs");

    vb::KeyValues kv(d + "/measure.txt");
    const int x0 = static_cast<int>(kv.integer("x0")), y0 = static_cast<int>(kv.integer("y0"));
    const auto avg = kv.nums("psf_average_position");
    if (avg.size() != 2) throw std::runtime_error("psf_average_position must have 2 values");
    const vc::GaussianPsf psf(static_cast<int>(kv.integer("psf_size")), kv.num("psf_sigma"), {avg[0], avg[1]});
    vc::SingleFrameMeasurementControl c;
    c.aperture_radii = kv.nums("aperture_radii");
    kv.set("centroid.binmax", c.centroid.binmax);
    kv.set("centroid.do_footprint_check", c.centroid.do_footprint_check);
    kv.set("centroid.max_dist_to_peak", c.centroid.max_dist_to_peak);
    kv.set("centroid.peak_min", c.centroid.peak_min);
    kv.set("centroid.wfac", c.centroid.wfac);
    c.compensated_tophat.apertures.clear();
    for (double a : kv.nums("compensated_tophat.apertures")) c.compensated_tophat.apertures.push_back(static_cast<int>(a));
    kv.set("compensated_tophat.inner_scale", c.compensated_tophat.inner_scale);
    kv.set("compensated_tophat.outer_scale", c.compensated_tophat.outer_scale);
    kv.set("do_apertures", c.do_apertures);
    kv.set("do_centroid", c.do_centroid);
    kv.set("do_compensated_tophat", c.do_compensated_tophat);
    kv.set("do_gaussian_flux", c.do_gaussian_flux);
    kv.set("do_local_background", c.do_local_background);
    kv.set("do_pixel_flags", c.do_pixel_flags);
    kv.set("do_psf_flux", c.do_psf_flux);
    kv.set("do_shape", c.do_shape);
    kv.set("do_variance", c.do_variance);
    kv.set("gaussian_flux.box_sigma", c.gaussian_flux.box_sigma);
    kv.set("gaussian_flux.max_radius", c.gaussian_flux.max_radius);
    kv.set("local_background.annulus_inner", c.local_background.annulus_inner);
    kv.set("local_background.annulus_outer", c.local_background.annulus_outer);
    kv.set("local_background.bad_mask", c.local_background.bad_mask);
    kv.set("local_background.bg_iter", c.local_background.bg_iter);
    kv.set("local_background.bg_rej", c.local_background.bg_rej);
    kv.set("noise_mean", c.noise_mean);
    kv.set("noise_seed", c.noise_seed);
    kv.set("noise_sigma", c.noise_sigma);
    kv.set("psf_flux.bad_mask", c.psf_flux.bad_mask);
    kv.set("psf_flux.model_error", c.psf_flux.model_error);
    kv.set("replace_with_noise", c.replace_with_noise);
    kv.set("shape.do_measure_psf", c.shape.do_measure_psf);
    kv.set("shape.max_iter", c.shape.max_iter);
    kv.set("shape.max_shift", c.shape.max_shift);
    kv.set("shape.tol1", c.shape.tol1);
    kv.set("shape.tol2", c.shape.tol2);
    kv.set("variance.mask", c.variance.mask);
    kv.set("variance.scale", c.variance.scale);
    kv.check_all_used();

    vc::MeasurementRecords rec;
    rec.footprints = &records;
    rec.parents = &parents;
    rec.top = top.data.data();
    rec.heavy_values = heavy_values.data.data();
    rec.heavy_offsets = heavy_offsets.data.data();
    const vc::ImageView<float> im = view2d<float>(image);
    const vc::ImageView<const std::int32_t> mv = view2d<const std::int32_t>(mask);
    const vc::ImageView<const float> vv = view2d<const float>(variance);
    vc::MeasurementOutput out;
    const auto t = vb::time_it([&] { out = vc::measure_sources(im, mv, vv, x0, y0, rec, psf, c); }, o.repeat);
    double flux_sum = 0.0;
    long long finite = 0;
    for (const auto& f : out.psf_flux)
        if (std::isfinite(f.instFlux)) {
            flux_sum += f.instFlux;
            ++finite;
        }
    rows.push_back({"measure",
                    "measure_sources (" + std::to_string(records.size()) + " records, " +
                        std::to_string(parents.size()) + " parents, default plugins, Gaussian PSF)",
                    t,
                    {{"n_records", double(records.size())}, {"psf_flux_finite", double(finite)}, {"psf_flux_sum", flux_sum}}});
}

}  // namespace

int main(int argc, char** argv) try {
    const Options opt = parse(argc, argv);
    const bool pinned = vb::pin_to_cpu(opt.cpu);
    vb::huge_pages() = opt.huge_pages;
    std::printf("visitcal C++ harness: the core's per-detector kernels on stored inputs (%s)\n", opt.inputs.c_str());
    std::printf("cpu: %s; pinned to cpu %d: %s; compiler: %s\n", vb::cpu_model().c_str(), opt.cpu, pinned ? "yes" : "no",
                vb::compiler_id().c_str());
    std::printf("timings: best and median of %d after 1 warm-up (cpu: the thread's best CPU time); buffers >= 4 MiB on huge pages (as numpy's): %s\n\n",
                opt.repeat, opt.huge_pages ? "advised" : "no");

    const std::map<std::string, std::function<void(const Options&, std::vector<Row>&)>> cases{
        {"pixel_grid", bench_pixel_grid}, {"pca", bench_pca}, {"conv", bench_conv},
        {"background", bench_background}, {"measure", bench_measure}};
    const auto py = python_checks(opt.inputs);
    std::vector<Row> rows;
    std::printf("%-11s %-78s %10s %10s %10s\n", "case", "kernel", "best ms", "med ms", "cpu ms");
    for (const auto& name : opt.cases) {
        const std::size_t first = rows.size();
        cases.at(name)(opt, rows);
        for (std::size_t k = first; k < rows.size(); ++k)
            std::printf("%-11s %-78s %10.2f %10.2f %10.2f\n", rows[k].group.c_str(), rows[k].kernel.c_str(),
                        rows[k].t.best() * 1e3, rows[k].t.median() * 1e3, rows[k].t.cpu_best() * 1e3);
        std::fflush(stdout);
    }

    // Agreement with the values the Python call gave on the same inputs.
    std::printf("\nchecks (harness vs the Python call on the same inputs, python_checks.txt)\n");
    bool all_agree = true;
    std::vector<std::string> row_json;
    for (const auto& r : rows) {
        vb::JsonObject checks;
        for (const auto& c : r.check) {
            const std::string key = r.group + "." + c.first;
            const auto it = py.find(key);
            vb::JsonObject cj;
            cj.raw("harness", exact(c.second));
            if (it != py.end()) {
                const double rel = std::abs(c.second - it->second) / std::max(std::abs(it->second), 1e-300);
                const bool agree = rel <= 1e-9;
                all_agree = all_agree && agree;
                cj.raw("python", exact(it->second)).add("rel_diff", rel).add("agree", agree);
                std::printf("  %-28s harness %.10g python %.10g rel diff %.2e %s\n", key.c_str(), c.second, it->second,
                            rel, agree ? "ok" : "DIFFERS");
            } else {
                std::printf("  %-28s harness %.10g (no Python value)\n", key.c_str(), c.second);
            }
            checks.raw(c.first, cj.str(6));
        }
        row_json.push_back(vb::JsonObject()
                               .add("case", r.group)
                               .add("kernel", r.kernel)
                               .add("best_s", r.t.best())
                               .add("median_s", r.t.median())
                               .raw("times_s", vb::json_timing(r.t))
                               .add("cpu_best_s", r.t.cpu_best())
                               .raw("cpu_times_s", vb::json_timing(r.t, true))
                               .raw("check", checks.str(4))
                               .str(4));
    }

    if (!opt.json_path.empty()) {
        const std::string doc = vb::JsonObject()
                                    .add("benchmark", "bench_core (C++)")
                                    .raw("machine", vb::machine_json(pinned ? opt.cpu : -1, VISITCAL_BENCH_CXX_FLAGS))
                                    .add("inputs", opt.inputs)
                                    .add("repeat", opt.repeat)
                                    .add("huge_pages_advised", opt.huge_pages)
                                    .add("checks_agree", all_agree)
                                    .raw("cases", vb::json_array(row_json, 2))
                                    .str();
        std::ofstream out(opt.json_path);
        if (!out) throw std::runtime_error("cannot write " + opt.json_path);
        out << doc << "\n";
        std::printf("\nwrote %s\n", opt.json_path.c_str());
    }
    return all_agree ? 0 : 2;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_core: %s\n", e.what());
    return 1;
}
