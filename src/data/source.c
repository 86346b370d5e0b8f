/* The byte source of the data layer: a plain file or a gzip stream, read in chunks.
 * gzip members are framed here (header, raw deflate through zlib, CRC-32 and length trailer)
 * so that the CRC can be the fast one (crc32.c); the framing follows zlib's inflate() for gzip
 * byte for byte (fields taken as the input arrives, each checked once complete), so every
 * refusal names the byte offset and zlib's words that inflate() in gzip mode gave. */
#define _POSIX_C_SOURCE 200809L
#include "data/data_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define GZ_IN_BYTES (256u << 10) /* compressed input buffer */

enum { GZ_HEADER, GZ_DATA, GZ_TRAILER };
enum { H_MAGIC, H_FLAGS, H_TIME, H_OS, H_EXLEN, H_EXTRA, H_NAME, H_COMMENT, H_HCRC };
enum { T_CRC, T_LENGTH };
#define GZ_FHCRC 0x0200u /* of CM | FLG << 8 */
#define GZ_FEXTRA 0x0400u
#define GZ_FNAME 0x0800u
#define GZ_FCOMMENT 0x1000u

/* read() until cap bytes or the end; -1 on an error (errno set). */
static ssize_t read_fully(int fd, unsigned char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

enum dg_status dg_data_source_open(struct source *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->fd = open(path, O_RDONLY);
    if (s->fd < 0)
        return dg_error_path(path, "open", 0, errno);
    struct stat st;
    if (fstat(s->fd, &st) == 0 && S_ISDIR(st.st_mode))
        return dg_error_path(path, "read", 0, EISDIR);
    s->disk_bytes = fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode) ? (size_t)st.st_size : 0;
    /* read, not pread: pipes and other streams are told apart the same way */
    ssize_t got = read_fully(s->fd, s->peek, 2);
    if (got < 0)
        return dg_error_path(path, "read", 0, errno);
    s->peek_len = (size_t)got;
    if (got == 2 && s->peek[0] == 0x1f && s->peek[1] == 0x8b) {
        s->gzipped = 1;
        s->in = malloc(GZ_IN_BYTES);
        if (!s->in)
            return dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        if (inflateInit2(&s->z, -15) != Z_OK)
            return dg_error(DG_ERR_NOMEM, "%s: cannot start zlib", path);
        s->z_ready = 1;
        s->gz_phase = GZ_HEADER;
        s->gz_step = H_MAGIC;
        s->crc32 = dg_data_crc32_choose();
        memcpy(s->in, s->peek, 2);
        s->z.next_in = s->in;
        s->z.avail_in = 2;
        s->peek_len = 0;
        unsigned char tail[4];
        if (s->disk_bytes >= 18 && pread(s->fd, tail, 4, (off_t)s->disk_bytes - 4) == 4)
            s->size_hint = (size_t)tail[0] | (size_t)tail[1] << 8 | (size_t)tail[2] << 16 |
                           (size_t)tail[3] << 24;
        if (s->size_hint / MAX_DEFLATE_RATIO > s->disk_bytes)
            s->size_hint = 0;
    } else {
        s->size_hint = s->disk_bytes;
    }
    return DG_OK;
}

void dg_data_source_close(struct source *s)
{
    if (s->z_ready)
        inflateEnd(&s->z);
    free(s->in);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->in = NULL;
    s->z_ready = 0;
}

/* Takes the bytes of an n-byte little-endian field as far as the input goes: 1 when it is
 * complete (in s->gz_hold). */
static int gz_field(struct source *s, unsigned n)
{
    while (s->gz_have < n && s->z.avail_in > 0) {
        s->gz_hold |= (uint32_t)*s->z.next_in << (8 * s->gz_have);
        s->z.next_in++;
        s->z.avail_in--;
        s->in_offset++;
        s->gz_have++;
    }
    return s->gz_have == n;
}

/* The next field: the one just completed counts in the header CRC when `crc`. */
static void gz_next(struct source *s, int step, int crc)
{
    if (crc) {
        unsigned char bytes[4] = {(unsigned char)s->gz_hold, (unsigned char)(s->gz_hold >> 8),
                                  (unsigned char)(s->gz_hold >> 16),
                                  (unsigned char)(s->gz_hold >> 24)};
        s->gz_hcrc = (uint32_t)crc32(s->gz_hcrc, bytes, s->gz_have);
    }
    s->gz_step = step;
    s->gz_have = 0;
    s->gz_hold = 0;
}

