// The CPU kernels of fastgan::instance_norm_act / instance_norm_act_backward (the math,
// precision, determinism and memory traffic are described in instance_norm_act.cpp),
// compiled once per instruction set: this header is included by
//   cpu/instance_norm_act.cpp       FASTGAN_CPU_ISA = base: at::vec's generic vectors,
//                                   any x86-64 (and any other CPU);
//   cpu/instance_norm_act_avx2.cpp  FASTGAN_CPU_ISA = avx2, CPU_CAPABILITY_AVX2: at::vec's
//                                   AVX2 vectors, chosen at run time where the CPU has them;
//   cpu/instance_norm_act_avx512.cpp  FASTGAN_CPU_ISA = avx512, CPU_CAPABILITY_AVX512,
//                                   FASTGAN_NHWC_ONLY: the NHWC kernels alone, on 16 lanes.
// The first two use 8 float lanes (32-byte vectors) and the same operations in the same
// order, so they give the same bits. The NHWC kernels' lanes are channels, each adding its
// own pixels in the same order however many lanes a vector has, so the AVX-512 copy gives
// those bits too; the NCHW kernels' lanes are a plane's elements, whose sums 16 lanes
// would order otherwise, so that copy has none.
#ifndef FASTGAN_CPU_ISA
#error "define FASTGAN_CPU_ISA (base, avx2, avx512) before including instance_norm_act_kernel.h"
#endif
#ifndef FASTGAN_NHWC_ONLY
#define FASTGAN_NHWC_ONLY 0
#endif

#include "instance_norm_act_args.h"
#include "lanes_sum.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace fastgan::cpu::FASTGAN_CPU_ISA {
namespace {

using at::vec::Vectorized;
using instance_norm::Activation;
using instance_norm::Dims;
using instance_norm::Layout;

// NCHW: elements of a plane per task. Fixed (not derived from the thread count).
constexpr int64_t kChunk = 16384;
// Elements summed in float lanes before the lanes are added in double.
constexpr int64_t kBlock = 1024;
// NHWC: pixels per row chunk; channels per task (multiples of every kStep) of the
// phased and the fused schedules; the most bytes of one fused task.
constexpr int64_t kRows = 512;
constexpr int64_t kChannels = 64;
constexpr int64_t kFusedChannels = 32;
constexpr int64_t kFusedBytes = int64_t{1} << 20;
// Elements per parallel task at least (aten's GRAIN_SIZE).
constexpr int64_t kGrain = 32768;
// NCHW planes of one chunk: elements per task at least. A quarter of kGrain: a plane is
// read three times forward and twice backward, and 1x64x16x16 under kGrain ran on one
// thread (1x32x32x32 and 1x64x16x16 took 0.8x the time with 2 threads and this grain).
constexpr int64_t kPlaneGrain = kGrain / 4;

// Loads and stores of kStep elements as two vectors of the accumulation type.
template <typename scalar_t>
struct VecIO {
  using acc_t = at::opmath_type<scalar_t>;
  using aVec = Vectorized<acc_t>;
  static constexpr int64_t kStep = 2 * aVec::size();

  static inline void load(const scalar_t* p, aVec& a, aVec& b) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      a = aVec::loadu(p);
      b = aVec::loadu(p + aVec::size());
    } else {
      static_assert(Vectorized<scalar_t>::size() == kStep, "a 16-bit vector widens to two float vectors");
      std::tie(a, b) = at::vec::convert_to_float<scalar_t>(Vectorized<scalar_t>::loadu(p));
    }
  }

  static inline void store(scalar_t* p, const aVec& a, const aVec& b) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      a.store(p);
      b.store(p + aVec::size());
    } else {
      at::vec::convert_from_float<scalar_t>(a, b).store(p);
    }
  }

  // The first `count` (< kStep) elements alone: lanes past them load as 0 and are not stored.
  static inline void load_first(const scalar_t* p, int64_t count, aVec& a, aVec& b) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      constexpr int64_t W = aVec::size();
      a = aVec::loadu(p, std::min(count, W));
      b = count > W ? aVec::loadu(p + W, count - W) : aVec(acc_t(0));
    } else {
      std::tie(a, b) = at::vec::convert_to_float<scalar_t>(Vectorized<scalar_t>::loadu(p, count));
    }
  }

  static inline void store_first(scalar_t* p, int64_t count, const aVec& a, const aVec& b) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      constexpr int64_t W = aVec::size();
      a.store(p, std::min(count, W));
      if (count > W) b.store(p + W, count - W);
    } else {
      at::vec::convert_from_float<scalar_t>(a, b).store(p, count);
    }
  }
};

static_assert(kChannels % VecIO<float>::kStep == 0 && kChannels % VecIO<double>::kStep == 0 &&
                  kChannels % VecIO<c10::BFloat16>::kStep == 0 && kFusedChannels % VecIO<float>::kStep == 0 &&
                  kFusedChannels % VecIO<double>::kStep == 0 && kFusedChannels % VecIO<c10::BFloat16>::kStep == 0,
              "a channel group holds whole vector steps");
static_assert(kChunk % kBlock == 0 && kBlock % VecIO<float>::kStep == 0, "blocks hold whole steps");

// Which side of 0 where_sign selects `a` on: z > 0, or z <= 0 (both ordered compares: a
// NaN z selects b).
enum class ZeroSide { kAbove, kAtOrBelow };

// (z on `Side` of 0) ? a : b, lane by lane (NaN z: b). Through aligned buffers and a plain
// loop, which the compiler turns into compare-and-select instructions (the generic
// Vectorized::blendv and comparison operators work lane by lane with branches).
template <ZeroSide Side, typename V>
inline V where_sign(const V& z, const V& a, const V& b) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  return V::blendv(b, a, Side == ZeroSide::kAbove ? z > V(0) : z <= V(0));
#else
  using T = typename V::value_type;
  constexpr int64_t W = V::size();
  __at_align__ T zb[W];
  __at_align__ T ab[W];
  __at_align__ T bb[W];
  z.store(zb);
  a.store(ab);
  b.store(bb);
  for (int64_t k = 0; k < W; ++k) {
    const bool take_a = Side == ZeroSide::kAbove ? zb[k] > T(0) : zb[k] <= T(0);
    ab[k] = take_a ? ab[k] : bb[k];
  }
  return V::loadu(ab);
#endif
}

// act(z) for a vector and a scalar.
template <Activation A, typename V, typename T>
inline V act_vec(const V& z, T slope) {
  if constexpr (A == Activation::kRelu) {
    return at::vec::maximum(z, V(0));
  } else if constexpr (A == Activation::kLeakyRelu) {
    return where_sign<ZeroSide::kAbove>(z, z, z * V(slope));
  } else {
    return z;
  }
}

template <Activation A, typename T>
inline T act_scalar(T z, T slope) {
  if constexpr (A == Activation::kRelu) {
    return z > T(0) ? z : (z != z ? z : T(0));  // relu(NaN) = NaN
  } else if constexpr (A == Activation::kLeakyRelu) {
    return z > T(0) ? z : z * slope;
  } else {
    return z;
  }
}

