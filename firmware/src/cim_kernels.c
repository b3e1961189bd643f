/* MCU layers, bit-exact with model/golden.py (see cim_kernels.h). */
#include "cim_kernels.h"

#include <stddef.h>

#include "cim_dsp.h"

/* Use the assembly channel loop (cim_conv_m4.S) where it applies. */
#if CIM_HAVE_DSP && !defined(CIM_CONV_C)
#define CIM_CONV_ASM 1
#else
#define CIM_CONV_ASM 0
#endif

/* ------------------------------------------------------------------------------ conv
 *
 * Two output pixels (A, B) by two output channels at a time. The im2col vectors of A and B
 * are interleaved word by word (word 2p + i: tap pair p of pixel i, tap 2p in the low half),
 * the weights of a channel pair likewise (compiler/firmware_blob.py), so every SMLAD takes two
 * taps of one pixel and one channel and every loaded word serves two SMLADs. 8-bit weights
 * (w_bytes 1) hold a step's four taps of one channel in a word, bytes 0, 2, 1, 3, which
 * SXTB16 and SXTB16 ROR #8 widen to the step's two 16-bit pairs (CMSIS-NN's q7 weights).
 *
 * The im2col vectors are gathered from a copy of the input zero-padded to 16-bit pixels
 * (planar, whatever the input's layout), through a table of two byte offsets per tap pair:
 * any kernel size, stride and input channel count with one loop and no bounds tests. Pad
 * taps (past in_c * k * k) read the zero halfword after the padded input. */

typedef struct {
    uint32_t hp, wp;           /* padded height and width */
    uint32_t pairs;            /* tap pairs, 2 * steps */
    uint32_t channel_pairs;
} conv_geom_t;

static conv_geom_t conv_geometry(const cim_blob_op_t *op)
{
    conv_geom_t g;
    g.hp = op->in_h + 2u * op->pad;
    g.wp = op->in_w + 2u * op->pad;
    g.pairs = 2u * op->steps;
    g.channel_pairs = (op->out_c + 1u) / 2u;
    return g;
}

/* The zero-padded 16-bit input and the gather table. */
static void conv_prepare(const cim_blob_op_t *op, const conv_geom_t *g, const uint8_t *in,
                         uint8_t *ws)
{
    uint16_t *padded = (uint16_t *)(ws + op->padded_offset);
    uint32_t *gather = (uint32_t *)(ws + op->gather_offset);
    const uint32_t k = op->kernel, p = op->pad;
    const uint32_t plane = g->hp * g->wp;
    const uint32_t zero_slot = op->in_c * plane;   /* halfword index of the pad-tap zero */

    for (uint32_t i = 0; i <= zero_slot; i++)
        padded[i] = 0;
    if (op->in_cstride == 0) {      /* the image: CHW */
        for (uint32_t c = 0; c < op->in_c; c++)
            for (uint32_t y = 0; y < op->in_h; y++) {
                const uint8_t *src = in + (c * op->in_h + y) * op->in_w;
                uint16_t *dst = padded + c * plane + (y + p) * g->wp + p;
                for (uint32_t x = 0; x < op->in_w; x++)
                    dst[x] = src[x];
            }
    } else {                        /* HWC */
        for (uint32_t y = 0; y < op->in_h; y++)
            for (uint32_t x = 0; x < op->in_w; x++) {
                const uint8_t *src = in + (y * op->in_w + x) * op->in_cstride;
                uint16_t *dst = padded + (y + p) * g->wp + x + p;
                for (uint32_t c = 0; c < op->in_c; c++, dst += plane)
                    *dst = src[c];
            }
    }

    const uint32_t taps = op->in_c * k * k;
    for (uint32_t t = 0; t < 2u * g->pairs; t++) {
        uint32_t idx = zero_slot;
        if (t < taps) {
            uint32_t c = t / (k * k), kh = (t / k) % k, kw = t % k;
            idx = c * plane + kh * g->wp + kw;
        }
        gather[t] = 2u * idx;
    }
}

/* im2col of pixels A and B: base_a / base_b point at the padded pixel under the top-left tap
 * of each window. */
