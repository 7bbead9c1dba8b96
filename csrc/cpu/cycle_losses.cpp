// fastgan::cycle_losses and fastgan::cycle_losses_backward on the CPU.
//
// Every L1 term of a CycleGAN iteration in one pass (see csrc/cycle_losses.h for the
// sides, the term order and the sign codes):
//   losses = (lambda_A * mean|rec_A - real_A|, lambda_B * mean|rec_B - real_B|,
//             lambda_B * lambda_idt * mean|idt_A - real_B|, lambda_A * lambda_idt * mean|idt_B - real_A|)
//
// Forward: one pass over the six images, at::parallel_for over fixed chunks of kChunk
// element indices; each chunk sums its four terms in a fixed order (float lanes over
// blocks of kBlock elements, the block sums added in double; float64 inputs all in
// double) and the chunk partials are added in chunk order, so the result is the same
// bits with any number of threads. In the same pass, when asked (compute_signs), it
// writes one byte per element index: the four 2-bit codes of sign(x - t).
// Backward: reads the code bytes and writes each requested gradient as
// sign * scale_j, scale_j = (grad[j] * weight_j) / numel rounded once to the dtype (so
// these are the dtype's rounding of the float64 reference, exactly); gradients of the
// real images (rarely asked for) are -(sum of their two terms), rounded once.
//
// Why codes rather than recomputing in backward (n = elements per image, s = bytes per
// element, identity terms on, real images without grad):
//   recompute: forward reads 6 images (6ns), backward reads them again and writes
//              4 gradients (10ns): 16ns in all (64n bytes in float32, 32n in bf16);
//   codes:     forward reads 6ns and writes n code bytes, backward reads n and writes
//              4ns: 10ns + 2n in all (42n bytes in float32, 22n in bf16).
// Memory traffic floor of this kernel pair: forward 6ns + n, backward n + 4ns (without
// identity terms: 4ns + n and n + 2ns). Measured on the shared build VM (Xeon, one
// thread, 4x3x256x256, busy machine: indicative, not a benchmark): float32 forward
// 10.4 GB/s of that floor, backward 13.2 GB/s; bf16 forward 4.8 GB/s (the generic
// 16-bit -> float conversion), backward 13.1 GB/s; a plain tensor clone moves 27.5 GB/s
// there, so the float32 pair runs at ~40-50% of the copy bandwidth. At 1x3x256x256
// float32 forward + backward through autograd is ~2.4x four eager F.l1_loss terms.
// With the AVX2 copy (below; codes written from the vectors the sums load), measured
// on the 2-core build VM, 1x3x256x256 float32, 2 threads (benchmarks/kernels, noisy):
// forward 0.20 ms (~23 GB/s, 2.5-2.75x eager; generic copy 0.35 ms), forward +
// backward 0.65 ms (2.0-2.4x eager; generic copy 0.83 ms). Kernel alone (no autograd):
// forward 94 us, backward 100 us with 2 threads.
//
// ISA: the kernel section of this file (the loops) is compiled twice: here for
// baseline x86-64 with at::vec's generic vectors (namespace fastgan::cpu::base), and by
// cpu/cycle_losses_avx2.cpp, which includes this file with FASTGAN_CPU_ISA = avx2 under
// an AVX2 target (namespace fastgan::cpu::avx2), as cpu/instance_norm_act_avx2.cpp does.
// The AVX2 copy runs where the CPU has AVX2, FMA and F16C (checked once at run time);
// FASTGAN_CPU_ISA=base in the environment forces the generic one. Both give the same
// bits: 8 float (4 double) lanes, the same operations (sub, abs, add, compares; no
// multiplies in the kernels, and -ffp-contract=off) in the same order.
// Why: at::vec's generic vectors compile to scalar code (GCC does not vectorize their
// lane loops); the AVX2 copy is several times faster in the summing loop.
#ifndef FASTGAN_CPU_ISA
#define FASTGAN_CPU_ISA base
#define FASTGAN_CYCLE_BASE_TU 1
#endif

