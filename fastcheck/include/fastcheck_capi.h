/*
 * fastcheck_capi.h -- fastcheck's C kernel for other Python C extensions.
 *
 * An extension that includes this header calls the kernel declared in fastcheck.h
 * (fc_evaluate_f64, fc_options_init, ...) without linking against fastcheck: the
 * calls go through a table of function pointers that the installed fastcheck
 * publishes as the capsule `fastcheck._kernel._C_API`.
 *
 *     #include "fastcheck_capi.h"    // include_dirs=[fastcheck.get_include()]
 *
 *     PyMODINIT_FUNC PyInit_mymodule(void)
 *     {
 *         if (import_fastcheck() < 0) {
 *             return NULL;           // ImportError, saying what did not match
 *         }
 *         return PyModule_Create(&mymodule_def);
 *     }
 *
 *     // anywhere after that, with or without the GIL:
 *     fc_options opt;
 *     fc_options_init(&opt);
 *     status = fc_evaluate_f64(blocks, nblocks, my_loss, my_ctx, &opt, &res);
 *
 * Cython extensions get the same through `from fastcheck.capi cimport ...`.
 *
 * Design notes, numbered so the source can refer to them:
 *
 *  1. The table starts with its version, then its size in bytes, then the function
 *     pointers.  Entries are only ever appended, so an old extension keeps working
 *     with a newer fastcheck.
 *  2. The version is (major << 16) | minor.  The major changes when something an
 *     existing extension relies on changes (an entry's signature, or the layout of
 *     fc_options, fc_result or the block structs): the extension must then be
 *     rebuilt, and import_fastcheck() refuses a different major.  The minor grows
 *     when entries are appended; import_fastcheck() refuses a table older than the
 *     minor the extension targets (FASTCHECK_CAPI_TARGET_MINOR, by default the
 *     minor of this header; define it lower to run against older fastcheck
 *     releases while using only their entries).
 *  3. The table pointer is a static variable of each translation unit that
 *     includes this header: call import_fastcheck() once in each such file (it is
 *     cheap), typically in the module's init function.
 *  4. Calling an entry point before import_fastcheck() succeeded dereferences a
 *     NULL table, as with numpy's import_array().
 *  5. The entry points need no GIL; a loss that does not touch Python objects can
 *     run with the GIL released, and on several threads (fc_options.threads).
 *  6. Each entry `name` is called as fc_name through a macro
 *     `#define fc_name (fastcheck_capi_table->name)` (the preprocessor cannot
 *     generate a #define from FASTCHECK_CAPI_ENTRIES, so the macros are a second
 *     list; tests/test_capi.py checks the two lists name the same entries).
 *     Define FASTCHECK_CAPI_NO_MACROS to keep the names of fastcheck.h as plain
 *     declarations and call through fastcheck_capi_table->... instead.
 *  7. Ctrl-C (minor 1): set `opt.hook = fc_check_signals` (opt.hook_ctx unused).
 *     It takes the GIL (PyGILState_Ensure: the caller may hold it or not) and runs
 *     PyErr_CheckSignals; on Ctrl-C it leaves KeyboardInterrupt set and stops the
 *     run, which returns FC_ERR_STOPPED with theta restored.  The kernel calls it
 *     every opt.hook_every components (choose about 1 ms of work: taking the GIL
 *     costs about a microsecond) and, with threads, every 20 ms from the calling
 *     thread.  Then raise the interrupt with fastcheck_raise_pending().  Every
 *     function here is `static inline`, so a file that includes this header only
 *     for its types builds warning-free under -Wall -Wextra.
 */
#ifndef FASTCHECK_CAPI_H
#define FASTCHECK_CAPI_H

#include <Python.h>
#include <stddef.h>

#include "fastcheck.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FASTCHECK_CAPI_VERSION_MAJOR 1
#define FASTCHECK_CAPI_VERSION_MINOR 1
#define FASTCHECK_CAPI_VERSION \
    ((FASTCHECK_CAPI_VERSION_MAJOR << 16) | FASTCHECK_CAPI_VERSION_MINOR)
#define FASTCHECK_CAPI_CAPSULE "fastcheck._kernel._C_API"

#ifndef FASTCHECK_CAPI_TARGET_MINOR
#define FASTCHECK_CAPI_TARGET_MINOR FASTCHECK_CAPI_VERSION_MINOR
#endif

