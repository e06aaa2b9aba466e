/*
 * test_kernel.c -- the C kernel's own tests: a C loss, no Python.
 * Built and run by csrc/tests/run.sh, normally under AddressSanitizer and
 * UndefinedBehaviorSanitizer.
 */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "fastcheck.h"

#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---- losses ------------------------------------------------------------ */

/* J = sum_b sum_k c_k * x^3 with c_k = 1 + (flat index % 3); counts its calls
 * and fails (status 7) at call number `fail_at` when that is >= 0. */
typedef struct {
    long calls;
    long fail_at;
} cubic_ctx;

static int cubic_f64(const fc_block_f64 *blocks, fc_index nblocks, double *value, void *ctx)
{
    cubic_ctx *c = (cubic_ctx *)ctx;
    double sum = 0.0;
    fc_index b, k, flat = 0;
    if (c) {
        if (c->fail_at >= 0 && c->calls == c->fail_at) {
            c->calls++;
            return 7;
        }
        c->calls++;
    }
    for (b = 0; b < nblocks; b++) {
        for (k = 0; k < blocks[b].size; k++, flat++) {
            double x = blocks[b].data[k * blocks[b].stride];
            sum += (1.0 + (double)(flat % 3)) * x * x * x;
        }
    }
    *value = sum;
    return 0;
}

static int cubic_f32(const fc_block_f32 *blocks, fc_index nblocks, double *value, void *ctx)
{
    double sum = 0.0;
    fc_index b, k, flat = 0;
    (void)ctx;
    for (b = 0; b < nblocks; b++) {
        for (k = 0; k < blocks[b].size; k++, flat++) {
            double x = blocks[b].data[k * blocks[b].stride];
            sum += (1.0 + (double)(flat % 3)) * x * x * x;
        }
    }
    *value = sum;
    return 0;
}

static double cubic_grad(double x, fc_index flat)
{
    return 3.0 * (1.0 + (double)(flat % 3)) * x * x;
}

/* ---- tests ------------------------------------------------------------- */

static void test_seed_example(void)
{
    /* f(theta) = theta^3 at 1, eps = 0.01: central 3.0001, forward 3.0301. */
    double theta = 1.0, center, plus, minus, step;
    fc_block_f64 block = {&theta, 1, 1};
    fc_options opt;
    fc_result res;
    int status;
    fc_options_init(&opt);
    opt.eps = 0.01;
    memset(&res, 0, sizeof(res));
    res.center = &center;
    res.plus = &plus;
    res.minus = &minus;
    res.step = &step;
    status = fc_evaluate_f64(&block, 1, cubic_f64, NULL, &opt, &res);
    CHECK(status == FC_OK);
    CHECK(res.done == 1);
    CHECK(theta == 1.0);
    CHECK(center == 1.0);
    CHECK(fabs((plus - minus) / (2 * step) - 3.0001) < 1e-12);
    CHECK(fabs((plus - center) / step - 3.0301) < 1e-12);
    CHECK(fabs((center - minus) / step - 2.9701) < 1e-12);
}

static void fill(double *x, fc_index n, unsigned seed)
{
    fc_index i;
    srand(seed);
    for (i = 0; i < n; i++) {
        x[i] = ((double)rand() / RAND_MAX - 0.5) * 4.0;
    }
}

