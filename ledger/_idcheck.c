/* The identifier check of a batch's records, in C (optional; ledger/state_cert.py).
 *
 * A batch of 5,000 certificates checks 5,000 identifiers: each must be
 * "<root>.<type>.<issuer>.<SERIAL>.<VER>.<C>" for the batch's type and issuer, with
 * SERIAL 1-40 of [0-9A-Z], VER three digits other than 000, and C the ISO/IEC 7064
 * MOD 37,36 check character over type, issuer, serial and version. In Python (a regex and
 * a loop over the characters) that is ~1.3 us an identifier, on every validator, for
 * every batch it admits. Here it is one pass over the bytes.
 *
 * first_invalid(ids, prefix, state) -> index of the first id that is not valid, or -1.
 *   ids     a list or tuple of str
 *   prefix  "<root>.<type>.<issuer>." as bytes (every valid id starts with it)
 *   state   the MOD 37,36 state after the type and issuer codes (1..36)
 * The Python check in ledger/state_cert.py stays the reference: it names the reason of a
 * bad record, and tests hold this function to its verdict.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static int
value_of(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'Z')
        return c - 'A' + 10;
    return -1;
}

static int
step(int p, int v)
{
    int s = (p + v) % 36;
    if (s == 0)
        s = 36;
    return (s * 2) % 37;
}

static const char ALPHABET[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

static int
id_valid(const unsigned char *s, Py_ssize_t n, const unsigned char *prefix,
         Py_ssize_t plen, int p)
{
    Py_ssize_t k = 0, m;
    const unsigned char *t;
    int v, zeros = 0;

    if (n < plen || memcmp(s, prefix, (size_t)plen) != 0)
        return 0;
    t = s + plen;
    m = n - plen;
    while (k < m && (v = value_of(t[k])) >= 0) {
        p = step(p, v);
        k++;
    }
    /* SERIAL, then exactly ".VER.C" */
    if (k < 1 || k > 40 || m != k + 6 || t[k] != '.' || t[k + 4] != '.')
        return 0;
    for (Py_ssize_t i = k + 1; i <= k + 3; i++) {
        if (t[i] < '0' || t[i] > '9')
            return 0;
        zeros += t[i] == '0';
        p = step(p, t[i] - '0');
    }
    if (zeros == 3)
        return 0;
    return t[k + 5] == (unsigned char)ALPHABET[((1 - p) % 36 + 36) % 36];
}

static PyObject *
first_invalid(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *seq, *item;
    Py_buffer prefix;
    long state;
    Py_ssize_t n, i, len;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "first_invalid(ids, prefix, state)");
        return NULL;
    }
    state = PyLong_AsLong(args[2]);
    if (state == -1 && PyErr_Occurred())
        return NULL;
    if (state < 1 || state > 36) {
        PyErr_SetString(PyExc_ValueError, "state must be 1..36");
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &prefix, PyBUF_SIMPLE) < 0)
        return NULL;
    seq = PySequence_Fast(args[0], "ids must be a list or tuple");
    if (seq == NULL) {
        PyBuffer_Release(&prefix);
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_CheckExact(item) || !PyUnicode_IS_ASCII(item))
            break;
        len = PyUnicode_GET_LENGTH(item);
        if (!id_valid((const unsigned char *)PyUnicode_DATA(item), len,
                      (const unsigned char *)prefix.buf, prefix.len, (int)state))
            break;
    }
    Py_DECREF(seq);
    PyBuffer_Release(&prefix);
    return PyLong_FromSsize_t(i < n ? i : -1);
}

PyDoc_STRVAR(first_invalid_doc,
"first_invalid(ids, prefix, state) -> int\n\n"
"Index of the first identifier that is not valid for this prefix and check state, or -1.");

static PyMethodDef methods[] = {
    {"first_invalid", (PyCFunction)(void (*)(void))first_invalid, METH_FASTCALL,
     first_invalid_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ledger._idcheck",
    "A batch's certificate identifiers checked in one pass (see ledger/state_cert.py).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__idcheck(void)
{
    return PyModule_Create(&module);
}
