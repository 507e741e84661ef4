/* The sparse Merkle tree's batch update, in C: ``ledger.smt_update.batch_update`` without
 * the interpreter in the loop.
 *
 * How it works
 * ------------
 * This is a line-for-line port of the closures ``ledger.smt_update._updater`` builds
 * (``apply``, ``general``, ``side``, ``child``, ``join``, ``insert_one``), which stay the
 * reference: the tests run both on the same batches and require the same root, the same
 * writes and the same deletes. Everything the tree's format needs is here: the record layout
 * of ``ledger.smt_records``, heap-index position ids, chain hashing. What is not format stays
 * with the caller and is called back: SM3 (``certificates.hashing.sm3``: this module has no
 * SM3 of its own), the storage key of a position (``node_key``) and the reads (``read``,
 * ``hit``, ``fetch``), so the overlay, cache and store logic has one home. Two shortcuts
 * skip a call into Python per node: ``node_key`` may be a bytes prefix (key = prefix + id),
 * and ``sm3`` may be None, which hashes through GmSSL's own C functions once ``set_sm3``
 * has registered them (``ledger.smt_update`` does, from gmssl_pyx's extension, whose
 * exports they are) and they passed the published SM3 test vectors.
 *
 * The Python version uses 256-bit ints for keys and positions. Here a position is a bit
 * string, most significant bit first, held in a 33-byte array (a key's bytes, a branch's
 * prefix shifted to the left, or either with one bit set), plus its depth.
 *
 * A subtree during the update is a ``Sub``: its hash (or b"" for a branch record moving
 * down, whose hash at its new position is not known yet), its key||value if it is a leaf,
 * its record if it is a branch whose record is at hand. ``h == NULL`` is the empty subtree.
 * Every ``Sub`` owns its references.
 *
 * Records read from storage are checked for a consistent length before any byte of them is
 * used; a corrupt one raises ``error`` (SMTError, passed in). The helpers - bits and
 * positions, hashing, the record layout, reads and writes - are in _smtcore_records.h.
 */
#include "_smtcore_records.h"

/* ----------------------------------------------------------------------- the update */

static int apply(Ctx *c, int t, PyObject *node, PyObject *skey, Py_ssize_t lo, Py_ssize_t hi,
                 Sub *out);
static int general(Ctx *c, int t, PyObject *node, PyObject *skey, Py_ssize_t lo, Py_ssize_t hi,
                   Sub *out);

typedef struct {
    PyObject *tkey, *node;
    int side, chain_top; /* chain_top < 0: no chain above the branch */
} Frame;

/* Insert or update key i in the subtree at depth t: a leaf (mkv its key||value, mh its
 * hash) or a stored branch (mkv NULL). Walk down recording each branch and which hash in
 * it to replace, then splice the new hashes in upwards. */
