/* pytrace._core.Beat: the clock of pytrace's tickers (the CPU sampler, the
 * heap ticker), in C.  pytrace/hooks/sampler.py's PythonBeat is the same
 * thing in Python; its Ticker runs either on a thread of its own.
 *
 * Why C.  A ticker thread that waits in Python must take the GIL at every
 * wake-up, while the program's main thread holds it.  CPython's GIL lets a
 * waiting thread in when the holder drops it for a system call, but the
 * holder usually takes it back first, and the waiter waits again, up to the
 * 5 ms switch interval: every short system call of the program turns into
 * a futex wake-up and two thread switches.  Measured under `pytest
 * --pytrace` (501 near-empty tests, CPython 3.12, 100 Hz): ~450 voluntary
 * context switches a run against ~20 without sampling, and ~13 us added per
 * test, most of the sampler's cost.
 *
 * So Beat waits without the GIL, in run(), and hands each tick to the
 * thread running Python as a pending call (Py_AddPendingCall): that thread
 * runs it at its next eval-breaker check, between two bytecodes, as it runs
 * a signal handler.  No thread waits for the GIL (measured, same run: ~55
 * context switches, and the sampler's cost per test down from ~25 to
 * ~10 us, most of it the samples themselves).  On 3.11 and 3.13 the main
 * thread takes the call; 3.11 finds it only at its next GIL switch (any
 * system call), and 3.12 needs its internal any-thread variant (see
 * add_pending_call).  When no thread takes the tick within a grace period
 * (GRACE_NS: every thread waits without the GIL, in a join or a sleep, or
 * one runs long C code with it), run() calls tick() itself, on its own
 * thread: the ticks go on at their rate whatever the program does.
 *
 * A pending call may run after run() has returned, or never (the process
 * exits first).  The object it points to must outlive it, so run() keeps
 * a reference to itself while a call is queued (`pinned`); the call drops
 * it.  At most one call is queued at a time (`queued`).
 *
 * Locking: `mutex` guards held/stopping/sleeping.  It is taken with the
 * GIL held (hold, release, halt, begin, the pending call) or without it
 * (run's loop), and never held while waiting for the GIL, so the two locks
 * cannot deadlock.  _core.c's PyInit__core calls beat_add_to_module, the
 * one name this file exports.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

int beat_add_to_module(PyObject *module);

#if PY_VERSION_HEX < 0x030D0000
#define Py_IsFinalizing _Py_IsFinalizing
#endif

#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
/* CPython 3.12's Py_AddPendingCall queues for the main thread but computes
 * whether to interrupt the eval loop as if the calling thread were the one
 * to run the call: called from another thread, it leaves the main thread's
 * eval breaker unset, and the main thread finds the call only at its next
 * GIL switch (up to the 5 ms switch interval while it runs pure Python;
 * measured: a 2 ms beat got ~27 of 100 ticks in 0.2 s).  Queued for any
 * thread instead, the call sets the eval breaker, and the thread running
 * Python takes it at once.  Any thread will do: tick() writes through the
 * ticker's own slot.  This is 3.12's exported (internal) function,
 * declared here as its internal header does; 3.11 and 3.13 signal the main
 * thread correctly. */
PyAPI_FUNC(int) _PyEval_AddPendingCall(PyInterpreterState *interp, int (*func)(void *),
                                       void *arg, int mainthreadonly);

static int
add_pending_call(int (*func)(void *), void *arg)
{
    return _PyEval_AddPendingCall(PyInterpreterState_Main(), func, arg, 0);
}
#else
static int
add_pending_call(int (*func)(void *), void *arg)
{
    return Py_AddPendingCall(func, arg);
}
#endif

/* Beat.queued: no call queued; queued and due; queued but its tick was
 * already taken by run() itself (the main thread did not come to it). */
enum { NOT_QUEUED = 0, QUEUED = 1, QUEUED_SERVED = 2 };

/* The longest a queued tick waits for another thread before run() takes it
 * itself (a quarter of the interval if that is shorter). */
#define GRACE_NS 1000000

typedef struct {
    PyObject_HEAD
    PyObject *tick;
    int64_t interval_ns;
    pthread_mutex_t mutex;
    pthread_cond_t wake;    /* on CLOCK_MONOTONIC: halt, and release of a sleeper */
    int held;               /* under mutex */
    int stopping;           /* under mutex */
    int sleeping;           /* under mutex: run() waits for release() */
    atomic_int queued;
    int running;            /* GIL: inside run() */
    int pinned;             /* GIL: a reference to itself, for a queued call */
} Beat;

static void
timespec_add_ns(struct timespec *t, int64_t ns)
{
    int64_t total = (int64_t)t->tv_nsec + ns;
    t->tv_sec += (time_t)(total / 1000000000);
    t->tv_nsec = (long)(total % 1000000000);
}

