/* MCU layers, bit-exact with model/golden.py (see cim_kernels.h). */
#include "cim_kernels.h"

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
 * taps of one pixel and one channel and every loaded word serves two SMLADs.
 *
 * The im2col vectors are gathered from a copy of the image zero-padded to 16-bit pixels,
 * through a table of two byte offsets per tap pair: any kernel size, stride and input
 * channel count with one loop and no bounds tests. Pad taps (past in_c * k * k) read the
 * zero halfword after the padded image. */

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

/* The zero-padded 16-bit image and the gather table. */
static void conv_prepare(const cim_blob_op_t *op, const conv_geom_t *g, const uint8_t *image,
                         uint8_t *ws)
{
    uint16_t *padded = (uint16_t *)(ws + op->padded_offset);
    uint32_t *gather = (uint32_t *)(ws + op->gather_offset);
    const uint32_t k = op->kernel, p = op->pad;
    const uint32_t plane = g->hp * g->wp;
    const uint32_t zero_slot = op->in_c * plane;   /* halfword index of the pad-tap zero */

    for (uint32_t i = 0; i <= zero_slot; i++)
        padded[i] = 0;
    for (uint32_t c = 0; c < op->in_c; c++)
        for (uint32_t y = 0; y < op->in_h; y++) {
            const uint8_t *src = image + (c * op->in_h + y) * op->in_w;
            uint16_t *dst = padded + c * plane + (y + p) * g->wp + p;
            for (uint32_t x = 0; x < op->in_w; x++)
                dst[x] = src[x];
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

/* CIM_RQ_FAST: usat8(high word of acc * mult + bias) >> d. */
static inline uint8_t requant_fast(int32_t acc, const cim_rq_record_t *r, uint32_t d)
{
    int64_t y = cim_smlal(r->bias, acc, r->mult);
    return (uint8_t)(cim_usat8((int32_t)(y >> 32)) >> d);
}

/* CIM_RQ_GENERIC: clamp((acc * mult + bias) >> shift, lo, hi); the byte holds the value's
 * two's complement. */
static inline uint8_t requant_generic(int32_t acc, const cim_rq_record_t *r, uint32_t shift,
                                      int32_t lo, int32_t hi)
{
    int64_t v = cim_smlal(r->bias, acc, r->mult) >> shift;
    int32_t q = v < lo ? lo : v > hi ? hi : (int32_t)v;
    return (uint8_t)q;
}

/* Every channel pair of one pixel pair, in C. */
static void conv_channels_c(const cim_blob_op_t *op, const conv_geom_t *g, const uint32_t *x,
                            const uint32_t *w, const cim_rq_record_t *rq, uint8_t *out_a,
                            uint8_t *out_b)
{
    const int fast = op->rq_mode == CIM_RQ_FAST;
    const int32_t lo = (int32_t)op->out_lo, hi = (int32_t)op->out_hi;
    for (uint32_t q = 0; q < g->channel_pairs; q++, w += 2u * g->pairs, rq += 2) {
        int32_t a0 = 0, a1 = 0, b0 = 0, b1 = 0;   /* pixel, channel */
        for (uint32_t p = 0; p < g->pairs; p++) {
            uint32_t xa = x[2u * p], xb = x[2u * p + 1u];
            uint32_t w0 = w[2u * p], w1 = w[2u * p + 1u];
            a0 = cim_smlad(xa, w0, a0);
            a1 = cim_smlad(xa, w1, a1);
            b0 = cim_smlad(xb, w0, b0);
            b1 = cim_smlad(xb, w1, b1);
        }
        uint8_t *oa = out_a + 2u * q, *ob = out_b + 2u * q;
        if (fast) {
            oa[0] = requant_fast(a0, &rq[0], op->shift);
            oa[1] = requant_fast(a1, &rq[1], op->shift);
            ob[0] = requant_fast(b0, &rq[0], op->shift);
            ob[1] = requant_fast(b1, &rq[1], op->shift);
        } else {
            oa[0] = requant_generic(a0, &rq[0], op->shift, lo, hi);
            oa[1] = requant_generic(a1, &rq[1], op->shift, lo, hi);
            ob[0] = requant_generic(b0, &rq[0], op->shift, lo, hi);
            ob[1] = requant_generic(b1, &rq[1], op->shift, lo, hi);
        }
    }
}

void cim_conv(const cim_blob_op_t *op, const uint8_t *image, const uint32_t *weights,
              const cim_rq_record_t *rq, uint8_t *ws)
{
    const conv_geom_t g = conv_geometry(op);
    const uint32_t *gather = (const uint32_t *)(ws + op->gather_offset);
    const uint8_t *padded = ws + op->padded_offset;
    uint32_t *x = (uint32_t *)(ws + op->im2col_offset);
    uint8_t *out = ws + op->out_offset;
    const uint32_t npix = op->out_h * op->out_w, s = op->stride;

    conv_prepare(op, &g, image, ws);
#if CIM_CONV_ASM
    cim_conv_job_t job;
    job.x = x;
    job.w = weights;
    job.rq = rq;
    job.channel_pairs = g.channel_pairs;
    job.d = op->shift;
#endif
    /* Pixels in pairs (p, p + 1); an odd last pixel is paired with itself and its twin's
     * results go to the pad pixel the workspace has for it. */
    for (uint32_t p = 0; p < npix; p += 2) {
        uint32_t ya = p / op->out_w, xa = p % op->out_w;
        uint32_t pb = p + 1u < npix ? p + 1u : p;
        uint32_t yb = pb / op->out_w, xb = pb % op->out_w;
        conv_im2col(gather, g.pairs, padded + 2u * (ya * s * g.wp + xa * s),
                    padded + 2u * (yb * s * g.wp + xb * s), x);
        uint8_t *out_a = out + p * op->out_cstride, *out_b = out_a + op->out_cstride;
#if CIM_CONV_ASM
        if (op->rq_mode == CIM_RQ_FAST) {
            job.out_a = out_a;
            job.out_b = out_b;
            cim_conv_channels_m4(&job);
            continue;
        }
#endif
        conv_channels_c(op, &g, x, weights, rq, out_a, out_b);
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
