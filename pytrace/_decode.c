/* pytrace._core's decoder: the reader's hot loops (pytrace/decoder_c.py
 * drives them).
 *
 * - Run: one thread's decoded, not yet resolved events.
 * - resolve_events: every thread's events resolved into ``Event``s and
 *   merged in time order.
 *
 * Compiled into the same module as _core.c but kept apart from it, as Go
 * keeps its trace writer (runtime/trace) apart from its reader
 * (internal/trace): the two share no state, and their rules differ.  The
 * writer's are about re-entry (see _core.c); the reader's are about
 * untrusted bytes: every position is checked against the end of the data,
 * and whatever this code cannot decode or resolve exactly as the Python
 * decoder would (a record of another shape, an undefined id, a thread's
 * clock going backwards, a time beyond 64 bits) goes back to the Python
 * decoder, whose checks and messages are the reference.  _core.c's
 * PyInit__core calls decode_add_to_module, the one name this file exports.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

int decode_add_to_module(PyObject *module);

/* ------------------------------------------------------------------------ */
/* Run                                                                      */
/* ------------------------------------------------------------------------ */

/* One thread's events in file order, kept as the stretches of the trace's
 * bytes that hold them: decode checks a stretch of inline records once and
 * resolve_events reads it again from the bytes, so an event takes no
 * memory of its own until it is an Event.  An event the Python decoder
 * read is a stretch of its own, its whole (ticks, tid, kind, raw_args)
 * item kept in `slow`. */
typedef struct {
    uint64_t ticks;    /* inline: the time the first record's delta adds to; slow: the event's */
    Py_ssize_t start;  /* inline: offset of the first record in data; slow: -1 */
    Py_ssize_t end;    /* inline: offset past the last record; slow: index in `slow` */
    int kind_id;       /* slow: the event's kind */
} Stretch;

typedef struct {
    PyObject_HEAD
    PyObject *tid;
    PyObject *kinds;   /* tuple: kind id -> EventKind (or None) */
    PyObject *slow;    /* list of (ticks, tid, kind, raw_args) */
    PyObject *data;    /* the bytes (immutable) the inline stretches are in */
    Stretch *stretches;
    Py_ssize_t nstretches, cap;
    Py_ssize_t len;    /* events */
    uint64_t last;     /* the time of the last event */
    /* Set when resolve_events cannot merge this run exactly as the Python
     * decoder's stable sort would: an event earlier than the one before it,
     * or a time that does not fit 64 bits. */
    int python_merges;
} Run;

static PyTypeObject RunType;

/* One event, as a walk over a run reads it. */
#define SLOW_EVENT 0xFF

typedef struct {
    uint64_t ticks;
    uint64_t a[2];
    uint8_t kind_id;
    uint8_t n;         /* argument count, or SLOW_EVENT (a[0]: index in `slow`) */
} RawEvent;

static inline int
read_uvarint(const unsigned char *data, Py_ssize_t *pos, Py_ssize_t end, uint64_t *out)
{
    Py_ssize_t p = *pos;
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (p >= end) {
            return -1;
        }
        unsigned char byte = data[p++];
        value |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            if (shift == 63 && byte > 1) {
                return -1;  /* wider than 64 bits: the Python path judges it */
            }
            *pos = p;
            *out = value;
            return 0;
        }
    }
    return -1;
}

/* The inline record at *pos (before `end`) into *ev, its delta added to
 * *ticks; moves *pos past it.  -1 (nothing moved) if it cannot be read so:
 * the Python decoder judges it. */
static inline int
read_record(const unsigned char *data, Py_ssize_t *pos, Py_ssize_t end, uint64_t *ticks,
            RawEvent *ev)
{
    Py_ssize_t p = *pos;
    unsigned char head = data[p++];
    int count = (head >> 6) + 1;
    uint64_t values[3] = {0, 0, 0};
    for (int i = 0; i < count; i++) {
        if (read_uvarint(data, &p, end, &values[i]) < 0) {
            return -1;
        }
    }
    if (*ticks + values[0] < *ticks) {
        return -1;  /* past 64 bits: only Python's ints hold it */
    }
    *ticks += values[0];
    *pos = p;
    ev->ticks = *ticks;
    ev->kind_id = head & 0x3F;
    ev->n = (uint8_t)(count - 1);
    ev->a[0] = values[1];
    ev->a[1] = values[2];
    return 0;
}

