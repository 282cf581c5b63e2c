/* pytrace._core: the C core of the tracer's hot paths.
 *
 * - Clock: nanoseconds from the CPU's timestamp counter where the kernel
 *   trusts it (see "Clock" below for the measurements), else CLOCK_MONOTONIC.
 * - ThreadSlot: pytrace/buffer.py's ThreadSlot in C.
 * - Calls: the per-event work of the call hooks (pytrace/hooks/monitoring_c.py
 *   and setprofile_c.py).
 * - Beat: the clock of the sampler and heap ticker (pytrace/hooks/sampler.py),
 *   in _beat.c: it waits without the GIL and hands ticks to the main thread.
 * - Run, resolve_events: the reader's per-record and per-event loops
 *   (pytrace/decoder_c.py), in _decode.c: the reader shares nothing with
 *   the writer but this module.
 *
 * Interchangeable with the pure-Python core: the same methods, the same
 * semantics, the same bytes for the same events and clock readings.
 * pytrace/core.py chooses between them; pytrace/buffer.py's module
 * docstring is the contract the slot implements (the two rules of Go's
 * commit d58f4e9, the batch base set at the swap, delta 0 after a
 * concurrent swap, the unsent batch kept until the writer has it,
 * interning through dict.setdefault, the injection points).
 *
 * Why the rules hold here: C code runs with the GIL held and nothing can
 * re-enter it except where it calls back into Python (a Python clock, the
 * writer, the test injector, a key's __hash__/__eq__) or allocates an
 * object the cycle collector tracks (on 3.11 a collection, and so a
 * gc.callbacks callback, can run right there).  Every such point is a place
 * where another event may be appended and the buffer may be swapped, so:
 * records are built completely in local memory first and appended in one
 * step (slot_append), which reads slot->buf at that moment; no pointer into
 * a buffer is kept across any call out; and an event reads the clock before
 * it reads seq/last, exactly like the Python core.
 *
 * The live buffer is a real bytearray (slot.buf), so the Python call hooks,
 * which append to it inline (``buf = slot.buf; buf += data``), work
 * unchanged on a C slot.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

/* Thread-local variables in the initial-exec model where the compiler has
 * it: a plain %fs-relative load instead of a __tls_get_addr call per event
 * (the extension is loaded after start-up, which glibc's surplus of static
 * TLS space allows for these few bytes). */
#if defined(__GNUC__) && defined(__linux__)
#define TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define TLS_MODEL
#endif

/* Event ids of pytrace/events.py that the C core writes itself.  _core
 * checks them against the event table at import (pytrace/core.py), so a
 * change of the table cannot silently desynchronise the cores. */
#define EV_BATCH 1
#define EV_STRING 5
#define EV_FUNC 6
#define EV_STACK 7

/* Layout of a batch header (pytrace/wire.py). */
#define BATCH_LENGTH_OFFSET 1
#define BATCH_COUNT_OFFSET 5
#define BATCH_BASE_OFFSET 9
#define BATCH_FIXED_SIZE 17
#define LENGTH_PREFIXED 3
#define MAX_VARINT 10

/* ------------------------------------------------------------------------ */
/* Clock                                                                    */
/* ------------------------------------------------------------------------ */

/* The C core's clock counts nanoseconds, like the Python core's
 * time.perf_counter_ns (so the Frequency record stays 1e9 and every tick
 * computation elsewhere in pytrace holds).  Where the kernel itself keeps
 * time with the CPU's timestamp counter (clocksource "tsc", with
 * constant_tsc and nonstop_tsc), the counter is read directly and scaled to
 * nanoseconds with a factor measured against CLOCK_MONOTONIC when first
 * needed: on this project's machines rdtsc costs ~18 ns and
 * clock_gettime(CLOCK_MONOTONIC) ~45 ns, and an event is taken twice per
 * call.  Elsewhere the clock is clock_gettime(CLOCK_MONOTONIC), the same
 * clock as perf_counter_ns on Linux. */

static int clock_ready = 0;
static int clock_uses_tsc = 0;
static uint64_t tsc_origin = 0;      /* counter value at ns_origin */
static uint64_t ns_origin = 0;       /* CLOCK_MONOTONIC at tsc_origin */
static uint64_t tsc_scale = 0;       /* nanoseconds per tick, << 32 */
static double tsc_hz = 0.0;

static inline uint64_t
monotonic_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

#if HAVE_TSC
static int
file_contains(const char *path, const char *needle, size_t limit)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char *text = PyMem_RawMalloc(limit + 1);
    if (text == NULL) {
        fclose(f);
        return 0;
    }
    size_t n = fread(text, 1, limit, f);
    fclose(f);
    text[n] = '\0';
    int found = strstr(text, needle) != NULL;
    PyMem_RawFree(text);
    return found;
}

/* A (counter, CLOCK_MONOTONIC) pair read as close together as this CPU
 * allows: the counter is read on both sides of the clock, and the tightest
 * of a few tries is kept. */
static void
tsc_sample(uint64_t *tsc, uint64_t *ns)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 16; i++) {
        uint64_t before = __rdtsc();
        uint64_t now = monotonic_ns();
        uint64_t after = __rdtsc();
        if (after - before < best) {
            best = after - before;
            *tsc = before + (after - before) / 2;
            *ns = now;
        }
    }
}

/* The scale is measured over this many nanoseconds: a sample's uncertainty
 * is ~20 ns, so the relative error of durations is ~1e-5.  The measurement
 * does not wait: the first sample is taken when the clock is first used,
 * the clock reads CLOCK_MONOTONIC until this much time has passed, and the
 * first reading after that takes the second sample and switches to the
 * counter (a busy wait here cost every traced process 4 ms, and `pytest
 * --pytrace` is a process per run, issue 4).  Every reading happens with
 * the GIL held, so the switch is made once. */
#define TSC_CALIBRATION_NS 4000000u

static int tsc_calibrating = 0;
static uint64_t calibration_tsc = 0;  /* first sample: counter */
static uint64_t calibration_ns = 0;   /* first sample: CLOCK_MONOTONIC */

/* Whether the kernel itself keeps time with an invariant counter. */
static int
tsc_usable(void)
{
    return file_contains("/sys/devices/system/clocksource/clocksource0/current_clocksource",
                         "tsc", 64)
           && file_contains("/proc/cpuinfo", " constant_tsc", 1 << 16)
           && file_contains("/proc/cpuinfo", " nonstop_tsc", 1 << 16);
}

static void
begin_tsc_calibration(void)
{
    if (tsc_usable()) {
        tsc_sample(&calibration_tsc, &calibration_ns);
        tsc_calibrating = 1;
    }
}

/* The second sample: from now on the counter, scaled, is the clock.  Its
 * origin maps to the sample's CLOCK_MONOTONIC reading, which is later than
 * every reading the clock gave before, so it never goes backwards here. */
static void
finish_tsc_calibration(void)
{
    uint64_t t1, n1;
    tsc_sample(&t1, &n1);
    tsc_calibrating = 0;
    if (t1 <= calibration_tsc || n1 <= calibration_ns) {
        return;  /* stays on CLOCK_MONOTONIC */
    }
    tsc_scale = (uint64_t)((((unsigned __int128)(n1 - calibration_ns)) << 32)
                           / (t1 - calibration_tsc));
    tsc_hz = (double)(t1 - calibration_tsc) * 1e9 / (double)(n1 - calibration_ns);
    tsc_origin = t1;
    ns_origin = n1;
    clock_uses_tsc = tsc_scale != 0;
}
#endif

static void
ensure_clock(void)
{
    if (clock_ready) {
        return;
    }
#if HAVE_TSC
    const char *forced = getenv("PYTRACE_CLOCK");
    if (forced == NULL || strcmp(forced, "monotonic") != 0) {
        begin_tsc_calibration();
    }
#endif
    clock_ready = 1;
}

static inline uint64_t
core_now(void)
{
#if HAVE_TSC
    if (clock_uses_tsc) {
        uint64_t ticks = __rdtsc() - tsc_origin;
        if ((int64_t)ticks < 0) {  /* another CPU's counter, a hair behind */
            ticks = 0;
        }
        return ns_origin + (uint64_t)(((unsigned __int128)ticks * tsc_scale) >> 32);
    }
    if (tsc_calibrating) {
        uint64_t now = monotonic_ns();
        if (now - calibration_ns < TSC_CALIBRATION_NS) {
            return now;
        }
        finish_tsc_calibration();
        if (clock_uses_tsc) {
            return ns_origin;
        }
    }
#endif
    return monotonic_ns();
}

static PyObject *
core_clock(PyObject *module, PyObject *unused)
{
    ensure_clock();
    return PyLong_FromUnsignedLongLong(core_now());
}

static PyObject *
core_clock_info(PyObject *module, PyObject *unused)
{
    ensure_clock();
#if HAVE_TSC
    while (tsc_calibrating) {  /* report the source the clock settles on */
        (void)core_now();
    }
#endif
    return Py_BuildValue("{s:s,s:d}", "source", clock_uses_tsc ? "tsc" : "monotonic",
                         "tsc_hz", tsc_hz);
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */
/* ------------------------------------------------------------------------ */

static inline Py_ssize_t
put_uvarint(unsigned char *out, uint64_t value)
{
    Py_ssize_t n = 0;
    while (value >= 0x80) {
        out[n++] = (unsigned char)(value | 0x80);
        value >>= 7;
    }
    out[n++] = (unsigned char)value;
    return n;
}

static inline Py_ssize_t
uvarint_size(uint64_t value)
{
    Py_ssize_t n = 1;
    while (value >= 0x80) {
        value >>= 7;
        n++;
    }
    return n;
}

static inline void
put_u32(unsigned char *out, uint32_t v)
{
    out[0] = (unsigned char)v;
    out[1] = (unsigned char)(v >> 8);
    out[2] = (unsigned char)(v >> 16);
    out[3] = (unsigned char)(v >> 24);
}

static inline void
put_u64(unsigned char *out, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        out[i] = (unsigned char)(v >> (8 * i));
    }
}

/* A record of `count` varints: inline (code count-1) for 1-3 values, else
 * length-prefixed (code 3), as wire.record.  `out` holds at least
 * 1 + MAX_VARINT + count * MAX_VARINT bytes. */
static Py_ssize_t
put_record(unsigned char *out, int kind, const uint64_t *values, Py_ssize_t count)
{
    if (count >= 1 && count <= LENGTH_PREFIXED) {
        Py_ssize_t n = 1;
        out[0] = (unsigned char)(kind | (count - 1) << 6);
        for (Py_ssize_t i = 0; i < count; i++) {
            n += put_uvarint(out + n, values[i]);
        }
        return n;
    }
    Py_ssize_t payload = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        payload += uvarint_size(values[i]);
    }
    out[0] = (unsigned char)(kind | LENGTH_PREFIXED << 6);
    Py_ssize_t n = 1 + put_uvarint(out + 1, (uint64_t)payload);
    for (Py_ssize_t i = 0; i < count; i++) {
        n += put_uvarint(out + n, values[i]);
    }
    return n;
}

/* A Python int as a varint value.  Negative or too big: an error, as
 * wire.uvarint refuses negatives (and a reader refuses >10-byte varints). */
