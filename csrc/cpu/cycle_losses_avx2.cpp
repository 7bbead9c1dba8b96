// The CPU kernels of fastgan::cycle_losses (the kernel section of cpu/cycle_losses.cpp,
// included here with FASTGAN_CPU_ISA = avx2) built with at::vec's AVX2 vectors, as
// cpu/instance_norm_act_avx2.cpp does for instance_norm_act: this file alone is compiled
// with -mavx2 -mfma -mf16c (setup.py, CMakeLists.txt) and CPU_CAPABILITY=AVX2.
// -ffp-contract=off still holds and the kernels do no multiplies, so the bits are those
// of the generic copy. cpu/cycle_losses.cpp calls
// fastgan::cpu::avx2::cycle_forward / cycle_backward only after checking at run time
// that the CPU has these instructions.
//
// Listed after the generic sources in csrc/sources.txt, so that the linker keeps the
// generic copies of the inline functions both kinds of file instantiate.
//
#include "isa_copy_avx2.h"
#if FASTGAN_BUILD_ISA_COPIES
#include "cycle_losses.cpp"
#endif