/* Several blocks, one strided backwards, an index list, and bitwise restore. */
static void test_blocks_indices_and_restore(void)
{
    enum { N0 = 7, N1 = 5, N2 = 4 };
    double a[N0], b_storage[2 * N1], c[N2], saved[N0 + 2 * N1 + N2];
    fc_block_f64 blocks[4];
    fc_index idx[] = {15, 0, 3, 8, 9, 7, 2};
    double plus[7], minus[7], step[7], center;
    fc_options opt;
    fc_result res;
    int i, status;

    fill(a, N0, 1);
    fill(b_storage, 2 * N1, 2);
    fill(c, N2, 3);
    memcpy(saved, a, sizeof(a));
    memcpy(saved + N0, b_storage, sizeof(b_storage));
    memcpy(saved + N0 + 2 * N1, c, sizeof(c));

    blocks[0].data = a;
    blocks[0].size = N0;
    blocks[0].stride = 1;
    blocks[1].data = NULL; /* an empty block must be skipped */
    blocks[1].size = 0;
    blocks[1].stride = 1;
    blocks[2].data = b_storage + 2 * (N1 - 1); /* every other element, backwards */
    blocks[2].size = N1;
    blocks[2].stride = -2;
    blocks[3].data = c;
    blocks[3].size = N2;
    blocks[3].stride = 1;

    fc_options_init(&opt);
    opt.eps = 1e-5;
    opt.relative = 1;
    opt.indices = idx;
    opt.count = 7;
    memset(&res, 0, sizeof(res));
    res.center = &center;
    res.plus = plus;
    res.minus = minus;
    res.step = step;
    status = fc_evaluate_f64(blocks, 4, cubic_f64, NULL, &opt, &res);
    CHECK(status == FC_OK);
    CHECK(res.done == 7);
    for (i = 0; i < 7; i++) {
        fc_index flat = idx[i];
        double x;
        if (flat < N0) {
            x = a[flat];
        } else if (flat < N0 + N1) {
            x = b_storage[2 * (N1 - 1) - 2 * (flat - N0)];
        } else {
            x = c[flat - N0 - N1];
        }
        CHECK(fabs((plus[i] - minus[i]) / (2 * step[i]) - cubic_grad(x, flat)) <
              1e-6 * (1 + fabs(cubic_grad(x, flat))));
        /* relative step: eps * max(1, |x|) */
        CHECK(fabs(step[i] - 1e-5 * (fabs(x) > 1 ? fabs(x) : 1)) < 1e-15 * (1 + fabs(x)));
    }
    CHECK(memcmp(saved, a, sizeof(a)) == 0);
    CHECK(memcmp(saved + N0, b_storage, sizeof(b_storage)) == 0);
    CHECK(memcmp(saved + N0 + 2 * N1, c, sizeof(c)) == 0);

    /* Out-of-range index: invalid, nothing evaluated, nothing changed. */
    idx[3] = N0 + N1 + N2;
    status = fc_evaluate_f64(blocks, 4, cubic_f64, NULL, &opt, &res);
    CHECK(status == FC_ERR_INVALID);
    CHECK(memcmp(saved, a, sizeof(a)) == 0);
}

/* A failing callback at every possible call: status, position, bitwise restore. */
static void test_callback_failure(void)
{
    enum { N = 9 };
    double x[N], saved[N], plus[N], minus[N], center;
    fc_block_f64 block = {x, N, 1};
    fc_options opt;
    fc_result res;
    long fail_at;
    fill(x, N, 4);
    x[2] = 0.1; /* values whose x + h - h does not round-trip */
    x[5] = 1.0 / 3.0;
    memcpy(saved, x, sizeof(x));
    fc_options_init(&opt);
    opt.eps = 1e-3;
    for (fail_at = 0; fail_at < 1 + 2 * N; fail_at++) {
        cubic_ctx ctx = {0, fail_at};
        int status;
        memset(&res, 0, sizeof(res));
        res.center = &center;
        res.plus = plus;
        res.minus = minus;
        status = fc_evaluate_f64(&block, 1, cubic_f64, &ctx, &opt, &res);
        CHECK(status == FC_ERR_CALLBACK);
        CHECK(res.callback_status == 7);
        CHECK(memcmp(saved, x, sizeof(x)) == 0);
        if (fail_at == 0) {
            CHECK(res.failed_at == -1); /* failed on J(theta) itself */
        } else {
            CHECK(res.failed_at == (fail_at - 1) / 2);
            CHECK(res.done == (fail_at - 1) / 2);
        }
    }
}

typedef struct {
    fc_index calls;
    fc_index last_done;
    fc_index stop_after;
} hook_state;

