/*
 * consumer.c -- a C extension that uses fastcheck's C API as a third party would:
 * it includes fastcheck_capi.h (include_dirs=[fastcheck.get_include()]), imports
 * the capsule in its init function, and calls the kernel on its own C loss.
 * Built only by the tests (tests/test_capi.py), in a temporary folder.
 *
 * The module name comes from CONSUMER_NAME so the tests can build variants (one
 * targeting a C API minor version that does not exist yet).
 */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#define PY_SSIZE_T_CLEAN
#include "fastcheck_capi.h"

#include <math.h>
#include <string.h>
#include <time.h>

#ifndef CONSUMER_NAME
#define CONSUMER_NAME capi_consumer
#endif
#define CONSUMER_CAT_(a, b) a##b
#define CONSUMER_CAT(a, b) CONSUMER_CAT_(a, b)
#define CONSUMER_STR_(a) #a
#define CONSUMER_STR(a) CONSUMER_STR_(a)

/* J(theta) = sum_i a_i theta_i^2 / 2 + b_i theta_i, a_i = 1 + i % 5,
 * b_i = 0.5 - (i % 3) / 4, summed left to right over the blocks. */
static int quadratic_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value,
                          void *ctx)
{
    double sum = 0.0;
    fc_index blk, k, i = 0;
    (void)ctx;
    for (blk = 0; blk < nblocks; blk++) {
        for (k = 0; k < blocks[blk].size; k++, i++) {
            double x = blocks[blk].data[k * blocks[blk].stride];
            double a = 1.0 + (double)(i % 5), b = 0.5 - (double)(i % 3) * 0.25;
            sum += 0.5 * a * x * x + b * x;
        }
    }
    *value = sum;
    return 0;
}

/* Central differences of `loss` over the blocks, with fastcheck's default float64
 * step (relative, u^(1/3)).  grad must hold the total size. */
static int central_grad(const fc_block_f64 *blocks, fc_index nblocks, fc_loss_f64 loss,
                        void *ctx, int threads, double *grad)
{
    fc_index n = fc_total_size_f64(blocks, nblocks), i;
    fc_options opt;
    fc_result res;
    double center, *work;
    int status;
    if (n < 0) {
        return FC_ERR_INVALID;
    }
    work = (double *)malloc(sizeof(double) * 3 * (size_t)(n > 0 ? n : 1));
    if (work == NULL) {
        return FC_ERR_NOMEM;
    }
    fc_options_init(&opt);
    opt.eps = pow(ldexp(1.0, -53), 1.0 / 3.0); /* u^(1/3), u = 2^-53 */
    opt.relative = 1;
    opt.threads = threads;
    memset(&res, 0, sizeof res);
    res.center = &center;
    res.plus = work;
    res.minus = work + n;
    res.step = work + 2 * n;
    status = fc_evaluate_f64(blocks, nblocks, loss, ctx, &opt, &res);
    if (status == FC_OK) {
        for (i = 0; i < n; i++) {
            grad[i] = (res.plus[i] - res.minus[i]) / (2 * res.step[i]);
        }
    }
    free(work);
    return status;
}

/* A loss that runs a nested check: J = sum_i g_i^2 / 2 with g the numerical
 * gradient of the quadratic at theta (reentrancy through the capsule). */
static int nested_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value,
                       void *ctx)
{
    fc_index n = fc_total_size_f64(blocks, nblocks), i;
    double *g, sum = 0.0;
    int status;
    (void)ctx;
    g = (double *)malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (g == NULL) {
        return 99;
    }
    status = central_grad(blocks, nblocks, quadratic_loss, NULL, 1, g);
    for (i = 0; status == FC_OK && i < n; i++) {
        sum += 0.5 * g[i] * g[i];
    }
    free(g);
    *value = sum;
    return status == FC_OK ? 0 : 100 + status;
}

/* grad(theta, out, threads=1, nested=False): the numerical gradient of the
 * quadratic (or of the nested loss) at theta, written into out.  theta and out
 * are writeable, C-contiguous float64 buffers of the same length. */
static PyObject *consumer_grad(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"theta", "out", "threads", "nested", NULL};
    PyObject *theta_obj, *out_obj;
    Py_buffer theta, out;
    int threads = 1, nested = 0, status;
    fc_block_f64 block;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|ip", keywords, &theta_obj, &out_obj,
                                     &threads, &nested)) {
        return NULL;
    }
    if (PyObject_GetBuffer(theta_obj, &theta,
                           PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(out_obj, &out,
                           PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&theta);
        return NULL;
    }
    if (strcmp(theta.format, "d") != 0 || strcmp(out.format, "d") != 0 ||
        theta.len != out.len) {
        PyBuffer_Release(&theta);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_TypeError, "theta and out must be float64 of one length");
        return NULL;
    }
    block.data = (double *)theta.buf;
    block.size = (fc_index)(theta.len / (Py_ssize_t)sizeof(double));
    block.stride = 1;
    Py_BEGIN_ALLOW_THREADS
    status = central_grad(&block, 1, nested ? nested_loss : quadratic_loss, NULL, threads,
                          (double *)out.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&theta);
    PyBuffer_Release(&out);
    if (status != FC_OK) {
        PyErr_Format(PyExc_RuntimeError, "fastcheck: %s", fc_status_message(status));
        return NULL;
    }
    Py_RETURN_NONE;
}

