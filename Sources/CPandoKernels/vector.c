// Element-wise kernels of the encoder (softmax, GELU, LayerNorm) over 16-float
// generic vectors. Each kernel body is written once and compiled three times:
// for AVX-512, for AVX2 + FMA, and for the baseline instruction set; the first
// call picks the widest the CPU runs. Swift itself is built for the baseline
// (SSE2), which left these memory-bound passes at a quarter of the vector
// width the machines have.

#include "pando_kernels.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

typedef float vf __attribute__((ext_vector_type(16)));
typedef int32_t vi __attribute__((ext_vector_type(16)));
typedef uint32_t vu __attribute__((ext_vector_type(16)));
#define W 16
#define INLINE static inline __attribute__((always_inline))

INLINE vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
INLINE void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

/// Loads `n < W` floats, the other lanes set to `fill`.
INLINE vf load_tail(const float *p, int n, float fill) {
    float t[W];
    for (int i = 0; i < W; i++) t[i] = i < n ? p[i] : fill;
    return load(t);
}

INLINE void store_tail(float *p, vf v, int n) {
    float t[W];
    store(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
}

INLINE float sum_lanes(vf v) {
    float s = 0;
    for (int i = 0; i < W; i++) s += v[i];
    return s;
}

INLINE float max_lanes(vf v) {
    float m = v[0];
    for (int i = 1; i < W; i++) m = v[i] > m ? v[i] : m;
    return m;
}

INLINE vf vmax(vf a, vf b) { return __builtin_elementwise_max(a, b); }
INLINE vf vmin(vf a, vf b) { return __builtin_elementwise_min(a, b); }

/// eˣ: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for eʳ, and 2ⁿ
/// built in the exponent bits. Lanes below −87 give 0; callers pass x ≤ 0.
INLINE vf vexp(vf x) {
    const float shifter = 12582912.0f; // 1.5·2²³: adding it rounds to an integer in the low mantissa bits
    vf t = x * 1.44269504f + shifter;
    vf n = t - shifter;
    vf r = x - n * 0.693145752f - n * 1.42860677e-6f;
    vf p = r * (1.0f / 720) + (1.0f / 120);
    p = p * r + (1.0f / 24);
    p = p * r + (1.0f / 6);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    // Unsigned: lanes below −87 wrap here (defined), and are zeroed below.
    vu e = (__builtin_bit_cast(vu, t) - 0x4B400000u + 127u) << 23;
    vf y = p * __builtin_bit_cast(vf, e);
    vi keep = x >= -87.0f;
    return __builtin_bit_cast(vf, __builtin_bit_cast(vi, y) & keep);
}

/// erf(x), an odd rational function on [−4, 4] (±1 to float precision
/// beyond); absolute error below 1e-7.
INLINE vf verf(vf x) {
    x = vmin(vmax(x, -4.0f), 4.0f);
    vf x2 = x * x;
    vf p = x2 * -2.72614225e-10f + 2.77068142e-08f;
    p = p * x2 - 2.10102402e-06f;
    p = p * x2 - 5.69250639e-05f;
    p = p * x2 - 7.34990630e-04f;
    p = p * x2 - 2.95460010e-03f;
    p = p * x2 - 1.60960333e-02f;
    vf q = x2 * -1.45660718e-05f - 2.13374055e-04f;
    q = q * x2 - 1.68282697e-03f;
    q = q * x2 - 7.37332916e-03f;
    q = q * x2 - 1.42647390e-02f;
    return x * p / q;
}

INLINE vf vgelu(vf x) { return 0.5f * x * (1.0f + verf(x * 0.707106781f)); }

INLINE vf vgelu_derivative(vf x) {
    return 0.5f * (1.0f + verf(x * 0.707106781f)) + x * 0.398942280f * vexp(-0.5f * x * x);
}

// MARK: kernel bodies

/// Replaces `row[0..<cols]` by exp(row − max row) and returns their sum: the softmax's
/// numerators, normalised by the caller (in place, or folded into what it computes next).
INLINE float softmax_numerators(float *row, int cols) {
    const int full = cols - cols % W, tail = cols - full;
    vf m = -INFINITY;
    for (int c = 0; c < full; c += W) m = vmax(m, load(row + c));
    if (tail) m = vmax(m, load_tail(row + full, tail, -INFINITY));
    const float mx = max_lanes(m);
    vf s = 0;
    for (int c = 0; c < full; c += W) {
        vf e = vexp(load(row + c) - mx);
        store(row + c, e);
        s += e;
    }
    if (tail) {
        vf e = vexp(load_tail(row + full, tail, -INFINITY) - mx);
        store_tail(row + full, e, tail);
        s += e;
    }
    return sum_lanes(s);
}

INLINE void softmax_rows_body(float *x, int rows, int cols, int ld) {
    const int full = cols - cols % W, tail = cols - full;
    for (int r = 0; r < rows; r++) {
        float *row = x + (long)r * ld;
        const vf inv = 1.0f / softmax_numerators(row, cols);
        for (int c = 0; c < full; c += W) store(row + c, load(row + c) * inv);
        if (tail) store_tail(row + full, load_tail(row + full, tail, 0) * inv, tail);
    }
}

INLINE void softmax_backward_rows_body(float *dp, const float *p, int rows, int cols, int ld) {
    const int full = cols - cols % W, tail = cols - full;
    for (int r = 0; r < rows; r++) {
        float *d = dp + (long)r * ld;
        const float *pr = p + (long)r * ld;
        vf acc = 0;
        for (int c = 0; c < full; c += W) acc += load(d + c) * load(pr + c);
        if (tail) acc += load_tail(d + full, tail, 0) * load_tail(pr + full, tail, 0);
        const vf dot = sum_lanes(acc);
        for (int c = 0; c < full; c += W) store(d + c, load(pr + c) * (load(d + c) - dot));
        if (tail) store_tail(d + full, load_tail(pr + full, tail, 0) * (load_tail(d + full, tail, 0) - dot), tail);
    }
}

INLINE void gelu_body(const float *x, long n, float *y) {
    const long full = n - n % W;
    for (long i = 0; i < full; i += W) store(y + i, vgelu(load(x + i)));
    if (n > full) store_tail(y + full, vgelu(load_tail(x + full, (int)(n - full), 0)), (int)(n - full));
}

INLINE void gelu_backward_body(float *grad, const float *pre, long n) {
    const long full = n - n % W;
    for (long i = 0; i < full; i += W) store(grad + i, load(grad + i) * vgelu_derivative(load(pre + i)));
    if (n > full) {
        int t = (int)(n - full);
        store_tail(grad + full, load_tail(grad + full, t, 0) * vgelu_derivative(load_tail(pre + full, t, 0)), t);
    }
}

/// One row of the LayerNorm's input, `x + bias + residual` when `add` (both given), else `x`;
/// always inlined with a constant `add`, so the plain LayerNorm keeps its one-stream loops.
INLINE vf ln_in(const float *x, const float *bias, const float *res, int c, int add) {
    return add ? load(x + c) + load(bias + c) + load(res + c) : load(x + c);
}

INLINE vf ln_in_tail(const float *x, const float *bias, const float *res, int c, int n, float fill, int add) {
    return add ? load_tail(x + c, n, fill) + load_tail(bias + c, n, 0) + load_tail(res + c, n, 0)
               : load_tail(x + c, n, fill);
}

/// LayerNorm of `rows` rows; with `add`, of x + bias + residual, summed again in each of the
/// three passes over a row (which sits in L1) instead of being written out and read back.
INLINE void layer_norm_rows_add(const float *x, const float *bias, const float *res, int rows, int cols,
                                const float *gamma, const float *beta, float eps, float *normalized,
                                float *inverse_std, float *y, int add) {
    const int full = cols - cols % W, tail = cols - full;
    const float inv_n = 1.0f / (float)cols;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * cols, *rr = add ? res + (long)r * cols : 0;
        float *yr = y + (long)r * cols;
        vf s = 0;
        for (int c = 0; c < full; c += W) s += ln_in(xr, bias, rr, c, add);
        if (tail) s += ln_in_tail(xr, bias, rr, full, tail, 0, add);
        const float mean = sum_lanes(s) * inv_n;
        vf q = 0;
        for (int c = 0; c < full; c += W) { vf d = ln_in(xr, bias, rr, c, add) - mean; q += d * d; }
        if (tail) { vf d = ln_in_tail(xr, bias, rr, full, tail, mean, add) - mean; q += d * d; }
        const float rstd = 1.0f / sqrtf(sum_lanes(q) * inv_n + eps);
        if (inverse_std) inverse_std[r] = rstd;
        float *nr = normalized ? normalized + (long)r * cols : 0;
        for (int c = 0; c < full; c += W) {
            vf h = (ln_in(xr, bias, rr, c, add) - mean) * rstd;
            if (nr) store(nr + c, h);
            store(yr + c, h * load(gamma + c) + load(beta + c));
        }
        if (tail) {
            vf h = (ln_in_tail(xr, bias, rr, full, tail, mean, add) - mean) * rstd;
            if (nr) store_tail(nr + full, h, tail);
            store_tail(yr + full, h * load_tail(gamma + full, tail, 0) + load_tail(beta + full, tail, 0), tail);
        }
    }
}

