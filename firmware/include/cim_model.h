/* A model blob (compiler/firmware_blob.py): validation and access.
 *
 * cim_model_open() checks everything the driver and the kernels rely on before anything
 * touches the hardware: magic, version, size, CRC-32, every section inside the blob, the op
 * chain and its shapes, and every workspace area inside workspace_bytes; and that no header
 * or op word disagrees with what the blob holds (the CRC only says the bytes are the ones
 * written): the sections tile the blob, the counts and word counts are exactly what the
 * layer descriptors and the ops address, the test images and labels are in range.
 * compiler/firmware_blob.py's check_blob() is the same check in Python. The blob is read in
 * place (flash), never copied. */
#ifndef CIM_MODEL_H
#define CIM_MODEL_H

#include <stdint.h>

#include "cim_format.h"
#include "cim_status.h"

#define CIM_MAX_OPS CIM_BLOB_MAX_OPS

typedef struct {
    const uint8_t *base;              /* the blob, 8-byte aligned */
    const cim_blob_header_t *hdr;
    const cim_blob_op_t *ops;
} cim_model_t;

/* Validate the blob of `size` bytes at `blob` (8-byte aligned) and fill `model`.
 * CIM_ERR_BLOB_MAGIC, _VERSION, _SIZE, _CRC or _FORMAT say what is wrong with it. */
cim_status_t cim_model_open(cim_model_t *model, const void *blob, uint32_t size);

/* Pointer to the blob's bytes at `offset` (offsets from the header and op records). */
static inline const void *cim_model_at(const cim_model_t *model, uint32_t offset)
{
    return model->base + offset;
}

/* Test image i (CHW bytes), its label and the golden model's logits for it. */
const uint8_t *cim_model_image(const cim_model_t *model, uint32_t i);
uint32_t cim_model_label(const cim_model_t *model, uint32_t i);
const int64_t *cim_model_expected(const cim_model_t *model, uint32_t i);

/* CRC-32 (IEEE 802.3, as zlib.crc32): crc = cim_crc32(0, data, n) for one buffer, or chain
 * the previous result for the next piece. */
uint32_t cim_crc32(uint32_t crc, const void *data, uint32_t n);

#endif /* CIM_MODEL_H */
