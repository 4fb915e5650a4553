/*
 * chunkyard.formats._buzhash: PBS's content-defined chunker (spec section 6.2) in C.
 *
 * Why C: a backup reads and hashes every byte through this loop, so it sets the backup
 * throughput; in pure Python it runs at about 1 MB/s.
 *
 * Semantics, exactly those of PBS's pbs-datastore/src/chunker.rs:
 *   a 64-byte window, h = rotl(h) ^ T[leave] ^ T[enter] (u32, rotate by 1); after each byte,
 *   cut when chunk_size >= max or (chunk_size >= min and (h & mask) >= mask - 2), with
 *   mask = 2*avg - 1, min = avg >> 2, max = avg << 2; no test while the window fills (the first
 *   64 bytes of a chunk); full reset after a cut; the state persists across calls.
 *
 * How it gets the same cuts with less work:
 *   - h depends only on the last 64 bytes of the chunk: the fill phase leaves
 *     h = XOR_j rotl^(63-j)(T[w_j]), and rolling drops the oldest term exactly because a u32
 *     rotated 64 times is itself. So h is never carried between calls: it is refolded from the
 *     64 bytes before wherever testing starts, and the part of a chunk below the first tested
 *     size is skipped, not hashed (a quarter of the data at the default sizes).
 *   - The state between calls is the chunk size and a 64-byte ring holding the chunk's last
 *     bytes (ring[pos & 63] is the byte at chunk position pos). Inside a buffer the leaving
 *     byte is read from the buffer itself (d[q - 64]), so the ring is only read for the first
 *     64 positions of a call and only written when a call ends.
 *   - Each hash step depends on the previous one (a rotate + xor latency chain), so the test
 *     region is hashed in blocks split into NLANES lanes stepped together: independent chains
 *     keep the core busy. The first hit in stream order is the cut; lanes after it are
 *     discarded. This is exact for the same reason as above: a lane's hash needs only the 64
 *     bytes before its start, and no earlier cut happened (earlier lanes had no hit).
 *   - The hit test (h & mask) >= mask - 2 is computed as ((h & mask) + 3) & (mask + 1), so the
 *     lanes' tests combine with OR into one branch.
 *
 * The Python type releases the GIL while scanning buffers of 64 KiB or more, and refuses
 * (RuntimeError) to be used by a second thread while one call is running.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define WINDOW 64
#define NLANES 4
#define GIL_RELEASE_MIN ((Py_ssize_t)64 * 1024)
#define AVG_MIN ((int64_t)256)          /* min = avg >> 2 must cover the 64-byte window */
#define AVG_MAX ((int64_t)1 << 30)      /* mask + 1 = 2 * avg must fit a u32 */

