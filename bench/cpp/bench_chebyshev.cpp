// C++ harness for ChebyshevBoundedField, without Python: times evaluate_grid<double/float> on a
// full-detector grid (default 4072 x 4000, an LSST-like CCD) for orders 2-6, against the memory
// bandwidth of the same machine on the same buffer size (a plain store loop, memset and a
// STREAM-style copy), and times evaluate() point by point. One core: the thread pins itself to
// --cpu (default 0). See bench/README.md.
//
//   bench_chebyshev [--json PATH] [--repeat N] [--nx NX] [--ny NY] [--orders 2,3,4,5,6]
//                   [--points N] [--cpu C]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "timing.hpp"
#include "visitcal/core/chebyshev.hpp"

namespace vb = visitcal_bench;
using visitcal::Box2I;
using visitcal::ChebyshevBoundedField;
using visitcal::RowMajorArrayXXd;

namespace {

struct Options {
    std::string json_path;
    int repeat = 10;
    int nx = 4072;
    int ny = 4000;
    std::vector<int> orders{2, 3, 4, 5, 6};
    long long points = 1000000;
    int cpu = 0;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int k = 1; k < argc; ++k) {
        const std::string a = argv[k];
        auto next = [&]() -> std::string {
            if (k + 1 >= argc) throw std::invalid_argument(a + " needs a value");
            return argv[++k];
        };
        if (a == "--json") o.json_path = next();
        else if (a == "--repeat") o.repeat = std::stoi(next());
        else if (a == "--nx") o.nx = std::stoi(next());
        else if (a == "--ny") o.ny = std::stoi(next());
        else if (a == "--points") o.points = std::stoll(next());
        else if (a == "--cpu") o.cpu = std::stoi(next());
        else if (a == "--orders") {
            o.orders.clear();
            std::string s = next();
            std::size_t pos = 0;
            while (pos < s.size()) {
                const std::size_t comma = s.find(',', pos);
                o.orders.push_back(std::stoi(s.substr(pos, comma - pos)));
                if (comma == std::string::npos) break;
                pos = comma + 1;
            }
        } else if (a == "-h" || a == "--help") {
            std::printf("usage: %s [--json PATH] [--repeat N] [--nx NX] [--ny NY] [--orders 2,3,4,5,6] "
                        "[--points N] [--cpu C (-1: no pinning)]\n", argv[0]);
            std::exit(0);
        } else {
            throw std::invalid_argument("unknown argument " + a);
        }
    }
    if (o.repeat < 1 || o.nx < 1 || o.ny < 1 || o.points < 1) throw std::invalid_argument("sizes must be >= 1");
    return o;
}

// The benchmark field (also used by bench/bench_chebyshev.py, so both harnesses time the same
// numbers): triangular, a[j, i] = (-1)^j / (1 + i + j) for i + j <= order, zero above.
RowMajorArrayXXd bench_coefficients(int order) {
    RowMajorArrayXXd a = RowMajorArrayXXd::Zero(order + 1, order + 1);
    for (int j = 0; j <= order; ++j)
        for (int i = 0; i + j <= order; ++i) a(j, i) = ((j % 2) ? -1.0 : 1.0) / (1.0 + i + j);
    return a;
}

struct Row {
    int order;
    std::string dtype;
    vb::Timing t;
    double ref_best;  // write-only (std::fill) best time for this dtype, timed just before
    double bytes;
    double pixels;
    double max_abs_diff;  // grid vs point-by-point evaluate() on a sample
};

}  // namespace

