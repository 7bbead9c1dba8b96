// fastgan::instance_norm_act / instance_norm_act_backward through the dispatcher, against
// instance norm + activation (+ residual) in float64 aten ops and their autograd backward:
// float32 / float64 / bfloat16 / float16, contiguous and channels_last, every
// activation, with and without affine parameters and a residual, planes small and
// split; determinism across thread counts. CUDA too when a device is present. Exit
// status 1 on any failure.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"

namespace {

using fastgan_test::expect;

using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using OptT = std::optional<at::Tensor>;

Triple op_forward(const at::Tensor& x, const OptT& w, const OptT& b, const OptT& r, double eps,
                  const std::string& act, double slope) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::instance_norm_act", "")
                       .typed<Triple(const at::Tensor&, const OptT&, const OptT&, const OptT&, double,
                                     c10::string_view, double)>();
  return op.call(x, w, b, r, eps, act, slope);
}

Triple op_backward(const at::Tensor& g, const at::Tensor& x, const OptT& w, const OptT& b, const at::Tensor& mean,
                   const at::Tensor& rstd, const std::string& act, double slope) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::instance_norm_act_backward", "")
                       .typed<Triple(const at::Tensor&, const at::Tensor&, const OptT&, const OptT&,
                                     const at::Tensor&, const at::Tensor&, c10::string_view, double)>();
  return op.call(g, x, w, b, mean, rstd, act, slope);
}

double rtol_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return 1e-10;
    case at::kFloat: return 1e-5;
    case at::kHalf: return 3e-3;
    default: return 1e-2;
  }
}

// |got - want| <= rtol * (|want| + max|want|), all finite.
bool close(const at::Tensor& got, const at::Tensor& want, double rtol) {
  auto g = got.to(at::kDouble).cpu();
  auto w = want.to(at::kDouble).cpu();
  if (g.sizes() != w.sizes() || !g.isfinite().all().item<bool>()) return false;
  const double scale = w.abs().max().item<double>();
  return ((g - w).abs() <= rtol * (w.abs() + scale)).all().item<bool>();
}

at::Tensor activate(const at::Tensor& z, const std::string& act, double slope) {
  if (act == "relu") return at::relu(z);
  if (act == "leaky_relu") return at::leaky_relu(z, slope);
  return z;
}

void check_case(const std::string& name, at::IntArrayRef sizes, at::ScalarType dtype, bool channels_last,
                const std::string& act, bool affine, bool residual, at::Device device) {
  const double rtol = rtol_of(dtype);
  const int64_t C = sizes[1];
  auto to = [&](const at::Tensor& t) {
    auto u = t.to(device, dtype);
    return channels_last && u.dim() == 4 ? u.contiguous(at::MemoryFormat::ChannelsLast) : u;
  };
  const auto x = to(at::randn(sizes, at::kDouble) * 1.5 + 2.0);
  const auto go = to(at::randn(sizes, at::kDouble));
  const OptT w = affine ? OptT(to(at::randn({C}, at::kDouble) * 0.5 + 1.0)) : std::nullopt;
  const OptT b = affine ? OptT(to(at::randn({C}, at::kDouble) * 0.5)) : std::nullopt;
  const OptT r = residual ? OptT(to(at::randn(sizes, at::kDouble))) : std::nullopt;
  const double slope = 0.2;

  // reference: instance norm written out in float64 (mean, biased variance), then the
  // activation and the residual. (Not at::instance_norm: in torch 2.14 its CPU backward
  // is wrong for N = 1 when the incoming gradient is channels_last.)
  auto x64 = x.to(at::kDouble).detach().requires_grad_(true);
  auto w64 = affine ? w->to(at::kDouble).detach().requires_grad_(true) : at::Tensor();
  auto b64 = affine ? b->to(at::kDouble).detach().requires_grad_(true) : at::Tensor();
  const auto mu = x64.mean({2, 3}, true);
  const auto var = (x64 - mu).square().mean({2, 3}, true);
  auto z = (x64 - mu) * at::rsqrt(var + 1e-5);
  if (affine) z = z * w64.view({1, -1, 1, 1}) + b64.view({1, -1, 1, 1});
  auto ref = activate(z, act, slope);
  if (residual) ref = ref + r->to(at::kDouble);
  ref.backward(go.to(at::kDouble));

  const auto [y, mean, rstd] = op_forward(x, w, b, r, 1e-5, act, slope);
  expect(y.scalar_type() == dtype, name + ": output dtype");
  expect(!channels_last || y.is_contiguous(at::MemoryFormat::ChannelsLast), name + ": output keeps channels_last");
  expect(close(y, ref, rtol), name + ": forward vs at::instance_norm + activation");
  expect(mean.sizes() == at::IntArrayRef({sizes[0], C}) && rstd.sizes() == mean.sizes(), name + ": (N, C) stats");
  const auto [dx, dw, db] = op_backward(go, x, w, b, mean, rstd, act, slope);
  expect(close(dx, x64.grad(), rtol), name + ": grad_input vs autograd");
  if (affine) {
    expect(close(dw, w64.grad(), rtol), name + ": grad_weight vs autograd");
    expect(close(db, b64.grad(), rtol), name + ": grad_bias vs autograd");
  }
}