static int counting_hook(fc_index done, fc_index total, void *ctx)
{
    hook_state *h = (hook_state *)ctx;
    (void)total;
    h->calls++;
    h->last_done = done;
    return (h->stop_after > 0 && done >= h->stop_after) ? 1 : 0;
}

static void test_hook(void)
{
    enum { N = 100 };
    double x[N], saved[N], plus[N], minus[N], center;
    fc_block_f64 block = {x, N, 1};
    fc_options opt;
    fc_result res;
    hook_state h = {0, 0, 0};
    int status;
    fill(x, N, 5);
    memcpy(saved, x, sizeof(x));
    fc_options_init(&opt);
    opt.hook = counting_hook;
    opt.hook_ctx = &h;
    opt.hook_every = 10;
    memset(&res, 0, sizeof(res));
    res.center = &center;
    res.plus = plus;
    res.minus = minus;
    status = fc_evaluate_f64(&block, 1, cubic_f64, NULL, &opt, &res);
    CHECK(status == FC_OK);
    CHECK(h.calls == 10); /* at 10, 20, ..., 90, and once at the end */
    CHECK(h.last_done == N);

    h.calls = 0;
    h.stop_after = 30;
    status = fc_evaluate_f64(&block, 1, cubic_f64, NULL, &opt, &res);
    CHECK(status == FC_ERR_STOPPED);
    CHECK(res.done == 30);
    CHECK(memcmp(saved, x, sizeof(x)) == 0);
}

static void test_five_point_and_forward_only(void)
{
    double theta = 0.7, plus, minus, plus2, minus2, step;
    fc_block_f64 block = {&theta, 1, 1};
    fc_options opt;
    fc_result res;
    double d;
    fc_options_init(&opt);
    opt.evals = FC_EVAL_PLUS | FC_EVAL_MINUS | FC_EVAL_PLUS2 | FC_EVAL_MINUS2;
    opt.eps = 1e-2;
    memset(&res, 0, sizeof(res));
    res.plus = &plus;
    res.minus = &minus;
    res.plus2 = &plus2;
    res.minus2 = &minus2;
    res.step = &step;
    CHECK(fc_evaluate_f64(&block, 1, cubic_f64, NULL, &opt, &res) == FC_OK);
    d = (-plus2 + 8 * plus - 8 * minus + minus2) / (12 * step);
    CHECK(fabs(d - 3 * 0.49) < 1e-12); /* exact for a cubic */

    /* Only the plus side: the others stay untouched, no centre needed. */
    opt.evals = FC_EVAL_PLUS;
    minus = -123.0;
    CHECK(fc_evaluate_f64(&block, 1, cubic_f64, NULL, &opt, &res) == FC_OK);
    CHECK(minus == -123.0);

    /* A required output missing: invalid. */
    opt.evals = FC_EVAL_PLUS | FC_EVAL_MINUS;
    res.minus = NULL;
    CHECK(fc_evaluate_f64(&block, 1, cubic_f64, NULL, &opt, &res) == FC_ERR_INVALID);
}

static void test_float32(void)
{
    enum { N = 16 };
    float x[N], saved[N];
    double plus[N], minus[N], step[N], center;
    fc_block_f32 block = {x, N, 1};
    fc_options opt;
    fc_result res;
    int i;
    for (i = 0; i < N; i++) {
        x[i] = (float)(0.1 * (i - 8)) + 0.01f;
    }
    memcpy(saved, x, sizeof(x));
    fc_options_init(&opt);
    opt.eps = 1e-3;
    opt.relative = 1;
    memset(&res, 0, sizeof(res));
    res.center = &center;
    res.plus = plus;
    res.minus = minus;
    res.step = step;
    CHECK(fc_evaluate_f32(&block, 1, cubic_f32, NULL, &opt, &res) == FC_OK);
    for (i = 0; i < N; i++) {
        double g = (plus[i] - minus[i]) / (2 * step[i]);
        /* the step is a float: x + h is exactly representable in float */
        CHECK((float)(x[i] + (float)step[i]) - x[i] == (float)step[i]);
        CHECK(fabs(g - cubic_grad(x[i], i)) < 1e-4 * (1 + fabs(cubic_grad(x[i], i))));
    }
    CHECK(memcmp(saved, x, sizeof(x)) == 0);
}

