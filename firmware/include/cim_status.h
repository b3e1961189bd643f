/* Status codes: every driver, model and network call returns one. */
#ifndef CIM_STATUS_H
#define CIM_STATUS_H

typedef enum {
    CIM_OK = 0,
    CIM_ERR_ARG = 1,          /* a NULL pointer or an argument out of range */
    CIM_ERR_BLOB_MAGIC = 2,   /* not a model blob (magic word) */
    CIM_ERR_BLOB_VERSION = 3, /* blob format version this firmware does not read */
    CIM_ERR_BLOB_SIZE = 4,    /* the blob is truncated (shorter than its header says) */
    CIM_ERR_BLOB_CRC = 5,     /* CRC-32 mismatch: the blob is corrupt */
    CIM_ERR_BLOB_FORMAT = 6,  /* the blob's contents are inconsistent (sections, ops) */
    CIM_ERR_NO_DEVICE = 7,    /* the ID register does not read as the accelerator */
    CIM_ERR_HW_VERSION = 8,   /* register-map version this driver does not support */
    CIM_ERR_HW_CONFIG = 9,    /* hardware, firmware and model are not one configuration */
    CIM_ERR_STATE = 10,       /* call out of order: no device, no model loaded */
    CIM_ERR_WORKSPACE = 11,   /* workspace too small or not CIM_WORKSPACE_ALIGN aligned */
    CIM_ERR_BUSY = 12,        /* the accelerator is running a frame */
    CIM_ERR_TIMEOUT = 13,     /* the accelerator did not finish within the timeout */
    CIM_ERR_HW = 14           /* the accelerator stopped on an error (cim_dev_t.hw_error) */
} cim_status_t;

/* The enumerator's name without the CIM_ prefix ("OK", "ERR_BLOB_CRC"...). */
const char *cim_status_name(cim_status_t status);

#endif /* CIM_STATUS_H */
