/* videoflow._native: the transport's hot path in C.
 *
 * Ring      a bounded MPMC ring of fixed-size records over a shared-memory mapping (ring.c),
 *           the native control queue: no system call when there is room or data.
 * Doorbell  a counter word several rings' senders bump after each put (Ring.set_doorbell),
 *           so that one receiver (a JOIN) sleeps on all its rings at once (ring.h, vf_bell).
 * dumps     control message -> bytes: a compact tagged encoding of the few types a control
 *           message holds (None, bool, int64, float, str, bytes, tuple, list, dict, SlotRef),
 *           falling back to pickle protocol 5 for anything else.
 * loads     the inverse; pickle data (first byte 0x80) is handed to pickle.loads.
 *
 * videoflow/transport/ is the reference: its pure-Python path has the same interface.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "ring.h"

static PyObject *pickle_dumps; /* pickle.dumps */
static PyObject *pickle_loads; /* pickle.loads */
static PyTypeObject *slotref_type; /* videoflow.transport.shm.SlotRef, once registered */

/* ======================================================================================== */
/* Ring                                                                                     */
/* ======================================================================================== */

typedef struct {
    PyObject_HEAD
    Py_buffer view; /* keeps the mapping alive while the ring is open */
    vf_ring_header *ring;
    int busy; /* calls in progress with the GIL released: close() must wait for them */
    PyObject *bell_obj; /* the Doorbell rung after each put (NULL: none); keeps it alive */
    vf_bell *bell;
} RingObject;

/* ======================================================================================== */
/* Doorbell                                                                                 */
/* ======================================================================================== */

typedef struct {
    PyObject_HEAD
    Py_buffer view; /* the shared memory that holds the bell (a flow's control block) */
    vf_bell *bell;
} DoorbellObject;

static PyTypeObject DoorbellType;

static int Doorbell_init(DoorbellObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "offset", NULL};
    PyObject *buffer;
    Py_ssize_t offset = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n", kwlist, &buffer, &offset))
        return -1;
    if (self->bell != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Doorbell already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    if (offset < 0 || offset % 8 != 0 || offset + (Py_ssize_t)sizeof(vf_bell) > self->view.len
        || (((uintptr_t)self->view.buf + (uintptr_t)offset) & 7u) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "a doorbell needs 8 aligned bytes at offset %zd of a %zd-byte buffer",
                     offset, self->view.len);
        PyBuffer_Release(&self->view);
        return -1;
    }
    self->bell = (vf_bell *)((char *)self->view.buf + offset);
    return 0;
}

