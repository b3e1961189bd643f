/* The tiny hardware-abstraction layer: the driver's only way to the accelerator's registers.
 *
 * Offsets are bytes from the accelerator's base address (cim_regs.h). Two backends:
 *
 *  - memory-mapped (the default, for the MCU): cim_hal_t holds the base address and every
 *    access is one volatile 32-bit load or store;
 *  - host (compile with -DCIM_HAL_HOST=1, for tests): cim_hal_t holds callbacks, so a test
 *    can model the registers and windows, inject errors and count accesses.
 *
 * Block transfers exist so a host backend can take a whole window in one call; on the MCU
 * they are plain word loops (a DMA engine would go here). */
#ifndef CIM_HAL_H
#define CIM_HAL_H

#include <stdint.h>

#ifndef CIM_HAL_HOST
#define CIM_HAL_HOST 0
#endif

#if CIM_HAL_HOST

typedef struct {
    void *ctx;
    uint32_t (*read32)(void *ctx, uint32_t offset);
    void (*write32)(void *ctx, uint32_t offset, uint32_t value);
    /* Optional (NULL: word by word through read32 / write32). */
    void (*read_block)(void *ctx, uint32_t offset, uint32_t *dst, uint32_t words);
    void (*write_block)(void *ctx, uint32_t offset, const uint32_t *src, uint32_t words);
} cim_hal_t;

static inline uint32_t cim_hal_read32(const cim_hal_t *hal, uint32_t offset)
{
    return hal->read32(hal->ctx, offset);
}

static inline void cim_hal_write32(const cim_hal_t *hal, uint32_t offset, uint32_t value)
{
    hal->write32(hal->ctx, offset, value);
}

static inline void cim_hal_read_block(const cim_hal_t *hal, uint32_t offset, uint32_t *dst,
                                      uint32_t words)
{
    if (hal->read_block) {
        hal->read_block(hal->ctx, offset, dst, words);
        return;
    }
    for (uint32_t i = 0; i < words; i++)
        dst[i] = hal->read32(hal->ctx, offset + 4u * i);
}

static inline void cim_hal_write_block(const cim_hal_t *hal, uint32_t offset,
                                       const uint32_t *src, uint32_t words)
{
    if (hal->write_block) {
        hal->write_block(hal->ctx, offset, src, words);
        return;
    }
    for (uint32_t i = 0; i < words; i++)
        hal->write32(hal->ctx, offset + 4u * i, src[i]);
}

#else /* memory-mapped */

typedef struct {
    uintptr_t base;
} cim_hal_t;

static inline uint32_t cim_hal_read32(const cim_hal_t *hal, uint32_t offset)
{
    return *(volatile const uint32_t *)(hal->base + offset);
}

static inline void cim_hal_write32(const cim_hal_t *hal, uint32_t offset, uint32_t value)
{
    *(volatile uint32_t *)(hal->base + offset) = value;
}

static inline void cim_hal_read_block(const cim_hal_t *hal, uint32_t offset, uint32_t *dst,
                                      uint32_t words)
{
    volatile const uint32_t *src = (volatile const uint32_t *)(hal->base + offset);
    for (uint32_t i = 0; i < words; i++)
        dst[i] = src[i];
}

static inline void cim_hal_write_block(const cim_hal_t *hal, uint32_t offset,
                                       const uint32_t *src, uint32_t words)
{
    volatile uint32_t *dst = (volatile uint32_t *)(hal->base + offset);
#if defined(__thumb2__)
    /* Eight words per LDMIA/STMIA pair: 1 + 8 cycles each on a Cortex-M4 against about six
     * per word for the loop below, and the stores leave back to back, as an AHB burst. */
    for (; words >= 8u; words -= 8u)
        __asm__ volatile("ldmia %0!, {r4, r5, r6, r8, r9, r10, r11, r12}\n\t"
                         "stmia %1!, {r4, r5, r6, r8, r9, r10, r11, r12}"
                         : "+r"(src), "+r"(dst)
                         :
                         : "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "memory");
#endif
    for (uint32_t i = 0; i < words; i++)
        dst[i] = src[i];
}

#endif

#endif /* CIM_HAL_H */