static void conv_im2col(const uint32_t *gather, uint32_t pairs, const uint8_t *base_a,
                        const uint8_t *base_b, uint32_t *x)
{
    for (uint32_t p = 0; p < pairs; p++) {
        uint32_t o0 = gather[2u * p], o1 = gather[2u * p + 1u];
        x[2u * p] = cim_pack16(*(const uint16_t *)(base_a + o0),
                               *(const uint16_t *)(base_a + o1));
        x[2u * p + 1u] = cim_pack16(*(const uint16_t *)(base_b + o0),
                                    *(const uint16_t *)(base_b + o1));
    }
}

/* The requantization of one output: y = acc * mult + bias (+ res * res_mult); CIM_RQ_FAST:
 * usat8(high word of y) >> shift; CIM_RQ_GENERIC: clamp(y >> shift, lo, hi), the byte
 * holding the value's two's complement. */
typedef struct {
    int fast;
    uint32_t shift;
    int32_t lo, hi;
} rq_rule_t;

static inline uint8_t requant(const rq_rule_t *q, int32_t acc, int32_t res,
                              const cim_rq_record_t *r)
{
    int64_t y = cim_smlal(cim_smlal(r->bias, acc, r->mult), res, r->res_mult);
    if (q->fast)
        return (uint8_t)(cim_usat8((int32_t)(y >> 32)) >> q->shift);
    int64_t v = y >> q->shift;
    int32_t o = v < q->lo ? q->lo : v > q->hi ? q->hi : (int32_t)v;
    return (uint8_t)o;
}

static inline int32_t res_value(const uint8_t *p, uint32_t sgn)
{
    return sgn ? (int32_t)(((uint32_t)*p ^ 0x80u) - 0x80u) : (int32_t)*p;
}

/* Words of weights per channel pair. */
static uint32_t conv_pair_words(const cim_blob_op_t *op, const conv_geom_t *g)
{
    return op->w_bytes == 1u ? g->pairs : 2u * g->pairs;
}

#if !CIM_CONV_ASM
/* The dot products of `n` channel pairs of one pixel pair, in C (cim_conv_dots_m4 and
 * cim_conv_dots_q7_m4 in assembly): acc[4 c ..] = A.c0, A.c1, B.c0, B.c1 of pair c. */
static void conv_dots_c(const cim_blob_op_t *op, const conv_geom_t *g, const uint32_t *x,
                        const uint32_t *w, uint32_t n, int32_t *acc)
{
    const int q7 = op->w_bytes == 1u;
    const uint32_t wstride = conv_pair_words(op, g);
    for (uint32_t c = 0; c < n; c++, w += wstride, acc += 4) {
        int32_t a0 = 0, a1 = 0, b0 = 0, b1 = 0;   /* pixel, channel */
        if (q7) {
            for (uint32_t s = 0; s < g->pairs / 2u; s++) {
                const uint32_t *xs = x + 4u * s;
                uint32_t w0 = w[2u * s], w1 = w[2u * s + 1u];
                uint32_t w0l = cim_sxtb16(w0), w0h = cim_sxtb16_ror8(w0);
                uint32_t w1l = cim_sxtb16(w1), w1h = cim_sxtb16_ror8(w1);
                a0 = cim_smlad(xs[2], w0h, cim_smlad(xs[0], w0l, a0));
                a1 = cim_smlad(xs[2], w1h, cim_smlad(xs[0], w1l, a1));
                b0 = cim_smlad(xs[3], w0h, cim_smlad(xs[1], w0l, b0));
                b1 = cim_smlad(xs[3], w1h, cim_smlad(xs[1], w1l, b1));
            }
        } else {
            for (uint32_t p = 0; p < g->pairs; p++) {
                uint32_t xa = x[2u * p], xb = x[2u * p + 1u];
                uint32_t w0 = w[2u * p], w1 = w[2u * p + 1u];
                a0 = cim_smlad(xa, w0, a0);
                a1 = cim_smlad(xa, w1, a1);
                b0 = cim_smlad(xb, w0, b0);
                b1 = cim_smlad(xb, w1, b1);
            }
        }
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = b0;
        acc[3] = b1;
    }
}
#endif

/* The outputs of channel pairs q0 .. q0 + n - 1 of one pixel pair from their accumulators;
 * res_a / res_b: the residual pixels (NULL without). */