static int
as_u64(PyObject *obj, uint64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "event arguments must be int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError,
                         "uvarint cannot encode %R (negative, or wider than 64 bits)", obj);
        }
        return -1;
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Buffers: bytearrays appended to in place                                 */
/* ------------------------------------------------------------------------ */

/* Append n bytes to the bytearray in one step.  The common case writes into
 * the spare capacity directly; anything else (no room, an exported buffer)
 * goes through PyByteArray_Resize, which grows it or raises. */
static inline int
bytes_append(PyByteArrayObject *buf, const unsigned char *data, Py_ssize_t n)
{
    Py_ssize_t size = Py_SIZE(buf);
    if (buf->ob_exports == 0 && buf->ob_start == buf->ob_bytes && size + n < buf->ob_alloc) {
        memcpy(buf->ob_bytes + size, data, (size_t)n);
        buf->ob_bytes[size + n] = '\0';
        Py_SET_SIZE(buf, size + n);
        return 0;
    }
    if (PyByteArray_Resize((PyObject *)buf, size + n) < 0) {
        return -1;
    }
    memcpy(PyByteArray_AS_STRING(buf) + size, data, (size_t)n);
    return 0;
}

/* Records the hot paths build are at most this long; they are built in
 * arrays of this size, so appending copies a fixed-size block (inlined
 * moves instead of a memcpy call) when the buffer has that much room. */
#define SMALL_RECORD 32

static inline int
bytes_append_small(PyByteArrayObject *buf, const unsigned char data[SMALL_RECORD], Py_ssize_t n)
{
    Py_ssize_t size = Py_SIZE(buf);
    if (buf->ob_exports == 0 && buf->ob_start == buf->ob_bytes
        && size + SMALL_RECORD < buf->ob_alloc) {
        memcpy(buf->ob_bytes + size, data, SMALL_RECORD);
        buf->ob_bytes[size + n] = '\0';
        Py_SET_SIZE(buf, size + n);
        return 0;
    }
    return bytes_append(buf, data, n);
}

/* A new batch buffer holding its header (length and count zero), with room
 * for `capacity` bytes before it must grow. */
static PyObject *
new_batch(uint64_t tid, uint64_t seq, uint64_t base, Py_ssize_t capacity)
{
    unsigned char header[BATCH_FIXED_SIZE + 2 * MAX_VARINT];
    memset(header, 0, BATCH_FIXED_SIZE);
    header[0] = EV_BATCH;
    put_u64(header + BATCH_BASE_OFFSET, base);
    Py_ssize_t n = BATCH_FIXED_SIZE;
    n += put_uvarint(header + n, tid);
    n += put_uvarint(header + n, seq);
    if (capacity < n) {
        capacity = n;
    }
    PyObject *buf = PyByteArray_FromStringAndSize(NULL, capacity);
    if (buf == NULL) {
        return NULL;
    }
    memcpy(PyByteArray_AS_STRING(buf), header, (size_t)n);
    Py_SET_SIZE(buf, n);
    PyByteArray_AS_STRING(buf)[n] = '\0';
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Headroom for calls back into Python                                      */
/* ------------------------------------------------------------------------ */

/* The hot paths call back into Python on their cold paths (the writer at a
 * flush, the call hooks' decisions), and they run wherever the program is:
 * at the bottom of a deep recursion, a Python call would fail with
 * RecursionError, the tracer would lose a batch or stop, and the program
 * would see its error change.  So these calls get headroom above the
 * recursion limit, as CPython gives its own error handling.  The counter
 * (under the GIL) makes nested and concurrent uses add it once. */
#define RECURSION_HEADROOM 200
static int headroom_users = 0;

static void
headroom_enter(void)
{
    if (headroom_users++ == 0) {
        Py_SetRecursionLimit(Py_GetRecursionLimit() + RECURSION_HEADROOM);
    }
}

static void
headroom_exit(void)
{
    if (--headroom_users == 0) {
        Py_SetRecursionLimit(Py_GetRecursionLimit() - RECURSION_HEADROOM);
    }
}

/* Headroom(func): calls func with the headroom, for pytrace's Python
 * callbacks that the interpreter may call at any depth (gc.callbacks). */
typedef struct {
    PyObject_HEAD
    PyObject *func;
    vectorcallfunc vectorcall;
} Headroom;

/* Called through vectorcall, as gc calls its callbacks: unlike tp_call, it
 * is entered without a recursion check of its own (3.11 makes one for
 * every tp_call, which would fail right at the limit). */
static PyObject *
Headroom_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                    PyObject *kwnames)
{
    Headroom *self = (Headroom *)callable;
    if (self->func == NULL) {
        PyErr_SetString(PyExc_ValueError, "Headroom was not initialised");
        return NULL;
    }
    headroom_enter();
    PyObject *r = PyObject_Vectorcall(self->func, args, nargsf, kwnames);
    headroom_exit();
    return r;
}

static int
Headroom_init(Headroom *self, PyObject *args, PyObject *kwds)
{
    PyObject *func;
    if (!PyArg_ParseTuple(args, "O:Headroom", &func)) {
        return -1;
    }
    Py_XSETREF(self->func, Py_NewRef(func));
    self->vectorcall = Headroom_vectorcall;
    return 0;
}


static int
Headroom_traverse(Headroom *self, visitproc visit, void *arg)
{
    Py_VISIT(self->func);
    return 0;
}

static int
Headroom_clear(Headroom *self)
{
    Py_CLEAR(self->func);
    return 0;
}

static void
Headroom_dealloc(Headroom *self)
{
    PyObject_GC_UnTrack(self);
    Headroom_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Headroom_members[] = {
    {"func", T_OBJECT, offsetof(Headroom, func), READONLY, NULL},
    {NULL},
};

static PyTypeObject HeadroomType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pytrace._core.Headroom",
    .tp_doc = "Headroom(func): calls func with headroom above the recursion limit, for "
              "callbacks the interpreter may call at any depth (gc.callbacks).",
    .tp_basicsize = sizeof(Headroom),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Headroom, vectorcall),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Headroom_init,
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)Headroom_dealloc,
    .tp_traverse = (traverseproc)Headroom_traverse,
    .tp_clear = (inquiry)Headroom_clear,
    .tp_members = Headroom_members,
};

/* ------------------------------------------------------------------------ */
/* Injection points (tests only)                                            */
/* ------------------------------------------------------------------------ */

static PyObject *str_buffer_module;  /* "pytrace.buffer" */

enum {
    AT_FLUSH_START, AT_BEFORE_SWAP, AT_AFTER_SWAP, AT_HAND_OVER, AT_FLUSH_END,
    AT_STRING, AT_FUNC, AT_STACK, AT_COUNT
};
static const char *const point_names[AT_COUNT] = {
    "flush:start", "flush:before-swap", "flush:after-swap", "flush:hand-over", "flush:end",
    "intern:string", "intern:func", "intern:stack",
};
static PyObject *point_strings[AT_COUNT];
static PyObject *str_injector, *str_write_batch;

/* Call pytrace.buffer.injector(point) if a test set it.  Only cold paths
 * (flush, first-time interning) come here, as in the Python core. */
