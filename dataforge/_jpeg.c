/*
 * dataforge._jpeg: decode only the part of a JPEG that a crop keeps.
 *
 * A RandomResizedCrop keeps on average about half of the image's area, then
 * shrinks it; decoding the whole image and throwing most of it away is the
 * largest CPU cost of an image pipeline. libjpeg-turbo can do better, and this
 * module exposes exactly that:
 *
 *   - rows above the crop are skipped (jpeg_skip_scanlines: entropy-decoded,
 *     but no IDCT, upsampling or color conversion), rows below it are never
 *     read (the decode is aborted);
 *   - columns outside the crop are not reconstructed (jpeg_crop_scanline; the
 *     left edge is rounded down to an iMCU boundary, so the caller gets a few
 *     extra columns and the offset of the requested ones);
 *   - optionally the image is decoded at 1/2, 1/4 or 1/8 scale inside the IDCT
 *     (scale_denom), when the caller will shrink the crop by at least that much;
 *   - a progressive file is decoded without the scans, and the rows below the
 *     crop, that no output pixel reads (NOTE [unused scans]).
 *
 * The GIL is released while pixels are decoded, so threads decode in parallel;
 * read_file reads a whole file with one GIL hand-off where os.* takes four (NOTE
 * [GIL transitions] in dataforge/transforms/presets.py).
 * Errors: dataforge._jpeg.Unsupported (a ValueError) for what this module does
 * not decode (CMYK, 12-bit, lossless, a broken crop path; the caller may use a
 * general decoder), ValueError for corrupt data or a limit exceeded (the caller
 * must not retry elsewhere: the refusal stands). Requires libjpeg-turbo >= 1.5.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <jpeglib.h>
#include <jerror.h>

#if JPEG_LIB_VERSION >= 70
#define COMP_DCT_SIZE(comp) ((comp)->DCT_h_scaled_size)
#define MIN_DCT_SIZE(cinfo) ((cinfo)->min_DCT_h_scaled_size)
#else
#define COMP_DCT_SIZE(comp) ((comp)->DCT_scaled_size)
#define MIN_DCT_SIZE(cinfo) ((cinfo)->min_DCT_scaled_size)
#endif

#if defined(DATAFORGE_TURBO_VERSION) /* tests build with another version assumed */
#define TURBO_VERSION DATAFORGE_TURBO_VERSION
#elif defined(LIBJPEG_TURBO_VERSION_NUMBER)
#define TURBO_VERSION LIBJPEG_TURBO_VERSION_NUMBER
#else
#define TURBO_VERSION 0
#endif

/* NOTE [scaled crop of 4x2 / 2x4 chroma]: with DCT scaling, libjpeg does part of
 * a component's upsampling inside its IDCT (the component's DCT_scaled_size is
 * larger than min_DCT_scaled_size) and the rest in the upsampler. Before
 * libjpeg-turbo 3.0.0 (commit 3a536273), jpeg_crop_scanline computed such a
 * component's downsampled_width without the IDCT's share, so the upsampler filled
 * only part of the row and the color converter read uninitialised memory (4x2
 * and 2x4 chroma at scale 1/2 and 1/4: wrong pixels). Debian 12 ships 2.1.5, so
 * the build keeps the system library (the extension must build from the distro's
 * libjpeg-dev) and avoids the broken path instead: a component that is partly
 * upsampled in the IDCT and partly in the upsampler is decoded at full width (no
 * jpeg_crop_scanline; DCT scaling and row skipping are kept), then sliced. Built
 * against >= 3.0, the crop is used and the widths it set are checked against the
 * fixed formula, so an older runtime library behind the same soname is caught
 * (Unsupported: the caller decodes the whole image instead).
 */
#define CROP_SCALED_FIXED (TURBO_VERSION >= 3000000)

static PyObject *Unsupported; /* dataforge._jpeg.Unsupported, a ValueError */

enum { FAIL_DATA = 1, FAIL_UNSUPPORTED = 2 };

typedef struct {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    int strict;     /* corrupt-data warnings are errors */
    long max_scans; /* 0: no limit */
    int kind;       /* FAIL_* once failed */
    char message[JMSG_LENGTH_MAX];
} ErrorManager;

static int unsupported_code(int code) {
    return code == JERR_BAD_PRECISION || code == JERR_SOF_UNSUPPORTED || code == JERR_NOT_COMPILED ||
           code == JERR_CONVERSION_NOTIMPL;
}

static void on_error(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    err->kind = unsupported_code(err->pub.msg_code) ? FAIL_UNSUPPORTED : FAIL_DATA;
    longjmp(err->jump, 1);
}

