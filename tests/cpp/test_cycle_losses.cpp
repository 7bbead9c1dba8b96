// fastgan::cycle_losses / cycle_losses_backward through the dispatcher, against four
// at::l1_loss terms (forward, and their autograd backward) in float64 on random inputs
// with exact ties: every dtype; contiguous, channels_last, strided slices and mixed
// layouts; with and without identity terms; sides of different sizes; determinism
// across thread counts. CUDA too when a device is present. Exit status 1 on any failure.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"

namespace {

using fastgan_test::expect;

using Opt = std::optional<at::Tensor>;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

std::tuple<at::Tensor, at::Tensor> op_forward(const std::array<at::Tensor, 4>& t, const Opt& idt_A, const Opt& idt_B,
                                              double la, double lb, double li, bool signs) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::cycle_losses", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, const at::Tensor&, const Opt&,
                                                                 const Opt&, double, double, double, bool)>();
  return op.call(t[0], t[1], t[2], t[3], idt_A, idt_B, la, lb, li, signs);
}

Grads op_backward(const at::Tensor& grad, const at::Tensor& signs, const std::array<at::Tensor, 4>& t,
                  const Opt& idt_A, const Opt& idt_B, double la, double lb, double li, std::array<bool, 6> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::cycle_losses_backward", "")
                       .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, double, double,
                                    double, std::array<bool, 6>)>();
  return op.call(grad, signs, t[0], t[1], t[2], t[3], idt_A, idt_B, la, lb, li, mask);
}

double rtol_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return 1e-12;
    case at::kFloat: return 1e-5;
    case at::kHalf: return 2e-3;
    default: return 1e-2;
  }
}

bool close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol = 1e-30) {
  auto g = got.to(at::kDouble).cpu();
  auto w = want.to(at::kDouble).cpu();
  if (g.sizes() != w.sizes() || !g.isfinite().all().item<bool>()) return false;
  return ((g - w).abs() <= rtol * w.abs() + atol).all().item<bool>();
}

// A random (never zero) image like `real`, equal to it at about a tenth of the elements.
at::Tensor near(const at::Tensor& real) {
  auto x = at::randn(real.sizes(), real.options());
  return at::where(at::rand(real.sizes(), real.options()) < 0.1, real, x);
}

// t's values in a non-dense view of the same shape (every other element of a buffer).
at::Tensor strided(const at::Tensor& t) {
  auto sizes = t.sizes().vec();
  sizes.back() *= 2;
  auto view = at::empty(sizes, t.options()).slice(-1, 1, std::nullopt, 2);
  view.copy_(t);
  return view;
}

// One case: images in float64 (real_A, rec_A, real_B, rec_B, idt_A, idt_B), `layout` applied
// after the conversion to `dtype` and `device`.
void check_case(const std::string& name, std::array<at::Tensor, 6> img, bool idt, at::ScalarType dtype,
                at::Device device, const std::string& layout) {
  const double la = 10.0, lb = 7.0, li = 0.3;
  const double rtol = rtol_of(dtype);
  for (auto& t : img) {
    t = t.to(device, dtype);
    if (layout == "channels_last") t = t.contiguous(at::MemoryFormat::ChannelsLast);
    if (layout == "slice") t = t.slice(3, 1, std::nullopt, 2);
  }
  if (layout == "mixed") {  // each side mixes orders: copies into the side's order
    img[1] = img[1].contiguous(at::MemoryFormat::ChannelsLast);
    img[3] = strided(img[3]);
    img[4] = img[4].contiguous(at::MemoryFormat::ChannelsLast);
    img[5] = strided(img[5]);
  }
  const std::array<at::Tensor, 4> t = {img[0], img[1], img[2], img[3]};
  const Opt idt_A = idt ? Opt(img[4]) : std::nullopt;
  const Opt idt_B = idt ? Opt(img[5]) : std::nullopt;
  const auto [losses, signs] = op_forward(t, idt_A, idt_B, la, lb, li, true);

  // float64 reference: the four l1 terms and their gradients by autograd
  std::array<at::Tensor, 6> r;
  for (int i = 0; i < 6; ++i) r[i] = img[i].to(at::kDouble).detach().requires_grad_(true);
  auto zero = at::zeros({}, r[0].options().requires_grad(false));
  auto ref = at::stack({at::l1_loss(r[1], r[0]) * la, at::l1_loss(r[3], r[2]) * lb,
                        idt ? at::l1_loss(r[4], r[2]) * (lb * li) : zero,
                        idt ? at::l1_loss(r[5], r[0]) * (la * li) : zero});
  const auto coeffs = at::tensor({1.0, -2.0, 3.0, 0.5}, r[0].options().requires_grad(false));
  (ref * coeffs).sum().backward();

  expect(losses.sizes() == at::IntArrayRef({4}) && losses.scalar_type() == dtype, name + ": 4 losses in the dtype");
  expect(close(losses, ref.detach(), rtol), name + ": losses vs at::l1_loss (float64)");
  expect(signs.scalar_type() == at::kByte && signs.numel() == std::max(img[0].numel(), img[2].numel()),
         name + ": one code byte per element index");

  const auto grads = op_backward(coeffs.to(device, dtype), signs, t, idt_A, idt_B, la, lb, li,
                                 {true, true, true, true, idt, idt});
  const std::array<at::Tensor, 6> g = {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads),
                                       std::get<3>(grads), std::get<4>(grads), std::get<5>(grads)};
  const char* names[6] = {"real_A", "rec_A", "real_B", "rec_B", "idt_A", "idt_B"};
  for (int i = 0; i < 6; ++i) {
    if (i >= 4 && !idt) {
      expect(g[i].numel() == 0, name + ": no " + names[i] + " gradient without identity terms");
      continue;
    }
    const bool real = i == 0 || i == 2;
    const double atol = real ? rtol * r[i].grad().abs().max().item<double>() : 0.0;
    expect(g[i].sizes() == img[i].sizes() && close(g[i], r[i].grad(), rtol, atol),
           name + ": grad " + names[i] + " vs autograd(at::l1_loss)");
  }
  const auto tie = (img[1] == img[0]).cpu();
  expect(g[1].cpu().masked_select(tie).eq(0).all().item<bool>(), name + ": sign(0) = 0 at ties");
}

