// fastgan::l1_loss and fastgan::l1_loss_backward on CUDA devices.
//
// Forward, deterministic two-pass reduction (no float atomics):
//   pass 1: a grid of G blocks (G depends on numel only, not on the device) reads
//           input and target once with 16-byte loads when aligned; each thread sums
//           |x - t| of a fixed grid-stride set of elements (double for float32/64,
//           float for bf16/fp16), each block reduces its threads in a fixed tree and
//           writes one double partial;
//   pass 2: one block adds the G partials in a fixed tree and writes
//           weight * (sum / numel) in the input's dtype.
//   With G == 1 pass 1 writes the loss itself.
// Backward: elementwise grad_input = scale * sign(x - t), grad_target = -grad_input,
// scale = (grad * weight) / numel rounded once to the dtype; grad is read on the
// device (no host sync).
// All launches are on the current stream.
//
// Memory traffic floor: forward 2 * numel * itemsize bytes read; backward
// 2 * numel * itemsize read + 2 * numel * itemsize written. Fraction reached on a GPU:
// recorded by make bench-kernels / benchmarks/gpu_suite.sh in benchmarks/results/kernels_<card>.md.
#include "../common.h"
#include "l1_elements.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
// c10/cuda headers only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers,
// which a minimal toolkit lacks, and compiles slower.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

