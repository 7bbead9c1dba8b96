// Helpers shared by the CPU and CUDA kernels (header only, no device code).
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace fastgan {

// input and target of an elementwise loss: same shape, dtype and device, floating.
inline void check_loss_pair(const char* op, const at::Tensor& input, const at::Tensor& target) {
  TORCH_CHECK(input.sizes() == target.sizes(), op, ": input and target must have the same shape, got ",
              input.sizes(), " and ", target.sizes());
  TORCH_CHECK(input.scalar_type() == target.scalar_type(), op,
              ": input and target must have the same dtype, got ", input.scalar_type(), " and ",
              target.scalar_type());
  TORCH_CHECK(input.device() == target.device(), op, ": input and target must be on the same device, got ",
              input.device(), " and ", target.device());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op,
              ": expected a floating point dtype (float64, float32, bfloat16, float16), got ",
              input.scalar_type());
}

// The arguments of an L1 loss's backward: the pair, and grad one element (the loss is
// 0-dim) on the pair's device.
inline void check_l1_backward_args(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& target) {
  constexpr const char* op = "fastgan::l1_loss_backward";
  check_loss_pair(op, input, target);
  TORCH_CHECK(grad.numel() == 1, op, ": grad must hold one element (the loss is 0-dim), got ", grad.sizes());
  TORCH_CHECK(grad.device() == input.device(), op, ": grad is on ", grad.device(), ", input on ", input.device());
}

// True when a and b (same sizes) put every index at the same memory offset.
inline bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) {
      return false;
    }
  }
  return true;
}

// The pair as two dense tensors with one common memory order, so that a kernel can
// walk both as flat arrays of numel() elements (element k of one pairs with element k
// of the other). Copies only what it must: contiguous and channels_last pairs go
// through untouched; a strided view (a slice) is copied into the other's layout.
// Outputs made with at::empty_like(first) then share that order too.
inline std::pair<at::Tensor, at::Tensor> dense_pair(const at::Tensor& a, const at::Tensor& b) {
  const bool a_dense = a.is_non_overlapping_and_dense();
  const bool b_dense = b.is_non_overlapping_and_dense();
  if (a_dense && b_dense && same_layout(a, b)) {
    return {a, b};
  }
  if (a_dense) {
    return {a, at::empty_like(a).copy_(b)};
  }
  if (b_dense) {
    return {at::empty_like(b).copy_(a), b};
  }
  return {a.contiguous(), b.contiguous()};
}

}  // namespace fastgan
