/* An example virtio-balloon device in C, behind the ABI of virtio_conformance.h.
 *
 * Features: VERSION_1, MUST_TELL_HOST, STATS_VQ, FREE_PAGE_HINT (no EVENT_IDX, no INDIRECT_DESC).
 * Queues (compact by offered features): 0 inflateq, 1 deflateq, 2 statsq, 3 free_page_vq.
 *
 * Build:   cc -shared -fPIC -O2 -o libexample.so example_device.c
 * Broken:  add -DBROKEN_REUSE_CMD_ID (every round gets command ID 2)
 *          or  -DBROKEN_USED_LEN   (inflate/deflate buffers come back with len 4)
 *          or  -DBROKEN_CRASH      (a segfault once a balloon is asked for)
 *          or  -DBROKEN_HANG       (vc_hint_stop never returns)
 * Faults:  add -DFAULT_AT_CALL: the N-th call on a device (VC_FAULT_CALL=N, counted from vc_device_new;
 *          unset or 0: never) segfaults, or with VC_FAULT_HANG=1 never returns (conformance.faults)
 */
#include <stdlib.h>
#include <string.h>

#include "virtio_conformance.h"

#define PAGE 4096u
#define NQ 4
#define QMAX 64
#define F_MUST_TELL_HOST (1ull << 0)
#define F_STATS_VQ (1ull << 1)
#define F_FREE_PAGE_HINT (1ull << 3)
#define F_VERSION_1 (1ull << 32)
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 64
#define CMD_STOP 0u
#define CMD_DONE 1u

enum hint_state { H_STOP, H_REQUESTED, H_ACTIVE, H_DONE };

struct vq {
    int enabled;
    uint16_t size, last_avail, used_idx;
    uint64_t desc, avail, used;
};

struct vc_device {
    uint8_t *mem;
    uint64_t mem_size, npages;
    uint64_t driver_features, negotiated;
    uint8_t status;
    uint32_t generation, num_pages, actual, cmd_id;
    struct vq q[NQ];
    uint32_t irq_queues;
    int irq_config;
    uint8_t *ballooned, *hinted;
    uint32_t next_id;
    enum hint_state hint;
    int have_tag;
    uint32_t tag;
    int stats_head;
    unsigned long calls, fault_at; /* FAULT_AT_CALL */
    int fault_hang;
};

#ifdef FAULT_AT_CALL
/* Each example builds its own device, so the N-th call is the same step of every replay of an example. */
#define FAULT(d)                                                                                           \
    do {                                                                                                   \
        if ((d)->fault_at && ++(d)->calls == (d)->fault_at) {                                              \
            for (volatile int forever = (d)->fault_hang; forever;)                                         \
                ;                                                                                          \
            *(volatile int *)0 = 1;                                                                        \
        }                                                                                                  \
    } while (0)
#else
#define FAULT(d) ((void)0)
#endif

static const uint64_t OFFERED = F_VERSION_1 | F_MUST_TELL_HOST | F_STATS_VQ | F_FREE_PAGE_HINT;

/* -- little-endian guest memory access, bounds-checked --------------------------------------------- */
static int in_mem(struct vc_device *d, uint64_t addr, uint64_t len)
{
    return addr <= d->mem_size && len <= d->mem_size - addr;
}
static uint16_t rd16(struct vc_device *d, uint64_t a) { return d->mem[a] | d->mem[a + 1] << 8; }
static uint32_t rd32(struct vc_device *d, uint64_t a) { return rd16(d, a) | (uint32_t)rd16(d, a + 2) << 16; }
static uint64_t rd64(struct vc_device *d, uint64_t a) { return rd32(d, a) | (uint64_t)rd32(d, a + 4) << 32; }
static void wr16(struct vc_device *d, uint64_t a, uint16_t v) { d->mem[a] = v; d->mem[a + 1] = v >> 8; }
static void wr32(struct vc_device *d, uint64_t a, uint32_t v) { wr16(d, a, v); wr16(d, a + 2, v >> 16); }