INLINE void layer_norm_rows_body(const float *x, const float *bias, const float *res, int rows, int cols,
                                 const float *gamma, const float *beta, float eps, float *normalized,
                                 float *inverse_std, float *y) {
    if (bias && res) layer_norm_rows_add(x, bias, res, rows, cols, gamma, beta, eps, normalized, inverse_std, y, 1);
    else layer_norm_rows_add(x, 0, 0, rows, cols, gamma, beta, eps, normalized, inverse_std, y, 0);
}

INLINE void layer_norm_backward_rows_body(const float *dy, const float *xhat, const float *inverse_std, const float *gamma,
                                          int rows, int cols, float *dx, float *dgamma, float *dbeta) {
    const int full = cols - cols % W, tail = cols - full;
    const float inv_n = 1.0f / (float)cols;
    for (int r = 0; r < rows; r++) {
        const float *d = dy + (long)r * cols, *h = xhat + (long)r * cols;
        float *o = dx + (long)r * cols;
        vf sd = 0, sdx = 0;
        for (int c = 0; c < full; c += W) {
            vf g = load(d + c), xh = load(h + c), dg = g * load(gamma + c);
            sd += dg;
            sdx += dg * xh;
            store(dgamma + c, load(dgamma + c) + g * xh);
            store(dbeta + c, load(dbeta + c) + g);
        }
        if (tail) {
            vf g = load_tail(d + full, tail, 0), xh = load_tail(h + full, tail, 0), dg = g * load_tail(gamma + full, tail, 0);
            sd += dg;
            sdx += dg * xh;
            store_tail(dgamma + full, load_tail(dgamma + full, tail, 0) + g * xh, tail);
            store_tail(dbeta + full, load_tail(dbeta + full, tail, 0) + g, tail);
        }
        const float mean_d = sum_lanes(sd) * inv_n, mean_dx = sum_lanes(sdx) * inv_n, rstd = inverse_std[r];
        for (int c = 0; c < full; c += W)
            store(o + c, rstd * (load(d + c) * load(gamma + c) - mean_d - load(h + c) * mean_dx));
        if (tail)
            store_tail(o + full, rstd * (load_tail(d + full, tail, 0) * load_tail(gamma + full, tail, 0) - mean_d
                                         - load_tail(h + full, tail, 0) * mean_dx), tail);
    }
}

