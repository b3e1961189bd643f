/* Driver of the CIM accelerator (see cim_driver.h; registers: cim_regs.h, generated from
 * gateware/regmap.py). */
#include "cim_driver.h"

#include <stddef.h>

#include "cim_regs.h"

#define REG(name) ((uint32_t)offsetof(CIM_TypeDef, name))
#define FIELD(value, reg, field) \
    (((value) & CIM_##reg##_##field##_Msk) >> CIM_##reg##_##field##_Pos)

static uint32_t rd(const cim_dev_t *dev, uint32_t offset)
{
    return cim_hal_read32(&dev->hal, offset);
}

static void wr(const cim_dev_t *dev, uint32_t offset, uint32_t value)
{
    cim_hal_write32(&dev->hal, offset, value);
}

/* The identification registers of the configuration this firmware is built for
 * (CIM_CONFIG_<NAME>, cim_regs.h): cim_init() refuses hardware that reads otherwise. */
static const struct {
    uint32_t offset, value;
} identity[] = {
    {REG(CFG_ARRAY), CIM_CFG_ARRAY_RESET},
    {REG(CFG_BITS), CIM_CFG_BITS_RESET},
    {REG(CFG_MACROS), CIM_CFG_MACROS_RESET},
    {REG(CFG_PROG_WORDS), CIM_CFG_PROG_WORDS_RESET},
    {REG(CFG_WEIGHT_WORDS), CIM_CFG_WEIGHT_WORDS_RESET},
    {REG(CFG_PARAM_WORDS), CIM_CFG_PARAM_WORDS_RESET},
    {REG(CFG_BANK_WORDS), CIM_CFG_BANK_WORDS_RESET},
    {REG(CFG_LIMITS), CIM_CFG_LIMITS_RESET},
    {REG(CFG_MAX_PIXELS), CIM_CFG_MAX_PIXELS_RESET},
    {REG(CFG_LAYOUT), CIM_CFG_LAYOUT_RESET},
    {REG(CAPS), CIM_CAPS_RESET},
    {REG(CFG_IMAGE), CIM_CFG_IMAGE_RESET},
    {REG(CFG_CAL), CIM_CFG_CAL_RESET},
};

cim_status_t cim_init(cim_dev_t *dev, const cim_hal_t *hal)
{
    if (!dev || !hal)
        return CIM_ERR_ARG;
    dev->hal = *hal;
    dev->model = NULL;
    dev->hw_error = 0;
    dev->cycles = 0;
    dev->irq_events = 0;
    if (rd(dev, REG(MAGIC)) != CIM_MAGIC)
        return CIM_ERR_NO_DEVICE;
    cim_hw_info_t *hw = &dev->hw;
    hw->version = rd(dev, REG(VERSION));
    if (FIELD(hw->version, VERSION, MAJOR) != CIM_REGMAP_VERSION_MAJOR)
        return CIM_ERR_HW_VERSION;
    for (uint32_t i = 0; i < sizeof identity / sizeof identity[0]; i++)
        if (rd(dev, identity[i].offset) != identity[i].value)
            return CIM_ERR_HW_CONFIG;
    uint32_t v = rd(dev, REG(CFG_ARRAY));
    hw->rows = FIELD(v, CFG_ARRAY, ROWS);
    hw->cols = FIELD(v, CFG_ARRAY, COLS);
    v = rd(dev, REG(CFG_BITS));
    hw->w_bits = FIELD(v, CFG_BITS, W_BITS);
    hw->a_bits = FIELD(v, CFG_BITS, A_BITS);
    hw->adc_bits = FIELD(v, CFG_BITS, ADC_BITS);
    hw->acc_width = FIELD(v, CFG_BITS, ACC_WIDTH);
    v = rd(dev, REG(CFG_MACROS));
    hw->macros = FIELD(v, CFG_MACROS, MACROS);
    hw->write_rows = FIELD(v, CFG_MACROS, WRITE_ROWS);
    hw->prog_words = rd(dev, REG(CFG_PROG_WORDS));
    hw->weight_words = rd(dev, REG(CFG_WEIGHT_WORDS));
    hw->param_words = rd(dev, REG(CFG_PARAM_WORDS));
    hw->bank_words = rd(dev, REG(CFG_BANK_WORDS));
    v = rd(dev, REG(CFG_LIMITS));
    hw->max_size = FIELD(v, CFG_LIMITS, MAX_SIZE);
    hw->max_groups = FIELD(v, CFG_LIMITS, MAX_GROUPS);
    hw->max_pixels = rd(dev, REG(CFG_MAX_PIXELS));
    v = rd(dev, REG(CFG_LAYOUT));
    hw->desc_words = FIELD(v, CFG_LAYOUT, DESC_WORDS);
    hw->param_record_words = FIELD(v, CFG_LAYOUT, PARAM_WORDS);
    hw->act_slices = FIELD(v, CFG_LAYOUT, ACT_SLICES);
    hw->double_buffer = FIELD(rd(dev, REG(CAPS)), CAPS, DOUBLE_BUFFER);
    hw->prog_window = CIM_WIN_PROG_OFFSET;
    hw->param_window = CIM_WIN_PARAM_OFFSET;
    hw->act_window = CIM_WIN_ACT_OFFSET;
    hw->weight_window = CIM_WIN_WEIGHT_OFFSET;
    v = rd(dev, REG(CFG_IMAGE));
    hw->image_channels = FIELD(v, CFG_IMAGE, CHANNELS);
    hw->image_size = FIELD(v, CFG_IMAGE, SIZE);
    hw->im2col_kernel = FIELD(v, CFG_IMAGE, KERNEL);
    hw->image_slot_rows = 1;
    while (hw->image_slot_rows < hw->image_channels * hw->image_size)
        hw->image_slot_rows <<= 1;
#ifdef CIM_WIN_IMAGE_OFFSET
    hw->image_window = CIM_WIN_IMAGE_OFFSET;
#endif
    hw->logits_window = CIM_WIN_LOGITS_OFFSET;
    v = rd(dev, REG(CFG_CAL));
    hw->cal_rows = FIELD(v, CFG_CAL, ROWS);
    hw->cal_row_words = FIELD(v, CFG_CAL, ROW_WORDS);
    hw->cal_step = FIELD(v, CFG_CAL, STEP);
#ifdef CIM_WIN_CAL_OFFSET
    hw->cal_window = CIM_WIN_CAL_OFFSET;
    hw->cmp_window = CIM_WIN_CMP_OFFSET;
#endif
    return CIM_OK;
}

cim_status_t cim_check_model(const cim_dev_t *dev, const cim_model_t *model)
{
    if (!dev || !model || !model->base)
        return CIM_ERR_ARG;
    const cim_blob_header_t *h = model->hdr;
    const cim_hw_info_t *hw = &dev->hw;
    if (h->hw_rows != hw->rows || h->hw_cols != hw->cols || h->hw_w_bits != hw->w_bits
        || h->hw_a_bits != hw->a_bits || h->hw_adc_bits != hw->adc_bits
        || h->hw_acc_width != hw->acc_width || h->hw_macros != hw->macros
        || h->hw_write_rows != hw->write_rows || h->hw_double_buffer != hw->double_buffer
        || h->hw_prog_words != hw->prog_words || h->hw_weight_words != hw->weight_words
        || h->hw_param_words != hw->param_words || h->hw_bank_words != hw->bank_words
        || h->hw_max_size != hw->max_size || h->hw_max_groups != hw->max_groups
        || h->hw_max_pixels != hw->max_pixels || h->hw_desc_words != hw->desc_words
        || h->hw_param_record_words != hw->param_record_words
        || h->hw_image_channels != hw->image_channels || h->hw_image_size != hw->image_size
        || h->hw_im2col_kernel != hw->im2col_kernel)
        return CIM_ERR_HW_CONFIG;
    return CIM_OK;
}

static int busy(const cim_dev_t *dev)
{
    return (rd(dev, REG(STATUS)) & CIM_STATUS_BUSY_Msk) != 0;
}

cim_status_t cim_load_model(cim_dev_t *dev, const cim_model_t *model)
{
    cim_status_t st = cim_check_model(dev, model);
    if (st != CIM_OK || model->hdr->partition == CIM_PARTITION_MCU)
        return st;      /* an MCU blob: every layer runs on the MCU, nothing to write */
    if (busy(dev))
        return CIM_ERR_BUSY;
    const cim_blob_header_t *h = model->hdr;
    dev->model = NULL;
    cim_hal_write_block(&dev->hal, dev->hw.prog_window,
                        (const uint32_t *)cim_model_at(model, h->program_offset),
                        h->program_words);
    cim_hal_write_block(&dev->hal, dev->hw.weight_window,
                        (const uint32_t *)cim_model_at(model, h->weights_offset),
                        h->weight_words);
    cim_hal_write_block(&dev->hal, dev->hw.param_window,
                        (const uint32_t *)cim_model_at(model, h->params_offset),
                        h->param_words);
    dev->model = model;
    return CIM_OK;
}

/* ------------------------------------------------------------------------------ tensors
 *
 * Activation word w of the buffer (one pixel's channel group: `rows` lanes of a_bits,
 * channel g * rows + l in lane l) is act_slices 32-bit bus words from byte
 * act_window + 4 * w * act_slices, lane l in bus word l / (32 / a_bits). A value of more
 * than a_bits bits takes `slices` consecutive activation words, slice s holding bits
 * [s * a_bits, (s + 1) * a_bits) of its two's complement (compiler/compile.py). */

typedef struct {
    uint32_t groups, slices, lanes32, mask;
} act_layout_t;

static act_layout_t act_layout(const cim_hw_info_t *hw, uint32_t channels, uint32_t bits)
{
    act_layout_t a;
    a.groups = (channels + hw->rows - 1u) / hw->rows;
    a.slices = (bits + hw->a_bits - 1u) / hw->a_bits;
    a.lanes32 = 32u / hw->a_bits;
    a.mask = hw->a_bits == 32u ? 0xFFFFFFFFu : (1u << hw->a_bits) - 1u;
    return a;
}

/* The common case of 4-bit activations (one slice, eight lanes per bus word, rows a multiple
 * of 8) moves whole bus words with a few shifts and masks instead of a loop per value: the
 * same words, in the same order, as the general loops below. */
static int nibble_words(const cim_hw_info_t *hw, const act_layout_t *a)
{
    return hw->a_bits == 4u && a->slices == 1u && hw->rows % 8u == 0u;
}

/* v[0..7] (low 4 bits each) -> one bus word, value l at bits 4l. */
static uint32_t pack8x4(const uint8_t *v)
{
    uint32_t r = 0;
    for (uint32_t h = 0; h < 2u; h++, v += 4) {
        uint32_t t = ((uint32_t)v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16
                      | (uint32_t)v[3] << 24) & 0x0F0F0F0Fu;
        t = (t | t >> 4) & 0x00FF00FFu;              /* v0|v1<<4 in byte 0, v2|v3<<4 in 2 */
        r |= ((t | t >> 8) & 0xFFFFu) << (16u * h);
    }
    return r;
}

/* One bus word -> v[0..7], value l from bits 4l (unsigned). */
static void unpack8x4(uint32_t bus, uint8_t *v)
{
    for (uint32_t h = 0; h < 2u; h++, v += 4, bus >>= 16) {
        uint32_t t = bus & 0xFFFFu;
        t = (t | t << 8) & 0x00FF00FFu;
        t = (t | t << 4) & 0x0F0F0F0Fu;              /* one value per byte */
        v[0] = (uint8_t)t;
        v[1] = (uint8_t)(t >> 8);
        v[2] = (uint8_t)(t >> 16);
        v[3] = (uint8_t)(t >> 24);
    }
}

static cim_status_t tensor_ready(const cim_dev_t *dev, const cim_blob_op_t *op,
                                 const uint8_t *tensor)
{
    if (!dev || !op || !tensor || op->kind != CIM_OP_OFFLOAD)
        return CIM_ERR_ARG;
    if (!dev->model)
        return CIM_ERR_STATE;
    return busy(dev) ? CIM_ERR_BUSY : CIM_OK;
}

cim_status_t cim_write_input(cim_dev_t *dev, const cim_blob_op_t *op, const uint8_t *tensor)
{
    cim_status_t st = tensor_ready(dev, op, tensor);
    if (st != CIM_OK)
        return st;
    const cim_hw_info_t *hw = &dev->hw;
    const act_layout_t a = act_layout(hw, op->in_c, op->act_in_bits);
    const int nibbles = nibble_words(hw, &a);
    uint32_t word = op->act_in_base;
    for (uint32_t p = 0; p < op->in_h * op->in_w; p++) {
        const uint8_t *px = tensor + p * op->in_cstride;
        for (uint32_t g = 0; g < a.groups; g++)
            for (uint32_t s = 0; s < a.slices; s++, word++)
                for (uint32_t j = 0; j < hw->act_slices; j++) {
                    uint32_t bus = 0, c0 = g * hw->rows + j * a.lanes32;
                    if (nibbles && c0 + 8u <= op->in_c) {
                        wr(dev, hw->act_window + 4u * (word * hw->act_slices + j),
                           pack8x4(px + c0));
                        continue;
                    }
                    for (uint32_t l = 0; l < a.lanes32; l++) {
                        uint32_t lane = j * a.lanes32 + l, c = g * hw->rows + lane;
                        if (lane < hw->rows && c < op->in_c)
                            bus |= ((uint32_t)(px[c] >> (s * hw->a_bits)) & a.mask)
                                   << (l * hw->a_bits);
                    }
                    wr(dev, hw->act_window + 4u * (word * hw->act_slices + j), bus);
                }
    }
    return CIM_OK;
}

cim_status_t cim_read_output(cim_dev_t *dev, const cim_blob_op_t *op, uint8_t *tensor)
{
    cim_status_t st = tensor_ready(dev, op, tensor);
    if (st != CIM_OK)
        return st;
    const cim_hw_info_t *hw = &dev->hw;
    const act_layout_t a = act_layout(hw, op->out_c, op->act_out_bits);
    const uint32_t width = a.slices * hw->a_bits;      /* of the stored two's complement */
    const int nibbles = nibble_words(hw, &a) && !op->out_signed;
    uint32_t word = op->act_out_base;
    for (uint32_t p = 0; p < op->out_h * op->out_w; p++) {
        uint8_t *px = tensor + p * op->out_cstride;
        for (uint32_t g = 0; g < a.groups; g++, word += a.slices)
            for (uint32_t j = 0; j < hw->act_slices; j++) {
                uint32_t c0 = g * hw->rows + j * a.lanes32;
                if (nibbles && c0 + 8u <= op->out_c) {
                    unpack8x4(rd(dev, hw->act_window + 4u * (word * hw->act_slices + j)),
                              px + c0);
                    continue;
                }
                uint32_t bus[8];       /* one bus word per value slice (slices <= 8) */
                for (uint32_t s = 0; s < a.slices; s++)
                    bus[s] = rd(dev, hw->act_window
                                         + 4u * ((word + s) * hw->act_slices + j));
                for (uint32_t l = 0; l < a.lanes32; l++) {
                    uint32_t lane = j * a.lanes32 + l, c = g * hw->rows + lane;
                    if (lane >= hw->rows || c >= op->out_c)
                        continue;
                    uint32_t v = 0;
                    for (uint32_t s = 0; s < a.slices; s++)
                        v |= ((bus[s] >> (l * hw->a_bits)) & a.mask) << (s * hw->a_bits);
                    if (op->out_signed && width < 32u && (v >> (width - 1u)) & 1u)
                        v |= ~0u << width;      /* sign-extend */
                    px[c] = (uint8_t)v;
                }
            }
    }
    return CIM_OK;
}

/* ------------------------------------------------------------------------------ image
 *
 * The WHOLE partition's frames: the image goes into a slot of the image buffer, START runs
 * the whole network on the slot IMAGE_SLOT names, the class and the logits come back from
 * registers. Channel c, row y of slot s is at byte ((s * slot_rows + c * size + y) * size)
 * of the IMAGE window (slot_rows: channels * size rounded up to a power of two); a slot may
 * be written while the accelerator computes on the other one. */

cim_status_t cim_write_image(cim_dev_t *dev, uint32_t slot, const uint8_t *image)
{
    if (!dev || !image || slot > 1u)
        return CIM_ERR_ARG;
    if (!dev->model)
        return CIM_ERR_STATE;
    const cim_blob_header_t *h = dev->model->hdr;
    const cim_hw_info_t *hw = &dev->hw;
    if (h->partition != CIM_PARTITION_WHOLE)
        return CIM_ERR_STATE;
    const uint32_t size = hw->image_size, w = h->in_width, full = w / 4u;
    uint32_t row = slot * hw->image_slot_rows;
    if (w == size && (uintptr_t)image % 4u == 0) {
        /* Whole rows back to back: each channel is one block of the window. */
        for (uint32_t c = 0; c < h->in_channels; c++, row += size, image += size * h->in_height)
            cim_hal_write_block(&dev->hal, hw->image_window + row * size,
                                (const uint32_t *)(const void *)image, size * h->in_height / 4u);
        return CIM_OK;
    }
    for (uint32_t c = 0; c < h->in_channels; c++, row += size) {
        for (uint32_t y = 0; y < h->in_height; y++, image += w) {
            uint32_t at = hw->image_window + (row + y) * size;
            for (uint32_t q = 0; q < full; q++)
                wr(dev, at + 4u * q, (uint32_t)image[4u * q] | (uint32_t)image[4u * q + 1u] << 8
                                         | (uint32_t)image[4u * q + 2u] << 16
                                         | (uint32_t)image[4u * q + 3u] << 24);
            if (w % 4u) {
                uint32_t last = 0;
                for (uint32_t b = 0; b < w % 4u; b++)
                    last |= (uint32_t)image[4u * full + b] << (8u * b);
                wr(dev, at + 4u * full, last);
            }
        }
    }
    return CIM_OK;
}

cim_status_t cim_start_image(cim_dev_t *dev, uint32_t slot)
{
    if (!dev || slot > 1u)
        return CIM_ERR_ARG;
    if (!dev->model)
        return CIM_ERR_STATE;
    if (busy(dev))
        return CIM_ERR_BUSY;
    wr(dev, REG(IMAGE_SLOT), slot << CIM_IMAGE_SLOT_SLOT_Pos);
    return cim_start(dev);
}

cim_status_t cim_read_result(cim_dev_t *dev, int64_t *logits, uint32_t *class_out)
{
    if (!dev || !logits || !class_out)
        return CIM_ERR_ARG;
    if (!dev->model)
        return CIM_ERR_STATE;
    if (busy(dev))
        return CIM_ERR_BUSY;
    uint32_t r = rd(dev, REG(RESULT));
    if (!(r & CIM_RESULT_VALID_Msk))
        return CIM_ERR_STATE;
    *class_out = FIELD(r, RESULT, CLASS);
    for (uint32_t i = 0; i < dev->model->hdr->classes; i++)
        logits[i] = (int32_t)rd(dev, dev->hw.logits_window + 4u * i);
    return CIM_OK;
}

/* ------------------------------------------------------------------------------ frames */

#define IRQ_EVENTS (CIM_IRQ_STATUS_DONE_Msk | CIM_IRQ_STATUS_ERROR_Msk)

cim_status_t cim_start(cim_dev_t *dev)
{
    if (!dev)
        return CIM_ERR_ARG;
    if (!dev->model)
        return CIM_ERR_STATE;
    if (busy(dev))
        return CIM_ERR_BUSY;
    dev->irq_events = 0;
    dev->hw_error = 0;
    wr(dev, REG(IRQ_STATUS), IRQ_EVENTS);
    wr(dev, REG(CTRL), CIM_CTRL_START_Msk);
    return CIM_OK;
}

cim_status_t cim_wait(cim_dev_t *dev, cim_wait_t how, uint32_t timeout_polls)
{
    if (!dev || (how != CIM_WAIT_POLL && how != CIM_WAIT_IRQ))
        return CIM_ERR_ARG;
    uint32_t n = 0;
    for (;; n++) {
        if (n == timeout_polls)
            return CIM_ERR_TIMEOUT;
        if (how == CIM_WAIT_IRQ ? (dev->irq_events & IRQ_EVENTS) != 0
                                : (rd(dev, REG(STATUS)) & CIM_STATUS_DONE_Msk) != 0)
            break;
    }
    uint32_t status = rd(dev, REG(STATUS));
    dev->cycles = rd(dev, REG(CYCLES_TOTAL));
    if (status & CIM_STATUS_ERROR_Msk) {
        dev->hw_error = FIELD(status, STATUS, ERROR_CODE);
        return CIM_ERR_HW;
    }
    return CIM_OK;
}

cim_status_t cim_irq_enable(cim_dev_t *dev, int enable)
{
    if (!dev)
        return CIM_ERR_ARG;
    wr(dev, REG(IRQ_ENABLE),
       enable ? CIM_IRQ_ENABLE_DONE_Msk | CIM_IRQ_ENABLE_ERROR_Msk : 0u);
    return CIM_OK;
}

void cim_irq_handler(cim_dev_t *dev)
{
    uint32_t events = rd(dev, REG(IRQ_STATUS)) & IRQ_EVENTS;
    wr(dev, REG(IRQ_STATUS), events);
    dev->irq_events |= events;
}

/* ---- Calibration rows ----
 * The record of a bit-column while cim_calibrate() runs: the cells set on the device, the
 * setting to store next, and whether every decision so far read high / low. */
#define CAL_ONES_MSK 0x007Fu
#define CAL_NEXT_POS 7u
#define CAL_NEXT_MSK (0x7Fu << CAL_NEXT_POS)
#define CAL_ALL_HIGH 0x4000u /* CIM_CAL_OUT_OF_RANGE once the search is done */
#define CAL_ALL_LOW 0x8000u

static uint32_t cal_next(uint16_t cell)
{
    return ((uint32_t)cell & CAL_NEXT_MSK) >> CAL_NEXT_POS;
}

static uint16_t cal_set_next(uint16_t cell, uint32_t ones)
{
    return (uint16_t)((cell & ~CAL_NEXT_MSK) | (ones << CAL_NEXT_POS));
}

/* Write every row of every macro whose cells differ between the device's setting and the
 * next one (thermometer codes: cell r of a bit-column is set when r < ones), then record
 * the next setting as the device's. */
static void cal_store(cim_dev_t *dev, uint16_t *cells, cim_cal_result_t *res)
{
    const cim_hw_info_t *hw = &dev->hw;
    uint32_t per_macro = hw->cols * hw->w_bits;
    for (uint32_t m = 0; m < hw->macros; m++) {
        uint16_t *mc = cells + m * per_macro;
        for (uint32_t r = 0; r < hw->cal_rows; r++) {
            int changed = 0;
            for (uint32_t k = 0; k < per_macro && !changed; k++)
                changed = ((mc[k] & CAL_ONES_MSK) > r) != (cal_next(mc[k]) > r);
            if (!changed)
                continue;
            uint32_t base = hw->cal_window + 4u * (m * hw->cal_rows + r) * hw->cal_row_words;
            for (uint32_t j = 0; j < hw->cal_row_words; j++) {
                uint32_t word = 0;
                for (uint32_t b = 0; b < 32 && 32 * j + b < per_macro; b++)
                    if (cal_next(mc[32 * j + b]) > r)
                        word |= 1u << b;
                wr(dev, base + 4u * j, word);
            }
            res->row_writes++;
            res->words_written += hw->cal_row_words;
        }
    }
    uint32_t n = hw->macros * per_macro;
    for (uint32_t k = 0; k < n; k++)
        cells[k] = (uint16_t)((cells[k] & ~CAL_ONES_MSK) | cal_next(cells[k]));
}

/* One evaluation: CTRL.CAL_EVAL, then the comparators of every bit-column. Calls
 * decide(cell, high) for each. */
static void cal_evaluate(cim_dev_t *dev, uint16_t *cells, cim_cal_result_t *res,
                         uint16_t (*decide)(uint16_t, int, uint32_t), uint32_t arg)
{
    const cim_hw_info_t *hw = &dev->hw;
    uint32_t per_macro = hw->cols * hw->w_bits;
    wr(dev, REG(CTRL), CIM_CTRL_CAL_EVAL_Msk);
    res->evaluations++;
    for (uint32_t m = 0; m < hw->macros; m++)
        for (uint32_t j = 0; j < hw->cal_row_words; j++) {
            uint32_t word = rd(dev, hw->cmp_window + 4u * (m * hw->cal_row_words + j));
            res->words_read++;
            for (uint32_t b = 0; b < 32 && 32 * j + b < per_macro; b++) {
                uint16_t *c = &cells[m * per_macro + 32 * j + b];
                *c = decide(*c, (int)((word >> b) & 1u), arg);
            }
        }
}

/* A search step of `step` cells: fewer where the comparator read high, more elsewhere. */
static uint16_t cal_step(uint16_t cell, int high, uint32_t step)
{
    uint32_t ones = cell & CAL_ONES_MSK;
    cell = (uint16_t)(cell & ~(high ? CAL_ALL_LOW : CAL_ALL_HIGH));
    return cal_set_next(cell, high ? ones - step : ones + step);
}

/* The range check at the extreme setting: a column whose decisions all went one way and
 * still does is out of range (it keeps the extreme); the others go back to the search's
 * result (1 cell after all high, rows - 1 after all low; `rows` in arg). */
static uint16_t cal_range(uint16_t cell, int high, uint32_t rows)
{
    if (cell & CAL_ALL_HIGH)
        return high ? (uint16_t)(cal_set_next(cell, 0) | CIM_CAL_OUT_OF_RANGE)
                    : (uint16_t)(cal_set_next(cell, 1) & ~CAL_ALL_HIGH);
    if (cell & CAL_ALL_LOW)
        return high ? (uint16_t)(cal_set_next(cell, rows - 1) & ~CAL_ALL_LOW)
                    : (uint16_t)((cal_set_next(cell, rows) & ~CAL_ALL_LOW)
                                 | CIM_CAL_OUT_OF_RANGE);
    return cal_set_next(cell, cell & CAL_ONES_MSK);
}

cim_status_t cim_calibrate(cim_dev_t *dev, uint16_t *cells, uint32_t n, int after_reset,
                           cim_cal_result_t *result)
{
    if (!dev || !cells || !result)
        return CIM_ERR_ARG;
    const cim_hw_info_t *hw = &dev->hw;
    if (!hw->cal_rows || !hw->cal_window)
        return CIM_ERR_HW_CONFIG;
    uint32_t count = hw->macros * hw->cols * hw->w_bits;
    if (n < count)
        return CIM_ERR_WORKSPACE;
    if (busy(dev))
        return CIM_ERR_BUSY;
    cim_cal_result_t res = {0};
    uint32_t rows = hw->cal_rows;
    for (uint32_t k = 0; k < count; k++) {
        uint16_t ones = after_reset ? 0 : (uint16_t)CIM_CAL_ONES(cells[k]);
        cells[k] = (uint16_t)(cal_set_next(ones, rows / 2) | CAL_ALL_HIGH | CAL_ALL_LOW);
    }
    cal_store(dev, cells, &res);
    for (uint32_t step = rows / 4; step >= 1; step /= 2) {
        cal_evaluate(dev, cells, &res, cal_step, step);
        cal_store(dev, cells, &res);
    }
    int one_way = 0;
    for (uint32_t k = 0; k < count; k++)
        one_way |= (cells[k] & (CAL_ALL_HIGH | CAL_ALL_LOW)) != 0;
    if (one_way) {
        /* Probe the extremes (the others keep their setting), decide, then store. */
        for (uint32_t k = 0; k < count; k++)
            if (cells[k] & (CAL_ALL_HIGH | CAL_ALL_LOW))
                cells[k] = cal_set_next(cells[k], (cells[k] & CAL_ALL_HIGH) ? 0 : rows);
        cal_store(dev, cells, &res);
        cal_evaluate(dev, cells, &res, cal_range, rows);
        cal_store(dev, cells, &res);
    }
    for (uint32_t k = 0; k < count; k++) {
        cells[k] = (uint16_t)(cells[k] & (CAL_ONES_MSK | CIM_CAL_OUT_OF_RANGE));
        res.out_of_range += (cells[k] & CIM_CAL_OUT_OF_RANGE) != 0;
    }
    *result = res;
    return CIM_OK;
}