/* NOTE [benign warnings]: libjpeg warns (level -1) both about damaged entropy data,
 * where it invents pixels (gray fill, resync: Huffman/arithmetic bad code, premature
 * end of segment or file, wrong RST, bogus progression) and about things that do not
 * change a pixel: bytes skipped between segments (JWRN_EXTRANEOUS_DATA: junk or
 * padding that no scan reads, common from cameras and editors), an unknown JFIF
 * revision or Adobe transform code, a bad ICC marker. Only the first kind is
 * corrupt data; the second decodes exactly as any other decoder would. */
static int benign_warning(int code) {
    switch (code) {
    case JWRN_EXTRANEOUS_DATA:
    case JWRN_JFIF_MAJOR:
    case JWRN_ADOBE_XFORM:
#if TURBO_VERSION >= 2000000
    case JWRN_BOGUS_ICC:
#endif
        return 1;
    default:
        return 0;
    }
}

static void on_message(j_common_ptr cinfo, int level) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    if (level >= 0 || !err->strict || benign_warning(err->pub.msg_code)) return;
    (*cinfo->err->format_message)(cinfo, err->message);
    err->kind = FAIL_DATA;
    longjmp(err->jump, 1);
}

/* Called by libjpeg before each chunk of input it consumes: stops a progressive or
 * multi-scan file at its (max_scans + 1)-th scan, before that scan is decoded. */
static void on_progress(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    j_decompress_ptr dinfo = (j_decompress_ptr)cinfo;
    if (err->max_scans > 0 && (long)dinfo->input_scan_number > err->max_scans) {
        snprintf(err->message, sizeof err->message, "more than max_scans=%ld scans", err->max_scans);
        err->kind = FAIL_DATA;
        longjmp(err->jump, 1);
    }
}

/* Whether jpeg_crop_scanline gives exact pixels for every component (NOTE [scaled
 * crop of 4x2 / 2x4 chroma]): a component upsampled partly in the IDCT and partly in
 * the upsampler is at risk on libjpeg-turbo < 3.0. */
static int crop_at_risk(j_decompress_ptr cinfo, jpeg_component_info *comp) {
    int ds = COMP_DCT_SIZE(comp), m = MIN_DCT_SIZE(cinfo);
    return ds != m && (comp->h_samp_factor * ds != cinfo->max_h_samp_factor * m ||
                       comp->v_samp_factor * ds != cinfo->max_v_samp_factor * m);
}

static int crop_is_safe(j_decompress_ptr cinfo) {
    if (CROP_SCALED_FIXED) return 1;
    for (int ci = 0; ci < cinfo->num_components; ci++)
        if (crop_at_risk(cinfo, &cinfo->comp_info[ci])) return 0;
    return 1;
}

/* After jpeg_crop_scanline: the widths of at-risk components are the fixed formula's. */
static int crop_widths_ok(j_decompress_ptr cinfo) {
    for (int ci = 0; ci < cinfo->num_components; ci++) {
        jpeg_component_info *comp = &cinfo->comp_info[ci];
        if (!crop_at_risk(cinfo, comp)) continue;
        unsigned long num = (unsigned long)cinfo->output_width * (unsigned long)comp->h_samp_factor *
                            (unsigned long)COMP_DCT_SIZE(comp);
        unsigned long den = (unsigned long)cinfo->max_h_samp_factor * (unsigned long)MIN_DCT_SIZE(cinfo);
        if ((unsigned long)comp->downsampled_width != (num + den - 1) / den) return 0;
    }
    return 1;
}

static void init_errors(j_decompress_ptr cinfo, ErrorManager *err, int strict, long max_scans) {
    cinfo->err = jpeg_std_error(&err->pub);
    err->pub.error_exit = on_error;
    err->pub.emit_message = on_message;
    err->progress.progress_monitor = on_progress;
    err->strict = strict;
    err->max_scans = max_scans;
    err->kind = 0;
    err->message[0] = '\0';
}

static PyObject *raise_failure(ErrorManager *err) {
    PyErr_Format(err->kind == FAIL_UNSUPPORTED ? Unsupported : PyExc_ValueError, "libjpeg: %s",
                 err->message);
    return NULL;
}

/* The output of a decode: RGB or gray, at 1/denom scale, without block smoothing.
   NOTE [no block smoothing]: a progressive file whose scans stop before its AC
   coefficients are complete is smoothed across neighbouring blocks by default; at a
   cropped edge the neighbours are missing, so a crop differed from the whole image by a
   few levels (found by the fuzz harness), and the smoothing itself differs between
   libjpeg-turbo versions. Off: every path gives the coefficients' pixels. */
