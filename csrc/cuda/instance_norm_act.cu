// fastgan::instance_norm_act and fastgan::instance_norm_act_backward on CUDA devices.
//
// Same math as csrc/cpu/instance_norm_act.cpp (see there): per (n, c) plane of
// HW = H * W elements, y = act((x - mean) * rstd * w + b) [+ residual]; the backward
// recomputes z and gz = grad * act'(z) from x, the saved mean and rstd ((N, C), float32;
// float64 for float64 inputs), w and b, and writes
//   dx = gz * (rstd * w) - (x - mean) * (w * rstd^3 * B / HW) - rstd * w * A / HW
// with A = sum(gz), B = sum(gz * (x - mean)), and dweight[c] = sum_n rstd * B,
// dbias[c] = sum_n A.
//
// Statistics: one pass of shifted sums, sum(x - k) and sum((x - k)^2), with k the mean
// of (up to) 32 elements spread over the plane, which every block of the plane computes
// alike (so |mean - k| is, on images, a fraction of the standard deviation and the
// variance loses few digits to cancellation). Each thread sums in float (double for float64 inputs),
// blocks reduce their threads in double in a fixed tree.
//
// Grids (all launches on the current stream, no host synchronization, no atomics):
//   NCHW: a plane is cut into S = ceil(HW / kSplit) splits of kSplit elements, one
//     256-thread block each. S == 1 (planes up to 16384 elements, e.g. 64x64, 128x128):
//     one fused kernel per plane computes the statistics, then re-reads the plane (from
//     L1/L2) to write the output. S > 1 (e.g. 1x64x1024x1024: S = 64, 4096 blocks):
//     a statistics kernel writes one double pair per (plane, split); the output kernel's
//     blocks each add their plane's S pairs in split order (a deterministic second
//     pass), and split 0 writes mean and rstd. 16-byte loads when the planes are aligned.
//     On sm_90 and newer, planes of 16384 < HW <= 65536 elements (e.g. 256x256) run
//     instead as one thread-block cluster each, a block per 8192-element chunk held in
//     registers, the blocks' sums exchanged through distributed shared memory (see
//     fwd_cluster_nchw); FASTGAN_IN_CLUSTERS=0 keeps them on the two-kernel path.
//   NHWC (channels_last): a block is 32 channels (threadIdx.x, coalesced) x 8 pixel
//     lanes (threadIdx.y) over kRowsSplit pixels; the 8 lanes are reduced in shared
//     memory in lane order. Always three kernels: the splits' pairs, then one block per
//     plane adds them once in a fixed tree (sum_partials), then the output blocks read
//     one pair per plane. (Each output block adding its planes' S pairs itself, as the
//     NCHW kernels do with their few splits, would read N*C*S^2 pairs: 1 GiB at
//     1x64x1024x1024, S = 1024.)
//   Backward likewise: (A, B) sums per (plane, split), then dx; a last small kernel sums
//   dweight and dbias over n in order (one thread per channel).
//
// Memory traffic floor (each input read once, each output written once):
//   forward  numel * itemsize * (2 + [residual]) + N * C * 8 bytes (mean, rstd);
//   backward numel * itemsize * 3 (grad and x read, dx written) + (N, C) statistics.
// Fused (S == 1) planes re-read x / grad from L1/L2 and cluster planes keep them in
// registers, so DRAM traffic is the floor; split planes read x (forward) or grad and x
// (backward) twice from DRAM when the tensor exceeds L2 (1.5x the floor forward, 5/3
// backward). Fraction of the floor reached: measured by the GPU suite's kernel benchmarks
// (benchmarks/results/kernels_<card>.md); the cluster kernels not yet (written without a GPU).
#include "../instance_norm_act.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
// c10/cuda headers only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers,
// which a minimal toolkit lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

