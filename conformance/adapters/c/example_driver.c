/* An example virtio-balloon driver in C, behind the driver half of virtio_conformance.h.
 *
 * It accepts VERSION_1 and MUST_TELL_HOST only, so it uses inflateq (0) and deflateq (1), and follows
 * num_pages with one PFN array per buffer, updating actual as the balloon changes.
 *
 * Build:   cc -shared -fPIC -O2 -o libexampledriver.so example_driver.c
 * Broken:  -DBROKEN_STALE_ACTUAL (never updates actual), -DBROKEN_EARLY_REUSE (reuses deflated pages
 *          before the device acknowledged the deflate, although MUST_TELL_HOST is negotiated)
 */
#include <stdlib.h>
#include <string.h>

#include "virtio_conformance.h"

#define PAGE 4096u
#define QSIZE 8u
#define BATCH 8u
#define MAXB 1024u
#define F_MUST_TELL_HOST (1ull << 0)
#define F_VERSION_1 (1ull << 32)
#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_FAILED 128

struct ring {
    uint16_t size, avail_idx, last_used, free_head, nfree;
    uint64_t desc, avail, used, bufs; /* bufs: one PFN array slot per descriptor */
    uint32_t npfn[QSIZE];
    uint32_t pfn[QSIZE][BATCH];
};

struct vc_driver {
    struct vc_transport t;
    uint8_t *mem;
    uint64_t mem_size, features;
    struct ring q[2];
    uint32_t balloon[MAXB], nballoon, inflating, actual_written;
    int ok;
};

static void wr16(struct vc_driver *d, uint64_t a, uint16_t v) { d->mem[a] = v; d->mem[a + 1] = v >> 8; }
static void wr32(struct vc_driver *d, uint64_t a, uint32_t v) { wr16(d, a, v); wr16(d, a + 2, v >> 16); }
static void wr64(struct vc_driver *d, uint64_t a, uint64_t v) { wr32(d, a, v); wr32(d, a + 4, v >> 32); }
static uint16_t rd16(struct vc_driver *d, uint64_t a) { return d->mem[a] | d->mem[a + 1] << 8; }
static uint32_t rd32(struct vc_driver *d, uint64_t a) { return rd16(d, a) | (uint32_t)rd16(d, a + 2) << 16; }

struct vc_driver *vc_driver_new(void) { return calloc(1, sizeof(struct vc_driver)); }
void vc_driver_free(struct vc_driver *d) { free(d); }

static int setup_queue(struct vc_driver *d, int i)
{
    struct ring *r = &d->q[i];
    uint16_t max = d->t.queue_max_size(d->t.ctx, i);
    if (max == 0)
        return -1;
    r->size = max < QSIZE ? max : QSIZE;
    int64_t page = d->t.alloc_pages(d->t.ctx, 2); /* desc + avail in one page, used in the next */
    if (page < 0)
        return -1;
    r->desc = (uint64_t)page * PAGE;
    r->avail = r->desc + 16u * r->size;
    r->used = r->desc + PAGE;
    memset(d->mem + r->desc, 0, 2 * PAGE);
    int64_t bufs = d->t.alloc_pages(d->t.ctx, 1);
    if (bufs < 0)
        return -1;
    r->bufs = (uint64_t)bufs * PAGE;
    r->nfree = r->size;
    d->t.enable_queue(d->t.ctx, i, r->size, r->desc, r->avail, r->used);
    return 0;
}