#include "../cycle_losses.h"
#include "cpu_isa.h"
#include "lanes_sum.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#ifdef CPU_CAPABILITY_AVX2
#include <immintrin.h>
#endif
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "isa_copies.h"

namespace fastgan::cpu {

// The arguments of the kernel entry points (one definition, whichever file includes it).
#ifndef FASTGAN_CYCLE_ARGS_DEFINED
#define FASTGAN_CYCLE_ARGS_DEFINED
namespace cycle_kernel {
struct ForwardArgs {
  at::ScalarType dtype;
  const void* xa;  // rec_A
  const void* ra;  // real_A
  const void* ib;  // idt_B (null without identity terms)
  const void* xb;  // rec_B
  const void* rb;  // real_B
  const void* ia;  // idt_A (null without identity terms)
  int64_t n_A, n_B;
  bool has_idt;
  uint8_t* codes;  // null: no codes
  double* total;   // the 4 sums, added to
};
struct BackwardArgs {
  size_t elem_size;  // 2, 4 or 8 bytes
  const uint8_t* codes;
  int64_t n_A, n_B;
  void* out[6];  // gradients, input order; null where not asked for
  uint64_t pos[4], neg[4];  // bits of +scale_j, -scale_j (low elem_size bytes)
  uint64_t zero[4];  // bits of 0 * scale_j: a signed zero, NaN where scale_j is inf or NaN
  uint64_t table_A[16], table_B[16];  // real image gradients by code pair
};
}  // namespace cycle_kernel
#endif

namespace FASTGAN_CPU_ISA {
namespace {

using at::vec::Vectorized;
using namespace fastgan::cycle;

// Element indices per partial sum; fixed, so the reduction order does not depend on
// the number of threads.
constexpr int64_t kChunk = 16384;
constexpr int64_t kGrainChunks = 2;  // chunks per parallel task at least (aten's GRAIN_SIZE)
// Float lane sums restart every kBlock elements (each lane adds kBlock / 8 = 64 values
// at most before the block sum goes to double): the float rounding stays ~1e-7 relative.
constexpr int64_t kBlock = 512;

// The code bytes of one block of element indices where both sides have elements.
// Plain loop over compares and shifts, which the compiler vectorizes (the block is in
// L1 already: the sums read it just before).
#ifdef CPU_CAPABILITY_AVX2
// The code bits of 8 float elements of one term, as int32 lanes: gt -> bit `shift`,
// lt -> bit `shift + 1` (ordered compares: NaN gives 0, as the scalar loop).
inline __m256i code_bits8(__m256 vx, __m256 vt, int shift) {
  const __m256i gt = _mm256_castps_si256(_mm256_cmp_ps(vx, vt, _CMP_GT_OQ));
  const __m256i lt = _mm256_castps_si256(_mm256_cmp_ps(vx, vt, _CMP_LT_OQ));
  return _mm256_or_si256(_mm256_and_si256(gt, _mm256_set1_epi32(1 << shift)),
                         _mm256_and_si256(lt, _mm256_set1_epi32(2 << shift)));
}
#endif

template <typename C, bool kIdt>
inline void block_codes(const C* xa, const C* ra, const C* ib, const C* xb, const C* rb, const C* ia, int64_t i0,
                        int64_t L, uint8_t* codes) {
  for (int64_t i = i0; i < L; ++i) {
    int c = static_cast<int>(xa[i] > ra[i]) | (static_cast<int>(xa[i] < ra[i]) << 1) |
            (static_cast<int>(xb[i] > rb[i]) << 2) | (static_cast<int>(xb[i] < rb[i]) << 3);
    if constexpr (kIdt) {
      c |= (static_cast<int>(ia[i] > rb[i]) << 4) | (static_cast<int>(ia[i] < rb[i]) << 5) |
           (static_cast<int>(ib[i] > ra[i]) << 6) | (static_cast<int>(ib[i] < ra[i]) << 7);
    }
    codes[i] = static_cast<uint8_t>(c);
  }
}

// One block of element indices where both sides have elements, in compute type C
// (float, or double for float64 inputs). Side A: xa = rec_A, ra = real_A, ib = idt_B;
// side B: xb = rec_B, rb = real_B, ia = idt_A. Adds the four block sums to sums[] and,
// with kCodes, writes the code bytes.
template <typename C, bool kIdt, bool kCodes>
inline void block_both(const C* xa, const C* ra, const C* ib, const C* xb, const C* rb, const C* ia, int64_t L,
                       double* sums, uint8_t* codes) {
  using V = Vectorized<C>;
  constexpr int64_t W = V::size();
  V s0(C(0)), s1(C(0)), s2(C(0)), s3(C(0));
  int64_t i = 0;
  for (; i + W <= L; i += W) {
    const V vra = V::loadu(ra + i), vrb = V::loadu(rb + i);
    const V vxa = V::loadu(xa + i), vxb = V::loadu(xb + i);
    s0 += (vxa - vra).abs();
    s1 += (vxb - vrb).abs();
    [[maybe_unused]] V via, vib;
    if constexpr (kIdt) {
      via = V::loadu(ia + i);
      vib = V::loadu(ib + i);
      s2 += (via - vrb).abs();
      s3 += (vib - vra).abs();
    }
#ifdef CPU_CAPABILITY_AVX2
    // The AVX2 copy writes the codes of these 8 floats here, from the loaded vectors:
    // the same exact booleans as block_codes' loop.
    if constexpr (kCodes && std::is_same_v<C, float>) {
      __m256i c = _mm256_or_si256(code_bits8(vxa, vra, 2 * kCycleA), code_bits8(vxb, vrb, 2 * kCycleB));
      if constexpr (kIdt) {
        c = _mm256_or_si256(c, _mm256_or_si256(code_bits8(via, vrb, 2 * kIdtA), code_bits8(vib, vra, 2 * kIdtB)));
      }
      const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + i), _mm_packus_epi16(w16, w16));
    }
#endif
  }
  [[maybe_unused]] const int64_t coded = i;  // elements whose codes are written already
  sums[kCycleA] += lanes_sum(s0);
  sums[kCycleB] += lanes_sum(s1);
  if constexpr (kIdt) {
    sums[kIdtA] += lanes_sum(s2);
    sums[kIdtB] += lanes_sum(s3);
  }
  for (; i < L; ++i) {
    sums[kCycleA] += std::abs(static_cast<double>(xa[i] - ra[i]));
    sums[kCycleB] += std::abs(static_cast<double>(xb[i] - rb[i]));
    if constexpr (kIdt) {
      sums[kIdtA] += std::abs(static_cast<double>(ia[i] - rb[i]));
      sums[kIdtB] += std::abs(static_cast<double>(ib[i] - ra[i]));
    }
  }
  if constexpr (kCodes) {
#ifdef CPU_CAPABILITY_AVX2
    block_codes<C, kIdt>(xa, ra, ib, xb, rb, ia, std::is_same_v<C, float> ? coded : 0, L, codes);
#else
    block_codes<C, kIdt>(xa, ra, ib, xb, rb, ia, 0, L, codes);
#endif
  }
}

// Element indices [lo, hi) where only one side has elements (its images are larger
// than the other side's): that side's cycle term and, when `idt` is given, its identity
// term (idt_B against real_A on side A, idt_A against real_B on side B). Plain double;
// the other side's code bits 0.
template <typename scalar_t>
inline void range_one_side(const scalar_t* x, const scalar_t* r, const scalar_t* idt, int64_t lo, int64_t hi,
                           double& sum, double& idt_sum, uint8_t* codes, int shift, int idt_shift) {
  for (int64_t k = lo; k < hi; ++k) {
    const double xv = static_cast<double>(x[k]);
    const double rv = static_cast<double>(r[k]);
    sum += std::abs(xv - rv);
    int code = code_of(xv > rv, xv < rv) << shift;
    if (idt != nullptr) {
      const double iv = static_cast<double>(idt[k]);
      idt_sum += std::abs(iv - rv);
      code |= code_of(iv > rv, iv < rv) << idt_shift;
    }
    if (codes != nullptr) {
      codes[k] = static_cast<uint8_t>(code);
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

// The sums of one chunk [lo, hi) of element indices, both sides (< both) in blocks.
template <typename scalar_t, bool kIdt, bool kCodes>
void chunk_both(const Inputs<scalar_t>& in, int64_t lo, int64_t hi, double* sums, uint8_t* codes) {
  if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
    for (int64_t b = lo; b < hi; b += kBlock) {
      const int64_t L = std::min(kBlock, hi - b);
      block_both<scalar_t, kIdt, kCodes>(in.xa + b, in.ra + b, kIdt ? in.ib + b : nullptr, in.xb + b, in.rb + b,
                                         kIdt ? in.ia + b : nullptr, L, sums, codes + (kCodes ? b : 0));
    }
  } else {  // bf16 / fp16: widen each block to float buffers (L1-resident), then as float
    __at_align__ float buf[6][kBlock];
    for (int64_t b = lo; b < hi; b += kBlock) {
      const int64_t L = std::min(kBlock, hi - b);
      at::vec::convert(in.xa + b, buf[0], L);
      at::vec::convert(in.ra + b, buf[1], L);
      at::vec::convert(in.xb + b, buf[3], L);
      at::vec::convert(in.rb + b, buf[4], L);
      if constexpr (kIdt) {
        at::vec::convert(in.ib + b, buf[2], L);
        at::vec::convert(in.ia + b, buf[5], L);
      }
      block_both<float, kIdt, kCodes>(buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], L, sums,
                                      codes + (kCodes ? b : 0));
    }
  }
}

template <typename scalar_t, bool kIdt, bool kCodes>
void forward_impl(const Inputs<scalar_t>& in, int64_t n_A, int64_t n_B, uint8_t* codes, double* total) {
  const int64_t n_both = std::min(n_A, n_B);
  const int64_t n_max = std::max(n_A, n_B);
  const int64_t n_chunks = (n_max + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(n_chunks) * kTerms, 0.0);
  at::parallel_for(0, n_chunks, kGrainChunks, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double* s = partial.data() + c * kTerms;
      const int64_t lo = c * kChunk;
      const int64_t hi = std::min(n_max, lo + kChunk);
      const int64_t both_hi = std::min(hi, n_both);
      if (lo < both_hi) {
        chunk_both<scalar_t, kIdt, kCodes>(in, lo, both_hi, s, codes);
      }
      const int64_t one_lo = std::max(lo, n_both);
      if (one_lo < hi) {  // only the larger side has elements here
        uint8_t* cp = kCodes ? codes : nullptr;
        if (n_A > n_B) {
          range_one_side(in.xa, in.ra, kIdt ? in.ib : nullptr, one_lo, hi, s[kCycleA], s[kIdtB], cp, 2 * kCycleA,
                         2 * kIdtB);
        } else {
          range_one_side(in.xb, in.rb, kIdt ? in.ia : nullptr, one_lo, hi, s[kCycleB], s[kIdtA], cp, 2 * kCycleB,
                         2 * kIdtA);
        }
      }
    }
  });
  for (int64_t c = 0; c < n_chunks; ++c) {
    for (int j = 0; j < kTerms; ++j) {
      total[j] += partial[c * kTerms + j];
    }
  }
}

}  // namespace