/*
 * The table's entry points in table order (note 1), one per line:
 *     X(name, minor that added it, return type, (parameters))
 * This list is the one declaration of the table.  It makes the struct below, the
 * bytes the target minor guarantees, and, in fastcheck itself, the designated
 * initializer `.name = fc_name` of the published table.  Append only, each new
 * entry with the next minor, and give it a call macro (note 6).
 */
#define FASTCHECK_CAPI_ENTRIES(X)                                                     \
    X(evaluate_f64, 0, int,                                                           \
      (const fc_block_f64 *blocks, fc_index nblocks, fc_loss_f64 loss,                \
       void *loss_ctx, const fc_options *opt, fc_result *out))                        \
    X(evaluate_f32, 0, int,                                                           \
      (const fc_block_f32 *blocks, fc_index nblocks, fc_loss_f32 loss,                \
       void *loss_ctx, const fc_options *opt, fc_result *out))                        \
    X(options_init, 0, void, (fc_options *opt))                                       \
    X(status_message, 0, const char *, (int status))                                  \
    X(threads_available, 0, int, (void))                                              \
    X(total_size_f64, 0, fc_index, (const fc_block_f64 *blocks, fc_index nblocks))    \
    X(total_size_f32, 0, fc_index, (const fc_block_f32 *blocks, fc_index nblocks))    \
    X(result_init, 1, void, (fc_result *res))                                         \
    X(validate_f64, 1, const char *,                                                  \
      (const fc_block_f64 *blocks, fc_index nblocks, fc_loss_f64 loss,                \
       const fc_options *opt, const fc_result *out))                                  \
    X(validate_f32, 1, const char *,                                                  \
      (const fc_block_f32 *blocks, fc_index nblocks, fc_loss_f32 loss,                \
       const fc_options *opt, const fc_result *out))                                  \
    X(check_signals, 1, int, (fc_index done, fc_index total, void *ctx)) /* note 7 */

#define FASTCHECK_CAPI_FIELD_(name, minor, ret, params) ret (*name) params;

/* The table (note 1), made from the list above. */
typedef struct fastcheck_capi {
    unsigned int version; /* (major << 16) | minor of the fastcheck that filled it */
    size_t size;          /* sizeof(fastcheck_capi) in that fastcheck */
    FASTCHECK_CAPI_ENTRIES(FASTCHECK_CAPI_FIELD_)
} fastcheck_capi;

/* Bytes of the table that the target minor guarantees: the two header fields,
 * then one function pointer per entry of that minor or older (every entry is a
 * function pointer, so there is no padding between them). */
#define FASTCHECK_CAPI_IN_TARGET_(name, minor, ret, params) \
    +((minor) <= FASTCHECK_CAPI_TARGET_MINOR)
#define FASTCHECK_CAPI_SIZE_TARGET                                                    \
    (offsetof(fastcheck_capi, evaluate_f64) +                                         \
     sizeof(int (*)(void)) * (size_t)(0 FASTCHECK_CAPI_ENTRIES(FASTCHECK_CAPI_IN_TARGET_)))

/* Used by fastcheck itself to fill the table: `.name = fc_name` for every entry. */
#define FASTCHECK_CAPI_INIT_(name, minor, ret, params) .name = fc_##name,
#define FASTCHECK_CAPI_TABLE_INITIALIZER                                              \
    {.version = FASTCHECK_CAPI_VERSION, .size = sizeof(fastcheck_capi),               \
     FASTCHECK_CAPI_ENTRIES(FASTCHECK_CAPI_INIT_)}

#ifndef FASTCHECK_CAPI_PROVIDER /* defined only when building fastcheck itself */

static const fastcheck_capi *fastcheck_capi_table = NULL;

