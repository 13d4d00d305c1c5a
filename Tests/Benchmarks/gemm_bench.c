// One core, MiniLM's layer shapes at 4,096 rows (y = x·wᵀ, as the encoder calls them):
// Pando's AVX-512 SGEMM (Sources/CPandoKernels/sgemm.c) against OpenBLAS's cblas_sgemm,
// alternating, best of 6 × 5 calls each, and their largest difference. Built and run by
// Tests/Benchmarks/compare-gemm; not used by CI.
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pando_kernels.h"

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(void) {
    if (!pando_sgemm_select(2)) { printf("this CPU has no AVX-512 F/BW/DQ/VL: Pando runs OpenBLAS throughout\n"); return 0; }
    int shapes[][3] = {{4096, 1152, 384}, {4096, 384, 384}, {4096, 1536, 384}, {4096, 384, 1536}};
    for (int s = 0; s < 4; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K);
        float *y1 = malloc(sizeof(float) * M * N), *y2 = malloc(sizeof(float) * M * N);
        srand(1);
        for (long i = 0; i < (long)M * K; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        for (long i = 0; i < (long)N * K; i++) w[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        double tb = 1e9, tp = 1e9;
        for (int rep = 0; rep < 6; rep++) {
            double t0 = now();
            for (int r = 0; r < 5; r++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, x, K, w, K, 0, y1, N);
            double t1 = now();
            for (int r = 0; r < 5; r++) pando_sgemm_native(0, 1, M, N, K, 1, x, K, w, K, 0, NULL, y2, N);
            double t2 = now();
            if ((t1 - t0) / 5 < tb) tb = (t1 - t0) / 5;
            if ((t2 - t1) / 5 < tp) tp = (t2 - t1) / 5;
        }
        double worst = 0;
        for (long i = 0; i < (long)M * N; i++) worst = fmax(worst, fabs(y1[i] - y2[i]));
        double flops = 2.0 * M * N * K;
        printf("m %d n %d k %d: OpenBLAS %.1f GFLOP/s, Pando %.1f GFLOP/s (%.2fx), max |diff| %.1e\n", M, N, K,
               flops / tb * 1e-9, flops / tp * 1e-9, tb / tp, worst);
        free(x); free(w); free(y1); free(y2);
    }
    return 0;
}