// grad * act'(z), as aten's threshold_backward (z <= 0 stops: a NaN z passes) and
// leaky_relu_backward (z > 0 passes: a NaN z takes the slope).
template <Activation A, typename V, typename T>
inline V act_grad_vec(const V& g, const V& z, T slope) {
  if constexpr (A == Activation::kRelu) {
    return where_sign<ZeroSide::kAtOrBelow>(z, V(0), g);
  } else if constexpr (A == Activation::kLeakyRelu) {
    return where_sign<ZeroSide::kAbove>(z, g, g * V(slope));
  } else {
    return g;
  }
}

template <Activation A, typename T>
inline T act_grad_scalar(T g, T z, T slope) {
  if constexpr (A == Activation::kRelu) {
    return z <= T(0) ? T(0) : g;
  } else if constexpr (A == Activation::kLeakyRelu) {
    return z > T(0) ? g : g * slope;
  } else {
    return g;
  }
}

// ----------------------------------------------------------------- contiguous runs
// The NCHW building blocks, over n contiguous elements (a chunk of one plane).

// What a statistics pass adds per element, d = x - center: kSum d (the mean's pass),
// kSq d * d (the variance's). The NCHW runs and the NHWC blocks below share it.
enum class Reduce { kSum, kSq };

template <Reduce R, typename V>
inline V reduce_term(const V& d) {
  if constexpr (R == Reduce::kSum) {
    return d;
  } else {
    return d * d;
  }
}

// sum(reduce_term(x - center)): float lanes per block of kBlock elements, blocks added in double.
template <Reduce R, typename scalar_t>
double run_reduce(const scalar_t* x, int64_t n, at::opmath_type<scalar_t> center) {
  using IO = VecIO<scalar_t>;
  using acc_t = typename IO::acc_t;
  using aVec = typename IO::aVec;
  constexpr int64_t S = IO::kStep;
  const aVec m(center);
  const int64_t n_vec = n - n % S;
  double s = 0.0;
  int64_t i = 0;
  while (i < n_vec) {
    const int64_t end = std::min(n_vec, i + kBlock);
    aVec a0(acc_t(0)), a1(acc_t(0));
    for (; i < end; i += S) {
      aVec x0, x1;
      IO::load(x + i, x0, x1);
      a0 = a0 + reduce_term<R>(x0 - m);
      a1 = a1 + reduce_term<R>(x1 - m);
    }
    s += lanes_sum(a0 + a1);
  }
  for (; i < n; ++i) {
    s += static_cast<double>(reduce_term<R>(static_cast<acc_t>(x[i]) - center));
  }
  return s;
}

// y = act((x - mean) * scale + shift) [+ residual].
template <Activation A, bool kResidual, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void run_apply(const scalar_t* x, const scalar_t* res, scalar_t* y, int64_t n, acc_t mean, acc_t scale,
               acc_t shift, acc_t slope) {
  using IO = VecIO<scalar_t>;
  using aVec = typename IO::aVec;
  constexpr int64_t S = IO::kStep;
  const aVec m(mean), k(scale), b(shift);
  int64_t i = 0;
  for (; i + S <= n; i += S) {
    aVec x0, x1;
    IO::load(x + i, x0, x1);
    aVec y0 = act_vec<A>((x0 - m) * k + b, slope);
    aVec y1 = act_vec<A>((x1 - m) * k + b, slope);
    if constexpr (kResidual) {
      aVec r0, r1;
      IO::load(res + i, r0, r1);
      y0 = r0 + y0;
      y1 = r1 + y1;
    }
    IO::store(y + i, y0, y1);
  }
  for (; i < n; ++i) {
    acc_t v = act_scalar<A>((static_cast<acc_t>(x[i]) - mean) * scale + shift, slope);
    if constexpr (kResidual) {
      v = static_cast<acc_t>(res[i]) + v;
    }
    y[i] = static_cast<scalar_t>(v);
  }
}

// (sum(gz), sum(gz * (x - mean))) with gz = g * act'((x - mean) * scale + shift).
template <Activation A, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
std::pair<double, double> run_grad_sums(const scalar_t* g, const scalar_t* x, int64_t n, acc_t mean, acc_t scale,
                                        acc_t shift, acc_t slope) {
  using IO = VecIO<scalar_t>;
  using aVec = typename IO::aVec;
  constexpr int64_t S = IO::kStep;
  const aVec m(mean), k(scale), b(shift);
  const int64_t n_vec = n - n % S;
  double sa = 0.0, sb = 0.0;
  int64_t i = 0;
  while (i < n_vec) {
    const int64_t end = std::min(n_vec, i + kBlock);
    aVec a0(acc_t(0)), a1(acc_t(0)), b0(acc_t(0)), b1(acc_t(0));
    for (; i < end; i += S) {
      aVec x0, x1, g0, g1;
      IO::load(x + i, x0, x1);
      IO::load(g + i, g0, g1);
      const aVec d0 = x0 - m;
      const aVec d1 = x1 - m;
      const aVec gz0 = act_grad_vec<A>(g0, d0 * k + b, slope);
      const aVec gz1 = act_grad_vec<A>(g1, d1 * k + b, slope);
      a0 = a0 + gz0;
      a1 = a1 + gz1;
      b0 = b0 + gz0 * d0;
      b1 = b1 + gz1 * d1;
    }
    sa += lanes_sum(a0 + a1);
    sb += lanes_sum(b0 + b1);
  }
  for (; i < n; ++i) {
    const acc_t d = static_cast<acc_t>(x[i]) - mean;
    const acc_t gz = act_grad_scalar<A>(static_cast<acc_t>(g[i]), d * scale + shift, slope);
    sa += static_cast<double>(gz);
    sb += static_cast<double>(gz * d);
  }
  return {sa, sb};
}

// dx = gz * c1 - (x - mean) * c3 - c2.
template <Activation A, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void run_grad_input(const scalar_t* g, const scalar_t* x, scalar_t* dx, int64_t n, acc_t mean, acc_t scale,
                    acc_t shift, acc_t slope, acc_t c1, acc_t c2, acc_t c3) {
  using IO = VecIO<scalar_t>;
  using aVec = typename IO::aVec;
  constexpr int64_t S = IO::kStep;
  const aVec m(mean), k(scale), b(shift), v1(c1), v2(c2), v3(c3);
  int64_t i = 0;
  for (; i + S <= n; i += S) {
    aVec x0, x1, g0, g1;
    IO::load(x + i, x0, x1);
    IO::load(g + i, g0, g1);
    const aVec d0 = x0 - m;
    const aVec d1 = x1 - m;
    const aVec gz0 = act_grad_vec<A>(g0, d0 * k + b, slope);
    const aVec gz1 = act_grad_vec<A>(g1, d1 * k + b, slope);
    IO::store(dx + i, gz0 * v1 - d0 * v3 - v2, gz1 * v1 - d1 * v3 - v2);
  }
  for (; i < n; ++i) {
    const acc_t d = static_cast<acc_t>(x[i]) - mean;
    const acc_t gz = act_grad_scalar<A>(static_cast<acc_t>(g[i]), d * scale + shift, slope);
    dx[i] = static_cast<scalar_t>(gz * c1 - d * c3 - c2);
  }
}

// ------------------------------------------------------------------ per-plane math

// (C,) parameters read in acc_t, or the identity (1, 0) when absent.
template <typename acc_t>
struct Affine {
  const acc_t* w = nullptr;
  const acc_t* b = nullptr;
  acc_t weight(int64_t c) const { return w ? w[c] : acc_t(1); }
  acc_t bias(int64_t c) const { return b ? b[c] : acc_t(0); }
};