namespace fastgan::cuda {
namespace {

constexpr int kThreads = 256;        // threads per block, pass 1 and backward
constexpr int kMaxBlocks = 2048;     // pass 1 grid at most (partials buffer size)
constexpr int kMinPerThread = 16;    // pass 1: elements per thread before adding blocks
constexpr int kFinalThreads = 1024;  // pass 2: one block
constexpr int kMaxBackwardBlocks = 8192;

// Sum over the block in a fixed tree (warp shuffles, then warp 0); the result is
// valid in thread 0.
template <typename acc_t, int kBlock>
__device__ __forceinline__ acc_t block_sum(acc_t v) {
  static_assert(kBlock % 32 == 0 && kBlock <= 1024, "whole warps, at most 32 of them");
  __shared__ acc_t warp_sums[kBlock / 32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  if (lane == 0) {
    warp_sums[warp] = v;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < kBlock / 32 ? warp_sums[lane] : acc_t(0);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      v += __shfl_down_sync(0xffffffffu, v, offset);
    }
  }
  return v;
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t to_scalar(double v) {
  return static_cast<scalar_t>(static_cast<at::opmath_type<scalar_t>>(v));
}

// Pass 1. kVec elements per load (16 bytes) when both pointers are 16-byte aligned.
template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    l1_partial_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ t, int64_t n,
                      double* __restrict__ partial, scalar_t* __restrict__ out, double weight) {
  using acc_t = typename AccOf<scalar_t>::type;
  using P = Pack<scalar_t, kVec>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t n_packs = n / kVec;
  const P* xv = reinterpret_cast<const P*>(x);
  const P* tv = reinterpret_cast<const P*>(t);
  acc_t s = acc_t(0);
  for (int64_t p = first; p < n_packs; p += stride) {
    const P xp = xv[p];
    const P tp = tv[p];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      s += abs_of(static_cast<acc_t>(xp.v[k]) - static_cast<acc_t>(tp.v[k]));
    }
  }
  for (int64_t i = n_packs * kVec + first; i < n; i += stride) {
    s += abs_of(static_cast<acc_t>(x[i]) - static_cast<acc_t>(t[i]));
  }
  s = block_sum<acc_t, kThreads>(s);
  if (threadIdx.x == 0) {
    if (gridDim.x == 1) {
      *out = to_scalar<scalar_t>(weight * (static_cast<double>(s) / static_cast<double>(n)));
    } else {
      partial[blockIdx.x] = static_cast<double>(s);
    }
  }
}

// Pass 2: one block of kFinalThreads.
template <typename scalar_t>
__global__ void __launch_bounds__(kFinalThreads)
    l1_finalize_kernel(const double* __restrict__ partial, int n_partial, int64_t n, double weight,
                       scalar_t* __restrict__ out) {
  double s = 0.0;
  for (int i = threadIdx.x; i < n_partial; i += kFinalThreads) {
    s += partial[i];
  }
  s = block_sum<double, kFinalThreads>(s);
  if (threadIdx.x == 0) {
    *out = to_scalar<scalar_t>(weight * (s / static_cast<double>(n)));
  }
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    l1_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                       const scalar_t* __restrict__ t, scalar_t* __restrict__ gi, scalar_t* __restrict__ gt,
                       int64_t n, double weight) {
  using opmath_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  const double g = static_cast<double>(static_cast<opmath_t>(grad[0]));
  const opmath_t scale = static_cast<opmath_t>(to_scalar<scalar_t>((g * weight) / static_cast<double>(n)));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t n_packs = n / kVec;
  for (int64_t p = first; p < n_packs; p += stride) {
    const P xp = reinterpret_cast<const P*>(x)[p];
    const P tp = reinterpret_cast<const P*>(t)[p];
    P a, b;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const opmath_t xk = static_cast<opmath_t>(xp.v[k]);
      const opmath_t tk = static_cast<opmath_t>(tp.v[k]);
      const opmath_t v = (static_cast<opmath_t>(xk > tk) - static_cast<opmath_t>(xk < tk)) * scale;
      a.v[k] = static_cast<scalar_t>(v);
      b.v[k] = static_cast<scalar_t>(-v);
    }
    reinterpret_cast<P*>(gi)[p] = a;
    reinterpret_cast<P*>(gt)[p] = b;
  }
  for (int64_t i = n_packs * kVec + first; i < n; i += stride) {
    const opmath_t xk = static_cast<opmath_t>(x[i]);
    const opmath_t tk = static_cast<opmath_t>(t[i]);
    const opmath_t v = (static_cast<opmath_t>(xk > tk) - static_cast<opmath_t>(xk < tk)) * scale;
    gi[i] = static_cast<scalar_t>(v);
    gt[i] = static_cast<scalar_t>(-v);
  }
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

at::Tensor l1_loss_cuda(const at::Tensor& input, const at::Tensor& target, double weight) {
  check_loss_pair("fastgan::l1_loss", input, target);
  const c10::cuda::OptionalCUDAGuard guard(input.device());
  auto out = at::empty({}, input.options());
  const int64_t n = input.numel();
  if (n == 0) {
    return out.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  // named references, not a structured binding: a lambda capturing one is C++20, and
  // torch 2.11 builds extensions as C++17
  const auto pair = dense_pair(input, target);
  const at::Tensor& x = pair.first;
  const at::Tensor& t = pair.second;
  const int64_t want = (n + static_cast<int64_t>(kThreads) * kMinPerThread - 1) /
                       (static_cast<int64_t>(kThreads) * kMinPerThread);
  const int blocks = static_cast<int>(std::min<int64_t>(std::max<int64_t>(want, 1), kMaxBlocks));
  at::Tensor partial;
  if (blocks > 1) {
    partial = at::empty({blocks}, input.options().dtype(at::kDouble));
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastgan_l1_loss_cuda", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* tp = t.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    double* pp = blocks > 1 ? partial.mutable_data_ptr<double>() : nullptr;
    constexpr int kVec = 16 / sizeof(scalar_t);
    if (aligned16(xp) && aligned16(tp)) {
      l1_partial_kernel<scalar_t, kVec><<<blocks, kThreads, 0, stream>>>(xp, tp, n, pp, op, weight);
    } else {
      l1_partial_kernel<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(xp, tp, n, pp, op, weight);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (blocks > 1) {
      l1_finalize_kernel<scalar_t><<<1, kFinalThreads, 0, stream>>>(pp, blocks, n, weight, op);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> l1_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& input,
                                                          const at::Tensor& target, double weight) {
  check_l1_backward_args(grad, input, target);
  const c10::cuda::OptionalCUDAGuard guard(input.device());
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
  const at::Tensor g = grad.to(x.scalar_type()).reshape({1});  // no copy when it already is
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastgan_l1_loss_backward_cuda", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* tp = t.const_data_ptr<scalar_t>();
    scalar_t* gip = grad_input.mutable_data_ptr<scalar_t>();
    scalar_t* gtp = grad_target.mutable_data_ptr<scalar_t>();
    constexpr int kVec = 16 / sizeof(scalar_t);
    const bool vec = aligned16(xp) && aligned16(tp) && aligned16(gip) && aligned16(gtp);
    const int64_t per_block = static_cast<int64_t>(kThreads) * (vec ? kVec : 1);
    const int blocks = static_cast<int>(std::min<int64_t>((n + per_block - 1) / per_block, kMaxBackwardBlocks));
    if (vec) {
      l1_backward_kernel<scalar_t, kVec><<<blocks, kThreads, 0, stream>>>(gp, xp, tp, gip, gtp, n, weight);
    } else {
      l1_backward_kernel<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(gp, xp, tp, gip, gtp, n, weight);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_input, grad_target};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("l1_loss", &l1_loss_cuda);
  m.impl("l1_loss_backward", &l1_loss_backward_cuda);
}

}  // namespace fastgan::cuda