/* A walk over a run's events in file order. */
typedef struct {
    Run *run;
    Py_ssize_t next;   /* the stretch after the one being read */
    Py_ssize_t pos;    /* the next inline record's offset */
    Py_ssize_t end;    /* the end of the inline stretch being read (pos == end: none) */
    uint64_t ticks;    /* the time of the last inline record read */
} Walk;

static void
walk_start(Walk *w, Run *run)
{
    w->run = run;
    w->next = w->pos = w->end = 0;
    w->ticks = 0;
}

/* The next event into *ev: 1, or 0 at the end, or -1 with an error. */
static inline int
walk_next(Walk *w, RawEvent *ev)
{
    Run *run = w->run;
    if (w->pos == w->end) {
        if (w->next == run->nstretches) {
            return 0;
        }
        Stretch *s = &run->stretches[w->next++];
        if (s->start < 0) {
            ev->ticks = s->ticks;
            ev->kind_id = (uint8_t)s->kind_id;
            ev->n = SLOW_EVENT;
            ev->a[0] = (uint64_t)s->end;
            ev->a[1] = 0;
            return 1;
        }
        w->pos = s->start;
        w->end = s->end;
        w->ticks = s->ticks;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(run->data);
    if (read_record(data, &w->pos, w->end, &w->ticks, ev) < 0) {
        PyErr_SetString(PyExc_SystemError, "a run's bytes no longer decode as they did");
        return -1;
    }
    return 1;
}

static int
run_add_stretch(Run *r, uint64_t ticks, Py_ssize_t start, Py_ssize_t end, int kind_id)
{
    if (r->nstretches == r->cap) {
        Py_ssize_t cap = r->cap ? 2 * r->cap : 16;
        Stretch *stretches = PyMem_Realloc(r->stretches, sizeof(Stretch) * (size_t)cap);
        if (stretches == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        r->stretches = stretches;
        r->cap = cap;
    }
    r->stretches[r->nstretches++] = (Stretch){ticks, start, end, kind_id};
    return 0;
}

/* The run's next event is at time `first`: is the run still in time order? */
static inline void
run_check_order(Run *r, uint64_t first)
{
    if (r->len > 0 && first < r->last) {
        r->python_merges = 1;
    }
}

/* A Python int that must fit 64 bits (a time or an argument the Python
 * decoder read): 1 if it does, 0 if not (no error set), -1 on error. */
static int
fits_u64(PyObject *obj, uint64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "expected an int, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

/* decode(data, pos, end, ticks, fast) -> (found, ticks, pos, done)
 *
 * `data`: the trace's bytes, the same object at every call.  `fast` is 256
 * bytes: for each type byte, 1 if it is a timed event written inline with
 * the varint count its row gives it, else 0.  Decodes such records from
 * `pos` on; stops at `end` (done) or before any other record, or one it
 * cannot decode (not done): the Python decoder takes that record and calls
 * again after it. */
static PyObject *
Run_decode(Run *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[4])
        || PyBytes_GET_SIZE(args[4]) != 256) {
        PyErr_SetString(PyExc_TypeError, "decode(data: bytes, pos, end, ticks, fast[256])");
        return NULL;
    }
    if (self->data != NULL && self->data != args[0]) {
        PyErr_SetString(PyExc_ValueError, "decode: a run reads one trace's bytes");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    uint64_t ticks;
    if ((pos == -1 || end == -1) && PyErr_Occurred()) {
        return NULL;
    }
    int fits = fits_u64(args[3], &ticks);
    if (fits < 0) {
        return NULL;
    }
    if (pos < 0 || end > PyBytes_GET_SIZE(args[0]) || pos > end) {
        PyErr_SetString(PyExc_ValueError, "decode: bounds outside the data");
        return NULL;
    }
    if (!fits) {
        /* Past 64 bits already (see Run_append): Python decodes the rest. */
        return Py_BuildValue("nOnO", (Py_ssize_t)0, args[3], pos,
                             pos == end ? Py_True : Py_False);
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *fast = (const unsigned char *)PyBytes_AS_STRING(args[4]);
    Py_ssize_t start = pos, found = 0;
    uint64_t start_ticks = ticks;
    RawEvent ev;
    while (pos < end && fast[data[pos]] && read_record(data, &pos, end, &ticks, &ev) == 0) {
        if (found++ == 0) {
            run_check_order(self, ticks);
        }
    }
    if (found) {
        if (run_add_stretch(self, start_ticks, start, pos, -1) < 0) {
            return NULL;
        }
        if (self->data == NULL) {
            self->data = Py_NewRef(args[0]);
        }
        self->len += found;
        self->last = ticks;
    }
    return Py_BuildValue("nKnO", found, (unsigned long long)ticks, pos,
                         pos == end ? Py_True : Py_False);
}

/* append((ticks, tid, kind, raw_args)): an event the Python decoder read. */
static PyObject *
Run_append(Run *self, PyObject *item)
{
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4
        || !PyTuple_Check(PyTuple_GET_ITEM(item, 3))) {
        PyErr_SetString(PyExc_TypeError, "append((ticks, tid, kind, raw_args))");
        return NULL;
    }
    PyObject *raw = PyTuple_GET_ITEM(item, 3);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(raw); i++) {
        uint64_t unused;
        int fits = fits_u64(PyTuple_GET_ITEM(raw, i), &unused);
        if (fits <= 0) {
            if (fits == 0) {
                PyErr_SetString(PyExc_ValueError, "append: an argument wider than 64 bits");
            }
            return NULL;
        }
    }
    uint64_t ticks = UINT64_MAX;
    int fits = fits_u64(PyTuple_GET_ITEM(item, 0), &ticks);
    if (fits < 0) {
        return NULL;
    }
    PyObject *id = PyObject_GetAttrString(PyTuple_GET_ITEM(item, 2), "id");
    long kind_id = id ? PyLong_AsLong(id) : -1;
    Py_XDECREF(id);
    if (kind_id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (kind_id < 0 || kind_id >= PyTuple_GET_SIZE(self->kinds)
        || PyTuple_GET_ITEM(self->kinds, kind_id) != PyTuple_GET_ITEM(item, 2)) {
        PyErr_SetString(PyExc_ValueError, "append: an event kind not in the run's table");
        return NULL;
    }
    Py_ssize_t index = PyList_GET_SIZE(self->slow);
    if (run_add_stretch(self, ticks, -1, index, (int)kind_id) < 0) {
        return NULL;
    }
    if (PyList_Append(self->slow, item) < 0) {
        self->nstretches--;
        return NULL;
    }
    if (!fits) {
        /* A time past 64 bits (a batch base near the top plus a delta):
         * only Python's ints hold it. */
        self->python_merges = 1;
    }
    run_check_order(self, ticks);
    self->len++;
    self->last = ticks;
    Py_RETURN_NONE;
}

static int
Run_init(Run *self, PyObject *args, PyObject *kwds)
{
    PyObject *tid, *kinds;
    if (!PyArg_ParseTuple(args, "OO!:Run", &tid, &PyTuple_Type, &kinds)) {
        return -1;
    }
    if (PyTuple_GET_SIZE(kinds) != 64) {
        PyErr_SetString(PyExc_ValueError, "Run(tid, kinds): kinds holds 64 entries");
        return -1;
    }
    PyObject *slow = PyList_New(0);
    if (slow == NULL) {
        return -1;
    }
    Py_XSETREF(self->tid, Py_NewRef(tid));
    Py_XSETREF(self->kinds, Py_NewRef(kinds));
    Py_XSETREF(self->slow, slow);
    Py_CLEAR(self->data);
    self->nstretches = self->len = 0;
    self->last = 0;
    self->python_merges = 0;
    return 0;
}

static Py_ssize_t
Run_len(Run *self)
{
    return self->len;
}

/* (ticks, tid, kind, raw_args), as the Python decoder's lists hold. */
static PyObject *
run_item(Run *self, RawEvent *ev)
{
    if (ev->n == SLOW_EVENT) {
        return Py_NewRef(PyList_GET_ITEM(self->slow, (Py_ssize_t)ev->a[0]));
    }
    PyObject *raw = PyTuple_New(ev->n);
    for (int j = 0; raw != NULL && j < ev->n; j++) {
        PyObject *v = PyLong_FromUnsignedLongLong(ev->a[j]);
        if (v == NULL) {
            Py_CLEAR(raw);
            break;
        }
        PyTuple_SET_ITEM(raw, j, v);
    }
    if (raw == NULL) {
        return NULL;
    }
    return Py_BuildValue("(KOON)", (unsigned long long)ev->ticks, self->tid,
                         PyTuple_GET_ITEM(self->kinds, ev->kind_id), raw);
}

/* run[i] walks from the start (the reader asks for run[0]; iterate for all). */
static PyObject *
Run_item(Run *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->len) {
        PyErr_SetString(PyExc_IndexError, "Run index out of range");
        return NULL;
    }
    Walk w;
    RawEvent ev;
    walk_start(&w, self);
    for (Py_ssize_t k = 0; k <= i; k++) {
        if (walk_next(&w, &ev) <= 0) {
            return NULL;
        }
    }
    return run_item(self, &ev);
}

/* iter(run): every item in one walk (the Python resolution's input). */
static PyObject *
Run_iter(Run *self)
{
    PyObject *items = PyList_New(self->len);
    if (items == NULL) {
        return NULL;
    }
    Walk w;
    RawEvent ev;
    walk_start(&w, self);
    for (Py_ssize_t k = 0; k < self->len; k++) {
        PyObject *item = walk_next(&w, &ev) > 0 ? run_item(self, &ev) : NULL;
        if (item == NULL) {
            Py_DECREF(items);
            return NULL;
        }
        PyList_SET_ITEM(items, k, item);
    }
    PyObject *it = PyObject_GetIter(items);
    Py_DECREF(items);
    return it;
}

static int
Run_traverse(Run *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tid);
    Py_VISIT(self->kinds);
    Py_VISIT(self->slow);
    return 0;
}