// Plane statistics from the double sums: mean (rounded to acc_t, the value every
// later pass subtracts) and rstd, with var corrected for that rounding.
template <typename acc_t>
struct PlaneStats {
  acc_t mean;
  acc_t rstd;
};

inline double mean_of(double sum, int64_t n) {
  return sum / static_cast<double>(n);
}

// The shift of a plane's sums, sum(x - k): the mean of m = min(32, HW) of its elements
// spread over it (element j * step + j % step, step = HW / m: a diagonal across rows and
// columns where step is a whole number of rows; the CUDA and Triton kernels take the same),
// as the first element plus the mean of the others' differences to it, so that a constant
// plane sums to exactly 0 and has a variance of exactly 0 (eps 0 then gives rstd 0, as
// aten's Welford does), and a plane far from 0, or whose first element stands apart (a
// bright top row over a dark image), cancels little in the float sums. `first`: the
// plane's first element, the others `stride` elements apart (NHWC: C).
template <typename scalar_t>
inline at::opmath_type<scalar_t> shift_of(const scalar_t* first, int64_t HW, int64_t stride = 1) {
  using acc_t = at::opmath_type<scalar_t>;
  if (HW <= 0) {
    return acc_t(0);
  }
  const int64_t m = HW < 32 ? HW : 32;
  const int64_t step = HW / m;
  const acc_t k0 = static_cast<acc_t>(*first);
  acc_t s = acc_t(0);
  for (int64_t j = 1; j < m; ++j) {
    s += static_cast<acc_t>(first[(j * step + j % step) * stride]) - k0;
  }
  return k0 + s / static_cast<acc_t>(m);
}

// var from sum((x - m)^2) around the rounded mean m of the exact mean `exact`. A constant
// plane with eps 0 gets rstd 0 (it normalizes to 0, its dx is 0), as aten's InvStd does.
template <typename acc_t>
inline acc_t rstd_of(double sq_dev, double exact, acc_t m, int64_t n, double eps) {
  const double d = exact - static_cast<double>(m);
  const double var = std::max(sq_dev / static_cast<double>(n) - d * d, 0.0);
  return var + eps == 0.0 ? acc_t(0) : static_cast<acc_t>(1.0 / std::sqrt(var + eps));
}

// The three per-plane constants of dx from A = sum(gz), B = sum(gz * (x - mean)).
template <typename acc_t>
struct GradConsts {
  acc_t c1, c2, c3;
};

template <typename acc_t>
inline GradConsts<acc_t> grad_consts(double A, double B, double rstd, double w, int64_t n) {
  const double inv_n = 1.0 / static_cast<double>(n);
  const double c1 = rstd * w;
  return {static_cast<acc_t>(c1), static_cast<acc_t>(c1 * A * inv_n),
          static_cast<acc_t>(c1 * rstd * rstd * B * inv_n)};
}

// ------------------------------------------------------------------------- NCHW

// NCHW planes of several chunks: whether each task takes whole planes (their chunks in
// turn, every pass while the plane is in cache) rather than single chunks (a pass over
// every plane at a time: a 1x64x256x256 float32 forward read x from memory twice and
// took 2.3x a copy's time). Where the planes are enough to share out evenly: 4 a thread.
// Either way a plane's sums are its chunks' added in order, so the bits are the same.
inline bool planes_per_task(int64_t planes) {
  return planes >= 4 * static_cast<int64_t>(at::get_num_threads());
}

template <Activation A, bool kResidual, typename scalar_t>
void forward_nchw(const scalar_t* x, const scalar_t* res, scalar_t* y, at::opmath_type<scalar_t>* mean_out,
                  at::opmath_type<scalar_t>* rstd_out, const Dims& d, Affine<at::opmath_type<scalar_t>> aff,
                  double eps, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = d.HW, P = d.planes();
  const int64_t chunks = (HW + kChunk - 1) / kChunk;
  auto chunk_len = [&](int64_t k) { return std::min(kChunk, HW - k * kChunk); };
  auto plane_apply = [&](int64_t p, int64_t lo, int64_t len) {
    const int64_t c = p % d.C;
    const acc_t w = aff.weight(c);
    const acc_t scale = static_cast<acc_t>(static_cast<double>(rstd_out[p]) * static_cast<double>(w));
    const int64_t off = p * HW + lo;
    run_apply<A, kResidual>(x + off, kResidual ? res + off : nullptr, y + off, len, mean_out[p], scale,
                            aff.bias(c), slope);
  };
  if (chunks == 1) {
    // A plane per task, all passes while it is in cache.
    const int64_t grain = std::max<int64_t>(1, kPlaneGrain / std::max<int64_t>(HW, 1));
    at::parallel_for(0, P, grain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const scalar_t* xp = x + p * HW;
        const acc_t k = shift_of(xp, HW);
        const double exact = static_cast<double>(k) + mean_of(run_reduce<Reduce::kSum>(xp, HW, k), HW);
        const acc_t m = static_cast<acc_t>(exact);
        mean_out[p] = m;
        rstd_out[p] = rstd_of(run_reduce<Reduce::kSq>(xp, HW, m), exact, m, HW, eps);
        plane_apply(p, 0, HW);
      }
    });
    return;
  }
  if (planes_per_task(P)) {
    // A plane per task, its chunks' sums added in the split reduction's order (the same
    // bits), every pass while the plane is in cache.
    at::parallel_for(0, P, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const scalar_t* xp = x + p * HW;
        const acc_t k = shift_of(xp, HW);
        double s = 0.0;
        for (int64_t c = 0; c < chunks; ++c) s += run_reduce<Reduce::kSum>(xp + c * kChunk, chunk_len(c), k);
        const double exact = static_cast<double>(k) + mean_of(s, HW);
        const acc_t m = static_cast<acc_t>(exact);
        double sq = 0.0;
        for (int64_t c = 0; c < chunks; ++c) sq += run_reduce<Reduce::kSq>(xp + c * kChunk, chunk_len(c), m);
        mean_out[p] = m;
        rstd_out[p] = rstd_of(sq, exact, m, HW, eps);
        plane_apply(p, 0, HW);
      }
    });
    return;
  }
  // Split reduction: chunk partials in parallel, combined per plane in chunk order.
  std::vector<double> partial(P * chunks);
  std::vector<double> exact(P);
  at::parallel_for(0, P * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / chunks, k = t % chunks;
      partial[t] = run_reduce<Reduce::kSum>(x + p * HW + k * kChunk, chunk_len(k), shift_of(x + p * HW, HW));
    }
  });
  for (int64_t p = 0; p < P; ++p) {
    double s = 0.0;
    for (int64_t k = 0; k < chunks; ++k) s += partial[p * chunks + k];
    exact[p] = static_cast<double>(shift_of(x + p * HW, HW)) + mean_of(s, HW);
    mean_out[p] = static_cast<acc_t>(exact[p]);
  }
  at::parallel_for(0, P * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / chunks, k = t % chunks;
      partial[t] = run_reduce<Reduce::kSq>(x + p * HW + k * kChunk, chunk_len(k), mean_out[p]);
    }
  });
  for (int64_t p = 0; p < P; ++p) {
    double s = 0.0;
    for (int64_t k = 0; k < chunks; ++k) s += partial[p * chunks + k];
    rstd_out[p] = rstd_of(s, exact[p], mean_out[p], HW, eps);
  }
  at::parallel_for(0, P * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / chunks, k = t % chunks;
      plane_apply(p, k * kChunk, chunk_len(k));
    }
  });
}

