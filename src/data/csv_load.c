/* The parallel CSV load. The calling thread is the producer: it reads (or inflates) the file into 1
 * MiB buffers exactly as the serial parse did (the partial last line carried over to the next
 * buffer), checks the header, counts the lines of each buffer so that each knows the file line and
 * store row of its first line, grows the store when needed (only this thread calls the
 * allocator, which may be the CUDA backend's pinned memory), and queues the buffer as a chunk.
 * Worker threads parse queued chunks straight into the store, each row into its own slot; the
 * producer parses one itself whenever it has no free buffer to read into, so with one thread
 * the load is the serial parse. Every error is recorded with its line number (source errors
 * with the first line not yet read) and the earliest wins: chunks are queued in file order and
 * no chunk is queued after an error, so every line before the winning one has been parsed,
 * and the message is exactly the serial one. */
#define _POSIX_C_SOURCE 200809L
#include "data/data_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LOAD_THREADS 16
#define LOAD_BUFFERS (MAX_LOAD_THREADS + 2)

#define CHUNK_ENDS 1024 /* newlines remembered per chunk (a valid row is >= 1568 bytes) */

struct chunk {
    unsigned char *buf;       /* CHUNK_BYTES + CHUNK_PAD */
    size_t start, stop;       /* complete lines [start, stop); buf[stop] = '\n' */
    size_t first_line;        /* file line number of the line at start */
    uint8_t *images, *labels; /* the store slots of that line (labels NULL: test layout) */
    /* where the first `ends` lines end (found while counting them: the parse does not look
     * for them again) */
    uint32_t end[CHUNK_ENDS];
    size_t ends;
};

struct loader {
    struct csv csv; /* path, layout, block parser (line: set per chunk) */
    pthread_mutex_t mutex;
    pthread_cond_t work; /* workers: a chunk was queued, or no more will be */
    pthread_cond_t idle; /* producer: a chunk was finished */
    struct chunk chunks[LOAD_BUFFERS];
    int buffers, allocated; /* buffers allowed, allocated so far (chunks[0].buf: the caller's) */
    int free_list[LOAD_BUFFERS], free_count;
    /* queued chunks: a ring of indices */
    int queue[LOAD_BUFFERS], queue_head, queue_count;
    int busy; /* queued or being parsed */
    int done; /* nothing more will be queued */
    pthread_t workers[MAX_LOAD_THREADS];
    int worker_count;
    /* the earliest error */
    int failed;
    size_t error_line;
    enum dg_status error_status;
    char error_message[1024];
};

/* Threads for a load: `requested`, else DIGITS_DATA_THREADS, else the online CPUs; at most
 * MAX_LOAD_THREADS and no more than the file has buffers (when its size is known). */
static int load_threads(int requested, size_t size_hint)
{
    long n = requested;
    if (n <= 0) {
        const char *env = getenv("DIGITS_DATA_THREADS");
        n = env ? strtol(env, NULL, 10) : 0;
        if (n <= 0)
            n = sysconf(_SC_NPROCESSORS_ONLN);
    }
    if (n < 1)
        n = 1;
    if (n > MAX_LOAD_THREADS)
        n = MAX_LOAD_THREADS;
    if (size_hint && (size_t)n > size_hint / CHUNK_BYTES + 1)
        n = (long)(size_hint / CHUNK_BYTES + 1);
    return (int)n;
}

/* Records an error at `line` with this thread's message, unless an earlier one is recorded.
 * Called with the mutex held. */
static void loader_fail_locked(struct loader *ld, size_t line, enum dg_status status)
{
    if (ld->failed && ld->error_line <= line)
        return;
    ld->failed = 1;
    ld->error_line = line;
    ld->error_status = status;
    snprintf(ld->error_message, sizeof ld->error_message, "%s", dg_error_message());
}

static void loader_fail(struct loader *ld, size_t line, enum dg_status status)
{
    pthread_mutex_lock(&ld->mutex);
    loader_fail_locked(ld, line, status);
    pthread_mutex_unlock(&ld->mutex);
}

