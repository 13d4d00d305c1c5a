// Int8 inference GEMM: unsigned 8-bit activations (zero point 128, one scale per row)
// times signed 8-bit weights (one scale per output), 32-bit accumulation, float output.
// The AVX-512 VNNI kernel (vpdpbusd: 64 multiply-adds per instruction) is chosen at run
// time; other CPUs get a portable loop with the same results.
#include "pando_kernels.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define NR PANDO_Q8_NR

int pando_q8_padded_k(int k) { return (k + 3) & ~3; }
int pando_q8_padded_n(int n) { return (n + NR - 1) / NR * NR; }
#define padded_n pando_q8_padded_n

long pando_q8_packed_size(int n, int k) { return (long)padded_n(n) * pando_q8_padded_k(k); }

// Layout: for each block of NR outputs, for each group of 4 inputs, NR × 4 bytes
// (output j's 4 consecutive inputs together): one 64-byte load feeds 16 outputs.
void pando_q8_pack_weights(const float *w, int n, int k, int8_t *packed, float *scales, int32_t *sums) {
    int kp = pando_q8_padded_k(k), np = padded_n(n);
    memset(packed, 0, (size_t)np * kp);
    for (int j = 0; j < np; j++) {
        float s = 0;
        if (j < n) for (int i = 0; i < k; i++) { float a = fabsf(w[(long)j * k + i]); if (a > s) s = a; }
        float scale = s > 0 ? s / 127.0f : 1.0f;
        scales[j] = scale;
        int32_t sum = 0;
        int block = j / NR, jj = j % NR;
        for (int i = 0; i < k && j < n; i++) {
            int v = (int)lrintf(w[(long)j * k + i] / scale);
            if (v > 127) v = 127;
            if (v < -127) v = -127;
            sum += v;
            long at = ((long)block * (kp / 4) + i / 4) * (NR * 4) + jj * 4 + i % 4;
            packed[at] = (int8_t)v;
        }
        sums[j] = sum;
    }
}

void pando_q8_pack_int8(const int8_t *w, int n, int k, int8_t *packed, int32_t *sums) {
    int kp = pando_q8_padded_k(k), np = padded_n(n);
    memset(packed, 0, (size_t)np * kp);
    for (int j = 0; j < np; j++) {
        int32_t sum = 0;
        int block = j / NR, jj = j % NR;
        for (int i = 0; i < k && j < n; i++) {
            int8_t v = w[(long)j * k + i];
            sum += v;
            packed[((long)block * (kp / 4) + i / 4) * (NR * 4) + jj * 4 + i % 4] = v;
        }
        sums[j] = j < n ? sum : 0;
    }
}

void pando_q8_unpack(const int8_t *packed, int n, int k, int8_t *w) {
    int kp = pando_q8_padded_k(k);
    for (int j = 0; j < n; j++) {
        int block = j / NR, jj = j % NR;
        for (int i = 0; i < k; i++) w[(long)j * k + i] = packed[((long)block * (kp / 4) + i / 4) * (NR * 4) + jj * 4 + i % 4];
    }
}

static int has_vnni(void);

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
static void quantize_rows_avx512(const float *x, int ldx, int m0, int m1, int k, uint8_t *q, float *scales) {
    int kp = pando_q8_padded_k(k);
    const __m512 signless = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    for (int r = m0; r < m1; r++) {
        const float *row = x + (long)r * ldx;
        __m512 mx = _mm512_setzero_ps();
        int i = 0;
        for (; i + 16 <= k; i += 16) mx = _mm512_max_ps(mx, _mm512_and_ps(_mm512_loadu_ps(row + i), signless));
        float s = _mm512_reduce_max_ps(mx);
        for (; i < k; i++) { float a = fabsf(row[i]); if (a > s) s = a; }
        float scale = s > 0 ? s / 127.0f : 1.0f, inv = 1.0f / scale;
        scales[r] = scale;
        uint8_t *out = q + (long)r * kp;
        const __m512 vinv = _mm512_set1_ps(inv);
        const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), zero = _mm512_set1_epi32(128);
        for (i = 0; i + 16 <= k; i += 16) {
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(row + i), vinv));  // round to nearest even
            v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), zero);
            _mm_storeu_si128((__m128i *)(out + i), _mm512_cvtepi32_epi8(v));
        }
        for (; i < k; i++) {
            int v = (int)lrintf(row[i] * inv);
            out[i] = (uint8_t)((v > 127 ? 127 : v < -127 ? -127 : v) + 128);
        }
        for (i = k; i < kp; i++) out[i] = 128;
    }
}
#endif

void pando_q8_quantize_rows(const float *x, int ldx, int m0, int m1, int k, uint8_t *q, float *scales) {
#if defined(__x86_64__)
    if (has_vnni()) { quantize_rows_avx512(x, ldx, m0, m1, k, q, scales); return; }
#endif
    int kp = pando_q8_padded_k(k);
    for (int r = m0; r < m1; r++) {
        const float *row = x + (long)r * ldx;
        float s = 0;
        for (int i = 0; i < k; i++) { float a = fabsf(row[i]); if (a > s) s = a; }
        float scale = s > 0 ? s / 127.0f : 1.0f, inv = 1.0f / scale;
        scales[r] = scale;
        uint8_t *out = q + (long)r * kp;
        for (int i = 0; i < k; i++) {
            int v = (int)lrintf(row[i] * inv);
            if (v > 127) v = 127;
            if (v < -127) v = -127;
            out[i] = (uint8_t)(v + 128);
        }
        for (int i = k; i < kp; i++) out[i] = 128;
    }
}

