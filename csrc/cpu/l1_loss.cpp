// fastgan::l1_loss and fastgan::l1_loss_backward on the CPU.
//
// Forward: weight * mean(|input - target|), vectorized with at::vec and parallel
// with at::parallel_for over fixed chunks of kChunk elements. Each chunk's partial sum
// is computed in a fixed order and the partials are added in chunk order, so the
// result does not depend on the number of threads (bitwise).
//   float64: differences and sums in double.
//   float32: widened to double before subtracting (as the float64 reference does),
//            summed in double: the loss is the float32 rounding of the reference up
//            to the summation order of doubles.
//   bf16/fp16: in float over blocks of kBlock elements, the block sums added in double.
// Backward: elementwise grad_input = scale * sign(input - target), grad_target =
// -grad_input with scale = (grad * weight) / numel rounded once to the input's dtype
// (the same order of operations as autograd through the reference), so both are the
// dtype's rounding of the float64 reference.
//
// Memory traffic floor: forward reads input and target once (2 * numel * itemsize
// bytes); backward reads both and writes both gradients (4 * numel * itemsize).
// Non-dense or differently laid out pairs cost one extra copy (see dense_pair).
//
// ISA: built for baseline x86-64 (at::vec's generic vectors, SSE2), so the library
// runs on any x86-64 machine; no runtime AVX2/AVX-512 dispatch yet. Measured on the
// build VM (Xeon, one thread, 4x3x256x256, not a benchmark): forward float32 2.3,
// float64 1.3, bf16 1.2, fp16 0.4 Gelem/s (aten's (x - t).abs().sum() 1.1); backward
// float32 0.67, bf16 0.28, fp16 0.19 Gelem/s (bf16/fp16 limited by the generic
// float <-> 16-bit conversions).
#include "../common.h"
#include "lanes_sum.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace fastgan::cpu {
namespace {

using at::vec::Vectorized;
using fVec = Vectorized<float>;
using dVec = Vectorized<double>;

// Elements per partial sum. Fixed (not derived from the thread count) so that the
// reduction order, and hence the result, is the same with any number of threads.
constexpr int64_t kChunk = 16384;
// Chunks per parallel task at least: 32768 elements, aten's GRAIN_SIZE.
constexpr int64_t kGrainChunks = 2;
// bf16/fp16: elements summed in float before the block sum is added in double.
constexpr int64_t kBlock = 1024;

// sum(|x - t|) over n elements, in a fixed order.
inline double chunk_sum(const double* x, const double* t, int64_t n) {
  constexpr int64_t W = dVec::size();
  dVec a0(0.0), a1(0.0);
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    a0 = a0 + (dVec::loadu(x + i) - dVec::loadu(t + i)).abs();
    a1 = a1 + (dVec::loadu(x + i + W) - dVec::loadu(t + i + W)).abs();
  }
  double s = lanes_sum(a0 + a1);
  for (; i < n; ++i) {
    s += std::abs(x[i] - t[i]);
  }
  return s;
}

inline double chunk_sum(const float* x, const float* t, int64_t n) {
  constexpr int64_t W = dVec::size();
  dVec a0(0.0), a1(0.0);
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    __at_align__ double xb[2 * W];
    __at_align__ double tb[2 * W];
    for (int64_t k = 0; k < 2 * W; ++k) {  // widen (cvtps2pd)
      xb[k] = static_cast<double>(x[i + k]);
      tb[k] = static_cast<double>(t[i + k]);
    }
    a0 = a0 + (dVec::loadu(xb) - dVec::loadu(tb)).abs();
    a1 = a1 + (dVec::loadu(xb + W) - dVec::loadu(tb + W)).abs();
  }
  double s = lanes_sum(a0 + a1);
  for (; i < n; ++i) {
    s += std::abs(static_cast<double>(x[i]) - static_cast<double>(t[i]));
  }
  return s;
}

template <typename scalar_t>  // c10::BFloat16, c10::Half
inline double chunk_sum(const scalar_t* x, const scalar_t* t, int64_t n) {
  using Vec = Vectorized<scalar_t>;
  constexpr int64_t W = Vec::size();
  static_assert(kBlock % W == 0, "blocks hold whole vectors");
  const int64_t n_vec = n - n % W;
  double s = 0.0;
  int64_t i = 0;
  while (i < n_vec) {
    const int64_t block_end = std::min(n_vec, i + kBlock);
    fVec a0(0.0f), a1(0.0f);
    for (; i < block_end; i += W) {
      auto [x0, x1] = at::vec::convert_to_float<scalar_t>(Vec::loadu(x + i));
      auto [t0, t1] = at::vec::convert_to_float<scalar_t>(Vec::loadu(t + i));
      a0 = a0 + (x0 - t0).abs();
      a1 = a1 + (x1 - t1).abs();
    }
    s += lanes_sum(a0 + a1);
  }
  for (; i < n; ++i) {
    s += std::abs(static_cast<double>(static_cast<float>(x[i]) - static_cast<float>(t[i])));
  }
  return s;
}

