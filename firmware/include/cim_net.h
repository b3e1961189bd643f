/* The whole network on one image: the MCU's ops and the accelerator's, in blob order.
 *
 *     cim_net_init(&net, &dev, &model, workspace, sizeof workspace);
 *     cim_net_run(&net, image, &class);      image: CHW bytes, model input shape
 *     cim_net_run_next(&net, image, next, &class);   frames back to back: with a WHOLE
 *                                            blob, `next` goes into the image buffer's
 *                                            other slot while the accelerator runs `image`
 *
 * The workspace is the caller's (static) memory: at least the blob's workspace_bytes,
 * aligned to CIM_WORKSPACE_ALIGN. An optional stage callback is called as each stage
 * begins, and with CIM_STAGE_IDLE when the run ends, so a caller can time the stages. */
#ifndef CIM_NET_H
#define CIM_NET_H

#include <stdint.h>

#include "cim_driver.h"
#include "cim_format.h"
#include "cim_model.h"
#include "cim_status.h"

/* Called with a CIM_STAGE_* (cim_format.h) as each stage of a frame begins. */
typedef void (*cim_stage_fn)(void *ctx, uint32_t stage);

typedef struct {
    cim_dev_t *dev;              /* NULL: no accelerator (OFFLOAD gives CIM_ERR_STATE) */
    const cim_model_t *model;
    uint8_t *ws;
    cim_wait_t wait;             /* how to wait for the accelerator (default: polling) */
    uint32_t timeout_polls;      /* default CIM_NET_TIMEOUT_POLLS */
    cim_stage_fn stage;          /* optional */
    void *stage_ctx;
    uint32_t slot;               /* WHOLE: the image-buffer slot of the next frame */
    const uint8_t *staged;       /* WHOLE: the image already in that slot, or NULL */
    uint32_t result_class;       /* WHOLE: the class RESULT gave for the last frame */
} cim_net_t;

#define CIM_NET_TIMEOUT_POLLS 10000000u

cim_status_t cim_net_init(cim_net_t *net, cim_dev_t *dev, const cim_model_t *model,
                          void *workspace, uint32_t workspace_bytes);

/* Run op i alone on the workspace as the ops before it left it (CONV and CLASSIFY read
 * `image`; CLASSIFY writes `next`, if not NULL, into the other image slot meanwhile). */
cim_status_t cim_net_op(cim_net_t *net, uint32_t i, const uint8_t *image,
                        const uint8_t *next);

/* Run every op; *class_out = argmax of the logits. */
cim_status_t cim_net_run(cim_net_t *net, const uint8_t *image, uint32_t *class_out);

/* cim_net_run, and with a WHOLE blob the next frame's image `next` (NULL: none) written
 * into the image buffer while this frame computes: call it with that image next. */
cim_status_t cim_net_run_next(cim_net_t *net, const uint8_t *image, const uint8_t *next,
                              uint32_t *class_out);

/* The logits of the last run (model classes of them). */
const int64_t *cim_net_logits(const cim_net_t *net);

#endif /* CIM_NET_H */
