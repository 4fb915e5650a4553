/* The chunk store's per-chunk loops of garbage collection, in C: a Python loop costs more
 * per chunk than the system call it makes (see chunk_store.py, ChunkStore.touch_many and
 * ChunkStore.survey_prefix, which document the API; _chunkfs.pyi has the types).
 *
 *   touch_atimes(dirfd, digests, threads=1) -> list[int]
 *       utimensat(atime = now, mtime omitted, no symlink following) on
 *       "<dirfd>/xxxx/<64 hex>" for every 32-byte digest of the buffer; the positions of
 *       digests whose chunk file does not exist (ENOENT, or ENOTDIR: the prefix is no
 *       directory), in order. Any other error raises OSError. With `threads` > 1 the
 *       digests are split into that many ranges (at least 4096 digests each) touched in
 *       parallel: the call is bound by the system call, which scales over cores.
 *
 *   survey_dir(dirfd, name, min_atime, oldest_writer)
 *       -> (disk_chunks, disk_bytes, pending_chunks, pending_bytes, candidates, others)
 *       Reads directory <dirfd>/<name> once and lstat()s each entry whose name is 64
 *       lowercase hex digits: a regular file with atime (seconds) >= min_atime is in use
 *       (pending when atime < oldest_writer, else on disk); one with an older atime is a
 *       candidate for removal (its name is returned; the caller decides under its lock).
 *       Every other name except "." and ".." is returned in `others`. An entry that vanishes
 *       meanwhile is skipped; a missing directory raises FileNotFoundError.
 *
 * Both release the GIL while they make system calls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIGEST_SIZE 32
#define HEX_LEN 64

static const char HEX[] = "0123456789abcdef";

static void chunk_rel_path(const unsigned char *digest, char *out /* 4+1+64+1 */)
{
    char *p = out + 5;
    for (int i = 0; i < DIGEST_SIZE; i++) {
        p[2 * i] = HEX[digest[i] >> 4];
        p[2 * i + 1] = HEX[digest[i] & 15];
    }
    memcpy(out, p, 4);
    out[4] = '/';
    out[5 + HEX_LEN] = '\0';
}

/* One thread's share of touch_atimes: digests [start, end). */
typedef struct {
    int dirfd;
    const unsigned char *digests;
    Py_ssize_t start, end;
    Py_ssize_t *missing;
    Py_ssize_t n_missing, cap_missing;
    int err;
    Py_ssize_t err_at;
} TouchJob;

static void *touch_range(void *arg)
{
    TouchJob *job = arg;
    struct timespec times[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    char path[4 + 1 + HEX_LEN + 1];
    for (Py_ssize_t i = job->start; i < job->end; i++) {
        chunk_rel_path(job->digests + i * DIGEST_SIZE, path);
        if (utimensat(job->dirfd, path, times, AT_SYMLINK_NOFOLLOW) == 0)
            continue;
        if (errno != ENOENT && errno != ENOTDIR) {
            job->err = errno;
            job->err_at = i;
            return NULL;
        }
        if (job->n_missing == job->cap_missing) {
            Py_ssize_t cap = job->cap_missing ? 2 * job->cap_missing : 16;
            Py_ssize_t *grown = realloc(job->missing, (size_t)cap * sizeof *grown);
            if (grown == NULL) {
                job->err = ENOMEM;
                return NULL;
            }
            job->missing = grown;
            job->cap_missing = cap;
        }
        job->missing[job->n_missing++] = i;
    }
    return NULL;
}

#define MAX_THREADS 16
#define MIN_PER_THREAD 4096

static PyObject *touch_atimes(PyObject *self, PyObject *args)
{
    int dirfd, threads = 1;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "iy*|i:touch_atimes", &dirfd, &buf, &threads))
        return NULL;
    if (buf.len % DIGEST_SIZE != 0) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "digest buffer length is not a multiple of 32");
        return NULL;
    }
    Py_ssize_t count = buf.len / DIGEST_SIZE;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads > count / MIN_PER_THREAD)
        threads = (int)(count / MIN_PER_THREAD);
    if (threads < 1)
        threads = 1;
    TouchJob jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 0; t < threads; t++) {
        jobs[t] = (TouchJob){dirfd, buf.buf, count * t / threads, count * (t + 1) / threads,
                             NULL, 0, 0, 0, 0};
    }

    Py_BEGIN_ALLOW_THREADS
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&ids[t], NULL, touch_range, &jobs[t]) == 0;
    touch_range(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            touch_range(&jobs[t]);  /* no thread: do its share here */
    }
    Py_END_ALLOW_THREADS

    PyObject *result = NULL;
    int failed = -1;
    Py_ssize_t total = 0;
    for (int t = 0; t < threads; t++) {
        total += jobs[t].n_missing;
        if (failed < 0 && jobs[t].err)
            failed = t;
    }
    if (failed >= 0 && jobs[failed].err == ENOMEM) {
        PyErr_NoMemory();
    } else if (failed >= 0) {
        char path[4 + 1 + HEX_LEN + 1];
        chunk_rel_path((const unsigned char *)buf.buf + jobs[failed].err_at * DIGEST_SIZE,
                       path);
        errno = jobs[failed].err;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    } else if ((result = PyList_New(total)) != NULL) {
        Py_ssize_t k = 0;
        for (int t = 0; t < threads && result != NULL; t++) {
            for (Py_ssize_t i = 0; i < jobs[t].n_missing; i++) {
                PyObject *v = PyLong_FromSsize_t(jobs[t].missing[i]);
                if (v == NULL) {
                    Py_CLEAR(result);
                    break;
                }
                PyList_SET_ITEM(result, k++, v);
            }
        }
    }
    for (int t = 0; t < threads; t++)
        free(jobs[t].missing);
    PyBuffer_Release(&buf);
    return result;
}