/* Parses the lines of one chunk into the store; on an error sets *line to its line number. An
 * empty line is an error unless it is the chunk's last line (the producer decides that one:
 * only the very last line of a file may be empty). */
static enum dg_status parse_chunk(const struct loader *ld, const struct chunk *ch, size_t *line)
{
    struct csv c = ld->csv;
    c.line = ch->first_line;
    const unsigned char *p = ch->buf + ch->start;
    const unsigned char *stop = ch->buf + ch->stop;
    uint8_t *image = ch->images;
    uint8_t *label = ch->labels;
    for (size_t i = 0; p < stop; i++) {
        /* past the remembered ends, the next newline (buf[stop] is one) */
        const unsigned char *eol =
            i < ch->ends ? ch->buf + ch->end[i] : memchr(p, '\n', (size_t)(stop - p) + 1);
        size_t len = (size_t)(eol - p);
        if (len == 0 || (len == 1 && p[0] == '\r')) {
            if (eol + 1 < stop) {
                *line = c.line;
                return dg_error(DG_ERR_INPUT, DG_EMPTY_LINE_FORMAT, c.path, c.line);
            }
        } else {
            enum dg_status status = dg_data_csv_row(&c, p, eol, image, label);
            if (status != DG_OK) {
                *line = c.line;
                return status;
            }
        }
        image += DG_PIXELS;
        if (label)
            label++;
        c.line++;
        p = eol + 1;
    }
    return DG_OK;
}

/* Takes the oldest queued chunk, parses it (unless an earlier error makes it moot) and frees
 * its buffer. Called with the mutex held and a chunk queued; returns with it held. */
static void loader_run_one_locked(struct loader *ld)
{
    int index = ld->queue[ld->queue_head];
    ld->queue_head = (ld->queue_head + 1) % LOAD_BUFFERS;
    ld->queue_count--;
    const struct chunk *ch = &ld->chunks[index]; /* this thread's until it is given back */
    int moot = ld->failed && ld->error_line < ch->first_line;
    pthread_mutex_unlock(&ld->mutex);
    size_t line = 0;
    enum dg_status status = moot ? DG_OK : parse_chunk(ld, ch, &line);
    pthread_mutex_lock(&ld->mutex);
    if (status != DG_OK)
        loader_fail_locked(ld, line, status);
    ld->free_list[ld->free_count++] = index;
    ld->busy--;
    pthread_cond_signal(&ld->idle);
}

static void *loader_worker(void *arg)
{
    struct loader *ld = arg;
    pthread_mutex_lock(&ld->mutex);
    for (;;) {
        while (ld->queue_count == 0 && !ld->done)
            pthread_cond_wait(&ld->work, &ld->mutex);
        if (ld->queue_count == 0)
            break;
        loader_run_one_locked(ld);
    }
    pthread_mutex_unlock(&ld->mutex);
    return NULL;
}

/* A free buffer for the producer (-1: out of memory): a new one while fewer than `buffers`
 * exist, else one given back, parsing queued chunks itself while it waits. Mutex held. */
static int loader_take_buffer_locked(struct loader *ld)
{
    for (;;) {
        if (ld->free_count > 0)
            return ld->free_list[--ld->free_count];
        if (ld->allocated < ld->buffers) {
            unsigned char *buf = calloc(1, CHUNK_BYTES + CHUNK_PAD);
            if (buf) {
                ld->chunks[ld->allocated].buf = buf;
                return ld->allocated++;
            }
            if (ld->busy == 0)
                return -1;
            ld->buffers = ld->allocated; /* make do with what there is */
        }
        if (ld->queue_count > 0)
            loader_run_one_locked(ld);
        else
            pthread_cond_wait(&ld->idle, &ld->mutex);
    }
}

/* Waits until every queued chunk is parsed, helping. Mutex held. */
static void loader_drain_locked(struct loader *ld)
{
    while (ld->busy > 0) {
        if (ld->queue_count > 0)
            loader_run_one_locked(ld);
        else
            pthread_cond_wait(&ld->idle, &ld->mutex);
    }
}