void check_device(at::Device device) {
  const std::vector<std::pair<at::ScalarType, std::string>> dtypes = {
      {at::kFloat, "float32"}, {at::kDouble, "float64"}, {at::kBFloat16, "bfloat16"}, {at::kHalf, "float16"}};
  const std::vector<std::vector<int64_t>> shapes = {{2, 5, 7, 13}, {1, 3, 130, 131}, {2, 70, 9, 10}};
  for (const auto& [dtype, dname] : dtypes) {
    for (const auto& sizes : shapes) {
      for (const bool cl : {false, true}) {
        for (const std::string act : {"relu", "leaky_relu", "none"}) {
          const bool both = act != "relu";  // affine and residual on for two of the three
          const std::string name = device.str() + " " + dname + " " + std::to_string(sizes[1]) + "x" +
                                   std::to_string(sizes[2]) + "x" + std::to_string(sizes[3]) +
                                   (cl ? " channels_last " : " contiguous ") + act;
          check_case(name, sizes, dtype, cl, act, both, both, device);
        }
      }
    }
  }
  bool threw = false;
  try {
    op_forward(at::randn({2, 3, 4, 5}).to(device), std::nullopt, std::nullopt, std::nullopt, 1e-5, "gelu", 0.2);
  } catch (const c10::Error&) {
    threw = true;
  }
  expect(threw, device.str() + ": an unknown activation raises");
}

void check_threads() {
  // Bitwise the same results for any thread count (fixed pieces, fixed-order sums).
  for (const bool cl : {false, true}) {
    auto x = at::randn({1, 20, 130, 131}) * 2 + 1;
    if (cl) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    const auto go = at::randn_like(x);
    const auto w = at::randn({20});
    const int saved = at::get_num_threads();
    std::vector<at::Tensor> runs[2];
    for (int k = 0; k < 2; ++k) {
      at::set_num_threads(k == 0 ? 1 : std::max(2, saved));
      const auto [y, mean, rstd] = op_forward(x, w, w, std::nullopt, 1e-5, "leaky_relu", 0.2);
      const auto [dx, dw, db] = op_backward(go, x, w, w, mean, rstd, "leaky_relu", 0.2);
      runs[k] = {y, mean, rstd, dx, dw, db};
    }
    at::set_num_threads(saved);
    bool same = true;
    for (size_t i = 0; i < runs[0].size(); ++i) same = same && at::equal(runs[0][i], runs[1][i]);
    expect(same, std::string("cpu ") + (cl ? "channels_last" : "contiguous") + ": same bits with 1 and 2+ threads");
  }
}

}  // namespace

int main() {
  return fastgan_test::run_checks(check_device, check_threads);
}
