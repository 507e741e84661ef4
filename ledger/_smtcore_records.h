/* The C SMT update's helpers (included by ledger/_smtcore.c only): bit strings and
 * positions, hashing (the caller's SM3, or GmSSL's C SM3 once registered, see set_sm3),
 * the branch record layout of ledger.smt_records, and reads and writes through the
 * caller's callables.
 *
 * A position is a bit string, most significant bit first, in a 33-byte array, plus its
 * depth; a branch record is checked (check_branch) before any byte of it is used.
 */
#ifndef CERTLEDGER_SMTCORE_RECORDS_H
#define CERTLEDGER_SMTCORE_RECORDS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NB(d) (((d) + 7) >> 3)

typedef struct {
    PyObject *h;
    PyObject *kv;
    PyObject *rec;
} Sub;

typedef struct {
    PyObject *keys, *vals, *writes, *deleted;
    PyObject *node_key, *read, *hit, *fetch, *missing, *sm3, *error;
    /* node_key as a prefix (bytes: the storage key is prefix + id, with no call), and sm3
     * as None (GmSSL's C functions, registered by set_sm3): the per-node calls into Python
     * cost about as much as the hash itself. */
    PyObject *prefix;
    int native_sm3;
    const uint8_t **kp;
    int cache_depth;
} Ctx;

static void sub_clear(Sub *s) {
    Py_CLEAR(s->h);
    Py_CLEAR(s->kv);
    Py_CLEAR(s->rec);
}

static void sub_set(Sub *s, PyObject *h, PyObject *kv, PyObject *rec) {
    /* Takes new references to each non-NULL argument. */
    Py_XINCREF(h);
    Py_XINCREF(kv);
    Py_XINCREF(rec);
    s->h = h;
    s->kv = kv;
    s->rec = rec;
}

/* ---------------------------------------------------------------- bits and positions */

static inline int getbit(const uint8_t *b, int i) { return (b[i >> 3] >> (7 - (i & 7))) & 1; }

static inline void setbit(uint8_t *b, int i, int v) {
    if (v)
        b[i >> 3] |= (uint8_t)(0x80 >> (i & 7));
    else
        b[i >> 3] &= (uint8_t)~(0x80 >> (i & 7));
}

/* The first bit in [0, n) where a and b differ, or n if none does. */
static int first_diff(const uint8_t *a, const uint8_t *b, int n) {
    for (int i = 0; i < ((n + 7) >> 3); i++) {
        uint8_t x = a[i] ^ b[i];
        if (x) {
            int j = (i << 3) + __builtin_clz((unsigned)x) - 24;
            return j < n ? j : n;
        }
    }
    return n;
}

/* The first nbits bits of b as a big-endian integer in out[0:len]. */
static void right_align(const uint8_t *b, int nbits, uint8_t *out, int len) {
    memset(out, 0, (size_t)len);
    int shift = (len << 3) - nbits;
    for (int i = 0; i < nbits; i++)
        if (getbit(b, i))
            setbit(out, shift + i, 1);
}

/* A branch record's prefix (its first d bits, right-aligned) shifted to the left. */
static void left_align(const uint8_t *rec, int d, uint8_t *out) {
    memset(out, 0, 33);
    int pad = (NB(d) << 3) - d;
    const uint8_t *p = rec + 67;
    for (int i = 0; i < d; i++)
        if (getbit(p, pad + i))
            setbit(out, i, 1);
}

/* The storage key of the position whose id (its heap index, big-endian) is id[0:len]. */
static PyObject *id_key(Ctx *c, const uint8_t *id, int len) {
    if (c->prefix != NULL) {
        Py_ssize_t pl = PyBytes_GET_SIZE(c->prefix);
        PyObject *key = PyBytes_FromStringAndSize(NULL, pl + len);
        if (key != NULL) {
            memcpy(PyBytes_AS_STRING(key), PyBytes_AS_STRING(c->prefix), (size_t)pl);
            memcpy(PyBytes_AS_STRING(key) + pl, id, (size_t)len);
        }
        return key;
    }
    PyObject *nid = PyBytes_FromStringAndSize((const char *)id, len);
    if (nid == NULL)
        return NULL;
    PyObject *key = PyObject_CallOneArg(c->node_key, nid);
    Py_DECREF(nid);
    if (key != NULL && !PyBytes_Check(key)) {
        Py_DECREF(key);
        PyErr_SetString(PyExc_TypeError, "node_key must return bytes");
        return NULL;
    }
    return key;
}

/* The storage key of the position at depth t whose bits are the first t of b. */
static PyObject *pos_key(Ctx *c, const uint8_t *b, int t) {
    uint8_t id[33];
    int len = (t >> 3) + 1;
    right_align(b, t, id, len);
    setbit(id, (len << 3) - t - 1, 1); /* the heap index's leading 1, at bit t from the right */
    return id_key(c, id, len);
}

/* ------------------------------------------------------------------------- hashing */