/* Appendix A of the spec: casync's buzhash_table, index = byte value. */
static const uint32_t T[256] = {
    0x458be752, 0xc10748cc, 0xfbbcdbb8, 0x6ded5b68, 0xb10a82b5, 0x20d75648, 0xdfc5665f, 0xa8428801,  /*   0..  7 */
    0x7ebf5191, 0x841135c7, 0x65cc53b3, 0x280a597c, 0x16f60255, 0xc78cbc3e, 0x294415f5, 0xb938d494,  /*   8.. 15 */
    0xec85c4e6, 0xb7d33edc, 0xe549b544, 0xfdeda5aa, 0x882bf287, 0x3116737c, 0x05569956, 0xe8cc1f68,  /*  16.. 23 */
    0x0806ac5e, 0x22a14443, 0x15297e10, 0x50d090e7, 0x4ba60f6f, 0xefd9f1a7, 0x5c5c885c, 0x82482f93,  /*  24.. 31 */
    0x9bfd7c64, 0x0b3e7276, 0xf2688e77, 0x8fad8abc, 0xb0509568, 0xf1ada29f, 0xa53efdfe, 0xcb2b1d00,  /*  32.. 39 */
    0xf2a9e986, 0x6463432b, 0x95094051, 0x5a223ad2, 0x9be8401b, 0x61e579cb, 0x1a556a14, 0x5840fdc2,  /*  40.. 47 */
    0x9261ddf6, 0xcde002bb, 0x52432bb0, 0xbf17373e, 0x7b7c222f, 0x2955ed16, 0x9f10ca59, 0xe840c4c9,  /*  48.. 55 */
    0xccabd806, 0x14543f34, 0x1462417a, 0x0d4a1f9c, 0x087ed925, 0xd7f8f24c, 0x7338c425, 0xcf86c8f5,  /*  56.. 63 */
    0xb19165cd, 0x9891c393, 0x325384ac, 0x0308459d, 0x86141d7e, 0xc922116a, 0xe2ffa6b6, 0x53f52aed,  /*  64.. 71 */
    0x2cd86197, 0xf5b9f498, 0xbf319c8f, 0xe0411fae, 0x977eb18c, 0xd8770976, 0x9833466a, 0xc674df7f,  /*  72.. 79 */
    0x8c297d45, 0x8ca48d26, 0xc49ed8e2, 0x7344f874, 0x556f79c7, 0x6b25eaed, 0xa03e2b42, 0xf68f66a4,  /*  80.. 87 */
    0x8e8b09a2, 0xf2e0e62a, 0x0d3a9806, 0x9729e493, 0x8c72b0fc, 0x160b94f6, 0x450e4d3d, 0x7a320e85,  /*  88.. 95 */
    0xbef8f0e1, 0x21d73653, 0x4e3d977a, 0x1e7b3929, 0x1cc6c719, 0xbe478d53, 0x8d752809, 0xe6d8c2c6,  /*  96..103 */
    0x275f0892, 0xc8acc273, 0x4cc21580, 0xecc4a617, 0xf5f7be70, 0xe795248a, 0x375a2fe9, 0x425570b6,  /* 104..111 */
    0x8898dcf8, 0xdc2d97c4, 0x0106114b, 0x364dc22f, 0x1e0cad1f, 0xbe63803c, 0x5f69fac2, 0x4d5afa6f,  /* 112..119 */
    0x1bc0dfb5, 0xfb273589, 0x0ea47f7b, 0x3c1c2b50, 0x21b2a932, 0x6b1223fd, 0x2fe706a8, 0xf9bd6ce2,  /* 120..127 */
    0xa268e64e, 0xe987f486, 0x3eacf563, 0x1ca2018c, 0x65e18228, 0x2207360a, 0x57cf1715, 0x34c37d2b,  /* 128..135 */
    0x1f8f3cde, 0x93b657cf, 0x31a019fd, 0xe69eb729, 0x8bca7b9b, 0x4c9d5bed, 0x277ebeaf, 0xe0d8f8ae,  /* 136..143 */
    0xd150821c, 0x31381871, 0xafc3f1b0, 0x927db328, 0xe95effac, 0x305a47bd, 0x426ba35b, 0x1233af3f,  /* 144..151 */
    0x686a5b83, 0x50e072e5, 0xd9d3bb2a, 0x8befc475, 0x487f0de6, 0xc88dff89, 0xbd664d5e, 0x971b5d18,  /* 152..159 */
    0x63b14847, 0xd7d3c1ce, 0x7f583cf3, 0x72cbcb09, 0xc0d0a81c, 0x7fa3429b, 0xe9158a1b, 0x225ea19a,  /* 160..167 */
    0xd8ca9ea3, 0xc763b282, 0xbb0c6341, 0x020b8293, 0xd4cd299d, 0x58cfa7f8, 0x91b4ee53, 0x37e4d140,  /* 168..175 */
    0x95ec764c, 0x30f76b06, 0x5ee68d24, 0x679c8661, 0xa41979c2, 0xf2b61284, 0x4fac1475, 0x0adb49f9,  /* 176..183 */
    0x19727a23, 0x15a7e374, 0xc43a18d5, 0x3fb1aa73, 0x342fc615, 0x924c0793, 0xbee2d7f0, 0x8a279de9,  /* 184..191 */
    0x4aa2d70c, 0xe24dd37f, 0xbe862c0b, 0x177c22c2, 0x5388e5ee, 0xcd8a7510, 0xf901b4fd, 0xdbc13dbc,  /* 192..199 */
    0x6c0bae5b, 0x64efe8c7, 0x48b02079, 0x80331a49, 0xca3d8ae6, 0xf3546190, 0xfed7108b, 0xc49b941b,  /* 200..207 */
    0x32baf4a9, 0xeb833a4a, 0x88a3f1a5, 0x3a91ce0a, 0x3cc27da1, 0x7112e684, 0x4a3096b1, 0x3794574c,  /* 208..215 */
    0xa3c8b6f3, 0x1d213941, 0x6e0a2e00, 0x233479f1, 0x0f4cd82f, 0x6093edd2, 0x5d7d209e, 0x464fe319,  /* 216..223 */
    0xd4dcac9e, 0x0db845cb, 0xfb5e4bc3, 0xe0256ce1, 0x09fb4ed1, 0x0914be1e, 0xa5bdb2c3, 0xc6eb57bb,  /* 224..231 */
    0x30320350, 0x3f397e91, 0xa67791bc, 0x86bc0e2c, 0xefa0a7e2, 0xe9ff7543, 0xe733612c, 0xd185897b,  /* 232..239 */
    0x329e5388, 0x91dd236b, 0x2ecb0d93, 0xf4d82a3d, 0x35b5c03f, 0xe4e606f0, 0x05b21843, 0x37b45964,  /* 240..247 */
    0x5eff22f4, 0x6027f4cc, 0x77178b3c, 0xae507131, 0x7bf7cabc, 0xf9c18d66, 0x593ade65, 0xd95ddf11,  /* 248..255 */
};