/// Lanes of one round of `transpose16`: for h = 8, 4, 2, 1, lo takes each 2h-lane group's
/// first h lanes of a then of b, hi their last h lanes.
#define T_LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define T_HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define T_LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define T_HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define T_LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define T_HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define T_LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define T_HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define T_ROUND(h, LO, HI)                                                                   \
    for (int i = 0; i < W; i++)                                                              \
        if (!(i & h)) {                                                                      \
            const vf a = r[i], b = r[i + h];                                                 \
            r[i] = __builtin_shufflevector(a, b, LO);                                        \
            r[i + h] = __builtin_shufflevector(a, b, HI);                                    \
        }

/// Transposes the 16 × 16 block held as 16 row vectors, in place: four rounds that swap the
/// off-diagonal h × h blocks of every 2h × 2h block, for h = 8, 4, 2, 1 (two-source shuffles).
INLINE void transpose16(vf r[W]) {
    T_ROUND(8, T_LO8, T_HI8)
    T_ROUND(4, T_LO4, T_HI4)
    T_ROUND(2, T_LO2, T_HI2)
    T_ROUND(1, T_LO1, T_HI1)
}

/// Rows of queries a block of the fused attention handles at once: its scores, the
/// accumulators of its output and Kᵀ stay in L1 and registers.
#define ATT_ROWS 8

