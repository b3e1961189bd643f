/* The conv's channel loop for one pixel pair, Cortex-M4 (ARMv7E-M, Thumb-2).
 *
 *     void cim_conv_channels_m4(const cim_conv_job_t *job);     (cim_kernels.h)
 *
 * For every output channel pair (c0, c1): four dot products (pixels A, B x channels c0, c1)
 * over the im2col vectors, then the CIM_RQ_FAST requantization of each, stored as bytes.
 * cim_conv_channels_m4 takes the weights as signed 16-bit pairs (w_bytes 2), and
 * cim_conv_channels_q7_m4 as signed bytes (w_bytes 1), which two SXTB16 per weight word
 * widen to the two 16-bit pairs of a step, as CMSIS-NN does (four instructions more per
 * step, half the flash). The cim_conv_dots_* variants store the four accumulators of each
 * channel pair (int32 A.c0, A.c1, B.c0, B.c1 at job->out_a) instead, for the C code to
 * requantize: RQ_GENERIC, signed outputs, residuals.
 * The C loop conv_channels_c() in cim_kernels.c is the reference; both give the golden
 * model's integers.
 *
 * Why assembly: the step below is ten instructions for sixteen multiply-accumulates (two
 * four-word loads, eight SMLADs) and needs all fourteen usable registers; GCC 12 splits the
 * loads and adds moves (about one instruction per MAC). With the channel pair's overhead
 * the loop costs about 0.84 instructions per MAC on the shipped ResNet14's 7x7 conv1.
 *
 * Registers in the dot product: r0 im2col pointer, r1 weight pointer (runs on across
 * channel pairs), r2-r5 im2col words (A pair p, B pair p, A pair p+1, B pair p+1), r6-r9
 * weight words (c0, c1, c0, c1), r10 A.c0, r11 A.c1, r12 B.c0, lr B.c1.
 *
 * No loop counter is left for the taps, so the loop stops when r0 reaches a
 * CIM_WORKSPACE_ALIGN (4096) boundary: TST r0, #0xFF0 (r0 moves in 16-byte steps); the
 * im2col vectors end on one (compiler/firmware_blob.py places them so). With 8-bit weights
 * they may be longer than 4096 bytes, so those loops compare r0 with the end at each
 * boundary (one spilled register, five instructions per 256 steps); 16-bit weights take at
 * most 256 steps and skip the test. The body is unrolled eight times and entered part-way, so
 * that the first pass does steps % 8 steps (all eight if none) and no padding taps are
 * computed: skip = (8 - steps % 8) % 8 = (x >> 4) % 8, since the vectors end on a multiple
 * of 4096. */

/* cim_conv_job_t (cim_kernels.h) */
    .equ JOB_X, 0
    .equ JOB_W, 4
    .equ JOB_RQ, 8
    .equ JOB_OUT_A, 12
    .equ JOB_OUT_B, 16
    .equ JOB_PAIRS, 20
    .equ JOB_D, 24
    .equ JOB_X_END, 28

/* Stack frame: the requantization block (loaded and stored with one LDM / STM), the
 * dot-product block (x start and four zeros: one LDM resets the pointer and the
 * accumulators), the entry address, the end of the im2col vectors and a spill slot.
 * 52 bytes + 36 pushed = 88, 8-byte aligned. */
    .equ F_RQ, 0            /* r0: next cim_rq_record_t */
    .equ F_D, 4             /* r5: 8 - out_bits */
    .equ F_OUT_A, 8         /* r6 */
    .equ F_OUT_B, 12        /* r7 */
    .equ F_LEFT, 16         /* r8: channel pairs left */
    .equ F_X, 20            /* r0: im2col start, then four zero words */
    .equ F_ENTRY, 40        /* where the first pass enters the body (Thumb bit set) */
    .equ F_END, 44          /* x_end */
    .equ F_TMP, 48          /* lr, while r0 is compared with x_end */
    .equ FRAME, 52

    .macro MACS
    smlad   r10, r2, r6, r10
    smlad   r11, r2, r7, r11
    smlad   r12, r3, r6, r12
    smlad   lr, r3, r7, lr
    smlad   r10, r4, r8, r10
    smlad   r11, r4, r9, r11
    smlad   r12, r5, r8, r12
    smlad   lr, r5, r9, lr
    .endm

    /* 16-bit weights: four words (c0, c1 of pair p, c0, c1 of pair p + 1); ten 32-bit
     * instructions. */
    .macro STEP16
    ldmia.w r0!, {r2-r5}
    ldmia.w r1!, {r6-r9}
    MACS
    .endm

    /* 8-bit weights: one word per channel, bytes taps 0, 2, 1, 3 of the step; fourteen
     * 32-bit instructions. */
    .macro STEP8
    ldmia.w r0!, {r2-r5}
    ldmia.w r1!, {r6, r7}
    sxtb16  r8, r6, ror #8
    sxtb16  r6, r6
    sxtb16  r9, r7, ror #8
    sxtb16  r7, r7
    MACS
    .endm

    /* One output byte: usat8(high word of acc * mult + bias) >> d, with the bias in r3:r2
     * and d in r5; \out advances by one byte. */
    .macro REQUANT acc, mult, out
    smlal   r2, r3, \acc, \mult
    usat    r3, #8, r3
    lsr.w   r3, r3, r5
    strb    r3, [\out], #1
    .endm

    .macro CONV_CHANNELS name, step, step_bytes, dots, multi
    .global \name
    .type \name, %function
    .thumb_func