static void loader_give_back(struct loader *ld, int index)
{
    pthread_mutex_lock(&ld->mutex);
    ld->free_list[ld->free_count++] = index;
    pthread_mutex_unlock(&ld->mutex);
}

/* The newlines in buf[start, stop); the first CHUNK_ENDS are remembered in ch. */
static size_t count_newlines(struct chunk *ch, size_t start, size_t stop)
{
    const unsigned char *p = ch->buf + start, *end = ch->buf + stop;
    size_t n = 0;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (n < CHUNK_ENDS)
            ch->end[n] = (uint32_t)(p - ch->buf);
        n++;
        p++;
    }
    ch->ends = n < CHUNK_ENDS ? n : CHUNK_ENDS;
    return n;
}

/* ---- the producer ---- */

/* What the producer carries from one buffer to the next. */
struct feed {
    struct source *src;
    struct store *st;
    enum dg_data_format *format;
    int threads;          /* the calling thread and the workers wanted or started */
    unsigned char *carry; /* CHUNK_BYTES: the start of a line, `rest` bytes */
    size_t rest;
    size_t next_line;     /* file line number of the next line to queue */
    size_t rows;          /* rows queued so far */
    size_t pending_empty; /* line number of an empty last line of the last chunk */
    int header_done, eof;
};

/* What a step leaves the producer to do with the buffer. */
enum { FEED_ON, FEED_NEXT, FEED_STOP }; /* go on with it, read the next one, stop reading */

/* Gives the buffer back and records the error at `line`: FEED_STOP. */
static int feed_refuse(struct loader *ld, int index, size_t line, enum dg_status status)
{
    loader_give_back(ld, index);
    loader_fail(ld, line, status);
    return FEED_STOP;
}

/* A free buffer with the carried bytes and what follows them (*have bytes in all); 0 when
 * the producer stops (the end of the file, an earlier error, or this one). */
static int feed_fill(struct loader *ld, struct feed *f, int *index, size_t *have)
{
    pthread_mutex_lock(&ld->mutex);
    *index = f->eof || ld->failed ? -2 : loader_take_buffer_locked(ld);
    pthread_mutex_unlock(&ld->mutex);
    if (*index == -2)
        return 0;
    if (*index < 0) {
        loader_fail(ld, f->next_line, dg_error(DG_ERR_NOMEM, "%s: out of memory", ld->csv.path));
        return 0;
    }
    unsigned char *data = ld->chunks[*index].buf;
    memcpy(data, f->carry, f->rest);
    size_t got;
    enum dg_status status =
        dg_data_source_read(f->src, data + f->rest, CHUNK_BYTES - f->rest, &got);
    if (status != DG_OK) {
        feed_refuse(ld, *index, f->next_line, status);
        return 0;
    }
    *have = f->rest + got;
    if (got == 0)
        f->eof = 1;
    return 1;
}

/* Cuts the buffer's `have` bytes after their last newline (*stop; all of them at the end)
 * and carries the rest over. */
static int feed_cut(struct loader *ld, struct feed *f, int index, size_t have, size_t *stop)
{
    unsigned char *data = ld->chunks[index].buf;
    /* complete lines [0, stop): all of it at the end, else up to the last newline */
    *stop = have;
    if (!f->eof) {
        while (*stop > 0 && data[*stop - 1] != '\n')
            (*stop)--;
        if (*stop == 0 && have == CHUNK_BYTES)
            return feed_refuse(ld, index, f->next_line,
                               dg_error(DG_ERR_INPUT,
                                        "%s:%zu:1: line longer than %u bytes (not a digits "
                                        "CSV row)",
                                        ld->csv.path, f->next_line, CHUNK_BYTES));
    }
    f->rest = have - *stop;
    memcpy(f->carry, data + *stop, f->rest);
    if (*stop == 0) {
        loader_give_back(ld, index);
        return FEED_NEXT;
    }
    if (f->pending_empty)
        return feed_refuse(
            ld, index, f->pending_empty,
            dg_error(DG_ERR_INPUT, DG_EMPTY_LINE_FORMAT, ld->csv.path, f->pending_empty));
    data[*stop] = '\n'; /* ends a last line that has no newline */
    return FEED_ON;
}

