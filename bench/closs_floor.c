/*
 * closs_floor.c -- the cheap O(n) loss of bench/bench_closs.py, and the floor for
 * any checker that calls a C loss through a function pointer: a hand-written loop
 * of central differences that calls the very same pointer.
 *
 * Built at run time by bench_closs.py: cc -O3 -shared -fPIC (into bench/_build/).
 * Pure C99, no Python.h.
 */
#include <stddef.h>

/*
 * J(theta) = 0.5 * sum_i d_i theta_i^2 with the diagonal d = (const double *)
 * user_data: the separable quadratic of the benchmark workloads, with the
 * signature fastcheck takes from a scipy.LowLevelCallable,
 * int (double *, npy_intp, double *, void *).
 *
 * Four partial sums: a single running sum is a chain of dependent additions (one
 * add latency per element) that the compiler may not reassociate; four chains
 * bring the loop near the speed of numpy's BLAS dot, so the C side is not slowed
 * by a naive loss.
 */
int closs_quadratic(const double *theta, ptrdiff_t n, double *out, void *user_data)
{
    const double *d = (const double *)user_data;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    ptrdiff_t i = 0;
    if (d == NULL) {
        return 1;
    }
    for (; i + 4 <= n; i += 4) {
        s0 += d[i] * theta[i] * theta[i];
        s1 += d[i + 1] * theta[i + 1] * theta[i + 1];
        s2 += d[i + 2] * theta[i + 2] * theta[i + 2];
        s3 += d[i + 3] * theta[i + 3] * theta[i + 3];
    }
    for (; i < n; i++) {
        s0 += d[i] * theta[i] * theta[i];
    }
    *out = 0.5 * ((s0 + s1) + (s2 + s3));
    return 0;
}

/*
 * The same J summed in one running sum: a chain of dependent additions, bound by
 * the latency of an add rather than by throughput.  Used to show how threads
 * scale when a core is not saturated by one loss evaluation.
 */
int closs_quadratic_chain(const double *theta, ptrdiff_t n, double *out, void *user_data)
{
    const double *d = (const double *)user_data;
    double s = 0.0;
    ptrdiff_t i;
    if (d == NULL) {
        return 1;
    }
    for (i = 0; i < n; i++) {
        s += d[i] * theta[i] * theta[i];
    }
    *out = 0.5 * s;
    return 0;
}

typedef int (*closs_fn)(const double *, ptrdiff_t, double *, void *);

/*
 * The floor: for each requested component (idx[k], or k when idx is NULL) save
 * x_i, evaluate the loss at x_i + h and x_i - h with the represented step
 * h = (x_i + eps) - x_i, restore x_i by assignment; store the same raw
 * evaluations fastcheck reports.  `loss` is a pointer passed in at run time, so
 * the compiler cannot inline it.
 */
int closs_floor_central(closs_fn loss, void *user_data, double *x, ptrdiff_t n,
                        const ptrdiff_t *idx, ptrdiff_t count, double eps,
                        double *plus, double *minus, double *step)
{
    ptrdiff_t k;
    for (k = 0; k < count; k++) {
        ptrdiff_t i = idx ? idx[k] : k;
        double saved = x[i], h;
        volatile double shifted = saved + eps;
        int status;
        h = shifted - saved;
        x[i] = saved + h;
        status = loss(x, n, &plus[k], user_data);
        if (status == 0) {
            x[i] = saved - h;
            status = loss(x, n, &minus[k], user_data);
        }
        x[i] = saved;
        if (status != 0) {
            return status;
        }
        step[k] = h;
    }
    return 0;
}