static int insert_one(Ctx *c, int t, PyObject *mh, PyObject *mkv, Py_ssize_t i, Sub *out) {
    const uint8_t *k = c->kp[i];
    Frame stack[257];
    int depth = 0, e = -1, rc = -1;
    PyObject *kv = NULL, *h = NULL, *hkv = NULL, *rec = NULL, *tkey = NULL, *oh = NULL,
             *okv = NULL;
    uint8_t tmp[33], la[33];
    Py_XINCREF(mh);
    Py_XINCREF(mkv);
    kv = key_value(c, i);
    if (kv == NULL)
        goto done;
    int broke = 0;
    while (mkv == NULL) {
        PyObject *nk = pos_key(c, k, t);
        if (nk == NULL)
            goto done;
        PyObject *node = load(c, nk, t);
        if (node == NULL) {
            Py_DECREF(nk);
            goto done;
        }
        const uint8_t *r = (const uint8_t *)PyBytes_AS_STRING(node);
        int d = r[66], ctop = -1;
        if (d < t) {
            Py_DECREF(nk);
            Py_DECREF(node);
            PyErr_Format(c->error, "corrupt SMT node in storage: a branch at depth %d under "
                                   "position depth %d", d, t);
            goto done;
        }
        if (d > t) {
            left_align(r, d, la);
            int x = first_diff(k, la, d);
            if (x < d) {
                /* The key leaves the chain above this branch at depth e: a new branch
                 * there gets the key's leaf and, one level down, this branch. */
                e = x;
                memcpy(tmp, k, 32);
                tmp[32] = 0;
                setbit(tmp, e, !getbit(k, e));
                PyObject *mk = pos_key(c, tmp, e + 1);
                if (mk == NULL || put(c, mk, node) < 0) {
                    Py_XDECREF(mk);
                    Py_DECREF(nk);
                    Py_DECREF(node);
                    goto done;
                }
                Py_DECREF(mk);
                oh = record_hash(c, node, e + 1);
                Py_DECREF(node);
                tkey = nk;
                if (oh == NULL)
                    goto done;
                broke = 1;
                break;
            }
            ctop = t;
        }
        int side = getbit(k, d);
        stack[depth].tkey = nk;
        stack[depth].node = node;
        stack[depth].side = side;
        stack[depth].chain_top = ctop;
        depth++;
        if ((r[65] >> side) & 1) {
            Py_XDECREF(mh);
            mh = PyBytes_FromStringAndSize((const char *)r + 1 + 32 * side, 32);
            mkv = rec_kv(node, side);
            if (mh == NULL || mkv == NULL)
                goto done;
        }
        t = d + 1;
    }
    if (!broke) {
        const uint8_t *m = (const uint8_t *)PyBytes_AS_STRING(mkv);
        if (memcmp(m, k, 32) == 0) {
            e = -1; /* the same key: the leaf is replaced where it is */
        } else {
            /* Another key's leaf: both go under a new branch at depth e. */
            e = first_diff(m, k, 256);
            tkey = pos_key(c, k, t);
            if (tkey == NULL)
                goto done;
            oh = mh;
            okv = mkv;
            Py_INCREF(oh);
            Py_INCREF(okv);
        }
    }
    h = leaf_hash(c, kv);
    if (h == NULL)
        goto done;
    hkv = kv;
    Py_INCREF(hkv);
    if (e >= 0) {
        if (getbit(k, e))
            rec = make_rec(e, k, oh, h, okv, kv);
        else
            rec = make_rec(e, k, h, oh, kv, okv);
        if (rec == NULL)
            goto done;
        Py_DECREF(h);
        h = node_hash(c, rec);
        if (h == NULL)
            goto done;
        if (e > t && (h = chain(c, h, k, e, t)) == NULL)
            goto done;
        if (put(c, tkey, rec) < 0)
            goto done;
        Py_CLEAR(hkv);
    }
    /* Splice the new hashes in upwards. The first parent may have held a leaf here (we
     * landed on one): its flags and key||value change to hkv, the new leaf or none. Every
     * other side on the way was walked through, a branch with no key||value: hkv is
     * cleared after the first frame, and it is already NULL when a new branch was made. */
    while (depth > 0) {
        Frame *fr = &stack[--depth];
        PyObject *nrec = replace_child(fr->node, fr->side, h, hkv);
        Py_CLEAR(hkv);
        int ok = nrec != NULL;
        if (ok) {
            Py_XSETREF(rec, nrec);
            Py_DECREF(h);
            h = node_hash(c, rec);
            ok = h != NULL;
        }
        if (ok && fr->chain_top >= 0) {
            int d = PyBytes_AS_STRING(fr->node)[66] & 0xff;
            h = chain(c, h, k, d, fr->chain_top);
            ok = h != NULL;
        }
        if (ok)
            ok = put(c, fr->tkey, rec) == 0;
        Py_DECREF(fr->tkey);
        Py_DECREF(fr->node);
        if (!ok)
            goto done;
    }
    out->h = h;
    h = NULL;
    out->kv = hkv;
    hkv = NULL;
    out->rec = rec;
    rec = NULL;
    rc = 0;
done:
    while (depth > 0) {
        depth--;
        Py_DECREF(stack[depth].tkey);
        Py_DECREF(stack[depth].node);
    }
    Py_XDECREF(mh);
    Py_XDECREF(mkv);
    Py_XDECREF(kv);
    Py_XDECREF(h);
    Py_XDECREF(hkv);
    Py_XDECREF(rec);
    Py_XDECREF(tkey);
    Py_XDECREF(oh);
    Py_XDECREF(okv);
    return rc;
}