/* Turn the exception in flight into an ImportError that says what failed. */
static inline void fastcheck_capi__import_failed(void)
{
    PyObject *text = NULL;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *raised = PyErr_GetRaisedException();
    if (raised != NULL) {
        text = PyObject_Str(raised);
    }
    Py_XDECREF(raised);
#else
    PyObject *type = NULL, *value = NULL, *traceback = NULL;
    PyErr_Fetch(&type, &value, &traceback);
    if (value != NULL) {
        text = PyObject_Str(value);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
#endif
    if (text != NULL) {
        PyErr_Format(PyExc_ImportError,
                     "fastcheck C API: cannot import the capsule " FASTCHECK_CAPI_CAPSULE
                     " (is fastcheck installed, and importable from here?): %U", text);
        Py_DECREF(text);
    } else {
        PyErr_Clear();
        PyErr_SetString(PyExc_ImportError,
                        "fastcheck C API: cannot import the capsule " FASTCHECK_CAPI_CAPSULE
                        " (is fastcheck installed, and importable from here?)");
    }
}

/*
 * Fetch the table and check its version (note 2).  Returns 0, or -1 with an
 * ImportError set.  Call it with the GIL held, e.g. in the module init function.
 */
static inline int import_fastcheck(void)
{
    const fastcheck_capi *api;
    unsigned int major, minor;

    api = (const fastcheck_capi *)PyCapsule_Import(FASTCHECK_CAPI_CAPSULE, 0);
    if (api == NULL) {
        fastcheck_capi__import_failed();
        return -1;
    }
    major = api->version >> 16;
    minor = api->version & 0xFFFFu;
    if (major != FASTCHECK_CAPI_VERSION_MAJOR) {
        PyErr_Format(PyExc_ImportError,
                     "fastcheck C API version mismatch: this extension was compiled "
                     "against C API %d.%d, but the installed fastcheck provides %u.%u, "
                     "whose major version differs. Rebuild the extension against the "
                     "installed fastcheck (include_dirs=[fastcheck.get_include()])",
                     FASTCHECK_CAPI_VERSION_MAJOR, FASTCHECK_CAPI_VERSION_MINOR, major,
                     minor);
        return -1;
    }
#if FASTCHECK_CAPI_TARGET_MINOR > 0 /* (unsigned < 0 would warn under -Wtype-limits) */
    if (minor < (unsigned int)FASTCHECK_CAPI_TARGET_MINOR) {
        PyErr_Format(PyExc_ImportError,
                     "fastcheck C API too old: this extension needs C API %d.%d or "
                     "newer, but the installed fastcheck provides %u.%u. Upgrade "
                     "fastcheck",
                     FASTCHECK_CAPI_VERSION_MAJOR, FASTCHECK_CAPI_TARGET_MINOR, major,
                     minor);
        return -1;
    }
#endif
    if (api->size < FASTCHECK_CAPI_SIZE_TARGET) {
        PyErr_Format(PyExc_ImportError,
                     "fastcheck C API table is too small (%zu bytes, at least %zu "
                     "expected for version %u.%u): the capsule " FASTCHECK_CAPI_CAPSULE
                     " is damaged or not fastcheck's",
                     api->size, (size_t)FASTCHECK_CAPI_SIZE_TARGET, major, minor);
        return -1;
    }
    fastcheck_capi_table = api;
    return 0;
}

#ifndef FASTCHECK_CAPI_NO_MACROS /* note 6 */
#define fc_evaluate_f64 (fastcheck_capi_table->evaluate_f64)
#define fc_evaluate_f32 (fastcheck_capi_table->evaluate_f32)
#define fc_options_init (fastcheck_capi_table->options_init)
#define fc_status_message (fastcheck_capi_table->status_message)
#define fc_threads_available (fastcheck_capi_table->threads_available)
#define fc_total_size_f64 (fastcheck_capi_table->total_size_f64)
#define fc_total_size_f32 (fastcheck_capi_table->total_size_f32)
#define fc_result_init (fastcheck_capi_table->result_init)
#define fc_validate_f64 (fastcheck_capi_table->validate_f64)
#define fc_validate_f32 (fastcheck_capi_table->validate_f32)
#define fc_check_signals (fastcheck_capi_table->check_signals)
#endif

/*
 * After fc_evaluate_* returned FC_ERR_STOPPED because fc_check_signals saw
 * Ctrl-C: the KeyboardInterrupt is set.  Returns -1 when an exception is set (so
 * `return NULL` from the calling function raises it), 0 otherwise.  Call it with
 * the GIL held.  (Cython: declared `except -1` in fastcheck/capi.pxd.)
 */
static inline int fastcheck_raise_pending(void)
{
    return PyErr_Occurred() != NULL ? -1 : 0;
}

#endif /* FASTCHECK_CAPI_PROVIDER */

#ifdef __cplusplus
}
#endif

#endif /* FASTCHECK_CAPI_H */
