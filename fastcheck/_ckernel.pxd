# The one Cython declaration of csrc/fastcheck.h: its types, constants and entry
# points.  The bridge (_kernel.pyx) cimports it and links the kernel in; the public
# fastcheck/capi.pxd cimports it too, and there fastcheck_capi.h turns each entry
# point's name into a call through the C API table (other extensions cannot link
# against a Python extension module's symbols portably).

cdef extern from "fastcheck.h":
    # Types first, outside `nogil`: a loss or hook written in Cython may need the
    # GIL (Python losses run with it held), while a nogil function still converts
    # to these pointer types.
    ctypedef Py_ssize_t fc_index

    enum:
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


cdef extern from "fastcheck.h" nogil:

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

    void fc_options_init(fc_options *opt)
    void fc_result_init(fc_result *res)
    const char *fc_validate_f64(const fc_block_f64 *blocks, fc_index nblocks,
                                fc_loss_f64 loss, const fc_options *opt,
                                const fc_result *out)
    const char *fc_validate_f32(const fc_block_f32 *blocks, fc_index nblocks,
                                fc_loss_f32 loss, const fc_options *opt,
                                const fc_result *out)
    fc_index fc_total_size_f64(const fc_block_f64 *blocks, fc_index nblocks)
    fc_index fc_total_size_f32(const fc_block_f32 *blocks, fc_index nblocks)
    int fc_evaluate_f64(const fc_block_f64 *blocks, fc_index nblocks, fc_loss_f64 loss,
                        void *loss_ctx, const fc_options *opt, fc_result *out)
    int fc_evaluate_f32(const fc_block_f32 *blocks, fc_index nblocks, fc_loss_f32 loss,
                        void *loss_ctx, const fc_options *opt, fc_result *out)
    int fc_threads_available()
    const char *fc_status_message(int status)