/* Items [lo, hi) into the child at depth s + 1 (position b's first s + 1 bits): a leaf
 * (kv) or a stored branch of hash h. */
static int child(Ctx *c, int s, const uint8_t *b, PyObject *h, PyObject *kv, Py_ssize_t lo,
                 Py_ssize_t hi, Sub *out) {
    if (lo + 1 == hi && val(c, lo) != Py_None)
        return insert_one(c, s + 1, h, kv, lo, out);
    if (kv != NULL)
        return general(c, s + 1, kv, NULL, lo, hi, out);
    PyObject *skey = pos_key(c, b, s + 1);
    if (skey == NULL)
        return -1;
    PyObject *node = load(c, skey, s + 1);
    int rc = node == NULL ? -1 : apply(c, s + 1, node, skey, lo, hi, out);
    Py_XDECREF(node);
    Py_DECREF(skey);
    return rc;
}

/* The subtree at depth t made of the new children r0, r1 of a branch at depth s, on the
 * path b. Consumes r0 and r1. */
static int join(Ctx *c, int t, int s, const uint8_t *b, PyObject *skey, Sub *r0, Sub *r1,
                Sub *out) {
    int rc = -1;
    PyObject *tkey = skey, *h = NULL, *rec = NULL;
    uint8_t pos[33];
    if (tkey != NULL)
        Py_INCREF(tkey);
    else if ((tkey = pos_key(c, b, t)) == NULL)
        goto done;
    if (r0->h == NULL || r1->h == NULL) {
        /* At most one side left: it rises to depth t; a leaf as it is, a branch's record
         * moves up to this position. */
        if (skey != NULL && del(c, skey) < 0)
            goto done;
        Sub *r = r0->h == NULL ? r1 : r0;
        if (r->h == NULL || r->kv != NULL) {
            *out = *r;
            r->h = r->kv = r->rec = NULL;
            rc = 0;
            goto done;
        }
        memcpy(pos, b, 33);
        setbit(pos, s, r0->h == NULL);
        PyObject *ckey = pos_key(c, pos, s + 1);
        if (ckey == NULL)
            goto done;
        rec = r->rec;
        if (rec != NULL)
            Py_INCREF(rec);
        else if ((rec = load(c, ckey, s + 1)) == NULL) {
            Py_DECREF(ckey);
            goto done;
        }
        if (del(c, ckey) < 0 || put(c, tkey, rec) < 0) {
            Py_DECREF(ckey);
            goto done;
        }
        Py_DECREF(ckey);
        h = r->h;
        Py_INCREF(h);
        if ((h = chain(c, h, pos, s + 1, t)) == NULL)
            goto done;
        out->h = h;
        out->rec = rec;
        h = rec = NULL;
        rc = 0;
        goto done;
    }
    rec = make_rec(s, b, r0->h, r1->h, r0->kv, r1->kv);
    if (rec == NULL || (h = node_hash(c, rec)) == NULL)
        goto done;
    if (s > t && (h = chain(c, h, b, s, t)) == NULL)
        goto done;
    if (put(c, tkey, rec) < 0)
        goto done;
    out->h = h;
    out->rec = rec;
    h = rec = NULL;
    rc = 0;
done:
    sub_clear(r0);
    sub_clear(r1);
    Py_XDECREF(tkey);
    Py_XDECREF(h);
    Py_XDECREF(rec);
    return rc;
}

/* The child at depth s + 1 (position b's first s + 1 bits) given what is there now:
 * empty, a leaf, or a branch record moving down to it. Consumes sub. */