/* Skips a NUL-terminated header string as far as the input goes: 1 when it ended. */
static int gz_string(struct source *s)
{
    size_t n = 0;
    int ended = 0;
    while (n < s->z.avail_in && !ended)
        ended = s->z.next_in[n++] == 0;
    if (s->gz_flags & GZ_FHCRC)
        s->gz_hcrc = (uint32_t)crc32(s->gz_hcrc, s->z.next_in, (uInt)n);
    s->z.next_in += n;
    s->z.avail_in -= (uInt)n;
    s->in_offset += n;
    return ended;
}

static enum dg_status gz_corrupt(const struct source *s, const char *what)
{
    return dg_error(DG_ERR_INPUT, "%s: byte %zu: corrupt gzip data (%s)", s->path, s->in_offset,
                    what);
}

/* Reads the member header as far as the input goes (s->gz_phase becomes GZ_DATA once it is
 * complete), refusing it as zlib does. */
static enum dg_status gz_read_header(struct source *s)
{
    unsigned flags = s->gz_flags;
    switch (s->gz_step) {
    case H_MAGIC:
        if (!gz_field(s, 2))
            return DG_OK;
        if (s->gz_hold != 0x8b1f)
            return gz_corrupt(s, "incorrect header check");
        s->gz_hcrc = (uint32_t)crc32(0, NULL, 0);
        gz_next(s, H_FLAGS, 1);
        /* fall through */
    case H_FLAGS:
        if (!gz_field(s, 2))
            return DG_OK;
        flags = s->gz_flags = s->gz_hold;
        if ((flags & 0xff) != Z_DEFLATED)
            return gz_corrupt(s, "unknown compression method");
        if (flags & 0xe000)
            return gz_corrupt(s, "unknown header flags set");
        gz_next(s, H_TIME, flags & GZ_FHCRC);
        /* fall through */
    case H_TIME:
        if (!gz_field(s, 4))
            return DG_OK;
        gz_next(s, H_OS, flags & GZ_FHCRC);
        /* fall through */
    case H_OS:
        if (!gz_field(s, 2))
            return DG_OK;
        gz_next(s, H_EXLEN, flags & GZ_FHCRC);
        /* fall through */
    case H_EXLEN:
        if (flags & GZ_FEXTRA) {
            if (!gz_field(s, 2))
                return DG_OK;
            s->gz_extra = s->gz_hold;
        }
        gz_next(s, H_EXTRA, (flags & GZ_FEXTRA) && (flags & GZ_FHCRC));
        /* fall through */
    case H_EXTRA:
        if (flags & GZ_FEXTRA) {
            uInt n = s->gz_extra < s->z.avail_in ? (uInt)s->gz_extra : s->z.avail_in;
            if (flags & GZ_FHCRC)
                s->gz_hcrc = (uint32_t)crc32(s->gz_hcrc, s->z.next_in, n);
            s->z.next_in += n;
            s->z.avail_in -= n;
            s->in_offset += n;
            s->gz_extra -= n;
            if (s->gz_extra)
                return DG_OK;
        }
        s->gz_step = H_NAME;
        /* fall through */
    case H_NAME:
        if ((flags & GZ_FNAME) && !gz_string(s))
            return DG_OK;
        s->gz_step = H_COMMENT;
        /* fall through */
    case H_COMMENT:
        if ((flags & GZ_FCOMMENT) && !gz_string(s))
            return DG_OK;
        s->gz_step = H_HCRC;
        /* fall through */
    case H_HCRC:
        if (flags & GZ_FHCRC) {
            if (!gz_field(s, 2))
                return DG_OK;
            if (s->gz_hold != (s->gz_hcrc & 0xffff))
                return gz_corrupt(s, "header crc mismatch");
        }
        gz_next(s, T_CRC, 0);
        s->gz_phase = GZ_DATA;
        s->gz_crc = (uint32_t)crc32(0, NULL, 0);
        s->gz_size = 0;
    }
    return DG_OK;
}