void cycle_forward(const cycle_kernel::ForwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "fastgan_cycle_losses_cpu", [&] {
    const Inputs<scalar_t> in = {static_cast<const scalar_t*>(a.xa), static_cast<const scalar_t*>(a.ra),
                                 static_cast<const scalar_t*>(a.ib), static_cast<const scalar_t*>(a.xb),
                                 static_cast<const scalar_t*>(a.rb), static_cast<const scalar_t*>(a.ia)};
    if (a.has_idt) {
      a.codes ? forward_impl<scalar_t, true, true>(in, a.n_A, a.n_B, a.codes, a.total)
              : forward_impl<scalar_t, true, false>(in, a.n_A, a.n_B, a.codes, a.total);
    } else {
      a.codes ? forward_impl<scalar_t, false, true>(in, a.n_A, a.n_B, a.codes, a.total)
              : forward_impl<scalar_t, false, false>(in, a.n_A, a.n_B, a.codes, a.total);
    }
  });
}

namespace {

// ---------------------------------------------------------------------------- backward

// out[k] = sign * scale as bits: code 1 -> pos, 2 -> neg, 0 -> zero (0 * scale, which is
// NaN, as aten's and the GPU kernels' product, when a non-finite upstream gradient makes
// scale so). Branch-free integer code, which the compiler vectorizes.
template <typename U>
inline void write_term(const uint8_t* codes, int shift, U pos, U neg, U zero, U* out, int64_t lo, int64_t hi) {
  for (int64_t k = lo; k < hi; ++k) {
    const U c = static_cast<U>((codes[k] >> shift) & 3);
    out[k] = static_cast<U>(static_cast<U>((static_cast<U>(0) - (c & 1)) & pos) |
                            static_cast<U>((static_cast<U>(0) - (c >> 1)) & neg) |
                            static_cast<U>((static_cast<U>(0) - static_cast<U>(c == 0)) & zero));
  }
}

// out[k] = table[code of term `cyc` | code of term `idt` << 2] (real image gradients).
template <typename U>
inline void write_real(const uint8_t* codes, int shift_cyc, int shift_idt, const U* table, U* out, int64_t lo,
                       int64_t hi) {
  for (int64_t k = lo; k < hi; ++k) {
    const int idx = ((codes[k] >> shift_cyc) & 3) | (((codes[k] >> shift_idt) & 3) << 2);
    out[k] = table[idx];
  }
}

}  // namespace