static int
Run_clear(Run *self)
{
    Py_CLEAR(self->tid);
    Py_CLEAR(self->kinds);
    Py_CLEAR(self->slow);
    return 0;
}

static void
Run_dealloc(Run *self)
{
    PyObject_GC_UnTrack(self);
    Run_clear(self);
    Py_CLEAR(self->data);
    PyMem_Free(self->stretches);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
run_ready(Run *self)
{
    if (self->kinds == NULL || self->slow == NULL) {
        PyErr_SetString(PyExc_ValueError, "Run was not initialised");
        return 0;
    }
    return 1;
}

static PyObject *
Run_decode_checked(Run *self, PyObject *const *args, Py_ssize_t nargs)
{
    return run_ready(self) ? Run_decode(self, args, nargs) : NULL;
}

static PyObject *
Run_append_checked(Run *self, PyObject *item)
{
    return run_ready(self) ? Run_append(self, item) : NULL;
}

static PyObject *
Run_item_checked(Run *self, Py_ssize_t i)
{
    return run_ready(self) ? Run_item(self, i) : NULL;
}

static PyObject *
Run_iter_checked(Run *self)
{
    return run_ready(self) ? Run_iter(self) : NULL;
}

static PyMethodDef Run_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))Run_decode_checked, METH_FASTCALL,
     "decode(data, pos, end, ticks, fast) -> (found, ticks, pos, done)"},
    {"append", (PyCFunction)Run_append_checked, METH_O,
     "append((ticks, tid, kind, raw_args)): an event decoded by Python."},
    {NULL},
};