/* Reads the member trailer as far as the input goes: *done once both fields are checked. */
static enum dg_status gz_read_trailer(struct source *s, int *done)
{
    *done = 0;
    if (s->gz_step == T_CRC) {
        if (!gz_field(s, 4))
            return DG_OK;
        if (s->gz_hold != s->gz_crc)
            return gz_corrupt(s, "incorrect data check");
        gz_next(s, T_LENGTH, 0);
    }
    if (!gz_field(s, 4))
        return DG_OK;
    if (s->gz_hold != s->gz_size)
        return gz_corrupt(s, "incorrect length check");
    *done = 1;
    return DG_OK;
}

/* Refills the compressed input (all of it consumed); 0 bytes at the end of the file. */
static enum dg_status gz_refill(struct source *s, ssize_t *n)
{
    do
        *n = read(s->fd, s->in, GZ_IN_BYTES);
    while (*n < 0 && errno == EINTR);
    if (*n < 0)
        return dg_error(DG_ERR_IO, "%s: read failed: %s", s->path, strerror(errno));
    s->z.next_in = s->in;
    s->z.avail_in = (uInt)*n;
    return DG_OK;
}

/* Reads up to cap uncompressed bytes into buf; *got = 0 at the end. */
enum dg_status dg_data_source_read(struct source *s, unsigned char *buf, size_t cap, size_t *got)
{
    *got = 0;
    if (!s->gzipped) {
        size_t peeked = s->peek_len < cap ? s->peek_len : cap;
        memcpy(buf, s->peek, peeked);
        memmove(s->peek, s->peek + peeked, s->peek_len - peeked);
        s->peek_len -= peeked;
        ssize_t n = read_fully(s->fd, buf + peeked, cap - peeked);
        if (n < 0)
            return dg_error(DG_ERR_IO, "%s: read failed: %s", s->path, strerror(errno));
        *got = peeked + (size_t)n;
        s->produced += *got;
        return DG_OK;
    }
    enum dg_status status;
    ssize_t n;
    s->z.next_out = buf;
    s->z.avail_out = (uInt)cap;
    while (s->z.avail_out > 0 && !s->gz_done) {
        if (s->z.avail_in == 0) {
            if ((status = gz_refill(s, &n)) != DG_OK)
                return status;
            if (n == 0)
                return dg_error(DG_ERR_INPUT,
                                "%s: byte %zu: truncated gzip stream (the "
                                "compressed data ends early: the file is incomplete; download "
                                "or copy it again)",
                                s->path, s->in_offset);
        }
        if (s->gz_phase == GZ_HEADER && (status = gz_read_header(s)) != DG_OK)
            return status;
        if (s->gz_phase == GZ_DATA && s->z.avail_in > 0) {
            unsigned char *out = s->z.next_out;
            uInt before = s->z.avail_in;
            int rc = inflate(&s->z, Z_NO_FLUSH);
            s->in_offset += before - s->z.avail_in;
            size_t made = (size_t)(s->z.next_out - out);
            s->gz_crc = s->crc32(s->gz_crc, out, made);
            s->gz_size += (uint32_t)made;
            if (rc == Z_STREAM_END)
                s->gz_phase = GZ_TRAILER;
            else if (rc != Z_OK && rc != Z_BUF_ERROR)
                return gz_corrupt(s, s->z.msg ? s->z.msg : "inflate failed");
        }
        int done = 0;
        if (s->gz_phase == GZ_TRAILER && (status = gz_read_trailer(s, &done)) != DG_OK)
            return status;
        if (done) {
            /* another gzip member may follow (concatenated .gz); anything else is garbage */
            if (s->z.avail_in == 0 && (status = gz_refill(s, &n)) != DG_OK)
                return status;
            if (s->z.avail_in == 0) {
                s->gz_done = 1;
            } else if (s->z.avail_in >= 2 && s->z.next_in[0] == 0x1f && s->z.next_in[1] == 0x8b) {
                inflateReset(&s->z);
                s->size_hint = 0;
                s->gz_phase = GZ_HEADER;
                gz_next(s, H_MAGIC, 0);
            } else {
                return dg_error(DG_ERR_INPUT,
                                "%s: byte %zu: trailing garbage after the gzip "
                                "stream",
                                s->path, s->in_offset);
            }
        }
    }
    *got = cap - s->z.avail_out;
    s->produced += *got;
    return DG_OK;
}