\name:
    push    {r4-r11, lr}
    sub     sp, sp, #FRAME
    ldr     r2, [r0, #JOB_RQ]
    ldr     r3, [r0, #JOB_D]
    ldr     r4, [r0, #JOB_OUT_A]
    ldr     r5, [r0, #JOB_OUT_B]
    ldr     r6, [r0, #JOB_PAIRS]
    stmia   sp, {r2-r6}
    ldr     r2, [r0, #JOB_X_END]
    str     r2, [sp, #F_END]
    ldr     r1, [r0, #JOB_X]
    movs    r2, #0
    movs    r3, #0
    movs    r4, #0
    movs    r5, #0
    add     r6, sp, #F_X
    stmia   r6, {r1-r5}
    ubfx    r2, r1, #4, #3          /* steps to skip in the first pass */
    movs    r3, #\step_bytes
    adr.w   r4, \name\()_body
    mla     r4, r2, r3, r4
    orr     r4, r4, #1
    str     r4, [sp, #F_ENTRY]
    ldr     r1, [r0, #JOB_W]

\name\()_pair:
    add     r0, sp, #F_X
    ldmia   r0, {r0, r10, r11, r12, lr}
    ldr     pc, [sp, #F_ENTRY]

    .balign 4
\name\()_body:
    .rept 8
    \step
    .endr
    tst     r0, #0xFF0
    bne     \name\()_body
    .if \multi
    str     lr, [sp, #F_TMP]        /* a 4096-byte boundary: the end of the vectors? */
    ldr     lr, [sp, #F_END]
    cmp     r0, lr
    ldr     lr, [sp, #F_TMP]
    bne     \name\()_body
    .endif

    ldmia   sp, {r0, r5, r6, r7, r8}
    .if \dots
    stmia   r6!, {r10, r11, r12, lr}    /* the accumulators A.c0, A.c1, B.c0, B.c1 */
    .else
    ldrd    r2, r3, [r0]            /* channel c0 */
    ldr     r4, [r0, #8]
    REQUANT r10, r4, r6
    ldrd    r2, r3, [r0]
    REQUANT r12, r4, r7
    ldrd    r2, r3, [r0, #16]       /* channel c1 */
    ldr     r4, [r0, #24]
    REQUANT r11, r4, r6
    ldrd    r2, r3, [r0, #16]
    REQUANT lr, r4, r7
    adds    r0, r0, #32
    .endif
    subs    r8, r8, #1
    stmia   sp, {r0, r5, r6, r7, r8}
    bne     \name\()_pair

    add     sp, sp, #FRAME
    pop     {r4-r11, pc}
    .size \name, . - \name
    .endm

    .syntax unified
    .thumb
    .text

    /* 16-bit weights: at most CIM_CONV16_MAX_STEPS steps, the vectors within one 4096-byte
     * block (the checkers hold them to it), so no end test. */
    CONV_CHANNELS cim_conv_channels_m4, STEP16, 40, 0, 0
    CONV_CHANNELS cim_conv_channels_q7_m4, STEP8, 56, 0, 1
    CONV_CHANNELS cim_conv_dots_m4, STEP16, 40, 1, 0
    CONV_CHANNELS cim_conv_dots_q7_m4, STEP8, 56, 1, 1