static PySequenceMethods Run_as_sequence = {
    .sq_length = (lenfunc)Run_len,
    .sq_item = (ssizeargfunc)Run_item_checked,
};

static PyTypeObject RunType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pytrace._core.Run",
    .tp_doc = "One thread's decoded, not yet resolved events (see pytrace/decoder_c.py).",
    .tp_basicsize = sizeof(Run),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Run_init,
    .tp_dealloc = (destructor)Run_dealloc,
    .tp_traverse = (traverseproc)Run_traverse,
    .tp_clear = (inquiry)Run_clear,
    .tp_iter = (getiterfunc)Run_iter_checked,
    .tp_methods = Run_methods,
    .tp_as_sequence = &Run_as_sequence,
};

/* ------------------------------------------------------------------------ */
/* Resolution                                                               */
/* ------------------------------------------------------------------------ */

/* Lookup of resolved ids: an array where the ids are dense (they are, as
 * pytrace writes them), else the dict itself.  `single` caches the 1-tuple
 * (value,) of each id: the args of every event with one id argument
 * (CallEnter, GenResume, OpenFrames...) with that id share it. */
typedef struct {
    PyObject *dict;
    PyObject **by_id;   /* borrowed values */
    PyObject **single;  /* owned */
    Py_ssize_t size;
} IdTable;

