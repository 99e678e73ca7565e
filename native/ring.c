/* Bounded MPMC ring of fixed-size records in shared memory, futex wait/wake: see ring.h. */
#define _GNU_SOURCE
#include "ring.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(vf_ring_header) == 320, "ring header layout");
_Static_assert(sizeof(vf_ring_cell) == 16, "ring cell layout");

#ifndef VF_RING_SPIN_NS
#define VF_RING_SPIN_NS 10000 /* 10 us */
#endif

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static size_t cell_stride(uint32_t record_size)
{
    size_t raw = sizeof(vf_ring_cell) + (size_t)record_size;
    return (raw + 63u) & ~(size_t)63u;
}

size_t vf_ring_size(uint32_t capacity, uint32_t record_size)
{
    return sizeof(vf_ring_header) + (size_t)capacity * cell_stride(record_size);
}

static vf_ring_cell *cell_at(const vf_ring_header *r, uint64_t pos)
{
    char *base = (char *)r + sizeof(vf_ring_header);
    return (vf_ring_cell *)(base + (size_t)(pos % r->capacity) * r->cell_stride);
}

/* Sequence numbers count in steps of two: a cell is free for position pos at 2*pos and holds
 * the record of pos at 2*pos + 1. Vyukov's pos / pos + 1 makes "holds pos" and "free for
 * pos + capacity" the same number when capacity is 1, and a second put then overwrote the
 * first record unread. */
static uint64_t free_at(uint64_t pos)
{
    return 2 * pos;
}

static uint64_t full_at(uint64_t pos)
{
    return 2 * pos + 1;
}

static char *cell_data(vf_ring_cell *c)
{
    return (char *)c + sizeof(vf_ring_cell);
}

void vf_ring_init(void *mem, uint32_t capacity, uint32_t record_size)
{
    vf_ring_header *r = mem;
    r->version = VF_RING_VERSION;
    r->capacity = capacity;
    r->record_size = record_size;
    r->cell_stride = (uint32_t)cell_stride(record_size);
    r->total_size = vf_ring_size(capacity, record_size);
    r->tail = 0;
    r->head = 0;
    r->published = 0;
    r->empty_waiters = 0;
    r->consumed = 0;
    r->full_waiters = 0;
    for (uint32_t i = 0; i < capacity; i++) {
        vf_ring_cell *c = cell_at(r, i);
        c->length = 0;
        c->pad = 0;
        STORE_REL(&c->seq, free_at(i));
    }
    /* Last: a reader that sees the magic sees an initialised ring. */
    __atomic_store_n(&r->magic, VF_RING_MAGIC, __ATOMIC_SEQ_CST);
}

int vf_ring_check(const void *mem, size_t size)
{
    const vf_ring_header *r = mem;
    if (size < sizeof(vf_ring_header))
        return -1;
    if (__atomic_load_n(&r->magic, __ATOMIC_SEQ_CST) != VF_RING_MAGIC)
        return -1;
    if (r->version != VF_RING_VERSION || r->capacity == 0)
        return -1;
    if (r->cell_stride != cell_stride(r->record_size))
        return -1;
    if (r->total_size != vf_ring_size(r->capacity, r->record_size) || r->total_size > size)
        return -1;
    return 0;
}

/* -- non-blocking operations ------------------------------------------------------------- */