static int side(Ctx *c, int s, const uint8_t *b, Sub *sub, Py_ssize_t lo, Py_ssize_t hi,
                Sub *out) {
    int rc;
    if (sub->h == NULL) {
        if (lo == hi)
            return 0;
        if (lo + 1 == hi)
            return lone_leaf(c, lo, out);
        return general(c, s + 1, NULL, NULL, lo, hi, out);
    }
    if (sub->rec != NULL) { /* moved down: store it at its new position */
        if (lo < hi) {
            rc = apply(c, s + 1, sub->rec, NULL, lo, hi, out);
        } else {
            PyObject *skey = pos_key(c, b, s + 1), *h = NULL;
            rc = -1;
            if (skey != NULL && put(c, skey, sub->rec) == 0 &&
                (h = record_hash(c, sub->rec, s + 1)) != NULL) {
                sub_set(out, h, NULL, sub->rec);
                Py_DECREF(h);
                rc = 0;
            }
            Py_XDECREF(skey);
        }
        sub_clear(sub);
        return rc;
    }
    if (lo == hi) {
        *out = *sub;
        sub->h = sub->kv = sub->rec = NULL;
        return 0;
    }
    rc = child(c, s, b, sub->h, sub->kv, lo, hi, out);
    sub_clear(sub);
    return rc;
}

/* Like apply() where there is no branch (node NULL, or a leaf's key||value) or some keys
 * leave its chain (node a branch record). */
static int general(Ctx *c, int t, PyObject *node, PyObject *skey, Py_ssize_t lo, Py_ssize_t hi,
                   Sub *out) {
    const uint8_t *kl = c->kp[lo], *kh = c->kp[hi - 1];
    Sub sub0 = {0}, sub1 = {0}, r0 = {0}, r1 = {0};
    uint8_t cp[33], la[33];
    int s;
    memset(cp, 0, 33);
    if (node == NULL || PyBytes_GET_SIZE(node) == 64) {
        const uint8_t *kk = node == NULL ? kl : (const uint8_t *)PyBytes_AS_STRING(node);
        if (lo + 1 == hi && memcmp(kl, kk, 32) == 0)
            return lone_leaf(c, lo, out);
        int a = first_diff(kl, kk, 256), z = first_diff(kh, kk, 256);
        s = a < z ? a : z;
        if (node != NULL) {
            PyObject *h = leaf_hash(c, node);
            if (h == NULL)
                return -1;
            Sub *leaf = getbit(kk, s) ? &sub1 : &sub0;
            sub_set(leaf, h, node, NULL);
            Py_DECREF(h);
        }
    } else {
        /* apply() found keys leaving the chain above this branch, the first at depth s:
         * the branch moves down a level under a new branch at s. */
        const uint8_t *r = (const uint8_t *)PyBytes_AS_STRING(node);
        int d = r[66];
        left_align(r, d, la);
        int a = first_diff(kl, la, d), z = first_diff(kh, la, d);
        s = a < z ? a : z;
        PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
        if (empty == NULL)
            return -1;
        sub_set(getbit(la, s) ? &sub1 : &sub0, empty, NULL, node);
        Py_DECREF(empty);
    }
    memcpy(cp, kl, 32);
    Py_ssize_t mid;
    if (lo + 1 == hi)
        mid = getbit(kl, s) ? lo : hi;
    else
        mid = split(c, s, lo, hi);
    setbit(cp, s, 0);
    if (side(c, s, cp, &sub0, lo, mid, &r0) < 0) {
        sub_clear(&sub1);
        return -1;
    }
    setbit(cp, s, 1);
    if (side(c, s, cp, &sub1, mid, hi, &r1) < 0) {
        sub_clear(&r0);
        return -1;
    }
    memcpy(cp, kl, 32);
    return join(c, t, s, cp, skey, &r0, &r1, out);
}

/* The subtree at depth t after items [lo, hi), given the branch record there (stored here
 * under skey, or moving down when skey is NULL). */
