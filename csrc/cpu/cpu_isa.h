// Run-time choice between a CPU kernel's generic build and its instruction-set copies
// (csrc/cpu/*_avx2.cpp, *_avx512.cpp), shared by every op that has them. Decided once.
// FASTGAN_CPU_ISA=base forces the generic kernels and FASTGAN_CPU_ISA=avx2 the AVX2 ones
// at most (e.g. to compare them); unset, the widest the CPU has.
#pragma once

#include "isa_copies.h"

#include <cstdlib>
#include <cstring>

namespace fastgan::cpu {

inline bool cpu_isa_capped_at(const char* name) {
  const char* env = std::getenv("FASTGAN_CPU_ISA");
  return env != nullptr && std::strcmp(env, name) == 0;
}

// Whether the AVX2 copies may run: the CPU has AVX2 + FMA + F16C and FASTGAN_CPU_ISA is not "base".
inline bool cpu_supports_avx2_kernels() {
  static const bool use = [] {
    if (cpu_isa_capped_at("base")) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return use;
}

// Whether the AVX-512 copies may run: those of AVX2 may, the CPU (and the OS, which
// __builtin_cpu_supports checks through XGETBV) has AVX-512 F, BW, VL and DQ, and
// FASTGAN_CPU_ISA is not "avx2".
inline bool cpu_supports_avx512_kernels() {
  static const bool use = [] {
    if (!cpu_supports_avx2_kernels() || cpu_isa_capped_at("avx2")) return false;
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }();
  return use;
}

// The widest copy that runs here, of the kernels that have one of each: "avx512", "avx2"
// or "base" (instance_norm_act's AVX-512 copy takes NHWC inputs, its AVX2 copy the others).
inline const char* cpu_kernels_isa() {
#if FASTGAN_BUILD_ISA_COPIES
  return cpu_supports_avx512_kernels() ? "avx512" : cpu_supports_avx2_kernels() ? "avx2" : "base";
#else
  return "base";
#endif
}

}  // namespace fastgan::cpu
