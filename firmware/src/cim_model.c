/* Model blob validation (see cim_model.h and compiler/firmware_blob.py). */
#include "cim_model.h"
#include "cim_regs.h"

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------ CRC-32 */

/* Slice-by-4: four bytes per step from four tables (about 3 instructions a byte on the
 * Cortex-M4 instead of 7 byte by byte; the 1.4 MB blob is checked once, at load). */
static uint32_t crc_table[4][256];
static int crc_ready;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256u; i++) {
        uint32_t c = i;
        for (int b = 0; b < 8; b++)
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256u; i++)
        for (int k = 1; k < 4; k++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8)
                              ^ crc_table[0][crc_table[k - 1][i] & 0xFFu];
    crc_ready = 1;
}

uint32_t cim_crc32(uint32_t crc, const void *data, uint32_t n)
{
    const uint8_t *p = (const uint8_t *)data;
    if (!crc_ready)
        crc_init();
    crc = ~crc;
    for (; n && ((uintptr_t)p & 3u); n--)
        crc = crc_table[0][(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
    for (; n >= 4u; n -= 4u, p += 4) {
        crc ^= (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
               | (uint32_t)p[3] << 24;
        crc = crc_table[3][crc & 0xFFu] ^ crc_table[2][(crc >> 8) & 0xFFu]
              ^ crc_table[1][(crc >> 16) & 0xFFu] ^ crc_table[0][crc >> 24];
    }
    while (n--)
        crc = crc_table[0][(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

/* ------------------------------------------------------------------------------ checks
 *
 * All sums in 64 bits: a header word may hold anything up to 2**32 - 1, and a 32-bit sum
 * that wraps would pass a bound it should fail. compiler/firmware_blob.py's check_blob()
 * makes the same checks in the same order. */

typedef struct {
    const cim_blob_header_t *h;
    uint64_t ws;                /* workspace bytes */
} ctx_t;

/* A blob section: aligned, after the header, inside the blob. */
static int section_ok(const cim_blob_header_t *h, uint32_t offset, uint64_t bytes)
{
    return offset % CIM_BLOB_SECTION_ALIGN == 0 && offset >= h->header_bytes
           && (uint64_t)offset + bytes <= h->total_bytes;
}

/* A workspace area: 8-byte aligned and inside the workspace. */
static int area_ok(const ctx_t *c, uint32_t offset, uint64_t bytes)
{
    return offset % 8u == 0 && (uint64_t)offset + bytes <= c->ws;
}

static int disjoint(uint32_t a, uint64_t alen, uint32_t b, uint64_t blen)
{
    return (uint64_t)a + alen <= b || (uint64_t)b + blen <= a;
}

static uint64_t hwc_bytes(uint32_t h, uint32_t w, uint32_t cstride)
{
    return (((uint64_t)h * w + 1u) & ~(uint64_t)1u) * cstride;
}

static int geometry_ok(uint32_t in, uint32_t out, uint32_t k, uint32_t s, uint32_t p)
{
    uint64_t padded = (uint64_t)in + 2u * (uint64_t)p;
    if (k < 1u || k > 15u || s < 1u || s > 15u || p >= k || padded < k)
        return 0;
    return out == (padded - k) / s + 1u;
}

static int is_pow2(uint32_t v)
{
    return v && !(v & (v - 1u));
}

/* The output of `prev` is the input of `op` (shape, layout, place). */
static int chained(const cim_blob_op_t *prev, const cim_blob_op_t *op)
{
    return op->in_c == prev->out_c && op->in_h == prev->out_h && op->in_w == prev->out_w
           && op->in_cstride == prev->out_cstride && op->in_signed == prev->out_signed
           && op->in_offset == prev->out_offset;
}

static int hwc_ok(uint32_t c, uint32_t cstride)
{
    return c >= 1u && cstride >= c && cstride % 4u == 0;
}

static uint64_t conv_pairs(const cim_blob_op_t *op)
{
    return ((uint64_t)op->out_c + 1u) / 2u;
}

static uint64_t conv_weight_bytes(const cim_blob_op_t *op)
{
    return conv_pairs(op) * (op->w_bytes == 2u ? 16u : 8u) * op->steps;
}

typedef struct {
    uint32_t offset;
    uint64_t bytes;
} area_t;

/* The workspace areas a CONV writes: im2col, gather table, padded image, output. */
static void conv_areas(const cim_blob_op_t *op, area_t a[4])
{
    uint64_t xbytes = 16u * (uint64_t)op->steps;
    a[0].offset = op->im2col_offset;
    a[0].bytes = xbytes;
    a[1].offset = op->gather_offset;
    a[1].bytes = xbytes;
    a[2].offset = op->padded_offset;
    a[2].bytes = 2u * ((uint64_t)op->in_c * ((uint64_t)op->in_h + 2u * op->pad)
                       * ((uint64_t)op->in_w + 2u * op->pad) + 1u);
    a[3].offset = op->out_offset;
    a[3].bytes = hwc_bytes(op->out_h, op->out_w, op->out_cstride);
}

/* The clamp range of a conv output of `bits` bits (the golden model's act_range). */
static int out_range_ok(const cim_blob_op_t *op)
{
    uint32_t bits = op->out_bits;
    if (bits < 1u || bits > 8u || op->out_signed > 1u || (op->out_signed && bits < 2u))
        return 0;
    int32_t lo = op->out_signed ? -(int32_t)((1u << (bits - 1u)) - 1u) : 0;
    int32_t hi = op->out_signed ? (int32_t)((1u << (bits - 1u)) - 1u)
                                : (int32_t)((1u << bits) - 1u);
    return (int32_t)op->out_lo == lo && (int32_t)op->out_hi == hi;
}

/* A CONV on its own: shapes, requantization fields, sections, and its workspace areas
 * (what it writes against each other and against what it reads). */
static int conv_ok(const ctx_t *c, const cim_blob_op_t *op)
{
    const cim_blob_header_t *h = c->h;
    const int image = op->in_cstride == 0;
    area_t reads[2];
    uint32_t nreads = 0;
    if (image) {
        if (op->in_c != h->in_channels || op->in_h != h->in_height || op->in_w != h->in_width
            || op->in_offset != 0 || op->in_signed != 0)
            return 0;
    } else {
        if (!hwc_ok(op->in_c, op->in_cstride) || op->in_signed != 0)
            return 0;
        reads[nreads].offset = op->in_offset;
        reads[nreads++].bytes = hwc_bytes(op->in_h, op->in_w, op->in_cstride);
    }
    if (!geometry_ok(op->in_h, op->out_h, op->kernel, op->stride, op->pad)
        || !geometry_ok(op->in_w, op->out_w, op->kernel, op->stride, op->pad)
        || !hwc_ok(op->out_c, op->out_cstride) || op->out_cstride < 2u * conv_pairs(op)
        || !out_range_ok(op))
        return 0;
    /* Exactly the steps the taps take: the weight section's size follows from them. */
    uint64_t taps = (uint64_t)op->in_c * op->kernel * op->kernel;
    if (op->steps < 1u || op->steps > CIM_CONV_MAX_STEPS || op->steps != (taps + 3u) / 4u)
        return 0;
    if (op->rq_mode == CIM_RQ_FAST) {
        if (op->out_signed || op->shift != 8u - op->out_bits)
            return 0;
    } else if (op->rq_mode != CIM_RQ_GENERIC || op->shift < 1u || op->shift > 63u) {
        return 0;
    }
    if ((op->w_bytes != 1u && op->w_bytes != 2u) || op->residual > 1u
        || (op->w_bytes == 2u && op->steps > CIM_CONV16_MAX_STEPS))
        return 0;
    if (op->residual) {
        if (!hwc_ok(op->out_c, op->res_cstride) || op->res_signed > 1u)
            return 0;
        reads[nreads].offset = op->res_offset;
        reads[nreads++].bytes = hwc_bytes(op->out_h, op->out_w, op->res_cstride);
    } else if (op->res_offset || op->res_cstride || op->res_signed) {
        return 0;
    }
    if (!section_ok(h, op->weights_offset, conv_weight_bytes(op))
        || !section_ok(h, op->params_offset, 2u * conv_pairs(op) * CIM_RQ_RECORD_BYTES))
        return 0;
    area_t a[4];
    conv_areas(op, a);
    for (uint32_t i = 0; i < 4u; i++)
        if (!area_ok(c, a[i].offset, a[i].bytes))
            return 0;
    for (uint32_t i = 0; i < nreads; i++)
        if (!area_ok(c, reads[i].offset, reads[i].bytes))
            return 0;
    if ((op->im2col_offset + a[0].bytes) % CIM_WORKSPACE_ALIGN != 0)
        return 0;
    for (uint32_t i = 0; i < 4u; i++) {
        for (uint32_t j = i + 1u; j < 4u; j++)
            if (!disjoint(a[i].offset, a[i].bytes, a[j].offset, a[j].bytes))
                return 0;
        for (uint32_t j = 0; j < nreads; j++)
            if (!disjoint(a[i].offset, a[i].bytes, reads[j].offset, reads[j].bytes))
                return 0;
    }
    return 1;
}

static int maxpool_ok(const ctx_t *c, const cim_blob_op_t *op)
{
    uint64_t in = hwc_bytes(op->in_h, op->in_w, op->in_cstride);
    uint64_t out = hwc_bytes(op->out_h, op->out_w, op->out_cstride);
    return op->in_signed == 0 && op->out_signed == 0 && op->out_c == op->in_c
           && op->out_cstride == op->in_cstride && hwc_ok(op->in_c, op->in_cstride)
           && geometry_ok(op->in_h, op->out_h, op->kernel, op->stride, op->pad)
           && geometry_ok(op->in_w, op->out_w, op->kernel, op->stride, op->pad)
           && area_ok(c, op->in_offset, in) && area_ok(c, op->out_offset, out)
           && disjoint(op->in_offset, in, op->out_offset, out);
}

/* Words of a tensor in the activation buffer (compiler/compile.py). */
static uint64_t act_words(const cim_blob_header_t *h, uint32_t c, uint32_t hh, uint32_t w,
                          uint32_t bits)
{
    uint64_t groups = ((uint64_t)c + h->hw_rows - 1u) / h->hw_rows;
    uint64_t slices = ((uint64_t)bits + h->hw_a_bits - 1u) / h->hw_a_bits;
    return (uint64_t)hh * w * groups * slices;
}

static int offload_ok(const ctx_t *c, const cim_blob_op_t *op)
{
    const cim_blob_header_t *h = c->h;
    uint64_t in = hwc_bytes(op->in_h, op->in_w, op->in_cstride);
    uint64_t out = hwc_bytes(op->out_h, op->out_w, op->out_cstride);
    uint64_t act = 2u * (uint64_t)h->hw_bank_words;
    return op->in_signed == 0 && op->act_in_bits == h->hw_a_bits
           && hwc_ok(op->in_c, op->in_cstride) && hwc_ok(op->out_c, op->out_cstride)
           && op->out_h >= 1u && op->out_w >= 1u
           && op->act_out_bits >= 1u && op->act_out_bits <= 8u
           && op->out_bits == op->act_out_bits && op->out_signed <= 1u
           && op->act_in_base + act_words(h, op->in_c, op->in_h, op->in_w, op->act_in_bits)
                  <= act
           && op->act_out_base
                      + act_words(h, op->out_c, op->out_h, op->out_w, op->act_out_bits)
                  <= act
           && area_ok(c, op->in_offset, in) && area_ok(c, op->out_offset, out)
           && disjoint(op->in_offset, in, op->out_offset, out);
}

static int avgpool_ok(const ctx_t *c, const cim_blob_op_t *op)
{
    uint64_t in = hwc_bytes(op->in_h, op->in_w, op->in_cstride);
    return hwc_ok(op->in_c, op->in_cstride) && op->in_signed <= 1u && op->out_c == op->in_c
           && area_ok(c, op->in_offset, in) && area_ok(c, op->out_offset, 4u * op->out_c)
           && disjoint(op->in_offset, in, op->out_offset, 4u * (uint64_t)op->out_c);
}

static int fc_ok(const ctx_t *c, const cim_blob_op_t *op)
{
    const cim_blob_header_t *h = c->h;
    return op->out_c == h->classes && op->out_c >= 1u
           && section_ok(h, op->weights_offset, (uint64_t)op->out_c * op->in_c)
           && section_ok(h, op->params_offset, 8u * (uint64_t)op->out_c)
           && area_ok(c, op->in_offset, 4u * (uint64_t)op->in_c)
           && area_ok(c, op->out_offset, 8u * (uint64_t)op->out_c)
           && disjoint(op->in_offset, 4u * (uint64_t)op->in_c, op->out_offset,
                       8u * (uint64_t)op->out_c);
}

/* The op chain: CONV, MAXPOOL..., OFFLOAD, AVGPOOL, FC; *offload: the OFFLOAD op. */
static int ops_ok(const ctx_t *c, const cim_blob_op_t *ops, uint32_t n,
                  const cim_blob_op_t **offload)
{
    uint32_t i = 0;
    if (n < 4u || ops[0].kind != CIM_OP_CONV || ops[0].in_cstride != 0
        || ops[0].w_bytes != 2u || ops[0].residual != 0 || !conv_ok(c, &ops[0]))
        return 0;
    for (i = 1; i < n && ops[i].kind == CIM_OP_MAXPOOL; i++)
        if (!chained(&ops[i - 1], &ops[i]) || !maxpool_ok(c, &ops[i]))
            return 0;
    if (n - i != 3u || ops[i].kind != CIM_OP_OFFLOAD || ops[i + 1].kind != CIM_OP_AVGPOOL
        || ops[i + 2].kind != CIM_OP_FC)
        return 0;
    *offload = &ops[i];
    return chained(&ops[i - 1], &ops[i]) && offload_ok(c, &ops[i])
           && chained(&ops[i], &ops[i + 1]) && avgpool_ok(c, &ops[i + 1])
           && ops[i + 2].in_c == ops[i + 1].out_c
           && ops[i + 2].in_offset == ops[i + 1].out_offset && fc_ok(c, &ops[i + 2]);
}

/* Bytes of an op's output: HWC bytes, AVGPOOL's int32 sums, FC's int64 logits. */
static uint64_t out_bytes(const cim_blob_op_t *op)
{
    if (op->kind == CIM_OP_AVGPOOL)
        return 4u * (uint64_t)op->out_c;
    if (op->kind == CIM_OP_FC)
        return 8u * (uint64_t)op->out_c;
    return hwc_bytes(op->out_h, op->out_w, op->out_cstride);
}

/* What op i reads at `offset` (`bytes`): written last by an earlier op j of the kind the
 * reader takes (avgpool: 1 for AVGPOOL, else CONV or MAXPOOL) with this shape, and
 * written over by no op after j up to op i itself. */
static int read_ok(const cim_blob_op_t *ops, uint32_t i, uint32_t offset, int avgpool,
                   uint32_t ch, uint32_t hh, uint32_t w, uint32_t cstride, uint32_t sgn)
{
    uint32_t j = i;
    while (j > 0 && ops[j - 1u].out_offset != offset)
        j--;
    if (j == 0)
        return 0;
    const cim_blob_op_t *p = &ops[--j];
    uint64_t bytes = avgpool ? 4u * (uint64_t)ch : hwc_bytes(hh, w, cstride);
    if (avgpool ? p->kind != CIM_OP_AVGPOOL
                : (p->kind != CIM_OP_CONV && p->kind != CIM_OP_MAXPOOL)
                      || p->out_cstride != cstride)
        return 0;
    if (p->out_c != ch || p->out_h != hh || p->out_w != w || p->out_signed != sgn)
        return 0;
    for (uint32_t m = j + 1u; m <= i; m++) {
        area_t a[4];
        uint32_t count = 1;
        if (ops[m].kind == CIM_OP_CONV) {
            conv_areas(&ops[m], a);
            count = 4;
        } else {
            a[0].offset = ops[m].out_offset;
            a[0].bytes = out_bytes(&ops[m]);
        }
        for (uint32_t k = 0; k < count; k++)
            if (!disjoint(offset, bytes, a[k].offset, a[k].bytes))
                return 0;
    }
    return 1;
}

/* The WHOLE partition: one CLASSIFY op, the blob's image in (within the image buffer), the
 * classes' signed 64-bit logits out. */
static int whole_ops_ok(const ctx_t *c, const cim_blob_op_t *ops, uint32_t n,
                        const cim_blob_op_t **classify)
{
    const cim_blob_header_t *h = c->h;
    const cim_blob_op_t *op = &ops[0];
    *classify = op;
    return n == 1u && op->kind == CIM_OP_CLASSIFY && op->in_c == h->in_channels
           && op->in_h == h->in_height && op->in_w == h->in_width
           && op->in_c <= h->hw_image_channels && op->in_h <= h->hw_image_size
           && op->in_w <= h->hw_image_size && op->out_c == h->classes && op->out_h == 1u
           && op->out_w == 1u && op->out_signed == 1u
           && area_ok(c, op->out_offset, 8u * (uint64_t)h->classes);
}

/* The MCU partition: every op valid on its own; op 0 the CONV on the image, the last the
 * FC, no OFFLOAD; every tensor an op reads is the output of the latest earlier op that
 * wrote at its offset, of the shape and kind the reader takes, and no op in between (nor
 * the reader) writes over it. */
static int mcu_ops_ok(const ctx_t *c, const cim_blob_op_t *ops, uint32_t n)
{
    if (ops[0].kind != CIM_OP_CONV || ops[0].in_cstride != 0 || ops[n - 1u].kind != CIM_OP_FC)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        const cim_blob_op_t *op = &ops[i];
        switch (op->kind) {
        case CIM_OP_CONV:
            if ((i && op->in_cstride == 0) || !conv_ok(c, op))
                return 0;
            if (i && !read_ok(ops, i, op->in_offset, 0, op->in_c, op->in_h, op->in_w,
                              op->in_cstride, op->in_signed))
                return 0;
            if (op->residual && !read_ok(ops, i, op->res_offset, 0, op->out_c, op->out_h,
                                         op->out_w, op->res_cstride, op->res_signed))
                return 0;
            break;
        case CIM_OP_MAXPOOL:
        case CIM_OP_AVGPOOL:
            if (op->kind == CIM_OP_MAXPOOL ? !maxpool_ok(c, op)
                                           : !avgpool_ok(c, op) || op->out_signed != 1u)
                return 0;
            if (!read_ok(ops, i, op->in_offset, 0, op->in_c, op->in_h, op->in_w,
                         op->in_cstride, op->in_signed))
                return 0;
            break;
        case CIM_OP_FC:
            if (i + 1u != n || !fc_ok(c, op)
                || !read_ok(ops, i, op->in_offset, 1, op->in_c, 1, 1, 0, 1))
                return 0;
            break;
        default:
            return 0;
        }
    }
    return 1;
}

static int header_ok(const cim_blob_header_t *h)
{
    uint64_t image = (uint64_t)h->in_channels * h->in_height * h->in_width;
    uint64_t n = h->images_count;
    return is_pow2(h->hw_rows) && h->hw_rows <= 1024u && h->hw_cols >= 1u
           && h->hw_cols <= 1024u && is_pow2(h->hw_write_rows) && h->hw_write_rows <= h->hw_rows
           && is_pow2(h->hw_a_bits) && h->hw_a_bits <= 8u && is_pow2(h->hw_w_bits)
           && h->hw_w_bits <= 8u && h->hw_macros >= 1u && h->hw_macros <= 256u
           && h->hw_bank_words >= 1u && h->classes >= 1u
           && h->hw_desc_words == CIM_DESC_WORDS && h->hw_param_record_words == CIM_PARAM_WORDS
           && image >= 1u && h->pixel_max >= 1u && h->pixel_max <= 255u
           && h->partition >= CIM_PARTITION_ACCEL && h->partition <= CIM_PARTITION_WHOLE
           && (h->partition == CIM_PARTITION_MCU
                   ? h->program_words == 0 && h->weight_words == 0 && h->param_words == 0
                   : h->program_words >= 1u)
           && h->ops_count >= 1u && h->ops_count <= CIM_MAX_OPS
           && section_ok(h, h->ops_offset, 4u * CIM_OP_WORDS * (uint64_t)h->ops_count)
           && h->program_words <= h->hw_prog_words
           && section_ok(h, h->program_offset, 4u * (uint64_t)h->program_words)
           && h->weight_words <= h->hw_weight_words
           && section_ok(h, h->weights_offset, 4u * (uint64_t)h->weight_words)
           && h->param_words <= h->hw_param_words
           && section_ok(h, h->params_offset, 4u * (uint64_t)h->param_words)
           && section_ok(h, h->images_offset, n * image)
           && section_ok(h, h->labels_offset, 4u * n)
           && section_ok(h, h->expected_offset, 8u * n * h->classes)
           && h->workspace_bytes >= CIM_WORKSPACE_ALIGN;
}

/* The sections (the header's and the ops') follow one another from the end of the header
 * with only alignment padding between them and end at total_bytes: nothing overlaps, and no
 * count or offset can disagree with the sizes the others give. */
static int layout_ok(const cim_blob_header_t *h, const cim_blob_op_t *ops)
{
    uint64_t n = h->images_count;
    area_t s[7u + 2u * CIM_MAX_OPS] = {
        {h->ops_offset, 4u * CIM_OP_WORDS * (uint64_t)h->ops_count},
        {h->program_offset, 4u * (uint64_t)h->program_words},
        {h->weights_offset, 4u * (uint64_t)h->weight_words},
        {h->params_offset, 4u * (uint64_t)h->param_words},
        {h->images_offset, n * h->in_channels * h->in_height * h->in_width},
        {h->labels_offset, 4u * n},
        {h->expected_offset, 8u * n * h->classes},
    };
    uint32_t count = 7;
    for (uint32_t i = 0; i < h->ops_count; i++) {
        const cim_blob_op_t *op = &ops[i];
        if (op->kind == CIM_OP_CONV) {
            s[count].offset = op->weights_offset;
            s[count++].bytes = conv_weight_bytes(op);
            s[count].offset = op->params_offset;
            s[count++].bytes = 2u * conv_pairs(op) * CIM_RQ_RECORD_BYTES;
        } else if (op->kind == CIM_OP_FC) {
            s[count].offset = op->weights_offset;
            s[count++].bytes = (uint64_t)op->out_c * op->in_c;
            s[count].offset = op->params_offset;
            s[count++].bytes = 8u * (uint64_t)op->out_c;
        }
    }
    for (uint32_t i = 1; i < count; i++) {     /* insertion sort by (offset, bytes) */
        area_t v = s[i];
        uint32_t j = i;
        for (; j > 0 && (s[j - 1].offset > v.offset
                         || (s[j - 1].offset == v.offset && s[j - 1].bytes > v.bytes)); j--)
            s[j] = s[j - 1];
        s[j] = v;
    }
    uint64_t end = h->header_bytes;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t start = (end + CIM_BLOB_SECTION_ALIGN - 1u) / CIM_BLOB_SECTION_ALIGN
                         * CIM_BLOB_SECTION_ALIGN;
        if (s[i].offset != start)
            return 0;
        end = start + s[i].bytes;
    }
    return end == h->total_bytes;
}

/* Activation words per pixel and channel group of a `bits`-bit tensor. */
static uint64_t slices(const cim_blob_header_t *h, uint32_t bits)
{
    return ((uint64_t)bits + h->hw_a_bits - 1u) / h->hw_a_bits;
}

#define DESC(d, NAME) \
    (((d)[CIM_DESC_##NAME##_Word] & CIM_DESC_##NAME##_Msk) >> CIM_DESC_##NAME##_Pos)

/* The layer program against the header and the OFFLOAD op: a whole number of descriptors,
 * `last` on the final one only, weight_words and param_words exactly what the descriptors
 * address (weight rows of hw_macros tiles), every tensor a layer reads or writes inside the activation buffer, and the
 * OFFLOAD's tensors those of the first layer's input and of a layer's output. For a
 * CLASSIFY op (the WHOLE partition): the first layer the im2col of its image, the last the
 * raw classifier layer of its classes. */
static int program_ok(const cim_model_t *m, const cim_blob_op_t *offload)
{
    const cim_blob_header_t *h = m->hdr;
    if (h->program_words % CIM_DESC_WORDS != 0)
        return 0;
    const uint32_t *p = (const uint32_t *)cim_model_at(m, h->program_offset);
    uint32_t count = h->program_words / CIM_DESC_WORDS;
    uint64_t tiles = 0, records = 0;
    uint64_t act = 2u * (uint64_t)h->hw_bank_words;
    int output_found = 0;
    for (uint32_t i = 0; i < count; i++) {
        const uint32_t *d = p + (uint64_t)i * CIM_DESC_WORDS;
        if (DESC(d, LAST) != (i + 1u == count ? 1u : 0u))
            return 0;
        /* Every tensor the layer reads or writes inside the activation buffer. */
        uint64_t pixels = (uint64_t)DESC(d, OUT_HEIGHT) * DESC(d, OUT_WIDTH);
        if ((uint64_t)DESC(d, IN_BASE)
                    + (uint64_t)DESC(d, IN_HEIGHT) * DESC(d, IN_WIDTH) * DESC(d, IN_GROUPS)
                > act
            || DESC(d, OUT_BASE) + pixels * DESC(d, OUT_GROUPS) * slices(h, DESC(d, OUT_BITS))
                   > act
            || (DESC(d, HAS_RESIDUAL)
                && DESC(d, RES_BASE) + pixels * DESC(d, OUT_GROUPS)
                                           * slices(h, DESC(d, RES_BITS)) > act))
            return 0;
        /* Weight rows of hw_macros tiles: col_tiles * ceil(row_tiles / hw_macros). */
        uint64_t t = (uint64_t)DESC(d, WEIGHT_BASE)
                     + (uint64_t)DESC(d, COL_TILES)
                           * ((DESC(d, ROW_TILES) + (uint64_t)h->hw_macros - 1u) / h->hw_macros);
        uint64_t r = (uint64_t)DESC(d, PARAM_BASE) + (uint64_t)DESC(d, COL_TILES) * h->hw_cols;
        tiles = t > tiles ? t : tiles;
        records = r > records ? r : records;
        if (i == 0 && (DESC(d, IN_CHANNELS) != offload->in_c
                       || DESC(d, IN_HEIGHT) != offload->in_h
                       || DESC(d, IN_WIDTH) != offload->in_w))
            return 0;
        if (offload->kind == CIM_OP_CLASSIFY) {
            if ((i == 0 && DESC(d, OP) != CIM_DESC_OP_IM2COL)
                || (i + 1u == count
                    && (DESC(d, RAW) != 1u || DESC(d, OUT_CHANNELS) != offload->out_c)))
                return 0;
            output_found = 1;
        } else if (i == 0 && DESC(d, IN_BASE) != offload->act_in_base) {
            return 0;
        }
        if (DESC(d, OUT_BASE) == offload->act_out_base
            && DESC(d, OUT_CHANNELS) == offload->out_c && DESC(d, OUT_HEIGHT) == offload->out_h
            && DESC(d, OUT_WIDTH) == offload->out_w && DESC(d, OUT_BITS) == offload->out_bits
            && DESC(d, OUT_SIGNED) == offload->out_signed)
            output_found = 1;
    }
    uint64_t beat = ((uint64_t)h->hw_write_rows * h->hw_cols * h->hw_w_bits + 31u) / 32u;
    uint64_t tile_words = (uint64_t)(h->hw_rows / h->hw_write_rows) * beat;
    return output_found && h->weight_words == tiles * h->hw_macros * tile_words
           && h->param_words == records * h->hw_param_record_words;
}

/* The contents the header describes: test images within 0..pixel_max, labels below classes,
 * and every CONV's records: res_mult 0 without a residual, and a RQ_GENERIC conv's
 * multipliers in the model's 16-bit (res_mult: 24-bit) range (a RQ_FAST record's are
 * scaled, so a mode flipped in the op record shows). */
static int contents_ok(const cim_model_t *m)
{
    const cim_blob_header_t *h = m->hdr;
    const uint8_t *px = (const uint8_t *)cim_model_at(m, h->images_offset);
    uint64_t pixels = (uint64_t)h->images_count * h->in_channels * h->in_height * h->in_width;
    for (uint64_t i = 0; i < pixels; i++)
        if (px[i] > h->pixel_max)
            return 0;
    for (uint32_t i = 0; i < h->images_count; i++)
        if (cim_model_label(m, i) >= h->classes)
            return 0;
    for (uint32_t k = 0; k < h->ops_count; k++) {
        const cim_blob_op_t *conv = &m->ops[k];
        if (conv->kind != CIM_OP_CONV)
            continue;
        const cim_rq_record_t *rq =
            (const cim_rq_record_t *)cim_model_at(m, conv->params_offset);
        for (uint64_t i = 0; i < 2u * conv_pairs(conv); i++) {
            if (!conv->residual && rq[i].res_mult != 0)
                return 0;
            if (conv->rq_mode == CIM_RQ_GENERIC
                && (rq[i].mult > 32767 || rq[i].mult < -32767
                    || rq[i].res_mult > 8388607 || rq[i].res_mult < -8388607))
                return 0;
        }
    }
    return 1;
}

cim_status_t cim_model_open(cim_model_t *model, const void *blob, uint32_t size)
{
    if (!model || !blob || (uintptr_t)blob % 8u)
        return CIM_ERR_ARG;
    model->base = NULL;
    const cim_blob_header_t *h = (const cim_blob_header_t *)blob;
    if (size < 4u)
        return CIM_ERR_BLOB_SIZE;
    if (h->magic != CIM_BLOB_MAGIC)
        return CIM_ERR_BLOB_MAGIC;
    if (size < 8u)
        return CIM_ERR_BLOB_SIZE;
    if (h->version != CIM_BLOB_VERSION)
        return CIM_ERR_BLOB_VERSION;
    if (size < CIM_BLOB_HEADER_BYTES || h->total_bytes > size)
        return CIM_ERR_BLOB_SIZE;
    if (h->header_bytes != CIM_BLOB_HEADER_BYTES || h->total_bytes < h->header_bytes)
        return CIM_ERR_BLOB_FORMAT;
    const uint8_t *base = (const uint8_t *)blob;
    if (cim_crc32(0, base + CIM_BLOB_CRC_START, h->total_bytes - CIM_BLOB_CRC_START)
        != h->crc32)
        return CIM_ERR_BLOB_CRC;
    if (!header_ok(h))
        return CIM_ERR_BLOB_FORMAT;
    ctx_t c = {h, h->workspace_bytes};
    const cim_blob_op_t *ops = (const cim_blob_op_t *)(base + h->ops_offset);
    const cim_blob_op_t *offload = NULL;
    int chain = h->partition == CIM_PARTITION_MCU     ? mcu_ops_ok(&c, ops, h->ops_count)
                : h->partition == CIM_PARTITION_WHOLE ? whole_ops_ok(&c, ops, h->ops_count,
                                                                     &offload)
                                                      : ops_ok(&c, ops, h->ops_count, &offload);
    if (!chain || !layout_ok(h, ops))
        return CIM_ERR_BLOB_FORMAT;
    cim_model_t m = {base, h, ops};
    if ((offload && !program_ok(&m, offload)) || !contents_ok(&m))
        return CIM_ERR_BLOB_FORMAT;
    *model = m;
    return CIM_OK;
}

const uint8_t *cim_model_image(const cim_model_t *model, uint32_t i)
{
    const cim_blob_header_t *h = model->hdr;
    uint32_t bytes = h->in_channels * h->in_height * h->in_width;
    return model->base + h->images_offset + i * bytes;
}

uint32_t cim_model_label(const cim_model_t *model, uint32_t i)
{
    return ((const uint32_t *)cim_model_at(model, model->hdr->labels_offset))[i];
}

const int64_t *cim_model_expected(const cim_model_t *model, uint32_t i)
{
    const int64_t *e = (const int64_t *)cim_model_at(model, model->hdr->expected_offset);
    return e + (uint64_t)i * model->hdr->classes;
}