static void config_changed(struct vc_device *d)
{
    d->generation++;
    if (d->status & S_DRIVER_OK)
        d->irq_config = 1;
}

static void reset(struct vc_device *d)
{
    d->driver_features = d->negotiated = 0;
    d->status = 0;
    d->actual = 0;
    d->cmd_id = CMD_STOP;
    memset(d->q, 0, sizeof d->q);
    d->irq_queues = 0;
    d->irq_config = 0;
    memset(d->ballooned, 0, d->npages);
    memset(d->hinted, 0, d->npages);
    d->next_id = 2;
    d->hint = H_STOP;
    d->have_tag = 0;
    d->stats_head = -1;
    d->generation++;
}

int vc_abi_version(void) { return VC_ABI_VERSION; }

struct vc_device *vc_device_new(uint8_t *mem, uint64_t mem_size)
{
    struct vc_device *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->mem = mem;
    d->mem_size = mem_size;
    d->npages = mem_size / PAGE;
    d->ballooned = calloc(d->npages, 1);
    d->hinted = calloc(d->npages, 1);
    if (!d->ballooned || !d->hinted) {
        vc_device_free(d);
        return NULL;
    }
    reset(d);
#ifdef FAULT_AT_CALL
    d->fault_at = getenv("VC_FAULT_CALL") ? strtoul(getenv("VC_FAULT_CALL"), NULL, 10) : 0;
    d->fault_hang = getenv("VC_FAULT_HANG") && *getenv("VC_FAULT_HANG") == '1';
#endif
    return d;
}

void vc_device_free(struct vc_device *d)
{
    if (!d)
        return;
    free(d->ballooned);
    free(d->hinted);
    free(d);
}

/* -- transport --------------------------------------------------------------------------------------- */
uint64_t vc_read_device_features(struct vc_device *d) { FAULT(d); return OFFERED; }

int vc_write_driver_features(struct vc_device *d, uint64_t f)
{
    FAULT(d);
    if (d->status & S_FEATURES_OK)
        return -1;
    d->driver_features = f;
    return 0;
}

int vc_read_status(struct vc_device *d) { FAULT(d); return d->status; }

int vc_write_status(struct vc_device *d, uint8_t s)
{
    FAULT(d);
    if (s == 0) {
        reset(d);
        return 0;
    }
    if ((s & S_FEATURES_OK) && !(d->status & S_FEATURES_OK)) {
        if ((d->driver_features & ~OFFERED) || !(d->driver_features & F_VERSION_1))
            s &= ~S_FEATURES_OK; /* refuse: the driver reads the bit back */
        else
            d->negotiated = d->driver_features;
    }
    d->status = s | (d->status & S_NEEDS_RESET);
    return 0;
}

uint32_t vc_config_generation(struct vc_device *d) { FAULT(d); return d->generation; }

int vc_read_config(struct vc_device *d, uint32_t off, uint32_t size, uint32_t *value)
{
    FAULT(d);
    uint8_t cfg[16] = {0};
    uint32_t fields[4] = {d->num_pages, d->actual, d->cmd_id, 0};
    if (off + size > sizeof cfg || (size != 1 && size != 2 && size != 4))
        return -1;
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 4; b++)
            cfg[4 * i + b] = fields[i] >> (8 * b);
    *value = 0;
    for (uint32_t b = 0; b < size; b++)
        *value |= (uint32_t)cfg[off + b] << (8 * b);
    return 0;
}

int vc_write_config(struct vc_device *d, uint32_t off, uint32_t size, uint32_t value)
{
    FAULT(d);
    if (off == 4 && size == 4)
        d->actual = value;
    return 0; /* writes to device-owned fields are ignored */
}

int vc_queue_max_size(struct vc_device *d, uint16_t index) { FAULT(d); return index < NQ ? QMAX : 0; }

