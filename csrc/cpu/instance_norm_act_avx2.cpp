// The CPU kernels of fastgan::instance_norm_act (cpu/instance_norm_act_kernel.h) built
// with at::vec's AVX2 vectors, as ATen builds its own kernels per CPU capability: this
// file alone is compiled with -mavx2 -mfma -mf16c (setup.py, CMakeLists.txt: ATen's
// per-capability flags) and CPU_CAPABILITY=AVX2. cpu/instance_norm_act.cpp calls
// fastgan::cpu::avx2::forward / backward only after checking at run time that the CPU
// has these instructions.
//
// Listed after the generic sources in csrc/sources.txt, so that the linker keeps the
// generic copies of the inline functions both kinds of file instantiate.
//
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
#include "instance_norm_act_kernel.h"
#endif
