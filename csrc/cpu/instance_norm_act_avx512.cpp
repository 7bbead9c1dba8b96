// The NHWC CPU kernels of fastgan::instance_norm_act (cpu/instance_norm_act_kernel.h)
// built with at::vec's AVX-512 vectors: this file alone is compiled with the AVX2 flags
// plus -mavx512f -mavx512bw -mavx512vl -mavx512dq (setup.py, CMakeLists.txt) and
// CPU_CAPABILITY=AVX512. Sixteen float lanes and 32 vector registers: the bf16 rounding
// at::vec emulates takes half the instructions of the AVX2 copy's, and a run's per-channel
// constants stay in registers. The same bits as the other copies (the kernel header says
// why, and why this copy has no NCHW kernels). cpu/instance_norm_act.cpp calls
// fastgan::cpu::avx512::forward / backward for NHWC inputs only after checking at run
// time that the CPU has these instructions.
//
// Listed after the AVX2 copies in csrc/sources.txt, so that the linker keeps the generic,
// then the AVX2, copies of the inline functions several kinds of file instantiate.
//
#include "isa_copies.h"
#if FASTGAN_BUILD_ISA_COPIES
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512DQ__) || \
    !defined(__AVX2__) || !defined(__FMA__)
#error "compile the *_avx512.cpp files with -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq"
#endif
// -Wpsabi notes that at::vec's lambdas returning __m512 have the AVX-512 calling
// convention (true of the whole file; they are inlined): not a problem here.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12 takes the undefined vectors at::vec's AVX-512 code starts from (_mm512_undefined_*)
// for uninitialized reads, a few hundred times over.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define FASTGAN_CPU_ISA avx512
#define FASTGAN_NHWC_ONLY 1
#include "instance_norm_act_kernel.h"
#endif
