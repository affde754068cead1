// The per-pixel loops of the background statistics (background.cpp), compiled twice: at the
// baseline ISA in background.cpp and for AVX2 in background_avx2.cpp, chosen at run time
// (cpu_has_avx2), as the convolution kernels are (convolve_kernels.hpp). Each AVX2 loop performs,
// lane for lane, the same IEEE operations in the same order as its portable twin (no FMA,
// contraction off), so the statistics are bit-identical whichever path runs
// (tests/unit/detection/test_background.py compares them through BackgroundControl.baseline_only).
//
// Only raw loops live here (no std:: algorithms or containers): the AVX2 translation unit must not
// emit out-of-line copies of templates that the baseline code could end up linked against.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace visitcal {

// Sums of 1, d and d^2 (d = x - shift) over the values lo <= x <= hi.
struct BgWindowSums {
    double count = 0.0, s = 0.0, s2 = 0.0;
};

struct BgKernels {
    // Eight interleaved lanes (value i goes to lane i % 8), combined in lane order at the end.
    BgWindowSums (*window_sums)(const float* v, std::size_t n, double lo, double hi, double shift);
    // idx[i] = int(clamp((v[i] - lo) * scale, -1, nb) + 1) (the order statistics' buckets).
    void (*bucket_index)(const float* v, std::size_t n, float lo, float scale, int nb, std::uint16_t* idx);
    // For i in order, v[i] is appended at *dst[slot[idx[i]]]++ when that slot is >= 0; the nbid
    // bucket numbers bids[] are those with slot >= 0 (the AVX2 loop tests them 16 values at a time).
    void (*collect)(const float* v, const std::uint16_t* idx, std::size_t n, const int* slot,
                    const std::uint16_t* bids, int nbid, float** dst);
    // Appends the usable pixels of img[0, n) (finite, no bit of bad in msk, finite var; msk / var
    // may be null) at dst[c], in order, and returns the new count. dst must have room for
    // c + n + 8 values (the AVX2 loop stores eight at a time).
    std::size_t (*append_usable)(const float* img, const std::int32_t* msk, std::int32_t bad, const float* var,
                                 int n, float* dst, std::size_t c);
};

// The AVX2 build (background_avx2.cpp); the baseline one is make_bg_kernels() below.
const BgKernels& bg_kernels_avx2();

