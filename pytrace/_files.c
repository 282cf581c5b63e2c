/* pytrace._core.TraceFile: a trace file whose system calls a background
 * thread makes, in order, without the GIL.  pytrace/writer.py's SyncFile is
 * the same interface with the calls made on the calling thread.
 *
 * Why.  `pytest --pytrace` writes one small file per test.  Measured inside
 * pytest's run-test loop (501 near-empty tests, CPython 3.13): the file's
 * system calls cost the test ~20 us (open ~4.5, ftruncate ~7.5, two writes
 * ~5.5, close ~2), a fifth of what tracing adds to a test.  Here the
 * calling thread makes only the open (its failure is the caller's error:
 * an unwritable path must stop the start of a trace), and queues the rest:
 * the truncation with the header, the batches, the footer, the close.  One
 * thread serves every file of the process, so the calls of a file, and the
 * files, keep their order.
 *
 * What it changes.  A write's failure (a full disk) is known once the
 * thread has made it: `write` raises it at the next call after that, and
 * `error` holds it; `sync()` waits until every queued call of the file is
 * made.  A process that ends through Python's exit waits for the queue
 * (sync_at_exit); one that ends otherwise (os._exit, a crash) loses what
 * was queued and not made yet.  pytrace.writer syncs before a fork.
 *
 * Locking: `queue_lock` guards the queue, the worker's flags and every
 * FileState's fields.  It is taken with the GIL held or without it, and
 * never held while waiting for the GIL.  The thread blocks every signal: a
 * signal for the process goes to a thread that runs Python.  _core.c's
 * PyInit__core calls files_add_to_module, the one name this file exports.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int files_add_to_module(PyObject *module);

/* One open file, shared by its TraceFile object and its queued jobs.
 * Freed when the last of them lets go (`refs`). */
typedef struct {
    int fd;
    int error;        /* errno of the first failed call, else 0 */
    int closing;      /* a close is queued: no more jobs */
    Py_ssize_t pending;  /* jobs queued and not done */
    Py_ssize_t refs;
} FileState;

enum { JOB_TRUNCATE = 1, JOB_CLOSE = 2 };

typedef struct Job {
    struct Job *next;
    FileState *file;
    int flags;
    size_t len;
    unsigned char data[];
} Job;

/* The thread is never woken for a job (a futex call, ~3 us for the thread
 * queuing it): it looks for jobs every LINGER_NS, and ends after LINGER_LOOKS
 * looks that found none (a second); the next job starts a new one.  Only a
 * thread waiting for the jobs to be done (sync) wakes it. */
#define LINGER_NS 2000000L
#define LINGER_LOOKS 500
/* Bytes queued past which a thread queuing more waits (without the GIL) for
 * the thread to catch up: memory stays bounded on a slow disk. */
#define QUEUE_LIMIT (16 << 20)

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready;  /* on CLOCK_MONOTONIC: init_work_ready */
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;  /* a job done, a thread gone */
static Job *queue_head = NULL, *queue_tail = NULL;
static Py_ssize_t queued = 0;     /* jobs queued and not done, all files */
static size_t queued_bytes = 0;
static pthread_t worker;          /* while worker_started */
static int worker_started = 0;
static int worker_stop = 0;       /* a pause asks the thread to end */
static int paused = 0;            /* forks under way (pause_files): no thread starts */
static int done_waiters = 0;      /* threads waiting on work_done */

/* With queue_lock held. */
static void
file_release(FileState *f)
{
    if (--f->refs == 0) {
        free(f);
    }
}

/* The job's system calls; the errno of the first that fails, else 0.  A
 * file that failed before makes no more calls but its close. */
static int
run_job(Job *job, int failed)
{
    FileState *f = job->file;
    int err = failed;
    /* Cut to one byte, not zero, before the header overwrites it: see
     * Writer.open in pytrace/writer.py.  EINVAL: not a regular file. */
    if (!err && (job->flags & JOB_TRUNCATE) && ftruncate(f->fd, 1) < 0 && errno != EINVAL) {
        err = errno;
    }
    size_t done = 0;
    while (!err && done < job->len) {
        ssize_t n = write(f->fd, job->data + done, job->len - done);
        if (n < 0) {
            if (errno != EINTR) {
                err = errno;
            }
        }
        else {
            done += (size_t)n;
        }
    }
    if ((job->flags & JOB_CLOSE) && close(f->fd) < 0 && !err && errno != EINTR) {
        err = errno;
    }
    return err;
}

