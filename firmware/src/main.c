/* The application: classify the test images embedded in the model blob, end to end, and
 * leave the outcome in the results record `cim_results` (cim_format.h), at the start of
 * RAM, for an emulator or a debugger to read:
 *
 *   state        CIM_RUN_RUNNING, then CIM_RUN_DONE or CIM_RUN_FAILED (status, hw_error)
 *   marker       the stage being run (CIM_STAGE_*), written at every stage boundary: an
 *                emulator can watch this word to time the stages in its own units
 *   stage_cycles DWT cycles per stage, summed over the images (model load included)
 *   images, correct, agree, exact, classes[]
 *                how many images ran, how many classes match the labels and the golden
 *                model, how many logit vectors equal the golden model's bit for bit
 *                (checked after the last frame, stage CHECK, for the frames whose logits
 *                fit CIM_APP_CHECK_WORDS; as they come for the others). */
#include <stddef.h>
#include <stdint.h>

#include "cim_app.h"
#include "cim_driver.h"
#include "cim_format.h"
#include "cim_kernels.h"
#include "cim_model.h"
#include "cim_net.h"

extern const uint8_t cim_model_blob[];
extern const uint32_t cim_model_blob_size;

__attribute__((section(".results"), used)) volatile cim_results_t cim_results;

static cim_dev_t dev;
static cim_model_t model;
static cim_net_t net;
static uint8_t workspace[CIM_APP_WORKSPACE_BYTES]
    __attribute__((aligned(CIM_WORKSPACE_ALIGN)));

/* ------------------------------------------------------------------------------ timing */

#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)

static void cycles_start(void)
{
#if CIM_APP_CYCLES
    DEMCR |= 1u << 24;      /* TRCENA */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;         /* CYCCNTENA */
#endif
}

static uint32_t cycles(void)
{
#if CIM_APP_CYCLES
    return DWT_CYCCNT;
#else
    return 0;
#endif
}

static uint32_t stage_now = CIM_STAGE_IDLE, stage_t0;

/* The stage callback: charge the time since the last boundary to the stage that ran. */
static void mark(void *ctx, uint32_t stage)
{
    (void)ctx;
    uint32_t t = cycles();
    cim_results.stage_cycles[stage_now] += t - stage_t0;
    stage_now = stage;
    stage_t0 = t;
    cim_results.marker = stage;
    cim_results.marks++;
}

/* ------------------------------------------------------------------------------ main */

void CIM_IRQHandler(void)
{
    cim_irq_handler(&dev);
}

static int finish(cim_status_t st)
{
    mark(0, CIM_STAGE_IDLE);
    cim_results.status = (uint32_t)st;
    cim_results.hw_error = dev.hw_error;
    cim_results.state = st == CIM_OK ? CIM_RUN_DONE : CIM_RUN_FAILED;
    return st == CIM_OK ? 0 : 1;
}

static int same_logits(const int64_t *a, const int64_t *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static int64_t kept_logits[CIM_APP_CHECK_WORDS];

/* Frame i's class and logits against the label and the golden model's logits. */
static void check(uint32_t i, const int64_t *logits, uint32_t cls)
{
    const cim_blob_header_t *h = model.hdr;
    const int64_t *want = cim_model_expected(&model, i);
    cim_results.correct += cls == cim_model_label(&model, i);
    cim_results.agree += cls == cim_argmax64(want, h->classes);
    cim_results.exact += (uint32_t)same_logits(logits, want, h->classes);
    if (i < CIM_RESULTS_IMAGES)
        cim_results.classes[i] = cls;
}

int main(void)
{
    uint8_t *r = (uint8_t *)(uintptr_t)&cim_results;
    for (uint32_t i = 0; i < sizeof cim_results; i++)
        ((volatile uint8_t *)r)[i] = 0;
    cim_results.magic = CIM_RESULTS_MAGIC;
    cim_results.state = CIM_RUN_RUNNING;
    cycles_start();
    stage_t0 = cycles();

    mark(0, CIM_STAGE_LOAD);
    cim_status_t st = cim_model_open(&model, cim_model_blob, cim_model_blob_size);
    /* A blob of the MCU partition needs no accelerator: it is neither identified nor
     * touched (there may be none on the bus). */
    const int accel = st == CIM_OK && model.hdr->partition != CIM_PARTITION_MCU;
    cim_hal_t hal = {CIM_BASE};
    if (accel)
        st = cim_init(&dev, &hal);
    if (accel && st == CIM_OK)
        st = cim_load_model(&dev, &model);
    if (st == CIM_OK)
        st = cim_net_init(&net, accel ? &dev : NULL, &model, workspace, sizeof workspace);
    mark(0, CIM_STAGE_IDLE);
    if (st != CIM_OK)
        return finish(st);
    net.stage = mark;
    net.timeout_polls = CIM_APP_TIMEOUT_POLLS;
#if CIM_APP_USE_IRQ
    if (accel) {
        net.wait = CIM_WAIT_IRQ;
        NVIC_ISER0 = 1u << CIM_IRQn;
        st = cim_irq_enable(&dev, 1);
        if (st != CIM_OK)
            return finish(st);
    }
#endif

    const cim_blob_header_t *h = model.hdr;
    const uint32_t n = h->classes;
    uint32_t kept = 0;      /* frames whose logits wait in `kept_logits` for the check */
    for (uint32_t i = 0; i < h->images_count; i++) {
        uint32_t cls;
        /* Frames back to back: the next image goes in while this one computes (WHOLE). */
        st = cim_net_run_next(&net, cim_model_image(&model, i),
                              i + 1u < h->images_count ? cim_model_image(&model, i + 1u) : NULL,
                              &cls);
        if (st != CIM_OK)
            break;
        cim_results.images = i + 1u;
        cim_results.accel_cycles += dev.cycles;
        const int64_t *got = cim_net_logits(&net);
        if (i == kept && i < CIM_RESULTS_IMAGES && (kept + 1u) * n <= CIM_APP_CHECK_WORDS) {
            for (uint32_t c = 0; c < n; c++)
                kept_logits[kept * n + c] = got[c];
            cim_results.classes[kept++] = cls;
        } else {
            check(i, got, cls);
        }
    }
    /* The kept frames' check, after the frames (its own stage: no frame's time). */
    mark(0, CIM_STAGE_CHECK);
    for (uint32_t i = 0; i < kept; i++)
        check(i, &kept_logits[i * n], cim_results.classes[i]);
    return finish(st);
}