int vc_driver_probe(struct vc_driver *d, const struct vc_transport *t, uint8_t *mem, uint64_t mem_size)
{
    memset(d, 0, sizeof *d); /* a probe starts from scratch: nothing of an earlier device is kept */
    d->t = *t;
    d->mem = mem;
    d->mem_size = mem_size;
    d->t.write_status(d->t.ctx, 0);
    /* §2.4: the reset is complete once status reads 0 (RESET-DRV-1); bounded, a device may be stuck. */
    for (int i = 0; d->t.read_status(d->t.ctx) != 0; i++)
        if (i == 1000)
            return -1;
    d->t.write_status(d->t.ctx, S_ACK);
    d->t.write_status(d->t.ctx, S_ACK | S_DRIVER);
    d->features = d->t.read_device_features(d->t.ctx) & (F_VERSION_1 | F_MUST_TELL_HOST);
    d->t.write_driver_features(d->t.ctx, d->features);
    d->t.write_status(d->t.ctx, S_ACK | S_DRIVER | S_FEATURES_OK);
    if (!(d->t.read_status(d->t.ctx) & S_FEATURES_OK) || setup_queue(d, 0) || setup_queue(d, 1)) {
        d->t.write_status(d->t.ctx, S_ACK | S_DRIVER | S_FAILED);
        return 0;
    }
    d->t.write_status(d->t.ctx, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    d->ok = 1;
    d->actual_written = 0xFFFFFFFFu;
    return 1;
}

int vc_driver_interrupt(struct vc_driver *d, uint32_t queues, int config)
{
    (void)d, (void)queues, (void)config; /* everything is re-read in vc_driver_run */
    return 0;
}

static void send(struct vc_driver *d, int qi, const uint32_t *pfns, uint32_t n)
{
    struct ring *r = &d->q[qi];
    uint16_t head = r->free_head;
    r->free_head = (r->free_head + 1) % r->size; /* one descriptor per chain, used in order of heads */
    r->nfree--;
    uint64_t buf = r->bufs + 4u * BATCH * head;
    for (uint32_t i = 0; i < n; i++) {
        wr32(d, buf + 4u * i, pfns[i]);
        r->pfn[head][i] = pfns[i];
    }
    r->npfn[head] = n;
    uint64_t da = r->desc + 16u * head;
    wr64(d, da, buf);
    wr32(d, da + 8, 4u * n);
    wr16(d, da + 12, 0);
    wr16(d, da + 14, 0);
    wr16(d, r->avail + 4 + 2u * (r->avail_idx % r->size), head);
    r->avail_idx++;
    wr16(d, r->avail + 2, r->avail_idx); /* the ring entry first, then the index */
    if (!(rd16(d, r->used) & 1))
        d->t.notify(d->t.ctx, qi);
}

static void harvest(struct vc_driver *d, int qi)
{
    struct ring *r = &d->q[qi];
    while (rd16(d, r->used + 2) != r->last_used) {
        uint32_t head = rd32(d, r->used + 4 + 8u * (r->last_used % r->size));
        r->last_used++;
        if (head >= r->size)
            continue;
        r->nfree++;
        for (uint32_t i = 0; i < r->npfn[head]; i++) {
            if (qi == 0) {
                d->balloon[d->nballoon++] = r->pfn[head][i];
                d->inflating--;
            } else {
#ifndef BROKEN_EARLY_REUSE
                if (d->features & F_MUST_TELL_HOST)
                    d->t.free_page(d->t.ctx, r->pfn[head][i]);
#endif
            }
        }
    }
}

int vc_driver_run(struct vc_driver *d)
{
    if (!d->ok)
        return 0;
    harvest(d, 0);
    harvest(d, 1);
    uint32_t target = d->t.read_config(d->t.ctx, 0, 4);
    uint32_t have = d->nballoon + d->inflating;
    while (target > have && d->q[0].nfree && have < MAXB) {
        uint32_t pfns[BATCH], n = 0;
        int64_t p;
        while (n < BATCH && have + n < target && have + n < MAXB && (p = d->t.alloc_page(d->t.ctx)) >= 0)
            pfns[n++] = (uint32_t)p;
        if (!n)
            break;
        send(d, 0, pfns, n);
        d->inflating += n;
        have += n;
    }
    while (target < d->nballoon && !d->inflating && d->q[1].nfree) {
        uint32_t pfns[BATCH], n = 0;
        while (n < BATCH && d->nballoon > target)
            pfns[n++] = d->balloon[--d->nballoon];
        send(d, 1, pfns, n);
        if (!(d->features & F_MUST_TELL_HOST))
            for (uint32_t i = 0; i < n; i++)
                d->t.free_page(d->t.ctx, pfns[i]);
#ifdef BROKEN_EARLY_REUSE
        else
            for (uint32_t i = 0; i < n; i++)
                d->t.free_page(d->t.ctx, pfns[i]);
#endif
    }
#ifndef BROKEN_STALE_ACTUAL
    if (d->nballoon != d->actual_written) {
        d->t.write_config(d->t.ctx, 4, 4, d->nballoon);
        d->actual_written = d->nballoon;
    }
#endif
    return 0;
}