static void wake(uint32_t *word, uint32_t *waiters)
{
    __atomic_add_fetch(word, 1u, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(waiters, __ATOMIC_SEQ_CST) != 0)
        syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

int vf_ring_try_put(vf_ring_header *r, const void *data, uint32_t length)
{
    if (length > r->record_size)
        return VF_RING_TOOBIG;
    uint64_t pos = LOAD_RLX(&r->tail);
    for (;;) {
        vf_ring_cell *c = cell_at(r, pos);
        uint64_t seq = LOAD_ACQ(&c->seq);
        int64_t dif = (int64_t)(seq - free_at(pos));
        if (dif == 0) {
            if (__atomic_compare_exchange_n(&r->tail, &pos, pos + 1, 1, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED)) {
                if (length)
                    memcpy(cell_data(c), data, length);
                c->length = length;
                STORE_REL(&c->seq, full_at(pos));
                wake(&r->published, &r->empty_waiters);
                return VF_RING_OK;
            }
            /* pos was reloaded by the failed CAS */
        } else if (dif < 0) {
            return VF_RING_TIMEOUT; /* full */
        } else {
            pos = LOAD_RLX(&r->tail);
        }
    }
}

vf_ring_cell *vf_ring_claim_get(vf_ring_header *r, uint64_t *claimed)
{
    uint64_t pos = LOAD_RLX(&r->head);
    for (;;) {
        vf_ring_cell *c = cell_at(r, pos);
        uint64_t seq = LOAD_ACQ(&c->seq);
        int64_t dif = (int64_t)(seq - full_at(pos));
        if (dif == 0) {
            if (__atomic_compare_exchange_n(&r->head, &pos, pos + 1, 1, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED)) {
                *claimed = pos;
                return c;
            }
        } else if (dif < 0) {
            return NULL; /* empty */
        } else {
            pos = LOAD_RLX(&r->head);
        }
    }
}

const void *vf_ring_cell_data(vf_ring_cell *c, uint32_t *length)
{
    *length = c->length;
    return cell_data(c);
}

void vf_ring_commit_get(vf_ring_header *r, vf_ring_cell *c, uint64_t claimed)
{
    STORE_REL(&c->seq, free_at(claimed + r->capacity));
    wake(&r->consumed, &r->full_waiters);
}

int vf_ring_try_get(vf_ring_header *r, void *out, uint32_t cap, uint32_t *length)
{
    uint64_t pos;
    vf_ring_cell *c = vf_ring_claim_get(r, &pos);
    if (c == NULL)
        return VF_RING_TIMEOUT;
    uint32_t n = c->length;
    if (n > r->record_size)
        n = r->record_size; /* a corrupt length must not read past the cell */
    memcpy(out, cell_data(c), n < cap ? n : cap);
    *length = n;
    vf_ring_commit_get(r, c, pos);
    return VF_RING_OK;
}

/* -- waiting ------------------------------------------------------------------------------- */

static int writable(const vf_ring_header *r)
{
    uint64_t pos = LOAD_RLX(&r->tail);
    uint64_t seq = LOAD_ACQ(&cell_at(r, pos)->seq);
    return (int64_t)(seq - free_at(pos)) >= 0;
}

static int readable(const vf_ring_header *r)
{
    uint64_t pos = LOAD_RLX(&r->head);
    uint64_t seq = LOAD_ACQ(&cell_at(r, pos)->seq);
    return (int64_t)(seq - full_at(pos)) >= 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t vf_ring_deadline(double timeout)
{
    if (!(timeout > 0))
        return 0;
    if (timeout > 1e6)
        timeout = 1e6;
    return now_ns() + (int64_t)(timeout * 1e9);
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Sleep until `ready` holds, or the deadline (monotonic ns; 0: do not wait) passes.
 * A waiter first spins for up to VF_RING_SPIN_NS, yielding the core between rounds: a peer
 * that is running usually answers within that, and then neither side makes a system call (no futex sleep, no
 * wake). Past it, the waiter sleeps on the futex and costs nothing. */
static int wait_for(vf_ring_header *r, int (*ready)(const vf_ring_header *), uint32_t *word,
                    uint32_t *waiters, int64_t deadline)
{
    if (deadline != 0) {
        int64_t spin_until = now_ns() + VF_RING_SPIN_NS;
        if (spin_until > deadline)
            spin_until = deadline;
        do {
            for (int i = 0; i < 64; i++) {
                if (ready(r))
                    return VF_RING_OK;
                cpu_relax();
            }
            sched_yield(); /* on a crowded core, let the peer (or anyone) run */
        } while (now_ns() < spin_until);
    }
    for (;;) {
        if (ready(r))
            return VF_RING_OK;
        int64_t left = deadline - now_ns();
        if (deadline == 0 || left <= 0)
            return VF_RING_TIMEOUT;
        __atomic_add_fetch(waiters, 1u, __ATOMIC_SEQ_CST);
        uint32_t seen = __atomic_load_n(word, __ATOMIC_SEQ_CST);
        int rc = 0;
        if (!ready(r)) {
            struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
            rc = (int)syscall(SYS_futex, word, FUTEX_WAIT, seen, &ts, NULL, 0);
        }
        int err = rc == -1 ? errno : 0;
        __atomic_sub_fetch(waiters, 1u, __ATOMIC_SEQ_CST);
        if (err == EINTR)
            return VF_RING_EINTR;
    }
}

int vf_ring_wait_writable(vf_ring_header *r, int64_t deadline)
{
    return wait_for(r, writable, &r->consumed, &r->full_waiters, deadline);
}

int vf_ring_wait_readable(vf_ring_header *r, int64_t deadline)
{
    return wait_for(r, readable, &r->published, &r->empty_waiters, deadline);
}

int vf_ring_put(vf_ring_header *r, const void *data, uint32_t length, double timeout)
{
    int64_t deadline = vf_ring_deadline(timeout);
    for (;;) {
        int rc = vf_ring_try_put(r, data, length);
        if (rc != VF_RING_TIMEOUT)
            return rc;
        rc = vf_ring_wait_writable(r, deadline);
        if (rc != VF_RING_OK)
            return rc;
    }
}

int vf_ring_get(vf_ring_header *r, void *out, uint32_t cap, uint32_t *length, double timeout)
{
    int64_t deadline = vf_ring_deadline(timeout);
    for (;;) {
        int rc = vf_ring_try_get(r, out, cap, length);
        if (rc != VF_RING_TIMEOUT)
            return rc;
        rc = vf_ring_wait_readable(r, deadline);
        if (rc != VF_RING_OK)
            return rc;
    }
}

uint32_t vf_ring_count(const vf_ring_header *r)
{
    uint64_t head = __atomic_load_n(&r->head, __ATOMIC_SEQ_CST);
    uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST);
    if (tail <= head)
        return 0;
    uint64_t n = tail - head;
    return n > r->capacity ? r->capacity : (uint32_t)n;
}

/* -- doorbell ------------------------------------------------------------------------------ */

void vf_bell_ring(vf_bell *b)
{
    wake(&b->count, &b->waiters);
}

uint32_t vf_bell_value(const vf_bell *b)
{
    return __atomic_load_n(&b->count, __ATOMIC_SEQ_CST);
}

int vf_bell_wait(vf_bell *b, uint32_t seen, int64_t deadline)
{
    if (vf_bell_value(b) != seen)
        return VF_RING_OK;
    int64_t left = deadline - now_ns();
    if (deadline == 0 || left <= 0)
        return VF_RING_TIMEOUT;
    __atomic_add_fetch(&b->waiters, 1u, __ATOMIC_SEQ_CST);
    int rc = 0;
    if (__atomic_load_n(&b->count, __ATOMIC_SEQ_CST) == seen) {
        struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
        rc = (int)syscall(SYS_futex, &b->count, FUTEX_WAIT, seen, &ts, NULL, 0);
    }
    int err = rc == -1 ? errno : 0;
    __atomic_sub_fetch(&b->waiters, 1u, __ATOMIC_SEQ_CST);
    if (err == EINTR)
        return VF_RING_EINTR;
    if (err == ETIMEDOUT)
        return VF_RING_TIMEOUT;
    return VF_RING_OK; /* woken, or the counter had moved (EAGAIN) */
}
