// The CPU kernels of fastgan::cycle_losses (the kernel section of cpu/cycle_losses.cpp,
// included here with FASTGAN_CPU_ISA = avx2) built with at::vec's AVX2 vectors, as
// cpu/instance_norm_act_avx2.cpp does for instance_norm_act: this whole file, headers
// included, is compiled for AVX2 + FMA + F16C (`#pragma GCC target` before any header)
// with CPU_CAPABILITY=AVX2. -ffp-contract=off still holds and the kernels do no
// multiplies, so the bits are those of the generic copy. cpu/cycle_losses.cpp calls
// fastgan::cpu::avx2::cycle_forward / cycle_backward only after checking at run time
// that the CPU has these instructions.
//
// Listed after the generic sources in csrc/sources.txt, so that the linker keeps the
// generic copies of the inline functions both kinds of file instantiate.
//
#include "avx2_copies.h"  // macros only: no header is included before the pragma
#if FASTGAN_BUILD_AVX2_COPIES
#pragma GCC push_options
#pragma GCC target("avx,avx2,fma,f16c")
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#pragma GCC diagnostic ignored "-Wpsabi"
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define FASTGAN_CPU_ISA avx2
#include "cycle_losses.cpp"
#pragma GCC pop_options
#endif
