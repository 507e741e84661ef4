/* A batch transaction's records decoded in one pass, in C (optional; ledger/tx.py).
 *
 * A cert.issue_batch body is {"issuer": str, "records": [anchor map, ...]}, each anchor
 * map {"digest", "id", "issuer", "supersedes", "type", "valid_from", "valid_until"}.
 * In Python a 5,000-record batch is unpacked into 5,000 dicts, re-packed to prove it was
 * canonical, and each dict is checked and turned into an Anchor: ~3.5 us a record, on
 * every validator, for every batch it admits. Here the bytes become Anchors directly.
 *
 * load_batch(data, pos, anchor_type, max_id, max_code) -> (issuer, records, end) or None
 *   data         the transaction's bytes; the body's "issuer" value starts at ``pos``
 *   anchor_type  ledger.tx_body.Anchor (a NamedTuple: a tuple subclass of 7 fields)
 *   records      a tuple of anchor_type; ``end`` is the offset just past the body
 * It accepts only the canonical encoding of the common case: short ASCII strings in their
 * shortest header, the 32-byte digest as a bin 8, integers in their shortest form, keys in
 * canonical order, every string 1..max_id (id, supersedes) or 1..max_code (issuer, type,
 * the body's issuer) long. Anything else - another form, another field, a fault - gives
 * None, and ledger/tx.py decodes the transaction the general way, which decides and names
 * the fault. Tests hold this function to the general path's result.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    const unsigned char *p, *end;
} cursor;

/* A string in the shortest header msgpack gives it (fixstr, else str 8), ASCII,
 * 1..max_len long; NULL (no error set) if not. */
static PyObject *
read_ascii(cursor *c, Py_ssize_t max_len)
{
    Py_ssize_t n;
    if (c->p >= c->end)
        return NULL;
    if ((c->p[0] & 0xe0) == 0xa0) {
        n = c->p[0] & 0x1f;
        c->p += 1;
    } else if (c->p[0] == 0xd9 && c->end - c->p >= 2 && c->p[1] >= 32) {
        n = c->p[1];
        c->p += 2;
    } else {
        return NULL;
    }
    if (n < 1 || n > max_len || c->end - c->p < n)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (c->p[i] & 0x80)
            return NULL;
    PyObject *s = PyUnicode_New(n, 127);
    if (s == NULL)
        return NULL;
    memcpy(PyUnicode_DATA(s), c->p, (size_t)n);
    c->p += n;
    return s;
}

/* An unsigned integer in its shortest form; 0 on success. */
static int
read_uint(cursor *c, unsigned long long *out)
{
    const unsigned char *p = c->p;
    Py_ssize_t left = c->end - p;
    unsigned long long v = 0;
    int n, i;
    if (left < 1)
        return -1;
    if (p[0] < 0x80) {
        *out = p[0];
        c->p += 1;
        return 0;
    }
    switch (p[0]) {
    case 0xcc: n = 1; break;
    case 0xcd: n = 2; break;
    case 0xce: n = 4; break;
    case 0xcf: n = 8; break;
    default: return -1;
    }
    if (left < 1 + n)
        return -1;
    for (i = 1; i <= n; i++)
        v = (v << 8) | p[i];
    /* the shortest form: each width only for what the one below cannot hold */
    if ((n == 1 && v < 0x80) || (n == 2 && v < 0x100) || (n == 4 && v < 0x10000)
        || (n == 8 && v < 0x100000000ULL))
        return -1;
    *out = v;
    c->p += 1 + n;
    return 0;
}

static int
expect(cursor *c, const char *bytes, Py_ssize_t n)
{
    if (c->end - c->p < n || memcmp(c->p, bytes, (size_t)n) != 0)
        return -1;
    c->p += n;
    return 0;
}

static const char K_DIGEST[] = "\xa6" "digest" "\xc4\x20";
static const char K_ID[] = "\xa2" "id";
static const char K_ISSUER[] = "\xa6" "issuer";
static const char K_SUPERSEDES[] = "\xaa" "supersedes";
static const char K_TYPE[] = "\xa4" "type";
static const char K_FROM[] = "\xaa" "valid_from";
static const char K_UNTIL[] = "\xab" "valid_until";
static const char K_RECORDS[] = "\xa7" "records";
#define LEN(k) ((Py_ssize_t)sizeof(k) - 1)

