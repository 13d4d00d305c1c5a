#ifndef PANDO_KERNELS_H
#define PANDO_KERNELS_H

#include <stdint.h>

/// Columns per packed block of an int8 weight matrix.
#define PANDO_Q8_NR 32

/// Which int8 kernel `pando_q8_gemm` runs on this CPU: "avx512-vnni" or "portable".
const char *pando_q8_kernel_name(void);

/// Bytes `pando_q8_pack_weights` writes for a weight matrix of `n` outputs and `k` inputs.
long pando_q8_packed_size(int n, int k);

/// Outputs rounded up to a multiple of PANDO_Q8_NR: the length of the scale and sum arrays.
int pando_q8_padded_n(int n);

/// Padded inner dimension (`k` rounded up to a multiple of 4) that activation rows use.
int pando_q8_padded_k(int k);

/// Quantizes a row-major weight matrix `w` [n × k] (PyTorch's Linear layout, y = x·wᵀ)
/// symmetrically per output: scales[j] = max|w[j, :]| / 127. Writes the packed int8
/// matrix, the scales and each output's sum of quantized weights (for the zero-point
/// correction of unsigned activations).
void pando_q8_pack_weights(const float *w, int n, int k, int8_t *packed, float *scales, int32_t *sums);

/// Packs an already quantized row-major int8 matrix `w` [n × k] (a saved int8 checkpoint)
/// into the kernel's layout, with each output's sum of weights; the scales are the saved ones.
void pando_q8_pack_int8(const int8_t *w, int n, int k, int8_t *packed, int32_t *sums);

/// The inverse of the packing: row-major int8 [n × k] from a packed matrix (to save it).
void pando_q8_unpack(const int8_t *packed, int n, int k, int8_t *w);

/// Quantizes rows [m0, m1) of `x` [m × k, row stride ldx] per row: scale = max|row| / 127,
/// stored as unsigned bytes with zero point 128 into `q` [m × padded_k].
void pando_q8_quantize_rows(const float *x, int ldx, int m0, int m1, int k, uint8_t *q, float *scales);

/// y[m0..m1) = dequantized (q · packedᵀ) + bias, with y [m × n, row stride ldy].
void pando_q8_gemm(const uint8_t *q, const float *row_scales, int m0, int m1, int k,
                   const int8_t *packed, const float *scales, const int32_t *sums, const float *bias,
                   int n, float *y, int ldy);

/// Tests: run the portable kernel even where the VNNI one is available (1), or not (0).
void pando_q8_force_portable(int on);

// MARK: element-wise kernels (vector.c): AVX-512, AVX2 + FMA or baseline, chosen at first use.

/// Which instance the element-wise kernels run: "avx512", "avx2" or "portable".
const char *pando_vector_kernel_name(void);

/// Tests and benchmarks: run instance `name` ("portable", "avx2", "avx512") from now on; returns 0
/// (and changes nothing) when this CPU cannot run it. NULL goes back to the widest supported.
/// Not for use while kernels run on other threads.
int pando_vector_select(const char *name);

/// Softmax of each of `rows` rows of `cols` floats (row stride `ld`), in place, max-subtracted.
void pando_softmax_rows(float *x, int rows, int cols, int ld);

/// Softmax backward in place: dp[r, :] = p[r, :] ⊙ (dp[r, :] − ⟨dp[r, :], p[r, :]⟩).
void pando_softmax_backward_rows(float *dp, const float *p, int rows, int cols, int ld);


/// Standard normals by Box–Muller in double precision, for DP-SGD's noise: pair k of `bits`,
/// (a, b) = (bits[2k], bits[2k+1]), gives u = (a + 1)·2⁻³² ∈ (0, 1], v = b·2⁻³² ∈ [0, 1) and
/// out[2k] = √(−2 ln u)·cos 2πv, out[2k+1] = √(−2 ln u)·sin 2πv, rounded to float (within
/// a float ulp of libm's). Reads ⌈n/2⌉ pairs; an odd `n` keeps the last pair's cosine only.
void pando_box_muller(const uint32_t *bits, long n, float *out);