static void set_output(j_decompress_ptr cinfo, int gray, long denom) {
    cinfo->out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    cinfo->do_block_smoothing = FALSE;
    cinfo->scale_num = 1;
    cinfo->scale_denom = (unsigned int)denom;
}

/* NOTE [unused scans]: libjpeg entropy-decodes every scan of a progressive JPEG, over
 * the whole image, in jpeg_start_decompress, whatever the crop or the scale. Two parts
 * of that work no output pixel reads, and the decoder is given a copy of the file
 * without them:
 *   - AC scans (one component each, ITU T.81 G.1.1.1.1) of a component whose scaled
 *     IDCT is 1x1 per block (luma at scale 1/8 reads only its DC coefficient), or of
 *     chroma under grayscale output from YCbCr;
 *   - the rows below the crop: the copy's frame header declares the image to end one
 *     iMCU row below the crop's last iMCU row (chroma upsampling reads the row below
 *     an edge), so libjpeg decodes each scan down to there and skips the rest of its
 *     data as extraneous bytes (a benign warning, NOTE [benign warnings]).
 * Block smoothing is off (NOTE [no block smoothing]), so missing coefficients are
 * never estimated: the pixels are the same (tested against decoding every scan).
 * The copy is made only from a complete file (its EOI found) whose markers parse
 * cleanly; otherwise the file is decoded as it is. Damage inside a dropped part is not
 * seen, as for rows below a crop of a sequential file: the pixels decoded are real. */

/* The components (bit ci) whose AC coefficients no output pixel reads at 1/denom
   scale: a 1x1 scaled IDCT, or chroma under grayscale output. */
static unsigned unused_ac(j_decompress_ptr cinfo, int gray, long denom) {
    set_output(cinfo, gray, denom);
    jpeg_calc_output_dimensions(cinfo);
    unsigned mask = 0;
    int luma_only = gray && (cinfo->jpeg_color_space == JCS_YCbCr);
    for (int ci = 0; ci < cinfo->num_components && ci < 16; ci++) {
        jpeg_component_info *comp = &cinfo->comp_info[ci];
#if JPEG_LIB_VERSION >= 70
        int dc_only = comp->DCT_h_scaled_size == 1 && comp->DCT_v_scaled_size == 1;
#else
        int dc_only = comp->DCT_scaled_size == 1;
#endif
        if (dc_only || (luma_only && ci > 0)) mask |= 1u << ci;
    }
    return mask;
}

/* The end of the entropy-coded data that starts at p: the next marker (FF followed by
   anything but a stuffed 00, a restart D0-D7 or a fill FF), or n. */
static size_t entropy_end(const unsigned char *d, size_t p, size_t n) {
    while (p < n) {
        const unsigned char *f = memchr(d + p, 0xFF, n - p);
        if (f == NULL) return n;
        p = (size_t)(f - d);
        if (p + 1 >= n) return n;
        unsigned char b = d[p + 1];
        if (b != 0x00 && !(b >= 0xD0 && b <= 0xD7) && b != 0xFF) return p;
        p += 1;
    }
    return n;
}

/* A copy of the JPEG d[0:n] without the AC scans of the components in ``mask`` and,
   when ``height`` is below the frame's, with the frame header's height set to it
   (NOTE [unused scans]); its length in *out_n. NULL when nothing would change or the
   markers do not parse cleanly up to the EOI (the caller decodes the file as it is).
   The caller frees the copy. No Python is called (runs without the GIL). */
static unsigned char *trimmed_copy(const unsigned char *d, size_t n, j_decompress_ptr cinfo,
                                   unsigned mask, long height, size_t *out_n) {
    if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return NULL;
    unsigned char *out = (unsigned char *)malloc(n + 2);
    if (out == NULL) return NULL;
    size_t o = 2, p = 2;
    int changed = 0, complete = 0, framed = 0;
    memcpy(out, d, 2);
    while (p + 1 < n) {
        if (d[p] != 0xFF) break;
        unsigned char m = d[p + 1];
        if (m == 0xFF) { p += 1; continue; }
        if (m == 0xD9) { complete = 1; break; }
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7) || p + 4 > n) break;
        size_t len = ((size_t)d[p + 2] << 8) | d[p + 3], end = p + 2 + len;
        if (len < 2 || end > n) break;
        size_t stop = end;
        int drop = 0;
        if (m == 0xDA) {
            size_t ns = len >= 3 ? d[p + 4] : 0;
            if (!framed || ns < 1 || len != 6 + 2 * ns) break;
            int ss = d[p + 5 + 2 * ns];
            if (ss > 0 && ns == 1)
                for (int ci = 0; ci < cinfo->num_components && ci < 16; ci++)
                    if (cinfo->comp_info[ci].component_id == d[p + 5] && (mask >> ci) & 1u) drop = 1;
            stop = entropy_end(d, end, n);
        }
        int sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (sof && !framed && len < 8) break;
        if (drop) {
            changed = 1;
        } else {
            memcpy(out + o, d + p, stop - p);
            if (sof && !framed) {
                framed = 1;
                long declared = ((long)d[p + 5] << 8) | d[p + 6];
                if (height > 0 && height < declared) {
                    out[o + 5] = (unsigned char)(height >> 8);
                    out[o + 6] = (unsigned char)(height & 0xFF);
                    changed = 1;
                }
            }
            o += stop - p;
        }
        p = stop;
    }
    if (!changed || !complete) {
        free(out);
        return NULL;
    }
    out[o++] = 0xFF;
    out[o++] = 0xD9;
    *out_n = o;
    return out;
}