static inline uint32_t rotl1(uint32_t h) { return (h << 1) | (h >> 31); }

typedef struct {
    PyObject_HEAD
    int64_t avg;
    int64_t min;          /* avg >> 2 */
    int64_t max;          /* avg << 2 */
    int64_t first_test;   /* first chunk size at which the hash is tested: max(min, 65) */
    int64_t lane_len;     /* bytes per lane in the block search */
    uint32_t mask;        /* 2 * avg - 1 */
    uint32_t hit_bit;     /* mask + 1 */
    int64_t chunk_size;   /* bytes since the last cut */
    int busy;             /* a call is scanning (possibly without the GIL) */
    uint8_t ring[WINDOW]; /* ring[pos & 63] = byte at chunk position pos, last 64 positions */
} ChunkerObject;

/* The parameters the hot loops need, in locals. */
typedef struct {
    uint32_t mask;
    uint32_t hit_bit;
} Test;

#define HIT(t, h) ((((h) & (t).mask) + 3u) & (t).hit_bit)

/* Byte at buffer position q of the current chunk (chunk starts at buffer position s, which is
 * negative when it began in an earlier call). Only the last 64 chunk bytes before a call are
 * kept, so q >= -64 and q >= s. */
static inline uint8_t
byte_at(const ChunkerObject *c, const uint8_t *d, int64_t s, int64_t q)
{
    return q >= 0 ? d[q] : c->ring[(uint64_t)(q - s) & (WINDOW - 1)];
}

/* Hash of the 64 bytes before buffer position end, all inside the buffer. */
static inline uint32_t
fold_buf(const uint8_t *d, int64_t end)
{
    uint32_t h = 0;
    for (int64_t q = end - WINDOW; q < end; q++)
        h = rotl1(h) ^ T[d[q]];
    return h;
}