static void test_threads_match_serial(void)
{
    enum { N = 1000 };
    double *x = (double *)malloc(N * sizeof(double));
    double *saved = (double *)malloc(N * sizeof(double));
    double *p1 = (double *)malloc(N * sizeof(double)), *m1 = (double *)malloc(N * sizeof(double));
    double *p2 = (double *)malloc(N * sizeof(double)), *m2 = (double *)malloc(N * sizeof(double));
    double c1, c2;
    fc_block_f64 blocks[2];
    fc_options opt;
    fc_result r1, r2;
    int threads;
    fill(x, N, 6);
    memcpy(saved, x, N * sizeof(double));
    blocks[0].data = x;
    blocks[0].size = 600;
    blocks[0].stride = 1;
    blocks[1].data = x + 600;
    blocks[1].size = 200;
    blocks[1].stride = 2;
    fc_options_init(&opt);
    opt.relative = 1;
    memset(&r1, 0, sizeof(r1));
    r1.center = &c1;
    r1.plus = p1;
    r1.minus = m1;
    CHECK(fc_evaluate_f64(blocks, 2, cubic_f64, NULL, &opt, &r1) == FC_OK);
    for (threads = 2; threads <= 5; threads++) {
        hook_state h = {0, 0, 0};
        opt.threads = threads;
        opt.hook = counting_hook;
        opt.hook_ctx = &h;
        memset(&r2, 0, sizeof(r2));
        r2.center = &c2;
        r2.plus = p2;
        r2.minus = m2;
        if (!fc_threads_available()) {
            CHECK(fc_evaluate_f64(blocks, 2, cubic_f64, NULL, &opt, &r2) == FC_ERR_THREADS);
            continue;
        }
        CHECK(fc_evaluate_f64(blocks, 2, cubic_f64, NULL, &opt, &r2) == FC_OK);
        CHECK(r2.done == 800);
        CHECK(h.last_done == 800);
        CHECK(c1 == c2);
        CHECK(memcmp(p1, p2, 800 * sizeof(double)) == 0);
        CHECK(memcmp(m1, m2, 800 * sizeof(double)) == 0);
    }
    CHECK(memcmp(saved, x, N * sizeof(double)) == 0);
    free(x);
    free(saved);
    free(p1);
    free(m1);
    free(p2);
    free(m2);
}

/* A thread-safe failing loss: fails whenever it sees a perturbed value at a
 * marked component (x[fail_index] != its original value). */
typedef struct {
    fc_index fail_index;
    double original;
} marked_ctx;

static int marked_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value, void *ctx)
{
    marked_ctx *m = (marked_ctx *)ctx;
    (void)nblocks;
    if (blocks[0].data[m->fail_index * blocks[0].stride] != m->original) {
        return 11;
    }
    *value = 1.0;
    return 0;
}

static void test_threads_failure(void)
{
    enum { N = 400 };
    double x[N], saved[N], plus[N], minus[N], center;
    fc_block_f64 block = {x, N, 1};
    fc_options opt;
    fc_result res;
    marked_ctx m;
    int threads;
    if (!fc_threads_available()) {
        return;
    }
    fill(x, N, 7);
    memcpy(saved, x, sizeof(x));
    m.fail_index = 321;
    m.original = x[321];
    for (threads = 1; threads <= 4; threads++) {
        int status;
        fc_options_init(&opt);
        opt.threads = threads;
        memset(&res, 0, sizeof(res));
        res.center = &center;
        res.plus = plus;
        res.minus = minus;
        status = fc_evaluate_f64(&block, 1, marked_loss, &m, &opt, &res);
        CHECK(status == FC_ERR_CALLBACK);
        CHECK(res.callback_status == 11);
        CHECK(res.failed_at == 321);
        CHECK(memcmp(saved, x, sizeof(x)) == 0);
    }
}

