// fastgan::cycle_losses and fastgan::cycle_losses_backward on CUDA devices.
//
// The four L1 terms of a CycleGAN iteration (csrc/cycle_losses.h: sides, term order,
// sign codes) in one deterministic two-pass reduction, no float atomics:
//   pass 1: a grid of G blocks (G depends on the element count only, not on the
//           device) reads the six images once, 16-byte loads when every pointer is
//           16-byte aligned; each thread sums the four |x - t| over a fixed grid-stride
//           set of element indices (double for float32/64, float for bf16/fp16) and,
//           when asked, writes the code byte of each of its indices; each block reduces
//           its threads in a fixed tree and writes four double partials;
//   pass 2: one block adds the G partials of each term in a fixed tree and writes
//           weight_j * (sum_j / numel_j) in the inputs' dtype. With G == 1, pass 1 does.
// Backward: elementwise from the code bytes: grad = sign * scale_j with
// scale_j = (grad[j] * weight_j) / numel rounded once to the dtype, grad read on the
// device (no host sync); real images' gradients (when asked) -(sum of their two terms).
// All launches are on the current stream; nothing synchronizes with the host, so the
// op can be captured in a CUDA graph.
//
// Memory traffic floor (n = elements per image, s = bytes per element, identity terms
// on, real images without grad): forward 6ns read + n written (codes), backward n read
// + 4ns written; recomputing in backward instead would move 16ns (see
// csrc/cpu/cycle_losses.cpp). Fraction of the floor reached on a GPU: recorded by
// make bench-kernels / benchmarks/gpu_suite.sh in benchmarks/results/kernels_<card>.md.
#include "../cycle_losses.h"
#include "l1_elements.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
// c10/cuda headers only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers,
// which a minimal toolkit lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace fastgan::cuda {
namespace {

using namespace fastgan::cycle;

constexpr int kThreads = 256;       // threads per block, pass 1 and backward
constexpr int kMaxBlocks = 2048;    // pass 1 grid at most
constexpr int kMinPerThread = 16;   // pass 1: element indices per thread before adding blocks
constexpr int kFinalThreads = 256;  // pass 2: one block
constexpr int kMaxBackwardBlocks = 8192;

template <typename T>
__device__ __forceinline__ int code_dev(T x, T t) {
  return static_cast<int>(x > t) | (static_cast<int>(x < t) << 1);
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t to_scalar(double v) {
  return static_cast<scalar_t>(static_cast<at::opmath_type<scalar_t>>(v));
}

// Four sums over the block in a fixed tree (warp shuffles, then warp 0); valid in
// thread 0.
template <typename acc_t, int kBlock>
__device__ __forceinline__ void block_sum4(acc_t (&v)[kTerms]) {
  static_assert(kBlock % 32 == 0 && kBlock <= 1024, "whole warps, at most 32 of them");
  __shared__ acc_t warp_sums[kTerms][kBlock / 32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int j = 0; j < kTerms; ++j) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      v[j] += __shfl_down_sync(0xffffffffu, v[j], offset);
    }
    if (lane == 0) {
      warp_sums[j][warp] = v[j];
    }
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int j = 0; j < kTerms; ++j) {
      v[j] = lane < kBlock / 32 ? warp_sums[j][lane] : acc_t(0);
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) {
        v[j] += __shfl_down_sync(0xffffffffu, v[j], offset);
      }
    }
  }
}

template <typename scalar_t>
struct Inputs {
  const scalar_t* xa;  // rec_A
  const scalar_t* ra;  // real_A
  const scalar_t* ib;  // idt_B (null without identity terms)
  const scalar_t* xb;  // rec_B
  const scalar_t* rb;  // real_B
  const scalar_t* ia;  // idt_A (null without identity terms)
};

// What turns sums into losses, and sign codes into gradients.
struct Terms {
  double weight[kTerms];
  double numel[kTerms];
  bool present[kTerms];
};

