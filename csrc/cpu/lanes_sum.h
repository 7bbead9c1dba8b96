// The lanes of an at::vec vector added in lane order, in double: how the CPU kernels'
// vectorized sums end in a fixed order (l1_loss, cycle_losses, instance_norm_act).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace fastgan::cpu {
// internal linkage: each instruction set's build (cpu/*_avx2.cpp) keeps its own copy
namespace {

template <typename T>
inline double lanes_sum(const at::vec::Vectorized<T>& v) {
  __at_align__ T buf[at::vec::Vectorized<T>::size()];
  v.store(buf);
  double s = 0.0;
  for (int64_t k = 0; k < at::vec::Vectorized<T>::size(); ++k) {
    s += static_cast<double>(buf[k]);
  }
  return s;
}

}  // namespace
}  // namespace fastgan::cpu
