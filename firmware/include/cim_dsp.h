/* Cortex-M4 DSP instructions as inline functions, with portable C equivalents.
 *
 * Where the compiler targets a core with the DSP extension (__ARM_FEATURE_DSP, e.g.
 * -mcpu=cortex-m4) each function is the one instruction it is named after; elsewhere (the
 * host build the tests use, or -DCIM_PORTABLE) it is plain C that computes the same bits.
 * No CMSIS needed.
 *
 * The portable versions assume what GCC and Clang guarantee on every target they support:
 * two's complement integers and an arithmetic right shift of negative values (checked
 * below). */
#ifndef CIM_DSP_H
#define CIM_DSP_H

#include <stdint.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(CIM_PORTABLE)
#define CIM_HAVE_DSP 1
#else
#define CIM_HAVE_DSP 0
#endif

/* The requantization rule and the portable code rely on this. */
typedef char cim_check_arithmetic_shift[((-8 >> 1) == -4) ? 1 : -1];

/* Signed 16-bit halves of a word. */
static inline int32_t cim_lo16(uint32_t v)
{
    return (int32_t)(v & 0xFFFFu) - (int32_t)((v & 0x8000u) << 1);
}

static inline int32_t cim_hi16(uint32_t v)
{
    return cim_lo16(v >> 16);
}

/* SMLAD: acc + lo(x) * lo(y) + hi(x) * hi(y), halves signed 16-bit. Callers keep the true
 * sum inside 32 bits (the model generator checks the bound), so no wrap-around happens. */
static inline int32_t cim_smlad(uint32_t x, uint32_t y, int32_t acc)
{
#if CIM_HAVE_DSP
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(y), "r"(acc));
    return r;
#else
    return acc + cim_lo16(x) * cim_lo16(y) + cim_hi16(x) * cim_hi16(y);
#endif
}

/* SMLAL: acc + x * y on 64 bits. */
static inline int64_t cim_smlal(int64_t acc, int32_t x, int32_t y)
{
#if CIM_HAVE_DSP
    __asm__("smlal %Q0, %R0, %1, %2" : "+r"(acc) : "r"(x), "r"(y));
    return acc;
#else
    return acc + (int64_t)x * y;
#endif
}

/* USAT #8: x clamped to 0 .. 255. */
static inline uint32_t cim_usat8(int32_t x)
{
#if CIM_HAVE_DSP
    uint32_t r;
    __asm__("usat %0, #8, %1" : "=r"(r) : "r"(x));
    return r;
#else
    return x < 0 ? 0u : x > 255 ? 255u : (uint32_t)x;
#endif
}

/* USUB8 + SEL: the per-byte unsigned maximum of two words. */
static inline uint32_t cim_umax8(uint32_t a, uint32_t b)
{
#if CIM_HAVE_DSP
    uint32_t r;
    __asm__("usub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(r) : "r"(a), "r"(b) : "cc");
    return r;
#else
    uint32_t r = 0;
    for (unsigned s = 0; s < 32; s += 8) {
        uint32_t x = (a >> s) & 0xFFu, y = (b >> s) & 0xFFu;
        r |= (x > y ? x : y) << s;
    }
    return r;
#endif
}

/* PKHBT x, y, LSL #16: the low halves of x and y in one word (x in bits 0..15). */
static inline uint32_t cim_pack16(uint32_t x, uint32_t y)
{
#if CIM_HAVE_DSP
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(x), "r"(y));
    return r;
#else
    return (x & 0xFFFFu) | (y << 16);
#endif
}

/* SXTB16: bytes 0 and 2 of x, sign-extended, as the low and high 16-bit halves. */
static inline uint32_t cim_sxtb16(uint32_t x)
{
#if CIM_HAVE_DSP
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(x));
    return r;
#else
    uint32_t lo = (((x & 0xFFu) ^ 0x80u) - 0x80u) & 0xFFFFu;
    uint32_t hi = ((((x >> 16) & 0xFFu) ^ 0x80u) - 0x80u) & 0xFFFFu;
    return lo | hi << 16;
#endif
}

/* SXTB16 x, ROR #8: bytes 1 and 3 of x, sign-extended, as the low and high halves. */
static inline uint32_t cim_sxtb16_ror8(uint32_t x)
{
#if CIM_HAVE_DSP
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
#else
    return cim_sxtb16(x >> 8 | x << 24);
#endif
}

#endif /* CIM_DSP_H */
