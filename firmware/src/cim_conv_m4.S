/* The conv's channel loop for one pixel pair, Cortex-M4 (ARMv7E-M, Thumb-2).
 *
 *     void cim_conv_channels_m4(const cim_conv_job_t *job);     (cim_kernels.h)
 *
 * For every output channel pair (c0, c1): four dot products (pixels A, B x channels c0, c1)
 * over the im2col vectors, then the CIM_RQ_FAST requantization of each, stored as bytes.
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
 * No loop counter is left for the taps, so the loop ends when r0 reaches the
 * CIM_WORKSPACE_ALIGN (4096) boundary the im2col vectors end on (compiler/firmware_blob.py
 * places them so): TST r0, #0xFF0 (r0 moves in 16-byte steps). The body is unrolled eight
 * times and entered part-way, so that the first pass does steps % 8 steps (all eight if
 * none) and no padding taps are computed: skip = (8 - steps % 8) % 8 = (x >> 4) % 8, since
 * steps = (4096 - x % 4096) / 16. */

    .syntax unified
    .thumb
    .text

/* cim_conv_job_t (cim_kernels.h) */
    .equ JOB_X, 0
    .equ JOB_W, 4
    .equ JOB_RQ, 8
    .equ JOB_OUT_A, 12
    .equ JOB_OUT_B, 16
    .equ JOB_PAIRS, 20
    .equ JOB_D, 24

/* Stack frame: the requantization block (loaded and stored with one LDM / STM), the
 * dot-product block (x start and four zeros: one LDM resets the pointer and the
 * accumulators) and the entry address. 44 bytes + 36 pushed = 80, 8-byte aligned. */
    .equ F_RQ, 0            /* r0: next cim_rq_record_t */
    .equ F_D, 4             /* r5: 8 - out_bits */
    .equ F_OUT_A, 8         /* r6 */
    .equ F_OUT_B, 12        /* r7 */
    .equ F_LEFT, 16         /* r8: channel pairs left */
    .equ F_X, 20            /* r0: im2col start, then four zero words */
    .equ F_ENTRY, 40        /* where the first pass enters the body (Thumb bit set) */
    .equ FRAME, 44

    .equ STEP_BYTES, 40     /* ten 32-bit instructions */

    .macro STEP
    ldmia.w r0!, {r2-r5}
    ldmia.w r1!, {r6-r9}
    smlad   r10, r2, r6, r10
    smlad   r11, r2, r7, r11
    smlad   r12, r3, r6, r12
    smlad   lr, r3, r7, lr
    smlad   r10, r4, r8, r10
    smlad   r11, r4, r9, r11
    smlad   r12, r5, r8, r12
    smlad   lr, r5, r9, lr
    .endm

    /* One output byte: usat8(high word of acc * mult + bias) >> d, with the bias in r3:r2
     * and d in r5; \out advances by one byte. */
    .macro REQUANT acc, mult, out
    smlal   r2, r3, \acc, \mult
    usat    r3, #8, r3
    lsr.w   r3, r3, r5
    strb    r3, [\out], #1
    .endm

    .global cim_conv_channels_m4
    .type cim_conv_channels_m4, %function
    .thumb_func
cim_conv_channels_m4:
    push    {r4-r11, lr}
    sub     sp, sp, #FRAME
    ldr     r2, [r0, #JOB_RQ]
    ldr     r3, [r0, #JOB_D]
    ldr     r4, [r0, #JOB_OUT_A]
    ldr     r5, [r0, #JOB_OUT_B]
    ldr     r6, [r0, #JOB_PAIRS]
    stmia   sp, {r2-r6}
    ldr     r1, [r0, #JOB_X]
    movs    r2, #0
    movs    r3, #0
    movs    r4, #0
    movs    r5, #0
    add     r6, sp, #F_X
    stmia   r6, {r1-r5}
    ubfx    r2, r1, #4, #3          /* steps to skip in the first pass */
    movs    r3, #STEP_BYTES
    adr.w   r4, .Lbody
    mla     r4, r2, r3, r4
    orr     r4, r4, #1
    str     r4, [sp, #F_ENTRY]
    ldr     r1, [r0, #JOB_W]

.Lpair:
    add     r0, sp, #F_X
    ldmia   r0, {r0, r10, r11, r12, lr}
    ldr     pc, [sp, #F_ENTRY]

    .balign 4
.Lbody:
    .rept 8
    STEP
    .endr
    tst     r0, #0xFF0
    bne     .Lbody

    ldmia   sp, {r0, r5, r6, r7, r8}
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
    subs    r8, r8, #1
    stmia   sp, {r0, r5, r6, r7, r8}
    bne     .Lpair

    add     sp, sp, #FRAME
    pop     {r4-r11, pc}
    .size cim_conv_channels_m4, . - cim_conv_channels_m4
