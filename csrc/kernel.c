/*
 * kernel.c -- fastcheck's numerical-gradient kernel (pure C99; POSIX threads
 * where available).  The loop itself is written once in kernel_impl.h and
 * expanded here for double and float.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "fastcheck.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The allocator.  A test build replaces it (-DFC_MALLOC=... -DFC_CALLOC=...) to
 * make any allocation fail on purpose; memory is always released with free(). */

#ifndef FC_MALLOC
#define FC_MALLOC malloc
#else
void *FC_MALLOC(size_t size);
#endif
#ifndef FC_CALLOC
#define FC_CALLOC calloc
#else
void *FC_CALLOC(size_t count, size_t size);
#endif

#if !defined(_WIN32) && !defined(FC_NO_THREADS)
#define FC_HAVE_PTHREADS 1
#include <errno.h>
#include <pthread.h>
#include <time.h>
#endif

/*
 * Progress bookkeeping shared by the serial and the threaded paths.  In the
 * serial path it is a plain counter that calls the hook every `hook_every`
 * components.  In the threaded path workers bump a counter under a mutex and the
 * calling thread wakes up every few milliseconds to call the hook, so the hook
 * (which may take a lock of its own, such as Python's GIL) never runs on a worker.
 */
struct fc_progress {
    fc_index done;
    int threaded;
#ifdef FC_HAVE_PTHREADS
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int running;
    int stop;
#endif
};

static int fc_progress_init(struct fc_progress *p, int threaded)
{
    p->done = 0;
    p->threaded = threaded;
#ifdef FC_HAVE_PTHREADS
    p->running = 0;
    p->stop = 0;
    if (threaded) {
        if (pthread_mutex_init(&p->lock, NULL) != 0) {
            return -1;
        }
        if (pthread_cond_init(&p->changed, NULL) != 0) {
            pthread_mutex_destroy(&p->lock);
            return -1;
        }
    }
#endif
    return 0;
}

static void fc_progress_destroy(struct fc_progress *p)
{
#ifdef FC_HAVE_PTHREADS
    if (p->threaded) {
        pthread_cond_destroy(&p->changed);
        pthread_mutex_destroy(&p->lock);
    }
#else
    (void)p;
#endif
}

/* One more component done.  Non-zero means: stop now. */
static int fc_progress_step(struct fc_progress *p, fc_index count, const fc_options *opt)
{
#ifdef FC_HAVE_PTHREADS
    if (p->threaded) {
        int stop;
        pthread_mutex_lock(&p->lock);
        p->done++;
        stop = p->stop;
        pthread_mutex_unlock(&p->lock);
        return stop;
    }
#endif
    p->done++;
    if (opt->hook && opt->hook_every > 0 && p->done % opt->hook_every == 0 &&
        p->done < count) {
        return opt->hook(p->done, count, opt->hook_ctx);
    }
    return 0;
}

#ifdef FC_HAVE_PTHREADS
static void fc_progress_add_worker(struct fc_progress *p)
{
    pthread_mutex_lock(&p->lock);
    p->running++;
    pthread_mutex_unlock(&p->lock);
}

static void fc_progress_finish(struct fc_progress *p)
{
    pthread_mutex_lock(&p->lock);
    p->running--;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
}

static void fc_progress_fail(struct fc_progress *p)
{
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_mutex_unlock(&p->lock);
}

static fc_index fc_progress_done(struct fc_progress *p)
{
    fc_index done;
    pthread_mutex_lock(&p->lock);
    done = p->done;
    pthread_mutex_unlock(&p->lock);
    return done;
}

/* Called by the calling thread: wait for the workers, calling the hook about every
 * 20 ms.  Returns non-zero when the hook asked to stop. */
static int fc_progress_wait(struct fc_progress *p, fc_index count, const fc_options *opt)
{
    int hook_stop = 0;
    pthread_mutex_lock(&p->lock);
    while (p->running > 0) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += 20 * 1000 * 1000;
        if (deadline.tv_nsec >= 1000 * 1000 * 1000) {
            deadline.tv_sec += 1;
            deadline.tv_nsec -= 1000 * 1000 * 1000;
        }
        pthread_cond_timedwait(&p->changed, &p->lock, &deadline);
        if (opt->hook && !hook_stop && p->running > 0) {
            fc_index done = p->done;
            pthread_mutex_unlock(&p->lock);
            hook_stop = opt->hook(done, count, opt->hook_ctx) != 0;
            pthread_mutex_lock(&p->lock);
            if (hook_stop) {
                p->stop = 1;
            }
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (!hook_stop && opt->hook) {
        hook_stop = opt->hook(fc_progress_done(p), count, opt->hook_ctx) != 0;
    }
    return hook_stop;
}
#endif /* FC_HAVE_PTHREADS */

/* Where the last located component was: block and its first flat index. */
typedef struct fc_cursor {
    fc_index block, start;
} fc_cursor;

#define FC_REAL double
#define FC_SUFFIX f64
#define FC_ABS fabs
#define FC_REAL_MAX DBL_MAX
#include "kernel_impl.h"
#undef FC_REAL
#undef FC_SUFFIX
#undef FC_ABS
#undef FC_REAL_MAX

#define FC_REAL float
#define FC_SUFFIX f32
#define FC_ABS fabsf
#define FC_REAL_MAX FLT_MAX
#include "kernel_impl.h"
#undef FC_REAL
#undef FC_SUFFIX
#undef FC_ABS
#undef FC_REAL_MAX

void fc_options_init(fc_options *opt)
{
    opt->evals = FC_EVAL_CENTER | FC_EVAL_PLUS | FC_EVAL_MINUS;
    opt->eps = 1e-6;
    opt->relative = 0;
    opt->eps_each = NULL;
    opt->indices = NULL;
    opt->count = 0;
    opt->hook = NULL;
    opt->hook_ctx = NULL;
    opt->hook_every = 0;
    opt->threads = 1;
}

void fc_result_init(fc_result *res)
{
    static const fc_result empty = FC_RESULT_INIT;
    *res = empty;
}

int fc_threads_available(void)
{
#ifdef FC_HAVE_PTHREADS
    return 1;
#else
    return 0;
#endif
}

const char *fc_status_message(int status)
{
    switch (status) {
    case FC_OK:
        return "ok";
    case FC_ERR_CALLBACK:
        return "the loss callback reported an error";
    case FC_ERR_STOPPED:
        return "stopped by the progress hook";
    case FC_ERR_INVALID:
        return "invalid arguments";
    case FC_ERR_NOMEM:
        return "out of memory";
    case FC_ERR_THREADS:
        return "threads could not be started";
    case FC_ERR_MODIFIED:
        return "the loss wrote into theta (a loss must only read it)";
    default:
        return "unknown status";
    }
}