static void test_invalid_arguments(void)
{
    double x[3] = {1, 2, 3}, center;
    fc_block_f64 block = {x, 3, 0}; /* zero stride with size > 1 */
    fc_options opt;
    fc_result res;
    fc_options_init(&opt);
    memset(&res, 0, sizeof(res));
    res.center = &center;
    CHECK(fc_total_size_f64(&block, 1) == -1);
    CHECK(fc_evaluate_f64(&block, 1, cubic_f64, NULL, &opt, &res) == FC_ERR_INVALID);
    block.stride = 1;
    CHECK(fc_evaluate_f64(&block, 1, NULL, NULL, &opt, &res) == FC_ERR_INVALID);
    CHECK(fc_evaluate_f64(&block, 1, cubic_f64, NULL, NULL, &res) == FC_ERR_INVALID);
    CHECK(fc_evaluate_f64(&block, 1, cubic_f64, NULL, &opt, NULL) == FC_ERR_INVALID);
    opt.eps = NAN;
    res.plus = x; /* never reached */
    CHECK(fc_evaluate_f64(&block, 1, cubic_f64, NULL, &opt, &res) == FC_ERR_INVALID);
    CHECK(x[0] == 1 && x[1] == 2 && x[2] == 3);
    CHECK(fc_status_message(FC_ERR_CALLBACK) != NULL);
    CHECK(strcmp(fc_status_message(12345), "unknown status") == 0);
}

/* Every invalid option is refused before any evaluation, with a message. */
static int count_calls(const fc_block_f64 *blocks, fc_index nblocks, double *value, void *ctx)
{
    (void)blocks;
    (void)nblocks;
    ++*(long *)ctx;
    *value = 0.0;
    return 0;
}

static void test_every_option_validated(void)
{
    double x[4] = {1, -2, 3, 4}, center, plus[4], minus[4], plus2[4], minus2[4], steps[4];
    fc_block_f64 block = {x, 4, 1};
    fc_index bad_index = 4;
    const double bad_eps[] = {0.0, -1e-6, 1e300, INFINITY, NAN, 5.0};
    fc_options opt;
    fc_result res = FC_RESULT_INIT, zero;
    long calls = 0;
    size_t i;
    /* the initialiser and fc_result_init agree, and fill everything */
    memset(&zero, 0x5a, sizeof zero);
    fc_result_init(&zero);
    CHECK(zero.center == NULL && zero.plus == NULL && zero.minus == NULL);
    CHECK(zero.plus2 == NULL && zero.minus2 == NULL && zero.step == NULL);
    CHECK(zero.done == 0 && zero.failed_at == -1 && zero.callback_status == 0);
    CHECK(res.failed_at == -1 && res.step == NULL);
    res.center = &center;
    res.plus = plus;
    res.minus = minus;
    for (i = 0; i < sizeof bad_eps / sizeof bad_eps[0]; i++) {
        int threads;
        for (threads = 1; threads <= 2; threads++) {
            fc_options_init(&opt);
            opt.eps = bad_eps[i];
            opt.threads = threads;
            CHECK(fc_evaluate_f64(&block, 1, count_calls, &calls, &opt, &res) ==
                  FC_ERR_INVALID);
            CHECK(fc_validate_f64(&block, 1, count_calls, &opt, &res) != NULL);
        }
    }
    CHECK(strstr(fc_validate_f64(&block, 1, count_calls, &opt, &res), "step") != NULL);
    opt.eps = 0.0;
    CHECK(strstr(fc_validate_f64(&block, 1, count_calls, &opt, &res), "eps") != NULL);
    /* per-component steps, relative steps above 1, unknown flags, NULL outputs */
    fc_options_init(&opt);
    steps[0] = steps[1] = steps[2] = 1e-6;
    steps[3] = 0.0;
    opt.eps_each = steps;
    CHECK(fc_evaluate_f64(&block, 1, count_calls, &calls, &opt, &res) == FC_ERR_INVALID);
    CHECK(res.failed_at == 3);
    fc_options_init(&opt);
    opt.relative = 1;
    opt.eps = 1.5;
    CHECK(fc_validate_f64(&block, 1, count_calls, &opt, &res) != NULL);
    fc_options_init(&opt);
    opt.evals = 64;
    CHECK(strstr(fc_validate_f64(&block, 1, count_calls, &opt, &res), "evals") != NULL);
    opt.evals = 0;
    CHECK(fc_evaluate_f64(&block, 1, count_calls, &calls, &opt, &res) == FC_ERR_INVALID);
    opt.evals = FC_EVAL_PLUS2;
    CHECK(strstr(fc_validate_f64(&block, 1, count_calls, &opt, &res), "NULL") != NULL);
    res.plus2 = plus2;
    res.minus2 = minus2;
    fc_options_init(&opt);
    opt.indices = &bad_index;
    opt.count = 1;
    CHECK(strstr(fc_validate_f64(&block, 1, count_calls, &opt, &res), "indices") != NULL);
    opt.count = -1;
    CHECK(fc_evaluate_f64(&block, 1, count_calls, &calls, &opt, &res) == FC_ERR_INVALID);
    /* a step that overflows */
    fc_options_init(&opt);
    x[1] = 1.7e308;
    opt.eps = 1e307;
    bad_index = 1;
    opt.indices = &bad_index;
    opt.count = 1;
    opt.evals |= FC_EVAL_PLUS2;
    CHECK(strstr(fc_validate_f64(&block, 1, count_calls, &opt, &res), "overflow") != NULL);
    x[1] = -2;
    CHECK(calls == 0); /* refused before the loss was called once */
    calls = 0;
    fc_options_init(&opt);
    CHECK(fc_validate_f64(&block, 1, count_calls, &opt, &res) == NULL);
    CHECK(fc_evaluate_f64(&block, 1, count_calls, &calls, &opt, &res) == FC_OK);
    CHECK(calls == 9);
    CHECK(x[0] == 1 && x[1] == -2 && x[2] == 3 && x[3] == 4);
}

