/* A bounded multi-producer multi-consumer ring of fixed-size records in shared memory.
 *
 * The algorithm is Dmitry Vyukov's bounded MPMC queue: every cell carries a sequence number
 * that says whether it is ready to be written (seq == 2 * pos) or read (seq == 2 * pos + 1) by
 * the holder of position pos (steps of two, so that a ring of capacity 1 works); producers and consumers claim positions with one compare-and-swap on
 * tail or head. No lock is held across a copy, so a process killed mid-operation never leaves a
 * lock behind: at worst the cell it had claimed stays unpublished, which stalls that one position
 * (waiters still time out and check the flow's abort flag; the engine aborts the flow when a
 * task dies, so the ring is not used again).
 *
 * Waiting uses futexes on two 32-bit counters in the header (one bumped after every publish,
 * one after every consume) with waiter counts, so that an operation that finds room or data
 * costs no system call at all, and a wake is issued only when someone sleeps.
 *
 * Pure C, no Python (tests/test_native.py drives it from several processes).
 */
#ifndef VIDEOFLOW_RING_H
#define VIDEOFLOW_RING_H

#include <stddef.h>
#include <stdint.h>

#define VF_RING_MAGIC 0x31474e4952465655ULL /* "UVFRING1" little endian */
#define VF_RING_VERSION 2u

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t capacity;
    uint32_t record_size; /* payload bytes a record can hold */
    uint32_t cell_stride; /* bytes from one cell to the next, a multiple of 64 */
    uint64_t total_size;  /* bytes of header plus cells */
    char pad0[64 - 32];
    uint64_t tail; /* next position to write: producers CAS it */
    char pad1[56];
    uint64_t head; /* next position to read: consumers CAS it */
    char pad2[56];
    uint32_t published; /* bumped after each publish: consumers sleep on it */
    uint32_t empty_waiters;
    char pad3[56];
    uint32_t consumed; /* bumped after each consume: producers sleep on it */
    uint32_t full_waiters;
    char pad4[56];
} vf_ring_header;

typedef struct {
    uint64_t seq;
    uint32_t length;
    uint32_t pad;
    /* record_size bytes follow */
} vf_ring_cell;

/* Result codes. */
#define VF_RING_OK 0
#define VF_RING_TIMEOUT 1 /* full (put) or empty (get) for the whole timeout */
#define VF_RING_TOOBIG 2  /* put: the record does not fit */
#define VF_RING_EINTR 3   /* a signal arrived; the caller decides whether to go on */

size_t vf_ring_size(uint32_t capacity, uint32_t record_size);
/* Initialise a zeroed region of vf_ring_size() bytes. */
void vf_ring_init(void *mem, uint32_t capacity, uint32_t record_size);
/* 0 when mem (of size bytes) holds a ring this code understands. */
int vf_ring_check(const void *mem, size_t size);

/* Without blocking: VF_RING_OK, VF_RING_TIMEOUT (no room / nothing), VF_RING_TOOBIG. */
int vf_ring_try_put(vf_ring_header *r, const void *data, uint32_t length);
/* Copies at most cap bytes into out; *length gets the record's length. */
int vf_ring_try_get(vf_ring_header *r, void *out, uint32_t cap, uint32_t *length);

/* Two-step get, for callers that copy the record out themselves: claim (NULL when empty),
 * read the data, then commit to hand the cell back to producers. */
vf_ring_cell *vf_ring_claim_get(vf_ring_header *r, uint64_t *claimed);
const void *vf_ring_cell_data(vf_ring_cell *c, uint32_t *length);
void vf_ring_commit_get(vf_ring_header *r, vf_ring_cell *c, uint64_t claimed);

/* Monotonic deadline in ns for a timeout in seconds (0 for timeout <= 0: do not wait). */
int64_t vf_ring_deadline(double timeout);
/* Sleep until the ring probably has room / a record, or the deadline passes: VF_RING_OK,
 * VF_RING_TIMEOUT or VF_RING_EINTR. Another process may still win the race: try again. */
int vf_ring_wait_writable(vf_ring_header *r, int64_t deadline);
int vf_ring_wait_readable(vf_ring_header *r, int64_t deadline);

/* Blocking with a timeout in seconds (<= 0: do not wait). These may sleep: call them without
 * any lock a waker might need (from Python: with the GIL released). */
int vf_ring_put(vf_ring_header *r, const void *data, uint32_t length, double timeout);
int vf_ring_get(vf_ring_header *r, void *out, uint32_t cap, uint32_t *length, double timeout);

/* Records in the ring now (a snapshot). */
uint32_t vf_ring_count(const vf_ring_header *r);

/* A doorbell: one receiver watching several rings (a JOIN stage and its inboxes). A 32-bit
 * counter and a waiter count side by side in shared memory; every sender rings it after each
 * put (one atomic add, and a FUTEX_WAKE only while someone sleeps, as for the ring's own
 * words). The receiver reads the counter, tries its rings, and if they had nothing sleeps
 * until the counter moves from the value it read: a put after the read ends the wait at once,
 * so no wake-up is lost, and a receiver that finds data makes no system call. */
typedef struct {
    uint32_t count;
    uint32_t waiters;
} vf_bell;

void vf_bell_ring(vf_bell *b);
uint32_t vf_bell_value(const vf_bell *b);
/* VF_RING_OK once the counter differs from seen (or on a spurious wake-up), VF_RING_TIMEOUT
 * at the deadline (monotonic ns, see vf_ring_deadline; 0: do not wait), VF_RING_EINTR. */
int vf_bell_wait(vf_bell *b, uint32_t seen, int64_t deadline);

#endif
