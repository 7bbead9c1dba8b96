// The CPU kernels of fastgan::instance_norm_act (cpu/instance_norm_act_kernel.h) built
// with at::vec's AVX2 vectors, as ATen builds its own kernels per CPU capability: this
// whole file, headers included, is compiled for AVX2 + FMA + F16C (`#pragma GCC
// target` before any header, the equivalent of ATen's per-capability -mavx2 -mfma
// -mf16c) with CPU_CAPABILITY=AVX2. cpu/instance_norm_act.cpp calls
// fastgan::cpu::avx2::forward / backward only after checking at run time that the CPU
// has these instructions.
//
// Listed after the generic sources in csrc/sources.txt, so that the linker keeps the
// generic copies of the inline functions both kinds of file instantiate.
//
#include "avx2_copies.h"  // macros only: no header is included before the pragma
#if FASTGAN_BUILD_AVX2_COPIES
#pragma GCC push_options
#pragma GCC target("avx,avx2,fma,f16c")
// GCC's target pragma does not define the ISA macros that -mavx2 would (headers such as
// sleef.h test them): define them for this file.
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
// -Wpsabi notes that at::vec's lambdas returning __m256 have the AVX calling convention
// (true of the whole file; they are inlined): not a problem here.
#pragma GCC diagnostic ignored "-Wpsabi"
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define FASTGAN_CPU_ISA avx2
#include "instance_norm_act_kernel.h"
#pragma GCC pop_options
#endif
