// fastgan::instance_norm_act and fastgan::instance_norm_act_backward on the CPU.
//
// Forward, per (n, c) plane of HW = H * W elements:
//   mean = k + sum(x - k) / HW with k the mean of 32 of the plane's elements spread over it
//   (shift_of in cpu/instance_norm_act_kernel.h), var = sum((x - mean)^2)
//   / HW (biased, two passes: exact up to the summation order, even for a large mean;
//   exactly 0 for a constant plane), rstd = 1 / sqrt(var + eps) (0 when var + eps is 0,
//   as aten's),
//   z = (x - mean) * (rstd * w) + b, y = act(z) [+ residual].
// Backward, with gz = grad * act'(z) (z recomputed from x, mean, rstd, w, b exactly as
// the forward computed it), A = sum(gz), B = sum(gz * (x - mean)):
//   dx = gz * (rstd * w) - (x - mean) * (w * rstd^3 * B / HW) - rstd * w * A / HW,
//   dweight[c] = sum_n rstd * B, dbias[c] = sum_n A (both summed in n order).
//   The residual's gradient is grad itself (returned by the autograd rule).
// Saved between them: x (the caller's), mean and rstd ((N, C), float32; float64 for
// float64 inputs) -- never the normalized tensor nor the output.
//
// Precision: elements are widened to float (double for float64); sums run in float
// lanes over blocks of kBlock elements, each block's lanes added in double, and the
// per-plane statistics and constants are computed in double.
//
// Determinism: the work is cut into fixed pieces (NCHW: chunks of kChunk elements of a
// plane; NHWC: row chunks of kRows pixels), each piece's partial sums are computed in a
// fixed order and combined in piece order, so the results are the same bits for any
// number of threads. Planes of at most kChunk elements are done whole by one task
// (statistics, then output, while the plane is in L1/L2); larger planes are split into
// chunks processed in parallel (a split reduction), with the same result.
//
// Layouts: NCHW walks each plane as one contiguous run. channels_last (NHWC) is done
// natively, vectorized across channels, each pixel's channels read as one contiguous
// run: a task takes 32 channels of one image over all its pixels when that block fits
// in 1 MiB (statistics, then output, from L2), else the sweeps run as parallel passes
// over (image, 64 channels, kRows pixels) tasks; both give the same bits. Measured at
// 1x256x64x64 float32, one thread: NHWC forward 0.77 ms, backward 1.0 ms (NCHW 0.41 /
// 0.52 ms). Converting to NCHW and back instead (aten's transposing copies, ~4.5 ms
// each for that tensor) measured 6.4 ms forward and 11.5 ms backward: NHWC stays
// native. Other strides are copied to NCHW first.
//
// Memory traffic floor (each input read once, each output written once):
//   forward  numel * itemsize * (2 + [residual]) + N * C * 2 * 4 bytes (mean, rstd);
//   backward numel * itemsize * 3 (grad, x read; dx written) + the (N, C) statistics.
// The kernel reads x three times (forward: sum, deviations, output) and grad and x twice
// (backward), but a plane of <= kChunk elements (64 KiB in float32) is re-read from L1/L2,
// so DRAM traffic stays at the floor; larger planes re-read from L2/L3/DRAM.
// Fraction of the floor reached: not measured (a shared, loaded 2-core VM here). Against
// eager aten (instance_norm then relu, forward + backward, 1x256x64x64 float32, one
// thread, best of 7 on that VM): about 2-3x faster (1.7 ms vs 3.9-5.3 ms).
//
// ISA: the kernels (cpu/instance_norm_act_kernel.h) are compiled three times: for baseline
// x86-64 with at::vec's generic vectors (this file, namespace base), with at::vec's
// AVX2 vectors (cpu/instance_norm_act_avx2.cpp, namespace avx2, as ATen compiles its
// own kernels per CPU capability) and, NHWC kernels only, with its AVX-512 vectors
// (cpu/instance_norm_act_avx512.cpp, namespace avx512). The widest the CPU has runs
// (checked once at run time; cpu_isa.h); FASTGAN_CPU_ISA=base in the environment forces
// the generic one, FASTGAN_CPU_ISA=avx2 the AVX2 one at most. All give the same bits
// (the kernel header says why).
// Why: at::vec's generic vectors compile to scalar code (GCC does not vectorize their
// lane loops), several times slower than eager aten, which dispatches to AVX2/AVX-512.
// The AVX-512 copy, on the 2-core AMX Xeon at bf16 NHWC 3x256x32x32 (a ResNet block's;
// medians of 100 calls, two runs alternating with the AVX2 copy's): forward 0.27-0.39 ms
// against 0.43-0.46, backward 0.30-0.51 ms against 0.55-0.72.
#define FASTGAN_CPU_ISA base
#include "instance_norm_act_kernel.h"
#undef FASTGAN_CPU_ISA

#include "cpu_isa.h"

#include <torch/library.h>

