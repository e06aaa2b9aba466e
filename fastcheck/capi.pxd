# fastcheck's C kernel for other Cython extensions (the public C API).
#
#     from fastcheck.capi cimport (fc_block_f64, fc_index, fc_options, fc_result,
#                                  fc_options_init, fc_evaluate_f64, import_fastcheck)
#     import_fastcheck()   # once, at module level; ImportError when versions differ
#
# Ctrl-C: opt.hook = fc_check_signals; after the run, with the GIL,
# `if status == FC_ERR_STOPPED: fastcheck_raise_pending()` raises the interrupt.
#
# Build the extension with include_dirs=[fastcheck.get_include()].  The entry
# points are called through the table published in the capsule
# fastcheck._kernel._C_API (see fastcheck_capi.h), so the extension does not link
# against fastcheck.  They need no GIL: call them inside `with nogil:` when the
# loss is a nogil function.  A loss must have the exact signature of fc_loss_f64 /
# fc_loss_f32; declare it `noexcept nogil` (or `noexcept` when it needs the GIL,
# and then call the kernel with the GIL held).

cdef extern from "fastcheck_capi.h":
    ctypedef Py_ssize_t fc_index

    enum:
        FASTCHECK_CAPI_VERSION_MAJOR
        FASTCHECK_CAPI_VERSION_MINOR
        FASTCHECK_CAPI_VERSION
        FC_VERSION_MAJOR
        FC_VERSION_MINOR
        FC_VERSION_PATCH

    enum fc_status:
        FC_OK
        FC_ERR_CALLBACK
        FC_ERR_STOPPED
        FC_ERR_INVALID
        FC_ERR_NOMEM
        FC_ERR_THREADS
        FC_ERR_MODIFIED

    enum fc_eval_flags:
        FC_EVAL_CENTER
        FC_EVAL_PLUS
        FC_EVAL_MINUS
        FC_EVAL_PLUS2
        FC_EVAL_MINUS2

    ctypedef struct fc_block_f64:
        double *data
        fc_index size
        fc_index stride

    ctypedef struct fc_block_f32:
        float *data
        fc_index size
        fc_index stride

    ctypedef int (*fc_loss_f64)(const fc_block_f64 *blocks, fc_index nblocks,
                                double *value, void *ctx)
    ctypedef int (*fc_loss_f32)(const fc_block_f32 *blocks, fc_index nblocks,
                                double *value, void *ctx)
    ctypedef int (*fc_hook)(fc_index done, fc_index total, void *ctx)

    ctypedef struct fc_options:
        unsigned evals
        double eps
        int relative
        const double *eps_each
        const fc_index *indices
        fc_index count
        fc_hook hook
        void *hook_ctx
        fc_index hook_every
        int threads

    ctypedef struct fc_result:
        double *center
        double *plus
        double *minus
        double *plus2
        double *minus2
        double *step
        fc_index done
        fc_index failed_at
        int callback_status

    # Fetches the table and checks its version; raises ImportError otherwise.
    int import_fastcheck() except -1
    # After a run stopped by fc_check_signals (status FC_ERR_STOPPED), with the GIL:
    # raises the KeyboardInterrupt it left set (-1 means "an exception is set").
    int fastcheck_raise_pending() except -1


cdef extern from "fastcheck_capi.h" nogil:
    void fc_options_init(fc_options *opt)
    void fc_result_init(fc_result *res)
    const char *fc_validate_f64(const fc_block_f64 *blocks, fc_index nblocks,
                                fc_loss_f64 loss, const fc_options *opt,
                                const fc_result *out)
    const char *fc_validate_f32(const fc_block_f32 *blocks, fc_index nblocks,
                                fc_loss_f32 loss, const fc_options *opt,
                                const fc_result *out)
    # The ready Ctrl-C hook: `opt.hook = fc_check_signals`.  It is a C function
    # that takes the GIL itself and leaves KeyboardInterrupt set when it stops the
    # run, so it is declared noexcept: Cython must not look for an exception after
    # it (a hook written in Cython that calls PyErr_CheckSignals, declared
    # `except -1`, inside a `noexcept nogil` function would have Cython print and
    # clear the interrupt -- "Exception ignored" -- and the run would go on).
    int fc_check_signals(fc_index done, fc_index total, void *ctx) noexcept
    fc_index fc_total_size_f64(const fc_block_f64 *blocks, fc_index nblocks)
    fc_index fc_total_size_f32(const fc_block_f32 *blocks, fc_index nblocks)
    int fc_evaluate_f64(const fc_block_f64 *blocks, fc_index nblocks, fc_loss_f64 loss,
                        void *loss_ctx, const fc_options *opt, fc_result *out)
    int fc_evaluate_f32(const fc_block_f32 *blocks, fc_index nblocks, fc_loss_f32 loss,
                        void *loss_ctx, const fc_options *opt, fc_result *out)
    int fc_threads_available()
    const char *fc_status_message(int status)
