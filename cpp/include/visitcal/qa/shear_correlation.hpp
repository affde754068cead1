// Two-point correlation of two spin-2 fields on a plane, in logarithmic separation bins, by an exact
// sum over all pairs: the pair kernel of the rho statistics (Jarvis et al. 2016, MNRAS 460, 2245,
// eqs. 3-7) of visitcal.qa.rho.
//
// Points k = 0..n-1 at (x_k, y_k) (any flat coordinates; the Python side passes arcmin on a gnomonic
// tangent plane) carry two spin-2 values a_k = a1_k + i a2_k and b_k = b1_k + i b2_k and a weight w_k.
// For a pair (i, j) with separation r = |p_j - p_i| and direction phi = atan2(y_j - y_i, x_j - x_i):
//
//   xi+ term:  w_i w_j a_i conj(b_j)                       (rotation-free: the tangential/cross
//   xi- term:  w_i w_j a_i b_j exp(-4 i phi)                projections cancel in xi+)
//
// i.e. xi+ = <a_t b_t + a_x b_x> and xi- = <a_t b_t - a_x b_x> with a_t + i a_x = -a exp(-2 i phi), the
// conventions of TreeCorr's GGCorrelation (its xip, xip_im, xim, xim_im). exp(-4 i phi) is computed
// without trigonometry as conj((dx + i dy)^4) / r^4; it is the same for (i, j) and (j, i).
//
// Pairs counted:
//  - auto (cross == false, a is b): every unordered pair i < j once; xip_im is then 0 by definition
//    (Im(a_i conj(a_j)) changes sign with the order of the pair, and the ordered pairs cancel: a sum
//    over unordered pairs would depend on which point comes first, TreeCorr's tree order for it);
//  - cross (cross == true, a and b two fields at the same points): every ordered pair (i, j) with
//    i != j, i.e. for each i < j both a_i conj(b_j) and a_j conj(b_i), weight 2 w_i w_j and 2 pairs.
//    This is TreeCorr's count for two catalogs holding the same positions (its i == j pairs have
//    r = 0 < min_sep and drop out).
// A pair is in bin k = floor((ln r - ln min_sep) / bin_size), bin_size = ln(max_sep/min_sep)/nbins,
// when min_sep <= r < max_sep (compared as r^2, as TreeCorr does; a k rounded to nbins is dropped).
//
// Results are raw sums per bin (the caller normalises by `weight`): weight = sum w_i w_j,
// npairs, sum_wr = sum w_i w_j r, sum_wlogr = sum w_i w_j ln r, and the four correlation sums.
//
// Cost O(n^2) single-threaded, summed in the fixed order i ascending, j ascending (deterministic: the
// same inputs give the same bits). The caller bounds n (QaConfig.rho_max_stars).
// Thread safety: a pure function.
#pragma once

#include <cstddef>
#include <vector>

namespace visitcal {

/// Per-bin raw sums of `shear_correlation` (each vector has nbins entries).
struct ShearCorrelationSums {
    std::vector<double> weight;     // sum of w_i w_j
    std::vector<double> npairs;     // number of pairs (ordered pairs in cross mode)
    std::vector<double> sum_wr;     // sum of w_i w_j r
    std::vector<double> sum_wlogr;  // sum of w_i w_j ln r
    std::vector<double> xip;        // sum of w_i w_j Re(a_i conj(b_j))
    std::vector<double> xip_im;     // sum of w_i w_j Im(a_i conj(b_j))
    std::vector<double> xim;        // sum of w_i w_j Re(a_i b_j exp(-4 i phi))
    std::vector<double> xim_im;     // sum of w_i w_j Im(a_i b_j exp(-4 i phi))
};

/// The largest number of bins accepted (a bound on the output size, not on the physics).
inline constexpr int kShearCorrelationMaxBins = 10000;

/// Pair sums of the spin-2 fields a (a1, a2) and b (b1, b2) at (x, y) with weights w, all of length n,
/// in `nbins` logarithmic bins between min_sep and max_sep (units of x, y). `cross` false: auto
/// correlation of a (b must hold the same values; only i < j pairs); true: all ordered pairs i != j.
/// Throws std::invalid_argument, naming the argument, for a non-finite value (index given), for
/// min_sep <= 0 or max_sep <= min_sep, or nbins outside [1, kShearCorrelationMaxBins].
ShearCorrelationSums shear_correlation(const double* x, const double* y, const double* a1, const double* a2,
                                       const double* b1, const double* b2, const double* w, std::size_t n,
                                       double min_sep, double max_sep, int nbins, bool cross);

}  // namespace visitcal
