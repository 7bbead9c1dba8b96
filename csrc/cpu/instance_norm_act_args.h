// fastgan::instance_norm_act on the CPU: the arguments of the kernel entry points,
// which csrc/cpu/instance_norm_act_kernel.h compiles once per instruction set
// (namespaces fastgan::cpu::base and fastgan::cpu::avx2) and
// csrc/cpu/instance_norm_act.cpp calls after its checks. Independent of the ISA.
#pragma once

#include "../instance_norm_act.h"
#include "isa_copies.h"

namespace fastgan::cpu::inorm {

// Pointers into dense tensors laid out as `layout`; statistics and affine parameters
// in the accumulation type (float, double for float64), (N, C) and (C,) contiguous.
struct ForwardArgs {
  at::ScalarType dtype;
  instance_norm::Layout layout;
  instance_norm::Activation act;
  instance_norm::Dims d;
  const void* x;
  const void* residual;  // nullptr: none
  void* y;
  void* mean;
  void* rstd;
  const void* weight;  // nullptr: 1
  const void* bias;    // nullptr: 0
  double eps;
  double negative_slope;
};

struct BackwardArgs {
  at::ScalarType dtype;
  instance_norm::Layout layout;
  instance_norm::Activation act;
  instance_norm::Dims d;
  const void* grad;
  const void* x;
  void* dx;
  const void* mean;
  const void* rstd;
  const void* weight;
  const void* bias;
  double* sum_a;  // (N, C): sum(gz) per plane
  double* sum_b;  // (N, C): sum(gz * (x - mean)) per plane
  double negative_slope;
};

}  // namespace fastgan::cpu::inorm