static int
timespec_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* With the GIL: drop the reference a queued call kept, once neither a call
 * nor run() needs the object.  May free it: the caller's last use. */
static void
unpin_if_done(Beat *self)
{
    if (self->pinned && !self->running && atomic_load(&self->queued) == NOT_QUEUED) {
        self->pinned = 0;
        Py_DECREF(self);
    }
}

/* With the GIL: true unless held or halted. */
static int
ticking(Beat *self)
{
    pthread_mutex_lock(&self->mutex);
    int on = !self->held && !self->stopping;
    pthread_mutex_unlock(&self->mutex);
    return on;
}

/* The pending call, on the main thread at an eval-breaker check.  tick()
 * reports its own failures (see PythonBeat); what still comes out of it
 * (KeyboardInterrupt raised by a signal handler inside it) goes on to the
 * program, at the point where the handler would have run anyway. */
static int
beat_pending(void *arg)
{
    Beat *self = (Beat *)arg;
    int rc = 0;
    /* The tick may drop every other reference to the beat (stop tracing,
     * join the ticker's thread): hold one until this call is done. */
    Py_INCREF(self);
    if (atomic_exchange(&self->queued, NOT_QUEUED) == QUEUED && ticking(self)
        && self->tick != NULL) {
        PyObject *tick = Py_NewRef(self->tick);
        PyObject *result = PyObject_CallNoArgs(tick);
        Py_DECREF(tick);
        if (result == NULL) {
            rc = -1;
        }
        Py_XDECREF(result);
    }
    unpin_if_done(self);
    Py_DECREF(self);
    return rc;
}

static int
Beat_init(Beat *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"interval", "tick", NULL};
    double interval;
    PyObject *tick;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "dO", kwlist, &interval, &tick)) {
        return -1;
    }
    if (!(interval > 0) || interval > 1e6) {
        PyObject *value = PyFloat_FromDouble(interval);
        if (value != NULL) {
            PyErr_Format(PyExc_ValueError, "Beat interval must be in (0, 1e6] seconds, not %R",
                         value);
            Py_DECREF(value);
        }
        return -1;
    }
    if (!PyCallable_Check(tick)) {
        PyErr_SetString(PyExc_TypeError, "Beat tick must be callable");
        return -1;
    }
    if (self->tick != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Beat is already initialized");
        return -1;
    }
    self->tick = Py_NewRef(tick);
    self->interval_ns = (int64_t)(interval * 1e9);
    if (self->interval_ns < 1) {
        self->interval_ns = 1;
    }
    return 0;
}

static PyObject *
Beat_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Beat *self = (Beat *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    pthread_condattr_t attr;
    if (pthread_mutex_init(&self->mutex, NULL) != 0) {
        type->tp_free((PyObject *)self);
        return PyErr_NoMemory();
    }
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int failed = pthread_cond_init(&self->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (failed) {
        pthread_mutex_destroy(&self->mutex);
        type->tp_free((PyObject *)self);
        return PyErr_NoMemory();
    }
    atomic_init(&self->queued, NOT_QUEUED);
    return (PyObject *)self;
}

static int
Beat_traverse(Beat *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tick);
    return 0;
}

static int
Beat_clear(Beat *self)
{
    Py_CLEAR(self->tick);
    return 0;
}

