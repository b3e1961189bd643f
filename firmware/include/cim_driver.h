/* Driver of the CIM accelerator (the AHB-Lite slave of gateware/, registers in cim_regs.h).
 *
 * C99, no dynamic allocation, every call returns a cim_status_t, every register access
 * goes through the HAL (cim_hal.h). A frame:
 *
 *     cim_init(&dev, &hal);                  identify the hardware
 *     cim_load_model(&dev, &model);          refuse a foreign configuration, write the
 *                                            program, weights and parameters
 *     cim_write_input(&dev, op, tensor);     the OFFLOAD op's input into the buffer
 *     cim_start(&dev);
 *     cim_wait(&dev, CIM_WAIT_POLL, n);      or CIM_WAIT_IRQ with cim_irq_handler()
 *     cim_read_output(&dev, op, tensor);
 *
 * A blob of the WHOLE partition (every layer on the accelerator) instead:
 *
 *     cim_write_image(&dev, slot, image);    the image into image-buffer slot 0 or 1
 *     cim_start_image(&dev, slot);
 *     cim_write_image(&dev, 1 - slot, next); optional: the next frame's, while this one runs
 *     cim_wait(&dev, CIM_WAIT_POLL, n);
 *     cim_read_result(&dev, logits, &cls);
 *
 * cim_net_run() (cim_net.h) does the whole network, MCU layers included. */
#ifndef CIM_DRIVER_H
#define CIM_DRIVER_H

#include <stdint.h>

#include "cim_format.h"
#include "cim_hal.h"
#include "cim_model.h"
#include "cim_status.h"

/* The hardware as its identification registers describe it (filled by cim_init()). */
typedef struct {
    uint32_t version;          /* VERSION register: major << 16 | minor */
    uint32_t rows, cols, w_bits, a_bits, adc_bits, acc_width;
    uint32_t macros, write_rows, double_buffer;
    uint32_t prog_words, weight_words, param_words, bank_words;
    uint32_t max_size, max_groups, max_pixels;
    uint32_t desc_words, param_record_words, act_slices;
    uint32_t image_channels, image_size, im2col_kernel, image_slot_rows;
    /* Window byte offsets from the base address (image_window 0: no image buffer). */
    uint32_t prog_window, param_window, act_window, weight_window, image_window;
    uint32_t logits_window;
    /* Calibration rows (CFG_CAL; cal_rows 0: none): rows per bit-column, 32-bit words per
     * row of one macro, a cell's bias in 2**-8 LSB; the CAL and CMP windows' offsets. */
    uint32_t cal_rows, cal_row_words, cal_step, cal_window, cmp_window;
} cim_hw_info_t;

typedef struct {
    cim_hal_t hal;
    cim_hw_info_t hw;
    const cim_model_t *model;      /* the model in the hardware's memories, or NULL */
    uint32_t hw_error;             /* STATUS.ERROR_CODE of the last frame that failed */
    uint32_t cycles;               /* CYCLES_TOTAL of the last frame */
    volatile uint32_t irq_events;  /* IRQ_STATUS bits cim_irq_handler() has taken */
} cim_dev_t;

typedef enum {
    CIM_WAIT_POLL = 0,   /* poll STATUS */
    CIM_WAIT_IRQ = 1     /* wait for cim_irq_handler() to see DONE or ERROR */
} cim_wait_t;

/* Read the identification registers into dev->hw. CIM_ERR_NO_DEVICE if MAGIC is wrong,
 * CIM_ERR_HW_VERSION if the register map's major version is not the driver's,
 * CIM_ERR_HW_CONFIG if the hardware is not the configuration the driver is built for
 * (CIM_CONFIG_<NAME>, cim_regs.h: the window offsets are that configuration's). */
cim_status_t cim_init(cim_dev_t *dev, const cim_hal_t *hal);

/* CIM_OK if `model` was compiled for this hardware, CIM_ERR_HW_CONFIG if any configuration
 * word of its header differs from the hardware's. Touches no register. */
cim_status_t cim_check_model(const cim_dev_t *dev, const cim_model_t *model);

/* cim_check_model(), then write the layer program, weight image and parameter image.
 * CIM_ERR_BUSY while a frame runs. A blob of the MCU partition (CIM_PARTITION_MCU) has
 * nothing for the accelerator: only cim_check_model(), no register is touched. */
cim_status_t cim_load_model(cim_dev_t *dev, const cim_model_t *model);