static void Doorbell_dealloc(DoorbellObject *self)
{
    if (self->bell != NULL) {
        self->bell = NULL;
        PyBuffer_Release(&self->view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int bell_ready(DoorbellObject *self)
{
    if (self->bell == NULL) {
        PyErr_SetString(PyExc_ValueError, "Doorbell not initialised");
        return -1;
    }
    return 0;
}

static PyObject *Doorbell_ring(DoorbellObject *self, PyObject *Py_UNUSED(ignored))
{
    if (bell_ready(self) < 0)
        return NULL;
    vf_bell_ring(self->bell);
    Py_RETURN_NONE;
}

static PyObject *Doorbell_value(DoorbellObject *self, PyObject *Py_UNUSED(ignored))
{
    if (bell_ready(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(vf_bell_value(self->bell));
}

static PyObject *Doorbell_wait(DoorbellObject *self, PyObject *args)
{
    unsigned long seen;
    double timeout = 0.0;
    if (!PyArg_ParseTuple(args, "k|d:wait", &seen, &timeout))
        return NULL;
    if (bell_ready(self) < 0)
        return NULL;
    int64_t deadline = vf_ring_deadline(timeout);
    for (;;) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = vf_bell_wait(self->bell, (uint32_t)seen, deadline);
        Py_END_ALLOW_THREADS
        if (rc == VF_RING_OK)
            Py_RETURN_TRUE;
        if (rc == VF_RING_TIMEOUT)
            Py_RETURN_FALSE;
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}

static PyMethodDef Doorbell_methods[] = {
    {"ring", (PyCFunction)Doorbell_ring, METH_NOARGS,
     "ring(): bump the counter, wake the receiver if it sleeps."},
    {"value", (PyCFunction)Doorbell_value, METH_NOARGS,
     "value() -> int: the counter now; read it before trying the rings."},
    {"wait", (PyCFunction)Doorbell_wait, METH_VARARGS,
     "wait(seen, timeout=0.0) -> bool: sleep until the counter differs from seen (True, or "
     "a spurious wake-up) or timeout seconds passed (False)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DoorbellType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "videoflow._native.Doorbell",
    .tp_basicsize = sizeof(DoorbellObject),
    .tp_dealloc = (destructor)Doorbell_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Doorbell(buffer, offset=0): a wake-up counter in 8 bytes of shared memory.",
    .tp_methods = Doorbell_methods,
    .tp_init = (initproc)Doorbell_init,
    .tp_new = PyType_GenericNew,
};

static int ring_ready(RingObject *self)
{
    if (self->ring == NULL) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed ring");
        return -1;
    }
    return 0;
}

static int Ring_init(RingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "capacity", "record_size", "create", NULL};
    PyObject *buffer;
    unsigned int capacity = 0, record_size = 0;
    int create = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|IIp", kwlist, &buffer, &capacity,
                                     &record_size, &create))
        return -1;
    if (self->ring != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Ring already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    void *mem = self->view.buf;
    size_t size = (size_t)self->view.len;
    if (((uintptr_t)mem & 63u) != 0) {
        PyErr_SetString(PyExc_ValueError, "ring memory must be 64-byte aligned");
        goto fail;
    }
    if (create) {
        if (capacity == 0 || record_size == 0 || record_size > (1u << 24)) {
            PyErr_SetString(PyExc_ValueError, "capacity and record_size must be positive");
            goto fail;
        }
        size_t need = vf_ring_size(capacity, record_size);
        if (need > size) {
            PyErr_Format(PyExc_ValueError, "ring needs %zu bytes, buffer has %zu", need, size);
            goto fail;
        }
        memset(mem, 0, need);
        vf_ring_init(mem, capacity, record_size);
    }
    if (vf_ring_check(mem, size) != 0) {
        PyErr_SetString(PyExc_ValueError, "memory does not hold a videoflow ring");
        goto fail;
    }
    self->ring = mem;
    return 0;
fail:
    PyBuffer_Release(&self->view);
    return -1;
}

static void Ring_dealloc(RingObject *self)
{
    Py_CLEAR(self->bell_obj);
    self->bell = NULL;
    if (self->ring != NULL) {
        self->ring = NULL;
        PyBuffer_Release(&self->view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Wait with the GIL released; turns EINTR into a signal check. 1: go on, 0: timed out, -1: error */
static int ring_wait(RingObject *self, int writable, int64_t deadline)
{
    for (;;) {
        int rc;
        self->busy++;
        Py_BEGIN_ALLOW_THREADS
        rc = writable ? vf_ring_wait_writable(self->ring, deadline)
                      : vf_ring_wait_readable(self->ring, deadline);
        Py_END_ALLOW_THREADS
        self->busy--;
        if (rc == VF_RING_OK)
            return 1;
        if (rc == VF_RING_TIMEOUT)
            return 0;
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

static PyObject *Ring_put(RingObject *self, PyObject *args)
{
    Py_buffer data;
    double timeout = 0.0;
    if (!PyArg_ParseTuple(args, "y*|d:put", &data, &timeout))
        return NULL;
    PyObject *result = NULL;
    if (ring_ready(self) < 0)
        goto done;
    if ((size_t)data.len > self->ring->record_size) {
        PyErr_Format(PyExc_ValueError, "record of %zd bytes exceeds the ring's %u", data.len,
                     self->ring->record_size);
        goto done;
    }
    int64_t deadline = -1;
    for (;;) {
        int rc = vf_ring_try_put(self->ring, data.buf, (uint32_t)data.len);
        if (rc == VF_RING_OK) {
            if (self->bell != NULL)
                vf_bell_ring(self->bell);
            result = Py_True;
            break;
        }
        if (deadline < 0)
            deadline = vf_ring_deadline(timeout);
        int w = ring_wait(self, 1, deadline);
        if (w < 0)
            goto done;
        if (w == 0) {
            result = Py_False;
            break;
        }
        if (ring_ready(self) < 0)
            goto done;
    }
    Py_INCREF(result);
done:
    PyBuffer_Release(&data);
    return result;
}

static PyObject *take_record(RingObject *self)
{
    uint64_t pos;
    vf_ring_cell *c = vf_ring_claim_get(self->ring, &pos);
    if (c == NULL)
        return NULL;
    uint32_t length;
    const void *src = vf_ring_cell_data(c, &length);
    if (length > self->ring->record_size)
        length = self->ring->record_size;
    PyObject *out = PyBytes_FromStringAndSize(src, (Py_ssize_t)length);
    vf_ring_commit_get(self->ring, c, pos); /* handed back even if the copy failed */
    if (out == NULL)
        return NULL;
    return out;
}

static PyObject *Ring_get(RingObject *self, PyObject *args)
{
    double timeout = 0.0;
    if (!PyArg_ParseTuple(args, "|d:get", &timeout))
        return NULL;
    if (ring_ready(self) < 0)
        return NULL;
    int64_t deadline = -1;
    for (;;) {
        PyObject *out = take_record(self);
        if (out != NULL || PyErr_Occurred())
            return out;
        if (deadline < 0)
            deadline = vf_ring_deadline(timeout);
        int w = ring_wait(self, 0, deadline);
        if (w < 0)
            return NULL;
        if (w == 0)
            Py_RETURN_NONE;
        if (ring_ready(self) < 0)
            return NULL;
    }
}

static PyObject *Ring_close(RingObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "ring closed while another thread waits on it");
        return NULL;
    }
    if (self->ring != NULL) {
        self->ring = NULL;
        PyBuffer_Release(&self->view);
    }
    Py_RETURN_NONE;
}

static PyObject *Ring_set_doorbell(RingObject *self, PyObject *bell)
{
    if (bell == Py_None) {
        Py_CLEAR(self->bell_obj);
        self->bell = NULL;
        Py_RETURN_NONE;
    }
    if (!PyObject_TypeCheck(bell, &DoorbellType)) {
        PyErr_SetString(PyExc_TypeError, "set_doorbell takes a Doorbell or None");
        return NULL;
    }
    DoorbellObject *d = (DoorbellObject *)bell;
    if (bell_ready(d) < 0)
        return NULL;
    Py_INCREF(bell);
    Py_XSETREF(self->bell_obj, bell);
    self->bell = d->bell;
    Py_RETURN_NONE;
}

static Py_ssize_t Ring_len(RingObject *self)
{
    if (ring_ready(self) < 0)
        return -1;
    return (Py_ssize_t)vf_ring_count(self->ring);
}

static PyObject *Ring_get_capacity(RingObject *self, void *Py_UNUSED(closure))
{
    if (ring_ready(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(self->ring->capacity);
}

static PyObject *Ring_get_record_size(RingObject *self, void *Py_UNUSED(closure))
{
    if (ring_ready(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(self->ring->record_size);
}

static PyMethodDef Ring_methods[] = {
    {"put", (PyCFunction)Ring_put, METH_VARARGS,
     "put(data, timeout=0.0) -> bool: append a record; False if the ring stayed full."},
    {"get", (PyCFunction)Ring_get, METH_VARARGS,
     "get(timeout=0.0) -> bytes | None: take the oldest record; None if none came."},
    {"close", (PyCFunction)Ring_close, METH_NOARGS, "Release the mapping (idempotent)."},
    {"set_doorbell", (PyCFunction)Ring_set_doorbell, METH_O,
     "set_doorbell(bell): ring this Doorbell after every put from here on (None: stop)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Ring_getset[] = {
    {"capacity", (getter)Ring_get_capacity, NULL, "records the ring holds", NULL},
    {"record_size", (getter)Ring_get_record_size, NULL, "largest record in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Ring_as_sequence = {
    .sq_length = (lenfunc)Ring_len,
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "videoflow._native.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_as_sequence = &Ring_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Ring(buffer, capacity=0, record_size=0, create=False): an MPMC ring in buffer.",
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
    .tp_init = (initproc)Ring_init,
    .tp_new = PyType_GenericNew,
};

static PyObject *ring_size(PyObject *Py_UNUSED(module), PyObject *args)
{
    unsigned int capacity, record_size;
    if (!PyArg_ParseTuple(args, "II:ring_size", &capacity, &record_size))
        return NULL;
    return PyLong_FromSize_t(vf_ring_size(capacity, record_size));
}

/* ======================================================================================== */
/* Message encoding                                                                         */
/* ======================================================================================== */

#define MSG_MAGIC 0xF6u
#define MSG_VERSION 1u
#define MAX_DEPTH 32
#define UNSUPPORTED 1 /* a value the compact form does not cover: use pickle */

enum {
    T_NONE = 'N', T_TRUE = 'T', T_FALSE = 'F', T_INT = 'i', T_FLOAT = 'd', T_STR = 's',
    T_BYTES = 'b', T_TUPLE = 't', T_LIST = 'l', T_DICT = 'D', T_REF = 'R',
};

typedef struct {
    char *buf;
    size_t len, cap;
    char local[512];
} Writer;

static int w_reserve(Writer *w, size_t n)
{
    if (w->len + n <= w->cap)
        return 0;
    size_t cap = w->cap * 2;
    while (cap < w->len + n)
        cap *= 2;
    char *nb;
    if (w->buf == w->local) {
        nb = PyMem_Malloc(cap);
        if (nb != NULL)
            memcpy(nb, w->local, w->len);
    } else {
        nb = PyMem_Realloc(w->buf, cap);
    }
    if (nb == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->buf = nb;
    w->cap = cap;
    return 0;
}

static int w_put(Writer *w, const void *p, size_t n)
{
    if (w_reserve(w, n) < 0)
        return -1;
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return 0;
}

static int w_byte(Writer *w, unsigned char b)
{
    return w_put(w, &b, 1);
}

static int w_u32(Writer *w, size_t n)
{
    if (n > UINT32_MAX)
        return UNSUPPORTED;
    uint32_t v = (uint32_t)n;
    return w_put(w, &v, 4); /* host order: both ends are on this machine */
}

static int w_sized(Writer *w, unsigned char tag, const char *p, Py_ssize_t n)
{
    int rc;
    if ((rc = w_byte(w, tag)) != 0 || (rc = w_u32(w, (size_t)n)) != 0)
        return rc;
    return w_put(w, p, (size_t)n);
}

/* 0: written; UNSUPPORTED: not covered (no exception set); -1: error (exception set). */
static int encode(Writer *w, PyObject *o, int depth)
{
    int rc;
    if (depth > MAX_DEPTH)
        return UNSUPPORTED;
    if (o == Py_None)
        return w_byte(w, T_NONE);
    if (o == Py_True)
        return w_byte(w, T_TRUE);
    if (o == Py_False)
        return w_byte(w, T_FALSE);
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow)
            return UNSUPPORTED;
        if (v == -1 && PyErr_Occurred())
            return -1;
        int64_t x = v;
        if ((rc = w_byte(w, T_INT)) != 0)
            return rc;
        return w_put(w, &x, 8);
    }
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(o);
        if ((rc = w_byte(w, T_FLOAT)) != 0)
            return rc;
        return w_put(w, &d, 8);
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (s == NULL) {
            PyErr_Clear(); /* lone surrogates: pickle copes */
            return UNSUPPORTED;
        }
        return w_sized(w, T_STR, s, n);
    }
    if (t == &PyBytes_Type)
        return w_sized(w, T_BYTES, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o));
    if (t == &PyTuple_Type || t == &PyList_Type || (slotref_type && t == slotref_type)) {
        int is_ref = t == slotref_type;
        Py_ssize_t n = is_ref ? PyTuple_GET_SIZE(o) : Py_SIZE(o);
        if (is_ref && n != 3)
            return UNSUPPORTED;
        if ((rc = w_byte(w, is_ref ? T_REF : t == &PyList_Type ? T_LIST : T_TUPLE)) != 0)
            return rc;
        if (!is_ref && (rc = w_u32(w, (size_t)n)) != 0)
            return rc;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = t == &PyList_Type ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
            if ((rc = encode(w, item, depth + 1)) != 0)
                return rc;
        }
        return 0;
    }
    if (t == &PyDict_Type) {
        if ((rc = w_byte(w, T_DICT)) != 0 || (rc = w_u32(w, (size_t)PyDict_GET_SIZE(o))) != 0)
            return rc;
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &pos, &k, &v)) {
            if ((rc = encode(w, k, depth + 1)) != 0 || (rc = encode(w, v, depth + 1)) != 0)
                return rc;
        }
        return 0;
    }
    return UNSUPPORTED;
}

static PyObject *dumps(PyObject *Py_UNUSED(module), PyObject *obj)
{
    Writer w;
    w.buf = w.local;
    w.len = 0;
    w.cap = sizeof(w.local);
    PyObject *out = NULL;
    int rc = w_byte(&w, MSG_MAGIC);
    if (rc == 0)
        rc = w_byte(&w, MSG_VERSION);
    if (rc == 0)
        rc = encode(&w, obj, 0);
    if (rc == 0)
        out = PyBytes_FromStringAndSize(w.buf, (Py_ssize_t)w.len);
    else if (rc == UNSUPPORTED)
        out = PyObject_CallFunction(pickle_dumps, "Oi", obj, 5);
    if (w.buf != w.local)
        PyMem_Free(w.buf);
    return out;
}

typedef struct {
    const unsigned char *p, *end;
} Reader;

static int r_take(Reader *r, void *out, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        PyErr_SetString(PyExc_ValueError, "truncated videoflow message");
        return -1;
    }
    memcpy(out, r->p, n);
    r->p += n;
    return 0;
}

static PyObject *decode(Reader *r, int depth)
{
    unsigned char tag;
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "videoflow message nested too deeply");
        return NULL;
    }
    if (r_take(r, &tag, 1) < 0)
        return NULL;
    switch (tag) {
    case T_NONE:
        Py_RETURN_NONE;
    case T_TRUE:
        Py_RETURN_TRUE;
    case T_FALSE:
        Py_RETURN_FALSE;
    case T_INT: {
        int64_t v;
        if (r_take(r, &v, 8) < 0)
            return NULL;
        return PyLong_FromLongLong(v);
    }
    case T_FLOAT: {
        double d;
        if (r_take(r, &d, 8) < 0)
            return NULL;
        return PyFloat_FromDouble(d);
    }
    case T_STR:
    case T_BYTES: {
        uint32_t n;
        if (r_take(r, &n, 4) < 0)
            return NULL;
        if ((size_t)(r->end - r->p) < n) {
            PyErr_SetString(PyExc_ValueError, "truncated videoflow message");
            return NULL;
        }
        const char *s = (const char *)r->p;
        r->p += n;
        return tag == T_STR ? PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, NULL)
                            : PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
    }
    case T_TUPLE:
    case T_LIST:
    case T_REF: {
        uint32_t n = 3;
        if (tag != T_REF && r_take(r, &n, 4) < 0)
            return NULL;
        if ((size_t)(r->end - r->p) < n) { /* every item takes at least one byte */
            PyErr_SetString(PyExc_ValueError, "truncated videoflow message");
            return NULL;
        }
        PyObject *seq;
        if (tag == T_LIST) {
            seq = PyList_New((Py_ssize_t)n);
        } else if (tag == T_REF) {
            if (slotref_type == NULL) {
                PyErr_SetString(PyExc_RuntimeError, "SlotRef type not registered");
                return NULL;
            }
            seq = slotref_type->tp_alloc(slotref_type, 3);
        } else {
            seq = PyTuple_New((Py_ssize_t)n);
        }
        if (seq == NULL)
            return NULL;
        for (uint32_t i = 0; i < n; i++) {
            PyObject *item = decode(r, depth + 1);
            if (item == NULL) {
                Py_DECREF(seq);
                return NULL;
            }
            if (tag == T_LIST)
                PyList_SET_ITEM(seq, i, item);
            else
                PyTuple_SET_ITEM(seq, i, item);
        }
        return seq;
    }
    case T_DICT: {
        uint32_t n;
        if (r_take(r, &n, 4) < 0)
            return NULL;
        PyObject *d = PyDict_New();
        if (d == NULL)
            return NULL;
        for (uint32_t i = 0; i < n; i++) {
            PyObject *k = decode(r, depth + 1);
            if (k == NULL) {
                Py_DECREF(d);
                return NULL;
            }
            PyObject *v = decode(r, depth + 1);
            if (v == NULL || PyDict_SetItem(d, k, v) < 0) {
                Py_DECREF(k);
                Py_XDECREF(v);
                Py_DECREF(d);
                return NULL;
            }
            Py_DECREF(k);
            Py_DECREF(v);
        }
        return d;
    }
    default:
        PyErr_Format(PyExc_ValueError, "bad tag 0x%02x in videoflow message", tag);
        return NULL;
    }
}

static PyObject *loads(PyObject *Py_UNUSED(module), PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = view.buf;
    PyObject *out = NULL;
    if (view.len < 2 || p[0] != MSG_MAGIC) {
        out = PyObject_CallOneArg(pickle_loads, data);
    } else if (p[1] != MSG_VERSION) {
        PyErr_Format(PyExc_ValueError, "videoflow message version %d, expected %d", p[1],
                     MSG_VERSION);
    } else {
        Reader r = {p + 2, p + view.len};
        out = decode(&r, 0);
        if (out != NULL && r.p != r.end) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_ValueError, "trailing bytes after videoflow message");
        }
    }
    PyBuffer_Release(&view);
    return out;
}

