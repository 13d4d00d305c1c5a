// Loads OpenBLAS at run time, after choosing its kernel set.
//
// OpenBLAS (Debian builds it with DYNAMIC_ARCH) picks its GEMM kernels from a table of
// CPU models when the library is loaded, and reads OPENBLAS_CORETYPE only then. A CPU
// newer than that table gets a generic core (Debian's 0.3.21 runs Prescott SSE3 kernels
// on an AVX-512 Xeon of family 6, model 207), 4-8x slower. So Pando does not link
// OpenBLAS: the Swift side decides the core from CPUID, and this file sets the variable
// and dlopens the library before its first use. Every program (tests, benchmarks,
// pando-client, pando-coordinator) goes through here.

#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pando_kernels.h"

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                         float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef void (*set_threads_fn)(int);
typedef char *(*corename_fn)(void);
typedef char *(*config_fn)(void);

static sgemm_fn p_sgemm;
static sgemv_fn p_sgemv;
static corename_fn p_corename;
static config_fn p_config;
static char load_error[512];
static char loaded_path[256];
static int load_status = -1;  // -1 not tried, 0 loaded, 1 failed

static const char *const candidates[] = {
    "libopenblas.so.0",
    "libopenblas.so",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "libopenblas.dylib",
};

static int prepared = 0;

void pando_blas_prepare(const char *coretype) {
    if (prepared) return;
    prepared = 1;
    // Pando threads GEMMs itself; OpenBLAS's own pool would spin between calls. Set before
    // loading so the library never starts one.
    setenv("OPENBLAS_NUM_THREADS", "1", 0);
    if (coretype && *coretype) setenv("OPENBLAS_CORETYPE", coretype, 1);
    pando_sgemm_prepare();
}

int pando_blas_load(const char *coretype) {
    if (load_status >= 0) return load_status;
    pando_blas_prepare(coretype);
    void *handle = NULL;
    char errors[384] = "";
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0] && !handle; i++) {
        handle = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
        if (handle) {
            snprintf(loaded_path, sizeof loaded_path, "%s", candidates[i]);
        } else if (i == 0) {
            const char *e = dlerror();
            snprintf(errors, sizeof errors, "%s", e ? e : "not found");
        }
    }
    if (!handle) {
        snprintf(load_error, sizeof load_error,
                 "cannot load OpenBLAS (%s): install Debian's libopenblas0 (deploy/bootstrap does)", errors);
        load_status = 1;
        return 1;
    }
    p_sgemm = (sgemm_fn)dlsym(handle, "cblas_sgemm");
    p_sgemv = (sgemv_fn)dlsym(handle, "cblas_sgemv");
    set_threads_fn set_threads = (set_threads_fn)dlsym(handle, "openblas_set_num_threads");
    p_corename = (corename_fn)dlsym(handle, "openblas_get_corename");
    p_config = (config_fn)dlsym(handle, "openblas_get_config");
    if (!p_sgemm || !p_sgemv) {
        snprintf(load_error, sizeof load_error, "%s has no cblas_sgemm/cblas_sgemv", loaded_path);
        load_status = 1;
        return 1;
    }
    if (set_threads) set_threads(1);
    load_status = 0;
    return 0;
}

const char *pando_blas_error(void) { return load_error; }
const char *pando_blas_path(void) { return loaded_path; }
const char *pando_blas_corename(void) { return p_corename ? p_corename() : "unknown"; }
const char *pando_blas_config(void) { return p_config ? p_config() : "unknown"; }

// CBLAS enums: 101 row-major, 111 no-trans, 112 trans.
void pando_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    pando_sgemm_bias(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, NULL, c, ldc);
}

void pando_sgemm_bias(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, const float *bias, float *c, int ldc) {
    if (pando_sgemm_native(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, bias, c, ldc) == 0) return;
    if (bias) {
        // OpenBLAS has no bias: C = beta·C + bias first, then accumulate the product into it.
        for (int i = 0; i < m; i++) {
            float *ci = c + (long)i * ldc;
            if (beta == 0) { for (int j = 0; j < n; j++) ci[j] = bias[j]; }
            else { for (int j = 0; j < n; j++) ci[j] = beta * ci[j] + bias[j]; }
        }
        beta = 1;
    }
    p_sgemm(101, trans_a ? 112 : 111, trans_b ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void pando_sgemv(int trans, int m, int n, float alpha, const float *a, int lda, const float *x, float beta, float *y) {
    p_sgemv(101, trans ? 112 : 111, m, n, alpha, a, lda, x, 1, beta, y, 1);
}

// MARK: CPU identification

void pando_cpu_identify(struct pando_cpu *cpu) {
    memset(cpu, 0, sizeof *cpu);
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    unsigned max_leaf = a;
    memcpy(cpu->vendor, &b, 4);
    memcpy(cpu->vendor + 4, &d, 4);
    memcpy(cpu->vendor + 8, &c, 4);
    cpu->vendor[12] = 0;
    __get_cpuid(1, &a, &b, &c, &d);
    unsigned family = (a >> 8) & 0xF, model = (a >> 4) & 0xF;
    if (family == 0xF) family += (a >> 20) & 0xFF;
    if (family == 0x6 || family >= 0xF) model += ((a >> 16) & 0xF) << 4;
    cpu->family = (int)family;
    cpu->model = (int)model;
    // The OS must save the wide registers too (XGETBV), or the instructions fault.
    __builtin_cpu_init();
    cpu->sse3 = __builtin_cpu_supports("sse3");
    cpu->avx = __builtin_cpu_supports("avx");
    cpu->avx2 = __builtin_cpu_supports("avx2");
    cpu->fma = __builtin_cpu_supports("fma");
    cpu->avx512f = __builtin_cpu_supports("avx512f");
    cpu->avx512bw = __builtin_cpu_supports("avx512bw");
    cpu->avx512dq = __builtin_cpu_supports("avx512dq");
    cpu->avx512vl = __builtin_cpu_supports("avx512vl");
    cpu->avx512vnni = __builtin_cpu_supports("avx512vnni");
    if (max_leaf >= 7) {
        __cpuid_count(7, 1, a, b, c, d);
        cpu->avx512bf16 = cpu->avx512f && ((a >> 5) & 1);
    }
#endif
}
