// Which SIMD kernels are compiled in (both translation units agree): SSE2 where the build's
// baseline has it; AVX2 and AVX-512 kernels compiled for their instruction sets whatever the
// baseline, and chosen at run time when the CPU has them (the same IEEE single-precision
// operations per lane as SSE2 and scalar code). SIM3DR_NO_SIMD / _NO_AVX2 / _NO_AVX512 switch
// them off (the sanitizer and fallback tests).
#pragma once

#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SIM3DR_NO_SIMD)
#include <emmintrin.h>
#define SIM3DR_SSE2 1
#if defined(__x86_64__) && !defined(SIM3DR_NO_AVX2)
#include <immintrin.h>
#define SIM3DR_AVX2 1
#define SIM3DR_TARGET_AVX2 __attribute__((target("avx2")))
#if !defined(SIM3DR_NO_AVX512)
#define SIM3DR_AVX512 1
#define SIM3DR_TARGET_AVX512 __attribute__((target("avx2,avx512f,avx512vl,avx512bw")))
#endif
#endif
#endif