template <typename scalar_t>
__device__ __forceinline__ void write_losses(const double (&s)[kTerms], const Terms& t, scalar_t* out) {
#pragma unroll
  for (int j = 0; j < kTerms; ++j) {
    out[j] = to_scalar<scalar_t>(t.present[j] ? t.weight[j] * (s[j] / t.numel[j]) : 0.0);
  }
}

// Pass 1. kVec elements per load (16 bytes) when every pointer is 16-byte aligned, over
// the indices both sides have; the rest (and everything with kVec == 1) one by one.
template <typename scalar_t, int kVec, bool kIdt>
__global__ void __launch_bounds__(kThreads)
    cycle_partial_kernel(Inputs<scalar_t> in, int64_t n_A, int64_t n_B, uint8_t* __restrict__ codes,
                         double* __restrict__ partial, scalar_t* __restrict__ out, Terms terms) {
  using acc_t = typename AccOf<scalar_t>::type;
  using P = Pack<scalar_t, kVec>;
  using C = Pack<uint8_t, kVec>;
  const int64_t n_both = n_A < n_B ? n_A : n_B;
  const int64_t n_max = n_A < n_B ? n_B : n_A;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t n_packs = n_both / kVec;
  acc_t s[kTerms] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
  for (int64_t p = first; p < n_packs; p += stride) {
    const P xa = reinterpret_cast<const P*>(in.xa)[p];
    const P ra = reinterpret_cast<const P*>(in.ra)[p];
    const P xb = reinterpret_cast<const P*>(in.xb)[p];
    const P rb = reinterpret_cast<const P*>(in.rb)[p];
    P ia, ib;
    if constexpr (kIdt) {
      ia = reinterpret_cast<const P*>(in.ia)[p];
      ib = reinterpret_cast<const P*>(in.ib)[p];
    }
    C c;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const acc_t vxa = static_cast<acc_t>(xa.v[k]), vra = static_cast<acc_t>(ra.v[k]);
      const acc_t vxb = static_cast<acc_t>(xb.v[k]), vrb = static_cast<acc_t>(rb.v[k]);
      s[kCycleA] += abs_of(vxa - vra);
      s[kCycleB] += abs_of(vxb - vrb);
      int code = code_dev(vxa, vra) | (code_dev(vxb, vrb) << 2);
      if constexpr (kIdt) {
        const acc_t via = static_cast<acc_t>(ia.v[k]), vib = static_cast<acc_t>(ib.v[k]);
        s[kIdtA] += abs_of(via - vrb);
        s[kIdtB] += abs_of(vib - vra);
        code |= (code_dev(via, vrb) << 4) | (code_dev(vib, vra) << 6);
      }
      c.v[k] = static_cast<uint8_t>(code);
    }
    if (codes != nullptr) {
      reinterpret_cast<C*>(codes)[p] = c;
    }
  }
  for (int64_t i = n_packs * kVec + first; i < n_max; i += stride) {
    int code = 0;
    if (i < n_A) {
      const acc_t vxa = static_cast<acc_t>(in.xa[i]), vra = static_cast<acc_t>(in.ra[i]);
      s[kCycleA] += abs_of(vxa - vra);
      code |= code_dev(vxa, vra);
      if constexpr (kIdt) {
        const acc_t vib = static_cast<acc_t>(in.ib[i]);
        s[kIdtB] += abs_of(vib - vra);
        code |= code_dev(vib, vra) << 6;
      }
    }
    if (i < n_B) {
      const acc_t vxb = static_cast<acc_t>(in.xb[i]), vrb = static_cast<acc_t>(in.rb[i]);
      s[kCycleB] += abs_of(vxb - vrb);
      code |= code_dev(vxb, vrb) << 2;
      if constexpr (kIdt) {
        const acc_t via = static_cast<acc_t>(in.ia[i]);
        s[kIdtA] += abs_of(via - vrb);
        code |= code_dev(via, vrb) << 4;
      }
    }
    if (codes != nullptr) {
      codes[i] = static_cast<uint8_t>(code);
    }
  }
  block_sum4<acc_t, kThreads>(s);
  if (threadIdx.x == 0) {
    if (gridDim.x == 1) {
      const double d[kTerms] = {static_cast<double>(s[0]), static_cast<double>(s[1]), static_cast<double>(s[2]),
                                static_cast<double>(s[3])};
      write_losses(d, terms, out);
    } else {
#pragma unroll
      for (int j = 0; j < kTerms; ++j) {
        partial[blockIdx.x * kTerms + j] = static_cast<double>(s[j]);
      }
    }
  }
}