/* A growing array of names (each NUL-terminated, stored back to back). */
typedef struct {
    char *data;
    size_t len, cap;
    Py_ssize_t count;
} NameList;

static int names_add(NameList *l, const char *name)
{
    size_t n = strlen(name) + 1;
    if (l->len + n > l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 4096;
        while (cap < l->len + n)
            cap *= 2;
        char *grown = realloc(l->data, cap);
        if (grown == NULL)
            return -1;
        l->data = grown;
        l->cap = cap;
    }
    memcpy(l->data + l->len, name, n);
    l->len += n;
    l->count++;
    return 0;
}

static PyObject *names_to_list(const NameList *l)
{
    PyObject *list = PyList_New(l->count);
    if (list == NULL)
        return NULL;
    const char *p = l->data;
    for (Py_ssize_t i = 0; i < l->count; i++) {
        size_t n = strlen(p);
        PyObject *s = PyUnicode_DecodeFSDefaultAndSize(p, (Py_ssize_t)n);
        if (s == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, s);
        p += n + 1;
    }
    return list;
}

static int is_hex64(const char *name)
{
    for (int i = 0; i < HEX_LEN; i++) {
        char c = name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return name[HEX_LEN] == '\0';
}

static PyObject *survey_dir(PyObject *self, PyObject *args)
{
    int parent;
    PyObject *name_obj;
    long long min_atime, oldest_writer;
    if (!PyArg_ParseTuple(args, "iO&LL:survey_dir", &parent, PyUnicode_FSConverter, &name_obj,
                          &min_atime, &oldest_writer))
        return NULL;
    const char *dir_name = PyBytes_AS_STRING(name_obj);
    unsigned long long disk_chunks = 0, disk_bytes = 0, pending_chunks = 0, pending_bytes = 0;
    NameList candidates = {0}, others = {0};
    int err = 0;

    Py_BEGIN_ALLOW_THREADS
    int fd = openat(parent, dir_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (dir == NULL) {
        err = errno;
        if (fd >= 0)
            close(fd);
    } else {
        struct dirent *e;
        for (;;) {
            errno = 0;
            e = readdir(dir);
            if (e == NULL) {
                err = errno;
                break;
            }
            const char *n = e->d_name;
            if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0')))
                continue;
            if (!is_hex64(n)) {
                if (names_add(&others, n) < 0) {
                    err = ENOMEM;
                    break;
                }
                continue;
            }
            struct stat st;
            if (fstatat(fd, n, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno == ENOENT)
                    continue;  /* removed meanwhile */
                err = errno;
                break;
            }
            if (!S_ISREG(st.st_mode))
                continue;
            long long atime = (long long)st.st_atim.tv_sec;
            if (atime < min_atime) {
                if (names_add(&candidates, n) < 0) {
                    err = ENOMEM;
                    break;
                }
            } else if (atime < oldest_writer) {
                pending_chunks++;
                pending_bytes += (unsigned long long)st.st_size;
            } else {
                disk_chunks++;
                disk_bytes += (unsigned long long)st.st_size;
            }
        }
        closedir(dir);
    }
    Py_END_ALLOW_THREADS

    PyObject *result = NULL;
    if (err == ENOMEM) {
        PyErr_NoMemory();
    } else if (err) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name_obj);
    } else {
        PyObject *c = names_to_list(&candidates);
        PyObject *o = c == NULL ? NULL : names_to_list(&others);
        if (o != NULL)
            result = Py_BuildValue("KKKKNN", disk_chunks, disk_bytes, pending_chunks,
                                   pending_bytes, c, o);
        else
            Py_XDECREF(c);
    }
    free(candidates.data);
    free(others.data);
    Py_DECREF(name_obj);
    return result;
}

static PyMethodDef methods[] = {
    {"touch_atimes", touch_atimes, METH_VARARGS,
     "touch_atimes(dirfd, digests, threads=1) -> positions of missing chunks"},
    {"survey_dir", survey_dir, METH_VARARGS,
     "survey_dir(dirfd, name, min_atime, oldest_writer) -> counts, candidates, others"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_chunkfs",
    "Per-chunk loops of garbage collection in C (see chunk_store.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__chunkfs(void)
{
    return PyModule_Create(&module);
}