// Writes dx, and A[p] = sum(gz), B[p] = sum(gz * (x - mean)) per plane.
template <Activation A, typename scalar_t>
void backward_nchw(const scalar_t* g, const scalar_t* x, scalar_t* dx, const at::opmath_type<scalar_t>* mean,
                   const at::opmath_type<scalar_t>* rstd, double* sum_a, double* sum_b, const Dims& d,
                   Affine<at::opmath_type<scalar_t>> aff, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = d.HW, P = d.planes();
  const int64_t chunks = (HW + kChunk - 1) / kChunk;
  auto chunk_len = [&](int64_t k) { return std::min(kChunk, HW - k * kChunk); };
  auto scale_of = [&](int64_t p) {
    return static_cast<acc_t>(static_cast<double>(rstd[p]) * static_cast<double>(aff.weight(p % d.C)));
  };
  auto grad_input = [&](int64_t p, int64_t lo, int64_t len) {
    const int64_t c = p % d.C;
    const auto k = grad_consts<acc_t>(sum_a[p], sum_b[p], rstd[p], aff.weight(c), HW);
    const int64_t off = p * HW + lo;
    run_grad_input<A>(g + off, x + off, dx + off, len, mean[p], scale_of(p), aff.bias(c), slope, k.c1, k.c2, k.c3);
  };
  if (chunks == 1) {
    const int64_t grain = std::max<int64_t>(1, kPlaneGrain / std::max<int64_t>(HW, 1));
    at::parallel_for(0, P, grain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const auto [a, b] = run_grad_sums<A>(g + p * HW, x + p * HW, HW, mean[p], scale_of(p),
                                             aff.bias(p % d.C), slope);
        sum_a[p] = a;
        sum_b[p] = b;
        grad_input(p, 0, HW);
      }
    });
    return;
  }
  if (planes_per_task(P)) {
    // As forward_nchw: a plane per task, its chunks' sums in the split reduction's order.
    at::parallel_for(0, P, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        double a = 0.0, b = 0.0;
        for (int64_t c = 0; c < chunks; ++c) {
          const int64_t off = p * HW + c * kChunk;
          const auto [pa, pb] = run_grad_sums<A>(g + off, x + off, chunk_len(c), mean[p], scale_of(p),
                                                 aff.bias(p % d.C), slope);
          a += pa;
          b += pb;
        }
        sum_a[p] = a;
        sum_b[p] = b;
        grad_input(p, 0, HW);
      }
    });
    return;
  }
  std::vector<double> pa(P * chunks), pb(P * chunks);
  at::parallel_for(0, P * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / chunks, k = t % chunks;
      const int64_t off = p * HW + k * kChunk;
      std::tie(pa[t], pb[t]) = run_grad_sums<A>(g + off, x + off, chunk_len(k), mean[p], scale_of(p),
                                                aff.bias(p % d.C), slope);
    }
  });
  for (int64_t p = 0; p < P; ++p) {
    double a = 0.0, b = 0.0;
    for (int64_t k = 0; k < chunks; ++k) {
      a += pa[p * chunks + k];
      b += pb[p * chunks + k];
    }
    sum_a[p] = a;
    sum_b[p] = b;
  }
  at::parallel_for(0, P * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      grad_input(t / chunks, (t % chunks) * kChunk, chunk_len(t % chunks));
    }
  });
}

// ------------------------------------------------------------------------- NHWC
// A block is (image n, channels [c0, c0 + cn), pixels [r0, r0 + rn)), at most kRows
// pixels ("a row chunk"). Per-channel sums run in float lanes over a block's pixels,
// vectorized across channels, then are added in double over the row chunks in order.
// Which channels a task takes does not change any channel's arithmetic (each channel is
// a lane doing the same operations in whole steps and in the masked tail run alike), so
// the two schedules below give the same bits:
//   fused:  a task is (image, kFusedChannels channels) over all its pixels: statistics,
//           then the output, while the block (<= kFusedBytes) is in L2;
//   phased: tasks are (image, kChannels channels, row chunk), one parallel pass per
//           sweep, the chunks' partial sums combined in chunk order (a split reduction).

struct NhwcBlock {
  int64_t n, c0, cn, r0, rn;
};

// The block functions below walk the pixels of a block row by row, each row's channels
// in runs of U vector steps (U * kStep channels, kFusedChannels for whole runs, with
// accumulators in registers): few, contiguous cache lines per row. Each channel's lane
// adds the rows in order whatever U is, so U changes no bit. The channels past the last
// whole step (all 16 of a 16-channel layer under AVX-512's 32-element steps) take one
// more run, kTail, whose loads and stores are masked to them: the same operations per
// lane (-ffp-contract=off), so the same bits as a whole step's or scalar code's, where
// scalar loops over them, each a strided pass over the block, took 10x the time.
template <typename scalar_t>
constexpr int kRun = static_cast<int>(kFusedChannels / VecIO<scalar_t>::kStep);

// Loads and stores of a run's rows: whole steps, or (kTail, U 1) its first `count` channels.
template <bool kTail, typename scalar_t, typename aVec>
inline void load_run(const scalar_t* p, int64_t count, aVec& a, aVec& b) {
  if constexpr (kTail) {
    VecIO<scalar_t>::load_first(p, count, a, b);
  } else {
    VecIO<scalar_t>::load(p, a, b);
  }
}

template <bool kTail, typename scalar_t, typename aVec>
inline void store_run(scalar_t* p, int64_t count, const aVec& a, const aVec& b) {
  if constexpr (kTail) {
    VecIO<scalar_t>::store_first(p, count, a, b);
  } else {
    VecIO<scalar_t>::store(p, a, b);
  }
}

// Vector u of a run's per-channel values (channels [u * W, u * W + W)); under kTail the
// lanes past `count` channels are 0, nothing past them read.
template <bool kTail, typename aVec, typename acc_t>
inline aVec channel_vec(const acc_t* p, int u, int64_t count) {
  constexpr int64_t W = aVec::size();
  if constexpr (kTail) {
    const int64_t lanes = count - u * W;
    return lanes >= W ? aVec::loadu(p + u * W) : lanes > 0 ? aVec::loadu(p + u * W, lanes) : aVec(acc_t(0));
  } else {
    return aVec::loadu(p + u * W);
  }
}

// Per-channel sums sum(reduce_term<R>(x - center[c])) over the block's pixels, written to
// out[0 .. cn) in double.
// Each channel's lane adds kNhwcRows rows in float, those partial sums in double (as
// run_reduce's kBlock elements: a block's kRows = 512 rows in one float each left a 256x256
// plane under a bright top row 9.4e-7 of the output off, where aten's is 9.5e-8; 1.0e-7 now).
constexpr int64_t kNhwcRows = 32;

