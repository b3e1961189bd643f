/* Names of the status codes. */
#include "cim_status.h"

const char *cim_status_name(cim_status_t status)
{
    static const char *const names[] = {
        "OK", "ERR_ARG", "ERR_BLOB_MAGIC", "ERR_BLOB_VERSION", "ERR_BLOB_SIZE", "ERR_BLOB_CRC",
        "ERR_BLOB_FORMAT", "ERR_NO_DEVICE", "ERR_HW_VERSION", "ERR_HW_CONFIG", "ERR_STATE",
        "ERR_WORKSPACE", "ERR_BUSY", "ERR_TIMEOUT", "ERR_HW",
    };
    unsigned i = (unsigned)status;
    return i < sizeof names / sizeof names[0] ? names[i] : "ERR_UNKNOWN";
}
