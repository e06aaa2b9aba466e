/*
 * fastcheck.h -- the numerical-gradient kernel of fastcheck (pure C99, no Python).
 *
 * The kernel walks over components of a parameter vector theta that may live in
 * several strided blocks of memory (one block per array, or per run of an array).
 * For each requested component it saves the value, writes the perturbed value into
 * the caller's own memory, calls the loss, and restores the saved value by
 * assignment.  It reports the raw loss evaluations, not derivatives, so that the
 * caller can derive central, forward and backward differences, curvature and kinks
 * without evaluating the loss again.
 *
 * Design notes, numbered so the source can refer to them:
 *
 *  1. The step used is the step actually represented, h = (x + eps) - x, never the
 *     nominal eps, so the difference quotient divides by the true distance.
 *  2. Restoring is an assignment of the saved value (x + h - h need not equal x).
 *     Every exit path -- success, a failing callback, a stop request -- leaves every
 *     block bitwise as it was on entry.
 *  3. Nothing is allocated per component.  The serial path allocates at most one
 *     table of block offsets per call (for index lists over several blocks); the
 *     threaded path allocates one private copy of theta per thread.
 *  4. Loss values are always double, whatever the parameter type: a float32 model
 *     usually accumulates its loss in higher precision, and the caller wants the
 *     full value to estimate rounding noise.
 */
#ifndef FASTCHECK_H
#define FASTCHECK_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FC_VERSION_MAJOR 0
#define FC_VERSION_MINOR 1
#define FC_VERSION_PATCH 0

/* Signed index type; matches npy_intp / Py_ssize_t on every supported platform. */
typedef ptrdiff_t fc_index;

/* Status codes returned by the entry points. */
enum fc_status {
    FC_OK = 0,             /* all requested evaluations were made */
    FC_ERR_CALLBACK = 1,   /* the loss returned a non-zero status (see fc_result) */
    FC_ERR_STOPPED = 2,    /* the progress hook asked to stop (e.g. Ctrl-C) */
    FC_ERR_INVALID = 3,    /* invalid arguments (NULL pointer, index out of range, ...) */
    FC_ERR_NOMEM = 4,      /* an allocation failed */
    FC_ERR_THREADS = 5     /* threads could not be started, or are not available */
};

/* Which evaluations to make: OR these together in fc_options.evals. */
enum fc_eval_flags {
    FC_EVAL_CENTER = 1,   /* J(theta), once per call */
    FC_EVAL_PLUS = 2,     /* J(theta + h e_i) */
    FC_EVAL_MINUS = 4,    /* J(theta - h e_i) */
    FC_EVAL_PLUS2 = 8,    /* J(theta + 2h e_i), for the five-point stencil */
    FC_EVAL_MINUS2 = 16   /* J(theta - 2h e_i) */
};

/* One block of parameters: `size` elements at data[0], data[stride], ... */
typedef struct fc_block_f64 {
    double *data;
    fc_index size;
    fc_index stride; /* in elements, may be negative, never 0 when size > 1 */
} fc_block_f64;

typedef struct fc_block_f32 {
    float *data;
    fc_index size;
    fc_index stride;
} fc_block_f32;

/*
 * The loss.  It reads theta from `blocks` (the caller's own blocks in the serial
 * path; a thread's private, contiguous copy in the threaded path), stores J in
 * *value and returns 0, or returns any non-zero status to abort the run.
 */
typedef int (*fc_loss_f64)(const fc_block_f64 *blocks, fc_index nblocks,
                           double *value, void *ctx);
typedef int (*fc_loss_f32)(const fc_block_f32 *blocks, fc_index nblocks,
                           double *value, void *ctx);

/*
 * Progress hook, called every `hook_every` components with the number done so
 * far (and once at the end).  Returning non-zero stops the run with FC_ERR_STOPPED.
 * In the threaded path it is called from the calling thread only.
 */
typedef int (*fc_hook)(fc_index done, fc_index total, void *ctx);

typedef struct fc_options {
    unsigned evals;          /* FC_EVAL_* flags */
    double eps;              /* nominal step */
    int relative;            /* non-zero: nominal step is eps * max(1, |x_i|) */
    const double *eps_each;  /* optional: one nominal step per requested component */
    const fc_index *indices; /* optional: flat indices into the concatenated blocks */
    fc_index count;          /* number of indices; ignored when indices is NULL */
    fc_hook hook;            /* optional */
    void *hook_ctx;
    fc_index hook_every;     /* <= 0: the hook is only called at the end */
    int threads;             /* <= 1: serial, in place; > 1: private copies per thread */
} fc_options;

typedef struct fc_result {
    /* Output arrays owned by the caller; each must hold one double per requested
     * component when its flag is set, and may be NULL otherwise. */
    double *center;  /* one double: J(theta) */
    double *plus;
    double *minus;
    double *plus2;
    double *minus2;
    double *step;    /* optional: the represented step h of each component */
    /* Filled in by the kernel. */
    fc_index done;          /* components completed (serial path: a prefix) */
    fc_index failed_at;     /* request position being evaluated at a failure, or -1 */
    int callback_status;    /* the loss's non-zero status, when FC_ERR_CALLBACK */
} fc_result;

/* Fills `opt` with the defaults: central evaluations (center, plus, minus),
 * eps = 1e-6 absolute, all components, no hook, one thread. */
void fc_options_init(fc_options *opt);

/* Number of components across the blocks, or -1 if a block is invalid. */
fc_index fc_total_size_f64(const fc_block_f64 *blocks, fc_index nblocks);
fc_index fc_total_size_f32(const fc_block_f32 *blocks, fc_index nblocks);

/* The entry points: see the notes at the top of this file. */
int fc_evaluate_f64(const fc_block_f64 *blocks, fc_index nblocks, fc_loss_f64 loss,
                    void *loss_ctx, const fc_options *opt, fc_result *out);
int fc_evaluate_f32(const fc_block_f32 *blocks, fc_index nblocks, fc_loss_f32 loss,
                    void *loss_ctx, const fc_options *opt, fc_result *out);

/* Non-zero when this build can run more than one thread. */
int fc_threads_available(void);

/* A short English description of a status code. */
const char *fc_status_message(int status);

#ifdef __cplusplus
}
#endif

#endif /* FASTCHECK_H */