// Pass 2: one block of kFinalThreads.
template <typename scalar_t>
__global__ void __launch_bounds__(kFinalThreads)
    cycle_finalize_kernel(const double* __restrict__ partial, int n_partial, Terms terms, scalar_t* __restrict__ out) {
  double s[kTerms] = {0.0, 0.0, 0.0, 0.0};
  for (int i = threadIdx.x; i < n_partial; i += kFinalThreads) {
#pragma unroll
    for (int j = 0; j < kTerms; ++j) {
      s[j] += partial[i * kTerms + j];
    }
  }
  block_sum4<double, kFinalThreads>(s);
  if (threadIdx.x == 0) {
    write_losses(s, terms, out);
  }
}

template <typename scalar_t>
struct Outputs {
  scalar_t* real_A;  // null: not asked for
  scalar_t* rec_A;
  scalar_t* real_B;
  scalar_t* rec_B;
  scalar_t* idt_A;
  scalar_t* idt_B;
};

template <typename T>
__device__ __forceinline__ T sign_of(int code) {
  return static_cast<T>(code & 1) - static_cast<T>(code >> 1);
}

// The gradients at element indices with code byte `c`, for side A (a) and/or side B (b).
template <typename scalar_t>
struct Grads {
  using opmath_t = at::opmath_type<scalar_t>;
  opmath_t scale[kTerms];  // each the dtype's rounding of grad[j] * weight_j / numel_j

  __device__ __forceinline__ scalar_t term(int c, int j) const {
    return static_cast<scalar_t>(sign_of<opmath_t>((c >> (2 * j)) & 3) * scale[j]);
  }
  __device__ __forceinline__ scalar_t real(int c, int cyc, int idt) const {
    return static_cast<scalar_t>(-(sign_of<opmath_t>((c >> (2 * cyc)) & 3) * scale[cyc] +
                                   sign_of<opmath_t>((c >> (2 * idt)) & 3) * scale[idt]));
  }
};

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    cycle_backward_kernel(const scalar_t* __restrict__ grad, const uint8_t* __restrict__ codes, Outputs<scalar_t> o,
                          int64_t n_A, int64_t n_B, Terms terms) {
  using P = Pack<scalar_t, kVec>;
  using C = Pack<uint8_t, kVec>;
  using opmath_t = at::opmath_type<scalar_t>;
  Grads<scalar_t> g;
#pragma unroll
  for (int j = 0; j < kTerms; ++j) {
    const double gj = static_cast<double>(static_cast<opmath_t>(grad[j]));
    g.scale[j] = static_cast<opmath_t>(to_scalar<scalar_t>((gj * terms.weight[j]) / terms.numel[j]));
  }
  const int64_t n_both = n_A < n_B ? n_A : n_B;
  const int64_t n_max = n_A < n_B ? n_B : n_A;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t n_packs = n_both / kVec;
  for (int64_t p = first; p < n_packs; p += stride) {
    const C c = reinterpret_cast<const C*>(codes)[p];
    P v;
    if (o.rec_A != nullptr) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) v.v[k] = g.term(c.v[k], kCycleA);
      reinterpret_cast<P*>(o.rec_A)[p] = v;
    }
    if (o.idt_B != nullptr) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) v.v[k] = g.term(c.v[k], kIdtB);
      reinterpret_cast<P*>(o.idt_B)[p] = v;
    }
    if (o.real_A != nullptr) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) v.v[k] = g.real(c.v[k], kCycleA, kIdtB);
      reinterpret_cast<P*>(o.real_A)[p] = v;
    }
    if (o.rec_B != nullptr) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) v.v[k] = g.term(c.v[k], kCycleB);
      reinterpret_cast<P*>(o.rec_B)[p] = v;
    }
    if (o.idt_A != nullptr) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) v.v[k] = g.term(c.v[k], kIdtA);
      reinterpret_cast<P*>(o.idt_A)[p] = v;
    }
    if (o.real_B != nullptr) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) v.v[k] = g.real(c.v[k], kCycleB, kIdtA);
      reinterpret_cast<P*>(o.real_B)[p] = v;
    }
  }
  for (int64_t i = n_packs * kVec + first; i < n_max; i += stride) {
    const int c = codes[i];
    if (i < n_A) {
      if (o.rec_A != nullptr) o.rec_A[i] = g.term(c, kCycleA);
      if (o.idt_B != nullptr) o.idt_B[i] = g.term(c, kIdtB);
      if (o.real_A != nullptr) o.real_A[i] = g.real(c, kCycleA, kIdtB);
    }
    if (i < n_B) {
      if (o.rec_B != nullptr) o.rec_B[i] = g.term(c, kCycleB);
      if (o.idt_A != nullptr) o.idt_A[i] = g.term(c, kIdtA);
      if (o.real_B != nullptr) o.real_B[i] = g.real(c, kCycleB, kIdtA);
    }
  }
}