/* The header, the first line of the first buffer with any: checks it, sets the layout and
 * sizes the store; *start is past it. */
static int feed_header(struct loader *ld, struct feed *f, int index, size_t stop, size_t *start)
{
    struct csv *c = &ld->csv;
    unsigned char *data = ld->chunks[index].buf;
    enum dg_status status;
    unsigned char *eol = memchr(data, '\n', stop + 1);
    size_t len = (size_t)(eol - data);
    if (len == 0 || (len == 1 && data[0] == '\r'))
        status = dg_error(DG_ERR_INPUT, "%s:1:1: empty header line", c->path);
    else
        status = dg_data_csv_header(c, data, eol);
    if (status != DG_OK)
        return feed_refuse(ld, index, 1, status);
    f->header_done = 1;
    f->st->labelled = c->labelled;
    *f->format = c->labelled ? DG_FORMAT_CSV_TRAIN : DG_FORMAT_CSV_TEST;
    /* sized once from the (uncompressed) size when known; a wrong gzip size hint that
     * cannot be met leaves the store to grow instead */
    size_t bound = f->src->size_hint ? f->src->size_hint / MIN_ROW_BYTES + 1 : 0;
    if (bound && dg_data_store_reserve(f->st, bound, c->path) != DG_OK)
        dg_error_clear();
    f->next_line = 2;
    *start = len + 1 < stop ? len + 1 : stop;
    if (*start == stop) {
        loader_give_back(ld, index);
        return FEED_NEXT;
    }
    return FEED_ON;
}

/* Room in the store for `chunk_rows` more rows: grown as the serial parse grows it
 * (doubling), once every queued row is in. */
static int feed_grow(struct loader *ld, struct feed *f, int index, size_t chunk_rows)
{
    struct store *st = f->st;
    if (f->rows + chunk_rows <= st->capacity)
        return FEED_ON;
    pthread_mutex_lock(&ld->mutex);
    loader_drain_locked(ld);
    int failed = ld->failed;
    pthread_mutex_unlock(&ld->mutex);
    enum dg_status status = DG_OK;
    st->count = f->rows;
    while (!failed && status == DG_OK && st->capacity < f->rows + chunk_rows)
        status = dg_data_store_reserve(st, st->capacity ? st->capacity + 1 : 1024, ld->csv.path);
    if (failed || status != DG_OK) {
        loader_give_back(ld, index);
        if (status != DG_OK)
            loader_fail(ld, f->next_line, status);
        return FEED_STOP;
    }
    return FEED_ON;
}

/* Queues the lines [start, stop) of the buffer as a chunk (gives it back when they hold no
 * row) and counts them. */
static int feed_queue(struct loader *ld, struct feed *f, int index, size_t start, size_t stop)
{
    unsigned char *data = ld->chunks[index].buf;
    /* the lines of [start, stop), and whether the last one is empty */
    size_t lines = count_newlines(&ld->chunks[index], start, stop) + (data[stop - 1] != '\n');
    size_t last_end = data[stop - 1] == '\n' ? stop - 1 : stop;
    int last_empty =
        last_end == start || data[last_end - 1] == '\n' ||
        (data[last_end - 1] == '\r' && (last_end - 1 == start || data[last_end - 2] == '\n'));
    size_t chunk_rows = lines - (size_t)last_empty;
    if (feed_grow(ld, f, index, chunk_rows) != FEED_ON)
        return FEED_STOP;
    if (chunk_rows > 0) {
        struct chunk *ch = &ld->chunks[index];
        ch->start = start;
        ch->stop = stop;
        ch->first_line = f->next_line;
        ch->images = f->st->images + f->rows * DG_PIXELS;
        ch->labels = f->st->labelled ? f->st->labels + f->rows : NULL;
        pthread_mutex_lock(&ld->mutex);
        ld->queue[(ld->queue_head + ld->queue_count) % LOAD_BUFFERS] = index;
        ld->queue_count++;
        ld->busy++;
        pthread_cond_signal(&ld->work);
        pthread_mutex_unlock(&ld->mutex);
    } else {
        loader_give_back(ld, index);
    }
    f->rows += chunk_rows;
    f->next_line += lines;
    if (last_empty)
        f->pending_empty = f->next_line - 1;
    return FEED_ON;
}