/// out = softmax(scale · Q·Kᵀ) · V for one (sequence, head): Q, K, V are `L × d` with row
/// stride `ld`, out `L × d` with stride `ldo`. `scratch` holds Kᵀ (d × Lp) and one block of
/// scores (ATT_ROWS × Lp), Lp = L rounded up to 32. The probabilities are never written out
/// beyond that block, and normalisation is folded into the output (one multiply per value).
INLINE void attention_body(const float *q, const float *k, const float *v, int ld, int L, int d, float scale,
                           float *out, int ldo, float *scratch, int shuffles) {
    const int Lp = (L + 2 * W - 1) / (2 * W) * (2 * W);
    float *kt = scratch, *s = scratch + (long)d * Lp;
    // Kᵀ: with `shuffles` (AVX-512: 7–10% faster attention on Zen 5), whole 16 × 16 blocks
    // through registers and the edges one float at a time; otherwise one float at a time
    // (AVX2 splits the 16-float shuffles and ran 7% slower with them).
    const int L16 = shuffles ? L / W * W : 0, d16 = shuffles ? d / W * W : 0;
    for (int j0 = 0; j0 < L16; j0 += W) {
        for (int c0 = 0; c0 < d16; c0 += W) {
            vf r[W];
            for (int j = 0; j < W; j++) r[j] = load(k + (long)(j0 + j) * ld + c0);
            transpose16(r);
            for (int c = 0; c < W; c++) store(kt + (long)(c0 + c) * Lp + j0, r[c]);
        }
        for (int c = d16; c < d; c++)
            for (int j = j0; j < j0 + W; j++) kt[(long)c * Lp + j] = k[(long)j * ld + c];
    }
    for (int c = 0; c < d; c++) {
        float *row = kt + (long)c * Lp;
        for (int j = L16; j < L; j++) row[j] = k[(long)j * ld + c];
        for (int j = L; j < Lp; j++) row[j] = 0;
    }
    for (int i0 = 0; i0 < L; i0 += ATT_ROWS) {
        const int rb = L - i0 < ATT_ROWS ? L - i0 : ATT_ROWS;
        const float *qr[ATT_ROWS];
        // Rows past the end repeat the last one (valid memory); their results are not stored.
        for (int r = 0; r < ATT_ROWS; r++) qr[r] = q + (long)(i0 + (r < rb ? r : rb - 1)) * ld;
        // Scores: ATT_ROWS rows × 32 keys per pass, one broadcast query value against two key vectors.
        for (int j0 = 0; j0 < Lp; j0 += 2 * W) {
            vf a0[ATT_ROWS], a1[ATT_ROWS];
            for (int r = 0; r < ATT_ROWS; r++) { a0[r] = 0; a1[r] = 0; }
            for (int c = 0; c < d; c++) {
                const vf k0 = load(kt + (long)c * Lp + j0), k1 = load(kt + (long)c * Lp + j0 + W);
                for (int r = 0; r < ATT_ROWS; r++) {
                    const vf x = qr[r][c];
                    a0[r] += x * k0;
                    a1[r] += x * k1;
                }
            }
            for (int r = 0; r < ATT_ROWS; r++) {
                store(s + (long)r * Lp + j0, a0[r] * scale);
                store(s + (long)r * Lp + j0 + W, a1[r] * scale);
            }
        }
        // Softmax numerators over the L real keys; the padded keys' scores are never read.
        float inv[ATT_ROWS];
        for (int r = 0; r < rb; r++) inv[r] = 1.0f / softmax_numerators(s + (long)r * Lp, L);
        // Context: ATT_ROWS rows × 32 columns of V per pass.
        for (int c0 = 0; c0 < d; c0 += 2 * W) {
            const int n0 = d - c0 < W ? d - c0 : W, n1 = d - c0 - W < 0 ? 0 : (d - c0 - W < W ? d - c0 - W : W);
            vf o0[ATT_ROWS], o1[ATT_ROWS];
            for (int r = 0; r < ATT_ROWS; r++) { o0[r] = 0; o1[r] = 0; }
            for (int j = 0; j < L; j++) {
                const float *vr = v + (long)j * ld + c0;
                const vf v0 = n0 == W ? load(vr) : load_tail(vr, n0, 0);
                const vf v1 = n1 == W ? load(vr + W) : (n1 ? load_tail(vr + W, n1, 0) : (vf)0);
                for (int r = 0; r < ATT_ROWS; r++) {
                    const vf p = s[(long)r * Lp + j];
                    o0[r] += p * v0;
                    o1[r] += p * v1;
                }
            }
            for (int r = 0; r < rb; r++) {
                float *o = out + (long)(i0 + r) * ldo + c0;
                if (n0 == W) store(o, o0[r] * inv[r]); else store_tail(o, o0[r] * inv[r], n0);
                if (n1 == W) store(o + W, o1[r] * inv[r]); else if (n1) store_tail(o + W, o1[r] * inv[r], n1);
            }
        }
    }
}

