// Run-time choice between a CPU kernel's generic build and its AVX2 copy
// (csrc/cpu/*_avx2.cpp), shared by every op that has both.
#pragma once

#include <cstdlib>
#include <cstring>

namespace fastgan::cpu {

// Whether the AVX2 copies may run: the CPU has AVX2 + FMA + F16C and FASTGAN_CPU_ISA
// is not "base" (which forces the generic kernels, e.g. to compare the two). Decided once.
inline bool cpu_supports_avx2_kernels() {
  static const bool use = [] {
    const char* env = std::getenv("FASTGAN_CPU_ISA");
    if (env != nullptr && std::strcmp(env, "base") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return use;
}

}  // namespace fastgan::cpu