static void conv_requant(const cim_blob_op_t *op, const int32_t *acc, uint32_t q0, uint32_t n,
                         const cim_rq_record_t *rq, uint8_t *out_a, uint8_t *out_b,
                         const uint8_t *res_a, const uint8_t *res_b)
{
    const rq_rule_t q = {op->rq_mode == CIM_RQ_FAST, op->shift, (int32_t)op->out_lo,
                         (int32_t)op->out_hi};
    for (uint32_t c = q0; c < q0 + n; c++, acc += 4) {
        int32_t ra0 = 0, ra1 = 0, rb0 = 0, rb1 = 0;
        if (res_a) {
            const uint32_t sgn = op->res_signed;
            ra0 = res_value(res_a + 2u * c, sgn);
            rb0 = res_value(res_b + 2u * c, sgn);
            if (2u * c + 1u < op->out_c) {    /* the pad channel's residual may be a pad */
                ra1 = res_value(res_a + 2u * c + 1u, sgn);
                rb1 = res_value(res_b + 2u * c + 1u, sgn);
            }
        }
        const cim_rq_record_t *r = rq + 2u * c;
        uint8_t *oa = out_a + 2u * c, *ob = out_b + 2u * c;
        oa[0] = requant(&q, acc[0], ra0, &r[0]);
        oa[1] = requant(&q, acc[1], ra1, &r[1]);
        ob[0] = requant(&q, acc[2], rb0, &r[0]);
        ob[1] = requant(&q, acc[3], rb1, &r[1]);
    }
}

/* Channel pairs per dot-product call on the requantization-in-C path (their accumulators
 * live on the stack). */
#define CONV_CHUNK 16u

/* The im2col vectors of output pixels p and p + 1 (or p twice, for an odd last pixel: its
 * twin's results go to the pad pixel the workspace has for it); returns the second one. */
static inline uint32_t conv_pixel_pair(const cim_blob_op_t *op, const conv_geom_t *g,
                                       const uint32_t *gather, const uint8_t *padded,
                                       uint32_t npix, uint32_t p, uint32_t *x)
{
    const uint32_t s = op->stride;
    uint32_t ya = p / op->out_w, xa = p % op->out_w;
    uint32_t pb = p + 1u < npix ? p + 1u : p;
    uint32_t yb = pb / op->out_w, xb = pb % op->out_w;
    conv_im2col(gather, g->pairs, padded + 2u * (ya * s * g->wp + xa * s),
                padded + 2u * (yb * s * g->wp + xb * s), x);
    return pb;
}

void cim_conv(const cim_blob_op_t *op, const uint8_t *in, const uint32_t *weights,
              const cim_rq_record_t *rq, uint8_t *ws)
{
    const conv_geom_t g = conv_geometry(op);
    const uint32_t *gather = (const uint32_t *)(ws + op->gather_offset);
    const uint8_t *padded = ws + op->padded_offset;
    uint32_t *x = (uint32_t *)(ws + op->im2col_offset);
    uint8_t *out = ws + op->out_offset;
    const uint8_t *res = op->residual ? ws + op->res_offset : NULL;
    const uint32_t npix = op->out_h * op->out_w;

    conv_prepare(op, &g, in, ws);
#if CIM_CONV_ASM
    cim_conv_job_t job;
    job.x = x;
    job.x_end = x + 4u * op->steps;
    job.w = weights;
    job.rq = rq;
    job.channel_pairs = g.channel_pairs;
    job.d = op->shift;
    if (op->rq_mode == CIM_RQ_FAST && !op->residual) {
        /* Dot products and requantization in assembly. */
        void (*channels)(const cim_conv_job_t *) =
            op->w_bytes == 1u ? cim_conv_channels_q7_m4 : cim_conv_channels_m4;
        for (uint32_t p = 0; p < npix; p += 2) {
            conv_pixel_pair(op, &g, gather, padded, npix, p, x);
            job.out_a = out + p * op->out_cstride;
            job.out_b = job.out_a + op->out_cstride;
            channels(&job);
        }
        return;
    }
    void (*dots)(const cim_conv_job_t *) =
        op->w_bytes == 1u ? cim_conv_dots_q7_m4 : cim_conv_dots_m4;
#endif
    /* The dot products of up to CONV_CHUNK channel pairs, then their requantization. */
    const uint32_t wstride = conv_pair_words(op, &g);
    int32_t acc[4u * CONV_CHUNK];
    for (uint32_t p = 0; p < npix; p += 2) {
        uint32_t pb = conv_pixel_pair(op, &g, gather, padded, npix, p, x);
        uint8_t *out_a = out + p * op->out_cstride, *out_b = out_a + op->out_cstride;
        const uint8_t *res_a = res ? res + p * op->res_cstride : NULL;
        const uint8_t *res_b = res ? res_a + (pb - p) * op->res_cstride : NULL;
        for (uint32_t q0 = 0; q0 < g.channel_pairs; q0 += CONV_CHUNK) {
            uint32_t n = g.channel_pairs - q0 < CONV_CHUNK ? g.channel_pairs - q0 : CONV_CHUNK;
            const uint32_t *w = weights + q0 * wstride;
#if CIM_CONV_ASM
            job.w = w;
            job.out_a = (uint8_t *)acc;
            job.channel_pairs = n;
            dots(&job);
#else
            conv_dots_c(op, &g, x, w, n, acc);
#endif
            conv_requant(op, acc, q0, n, rq, out_a, out_b, res_a, res_b);
        }
    }
}