/* Pixels: a buffer object owning malloc'ed memory, so that decode_crop can allocate
   its output without the GIL (NOTE [decode without the GIL]). Read-write buffer
   protocol (numpy.frombuffer, torch.frombuffer, bytes()), nothing else. */
typedef struct {
    PyObject_HEAD
    unsigned char *data;
    Py_ssize_t size;
} Pixels;

static int pixels_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    Pixels *p = (Pixels *)self;
    return PyBuffer_FillInfo(view, self, p->data, p->size, 0, flags);
}

static void pixels_dealloc(PyObject *self) {
    free(((Pixels *)self)->data);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs pixels_buffer = {pixels_getbuffer, NULL};

static PyTypeObject PixelsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dataforge._jpeg.Pixels",
    .tp_basicsize = sizeof(Pixels),
    .tp_dealloc = pixels_dealloc,
    .tp_as_buffer = &pixels_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Decoded pixels (a read-write buffer of uint8, HWC).",
};

/* A Pixels object that owns ``data`` (freed here when the object cannot be made). */
static PyObject *pixels_new(unsigned char *data, Py_ssize_t size) {
    Pixels *p = PyObject_New(Pixels, &PixelsType);
    if (p == NULL) {
        free(data);
        return NULL;
    }
    p->data = data;
    p->size = size;
    return (PyObject *)p;
}

PyDoc_STRVAR(decode_crop_doc,
"decode_crop(data, top, left, height, width, scale_denom=1, gray=False, strict=True, max_scans=0,\n"
"            skip_unused_scans=True)\n"
"    -> (pixels: Pixels, rows: int, cols: int, channels: int)\n"
"\n"
"Decode the box (top, left, height, width) of a JPEG (in full-resolution pixels)\n"
"at 1/scale_denom scale (1, 2, 4 or 8). Returns the box as dense HWC uint8 pixels\n"
"(a read-write buffer),\n"
"rows x cols x channels (cols = ceil((left + width) / scale_denom) - left // scale_denom,\n"
"the box clipped to the image). The columns around the box that iMCU alignment makes\n"
"libjpeg decode are dropped, each row moved into place, so the result is one dense\n"
"block (the uint8 resize is much faster on dense channels-last input).\n"
"strict: a corrupt-data warning is an error (else libjpeg's repair is kept; benign\n"
"warnings never are). max_scans: refuse a file with more scans (0: no limit).\n"
"skip_unused_scans: leave out the parts of a progressive file that no output pixel\n"
"reads (AC scans unused at this scale, rows below the crop; same pixels, NOTE\n"
"[unused scans]); False decodes every scan of the whole image.\n"
"Raises Unsupported (a ValueError) for CMYK/YCCK, precisions other than 8, lossless\n"
"or hierarchical files, and ValueError for corrupt data or a limit exceeded.");

/* The end of [start, start + extent) clipped to ``limit``, without overflow. */
static long clip_end(long start, long extent, long limit) {
    return extent >= limit - start ? limit : start + extent;
}

/* Start decompressing the box (top, left, height, width) of the image whose header
   ``cinfo`` has read, at 1/denom scale, with the columns cropped where that is safe.
   Sets the rows and columns to decode, where the box's columns start in them
   (col_offset, col_count) and its scanlines [y0, y1). Returns 1 when this libjpeg-turbo
   would crop the columns wrongly (the caller refuses the file), else 0. Runs without
   the GIL (NOTE [decode without the GIL]). */
