/* Byte buffers and the field-list (tag, length, value) encoding of PROTOCOL.md. */
#include <stdlib.h>
#include <string.h>

#include "agent.h"

int buf_append(struct buf *b, const void *p, size_t n) {
    if (n == 0)
        return 0;
    if (b->head + b->len + n > b->cap) {
        if (b->head > 0) { /* compact before growing */
            memmove(b->data, b->data + b->head, b->len);
            b->head = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap : 4096;
            while (cap < b->len + n)
                cap *= 2;
            uint8_t *d = realloc(b->data, cap);
            if (!d)
                return -1;
            b->data = d;
            b->cap = cap;
        }
    }
    memcpy(b->data + b->head + b->len, p, n);
    b->len += n;
    return 0;
}

void buf_consume(struct buf *b, size_t n) {
    if (n >= b->len) {
        b->head = b->len = 0;
        /* give back memory after a burst (e.g. 10 MiB of output) */
        if (b->cap > (1u << 22)) {
            free(b->data);
            b->data = NULL;
            b->cap = 0;
        }
        return;
    }
    b->head += n;
    b->len -= n;
}

void buf_free(struct buf *b) {
    free(b->data);
    memset(b, 0, sizeof(*b));
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void fields_begin(struct field_iter *it, const uint8_t *p, size_t n) {
    it->p = p;
    it->end = p + n;
    it->malformed = 0;
}

int fields_next(struct field_iter *it, struct field *f) {
    size_t left = (size_t)(it->end - it->p);
    if (left == 0)
        return 0;
    if (left < 6) {
        it->malformed = 1;
        return 0;
    }
    f->tag = rd16(it->p);
    f->len = rd32(it->p + 2);
    if (f->len > left - 6) {
        it->malformed = 1;
        return 0;
    }
    f->val = it->p + 6;
    it->p += 6 + f->len;
    return 1;
}

int fields_validate(const uint8_t *p, size_t n) {
    struct field_iter it;
    struct field f;
    fields_begin(&it, p, n);
    while (fields_next(&it, &f))
        ;
    return it.malformed ? -1 : 0;
}

int field_int(const struct field *f, int64_t *out) {
    if (f->len != 8)
        return -1;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | f->val[i];
    *out = (int64_t)v;
    return 0;
}

char *field_str(const struct field *f) {
    if (memchr(f->val, 0, f->len))
        return NULL;
    char *s = malloc(f->len + 1);
    if (!s)
        return NULL;
    memcpy(s, f->val, f->len);
    s[f->len] = 0;
    return s;
}

void pl_bytes(struct payload *pl, uint16_t tag, const void *p, size_t n) {
    uint8_t h[6] = {(uint8_t)tag, (uint8_t)(tag >> 8), (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16),
                    (uint8_t)(n >> 24)};
    buf_append(&pl->b, h, 6);
    buf_append(&pl->b, p, n);
}

void pl_str(struct payload *pl, uint16_t tag, const char *s) { pl_bytes(pl, tag, s, strlen(s)); }

void pl_int(struct payload *pl, uint16_t tag, int64_t v) {
    uint8_t b[8];
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(u >> (8 * i));
    pl_bytes(pl, tag, b, 8);
}
