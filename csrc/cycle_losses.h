// fastgan::cycle_losses: what the CPU and CUDA kernels share (header only, no device
// code): the argument checks, the memory order each side is walked in, the layout of
// the packed sign codes, and the loss weights.
//
// The op's tensors form two *sides*, each walked as flat arrays in one memory order:
//   side A: rec_A, real_A, idt_B   (terms cycle_A = |rec_A - real_A|, idt_B = |idt_B - real_A|)
//   side B: rec_B, real_B, idt_A   (terms cycle_B = |rec_B - real_B|, idt_A = |idt_A - real_B|)
// The losses come out as one tensor of 4 values in the order (cycle_A, cycle_B, idt_A, idt_B):
// term j sits at losses[j] and its sign code at bits 2j..2j+1 of the code byte.
#pragma once

#include "common.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>

namespace fastgan::cycle {

// Term j: its weight and the side its elements live on.
enum Term : int { kCycleA = 0, kCycleB = 1, kIdtA = 2, kIdtB = 3 };
constexpr int kTerms = 4;

// The code of one term at one element: sign(x - t) as 0 (tie, x == t, or no such term
// or element), 1 (x > t) or 2 (x < t), two bits, packed four to a byte (term j at bits
// 2j..2j+1): one byte per element index k < max(numel_A, numel_B). Side A's terms
// (cycle_A, idt_B) are undefined past numel_A and zero there; likewise side B.
constexpr uint8_t code_of(bool gt, bool lt) {
  return static_cast<uint8_t>(static_cast<int>(gt) | (static_cast<int>(lt) << 1));
}

// Weights of the four terms: (lambda_A, lambda_B, lambda_B * lambda_identity,
// lambda_A * lambda_identity), the last two 0 without identity terms.
inline std::array<double, kTerms> term_weights(double lambda_A, double lambda_B, double lambda_identity,
                                               bool has_idt) {
  return {lambda_A, lambda_B, has_idt ? lambda_B * lambda_identity : 0.0,
          has_idt ? lambda_A * lambda_identity : 0.0};
}

// The inputs of the op, checked: shapes pairwise equal within each side, one dtype
// (floating) and one device throughout, idt_A and idt_B both given or both absent.
inline void check_inputs(const char* op, const at::Tensor& real_A, const at::Tensor& rec_A,
                         const at::Tensor& real_B, const at::Tensor& rec_B,
                         const std::optional<at::Tensor>& idt_A, const std::optional<at::Tensor>& idt_B) {
  const bool has_a = idt_A.has_value() && idt_A->defined();
  const bool has_b = idt_B.has_value() && idt_B->defined();
  TORCH_CHECK(has_a == has_b, op, ": give both idt_A and idt_B or neither, got ", has_a ? "idt_A" : "idt_B",
              " only");
  TORCH_CHECK(rec_A.sizes() == real_A.sizes(), op, ": rec_A and real_A must have the same shape, got ",
              rec_A.sizes(), " and ", real_A.sizes());
  TORCH_CHECK(rec_B.sizes() == real_B.sizes(), op, ": rec_B and real_B must have the same shape, got ",
              rec_B.sizes(), " and ", real_B.sizes());
  if (has_a) {
    TORCH_CHECK(idt_A->sizes() == real_B.sizes(), op, ": idt_A = G_A(real_B) must have real_B's shape, got ",
                idt_A->sizes(), " and ", real_B.sizes());
    TORCH_CHECK(idt_B->sizes() == real_A.sizes(), op, ": idt_B = G_B(real_A) must have real_A's shape, got ",
                idt_B->sizes(), " and ", real_A.sizes());
  }
  const auto dtype = real_A.scalar_type();
  const auto device = real_A.device();
  TORCH_CHECK(at::isFloatingType(dtype), op,
              ": expected a floating point dtype (float64, float32, bfloat16, float16), got ", dtype);
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.scalar_type() == dtype, op, ": every tensor must have real_A's dtype ", dtype, ", ", name,
                " has ", t.scalar_type());
    TORCH_CHECK(t.device() == device, op, ": every tensor must be on real_A's device ", device, ", ", name,
                " is on ", t.device());
  };
  same(rec_A, "rec_A");
  same(real_B, "real_B");
  same(rec_B, "rec_B");
  if (has_a) {
    same(*idt_A, "idt_A");
    same(*idt_B, "idt_B");
  }
}

// The backward's own arguments: the 4 loss gradients and the forward's n_max sign codes
// (uint8, one per element index), both on real_A's device.
inline void check_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& signs,
                                const at::Tensor& real_A, int64_t n_max) {
  TORCH_CHECK(grad.numel() == kTerms, op, ": grad must hold the 4 loss gradients, got ", grad.sizes());
  TORCH_CHECK(grad.device() == real_A.device() && signs.device() == real_A.device(), op,
              ": grad and signs must be on real_A's device");
  TORCH_CHECK(signs.scalar_type() == at::kByte && signs.dim() == 1 && signs.numel() == n_max, op,
              ": signs must be the uint8 codes of the forward (", n_max, " of them), got ", signs.scalar_type(),
              " ", signs.sizes());
}

// One side as dense tensors sharing one memory order (element k of each pairs up).
struct Side {
  at::Tensor rec, real, idt;  // idt undefined without identity terms
  int64_t numel = 0;
};

