// fastgan::l1_loss / l1_loss_backward through the dispatcher, against at::l1_loss
// (forward, and its autograd backward) on random inputs: every dtype, contiguous,
// channels_last, a strided slice and a mixed pair, with exact ties; determinism
// across thread counts. CUDA too when a device is present. Exit status 1 on any failure.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"

namespace {

using fastgan_test::expect;

at::Tensor op_l1_loss(const at::Tensor& x, const at::Tensor& t, double w) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::l1_loss", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  return op.call(x, t, w);
}

std::tuple<at::Tensor, at::Tensor> op_l1_loss_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& t,
                                                       double w) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastgan::l1_loss_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>();
  return op.call(g, x, t, w);
}

// Relative tolerance by dtype (the design's: fp32 ~1e-5, bf16 ~1e-2).
double rtol_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return 1e-12;
    case at::kFloat: return 1e-5;
    case at::kHalf: return 2e-3;
    default: return 1e-2;
  }
}

bool close(const at::Tensor& got, const at::Tensor& want, double rtol) {
  auto g = got.to(at::kDouble).cpu();
  auto w = want.to(at::kDouble).cpu();
  if (g.sizes() != w.sizes() || !g.isfinite().all().item<bool>()) return false;
  return ((g - w).abs() <= rtol * w.abs() + 1e-12).all().item<bool>();
}

// Random (never zero) input and target of `sizes`; about a tenth of the target equal to
// the input (ties: sign(0) = 0).
std::pair<at::Tensor, at::Tensor> random_pair(at::IntArrayRef sizes, at::ScalarType dtype) {
  auto x = at::randn(sizes, at::kDouble);
  auto t = at::randn(sizes, at::kDouble);
  auto ties = at::rand(sizes, at::kDouble) < 0.1;
  t = at::where(ties, x, t);
  return {x.to(dtype), t.to(dtype)};
}

// Compares the op with at::l1_loss (weighted, mean) on x, t as given (any layout).
void check_case(const std::string& name, const at::Tensor& x, const at::Tensor& t, double w) {
  const auto dtype = x.scalar_type();
  const double rtol = rtol_of(dtype);

  // Forward: against at::l1_loss in float64, then in the dtype itself (the aten op).
  const auto got = op_l1_loss(x, t, w);
  const auto ref64 = at::l1_loss(x.to(at::kDouble), t.to(at::kDouble)) * w;
  expect(got.dim() == 0 && got.scalar_type() == dtype, name + ": 0-dim loss in the input dtype");
  expect(close(got, ref64, rtol), name + ": forward vs at::l1_loss (float64)");
  if (dtype == at::kFloat && x.device().is_cpu()) {
    // the CPU kernel sums in double: the float32 rounding of the float64 reference
    expect(got.item<float>() == ref64.to(at::kFloat).item<float>(), name + ": forward is the float32 rounding");
  }

  // Backward: against autograd through at::l1_loss in float64.
  auto xr = x.to(at::kDouble).detach().requires_grad_(true);
  auto tr = t.to(at::kDouble).detach().requires_grad_(true);
  (at::l1_loss(xr, tr) * w).backward();
  const auto grad = at::ones({}, x.options());
  const auto [gi, gt] = op_l1_loss_backward(grad, x, t, w);
  expect(gi.sizes() == x.sizes() && gt.sizes() == x.sizes(), name + ": gradient shapes");
  expect(close(gi, xr.grad(), rtol), name + ": grad_input vs autograd(at::l1_loss)");
  expect(close(gt, tr.grad(), rtol), name + ": grad_target vs autograd(at::l1_loss)");
  const auto tie = (x == t).cpu();
  expect(gi.cpu().masked_select(tie).eq(0).all().item<bool>(), name + ": sign(0) = 0 at ties");
}

void check_device(at::Device device) {
  const std::vector<std::pair<at::ScalarType, std::string>> dtypes = {
      {at::kFloat, "float32"}, {at::kDouble, "float64"}, {at::kBFloat16, "bfloat16"}, {at::kHalf, "float16"}};
  const std::string dev = device.str();
  for (const auto& [dtype, dname] : dtypes) {
    // numel not a multiple of any vector width; the large one spans several chunks/blocks
    for (const std::vector<int64_t>& sizes : {std::vector<int64_t>{2, 3, 17, 13}, std::vector<int64_t>{4, 3, 96, 97}}) {
      const std::string shape = std::to_string(at::IntArrayRef(sizes).size()) + "d/" +
                                std::to_string(c10::multiply_integers(sizes));
      auto [x, t] = random_pair(sizes, dtype);
      x = x.to(device);
      t = t.to(device);
      const std::string base = dev + " " + dname + " " + shape;
      check_case(base + " contiguous", x, t, 1.0);
      check_case(base + " channels_last", x.contiguous(at::MemoryFormat::ChannelsLast),
                 t.contiguous(at::MemoryFormat::ChannelsLast), 0.7);
      check_case(base + " mixed layouts", x.contiguous(at::MemoryFormat::ChannelsLast), t, 2.5);
      check_case(base + " strided slice", x.slice(3, 1, std::nullopt, 2), t.slice(3, 1, std::nullopt, 2), 10.0);
    }
  }
  // errors are errors
  auto [x, t] = random_pair({4, 5}, at::kFloat);
  bool threw = false;
  try {
    op_l1_loss(x.to(device), t.to(device).narrow(1, 0, 4), 1.0);
  } catch (const c10::Error&) {
    threw = true;
  }
  expect(threw, dev + ": shape mismatch raises");
}

void check_threads() {
  // Bitwise the same loss for any thread count (fixed-order chunked reduction).
  auto [x, t] = random_pair({8, 3, 128, 129}, at::kFloat);
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = op_l1_loss(x, t, 1.0);
  at::set_num_threads(std::max(2, saved));
  const auto many = op_l1_loss(x, t, 1.0);
  at::set_num_threads(saved);
  expect(at::equal(one, many), "cpu: same bits with 1 and " + std::to_string(std::max(2, saved)) + " threads");
}

}  // namespace

int main() {
  return fastgan_test::run_checks(check_device, check_threads);
}