namespace {

BgWindowSums bgk_window_sums(const float* v, std::size_t n, double lo, double hi, double shift) {
    // The select and the eight lanes break the add-latency chain, so the loop streams while the
    // result stays the same for the same input.
    constexpr std::size_t L = 8;
    double c[L] = {}, s[L] = {}, s2[L] = {};
    std::size_t i = 0;
#if defined(__AVX2__)
    {
        const __m256d vlo = _mm256_set1_pd(lo), vhi = _mm256_set1_pd(hi), vsh = _mm256_set1_pd(shift);
        const __m256d one = _mm256_set1_pd(1.0);
        __m256d c0 = _mm256_setzero_pd(), c1 = c0, s0 = c0, s1 = c0, q0 = c0, q1 = c0;
        for (; i + L <= n; i += L) {
            const __m256d x0 = _mm256_cvtps_pd(_mm_loadu_ps(v + i));
            const __m256d x1 = _mm256_cvtps_pd(_mm_loadu_ps(v + i + 4));
            // (x >= lo) & (x <= hi): ordered compares, false for NaN as in C++.
            const __m256d m0 = _mm256_and_pd(_mm256_cmp_pd(x0, vlo, _CMP_GE_OQ), _mm256_cmp_pd(x0, vhi, _CMP_LE_OQ));
            const __m256d m1 = _mm256_and_pd(_mm256_cmp_pd(x1, vlo, _CMP_GE_OQ), _mm256_cmp_pd(x1, vhi, _CMP_LE_OQ));
            // in ? x - shift : +0.0, and in ? 1.0 : +0.0 (all-ones / all-zeros masks).
            const __m256d d0 = _mm256_and_pd(m0, _mm256_sub_pd(x0, vsh));
            const __m256d d1 = _mm256_and_pd(m1, _mm256_sub_pd(x1, vsh));
            c0 = _mm256_add_pd(c0, _mm256_and_pd(m0, one));
            c1 = _mm256_add_pd(c1, _mm256_and_pd(m1, one));
            s0 = _mm256_add_pd(s0, d0);
            s1 = _mm256_add_pd(s1, d1);
            q0 = _mm256_add_pd(q0, _mm256_mul_pd(d0, d0));
            q1 = _mm256_add_pd(q1, _mm256_mul_pd(d1, d1));
        }
        _mm256_storeu_pd(c, c0);
        _mm256_storeu_pd(c + 4, c1);
        _mm256_storeu_pd(s, s0);
        _mm256_storeu_pd(s + 4, s1);
        _mm256_storeu_pd(s2, q0);
        _mm256_storeu_pd(s2 + 4, q1);
    }
#else
    for (; i + L <= n; i += L) {
        for (std::size_t j = 0; j < L; ++j) {
            const double x = v[i + j];
            const bool in = (x >= lo) & (x <= hi);
            const double d = in ? x - shift : 0.0;
            c[j] += in ? 1.0 : 0.0;
            s[j] += d;
            s2[j] += d * d;
        }
    }
#endif
    for (std::size_t j = 0; i < n; ++i, ++j) {
        const double x = v[i];
        const bool in = (x >= lo) & (x <= hi);
        const double d = in ? x - shift : 0.0;
        c[j] += in ? 1.0 : 0.0;
        s[j] += d;
        s2[j] += d * d;
    }
    BgWindowSums out;
    for (std::size_t j = 0; j < L; ++j) {
        out.count += c[j];
        out.s += s[j];
        out.s2 += s2[j];
    }
    return out;
}

void bgk_bucket_index(const float* v, std::size_t n, float lo, float scale, int nb, std::uint16_t* idx) {
    const float top = static_cast<float>(nb);
    std::size_t i = 0;
#if defined(__AVX2__)
    {
        const __m256 vlo = _mm256_set1_ps(lo), vsc = _mm256_set1_ps(scale), m1 = _mm256_set1_ps(-1.0f);
        const __m256 vtop = _mm256_set1_ps(top), p1 = _mm256_set1_ps(1.0f);
        for (; i + 8 <= n; i += 8) {
            __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v + i), vlo), vsc);
            // std::max(t, -1) = t < -1 ? -1 : t; std::min(t, top) = top < t ? top : t (NaN stays NaN).
            t = _mm256_blendv_ps(t, m1, _mm256_cmp_ps(t, m1, _CMP_LT_OQ));
            t = _mm256_blendv_ps(t, vtop, _mm256_cmp_ps(vtop, t, _CMP_LT_OQ));
            const __m256i k = _mm256_cvttps_epi32(_mm256_add_ps(t, p1));
            // 0 <= k <= nb + 1 <= 4097 (NaN: INT_MIN, stored as 0 by both the cast and the pack).
            const __m128i lo4 = _mm256_castsi256_si128(k), hi4 = _mm256_extracti128_si256(k, 1);
            const __m128i low16 = _mm_set1_epi32(0xffff);
            const __m128i kk = _mm_packus_epi32(_mm_and_si128(lo4, low16), _mm_and_si128(hi4, low16));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(idx + i), kk);
        }
    }
#endif
    for (; i < n; ++i) {
        float t = (v[i] - lo) * scale;
        t = t < -1.0f ? -1.0f : t;
        t = top < t ? top : t;
        idx[i] = static_cast<std::uint16_t>(static_cast<int>(t + 1.0f));
    }
}

void bgk_collect(const float* v, const std::uint16_t* idx, std::size_t n, const int* slot, const std::uint16_t* bids,
                 int nbid, float** dst) {
    std::size_t i = 0;
#if defined(__AVX2__)
    if (nbid > 0 && nbid <= 8) {
        __m256i b[8];
        for (int j = 0; j < nbid; ++j) b[j] = _mm256_set1_epi16(static_cast<short>(bids[j]));
        for (; i + 16 <= n; i += 16) {
            const __m256i k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i));
            __m256i hit = _mm256_cmpeq_epi16(k, b[0]);
            for (int j = 1; j < nbid; ++j) hit = _mm256_or_si256(hit, _mm256_cmpeq_epi16(k, b[j]));
            if (_mm256_movemask_epi8(hit) == 0) continue;  // most blocks: none of the few buckets
            for (std::size_t u = i; u < i + 16; ++u) {
                const int s = slot[idx[u]];
                if (s >= 0) *dst[s]++ = v[u];
            }
        }
    }