static int start_crop(j_decompress_ptr cinfo, int gray, long denom, long top, long left, long height,
                      long width, long *rows, long *cols, long *col_offset, long *col_count, long *y0,
                      long *y1) {
    /* The box clipped to the image, in full-resolution pixels. The image's sides are
       at most JPEG_MAX_DIMENSION (65500), so no sum below can overflow a long. */
    long image_h = (long)cinfo->image_height, image_w = (long)cinfo->image_width;
    long bottom = clip_end(top, height, image_h);
    long right = clip_end(left, width, image_w);

    set_output(cinfo, gray, denom);
    jpeg_start_decompress(cinfo);

    long out_h = (long)cinfo->output_height, out_w = (long)cinfo->output_width;
    *y0 = top / denom;
    *y1 = (bottom + denom - 1) / denom;
    long x0 = left / denom, x1 = (right + denom - 1) / denom;
    if (*y1 > out_h) *y1 = out_h;
    if (x1 > out_w) x1 = out_w;
    /* Chroma upsampling of an edge column reads the samples beside it: decode a
       margin on both sides, or the edge columns would differ from a full decode. */
    long x0_decoded = x0 > 0 ? x0 - 1 : 0;
    long x1_decoded = x1 + 16 > out_w ? out_w : x1 + 16;
    JDIMENSION xoff = (JDIMENSION)x0_decoded, xwidth = (JDIMENSION)(x1_decoded - x0_decoded);
    if (xwidth < cinfo->output_width && crop_is_safe(cinfo)) {
        jpeg_crop_scanline(cinfo, &xoff, &xwidth);
        if (!crop_widths_ok(cinfo)) return 1;
    } else {
        xoff = 0;
    }
    *col_offset = x0 - (long)xoff;
    *col_count = x1 - x0;
    *cols = (long)cinfo->output_width; /* == xwidth after cropping */
    *rows = *y1 - *y0;
    return 0;
}

/* One region decode: the request, then what it gave. run_crop fills it without the GIL
   (NOTE [decode without the GIL]); decode_crop turns it into a result or an error. */
typedef enum { GO = 0, CMYK, OUTSIDE, CROP_WIDTHS, NO_MEMORY } Refusal;

typedef struct {
    const unsigned char *data; /* the file, held by the caller until run_crop returns */
    size_t size;
    long top, left, height, width, denom; /* the box, in full-resolution pixels */
    int gray, skip_unused, strict;
    long max_scans;
    ErrorManager err; /* a libjpeg failure (err.kind, err.message) */
    Refusal refusal;  /* what was refused before decoding, when not GO */
    long image_h, image_w;
    unsigned char *pixels; /* malloc'ed, rows x col_count x channels; NULL when failed */
    long rows, col_count, channels;
} CropJob;

/* NOTE [unused scans]: point ``cinfo`` at a copy of the file without what no output
   pixel of the crop reads; the copy (to free after the decode), or NULL when there is
   nothing to leave out. One iMCU row of margin is kept below the crop's last one. */
static unsigned char *trim_unused(j_decompress_ptr cinfo, CropJob *job) {
    long imcu = (long)cinfo->max_v_samp_factor * DCTSIZE;
    long bottom = clip_end(job->top, job->height, job->image_h);
    long keep = ((bottom + imcu - 1) / imcu + 1) * imcu;
    unsigned mask = unused_ac(cinfo, job->gray, job->denom);
    size_t len = 0;
    unsigned char *copy = trimmed_copy(job->data, job->size, cinfo, mask, keep < job->image_h ? keep : 0, &len);
    if (copy != NULL) {
        jpeg_abort_decompress(cinfo);
        jpeg_mem_src(cinfo, copy, (unsigned long)len);
        jpeg_read_header(cinfo, TRUE);
    }
    return copy;
}

/* Decode scanlines [y0, y1) into ``pixels`` (rows of ``cols`` pixels), then pack the
   box's columns: row r moves from r * cols + col_offset to r * col_count (pixels).
   Destinations never pass a later row's source, so a forward pass of memmove is safe. */
static void read_rows(j_decompress_ptr cinfo, JSAMPROW *rows_ptr, unsigned char *pixels, long rows,
                      long cols, long channels, long y0, long y1, long col_offset, long col_count) {
    size_t row_stride = (size_t)cols * (size_t)channels;
    for (long r = 0; r < rows; r++) rows_ptr[r] = pixels + (size_t)r * row_stride;
    if (y0 > 0) jpeg_skip_scanlines(cinfo, (JDIMENSION)y0);
    while ((long)cinfo->output_scanline < y1) {
        long done = (long)cinfo->output_scanline - y0;
        jpeg_read_scanlines(cinfo, rows_ptr + done, (JDIMENSION)(rows - done));
    }
    jpeg_abort_decompress(cinfo); /* rows below the crop are never decoded */
    if (col_offset == 0 && col_count == cols) return;
    size_t row_bytes = (size_t)col_count * (size_t)channels;
    for (long r = 0; r < rows; r++)
        memmove(pixels + (size_t)r * row_bytes,
                pixels + (size_t)r * row_stride + (size_t)col_offset * (size_t)channels, row_bytes);
}

