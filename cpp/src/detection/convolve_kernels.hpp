// Private to cpp/src: the hot loops of convolve.cpp, written once with gcc/clang vector extensions
// and compiled twice, by convolve.cpp (baseline ISA: a 32-byte vector becomes two SSE2 registers)
// and by convolve_avx2.cpp (-mavx2 -mno-fma -ffp-contract=off: one AVX register). Every operation
// is element-wise (lanes never mix inside arithmetic) and no multiply-add is fused, so each output
// is the same sequence of IEEE operations on either path, and in the scalar tails: bit-identical
// results whichever path runs. The anonymous namespace gives each translation unit its own copy
// (no ODR clash); each exports its instances through a ConvKernels table of function pointers.
//
// Conventions as convolve.hpp: convolution (not correlation), odd kernels, only the valid region
// written. Non-finite input is detected on the *output*: every input pixel reaches at least one
// valid output through a kernel tap (the valid outputs' footprints cover the image), and NaN or
// inf times any weight, zero included, stays non-finite; so each kernel keeps a lane-wise
// `chk += out * 0` (0 for finite outputs, NaN otherwise) and returns whether all were finite. The
// caller then scans the input only in the rare failing case (to name the pixel, or to accept a
// genuine overflow of finite input).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

#include "visitcal/detection/convolve.hpp"

#if defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // vectors by value in internal functions: all inlined
#endif

namespace visitcal {

// Entry points of one instruction-set build (see convolve.cpp / convolve_avx2.cpp).
struct ConvKernels {
    // separable: (in, out rows, first output row, kx, knx, ky, kny); see separable() below.
    bool (*separable_f)(ImageView<const float>, ImageView<float>, int, const float*, int, const float*, int);
    bool (*separable_d)(ImageView<const double>, ImageView<double>, int, const double*, int, const double*, int);
    bool (*direct_f)(ImageView<const float>, ImageView<float>, const float*, int, int);
    bool (*direct_d)(ImageView<const double>, ImageView<double>, const double*, int, int);
    bool (*fft_f)(ImageView<const float>, ImageView<float>, const double*, int, int, int);
    bool (*fft_d)(ImageView<const double>, ImageView<double>, const double*, int, int, int);
};
const ConvKernels& conv_kernels_avx2();  // defined in convolve_avx2.cpp

namespace {

// Vector width of this build: one native register (32 bytes with AVX2, 16 with SSE2; a 32-byte
// vector type in an SSE2 build is lowered poorly by gcc, ~5x slower). The width changes only how
// many independent outputs one instruction computes, never an output's value.
#if defined(__AVX2__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
template <typename T>
struct Simd;
template <>
struct Simd<float> {
    typedef float V __attribute__((vector_size(kVecBytes)));
    static constexpr int L = kVecBytes / 4;
};
template <>
struct Simd<double> {
    typedef double V __attribute__((vector_size(kVecBytes)));
    static constexpr int L = kVecBytes / 8;
};

template <typename V, typename T>
inline V vload(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));  // unaligned load
    return v;
}
template <typename V, typename T>
inline void vstore(T* p, V v) {
    std::memcpy(p, &v, sizeof(V));
}
template <typename V, typename T>
inline V vsplat(T s) {
    return V{} + s;
}