int main(int argc, char** argv) try {
    const Options opt = parse(argc, argv);
    const bool pinned = vb::pin_to_cpu(opt.cpu);
    const std::size_t nx = static_cast<std::size_t>(opt.nx), ny = static_cast<std::size_t>(opt.ny);
    const std::size_t npix = nx * ny;
    const Box2I box(0, 0, opt.nx - 1, opt.ny - 1);

    std::vector<double> xs(nx), ys(ny);
    for (std::size_t c = 0; c < nx; ++c) xs[c] = static_cast<double>(c);
    for (std::size_t r = 0; r < ny; ++r) ys[r] = static_cast<double>(r);

    // Value-initialised vectors: every page is touched (pre-faulted) before any timing.
    std::vector<double> out64(npix, 0.0), src64(npix, 2.0);
    std::vector<float> out32(npix, 0.0f);

    std::printf("visitcal C++ harness: ChebyshevBoundedField::evaluate_grid, %zu x %zu = %.2f Mpix\n", nx, ny,
                npix / 1e6);
    std::printf("cpu: %s; pinned to cpu %d: %s; compiler: %s\n", vb::cpu_model().c_str(), opt.cpu,
                pinned ? "yes" : "no", vb::compiler_id().c_str());
    std::printf("timings: best and median of %d after 1 warm-up\n\n", opt.repeat);

    // --- memory-bandwidth references on the same buffers -------------------------------------
    const double b64 = 8.0 * npix, b32 = 4.0 * npix;
    const vb::Timing fill64 = vb::time_it([&] { std::fill(out64.begin(), out64.end(), 1.0); vb::clobber(out64.data()); }, opt.repeat);
    const vb::Timing fill32 = vb::time_it([&] { std::fill(out32.begin(), out32.end(), 1.0f); vb::clobber(out32.data()); }, opt.repeat);
    const vb::Timing memset64 = vb::time_it([&] { std::memset(out64.data(), 0, npix * sizeof(double)); vb::clobber(out64.data()); }, opt.repeat);
    const vb::Timing copy64 = vb::time_it([&] {
        double* __restrict d = out64.data();
        const double* __restrict s = src64.data();
        for (std::size_t k = 0; k < npix; ++k) d[k] = s[k];
        vb::clobber(d);
    }, opt.repeat);

    struct BwRow { const char* name; const vb::Timing* t; double bytes; const char* note; };
    const BwRow bw[] = {
        {"fill float64 (std::fill)", &fill64, b64, "plain stores; the write-only reference for float64"},
        {"fill float32 (std::fill)", &fill32, b32, "plain stores; the write-only reference for float32"},
        {"memset float64", &memset64, b64, "glibc memset (may use non-temporal stores)"},
        {"copy float64 (STREAM)", &copy64, 2 * b64, "bytes = read + written, STREAM convention"},
    };
    std::printf("memory bandwidth, %.0f MB buffers\n", b64 / 1e6);
    std::printf("%-28s %9s %9s %9s\n", "kernel", "best ms", "med ms", "GB/s");
    std::vector<std::string> bw_json;
    for (const auto& r : bw) {
        std::printf("%-28s %9.2f %9.2f %9.2f\n", r.name, r.t->best() * 1e3, r.t->median() * 1e3, r.bytes / r.t->best() / 1e9);
        bw_json.push_back(vb::JsonObject()
                              .add("kernel", r.name)
                              .add("note", r.note)
                              .add("bytes", r.bytes)
                              .add("best_s", r.t->best())
                              .add("median_s", r.t->median())
                              .add("gb_per_s", r.bytes / r.t->best() / 1e9)
                              .raw("times_s", vb::json_timing(*r.t))
                              .str(4));
    }

    // --- evaluate_grid ------------------------------------------------------------------------
    std::mt19937_64 rng(20261123);
    std::vector<Row> rows;
    for (int order : opt.orders) {
        const ChebyshevBoundedField f(box, bench_coefficients(order));
        // Check: grid values against point-by-point evaluate() at 1000 random pixels.
        std::uniform_int_distribution<std::size_t> pick_c(0, nx - 1), pick_r(0, ny - 1);
        auto check = [&](auto* out) {
            double d = 0.0;
            for (int k = 0; k < 1000; ++k) {
                const std::size_t c = pick_c(rng), r = pick_r(rng);
                d = std::max(d, std::abs(static_cast<double>(out[r * nx + c]) - f.evaluate(xs[c], ys[r])));
            }
            return d;
        };
        // Paired references: the fills are re-timed just before each order (the VM's bandwidth drifts
        // by 20-40 % over a run), and the ratio uses them.
        const vb::Timing f64 = vb::time_it([&] { std::fill(out64.begin(), out64.end(), 1.0); vb::clobber(out64.data()); }, opt.repeat);
        const vb::Timing f32 = vb::time_it([&] { std::fill(out32.begin(), out32.end(), 1.0f); vb::clobber(out32.data()); }, opt.repeat);
        const vb::Timing t64 = vb::time_it([&] {
            f.evaluate_grid<double>(xs.data(), nx, ys.data(), ny, out64.data(), static_cast<std::ptrdiff_t>(nx));
            vb::clobber(out64.data());
        }, opt.repeat);
        rows.push_back({order, "float64", t64, f64.best(), b64, double(npix), check(out64.data())});
        const vb::Timing t32 = vb::time_it([&] {
            f.evaluate_grid<float>(xs.data(), nx, ys.data(), ny, out32.data(), static_cast<std::ptrdiff_t>(nx));
            vb::clobber(out32.data());
        }, opt.repeat);
        rows.push_back({order, "float32", t32, f32.best(), b32, double(npix), check(out32.data())});
    }

    std::printf("\nevaluate_grid, %zu x %zu (ratio = best time / best std::fill time of the same dtype, timed just before)\n", nx, ny);
    std::printf("%5s %8s %9s %9s %8s %8s %9s %10s %11s\n", "order", "dtype", "best ms", "med ms", "Gpix/s", "GB/s wr",
                "fill ms", "ratio fill", "max |diff|");
    std::vector<std::string> grid_json;
    for (const auto& r : rows) {
        const double best = r.t.best();
        std::printf("%5d %8s %9.2f %9.2f %8.3f %8.2f %9.2f %10.2f %11.2e\n", r.order, r.dtype.c_str(), best * 1e3,
                    r.t.median() * 1e3, r.pixels / best / 1e9, r.bytes / best / 1e9, r.ref_best * 1e3, best / r.ref_best,
                    r.max_abs_diff);
        grid_json.push_back(vb::JsonObject()
                                .add("order", r.order)
                                .add("dtype", r.dtype)
                                .add("best_s", best)
                                .add("median_s", r.t.median())
                                .add("gpix_per_s", r.pixels / best / 1e9)
                                .add("gb_per_s_written", r.bytes / best / 1e9)
                                .add("fill_best_s", r.ref_best)
                                .add("ratio_to_fill", best / r.ref_best)
                                .add("max_abs_diff_vs_evaluate", r.max_abs_diff)
                                .raw("times_s", vb::json_timing(r.t))
                                .str(4));
    }

    // --- evaluate(), point by point -----------------------------------------------------------
    const std::size_t np = static_cast<std::size_t>(opt.points);
    std::uniform_real_distribution<double> ux(box.min_x_edge(), box.max_x_edge()), uy(box.min_y_edge(), box.max_y_edge());
    std::vector<double> px(np), py(np), pout(np);
    for (std::size_t k = 0; k < np; ++k) {
        px[k] = ux(rng);
        py[k] = uy(rng);
    }
    std::printf("\nevaluate(x, y, out, n) on %zu random points\n", np);
    std::printf("%5s %9s %9s %9s %9s\n", "order", "best ms", "med ms", "ns/point", "Mpts/s");
    std::vector<std::string> pts_json;
    for (int order : opt.orders) {
        const ChebyshevBoundedField f(box, bench_coefficients(order));
        const vb::Timing t = vb::time_it([&] {
            f.evaluate(px.data(), py.data(), pout.data(), np);
            vb::clobber(pout.data());
        }, opt.repeat);
        std::printf("%5d %9.2f %9.2f %9.2f %9.2f\n", order, t.best() * 1e3, t.median() * 1e3, t.best() / np * 1e9,
                    np / t.best() / 1e6);
        pts_json.push_back(vb::JsonObject()
                               .add("order", order)
                               .add("points", static_cast<long long>(np))
                               .add("best_s", t.best())
                               .add("median_s", t.median())
                               .add("ns_per_point", t.best() / np * 1e9)
                               .raw("times_s", vb::json_timing(t))
                               .str(4));
    }

    if (!opt.json_path.empty()) {
        const std::string doc =
            vb::JsonObject()
                .add("benchmark", "bench_chebyshev (C++)")
                .raw("machine", vb::machine_json(pinned ? opt.cpu : -1, VISITCAL_BENCH_CXX_FLAGS))
                .add("nx", opt.nx)
                .add("ny", opt.ny)
                .add("repeat", opt.repeat)
                .add("coefficients", "triangular, a[j, i] = (-1)^j / (1 + i + j) for i + j <= order")
                .raw("bandwidth", vb::json_array(bw_json, 2))
                .raw("evaluate_grid", vb::json_array(grid_json, 2))
                .raw("evaluate_points", vb::json_array(pts_json, 2))
                .str();
        std::ofstream out(opt.json_path);
        if (!out) throw std::runtime_error("cannot write " + opt.json_path);
        out << doc << "\n";
        std::printf("\nwrote %s\n", opt.json_path.c_str());
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_chebyshev: %s\n", e.what());
    return 1;
}
