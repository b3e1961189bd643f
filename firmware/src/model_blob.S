/* The model blob (build/model.bin, made by `python -m compiler.firmware_blob`), linked into
 * flash: cim_model_blob[cim_model_blob_size], 8-byte aligned. The assembler finds
 * model.bin on its include path (-Wa,-I<build folder>). */
    .section .model_blob, "a"
    .balign 8
    .global cim_model_blob
cim_model_blob:
    .incbin "model.bin"
cim_model_blob_end:

    .section .rodata.cim_model_blob_size, "a"
    .balign 4
    .global cim_model_blob_size
cim_model_blob_size:
    .word cim_model_blob_end - cim_model_blob