static int
inject(int point)
{
    /* Looked up in sys.modules each time, not kept: a reference held here
     * would keep pytrace.buffer (and the modules its globals hold) alive
     * past the interpreter's module teardown.  The recorder imports
     * pytrace.buffer before any slot exists. */
    PyObject *buffer_module = PyImport_GetModule(str_buffer_module);
    if (buffer_module == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *injector = PyObject_GetAttr(buffer_module, str_injector);
    Py_DECREF(buffer_module);
    if (injector == NULL) {
        return -1;
    }
    int rc = 0;
    if (injector != Py_None) {
        PyObject *r = PyObject_CallOneArg(injector, point_strings[point]);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    Py_DECREF(injector);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* ThreadSlot                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *tid_obj;
    uint64_t tid;
    PyByteArrayObject *buf;   /* the live batch, always starting with its header */
    Py_ssize_t count;         /* records in buf */
    unsigned long long last;  /* time of the thread's last event */
    unsigned long long seq;   /* buf's batch sequence number */
    Py_ssize_t limit;
    PyObject *unsent;         /* a swapped-out batch the writer may not have yet, or NULL */
    Py_ssize_t unsent_count;  /* records in unsent */
    char flushing;
    char core_clock;          /* clock is _core.clock: read it inline */
    PyObject *writer;
    PyObject *tables;
    PyObject *clock;
    /* The tables' dicts and counters, looked up once. */
    PyObject *strings, *funcs, *stacks, *codes;
    PyObject *string_ids, *func_ids, *stack_ids;
} Slot;

static PyTypeObject SlotType;
static PyObject *core_clock_object = NULL;  /* the module's `clock` function */

/* The time now, from the slot's clock. */
static inline int
slot_time(Slot *s, uint64_t *now)
{
    if (s->core_clock) {
        *now = core_now();
        return 0;
    }
    headroom_enter();
    PyObject *r = PyObject_CallNoArgs(s->clock);
    headroom_exit();
    if (r == NULL) {
        return -1;
    }
    int rc = as_u64(r, now);
    Py_DECREF(r);
    return rc;
}

static int slot_flush_impl(Slot *s);

/* Append one complete record, count it, and flush if the buffer is full:
 * buffer.ThreadSlot._append. */
static inline int
slot_append(Slot *s, const unsigned char *data, Py_ssize_t n)
{
    if (bytes_append(s->buf, data, n) < 0) {
        return -1;
    }
    s->count++;
    if (Py_SIZE(s->buf) >= s->limit) {
        return slot_flush_impl(s);
    }
    return 0;
}

/* The tick delta of an event taken at `now` (read before this), moving
 * `last`; as ThreadSlot.emit.  In C nothing can run between this and the
 * append, so the "new batch since the clock read" case of the Python core
 * (delta 0) is covered by reading seq/last after the clock. */
static inline uint64_t
slot_delta(Slot *s, uint64_t now)
{
    unsigned long long last = s->last;
    if (now > last) {
        s->last = now;
        return now - last;
    }
    return 0;
}


/* Seal the unsent batch and give it to the writer (buffer.ThreadSlot's
 * _hand_over); forget it once the writer has it.  An exception anywhere on
 * the way (a Ctrl-C: signal handlers run at write_batch's entry, or inside
 * it, never in this C code) keeps it unsent, and the next flush offers it
 * again; the writer skips a sequence number it already took. */
static int
slot_hand_over(Slot *s)
{
    /* Held for the whole hand-over: the injector and the writer are Python. */
    PyObject *batch = Py_NewRef(s->unsent);
    int rc = -1;
    if (PyByteArray_GET_SIZE(batch) < BATCH_FIXED_SIZE) {
        /* slot.buf was replaced by something that is not a batch: it can
         * never be written, so it is dropped rather than offered again. */
        Py_CLEAR(s->unsent);
        PyErr_SetString(PyExc_ValueError, "ThreadSlot.buf lost its batch header");
        goto done;
    }
    unsigned char *bytes = (unsigned char *)PyByteArray_AS_STRING(batch);
    put_u32(bytes + BATCH_LENGTH_OFFSET,
            (uint32_t)(PyByteArray_GET_SIZE(batch) - BATCH_LENGTH_OFFSET - 4));
    put_u32(bytes + BATCH_COUNT_OFFSET, (uint32_t)s->unsent_count);
    if (inject(AT_HAND_OVER) < 0) {
        goto done;
    }
    PyObject *count_obj = PyLong_FromSsize_t(s->unsent_count);
    PyObject *seq_obj = PyLong_FromUnsignedLongLong(s->seq - 1);
    PyObject *r = NULL;
    if (count_obj != NULL && seq_obj != NULL) {
        r = PyObject_CallMethodObjArgs(s->writer, str_write_batch, s->tid_obj, batch, count_obj,
                                       seq_obj, NULL);
    }
    Py_XDECREF(count_obj);
    Py_XDECREF(seq_obj);
    if (r != NULL) {
        Py_DECREF(r);
        Py_CLEAR(s->unsent);
        rc = 0;
    }
done:
    Py_DECREF(batch);
    return rc;
}

static int slot_flush_body(Slot *s);

/* Set while this thread flushes any slot: a thread that is flushing starts
 * no other flush (buffer.py's _this_thread).  A thread may flush another
 * thread's slot (the periodic flusher, stop); a GC callback running inside
 * that flush and filling the flushing thread's own slot would otherwise
 * re-enter the writer's lock. */
static _Thread_local int thread_flushing TLS_MODEL = 0;

static int
slot_flush_impl(Slot *s)
{
    if (s->flushing || (s->count == 0 && s->unsent == NULL) || thread_flushing) {
        return 0;
    }
    thread_flushing = 1;
    headroom_enter();
    int rc = slot_flush_body(s);
    headroom_exit();
    thread_flushing = 0;
    return rc;
}

/* buffer.ThreadSlot.flush: an unsent batch first (an earlier hand-over was
 * interrupted), then the swap that makes the live batch the unsent one, then
 * its hand-over.  See buffer.py's module doc for why a batch stays
 * "unsent" until the writer has it. */
static int
slot_flush_body(Slot *s)
{
    s->flushing = 1;
    int rc = -1;
    PyObject *fresh = NULL;
    if (s->unsent != NULL && slot_hand_over(s) < 0) {
        goto done;
    }
    if (s->count == 0) {
        rc = 0;
        goto done;
    }
    if (inject(AT_FLUSH_START) < 0) {
        goto done;
    }
    fresh = new_batch(s->tid, s->seq + 1, 0, s->limit + 64);
    if (fresh == NULL) {
        goto done;
    }
    if (inject(AT_BEFORE_SWAP) < 0) {
        goto done;
    }
    /* The swap (rule 2): nothing runs between these statements.  The live
     * batch becomes the unsent one; the new batch's base is the time of the
     * last event before the swap. */
    s->unsent = (PyObject *)s->buf;
    s->unsent_count = s->count;
    s->buf = (PyByteArrayObject *)fresh;
    fresh = NULL;
    s->count = 0;
    s->seq += 1;
    put_u64((unsigned char *)s->buf->ob_start + BATCH_BASE_OFFSET, s->last);
    if (inject(AT_AFTER_SWAP) < 0 || slot_hand_over(s) < 0 || inject(AT_FLUSH_END) < 0) {
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(fresh);
    s->flushing = 0;
    return rc;
}

static int
Slot_init(Slot *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"tid", "writer", "tables", "clock", "limit", NULL};
    PyObject *tid, *writer, *tables, *clock;
    Py_ssize_t limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOn:ThreadSlot", kwlist, &tid, &writer,
                                     &tables, &clock, &limit)) {
        return -1;
    }
    if (self->buf != NULL) {
        PyErr_SetString(PyExc_TypeError, "ThreadSlot is already initialised");
        return -1;
    }
    uint64_t tid_value;
    if (as_u64(tid, &tid_value) < 0) {
        return -1;
    }
    static const char *const table_names[7] = {
        "strings", "funcs", "stacks", "codes", "string_ids", "func_ids", "stack_ids"};
    PyObject **fields[7] = {&self->strings, &self->funcs, &self->stacks, &self->codes,
                            &self->string_ids, &self->func_ids, &self->stack_ids};
    for (int i = 0; i < 7; i++) {
        PyObject *value = PyObject_GetAttrString(tables, table_names[i]);
        if (value == NULL) {
            return -1;
        }
        if (i < 4 && !PyDict_CheckExact(value)) {
            Py_DECREF(value);
            PyErr_Format(PyExc_TypeError, "tables.%s must be a dict", table_names[i]);
            return -1;
        }
        Py_XSETREF(*fields[i], value);
    }
    Py_XSETREF(self->tid_obj, Py_NewRef(tid));
    self->tid = tid_value;
    Py_XSETREF(self->writer, Py_NewRef(writer));
    Py_XSETREF(self->tables, Py_NewRef(tables));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    self->core_clock = clock == core_clock_object;
    if (self->core_clock) {
        ensure_clock();
    }
    self->limit = limit;
    self->flushing = 0;
    self->seq = 0;
    self->unsent = NULL;
    self->unsent_count = 0;
    self->count = 0;
    uint64_t now;
    if (slot_time(self, &now) < 0) {
        return -1;
    }
    /* The first buffer is started here, with its header, like every later
     * one is started by the flush. */
    self->buf = (PyByteArrayObject *)new_batch(tid_value, 0, now, limit + 64);
    if (self->buf == NULL) {
        return -1;
    }
    self->last = now;
    return 0;
}

static int
Slot_traverse(Slot *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tid_obj);
    Py_VISIT(self->writer);
    Py_VISIT(self->tables);
    Py_VISIT(self->clock);
    Py_VISIT(self->strings);
    Py_VISIT(self->funcs);
    Py_VISIT(self->stacks);
    Py_VISIT(self->codes);
    Py_VISIT(self->string_ids);
    Py_VISIT(self->func_ids);
    Py_VISIT(self->stack_ids);
    return 0;
}

static int
Slot_clear(Slot *self)
{
    Py_CLEAR(self->tid_obj);
    Py_CLEAR(self->writer);
    Py_CLEAR(self->tables);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->strings);
    Py_CLEAR(self->funcs);
    Py_CLEAR(self->stacks);
    Py_CLEAR(self->codes);
    Py_CLEAR(self->string_ids);
    Py_CLEAR(self->func_ids);
    Py_CLEAR(self->stack_ids);
    return 0;
}