inline bool aligned16(const void* p) {
  return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

Terms make_terms(double lambda_A, double lambda_B, double lambda_identity, bool has_idt, int64_t n_A, int64_t n_B) {
  const auto w = term_weights(lambda_A, lambda_B, lambda_identity, has_idt);
  const int64_t n[kTerms] = {n_A, n_B, n_B, n_A};
  Terms t;
  for (int j = 0; j < kTerms; ++j) {
    t.weight[j] = w[j];
    t.numel[j] = static_cast<double>(n[j]);
    t.present[j] = j < 2 || has_idt;
  }
  return t;
}

std::tuple<at::Tensor, at::Tensor> cycle_losses_cuda(const at::Tensor& real_A, const at::Tensor& rec_A,
                                                     const at::Tensor& real_B, const at::Tensor& rec_B,
                                                     const std::optional<at::Tensor>& idt_A,
                                                     const std::optional<at::Tensor>& idt_B, double lambda_A,
                                                     double lambda_B, double lambda_identity, bool compute_signs) {
  const ForwardTensors t = forward_tensors(real_A, rec_A, real_B, rec_B, idt_A, idt_B, compute_signs);
  const c10::cuda::OptionalCUDAGuard guard(real_A.device());  // (after the checks: real_A may not be a CUDA tensor)
  const Terms terms = make_terms(lambda_A, lambda_B, lambda_identity, t.has_idt, t.n_A, t.n_B);
  const int64_t want = (t.n_max + static_cast<int64_t>(kThreads) * kMinPerThread - 1) /
                       (static_cast<int64_t>(kThreads) * kMinPerThread);
  const int blocks = static_cast<int>(std::min<int64_t>(std::max<int64_t>(want, 1), kMaxBlocks));
  at::Tensor partial;
  if (blocks > 1) {
    partial = at::empty({blocks * kTerms}, real_A.options().dtype(at::kDouble));
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real_A.scalar_type(), "fastgan_cycle_losses_cuda", [&] {
    const Inputs<scalar_t> in = {t.a.rec.const_data_ptr<scalar_t>(),
                                 t.a.real.const_data_ptr<scalar_t>(),
                                 t.has_idt ? t.a.idt.const_data_ptr<scalar_t>() : nullptr,
                                 t.b.rec.const_data_ptr<scalar_t>(),
                                 t.b.real.const_data_ptr<scalar_t>(),
                                 t.has_idt ? t.b.idt.const_data_ptr<scalar_t>() : nullptr};
    uint8_t* cp = compute_signs && t.n_max > 0 ? t.signs.mutable_data_ptr<uint8_t>() : nullptr;
    double* pp = blocks > 1 ? partial.mutable_data_ptr<double>() : nullptr;
    scalar_t* op = t.losses.mutable_data_ptr<scalar_t>();
    constexpr int kVec = 16 / sizeof(scalar_t);
    const bool vec = aligned16(in.xa) && aligned16(in.ra) && aligned16(in.ib) && aligned16(in.xb) &&
                     aligned16(in.rb) && aligned16(in.ia) && aligned16(cp);
    // (a macro would not do: this lambda is itself a macro argument)
    auto launch = [&](auto vec_tag, auto idt_tag) {
      constexpr int V = decltype(vec_tag)::value;
      constexpr bool I = decltype(idt_tag)::value;
      cycle_partial_kernel<scalar_t, V, I><<<blocks, kThreads, 0, stream>>>(in, t.n_A, t.n_B, cp, pp, op, terms);
    };
    using VecOn = std::integral_constant<int, kVec>;
    using VecOff = std::integral_constant<int, 1>;
    if (vec && t.has_idt) {
      launch(VecOn{}, std::true_type{});
    } else if (vec) {
      launch(VecOn{}, std::false_type{});
    } else if (t.has_idt) {
      launch(VecOff{}, std::true_type{});
    } else {
      launch(VecOff{}, std::false_type{});
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (blocks > 1) {
      cycle_finalize_kernel<scalar_t><<<1, kFinalThreads, 0, stream>>>(pp, blocks, terms, op);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {t.losses, t.signs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> cycle_losses_backward_cuda(
    const at::Tensor& grad, const at::Tensor& signs, const at::Tensor& real_A, const at::Tensor& rec_A,
    const at::Tensor& real_B, const at::Tensor& rec_B, const std::optional<at::Tensor>& idt_A,
    const std::optional<at::Tensor>& idt_B, double lambda_A, double lambda_B, double lambda_identity,
    std::array<bool, 6> output_mask) {
  const BackwardTensors t = backward_tensors(grad, signs, real_A, rec_A, real_B, rec_B, idt_A, idt_B, output_mask);
  const c10::cuda::OptionalCUDAGuard guard(real_A.device());
  if (t.n_max == 0) {
    return {t.out[0], t.out[1], t.out[2], t.out[3], t.out[4], t.out[5]};
  }
  const Terms terms = make_terms(lambda_A, lambda_B, lambda_identity, t.has_idt, t.n_A, t.n_B);
  const at::Tensor g = grad.to(real_A.scalar_type()).contiguous();  // no copy when it already is
  const at::Tensor codes = signs.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real_A.scalar_type(), "fastgan_cycle_losses_backward_cuda",
                                  [&] {
    auto ptr = [&](int i) { return t.out[i].numel() > 0 ? t.out[i].mutable_data_ptr<scalar_t>() : nullptr; };
    const Outputs<scalar_t> o = {ptr(0), ptr(1), ptr(2), ptr(3), ptr(4), ptr(5)};
    const uint8_t* cp = codes.const_data_ptr<uint8_t>();
    constexpr int kVec = 16 / sizeof(scalar_t);
    const bool vec = aligned16(o.real_A) && aligned16(o.rec_A) && aligned16(o.real_B) && aligned16(o.rec_B) &&
                     aligned16(o.idt_A) && aligned16(o.idt_B) && reinterpret_cast<std::uintptr_t>(cp) % kVec == 0;
    const int64_t per_block = static_cast<int64_t>(kThreads) * (vec ? kVec : 1);
    const int64_t want = std::max<int64_t>((t.n_max + per_block - 1) / per_block, 1);
    const int blocks = static_cast<int>(std::min<int64_t>(want, kMaxBackwardBlocks));
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    if (vec) {
      cycle_backward_kernel<scalar_t, kVec><<<blocks, kThreads, 0, stream>>>(gp, cp, o, t.n_A, t.n_B, terms);
    } else {
      cycle_backward_kernel<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(gp, cp, o, t.n_A, t.n_B, terms);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {t.out[0], t.out[1], t.out[2], t.out[3], t.out[4], t.out[5]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("cycle_losses", &cycle_losses_cuda);
  m.impl("cycle_losses_backward", &cycle_losses_backward_cuda);
}

}  // namespace fastgan::cuda
