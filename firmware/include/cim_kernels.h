/* The MCU's layers: convolution (with its residual), max pooling, global average pooling
 * and the classifier, in integer arithmetic identical to the golden model (model/golden.py),
 * bit for bit.
 *
 * Each kernel takes its op record (shapes, workspace offsets: cim_format.h, documented
 * in compiler/firmware_blob.py) and the workspace; cim_model_open() has checked that every
 * offset and size in the record is consistent. */
#ifndef CIM_KERNELS_H
#define CIM_KERNELS_H

#include <stdint.h>

#include "cim_format.h"

/* CONV: zero padding, dot products of 16-bit pairs, then the requantization rule (with
 * the residual at op->res_offset times res_mult before the shift, when op->residual) and
 * its clamp; writes the HWC output at op->out_offset. `in`: the image (CHW bytes) when
 * op->in_cstride is 0, else the HWC input (ws + op->in_offset). weights: 4-byte aligned
 * (op->w_bytes 2: 16-bit pairs, 1: bytes), rq: 8-byte aligned, ws: CIM_WORKSPACE_ALIGN
 * aligned (the assembly loop ends on the alignment boundary). */
void cim_conv(const cim_blob_op_t *op, const uint8_t *in, const uint32_t *weights,
              const cim_rq_record_t *rq, uint8_t *ws);

/* MAXPOOL on unsigned HWC bytes (padding never wins: the inputs are >= 0). */
void cim_maxpool(const cim_blob_op_t *op, uint8_t *ws);

/* AVGPOOL: the sum over H x W of every channel, as int32 (the 1 / (H * W) is the FC's). */
void cim_avgpool(const cim_blob_op_t *op, uint8_t *ws);

/* FC: int64 logits = x @ weight.T + bias; x is the AVGPOOL's int32 output. */
void cim_fc(const cim_blob_op_t *op, const int8_t *weights, const int64_t *bias, uint8_t *ws);

/* Index of the first largest value (numpy.argmax). n >= 1. */
uint32_t cim_argmax64(const int64_t *v, uint32_t n);

/* The conv's channel loop for one pixel pair, in Cortex-M4 assembly (cim_conv_m4.S), for
 * 16-bit (cim_conv_channels_m4) and 8-bit weights (cim_conv_channels_q7_m4). Used for
 * CIM_RQ_FAST convs without a residual when CIM_HAVE_DSP (the others: cim_conv_dots_*, and
 * the requantization in C); the C loops in cim_kernels.c are the reference. */
typedef struct {
    const uint32_t *x;        /* im2col vectors of the two pixels; x + 4 * steps is aligned
                                 to CIM_WORKSPACE_ALIGN */
    const uint32_t *w;        /* the op's weights */
    const cim_rq_record_t *rq;
    uint8_t *out_a;           /* channel 0 of pixel A's output */
    uint8_t *out_b;           /* channel 0 of pixel B's output */
    uint32_t channel_pairs;
    uint32_t d;               /* final shift, 8 - out_bits */
    const uint32_t *x_end;    /* x + 4 * steps, on a CIM_WORKSPACE_ALIGN boundary */
} cim_conv_job_t;

void cim_conv_channels_m4(const cim_conv_job_t *job);
void cim_conv_channels_q7_m4(const cim_conv_job_t *job);

/* The dot products alone: for every channel pair, four int32 accumulators (pixel A channel
 * 0, A 1, B 0, B 1) stored from out_a on (4-byte aligned; rq, out_b and d unused). */
void cim_conv_dots_m4(const cim_conv_job_t *job);
void cim_conv_dots_q7_m4(const cim_conv_job_t *job);

#endif /* CIM_KERNELS_H */