/* A loss that sleeps `*(double *)ctx` seconds, then returns the quadratic: slow
 * enough that only Ctrl-C ends a run in time. */
static int sleepy_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value,
                       void *ctx)
{
    double seconds = *(const double *)ctx;
    struct timespec pause;
    pause.tv_sec = (time_t)seconds;
    pause.tv_nsec = (long)((seconds - (double)pause.tv_sec) * 1e9);
    nanosleep(&pause, NULL);
    return quadratic_loss(blocks, nblocks, value, NULL);
}

/* slow_grad(theta, seconds, threads=1): central differences of sleepy_loss with
 * the ready Ctrl-C hook, the GIL released.  KeyboardInterrupt on Ctrl-C (theta
 * restored), else the list of derivatives. */
static PyObject *consumer_slow_grad(PyObject *self, PyObject *args)
{
    PyObject *theta_obj, *grad = NULL;
    Py_buffer theta;
    double seconds, *work, center;
    int threads = 1, status;
    fc_block_f64 block;
    fc_options opt;
    fc_result res = FC_RESULT_INIT;
    fc_index n, i;
    (void)self;
    if (!PyArg_ParseTuple(args, "Od|i", &theta_obj, &seconds, &threads)) {
        return NULL;
    }
    if (PyObject_GetBuffer(theta_obj, &theta, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    n = (fc_index)(theta.len / (Py_ssize_t)sizeof(double));
    work = (double *)malloc(sizeof(double) * 3 * (size_t)(n > 0 ? n : 1));
    if (work == NULL) {
        PyBuffer_Release(&theta);
        return PyErr_NoMemory();
    }
    block.data = (double *)theta.buf;
    block.size = n;
    block.stride = 1;
    fc_options_init(&opt);
    opt.threads = threads;
    opt.hook = fc_check_signals; /* Ctrl-C: note 7 of fastcheck_capi.h */
    opt.hook_every = 1;          /* each component takes milliseconds */
    res.center = &center;
    res.plus = work;
    res.minus = work + n;
    res.step = work + 2 * n;
    Py_BEGIN_ALLOW_THREADS
    status = fc_evaluate_f64(&block, 1, sleepy_loss, &seconds, &opt, &res);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&theta);
    if (status == FC_OK) {
        grad = PyList_New(n);
        for (i = 0; grad != NULL && i < n; i++) {
            PyList_SET_ITEM(grad, i, PyFloat_FromDouble((work[i] - work[n + i]) /
                                                        (2 * work[2 * n + i])));
        }
    } else if (fastcheck_raise_pending() == 0) { /* not Ctrl-C: say what it was */
        PyErr_Format(PyExc_RuntimeError, "fastcheck: %s", fc_status_message(status));
    }
    free(work);
    return grad;
}

/* check_eps(eps): (status, message) of fc_evaluate_f64 with fc_options.eps = eps
 * on a small theta, and fc_validate_f64's message (None when valid). */
static PyObject *consumer_check_eps(PyObject *self, PyObject *args)
{
    double eps, theta[3] = {1.0, 2.0, 3.0}, center, plus[3], minus[3];
    fc_block_f64 block = {theta, 3, 1};
    fc_options opt;
    fc_result res;
    const char *problem;
    int status;
    (void)self;
    if (!PyArg_ParseTuple(args, "d", &eps)) {
        return NULL;
    }
    fc_result_init(&res);
    res.center = &center;
    res.plus = plus;
    res.minus = minus;
    fc_options_init(&opt);
    opt.eps = eps;
    status = fc_evaluate_f64(&block, 1, quadratic_loss, NULL, &opt, &res);
    problem = fc_validate_f64(&block, 1, quadratic_loss, &opt, &res);
    if (problem == NULL) {
        return Py_BuildValue("(iO)", status, Py_None);
    }
    return Py_BuildValue("(is)", status, problem);
}

/* reimport(): run import_fastcheck() again (the tests swap the capsule). */
static PyObject *consumer_reimport(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (import_fastcheck() < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* compiled_version(): the C API version this module was compiled against. */
static PyObject *consumer_compiled_version(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue("(ii)", FASTCHECK_CAPI_VERSION_MAJOR, FASTCHECK_CAPI_VERSION_MINOR);
}

static PyMethodDef consumer_methods[] = {
    {"grad", (PyCFunction)(void (*)(void))consumer_grad, METH_VARARGS | METH_KEYWORDS,
     "grad(theta, out, threads=1, nested=False)"},
    {"reimport", consumer_reimport, METH_NOARGS, "reimport()"},
    {"slow_grad", consumer_slow_grad, METH_VARARGS, "slow_grad(theta, seconds, threads=1)"},
    {"check_eps", consumer_check_eps, METH_VARARGS, "check_eps(eps)"},
    {"compiled_version", consumer_compiled_version, METH_NOARGS, "compiled_version()"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef consumer_module = {
    PyModuleDef_HEAD_INIT, CONSUMER_STR(CONSUMER_NAME),
    "A test consumer of fastcheck's C API.", -1, consumer_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC CONSUMER_CAT(PyInit_, CONSUMER_NAME)(void)
{
    if (import_fastcheck() < 0) {
        return NULL;
    }
    return PyModule_Create(&consumer_module);
}