static PyObject *set_slotref(PyObject *Py_UNUSED(module), PyObject *cls)
{
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "SlotRef must be a tuple subclass");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(slotref_type, (PyTypeObject *)cls);
    Py_RETURN_NONE;
}

/* ======================================================================================== */

static PyMethodDef module_methods[] = {
    {"ring_size", ring_size, METH_VARARGS,
     "ring_size(capacity, record_size) -> bytes a Ring of that shape needs."},
    {"dumps", dumps, METH_O, "dumps(msg) -> bytes: compact encoding, pickle for the rest."},
    {"loads", loads, METH_O, "loads(data) -> msg: inverse of dumps (also reads pickle)."},
    {"set_slotref", set_slotref, METH_O, "Register the SlotRef named tuple class."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "videoflow._native",
    "The transport's hot path in C (see native/ in the source tree).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    if (PyType_Ready(&RingType) < 0 || PyType_Ready(&DoorbellType) < 0)
        return NULL;
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL)
        return NULL;
    pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
    pickle_loads = PyObject_GetAttrString(pickle, "loads");
    Py_DECREF(pickle);
    if (pickle_dumps == NULL || pickle_loads == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0) {
        Py_DECREF(&RingType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&DoorbellType);
    if (PyModule_AddObject(m, "Doorbell", (PyObject *)&DoorbellType) < 0) {
        Py_DECREF(&DoorbellType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