// grad_input = scale * sign(x - t), grad_target = -grad_input over [begin, end).
template <typename scalar_t>
inline void backward_range(const scalar_t* x, const scalar_t* t, scalar_t* gi, scalar_t* gt, scalar_t scale,
                           int64_t begin, int64_t end) {
  using Vec = Vectorized<scalar_t>;
  constexpr int64_t W = Vec::size();
  int64_t i = begin;
  if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
    const Vec s(scale);
    for (; i + W <= end; i += W) {
      const Vec xv = Vec::loadu(x + i);
      const Vec tv = Vec::loadu(t + i);
      const Vec g = (xv.gt(tv) - xv.lt(tv)) * s;  // gt/lt give 1 or 0: sign(0) = 0
      g.store(gi + i);
      g.neg().store(gt + i);
    }
  } else {
    const fVec s(static_cast<float>(scale));
    for (; i + W <= end; i += W) {
      auto [x0, x1] = at::vec::convert_to_float<scalar_t>(Vec::loadu(x + i));
      auto [t0, t1] = at::vec::convert_to_float<scalar_t>(Vec::loadu(t + i));
      const fVec g0 = (x0.gt(t0) - x0.lt(t0)) * s;
      const fVec g1 = (x1.gt(t1) - x1.lt(t1)) * s;
      at::vec::convert_from_float<scalar_t>(g0, g1).store(gi + i);
      at::vec::convert_from_float<scalar_t>(g0.neg(), g1.neg()).store(gt + i);
    }
  }
  for (; i < end; ++i) {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t xi = static_cast<opmath_t>(x[i]);
    const opmath_t ti = static_cast<opmath_t>(t[i]);
    const opmath_t g = (static_cast<opmath_t>(xi > ti) - static_cast<opmath_t>(xi < ti)) * static_cast<opmath_t>(scale);
    gi[i] = static_cast<scalar_t>(g);
    gt[i] = static_cast<scalar_t>(-g);
  }
}

at::Tensor l1_loss_cpu(const at::Tensor& input, const at::Tensor& target, double weight) {
  check_loss_pair("fastgan::l1_loss", input, target);
  auto out = at::empty({}, input.options());
  const int64_t n = input.numel();
  if (n == 0) {
    return out.fill_(std::numeric_limits<double>::quiet_NaN());  // mean of nothing, as aten
  }
  // named references, not a structured binding: a lambda capturing one is C++20, and
  // torch 2.11 builds extensions as C++17
  const auto pair = dense_pair(input, target);
  const at::Tensor& x = pair.first;
  const at::Tensor& t = pair.second;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastgan_l1_loss_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* tp = t.const_data_ptr<scalar_t>();
    const int64_t n_chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> partial(n_chunks);
    at::parallel_for(0, n_chunks, kGrainChunks, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t lo = c * kChunk;
        partial[c] = chunk_sum(xp + lo, tp + lo, std::min(kChunk, n - lo));
      }
    });
    double sum = 0.0;
    for (const double p : partial) {
      sum += p;
    }
    *out.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(weight * (sum / static_cast<double>(n)));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> l1_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& input,
                                                         const at::Tensor& target, double weight) {
  check_l1_backward_args(grad, input, target);
  // named references, not a structured binding: a lambda capturing one is C++20, and
  // torch 2.11 builds extensions as C++17
  const auto pair = dense_pair(input, target);
  const at::Tensor& x = pair.first;
  const at::Tensor& t = pair.second;
  auto grad_input = at::empty_like(x);
  auto grad_target = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) {
    return {grad_input, grad_target};
  }
  const double g = grad.item<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastgan_l1_loss_backward_cpu", [&] {
    const scalar_t scale = static_cast<scalar_t>((g * weight) / static_cast<double>(n));
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* tp = t.const_data_ptr<scalar_t>();
    scalar_t* gip = grad_input.mutable_data_ptr<scalar_t>();
    scalar_t* gtp = grad_target.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      backward_range(xp, tp, gip, gtp, scale, begin, end);
    });
  });
  return {grad_input, grad_target};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("l1_loss", &l1_loss_cpu);
  m.impl("l1_loss_backward", &l1_loss_backward_cpu);
}

}  // namespace fastgan::cpu