static int
id_table_init(IdTable *t, PyObject *dict)
{
    memset(t, 0, sizeof(*t));
    t->dict = dict;
    Py_ssize_t pos = 0, max_id = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyLong_Check(key)) {
            return 0;
        }
        long long id = PyLong_AsLongLong(key);
        if (id < 0 || id > 4 * PyDict_GET_SIZE(dict) + 4096) {
            PyErr_Clear();
            return 0;  /* sparse or odd: use the dict */
        }
        if (id > max_id) {
            max_id = (Py_ssize_t)id;
        }
    }
    t->size = max_id + 1;
    t->by_id = PyMem_Calloc((size_t)t->size, sizeof(PyObject *));
    t->single = PyMem_Calloc((size_t)t->size, sizeof(PyObject *));
    if (t->by_id == NULL || t->single == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        t->by_id[PyLong_AsSsize_t(key)] = value;
    }
    return 0;
}

static void
id_table_free(IdTable *t)
{
    for (Py_ssize_t i = 0; t->single != NULL && i < t->size; i++) {
        Py_XDECREF(t->single[i]);
    }
    PyMem_Free(t->by_id);
    PyMem_Free(t->single);
}

/* The value of `id` (borrowed), or NULL if undefined (no error set). */
static PyObject *
id_lookup(IdTable *t, uint64_t id)
{
    if (t->by_id != NULL) {
        return id < (uint64_t)t->size ? t->by_id[id] : NULL;
    }
    PyObject *key = PyLong_FromUnsignedLongLong(id);
    if (key == NULL) {
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(t->dict, key);
    Py_DECREF(key);
    return value;
}

typedef struct {
    IdTable strings, funcs, stacks;
    const char *plans[64];     /* arg types per kind id, NULL: unknown */
    PyObject *no_stack;        /* (None,): the args of a one-stack event without one */
} Resolver;

#define UNDEFINED_ID ((PyObject *)1)

/* One resolved argument (new reference), UNDEFINED_ID, or NULL on error. */
static PyObject *
resolve_arg(Resolver *r, char type, uint64_t value)
{
    PyObject *found;
    switch (type) {
    case 's':
        found = id_lookup(&r->strings, value);
        break;
    case 'f':
        found = id_lookup(&r->funcs, value);
        break;
    case 'k':
        if (value == 0) {
            return Py_NewRef(Py_None);
        }
        found = id_lookup(&r->stacks, value);
        break;
    case 'i':
        if (value & 1) {
            return PyLong_FromLongLong(-(long long)(value >> 1) - 1);
        }
        return PyLong_FromUnsignedLongLong(value >> 1);
    default:
        return PyLong_FromUnsignedLongLong(value);
    }
    if (found == NULL) {
        return PyErr_Occurred() ? NULL : UNDEFINED_ID;
    }
    return Py_NewRef(found);
}

/* The resolved args tuple of an event (new reference), or UNDEFINED_ID. */
static PyObject *
resolve_args(Resolver *r, Run *run, RawEvent *ev, const char *plan)
{
    PyObject *raw = NULL;
    if (ev->n == SLOW_EVENT) {
        raw = PyTuple_GET_ITEM(PyList_GET_ITEM(run->slow, (Py_ssize_t)ev->a[0]), 3);
    }
    Py_ssize_t n = raw != NULL ? PyTuple_GET_SIZE(raw) : ev->n;
    if ((Py_ssize_t)strlen(plan) != n) {
        PyErr_SetString(PyExc_ValueError, "an event's argument count disagrees with its kind");
        return NULL;
    }
    PyObject *out = PyTuple_New(n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t value;
        if (raw != NULL) {
            value = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(raw, i));  /* fits: append checked */
        }
        else {
            value = ev->a[i];
        }
        PyObject *v = resolve_arg(r, plan[i], value);
        if (v == NULL || v == UNDEFINED_ID) {
            Py_DECREF(out);
            return v;
        }
        PyTuple_SET_ITEM(out, i, v);
    }
    /* Numbers, strings, Funcs and tuples of Frames: never part of a cycle
     * (see resolve_events on Events). */
    PyObject_GC_UnTrack(out);
    return out;
}