/* GmSSL's SM3 (sm3_init / sm3_update / sm3_finish, exported by gmssl_pyx's extension),
 * set by set_sm3 only after they pass the known-answer tests there. The context lives on
 * the stack, so hashing is reentrant; GmSSL's SM3_CTX is 112 bytes, the room is ample. */
typedef void (*sm3_init_fn)(void *ctx);
typedef void (*sm3_update_fn)(void *ctx, const uint8_t *data, size_t len);
typedef void (*sm3_finish_fn)(void *ctx, uint8_t *out);
#define SM3_CTX_ROOM 512

static sm3_init_fn sm3c_init;
static sm3_update_fn sm3c_update;
static sm3_finish_fn sm3c_finish;

static void sm3c(const uint8_t *buf, size_t len, uint8_t *out) {
    unsigned char ctx[SM3_CTX_ROOM] __attribute__((aligned(16)));
    sm3c_init(ctx);
    sm3c_update(ctx, buf, len);
    sm3c_finish(ctx, out);
}

static PyObject *hash(Ctx *c, const uint8_t *buf, Py_ssize_t len) {
    if (c->native_sm3) {
        PyObject *h = PyBytes_FromStringAndSize(NULL, 32);
        if (h != NULL)
            sm3c(buf, (size_t)len, (uint8_t *)PyBytes_AS_STRING(h));
        return h;
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)buf, len);
    if (data == NULL)
        return NULL;
    PyObject *h = PyObject_CallOneArg(c->sm3, data);
    Py_DECREF(data);
    if (h != NULL && (!PyBytes_Check(h) || PyBytes_GET_SIZE(h) != 32)) {
        Py_DECREF(h);
        PyErr_SetString(PyExc_TypeError, "sm3 must return 32 bytes");
        return NULL;
    }
    return h;
}

static PyObject *leaf_hash(Ctx *c, PyObject *kv) {
    uint8_t buf[65];
    buf[0] = 0;
    memcpy(buf + 1, PyBytes_AS_STRING(kv), 64);
    return hash(c, buf, 65);
}

/* SM3 over a branch record's first 65 bytes: its hash at its own depth. */
static PyObject *node_hash(Ctx *c, PyObject *rec) {
    return hash(c, (const uint8_t *)PyBytes_AS_STRING(rec), 65);
}

/* Hash at depth t above the node of hash h (a reference this steals) at depth d on the
 * path b, through the chain nodes in between, whose other child is empty. */
static PyObject *chain(Ctx *c, PyObject *h, const uint8_t *b, int d, int t) {
    uint8_t buf[65];
    buf[0] = 1;
    for (int j = d - 1; j >= t && h != NULL; j--) {
        if (getbit(b, j)) {
            memset(buf + 1, 0, 32);
            memcpy(buf + 33, PyBytes_AS_STRING(h), 32);
        } else {
            memcpy(buf + 1, PyBytes_AS_STRING(h), 32);
            memset(buf + 33, 0, 32);
        }
        Py_DECREF(h);
        h = hash(c, buf, 65);
    }
    return h;
}

/* ------------------------------------------------------------------------- records */

/* Whether rec is a well-formed branch record (the layout of ledger.smt_records). */
static int check_branch(Ctx *c, PyObject *rec, PyObject *skey) {
    Py_ssize_t n = PyBytes_GET_SIZE(rec);
    const uint8_t *r = (const uint8_t *)PyBytes_AS_STRING(rec);
    if (n >= 67 && r[0] == 1 && r[65] <= 3 &&
        n == 67 + NB(r[66]) + 64 * ((r[65] & 1) + (r[65] >> 1)))
        return 0;
    PyErr_Format(c->error, "corrupt SMT node in storage: record %R (%zd bytes) is not a branch",
                 skey == NULL ? Py_None : skey, n);
    return -1;
}

static PyObject *make_rec(int d, const uint8_t *b, PyObject *lh, PyObject *rh, PyObject *lkv,
                          PyObject *rkv) {
    int nb = NB(d);
    Py_ssize_t n = 67 + nb + (lkv ? 64 : 0) + (rkv ? 64 : 0);
    PyObject *rec = PyBytes_FromStringAndSize(NULL, n);
    if (rec == NULL)
        return NULL;
    uint8_t *r = (uint8_t *)PyBytes_AS_STRING(rec);
    r[0] = 1;
    memcpy(r + 1, PyBytes_AS_STRING(lh), 32);
    memcpy(r + 33, PyBytes_AS_STRING(rh), 32);
    r[65] = (uint8_t)((lkv != NULL) | (rkv != NULL) << 1);
    r[66] = (uint8_t)d;
    right_align(b, d, r + 67, nb);
    uint8_t *p = r + 67 + nb;
    if (lkv) {
        memcpy(p, PyBytes_AS_STRING(lkv), 64);
        p += 64;
    }
    if (rkv)
        memcpy(p, PyBytes_AS_STRING(rkv), 64);
    return rec;
}

/* A copy of a branch record with one child replaced: hash h, and key||value kv (or none).
 * side 0 is the left child, 1 the right. */