static void store_row(const int32_t *acc, int row_count_unused, float rs, const float *scales, const int32_t *sums,
                      const float *bias, int j0, int n, float *y) {
    (void)row_count_unused;
    for (int j = 0; j < NR && j0 + j < n; j++) {
        float v = rs * scales[j0 + j] * (float)(acc[j] - 128 * sums[j0 + j]);
        y[j0 + j] = bias ? v + bias[j0 + j] : v;
    }
}

static void gemm_portable(const uint8_t *q, const float *rs, int m0, int m1, int k, const int8_t *packed,
                          const float *scales, const int32_t *sums, const float *bias, int n, float *y, int ldy) {
    int kp = pando_q8_padded_k(k), np = padded_n(n);
    int32_t acc[NR];
    for (int r = m0; r < m1; r++) {
        const uint8_t *a = q + (long)r * kp;
        for (int b = 0; b < np / NR; b++) {
            memset(acc, 0, sizeof acc);
            const int8_t *p = packed + (long)b * (kp / 4) * (NR * 4);
            for (int g = 0; g < kp / 4; g++, p += NR * 4)
                for (int j = 0; j < NR; j++)
                    acc[j] += a[4 * g] * p[4 * j] + a[4 * g + 1] * p[4 * j + 1] + a[4 * g + 2] * p[4 * j + 2] + a[4 * g + 3] * p[4 * j + 3];
            store_row(acc, 1, rs[r], scales, sums, bias, b * NR, n, y + (long)r * ldy);
        }
    }
}

#if defined(__x86_64__)
#define MR 8
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
static void gemm_vnni(const uint8_t *q, const float *rs, int m0, int m1, int k, const int8_t *packed,
                      const float *scales, const int32_t *sums, const float *bias, int n, float *y, int ldy) {
    int kp = pando_q8_padded_k(k), np = padded_n(n), groups = kp / 4;
    const int MB = 64;  // rows per block: their activations stay in L1/L2 while every weight block passes
    for (int mb = m0; mb < m1; mb += MB) {
        int me = mb + MB < m1 ? mb + MB : m1;
        for (int b = 0; b < np / NR; b++) {
            const int8_t *panel = packed + (long)b * groups * (NR * 4);
            __m512 s0 = _mm512_loadu_ps(scales + b * NR), s1 = _mm512_loadu_ps(scales + b * NR + 16);
            __m512i z0 = _mm512_mullo_epi32(_mm512_loadu_si512(sums + b * NR), _mm512_set1_epi32(128));
            __m512i z1 = _mm512_mullo_epi32(_mm512_loadu_si512(sums + b * NR + 16), _mm512_set1_epi32(128));
            int cols = n - b * NR < NR ? n - b * NR : NR;
            __mmask16 k0 = cols >= 16 ? 0xFFFF : (__mmask16)((1u << cols) - 1);
            __mmask16 k1 = cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
            __m512 b0 = bias ? _mm512_maskz_loadu_ps(k0, bias + b * NR) : _mm512_setzero_ps();
            __m512 b1 = bias ? _mm512_maskz_loadu_ps(k1, bias + b * NR + 16) : _mm512_setzero_ps();
            for (int r = mb; r < me; r += MR) {
                int mr = me - r < MR ? me - r : MR;
                __m512i acc[MR][2];
                for (int i = 0; i < MR; i++) { acc[i][0] = _mm512_setzero_si512(); acc[i][1] = _mm512_setzero_si512(); }
                const uint8_t *a = q + (long)r * kp;
                const int8_t *p = panel;
                if (mr == MR) {
                    for (int g = 0; g < groups; g++, p += NR * 4) {
                        __m512i w0 = _mm512_loadu_si512(p), w1 = _mm512_loadu_si512(p + 64);
                        #pragma GCC unroll 8
                        for (int i = 0; i < MR; i++) {
                            __m512i x = _mm512_set1_epi32(*(const int32_t *)(a + (long)i * kp + 4 * g));
                            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, w0);
                            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, w1);
                        }
                    }
                } else {
                    for (int g = 0; g < groups; g++, p += NR * 4) {
                        __m512i w0 = _mm512_loadu_si512(p), w1 = _mm512_loadu_si512(p + 64);
                        for (int i = 0; i < mr; i++) {
                            __m512i x = _mm512_set1_epi32(*(const int32_t *)(a + (long)i * kp + 4 * g));
                            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, w0);
                            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, w1);
                        }
                    }
                }
                for (int i = 0; i < mr; i++) {
                    __m512 rsv = _mm512_set1_ps(rs[r + i]);
                    float *out = y + (long)(r + i) * ldy + b * NR;
                    __m512 v0 = _mm512_fmadd_ps(_mm512_mul_ps(rsv, s0), _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][0], z0)), b0);
                    __m512 v1 = _mm512_fmadd_ps(_mm512_mul_ps(rsv, s1), _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][1], z1)), b1);
                    _mm512_mask_storeu_ps(out, k0, v0);
                    _mm512_mask_storeu_ps(out + 16, k1, v1);
                }
            }
        }
    }
}
#endif

static int force_portable = 0;
void pando_q8_force_portable(int on) { force_portable = on; }

static int has_vnni(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") ? 1 : 0;
    return cached && !force_portable;
#else
    return 0;
#endif
}

const char *pando_q8_kernel_name(void) { return has_vnni() ? "avx512-vnni" : "portable"; }

void pando_q8_gemm(const uint8_t *q, const float *row_scales, int m0, int m1, int k,
                   const int8_t *packed, const float *scales, const int32_t *sums, const float *bias,
                   int n, float *y, int ldy) {
#if defined(__x86_64__)
    if (has_vnni()) { gemm_vnni(q, row_scales, m0, m1, k, packed, scales, sums, bias, n, y, ldy); return; }
#endif
    gemm_portable(q, row_scales, m0, m1, k, packed, scales, sums, bias, n, y, ldy);
}
