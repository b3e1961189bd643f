/* The application's configuration: where the accelerator is and how to drive it.
 * Every value can be overridden on the compiler's command line (-DNAME=value). */
#ifndef CIM_APP_H
#define CIM_APP_H

/* CIM_BASE, the base address of the accelerator's AHB-Lite slave in the reference memory map
 * (cortex_m4.ld), comes with the registers: cim_regs.h, generated from gateware/regmap.py. */
#include "cim_regs.h"

/* External interrupt the slave's IRQ output drives (vector 16 + CIM_IRQn). */
#ifndef CIM_IRQn
#define CIM_IRQn 0
#endif

/* 1: wait for the accelerator's interrupt; 0: poll STATUS. */
#ifndef CIM_APP_USE_IRQ
#define CIM_APP_USE_IRQ 0
#endif

/* Status polls (or event checks) before a frame counts as hung. */
#ifndef CIM_APP_TIMEOUT_POLLS
#define CIM_APP_TIMEOUT_POLLS 10000000u
#endif

/* Static workspace for the MCU's layers; the blob's workspace_bytes must fit. */
#ifndef CIM_APP_WORKSPACE_BYTES
#define CIM_APP_WORKSPACE_BYTES (64u * 1024u)
#endif

/* 1: time the stages with the DWT cycle counter; 0: stage_cycles stay 0 (for a core or an
 * emulator without a DWT). */
#ifndef CIM_APP_CYCLES
#define CIM_APP_CYCLES 1
#endif

/* Logits kept per frame for the check after the run (signed 64-bit words): frames whose
 * logits fit are checked against the golden model after the last one (stage CHECK), so the
 * frames back to back carry none of it; later ones are checked as they come. */
#ifndef CIM_APP_CHECK_WORDS
#define CIM_APP_CHECK_WORDS 1024u
#endif

#endif /* CIM_APP_H */
