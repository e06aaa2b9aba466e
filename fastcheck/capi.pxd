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

# The kernel's types and entry points are declared once, in fastcheck/_ckernel.pxd
# (the declarations of fastcheck.h), and cimported from there; the header below
# turns each entry point's name into a call through the table.
from fastcheck._ckernel cimport (
    FC_ERR_CALLBACK, FC_ERR_INVALID, FC_ERR_MODIFIED, FC_ERR_NOMEM, FC_ERR_STOPPED,
    FC_ERR_THREADS, FC_EVAL_CENTER, FC_EVAL_MINUS, FC_EVAL_MINUS2, FC_EVAL_PLUS,
    FC_EVAL_PLUS2, FC_OK, FC_VERSION_MAJOR, FC_VERSION_MINOR, FC_VERSION_PATCH,
    fc_block_f32, fc_block_f64, fc_eval_flags, fc_evaluate_f32, fc_evaluate_f64,
    fc_hook, fc_index, fc_loss_f32, fc_loss_f64, fc_options, fc_options_init,
    fc_result, fc_result_init, fc_status, fc_status_message, fc_threads_available,
    fc_total_size_f32, fc_total_size_f64, fc_validate_f32, fc_validate_f64)


cdef extern from "fastcheck_capi.h":
    enum:
        FASTCHECK_CAPI_VERSION_MAJOR
        FASTCHECK_CAPI_VERSION_MINOR
        FASTCHECK_CAPI_VERSION

    # Fetches the table and checks its version; raises ImportError otherwise.
    int import_fastcheck() except -1
    # After a run stopped by fc_check_signals (status FC_ERR_STOPPED), with the GIL:
    # raises the KeyboardInterrupt it left set (-1 means "an exception is set").
    int fastcheck_raise_pending() except -1


cdef extern from "fastcheck_capi.h" nogil:
    # The ready Ctrl-C hook: `opt.hook = fc_check_signals`.  It is a C function
    # that takes the GIL itself and leaves KeyboardInterrupt set when it stops the
    # run, so it is declared noexcept: Cython must not look for an exception after
    # it (a hook written in Cython that calls PyErr_CheckSignals, declared
    # `except -1`, inside a `noexcept nogil` function would have Cython print and
    # clear the interrupt -- "Exception ignored" -- and the run would go on).
    int fc_check_signals(fc_index done, fc_index total, void *ctx) noexcept