/* Hash of the 64 chunk bytes before buffer position end, which may start in the ring. */
static uint32_t
fold_chunk(const ChunkerObject *c, const uint8_t *d, int64_t s, int64_t end)
{
    if (end >= WINDOW)
        return fold_buf(d, end);
    uint32_t h = 0;
    for (int64_t q = end - WINDOW; q < end; q++)
        h = rotl1(h) ^ T[byte_at(c, d, s, q)];
    return h;
}

/* Roll from buffer position *qp (q >= 64) to lim with hash *hp of the 64 bytes before it.
 * Returns the end position (q + 1) of the first byte after which the test hits, or -1 with
 * *hp the hash before lim. */
static inline int64_t
search_serial(const uint8_t *d, int64_t q, int64_t lim, uint32_t *hp, Test t)
{
    uint32_t h = *hp;
    for (; q < lim; q++) {
        h = rotl1(h) ^ T[d[q - WINDOW]] ^ T[d[q]];
        if (HIT(t, h))
            return q + 1;
    }
    *hp = h;
    return -1;
}

/* Same contract as search_serial, hashing blocks of NLANES * lane_len bytes in lanes. */
static int64_t
search_lanes(const uint8_t *d, int64_t q, int64_t lim, uint32_t *hp, Test t, int64_t lane_len)
{
    uint32_t h = *hp;
    while (lim - q >= NLANES * lane_len) {
        const uint8_t *a0 = d + q;
        const uint8_t *a1 = a0 + lane_len;
        const uint8_t *a2 = a1 + lane_len;
        const uint8_t *a3 = a2 + lane_len;
        uint32_t h0 = h;
        uint32_t h1 = fold_buf(d, q + lane_len);
        uint32_t h2 = fold_buf(d, q + 2 * lane_len);
        uint32_t h3 = fold_buf(d, q + 3 * lane_len);
        int64_t i;
        for (i = 0; i < lane_len; i++) {
            h0 = rotl1(h0) ^ T[a0[i - WINDOW]] ^ T[a0[i]];
            h1 = rotl1(h1) ^ T[a1[i - WINDOW]] ^ T[a1[i]];
            h2 = rotl1(h2) ^ T[a2[i - WINDOW]] ^ T[a2[i]];
            h3 = rotl1(h3) ^ T[a3[i - WINDOW]] ^ T[a3[i]];
            if ((((h0 & t.mask) + 3u) | ((h1 & t.mask) + 3u) | ((h2 & t.mask) + 3u)
                 | ((h3 & t.mask) + 3u)) & t.hit_bit)
                break;
        }
        if (i < lane_len) {
            /* Some lane hit at offset i, no lane at an offset before i. In stream order: a lane that hit at
             * i wins unless an earlier lane hits after i, so finish the lanes in order. */
            uint32_t hs[NLANES] = {h0, h1, h2, h3};
            for (int j = 0; j < NLANES; j++) {
                int64_t start = q + j * lane_len;
                if (HIT(t, hs[j]))
                    return start + i + 1;
                int64_t r = search_serial(d, start + i + 1, start + lane_len, &hs[j], t);
                if (r >= 0)
                    return r;
            }
            Py_UNREACHABLE();  /* the lane that hit at i returned above */
        }
        h = h3;
        q += NLANES * lane_len;
    }
    *hp = h;
    return search_serial(d, q, lim, hp, t);
}

/* Consume d[p..n) (p < n). Returns the end position of the next cut, leaving the state reset,
 * or -1 when there is none: then all of it belongs to the current chunk. */
