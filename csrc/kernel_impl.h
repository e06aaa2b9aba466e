/*
 * kernel_impl.h -- the perturb -> evaluate -> restore loop, written once and
 * expanded by kernel.c for each element type.  Not a public header.
 *
 * Before including, kernel.c defines:
 *   FC_REAL      the element type (double or float)
 *   FC_SUFFIX    the name suffix (f64 or f32)
 *   FC_ABS       the matching fabs
 *   FC_REAL_MAX  its largest finite value
 */
#define FC_CAT_(a, b) a##_##b
#define FC_CAT(a, b) FC_CAT_(a, b)
#define FC_NAME(name) FC_CAT(name, FC_SUFFIX)
#define FC_BLOCK FC_NAME(fc_block)
#define FC_LOSS FC_NAME(fc_loss)

fc_index FC_NAME(fc_total_size)(const FC_BLOCK *blocks, fc_index nblocks)
{
    fc_index b, total = 0;
    if (nblocks < 0 || (nblocks > 0 && blocks == NULL)) {
        return -1;
    }
    for (b = 0; b < nblocks; b++) {
        if (blocks[b].size < 0 || (blocks[b].size > 0 && blocks[b].data == NULL)) {
            return -1;
        }
        if (blocks[b].size > 1 && blocks[b].stride == 0) {
            return -1; /* every element would alias the first */
        }
        total += blocks[b].size;
    }
    return total;
}

#define FC_STEP_FLAGS (FC_EVAL_PLUS | FC_EVAL_MINUS | FC_EVAL_PLUS2 | FC_EVAL_MINUS2)

/* What is wrong with the step of a component at value x, nominal step `eps`
 * (already scaled when relative) and represented step h; NULL when nothing. */
static const char *FC_NAME(step_problem)(FC_REAL x, double eps, FC_REAL h, unsigned evals)
{
    double ax = (double)FC_ABS(x), reach;
    if (!(evals & FC_STEP_FLAGS)) {
        return NULL;
    }
    if (!(ax <= FC_REAL_MAX)) {
        return NULL; /* NaN or inf in theta: its differences are NaN, as they should be */
    }
    if (!(eps > 0) || !(eps <= DBL_MAX)) {
        return "fc_options.eps_each holds a step that is not finite and > 0";
    }
    if (eps > (ax > 1.0 ? ax : 1.0)) {
        return "a component's step (fc_options.eps or eps_each, times max(1, |x|) when "
               "relative) is wider than max(1, |x|), which does not approximate a "
               "derivative: use a smaller eps";
    }
    if (!(h > 0)) {
        return NULL; /* below the resolution of x: step[i] = 0 says so (note 1) */
    }
    reach = (evals & (FC_EVAL_PLUS2 | FC_EVAL_MINUS2)) ? 2.0 : 1.0;
    if (!(FC_ABS((FC_REAL)(FC_ABS(x) + (FC_REAL)(reach * (double)h))) <= FC_REAL_MAX)) {
        return "theta + step overflows at a component: use a smaller eps";
    }
    return NULL;
}

/* The checks that need no component's value: NULL when the call is valid. */
static const char *FC_NAME(argument_problem)(const FC_BLOCK *blocks, fc_index nblocks,
                                             FC_LOSS loss, const fc_options *opt,
                                             const fc_result *res, fc_index *total_out)
{
    fc_index b, k, total = 0, count;
    unsigned evals;
    if (res == NULL) {
        return "out (the fc_result) is NULL";
    }
    if (loss == NULL) {
        return "loss is NULL";
    }
    if (opt == NULL) {
        return "opt is NULL: pass fc_options filled by fc_options_init";
    }
    if (nblocks < 0 || (nblocks > 0 && blocks == NULL)) {
        return "blocks / nblocks: nblocks must be >= 0, and blocks non-NULL when > 0";
    }
    for (b = 0; b < nblocks; b++) {
        if (blocks[b].size < 0 || (blocks[b].size > 0 && blocks[b].data == NULL)) {
            return "a block has a negative size, or data NULL with size > 0";
        }
        if (blocks[b].size > 1 && blocks[b].stride == 0) {
            return "a block has stride 0 and size > 1 (every element would alias the first)";
        }
        total += blocks[b].size;
    }
    *total_out = total;
    evals = opt->evals;
    if (evals == 0 || (evals & ~(unsigned)(FC_EVAL_CENTER | FC_STEP_FLAGS)) != 0) {
        return "fc_options.evals must be a non-empty OR of FC_EVAL_* flags";
    }
    count = opt->indices ? opt->count : total;
    if (count < 0) {
        return "fc_options.count is negative";
    }
    if ((evals & FC_STEP_FLAGS) && count > 0 && opt->eps_each == NULL &&
        !(opt->eps > 0 && opt->eps <= DBL_MAX)) {
        return "fc_options.eps must be finite and > 0";
    }
    if (((evals & FC_EVAL_PLUS) && count > 0 && res->plus == NULL) ||
        ((evals & FC_EVAL_MINUS) && count > 0 && res->minus == NULL) ||
        ((evals & FC_EVAL_PLUS2) && count > 0 && res->plus2 == NULL) ||
        ((evals & FC_EVAL_MINUS2) && count > 0 && res->minus2 == NULL) ||
        ((evals & FC_EVAL_CENTER) && res->center == NULL)) {
        return "an output array of fc_result is NULL for an evaluation fc_options.evals "
               "asks for (center, plus, minus, plus2, minus2)";
    }
    for (k = 0; opt->indices && k < count; k++) {
        if (opt->indices[k] < 0 || opt->indices[k] >= total) {
            return "fc_options.indices holds an index outside [0, total size)";
        }
    }
    return NULL;
}

