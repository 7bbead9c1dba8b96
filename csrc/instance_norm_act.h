// fastgan::instance_norm_act: what the CPU and CUDA kernels share (header only, no
// device code): the activation names, the argument checks, the memory layouts and the
// tensors each entry point prepares for its kernels.
#pragma once

#include "common.h"

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>

namespace fastgan::instance_norm {

// The activation applied after the affine transform ("none" ends a ResNet block).
enum class Activation : int { kNone = 0, kRelu = 1, kLeakyRelu = 2 };

inline Activation parse_activation(const char* op, c10::string_view name) {
  if (name == "relu") return Activation::kRelu;
  if (name == "leaky_relu") return Activation::kLeakyRelu;
  if (name == "none") return Activation::kNone;
  TORCH_CHECK(false, op, ": activation must be \"relu\", \"leaky_relu\" or \"none\", got \"", std::string(name),
              "\"");
}

// Memory order a kernel walks: NCHW (each (n, c) plane contiguous) or NHWC
// (channels_last: the C values of a pixel contiguous).
enum class Layout { kNCHW, kNHWC };

// Shapes of one call: N, C and HW = H * W (the plane size).
struct Dims {
  int64_t N = 0, C = 0, HW = 0;
  int64_t planes() const { return N * C; }
};

inline Dims dims_of(const at::Tensor& x) {
  return {x.size(0), x.size(1), x.size(2) * x.size(3)};
}

// x itself when it is contiguous (NCHW) or channels_last, else a contiguous copy.
// Outputs are at::empty_like of the result, so they share its strides. The fake
// (meta) rules in fastgan/ops/_instance_norm_act.py repeat this choice.
inline at::Tensor dense_input(const at::Tensor& x) {
  if (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return x;
  }
  return x.contiguous();
}

inline Layout layout_of(const at::Tensor& x) {
  return x.is_contiguous() ? Layout::kNCHW : Layout::kNHWC;  // x from dense_input
}

// t (same sizes as ref) laid out as ref: t itself when it already is, else a copy.
inline at::Tensor as_layout_of(const at::Tensor& t, const at::Tensor& ref) {
  if (t.is_non_overlapping_and_dense() && same_layout(t, ref)) {
    return t;
  }
  return at::empty_like(ref).copy_(t);
}

// Accumulation / statistics dtype: float64 for float64 inputs, else float32.
inline at::ScalarType stats_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// The dtype of a parameter's gradient: the parameter's own; without it (no gradient is
// asked of it), the weight's, else x's.
inline at::ScalarType param_grad_dtype(const c10::optional<at::Tensor>& p, const c10::optional<at::Tensor>& weight,
                                       const at::Tensor& x) {
  if (p.has_value() && p->defined()) return p->scalar_type();
  return weight.has_value() && weight->defined() ? weight->scalar_type() : x.scalar_type();
}

inline void check_input(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, op, ": expected a 4-D (N, C, H, W) input, got ", x.dim(), "-D ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op,
              ": expected a floating point dtype (float64, float32, bfloat16, float16), got ", x.scalar_type());
}

// weight / bias: None or a (C,) floating tensor on x's device (any floating dtype: it
// is read in the accumulation dtype).
inline void check_affine(const char* op, const char* what, const c10::optional<at::Tensor>& p,
                         const at::Tensor& x) {
  if (!p.has_value() || !p->defined()) return;
  TORCH_CHECK(p->dim() == 1 && p->size(0) == x.size(1), op, ": ", what, " must have shape (C,) = (", x.size(1),
              ",), got ", p->sizes());
  TORCH_CHECK(at::isFloatingType(p->scalar_type()), op, ": ", what, " must be floating point, got ",
              p->scalar_type());
  TORCH_CHECK(p->device() == x.device(), op, ": ", what, " is on ", p->device(), ", input on ", x.device());
}

inline void check_same(const char* op, const char* what, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.sizes() == x.sizes(), op, ": ", what, " must have the input's shape ", x.sizes(), ", got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", what, " must have the input's dtype ",
              x.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), op, ": ", what, " is on ", t.device(), ", input on ", x.device());
}

// (N, C) statistics saved by the forward: mean and rstd in the stats dtype.
inline void check_stats(const char* op, const char* what, const at::Tensor& s, const at::Tensor& x) {
  TORCH_CHECK(s.dim() == 2 && s.size(0) == x.size(0) && s.size(1) == x.size(1), op, ": ", what,
              " must have shape (N, C) = (", x.size(0), ", ", x.size(1), "), got ", s.sizes());
  TORCH_CHECK(s.device() == x.device(), op, ": ", what, " is on ", s.device(), ", input on ", x.device());
  TORCH_CHECK(at::isFloatingType(s.scalar_type()), op, ": ", what, " must be floating point");
}

// The ops' names in their error messages.
constexpr const char* kFwd = "fastgan::instance_norm_act";
constexpr const char* kBwd = "fastgan::instance_norm_act_backward";

