/* Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) and the default
 * partitioner's choice of partition, compiled. It must place every key where
 * aiokafka's DefaultPartitioner does: consumers keep per-device order and the de-dup
 * log relies on a device staying on one partition. service/partitioner.py holds the
 * pure-Python twin used when this is not built; tests compare both with aiokafka. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static uint32_t murmur2(const unsigned char *data, Py_ssize_t length) {
    const uint32_t m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = 0x9747b28cu ^ (uint32_t)length;
    Py_ssize_t i = 0;
    for (; i + 4 <= length; i += 4) {
        uint32_t k = (uint32_t)data[i] | ((uint32_t)data[i + 1] << 8)
            | ((uint32_t)data[i + 2] << 16) | ((uint32_t)data[i + 3] << 24);
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (length & 3) {
    case 3:
        h ^= (uint32_t)data[i + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)data[i + 1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)data[i];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

static PyObject *py_murmur2(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    uint32_t h = murmur2((const unsigned char *)view.buf, view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(h);
}

static PyObject *py_partition_index(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "partition_index(key, count) takes two arguments");
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (count <= 0) {
        PyErr_SetString(PyExc_ValueError, "count must be positive");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    uint32_t h = murmur2((const unsigned char *)view.buf, view.len) & 0x7fffffffu;
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t((Py_ssize_t)((uint64_t)h % (uint64_t)count));
}

static PyMethodDef methods[] = {
    {"murmur2", py_murmur2, METH_O, "Kafka's murmur2 of a bytes-like key, unsigned 32 bits."},
    {"partition_index", (PyCFunction)(void (*)(void))py_partition_index, METH_FASTCALL,
     "(murmur2(key) & 0x7fffffff) % count: the default partitioner's index."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_murmur2", "Kafka's murmur2, compiled.", -1, methods,
};

PyMODINIT_FUNC PyInit__murmur2(void) { return PyModule_Create(&module); }