template <Reduce R, int U, bool kTail, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
inline void nhwc_reduce_run(const scalar_t* base, int64_t C, int64_t rn, const acc_t* center, double* out,
                            int64_t count) {
  using IO = VecIO<scalar_t>;
  using aVec = typename IO::aVec;
  constexpr int64_t S = IO::kStep;
  constexpr int64_t W = aVec::size();
  const int64_t lanes = kTail ? count : 2 * U * W;
  aVec m[2 * U], a[2 * U];
  for (int u = 0; u < 2 * U; ++u) {
    m[u] = channel_vec<kTail, aVec>(center, u, count);
  }
  for (int64_t k = 0; k < lanes; ++k) {
    out[k] = 0.0;
  }
  __at_align__ acc_t buf[W];
  for (int64_t r0 = 0; r0 < rn; r0 += kNhwcRows) {
    for (int u = 0; u < 2 * U; ++u) {
      a[u] = aVec(acc_t(0));
    }
    const int64_t r1 = std::min(rn, r0 + kNhwcRows);
    for (int64_t r = r0; r < r1; ++r) {
      const scalar_t* row = base + r * C;
      for (int u = 0; u < U; ++u) {
        aVec x0, x1;
        load_run<kTail>(row + u * S, count, x0, x1);
        const aVec d0 = x0 - m[2 * u];
        const aVec d1 = x1 - m[2 * u + 1];
        a[2 * u] = a[2 * u] + reduce_term<R>(d0);
        a[2 * u + 1] = a[2 * u + 1] + reduce_term<R>(d1);
      }
    }
    for (int u = 0; u < 2 * U; ++u) {
      a[u].store(buf);
      for (int64_t k = 0; k < W && u * W + k < lanes; ++k) out[u * W + k] += static_cast<double>(buf[k]);
    }
  }
}

template <Reduce R, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void nhwc_reduce(const scalar_t* x, const Dims& d, const NhwcBlock& bk, const acc_t* center, double* out) {
  constexpr int64_t S = VecIO<scalar_t>::kStep;
  constexpr int U = kRun<scalar_t>;
  const int64_t c_vec = bk.cn - bk.cn % S;
  const scalar_t* base = x + (bk.n * d.HW + bk.r0) * d.C + bk.c0;
  int64_t c = 0;
  for (; c + U * S <= c_vec; c += U * S) nhwc_reduce_run<R, U, false>(base + c, d.C, bk.rn, center + c, out + c, 0);
  for (; c < c_vec; c += S) nhwc_reduce_run<R, 1, false>(base + c, d.C, bk.rn, center + c, out + c, 0);
  if (c < bk.cn) nhwc_reduce_run<R, 1, true>(base + c, d.C, bk.rn, center + c, out + c, bk.cn - c);
}

// y = act((x - mean[c]) * scale[c] + shift[c]) [+ residual] over the block; the
// per-channel vectors start at the block's first channel.
template <Activation A, bool kResidual, int U, bool kTail, typename scalar_t,
          typename acc_t = at::opmath_type<scalar_t>>
inline void nhwc_apply_run(const scalar_t* x, const scalar_t* res, scalar_t* y, int64_t C, int64_t rn,
                           const acc_t* mean, const acc_t* scale, const acc_t* shift, acc_t slope, int64_t count) {
  using IO = VecIO<scalar_t>;
  using aVec = typename IO::aVec;
  constexpr int64_t S = IO::kStep;
  aVec m[2 * U], k[2 * U], b[2 * U];
  for (int u = 0; u < 2 * U; ++u) {
    m[u] = channel_vec<kTail, aVec>(mean, u, count);
    k[u] = channel_vec<kTail, aVec>(scale, u, count);
    b[u] = channel_vec<kTail, aVec>(shift, u, count);
  }
  for (int64_t r = 0; r < rn; ++r) {
    for (int u = 0; u < U; ++u) {
      const int64_t o = r * C + u * S;
      aVec x0, x1;
      load_run<kTail>(x + o, count, x0, x1);
      aVec y0 = act_vec<A>((x0 - m[2 * u]) * k[2 * u] + b[2 * u], slope);
      aVec y1 = act_vec<A>((x1 - m[2 * u + 1]) * k[2 * u + 1] + b[2 * u + 1], slope);
      if constexpr (kResidual) {
        aVec r0, r1;
        load_run<kTail>(res + o, count, r0, r1);
        y0 = r0 + y0;
        y1 = r1 + y1;
      }
      store_run<kTail>(y + o, count, y0, y1);
    }
  }
}

template <Activation A, bool kResidual, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void nhwc_apply(const scalar_t* x, const scalar_t* res, scalar_t* y, const Dims& d, const NhwcBlock& bk,
                const acc_t* mean, const acc_t* scale, const acc_t* shift, acc_t slope) {
  constexpr int64_t S = VecIO<scalar_t>::kStep;
  constexpr int U = kRun<scalar_t>;
  const int64_t off = (bk.n * d.HW + bk.r0) * d.C + bk.c0;
  const int64_t c_vec = bk.cn - bk.cn % S;
  auto run = [&](auto u_tag, auto tail_tag, int64_t c, int64_t count) {
    constexpr int V = decltype(u_tag)::value;
    constexpr bool kTail = decltype(tail_tag)::value;
    nhwc_apply_run<A, kResidual, V, kTail>(x + off + c, kResidual ? res + off + c : nullptr, y + off + c, d.C,
                                           bk.rn, mean + c, scale + c, shift + c, slope, count);
  };
  int64_t c = 0;
  for (; c + U * S <= c_vec; c += U * S) run(std::integral_constant<int, U>{}, std::false_type{}, c, 0);
  for (; c < c_vec; c += S) run(std::integral_constant<int, 1>{}, std::false_type{}, c, 0);
  if (c < bk.cn) run(std::integral_constant<int, 1>{}, std::true_type{}, c, bk.cn - c);
}

// Per-channel (sum(gz), sum(gz * (x - mean))) over the block into oa, ob [0 .. cn), each
// lane's kNhwcRows rows in float, those partial sums in double (as nhwc_reduce_run).
template <Activation A, int U, bool kTail, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
inline void nhwc_grad_sums_run(const scalar_t* g, const scalar_t* x, int64_t C, int64_t rn, const acc_t* mean,
                               const acc_t* scale, const acc_t* shift, acc_t slope, double* oa, double* ob,
                               int64_t count) {
  using IO = VecIO<scalar_t>;
  using aVec = typename IO::aVec;
  constexpr int64_t S = IO::kStep;
  constexpr int64_t W = aVec::size();
  const int64_t lanes = kTail ? count : 2 * U * W;
  aVec m[2 * U], k[2 * U], b[2 * U], sa[2 * U], sb[2 * U];
  for (int u = 0; u < 2 * U; ++u) {
    m[u] = channel_vec<kTail, aVec>(mean, u, count);
    k[u] = channel_vec<kTail, aVec>(scale, u, count);
    b[u] = channel_vec<kTail, aVec>(shift, u, count);
  }
  for (int64_t j = 0; j < lanes; ++j) {
    oa[j] = 0.0;
    ob[j] = 0.0;
  }
  __at_align__ acc_t buf[W];
  for (int64_t r0 = 0; r0 < rn; r0 += kNhwcRows) {
    for (int u = 0; u < 2 * U; ++u) {
      sa[u] = aVec(acc_t(0));
      sb[u] = aVec(acc_t(0));
    }
    const int64_t r1 = std::min(rn, r0 + kNhwcRows);
    for (int64_t r = r0; r < r1; ++r) {
      for (int u = 0; u < U; ++u) {
        const int64_t o = r * C + u * S;
        aVec x0, x1, g0, g1;
        load_run<kTail>(x + o, count, x0, x1);
        load_run<kTail>(g + o, count, g0, g1);
        const aVec d0 = x0 - m[2 * u], d1 = x1 - m[2 * u + 1];
        const aVec gz0 = act_grad_vec<A>(g0, d0 * k[2 * u] + b[2 * u], slope);
        const aVec gz1 = act_grad_vec<A>(g1, d1 * k[2 * u + 1] + b[2 * u + 1], slope);
        sa[2 * u] = sa[2 * u] + gz0;
        sa[2 * u + 1] = sa[2 * u + 1] + gz1;
        sb[2 * u] = sb[2 * u] + gz0 * d0;
        sb[2 * u + 1] = sb[2 * u + 1] + gz1 * d1;
      }
    }
    for (int u = 0; u < 2 * U; ++u) {
      sa[u].store(buf);
      for (int64_t j = 0; j < W && u * W + j < lanes; ++j) oa[u * W + j] += static_cast<double>(buf[j]);
      sb[u].store(buf);
      for (int64_t j = 0; j < W && u * W + j < lanes; ++j) ob[u * W + j] += static_cast<double>(buf[j]);
    }
  }
}

