// What both L1 kernels (l1_loss.cu, cycle_losses.cu) read and add elements with.
#pragma once

namespace fastgan::cuda {
namespace {

// Accumulation type of |x - t|: double for float32/float64, float for bf16/fp16.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<float> {
  using type = double;
};
template <>
struct AccOf<double> {
  using type = double;
};

// N elements loaded or stored as one aligned vector access.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename T>
__device__ __forceinline__ T abs_of(T v) {
  return v < T(0) ? -v : v;
}

}  // namespace
}  // namespace fastgan::cuda