/* ------------------------------------------------------------------------------ pooling */

void cim_maxpool(const cim_blob_op_t *op, uint8_t *ws)
{
    const uint32_t *in = (const uint32_t *)(ws + op->in_offset);
    uint32_t *out = (uint32_t *)(ws + op->out_offset);
    const uint32_t cw = op->in_cstride / 4u;      /* 4 channels per word */
    const int32_t k = (int32_t)op->kernel, s = (int32_t)op->stride, pad = (int32_t)op->pad;
    const int32_t h = (int32_t)op->in_h, w = (int32_t)op->in_w;

    for (int32_t oy = 0; oy < (int32_t)op->out_h; oy++)
        for (int32_t ox = 0; ox < (int32_t)op->out_w; ox++) {
            uint32_t *o = out + ((uint32_t)oy * op->out_w + (uint32_t)ox) * cw;
            /* Zero is the padding value and never above an (unsigned) input. */
            for (uint32_t c = 0; c < cw; c++)
                o[c] = 0;
            for (int32_t kh = 0; kh < k; kh++) {
                int32_t iy = oy * s - pad + kh;
                if (iy < 0 || iy >= h)
                    continue;
                for (int32_t kw = 0; kw < k; kw++) {
                    int32_t ix = ox * s - pad + kw;
                    if (ix < 0 || ix >= w)
                        continue;
                    const uint32_t *i = in + (uint32_t)(iy * w + ix) * cw;
                    for (uint32_t c = 0; c < cw; c++)
                        o[c] = cim_umax8(o[c], i[c]);
                }
            }
        }
}

void cim_avgpool(const cim_blob_op_t *op, uint8_t *ws)
{
    const uint8_t *in = ws + op->in_offset;
    int32_t *out = (int32_t *)(ws + op->out_offset);
    const uint32_t npix = op->in_h * op->in_w;

    for (uint32_t c = 0; c < op->in_c; c++) {
        int32_t sum = 0;
        const uint8_t *v = in + c;
        for (uint32_t p = 0; p < npix; p++, v += op->in_cstride)
            sum += op->in_signed ? (int32_t)(int8_t)*v : (int32_t)*v;
        out[c] = sum;
    }
}

/* ------------------------------------------------------------------------------ classifier */

void cim_fc(const cim_blob_op_t *op, const int8_t *weights, const int64_t *bias, uint8_t *ws)
{
    const int32_t *x = (const int32_t *)(ws + op->in_offset);
    int64_t *out = (int64_t *)(ws + op->out_offset);

    for (uint32_t o = 0; o < op->out_c; o++) {
        const int8_t *w = weights + o * op->in_c;
        int64_t acc = bias[o];
        for (uint32_t i = 0; i < op->in_c; i++)
            acc = cim_smlal(acc, x[i], w[i]);
        out[o] = acc;
    }
}

uint32_t cim_argmax64(const int64_t *v, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}
