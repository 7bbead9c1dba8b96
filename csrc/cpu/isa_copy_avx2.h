// The start of each AVX2 copy of a CPU kernel (cpu/*_avx2.cpp): checks the file is compiled
// with the AVX2 flags (setup.py, CMakeLists.txt) and defines what at::vec and fastgan's
// kernels read to build their AVX2 variants (CPU_CAPABILITY=AVX2, as ATen's per-capability
// builds; FASTGAN_CPU_ISA, the namespace of the copy). Included before anything else.
#pragma once

#include "isa_copies.h"
#if FASTGAN_BUILD_ISA_COPIES
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "compile the *_avx2.cpp files with -mavx2 -mfma -mf16c (setup.py and CMakeLists.txt do)"
#endif
// -Wpsabi notes that at::vec's lambdas returning __m256 have the AVX calling convention
// (true of the whole file; they are inlined): not a problem here.
#pragma GCC diagnostic ignored "-Wpsabi"
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define FASTGAN_CPU_ISA avx2
#endif