/* A loss that writes into theta once (at its 5th call): the threaded path sees
 * it in the thread's copy and reports FC_ERR_MODIFIED; the caller's theta is
 * unchanged. */
typedef struct {
    long calls;
    pthread_mutex_t lock;
} writer_ctx;

static int writing_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value,
                        void *ctx)
{
    writer_ctx *w = (writer_ctx *)ctx;
    long call;
    (void)nblocks;
    pthread_mutex_lock(&w->lock);
    call = ++w->calls;
    pthread_mutex_unlock(&w->lock);
    if (call == 5) {
        blocks[0].data[0] += 1.0;
    }
    *value = blocks[0].data[0];
    return 0;
}

static void test_loss_that_writes_theta(void)
{
    enum { N = 16 };
    double x[N], saved[N], plus[N], minus[N], center;
    fc_block_f64 block = {x, N, 1};
    fc_options opt;
    fc_result res = FC_RESULT_INIT;
    writer_ctx w;
    if (!fc_threads_available()) {
        return;
    }
    fill(x, N, 3);
    memcpy(saved, x, sizeof x);
    w.calls = 0;
    pthread_mutex_init(&w.lock, NULL);
    fc_options_init(&opt);
    opt.threads = 2;
    res.center = &center;
    res.plus = plus;
    res.minus = minus;
    CHECK(fc_evaluate_f64(&block, 1, writing_loss, &w, &opt, &res) == FC_ERR_MODIFIED);
    CHECK(memcmp(saved, x, sizeof x) == 0);
    CHECK(strstr(fc_status_message(FC_ERR_MODIFIED), "wrote") != NULL);
    pthread_mutex_destroy(&w.lock);
}

int main(void)
{
    test_seed_example();
    test_blocks_indices_and_restore();
    test_callback_failure();
    test_hook();
    test_five_point_and_forward_only();
    test_float32();
    test_threads_match_serial();
    test_threads_failure();
    test_invalid_arguments();
    test_every_option_validated();
    test_loss_that_writes_theta();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("csrc tests: all checks passed\n");
    return 0;
}
