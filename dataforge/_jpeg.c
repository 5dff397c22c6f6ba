/*
 * dataforge._jpeg: decode only the part of a JPEG that a crop keeps.
 *
 * A RandomResizedCrop keeps on average about half of the image's area, then
 * shrinks it; decoding the whole image and throwing most of it away is the
 * largest CPU cost of an image pipeline. libjpeg-turbo can do better, and this
 * module exposes exactly that, nothing more:
 *
 *   - rows above the crop are skipped (jpeg_skip_scanlines: entropy-decoded,
 *     but no IDCT, upsampling or color conversion), rows below it are never
 *     read (the decode is aborted);
 *   - columns outside the crop are not reconstructed (jpeg_crop_scanline; the
 *     left edge is rounded down to an iMCU boundary, so the caller gets a few
 *     extra columns and the offset of the requested ones);
 *   - optionally the image is decoded at 1/2, 1/4 or 1/8 scale inside the IDCT
 *     (scale_denom), when the caller will shrink the crop by at least that much.
 *
 * The GIL is released while pixels are decoded, so threads decode in parallel.
 * Any libjpeg warning (corrupt data) aborts the decode with a ValueError: the
 * Python caller then falls back to its general decoder, whose behavior on
 * damaged files is the reference. Requires libjpeg(-turbo) >= 1.5 / 2.x headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} ErrorManager;

static void on_error(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    /* level < 0: a warning about corrupt data. Treated as an error (see top). */
    if (level < 0) {
        ErrorManager *err = (ErrorManager *)cinfo->err;
        (*cinfo->err->format_message)(cinfo, err->message);
        longjmp(err->jump, 1);
    }
}

PyDoc_STRVAR(decode_crop_doc,
"decode_crop(data, top, left, height, width, scale_denom=1, gray=False)\n"
"    -> (pixels: bytearray, rows: int, cols: int, channels: int)\n"
"\n"
"Decode the box (top, left, height, width) of a JPEG (in full-resolution pixels)\n"
"at 1/scale_denom scale (1, 2, 4 or 8). Returns the box as dense HWC uint8 pixels,\n"
"rows x cols x channels (cols = ceil((left + width) / scale_denom) - left // scale_denom,\n"
"within the image). The columns around the box that iMCU alignment makes libjpeg\n"
"decode are dropped, each row moved into place, so the result is one dense block\n"
"(the uint8 resize is much faster on dense channels-last input). Raises ValueError on\n"
"corrupt data or an unsupported color space (CMYK), so the caller can fall back to a\n"
"general decoder.");