static void
Slot_dealloc(Slot *self)
{
    PyObject_GC_UnTrack(self);
    Slot_clear(self);
    Py_CLEAR(self->buf);
    Py_CLEAR(self->unsent);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline int
slot_ready(Slot *s)
{
    if (s->buf == NULL) {
        PyErr_SetString(PyExc_ValueError, "ThreadSlot was not initialised");
        return 0;
    }
    return 1;
}

#define SMALL_ARGS 16

/* emit(kind_id, *args): one timed event with integer arguments. */
static PyObject *
Slot_emit(Slot *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!slot_ready(self)) {
        return NULL;
    }
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "emit() needs an event kind id");
        return NULL;
    }
    long kind = PyLong_AsLong(args[0]);
    if (kind == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (kind <= 0 || kind >= 64) {
        PyErr_Format(PyExc_ValueError, "event kind id %ld is not in 1..63", kind);
        return NULL;
    }
    uint64_t small_values[SMALL_ARGS];
    unsigned char small_record[1 + MAX_VARINT + SMALL_ARGS * MAX_VARINT];
    uint64_t *values = small_values;
    unsigned char *record = small_record;
    if (nargs > SMALL_ARGS) {
        values = PyMem_Malloc(sizeof(uint64_t) * (size_t)nargs);
        record = PyMem_Malloc((size_t)(1 + MAX_VARINT + nargs * MAX_VARINT));
        if (values == NULL || record == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        if (as_u64(args[i], &values[i]) < 0) {
            goto fail;
        }
    }
    uint64_t now;
    if (slot_time(self, &now) < 0) {
        goto fail;
    }
    values[0] = slot_delta(self, now);
    Py_ssize_t n = put_record(record, (int)kind, values, nargs);
    int rc = slot_append(self, record, n);
    if (values != small_values) {
        PyMem_Free(values);
        PyMem_Free(record);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    if (values != small_values) {
        PyMem_Free(values);
        PyMem_Free(record);
    }
    return NULL;
}

/* emit_small(prefix, value): prefix bytes, tick delta, then value (unless -1). */
static PyObject *
Slot_emit_small(Slot *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!slot_ready(self)) {
        return NULL;
    }
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "emit_small(prefix: bytes, value: int)");
        return NULL;
    }
    Py_ssize_t plen = PyBytes_GET_SIZE(args[0]);
    if (plen > 8) {
        PyErr_SetString(PyExc_ValueError, "emit_small: prefix longer than 8 bytes");
        return NULL;
    }
    long long value = PyLong_AsLongLong(args[1]);
    uint64_t uvalue = 0;
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        if (as_u64(args[1], &uvalue) < 0) {
            return NULL;
        }
        value = 0;  /* >= 0: has a value */
    }
    else if (value < -1) {
        PyErr_Format(PyExc_ValueError, "uvarint cannot encode negative value %lld", value);
        return NULL;
    }
    else if (value >= 0) {
        uvalue = (uint64_t)value;
    }
    uint64_t now;
    if (slot_time(self, &now) < 0) {
        return NULL;
    }
    unsigned char record[8 + 2 * MAX_VARINT];
    memcpy(record, PyBytes_AS_STRING(args[0]), (size_t)plen);
    Py_ssize_t n = plen + put_uvarint(record + plen, slot_delta(self, now));
    if (value >= 0) {
        n += put_uvarint(record + n, uvalue);
    }
    if (slot_append(self, record, n) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Slot_flush(Slot *self, PyObject *unused)
{
    if (!slot_ready(self)) {
        return NULL;
    }
    if (slot_flush_impl(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The id a table maps `key` to, defining it on first use: the thread whose
 * setdefault wins takes the fresh id from `counter`.  Returns a new
 * reference, and sets *defined when this call won (the caller then writes
 * the definition record). */
static PyObject *
intern_id(PyObject *table, PyObject *counter, PyObject *key, int *defined)
{
    *defined = 0;
    PyObject *id = PyDict_GetItemWithError(table, key);
    if (id != NULL) {
        return Py_NewRef(id);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *fresh = PyIter_Next(counter);
    if (fresh == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "id counter exhausted");
        }
        return NULL;
    }
    id = PyDict_SetDefault(table, key, fresh);
    if (id == NULL) {
        Py_DECREF(fresh);
        return NULL;
    }
    *defined = id == fresh;
    Py_INCREF(id);
    Py_DECREF(fresh);
    return id;
}

/* Append a length-prefixed record: type byte, payload length, payload. */
static int
slot_append_prefixed(Slot *s, int kind, const unsigned char *payload, Py_ssize_t len)
{
    unsigned char head[1 + MAX_VARINT];
    head[0] = (unsigned char)(kind | LENGTH_PREFIXED << 6);
    Py_ssize_t h = 1 + put_uvarint(head + 1, (uint64_t)len);
    unsigned char *record = PyMem_Malloc((size_t)(h + len));
    if (record == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(record, head, (size_t)h);
    memcpy(record + h, payload, (size_t)len);
    int rc = slot_append(s, record, h + len);
    PyMem_Free(record);
    return rc;
}

static PyObject *
slot_string_id(Slot *s, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "string_id() needs a str, not %.100s",
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
    int defined;
    PyObject *id = intern_id(s->strings, s->string_ids, text, &defined);
    if (id == NULL || !defined) {
        return id;
    }
    uint64_t sid;
    PyObject *utf8 = NULL;
    unsigned char *payload = NULL;
    if (as_u64(id, &sid) < 0 || inject(AT_STRING) < 0) {
        goto fail;
    }
    utf8 = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
    if (utf8 == NULL) {
        goto fail;
    }
    Py_ssize_t len = PyBytes_GET_SIZE(utf8);
    payload = PyMem_Malloc((size_t)(MAX_VARINT + len));
    if (payload == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_ssize_t n = put_uvarint(payload, sid);
    memcpy(payload + n, PyBytes_AS_STRING(utf8), (size_t)len);
    if (slot_append_prefixed(s, EV_STRING, payload, n + len) < 0) {
        goto fail;
    }
    PyMem_Free(payload);
    Py_DECREF(utf8);
    return id;
fail:
    PyMem_Free(payload);
    Py_XDECREF(utf8);
    Py_DECREF(id);
    return NULL;
}

static PyObject *
Slot_string_id(Slot *self, PyObject *text)
{
    if (!slot_ready(self)) {
        return NULL;
    }
    return slot_string_id(self, text);
}

static PyObject *
slot_func_id(Slot *s, PyObject *key, PyObject *name, PyObject *filename, PyObject *line)
{
    PyObject *id = PyDict_GetItemWithError(s->funcs, key);
    if (id != NULL) {
        return Py_NewRef(id);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    uint64_t values[4];
    PyObject *name_id = slot_string_id(s, name);
    if (name_id == NULL) {
        return NULL;
    }
    int bad = as_u64(name_id, &values[1]);
    Py_DECREF(name_id);
    if (bad) {
        return NULL;
    }
    PyObject *file_id = slot_string_id(s, filename);
    if (file_id == NULL) {
        return NULL;
    }
    bad = as_u64(file_id, &values[2]);
    Py_DECREF(file_id);
    if (bad || as_u64(line, &values[3]) < 0) {
        return NULL;
    }
    int defined;
    id = intern_id(s->funcs, s->func_ids, key, &defined);
    if (id == NULL || !defined) {
        return id;
    }
    unsigned char record[1 + MAX_VARINT + 4 * MAX_VARINT];
    if (as_u64(id, &values[0]) < 0 || inject(AT_FUNC) < 0) {
        Py_DECREF(id);
        return NULL;
    }
    Py_ssize_t n = put_record(record, EV_FUNC, values, 4);
    if (slot_append(s, record, n) < 0) {
        Py_DECREF(id);
        return NULL;
    }
    return id;
}

static PyObject *
Slot_func_id(Slot *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!slot_ready(self)) {
        return NULL;
    }
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "func_id(key, name, filename, line)");
        return NULL;
    }
    return slot_func_id(self, args[0], args[1], args[2], args[3]);
}

/* The id of a code object's function, defined on first use.  The tables key
 * a code by its address, not by the code itself: a code object's hash is
 * computed afresh at every lookup, from all of its bytecode on 3.12+ (and
 * its constants), which made a stack of pytest's big functions cost ~1 us a
 * frame (issue 4).  `tables.codes` holds every code so keyed, so that no
 * address is reused by another code while the tables live.  The Python
 * core's ThreadSlot.code_func_id does the same in Python. */
static PyObject *
slot_code_func_id(Slot *s, PyCodeObject *code)
{
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL) {
        return NULL;
    }
    PyObject *id = Py_XNewRef(PyDict_GetItemWithError(s->funcs, key));
    if (id == NULL && !PyErr_Occurred()
        && PyDict_SetItem(s->codes, key, (PyObject *)code) == 0) {
        PyObject *first_line = PyLong_FromLong(code->co_firstlineno);
        if (first_line != NULL) {
            id = slot_func_id(s, key, code->co_qualname, code->co_filename, first_line);
            Py_DECREF(first_line);
        }
    }
    Py_DECREF(key);
    return id;
}

static PyObject *
Slot_code_func_id(Slot *self, PyObject *code)
{
    if (!slot_ready(self)) {
        return NULL;
    }
    if (!PyCode_Check(code)) {
        PyErr_SetString(PyExc_TypeError, "code_func_id(code): a code object");
        return NULL;
    }
    return slot_code_func_id(self, (PyCodeObject *)code);
}

/* The Stack record's payload: id, frame count, then (func id, line) pairs. */
static unsigned char *
stack_payload(uint64_t kid, PyObject *frames, Py_ssize_t *len)
{
    PyObject *seq = PySequence_Fast(frames, "a stack must be a sequence of (func_id, line)");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    unsigned char *payload = PyMem_Malloc((size_t)(2 + 2 * count) * MAX_VARINT);
    if (payload == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t n = put_uvarint(payload, kid);
    n += put_uvarint(payload + n, (uint64_t)count);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *frame = PySequence_Fast_GET_ITEM(seq, i);
        uint64_t fid, line;
        if (!PyTuple_Check(frame) || PyTuple_GET_SIZE(frame) != 2) {
            PyErr_SetString(PyExc_ValueError, "a stack frame must be a (func_id, line) tuple");
            goto fail;
        }
        if (as_u64(PyTuple_GET_ITEM(frame, 0), &fid) < 0
            || as_u64(PyTuple_GET_ITEM(frame, 1), &line) < 0) {
            goto fail;
        }
        n += put_uvarint(payload + n, fid);
        n += put_uvarint(payload + n, line);
    }
    Py_DECREF(seq);
    *len = n;
    return payload;
fail:
    Py_DECREF(seq);
    PyMem_Free(payload);
    return NULL;
}

static PyObject *
slot_stack_id(Slot *s, PyObject *frames)
{
    Py_ssize_t size = PyObject_Length(frames);
    if (size < 0) {
        return NULL;
    }
    if (size == 0) {
        return PyLong_FromLong(0);
    }
    int defined;
    PyObject *id = intern_id(s->stacks, s->stack_ids, frames, &defined);
    if (id == NULL || !defined) {
        return id;
    }
    uint64_t kid;
    if (as_u64(id, &kid) < 0 || inject(AT_STACK) < 0) {
        Py_DECREF(id);
        return NULL;
    }
    Py_ssize_t len;
    unsigned char *payload = stack_payload(kid, frames, &len);
    if (payload == NULL) {
        Py_DECREF(id);
        return NULL;
    }
    int rc = slot_append_prefixed(s, EV_STACK, payload, len);
    PyMem_Free(payload);
    if (rc < 0) {
        Py_DECREF(id);
        return NULL;
    }
    return id;
}

static PyObject *
Slot_stack_id(Slot *self, PyObject *frames)
{
    if (!slot_ready(self)) {
        return NULL;
    }
    return slot_stack_id(self, frames);
}

/* The id of the stack that starts at `frame` (innermost; None for none): up
 * to `max_frames` (func id, line) pairs, leaving out the frames whose code's
 * file name starts with `own_prefix` (pytrace's own), each function defined
 * on first use; 0 if nothing is left.  The Python core's ThreadSlot does the
 * same in Python.  Stacks are taken per event (CPU samples, GC starts,
 * waits), through whatever depth the program runs at: pytest's stacks are
 * some 50 frames deep, ~15 us a stack walked in Python (issue 4). */
static PyObject *
Slot_frame_stack_id(Slot *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!slot_ready(self)) {
        return NULL;
    }
    if (nargs != 3 || !PyUnicode_Check(args[1])
        || (args[0] != Py_None && !PyFrame_Check(args[0]))) {
        PyErr_SetString(PyExc_TypeError,
                        "frame_stack_id(frame or None, own_prefix: str, max_frames: int)");
        return NULL;
    }
    PyObject *prefix = args[1];
    Py_ssize_t max_frames = PyLong_AsSsize_t(args[2]);
    if (max_frames == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *frames = PyList_New(0);
    if (frames == NULL) {
        return NULL;
    }
    PyFrameObject *frame = args[0] == Py_None ? NULL : (PyFrameObject *)Py_NewRef(args[0]);
    while (frame != NULL && PyList_GET_SIZE(frames) < max_frames) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        int own = PyUnicode_Tailmatch(code->co_filename, prefix, 0, PY_SSIZE_T_MAX, -1);
        PyObject *pair = NULL;
        if (own == 0) {
            PyObject *fid = slot_code_func_id(self, code);
            int line = PyFrame_GetLineNumber(frame);
            pair = fid == NULL ? NULL : Py_BuildValue("(Ni)", fid, line < 0 ? 0 : line);
        }
        Py_DECREF(code);
        if (own < 0 || (own == 0 && (pair == NULL || PyList_Append(frames, pair) < 0))) {
            Py_XDECREF(pair);
            Py_DECREF(frame);
            Py_DECREF(frames);
            return NULL;
        }
        Py_XDECREF(pair);
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    PyObject *stack = PyList_AsTuple(frames);
    Py_DECREF(frames);
    if (stack == NULL) {
        return NULL;
    }
    PyObject *id = slot_stack_id(self, stack);
    Py_DECREF(stack);
    return id;
}

static PyObject *
Slot_get_buf(Slot *self, void *closure)
{
    if (self->buf == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef((PyObject *)self->buf);
}

/* ``slot.buf += data`` (pytrace/hooks/calls.py) appends in place and then
 * stores the same bytearray back; storing another bytearray replaces the
 * live buffer, as on the Python slot. */
static int
Slot_set_buf(Slot *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyByteArray_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "ThreadSlot.buf must be a bytearray");
        return -1;
    }
    PyObject *old = (PyObject *)self->buf;
    self->buf = (PyByteArrayObject *)Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

static PyObject *
Slot_get_flushing(Slot *self, void *closure)
{
    return PyBool_FromLong(self->flushing);
}

static PyObject *
Slot_get_unsent(Slot *self, void *closure)
{
    return Py_NewRef(self->unsent != NULL ? self->unsent : Py_None);
}

static PyMethodDef Slot_methods[] = {
    {"emit", (PyCFunction)(void (*)(void))Slot_emit, METH_FASTCALL,
     "emit(kind_id, *args): one timed event with already-resolved integer arguments."},
    {"emit_small", (PyCFunction)(void (*)(void))Slot_emit_small, METH_FASTCALL,
     "emit_small(prefix, value): a timed event with at most one argument (-1: none)."},
    {"flush", (PyCFunction)Slot_flush, METH_NOARGS,
     "Hand the live batch to the writer and start the next one."},
    {"string_id", (PyCFunction)Slot_string_id, METH_O, "Id of a string, defined on first use."},
    {"code_func_id", (PyCFunction)Slot_code_func_id, METH_O,
     "code_func_id(code): id of a code object's function, defined on first use."},
    {"func_id", (PyCFunction)(void (*)(void))Slot_func_id, METH_FASTCALL,
     "func_id(key, name, filename, line): id of a function, defined on first use."},
    {"stack_id", (PyCFunction)Slot_stack_id, METH_O,
     "Id of a stack of (func_id, line) frames, innermost first; 0 for none."},
    {"frame_stack_id", (PyCFunction)(void (*)(void))Slot_frame_stack_id, METH_FASTCALL,
     "frame_stack_id(frame, own_prefix, max_frames): id of the stack from frame outwards, "
     "frames of files starting with own_prefix left out; 0 for none."},
    {NULL},
};

static PyMemberDef Slot_members[] = {
    {"tid", T_OBJECT, offsetof(Slot, tid_obj), READONLY, NULL},
    {"count", T_PYSSIZET, offsetof(Slot, count), 0, NULL},
    {"last", T_ULONGLONG, offsetof(Slot, last), 0, NULL},
    {"seq", T_ULONGLONG, offsetof(Slot, seq), READONLY, NULL},
    {"limit", T_PYSSIZET, offsetof(Slot, limit), READONLY, NULL},
    {"unsent_count", T_PYSSIZET, offsetof(Slot, unsent_count), READONLY, NULL},
    {"writer", T_OBJECT, offsetof(Slot, writer), READONLY, NULL},
    {"tables", T_OBJECT, offsetof(Slot, tables), READONLY, NULL},
    {"clock", T_OBJECT, offsetof(Slot, clock), READONLY, NULL},
    {NULL},
};

static PyGetSetDef Slot_getset[] = {
    {"buf", (getter)Slot_get_buf, (setter)Slot_set_buf, "The live batch (a bytearray starting with its header).",
     NULL},
    {"flushing", (getter)Slot_get_flushing, NULL, "True while a flush is running.", NULL},
    {"unsent", (getter)Slot_get_unsent, NULL,
     "A swapped-out batch the writer may not have yet (an interrupted hand-over), or None.",
     NULL},
    {NULL},
};

static PyTypeObject SlotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pytrace._core.ThreadSlot",
    .tp_doc = "One thread's buffer, and the only way to write into it (the C core).",
    .tp_basicsize = sizeof(Slot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Slot_init,
    .tp_dealloc = (destructor)Slot_dealloc,
    .tp_traverse = (traverseproc)Slot_traverse,
    .tp_clear = (inquiry)Slot_clear,
    .tp_methods = Slot_methods,
    .tp_members = Slot_members,
    .tp_getset = Slot_getset,
};

/* ------------------------------------------------------------------------ */
/* Call events: the hot paths of the call backends                          */
/* ------------------------------------------------------------------------ */

/* pytrace/hooks/monitoring_c.py and setprofile_c.py drive a Calls object:
 * they do everything that happens once (claiming the tool id, deciding
 * whether a code object is traced, a thread's OpenFrames, C function
 * names), and it does what happens on every event, with the semantics of
 * the Python backends (pytrace/hooks/calls.py, monitoring.py,
 * setprofile.py): per thread a depth counting the frames open on the
 * recorded stack, pushes deeper than max_depth counted but not recorded,
 * pops never outnumbering pushes, C returns matched to their recorded call.
 *
 * Cold paths call back into the Python driver ("glue") by name:
 *   c_decide(code, frame) -> int    function id, or 0 if not traced
 *   c_lookup(code) -> int or None   the same if already decided, else None
 *   c_open_thread(frame) -> (slot, depth)
 *   c_first_start(code) -> int      offset of a generator's first RESUME, -1 if none
 *   c_exits(code) -> dict           setprofile: f_lasti -> False return / True yield
 *   c_function_id(slot, func) -> int
 *   c_fail(exc)                     an internal error: stop tracing
 *
 * Per-thread state lives in C: each thread finds its own through a
 * thread-local pointer tagged with the Calls object's generation number, so
 * a pointer left by an earlier (freed) Calls object is never followed.
 * The states themselves belong to the Calls object and die with it. */

enum { K_ENTER, K_EXIT, K_UNWIND, K_YIELD, K_RESUME, K_C_ENTER, K_C_EXIT, K_COUNT };

typedef struct {
    PyObject *func;   /* strong; NULL for setprofile's frame markers */
    PyObject *where;  /* strong: the calling code (monitoring) or frame (setprofile) */
    int offset;
} OpenCCall;

typedef struct CallState {
    struct CallState *next;
    PyObject *slot;           /* strong; None for a muted thread */
    int c_slot;               /* slot is a _core.ThreadSlot */
    int muted;                /* one of pytrace's own threads: nothing is recorded */
    Py_ssize_t depth;
    OpenCCall *c_calls;
    Py_ssize_t n_c_calls, cap_c_calls;
    PyObject *thrown;         /* strong: setprofile's generator frame just thrown into */
} CallState;

typedef struct {
    int lasti;
    int kind;                 /* K_EXIT or K_YIELD */
} ExitPosition;

typedef struct {
    PyObject *code;           /* strong; the key */
    int traced;
    uint64_t fid;
    unsigned char fid_bytes[MAX_VARINT];
    int fid_len;
    int first_start;          /* -2: not known yet; -1: never suspends */
    int exits_known;
    int n_exits;
    ExitPosition *exits;
} CodeEntry;

/* A C function's id.  Keyed by the function object itself (module
 * functions, method descriptors: long-lived), or for bound builtin methods
 * (made afresh for each call) by their method definition, with the class
 * they belong to: the same (class, name) key as CFunctions.func_id. */
typedef struct FuncEntry {
    PyObject *key;            /* strong; or the PyMethodDef (not an object) */
    PyObject *cls;            /* strong, bound methods only */
    struct FuncEntry *next;   /* the same method definition, another class */
    unsigned char fid_bytes[MAX_VARINT];
    int fid_len;
    uint64_t fid;
} FuncEntry;

/* Open-addressing tables keyed by object address (the tables hold a
 * reference, so an address cannot be reused while it is a key). */
typedef struct {
    void **items;
    Py_ssize_t size, used;    /* size: power of two */
} PtrTable;

typedef struct {
    PyObject_HEAD
    PyObject *glue;
    PyObject *by_ident;       /* the session's slots.by_ident */
    PyObject *disable;        /* sys.monitoring.DISABLE, or None */
    PyObject *missing;        /* sys.monitoring.MISSING, or None */
    Py_ssize_t max_depth;
    int c_calls;
    int stopped;              /* setprofile: set by stop() */
    uint64_t generation;
    unsigned char prefix[K_COUNT];
    PtrTable codes;           /* of CodeEntry*, keyed by code */
    PtrTable funcs;           /* of FuncEntry*, keyed by C function */
    PtrTable methods;         /* of FuncEntry* chains, keyed by PyMethodDef */
    CallState *states;
} Calls;

static uint64_t calls_generations = 0;
/* One thread-local variable (see TLS_MODEL). */
typedef struct {
    uint64_t generation;
    CallState *state;
} ThreadCalls;
static _Thread_local ThreadCalls tls_calls TLS_MODEL = {0, NULL};

static PyObject *str_decide, *str_lookup, *str_open_thread, *str_first_start, *str_exits,
    *str_c_function, *str_fail;

static inline size_t
ptr_hash(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    v ^= v >> 17;
    return (size_t)(v * 0x9E3779B97F4A7C15ull);
}

/* The item keyed by `key`; each item's first field is its key. */
static inline void *
table_get(PtrTable *t, PyObject *key)
{
    if (t->size == 0) {
        return NULL;
    }
    size_t mask = (size_t)t->size - 1;
    for (size_t i = ptr_hash(key) & mask;; i = (i + 1) & mask) {
        void *item = t->items[i];
        if (item == NULL) {
            return NULL;
        }
        if (*(PyObject **)item == key) {
            return item;
        }
    }
}

static int
table_put(PtrTable *t, void *item)
{
    if ((t->used + 1) * 2 > t->size) {
        Py_ssize_t size = t->size ? t->size * 2 : 64;
        void **items = PyMem_Calloc((size_t)size, sizeof(void *));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t j = 0; j < t->size; j++) {
            void *old = t->items[j];
            if (old != NULL) {
                size_t mask = (size_t)size - 1, i = ptr_hash(*(PyObject **)old) & mask;
                while (items[i] != NULL) {
                    i = (i + 1) & mask;
                }
                items[i] = old;
            }
        }
        PyMem_Free(t->items);
        t->items = items;
        t->size = size;
    }
    size_t mask = (size_t)t->size - 1, i = ptr_hash(*(PyObject **)item) & mask;
    while (t->items[i] != NULL) {
        i = (i + 1) & mask;
    }
    t->items[i] = item;
    t->used++;
    return 0;
}

static void
code_entry_free(CodeEntry *e)
{
    Py_XDECREF(e->code);
    PyMem_Free(e->exits);
    PyMem_Free(e);
}

static void
func_entry_free(FuncEntry *e)
{
    Py_XDECREF(e->key);
    PyMem_Free(e);
}

static void
method_entry_free(FuncEntry *e)
{
    while (e != NULL) {
        FuncEntry *next = e->next;
        Py_XDECREF(e->cls);
        PyMem_Free(e);
        e = next;
    }
}

static void
table_clear(PtrTable *t, void (*free_item)(void *))
{
    for (Py_ssize_t i = 0; i < t->size; i++) {
        if (t->items[i] != NULL) {
            free_item(t->items[i]);
        }
    }
    PyMem_Free(t->items);
    t->items = NULL;
    t->size = t->used = 0;
}

static void
state_free(CallState *st)
{
    Py_XDECREF(st->slot);
    for (Py_ssize_t i = 0; i < st->n_c_calls; i++) {
        Py_XDECREF(st->c_calls[i].func);
        Py_XDECREF(st->c_calls[i].where);
    }
    PyMem_Free(st->c_calls);
    Py_XDECREF(st->thrown);
    PyMem_Free(st);
}

/* glue.name(*args) with headroom (see above); args end with NULL. */
static PyObject *
glue_call(Calls *self, PyObject *name, PyObject *a, PyObject *b)
{
    headroom_enter();
    PyObject *r = PyObject_CallMethodObjArgs(self->glue, name, a, b, NULL);
    headroom_exit();
    return r;
}

/* An internal error inside a callback: an Exception goes to glue.fail (which
 * stops tracing with one warning) and the program never sees it; anything
 * else (KeyboardInterrupt, SystemExit) propagates, as from the Python
 * backends.  Returns 0 if the error was handled. */
static int
calls_fail(Calls *self)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyObject *r = glue_call(self, str_fail, value ? value : Py_None, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;
        }
        PyErr_WriteUnraisable(self->glue);
    }
    Py_XDECREF(r);
    return 0;
}