// MARK: Gaussian noise (DP-SGD)

typedef double vd __attribute__((ext_vector_type(8)));
typedef uint64_t vul __attribute__((ext_vector_type(8)));
typedef uint32_t vu8 __attribute__((ext_vector_type(8)));
typedef float vf8 __attribute__((ext_vector_type(8)));

/// `mask ? a : b` lane by lane, `mask` all ones or all zeros per lane.
INLINE vd select_d(vul mask, vd a, vd b) {
    return __builtin_bit_cast(vd, (__builtin_bit_cast(vul, a) & mask) | (__builtin_bit_cast(vul, b) & ~mask));
}

/// ln x for normal positive x, to about 1 ulp of double: x = m·2ᵉ with m ∈ [√½, √2), and
/// ln m = 2·atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.172, by its series through s²¹.
INLINE vd vlog_d(vd x) {
    const vul bits = __builtin_bit_cast(vul, x);
    // The biased exponent as a double: its 11 bits placed under 2⁵² and the 2⁵² taken off again.
    vd e = __builtin_bit_cast(vd, (bits >> 52) | 0x4330000000000000ull) - (4503599627370496.0 + 1023);
    vd m = __builtin_bit_cast(vd, (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    const vul high = __builtin_bit_cast(vul, m > 1.4142135623730951);
    m = select_d(high, m * 0.5, m);
    e = select_d(high, e + 1, e);
    const vd s = (m - 1) / (m + 1), s2 = s * s;
    vd p = s2 * (1.0 / 21) + 1.0 / 19;
    p = p * s2 + 1.0 / 17;
    p = p * s2 + 1.0 / 15;
    p = p * s2 + 1.0 / 13;
    p = p * s2 + 1.0 / 11;
    p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7;
    p = p * s2 + 1.0 / 5;
    p = p * s2 + 1.0 / 3;
    p = p * s2 + 1;
    return e * 0.69314718055994531 + 2 * s * p;
}

/// cos 2πv and sin 2πv for v ∈ [0, 1]: v = k/4 + f exactly, |f| ≤ 1/8, so the quadrant k
/// needs no reduction error, and x = 2πf ∈ [−π/4, π/4] takes Taylor series through x¹⁶.
INLINE void vsincos_turns(vd v, vd *c, vd *s) {
    const double round = 6755399441055744.0;  // 1.5·2⁵²: adding it rounds to an integer in the low bits
    const vd t = v * 4 + round;
    const vd k = t - round;
    const vul quadrant = __builtin_bit_cast(vul, t) & 3;
    const vd x = (v - k * 0.25) * 6.2831853071795865, x2 = x * x;
    vd sp = x2 * (-1.0 / 1307674368000) + 1.0 / 6227020800;
    sp = sp * x2 - 1.0 / 39916800;
    sp = sp * x2 + 1.0 / 362880;
    sp = sp * x2 - 1.0 / 5040;
    sp = sp * x2 + 1.0 / 120;
    sp = sp * x2 - 1.0 / 6;
    const vd sx = x + x * x2 * sp;
    vd cp = x2 * (1.0 / 20922789888000) - 1.0 / 87178291200;
    cp = cp * x2 + 1.0 / 479001600;
    cp = cp * x2 - 1.0 / 3628800;
    cp = cp * x2 + 1.0 / 40320;
    cp = cp * x2 - 1.0 / 720;
    cp = cp * x2 + 1.0 / 24;
    cp = cp * x2 - 0.5;
    const vd cx = 1 + x2 * cp;
    // Quadrant k: (cos, sin) = (c, s), (−s, c), (−c, −s), (s, −c).
    const vul odd = -(quadrant & 1);
    const vd c0 = select_d(odd, sx, cx), s0 = select_d(odd, cx, sx);
    const vul negate_c = ((quadrant + 1) >> 1 & 1) << 63, negate_s = (quadrant >> 1) << 63;
    *c = __builtin_bit_cast(vd, __builtin_bit_cast(vul, c0) ^ negate_c);
    *s = __builtin_bit_cast(vd, __builtin_bit_cast(vul, s0) ^ negate_s);
}

/// Eight Box–Muller pairs from 16 words: out = r·cos θ, r·sin θ interleaved.
INLINE vf box_muller_16(const uint32_t *bits) {
    vu w;
    memcpy(&w, bits, sizeof w);
    const vu8 a = __builtin_shufflevector(w, w, 0, 2, 4, 6, 8, 10, 12, 14);
    const vu8 b = __builtin_shufflevector(w, w, 1, 3, 5, 7, 9, 11, 13, 15);
    const vd u = (__builtin_convertvector(a, vd) + 1) * 0x1p-32, v = __builtin_convertvector(b, vd) * 0x1p-32;
    const vd r = __builtin_elementwise_sqrt(-2 * vlog_d(u));
    vd c, s;
    vsincos_turns(v, &c, &s);
    const vf8 x = __builtin_convertvector(r * c, vf8), y = __builtin_convertvector(r * s, vf8);
    return __builtin_shufflevector(x, y, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
}

INLINE void box_muller_body(const uint32_t *bits, long n, float *out) {
    long i = 0;
    for (; i + W <= n; i += W) store(out + i, box_muller_16(bits + i));
    if (i < n) {
        uint32_t t[W] = {0};
        const long pairs = (n - i + 1) / 2;
        memcpy(t, bits + i, (size_t)pairs * 2 * sizeof *t);
        store_tail(out + i, box_muller_16(t), (int)(n - i));
    }
}

// MARK: one instance per instruction set

struct vector_kernels {
    const char *name;
    void (*softmax_rows)(float *, int, int, int);
    void (*softmax_backward_rows)(float *, const float *, int, int, int);
    void (*gelu)(const float *, long, float *);
    void (*gelu_backward)(float *, const float *, long);
    void (*layer_norm_rows)(const float *, const float *, const float *, int, int, const float *, const float *, float,
                            float *, float *, float *);
    void (*layer_norm_backward_rows)(const float *, const float *, const float *, const float *, int, int, float *, float *, float *);
    void (*attention)(const float *, const float *, const float *, int, int, int, float, float *, int, float *);
    void (*box_muller)(const uint32_t *, long, float *);
};

#define INSTANCE(SUFFIX, ATTR, SHUFFLES)                                                                                   \
    ATTR static void softmax_rows_##SUFFIX(float *x, int rows, int cols, int ld) { softmax_rows_body(x, rows, cols, ld); } \
    ATTR static void softmax_backward_rows_##SUFFIX(float *dp, const float *p, int rows, int cols, int ld) {            \
        softmax_backward_rows_body(dp, p, rows, cols, ld);                                                              \
    }                                                                                                                   \
    ATTR static void gelu_##SUFFIX(const float *x, long n, float *y) { gelu_body(x, n, y); }                            \
    ATTR static void gelu_backward_##SUFFIX(float *g, const float *pre, long n) { gelu_backward_body(g, pre, n); }      \
    ATTR static void layer_norm_rows_##SUFFIX(const float *x, const float *bias, const float *res, int rows, int cols,  \
                                              const float *gamma, const float *beta, float eps, float *nrm, float *istd, \
                                              float *y) {                                                              \
        layer_norm_rows_body(x, bias, res, rows, cols, gamma, beta, eps, nrm, istd, y);                                 \
    }                                                                                                                   \
    ATTR static void layer_norm_backward_rows_##SUFFIX(const float *dy, const float *xh, const float *istd,             \
                                                       const float *gamma, int rows, int cols, float *dx, float *dg,   \
                                                       float *db) {                                                     \
        layer_norm_backward_rows_body(dy, xh, istd, gamma, rows, cols, dx, dg, db);                                     \
    }                                                                                                                   \
    ATTR static void attention_##SUFFIX(const float *q, const float *k, const float *v, int ld, int L, int d,          \
                                        float scale, float *out, int ldo, float *scratch) {                            \
        attention_body(q, k, v, ld, L, d, scale, out, ldo, scratch, SHUFFLES);                                         \
    }                                                                                                                   \
    ATTR static void box_muller_##SUFFIX(const uint32_t *bits, long n, float *out) { box_muller_body(bits, n, out); }    \
    static const struct vector_kernels kernels_##SUFFIX = {                                                             \
        #SUFFIX, softmax_rows_##SUFFIX, softmax_backward_rows_##SUFFIX, gelu_##SUFFIX,                                   \
        gelu_backward_##SUFFIX, layer_norm_rows_##SUFFIX, layer_norm_backward_rows_##SUFFIX, attention_##SUFFIX,         \
        box_muller_##SUFFIX};