static int apply(Ctx *c, int t, PyObject *node, PyObject *skey, Py_ssize_t lo, Py_ssize_t hi,
                 Sub *out) {
    const uint8_t *r = (const uint8_t *)PyBytes_AS_STRING(node);
    const uint8_t *kl = c->kp[lo], *kh = c->kp[hi - 1];
    int d = r[66], f = r[65], p = 67 + NB(d);
    uint8_t b[33];
    Sub r0 = {0}, r1 = {0};
    if (d < t) {
        PyErr_Format(c->error, "corrupt SMT node in storage: a branch at depth %d under "
                               "position depth %d", d, t);
        return -1;
    }
    if (d > t) { /* a chain above the branch: do all keys stay on it? */
        left_align(r, d, b);
        if (first_diff(kl, b, d) < d || first_diff(kh, b, d) < d)
            return general(c, t, node, skey, lo, hi, out);
    } else {
        memset(b, 0, 33);
        memcpy(b, kl, 32);
    }
    /* All keys are under this branch: split them by bit d. */
    Py_ssize_t mid = split(c, d, lo, hi);
    PyObject *lkv = NULL, *rkv = NULL, *lh = NULL, *rh = NULL;
    int rc = -1;
    lh = PyBytes_FromStringAndSize((const char *)r + 1, 32);
    rh = PyBytes_FromStringAndSize((const char *)r + 33, 32);
    if (lh == NULL || rh == NULL)
        goto done;
    if ((f & 1) && (lkv = PyBytes_FromStringAndSize((const char *)r + p, 64)) == NULL)
        goto done;
    if ((f & 2) && (rkv = PyBytes_FromStringAndSize((const char *)r + PyBytes_GET_SIZE(node) - 64,
                                                    64)) == NULL)
        goto done;
    setbit(b, d, 0);
    if (mid > lo) {
        if (child(c, d, b, lh, lkv, lo, mid, &r0) < 0)
            goto done;
    } else {
        sub_set(&r0, lh, lkv, NULL);
    }
    setbit(b, d, 1);
    if (mid < hi) {
        if (child(c, d, b, rh, rkv, mid, hi, &r1) < 0)
            goto done;
    } else {
        sub_set(&r1, rh, rkv, NULL);
    }
    setbit(b, d, 0);
    if (r0.h == NULL || r1.h == NULL) { /* a delete emptied a side */
        rc = join(c, t, d, b, skey, &r0, &r1, out);
        goto done;
    }
    {
        PyObject *rec = make_rec(d, b, r0.h, r1.h, r0.kv, r1.kv), *h = NULL, *key = skey;
        if (rec != NULL) /* the prefix as stored, as the reference copies it */
            memcpy(PyBytes_AS_STRING(rec) + 67, r + 67, (size_t)NB(d));
        if (rec == NULL || (h = node_hash(c, rec)) == NULL) {
            Py_XDECREF(rec);
            goto done;
        }
        if (d > t && (h = chain(c, h, b, d, t)) == NULL) {
            Py_DECREF(rec);
            goto done;
        }
        if (key == NULL && (key = pos_key(c, b, t)) == NULL) {
            Py_DECREF(rec);
            Py_DECREF(h);
            goto done;
        }
        rc = put(c, key, rec);
        if (key != skey)
            Py_DECREF(key);
        if (rc < 0) {
            Py_DECREF(rec);
            Py_DECREF(h);
            goto done;
        }
        out->h = h;
        out->rec = rec;
        rc = 0;
    }
done:
    sub_clear(&r0);
    sub_clear(&r1);
    Py_XDECREF(lh);
    Py_XDECREF(rh);
    Py_XDECREF(lkv);
    Py_XDECREF(rkv);
    return rc;
}

/* ------------------------------------------------------------------------- the entry */

PyDoc_STRVAR(batch_update_doc,
"batch_update(keys, vals, old, node_key, read, hit, fetch, cache_depth, missing, deleted,\n"
"             sm3, error) -> (new_root, writes)\n\n"
"ledger.smt_update.batch_update without a right half: sorted distinct 32-byte keys, their\n"
"32-byte values (None = delete), the root record (None for an empty tree). Deleted storage\n"
"keys are appended to deleted; a corrupt record raises error (SMTError).");