void check_device(at::Device device) {
  const std::vector<std::pair<at::ScalarType, std::string>> dtypes = {
      {at::kFloat, "float32"}, {at::kDouble, "float64"}, {at::kBFloat16, "bfloat16"}, {at::kHalf, "float16"}};
  const std::string dev = device.str();
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  for (const auto& [dtype, dname] : dtypes) {
    for (const std::vector<int64_t>& sizes : {std::vector<int64_t>{2, 3, 17, 13}, std::vector<int64_t>{2, 3, 61, 67}}) {
      auto real_A = at::randn(sizes, f64), real_B = at::randn(sizes, f64);
      std::array<at::Tensor, 6> img = {real_A, near(real_A), real_B, near(real_B), near(real_B), near(real_A)};
      for (const std::string layout : {"contiguous", "channels_last", "slice", "mixed"}) {
        for (const bool idt : {true, false}) {
          const std::string name = dev + " " + dname + " " + std::to_string(real_A.numel()) + " " + layout +
                                   (idt ? " idt" : " no-idt");
          check_case(name, img, idt, dtype, device, layout);
        }
      }
    }
  }
  // sides of different sizes (input_nc != output_nc: no identity terms)
  auto real_A = at::randn({2, 3, 8, 9}, f64), real_B = at::randn({2, 1, 8, 9}, f64);
  check_case(dev + " A larger", {real_A, near(real_A), real_B, near(real_B), real_B, real_A}, false, at::kFloat,
             device, "contiguous");
  check_case(dev + " B larger", {real_B, near(real_B), real_A, near(real_A), real_A, real_B}, false, at::kFloat,
             device, "contiguous");
  // errors are errors
  bool threw = false;
  try {
    auto a = real_A.to(device, at::kFloat);
    op_forward({a, a.narrow(3, 0, 4), a, a}, std::nullopt, std::nullopt, 10.0, 10.0, 0.5, true);
  } catch (const c10::Error&) {
    threw = true;
  }
  expect(threw, dev + ": shape mismatch raises");
}

void check_threads() {
  // Bitwise the same losses for any thread count (fixed-order chunked reduction).
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  std::array<at::Tensor, 4> t = {at::randn({8, 3, 64, 65}, f32), at::randn({8, 3, 64, 65}, f32),
                                 at::randn({8, 3, 64, 65}, f32), at::randn({8, 3, 64, 65}, f32)};
  const Opt idt_A = at::randn({8, 3, 64, 65}, f32), idt_B = at::randn({8, 3, 64, 65}, f32);
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = op_forward(t, idt_A, idt_B, 10.0, 10.0, 0.5, true);
  at::set_num_threads(std::max(2, saved));
  const auto many = op_forward(t, idt_A, idt_B, 10.0, 10.0, 0.5, true);
  at::set_num_threads(saved);
  expect(at::equal(std::get<0>(one), std::get<0>(many)) && at::equal(std::get<1>(one), std::get<1>(many)),
         "cpu: same bits with 1 and " + std::to_string(std::max(2, saved)) + " threads");
}

}  // namespace

int main() {
  return fastgan_test::run_checks(check_device, check_threads);
}