namespace fastgan::cuda {
namespace {

namespace cg = cooperative_groups;

using instance_norm::Activation;
using instance_norm::Dims;
using instance_norm::Layout;

constexpr int kThreads = 256;         // NCHW blocks
constexpr int64_t kSplit = 16384;     // NCHW: plane elements per block at most
constexpr int kTileC = 32;            // NHWC: channels per block (threadIdx.x)
constexpr int kLanes = 8;             // NHWC: pixel lanes per block (threadIdx.y)
constexpr int64_t kRowsSplit = 1024;  // NHWC: pixels per block at most
constexpr int kShiftElems = 32;       // elements averaged for the shift k
constexpr int kParamThreads = 128;    // dweight / dbias kernel

static_assert(kSplit % 8 == 0, "splits hold whole 16-byte packs");

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// kVec elements at p + i widened to acc_t (one 16-byte load when kVec > 1).
template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_pack(const scalar_t* __restrict__ p, int64_t i, acc_t (&out)[kVec]) {
  if constexpr (kVec == 1) {
    out[0] = static_cast<acc_t>(p[i]);
  } else {
    const Pack<scalar_t, kVec> v = *reinterpret_cast<const Pack<scalar_t, kVec>*>(p + i);
#pragma unroll
    for (int k = 0; k < kVec; ++k) out[k] = static_cast<acc_t>(v.v[k]);
  }
}

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_pack(scalar_t* __restrict__ p, int64_t i, const acc_t (&in)[kVec]) {
  if constexpr (kVec == 1) {
    p[i] = static_cast<scalar_t>(in[0]);
  } else {
    Pack<scalar_t, kVec> v;
#pragma unroll
    for (int k = 0; k < kVec; ++k) v.v[k] = static_cast<scalar_t>(in[k]);
    *reinterpret_cast<Pack<scalar_t, kVec>*>(p + i) = v;
  }
}

template <typename T>
__device__ __forceinline__ T act_fn(T z, int act, T slope) {
  if (act == static_cast<int>(Activation::kRelu)) return z > T(0) ? z : (z != z ? z : T(0));
  if (act == static_cast<int>(Activation::kLeakyRelu)) return z > T(0) ? z : z * slope;
  return z;
}

template <typename T>
__device__ __forceinline__ T act_grad(T g, T z, int act, T slope) {
  // as aten's threshold_backward (a NaN z passes) and leaky_relu_backward (it takes the slope)
  if (act == static_cast<int>(Activation::kRelu)) return z <= T(0) ? T(0) : g;
  if (act == static_cast<int>(Activation::kLeakyRelu)) return z > T(0) ? g : g * slope;
  return g;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// (a, b) summed over a 1-D block of kThreads in a fixed tree; valid in thread 0.
// Uses its own shared memory: call once per kernel.
__device__ __forceinline__ void block_sum2(double& a, double& b) {
  __shared__ double sa[kThreads / 32], sb[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) {
    sa[warp] = a;
    sb[warp] = b;
  }
  __syncthreads();
  if (warp == 0) {
    a = lane < kThreads / 32 ? sa[lane] : 0.0;
    b = lane < kThreads / 32 ? sb[lane] : 0.0;
    a = warp_sum(a);
    b = warp_sum(b);
  }
}

// Element j of the m elements a plane of n averages for its shift: j * step + j % step
// with step = n / m, spread over the plane (a diagonal across rows and columns where step
// is a whole number of rows, as at 256x256), below n.
__device__ __forceinline__ int64_t shift_sample(int64_t j, int64_t n, int m) {
  const int64_t step = n / m;
  return j * step + j % step;
}

// The shift k of a plane: the mean of m = min(32, n) elements spread over it (shift_sample;
// the first 32 alone, a bright top row over a dark image, or one column, put k far from the
// mean, and the variance from the shifted sums lost to cancellation what the shift gained),
// computed by warp 0 alike in every block of the plane, as the first element plus the mean
// of the others' differences to it: a constant plane's k is its value exactly, so its sums
// and variance are exactly 0.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t plane_shift_warp(const scalar_t* __restrict__ p, int64_t stride, int64_t n,
                                                  int lane) {
  const int m = static_cast<int>(n < kShiftElems ? n : kShiftElems);
  const acc_t first = static_cast<acc_t>(p[0]);
  acc_t v = lane < m ? static_cast<acc_t>(p[shift_sample(lane, n, m) * stride]) - first : acc_t(0);
  v = warp_sum(v);
  return first + __shfl_sync(0xffffffffu, v, 0) / static_cast<acc_t>(m);
}

// mean and rstd from the shifted sums s1 = sum(x - k), s2 = sum((x - k)^2) over n (rstd 0
// for a constant plane with eps 0, as aten's InvStd).
__device__ __forceinline__ void stats_from_sums(double s1, double s2, double k, int64_t n, double eps, double& mean,
                                                double& rstd) {
  const double m1 = s1 / static_cast<double>(n);
  const double v = s2 / static_cast<double>(n) - m1 * m1;
  const double var = v < 0.0 ? 0.0 : v;  // (not fmax, which drops a NaN: an inf in the plane makes one)
  mean = k + m1;
  rstd = var + eps == 0.0 ? 0.0 : 1.0 / sqrt(var + eps);
}

// Thread 0's end of a plane's statistics from its shifted sums: mean and rstd written
// when `write` (one block per plane does), and the constants every thread of the block
// normalizes with (mean, rstd * weight[c]) left in shared memory.
template <typename acc_t>
__device__ __forceinline__ void finish_stats(double s1, double s2, acc_t k, int64_t HW, double eps, bool write,
                                             int64_t p, int64_t c, acc_t* __restrict__ mean_out,
                                             acc_t* __restrict__ rstd_out, const acc_t* __restrict__ w,
                                             acc_t& sh_mean, acc_t& sh_scale) {
  double mean, rstd;
  stats_from_sums(s1, s2, static_cast<double>(k), HW, eps, mean, rstd);
  const acc_t m = static_cast<acc_t>(mean), r = static_cast<acc_t>(rstd);
  if (write) {
    mean_out[p] = m;
    rstd_out[p] = r;
  }
  sh_mean = m;
  sh_scale = static_cast<acc_t>(static_cast<double>(r) * (w ? static_cast<double>(w[c]) : 1.0));
}

// ------------------------------------------------------------------------ NCHW forward

// Thread sums of (x - k) and (x - k)^2 over [lo, hi) of one plane.
template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void thread_shifted_sums(const scalar_t* __restrict__ x, int64_t lo, int64_t hi, acc_t k,
                                                    double& s1, double& s2) {
  acc_t a = acc_t(0), b = acc_t(0);
  for (int64_t i = lo + static_cast<int64_t>(threadIdx.x) * kVec; i < hi; i += kThreads * kVec) {
    acc_t v[kVec];
    load_pack<kVec>(x, i, v);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const acc_t d = v[j] - k;
      a += d;
      b += d * d;
    }
  }
  s1 = static_cast<double>(a);
  s2 = static_cast<double>(b);
}

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void thread_apply(const scalar_t* __restrict__ x, const scalar_t* __restrict__ res,
                                             scalar_t* __restrict__ y, int64_t lo, int64_t hi, acc_t mean,
                                             acc_t scale, acc_t shift, int act, acc_t slope) {
  for (int64_t i = lo + static_cast<int64_t>(threadIdx.x) * kVec; i < hi; i += kThreads * kVec) {
    acc_t v[kVec];
    load_pack<kVec>(x, i, v);
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = act_fn((v[j] - mean) * scale + shift, act, slope);
    if (res != nullptr) {
      acc_t r[kVec];
      load_pack<kVec>(res, i, r);
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] = r[j] + v[j];
    }
    store_pack<kVec>(y, i, v);
  }
}

// S == 1: statistics and output of plane blockIdx.x.
template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    fwd_fused_nchw(const scalar_t* __restrict__ x, const scalar_t* __restrict__ res, scalar_t* __restrict__ y,
                   at::opmath_type<scalar_t>* __restrict__ mean_out, at::opmath_type<scalar_t>* __restrict__ rstd_out,
                   const at::opmath_type<scalar_t>* __restrict__ w, const at::opmath_type<scalar_t>* __restrict__ b,
                   int64_t C, int64_t HW, double eps, int act, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t sh_k, sh_mean, sh_scale;
  const int64_t p = blockIdx.x;
  const int64_t base = p * HW;
  if (threadIdx.x < 32) {
    const acc_t k = plane_shift_warp<scalar_t, acc_t>(x + base, 1, HW, threadIdx.x);
    if (threadIdx.x == 0) sh_k = k;
  }
  __syncthreads();
  const acc_t k = sh_k;
  double s1, s2;
  thread_shifted_sums<kVec>(x + base, 0, HW, k, s1, s2);
  block_sum2(s1, s2);
  const int64_t c = p % C;
  if (threadIdx.x == 0) finish_stats(s1, s2, k, HW, eps, true, p, c, mean_out, rstd_out, w, sh_mean, sh_scale);
  __syncthreads();
  thread_apply<kVec>(x + base, res ? res + base : nullptr, y + base, 0, HW, sh_mean, sh_scale,
                     b ? b[c] : acc_t(0), act, slope);
}

// S > 1, pass 1: shifted sums of split blockIdx.x % S of plane blockIdx.x / S.
template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    fwd_stats_nchw(const scalar_t* __restrict__ x, double2* __restrict__ partial, int64_t HW, int64_t S) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t sh_k;
  const int64_t p = blockIdx.x / S, s = blockIdx.x % S;
  const int64_t base = p * HW;
  if (threadIdx.x < 32) {
    const acc_t k = plane_shift_warp<scalar_t, acc_t>(x + base, 1, HW, threadIdx.x);
    if (threadIdx.x == 0) sh_k = k;
  }
  __syncthreads();
  const int64_t lo = s * kSplit, hi = min(HW, lo + kSplit);
  double s1, s2;
  thread_shifted_sums<kVec>(x + base, lo, hi, sh_k, s1, s2);
  block_sum2(s1, s2);
  if (threadIdx.x == 0) partial[blockIdx.x] = make_double2(s1, s2);
}