#else
    (void)bids;
    (void)nbid;
#endif
    for (; i < n; ++i) {
        const int s = slot[idx[i]];
        if (s >= 0) *dst[s]++ = v[i];
    }
}

#if defined(__AVX2__)
// Left-packing permutations: entry m holds, byte by byte, the lanes whose bit is set in m.
struct BgPackLut {
    std::uint64_t e[256];
    constexpr BgPackLut() : e() {
        for (int m = 0; m < 256; ++m) {
            std::uint64_t p = 0;
            int k = 0;
            for (int b = 0; b < 8; ++b) {
                if ((m >> b) & 1) p |= static_cast<std::uint64_t>(b) << (8 * k++);
            }
            e[m] = p;
        }
    }
};
constexpr BgPackLut kBgPackLut{};

template <bool HasMask, bool HasVar>
std::size_t bgk_append_avx2(const float* img, const std::int32_t* msk, std::int32_t bad, const float* var, int n,
                            float* dst, std::size_t c) {
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000));
    const __m256i vbad = _mm256_set1_epi32(bad), zero = _mm256_setzero_si256();
    int x = 0;
    for (; x + 8 <= n; x += 8) {
        const __m256 val = _mm256_loadu_ps(img + x);
        __m256 ok = _mm256_cmp_ps(_mm256_and_ps(val, absm), inf, _CMP_LT_OQ);  // finite
        if (HasMask) {
            const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(msk + x));
            ok = _mm256_and_ps(ok, _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(m, vbad), zero)));
        }
        if (HasVar) {
            ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(var + x), absm), inf, _CMP_LT_OQ));
        }
        const int bits = _mm256_movemask_ps(ok);
        const __m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&kBgPackLut.e[bits])));
        _mm256_storeu_ps(dst + c, _mm256_permutevar8x32_ps(val, perm));
        c += static_cast<std::size_t>(__builtin_popcount(static_cast<unsigned>(bits)));
    }
    for (; x < n; ++x) {
        const float value = img[x];
        bool ok = (value - value) == 0.0f;  // finite
        if (HasMask) ok = ok && (msk[x] & bad) == 0;
        if (HasVar) ok = ok && (var[x] - var[x]) == 0.0f;
        dst[c] = value;
        c += ok ? 1 : 0;
    }
    return c;
}
#endif

std::size_t bgk_append_usable(const float* img, const std::int32_t* msk, std::int32_t bad, const float* var, int n,
                              float* dst, std::size_t c) {
#if defined(__AVX2__)
    if (msk && var) return bgk_append_avx2<true, true>(img, msk, bad, var, n, dst, c);
    if (msk) return bgk_append_avx2<true, false>(img, msk, bad, var, n, dst, c);
    if (var) return bgk_append_avx2<false, true>(img, msk, bad, var, n, dst, c);
    return bgk_append_avx2<false, false>(img, msk, bad, var, n, dst, c);
#else
    // Branch-free append: write every pixel, advance only over usable ones.
    for (int x = 0; x < n; ++x) {
        const float value = img[x];
        bool ok = (value - value) == 0.0f;  // finite (inf - inf and NaN are NaN)
        if (msk) ok = ok && (msk[x] & bad) == 0;
        if (var) ok = ok && (var[x] - var[x]) == 0.0f;
        dst[c] = value;
        c += ok ? 1 : 0;
    }
    return c;
#endif
}

inline const BgKernels& make_bg_kernels() {
    static const BgKernels table{&bgk_window_sums, &bgk_bucket_index, &bgk_collect, &bgk_append_usable};
    return table;
}

}  // namespace
}  // namespace visitcal
