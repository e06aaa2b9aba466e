/*
 * check_quadratic.c -- fastcheck from plain C, without Python.
 *
 * Checks the hand-written gradient of
 *
 *     J(theta) = sum_i  a_i theta_i^2 / 2 + b_i theta_i,    dJ/dtheta_i = a_i theta_i + b_i
 *
 * against central differences computed by the fastcheck kernel, serially and on
 * two threads, and prints the relative error
 * ||g_num - g|| / (||g_num|| + ||g||).
 *
 * Build and run (from the repository root):
 *
 *     cc -std=c99 -O2 -Icsrc csrc/examples/check_quadratic.c csrc/kernel.c \
 *        -lm -lpthread -o check_quadratic
 *     ./check_quadratic [n] [--print]
 *
 * With --print it also prints "i theta_i numerical_i" per component (%.17g), which
 * the Python test suite compares with fastcheck.numerical_grad.  The exit status is
 * 0 when the gradient checks out and both runs agree bit for bit.
 */
#include "fastcheck.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The loss's data: its coefficients.  The loss only reads them, so it is safe
 * to call from several threads at once. */
typedef struct quadratic {
    const double *a;
    const double *b;
} quadratic;

/* An fc_loss_f64: it reads theta from the blocks the kernel hands it (the
 * caller's memory, or a thread's private copy) and stores J in *value. */
static int quadratic_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value,
                          void *ctx)
{
    const quadratic *q = (const quadratic *)ctx;
    double sum = 0.0;
    fc_index blk, k, i = 0;
    for (blk = 0; blk < nblocks; blk++) {
        for (k = 0; k < blocks[blk].size; k++, i++) {
            double x = blocks[blk].data[k * blocks[blk].stride];
            sum += 0.5 * q->a[i] * x * x + q->b[i] * x;
        }
    }
    *value = sum;
    return 0;
}

/* Example data, exactly representable arithmetic so other languages can rebuild it. */
static void quadratic_data(fc_index n, double *theta, double *a, double *b)
{
    fc_index i;
    for (i = 0; i < n; i++) {
        theta[i] = (double)(i % 7 - 3) * 0.25 + (double)i * 0.001;
        a[i] = 1.0 + (double)(i % 5);
        b[i] = 0.5 - (double)(i % 3) * 0.25;
    }
}

/*
 * The numerical gradient of the quadratic at theta, by central differences with
 * the step fastcheck uses by default for float64: h_i = eps0 * max(1, |theta_i|),
 * eps0 = u^(1/3), u = 2^-53.  Returns an fc_status.
 */
static int quadratic_numerical_grad(double *theta, fc_index n, const quadratic *q,
                                    int threads, double *grad)
{
    fc_block_f64 block;
    fc_options opt;
    fc_result res;
    double center;
    double *work;
    fc_index i;
    int status;

    work = (double *)malloc(sizeof(double) * 3 * (size_t)(n > 0 ? n : 1));
    if (work == NULL) {
        return FC_ERR_NOMEM;
    }
    block.data = theta;
    block.size = n;
    block.stride = 1;

    fc_options_init(&opt); /* central: J(theta), J(theta + h e_i), J(theta - h e_i) */
    opt.eps = pow(DBL_EPSILON / 2, 1.0 / 3.0);
    opt.relative = 1;
    opt.threads = threads;

    memset(&res, 0, sizeof res);
    res.center = &center;
    res.plus = work;
    res.minus = work + n;
    res.step = work + 2 * n;

    status = fc_evaluate_f64(&block, 1, quadratic_loss, (void *)q, &opt, &res);
    if (status == FC_OK) {
        for (i = 0; i < n; i++) {
            grad[i] = (res.plus[i] - res.minus[i]) / (2 * res.step[i]);
        }
    }
    free(work);
    return status;
}

/* ||x - y|| / (||x|| + ||y||), 0 when both are 0. */
static double relative_error(const double *x, const double *y, fc_index n)
{
    double diff = 0.0, nx = 0.0, ny = 0.0;
    fc_index i;
    for (i = 0; i < n; i++) {
        diff += (x[i] - y[i]) * (x[i] - y[i]);
        nx += x[i] * x[i];
        ny += y[i] * y[i];
    }
    if (nx + ny == 0.0) {
        return 0.0;
    }
    return sqrt(diff) / (sqrt(nx) + sqrt(ny));
}

#ifndef FC_EXAMPLE_NO_MAIN
int main(int argc, char **argv)
{
    fc_index n = 50, i;
    int print = 0, status, ok = 1;
    double *theta, *a, *b, *analytic, *serial, *threaded, err;
    quadratic q;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--print") == 0) {
            print = 1;
        } else {
            n = (fc_index)strtol(argv[i], NULL, 10);
        }
    }
    if (n < 1) {
        fprintf(stderr, "usage: %s [n >= 1] [--print]\n", argv[0]);
        return 2;
    }
    theta = (double *)malloc(sizeof(double) * 6 * (size_t)n);
    if (theta == NULL) {
        return 1;
    }
    a = theta + n;
    b = theta + 2 * n;
    analytic = theta + 3 * n;
    serial = theta + 4 * n;
    threaded = theta + 5 * n;
    quadratic_data(n, theta, a, b);
    q.a = a;
    q.b = b;
    for (i = 0; i < n; i++) {
        analytic[i] = a[i] * theta[i] + b[i]; /* the gradient under test */
    }

    status = quadratic_numerical_grad(theta, n, &q, 1, serial);
    if (status != FC_OK) {
        fprintf(stderr, "fastcheck: %s\n", fc_status_message(status));
        free(theta);
        return 1;
    }
    if (fc_threads_available()) {
        status = quadratic_numerical_grad(theta, n, &q, 2, threaded);
        if (status != FC_OK) {
            fprintf(stderr, "fastcheck (2 threads): %s\n", fc_status_message(status));
            free(theta);
            return 1;
        }
        if (memcmp(serial, threaded, sizeof(double) * (size_t)n) != 0) {
            fprintf(stderr, "2 threads gave a different gradient than 1\n");
            ok = 0;
        }
    }
    err = relative_error(serial, analytic, n);
    printf("n = %ld, relative error = %.3g (%s)\n", (long)n, err,
           err < 1e-7 ? "excellent" : err <= 1e-5 ? "ok" : "suspicious or wrong");
    if (err >= 1e-7) {
        ok = 0;
    }
    if (print) {
        for (i = 0; i < n; i++) {
            printf("%ld %.17g %.17g\n", (long)i, theta[i], serial[i]);
        }
    }
    free(theta);
    return ok ? 0 : 1;
}
#endif