// S > 1, pass 2: every block adds its plane's S partials in order, then writes its split.
template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    fwd_apply_nchw(const scalar_t* __restrict__ x, const scalar_t* __restrict__ res, scalar_t* __restrict__ y,
                   const double2* __restrict__ partial, at::opmath_type<scalar_t>* __restrict__ mean_out,
                   at::opmath_type<scalar_t>* __restrict__ rstd_out, const at::opmath_type<scalar_t>* __restrict__ w,
                   const at::opmath_type<scalar_t>* __restrict__ b, int64_t C, int64_t HW, int64_t S, double eps,
                   int act, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t sh_mean, sh_scale;
  const int64_t p = blockIdx.x / S, s = blockIdx.x % S;
  const int64_t base = p * HW;
  const int64_t c = p % C;
  if (threadIdx.x < 32) {
    const acc_t k = plane_shift_warp<scalar_t, acc_t>(x + base, 1, HW, threadIdx.x);
    if (threadIdx.x == 0) {
      double s1 = 0.0, s2 = 0.0;
      for (int64_t j = 0; j < S; ++j) {
        const double2 q = partial[p * S + j];
        s1 += q.x;
        s2 += q.y;
      }
      finish_stats(s1, s2, k, HW, eps, s == 0, p, c, mean_out, rstd_out, w, sh_mean, sh_scale);
    }
  }
  __syncthreads();
  const int64_t lo = s * kSplit, hi = min(HW, lo + kSplit);
  thread_apply<kVec>(x + base, res ? res + base : nullptr, y + base, lo, hi, sh_mean, sh_scale,
                     b ? b[c] : acc_t(0), act, slope);
}

// ----------------------------------------------------------------------- NCHW backward

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void thread_grad_sums(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                                 int64_t lo, int64_t hi, acc_t mean, acc_t scale, acc_t shift,
                                                 int act, acc_t slope, double& sa, double& sb) {
  acc_t a = acc_t(0), bb = acc_t(0);
  for (int64_t i = lo + static_cast<int64_t>(threadIdx.x) * kVec; i < hi; i += kThreads * kVec) {
    acc_t xv[kVec], gv[kVec];
    load_pack<kVec>(x, i, xv);
    load_pack<kVec>(g, i, gv);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const acc_t d = xv[j] - mean;
      const acc_t gz = act_grad(gv[j], d * scale + shift, act, slope);
      a += gz;
      bb += gz * d;
    }
  }
  sa = static_cast<double>(a);
  sb = static_cast<double>(bb);
}

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void thread_grad_input(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                                  scalar_t* __restrict__ dx, int64_t lo, int64_t hi, acc_t mean,
                                                  acc_t scale, acc_t shift, int act, acc_t slope, acc_t c1, acc_t c2,
                                                  acc_t c3) {
  for (int64_t i = lo + static_cast<int64_t>(threadIdx.x) * kVec; i < hi; i += kThreads * kVec) {
    acc_t xv[kVec], gv[kVec];
    load_pack<kVec>(x, i, xv);
    load_pack<kVec>(g, i, gv);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const acc_t d = xv[j] - mean;
      const acc_t gz = act_grad(gv[j], d * scale + shift, act, slope);
      xv[j] = gz * c1 - d * c3 - c2;
    }
    store_pack<kVec>(dx, i, xv);
  }
}