/* NOTE [decode without the GIL]: from the header to the last scanline, libjpeg reads only
   job->data and its callbacks here call no Python, so all of it runs without the GIL,
   jpeg_start_decompress included (for a progressive file it decodes every scan it is
   given: tens of ms for a photo). The output, whose size the header sets, is malloc'ed
   here and handed to Python as a Pixels buffer once the GIL is back: one release per
   call (NOTE [GIL transitions] in dataforge/transforms/presets.py). libjpeg's errors
   longjmp back here, never across the GIL. */
static void run_crop(CropJob *job) {
    struct jpeg_decompress_struct cinfo;
    /* Written between setjmp and a possible longjmp: volatile (C11 7.13.2.1). */
    unsigned char *volatile pixels = NULL;
    JSAMPROW *volatile rows_ptr = NULL;
    unsigned char *volatile trimmed = NULL;
    volatile int created = 0;
    long rows = 0, cols = 0, col_offset = 0, col_count = 0, y0 = 0, y1 = 0;

    init_errors(&cinfo, &job->err, job->strict, job->max_scans);
    if (setjmp(job->err.jump)) {
        if (created) jpeg_destroy_decompress(&cinfo);
        free(rows_ptr);
        free(trimmed);
        free(pixels);
        return;
    }
    jpeg_create_decompress(&cinfo);
    created = 1;
    cinfo.progress = &job->err.progress;
    jpeg_mem_src(&cinfo, job->data, (unsigned long)job->size);
    jpeg_read_header(&cinfo, TRUE);
    job->image_h = (long)cinfo.image_height;
    job->image_w = (long)cinfo.image_width;
    if (!job->gray && (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK))
        job->refusal = CMYK;
    else if (job->top >= job->image_h || job->left >= job->image_w)
        job->refusal = OUTSIDE;
    if (job->refusal == GO && job->skip_unused && cinfo.progressive_mode)
        trimmed = trim_unused(&cinfo, job);
    if (job->refusal == GO && start_crop(&cinfo, job->gray, job->denom, job->top, job->left, job->height,
                                         job->width, &rows, &cols, &col_offset, &col_count, &y0, &y1))
        job->refusal = CROP_WIDTHS;
    if (job->refusal == GO) {
        /* Sizes in size_t: rows x cols x channels can pass 2**31 where long is 32 bits. */
        pixels = (unsigned char *)malloc((size_t)rows * (size_t)cols * (size_t)job->channels);
        rows_ptr = (JSAMPROW *)malloc(sizeof(JSAMPROW) * (size_t)rows);
        if (pixels == NULL || rows_ptr == NULL) job->refusal = NO_MEMORY;
    }
    if (job->refusal == GO) {
        read_rows(&cinfo, rows_ptr, pixels, rows, cols, job->channels, y0, y1, col_offset, col_count);
        job->pixels = pixels;
        job->rows = rows;
        job->col_count = col_count;
    } else {
        free(pixels);
    }
    jpeg_destroy_decompress(&cinfo);
    free(rows_ptr);
    free(trimmed);
}

static PyObject *raise_refusal(const CropJob *job) {
    switch (job->refusal) {
    case CMYK:
        PyErr_SetString(Unsupported, "CMYK/YCCK JPEG: not decoded here");
        break;
    case OUTSIDE:
        PyErr_Format(PyExc_ValueError, "crop box (%ld, %ld, %ld, %ld) lies outside the %ldx%ld image",
                     job->top, job->left, job->height, job->width, job->image_w, job->image_h);
        break;
    case NO_MEMORY:
        PyErr_NoMemory();
        break;
    default:
        PyErr_SetString(Unsupported, "this libjpeg-turbo crops 4x2/2x4 chroma wrongly when scaling "
                        "(fixed in 3.0.0): not decoded here");
    }
    return NULL;
}

/* decode_crop's arguments into ``job``, the file's buffer held in ``view`` (to release
   once the job has run): 0, or -1 with the error set and nothing held. */
static int parse_job(PyObject *args, PyObject *kwargs, CropJob *job, Py_buffer *view) {
    static char *kwlist[] = {"data",  "top",  "left",   "height",    "width",
                             "scale_denom", "gray", "strict", "max_scans",
                             "skip_unused_scans", NULL};
    memset(job, 0, sizeof *job);
    job->denom = 1;
    job->strict = 1;
    job->skip_unused = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*llll|lpplp", kwlist, view, &job->top, &job->left,
                                     &job->height, &job->width, &job->denom, &job->gray, &job->strict,
                                     &job->max_scans, &job->skip_unused))
        return -1;
    if (job->denom != 1 && job->denom != 2 && job->denom != 4 && job->denom != 8) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "scale_denom must be 1, 2, 4 or 8, got %ld", job->denom);
        return -1;
    }
    if (job->top < 0 || job->left < 0 || job->height < 1 || job->width < 1 || job->max_scans < 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "crop box must have top, left >= 0 and height, width >= 1, "
                     "got (%ld, %ld, %ld, %ld); max_scans must be >= 0, got %ld",
                     job->top, job->left, job->height, job->width, job->max_scans);
        return -1;
    }
    job->data = (const unsigned char *)view->buf;
    job->size = (size_t)view->len;
    job->channels = job->gray ? 1 : 3;
    return 0;
}