/* Write one call event: prefix, tick delta, then the encoded argument. */
static int
calls_write(Calls *self, CallState *st, int kind, const unsigned char *arg, int arg_len,
            uint64_t arg_value)
{
    if (st->c_slot) {
        Slot *s = (Slot *)st->slot;
        uint64_t now;
        if (slot_time(s, &now) < 0) {
            return -1;
        }
        unsigned char record[SMALL_RECORD];
        record[0] = self->prefix[kind];
        Py_ssize_t n = 1 + put_uvarint(record + 1, slot_delta(s, now));
        if (arg_len) {
            memcpy(record + n, arg, MAX_VARINT);  /* arg is a MAX_VARINT array */
            n += arg_len;
        }
        if (bytes_append_small(s->buf, record, n) < 0) {
            return -1;
        }
        s->count++;
        return Py_SIZE(s->buf) >= s->limit ? slot_flush_impl(s) : 0;
    }
    /* A slot of the Python core (a thread given one directly): its own method. */
    PyObject *prefix = PyBytes_FromStringAndSize((const char *)&self->prefix[kind], 1);
    PyObject *value = arg_len ? PyLong_FromUnsignedLongLong(arg_value) : PyLong_FromLong(-1);
    PyObject *r = NULL;
    if (prefix != NULL && value != NULL) {
        headroom_enter();
        r = PyObject_CallMethod(st->slot, "emit_small", "OO", prefix, value);
        headroom_exit();
    }
    Py_XDECREF(prefix);
    Py_XDECREF(value);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The calling thread's state for this Calls object, or NULL. */
static inline CallState *
calls_state(Calls *self)
{
    return tls_calls.generation == self->generation ? tls_calls.state : NULL;
}

/* A new state for the calling thread: its slot and its open frames from
 * `frame` outwards (OpenFrames), from the glue. */
static CallState *
calls_open_thread(Calls *self, PyObject *frame)
{
    PyObject *r = glue_call(self, str_open_thread, frame ? frame : Py_None, NULL);
    if (r == NULL) {
        return NULL;
    }
    Py_ssize_t depth;
    PyObject *slot;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2
        || (depth = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 1))) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "open_thread() must return (slot, depth)");
        }
        Py_DECREF(r);
        return NULL;
    }
    slot = PyTuple_GET_ITEM(r, 0);
    CallState *st = PyMem_Calloc(1, sizeof(CallState));
    if (st == NULL) {
        Py_DECREF(r);
        PyErr_NoMemory();
        return NULL;
    }
    st->slot = Py_NewRef(slot);
    st->c_slot = Py_IS_TYPE(slot, &SlotType);
    st->muted = slot == Py_None;
    st->depth = depth;
    Py_DECREF(r);
    st->next = self->states;
    self->states = st;
    tls_calls.generation = self->generation;
    tls_calls.state = st;
    return st;
}