template <Activation A, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void nhwc_grad_sums(const scalar_t* g, const scalar_t* x, const Dims& d, const NhwcBlock& bk, const acc_t* mean,
                    const acc_t* scale, const acc_t* shift, acc_t slope, double* oa, double* ob) {
  constexpr int64_t S = VecIO<scalar_t>::kStep;
  constexpr int U = kRun<scalar_t>;
  const int64_t off = (bk.n * d.HW + bk.r0) * d.C + bk.c0;
  const int64_t c_vec = bk.cn - bk.cn % S;
  auto run = [&](auto u_tag, auto tail_tag, int64_t c, int64_t count) {
    nhwc_grad_sums_run<A, decltype(u_tag)::value, decltype(tail_tag)::value>(
        g + off + c, x + off + c, d.C, bk.rn, mean + c, scale + c, shift + c, slope, oa + c, ob + c, count);
  };
  int64_t c = 0;
  for (; c + U * S <= c_vec; c += U * S) run(std::integral_constant<int, U>{}, std::false_type{}, c, 0);
  for (; c < c_vec; c += S) run(std::integral_constant<int, 1>{}, std::false_type{}, c, 0);
  if (c < bk.cn) run(std::integral_constant<int, 1>{}, std::true_type{}, c, bk.cn - c);
}

// dx = gz * c1[c] - (x - mean[c]) * c3[c] - c2[c] over the block.
template <Activation A, int U, bool kTail, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
inline void nhwc_grad_input_run(const scalar_t* g, const scalar_t* x, scalar_t* dx, int64_t C, int64_t rn,
                                const acc_t* mean, const acc_t* scale, const acc_t* shift, acc_t slope,
                                const acc_t* c1, const acc_t* c2, const acc_t* c3, int64_t count) {
  using IO = VecIO<scalar_t>;
  using aVec = typename IO::aVec;
  constexpr int64_t S = IO::kStep;
  aVec m[2 * U], k[2 * U], b[2 * U], u1[2 * U], u2[2 * U], u3[2 * U];
  for (int u = 0; u < 2 * U; ++u) {
    m[u] = channel_vec<kTail, aVec>(mean, u, count);
    k[u] = channel_vec<kTail, aVec>(scale, u, count);
    b[u] = channel_vec<kTail, aVec>(shift, u, count);
    u1[u] = channel_vec<kTail, aVec>(c1, u, count);
    u2[u] = channel_vec<kTail, aVec>(c2, u, count);
    u3[u] = channel_vec<kTail, aVec>(c3, u, count);
  }
  for (int64_t r = 0; r < rn; ++r) {
    for (int u = 0; u < U; ++u) {
      const int64_t o = r * C + u * S;
      aVec x0, x1, g0, g1;
      load_run<kTail>(x + o, count, x0, x1);
      load_run<kTail>(g + o, count, g0, g1);
      const aVec d0 = x0 - m[2 * u], d1 = x1 - m[2 * u + 1];
      const aVec gz0 = act_grad_vec<A>(g0, d0 * k[2 * u] + b[2 * u], slope);
      const aVec gz1 = act_grad_vec<A>(g1, d1 * k[2 * u + 1] + b[2 * u + 1], slope);
      store_run<kTail>(dx + o, count, gz0 * u1[2 * u] - d0 * u3[2 * u] - u2[2 * u],
                       gz1 * u1[2 * u + 1] - d1 * u3[2 * u + 1] - u2[2 * u + 1]);
    }
  }
}

template <Activation A, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void nhwc_grad_input(const scalar_t* g, const scalar_t* x, scalar_t* dx, const Dims& d, const NhwcBlock& bk,
                     const acc_t* mean, const acc_t* scale, const acc_t* shift, acc_t slope, const acc_t* c1,
                     const acc_t* c2, const acc_t* c3) {
  constexpr int64_t S = VecIO<scalar_t>::kStep;
  constexpr int U = kRun<scalar_t>;
  const int64_t off = (bk.n * d.HW + bk.r0) * d.C + bk.c0;
  const int64_t c_vec = bk.cn - bk.cn % S;
  auto run = [&](auto u_tag, auto tail_tag, int64_t c, int64_t count) {
    nhwc_grad_input_run<A, decltype(u_tag)::value, decltype(tail_tag)::value>(
        g + off + c, x + off + c, dx + off + c, d.C, bk.rn, mean + c, scale + c, shift + c, slope, c1 + c, c2 + c,
        c3 + c, count);
  };
  int64_t c = 0;
  for (; c + U * S <= c_vec; c += U * S) run(std::integral_constant<int, U>{}, std::false_type{}, c, 0);
  for (; c < c_vec; c += S) run(std::integral_constant<int, 1>{}, std::false_type{}, c, 0);
  if (c < bk.cn) run(std::integral_constant<int, 1>{}, std::true_type{}, c, bk.cn - c);
}

