/*
 * alloc_test.c -- the kernel when an allocation fails.  Built by run.sh with
 * -DFC_MALLOC=fc_test_malloc -DFC_CALLOC=fc_test_calloc, so that the n-th
 * allocation the kernel makes (counted across threads) returns NULL.  Every
 * outcome must be a clean status (never a hang: run.sh runs it under a timeout),
 * theta bitwise as it was, and nothing leaked (AddressSanitizer).
 */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "fastcheck.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---- the injectable allocator ------------------------------------------ */
static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static long alloc_count = 0, alloc_fail_at = -1;

static int alloc_should_fail(void)
{
    int fail;
    pthread_mutex_lock(&alloc_lock);
    fail = alloc_count++ == alloc_fail_at;
    pthread_mutex_unlock(&alloc_lock);
    return fail;
}

void *fc_test_malloc(size_t size);
void *fc_test_calloc(size_t count, size_t size);

void *fc_test_malloc(size_t size)
{
    return alloc_should_fail() ? NULL : malloc(size);
}

void *fc_test_calloc(size_t count, size_t size)
{
    return alloc_should_fail() ? NULL : calloc(count, size);
}

static void alloc_reset(long fail_at)
{
    pthread_mutex_lock(&alloc_lock);
    alloc_count = 0;
    alloc_fail_at = fail_at;
    pthread_mutex_unlock(&alloc_lock);
}

static long alloc_made(void)
{
    long n;
    pthread_mutex_lock(&alloc_lock);
    n = alloc_count;
    pthread_mutex_unlock(&alloc_lock);
    return n;
}

/* ---- a thread-safe loss and two hooks ----------------------------------- */
static int sum_of_squares(const fc_block_f64 *blocks, fc_index nblocks, double *value,
                          void *ctx)
{
    double sum = 0.0;
    fc_index b, k;
    (void)ctx;
    for (b = 0; b < nblocks; b++) {
        for (k = 0; k < blocks[b].size; k++) {
            double x = blocks[b].data[k * blocks[b].stride];
            sum += x * x;
        }
    }
    *value = sum;
    return 0;
}

static int keep_going(fc_index done, fc_index total, void *ctx)
{
    (void)done;
    (void)total;
    (void)ctx;
    return 0;
}

static int stop_now(fc_index done, fc_index total, void *ctx)
{
    (void)done;
    (void)total;
    (void)ctx;
    return 1;
}

/* Fail each allocation in turn (none, then the 1st, 2nd, ...), serial and
 * threaded, with a hook that continues or one that asks to stop. */
static void test_every_allocation_fails_cleanly(void)
{
    enum { N = 64 };
    double a[N / 2], b[N / 2], before[N], plus[N], minus[N], step[N], center;
    fc_block_f64 blocks[2] = {{a, N / 4, 2}, {b, N / 2, 1}}; /* strided + contiguous */
    int threads, hook, saw_nomem = 0;
    long fail_at;
    fc_index k;
    for (k = 0; k < N / 2; k++) {
        a[k] = 0.25 * (double)k - 3.0;
        b[k] = 1.0 / (1.0 + (double)k);
    }
    for (threads = 1; threads <= 4; threads *= 2) {
        for (hook = 0; hook < 2; hook++) {
            long allocations = -1;
            for (fail_at = -1; allocations < 0 || fail_at < allocations; fail_at++) {
                fc_options opt;
                fc_result res;
                int status;
                fc_options_init(&opt);
                opt.threads = threads;
                opt.hook = hook ? stop_now : keep_going;
                opt.hook_every = 1;
                memset(&res, 0, sizeof res);
                res.center = &center;
                res.plus = plus;
                res.minus = minus;
                res.step = step;
                memcpy(before, a, sizeof a);
                memcpy(before + N / 2, b, sizeof b);
                alloc_reset(fail_at);
                status = fc_evaluate_f64(blocks, 2, sum_of_squares, NULL, &opt, &res);
                if (fail_at < 0) {
                    allocations = alloc_made(); /* how many a clean run makes */
                    CHECK(allocations >= (threads > 1 ? 3 : 1));
                    CHECK(status == (hook ? FC_ERR_STOPPED : FC_OK));
                } else {
                    CHECK(status == FC_ERR_NOMEM || status == FC_ERR_STOPPED);
                    saw_nomem += status == FC_ERR_NOMEM;
                }
                CHECK(memcmp(before, a, sizeof a) == 0);
                CHECK(memcmp(before + N / 2, b, sizeof b) == 0);
            }
        }
    }
    CHECK(saw_nomem > 0);
    alloc_reset(-1);
}

int main(void)
{
    test_every_allocation_fails_cleanly();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("alloc_test: ok\n");
    return 0;
}