template <typename T, typename V>
inline bool all_zero(V chk) {
    constexpr int L = sizeof(V) / sizeof(T);
    for (int l = 0; l < L; ++l) {
        if (!(chk[l] == T(0))) return false;
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// Separable convolution. For each output row y: a y-pass over the kny input rows y + hy - j
// (kny x nx x 4 B = 278 kB for 17 taps of a 4072-wide float image: L2-resident, so each input row
// is fetched from memory once) into one row `acc` of all nx columns (L1), then an x-pass of acc
// into the valid columns of the output row. Both passes keep the accumulators in registers with
// the taps as the inner loop (x in chunks of 4 vectors outer), and use the kernel's symmetry when
// it is exactly symmetric, k[h+i] = k[h-i]: sum = k[h] a[x] + sum_i k[h+i] (a[x-i] + a[x+i]),
// halving the multiplies. Sums run in T (float for float images: measured error ~1e-7 of the
// image scale for Gaussian kernels, well inside the documented 1e-5).
// ---------------------------------------------------------------------------------------------

template <typename T>
inline bool is_symmetric(const T* k, int n) {
    for (int i = 0; i < n / 2; ++i) {
        if (k[i] != k[n - 1 - i]) return false;
    }
    return true;
}

// acc[x] = sum_j k[j] * rows[j][x] for x < n. rows[j] holds input row y + h - j.
template <typename T, bool Sym>
inline void ypass(const T* const* rows, const T* k, int kn, int n, T* acc) {
    using V = typename Simd<T>::V;
    constexpr int L = Simd<T>::L;
    const int h = kn / 2;
    int x = 0;
    for (; x + 4 * L <= n; x += 4 * L) {
        V a[4];
        if (Sym) {
            const V c = vsplat<V>(k[h]);
            for (int u = 0; u < 4; ++u) a[u] = c * vload<V>(rows[h] + x + u * L);
            for (int i = 1; i <= h; ++i) {
                const V w = vsplat<V>(k[h + i]);
                const T* lo = rows[h - i] + x;
                const T* hi = rows[h + i] + x;
                for (int u = 0; u < 4; ++u) a[u] += w * (vload<V>(lo + u * L) + vload<V>(hi + u * L));
            }
        } else {
            const V c = vsplat<V>(k[0]);
            for (int u = 0; u < 4; ++u) a[u] = c * vload<V>(rows[0] + x + u * L);
            for (int j = 1; j < kn; ++j) {
                const V w = vsplat<V>(k[j]);
                for (int u = 0; u < 4; ++u) a[u] += w * vload<V>(rows[j] + x + u * L);
            }
        }
        for (int u = 0; u < 4; ++u) vstore(acc + x + u * L, a[u]);
    }
    for (; x < n; ++x) {  // scalar tail: the same operations in the same order as each lane
        T a;
        if (Sym) {
            a = k[h] * rows[h][x];
            for (int i = 1; i <= h; ++i) a += k[h + i] * (rows[h - i][x] + rows[h + i][x]);
        } else {
            a = k[0] * rows[0][x];
            for (int j = 1; j < kn; ++j) a += k[j] * rows[j][x];
        }
        acc[x] = a;
    }
}

// out[xv] = sum_i k[i] * a[xv + 2h - i] for xv < nv (a: the y-smoothed row, out: its valid part).
template <typename T, bool Sym>
inline void xpass(const T* a, const T* k, int kn, int nv, T* out, typename Simd<T>::V& chk) {
    using V = typename Simd<T>::V;
    constexpr int L = Simd<T>::L;
    const int h = kn / 2;
    const V zero{};
    int x = 0;
    for (; x + 4 * L <= nv; x += 4 * L) {
        V s[4];
        if (Sym) {
            const T* c = a + x + h;
            const V w0 = vsplat<V>(k[h]);
            for (int u = 0; u < 4; ++u) s[u] = w0 * vload<V>(c + u * L);
            for (int i = 1; i <= h; ++i) {
                const V w = vsplat<V>(k[h + i]);
                for (int u = 0; u < 4; ++u) s[u] += w * (vload<V>(c - i + u * L) + vload<V>(c + i + u * L));
            }
        } else {
            const T* c = a + x + 2 * h;
            const V w0 = vsplat<V>(k[0]);
            for (int u = 0; u < 4; ++u) s[u] = w0 * vload<V>(c + u * L);
            for (int i = 1; i < kn; ++i) {
                const V w = vsplat<V>(k[i]);
                for (int u = 0; u < 4; ++u) s[u] += w * vload<V>(c - i + u * L);
            }
        }
        for (int u = 0; u < 4; ++u) {
            vstore(out + x + u * L, s[u]);
            chk += s[u] * zero;
        }
    }
    T chk_s = 0;
    for (; x < nv; ++x) {
        T s;
        if (Sym) {
            const T* c = a + x + h;
            s = k[h] * c[0];
            for (int i = 1; i <= h; ++i) s += k[h + i] * (c[-i] + c[i]);
        } else {
            const T* c = a + x + 2 * h;
            s = k[0] * c[0];
            for (int i = 1; i < kn; ++i) s += k[i] * c[-i];
        }
        out[x] = s;
        chk_s += s * T(0);
    }
    chk[0] += chk_s;
}

// Output rows [y_begin, y_begin + out.ny) of the valid region (hy <= y_begin, y_begin + out.ny <= ny - hy),
// image row y written to out.row(y - y_begin): each row is computed from its own kny input rows only, so
// a band of rows is bit-identical to the same rows of the whole image (detection smooths in bands).
template <typename T>
bool separable(ImageView<const T> in, ImageView<T> out, int y_begin, const T* kx, int knx, const T* ky, int kny) {
    using V = typename Simd<T>::V;
    const int hx = knx / 2, hy = kny / 2;
    const int nvx = in.nx - 2 * hx;
    const bool symx = is_symmetric(kx, knx), symy = is_symmetric(ky, kny);
    std::vector<T> acc(static_cast<std::size_t>(in.nx));
    std::vector<const T*> rows(static_cast<std::size_t>(kny));
    V chk{};
    for (int y = y_begin; y < y_begin + out.ny; ++y) {
        for (int j = 0; j < kny; ++j) rows[static_cast<std::size_t>(j)] = in.row(y + hy - j);
        if (symy) {
            ypass<T, true>(rows.data(), ky, kny, in.nx, acc.data());
        } else {
            ypass<T, false>(rows.data(), ky, kny, in.nx, acc.data());
        }
        T* o = out.row(y - y_begin) + hx;
        if (symx) {
            xpass<T, true>(acc.data(), kx, knx, nvx, o, chk);
        } else {
            xpass<T, false>(acc.data(), kx, knx, nvx, o, chk);
        }
    }
    return all_zero<T>(chk);
}

// ---------------------------------------------------------------------------------------------
// Direct 2-D convolution, register-blocked: for each output row and chunk of 4 vectors of
// columns, all kny x knx taps accumulate into registers (one load, multiply and add per tap and
// vector). Sums in T, taps in row-major order.
// ---------------------------------------------------------------------------------------------
template <typename T>
bool direct(ImageView<const T> in, ImageView<T> out, const T* k, int kny, int knx) {
    using V = typename Simd<T>::V;
    constexpr int L = Simd<T>::L;
    const int hx = knx / 2, hy = kny / 2;
    const int nvx = in.nx - 2 * hx;
    const V zero{};
    V chk{};
    T chk_s = 0;
    for (int y = hy; y < in.ny - hy; ++y) {
        T* o = out.row(y) + hx;
        int x = 0;
        for (; x + 4 * L <= nvx; x += 4 * L) {
            V s[4] = {V{}, V{}, V{}, V{}};
            bool first = true;
            for (int j = 0; j < kny; ++j) {
                const T* src = in.row(y + hy - j) + x + 2 * hx;
                const T* kr = k + static_cast<std::ptrdiff_t>(j) * knx;
                for (int i = 0; i < knx; ++i) {
                    const V w = vsplat<V>(kr[i]);
                    if (first) {
                        for (int u = 0; u < 4; ++u) s[u] = w * vload<V>(src - i + u * L);
                        first = false;
                    } else {
                        for (int u = 0; u < 4; ++u) s[u] += w * vload<V>(src - i + u * L);
                    }
                }
            }
            for (int u = 0; u < 4; ++u) {
                vstore(o + x + u * L, s[u]);
                chk += s[u] * zero;
            }
        }
        for (; x < nvx; ++x) {
            T s = 0;
            bool first = true;
            for (int j = 0; j < kny; ++j) {
                const T* src = in.row(y + hy - j) + x + 2 * hx;
                const T* kr = k + static_cast<std::ptrdiff_t>(j) * knx;
                for (int i = 0; i < knx; ++i) {
                    if (first) {
                        s = kr[i] * src[-i];
                        first = false;
                    } else {
                        s += kr[i] * src[-i];
                    }
                }
            }
            o[x] = s;
            chk_s += s * T(0);
        }
    }
    chk[0] += chk_s;
    return all_zero<T>(chk);
}

// ---------------------------------------------------------------------------------------------
// FFT convolution by overlap-save (Oppenheim & Schafer, "Discrete-Time Signal Processing", 3rd
// ed., sec. 8.7.3): the image is cut into N x N tiles overlapping by (kny-1, knx-1); each tile is
// circularly convolved with the kernel through a 2-D DFT, and only the outputs that did not wrap
// around (tile rows >= kny-1, columns >= knx-1) are kept.
//
// The 1-D transforms are Stockham autosort FFTs (radix 4, plus one radix-2 stage when log2 n is
// odd; Cooley & Tukey 1965, Stockham 1966; see Van Loan, "Computational Frameworks for the FFT",
// sec. 1.7) computed on L independent transforms at once: each element is a vector whose L lanes
// belong to L adjacent columns, so butterflies never shuffle lanes, and the two
// ping-pong buffers of n vectors stay in L1 (n = 256: 2 x 16 kB).
//
// Tile pipeline (N a power of two, M = N/2, P = M+1 rounded up to L):
//  1. along y, per strip of L columns: the real columns, two rows at a time as one complex
//     sequence z_j = t(2j) + i t(2j+1) (the "2-for-1" packing: Press et al., Numerical Recipes,
//     3rd ed., sec. 12.3), one complex FFT of length M, then the split F(k) = E(k) + W_N^k O(k),
//     k = 0..M; stored transposed, S[x][k] (the Hermitian half along y);
//  2. along x, per strip of L frequencies k: forward FFT of length N, product with the kernel
//     spectrum, inverse FFT, in place in S: the second axis also runs across lanes;
//  3. along y again, per strip of L columns: the inverse of step 1, then the valid rows and
//     columns are written to the output.
// All normalisation (1/N^2 and the two factors 2 the packing leaves) is folded into the kernel
// spectrum, which is computed once per call by steps 1-2 on the zero-padded kernel.
// Cost ~ (number of tiles) x N^2 log2 N; the tile size minimising it is chosen by the caller.
// ---------------------------------------------------------------------------------------------

// out[l] = lane l of in[0..L) (an L x L transpose of lanes): pure data movement, so the values
// are the same whichever way it is done; shuffles on x86 (8 x 8 floats with AVX2, 4 x 4 with SSE),
// element by element elsewhere. Replaces the FFT's strided scalar stores and loads between the
// lanes-as-columns buffers and the [x][k] spectrum (issue 25: ~15% of the 41 x 41 convolution).
template <typename T>
inline void transpose_lanes(const typename Simd<T>::V* in, typename Simd<T>::V* out) {
    using V = typename Simd<T>::V;
    constexpr int L = Simd<T>::L;
    for (int l = 0; l < L; ++l) {
        V t{};
        for (int j = 0; j < L; ++j) t[j] = in[j][l];
        out[l] = t;
    }
}
#if defined(__AVX2__)
template <>
inline void transpose_lanes<float>(const Simd<float>::V* in, Simd<float>::V* out) {
    __m256 r[8];
    for (int j = 0; j < 8; ++j) r[j] = (__m256)in[j];
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    out[0] = (Simd<float>::V)_mm256_permute2f128_ps(u0, u4, 0x20);
    out[1] = (Simd<float>::V)_mm256_permute2f128_ps(u1, u5, 0x20);
    out[2] = (Simd<float>::V)_mm256_permute2f128_ps(u2, u6, 0x20);
    out[3] = (Simd<float>::V)_mm256_permute2f128_ps(u3, u7, 0x20);
    out[4] = (Simd<float>::V)_mm256_permute2f128_ps(u0, u4, 0x31);
    out[5] = (Simd<float>::V)_mm256_permute2f128_ps(u1, u5, 0x31);
    out[6] = (Simd<float>::V)_mm256_permute2f128_ps(u2, u6, 0x31);
    out[7] = (Simd<float>::V)_mm256_permute2f128_ps(u3, u7, 0x31);
}
#elif defined(__SSE2__)
template <>
inline void transpose_lanes<float>(const Simd<float>::V* in, Simd<float>::V* out) {
    __m128 r0 = (__m128)in[0], r1 = (__m128)in[1], r2 = (__m128)in[2], r3 = (__m128)in[3];
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    out[0] = (Simd<float>::V)r0;
    out[1] = (Simd<float>::V)r1;
    out[2] = (Simd<float>::V)r2;
    out[3] = (Simd<float>::V)r3;
}
#endif

template <typename T>
struct FftTables {
    int n = 0;
    std::vector<T> c, s;  // cos, sin of 2 pi k / n, k < n
    explicit FftTables(int n_) : n(n_), c(static_cast<std::size_t>(n_)), s(static_cast<std::size_t>(n_)) {
        const double pi = 3.14159265358979323846;
        for (int k = 0; k < n; ++k) {
            c[static_cast<std::size_t>(k)] = static_cast<T>(std::cos(2.0 * pi * k / n));
            s[static_cast<std::size_t>(k)] = static_cast<T>(std::sin(2.0 * pi * k / n));
        }
    }
};

// Complex FFT of length n on L lanes, x (re, im) -> result; y is scratch of the same size.
// Forward: X_k = sum_j x_j exp(-2 pi i jk/n); Inverse: exp(+...), unnormalised. Returns the
// buffer pair holding the result (x or y).
template <typename T, bool Inverse>
inline void fft_lanes(const FftTables<T>& tw, typename Simd<T>::V*& xr, typename Simd<T>::V*& xi,
                      typename Simd<T>::V*& yr, typename Simd<T>::V*& yi) {
    using V = typename Simd<T>::V;
    const int n = tw.n;
    int len = n, s = 1;  // current sub-transform length and stride (len * s == n)
    while (len > 1) {
        if (len % 4 == 0) {
            const int m = len / 4;
            // p = 0: the twiddles are 1 (W^0), so the products are left out (a third of the stages'
            // twiddle products for n = 256, all of the last stage's). x * 1 - y * 0 is x except for
            // the sign of an exact zero, so the results differ from the full products at most there.
            for (int q = 0; q < s; ++q) {
                const int i0 = q, i1 = i0 + s * m, i2 = i1 + s * m, i3 = i2 + s * m;
                const V ar = xr[i0], ai = xi[i0], br = xr[i1], bi = xi[i1];
                const V cr = xr[i2], ci = xi[i2], dr = xr[i3], di = xi[i3];
                const V apcr = ar + cr, apci = ai + ci, amcr = ar - cr, amci = ai - ci;
                const V bpdr = br + dr, bpdi = bi + di, bmdr = br - dr, bmdi = bi - di;
                const V jr = Inverse ? -bmdi : bmdi, ji = Inverse ? bmdr : -bmdr;
                const int o0 = q, o1 = o0 + s, o2 = o1 + s, o3 = o2 + s;
                yr[o0] = apcr + bpdr;
                yi[o0] = apci + bpdi;
                yr[o1] = amcr + jr;
                yi[o1] = amci + ji;
                yr[o2] = apcr - bpdr;
                yi[o2] = apci - bpdi;
                yr[o3] = amcr - jr;
                yi[o3] = amci - ji;
            }
            for (int p = 1; p < m; ++p) {
                const std::size_t t1 = static_cast<std::size_t>(p) * s, t2 = 2 * t1, t3 = 3 * t1;
                const V c1 = vsplat<V>(tw.c[t1]), c2 = vsplat<V>(tw.c[t2]), c3 = vsplat<V>(tw.c[t3]);
                // forward twiddle W^k = c - i s; inverse: c + i s
                const V s1 = vsplat<V>(Inverse ? tw.s[t1] : -tw.s[t1]);
                const V s2 = vsplat<V>(Inverse ? tw.s[t2] : -tw.s[t2]);
                const V s3 = vsplat<V>(Inverse ? tw.s[t3] : -tw.s[t3]);
                for (int q = 0; q < s; ++q) {
                    const int i0 = q + s * p, i1 = i0 + s * m, i2 = i1 + s * m, i3 = i2 + s * m;
                    const V ar = xr[i0], ai = xi[i0], br = xr[i1], bi = xi[i1];
                    const V cr = xr[i2], ci = xi[i2], dr = xr[i3], di = xi[i3];
                    const V apcr = ar + cr, apci = ai + ci, amcr = ar - cr, amci = ai - ci;
                    const V bpdr = br + dr, bpdi = bi + di, bmdr = br - dr, bmdi = bi - di;
                    // forward: -i (b - d) = (bmdi, -bmdr); inverse: +i (b - d) = (-bmdi, bmdr)
                    const V jr = Inverse ? -bmdi : bmdi, ji = Inverse ? bmdr : -bmdr;
                    const int o0 = q + s * 4 * p, o1 = o0 + s, o2 = o1 + s, o3 = o2 + s;
                    yr[o0] = apcr + bpdr;
                    yi[o0] = apci + bpdi;
                    const V u1r = amcr + jr, u1i = amci + ji;
                    const V u2r = apcr - bpdr, u2i = apci - bpdi;
                    const V u3r = amcr - jr, u3i = amci - ji;
                    yr[o1] = u1r * c1 - u1i * s1;
                    yi[o1] = u1r * s1 + u1i * c1;
                    yr[o2] = u2r * c2 - u2i * s2;
                    yi[o2] = u2r * s2 + u2i * c2;
                    yr[o3] = u3r * c3 - u3i * s3;
                    yi[o3] = u3r * s3 + u3i * c3;
                }
            }
            len = m;
            s *= 4;
        } else {  // radix 2 (len == 2 here, since n is a power of two)
            const int m = len / 2;  // 1
            for (int q = 0; q < s; ++q) {  // p = 0: twiddle 1, as above
                const V ar = xr[q], ai = xi[q], br = xr[q + s], bi = xi[q + s];
                yr[q] = ar + br;
                yi[q] = ai + bi;
                yr[q + s] = ar - br;
                yi[q + s] = ai - bi;
            }
            for (int p = 1; p < m; ++p) {
                const std::size_t t1 = static_cast<std::size_t>(p) * s;
                const V c1 = vsplat<V>(tw.c[t1]);
                const V s1 = vsplat<V>(Inverse ? tw.s[t1] : -tw.s[t1]);
                for (int q = 0; q < s; ++q) {
                    const int i0 = q + s * p, i1 = i0 + s * m;
                    const V ar = xr[i0], ai = xi[i0], br = xr[i1], bi = xi[i1];
                    const int o0 = q + s * 2 * p, o1 = o0 + s;
                    yr[o0] = ar + br;
                    yi[o0] = ai + bi;
                    const V dr = ar - br, di = ai - bi;
                    yr[o1] = dr * c1 - di * s1;
                    yi[o1] = dr * s1 + di * c1;
                }
            }
            len = m;
            s *= 2;
        }
        std::swap(xr, yr);
        std::swap(xi, yi);
    }
}

template <typename T>
struct FftConv {
    using V = typename Simd<T>::V;
    static constexpr int L = Simd<T>::L;
    int N, M, P;
    FftTables<T> twN, twM;
    std::vector<V> b0r, b0i, b1r, b1i;  // L1 ping-pong buffers, N vectors each
    std::vector<T> Sr, Si;              // N x P spectrum of the current tile, [x][k]
    std::vector<T> Kr, Ki;              // N x P kernel spectrum (scaled), [u][k]
    std::vector<T> tile;                // N x N zero-padded copy for tiles crossing the image edge
    std::vector<const T*> rows;         // N row pointers of the current tile
    int prefetch_cols = 0;              // columns [N, N + this) of rows[] are the next tile's new ones

    explicit FftConv(int n)
        : N(n), M(n / 2), P(((n / 2 + 1) + L - 1) / L * L), twN(n), twM(n / 2),
          b0r(static_cast<std::size_t>(n)), b0i(static_cast<std::size_t>(n)), b1r(static_cast<std::size_t>(n)),
          b1i(static_cast<std::size_t>(n)), Sr(static_cast<std::size_t>(n) * P), Si(Sr.size()),
          tile(static_cast<std::size_t>(n) * n), rows(static_cast<std::size_t>(n)) {}

    // Step 1: rows[] (N rows, N columns read from each) -> S.
    void forward_y() {
        for (int x0 = 0; x0 < N; x0 += L) {
            V *xr = b0r.data(), *xi = b0i.data(), *yr = b1r.data(), *yi = b1i.data();
            // The strip's first touch of the image misses the caches (256 rows, 256 streams: too many
            // for the hardware prefetcher), so the next tile's new columns are prefetched meanwhile,
            // one cache line per row per 64 bytes of strips (issue 25: ~10% of the 41 x 41 time).
            const bool pf = x0 < prefetch_cols && (x0 * static_cast<int>(sizeof(T))) % 64 == 0;
            for (int j = 0; j < M; ++j) {
                const T* r0 = rows[static_cast<std::size_t>(2 * j)];
                const T* r1 = rows[static_cast<std::size_t>(2 * j + 1)];
                if (pf) {
                    __builtin_prefetch(r0 + N + x0);
                    __builtin_prefetch(r1 + N + x0);
                }
                xr[j] = vload<V>(r0 + x0);
                xi[j] = vload<V>(r1 + x0);
            }
            fft_lanes<T, false>(twM, xr, xi, yr, yi);
            // F(k) = [Z(k) + conj Z(M-k)] + W_N^k [Z(k) - conj Z(M-k)] / i   (twice the true F),
            // L frequencies at a time, transposed to S[x][k] by lane shuffles (the columns k in
            // (M, P) are padding: zeros).
            for (int k0 = 0; k0 <= M; k0 += L) {
                V fr[L], fi[L], tr[L], ti[L];
                for (int j = 0; j < L; ++j) {
                    const int k = k0 + j;
                    if (k > M) {
                        fr[j] = V{};
                        fi[j] = V{};
                        continue;
                    }
                    const int a = k == M ? 0 : k, b = k == 0 ? 0 : M - k;  // k % M, (M - k) % M
                    const V er = xr[a] + xr[b], ei = xi[a] - xi[b];
                    const V or_ = xi[a] + xi[b], oi = xr[b] - xr[a];
                    const V c = vsplat<V>(twN.c[static_cast<std::size_t>(k)]);
                    const V s = vsplat<V>(-twN.s[static_cast<std::size_t>(k)]);
                    fr[j] = er + (or_ * c - oi * s);
                    fi[j] = ei + (or_ * s + oi * c);
                }
                transpose_lanes<T>(fr, tr);
                transpose_lanes<T>(fi, ti);
                T* dr = Sr.data() + static_cast<std::ptrdiff_t>(x0) * P + k0;
                T* di = Si.data() + static_cast<std::ptrdiff_t>(x0) * P + k0;
                for (int l = 0; l < L; ++l) {
                    vstore(dr + static_cast<std::ptrdiff_t>(l) * P, tr[l]);
                    vstore(di + static_cast<std::ptrdiff_t>(l) * P, ti[l]);
                }
            }
        }
    }

    // Step 2 for one strip of L frequencies k0..: forward FFT along x; if K, multiply by the kernel
    // spectrum and inverse-transform; written back to S.
    void along_x(int k0, bool convolve) {
        V *xr = b0r.data(), *xi = b0i.data(), *yr = b1r.data(), *yi = b1i.data();
        for (int u = 0; u < N; ++u) {
            xr[u] = vload<V>(Sr.data() + static_cast<std::ptrdiff_t>(u) * P + k0);
            xi[u] = vload<V>(Si.data() + static_cast<std::ptrdiff_t>(u) * P + k0);
        }
        fft_lanes<T, false>(twN, xr, xi, yr, yi);
        if (convolve) {
            for (int u = 0; u < N; ++u) {
                const V kr = vload<V>(Kr.data() + static_cast<std::ptrdiff_t>(u) * P + k0);
                const V ki = vload<V>(Ki.data() + static_cast<std::ptrdiff_t>(u) * P + k0);
                const V ar = xr[u], ai = xi[u];
                xr[u] = ar * kr - ai * ki;
                xi[u] = ar * ki + ai * kr;
            }
            fft_lanes<T, true>(twN, xr, xi, yr, yi);
        }
        for (int u = 0; u < N; ++u) {
            vstore(Sr.data() + static_cast<std::ptrdiff_t>(u) * P + k0, xr[u]);
            vstore(Si.data() + static_cast<std::ptrdiff_t>(u) * P + k0, xi[u]);
        }
    }

    // Kernel spectrum: kny x knx kernel at the tile origin, steps 1-2, scaled by 1/(4 N^2).
    void set_kernel(const double* k, int kny, int knx) {
        std::fill(tile.begin(), tile.end(), T(0));
        for (int j = 0; j < kny; ++j) {
            for (int i = 0; i < knx; ++i) {
                tile[static_cast<std::size_t>(j) * N + i] = static_cast<T>(k[static_cast<std::size_t>(j) * knx + i]);
            }
        }
        for (int r = 0; r < N; ++r) rows[static_cast<std::size_t>(r)] = tile.data() + static_cast<std::ptrdiff_t>(r) * N;
        std::fill(Sr.begin(), Sr.end(), T(0));
        std::fill(Si.begin(), Si.end(), T(0));
        forward_y();
        for (int k0 = 0; k0 < P; k0 += L) along_x(k0, false);
        const T scale = static_cast<T>(1.0 / (4.0 * N * static_cast<double>(N)));
        Kr.resize(Sr.size());
        Ki.resize(Si.size());
        for (std::size_t q = 0; q < Sr.size(); ++q) {
            Kr[q] = Sr[q] * scale;
            Ki[q] = Si[q] * scale;
        }
    }

    // One tile with its top-left input pixel at (ty, tx); writes out(ty + y - hy, tx + x - hx) for
    // tile rows y >= kny-1 and columns x >= knx-1 inside the valid region.
    void run_tile(const ImageView<const T>& in, const ImageView<T>& out, int ty, int tx, int kny, int knx, V& chk) {
        const int hy = kny / 2, hx = knx / 2;
        if (ty + N <= in.ny && tx + N <= in.nx) {
            for (int r = 0; r < N; ++r) rows[static_cast<std::size_t>(r)] = in.row(ty + r) + tx;
            // the next tile along x reads columns up to tx + sx + N (sx = N - knx + 1)
            prefetch_cols = std::max(0, std::min(N - knx + 1, in.nx - (tx + N)));
        } else {
            prefetch_cols = 0;
            const int h = std::min(N, in.ny - ty), w = std::min(N, in.nx - tx);
            for (int r = 0; r < N; ++r) {
                T* d = tile.data() + static_cast<std::ptrdiff_t>(r) * N;
                if (r < h) {
                    std::memcpy(d, in.row(ty + r) + tx, sizeof(T) * static_cast<std::size_t>(w));
                    std::fill(d + w, d + N, T(0));
                } else {
                    std::fill(d, d + N, T(0));
                }
                rows[static_cast<std::size_t>(r)] = d;
            }
        }
        forward_y();
        for (int k0 = 0; k0 < P; k0 += L) along_x(k0, true);
        // Step 3.
        const int ylo = kny - 1, yhi = std::min(N, in.ny - ty);  // tile rows [ylo, yhi) are written
        const int xlo = knx - 1, xhi = std::min(N, in.nx - tx);
        const V zero{};
        for (int x0 = 0; x0 < N; x0 += L) {
            if (x0 + L <= xlo || x0 >= xhi) continue;
            V *xr = b0r.data(), *xi = b0i.data(), *yr = b1r.data(), *yi = b1i.data();
            // gather G(k), k = 0..P, lanes x0..x0+L-1, into y buffers (scratch, P <= N vectors) by
            // lane shuffles
            for (int k0 = 0; k0 < P; k0 += L) {
                V br[L], bi[L];
                for (int l = 0; l < L; ++l) {
                    br[l] = vload<V>(Sr.data() + static_cast<std::ptrdiff_t>(x0 + l) * P + k0);
                    bi[l] = vload<V>(Si.data() + static_cast<std::ptrdiff_t>(x0 + l) * P + k0);
                }
                transpose_lanes<T>(br, yr + k0);
                transpose_lanes<T>(bi, yi + k0);
            }
            // Z(k) = [G(k) + conj G(M-k)] + i W_N^-k [G(k) - conj G(M-k)], k < M
            for (int k = 0; k < M; ++k) {
                const V ar = yr[k], ai = yi[k], br = yr[M - k], bi = yi[M - k];
                const V er = ar + br, ei = ai - bi, dr = ar - br, di = ai + bi;
                const V c = vsplat<V>(twN.c[static_cast<std::size_t>(k)]);
                const V s = vsplat<V>(twN.s[static_cast<std::size_t>(k)]);
                const V or_ = dr * c - di * s, oi = dr * s + di * c;
                xr[k] = er - oi;
                xi[k] = ei + or_;
            }
            fft_lanes<T, true>(twM, xr, xi, yr, yi);
            const int c0 = tx + x0 - hx;  // output column of lane 0
            const bool full = x0 >= xlo && x0 + L <= xhi;
            // The same lines of the next tile's output (sx columns on), prefetched for writing: the
            // partial line writes below otherwise wait for each line's read from memory.
            const int cn = c0 + (N - knx + 1);
            const bool pfw = (x0 * static_cast<int>(sizeof(T))) % 64 == 0 && cn >= 0 &&
                             cn + 64 / static_cast<int>(sizeof(T)) <= out.nx;
            for (int y = ylo; y < yhi; ++y) {
                const V v = (y & 1) ? xi[y >> 1] : xr[y >> 1];
                T* o = out.row(ty + y - hy) + c0;
                if (pfw) __builtin_prefetch(out.row(ty + y - hy) + cn, 1);
                if (full) {
                    vstore(o, v);
                    chk += v * zero;
                } else {
                    for (int l = 0; l < L; ++l) {
                        if (x0 + l >= xlo && x0 + l < xhi) {
                            o[l] = v[l];
                            chk[0] += v[l] * T(0);
                        }
                    }
                }
            }
        }
    }
};

// Overlap-save over the whole image with N x N tiles.
template <typename T>
bool fft_convolve(ImageView<const T> in, ImageView<T> out, const double* k, int kny, int knx, int n) {
    using V = typename Simd<T>::V;
    FftConv<T> f(n);
    f.set_kernel(k, kny, knx);
    V chk{};
    const int sy = n - (kny - 1), sx = n - (knx - 1);
    for (int ty = 0; ty <= in.ny - kny; ty += sy) {
        for (int tx = 0; tx <= in.nx - knx; tx += sx) f.run_tile(in, out, ty, tx, kny, knx, chk);
    }
    return all_zero<T>(chk);
}

inline const ConvKernels& make_kernels() {
    static const ConvKernels table{&separable<float>, &separable<double>, &direct<float>,
                                   &direct<double>,   &fft_convolve<float>, &fft_convolve<double>};
    return table;
}

}  // namespace
}  // namespace visitcal
