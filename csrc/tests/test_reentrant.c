/*
 * test_reentrant.c -- the kernel is reentrant: a loss may itself run the kernel
 * (a nested check), on the very blocks it is given, serially or on threads.
 * Built and run by csrc/tests/run.sh under AddressSanitizer and
 * UndefinedBehaviorSanitizer.
 */
#include "fastcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Inner loss f(theta) = sum theta_i^3 / 3, whose gradient is theta_i^2. */
static int cube_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value, void *ctx)
{
    double sum = 0.0;
    fc_index b, k;
    (void)ctx;
    for (b = 0; b < nblocks; b++) {
        for (k = 0; k < blocks[b].size; k++) {
            double x = blocks[b].data[k * blocks[b].stride];
            sum += x * x * x / 3.0;
        }
    }
    *value = sum;
    return 0;
}

typedef struct {
    int inner_threads;
    int fail_inner; /* make the nested run fail: its status must come back out */
} nested_ctx;

/*
 * Outer loss J(theta) = sum_i g_i^2 / 2, where g is the numerical gradient of f,
 * computed by a nested kernel run that perturbs the same memory the outer run
 * has just perturbed.  dJ/dtheta_j = g_j * dg_j/dtheta_j = 2 theta_j^3.
 */
static int nested_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value,
                       void *ctx)
{
    const nested_ctx *c = (const nested_ctx *)ctx;
    fc_index n = fc_total_size_f64(blocks, nblocks), i;
    fc_options opt;
    fc_result res;
    double *work, sum = 0.0;
    int status;

    if (n < 0) {
        return 90;
    }
    work = (double *)malloc(sizeof(double) * 3 * (size_t)(n > 0 ? n : 1));
    if (work == NULL) {
        return 91;
    }
    fc_options_init(&opt);
    opt.evals = FC_EVAL_PLUS | FC_EVAL_MINUS;
    opt.eps = 1e-5;
    opt.threads = c->inner_threads;
    if (c->fail_inner) {
        opt.eps = (double)NAN; /* invalid: the nested run refuses it */
    }
    memset(&res, 0, sizeof res);
    res.plus = work;
    res.minus = work + n;
    res.step = work + 2 * n;
    status = fc_evaluate_f64(blocks, nblocks, cube_loss, NULL, &opt, &res);
    if (status == FC_OK) {
        for (i = 0; i < n; i++) {
            double g = (res.plus[i] - res.minus[i]) / (2 * res.step[i]);
            sum += 0.5 * g * g;
        }
        *value = sum;
    }
    free(work);
    return status == FC_OK ? 0 : 100 + status;
}

enum { N = 12 };

static void outer_gradient(double *theta, int outer_threads, int inner_threads,
                           double *grad, int *status)
{
    fc_block_f64 block = {theta, N, 1};
    nested_ctx ctx = {inner_threads, 0};
    double plus[N], minus[N], step[N];
    fc_options opt;
    fc_result res;
    fc_index i;
    fc_options_init(&opt);
    opt.evals = FC_EVAL_PLUS | FC_EVAL_MINUS;
    opt.eps = 1e-4;
    opt.threads = outer_threads;
    memset(&res, 0, sizeof res);
    res.plus = plus;
    res.minus = minus;
    res.step = step;
    *status = fc_evaluate_f64(&block, 1, nested_loss, &ctx, &opt, &res);
    for (i = 0; i < N; i++) {
        grad[i] = (plus[i] - minus[i]) / (2 * step[i]);
    }
}

static void test_nested_runs(void)
{
    double theta[N], before[N], reference[N], grad[N];
    int configs[4][2] = {{1, 1}, {2, 1}, {1, 2}, {2, 2}};
    int c, status;
    fc_index i;
    for (i = 0; i < N; i++) {
        theta[i] = -1.1 + 0.2 * (double)i;
    }
    memcpy(before, theta, sizeof theta);

    outer_gradient(theta, 1, 1, reference, &status);
    CHECK(status == FC_OK);
    CHECK(memcmp(before, theta, sizeof theta) == 0);
    for (i = 0; i < N; i++) {
        double expected = 2.0 * theta[i] * theta[i] * theta[i];
        CHECK(fabs(reference[i] - expected) < 1e-4);
    }
    if (!fc_threads_available()) {
        return;
    }
    /* Every combination of threads gives the same bits, and restores theta. */
    for (c = 1; c < 4; c++) {
        outer_gradient(theta, configs[c][0], configs[c][1], grad, &status);
        CHECK(status == FC_OK);
        CHECK(memcmp(before, theta, sizeof theta) == 0);
        CHECK(memcmp(reference, grad, sizeof grad) == 0);
    }
}

static void test_nested_failure_propagates(void)
{
    double theta[N], before[N], plus[N], minus[N];
    fc_block_f64 block = {theta, N, 1};
    nested_ctx ctx = {1, 1};
    fc_options opt;
    fc_result res;
    fc_index i;
    for (i = 0; i < N; i++) {
        theta[i] = 0.5 + (double)i;
    }
    memcpy(before, theta, sizeof theta);
    fc_options_init(&opt);
    opt.evals = FC_EVAL_PLUS | FC_EVAL_MINUS;
    memset(&res, 0, sizeof res);
    res.plus = plus;
    res.minus = minus;
    CHECK(fc_evaluate_f64(&block, 1, nested_loss, &ctx, &opt, &res) == FC_ERR_CALLBACK);
    CHECK(res.callback_status == 100 + FC_ERR_INVALID);
    CHECK(res.failed_at == 0);
    CHECK(memcmp(before, theta, sizeof theta) == 0);
}

int main(void)
{
    test_nested_runs();
    test_nested_failure_propagates();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_reentrant: all checks passed\n");
    return 0;
}