static PyObject *batch_update(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "batch_update takes 12 arguments");
        return NULL;
    }
    Ctx c;
    memset(&c, 0, sizeof c);
    PyObject *old = args[2], *root_key = NULL, *result = NULL;
    Sub res = {0};
    c.node_key = args[3];
    c.read = args[4];
    c.hit = args[5];
    c.fetch = args[6];
    c.missing = args[8];
    c.deleted = args[9];
    c.sm3 = args[10];
    c.error = args[11];
    if (PyBytes_Check(c.node_key))
        c.prefix = c.node_key;
    if (c.sm3 == Py_None) {
        if (sm3c_init == NULL) {
            PyErr_SetString(PyExc_ValueError, "sm3=None needs the C SM3 set by set_sm3");
            return NULL;
        }
        c.native_sm3 = 1;
    }
    c.cache_depth = (int)PyLong_AsLong(args[7]);
    if (c.cache_depth == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_Check(c.deleted) || !PyExceptionClass_Check(c.error)) {
        PyErr_SetString(PyExc_TypeError, "deleted must be a list and error an exception class");
        return NULL;
    }
    c.keys = PySequence_Tuple(args[0]);
    if (c.keys == NULL)
        return NULL;
    c.vals = PySequence_List(args[1]);
    if (c.vals == NULL)
        goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(c.keys);
    if (n == 0 || PyList_GET_SIZE(c.vals) != n) {
        PyErr_SetString(PyExc_ValueError, "keys must be non-empty, with one value each");
        goto done;
    }
    c.kp = PyMem_Malloc(sizeof(uint8_t *) * (size_t)n);
    if (c.kp == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyTuple_GET_ITEM(c.keys, i), *v = PyList_GET_ITEM(c.vals, i);
        if (!PyBytes_Check(k) || PyBytes_GET_SIZE(k) != 32 ||
            (v != Py_None && (!PyBytes_Check(v) || PyBytes_GET_SIZE(v) != 32))) {
            PyErr_Format(PyExc_ValueError, "item %zd: keys and values must be 32 bytes", i);
            goto done;
        }
        c.kp[i] = (const uint8_t *)PyBytes_AS_STRING(k);
        if (i && memcmp(c.kp[i - 1], c.kp[i], 32) >= 0) {
            PyErr_SetString(PyExc_ValueError, "keys must be sorted and distinct");
            goto done;
        }
    }
    if (old != Py_None && !PyBytes_Check(old)) {
        PyErr_SetString(PyExc_TypeError, "old must be bytes or None");
        goto done;
    }
    c.writes = PyDict_New();
    if (c.writes == NULL)
        goto done;
    root_key = id_key(&c, (const uint8_t *)"\x01", 1);
    if (root_key == NULL)
        goto done;
    int rc;
    if (old != Py_None && PyBytes_GET_SIZE(old) != 64) {
        rc = check_branch(&c, old, root_key) < 0 ? -1 : apply(&c, 0, old, root_key, 0, n, &res);
    } else {
        rc = general(&c, 0, old == Py_None ? NULL : old, NULL, 0, n, &res);
    }
    if (rc < 0)
        goto done;
    PyObject *new_root;
    if (res.h == NULL) {
        new_root = PyBytes_FromStringAndSize(NULL, 32);
        if (new_root == NULL)
            goto done;
        memset(PyBytes_AS_STRING(new_root), 0, 32);
        if (old != Py_None && del(&c, root_key) < 0) {
            Py_DECREF(new_root);
            goto done;
        }
    } else {
        new_root = res.h;
        Py_INCREF(new_root);
        if (res.kv != NULL && put(&c, root_key, res.kv) < 0) {
            Py_DECREF(new_root);
            goto done;
        }
    }
    result = PyTuple_Pack(2, new_root, c.writes);
    Py_DECREF(new_root);
done:
    sub_clear(&res);
    PyMem_Free(c.kp);
    Py_XDECREF(c.keys);
    Py_XDECREF(c.vals);
    Py_XDECREF(c.writes);
    Py_XDECREF(root_key);
    return result;
}

