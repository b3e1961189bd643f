/* The network runner (see cim_net.h). */
#include "cim_net.h"

#include <stddef.h>

#include "cim_kernels.h"

static void stage(const cim_net_t *net, uint32_t s)
{
    if (net->stage)
        net->stage(net->stage_ctx, s);
}

cim_status_t cim_net_init(cim_net_t *net, cim_dev_t *dev, const cim_model_t *model,
                          void *workspace, uint32_t workspace_bytes)
{
    if (!net || !model || !model->base || !workspace)
        return CIM_ERR_ARG;
    if ((uintptr_t)workspace % CIM_WORKSPACE_ALIGN
        || workspace_bytes < model->hdr->workspace_bytes)
        return CIM_ERR_WORKSPACE;
    net->dev = dev;
    net->model = model;
    net->ws = (uint8_t *)workspace;
    net->wait = CIM_WAIT_POLL;
    net->timeout_polls = CIM_NET_TIMEOUT_POLLS;
    net->stage = NULL;
    net->stage_ctx = NULL;
    net->slot = 0;
    net->staged = NULL;
    net->result_class = 0;
    return CIM_OK;
}

static cim_status_t offload(cim_net_t *net, const cim_blob_op_t *op)
{
    cim_dev_t *dev = net->dev;
    if (!dev || dev->model != net->model)
        return CIM_ERR_STATE;
    stage(net, CIM_STAGE_OFFLOAD_WRITE);
    cim_status_t st = cim_write_input(dev, op, net->ws + op->in_offset);
    if (st == CIM_OK)
        st = cim_start(dev);
    if (st != CIM_OK)
        return st;
    stage(net, CIM_STAGE_OFFLOAD_WAIT);
    st = cim_wait(dev, net->wait, net->timeout_polls);
    if (st != CIM_OK)
        return st;
    stage(net, CIM_STAGE_OFFLOAD_READ);
    return cim_read_output(dev, op, net->ws + op->out_offset);
}

/* The WHOLE partition's frame: the image into this frame's slot (unless the previous frame
 * put it there), START, the next frame's image into the other slot while the accelerator
 * runs, then the logits and the class from the registers. */
static cim_status_t classify(cim_net_t *net, const cim_blob_op_t *op, const uint8_t *image,
                             const uint8_t *next)
{
    cim_dev_t *dev = net->dev;
    if (!dev || dev->model != net->model)
        return CIM_ERR_STATE;
    stage(net, CIM_STAGE_OFFLOAD_WRITE);
    cim_status_t st = net->staged == image ? CIM_OK : cim_write_image(dev, net->slot, image);
    if (st == CIM_OK)
        st = cim_start_image(dev, net->slot);
    net->staged = NULL;
    net->slot ^= 1u;
    if (st == CIM_OK && next) {
        st = cim_write_image(dev, net->slot, next);
        if (st == CIM_OK)
            net->staged = next;
    }
    if (st != CIM_OK)
        return st;
    stage(net, CIM_STAGE_OFFLOAD_WAIT);
    st = cim_wait(dev, net->wait, net->timeout_polls);
    if (st != CIM_OK)
        return st;
    stage(net, CIM_STAGE_OFFLOAD_READ);
    return cim_read_result(dev, (int64_t *)(void *)(net->ws + op->out_offset),
                           &net->result_class);
}

cim_status_t cim_net_op(cim_net_t *net, uint32_t i, const uint8_t *image, const uint8_t *next)
{
    if (!net || !net->model || i >= net->model->hdr->ops_count)
        return CIM_ERR_ARG;
    const cim_model_t *m = net->model;
    const cim_blob_op_t *op = &m->ops[i];
    switch (op->kind) {
    case CIM_OP_CONV:
        if (op->in_cstride == 0 && !image)
            return CIM_ERR_ARG;
        stage(net, CIM_STAGE_CONV);
        cim_conv(op, op->in_cstride == 0 ? image : net->ws + op->in_offset,
                 (const uint32_t *)cim_model_at(m, op->weights_offset),
                 (const cim_rq_record_t *)cim_model_at(m, op->params_offset), net->ws);
        return CIM_OK;
    case CIM_OP_MAXPOOL:
        stage(net, CIM_STAGE_MAXPOOL);
        cim_maxpool(op, net->ws);
        return CIM_OK;
    case CIM_OP_OFFLOAD:
        return offload(net, op);
    case CIM_OP_CLASSIFY:
        if (!image)
            return CIM_ERR_ARG;
        return classify(net, op, image, next);
    case CIM_OP_AVGPOOL:
        stage(net, CIM_STAGE_AVGPOOL);
        cim_avgpool(op, net->ws);
        return CIM_OK;
    case CIM_OP_FC:
        stage(net, CIM_STAGE_FC);
        cim_fc(op, (const int8_t *)cim_model_at(m, op->weights_offset),
               (const int64_t *)cim_model_at(m, op->params_offset), net->ws);
        return CIM_OK;
    default:
        return CIM_ERR_BLOB_FORMAT;   /* cim_model_open() lets no other kind through */
    }
}

cim_status_t cim_net_run(cim_net_t *net, const uint8_t *image, uint32_t *class_out)
{
    return cim_net_run_next(net, image, NULL, class_out);
}

cim_status_t cim_net_run_next(cim_net_t *net, const uint8_t *image, const uint8_t *next,
                              uint32_t *class_out)
{
    if (!net || !net->model || !image || !class_out)
        return CIM_ERR_ARG;
    cim_status_t st = CIM_OK;
    for (uint32_t i = 0; i < net->model->hdr->ops_count && st == CIM_OK; i++)
        st = cim_net_op(net, i, image, next);
    stage(net, CIM_STAGE_IDLE);
    if (st == CIM_OK)       /* the accelerator's argmax when it ran the classifier */
        *class_out = net->model->hdr->partition == CIM_PARTITION_WHOLE
                         ? net->result_class
                         : cim_argmax64(cim_net_logits(net), net->model->hdr->classes);
    return st;
}

const int64_t *cim_net_logits(const cim_net_t *net)
{
    const cim_model_t *m = net->model;
    return (const int64_t *)(net->ws + m->ops[m->hdr->ops_count - 1u].out_offset);
}