static int64_t
next_cut(ChunkerObject *c, const uint8_t *d, int64_t p, int64_t n)
{
    const int64_t s = p - c->chunk_size;
    const int64_t first = s + c->first_test;    /* the first test follows byte first - 1 */
    const Test t = {c->mask, c->hit_bit};

    if (first <= n) {
        const int64_t max_end = s + c->max;
        const int64_t lim = max_end < n ? max_end : n;
        int64_t q = p > first - 1 ? p : first - 1;
        uint32_t h = fold_chunk(c, d, s, q);
        /* the first 64 positions of a call: the leaving byte may be in the ring */
        for (; q < lim && q < WINDOW; q++) {
            h = rotl1(h) ^ T[byte_at(c, d, s, q - WINDOW)] ^ T[d[q]];
            if (HIT(t, h)) {
                c->chunk_size = 0;
                return q + 1;
            }
        }
        if (q < lim) {
            int64_t r = search_lanes(d, q, lim, &h, t, c->lane_len);
            if (r >= 0) {
                c->chunk_size = 0;
                return r;
            }
        }
        if (lim == max_end) {
            c->chunk_size = 0;
            return lim;
        }
    }
    /* No cut: keep the chunk's last bytes for the next call. */
    int64_t from = n - WINDOW;
    if (from < s)
        from = s;
    if (from < 0)
        from = 0;
    for (int64_t q = from; q < n; q++)
        c->ring[(uint64_t)(q - s) & (WINDOW - 1)] = d[q];
    c->chunk_size = n - s;
    return -1;
}

/* ---- Python type ---------------------------------------------------------------------- */

static int
claim(ChunkerObject *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Chunker is in use by another thread; use one chunker per thread");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static PyObject *
Chunker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"avg", NULL};
    PyObject *avg_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Chunker", kwlist, &avg_obj))
        return NULL;
    PyObject *idx = PyNumber_Index(avg_obj);
    if (idx == NULL)
        return NULL;
    int overflow = 0;
    long long avg = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (avg == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || avg < AVG_MIN || avg > AVG_MAX || (avg & (avg - 1)) != 0) {
        PyObject *repr = PyObject_Repr(avg_obj);
        if (repr != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "chunker average size must be a power of two from 256 to 2**30, not %U",
                         repr);
            Py_DECREF(repr);
        }
        return NULL;
    }
    ChunkerObject *self = (ChunkerObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->avg = avg;
    self->min = avg >> 2;
    self->max = avg << 2;
    self->first_test = self->min > WINDOW ? self->min : WINDOW + 1;
    /* Blocks far shorter than a chunk, so the lanes stepped past a cut are little wasted work;
     * at the small averages the tests use, cuts land in every lane. */
    self->lane_len = avg >> 8;
    if (self->lane_len < 16)
        self->lane_len = 16;
    if (self->lane_len > 65536)
        self->lane_len = 65536;
    self->mask = (uint32_t)(2 * avg - 1);
    self->hit_bit = (uint32_t)(2 * avg);
    self->chunk_size = 0;
    self->busy = 0;
    memset(self->ring, 0, sizeof self->ring);
    return (PyObject *)self;
}

PyDoc_STRVAR(scan_doc,
"scan(buffer) -> int\n--\n\n"
"Feed buffer; return the position just after the first chunk boundary in it, or 0 if there\n"
"is none. After a boundary the chunker is reset and the bytes after the returned position\n"
"are not consumed: feed them again. With 0 all of buffer was consumed.");

