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
    FC_ERR_THREADS = 5,    /* threads could not be started, or are not available */
    FC_ERR_MODIFIED = 6    /* the loss wrote into theta: into the component being
                            * perturbed (failed_at says which), or, in the threaded
                            * path, anywhere in a thread's copy (failed_at -1) */
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
 * The loss.  It reads theta from `blocks` (the caller's own blocks, with their
 * strides, in the serial path and for J(theta) always; a thread's private
 * contiguous copy, stride 1, for the components in the threaded path), stores J
 * in *value and returns 0, or returns any non-zero status to abort the run.  It
 * must only read theta (a write is reported as FC_ERR_MODIFIED where seen).
 * Note that it takes blocks, not the (pointer, length) of fastcheck.CLoss: a
 * loss written for one array needs a small adapter (see the README).
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

/* An fc_result with every output NULL and nothing done: start from it and set
 * the outputs the flags ask for.  FC_RESULT_INIT is the same as an initialiser:
 *     fc_result res = FC_RESULT_INIT; */
#define FC_RESULT_INIT {NULL, NULL, NULL, NULL, NULL, NULL, 0, -1, 0}
void fc_result_init(fc_result *res);

/* Fills `opt` with the defaults: central evaluations (center, plus, minus),
 * eps = 1e-6 absolute, all components, no hook, one thread.  (Python's
 * fastcheck uses relative steps, eps = u^(1/3) * max(1, |x|) for central
 * differences: opt.eps = 4.806217383937355e-06, i.e. 2^(-53/3), and
 * opt.relative = 1 give the same steps.) */
void fc_options_init(fc_options *opt);

/*
 * Why fc_evaluate_* would return (or returned) FC_ERR_INVALID for these
 * arguments, as one English sentence naming the field; NULL when they are valid.
 * The rules: out, loss and opt non-NULL; valid blocks (size >= 0, data non-NULL
 * when size > 0, stride non-zero when size > 1); evals a non-empty OR of
 * FC_EVAL_* flags; every output the flags ask for non-NULL; indices in range;
 * eps (or each eps_each) finite and > 0; and for each requested finite
 * component x, its nominal step (eps, times max(1, |x|) when relative) at most
 * max(1, |x|), and x +- the step (2 steps for FC_EVAL_PLUS2 / MINUS2) finite.
 * fc_evaluate_* checks all of them before the first evaluation (for a component,
 * result.failed_at is then its request position).  Not refused: NaN or inf in
 * theta (their differences are NaN), and a step below the resolution of x (its
 * represented step, out.step[i], is then 0).
 */
const char *fc_validate_f64(const fc_block_f64 *blocks, fc_index nblocks, fc_loss_f64 loss,
                            const fc_options *opt, const fc_result *out);
const char *fc_validate_f32(const fc_block_f32 *blocks, fc_index nblocks, fc_loss_f32 loss,
                            const fc_options *opt, const fc_result *out);

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
