/*
 * kernel_impl.h -- the perturb -> evaluate -> restore loop, written once and
 * expanded by kernel.c for each element type.  Not a public header.
 *
 * Before including, kernel.c defines:
 *   FC_REAL      the element type (double or float)
 *   FC_SUFFIX    the name suffix (f64 or f32)
 *   FC_ABS       the matching fabs
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

/* Evaluate the loss at the perturbed value `value` of *slot, then restore. */
static int FC_NAME(evaluate_at)(FC_REAL *slot, FC_REAL saved, FC_REAL value,
                                const FC_BLOCK *blocks, fc_index nblocks,
                                FC_LOSS loss, void *ctx, double *out,
                                fc_result *res)
{
    int status;
    *slot = value;
    status = loss(blocks, nblocks, out, ctx);
    *slot = saved; /* note 2: restore by assignment, whatever happened */
    if (status != 0) {
        res->callback_status = status;
        return FC_ERR_CALLBACK;
    }
    return FC_OK;
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
    fc_index pos, cursor_block = 0, cursor_start = 0;
    const unsigned evals = opt->evals;

    for (pos = begin; pos < end; pos++) {
        fc_index flat = opt->indices ? opt->indices[pos] : pos;
        fc_index b, local;
        FC_REAL *slot, x, h, xp;
        double eps;
        int status = FC_OK;

        /* Locate the block holding `flat`.  Sequential requests walk forward;
         * arbitrary index lists use a binary search over the offsets. */
        if (offsets == NULL) {
            b = 0;
            local = flat;
        } else if (flat >= cursor_start && flat < offsets[cursor_block + 1]) {
            b = cursor_block;
            local = flat - cursor_start;
        } else {
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
            cursor_block = b;
            cursor_start = offsets[b];
            local = flat - cursor_start;
        }

        slot = blocks[b].data + local * blocks[b].stride;
        x = *slot;
        eps = opt->eps_each ? opt->eps_each[pos] : opt->eps;
        if (opt->relative) {
            double ax = FC_ABS(x);
            eps *= ax > 1.0 ? ax : 1.0;
        }
        /* note 1: the represented step.  Computing through a volatile keeps an
         * optimising compiler from folding (x + eps) - x back to eps. */
        {
            volatile FC_REAL shifted = (FC_REAL)(x + (FC_REAL)eps);
            h = (FC_REAL)(shifted - x);
        }
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

static void *FC_NAME(worker_main)(void *arg)
{
    FC_NAME(worker) *w = (FC_NAME(worker) *)arg;
    fc_index b, k, total = w->total;
    FC_BLOCK *copy = NULL;
    FC_REAL *storage = NULL;

    /* note 3: one private, contiguous copy of theta per thread. */
    copy = (FC_BLOCK *)malloc(sizeof(FC_BLOCK) * (size_t)(w->nblocks > 0 ? w->nblocks : 1));
    storage = (FC_REAL *)malloc(sizeof(FC_REAL) * (size_t)(total > 0 ? total : 1));
    if (copy == NULL || storage == NULL) {
        w->status = FC_ERR_NOMEM;
        fc_progress_fail(w->progress);
        free(copy);
        free(storage);
        return NULL;
    }
    {
        FC_REAL *dst = storage;
        for (b = 0; b < w->nblocks; b++) {
            const FC_BLOCK *src = &w->blocks[b];
            for (k = 0; k < src->size; k++) {
                dst[k] = src->data[k * src->stride];
            }
            copy[b].data = dst;
            copy[b].size = src->size;
            copy[b].stride = 1;
            dst += src->size;
        }
    }
    w->status = FC_NAME(run_range)(copy, w->nblocks, w->offsets, w->loss, w->ctx,
                                   w->opt, &w->res, w->begin, w->end, w->count,
                                   w->progress);
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
    workers = (FC_NAME(worker) *)calloc((size_t)nthreads, sizeof(FC_NAME(worker)));
    ids = (pthread_t *)calloc((size_t)nthreads, sizeof(pthread_t));
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
    fc_index total, count, k, *offsets = NULL;
    int status;
    struct fc_progress progress;

    if (res == NULL) {
        return FC_ERR_INVALID;
    }
    res->done = 0;
    res->failed_at = -1;
    res->callback_status = 0;
    if (loss == NULL || opt == NULL) {
        return FC_ERR_INVALID;
    }
    total = FC_NAME(fc_total_size)(blocks, nblocks);
    if (total < 0) {
        return FC_ERR_INVALID;
    }
    count = opt->indices ? opt->count : total;
    if (count < 0 || !(opt->eps == opt->eps) /* NaN */) {
        return FC_ERR_INVALID;
    }
    if (((opt->evals & FC_EVAL_PLUS) && count > 0 && res->plus == NULL) ||
        ((opt->evals & FC_EVAL_MINUS) && count > 0 && res->minus == NULL) ||
        ((opt->evals & FC_EVAL_PLUS2) && count > 0 && res->plus2 == NULL) ||
        ((opt->evals & FC_EVAL_MINUS2) && count > 0 && res->minus2 == NULL) ||
        ((opt->evals & FC_EVAL_CENTER) && res->center == NULL)) {
        return FC_ERR_INVALID;
    }
    if (opt->indices) {
        for (k = 0; k < count; k++) {
            if (opt->indices[k] < 0 || opt->indices[k] >= total) {
                return FC_ERR_INVALID;
            }
        }
    }

    /* J(theta), once: the shared centre of forward, backward and curvature. */
    if (opt->evals & FC_EVAL_CENTER) {
        status = loss(blocks, nblocks, res->center, loss_ctx);
        if (status != 0) {
            res->callback_status = status;
            return FC_ERR_CALLBACK;
        }
    }
    if (count == 0) {
        return FC_OK;
    }

    if (nblocks > 1) {
        offsets = (fc_index *)malloc(sizeof(fc_index) * (size_t)(nblocks + 1));
        if (offsets == NULL) {
            return FC_ERR_NOMEM;
        }
        offsets[0] = 0;
        for (k = 0; k < nblocks; k++) {
            offsets[k + 1] = offsets[k] + blocks[k].size;
        }
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

#undef FC_CAT_
#undef FC_CAT
#undef FC_NAME
#undef FC_BLOCK
#undef FC_LOSS