static PyObject *
Chunker_scan(ChunkerObject *self, PyObject *arg)
{
    Py_buffer view;
    if (!PyArg_Parse(arg, "y*:scan", &view))
        return NULL;
    if (claim(self) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const uint8_t *d = (const uint8_t *)view.buf;
    const int64_t n = view.len;
    int64_t r = -1;
    if (n > 0) {
        PyThreadState *ts = n >= GIL_RELEASE_MIN ? PyEval_SaveThread() : NULL;
        r = next_cut(self, d, 0, n);
        if (ts != NULL)
            PyEval_RestoreThread(ts);
    }
    self->busy = 0;
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(r < 0 ? 0 : r);
}

PyDoc_STRVAR(boundaries_doc,
"boundaries(buffer) -> list[int]\n--\n\n"
"Feed all of buffer; return the position just after every chunk boundary in it, in order.\n"
"The chunk in progress at the end carries over to the next call.");

static PyObject *
Chunker_boundaries(ChunkerObject *self, PyObject *arg)
{
    Py_buffer view;
    if (!PyArg_Parse(arg, "y*:boundaries", &view))
        return NULL;
    const uint8_t *d = (const uint8_t *)view.buf;
    const int64_t n = view.len;
    /* Every chunk but the first of the call is at least min bytes long. */
    const int64_t cap = n / self->min + 2;
    int64_t *cuts = PyMem_Malloc((size_t)cap * sizeof *cuts);
    if (cuts == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    if (claim(self) < 0) {
        PyMem_Free(cuts);
        PyBuffer_Release(&view);
        return NULL;
    }
    int64_t count = 0;
    /* Small buffers keep the GIL: switching would cost more than it lets other threads run. */
    PyThreadState *ts = n >= GIL_RELEASE_MIN ? PyEval_SaveThread() : NULL;
    int64_t p = 0;
    while (p < n) {
        int64_t r = next_cut(self, d, p, n);
        if (r < 0)
            break;
        cuts[count++] = r;
        p = r;
    }
    if (ts != NULL)
        PyEval_RestoreThread(ts);
    self->busy = 0;
    PyBuffer_Release(&view);

    PyObject *list = PyList_New((Py_ssize_t)count);
    if (list == NULL)
        goto done;
    for (int64_t i = 0; i < count; i++) {
        PyObject *v = PyLong_FromLongLong(cuts[i]);
        if (v == NULL) {
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v);
    }
done:
    PyMem_Free(cuts);
    return list;
}

PyDoc_STRVAR(reset_doc,
"reset() -> None\n--\n\n"
"Forget the chunk in progress, as after a boundary (e.g. to start a new stream).");

static PyObject *
Chunker_reset(ChunkerObject *self, PyObject *Py_UNUSED(ignored))
{
    if (claim(self) < 0)
        return NULL;
    self->chunk_size = 0;
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *
Chunker_get_pending(ChunkerObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->chunk_size);
}

static PyObject *
Chunker_get_avg(ChunkerObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->avg);
}

static PyObject *
Chunker_repr(ChunkerObject *self)
{
    return PyUnicode_FromFormat("Chunker(avg=%lld, pending=%lld)",
                                (long long)self->avg, (long long)self->chunk_size);
}

static PyMethodDef Chunker_methods[] = {
    {"scan", (PyCFunction)Chunker_scan, METH_O, scan_doc},
    {"boundaries", (PyCFunction)Chunker_boundaries, METH_O, boundaries_doc},
    {"reset", (PyCFunction)Chunker_reset, METH_NOARGS, reset_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Chunker_getset[] = {
    {"pending", (getter)Chunker_get_pending, NULL,
     "Bytes fed since the last boundary (the chunk in progress).", NULL},
    {"avg", (getter)Chunker_get_avg, NULL, "The average chunk size the chunker aims for.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Chunker_doc,
"Chunker(avg)\n--\n\n"
"PBS's buzhash content-defined chunker (64-byte window, cut when (h & (2*avg-1)) >= 2*avg-3,\n"
"chunks between avg/4 and avg*4 bytes). avg must be a power of two from 256 to 2**30.");

static PyTypeObject ChunkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "chunkyard.formats._buzhash.Chunker",
    .tp_basicsize = sizeof(ChunkerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Chunker_doc,
    .tp_new = Chunker_new,
    .tp_repr = (reprfunc)Chunker_repr,
    .tp_methods = Chunker_methods,
    .tp_getset = Chunker_getset,
};

static struct PyModuleDef buzhash_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_buzhash",
    .m_doc = "PBS's buzhash chunker (spec section 6.2), native inner loop.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__buzhash(void)
{
    if (PyType_Ready(&ChunkerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&buzhash_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &ChunkerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