/// Fused attention of one (sequence, head), inference only (no dropout, nothing kept for
/// backward): out = softmax(scale · Q·Kᵀ) · V, with Q, K, V `length × head_size` at row
/// stride `ld` and out at row stride `ldo`. Works in this thread's scratch (Kᵀ and one
/// block of scores); returns 0, writing nothing, only when that cannot be allocated.
int pando_attention(const float *q, const float *k, const float *v, int ld, int length, int head_size, float scale,
                    float *out, int ldo);

/// y[i] = GELU(x[i]) for n elements.
void pando_gelu(const float *x, long n, float *y);

/// grad[i] *= GELU′(pre[i]) for n elements.
void pando_gelu_backward(float *grad, const float *pre, long n);

/// LayerNorm of each contiguous row: y = (x − mean)·rstd·γ + β. With `bias` (cols) and `residual`
/// (rows × cols) both given, of x + bias + residual, without writing that sum out (the
/// residual connection of an encoder layer without dropout). Writes x̂ to `normalized` and
/// rstd to `inverse_std` when they are not NULL.
void pando_layer_norm_rows(const float *x, const float *bias, const float *residual, int rows, int cols,
                           const float *gamma, const float *beta, float eps, float *normalized, float *inverse_std,
                           float *y);

/// LayerNorm backward for contiguous rows: writes dx and adds Σ dy·x̂ to dgamma and Σ dy to dbeta.
void pando_layer_norm_backward_rows(const float *dy, const float *xhat, const float *inverse_std, const float *gamma,
                                    int rows, int cols, float *dx, float *dgamma, float *dbeta);

// MARK: OpenBLAS loaded at run time (blas_loader.c)

/// What CPUID says about this processor (features only where the OS also enables them).
struct pando_cpu {
    char vendor[13];
    int family, model;
    int sse3, avx, avx2, fma, avx512f, avx512bw, avx512dq, avx512vl, avx512vnni, avx512bf16;
};
void pando_cpu_identify(struct pando_cpu *cpu);

/// Sets OPENBLAS_CORETYPE to `coretype` (unless NULL or empty) and OPENBLAS_NUM_THREADS=1 if
/// unset, then dlopens OpenBLAS. Once per process: later calls return the first result.
/// 0 on success; 1 with `pando_blas_error()` saying why. Not thread-safe: call it once first.
int pando_blas_load(const char *coretype);
/// The environment half of `pando_blas_load`, without loading anything: programs call it first
/// thing, while they are single-threaded (setenv is not safe against other threads' getenv).
void pando_blas_prepare(const char *coretype);
const char *pando_blas_error(void);
/// The library file that was loaded, OpenBLAS's name for the core it runs, and its build configuration.
const char *pando_blas_path(void);
const char *pando_blas_corename(void);
const char *pando_blas_config(void);

/// Row-major single-precision GEMM, C = alpha·op(A)·op(B) + beta·C: Pando's AVX-512 kernel
/// (sgemm.c) where it runs and suits the product, else the loaded OpenBLAS (load it first).
void pando_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
/// The same plus `bias[j]` added to every row of C (NULL for none), in the kernel's store pass.
void pando_sgemm_bias(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, const float *bias, float *c, int ldc);
/// Row-major single-precision GEMV through the loaded OpenBLAS.
void pando_sgemv(int trans, int m, int n, float alpha, const float *a, int lda, const float *x, float beta, float *y);

// MARK: Pando's own SGEMM (sgemm.c)

/// Decides once whether Pando's AVX-512 SGEMM runs: on CPUs with AVX-512 F/BW/DQ/VL unless
/// PANDO_GEMM=openblas is set. Called by `pando_blas_prepare`, while the program is single-threaded.
void pando_sgemm_prepare(void);
/// "avx512-8x48" when Pando's kernel runs the large products, NULL when OpenBLAS runs them all.
const char *pando_sgemm_kernel_name(void);
/// Tests and benchmarks: 0 OpenBLAS only; 1 (or −1) Pando's kernel for large products; 2 Pando's
/// kernel for every product. Returns 0 (changing nothing) when this CPU cannot run the kernel.
/// Not for use while GEMMs run on other threads.
int pando_sgemm_select(int mode);
/// Runs the product on Pando's kernel and returns 0, or returns 1 without touching C when the
/// kernel is off, the CPU lacks it, the product is too small to gain, or scratch memory ran out.
int pando_sgemm_native(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, const float *bias, float *c, int ldc);

#endif