/* The args of an event: shared where many events have the same ones (no
 * args; one id), else new (new reference), or UNDEFINED_ID. */
static inline PyObject *
event_args(Resolver *r, Run *run, RawEvent *ev)
{
    const char *plan = r->plans[ev->kind_id & 0x3F];
    if (plan == NULL) {
        PyErr_SetString(PyExc_ValueError, "an event of a kind without a plan");
        return NULL;
    }
    if (ev->n == 0 && plan[0] == '\0') {
        return PyTuple_New(0);  /* the empty tuple is a singleton */
    }
    if (ev->n != 1 || plan[1] != '\0' || (plan[0] != 'f' && plan[0] != 's' && plan[0] != 'k')) {
        return resolve_args(r, run, ev, plan);
    }
    uint64_t id = ev->a[0];
    if (plan[0] == 'k' && id == 0) {
        return Py_NewRef(r->no_stack);
    }
    IdTable *t = plan[0] == 'f' ? &r->funcs : plan[0] == 's' ? &r->strings : &r->stacks;
    int cacheable = t->single != NULL && id < (uint64_t)t->size;
    if (cacheable && t->single[id] != NULL) {
        return Py_NewRef(t->single[id]);
    }
    PyObject *args = resolve_args(r, run, ev, plan);
    if (cacheable && args != NULL && args != UNDEFINED_ID) {
        t->single[id] = Py_NewRef(args);
    }
    return args;
}

/* Nanoseconds since the trace started (floor division, as Python's //)
 * into *out; returns 0 if they do not fit 64 bits. */
static inline int
nanoseconds(uint64_t ticks, long long start, unsigned long long frequency, long long *out)
{
    __int128 delta = (__int128)ticks - (__int128)start;
    if (frequency != 1000000000u) {
        __int128 scaled = delta * 1000000000;
        delta = scaled / (__int128)frequency;
        if (scaled % (__int128)frequency != 0 && scaled < 0) {
            delta -= 1;
        }
    }
    if (delta > INT64_MAX || delta < INT64_MIN) {
        return 0;
    }
    *out = (long long)delta;
    return 1;
}

/* Does `type` lay its instances out as a plain tuple does (a tuple
 * subclass adding no fields, as a NamedTuple is)?  Then new_event may
 * build them directly. */
static int
has_tuple_layout(PyTypeObject *type)
{
    unsigned long extra = 0;
#ifdef Py_TPFLAGS_MANAGED_DICT
    extra |= Py_TPFLAGS_MANAGED_DICT;
#endif
#ifdef Py_TPFLAGS_MANAGED_WEAKREF
    extra |= Py_TPFLAGS_MANAGED_WEAKREF;
#endif
    return PyType_IsSubtype(type, &PyTuple_Type)
        && type->tp_basicsize == PyTuple_Type.tp_basicsize
        && type->tp_itemsize == PyTuple_Type.tp_itemsize
        && type->tp_dictoffset == 0 && type->tp_weaklistoffset == 0
        && (type->tp_flags & extra) == 0
        && type->tp_free == PyObject_GC_Del;
}