/* Evaluate the loss at the perturbed value `value` of *slot, then restore. */
static int FC_NAME(evaluate_at)(FC_REAL *slot, FC_REAL saved, FC_REAL value,
                                const FC_BLOCK *blocks, fc_index nblocks,
                                FC_LOSS loss, void *ctx, double *out,
                                fc_result *res)
{
    int status, written;
    *slot = value;
    status = loss(blocks, nblocks, out, ctx);
    /* A loss that writes into the component in hand would have the write undone
     * by the restore below, unseen: compare first (O(1); other components are
     * compared by the caller, or by each thread at its end). */
    written = memcmp(slot, &value, sizeof value) != 0;
    *slot = saved; /* note 2: restore by assignment, whatever happened */
    if (status != 0) {
        res->callback_status = status;
        return FC_ERR_CALLBACK;
    }
    return written ? FC_ERR_MODIFIED : FC_OK;
}

/* The element at flat index `flat`.  `offsets` (nblocks + 1 entries, or NULL for
 * a single block) maps flat indices to blocks; sequential requests walk forward
 * from the cursor, arbitrary index lists use a binary search over the offsets. */
static FC_REAL *FC_NAME(locate)(const FC_BLOCK *blocks, fc_index nblocks,
                                const fc_index *offsets, fc_index flat, fc_cursor *cursor)
{
    fc_index b;
    if (offsets == NULL) {
        return blocks[0].data + flat * blocks[0].stride;
    }
    if (!(flat >= cursor->start && flat < offsets[cursor->block + 1])) {
        fc_index lo = 0, hi = nblocks - 1;
        while (lo < hi) {
            fc_index mid = lo + (hi - lo + 1) / 2;
            if (offsets[mid] <= flat) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        b = lo;
        /* skip empty blocks that share the same offset */
        while (b + 1 < nblocks && offsets[b + 1] <= flat) {
            b++;
        }
        cursor->block = b;
        cursor->start = offsets[b];
    }
    b = cursor->block;
    return blocks[b].data + (flat - cursor->start) * blocks[b].stride;
}

/* The represented step of the component at request position `pos` whose value
 * is x (note 1); its nominal step goes to *nominal when that is not NULL. */
static FC_REAL FC_NAME(step_of)(FC_REAL x, const fc_options *opt, fc_index pos,
                                double *nominal)
{
    double eps = opt->eps_each ? opt->eps_each[pos] : opt->eps;
    volatile FC_REAL shifted;
    if (opt->relative) {
        double ax = FC_ABS(x);
        eps *= ax > 1.0 ? ax : 1.0;
    }
    if (nominal != NULL) {
        *nominal = eps;
    }
    /* Computing through a volatile keeps an optimising compiler from folding
     * (x + eps) - x back to eps. */
    shifted = (FC_REAL)(x + (FC_REAL)eps);
    return (FC_REAL)(shifted - x);
}

/* The first requested component whose step is invalid (see step_problem), with
 * its problem in *problem; -1 when every step is valid.  Runs before any
 * evaluation: O(count), no allocation. */
static fc_index FC_NAME(first_bad_step)(const FC_BLOCK *blocks, fc_index nblocks,
                                        const fc_index *offsets, const fc_options *opt,
                                        fc_index count, const char **problem)
{
    fc_index pos;
    fc_cursor cursor = {0, 0};
    for (pos = 0; pos < count; pos++) {
        FC_REAL x = *FC_NAME(locate)(blocks, nblocks, offsets,
                                     opt->indices ? opt->indices[pos] : pos, &cursor);
        double eps;
        FC_REAL h = FC_NAME(step_of)(x, opt, pos, &eps);
        *problem = FC_NAME(step_problem)(x, eps, h, opt->evals);
        if (*problem != NULL) {
            return pos;
        }
    }
    return -1;
}

/* Flat index where each block starts (nblocks + 1 entries), or NULL for a single
 * block; *failed is set when the allocation failed. */
static fc_index *FC_NAME(block_offsets)(const FC_BLOCK *blocks, fc_index nblocks,
                                        int *failed)
{
    fc_index k, *offsets;
    *failed = 0;
    if (nblocks <= 1) {
        return NULL;
    }
    offsets = (fc_index *)FC_MALLOC(sizeof(fc_index) * (size_t)(nblocks + 1));
    if (offsets == NULL) {
        *failed = 1;
        return NULL;
    }
    offsets[0] = 0;
    for (k = 0; k < nblocks; k++) {
        offsets[k + 1] = offsets[k] + blocks[k].size;
    }
    return offsets;
}

/*
 * Evaluate the components at request positions [begin, end) of `opt`.
 * `offsets` (nblocks + 1 entries, or NULL for a single block) maps flat indices to
 * blocks.  `progress` is updated after each component (serial path: used for the
 * hook; threaded path: shared counter).
 */
static int FC_NAME(run_range)(const FC_BLOCK *blocks, fc_index nblocks,
                              const fc_index *offsets, FC_LOSS loss, void *ctx,
                              const fc_options *opt, fc_result *res,
                              fc_index begin, fc_index end, fc_index count,
                              struct fc_progress *progress)
{
    fc_index pos;
    fc_cursor cursor = {0, 0};
    const unsigned evals = opt->evals;

    for (pos = begin; pos < end; pos++) {
        FC_REAL *slot, x, h, xp;
        int status = FC_OK;

        slot = FC_NAME(locate)(blocks, nblocks, offsets,
                               opt->indices ? opt->indices[pos] : pos, &cursor);
        x = *slot;
        h = FC_NAME(step_of)(x, opt, pos, NULL);
        if (res->step) {
            res->step[pos] = (double)h;
        }

        xp = (FC_REAL)(x + h);
        if (evals & FC_EVAL_PLUS) {
            status = FC_NAME(evaluate_at)(slot, x, xp, blocks, nblocks, loss, ctx,
                                          &res->plus[pos], res);
        }
        if (status == FC_OK && (evals & FC_EVAL_MINUS)) {
            status = FC_NAME(evaluate_at)(slot, x, (FC_REAL)(x - h), blocks, nblocks,
                                          loss, ctx, &res->minus[pos], res);
        }
        if (status == FC_OK && (evals & FC_EVAL_PLUS2)) {
            status = FC_NAME(evaluate_at)(slot, x, (FC_REAL)(x + 2 * h), blocks,
                                          nblocks, loss, ctx, &res->plus2[pos], res);
        }
        if (status == FC_OK && (evals & FC_EVAL_MINUS2)) {
            status = FC_NAME(evaluate_at)(slot, x, (FC_REAL)(x - 2 * h), blocks,
                                          nblocks, loss, ctx, &res->minus2[pos], res);
        }
        if (status != FC_OK) {
            res->failed_at = pos;
            return status;
        }
        if (fc_progress_step(progress, count, opt) != 0) {
            return FC_ERR_STOPPED;
        }
    }
    return FC_OK;
}

#ifdef FC_HAVE_PTHREADS
typedef struct FC_NAME(worker) {
    const FC_BLOCK *blocks; /* the caller's blocks, read once for the copy */
    fc_index nblocks;
    const fc_index *offsets;
    FC_LOSS loss;
    void *ctx;
    const fc_options *opt;
    fc_result res;          /* private: callback_status, failed_at */
    fc_index begin, end, count, total; /* total: size of theta, for the copy */
    struct fc_progress *progress;
    int status;
} FC_NAME(worker);

/* Whether a thread's contiguous copy still holds the caller's values, bit for bit
 * (each component was restored by assignment, so only the loss can have written). */
static int FC_NAME(same_bits)(const FC_BLOCK *copy, const FC_BLOCK *blocks,
                              fc_index nblocks)
{
    fc_index b, k;
    for (b = 0; b < nblocks; b++) {
        for (k = 0; k < blocks[b].size; k++) {
            if (memcmp(&copy[b].data[k], &blocks[b].data[k * blocks[b].stride],
                       sizeof(FC_REAL)) != 0) {
                return 0;
            }
        }
    }
    return 1;
}

static void *FC_NAME(worker_main)(void *arg)
{
    FC_NAME(worker) *w = (FC_NAME(worker) *)arg;
    fc_index b, k, total = w->total;
    FC_BLOCK *copy;
    FC_REAL *storage, *dst;

    /* note 3: one private, contiguous copy of theta per thread. */
    copy = (FC_BLOCK *)FC_MALLOC(sizeof(FC_BLOCK) * (size_t)(w->nblocks > 0 ? w->nblocks : 1));
    storage = (FC_REAL *)FC_MALLOC(sizeof(FC_REAL) * (size_t)(total > 0 ? total : 1));
    if (copy == NULL || storage == NULL) {
        w->status = FC_ERR_NOMEM;
    } else {
        for (b = 0, dst = storage; b < w->nblocks; b++) {
            const FC_BLOCK *src = &w->blocks[b];
            for (k = 0; k < src->size; k++) {
                dst[k] = src->data[k * src->stride];
            }
            copy[b].data = dst;
            copy[b].size = src->size;
            copy[b].stride = 1;
            dst += src->size;
        }
        w->status = FC_NAME(run_range)(copy, w->nblocks, w->offsets, w->loss, w->ctx,
                                       w->opt, &w->res, w->begin, w->end, w->count,
                                       w->progress);
        if (w->status == FC_OK && !FC_NAME(same_bits)(copy, w->blocks, w->nblocks)) {
            w->status = FC_ERR_MODIFIED; /* every value since the write is suspect */
        }
    }
    /* One exit for every outcome, allocation failure included: the caller waits
     * until every worker has said it finished, so none may leave without it. */
    if (w->status != FC_OK) {
        fc_progress_fail(w->progress);
    }
    fc_progress_finish(w->progress);
    free(copy);
    free(storage);
    return NULL;
}

static int FC_NAME(run_threaded)(const FC_BLOCK *blocks, fc_index nblocks,
                                 const fc_index *offsets, FC_LOSS loss, void *ctx,
                                 const fc_options *opt, fc_result *res,
                                 fc_index count, fc_index total)
{
    int t, nthreads = opt->threads, started = 0, status = FC_OK;
    fc_index chunk;
    FC_NAME(worker) *workers;
    pthread_t *ids;
    struct fc_progress progress;

    if ((fc_index)nthreads > count) {
        nthreads = (int)(count > 0 ? count : 1);
    }
    workers = (FC_NAME(worker) *)FC_CALLOC((size_t)nthreads, sizeof(FC_NAME(worker)));
    ids = (pthread_t *)FC_CALLOC((size_t)nthreads, sizeof(pthread_t));
    if (workers == NULL || ids == NULL) {
        free(workers);
        free(ids);
        return FC_ERR_NOMEM;
    }
    if (fc_progress_init(&progress, 1) != 0) {
        free(workers);
        free(ids);
        return FC_ERR_THREADS;
    }
    chunk = (count + nthreads - 1) / nthreads;
    for (t = 0; t < nthreads; t++) {
        FC_NAME(worker) *w = &workers[t];
        w->blocks = blocks;
        w->nblocks = nblocks;
        w->offsets = offsets;
        w->loss = loss;
        w->ctx = ctx;
        w->opt = opt;
        w->res = *res; /* shares the caller's output arrays: disjoint positions */
        w->res.failed_at = -1;
        w->res.callback_status = 0;
        w->begin = (fc_index)t * chunk;
        w->end = w->begin + chunk < count ? w->begin + chunk : count;
        if (w->begin > w->end) {
            w->begin = w->end;
        }
        w->count = count;
        w->total = total;
        w->progress = &progress;
        w->status = FC_OK;
        fc_progress_add_worker(&progress);
        if (pthread_create(&ids[t], NULL, FC_NAME(worker_main), w) != 0) {
            fc_progress_finish(&progress); /* this worker never ran */
            fc_progress_fail(&progress);
            status = FC_ERR_THREADS;
            break;
        }
        started++;
    }
    if (fc_progress_wait(&progress, count, opt) != 0 && status == FC_OK) {
        status = FC_ERR_STOPPED;
    }
    for (t = 0; t < started; t++) {
        pthread_join(ids[t], NULL);
    }
    /* Report the failure at the earliest request position, so the outcome does
     * not depend on which thread happened to fail first. */
    res->done = fc_progress_done(&progress);
    for (t = 0; t < started; t++) {
        FC_NAME(worker) *w = &workers[t];
        if (w->status == FC_OK || w->status == FC_ERR_STOPPED) {
            continue;
        }
        if (status == FC_OK || status == FC_ERR_STOPPED || res->failed_at < 0 ||
            (w->res.failed_at >= 0 && w->res.failed_at < res->failed_at)) {
            status = w->status;
            res->failed_at = w->res.failed_at;
            res->callback_status = w->res.callback_status;
        }
    }
    if (status == FC_OK) {
        for (t = 0; t < started; t++) {
            if (workers[t].status == FC_ERR_STOPPED) {
                status = FC_ERR_STOPPED;
            }
        }
    }
    fc_progress_destroy(&progress);
    free(workers);
    free(ids);
    return status;
}
#endif /* FC_HAVE_PTHREADS */

int FC_NAME(fc_evaluate)(const FC_BLOCK *blocks, fc_index nblocks, FC_LOSS loss,
                         void *loss_ctx, const fc_options *opt, fc_result *res)
{
    fc_index total, count, *offsets, bad;
    int status, failed;
    const char *problem;
    struct fc_progress progress;

    if (res != NULL) {
        res->done = 0;
        res->failed_at = -1;
        res->callback_status = 0;
    }
    if (FC_NAME(argument_problem)(blocks, nblocks, loss, opt, res, &total) != NULL) {
        return FC_ERR_INVALID; /* fc_validate_* says why */
    }
    count = opt->indices ? opt->count : total;
    offsets = FC_NAME(block_offsets)(blocks, nblocks, &failed);
    if (failed) {
        return FC_ERR_NOMEM;
    }
    /* Every step is checked before the loss is evaluated once. */
    bad = FC_NAME(first_bad_step)(blocks, nblocks, offsets, opt, count, &problem);
    if (bad >= 0) {
        res->failed_at = bad;
        free(offsets);
        return FC_ERR_INVALID;
    }

    /* J(theta), once: the shared centre of forward, backward and curvature. */
    status = FC_OK;
    if (opt->evals & FC_EVAL_CENTER) {
        status = loss(blocks, nblocks, res->center, loss_ctx);
        if (status != 0) {
            res->callback_status = status;
            status = FC_ERR_CALLBACK;
        }
    }
    if (status != FC_OK || count == 0) {
        free(offsets);
        return status;
    }

    if (opt->threads > 1) {
#ifdef FC_HAVE_PTHREADS
        status = FC_NAME(run_threaded)(blocks, nblocks, offsets, loss, loss_ctx, opt,
                                       res, count, total);
#else
        status = FC_ERR_THREADS;
#endif
    } else {
        fc_progress_init(&progress, 0);
        status = FC_NAME(run_range)(blocks, nblocks, offsets, loss, loss_ctx, opt, res,
                                    0, count, count, &progress);
        res->done = progress.done;
        if (status == FC_OK && opt->hook && opt->hook(count, count, opt->hook_ctx) != 0) {
            status = FC_ERR_STOPPED;
        }
        fc_progress_destroy(&progress);
    }
    free(offsets);
    return status;
}

const char *FC_NAME(fc_validate)(const FC_BLOCK *blocks, fc_index nblocks, FC_LOSS loss,
                                 const fc_options *opt, const fc_result *res)
{
    fc_index total, *offsets;
    int failed;
    const char *problem = FC_NAME(argument_problem)(blocks, nblocks, loss, opt, res, &total);
    if (problem != NULL) {
        return problem;
    }
    offsets = FC_NAME(block_offsets)(blocks, nblocks, &failed);
    if (failed) {
        return "out of memory while checking the steps";
    }
    if (FC_NAME(first_bad_step)(blocks, nblocks, offsets, opt,
                                opt->indices ? opt->count : total, &problem) < 0) {
        problem = NULL;
    }
    free(offsets);
    return problem;
}

#undef FC_CAT_
#undef FC_CAT
#undef FC_NAME
#undef FC_BLOCK
#undef FC_LOSS
#undef FC_STEP_FLAGS