/* One anchor map; a new reference, or NULL (an error set only for a failed allocation). */
static PyObject *
read_anchor(cursor *c, PyTypeObject *type, Py_ssize_t max_id, Py_ssize_t max_code)
{
    PyObject *digest = NULL, *id = NULL, *issuer = NULL, *sup = NULL, *typ = NULL;
    PyObject *from = NULL, *until = NULL, *out;
    unsigned long long v;

    if (c->p >= c->end || c->p[0] != 0x87 || (++c->p, expect(c, K_DIGEST, LEN(K_DIGEST))))
        return NULL;
    if (c->end - c->p < 32)
        return NULL;
    if ((digest = PyBytes_FromStringAndSize((const char *)c->p, 32)) == NULL)
        return NULL;
    c->p += 32;
    if (expect(c, K_ID, LEN(K_ID)) || (id = read_ascii(c, max_id)) == NULL)
        goto fail;
    if (expect(c, K_ISSUER, LEN(K_ISSUER)) || (issuer = read_ascii(c, max_code)) == NULL)
        goto fail;
    if (expect(c, K_SUPERSEDES, LEN(K_SUPERSEDES)))
        goto fail;
    if (c->p < c->end && c->p[0] == 0xc0) {
        c->p += 1;
        sup = Py_NewRef(Py_None);
    } else if ((sup = read_ascii(c, max_id)) == NULL) {
        goto fail;
    }
    if (expect(c, K_TYPE, LEN(K_TYPE)) || (typ = read_ascii(c, max_code)) == NULL)
        goto fail;
    if (expect(c, K_FROM, LEN(K_FROM)) || read_uint(c, &v)
        || (from = PyLong_FromUnsignedLongLong(v)) == NULL)
        goto fail;
    if (expect(c, K_UNTIL, LEN(K_UNTIL)))
        goto fail;
    if (c->p < c->end && c->p[0] == 0xc0) {
        c->p += 1;
        until = Py_NewRef(Py_None);
    } else if (read_uint(c, &v) || (until = PyLong_FromUnsignedLongLong(v)) == NULL) {
        goto fail;
    }
    /* A NamedTuple is a tuple subclass with no fields of its own: built as tuple's own
     * constructor builds a subclass instance (tp_alloc, then the items). */
    if ((out = type->tp_alloc(type, 7)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(out, 0, id);
    PyTuple_SET_ITEM(out, 1, typ);
    PyTuple_SET_ITEM(out, 2, issuer);
    PyTuple_SET_ITEM(out, 3, digest);
    PyTuple_SET_ITEM(out, 4, from);
    PyTuple_SET_ITEM(out, 5, until);
    PyTuple_SET_ITEM(out, 6, sup);
    return out;
fail:
    Py_XDECREF(digest);
    Py_XDECREF(id);
    Py_XDECREF(issuer);
    Py_XDECREF(sup);
    Py_XDECREF(typ);
    Py_XDECREF(from);
    Py_XDECREF(until);
    return NULL;
}

PyDoc_STRVAR(load_batch_doc,
"load_batch(data, pos, anchor_type, max_id, max_code) -> (issuer, records, end) or None\n\n"
"A batch body's issuer and records from ``data`` at ``pos`` (see the module header).");

static PyObject *
load_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf;
    Py_ssize_t pos, max_id, max_code, n, i;
    PyObject *issuer = NULL, *records = NULL, *item, *out;
    PyTypeObject *type;
    cursor c;

    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "load_batch takes 5 arguments");
        return NULL;
    }
    if (!PyType_Check(args[2]) || !PyType_IsSubtype((PyTypeObject *)args[2], &PyTuple_Type)
        || ((PyTypeObject *)args[2])->tp_itemsize != sizeof(PyObject *)
        || ((PyTypeObject *)args[2])->tp_basicsize != PyTuple_Type.tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "anchor_type must be a plain tuple subclass");
        return NULL;
    }
    type = (PyTypeObject *)args[2];
    pos = PyLong_AsSsize_t(args[1]);
    max_id = PyLong_AsSsize_t(args[3]);
    max_code = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || pos > buf.len) {
        PyBuffer_Release(&buf);
        Py_RETURN_NONE;
    }
    c.p = (const unsigned char *)buf.buf + pos;
    c.end = (const unsigned char *)buf.buf + buf.len;

    if ((issuer = read_ascii(&c, max_code)) == NULL || expect(&c, K_RECORDS, LEN(K_RECORDS)))
        goto none;
    /* the array header in its shortest form */
    if (c.p < c.end && (c.p[0] & 0xf0) == 0x90) {
        n = c.p[0] & 0x0f;
        c.p += 1;
    } else if (c.end - c.p >= 3 && c.p[0] == 0xdc) {
        n = (c.p[1] << 8) | c.p[2];
        if (n < 16)
            goto none;
        c.p += 3;
    } else if (c.end - c.p >= 5 && c.p[0] == 0xdd) {
        n = ((Py_ssize_t)c.p[1] << 24) | (c.p[2] << 16) | (c.p[3] << 8) | c.p[4];
        if (n < 0x10000)
            goto none;
        c.p += 5;
    } else {
        goto none;
    }
    /* each record takes at least 80 bytes: a count the input cannot hold is refused
     * before a tuple of that size is allocated */
    if (n > (c.end - c.p) / 80 + 1)
        goto none;
    if ((records = PyTuple_New(n)) == NULL)
        goto error;
    for (i = 0; i < n; i++) {
        if ((item = read_anchor(&c, type, max_id, max_code)) == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto none;
        }
        PyTuple_SET_ITEM(records, i, item);
    }
    out = Py_BuildValue("(NNn)", issuer, records, (Py_ssize_t)(c.p - (const unsigned char *)buf.buf));
    PyBuffer_Release(&buf);
    return out;
none:
    if (PyErr_Occurred())
        goto error;
    Py_XDECREF(issuer);
    Py_XDECREF(records);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
error:
    Py_XDECREF(issuer);
    Py_XDECREF(records);
    PyBuffer_Release(&buf);
    return NULL;
}

static PyMethodDef methods[] = {
    {"load_batch", (PyCFunction)(void (*)(void))load_batch, METH_FASTCALL, load_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ledger._anchors",
    "A batch transaction's records decoded in one pass (see ledger/tx.py).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__anchors(void)
{
    return PyModule_Create(&module);
}