static void
Beat_dealloc(Beat *self)
{
    PyObject_GC_UnTrack(self);
    Beat_clear(self);
    pthread_cond_destroy(&self->wake);
    pthread_mutex_destroy(&self->mutex);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* With the GIL released and mutex held: call tick() on this thread.  Returns
 * with both as they were; 0, or -1 with an exception set. */
static int
tick_here(Beat *self, PyThreadState **save)
{
    pthread_mutex_unlock(&self->mutex);
    PyEval_RestoreThread(*save);
    int rc = 0;
    if (ticking(self) && self->tick != NULL) {
        PyObject *tick = Py_NewRef(self->tick);
        PyObject *result = PyObject_CallNoArgs(tick);
        Py_DECREF(tick);
        if (result == NULL) {
            rc = -1;
        }
        Py_XDECREF(result);
    }
    *save = PyEval_SaveThread();
    pthread_mutex_lock(&self->mutex);
    return rc;
}

/* With the GIL released and mutex held: wait until `deadline`, or halt(). */
static void
wait_until(Beat *self, const struct timespec *deadline)
{
    while (!self->stopping
           && pthread_cond_timedwait(&self->wake, &self->mutex, deadline) != ETIMEDOUT) {
    }
}

static PyObject *
Beat_run(Beat *self, PyObject *unused)
{
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError, "Beat.run() is already running");
        return NULL;
    }
    self->running = 1;
    int failed = 0;
    /* How long a queued tick may wait for a thread to take it before this
     * one does: a thread that runs Python takes it within microseconds. */
    int64_t grace_ns = self->interval_ns / 4 < GRACE_NS ? self->interval_ns / 4 : GRACE_NS;
    PyThreadState *save = PyEval_SaveThread();
    pthread_mutex_lock(&self->mutex);
    struct timespec next, now, grace;
    clock_gettime(CLOCK_MONOTONIC, &next);
    while (!self->stopping) {
        timespec_add_ns(&next, self->interval_ns);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (timespec_before(&next, &now)) {
            next = now;  /* fell behind: skip the missed ticks */
        }
        wait_until(self, &next);
        if (self->stopping) {
            break;
        }
        if (self->held) {  /* skip the tick and sleep until released */
            self->sleeping = 1;
            while (self->held && !self->stopping) {
                pthread_cond_wait(&self->wake, &self->mutex);
            }
            self->sleeping = 0;
            clock_gettime(CLOCK_MONOTONIC, &next);
            continue;
        }
        if (Py_IsFinalizing()) {
            /* A ticker that outlived pytrace's atexit handler (a trace
             * started by a later one): queue nothing into an interpreter
             * being torn down, and wait for the halt. */
            continue;
        }
        int here = 1;  /* tick on this thread */
        if (atomic_load(&self->queued) == NOT_QUEUED) {
            atomic_store(&self->queued, QUEUED);
            if (add_pending_call(beat_pending, self) != 0) {  /* the queue is full */
                atomic_store(&self->queued, NOT_QUEUED);
            }
            else {
                clock_gettime(CLOCK_MONOTONIC, &grace);
                timespec_add_ns(&grace, grace_ns);
                wait_until(self, &grace);
                if (self->stopping) {
                    break;
                }
                int expected = QUEUED;
                here = atomic_compare_exchange_strong(&self->queued, &expected, QUEUED_SERVED);
            }
        }
        /* else the last tick's call still waits: no thread has run Python since. */
        if (here && tick_here(self, &save) < 0) {
            failed = 1;
            break;
        }
    }
    pthread_mutex_unlock(&self->mutex);
    PyEval_RestoreThread(save);
    self->running = 0;
    if (atomic_load(&self->queued) != NOT_QUEUED) {
        if (!self->pinned) {
            self->pinned = 1;
            Py_INCREF(self);
        }
    }
    else {
        unpin_if_done(self);  /* the caller holds a reference: self stays */
    }
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Beat_begin(Beat *self, PyObject *unused)
{
    pthread_mutex_lock(&self->mutex);
    self->stopping = 0;
    pthread_mutex_unlock(&self->mutex);
    Py_RETURN_NONE;
}

static PyObject *
Beat_halt(Beat *self, PyObject *unused)
{
    pthread_mutex_lock(&self->mutex);
    self->stopping = 1;
    pthread_cond_broadcast(&self->wake);
    pthread_mutex_unlock(&self->mutex);
    Py_RETURN_NONE;
}

static PyObject *
Beat_hold(Beat *self, PyObject *unused)
{
    pthread_mutex_lock(&self->mutex);
    self->held = 1;
    pthread_mutex_unlock(&self->mutex);
    Py_RETURN_NONE;
}

static PyObject *
Beat_release(Beat *self, PyObject *unused)
{
    pthread_mutex_lock(&self->mutex);
    self->held = 0;
    if (self->sleeping) {
        pthread_cond_broadcast(&self->wake);
    }
    pthread_mutex_unlock(&self->mutex);
    Py_RETURN_NONE;
}

static PyMethodDef Beat_methods[] = {
    {"run", (PyCFunction)Beat_run, METH_NOARGS,
     "Tick every interval until halt(): on the main thread if it takes the tick, else here."},
    {"begin", (PyCFunction)Beat_begin, METH_NOARGS,
     "Undo halt(), before the next run() starts (after a fork, in the parent)."},
    {"halt", (PyCFunction)Beat_halt, METH_NOARGS, "Make run() return soon; no tick from now on."},
    {"hold", (PyCFunction)Beat_hold, METH_NOARGS, "No tick until release()."},
    {"release", (PyCFunction)Beat_release, METH_NOARGS, "Tick again."},
    {NULL},
};

static PyTypeObject BeatType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pytrace._core.Beat",
    .tp_doc = "Beat(interval, tick): a ticker's clock; see pytrace/_beat.c.",
    .tp_basicsize = sizeof(Beat),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Beat_new,
    .tp_init = (initproc)Beat_init,
    .tp_dealloc = (destructor)Beat_dealloc,
    .tp_traverse = (traverseproc)Beat_traverse,
    .tp_clear = (inquiry)Beat_clear,
    .tp_methods = Beat_methods,
};

int
beat_add_to_module(PyObject *module)
{
    if (PyType_Ready(&BeatType) < 0) {
        return -1;
    }
    Py_INCREF(&BeatType);
    if (PyModule_AddObject(module, "Beat", (PyObject *)&BeatType) < 0) {
        Py_DECREF(&BeatType);
        return -1;
    }
    return 0;
}