/* SM3 test vectors of GB/T 32905-2016, appendix A: "abc", and "abcd" sixteen times. */
static const uint8_t KAT_ABC[32] = {
    0x66, 0xc7, 0xf0, 0xf4, 0x62, 0xee, 0xed, 0xd9, 0xd1, 0xf2, 0xd4, 0x6b, 0xdc, 0x10, 0xe4,
    0xe2, 0x41, 0x67, 0xc4, 0x87, 0x5c, 0xf2, 0xf7, 0xa2, 0x29, 0x7d, 0xa0, 0x2b, 0x8f, 0x4b,
    0xa8, 0xe0};
static const uint8_t KAT_ABCD16[32] = {
    0xde, 0xbe, 0x9f, 0xf9, 0x22, 0x75, 0xb8, 0xa1, 0x38, 0x60, 0x48, 0x89, 0xc1, 0x8e, 0x5a,
    0x4d, 0x6f, 0xdb, 0x70, 0xe5, 0x38, 0x7e, 0x57, 0x65, 0x29, 0x3d, 0xcb, 0xa3, 0x9c, 0x0c,
    0x57, 0x32};

PyDoc_STRVAR(set_sm3_doc,
"set_sm3(init, update, finish) -> bool\n\n"
"Register GmSSL's sm3_init, sm3_update and sm3_finish (C function addresses) for\n"
"batch_update(..., sm3=None, ...). They must reproduce the published SM3 test vectors\n"
"first; otherwise nothing is registered and the answer is False.");

static PyObject *set_sm3(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "set_sm3 takes 3 arguments");
        return NULL;
    }
    void *p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = PyLong_AsVoidPtr(args[i]);
        if (p[i] == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "set_sm3: a NULL function address");
            return NULL;
        }
    }
    sm3_init_fn old_init = sm3c_init;
    sm3_update_fn old_update = sm3c_update;
    sm3_finish_fn old_finish = sm3c_finish;
    sm3c_init = (sm3_init_fn)p[0];
    sm3c_update = (sm3_update_fn)p[1];
    sm3c_finish = (sm3_finish_fn)p[2];
    uint8_t out[32], abcd[64];
    for (int i = 0; i < 64; i++)
        abcd[i] = (uint8_t)"abcd"[i & 3];
    int ok = 1;
    sm3c((const uint8_t *)"abc", 3, out);
    ok &= memcmp(out, KAT_ABC, 32) == 0;
    sm3c(abcd, 64, out);
    ok &= memcmp(out, KAT_ABCD16, 32) == 0;
    if (!ok) {
        sm3c_init = old_init;
        sm3c_update = old_update;
        sm3c_finish = old_finish;
    }
    return PyBool_FromLong(ok);
}

PyDoc_STRVAR(sm3_doc, "sm3(data) -> bytes\n\nSM3 through the functions set_sm3 registered.");

