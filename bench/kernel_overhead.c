/*
 * kernel_overhead.c -- what the C kernel itself costs per component, with a loss
 * that does almost nothing (it reads theta[0]), against a hand-written loop that
 * makes the same evaluations through a function pointer.
 *
 *     cc -O3 -Icsrc bench/kernel_overhead.c csrc/kernel.c -lm -lpthread \
 *        -o /tmp/kernel_overhead && /tmp/kernel_overhead 100000
 *
 * Prints the best of 20 runs, in ns per component (two evaluations each):
 * the loop, fc_evaluate_f64 without a hook, and with a hook called every
 * component (what the bridge installs for a C loss).  Pure C99, no Python.h.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c99 */

#include "fastcheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef int (*flat_loss)(const double *, ptrdiff_t, double *, void *);

static int block_loss(const fc_block_f64 *blocks, fc_index nblocks, double *out, void *ctx)
{
    (void)nblocks;
    (void)ctx;
    *out = blocks[0].data[0];
    return 0;
}

static int plain_loss(const double *x, ptrdiff_t n, double *out, void *ctx)
{
    (void)n;
    (void)ctx;
    *out = x[0];
    return 0;
}

static int count_hook(fc_index done, fc_index total, void *ctx)
{
    (void)done;
    (void)total;
    (*(long *)ctx)++;
    return 0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The least a checker can do: save, perturb, call, perturb, call, restore. */
static void hand_loop(double *x, fc_index n, double *plus, double *minus, double *step)
{
    volatile flat_loss loss = plain_loss; /* not inlined: a pointer, like the kernel's */
    fc_index i;
    for (i = 0; i < n; i++) {
        double saved = x[i], h;
        volatile double shifted = saved + 1e-6;
        h = shifted - saved;
        x[i] = saved + h;
        loss(x, n, &plus[i], NULL);
        x[i] = saved - h;
        loss(x, n, &minus[i], NULL);
        x[i] = saved;
        step[i] = h;
    }
}

int main(int argc, char **argv)
{
    fc_index n = argc > 1 ? atol(argv[1]) : 100000, i;
    double *x = malloc(sizeof(double) * (size_t)n), *plus = malloc(sizeof(double) * (size_t)n);
    double *minus = malloc(sizeof(double) * (size_t)n), *step = malloc(sizeof(double) * (size_t)n);
    double center;
    long hooks = 0;
    int mode, k;
    static const char *names[] = {"hand-written loop", "fc_evaluate_f64, no hook",
                                  "fc_evaluate_f64, hook every component"};
    if (x == NULL || plus == NULL || minus == NULL || step == NULL || n < 1) {
        return 1;
    }
    for (i = 0; i < n; i++) {
        x[i] = 1e-3 * (double)i;
    }
    for (mode = 0; mode < 3; mode++) {
        double best = 1e300;
        for (k = 0; k < 20; k++) {
            double started = now(), took;
            if (mode == 0) {
                hand_loop(x, n, plus, minus, step);
            } else {
                fc_block_f64 block = {NULL, 0, 1};
                fc_options opt;
                fc_result res = FC_RESULT_INIT;
                block.data = x;
                block.size = n;
                fc_options_init(&opt);
                res.center = &center;
                res.plus = plus;
                res.minus = minus;
                res.step = step;
                if (mode == 2) {
                    opt.hook = count_hook;
                    opt.hook_ctx = &hooks;
                    opt.hook_every = 1;
                }
                if (fc_evaluate_f64(&block, 1, block_loss, NULL, &opt, &res) != FC_OK) {
                    return 1;
                }
            }
            took = now() - started;
            best = took < best ? took : best;
        }
        printf("%-40s %6.2f ns/component\n", names[mode], 1e9 * best / (double)n);
    }
    free(x);
    free(plus);
    free(minus);
    free(step);
    return 0;
}
