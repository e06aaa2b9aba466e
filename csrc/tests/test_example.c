/*
 * test_example.c -- assertions on the plain C example, examples/check_quadratic.c,
 * whose functions it compiles in (without its main).  Built and run by
 * csrc/tests/run.sh under AddressSanitizer and UndefinedBehaviorSanitizer.
 */
#define FC_EXAMPLE_NO_MAIN
#include "../examples/check_quadratic.c"

#include "check.h"

enum { N = 37 };

static void test_gradient_matches_analytic(void)
{
    double theta[N], a[N], b[N], before[N], grad[N], analytic[N];
    quadratic q;
    fc_index i;
    quadratic_data(N, theta, a, b);
    memcpy(before, theta, sizeof theta);
    q.a = a;
    q.b = b;
    CHECK(quadratic_numerical_grad(theta, N, &q, 1, grad) == FC_OK);
    CHECK(memcmp(before, theta, sizeof theta) == 0); /* restored bit for bit */
    for (i = 0; i < N; i++) {
        analytic[i] = a[i] * theta[i] + b[i];
        /* central differences are exact on a quadratic up to rounding */
        CHECK(fabs(grad[i] - analytic[i]) <= 1e-8 * (1.0 + fabs(analytic[i])));
    }
    CHECK(relative_error(grad, analytic, N) < 1e-9);
}

static void test_threads_bitwise_identical(void)
{
    double theta[N], a[N], b[N], one[N], two[N], three[N];
    quadratic q;
    quadratic_data(N, theta, a, b);
    q.a = a;
    q.b = b;
    CHECK(quadratic_numerical_grad(theta, N, &q, 1, one) == FC_OK);
    if (!fc_threads_available()) {
        return;
    }
    CHECK(quadratic_numerical_grad(theta, N, &q, 2, two) == FC_OK);
    CHECK(quadratic_numerical_grad(theta, N, &q, 3, three) == FC_OK);
    CHECK(memcmp(one, two, sizeof one) == 0);
    CHECK(memcmp(one, three, sizeof one) == 0);
}

static void test_wrong_gradient_is_seen(void)
{
    double theta[N], a[N], b[N], grad[N], analytic[N];
    quadratic q;
    fc_index i;
    quadratic_data(N, theta, a, b);
    q.a = a;
    q.b = b;
    CHECK(quadratic_numerical_grad(theta, N, &q, 1, grad) == FC_OK);
    for (i = 0; i < N; i++) {
        analytic[i] = a[i] * theta[i] + b[i];
    }
    analytic[11] *= 1.01; /* a 1% bug in one component */
    CHECK(relative_error(grad, analytic, N) > 1e-4);
}

static void test_relative_error_edge_cases(void)
{
    double zero[3] = {0.0, 0.0, 0.0}, x[3] = {1.0, 2.0, 2.0};
    CHECK(relative_error(zero, zero, 3) == 0.0);
    CHECK(relative_error(x, x, 3) == 0.0);
    CHECK(fabs(relative_error(x, zero, 3) - 1.0) < 1e-15);
}

int main(void)
{
    test_gradient_matches_analytic();
    test_threads_bitwise_identical();
    test_wrong_gradient_is_seen();
    test_relative_error_edge_cases();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_example: all checks passed\n");
    return 0;
}
