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
#include "isa_copy_avx2.h"
#if FASTGAN_BUILD_ISA_COPIES
#include "instance_norm_act_kernel.h"
#endif