/* A full buffer, so more may follow: starts the workers (a failure only means fewer). */
static void feed_start_workers(struct loader *ld, struct feed *f, size_t have)
{
    if (have == CHUNK_BYTES && ld->worker_count < f->threads - 1) {
        while (ld->worker_count < f->threads - 1 &&
               pthread_create(&ld->workers[ld->worker_count], NULL, loader_worker, ld) == 0)
            ld->worker_count++;
        f->threads = ld->worker_count + 1;
    }
}

/* The producer's loop: buffer after buffer until the end of the file or an error. The first
 * buffer (chunks[0], the caller's) already holds `have` bytes. */
static void feed_all(struct loader *ld, struct feed *f, size_t have)
{
    for (int index = 0, first = 1;; first = 0) {
        if (!first && !feed_fill(ld, f, &index, &have))
            break;
        size_t stop, start = 0;
        int step = feed_cut(ld, f, index, have, &stop);
        if (step == FEED_ON && !f->header_done)
            step = feed_header(ld, f, index, stop, &start);
        if (step == FEED_ON)
            step = feed_queue(ld, f, index, start, stop);
        if (step == FEED_STOP)
            break;
        if (step == FEED_ON)
            feed_start_workers(ld, f, have);
    }
}

/* Waits for the workers and frees the buffers but the caller's; the load's status. */
static enum dg_status loader_finish(struct loader *ld, const struct feed *f)
{
    pthread_mutex_lock(&ld->mutex);
    ld->done = 1;
    pthread_cond_broadcast(&ld->work);
    loader_drain_locked(ld);
    pthread_mutex_unlock(&ld->mutex);
    for (int i = 0; i < ld->worker_count; i++)
        pthread_join(ld->workers[i], NULL);
    for (int i = 1; i < ld->allocated; i++)
        free(ld->chunks[i].buf);
    if (ld->failed)
        return dg_error(ld->error_status, "%s", ld->error_message);
    if (!f->header_done)
        return dg_error(DG_ERR_INPUT, "%s:1:1: empty file", f->src->path);
    if (f->rows == 0)
        return dg_error(DG_ERR_INPUT, "%s:2:1: no data rows after the header", f->src->path);
    return DG_OK;
}

enum dg_status dg_data_load_csv(struct source *src, unsigned char *buf, size_t have,
                                struct store *st, enum dg_data_format *format, int threads)
{
    if (have == 0)
        return dg_error(DG_ERR_INPUT, "%s:1:1: empty file", src->path);
    unsigned char *carry = malloc(CHUNK_BYTES);
    struct loader *ld = calloc(1, sizeof *ld);
    if (!carry || !ld) {
        free(carry);
        free(ld);
        return dg_error(DG_ERR_NOMEM, "%s: out of memory", src->path);
    }
    threads = load_threads(threads, src->size_hint);
    ld->csv = (struct csv){src->path, 1, 0, 0, dg_data_csv_choose_block_pixels()};
    pthread_mutex_init(&ld->mutex, NULL);
    pthread_cond_init(&ld->work, NULL);
    pthread_cond_init(&ld->idle, NULL);
    /* one thread: one buffer, read and parse in turn, as a serial parse; else one per
     * thread, one to read into and one queued */
    ld->buffers = threads == 1 ? 1 : threads + 2;
    ld->chunks[0].buf = buf;
    ld->allocated = 1;

    struct feed f = {src, st, format, threads, carry, 0, 1, 0, 0, 0, 0};
    feed_all(ld, &f, have);
    enum dg_status status = loader_finish(ld, &f);
    st->count = f.rows;
    pthread_cond_destroy(&ld->idle);
    pthread_cond_destroy(&ld->work);
    pthread_mutex_destroy(&ld->mutex);
    free(ld);
    free(carry);
    return status;
}