/* What a job that has run gives: (pixels, rows, cols, channels), or NULL with the error
   set; either way the job's pixels are owned (or freed) by then. */
static PyObject *job_result(CropJob *job) {
    if (job->err.kind) return raise_failure(&job->err);
    if (job->refusal != GO) return raise_refusal(job);
    PyObject *out = pixels_new(job->pixels, (Py_ssize_t)job->rows * job->col_count * job->channels);
    job->pixels = NULL;
    if (out == NULL) return NULL; /* pixels_new freed the memory */
    PyObject *result = Py_BuildValue("(Olll)", out, job->rows, job->col_count, job->channels);
    Py_DECREF(out);
    return result;
}

static PyObject *decode_crop(PyObject *self, PyObject *args, PyObject *kwargs) {
    Py_buffer view;
    CropJob job;
    if (parse_job(args, kwargs, &job, &view) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    run_crop(&job);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return job_result(&job);
}

PyDoc_STRVAR(decode_crops_doc,
"decode_crops(jobs) -> list\n"
"\n"
"decode_crop for each of ``jobs`` (a sequence of its positional argument tuples), all of\n"
"them in one GIL release (NOTE [one native call per batch] in dataforge/_crops.cpp).\n"
"Item i of the result is job i's (pixels, rows, cols, channels), or the exception\n"
"decode_crop would have raised for it (Unsupported, ValueError, MemoryError): one bad\n"
"file does not stop the others. A malformed argument tuple raises at once.");

/* The exception just raised, cleared: its instance. */
static PyObject *take_error(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static PyObject *decode_crops(PyObject *self, PyObject *jobs_arg) {
    PyObject *seq = PySequence_Fast(jobs_arg, "decode_crops: jobs must be a sequence of argument tuples");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), parsed = 0;
    CropJob *jobs = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(CropJob));
    Py_buffer *views = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(Py_buffer));
    PyObject *results = NULL;
    if (jobs == NULL || views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; parsed < n; parsed++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, parsed);
        if (!PyTuple_Check(item)) {
            PyErr_Format(PyExc_TypeError, "decode_crops: job %zd must be a tuple of decode_crop's "
                         "arguments, got %.100s", parsed, Py_TYPE(item)->tp_name);
            goto done;
        }
        if (parse_job(item, NULL, &jobs[parsed], &views[parsed]) < 0) goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) run_crop(&jobs[i]);
    Py_END_ALLOW_THREADS
    results = PyList_New(n);
    for (Py_ssize_t i = 0; results != NULL && i < n; i++) {
        PyObject *r = job_result(&jobs[i]);
        PyList_SET_ITEM(results, i, r != NULL ? r : take_error());
    }
done:
    for (Py_ssize_t i = 0; i < parsed; i++) {
        PyBuffer_Release(&views[i]);
        if (jobs != NULL) free(jobs[i].pixels); /* those no result took (PyList_New failed) */
    }
    PyMem_Free(jobs);
    PyMem_Free(views);
    Py_DECREF(seq);
    return results;
}

PyDoc_STRVAR(read_file_doc,
"read_file(path, max_bytes=-1) -> bytes | int | None\n"
"\n"
"The whole regular file at ``path`` (str, bytes or os.PathLike), read with the GIL\n"
"released once (open, fstat, read, close) where os.open/fstat/read/close release and\n"
"retake it four times; a file larger than this thread's size hint takes a second\n"
"release. An int: the file's size, over max_bytes (>= 0), nothing read. None: not a\n"
"regular file, or its size is unknown (0), or no POSIX here: the caller reads it\n"
"another way. OSError (FileNotFoundError, ...) names the path.");

#ifndef _WIN32
/* The size of the buffer allocated before a file's size is known: a decaying maximum of
   the sizes this thread read, so that nearly every read takes one GIL release (the
   buffer must be allocated with the GIL held). Unused capacity is given back by the
   shrinking realloc at the end, so it costs address space, not memory. */