static void *
worker_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&queue_lock);
    for (;;) {
        int looks = 0;
        while (queue_head == NULL || worker_stop) {
            /* A pause takes no new job: none may be under way at a fork. */
            if (worker_stop || looks == LINGER_LOOKS) {
                if (!worker_stop) {
                    pthread_detach(pthread_self());  /* ends idle: nobody joins it */
                }
                worker_started = 0;
                pthread_cond_broadcast(&work_done);
                pthread_mutex_unlock(&queue_lock);
                return NULL;
            }
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += LINGER_NS;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec += 1;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&work_ready, &queue_lock, &until);
            looks++;
        }
        Job *job = queue_head;
        queue_head = job->next;
        if (queue_head == NULL) {
            queue_tail = NULL;
        }
        int failed = job->file->error;
        pthread_mutex_unlock(&queue_lock);
        int err = run_job(job, failed);
        pthread_mutex_lock(&queue_lock);
        FileState *f = job->file;
        if (err && !f->error) {
            f->error = err;
        }
        f->pending--;
        queued--;
        queued_bytes -= job->len;
        file_release(f);
        if (done_waiters) {
            pthread_cond_broadcast(&work_done);
        }
        free(job);
    }
}

/* The thread's looks are timed on CLOCK_MONOTONIC: a step of the wall clock
 * must not stop them (or make them spin). */
static int
init_work_ready(void)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        if (rc == 0) {
            rc = pthread_cond_init(&work_ready, &attr);
        }
        pthread_condattr_destroy(&attr);
    }
    return rc;
}

/* With queue_lock held: start the thread if there is none (and no fork is
 * under way: the jobs then wait for resume_files); 0, or an errno. */
static int
ensure_worker(void)
{
    if (worker_started || paused) {
        return 0;
    }
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);  /* inherited by the new thread */
    int rc = pthread_create(&worker, NULL, worker_main, NULL);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (rc == 0) {
        worker_started = 1;
    }
    return rc;
}

/* Wait, without the GIL, until `*count` is 0 (a file's pending jobs, or
 * every queued job). */
static void
wait_until_done(Py_ssize_t *count)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&queue_lock);
    done_waiters++;
    if (*count > 0) {
        ensure_worker();  /* one that failed to start earlier: try again */
        pthread_cond_signal(&work_ready);  /* look now, not at the next LINGER_NS */
    }
    while (*count > 0 && (worker_started || paused)) {
        pthread_cond_wait(&work_done, &queue_lock);
    }
    done_waiters--;
    pthread_mutex_unlock(&queue_lock);
    Py_END_ALLOW_THREADS
}

/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    FileState *state;
    PyObject *path;
} TraceFile;

static PyTypeObject TraceFileType;

static int
TraceFile_init(TraceFile *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", NULL};
    PyObject *path = NULL;
    if (self->state != NULL) {
        PyErr_SetString(PyExc_TypeError, "TraceFile is already open");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:TraceFile", kwlist,
                                     PyUnicode_FSDecoder, &path)) {
        return -1;
    }
    PyObject *encoded = PyUnicode_EncodeFSDefault(path);
    if (encoded == NULL) {
        Py_DECREF(path);
        return -1;
    }
    int fd;
    Py_BEGIN_ALLOW_THREADS
    fd = open(PyBytes_AS_STRING(encoded), O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    Py_END_ALLOW_THREADS
    Py_DECREF(encoded);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(path);
        return -1;
    }
    FileState *state = calloc(1, sizeof(FileState));
    if (state == NULL) {
        close(fd);
        Py_DECREF(path);
        PyErr_NoMemory();
        return -1;
    }
    state->fd = fd;
    state->refs = 1;
    self->state = state;
    Py_XSETREF(self->path, path);
    return 0;
}

static int
file_ready(TraceFile *self)
{
    if (self->state == NULL) {
        PyErr_SetString(PyExc_ValueError, "TraceFile was never opened");
        return 0;
    }
    return 1;
}

/* Set the OSError of errno `err` for this file; -1. */
static int
raise_error(TraceFile *self, int err)
{
    errno = err;
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->path);
    return -1;
}

/* Queue `len` bytes of `data` (and the truncation, the close that `flags`
 * ask for).  -1 with an exception if the file is closing, failed already
 * (a close is queued all the same: the descriptor is closed), or the
 * thread cannot start. */