/* Has the calling thread's slot changed (a new thread reusing a finished
 * one's ident, or a slot bound to a reserved tid)?  Asked only at depth 0. */
static int
calls_slot_changed(Calls *self, CallState *st)
{
    PyObject *ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (ident == NULL) {
        return -1;
    }
    PyObject *slot = PyDict_GetItemWithError(self->by_ident, ident);
    Py_DECREF(ident);
    if (slot == NULL && PyErr_Occurred()) {
        return -1;
    }
    return slot != st->slot;
}

static CodeEntry *
calls_new_entry(Calls *self, PyObject *code, uint64_t fid)
{
    CodeEntry *e = PyMem_Calloc(1, sizeof(CodeEntry));
    if (e == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    e->code = Py_NewRef(code);
    e->traced = fid != 0;
    e->fid = fid;
    e->fid_len = (int)put_uvarint(e->fid_bytes, fid);
    e->first_start = -2;
    if (table_put(&self->codes, e) < 0) {
        code_entry_free(e);
        return NULL;
    }
    return e;
}

/* The entry of `code`, deciding about it (glue.decide) on first sight. */
static CodeEntry *
calls_entry(Calls *self, PyObject *code, PyObject *frame)
{
    CodeEntry *e = table_get(&self->codes, code);
    if (e != NULL) {
        return e;
    }
    PyObject *r = glue_call(self, str_decide, code, frame ? frame : Py_None);
    if (r == NULL) {
        return NULL;
    }
    uint64_t fid;
    int bad = as_u64(r, &fid);
    Py_DECREF(r);
    if (bad) {
        return NULL;
    }
    /* The glue may have run code that decided it meanwhile. */
    e = table_get(&self->codes, code);
    return e != NULL ? e : calls_new_entry(self, code, fid);
}

/* The entry of `code` if it has been decided (by C or by the glue, e.g.
 * while it wrote a thread's OpenFrames), else NULL with no error set. */
static CodeEntry *
calls_decided_entry(Calls *self, PyObject *code)
{
    CodeEntry *e = table_get(&self->codes, code);
    if (e != NULL) {
        return e;
    }
    PyObject *r = glue_call(self, str_lookup, code, NULL);
    if (r == NULL || r == Py_None) {
        Py_XDECREF(r);
        return NULL;
    }
    uint64_t fid;
    int bad = as_u64(r, &fid);
    Py_DECREF(r);
    if (bad) {
        return NULL;
    }
    e = table_get(&self->codes, code);
    return e != NULL ? e : calls_new_entry(self, code, fid);
}

static int
calls_first_start(Calls *self, CodeEntry *e)
{
    if (e->first_start == -2) {
        PyObject *r = glue_call(self, str_first_start, e->code, NULL);
        if (r == NULL) {
            return -2;
        }
        long v = PyLong_AsLong(r);
        Py_DECREF(r);
        if (v == -1 && PyErr_Occurred()) {
            return -2;
        }
        e->first_start = (int)v;
    }
    return e->first_start;
}

/* A push (CallEnter, GenResume): depth + 1, recorded unless too deep. */
static inline int
calls_push(Calls *self, CallState *st, int kind, CodeEntry *e)
{
    Py_ssize_t depth = ++st->depth;
    if (depth > self->max_depth) {
        return 0;
    }
    return calls_write(self, st, kind, e->fid_bytes, e->fid_len, e->fid);
}

/* A pop: never below zero; recorded unless it closes a too-deep push. */
static inline int
calls_pop(Calls *self, CallState *st, int kind)
{
    Py_ssize_t depth = st->depth;
    if (!depth) {
        return 0;
    }
    st->depth = depth - 1;
    if (depth > self->max_depth) {
        return 0;
    }
    return calls_write(self, st, kind, NULL, 0, 0);
}

static int
calls_c_calls_push(CallState *st, PyObject *func, PyObject *where, int offset)
{
    if (st->n_c_calls == st->cap_c_calls) {
        Py_ssize_t cap = st->cap_c_calls ? st->cap_c_calls * 2 : 16;
        OpenCCall *grown = PyMem_Realloc(st->c_calls, sizeof(OpenCCall) * (size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->c_calls = grown;
        st->cap_c_calls = cap;
    }
    OpenCCall *c = &st->c_calls[st->n_c_calls++];
    c->func = Py_XNewRef(func);
    c->where = Py_NewRef(where);
    c->offset = offset;
    return 0;
}

/* Pop the innermost open C call if it is (func, where, offset); 1 if it was. */
static int
calls_c_calls_pop(CallState *st, PyObject *func, PyObject *where, int offset)
{
    if (st->n_c_calls == 0) {
        return 0;
    }
    OpenCCall *c = &st->c_calls[st->n_c_calls - 1];
    if (c->func != func || c->where != where || c->offset != offset) {
        return 0;
    }
    st->n_c_calls--;
    Py_XDECREF(c->func);
    Py_DECREF(c->where);
    return 1;
}

/* The class a bound builtin method belongs to (NULL: not one), as
 * CFunctions.func_id: its self if that is a class (a classmethod), else
 * the type of its self.  Module functions have the module as self. */
static PyObject *
bound_method_class(PyObject *func)
{
    if (!PyCFunction_Check(func)) {
        return NULL;
    }
    PyObject *owner = ((PyCFunctionObject *)func)->m_self;
    if (owner == NULL || PyModule_Check(owner)) {
        return NULL;
    }
    return PyType_Check(owner) ? owner : (PyObject *)Py_TYPE(owner);
}

/* The cached id entry of `func` (`cls`, `ml`: see bound_method_class). */
static FuncEntry *
c_function_entry(Calls *self, PyObject *func, PyObject *cls, PyObject *ml)
{
    if (cls == NULL) {
        return table_get(&self->funcs, func);
    }
    for (FuncEntry *e = table_get(&self->methods, ml); e != NULL; e = e->next) {
        if (e->cls == cls) {
            return e;
        }
    }
    return NULL;
}

static int
c_function_cache(Calls *self, PyObject *func, PyObject *cls, PyObject *ml, uint64_t fid)
{
    FuncEntry *f = PyMem_Calloc(1, sizeof(FuncEntry));
    if (f == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    f->fid = fid;
    f->fid_len = (int)put_uvarint(f->fid_bytes, fid);
    if (cls == NULL) {
        f->key = Py_NewRef(func);
        if (table_put(&self->funcs, f) < 0) {
            func_entry_free(f);
            return -1;
        }
        return 0;
    }
    f->key = ml;  /* not an object: method_entry_free leaves it alone */
    f->cls = Py_NewRef(cls);
    FuncEntry *chain = table_get(&self->methods, ml);
    if (chain != NULL) {  /* the same method of another class */
        f->next = chain->next;
        chain->next = f;
        return 0;
    }
    if (table_put(&self->methods, f) < 0) {
        method_entry_free(f);
        return -1;
    }
    return 0;
}

/* CCallEnter for `func`, its id cached here after the first time (the
 * glue's CFunctions.func_id names it). */
/* The cached id entry of C function `func`, naming it (the glue's
 * CFunctions.func_id) the first time. */
static FuncEntry *
calls_c_function(Calls *self, CallState *st, PyObject *func)
{
    PyObject *cls = bound_method_class(func);
    PyObject *ml = cls ? (PyObject *)((PyCFunctionObject *)func)->m_ml : NULL;
    FuncEntry *f = c_function_entry(self, func, cls, ml);
    if (f != NULL) {
        return f;
    }
    PyObject *r = glue_call(self, str_c_function, st->slot, func);
    if (r == NULL) {
        return NULL;
    }
    uint64_t fid;
    int bad = as_u64(r, &fid);
    Py_DECREF(r);
    /* The glue ran Python code, which may have cached it meanwhile. */
    if (bad || ((f = c_function_entry(self, func, cls, ml)) == NULL
                && c_function_cache(self, func, cls, ml, fid) < 0)) {
        return NULL;
    }
    return f != NULL ? f : c_function_entry(self, func, cls, ml);
}

/* A C call of `func`: a marker on the thread's C call stack (`marker`,
 * `where`, `offset`: what calls_c_calls_pop will match), depth + 1, and
 * CCallEnter unless too deep.  On failure the thread's stacks are left as
 * they were. */
static int
calls_c_enter(Calls *self, CallState *st, PyObject *func, PyObject *marker, PyObject *where,
              int offset)
{
    FuncEntry *f = NULL;
    if (st->depth + 1 <= self->max_depth && (f = calls_c_function(self, st, func)) == NULL) {
        return -1;
    }
    if (calls_c_calls_push(st, marker, where, offset) < 0) {
        return -1;
    }
    if (++st->depth > self->max_depth) {
        return 0;
    }
    return calls_write(self, st, K_C_ENTER, f->fid_bytes, f->fid_len, f->fid);
}

static int
calls_c_exit(Calls *self, CallState *st)
{
    return calls_pop(self, st, K_C_EXIT);
}

/* -- sys.monitoring callbacks (3.12+) ---------------------------------------- */

/* The frame that fired the event (a C callback has no frame of its own). */
static PyObject *
event_frame(void)
{
    return (PyObject *)PyEval_GetFrame();  /* borrowed */
}

/* The back frame of `frame` as a new reference (None at the bottom). */
static PyObject *
back_frame(PyObject *frame)
{
    if (frame == NULL) {
        return Py_NewRef(Py_None);
    }
    PyFrameObject *back = PyFrame_GetBack((PyFrameObject *)frame);
    return back ? (PyObject *)back : Py_NewRef(Py_None);
}

/* PY_START / PY_RESUME (and PY_THROW's push): as monitoring.py's on_push. */
static PyObject *
calls_on_push(Calls *self, PyObject *code, int kind)
{
    CodeEntry *e = table_get(&self->codes, code);
    if (e == NULL) {
        e = calls_entry(self, code, event_frame());
        if (e == NULL) {
            goto error;
        }
    }
    if (!e->traced) {
        return Py_NewRef(self->disable);
    }
    CallState *st = calls_state(self);
    if (st != NULL && st->muted) {
        Py_RETURN_NONE;
    }
    if (st == NULL || st->depth == 0) {
        int changed = st == NULL ? 1 : calls_slot_changed(self, st);
        if (changed < 0) {
            goto error;
        }
        if (changed) {
            PyObject *back = back_frame(event_frame());
            st = calls_open_thread(self, back);
            Py_DECREF(back);
            if (st == NULL) {
                goto error;
            }
        }
    }
    if (!st->muted && calls_push(self, st, kind, e) < 0) {
        goto error;
    }
    Py_RETURN_NONE;
error:
    if (calls_fail(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* PY_RETURN / PY_YIELD (local) and PY_UNWIND (global): as on_pop. */
static PyObject *
calls_on_pop(Calls *self, PyObject *code, int kind, int global_event)
{
    if (global_event) {
        CodeEntry *e = calls_decided_entry(self, code);
        if (e == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            Py_RETURN_NONE;
        }
        if (!e->traced) {
            Py_RETURN_NONE;
        }
    }
    CallState *st = calls_state(self);
    if (st == NULL) {
        st = calls_open_thread(self, event_frame());
        if (st == NULL) {
            goto error;
        }
    }
    if (!st->muted && calls_pop(self, st, kind) < 0) {
        goto error;
    }
    Py_RETURN_NONE;
error:
    if (calls_fail(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
check_args(Calls *self, Py_ssize_t nargs, Py_ssize_t want, const char *name)
{
    if (self->glue == NULL) {
        PyErr_SetString(PyExc_ValueError, "Calls was not initialised");
        return -1;
    }
    if (nargs < want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments", name, want);
        return -1;
    }
    return 0;
}

static PyObject *
Calls_py_start(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(self, nargs, 2, "py_start") < 0) {
        return NULL;
    }
    return calls_on_push(self, args[0], K_ENTER);
}

static PyObject *
Calls_py_resume(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(self, nargs, 2, "py_resume") < 0) {
        return NULL;
    }
    return calls_on_push(self, args[0], K_RESUME);
}

static PyObject *
Calls_py_return(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(self, nargs, 3, "py_return") < 0) {
        return NULL;
    }
    return calls_on_pop(self, args[0], K_EXIT, 0);
}

static PyObject *
Calls_py_yield(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(self, nargs, 3, "py_yield") < 0) {
        return NULL;
    }
    return calls_on_pop(self, args[0], K_YIELD, 0);
}

static PyObject *
Calls_py_unwind(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(self, nargs, 3, "py_unwind") < 0) {
        return NULL;
    }
    return calls_on_pop(self, args[0], K_UNWIND, 1);
}

/* PY_THROW: throw()/close() resumes a generator, or starts it if it never
 * ran.  Only decided, traced code is pushed (monitoring.py's _throw). */
static PyObject *
Calls_py_throw(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(self, nargs, 3, "py_throw") < 0) {
        return NULL;
    }
    CodeEntry *e = calls_decided_entry(self, args[0]);
    if (e == NULL && PyErr_Occurred()) {
        if (calls_fail(self) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (e == NULL || !e->traced) {
        Py_RETURN_NONE;
    }
    long offset = PyLong_AsLong(args[1]);
    int start = offset == -1 && PyErr_Occurred() ? -2 : calls_first_start(self, e);
    if (start == -2) {
        if (calls_fail(self) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *r = calls_on_push(self, args[0], offset <= start ? K_ENTER : K_RESUME);
    if (r == self->disable) {  /* cannot DISABLE a PY_THROW */
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    return r;
}

/* Is `func` a C function in the interpreter profiler's sense: a builtin
 * function or bound builtin method, or a method descriptor called with its
 * self (monitoring.py's is_c_function). */
static inline int
is_c_function(Calls *self, PyObject *func, PyObject *arg0)
{
    if (PyCFunction_Check(func)) {
        return 1;
    }
    if (Py_IS_TYPE(func, &PyMethodDescr_Type)) {
        return arg0 != self->missing;
    }
    return 0;
}

static PyObject *
Calls_call(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(self, nargs, 4, "call") < 0) {
        return NULL;
    }
    PyObject *code = args[0], *func = args[2];
    if (!is_c_function(self, func, args[3])) {
        Py_RETURN_NONE;
    }
    int offset = (int)PyLong_AsLong(args[1]);
    if (offset == -1 && PyErr_Occurred()) {
        goto error;
    }
    CallState *st = calls_state(self);
    if (st == NULL) {
        st = calls_open_thread(self, event_frame());
        if (st == NULL) {
            goto error;
        }
    }
    if (st->muted) {
        Py_RETURN_NONE;
    }
    if (calls_c_enter(self, st, func, func, code, offset) < 0) {
        goto error;
    }
    Py_RETURN_NONE;
error:
    if (calls_fail(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Calls_c_return(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(self, nargs, 4, "c_return") < 0) {
        return NULL;
    }
    CallState *st = calls_state(self);
    if (st == NULL || st->muted) {
        Py_RETURN_NONE;
    }
    int offset = (int)PyLong_AsLong(args[1]);
    if (offset == -1 && PyErr_Occurred()) {
        return calls_fail(self) < 0 ? NULL : Py_NewRef(Py_None);
    }
    if (!calls_c_calls_pop(st, args[2], args[0], offset)) {
        Py_RETURN_NONE;
    }
    if (calls_c_exit(self, st) < 0 && calls_fail(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The calling thread's state now (OpenFrames from `frame`), as the
 * monitoring backend's start() takes it before events flow. */
static PyObject *
Calls_begin_thread(Calls *self, PyObject *frame)
{
    if (check_args(self, 1, 1, "begin_thread") < 0) {
        return NULL;
    }
    if (calls_open_thread(self, frame == Py_None ? NULL : frame) == NULL) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- the profile function (sys.setprofile's C level) ------------------------- */

static int
calls_exit_kind(Calls *self, CodeEntry *e, int lasti)
{
    if (!e->exits_known) {
        PyObject *r = glue_call(self, str_exits, e->code, NULL);
        if (r == NULL) {
            return -1;
        }
        if (!PyDict_Check(r)) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "exits() must return a dict");
            return -1;
        }
        Py_ssize_t n = PyDict_GET_SIZE(r), pos = 0, i = 0;
        ExitPosition *exits = PyMem_Calloc((size_t)(n ? n : 1), sizeof(ExitPosition));
        if (exits == NULL) {
            Py_DECREF(r);
            PyErr_NoMemory();
            return -1;
        }
        PyObject *key, *value;
        while (PyDict_Next(r, &pos, &key, &value)) {
            exits[i].lasti = (int)PyLong_AsLong(key);
            exits[i].kind = PyObject_IsTrue(value) ? K_YIELD : K_EXIT;
            i++;
        }
        Py_DECREF(r);
        if (PyErr_Occurred()) {
            PyMem_Free(exits);
            return -1;
        }
        e->exits = exits;
        e->n_exits = (int)n;
        e->exits_known = 1;
    }
    for (int i = 0; i < e->n_exits; i++) {
        if (e->exits[i].lasti == lasti) {
            return e->exits[i].kind;
        }
    }
    return K_UNWIND;
}

static int
profile_call(Calls *self, CallState *st, PyFrameObject *frame)
{
    PyObject *code = (PyObject *)PyFrame_GetCode(frame);
    CodeEntry *e = table_get(&self->codes, code);
    if (e == NULL) {
        e = calls_entry(self, code, (PyObject *)frame);
    }
    Py_DECREF(code);
    if (e == NULL) {
        return -1;
    }
    if (!e->traced) {
        return 0;
    }
    /* Learn where the code returns and yields now, at its first call: its
     * first return may come at the bottom of a deep recursion, where
     * calling back into Python would fail. */
    if (!e->exits_known && calls_exit_kind(self, e, -1) < 0) {
        return -1;
    }
    int kind = K_ENTER;
    int start = calls_first_start(self, e);
    if (start == -2) {
        return -1;
    }
    if (start >= 0 && PyFrame_GetLasti(frame) > start) {
        kind = K_RESUME;
#if PY_VERSION_HEX < 0x030D0000
        /* Up to 3.12 a throw resumes at the YIELD_VALUE (setprofile.py). */
        int at = calls_exit_kind(self, e, PyFrame_GetLasti(frame));
        if (at < 0) {
            return -1;
        }
        if (at == K_YIELD) {
            Py_XSETREF(st->thrown, Py_NewRef((PyObject *)frame));
        }
#endif
    }
    return calls_push(self, st, kind, e);
}

static int
profile_return(Calls *self, CallState *st, PyFrameObject *frame, PyObject *arg)
{
    PyObject *code = (PyObject *)PyFrame_GetCode(frame);
    CodeEntry *e = calls_decided_entry(self, code);
    Py_DECREF(code);
    if (e == NULL || !e->traced) {
        return PyErr_Occurred() ? -1 : 0;
    }
    /* Before any state changes: a failure leaves the thread's stack as it was. */
    int kind = calls_exit_kind(self, e, PyFrame_GetLasti(frame));
    if (kind < 0) {
        return -1;
    }
    Py_ssize_t depth = st->depth;
    if (!depth) {
        return 0;
    }
    st->depth = depth - 1;
    if (depth > self->max_depth) {
        return 0;
    }
    if (st->thrown != NULL && st->thrown == (PyObject *)frame) {
        Py_CLEAR(st->thrown);
        /* No value: the profiler's 'return' for an exception (NULL in C). */
        if (kind == K_YIELD && (arg == NULL || arg == Py_None)) {
            kind = K_UNWIND;
        }
    }
    return calls_write(self, st, kind, NULL, 0, 0);
}

static int
profile_c_call(Calls *self, CallState *st, PyFrameObject *frame, PyObject *func)
{
    PyObject *code = (PyObject *)PyFrame_GetCode(frame);
    CodeEntry *e = calls_decided_entry(self, code);
    Py_DECREF(code);
    if (e == NULL || !e->traced) {
        return PyErr_Occurred() ? -1 : 0;
    }
    return calls_c_enter(self, st, func, NULL, (PyObject *)frame, 0);
}

static int
profile_c_return(Calls *self, CallState *st, PyFrameObject *frame)
{
    if (st->n_c_calls == 0 || st->c_calls[st->n_c_calls - 1].where != (PyObject *)frame) {
        return 0;
    }
    calls_c_calls_pop(st, NULL, (PyObject *)frame, 0);
    return calls_c_exit(self, st);
}

/* The C profile function: `obj` is the Calls object.  A thread's first
 * event makes its state (OpenFrames from the frames open before it), as
 * setprofile.py's bootstrap does.  Once the session stopped, a thread whose
 * profile function could not be removed from outside (3.11 has no API for
 * that) removes it at its next event. */
static int
calls_profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    Calls *self = (Calls *)obj;
    if (self->stopped) {
        Py_INCREF(self);  /* removing the function drops the thread's reference */
        PyEval_SetProfile(NULL, NULL);
        Py_DECREF(self);
        return 0;
    }
    CallState *st = calls_state(self);
    if (st == NULL) {
        PyObject *innermost_open =
            what == PyTrace_CALL ? back_frame((PyObject *)frame) : Py_NewRef((PyObject *)frame);
        st = calls_open_thread(self, innermost_open == Py_None ? NULL : innermost_open);
        Py_DECREF(innermost_open);
        if (st == NULL) {
            return calls_fail(self);
        }
    }
    if (st->muted) {
        return 0;
    }
    int rc;
    switch (what) {
    case PyTrace_CALL:
        rc = profile_call(self, st, frame);
        break;
    case PyTrace_RETURN:
        rc = profile_return(self, st, frame, arg);
        break;
    case PyTrace_C_CALL:
        rc = self->c_calls ? profile_c_call(self, st, frame, arg) : 0;
        break;
    case PyTrace_C_RETURN:
    case PyTrace_C_EXCEPTION:
        rc = self->c_calls ? profile_c_return(self, st, frame) : 0;
        break;
    default:
        rc = 0;
    }
    if (rc < 0) {
        return calls_fail(self);
    }
    return 0;
}

/* install_profile(frame, event, arg): from a thread's Python bootstrap
 * profile function (threading.setprofile): install the C profile function
 * in this thread and handle the event that reached the bootstrap. */
static PyObject *
Calls_install_profile(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(self, nargs, 3, "install_profile") < 0) {
        return NULL;
    }
    PyObject *frame = args[0], *event = args[1], *arg = args[2];
    if (!PyFrame_Check(frame) || !PyUnicode_Check(event)) {
        PyErr_SetString(PyExc_TypeError, "install_profile(frame, event, arg)");
        return NULL;
    }
    static const char *const names[] = {"call", "return", "c_call", "c_return", "c_exception"};
    static const int whats[] = {PyTrace_CALL, PyTrace_RETURN, PyTrace_C_CALL, PyTrace_C_RETURN,
                                PyTrace_C_EXCEPTION};
    int what = -1;
    for (int i = 0; i < 5; i++) {
        if (PyUnicode_CompareWithASCIIString(event, names[i]) == 0) {
            what = whats[i];
        }
    }
    if (what < 0) {
        PyErr_Format(PyExc_ValueError, "unknown profile event %R", event);
        return NULL;
    }
    PyEval_SetProfile(calls_profile, (PyObject *)self);
    if (calls_profile((PyObject *)self, (PyFrameObject *)frame, what, arg) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* stop_profiling(): after the glue removed the profile functions it can,
 * every thread still running this one removes it at its next event. */
static PyObject *
Calls_stop_profiling(Calls *self, PyObject *unused)
{
    self->stopped = 1;
    Py_RETURN_NONE;
}

static int
Calls_init(Calls *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"glue", "by_ident", "prefixes", "max_depth", "c_calls",
                             "disable", "missing", NULL};
    PyObject *glue, *by_ident, *prefixes, *disable = Py_None, *missing = Py_None;
    Py_ssize_t max_depth;
    int c_calls;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!Snp|OO:Calls", kwlist, &glue, &PyDict_Type,
                                     &by_ident, &prefixes, &max_depth, &c_calls, &disable,
                                     &missing)) {
        return -1;
    }
    if (self->glue != NULL) {
        PyErr_SetString(PyExc_TypeError, "Calls is already initialised");
        return -1;
    }
    if (PyBytes_GET_SIZE(prefixes) != K_COUNT) {
        PyErr_Format(PyExc_ValueError, "prefixes must hold %d type bytes", K_COUNT);
        return -1;
    }
    memcpy(self->prefix, PyBytes_AS_STRING(prefixes), K_COUNT);
    self->glue = Py_NewRef(glue);
    self->by_ident = Py_NewRef(by_ident);
    self->disable = Py_NewRef(disable);
    self->missing = Py_NewRef(missing);
    self->max_depth = max_depth;
    self->c_calls = c_calls;
    self->generation = ++calls_generations;
    return 0;
}

static int
Calls_traverse(Calls *self, visitproc visit, void *arg)
{
    Py_VISIT(self->glue);
    Py_VISIT(self->by_ident);
    Py_VISIT(self->disable);
    Py_VISIT(self->missing);
    for (CallState *st = self->states; st != NULL; st = st->next) {
        Py_VISIT(st->slot);
    }
    return 0;
}

static void
calls_release(Calls *self)
{
    CallState *st = self->states;
    self->states = NULL;
    while (st != NULL) {
        CallState *next = st->next;
        state_free(st);
        st = next;
    }
    table_clear(&self->codes, (void (*)(void *))code_entry_free);
    table_clear(&self->funcs, (void (*)(void *))func_entry_free);
    table_clear(&self->methods, (void (*)(void *))method_entry_free);
}

static int
Calls_clear(Calls *self)
{
    /* A cycle through the glue (glue -> Calls -> glue) is broken here; no
     * thread can still use the states (the callbacks hold a reference). */
    self->generation = 0;
    Py_CLEAR(self->glue);
    Py_CLEAR(self->by_ident);
    Py_CLEAR(self->disable);
    Py_CLEAR(self->missing);
    calls_release(self);
    return 0;
}

static void
Calls_dealloc(Calls *self)
{
    PyObject_GC_UnTrack(self);
    Calls_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Calls_methods[] = {
    {"py_start", (PyCFunction)(void (*)(void))Calls_py_start, METH_FASTCALL, NULL},
    {"py_resume", (PyCFunction)(void (*)(void))Calls_py_resume, METH_FASTCALL, NULL},
    {"py_return", (PyCFunction)(void (*)(void))Calls_py_return, METH_FASTCALL, NULL},
    {"py_yield", (PyCFunction)(void (*)(void))Calls_py_yield, METH_FASTCALL, NULL},
    {"py_unwind", (PyCFunction)(void (*)(void))Calls_py_unwind, METH_FASTCALL, NULL},
    {"py_throw", (PyCFunction)(void (*)(void))Calls_py_throw, METH_FASTCALL, NULL},
    {"call", (PyCFunction)(void (*)(void))Calls_call, METH_FASTCALL, NULL},
    {"c_return", (PyCFunction)(void (*)(void))Calls_c_return, METH_FASTCALL, NULL},
    {"begin_thread", (PyCFunction)Calls_begin_thread, METH_O,
     "begin_thread(frame): the calling thread's state, with OpenFrames from frame."},
    {"install_profile", (PyCFunction)(void (*)(void))Calls_install_profile, METH_FASTCALL,
     "install_profile(frame, event, arg): a thread's first profile event: make its state, "
     "install the C profile function and handle the event."},
    {"stop_profiling", (PyCFunction)Calls_stop_profiling, METH_NOARGS,
     "Every thread removes its profile function at its next event."},
    {NULL},
};

static PyTypeObject CallsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pytrace._core.Calls",
    .tp_doc = "The hot paths of the call backends (see pytrace/hooks/monitoring_c.py).",
    .tp_basicsize = sizeof(Calls),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Calls_init,
    .tp_dealloc = (destructor)Calls_dealloc,
    .tp_traverse = (traverseproc)Calls_traverse,
    .tp_clear = (inquiry)Calls_clear,
    .tp_methods = Calls_methods,
};

/* ------------------------------------------------------------------------ */
/* Module                                                                   */
/* ------------------------------------------------------------------------ */

/* _decode.c: adds Run and resolve_events. */
int decode_add_to_module(PyObject *module);
/* _beat.c: adds Beat. */
int beat_add_to_module(PyObject *module);
/* _files.c: adds TraceFile, sync_files, files_after_fork_in_child. */
int files_add_to_module(PyObject *module);

static PyMethodDef core_methods[] = {
    {"clock", core_clock, METH_NOARGS,
     "The C core's clock: nanoseconds (CLOCK_MONOTONIC's epoch), read from the CPU's "
     "timestamp counter where the kernel trusts it."},
    {"clock_info", core_clock_info, METH_NOARGS,
     "{'source': 'tsc' or 'monotonic', 'tsc_hz': measured counter frequency or 0.0}"},
    {NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "pytrace._core",
    "The C core of pytrace's hot path (see pytrace/core.py).", -1, core_methods,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    for (int i = 0; i < AT_COUNT; i++) {
        point_strings[i] = PyUnicode_InternFromString(point_names[i]);
        if (point_strings[i] == NULL) {
            return NULL;
        }
    }
    str_injector = PyUnicode_InternFromString("injector");
    str_write_batch = PyUnicode_InternFromString("write_batch");
    str_buffer_module = PyUnicode_InternFromString("pytrace.buffer");
    if (str_injector == NULL || str_write_batch == NULL || str_buffer_module == NULL) {
        return NULL;
    }
    str_decide = PyUnicode_InternFromString("c_decide");
    str_lookup = PyUnicode_InternFromString("c_lookup");
    str_open_thread = PyUnicode_InternFromString("c_open_thread");
    str_first_start = PyUnicode_InternFromString("c_first_start");
    str_exits = PyUnicode_InternFromString("c_exits");
    str_c_function = PyUnicode_InternFromString("c_function_id");
    str_fail = PyUnicode_InternFromString("c_fail");
    if (!str_decide || !str_lookup || !str_open_thread || !str_first_start || !str_exits || !str_c_function
        || !str_fail) {
        return NULL;
    }
    if (PyType_Ready(&SlotType) < 0 || PyType_Ready(&CallsType) < 0
        || PyType_Ready(&HeadroomType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL) {
        return NULL;
    }
    core_clock_object = PyObject_GetAttrString(m, "clock");
    if (core_clock_object == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&SlotType);
    Py_INCREF(&HeadroomType);
    if (PyModule_AddObject(m, "Headroom", (PyObject *)&HeadroomType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (decode_add_to_module(m) < 0 || beat_add_to_module(m) < 0
        || files_add_to_module(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CallsType);
    if (PyModule_AddObject(m, "Calls", (PyObject *)&CallsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "ThreadSlot", (PyObject *)&SlotType) < 0
        || PyModule_AddIntConstant(m, "EV_BATCH", EV_BATCH) < 0
        || PyModule_AddIntConstant(m, "EV_STRING", EV_STRING) < 0
        || PyModule_AddIntConstant(m, "EV_FUNC", EV_FUNC) < 0
        || PyModule_AddIntConstant(m, "EV_STACK", EV_STACK) < 0
        || PyModule_AddIntConstant(m, "BATCH_FIXED_SIZE", BATCH_FIXED_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