#define READ_HINT_MIN ((Py_ssize_t)1 << 16)
#define READ_HINT_MAX ((Py_ssize_t)1 << 26)
static _Thread_local Py_ssize_t read_hint = READ_HINT_MIN;

static void update_read_hint(Py_ssize_t size) {
    Py_ssize_t want = size + size / 4, decayed = read_hint - read_hint / 8;
    Py_ssize_t hint = want > decayed ? want : decayed;
    read_hint = hint < READ_HINT_MIN ? READ_HINT_MIN : hint > READ_HINT_MAX ? READ_HINT_MAX : hint;
}

/* Read size bytes of fd into buf, without the GIL; the count read (less at end of file). */
static Py_ssize_t read_all(int fd, char *buf, Py_ssize_t size, int *err) {
    Py_ssize_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, (size_t)(size - got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            *err = errno;
            break;
        }
        if (r == 0) break; /* the file shrank since fstat: what is there */
        got += r;
    }
    return got;
}
#endif

/* Read here rather than with os.*: fewer GIL hand-offs per sample (NOTE [GIL
   transitions] in dataforge/transforms/presets.py). */
static PyObject *read_file(PyObject *self, PyObject *args) {
    PyObject *path_arg, *encoded = NULL;
    long long max_bytes = -1;
    if (!PyArg_ParseTuple(args, "O|L", &path_arg, &max_bytes)) return NULL;
#ifdef _WIN32
    Py_RETURN_NONE;
#else
    if (!PyUnicode_FSConverter(path_arg, &encoded)) return NULL;
    const char *path = PyBytes_AS_STRING(encoded);
    Py_ssize_t cap = read_hint, size = 0, got = -1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, cap);
    if (out == NULL) {
        Py_DECREF(encoded);
        return NULL;
    }
    struct stat st;
    int fd, err = 0, wanted = 0, over = 0;
    Py_BEGIN_ALLOW_THREADS
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
    } else if (fstat(fd, &st) != 0) {
        err = errno;
        close(fd);
        fd = -1;
    } else {
        over = S_ISREG(st.st_mode) && max_bytes >= 0 && (long long)st.st_size > max_bytes;
        wanted = S_ISREG(st.st_mode) && st.st_size > 0 && (long long)st.st_size <= (long long)PY_SSIZE_T_MAX
                 && !over;
        size = wanted ? (Py_ssize_t)st.st_size : 0;
        if (wanted && size <= cap) { /* the common case: one release for all of it */
            got = read_all(fd, PyBytes_AS_STRING(out), size, &err);
            close(fd);
        }
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(encoded);
    if (fd >= 0 && got < 0) { /* not read yet: refused, or larger than the buffer */
        if (!wanted) {
            close(fd);
            Py_DECREF(out);
            if (over) return PyLong_FromLongLong((long long)st.st_size);
            Py_RETURN_NONE;
        }
        if (_PyBytes_Resize(&out, size) < 0) {
            close(fd);
            return NULL;
        }
        char *buf = PyBytes_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        got = read_all(fd, buf, size, &err);
        close(fd);
        Py_END_ALLOW_THREADS
    }
    if (fd < 0 || err) {
        Py_DECREF(out);
        errno = err;
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_arg);
    }
    update_read_hint(size);
    if (got != PyBytes_GET_SIZE(out) && _PyBytes_Resize(&out, got) < 0) return NULL;
    return out;
#endif
}

PyDoc_STRVAR(jpeg_version_doc, "jpeg_version() -> int: JPEG_LIB_VERSION this module was built against.");

static PyObject *jpeg_version(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(JPEG_LIB_VERSION);
}

static PyMethodDef methods[] = {
    {"decode_crop", (PyCFunction)(void (*)(void))decode_crop, METH_VARARGS | METH_KEYWORDS, decode_crop_doc},
    {"decode_crops", decode_crops, METH_O, decode_crops_doc},
    {"read_file", read_file, METH_VARARGS, read_file_doc},
    {"jpeg_version", jpeg_version, METH_NOARGS, jpeg_version_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpeg",
    "Region-of-interest JPEG decoding with libjpeg-turbo, and whole-file reads (see dataforge/_jpeg.c).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__jpeg(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Unsupported = PyErr_NewExceptionWithDoc(
        "dataforge._jpeg.Unsupported",
        "A JPEG this module does not decode (CMYK, 12-bit, lossless, ...): use a general decoder.",
        PyExc_ValueError, NULL);
    if (PyType_Ready(&PixelsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (Unsupported == NULL || PyModule_AddObjectRef(m, "Unsupported", Unsupported) < 0 ||
        PyModule_AddIntConstant(m, "LIBJPEG_TURBO_VERSION_NUMBER", TURBO_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "CROP_SCALED_FIXED", CROP_SCALED_FIXED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