/* An instance of `type` (see has_tuple_layout) holding (ts, tid, kind,
 * args); steals ts and args.  What tuple.__new__(type, ...) makes, built
 * as CPython builds its own tuple subclasses (structseq.c): no argument
 * tuple, no zeroing, no spare item, and never tracked by the cycle
 * collector.  An Event holds numbers, strings, frozen EventKinds and
 * tuples of those, so it can never be part of a reference cycle, and the
 * collector need not traverse the millions of them a trace holds (CPython
 * untracks such tuples itself, but only once a collection has looked at
 * each). */
static inline PyObject *
new_event(PyTypeObject *type, PyObject *ts, PyObject *tid, PyObject *kind, PyObject *args)
{
    PyTupleObject *event = PyObject_GC_NewVar(PyTupleObject, type, 4);
    if (event == NULL) {
        Py_DECREF(ts);
        Py_DECREF(args);
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030E0000
    event->ob_hash = -1;  /* 3.14's tuples cache their hash: not computed yet */
#endif
    event->ob_item[0] = ts;
    event->ob_item[1] = Py_NewRef(tid);
    event->ob_item[2] = Py_NewRef(kind);
    event->ob_item[3] = args;
    return (PyObject *)event;
}

/* A thread's place in the merge: its next event, read ahead. */
typedef struct {
    PyObject *tid;
    Walk walk;
    RawEvent ev;
} Cursor;

/* Is cursor a before cursor b in the merged order (time, then thread order:
 * the cursors are in an array in thread order)? */
static inline int
cursor_before(Cursor *a, Cursor *b)
{
    return a->ev.ticks < b->ev.ticks || (a->ev.ticks == b->ev.ticks && a < b);
}

static void
heap_sift_down(Cursor **heap, Py_ssize_t n, Py_ssize_t i)
{
    for (;;) {
        Py_ssize_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cursor_before(heap[l], heap[m])) {
            m = l;
        }
        if (r < n && cursor_before(heap[r], heap[m])) {
            m = r;
        }
        if (m == i) {
            return;
        }
        Cursor *t = heap[i];
        heap[i] = heap[m];
        heap[m] = t;
        i = m;
    }
}

/* resolve_events(runs, plans, strings, funcs, stacks, start_ticks, frequency, event_type)
 *   -> list of Event, or None
 *
 * `runs`: [(tid, Run)] in tid order; `plans[kind id]`: the kind's argument
 * types as a str.  The events come out in time order, ties in thread order
 * then file order: the order of reader.py's stable sort, made by merging
 * the runs (each in time order already), in one pass into a list made at
 * its final size.  None (the Python resolution must run instead) if an id
 * is undefined, a thread's times are not in order, or a time does not fit
 * 64 bits. */
