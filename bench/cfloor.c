/*
 * cfloor.c -- the floor for any checker whose loss is a C callback.
 *
 * central_loop() is the least work a central-difference checker can do per
 * component: save theta[i], write theta[i] + eps, call the loss through a
 * function pointer, write theta[i] - eps, call it again, restore theta[i] by
 * assignment.  No copies, no allocation, no bookkeeping.  quad_loss() is the
 * C twin of bench/workloads.py's Quadratic: J = 0.5 * sum d_i theta_i^2.
 *
 * Built by bench/cbuild.py with `cc -O2 -shared -fPIC`; pure C99, no Python.h.
 */
#include <stddef.h>

typedef int (*loss_fn)(double *theta, ptrdiff_t n, double *out, void *user_data);

/*
 * J = 0.5 * sum_i d_i theta_i^2 with d = (const double *)user_data.
 *
 * Four partial sums: one running sum is a chain of dependent additions (one
 * add latency per element) and -O2 will not reassociate it; four chains let
 * the loop run near the speed of numpy's BLAS dot, so the floor is not
 * inflated by a slow loss.
 */
int quad_loss(double *theta, ptrdiff_t n, double *out, void *user_data)
{
    const double *d = (const double *)user_data;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    ptrdiff_t i = 0;

    if (theta == NULL || d == NULL || out == NULL || n < 0)
        return 1;
    for (; i + 4 <= n; i += 4) {
        s0 += d[i] * theta[i] * theta[i];
        s1 += d[i + 1] * theta[i + 1] * theta[i + 1];
        s2 += d[i + 2] * theta[i + 2] * theta[i + 2];
        s3 += d[i + 3] * theta[i + 3] * theta[i + 3];
    }
    for (; i < n; i++)
        s0 += d[i] * theta[i] * theta[i];
    *out = 0.5 * ((s0 + s1) + (s2 + s3));
    return 0;
}

/* One component: the shared body of both loops below. */
static int central_one(loss_fn loss, double *theta, ptrdiff_t n, ptrdiff_t i,
                       double eps, void *user_data, double *fplus, double *fminus)
{
    const double x = theta[i];
    int status;

    theta[i] = x + eps;
    status = loss(theta, n, fplus, user_data);
    if (status == 0) {
        theta[i] = x - eps;
        status = loss(theta, n, fminus, user_data);
    }
    theta[i] = x; /* assignment, never x + eps - eps: that need not round-trip */
    return status;
}

/*
 * For every i in [0, n): fplus[i] = J(theta + eps e_i), fminus[i] = J(theta - eps e_i).
 * Returns 0, or the loss's first non-zero status (theta is restored either way).
 * The caller divides by the represented step (theta[i] + eps) - (theta[i] - eps).
 */
int central_loop(int (*loss)(double *, ptrdiff_t, double *, void *), double *theta,
                 ptrdiff_t n, double eps, void *user_data, double *fplus, double *fminus)
{
    ptrdiff_t i;
    int status;

    if (loss == NULL || theta == NULL || fplus == NULL || fminus == NULL || n < 0)
        return -1;
    for (i = 0; i < n; i++) {
        status = central_one(loss, theta, n, i, eps, user_data, &fplus[i], &fminus[i]);
        if (status != 0)
            return status;
    }
    return 0;
}

/*
 * The same on the components idx[0..count): fplus[k], fminus[k] belong to
 * idx[k].  Lets a benchmark time the per-component cost at large n (where a
 * full check is O(n^2) work) on a sample of components.
 */
int central_loop_subset(int (*loss)(double *, ptrdiff_t, double *, void *), double *theta,
                        ptrdiff_t n, const ptrdiff_t *idx, ptrdiff_t count, double eps,
                        void *user_data, double *fplus, double *fminus)
{
    ptrdiff_t k;
    int status;

    if (loss == NULL || theta == NULL || idx == NULL || fplus == NULL || fminus == NULL
        || n < 0 || count < 0)
        return -1;
    for (k = 0; k < count; k++) {
        if (idx[k] < 0 || idx[k] >= n)
            return -1;
        status = central_one(loss, theta, n, idx[k], eps, user_data, &fplus[k], &fminus[k]);
        if (status != 0)
            return status;
    }
    return 0;
}