void cycle_backward(const cycle_kernel::BackwardArgs& a) {
  auto run = [&](auto bits_type) {
    using U = decltype(bits_type);
    U pos[kTerms], neg[kTerms], zero[kTerms], table_A[16], table_B[16];
    for (int j = 0; j < kTerms; ++j) {
      pos[j] = static_cast<U>(a.pos[j]);
      neg[j] = static_cast<U>(a.neg[j]);
      zero[j] = static_cast<U>(a.zero[j]);
    }
    for (int k = 0; k < 16; ++k) {
      table_A[k] = static_cast<U>(a.table_A[k]);
      table_B[k] = static_cast<U>(a.table_B[k]);
    }
    U* g_real_A = static_cast<U*>(a.out[0]);
    U* g_rec_A = static_cast<U*>(a.out[1]);
    U* g_real_B = static_cast<U*>(a.out[2]);
    U* g_rec_B = static_cast<U*>(a.out[3]);
    U* g_idt_A = static_cast<U*>(a.out[4]);
    U* g_idt_B = static_cast<U*>(a.out[5]);
    const uint8_t* codes = a.codes;
    const int64_t n_A = a.n_A, n_B = a.n_B;
    at::parallel_for(0, std::max(n_A, n_B), at::internal::GRAIN_SIZE, [&](int64_t lo, int64_t hi) {
      const int64_t a_hi = std::min(hi, n_A), b_hi = std::min(hi, n_B);
      if (g_rec_A) write_term(codes, 2 * kCycleA, pos[kCycleA], neg[kCycleA], zero[kCycleA], g_rec_A, lo, a_hi);
      if (g_idt_B) write_term(codes, 2 * kIdtB, pos[kIdtB], neg[kIdtB], zero[kIdtB], g_idt_B, lo, a_hi);
      if (g_real_A) write_real(codes, 2 * kCycleA, 2 * kIdtB, table_A, g_real_A, lo, a_hi);
      if (g_rec_B) write_term(codes, 2 * kCycleB, pos[kCycleB], neg[kCycleB], zero[kCycleB], g_rec_B, lo, b_hi);
      if (g_idt_A) write_term(codes, 2 * kIdtA, pos[kIdtA], neg[kIdtA], zero[kIdtA], g_idt_A, lo, b_hi);
      if (g_real_B) write_real(codes, 2 * kCycleB, 2 * kIdtA, table_B, g_real_B, lo, b_hi);
    });
  };
  switch (a.elem_size) {
    case 2: run(uint16_t{0}); break;
    case 4: run(uint32_t{0}); break;
    default: run(uint64_t{0}); break;
  }
}

}  // namespace FASTGAN_CPU_ISA

