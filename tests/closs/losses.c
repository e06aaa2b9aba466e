/*
 * losses.c -- C losses for the tests of fastcheck's C-loss path, compiled at test
 * time into a shared library and loaded with ctypes or cffi.
 *
 * The quadratic J(theta) = sum_i a_i theta_i^2 / 2 + b_i theta_i, with
 * a_i = 1 + i % 5 and b_i = 0.5 - (i % 3) / 4, is summed left to right so that a
 * Python loop in the same order gives the same bits.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <stddef.h>
#include <time.h>

static double quad_term(ptrdiff_t i, double x)
{
    double a = 1.0 + (double)(i % 5), b = 0.5 - (double)(i % 3) * 0.25;
    return 0.5 * a * x * x + b * x;
}

/* int (double *, npy_intp, double *, void *); user_data, when given, points to
 * one double that scales J. */
int quad_status_f64(const double *x, ptrdiff_t n, double *out, void *user_data)
{
    double sum = 0.0;
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        sum += quad_term(i, x[i]);
    }
    *out = user_data ? sum * *(const double *)user_data : sum;
    return 0;
}

/* double (double *, npy_intp, void *) */
double quad_value_f64(const double *x, ptrdiff_t n, void *user_data)
{
    double sum = 0.0;
    ptrdiff_t i;
    (void)user_data;
    for (i = 0; i < n; i++) {
        sum += quad_term(i, x[i]);
    }
    return sum;
}

/* int (float *, npy_intp, double *, void *) -- accumulates in double */
int quad_status_f32(const float *x, ptrdiff_t n, double *out, void *user_data)
{
    double sum = 0.0;
    ptrdiff_t i;
    (void)user_data;
    for (i = 0; i < n; i++) {
        sum += quad_term(i, (double)x[i]);
    }
    *out = sum;
    return 0;
}

/* double (float *, npy_intp, void *) */
double quad_value_f32(const float *x, ptrdiff_t n, void *user_data)
{
    double sum = 0.0;
    ptrdiff_t i;
    (void)user_data;
    for (i = 0; i < n; i++) {
        sum += quad_term(i, (double)x[i]);
    }
    return sum;
}

/* J = sum_i w_i theta_i^2 with the weights w = user_data (n doubles). */
int weighted_f64(const double *x, ptrdiff_t n, double *out, void *user_data)
{
    const double *w = (const double *)user_data;
    double sum = 0.0;
    ptrdiff_t i;
    if (w == NULL) {
        return 2;
    }
    for (i = 0; i < n; i++) {
        sum += w[i] * x[i] * x[i];
    }
    *out = sum;
    return 0;
}

/* Fails while one component is perturbed.  user_data: double[3] = {component,
 * its unperturbed value, status}; component -1 fails at once (at J(theta)). */
int failing_f64(const double *x, ptrdiff_t n, double *out, void *user_data)
{
    const double *spec = (const double *)user_data;
    ptrdiff_t k = (ptrdiff_t)spec[0];
    if (k < 0 || (k < n && x[k] != spec[1])) {
        return (int)spec[2];
    }
    return quad_status_f64(x, n, out, NULL);
}

/* The quadratic, after sleeping *(double *)user_data seconds: a slow loss. */
int slow_f64(const double *x, ptrdiff_t n, double *out, void *user_data)
{
    double seconds = *(const double *)user_data;
    struct timespec pause;
    pause.tv_sec = (time_t)seconds;
    pause.tv_nsec = (long)((seconds - (double)pause.tv_sec) * 1e9);
    nanosleep(&pause, NULL);
    return quad_status_f64(x, n, out, NULL);
}

/* Helpers for the tests: the plain C loop a checker must beat (central
 * differences through the same function pointer). */
typedef int (*loss_f64)(const double *, ptrdiff_t, double *, void *);

int central_floor(loss_f64 loss, double *x, ptrdiff_t n, double eps, double *grad,
                  void *user_data)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        double saved = x[i], plus, minus, h;
        volatile double shifted = saved + eps;
        h = shifted - saved;
        x[i] = saved + h;
        if (loss(x, n, &plus, user_data) != 0) {
            x[i] = saved;
            return 1;
        }
        x[i] = saved - h;
        if (loss(x, n, &minus, user_data) != 0) {
            x[i] = saved;
            return 1;
        }
        x[i] = saved;
        grad[i] = (plus - minus) / (2 * h);
    }
    return 0;
}

/* The quadratic, but its call number user_data[1] (counted in user_data[0],
 * atomically: threads share it) first adds 1 to theta[0]: a loss that writes into
 * its parameters once. */
int writing_f64(double *x, ptrdiff_t n, double *out, void *user_data)
{
    long *state = (long *)user_data;
    if (__atomic_add_fetch(&state[0], 1, __ATOMIC_SEQ_CST) == state[1]) {
        x[0] += 1.0;
    }
    return quad_status_f64(x, n, out, NULL);
}