INSTANCE(portable, , 0)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
INSTANCE(avx2, __attribute__((target("avx2,fma"))), 0)
INSTANCE(avx512, __attribute__((target("avx512f,avx512dq"))), 1)
#endif

static const struct vector_kernels *const instances[] = {
    &kernels_portable,
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    &kernels_avx2, &kernels_avx512,
#endif
};

static int supported(int index) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (index == 1) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (index == 2) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#endif
    return index == 0;
}

// -1 until the first call picks the widest supported instance; set atomically, as the
// first calls come from several threads at once.
static int selected = -1;

static const struct vector_kernels *kernels(void) {
    int index = __atomic_load_n(&selected, __ATOMIC_ACQUIRE);
    if (index < 0) {
        index = 0;
        for (int i = (int)(sizeof instances / sizeof instances[0]) - 1; i > 0; i--) {
            if (supported(i)) { index = i; break; }
        }
        __atomic_store_n(&selected, index, __ATOMIC_RELEASE);
    }
    return instances[index];
}

int pando_vector_select(const char *name) {
    if (!name) {
        __atomic_store_n(&selected, -1, __ATOMIC_RELEASE);
        return 1;
    }
    for (int i = 0; i < (int)(sizeof instances / sizeof instances[0]); i++) {
        if (strcmp(instances[i]->name, name) == 0 && supported(i)) {
            __atomic_store_n(&selected, i, __ATOMIC_RELEASE);
            return 1;
        }
    }
    return 0;
}