static int
enqueue(TraceFile *self, const void *data, size_t len, int flags)
{
    Job *job = malloc(sizeof(Job) + len);
    if (job == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    job->next = NULL;
    job->file = self->state;
    job->flags = flags;
    job->len = len;
    if (len) {
        memcpy(job->data, data, len);
    }
    FileState *f = self->state;
    pthread_mutex_lock(&queue_lock);
    if (queued_bytes > QUEUE_LIMIT && worker_started && !paused) {
        /* The lock is let go before the GIL is taken back: a thread that
         * holds the GIL may be waiting for the lock. */
        pthread_mutex_unlock(&queue_lock);
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&queue_lock);
        done_waiters++;
        while (queued_bytes > QUEUE_LIMIT && worker_started && !paused) {
            pthread_cond_wait(&work_done, &queue_lock);
        }
        done_waiters--;
        pthread_mutex_unlock(&queue_lock);
        Py_END_ALLOW_THREADS
        pthread_mutex_lock(&queue_lock);
    }
    int err = f->closing ? -1
              : (f->error && !(flags & JOB_CLOSE)) ? f->error : ensure_worker();
    if (err == 0) {
        f->refs++;
        f->pending++;
        queued++;
        queued_bytes += len;
        if (flags & JOB_CLOSE) {
            f->closing = 1;
        }
        if (queue_tail == NULL) {
            queue_head = job;
        }
        else {
            queue_tail->next = job;
        }
        queue_tail = job;
    }
    pthread_mutex_unlock(&queue_lock);
    if (err == 0) {
        return 0;
    }
    free(job);
    if (err < 0) {
        PyErr_SetString(PyExc_ValueError, "write to a closed TraceFile");
        return -1;
    }
    return raise_error(self, err);
}

static PyObject *
queue_bytes(TraceFile *self, PyObject *data, int flags)
{
    if (!file_ready(self)) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int rc = enqueue(self, view.buf, (size_t)view.len, flags);
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    return rc < 0 ? NULL : PyLong_FromSsize_t(len);
}

static PyObject *
TraceFile_write(TraceFile *self, PyObject *data)
{
    return queue_bytes(self, data, 0);
}

static PyObject *
TraceFile_start(TraceFile *self, PyObject *data)
{
    return queue_bytes(self, data, JOB_TRUNCATE);
}