static PyObject *decode_crop(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"data", "top", "left", "height", "width", "scale_denom", "gray", NULL};
    Py_buffer view;
    long top, left, height, width, denom = 1;
    int gray = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*llll|lp", kwlist, &view, &top, &left, &height,
                                     &width, &denom, &gray))
        return NULL;
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "scale_denom must be 1, 2, 4 or 8, got %ld", denom);
        return NULL;
    }
    if (top < 0 || left < 0 || height < 1 || width < 1) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "crop box must have top, left >= 0 and height, width >= 1, "
                     "got (%ld, %ld, %ld, %ld)", top, left, height, width);
        return NULL;
    }

    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    /* Written between setjmp and a possible longjmp: volatile (C11 7.13.2.1). */
    PyObject *volatile out = NULL;
    JSAMPROW *volatile rows_ptr = NULL;
    PyThreadState *volatile thread_state = NULL;
    volatile int created = 0;
    long rows = 0, cols = 0, channels = gray ? 1 : 3, col_offset = 0, col_count = 0;

    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.message[0] = '\0';
    if (setjmp(err.jump)) {
        if (thread_state != NULL) PyEval_RestoreThread(thread_state);
        if (created) jpeg_destroy_decompress(&cinfo);
        free(rows_ptr);
        Py_XDECREF(out);
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "libjpeg: %s", err.message);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    created = 1;
    jpeg_mem_src(&cinfo, (const unsigned char *)view.buf, (unsigned long)view.len);
    jpeg_read_header(&cinfo, TRUE);
    if (!gray && (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK)) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "CMYK/YCCK JPEG: not decoded here");
        return NULL;
    }
    cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)denom;
    jpeg_start_decompress(&cinfo);

    long out_h = (long)cinfo.output_height, out_w = (long)cinfo.output_width;
    long y0 = top / denom, y1 = (top + height + denom - 1) / denom;
    long x0 = left / denom, x1 = (left + width + denom - 1) / denom;
    if (y1 > out_h) y1 = out_h;
    if (x1 > out_w) x1 = out_w;
    /* Chroma upsampling of an edge column reads the samples beside it: decode a
       margin on both sides, or the edge columns would differ from a full decode. */
    long x0_decoded = x0 > 0 ? x0 - 1 : 0;
    long x1_decoded = x1 + 16 > out_w ? out_w : x1 + 16;
    if (y0 >= y1 || x0 >= x1) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "crop box (%ld, %ld, %ld, %ld) lies outside the %ldx%ld image",
                     top, left, height, width, (long)cinfo.image_width, (long)cinfo.image_height);
        return NULL;
    }
    JDIMENSION xoff = (JDIMENSION)x0_decoded, xwidth = (JDIMENSION)(x1_decoded - x0_decoded);
    if (xwidth < cinfo.output_width) jpeg_crop_scanline(&cinfo, &xoff, &xwidth);
    col_offset = x0 - (long)xoff;
    col_count = x1 - x0;
    cols = (long)cinfo.output_width; /* == xwidth after cropping */
    rows = y1 - y0;

    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(rows * cols * channels));
    rows_ptr = (JSAMPROW *)malloc(sizeof(JSAMPROW) * (size_t)rows);
    if (out == NULL || rows_ptr == NULL) {
        jpeg_destroy_decompress(&cinfo);
        free(rows_ptr);
        Py_XDECREF(out);
        PyBuffer_Release(&view);
        return out == NULL ? NULL : PyErr_NoMemory();
    }
    unsigned char *pixels = (unsigned char *)PyByteArray_AS_STRING(out);
    for (long r = 0; r < rows; r++) rows_ptr[r] = pixels + r * cols * channels;

    thread_state = PyEval_SaveThread();
    if (y0 > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)y0);
    while ((long)cinfo.output_scanline < y1) {
        long done = (long)cinfo.output_scanline - y0;
        jpeg_read_scanlines(&cinfo, rows_ptr + done, (JDIMENSION)(rows - done));
    }
    jpeg_abort_decompress(&cinfo); /* rows below the crop are never decoded */
    if (col_offset != 0 || col_count != cols) {
        /* Pack the box's columns: row r moves from r * cols + col_offset to r * col_count
           (pixels). Destinations never pass a later row's source, so a forward pass of
           memmove is safe. */
        size_t row_bytes = (size_t)(col_count * channels);
        for (long r = 0; r < rows; r++)
            memmove(pixels + (size_t)r * row_bytes, pixels + (size_t)(r * cols + col_offset) * (size_t)channels,
                    row_bytes);
    }
    PyEval_RestoreThread(thread_state);
    thread_state = NULL;

    jpeg_destroy_decompress(&cinfo);
    free(rows_ptr);
    PyBuffer_Release(&view);
    if (col_count != cols && PyByteArray_Resize(out, (Py_ssize_t)(rows * col_count * channels)) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(Olll)", out, rows, col_count, channels);
    Py_DECREF(out);
    return result;
}

PyDoc_STRVAR(header_doc,
"header(data) -> (width, height): a JPEG's size from its header (nothing decoded).\n"
"Raises ValueError when the data is not a readable JPEG header.");

static PyObject *header(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.message[0] = '\0';
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "libjpeg: %s", err.message);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (const unsigned char *)view.buf, (unsigned long)view.len);
    jpeg_read_header(&cinfo, TRUE);
    long width = (long)cinfo.image_width, height = (long)cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&view);
    return Py_BuildValue("(ll)", width, height);
}

PyDoc_STRVAR(jpeg_version_doc, "jpeg_version() -> int: JPEG_LIB_VERSION this module was built against.");

static PyObject *jpeg_version(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(JPEG_LIB_VERSION);
}

static PyMethodDef methods[] = {
    {"decode_crop", (PyCFunction)(void (*)(void))decode_crop, METH_VARARGS | METH_KEYWORDS, decode_crop_doc},
    {"header", header, METH_O, header_doc},
    {"jpeg_version", jpeg_version, METH_NOARGS, jpeg_version_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpeg",
    "Region-of-interest JPEG decoding with libjpeg-turbo (see dataforge/_jpeg.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__jpeg(void) { return PyModule_Create(&module); }