/* Write the OFFLOAD op's input, an HWC byte tensor laid out as op->in_*, into the
 * activation buffer. */
cim_status_t cim_write_input(cim_dev_t *dev, const cim_blob_op_t *op, const uint8_t *tensor);

/* Start the loaded program (clears the interrupt events first). */
cim_status_t cim_start(cim_dev_t *dev);

/* Wait until the frame ends: CIM_OK, CIM_ERR_HW (dev->hw_error holds the code) or
 * CIM_ERR_TIMEOUT after `timeout_polls` reads of STATUS (CIM_WAIT_POLL) or checks of the
 * event flags (CIM_WAIT_IRQ) found it still running. */
cim_status_t cim_wait(cim_dev_t *dev, cim_wait_t how, uint32_t timeout_polls);

/* Read the OFFLOAD op's output from the activation buffer into an HWC byte tensor laid out
 * as op->out_* (signed values as two's complement bytes). */
cim_status_t cim_read_output(cim_dev_t *dev, const cim_blob_op_t *op, uint8_t *tensor);

/* Enable (1) or disable (0) the DONE and ERROR interrupts. */
cim_status_t cim_irq_enable(cim_dev_t *dev, int enable);

/* The WHOLE partition (see above). cim_write_image: the blob's image (in_channels x
 * in_height x in_width bytes, CHW) into image-buffer slot `slot`; allowed while the
 * accelerator runs on the other slot. CIM_ERR_STATE without a WHOLE model loaded. */
cim_status_t cim_write_image(cim_dev_t *dev, uint32_t slot, const uint8_t *image);
/* Select slot `slot` (IMAGE_SLOT) and START. */
cim_status_t cim_start_image(cim_dev_t *dev, uint32_t slot);
/* The last frame's logits (the classes of the model, widened to 64 bits) and class;
 * CIM_ERR_STATE if the last program did not end with the classifier (RESULT.VALID). */
cim_status_t cim_read_result(cim_dev_t *dev, int64_t *logits, uint32_t *class_out);

/* ---- Calibration rows (hardware with CAPS.CALIBRATION; docs/offsets.md) ----
 * Every bit-column k = (macro * COLS + column) * W_BITS + weight_bit has cal_rows cells that
 * bias its ADC; cim_calibrate() runs seed 002's binary search on all of them at once: half
 * the cells set, then per step one CTRL.CAL_EVAL and the CMP window read back, clearing
 * (comparator high) or setting (low) cal_rows/4, cal_rows/8, ..., 1 more cells; then one
 * range check of the bit-columns whose decisions all went one way (at all cells clear or
 * all set: still the same way is out of range, and the column keeps that extreme). Cells
 * are written as a thermometer code, only the rows that change.
 *
 * `cells`: one uint16_t per bit-column (n >= MACROS * COLS * W_BITS), the driver's record
 * of the cells. `after_reset` 1: the cells are as reset leaves them (all clear) and `cells`
 * is initialized; 0: `cells` is what a previous cim_calibrate() on this device left. On
 * return CIM_CAL_ONES(cells[k]) cells of bit-column k are set and CIM_CAL_OUT_OF_RANGE
 * marks one whose offset the rows cannot cancel (`result->out_of_range` counts them; the
 * call still returns CIM_OK). CIM_ERR_HW_CONFIG without calibration rows,
 * CIM_ERR_WORKSPACE if n is too small, CIM_ERR_BUSY while a frame runs. */
#define CIM_CAL_ONES(cell) ((uint32_t)(cell) & 0x7Fu)
#define CIM_CAL_OUT_OF_RANGE 0x4000u

typedef struct {
    uint32_t evaluations;    /* CTRL.CAL_EVAL writes (each evaluates every bit-column) */
    uint32_t row_writes;     /* calibration rows written (one row of one macro each) */
    uint32_t words_written;  /* CAL window words written */
    uint32_t words_read;     /* CMP window words read */
    uint32_t out_of_range;   /* bit-columns beyond the calibration range */
} cim_cal_result_t;

cim_status_t cim_calibrate(cim_dev_t *dev, uint16_t *cells, uint32_t n, int after_reset,
                           cim_cal_result_t *result);

/* Call from the accelerator's interrupt handler: takes and clears IRQ_STATUS. */
void cim_irq_handler(cim_dev_t *dev);

#endif /* CIM_DRIVER_H */