int vc_enable_queue(struct vc_device *d, uint16_t index, uint16_t size, uint64_t desc, uint64_t avail,
                    uint64_t used)
{
    FAULT(d);
    if (index >= NQ || size == 0 || size > QMAX || (size & (size - 1)))
        return -1;
    struct vq *q = &d->q[index];
    q->enabled = 1;
    q->size = size;
    q->desc = desc;
    q->avail = avail;
    q->used = used;
    q->last_avail = q->used_idx = 0;
    return 0;
}

int vc_notify(struct vc_device *d, uint16_t index)
{
    FAULT(d);
    return index < NQ && d->q[index].enabled ? 0 : -1;
}

uint32_t vc_take_interrupts(struct vc_device *d, int *config_changed)
{
    FAULT(d);
    uint32_t q = d->irq_queues;
    *config_changed = d->irq_config;
    d->irq_queues = 0;
    d->irq_config = 0;
    return q;
}

/* -- queue work ---------------------------------------------------------------------------------------------- */
struct seg { uint64_t addr; uint32_t len; int writable; };
struct chain { uint16_t head; int n; struct seg seg[QMAX]; uint32_t readable; };

static int walk(struct vc_device *d, struct vq *q, uint16_t head, struct chain *c)
{
    uint16_t i = head;
    c->head = head;
    c->n = 0;
    c->readable = 0;
    for (;;) {
        if (i >= q->size || c->n >= q->size)
            return -1; /* out of range, or a loop */
        uint64_t da = q->desc + 16u * i;
        struct seg *s = &c->seg[c->n++];
        s->addr = rd64(d, da);
        s->len = rd32(d, da + 8);
        uint16_t flags = rd16(d, da + 12);
        s->writable = flags & 2;
        if (!in_mem(d, s->addr, s->len) || (flags & 4))
            return -1;
        if (!s->writable)
            c->readable += s->len;
        if (!(flags & 1))
            return 0;
        i = rd16(d, da + 14);
    }
}

static void push_used(struct vc_device *d, int qi, uint16_t head, uint32_t len)
{
    struct vq *q = &d->q[qi];
    uint64_t elem = q->used + 4 + 8u * (q->used_idx % q->size);
    wr32(d, elem, head);
    wr32(d, elem + 4, len);
    q->used_idx++;
    wr16(d, q->used + 2, q->used_idx); /* element first, then the index */
    if (rd16(d, q->avail) == 0)
        d->irq_queues |= 1u << qi;
}

static uint32_t readable_u32(struct vc_device *d, struct chain *c, uint32_t off)
{
    uint8_t b[4];
    for (int k = 0; k < 4; k++, off++) {
        for (int i = 0; i < c->n; i++) {
            if (c->seg[i].writable)
                continue;
            if (off < c->seg[i].len) {
                b[k] = d->mem[c->seg[i].addr + off];
                break;
            }
            off -= c->seg[i].len;
        }
    }
    return b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
}

static int handle(struct vc_device *d, int qi, struct chain *c)
{
    uint32_t used_len = 0;
#ifdef BROKEN_USED_LEN
    used_len = 4;
#endif
    if (qi == 0 || qi == 1) {
        if (c->readable % 4)
            return -1;
        for (uint32_t off = 0; off < c->readable; off += 4) {
            uint32_t pfn = readable_u32(d, c, off);
            if (pfn >= d->npages)
                return -1;
            d->ballooned[pfn] = qi == 0;
            if (qi == 0 || (d->negotiated & F_MUST_TELL_HOST))
                memset(d->mem + (uint64_t)pfn * PAGE, 0, PAGE);
        }
        push_used(d, qi, c->head, used_len);
    } else if (qi == 2) {
        d->stats_head = c->head; /* held until the host asks for fresh statistics */
    } else {
        if (c->readable == 4) {
            uint32_t id = readable_u32(d, c, 0);
            if (id == CMD_STOP) {
                d->have_tag = 0;
                if (d->hint == H_ACTIVE) {
                    d->hint = H_STOP;
                    d->cmd_id = CMD_STOP;
                    config_changed(d);
                }
            } else {
                d->have_tag = 1;
                d->tag = id;
                if (d->hint == H_REQUESTED && id == d->cmd_id)
                    d->hint = H_ACTIVE;
            }
        }
        for (int i = 0; i < c->n; i++) {
            struct seg *s = &c->seg[i];
            if (!s->writable || d->hint != H_ACTIVE || !d->have_tag || d->tag != d->cmd_id)
                continue; /* hints not tagged with the current ID are ignored */
            for (uint64_t p = (s->addr + PAGE - 1) / PAGE; (p + 1) * PAGE <= s->addr + s->len; p++)
                d->hinted[p] = 1;
        }
        push_used(d, qi, c->head, 0);
    }
    return 0;
}