static PyObject *
resolve_events(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyList_Check(args[0]) || !PyTuple_Check(args[1])
        || PyTuple_GET_SIZE(args[1]) != 64 || !PyDict_Check(args[2]) || !PyDict_Check(args[3])
        || !PyDict_Check(args[4]) || !PyType_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError, "resolve_events(runs, plans[64], strings, funcs, "
                                         "stacks, start_ticks, frequency, event_type)");
        return NULL;
    }
    PyTypeObject *event_type = (PyTypeObject *)args[7];
    if (!has_tuple_layout(event_type)) {
        PyErr_SetString(PyExc_TypeError, "resolve_events: event_type must be a tuple subclass "
                                         "without fields of its own (a NamedTuple)");
        return NULL;
    }
    long long start = PyLong_AsLongLong(args[5]);
    unsigned long long frequency = PyLong_AsUnsignedLongLong(args[6]);
    if (PyErr_Occurred() || frequency == 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Resolver r;
    memset(&r, 0, sizeof(r));
    PyObject *result = NULL, *list = NULL;
    Cursor *cursors = NULL;
    Cursor **heap = NULL;
    Py_ssize_t nruns = PyList_GET_SIZE(args[0]), total = 0;
    for (int i = 0; i < 64; i++) {
        PyObject *plan = PyTuple_GET_ITEM(args[1], i);
        r.plans[i] = plan == Py_None ? NULL : PyUnicode_AsUTF8(plan);
        if (plan != Py_None && r.plans[i] == NULL) {
            return NULL;
        }
    }
    r.no_stack = PyTuple_Pack(1, Py_None);
    if (r.no_stack == NULL || id_table_init(&r.strings, args[2]) < 0
        || id_table_init(&r.funcs, args[3]) < 0 || id_table_init(&r.stacks, args[4]) < 0) {
        goto done;
    }
    cursors = PyMem_Calloc((size_t)(nruns ? nruns : 1), sizeof(Cursor));
    heap = PyMem_Calloc((size_t)(nruns ? nruns : 1), sizeof(Cursor *));
    if (cursors == NULL || heap == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t live = 0;
    for (Py_ssize_t i = 0; i < nruns; i++) {
        PyObject *item = PyList_GET_ITEM(args[0], i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
            || !Py_IS_TYPE(PyTuple_GET_ITEM(item, 1), &RunType)) {
            PyErr_SetString(PyExc_TypeError, "runs must be (tid, Run) pairs");
            goto done;
        }
        Run *run = (Run *)PyTuple_GET_ITEM(item, 1);
        if (!run_ready(run)) {
            goto done;
        }
        if (run->python_merges) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        cursors[i].tid = PyTuple_GET_ITEM(item, 0);
        walk_start(&cursors[i].walk, run);
        total += run->len;
        int more = walk_next(&cursors[i].walk, &cursors[i].ev);
        if (more < 0) {
            goto done;
        }
        if (more) {
            heap[live++] = &cursors[i];
        }
    }
    for (Py_ssize_t i = live / 2 - 1; i >= 0; i--) {
        heap_sift_down(heap, live, i);
    }
    list = PyList_New(total);
    if (list == NULL) {
        goto done;
    }
    for (Py_ssize_t k = 0; k < total; k++) {
        if (live == 0) {
            PyErr_SetString(PyExc_SystemError, "a run holds fewer events than it counts");
            goto done;
        }
        Cursor *c = heap[0];
        Run *run = c->walk.run;
        RawEvent current = c->ev, *ev = &current;
        int more = walk_next(&c->walk, &c->ev);
        if (more < 0) {
            goto done;
        }
        if (!more) {
            heap[0] = heap[--live];
        }
        if (live > 1) {
            heap_sift_down(heap, live, 0);
        }
        long long ns;
        if (!nanoseconds(ev->ticks, start, frequency, &ns)) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        PyObject *event_args_ = event_args(&r, run, ev);
        if (event_args_ == NULL || event_args_ == UNDEFINED_ID) {
            if (event_args_ == UNDEFINED_ID) {
                result = Py_NewRef(Py_None);
            }
            goto done;
        }
        PyObject *ts = PyLong_FromLongLong(ns);
        if (ts == NULL) {
            Py_DECREF(event_args_);
            goto done;
        }
        PyObject *event = new_event(event_type, ts, c->tid,
                                    PyTuple_GET_ITEM(run->kinds, ev->kind_id & 0x3F),
                                    event_args_);
        if (event == NULL) {
            goto done;
        }
        PyList_SET_ITEM(list, k, event);
    }
    result = Py_NewRef(list);
done:
    Py_XDECREF(list);  /* a list given up early has NULL items: list_dealloc skips them */
    Py_XDECREF(r.no_stack);
    id_table_free(&r.strings);
    id_table_free(&r.funcs);
    id_table_free(&r.stacks);
    PyMem_Free(cursors);
    PyMem_Free(heap);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Module                                                                   */
/* ------------------------------------------------------------------------ */

static PyMethodDef decode_functions[] = {
    {"resolve_events", (PyCFunction)(void (*)(void))resolve_events, METH_FASTCALL,
     "resolve_events(runs, plans, strings, funcs, stacks, start_ticks, frequency, event_type)"
     " -> the trace's events in time order, or None if the Python resolution must run"},
    {NULL},
};

/* Add Run and resolve_events to pytrace._core (called by its PyInit). */
int
decode_add_to_module(PyObject *module)
{
    if (PyType_Ready(&RunType) < 0 || PyModule_AddFunctions(module, decode_functions) < 0) {
        return -1;
    }
    Py_INCREF(&RunType);
    if (PyModule_AddObject(module, "Run", (PyObject *)&RunType) < 0) {
        Py_DECREF(&RunType);
        return -1;
    }
    return 0;
}