// ------------------------------------------------------------ the ops (generic file only)
#ifdef FASTGAN_CYCLE_BASE_TU

#if FASTGAN_BUILD_ISA_COPIES
namespace avx2 {  // cpu/cycle_losses_avx2.cpp
void cycle_forward(const cycle_kernel::ForwardArgs& a);
void cycle_backward(const cycle_kernel::BackwardArgs& a);
}  // namespace avx2
#endif

namespace {

using namespace fastgan::cycle;

void run_forward(const cycle_kernel::ForwardArgs& a) {
#if FASTGAN_BUILD_ISA_COPIES
  if (cpu_supports_avx2_kernels()) return avx2::cycle_forward(a);
#endif
  base::cycle_forward(a);
}

void run_backward(const cycle_kernel::BackwardArgs& a) {
#if FASTGAN_BUILD_ISA_COPIES
  if (cpu_supports_avx2_kernels()) return avx2::cycle_backward(a);
#endif
  base::cycle_backward(a);
}

template <size_t N>
struct BitsOf;
template <>
struct BitsOf<2> {
  using type = uint16_t;
};
template <>
struct BitsOf<4> {
  using type = uint32_t;
};
template <>
struct BitsOf<8> {
  using type = uint64_t;
};

template <typename U, typename T>
inline U bits(T v) {
  static_assert(sizeof(U) == sizeof(T));
  U u;
  std::memcpy(&u, &v, sizeof(U));
  return u;
}

std::tuple<at::Tensor, at::Tensor> cycle_losses_cpu(const at::Tensor& real_A, const at::Tensor& rec_A,
                                                    const at::Tensor& real_B, const at::Tensor& rec_B,
                                                    const std::optional<at::Tensor>& idt_A,
                                                    const std::optional<at::Tensor>& idt_B, double lambda_A,
                                                    double lambda_B, double lambda_identity, bool compute_signs) {
  const ForwardTensors t = forward_tensors(real_A, rec_A, real_B, rec_B, idt_A, idt_B, compute_signs);
  uint8_t* codes = compute_signs ? t.signs.mutable_data_ptr<uint8_t>() : nullptr;
  const auto w = term_weights(lambda_A, lambda_B, lambda_identity, t.has_idt);
  const std::array<int64_t, kTerms> n = {t.n_A, t.n_B, t.n_B, t.n_A};
  double total[kTerms] = {0.0, 0.0, 0.0, 0.0};
  if (t.n_max > 0) {
    cycle_kernel::ForwardArgs args{};
    args.dtype = real_A.scalar_type();
    args.xa = t.a.rec.const_data_ptr();
    args.ra = t.a.real.const_data_ptr();
    args.ib = t.has_idt ? t.a.idt.const_data_ptr() : nullptr;
    args.xb = t.b.rec.const_data_ptr();
    args.rb = t.b.real.const_data_ptr();
    args.ia = t.has_idt ? t.b.idt.const_data_ptr() : nullptr;
    args.n_A = t.n_A;
    args.n_B = t.n_B;
    args.has_idt = t.has_idt;
    args.codes = codes;
    args.total = total;
    run_forward(args);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real_A.scalar_type(), "fastgan_cycle_losses_cpu", [&] {
    scalar_t* out = t.losses.mutable_data_ptr<scalar_t>();
    for (int j = 0; j < kTerms; ++j) {
      const bool present = j < 2 || t.has_idt;
      // mean of nothing is NaN, as aten's
      out[j] = static_cast<scalar_t>(present ? w[j] * (total[j] / static_cast<double>(n[j])) : 0.0);
    }
  });
  return {t.losses, t.signs};
}

inline double sign_of_code(int c) {
  return c == 1 ? 1.0 : (c == 2 ? -1.0 : 0.0);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> cycle_losses_backward_cpu(
    const at::Tensor& grad, const at::Tensor& signs, const at::Tensor& real_A, const at::Tensor& rec_A,
    const at::Tensor& real_B, const at::Tensor& rec_B, const std::optional<at::Tensor>& idt_A,
    const std::optional<at::Tensor>& idt_B, double lambda_A, double lambda_B, double lambda_identity,
    std::array<bool, 6> output_mask) {
  const BackwardTensors t = backward_tensors(grad, signs, real_A, rec_A, real_B, rec_B, idt_A, idt_B, output_mask);
  if (t.n_max == 0) {
    return {t.out[0], t.out[1], t.out[2], t.out[3], t.out[4], t.out[5]};
  }
  const at::Tensor g64 = grad.to(at::kDouble).contiguous();
  const double* g = g64.const_data_ptr<double>();
  const auto w = term_weights(lambda_A, lambda_B, lambda_identity, t.has_idt);
  const std::array<int64_t, kTerms> n = {t.n_A, t.n_B, t.n_B, t.n_A};
  const at::Tensor codes_t = signs.contiguous();
  const uint8_t* codes = codes_t.const_data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real_A.scalar_type(), "fastgan_cycle_losses_backward_cpu",
                                  [&] {
    using U = typename BitsOf<sizeof(scalar_t)>::type;
    using opmath_t = at::opmath_type<scalar_t>;
    scalar_t scale[kTerms];
    U pos[kTerms], neg[kTerms], zero[kTerms];
    for (int j = 0; j < kTerms; ++j) {
      scale[j] = static_cast<scalar_t>((g[j] * w[j]) / static_cast<double>(n[j]));
      pos[j] = bits<U>(scale[j]);
      neg[j] = bits<U>(static_cast<scalar_t>(-scale[j]));
      zero[j] = bits<U>(static_cast<scalar_t>(opmath_t(0) * static_cast<opmath_t>(scale[j])));
    }
    // real_X gradient by (cycle code, idt code): -(s_cyc * scale_cyc + s_idt * scale_idt)
    auto real_table = [&](int cyc, int idt, U* table) {
      for (int idx = 0; idx < 16; ++idx) {
        const opmath_t v = -(static_cast<opmath_t>(sign_of_code(idx & 3)) * static_cast<opmath_t>(scale[cyc]) +
                             static_cast<opmath_t>(sign_of_code(idx >> 2)) * static_cast<opmath_t>(scale[idt]));
        table[idx] = bits<U>(static_cast<scalar_t>(v));
      }
    };
    U table_A[16], table_B[16];
    real_table(kCycleA, kIdtB, table_A);
    real_table(kCycleB, kIdtA, table_B);
    cycle_kernel::BackwardArgs args{};
    args.elem_size = sizeof(scalar_t);
    args.codes = codes;
    args.n_A = t.n_A;
    args.n_B = t.n_B;
    for (int i = 0; i < 6; ++i) {
      args.out[i] = t.out[i].numel() > 0 ? t.out[i].data_ptr() : nullptr;
    }
    for (int j = 0; j < kTerms; ++j) {
      args.pos[j] = pos[j];
      args.neg[j] = neg[j];
      args.zero[j] = zero[j];
    }
    for (int k = 0; k < 16; ++k) {
      args.table_A[k] = table_A[k];
      args.table_B[k] = table_B[k];
    }
    run_backward(args);
  });
  return {t.out[0], t.out[1], t.out[2], t.out[3], t.out[4], t.out[5]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("cycle_losses", &cycle_losses_cpu);
  m.impl("cycle_losses_backward", &cycle_losses_backward_cpu);
}

#endif  // FASTGAN_CYCLE_BASE_TU

}  // namespace fastgan::cpu