static PyObject *sm3_py(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (sm3c_init == NULL) {
        PyErr_SetString(PyExc_ValueError, "no C SM3 registered (set_sm3)");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *h = PyBytes_FromStringAndSize(NULL, 32);
    if (h != NULL)
        sm3c((const uint8_t *)view.buf, (size_t)view.len, (uint8_t *)PyBytes_AS_STRING(h));
    PyBuffer_Release(&view);
    return h;
}

/* ----------------------------------------------------------------------- proofs */

PyDoc_STRVAR(proof_root_doc,
"proof_root(key, value, proof) -> bytes | None\n\n"
"The root an encoded SMT proof (ledger.smt_proof's format) leads to for key (32 bytes)\n"
"and value (32 bytes, or None for absence), or None when the proof breaks any of\n"
"ledger.smt_proof.verify_proof's rules, an argument has the wrong type or size, or no C\n"
"SM3 is registered. Only the accepting path is here: the caller compares the root and\n"
"lets the Python check name the defect of anything refused.");

static PyObject *proof_root(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "proof_root takes 3 arguments");
        return NULL;
    }
    PyObject *key_o = args[0], *value_o = args[1], *proof_o = args[2];
    if (sm3c_init == NULL || !PyBytes_CheckExact(key_o) || PyBytes_GET_SIZE(key_o) != 32 ||
        !PyBytes_CheckExact(proof_o) ||
        (value_o != Py_None && (!PyBytes_CheckExact(value_o) || PyBytes_GET_SIZE(value_o) != 32)))
        Py_RETURN_NONE;
    const uint8_t *key = (const uint8_t *)PyBytes_AS_STRING(key_o);
    const uint8_t *d = (const uint8_t *)PyBytes_AS_STRING(proof_o);
    Py_ssize_t n = PyBytes_GET_SIZE(proof_o);
    if (n < 3 || d[0] > 1)
        Py_RETURN_NONE;
    int flags = d[0], depth = (d[1] << 8) | d[2];
    if (depth > 256)
        Py_RETURN_NONE;
    int size = (depth + 7) >> 3, pad = size * 8 - depth;
    if (n < 3 + size || (pad && (d[3 + size - 1] & ((1 << pad) - 1))))
        Py_RETURN_NONE;
    Py_ssize_t ones = 0;
    for (int i = 0; i < size; i++)
        ones += __builtin_popcount(d[3 + i]);
    if (n != 3 + size + 32 * ones + 64 * flags)
        Py_RETURN_NONE;
    static const uint8_t zero[32];
    const uint8_t *sib[256];
    Py_ssize_t off = 3 + size;
    for (int j = 0; j < depth; j++) {
        if ((d[3 + (j >> 3)] >> (7 - (j & 7))) & 1) {
            if (memcmp(d + off, zero, 32) == 0)
                Py_RETURN_NONE; /* marked non-empty but zero */
            sib[j] = d + off;
            off += 32;
        } else {
            sib[j] = zero;
        }
    }
    uint8_t h[32], buf[65];
    if (value_o != Py_None) {
        if (flags)
            Py_RETURN_NONE; /* inclusion claimed, path ends at another key's leaf */
        buf[0] = 0;
        memcpy(buf + 1, key, 32);
        memcpy(buf + 33, PyBytes_AS_STRING(value_o), 32);
        sm3c(buf, 65, h);
    } else if (!flags) {
        memset(h, 0, 32);
    } else {
        const uint8_t *other = d + off;
        if (memcmp(other, key, 32) == 0)
            Py_RETURN_NONE; /* absence claimed, path ends at the key's own leaf */
        int full = depth >> 3, rest = depth & 7;
        if (memcmp(other, key, (size_t)full) != 0 ||
            (rest && ((other[full] ^ key[full]) & (uint8_t)(0xFF << (8 - rest)))))
            Py_RETURN_NONE; /* that leaf is not on the key's path */
        buf[0] = 0;
        memcpy(buf + 1, other, 64);
        sm3c(buf, 65, h);
    }
    if (depth && sib[depth - 1] == zero)
        Py_RETURN_NONE; /* the path would end one level up */
    buf[0] = 1;
    for (int j = depth - 1; j >= 0; j--) {
        if ((key[j >> 3] >> (7 - (j & 7))) & 1) {
            memcpy(buf + 1, sib[j], 32);
            memcpy(buf + 33, h, 32);
        } else {
            memcpy(buf + 1, h, 32);
            memcpy(buf + 33, sib[j], 32);
        }
        sm3c(buf, 65, h);
    }
    return PyBytes_FromStringAndSize((const char *)h, 32);
}

static PyMethodDef methods[] = {
    {"batch_update", (PyCFunction)(void (*)(void))batch_update, METH_FASTCALL, batch_update_doc},
    {"set_sm3", (PyCFunction)(void (*)(void))set_sm3, METH_FASTCALL, set_sm3_doc},
    {"sm3", (PyCFunction)sm3_py, METH_O, sm3_doc},
    {"proof_root", (PyCFunction)(void (*)(void))proof_root, METH_FASTCALL, proof_root_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ledger._smtcore",
    "The sparse Merkle tree's batch update in C (see ledger/_smtcore.c's header).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__smtcore(void) { return PyModule_Create(&module); }