// Whether the fused schedule runs: the (image, kFusedChannels) block of all pixels fits
// in kFusedBytes, and its tasks keep every thread busy or the rows are too few to split
// (two chunks or fewer). Measured on 2 threads, the phased schedule's row chunks in place
// of a single fused task: 1x32x64x64 float32 forward 0.65x and backward 0.5x the time,
// bf16 0.8x / 0.7x; at 1x32x32x32 (two chunks) 1.2x. Either schedule gives the same bits.
template <typename scalar_t>
inline bool nhwc_fused(const Dims& d) {
  const bool fits = d.HW * kFusedChannels * static_cast<int64_t>(sizeof(scalar_t)) <= kFusedBytes;
  const int64_t tasks = d.N * ((d.C + kFusedChannels - 1) / kFusedChannels);
  return fits && (tasks >= at::get_num_threads() || d.HW <= 2 * kRows);
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// shift_of of the planes (n, c0 .. c0 + cn), written to out[0 .. cn): vectorized across
// the channels, each lane doing shift_of's operations in its order (the same bits), for a
// whole vector of channels in the time shift_of takes for one.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void nhwc_shifts(const scalar_t* x, const Dims& d, int64_t n, int64_t c0, int64_t cn, acc_t* out) {
  using IO = VecIO<scalar_t>;
  using aVec = typename IO::aVec;
  constexpr int64_t S = IO::kStep;
  const scalar_t* base = x + n * d.HW * d.C + c0;
  int64_t c = 0;
  if (d.HW > 0) {
    const int64_t m = d.HW < 32 ? d.HW : 32;
    const int64_t step = d.HW / m;
    const aVec count(static_cast<acc_t>(m));
    for (; c + S <= cn; c += S) {
      aVec k0, k1, s0(acc_t(0)), s1(acc_t(0));
      IO::load(base + c, k0, k1);
      for (int64_t j = 1; j < m; ++j) {
        aVec x0, x1;
        IO::load(base + (j * step + j % step) * d.C + c, x0, x1);
        s0 = s0 + (x0 - k0);
        s1 = s1 + (x1 - k1);
      }
      (k0 + s0 / count).store(out + c);
      (k1 + s1 / count).store(out + c + aVec::size());
    }
  }
  for (; c < cn; ++c) out[c] = shift_of(base + c, d.HW, d.C);
}

// Per-(n, c) vectors of the output pass: scale = rstd * w and shift = b.
template <typename acc_t>
void affine_vectors(const Dims& d, const acc_t* rstd, const Affine<acc_t>& aff, acc_t* scale, acc_t* shift) {
  for (int64_t p = 0; p < d.planes(); ++p) {
    const int64_t c = p % d.C;
    scale[p] = static_cast<acc_t>(static_cast<double>(rstd[p]) * static_cast<double>(aff.weight(c)));
    shift[p] = aff.bias(c);
  }
}

template <Activation A, bool kResidual, typename scalar_t>
void forward_nhwc(const scalar_t* x, const scalar_t* res, scalar_t* y, at::opmath_type<scalar_t>* mean_out,
                  at::opmath_type<scalar_t>* rstd_out, const Dims& d, Affine<at::opmath_type<scalar_t>> aff,
                  double eps, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t P = d.planes();
  const int64_t chunks = ceil_div(d.HW, kRows);
  std::vector<double> exact(P);

  if (nhwc_fused<scalar_t>(d)) {
    const int64_t groups = ceil_div(d.C, kFusedChannels);
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, d.HW * kFusedChannels));
    at::parallel_for(0, d.N * groups, grain, [&](int64_t begin, int64_t end) {
      double part[kFusedChannels], total[kFusedChannels];
      acc_t first[kFusedChannels], k_scale[kFusedChannels], k_shift[kFusedChannels];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / groups, c0 = (t % groups) * kFusedChannels;
        const int64_t cn = std::min(kFusedChannels, d.C - c0), q = n * d.C + c0;
        auto block = [&](int64_t k) { return NhwcBlock{n, c0, cn, k * kRows, std::min(kRows, d.HW - k * kRows)}; };
        nhwc_shifts(x, d, n, c0, cn, first);
        std::fill(total, total + cn, 0.0);
        for (int64_t k = 0; k < chunks; ++k) {
          nhwc_reduce<Reduce::kSum>(x, d, block(k), first, part);
          for (int64_t c = 0; c < cn; ++c) total[c] += part[c];
        }
        for (int64_t c = 0; c < cn; ++c) {
          exact[q + c] = static_cast<double>(first[c]) + mean_of(total[c], d.HW);
          mean_out[q + c] = static_cast<acc_t>(exact[q + c]);
        }
        std::fill(total, total + cn, 0.0);
        for (int64_t k = 0; k < chunks; ++k) {
          nhwc_reduce<Reduce::kSq>(x, d, block(k), mean_out + q, part);
          for (int64_t c = 0; c < cn; ++c) total[c] += part[c];
        }
        for (int64_t c = 0; c < cn; ++c) {
          rstd_out[q + c] = rstd_of(total[c], exact[q + c], mean_out[q + c], d.HW, eps);
          k_scale[c] = static_cast<acc_t>(static_cast<double>(rstd_out[q + c]) *
                                          static_cast<double>(aff.weight(c0 + c)));
          k_shift[c] = aff.bias(c0 + c);
        }
        nhwc_apply<A, kResidual>(x, res, y, d, NhwcBlock{n, c0, cn, 0, d.HW}, mean_out + q, k_scale, k_shift,
                                 slope);
      }
    });
    return;
  }

  const int64_t groups = ceil_div(d.C, kChannels);
  std::vector<acc_t> first(P), scale(P), shift(P);  // first: each plane's shift_of
  at::parallel_for(0, d.N * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / groups, c0 = (t % groups) * kChannels;
      nhwc_shifts(x, d, n, c0, std::min(kChannels, d.C - c0), first.data() + n * d.C + c0);
    }
  });
  const int64_t T = d.N * groups * chunks;  // task t = (n * groups + group) * chunks + chunk
  auto task = [&](int64_t t) {
    const int64_t k = t % chunks, group = (t / chunks) % groups, n = t / (chunks * groups);
    const int64_t c0 = group * kChannels;
    return NhwcBlock{n, c0, std::min(kChannels, d.C - c0), k * kRows, std::min(kRows, d.HW - k * kRows)};
  };
  // sum over chunks, in order, of partial[(n * groups + group) * chunks + k][c % kChannels]
  auto combine = [&](const std::vector<double>& partial, int64_t n, int64_t c) {
    const double* p = partial.data() + ((n * groups + c / kChannels) * chunks) * kChannels + c % kChannels;
    double s = 0.0;
    for (int64_t k = 0; k < chunks; ++k) s += p[k * kChannels];
    return s;
  };
  std::vector<double> partial(T * kChannels);
  at::parallel_for(0, T, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const NhwcBlock bk = task(t);
      nhwc_reduce<Reduce::kSum>(x, d, bk, first.data() + bk.n * d.C + bk.c0, partial.data() + t * kChannels);
    }
  });
  for (int64_t p = 0; p < P; ++p) {
    exact[p] = static_cast<double>(first[p]) + mean_of(combine(partial, p / d.C, p % d.C), d.HW);
    mean_out[p] = static_cast<acc_t>(exact[p]);
  }
  at::parallel_for(0, T, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const NhwcBlock bk = task(t);
      nhwc_reduce<Reduce::kSq>(x, d, bk, mean_out + bk.n * d.C + bk.c0, partial.data() + t * kChannels);
    }
  });
  for (int64_t p = 0; p < P; ++p) {
    rstd_out[p] = rstd_of(combine(partial, p / d.C, p % d.C), exact[p], mean_out[p], d.HW, eps);
  }
  affine_vectors(d, rstd_out, aff, scale.data(), shift.data());
  at::parallel_for(0, T, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const NhwcBlock bk = task(t);
      const int64_t q = bk.n * d.C + bk.c0;
      nhwc_apply<A, kResidual>(x, res, y, d, bk, mean_out + q, scale.data() + q, shift.data() + q, slope);
    }
  });
}