// c1 = rstd * w, c2 = rstd * w * A / n, c3 = w * rstd^3 * B / n.
__device__ __forceinline__ void grad_consts(double A, double B, double rstd, double w, int64_t n, double& c1,
                                            double& c2, double& c3) {
  const double inv_n = 1.0 / static_cast<double>(n);
  c1 = rstd * w;
  c2 = c1 * A * inv_n;
  c3 = c1 * rstd * rstd * B * inv_n;
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    bwd_fused_nchw(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x, scalar_t* __restrict__ dx,
                   const at::opmath_type<scalar_t>* __restrict__ mean, const at::opmath_type<scalar_t>* __restrict__ rstd,
                   const at::opmath_type<scalar_t>* __restrict__ w, const at::opmath_type<scalar_t>* __restrict__ b,
                   double2* __restrict__ sums, int64_t C, int64_t HW, int act, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t sh_c[3];
  const int64_t p = blockIdx.x;
  const int64_t base = p * HW;
  const int64_t c = p % C;
  const acc_t m = mean[p];
  const double wc = w ? static_cast<double>(w[c]) : 1.0;
  const acc_t scale = static_cast<acc_t>(static_cast<double>(rstd[p]) * wc);
  const acc_t shift = b ? b[c] : acc_t(0);
  double sa, sb;
  thread_grad_sums<kVec>(g + base, x + base, 0, HW, m, scale, shift, act, slope, sa, sb);
  block_sum2(sa, sb);
  if (threadIdx.x == 0) {
    sums[p] = make_double2(sa, sb);
    double c1, c2, c3;
    grad_consts(sa, sb, static_cast<double>(rstd[p]), wc, HW, c1, c2, c3);
    sh_c[0] = static_cast<acc_t>(c1);
    sh_c[1] = static_cast<acc_t>(c2);
    sh_c[2] = static_cast<acc_t>(c3);
  }
  __syncthreads();
  thread_grad_input<kVec>(g + base, x + base, dx + base, 0, HW, m, scale, shift, act, slope, sh_c[0], sh_c[1],
                          sh_c[2]);
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    bwd_stats_nchw(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                   const at::opmath_type<scalar_t>* __restrict__ mean, const at::opmath_type<scalar_t>* __restrict__ rstd,
                   const at::opmath_type<scalar_t>* __restrict__ w, const at::opmath_type<scalar_t>* __restrict__ b,
                   double2* __restrict__ partial, int64_t C, int64_t HW, int64_t S, int act,
                   at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t p = blockIdx.x / S, s = blockIdx.x % S;
  const int64_t base = p * HW;
  const int64_t c = p % C;
  const acc_t scale = static_cast<acc_t>(static_cast<double>(rstd[p]) * (w ? static_cast<double>(w[c]) : 1.0));
  const int64_t lo = s * kSplit, hi = min(HW, lo + kSplit);
  double sa, sb;
  thread_grad_sums<kVec>(g + base, x + base, lo, hi, mean[p], scale, b ? b[c] : acc_t(0), act, slope, sa, sb);
  block_sum2(sa, sb);
  if (threadIdx.x == 0) partial[blockIdx.x] = make_double2(sa, sb);
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    bwd_apply_nchw(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x, scalar_t* __restrict__ dx,
                   const at::opmath_type<scalar_t>* __restrict__ mean, const at::opmath_type<scalar_t>* __restrict__ rstd,
                   const at::opmath_type<scalar_t>* __restrict__ w, const at::opmath_type<scalar_t>* __restrict__ b,
                   const double2* __restrict__ partial, double2* __restrict__ sums, int64_t C, int64_t HW, int64_t S,
                   int act, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t sh_c[3];
  const int64_t p = blockIdx.x / S, s = blockIdx.x % S;
  const int64_t base = p * HW;
  const int64_t c = p % C;
  const double wc = w ? static_cast<double>(w[c]) : 1.0;
  const acc_t scale = static_cast<acc_t>(static_cast<double>(rstd[p]) * wc);
  if (threadIdx.x == 0) {
    double sa = 0.0, sb = 0.0;
    for (int64_t j = 0; j < S; ++j) {
      const double2 q = partial[p * S + j];
      sa += q.x;
      sb += q.y;
    }
    if (s == 0) sums[p] = make_double2(sa, sb);
    double c1, c2, c3;
    grad_consts(sa, sb, static_cast<double>(rstd[p]), wc, HW, c1, c2, c3);
    sh_c[0] = static_cast<acc_t>(c1);
    sh_c[1] = static_cast<acc_t>(c2);
    sh_c[2] = static_cast<acc_t>(c3);
  }
  __syncthreads();
  const int64_t lo = s * kSplit, hi = min(HW, lo + kSplit);
  thread_grad_input<kVec>(g + base, x + base, dx + base, lo, hi, mean[p], scale, b ? b[c] : acc_t(0), act, slope,
                          sh_c[0], sh_c[1], sh_c[2]);
}

// ------------------------------------------------------- NCHW, one plane per cluster
// (sm_90 and newer) A plane of kSplit < HW <= kMaxCluster * kClusterChunk elements
// (e.g. 256x256) is cut into S = ceil(HW / kClusterChunk) chunks, one per block of a
// thread-block cluster of S blocks (blockIdx.x = plane * S + rank). Each block keeps its
// chunk in registers (kPerThread elements per thread, pack j of thread t at
// lo + (j * kThreads + t) * kVec), the blocks exchange their partial sums through
// distributed shared memory, each adding the S pairs in rank order (the same statistics
// in every block, deterministically), and the output is written from the registers:
// x (forward), grad and x (backward) are read from DRAM once, the traffic floor, where
// the two-kernel split path reads them twice.

constexpr int64_t kClusterChunk = 8192;                // plane elements per block of a cluster
constexpr int kMaxCluster = 8;                         // the portable cluster size
constexpr int kPerThread = kClusterChunk / kThreads;   // 32
static_assert(kClusterChunk % (kThreads * 8) == 0, "whole 16-byte packs per thread");

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FASTGAN_CLUSTERS 1
#endif

// Element j * kVec + k of this thread's chunk [lo, hi) of a plane is at
// lo + (j * kThreads + threadIdx.x) * kVec + k; a pack is in the chunk entirely or not at
// all (hi - lo is a multiple of kVec on the vector path). Packs out of it read as 0.
template <int kVec>
__device__ __forceinline__ int64_t chunk_offset(int64_t lo, int j) {
  return lo + (static_cast<int64_t>(j) * kThreads + threadIdx.x) * kVec;
}

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_chunk(const scalar_t* __restrict__ p, int64_t lo, int64_t hi,
                                           acc_t (&v)[kPerThread]) {
#pragma unroll
  for (int j = 0; j < kPerThread / kVec; ++j) {
    const int64_t i = chunk_offset<kVec>(lo, j);
    acc_t pack[kVec];
    if (i < hi) {
      load_pack<kVec>(p, i, pack);
    } else {
#pragma unroll
      for (int k = 0; k < kVec; ++k) pack[k] = acc_t(0);
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[j * kVec + k] = pack[k];
  }
}

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_chunk(scalar_t* __restrict__ p, int64_t lo, int64_t hi,
                                            const acc_t (&v)[kPerThread]) {
#pragma unroll
  for (int j = 0; j < kPerThread / kVec; ++j) {
    const int64_t i = chunk_offset<kVec>(lo, j);
    if (i < hi) {
      acc_t pack[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) pack[k] = v[j * kVec + k];
      store_pack<kVec>(p, i, pack);
    }
  }
}

#ifdef FASTGAN_CLUSTERS
// (a, b) summed over the block (block_sum2), then over the cluster's S blocks in rank
// order through each block's `part` (its shared memory); valid in thread 0. Leaves the
// pairs published: the caller syncs the cluster once more before any block exits.
__device__ __forceinline__ double2 cluster_sum2(const cg::cluster_group& cluster, double2* part, double a,
                                                double b, int64_t S) {
  block_sum2(a, b);
  if (threadIdx.x == 0) *part = make_double2(a, b);
  cluster.sync();
  double2 total = make_double2(0.0, 0.0);
  if (threadIdx.x == 0) {
    for (int r = 0; r < static_cast<int>(S); ++r) {
      const double2 q = *cluster.map_shared_rank(part, r);
      total.x += q.x;
      total.y += q.y;
    }
  }
  return total;
}
#endif

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    fwd_cluster_nchw(const scalar_t* __restrict__ x, const scalar_t* __restrict__ res, scalar_t* __restrict__ y,
                     at::opmath_type<scalar_t>* __restrict__ mean_out, at::opmath_type<scalar_t>* __restrict__ rstd_out,
                     const at::opmath_type<scalar_t>* __restrict__ w, const at::opmath_type<scalar_t>* __restrict__ b,
                     int64_t C, int64_t HW, int64_t S, double eps, int act, at::opmath_type<scalar_t> slope) {
#ifdef FASTGAN_CLUSTERS
  using acc_t = at::opmath_type<scalar_t>;
  const cg::cluster_group cluster = cg::this_cluster();
  __shared__ double2 part;
  __shared__ acc_t sh_k, sh_mean, sh_scale;
  const int64_t s = cluster.block_rank();
  const int64_t p = blockIdx.x / S;
  const int64_t base = p * HW, lo = s * kClusterChunk, hi = min(HW, lo + kClusterChunk);
  const int64_t c = p % C;
  if (threadIdx.x < 32) {
    const acc_t k = plane_shift_warp<scalar_t, acc_t>(x + base, 1, HW, threadIdx.x);
    if (threadIdx.x == 0) sh_k = k;
  }
  acc_t v[kPerThread];
  load_chunk<kVec>(x + base, lo, hi, v);
  __syncthreads();
  const acc_t k = sh_k;
  acc_t a = acc_t(0), q = acc_t(0);
#pragma unroll
  for (int j = 0; j < kPerThread / kVec; ++j) {
    if (chunk_offset<kVec>(lo, j) < hi) {
#pragma unroll
      for (int e = j * kVec; e < (j + 1) * kVec; ++e) {
        const acc_t d = v[e] - k;
        a += d;
        q += d * d;
      }
    }
  }
  const double2 t = cluster_sum2(cluster, &part, static_cast<double>(a), static_cast<double>(q), S);
  if (threadIdx.x == 0) finish_stats(t.x, t.y, k, HW, eps, s == 0, p, c, mean_out, rstd_out, w, sh_mean, sh_scale);
  cluster.sync();  // every block has read the others' pairs; sh_mean and sh_scale are set
  const acc_t m = sh_mean, scale = sh_scale, shift = b ? b[c] : acc_t(0);
#pragma unroll
  for (int e = 0; e < kPerThread; ++e) v[e] = act_fn((v[e] - m) * scale + shift, act, slope);
  if (res != nullptr) {
    acc_t r[kPerThread];
    load_chunk<kVec>(res + base, lo, hi, r);
#pragma unroll
    for (int e = 0; e < kPerThread; ++e) v[e] = r[e] + v[e];
  }
  store_chunk<kVec>(y + base, lo, hi, v);
#else
  __trap();  // launched only where the device and this binary have clusters (cluster_path)
#endif
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    bwd_cluster_nchw(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x, scalar_t* __restrict__ dx,
                     const at::opmath_type<scalar_t>* __restrict__ mean,
                     const at::opmath_type<scalar_t>* __restrict__ rstd,
                     const at::opmath_type<scalar_t>* __restrict__ w, const at::opmath_type<scalar_t>* __restrict__ b,
                     double2* __restrict__ sums, int64_t C, int64_t HW, int64_t S, int act,
                     at::opmath_type<scalar_t> slope) {
#ifdef FASTGAN_CLUSTERS
  using acc_t = at::opmath_type<scalar_t>;
  const cg::cluster_group cluster = cg::this_cluster();
  __shared__ double2 part;
  __shared__ acc_t sh_c[3];
  const int64_t s = cluster.block_rank();
  const int64_t p = blockIdx.x / S;
  const int64_t base = p * HW, lo = s * kClusterChunk, hi = min(HW, lo + kClusterChunk);
  const int64_t c = p % C;
  const acc_t m = mean[p];
  const double wc = w ? static_cast<double>(w[c]) : 1.0;
  const acc_t scale = static_cast<acc_t>(static_cast<double>(rstd[p]) * wc);
  const acc_t shift = b ? b[c] : acc_t(0);
  // gv becomes gz, xv becomes x - mean (out of the chunk: computed, not summed, not stored)
  acc_t gv[kPerThread], xv[kPerThread];
  load_chunk<kVec>(g + base, lo, hi, gv);
  load_chunk<kVec>(x + base, lo, hi, xv);
  acc_t a = acc_t(0), bb = acc_t(0);
#pragma unroll
  for (int j = 0; j < kPerThread / kVec; ++j) {
    const bool in_chunk = chunk_offset<kVec>(lo, j) < hi;
#pragma unroll
    for (int e = j * kVec; e < (j + 1) * kVec; ++e) {
      xv[e] = xv[e] - m;
      gv[e] = act_grad(gv[e], xv[e] * scale + shift, act, slope);
      if (in_chunk) {
        a += gv[e];
        bb += gv[e] * xv[e];
      }
    }
  }
  const double2 t = cluster_sum2(cluster, &part, static_cast<double>(a), static_cast<double>(bb), S);
  if (threadIdx.x == 0) {
    if (s == 0) sums[p] = t;
    double c1, c2, c3;
    grad_consts(t.x, t.y, static_cast<double>(rstd[p]), wc, HW, c1, c2, c3);
    sh_c[0] = static_cast<acc_t>(c1);
    sh_c[1] = static_cast<acc_t>(c2);
    sh_c[2] = static_cast<acc_t>(c3);
  }
  cluster.sync();  // every block has read the others' pairs; sh_c is set
  const acc_t c1 = sh_c[0], c2 = sh_c[1], c3 = sh_c[2];
#pragma unroll
  for (int e = 0; e < kPerThread; ++e) gv[e] = gv[e] * c1 - xv[e] * c3 - c2;
  store_chunk<kVec>(dx + base, lo, hi, gv);
#else
  __trap();  // launched only where the device and this binary have clusters (cluster_path)
#endif
}

// ------------------------------------------------------------------------------- NHWC
// Block (kTileC, kLanes): channel c0 + threadIdx.x of image n over pixels
// [s * kRowsSplit, ...), pixel lane threadIdx.y. blockIdx.x = (n * tiles + tile) * S + s.

struct NhwcBlock {
  int64_t n, c, r_lo, r_hi, s;
  bool valid;  // c < C
};

__device__ __forceinline__ NhwcBlock nhwc_block(int64_t C, int64_t HW, int64_t tiles, int64_t S) {
  const int64_t s = blockIdx.x % S;
  const int64_t nt = blockIdx.x / S;
  const int64_t n = nt / tiles, tile = nt % tiles;
  const int64_t c = tile * kTileC + threadIdx.x;
  const int64_t r_lo = s * kRowsSplit;
  return {n, c, r_lo, min(HW, r_lo + kRowsSplit), s, c < C};
}

// Each plane's S partial pairs added once: a block per plane, its threads over the
// splits in a fixed assignment, then block_sum2's fixed tree (deterministic).
__global__ void __launch_bounds__(kThreads)
    sum_partials(const double2* __restrict__ partial, double2* __restrict__ sums, int64_t S) {
  const int64_t p = blockIdx.x;
  double a = 0.0, b = 0.0;
  for (int64_t j = threadIdx.x; j < S; j += kThreads) {
    const double2 q = partial[p * S + j];
    a += q.x;
    b += q.y;
  }
  block_sum2(a, b);
  if (threadIdx.x == 0) sums[p] = make_double2(a, b);
}

// (a, b) of each channel summed over the kLanes pixel lanes in lane order; valid in
// threadIdx.y == 0.
__device__ __forceinline__ void lanes_sum2(double& a, double& b) {
  __shared__ double sa[kLanes][kTileC], sb[kLanes][kTileC];
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0) {
    a = 0.0;
    b = 0.0;
    for (int l = 0; l < kLanes; ++l) {
      a += sa[l][threadIdx.x];
      b += sb[l][threadIdx.x];
    }
  }
}

// The channel's shift k: the mean of m = min(32, HW) of its pixels spread over the image
// (shift_sample), in pixel order, as plane_shift_warp forms it (the first pixel plus the
// mean difference to it: exact for a constant channel).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t channel_shift(const scalar_t* __restrict__ x, int64_t n, int64_t c, int64_t C,
                                               int64_t HW) {
  const int m = static_cast<int>(HW < kShiftElems ? HW : kShiftElems);
  const acc_t first = static_cast<acc_t>(x[n * HW * C + c]);
  acc_t s = acc_t(0);
  for (int j = 1; j < m; ++j) s += static_cast<acc_t>(x[(n * HW + shift_sample(j, HW, m)) * C + c]) - first;
  return first + s / static_cast<acc_t>(m);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kTileC* kLanes)
    fwd_stats_nhwc(const scalar_t* __restrict__ x, double2* __restrict__ partial, int64_t C, int64_t HW,
                   int64_t tiles, int64_t S) {
  using acc_t = at::opmath_type<scalar_t>;
  const NhwcBlock blk = nhwc_block(C, HW, tiles, S);
  double s1 = 0.0, s2 = 0.0;
  if (blk.valid) {
    const acc_t k = channel_shift<scalar_t, acc_t>(x, blk.n, blk.c, C, HW);
    acc_t a = acc_t(0), b = acc_t(0);
    for (int64_t r = blk.r_lo + threadIdx.y; r < blk.r_hi; r += kLanes) {
      const acc_t d = static_cast<acc_t>(x[(blk.n * HW + r) * C + blk.c]) - k;
      a += d;
      b += d * d;
    }
    s1 = static_cast<double>(a);
    s2 = static_cast<double>(b);
  }
  lanes_sum2(s1, s2);
  if (threadIdx.y == 0 && blk.valid) partial[(blk.n * C + blk.c) * S + blk.s] = make_double2(s1, s2);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kTileC* kLanes)
    fwd_apply_nhwc(const scalar_t* __restrict__ x, const scalar_t* __restrict__ res, scalar_t* __restrict__ y,
                   const double2* __restrict__ sums, at::opmath_type<scalar_t>* __restrict__ mean_out,
                   at::opmath_type<scalar_t>* __restrict__ rstd_out, const at::opmath_type<scalar_t>* __restrict__ w,
                   const at::opmath_type<scalar_t>* __restrict__ b, int64_t C, int64_t HW, int64_t tiles, int64_t S,
                   double eps, int act, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t sh_mean[kTileC], sh_scale[kTileC];
  const NhwcBlock blk = nhwc_block(C, HW, tiles, S);
  if (threadIdx.y == 0 && blk.valid) {
    const int64_t p = blk.n * C + blk.c;
    const acc_t k = channel_shift<scalar_t, acc_t>(x, blk.n, blk.c, C, HW);
    const double2 q = sums[p];
    double mean, rstd;
    stats_from_sums(q.x, q.y, static_cast<double>(k), HW, eps, mean, rstd);
    const acc_t m = static_cast<acc_t>(mean), r = static_cast<acc_t>(rstd);
    if (blk.s == 0) {
      mean_out[p] = m;
      rstd_out[p] = r;
    }
    sh_mean[threadIdx.x] = m;
    sh_scale[threadIdx.x] = static_cast<acc_t>(static_cast<double>(r) * (w ? static_cast<double>(w[blk.c]) : 1.0));
  }
  __syncthreads();
  if (!blk.valid) return;
  const acc_t m = sh_mean[threadIdx.x], scale = sh_scale[threadIdx.x];
  const acc_t shift = b ? b[blk.c] : acc_t(0);
  for (int64_t r = blk.r_lo + threadIdx.y; r < blk.r_hi; r += kLanes) {
    const int64_t o = (blk.n * HW + r) * C + blk.c;
    acc_t v = act_fn((static_cast<acc_t>(x[o]) - m) * scale + shift, act, slope);
    if (res != nullptr) v = static_cast<acc_t>(res[o]) + v;
    y[o] = static_cast<scalar_t>(v);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kTileC* kLanes)
    bwd_stats_nhwc(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                   const at::opmath_type<scalar_t>* __restrict__ mean, const at::opmath_type<scalar_t>* __restrict__ rstd,
                   const at::opmath_type<scalar_t>* __restrict__ w, const at::opmath_type<scalar_t>* __restrict__ b,
                   double2* __restrict__ partial, int64_t C, int64_t HW, int64_t tiles, int64_t S, int act,
                   at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const NhwcBlock blk = nhwc_block(C, HW, tiles, S);
  double sa = 0.0, sb = 0.0;
  if (blk.valid) {
    const int64_t p = blk.n * C + blk.c;
    const acc_t m = mean[p];
    const acc_t scale = static_cast<acc_t>(static_cast<double>(rstd[p]) * (w ? static_cast<double>(w[blk.c]) : 1.0));
    const acc_t shift = b ? b[blk.c] : acc_t(0);
    acc_t a = acc_t(0), bb = acc_t(0);
    for (int64_t r = blk.r_lo + threadIdx.y; r < blk.r_hi; r += kLanes) {
      const int64_t o = (blk.n * HW + r) * C + blk.c;
      const acc_t d = static_cast<acc_t>(x[o]) - m;
      const acc_t gz = act_grad(static_cast<acc_t>(g[o]), d * scale + shift, act, slope);
      a += gz;
      bb += gz * d;
    }
    sa = static_cast<double>(a);
    sb = static_cast<double>(bb);
  }
  lanes_sum2(sa, sb);
  if (threadIdx.y == 0 && blk.valid) partial[(blk.n * C + blk.c) * S + blk.s] = make_double2(sa, sb);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kTileC* kLanes)
    bwd_apply_nhwc(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x, scalar_t* __restrict__ dx,
                   const at::opmath_type<scalar_t>* __restrict__ mean, const at::opmath_type<scalar_t>* __restrict__ rstd,
                   const at::opmath_type<scalar_t>* __restrict__ w, const at::opmath_type<scalar_t>* __restrict__ b,
                   const double2* __restrict__ sums, int64_t C, int64_t HW, int64_t tiles, int64_t S, int act,
                   at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t sh_c[3][kTileC];
  const NhwcBlock blk = nhwc_block(C, HW, tiles, S);
  const int64_t p = blk.n * C + blk.c;
  if (threadIdx.y == 0 && blk.valid) {
    const double2 q = sums[p];
    double c1, c2, c3;
    grad_consts(q.x, q.y, static_cast<double>(rstd[p]), w ? static_cast<double>(w[blk.c]) : 1.0, HW, c1, c2, c3);
    sh_c[0][threadIdx.x] = static_cast<acc_t>(c1);
    sh_c[1][threadIdx.x] = static_cast<acc_t>(c2);
    sh_c[2][threadIdx.x] = static_cast<acc_t>(c3);
  }
  __syncthreads();
  if (!blk.valid) return;
  const acc_t m = mean[p];
  const acc_t scale = static_cast<acc_t>(static_cast<double>(rstd[p]) * (w ? static_cast<double>(w[blk.c]) : 1.0));
  const acc_t shift = b ? b[blk.c] : acc_t(0);
  const acc_t c1 = sh_c[0][threadIdx.x], c2 = sh_c[1][threadIdx.x], c3 = sh_c[2][threadIdx.x];
  for (int64_t r = blk.r_lo + threadIdx.y; r < blk.r_hi; r += kLanes) {
    const int64_t o = (blk.n * HW + r) * C + blk.c;
    const acc_t d = static_cast<acc_t>(x[o]) - m;
    const acc_t gz = act_grad(static_cast<acc_t>(g[o]), d * scale + shift, act, slope);
    dx[o] = static_cast<scalar_t>(gz * c1 - d * c3 - c2);
  }
}

// dweight[c] = sum_n rstd[n, c] * B[n, c], dbias[c] = sum_n A[n, c], in n order.
template <typename acc_t>
__global__ void __launch_bounds__(kParamThreads)
    param_grads(const double2* __restrict__ sums, const acc_t* __restrict__ rstd, double* __restrict__ dw,
                double* __restrict__ db, int64_t N, int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kParamThreads + threadIdx.x;
  if (c >= C) return;
  double sw = 0.0, sb = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const double2 q = sums[n * C + c];
    sw += static_cast<double>(rstd[n * C + c]) * q.y;
    sb += q.x;
  }
  dw[c] = sw;
  db[c] = sb;
}

// ------------------------------------------------------------------------------ host

inline bool aligned16(const void* p) {
  return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

inline unsigned grid_of(int64_t blocks) {
  TORCH_CHECK(blocks < (int64_t{1} << 31), "fastgan::instance_norm_act: too many planes for one launch");
  return static_cast<unsigned>(blocks);
}

// `count` pairs of doubles on the device (per-plane or per-chunk sums), and the tensor that owns them.
struct Double2Buffer {
  at::Tensor owner;
  double2* data;
};

inline Double2Buffer double2_buffer(int64_t count, const at::TensorOptions& on) {
  at::Tensor owner = at::empty({count * 2}, on.dtype(at::kDouble));
  return {owner, reinterpret_cast<double2*>(owner.mutable_data_ptr<double>())};
}

// launch(std::integral_constant<int, V>{}) with V = kVec where the vector path applies, else 1.
template <int kVec, typename Launch>
void with_vector_width(bool vec, Launch&& launch) {
  if (vec) {
    launch(std::integral_constant<int, kVec>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

// Whether the cluster kernels can run on `device`: cluster launch (sm_90 and newer) and
// this file's code for it built from sm_90 PTX or newer (code JIT-compiled from older PTX
// has them trap). Asked once per device. A query the runtime refuses (a driver without
// clusters, an invalid cluster size for the device) means no clusters: the two-kernel path
// runs, and the error is cleared so that it does not surface at the next launch check.
bool clusters_on(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, bool> known;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto it = known.find(device);
  if (it != known.end()) return it->second;
  const auto answered = [](cudaError_t status) {
    if (status == cudaSuccess) return true;
    (void)cudaGetLastError();
    return false;
  };
  int launch = 0;
  if (!answered(cudaDeviceGetAttribute(&launch, cudaDevAttrClusterLaunch, device)) || !launch) {
    return known[device] = false;
  }
  cudaFuncAttributes attr;
  if (!answered(cudaFuncGetAttributes(&attr, fwd_cluster_nchw<float, 4>)) || attr.ptxVersion < 90) {
    return known[device] = false;
  }
  // the largest cluster of the heaviest kernels (the float64 forward and backward, one
  // block per SM) must fit the device as this process sees it (MPS, green contexts and
  // small MIG slices have fewer SMs): else a launch would fail where the two-kernel path runs
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(kMaxCluster);
  config.blockDim = dim3(kThreads);
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = kMaxCluster;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  int forward = 0, backward = 0;
  return known[device] = answered(cudaOccupancyMaxActiveClusters(&forward, fwd_cluster_nchw<double, 1>, &config)) &&
                         answered(cudaOccupancyMaxActiveClusters(&backward, bwd_cluster_nchw<double, 1>, &config)) &&
                         forward > 0 && backward > 0;
}

// Clusters of S blocks for a plane of HW elements on the current device, or 0 where the
// cluster kernels do not run: planes the fused kernel takes whole (HW <= kSplit) or too
// large for a portable cluster, a device or build without them (clusters_on), or
// FASTGAN_IN_CLUSTERS=0 (the two-kernel path, to compare).
int64_t cluster_size(int64_t HW) {
  const int64_t S = (HW + kClusterChunk - 1) / kClusterChunk;
  if (HW <= kSplit || S > kMaxCluster) return 0;
  const char* env = std::getenv("FASTGAN_IN_CLUSTERS");
  if (env != nullptr && env[0] == '0') return 0;
  return clusters_on(c10::cuda::current_device()) ? S : 0;
}

// kernel<<<planes * S, kThreads>>>(args...) in clusters of S blocks, on `stream`.
template <typename... Params, typename... Args>
void launch_clusters(void (*kernel)(Params...), int64_t planes, int64_t S, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(grid_of(planes * S));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = static_cast<unsigned>(S);
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act_cuda(
    const at::Tensor& input, const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& residual, double eps, c10::string_view activation, double negative_slope) {
  using namespace instance_norm;
  const Activation act = check_forward_args(input, weight, bias, residual, activation);
  const c10::cuda::OptionalCUDAGuard guard(input.device());

  const ForwardTensors t = forward_tensors(input, weight, bias, residual);
  if (t.x.numel() == 0) return {t.y, t.mean, t.rstd};
  const Dims d = t.d;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int act_i = static_cast<int>(act);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.x.scalar_type(), "fastgan_instance_norm_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = t.x.const_data_ptr<scalar_t>();
    const scalar_t* rp = data_or_null<scalar_t>(t.residual);
    scalar_t* yp = t.y.mutable_data_ptr<scalar_t>();
    acc_t* mp = t.mean.mutable_data_ptr<acc_t>();
    acc_t* sp = t.rstd.mutable_data_ptr<acc_t>();
    const acc_t* wp = data_or_null<acc_t>(t.weight);
    const acc_t* bp = data_or_null<acc_t>(t.bias);
    const acc_t slope = static_cast<acc_t>(negative_slope);
    if (t.layout == Layout::kNCHW) {
      constexpr int kVec = 16 / sizeof(scalar_t);
      const bool vec = d.HW % kVec == 0 && aligned16(xp) && aligned16(rp) && aligned16(yp);
      const int64_t S = (d.HW + kSplit - 1) / kSplit;
      auto launch = [&](auto vec_tag) {
        constexpr int V = decltype(vec_tag)::value;
        const int64_t cluster = cluster_size(d.HW);
        if (S == 1) {
          fwd_fused_nchw<scalar_t, V><<<grid_of(d.planes()), kThreads, 0, stream>>>(
              xp, rp, yp, mp, sp, wp, bp, d.C, d.HW, eps, act_i, slope);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        } else if (cluster > 0) {
          launch_clusters(fwd_cluster_nchw<scalar_t, V>, d.planes(), cluster, stream, xp, rp, yp, mp, sp, wp, bp,
                          d.C, d.HW, cluster, eps, act_i, slope);
        } else {
          const Double2Buffer partial = double2_buffer(d.planes() * S, t.x.options());
          double2* pp = partial.data;
          fwd_stats_nchw<scalar_t, V><<<grid_of(d.planes() * S), kThreads, 0, stream>>>(xp, pp, d.HW, S);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          fwd_apply_nchw<scalar_t, V><<<grid_of(d.planes() * S), kThreads, 0, stream>>>(
              xp, rp, yp, pp, mp, sp, wp, bp, d.C, d.HW, S, eps, act_i, slope);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      };
      with_vector_width<kVec>(vec, launch);
    } else {
      const int64_t tiles = (d.C + kTileC - 1) / kTileC;
      const int64_t S = (d.HW + kRowsSplit - 1) / kRowsSplit;
      const dim3 block(kTileC, kLanes);
      const Double2Buffer partial = double2_buffer(d.planes() * S, t.x.options());
      double2* pp = partial.data;
      fwd_stats_nhwc<scalar_t><<<grid_of(d.N * tiles * S), block, 0, stream>>>(xp, pp, d.C, d.HW, tiles, S);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const Double2Buffer sums = double2_buffer(d.planes(), t.x.options());
      double2* sums_p = sums.data;
      sum_partials<<<grid_of(d.planes()), kThreads, 0, stream>>>(pp, sums_p, S);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      fwd_apply_nhwc<scalar_t><<<grid_of(d.N * tiles * S), block, 0, stream>>>(
          xp, rp, yp, sums_p, mp, sp, wp, bp, d.C, d.HW, tiles, S, eps, act_i, slope);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {t.y, t.mean, t.rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act_backward_cuda(
    const at::Tensor& grad, const at::Tensor& input, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& mean_in, const at::Tensor& rstd_in,
    c10::string_view activation, double negative_slope) {
  using namespace instance_norm;
  const Activation act = check_backward_args(grad, input, weight, bias, mean_in, rstd_in, activation);
  const c10::cuda::OptionalCUDAGuard guard(input.device());

  const BackwardTensors t = backward_tensors(grad, input, weight, bias, mean_in, rstd_in);
  if (t.x.numel() == 0) return empty_grads(t);
  const Dims d = t.d;
  const Double2Buffer sums = double2_buffer(d.planes(), t.x.options());
  double2* sums_p = sums.data;
  auto dw = at::empty({d.C}, t.x.options().dtype(at::kDouble));
  auto db = at::empty({d.C}, t.x.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int act_i = static_cast<int>(act);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.x.scalar_type(),
                                  "fastgan_instance_norm_act_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = t.grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = t.x.const_data_ptr<scalar_t>();
    scalar_t* dxp = t.dx.mutable_data_ptr<scalar_t>();
    const acc_t* mp = t.mean.const_data_ptr<acc_t>();
    const acc_t* sp = t.rstd.const_data_ptr<acc_t>();
    const acc_t* wp = data_or_null<acc_t>(t.weight);
    const acc_t* bp = data_or_null<acc_t>(t.bias);
    const acc_t slope = static_cast<acc_t>(negative_slope);
    if (t.layout == Layout::kNCHW) {
      constexpr int kVec = 16 / sizeof(scalar_t);
      const bool vec = d.HW % kVec == 0 && aligned16(gp) && aligned16(xp) && aligned16(dxp);
      const int64_t S = (d.HW + kSplit - 1) / kSplit;
      auto launch = [&](auto vec_tag) {
        constexpr int V = decltype(vec_tag)::value;
        const int64_t cluster = cluster_size(d.HW);
        if (S == 1) {
          bwd_fused_nchw<scalar_t, V><<<grid_of(d.planes()), kThreads, 0, stream>>>(
              gp, xp, dxp, mp, sp, wp, bp, sums_p, d.C, d.HW, act_i, slope);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        } else if (cluster > 0) {
          launch_clusters(bwd_cluster_nchw<scalar_t, V>, d.planes(), cluster, stream, gp, xp, dxp, mp, sp, wp, bp,
                          sums_p, d.C, d.HW, cluster, act_i, slope);
        } else {
          const Double2Buffer partial = double2_buffer(d.planes() * S, t.x.options());
          double2* pp = partial.data;
          bwd_stats_nchw<scalar_t, V><<<grid_of(d.planes() * S), kThreads, 0, stream>>>(
              gp, xp, mp, sp, wp, bp, pp, d.C, d.HW, S, act_i, slope);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          bwd_apply_nchw<scalar_t, V><<<grid_of(d.planes() * S), kThreads, 0, stream>>>(
              gp, xp, dxp, mp, sp, wp, bp, pp, sums_p, d.C, d.HW, S, act_i, slope);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      };
      with_vector_width<kVec>(vec, launch);
    } else {
      const int64_t tiles = (d.C + kTileC - 1) / kTileC;
      const int64_t S = (d.HW + kRowsSplit - 1) / kRowsSplit;
      const dim3 block(kTileC, kLanes);
      const Double2Buffer partial = double2_buffer(d.planes() * S, t.x.options());
      double2* pp = partial.data;
      bwd_stats_nhwc<scalar_t><<<grid_of(d.N * tiles * S), block, 0, stream>>>(
          gp, xp, mp, sp, wp, bp, pp, d.C, d.HW, tiles, S, act_i, slope);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      sum_partials<<<grid_of(d.planes()), kThreads, 0, stream>>>(pp, sums_p, S);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      bwd_apply_nhwc<scalar_t><<<grid_of(d.N * tiles * S), block, 0, stream>>>(
          gp, xp, dxp, mp, sp, wp, bp, sums_p, d.C, d.HW, tiles, S, act_i, slope);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    param_grads<acc_t><<<grid_of((d.C + kParamThreads - 1) / kParamThreads), kParamThreads, 0, stream>>>(
        sums_p, sp, dw.mutable_data_ptr<double>(), db.mutable_data_ptr<double>(), d.N, d.C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {t.dx, dw.to(t.dw_dtype), db.to(t.db_dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("instance_norm_act", &instance_norm_act_cuda);
  m.impl("instance_norm_act_backward", &instance_norm_act_backward_cuda);
}

}  // namespace fastgan::cuda
