/*
 * check.h -- the assertion every C test program uses: a failed check is printed
 * with its file and line and counted, and the program goes on (main returns
 * non-zero when `failures` is not 0), so one run reports every failure.
 */
#ifndef FASTCHECK_TESTS_CHECK_H
#define FASTCHECK_TESTS_CHECK_H

#include <stdio.h>

static int failures = 0;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                         \
        }                                                                       \
    } while (0)

#endif