template <Activation A, typename scalar_t>
void backward_nhwc(const scalar_t* g, const scalar_t* x, scalar_t* dx, const at::opmath_type<scalar_t>* mean,
                   const at::opmath_type<scalar_t>* rstd, double* sum_a, double* sum_b, const Dims& d,
                   Affine<at::opmath_type<scalar_t>> aff, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t P = d.planes();
  const int64_t chunks = ceil_div(d.HW, kRows);
  std::vector<acc_t> scale(P), shift(P), c1(P), c2(P), c3(P);
  affine_vectors(d, rstd, aff, scale.data(), shift.data());
  auto set_consts = [&](int64_t p) {
    const auto k = grad_consts<acc_t>(sum_a[p], sum_b[p], rstd[p], aff.weight(p % d.C), d.HW);
    c1[p] = k.c1;
    c2[p] = k.c2;
    c3[p] = k.c3;
  };

  if (nhwc_fused<scalar_t>(d)) {
    const int64_t groups = ceil_div(d.C, kFusedChannels);
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, d.HW * kFusedChannels));
    at::parallel_for(0, d.N * groups, grain, [&](int64_t begin, int64_t end) {
      double pa[kFusedChannels], pb[kFusedChannels];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / groups, c0 = (t % groups) * kFusedChannels;
        const int64_t cn = std::min(kFusedChannels, d.C - c0), q = n * d.C + c0;
        std::fill(sum_a + q, sum_a + q + cn, 0.0);
        std::fill(sum_b + q, sum_b + q + cn, 0.0);
        for (int64_t k = 0; k < chunks; ++k) {
          const NhwcBlock bk{n, c0, cn, k * kRows, std::min(kRows, d.HW - k * kRows)};
          nhwc_grad_sums<A>(g, x, d, bk, mean + q, scale.data() + q, shift.data() + q, slope, pa, pb);
          for (int64_t c = 0; c < cn; ++c) {
            sum_a[q + c] += pa[c];
            sum_b[q + c] += pb[c];
          }
        }
        for (int64_t c = 0; c < cn; ++c) set_consts(q + c);
        nhwc_grad_input<A>(g, x, dx, d, NhwcBlock{n, c0, cn, 0, d.HW}, mean + q, scale.data() + q,
                           shift.data() + q, slope, c1.data() + q, c2.data() + q, c3.data() + q);
      }
    });
    return;
  }

  const int64_t groups = ceil_div(d.C, kChannels);
  const int64_t T = d.N * groups * chunks;
  auto task = [&](int64_t t) {
    const int64_t k = t % chunks, group = (t / chunks) % groups, n = t / (chunks * groups);
    const int64_t c0 = group * kChannels;
    return NhwcBlock{n, c0, std::min(kChannels, d.C - c0), k * kRows, std::min(kRows, d.HW - k * kRows)};
  };
  std::vector<double> pa(T * kChannels), pb(T * kChannels);
  at::parallel_for(0, T, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const NhwcBlock bk = task(t);
      const int64_t q = bk.n * d.C + bk.c0;
      nhwc_grad_sums<A>(g, x, d, bk, mean + q, scale.data() + q, shift.data() + q, slope,
                        pa.data() + t * kChannels, pb.data() + t * kChannels);
    }
  });
  for (int64_t p = 0; p < P; ++p) {
    const int64_t n = p / d.C, c = p % d.C;
    const int64_t first = ((n * groups + c / kChannels) * chunks) * kChannels + c % kChannels;
    double a = 0.0, b = 0.0;
    for (int64_t k = 0; k < chunks; ++k) {
      a += pa[first + k * kChannels];
      b += pb[first + k * kChannels];
    }
    sum_a[p] = a;
    sum_b[p] = b;
    set_consts(p);
  }
  at::parallel_for(0, T, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const NhwcBlock bk = task(t);
      const int64_t q = bk.n * d.C + bk.c0;
      nhwc_grad_input<A>(g, x, dx, d, bk, mean + q, scale.data() + q, shift.data() + q, slope, c1.data() + q,
                         c2.data() + q, c3.data() + q);
    }
  });
}

// ------------------------------------------------------------------------ the ops

template <typename F>
void dispatch_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::kRelu:
      f(std::integral_constant<Activation, Activation::kRelu>{});
      break;
    case Activation::kLeakyRelu:
      f(std::integral_constant<Activation, Activation::kLeakyRelu>{});
      break;
    case Activation::kNone:
      f(std::integral_constant<Activation, Activation::kNone>{});
      break;
  }
}

}  // namespace

void forward(const inorm::ForwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "fastgan_instance_norm_act_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Affine<acc_t> aff{static_cast<const acc_t*>(a.weight), static_cast<const acc_t*>(a.bias)};
    const auto* xp = static_cast<const scalar_t*>(a.x);
    const auto* rp = static_cast<const scalar_t*>(a.residual);
    auto* yp = static_cast<scalar_t*>(a.y);
    auto* mp = static_cast<acc_t*>(a.mean);
    auto* sp = static_cast<acc_t*>(a.rstd);
    const acc_t slope = static_cast<acc_t>(a.negative_slope);
    dispatch_activation(a.act, [&](auto act) {
      constexpr Activation A = decltype(act)::value;
      auto run = [&](auto with_res) {
        constexpr bool R = decltype(with_res)::value;
        if constexpr (FASTGAN_NHWC_ONLY) {
          TORCH_CHECK(a.layout == Layout::kNHWC, "instance_norm_act: this CPU kernel copy runs NHWC inputs only");
          forward_nhwc<A, R>(xp, rp, yp, mp, sp, a.d, aff, a.eps, slope);
        } else if (a.layout == Layout::kNCHW) {
          forward_nchw<A, R>(xp, rp, yp, mp, sp, a.d, aff, a.eps, slope);
        } else {
          forward_nhwc<A, R>(xp, rp, yp, mp, sp, a.d, aff, a.eps, slope);
        }
      };
      if (rp != nullptr) {
        run(std::true_type{});
      } else {
        run(std::false_type{});
      }
    });
  });
}

void backward(const inorm::BackwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "fastgan_instance_norm_act_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Affine<acc_t> aff{static_cast<const acc_t*>(a.weight), static_cast<const acc_t*>(a.bias)};
    const auto* gp = static_cast<const scalar_t*>(a.grad);
    const auto* xp = static_cast<const scalar_t*>(a.x);
    auto* dxp = static_cast<scalar_t*>(a.dx);
    const auto* mp = static_cast<const acc_t*>(a.mean);
    const auto* sp = static_cast<const acc_t*>(a.rstd);
    const acc_t slope = static_cast<acc_t>(a.negative_slope);
    dispatch_activation(a.act, [&](auto act) {
      constexpr Activation A = decltype(act)::value;
      if constexpr (FASTGAN_NHWC_ONLY) {
        TORCH_CHECK(a.layout == Layout::kNHWC, "instance_norm_act: this CPU kernel copy runs NHWC inputs only");
        backward_nhwc<A>(gp, xp, dxp, mp, sp, a.sum_a, a.sum_b, a.d, aff, slope);
      } else if (a.layout == Layout::kNCHW) {
        backward_nchw<A>(gp, xp, dxp, mp, sp, a.sum_a, a.sum_b, a.d, aff, slope);
      } else {
        backward_nhwc<A>(gp, xp, dxp, mp, sp, a.sum_a, a.sum_b, a.d, aff, slope);
      }
    });
  });
}

}  // namespace fastgan::cpu::FASTGAN_CPU_ISA