// Every argument of the forward checked (one definition for both devices); its activation.
inline Activation check_forward_args(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                                     const c10::optional<at::Tensor>& bias,
                                     const c10::optional<at::Tensor>& residual, c10::string_view activation) {
  check_input(kFwd, input);
  check_affine(kFwd, "weight", weight, input);
  check_affine(kFwd, "bias", bias, input);
  const Activation act = parse_activation(kFwd, activation);
  if (residual.has_value() && residual->defined()) check_same(kFwd, "residual", *residual, input);
  return act;
}

// Every argument of the backward checked; its activation.
inline Activation check_backward_args(const at::Tensor& grad, const at::Tensor& input,
                                      const c10::optional<at::Tensor>& weight,
                                      const c10::optional<at::Tensor>& bias, const at::Tensor& mean,
                                      const at::Tensor& rstd, c10::string_view activation) {
  check_input(kBwd, input);
  check_same(kBwd, "grad", grad, input);
  check_affine(kBwd, "weight", weight, input);
  check_affine(kBwd, "bias", bias, input);
  check_stats(kBwd, "mean", mean, input);
  check_stats(kBwd, "rstd", rstd, input);
  return parse_activation(kBwd, activation);
}

// A (C,) parameter in dtype `acc` (contiguous), or an undefined tensor for None.
inline at::Tensor param_as(const c10::optional<at::Tensor>& p, at::ScalarType acc) {
  if (!p.has_value() || !p->defined()) return at::Tensor();
  return p->to(acc).contiguous();
}

// t's data, or null for an undefined (absent) tensor.
inline const void* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr() : nullptr;
}

template <typename T>
inline const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// The tensors of a forward, prepared alike by each device's entry point (the CUDA one
// under its device guard): x dense, the outputs in its layout, the residual laid out as
// x, weight and bias in the stats dtype. For an empty x the statistics are NaN (the
// mean of no element, as aten's), residual, weight and bias are left undefined, and the
// call returns (y, mean, rstd) as they are.
struct ForwardTensors {
  at::Tensor x, residual, weight, bias;  // residual, weight, bias: undefined when absent
  at::Tensor y, mean, rstd;
  Dims d;
  Layout layout = Layout::kNCHW;
};

inline ForwardTensors forward_tensors(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                                      const c10::optional<at::Tensor>& bias,
                                      const c10::optional<at::Tensor>& residual) {
  ForwardTensors t;
  t.x = dense_input(input);
  t.d = dims_of(t.x);
  t.layout = layout_of(t.x);
  const auto acc = stats_dtype(t.x.scalar_type());
  t.y = at::empty_like(t.x);
  t.mean = at::empty({t.d.N, t.d.C}, t.x.options().dtype(acc));
  t.rstd = at::empty({t.d.N, t.d.C}, t.x.options().dtype(acc));
  if (t.x.numel() == 0) {
    t.mean.fill_(std::numeric_limits<double>::quiet_NaN());
    t.rstd.fill_(std::numeric_limits<double>::quiet_NaN());
    return t;
  }
  if (residual.has_value() && residual->defined()) t.residual = as_layout_of(*residual, t.x);
  t.weight = param_as(weight, acc);
  t.bias = param_as(bias, acc);
  return t;
}

// The tensors of a backward, prepared as the forward's: grad laid out as x, the saved
// statistics and the parameters in the stats dtype, dx in x's layout; the dtypes of
// dweight and dbias. For an empty x only x, d, dx and those dtypes are set (empty_grads).
struct BackwardTensors {
  at::Tensor x, grad, weight, bias, mean, rstd;  // weight, bias: undefined when absent
  at::Tensor dx;
  Dims d;
  Layout layout = Layout::kNCHW;
  at::ScalarType dw_dtype = at::kFloat, db_dtype = at::kFloat;
};

inline BackwardTensors backward_tensors(const at::Tensor& grad, const at::Tensor& input,
                                        const c10::optional<at::Tensor>& weight,
                                        const c10::optional<at::Tensor>& bias, const at::Tensor& mean,
                                        const at::Tensor& rstd) {
  BackwardTensors t;
  t.x = dense_input(input);
  t.d = dims_of(t.x);
  t.layout = layout_of(t.x);
  const auto acc = stats_dtype(t.x.scalar_type());
  t.dw_dtype = param_grad_dtype(weight, weight, t.x);
  t.db_dtype = param_grad_dtype(bias, weight, t.x);
  t.dx = at::empty_like(t.x);
  if (t.x.numel() == 0) return t;
  t.grad = as_layout_of(grad, t.x);
  t.weight = param_as(weight, acc);
  t.bias = param_as(bias, acc);
  t.mean = mean.to(acc).contiguous();
  t.rstd = rstd.to(acc).contiguous();
  return t;
}

// (dx, dweight, dbias) of an empty x: nothing to add, zero parameter gradients.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_grads(const BackwardTensors& t) {
  return {t.dx, at::zeros({t.d.C}, t.x.options().dtype(t.dw_dtype)),
          at::zeros({t.d.C}, t.x.options().dtype(t.db_dtype))};
}

}  // namespace fastgan::instance_norm