static PyObject *
TraceFile_close(TraceFile *self, PyObject *unused)
{
    if (!file_ready(self)) {
        return NULL;
    }
    pthread_mutex_lock(&queue_lock);
    int closing = self->state->closing;
    pthread_mutex_unlock(&queue_lock);
    if (!closing && enqueue(self, NULL, 0, JOB_CLOSE) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
TraceFile_sync(TraceFile *self, PyObject *unused)
{
    if (!file_ready(self)) {
        return NULL;
    }
    wait_until_done(&self->state->pending);
    Py_RETURN_NONE;
}

static PyObject *
TraceFile_get_error(TraceFile *self, void *closure)
{
    if (!file_ready(self)) {
        return NULL;
    }
    pthread_mutex_lock(&queue_lock);
    int err = self->state->error;
    pthread_mutex_unlock(&queue_lock);
    if (!err) {
        Py_RETURN_NONE;
    }
    errno = err;
    PyObject *args = Py_BuildValue("(isO)", err, strerror(err), self->path);
    if (args == NULL) {
        return NULL;
    }
    PyObject *exc = PyObject_Call(PyExc_OSError, args, NULL);
    Py_DECREF(args);
    return exc;
}

static PyObject *
TraceFile_get_done(TraceFile *self, void *closure)
{
    if (!file_ready(self)) {
        return NULL;
    }
    pthread_mutex_lock(&queue_lock);
    int done = self->state->pending == 0;
    pthread_mutex_unlock(&queue_lock);
    return PyBool_FromLong(done);
}

static void
TraceFile_dealloc(TraceFile *self)
{
    if (self->state != NULL) {
        /* Never leave the descriptor open: a file dropped unclosed is closed
         * after its queued writes. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (TraceFile_close(self, NULL) == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        else {
            Py_DECREF(Py_None);
        }
        PyErr_Restore(type, value, tb);
        pthread_mutex_lock(&queue_lock);
        file_release(self->state);
        pthread_mutex_unlock(&queue_lock);
        self->state = NULL;
    }
    Py_CLEAR(self->path);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef TraceFile_methods[] = {
    {"start", (PyCFunction)TraceFile_start, METH_O,
     "start(data): queue cutting the file to one byte, then writing data over it; "
     "returns len(data)."},
    {"write", (PyCFunction)TraceFile_write, METH_O,
     "write(data): queue writing data; returns len(data).  Raises the OSError of a "
     "call that failed before."},
    {"close", (PyCFunction)TraceFile_close, METH_NOARGS,
     "Queue closing the file, after its writes (once; later calls do nothing)."},
    {"sync", (PyCFunction)TraceFile_sync, METH_NOARGS,
     "Wait until every queued call of this file is made."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef TraceFile_getset[] = {
    {"error", (getter)TraceFile_get_error, NULL,
     "The OSError of the first call that failed, or None.", NULL},
    {"done", (getter)TraceFile_get_done, NULL, "True when no call of this file is queued.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef TraceFile_members[] = {
    {"path", T_OBJECT, offsetof(TraceFile, path), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject TraceFileType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pytrace._core.TraceFile",
    .tp_doc = "TraceFile(path): open path for writing (raises OSError); its truncation, "
              "writes and close are made in order by a background thread.",
    .tp_basicsize = sizeof(TraceFile),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)TraceFile_init,
    .tp_dealloc = (destructor)TraceFile_dealloc,
    .tp_methods = TraceFile_methods,
    .tp_getset = TraceFile_getset,
    .tp_members = TraceFile_members,
};

/* ------------------------------------------------------------------------ */

static PyObject *
files_sync(PyObject *module, PyObject *unused)
{
    wait_until_done(&queued);
    Py_RETURN_NONE;
}

/* Before a fork: every call queued so far is made, and the thread ends (a
 * process with more than one thread forks with a warning on 3.12+, and the
 * child must not write its parent's bytes); until resume_files, no thread
 * starts, so no call is under way at the fork.  Threads forking at once
 * each pause and resume: the first waits for the queue and joins the
 * thread, the others wait until it is gone; calls queued meanwhile wait
 * for the last resume. */
static PyObject *
files_pause(PyObject *module, PyObject *unused)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&queue_lock);
    done_waiters++;
    if (paused == 0) {
        if (queued > 0) {
            pthread_cond_signal(&work_ready);
        }
        while (queued > 0 && worker_started) {
            pthread_cond_wait(&work_done, &queue_lock);
        }
    }
    paused++;
    int join = worker_started && !worker_stop;
    pthread_t thread = worker;
    if (join) {
        worker_stop = 1;
        pthread_cond_signal(&work_ready);
    }
    else {
        while (worker_started) {  /* another pause is joining it */
            pthread_cond_wait(&work_done, &queue_lock);
        }
    }
    done_waiters--;
    pthread_mutex_unlock(&queue_lock);
    if (join) {
        pthread_join(thread, NULL);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* After a fork, in the parent: the last resume lets the thread start again,
 * for the calls queued during the pause. */
static PyObject *
files_resume(PyObject *module, PyObject *unused)
{
    pthread_mutex_lock(&queue_lock);
    if (paused > 0 && --paused == 0) {
        worker_stop = 0;
        if (queue_head != NULL) {
            ensure_worker();  /* on failure the next job tries again */
        }
    }
    pthread_mutex_unlock(&queue_lock);
    Py_RETURN_NONE;
}

/* In a forked child: the thread is not there, and the lock may have been
 * held at the fork.  The pause left no call under way; calls queued after
 * it (by another thread) are dropped: they are the parent's to make.  Their
 * files' counts are kept right, so that a sync in the child returns, and a
 * dropped close still closes the child's copy of the descriptor. */
static PyObject *
files_after_fork_in_child(PyObject *module, PyObject *unused)
{
    pthread_mutex_init(&queue_lock, NULL);
    init_work_ready();
    pthread_cond_init(&work_done, NULL);
    while (queue_head != NULL) {
        Job *job = queue_head;
        queue_head = job->next;
        if (job->flags & JOB_CLOSE) {
            close(job->file->fd);
        }
        job->file->pending--;
        file_release(job->file);
        free(job);
    }
    queue_tail = NULL;
    queued = 0;
    queued_bytes = 0;
    worker_started = worker_stop = paused = done_waiters = 0;
    Py_RETURN_NONE;
}

static PyMethodDef files_functions[] = {
    {"sync_files", files_sync, METH_NOARGS,
     "Wait until every queued call of every TraceFile is made."},
    {"pause_files", files_pause, METH_NOARGS,
     "Before a fork: wait for every queued call, and end the background thread."},
    {"resume_files", files_resume, METH_NOARGS,
     "After a fork, in the parent: undo pause_files."},
    {"files_after_fork_in_child", files_after_fork_in_child, METH_NOARGS,
     "In a forked child: start afresh (the background thread is the parent's)."},
    {NULL, NULL, 0, NULL},
};

/* At the interpreter's exit: what is queued is written before the process
 * ends (the thread needs no Python). */
static void
sync_at_exit(void)
{
    pthread_mutex_lock(&queue_lock);
    done_waiters++;
    if (queued > 0) {
        ensure_worker();
        pthread_cond_signal(&work_ready);
    }
    while (queued > 0 && worker_started) {
        pthread_cond_wait(&work_done, &queue_lock);
    }
    done_waiters--;
    pthread_mutex_unlock(&queue_lock);
}

int
files_add_to_module(PyObject *module)
{
    int rc = init_work_ready();
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (PyType_Ready(&TraceFileType) < 0 || Py_AtExit(sync_at_exit) < 0) {
        return -1;
    }
    Py_INCREF(&TraceFileType);
    if (PyModule_AddObject(module, "TraceFile", (PyObject *)&TraceFileType) < 0) {
        Py_DECREF(&TraceFileType);
        return -1;
    }
    return PyModule_AddFunctions(module, files_functions);
}