const char *pando_vector_kernel_name(void) { return kernels()->name; }

void pando_softmax_rows(float *x, int rows, int cols, int ld) { kernels()->softmax_rows(x, rows, cols, ld); }

void pando_softmax_backward_rows(float *dp, const float *p, int rows, int cols, int ld) {
    kernels()->softmax_backward_rows(dp, p, rows, cols, ld);
}


void pando_gelu(const float *x, long n, float *y) { kernels()->gelu(x, n, y); }

float *pando_thread_scratch(size_t floats); // sgemm.c

int pando_attention(const float *q, const float *k, const float *v, int ld, int length, int head_size, float scale,
                    float *out, int ldo) {
    const size_t padded = ((size_t)length + 2 * W - 1) / (2 * W) * (2 * W);
    float *scratch = pando_thread_scratch(padded * ((size_t)head_size + ATT_ROWS));
    if (!scratch) return 0;
    kernels()->attention(q, k, v, ld, length, head_size, scale, out, ldo, scratch);
    return 1;
}

void pando_gelu_backward(float *grad, const float *pre, long n) { kernels()->gelu_backward(grad, pre, n); }

void pando_layer_norm_rows(const float *x, const float *bias, const float *residual, int rows, int cols,
                           const float *gamma, const float *beta, float eps, float *normalized, float *inverse_std,
                           float *y) {
    kernels()->layer_norm_rows(x, bias, residual, rows, cols, gamma, beta, eps, normalized, inverse_std, y);
}

void pando_layer_norm_backward_rows(const float *dy, const float *xhat, const float *inverse_std, const float *gamma,
                                    int rows, int cols, float *dx, float *dgamma, float *dbeta) {
    kernels()->layer_norm_backward_rows(dy, xhat, inverse_std, gamma, rows, cols, dx, dgamma, dbeta);
}

void pando_box_muller(const uint32_t *bits, long n, float *out) { kernels()->box_muller(bits, n, out); }