#include <cstdlib>
#include <cstring>

namespace fastgan::cpu {

#if FASTGAN_BUILD_ISA_COPIES
namespace avx2 {  // cpu/instance_norm_act_avx2.cpp
void forward(const inorm::ForwardArgs& a);
void backward(const inorm::BackwardArgs& a);
}  // namespace avx2
namespace avx512 {  // cpu/instance_norm_act_avx512.cpp: NHWC inputs only
void forward(const inorm::ForwardArgs& a);
void backward(const inorm::BackwardArgs& a);
}  // namespace avx512
#endif

namespace {

using instance_norm::Activation;
using instance_norm::Dims;
using instance_norm::Layout;

void run_forward(const inorm::ForwardArgs& a) {
#if FASTGAN_BUILD_ISA_COPIES
  if (a.layout == Layout::kNHWC && cpu_supports_avx512_kernels()) return avx512::forward(a);
  if (cpu_supports_avx2_kernels()) return avx2::forward(a);
#endif
  base::forward(a);
}

void run_backward(const inorm::BackwardArgs& a) {
#if FASTGAN_BUILD_ISA_COPIES
  if (a.layout == Layout::kNHWC && cpu_supports_avx512_kernels()) return avx512::backward(a);
  if (cpu_supports_avx2_kernels()) return avx2::backward(a);
#endif
  base::backward(a);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act_cpu(
    const at::Tensor& input, const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& residual, double eps, c10::string_view activation, double negative_slope) {
  using namespace instance_norm;
  const Activation act = check_forward_args(input, weight, bias, residual, activation);
  const ForwardTensors t = forward_tensors(input, weight, bias, residual);
  if (t.x.numel() == 0) return {t.y, t.mean, t.rstd};
  inorm::ForwardArgs a{};
  a.dtype = t.x.scalar_type();
  a.layout = t.layout;
  a.act = act;
  a.d = t.d;
  a.x = t.x.const_data_ptr();
  a.residual = data_or_null(t.residual);
  a.y = t.y.mutable_data_ptr();
  a.mean = t.mean.mutable_data_ptr();
  a.rstd = t.rstd.mutable_data_ptr();
  a.weight = data_or_null(t.weight);
  a.bias = data_or_null(t.bias);
  a.eps = eps;
  a.negative_slope = negative_slope;
  run_forward(a);
  return {t.y, t.mean, t.rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act_backward_cpu(
    const at::Tensor& grad, const at::Tensor& input, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& mean_in, const at::Tensor& rstd_in,
    c10::string_view activation, double negative_slope) {
  using namespace instance_norm;
  const Activation act = check_backward_args(grad, input, weight, bias, mean_in, rstd_in, activation);
  const BackwardTensors t = backward_tensors(grad, input, weight, bias, mean_in, rstd_in);
  const Dims d = t.d;
  if (t.x.numel() == 0) return empty_grads(t);
  // Per-plane sums in double, then dweight / dbias summed over n in order.
  auto sums = at::empty({2, d.N, d.C}, t.x.options().dtype(at::kDouble));
  double* sum_a = sums.mutable_data_ptr<double>();
  double* sum_b = sum_a + d.planes();
  inorm::BackwardArgs a{};
  a.dtype = t.x.scalar_type();
  a.layout = t.layout;
  a.act = act;
  a.d = d;
  a.grad = t.grad.const_data_ptr();
  a.x = t.x.const_data_ptr();
  a.dx = t.dx.mutable_data_ptr();
  a.mean = t.mean.const_data_ptr();
  a.rstd = t.rstd.const_data_ptr();
  a.weight = data_or_null(t.weight);
  a.bias = data_or_null(t.bias);
  a.sum_a = sum_a;
  a.sum_b = sum_b;
  a.negative_slope = negative_slope;
  run_backward(a);

  auto dw = at::empty({d.C}, t.x.options().dtype(at::kDouble));
  auto db = at::empty({d.C}, t.x.options().dtype(at::kDouble));
  double* dwp = dw.mutable_data_ptr<double>();
  double* dbp = db.mutable_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(t.rstd.scalar_type(), "fastgan_instance_norm_act_param_grads", [&] {
    const scalar_t* rs = t.rstd.const_data_ptr<scalar_t>();
    for (int64_t c = 0; c < d.C; ++c) {
      double sw = 0.0, sb = 0.0;
      for (int64_t n = 0; n < d.N; ++n) {
        const int64_t p = n * d.C + c;
        sw += static_cast<double>(rs[p]) * sum_b[p];
        sb += sum_a[p];
      }
      dwp[c] = sw;
      dbp[c] = sb;
    }
  });
  return {t.dx, dw.to(t.dw_dtype), db.to(t.db_dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("instance_norm_act", &instance_norm_act_cpu);
  m.impl("instance_norm_act_backward", &instance_norm_act_backward_cpu);
}

}  // namespace fastgan::cpu