// The tensor whose memory order a side takes: the first dense one of rec, idt, real
// (the gradients go to rec and idt, so they get their own layout when they can), or
// an undefined tensor when none is dense (then everything is made contiguous).
// fastgan/ops/_cycle_losses.py (_side_order) mirrors this for the fake rules.
inline at::Tensor side_order(const at::Tensor& rec, const at::Tensor& real, const at::Tensor& idt) {
  if (rec.is_non_overlapping_and_dense()) return rec;
  if (idt.defined() && idt.is_non_overlapping_and_dense()) return idt;
  if (real.is_non_overlapping_and_dense()) return real;
  return at::Tensor();
}

// t in the memory order of `order` (or contiguous): itself when it already is.
inline at::Tensor in_order(const at::Tensor& t, const at::Tensor& order) {
  if (!t.defined()) return t;
  if (!order.defined()) return t.contiguous();
  if (t.is_non_overlapping_and_dense() && same_layout(t, order)) return t;
  return at::empty_like(order).copy_(t);
}

inline Side dense_side(const at::Tensor& rec, const at::Tensor& real, const std::optional<at::Tensor>& idt_opt) {
  const at::Tensor idt = idt_opt.has_value() ? *idt_opt : at::Tensor();
  const at::Tensor order = side_order(rec, real, idt);
  return {in_order(rec, order), in_order(real, order), in_order(idt, order), real.numel()};
}

// An uninitialized gradient for this side, in its memory order.
inline at::Tensor side_grad(const at::Tensor& rec, const at::Tensor& real, const std::optional<at::Tensor>& idt_opt) {
  const at::Tensor idt = idt_opt.has_value() ? *idt_opt : at::Tensor();
  const at::Tensor order = side_order(rec, real, idt);
  return order.defined() ? at::empty_like(order) : at::empty(real.sizes(), real.options());
}

// The six gradients of the backward, input order (real_A, rec_A, real_B, rec_B, idt_A,
// idt_B); those not asked for (output_mask) are empty 1-d tensors.
inline std::array<at::Tensor, 6> backward_outputs(const at::Tensor& real_A, const at::Tensor& rec_A,
                                                  const at::Tensor& real_B, const at::Tensor& rec_B,
                                                  const std::optional<at::Tensor>& idt_A,
                                                  const std::optional<at::Tensor>& idt_B,
                                                  std::array<bool, 6> mask) {
  const bool has_idt = idt_A.has_value() && idt_A->defined();
  const std::array<int, 6> side = {0, 0, 1, 1, 1, 0};  // real_A, rec_A on A; real_B, rec_B, idt_A on B; idt_B on A
  std::array<at::Tensor, 6> out;
  for (int i = 0; i < 6; ++i) {
    if (mask[i] && (i < 4 || has_idt)) {
      out[i] = side[i] == 0 ? side_grad(rec_A, real_A, idt_B) : side_grad(rec_B, real_B, idt_A);
    } else {
      out[i] = at::empty({0}, real_A.options());
    }
  }
  return out;
}

// Where both back ends' forward starts: the inputs checked, the two sides dense, and the
// outputs uninitialized (the 4 losses; one sign code per element index when asked for).
struct ForwardTensors {
  bool has_idt;
  Side a, b;
  int64_t n_A, n_B, n_max;
  at::Tensor losses, signs;
};

inline ForwardTensors forward_tensors(const at::Tensor& real_A, const at::Tensor& rec_A, const at::Tensor& real_B,
                                      const at::Tensor& rec_B, const std::optional<at::Tensor>& idt_A,
                                      const std::optional<at::Tensor>& idt_B, bool compute_signs) {
  check_inputs("fastgan::cycle_losses", real_A, rec_A, real_B, rec_B, idt_A, idt_B);
  ForwardTensors t;
  t.has_idt = idt_A.has_value() && idt_A->defined();
  t.a = dense_side(rec_A, real_A, idt_B);
  t.b = dense_side(rec_B, real_B, idt_A);
  t.n_A = t.a.numel;
  t.n_B = t.b.numel;
  t.n_max = std::max(t.n_A, t.n_B);
  t.losses = at::empty({kTerms}, real_A.options());
  t.signs = at::empty({compute_signs ? t.n_max : 0}, real_A.options().dtype(at::kByte));
  return t;
}

// Where both back ends' backward starts: its arguments checked and the six gradients
// uninitialized (backward_outputs).
struct BackwardTensors {
  bool has_idt;
  int64_t n_A, n_B, n_max;
  std::array<at::Tensor, 6> out;
};

inline BackwardTensors backward_tensors(const at::Tensor& grad, const at::Tensor& signs, const at::Tensor& real_A,
                                        const at::Tensor& rec_A, const at::Tensor& real_B, const at::Tensor& rec_B,
                                        const std::optional<at::Tensor>& idt_A,
                                        const std::optional<at::Tensor>& idt_B, std::array<bool, 6> output_mask) {
  const char* op = "fastgan::cycle_losses_backward";
  check_inputs(op, real_A, rec_A, real_B, rec_B, idt_A, idt_B);
  BackwardTensors t;
  t.has_idt = idt_A.has_value() && idt_A->defined();
  t.n_A = real_A.numel();
  t.n_B = real_B.numel();
  t.n_max = std::max(t.n_A, t.n_B);
  check_backward_args(op, grad, signs, real_A, t.n_max);
  t.out = backward_outputs(real_A, rec_A, real_B, rec_B, idt_A, idt_B, output_mask);
  return t;
}

}  // namespace fastgan::cycle