static PyObject *replace_child(PyObject *node, int side, PyObject *h, PyObject *kv) {
    const uint8_t *o = (const uint8_t *)PyBytes_AS_STRING(node);
    int f = o[65], d = o[66], p = 67 + NB(d);
    int lk = f & 1, rk = (f >> 1) & 1;
    int nl = side == 0 ? (kv != NULL) : lk, nr = side == 1 ? (kv != NULL) : rk;
    PyObject *rec = PyBytes_FromStringAndSize(NULL, p + 64 * (nl + nr));
    if (rec == NULL)
        return NULL;
    uint8_t *r = (uint8_t *)PyBytes_AS_STRING(rec);
    memcpy(r, o, (size_t)p);
    memcpy(r + 1 + 32 * side, PyBytes_AS_STRING(h), 32);
    r[65] = (uint8_t)(nl | nr << 1);
    uint8_t *q = r + p;
    if (nl) {
        memcpy(q, side == 0 ? (const uint8_t *)PyBytes_AS_STRING(kv) : o + p, 64);
        q += 64;
    }
    if (nr)
        memcpy(q, side == 1 ? (const uint8_t *)PyBytes_AS_STRING(kv) : o + p + 64 * lk, 64);
    return rec;
}

static PyObject *rec_kv(PyObject *rec, int side) {
    const uint8_t *r = (const uint8_t *)PyBytes_AS_STRING(rec);
    int f = r[65], p = 67 + NB(r[66]);
    if (!((f >> side) & 1))
        return NULL;
    return PyBytes_FromStringAndSize((const char *)r + (side ? PyBytes_GET_SIZE(rec) - 64 : p),
                                     64);
}

/* The hash at depth t (t <= its depth) of the subtree a branch record holds. */
static PyObject *record_hash(Ctx *c, PyObject *rec, int t) {
    uint8_t la[33];
    const uint8_t *r = (const uint8_t *)PyBytes_AS_STRING(rec);
    left_align(r, r[66], la);
    PyObject *h = node_hash(c, rec);
    return h == NULL ? NULL : chain(c, h, la, r[66], t);
}

/* ---------------------------------------------------------------------- reads, writes */

static int put(Ctx *c, PyObject *skey, PyObject *rec) {
    return PyDict_SetItem(c->writes, skey, rec == NULL ? Py_None : rec);
}

static int del(Ctx *c, PyObject *skey) {
    if (PyDict_SetItem(c->writes, skey, Py_None) < 0)
        return -1;
    return PyList_Append(c->deleted, skey);
}

/* The record under skey at depth t: read() below the cache depth, else hit() then fetch().
 * Checked to be a branch. A new reference, or NULL with an exception set. */
static PyObject *load(Ctx *c, PyObject *skey, int t) {
    PyObject *rec;
    if (t > c->cache_depth) {
        rec = PyObject_CallOneArg(c->read, skey);
    } else {
        rec = PyObject_CallOneArg(c->hit, skey);
        if (rec == Py_None) {
            Py_DECREF(rec);
            PyObject *tt = PyLong_FromLong(t);
            if (tt == NULL)
                return NULL;
            rec = PyObject_CallFunctionObjArgs(c->fetch, skey, tt, NULL);
            Py_DECREF(tt);
        }
    }
    if (rec == NULL)
        return NULL;
    if (rec == Py_None) {
        Py_DECREF(rec);
        PyObject *exc = PyObject_CallOneArg(c->missing, skey);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    if (!PyBytes_Check(rec)) {
        Py_DECREF(rec);
        PyErr_SetString(PyExc_TypeError, "SMT records must be bytes");
        return NULL;
    }
    if (check_branch(c, rec, skey) < 0) {
        Py_DECREF(rec);
        return NULL;
    }
    return rec;
}

/* The first index in [lo, hi) whose key has bit d set (the keys share their first d bits). */
static Py_ssize_t split(Ctx *c, int d, Py_ssize_t lo, Py_ssize_t hi) {
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) >> 1;
        if (getbit(c->kp[mid], d))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static PyObject *val(Ctx *c, Py_ssize_t i) { return PyList_GET_ITEM(c->vals, i); }

static PyObject *key_value(Ctx *c, Py_ssize_t i) {
    PyObject *kv = PyBytes_FromStringAndSize(NULL, 64);
    if (kv == NULL)
        return NULL;
    memcpy(PyBytes_AS_STRING(kv), c->kp[i], 32);
    memcpy(PyBytes_AS_STRING(kv) + 32, PyBytes_AS_STRING(val(c, i)), 32);
    return kv;
}

/* A one-key subtree for item i (the empty one for a delete). */
static int lone_leaf(Ctx *c, Py_ssize_t i, Sub *out) {
    if (val(c, i) == Py_None)
        return 0;
    PyObject *kv = key_value(c, i);
    if (kv == NULL)
        return -1;
    PyObject *h = leaf_hash(c, kv);
    if (h == NULL) {
        Py_DECREF(kv);
        return -1;
    }
    out->h = h;
    out->kv = kv;
    return 0;
}

#endif /* CERTLEDGER_SMTCORE_RECORDS_H */