int vc_run(struct vc_device *d)
{
    FAULT(d);
    if (!(d->status & S_DRIVER_OK) || (d->status & S_NEEDS_RESET))
        return 0;
    for (int qi = 0; qi < NQ; qi++) {
        struct vq *q = &d->q[qi];
        if (!q->enabled)
            continue;
        while (rd16(d, q->avail + 2) != q->last_avail) {
            struct chain c;
            uint16_t head = rd16(d, q->avail + 4 + 2u * (q->last_avail % q->size));
            q->last_avail++;
            if (walk(d, q, head, &c) || handle(d, qi, &c)) {
                d->status |= S_NEEDS_RESET; /* a driver error: stop and ask for a reset */
                config_changed(d);
                return 0;
            }
        }
    }
    return 0;
}

/* -- host side ------------------------------------------------------------------------------------------- */
int vc_set_target(struct vc_device *d, uint32_t n)
{
    FAULT(d);
#ifdef BROKEN_CRASH
    if (n > 0)
        *(volatile int *)0 = 1; /* a crash as soon as the host asks for a balloon */
#endif
    if (d->num_pages != n) {
        d->num_pages = n;
        config_changed(d);
    }
    return 0;
}

int64_t vc_hint_start(struct vc_device *d)
{
    FAULT(d);
    if (!(d->negotiated & F_FREE_PAGE_HINT))
        return -1;
#ifdef BROKEN_REUSE_CMD_ID
    d->next_id = 2;
#endif
    memset(d->hinted, 0, d->npages);
    d->cmd_id = d->next_id++;
    d->hint = H_REQUESTED;
    config_changed(d);
    return d->cmd_id;
}

static int publish(struct vc_device *d, uint32_t v, enum hint_state h)
{
    if (!(d->negotiated & F_FREE_PAGE_HINT))
        return -1;
    d->hint = h;
    if (d->cmd_id != v) {
        d->cmd_id = v;
        config_changed(d);
    }
    return 0;
}

int vc_hint_stop(struct vc_device *d)
{
    FAULT(d);
#ifdef BROKEN_HANG
    for (volatile int forever = 1; forever;) /* a hang: the call never returns */
        ;
#endif
    return publish(d, CMD_STOP, H_STOP);
}
int vc_hint_done(struct vc_device *d) { FAULT(d); return publish(d, CMD_DONE, H_DONE); }

int vc_hinted_pages(struct vc_device *d, uint8_t *bitmap, uint64_t len)
{
    FAULT(d);
    memset(bitmap, 0, len);
    for (uint64_t p = 0; p < d->npages && p / 8 < len; p++)
        if (d->hinted[p])
            bitmap[p / 8] |= 1u << (p % 8);
    return 0;
}

int vc_request_stats(struct vc_device *d)
{
    FAULT(d);
    if (d->stats_head < 0)
        return 0;
    push_used(d, 2, (uint16_t)d->stats_head, 0);
    d->stats_head = -1;
    return 1;
}
