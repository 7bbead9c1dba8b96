// The one list of fastgan's native ops: their schemas. Kernels are registered per
// device in csrc/cpu/<op>.cpp (TORCH_LIBRARY_IMPL(fastgan, CPU, m)) and
// csrc/cuda/<op>.cu (TORCH_LIBRARY_IMPL(fastgan, CUDA, m)); fake (meta) and autograd
// rules live in Python, fastgan/ops/<op>.py.
#include <torch/library.h>

TORCH_LIBRARY(fastgan, m) {
  // weight * mean(|input - target|) as a 0-dim tensor of input's dtype, accumulated in
  // float64 (float64/float32 inputs) or float32 (then float64 across chunks; bf16/fp16).
  // Deterministic: fixed-order reduction, no float atomics.
  m.def("l1_loss(Tensor input, Tensor target, float weight=1.0) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // grad_input = grad * weight * sign(input - target) / numel (sign(0) = 0), and
  // grad_target = -grad_input; both in the input's dtype and memory layout.
  m.def("l1_loss_backward(Tensor grad, Tensor input, Tensor target, float weight) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Instance norm + affine + activation [+ residual] of a 4-D NCHW tensor (any layout;
  // the output has input's layout when it is contiguous or channels_last): per (n, c)
  // plane over H*W, biased variance; out = [residual +] act((x - mean) * rstd * w + b),
  // activation "relu" | "leaky_relu" | "none". Returns (out, mean, rstd); mean and rstd
  // have shape (N, C), float32 (float64 for float64 input): what the backward saves.
  m.def("instance_norm_act(Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, float eps, "
        "str activation, float negative_slope) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // (grad_input in input's layout, grad_weight, grad_bias of shape (C,) in weight's
  // dtype, input's without weight). Recomputes the normalized value and the activation's
  // mask from input, mean and rstd. Deterministic: fixed-order reductions.
  m.def("instance_norm_act_backward(Tensor grad, Tensor input, Tensor? weight, Tensor? bias, Tensor mean, "
        "Tensor rstd, str activation, float negative_slope) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Every L1 term of a CycleGAN iteration in one pass: losses = (lambda_A*mean|rec_A-real_A|,
  // lambda_B*mean|rec_B-real_B|, lambda_B*lambda_identity*mean|idt_A-real_B|,
  // lambda_A*lambda_identity*mean|idt_B-real_A|), 4 values in real_A's dtype (the last two 0
  // without idt tensors); with compute_signs, signs = one uint8 per element index holding the
  // four 2-bit codes of sign(x - t) (csrc/cycle_losses.h), else empty. Deterministic.
  m.def("cycle_losses(Tensor real_A, Tensor rec_A, Tensor real_B, Tensor rec_B, Tensor? idt_A, Tensor? idt_B, "
        "float lambda_A, float lambda_B, float lambda_identity, bool compute_signs) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Gradients (real_A, rec_A, real_B, rec_B, idt_A, idt_B) from grad (4 values) and the signs;
  // the image tensors give shapes and layouts only (not read). Not in output_mask: empty.
  m.def("cycle_losses_backward(Tensor grad, Tensor signs, Tensor real_A, Tensor rec_A, Tensor real_B, "
        "Tensor rec_B, Tensor? idt_A, Tensor? idt_B, float lambda_A, float lambda_B, float lambda_identity, "
        "bool[6] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // conv2d(reflection_pad(input, padding), weight, bias) for 3x3 weights at stride 1 by
  // Winograd's F(4x4, 3x3), the reflection padding read through an index
  // map. float32/float64, CPU; output (N, K, H + 2p - 2, W + 2p - 2), channels_last. Used by
  // reflect_conv2d's `cpu` back end where it measures faster than pad + oneDNN.
  // transformed_weight: conv3x3_winograd_weight(weight), when the caller keeps it (then
  // weight gives shapes only).
  m.def("conv3x3_winograd(Tensor input, Tensor weight, Tensor? bias, int padding, "
        "Tensor? transformed_weight=None) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // The weights' Winograd transform U = G g G^T of every filter g, as a (36, K, C) tensor:
  // what conv3x3_winograd and its input gradient compute on each call, for a caller that
  // reuses it across calls with the same weights.
  m.def("conv3x3_winograd_weight(Tensor weight) -> Tensor", {at::Tag::pt2_compliant_tag});
  // The weight gradient (K, C, 3, 3) of conv3x3_winograd given the output gradient,
  // contiguous or channels_last.
  m.def("conv3x3_winograd_grad_weight(Tensor grad, Tensor input, int padding, "
        "bool channels_last=False) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // The input gradient (N, C, H, W), channels_last, of conv3x3_winograd
  // given the output gradient: the adjoint of its Winograd transforms, with the forward's
  // weight transform (transformed_weight when kept), the padding's gradient folded back.
  // input gives shapes only.
  m.def("conv3x3_winograd_grad_input(Tensor grad, Tensor input, Tensor weight, int padding, "
        "Tensor? transformed_weight=None) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

#ifdef FASTGAN_PYTHON_MODULE
// setup.py builds this file into the Python extension fastgan._C: an empty module
// whose import loads the library, which runs the registrations above. The CMake build
// (a plain library for torch.ops.load_library) leaves it out.
// SOURCE_HASH: the hash of the csrc/ it was built from (source_hash.h, written by setup.py),
// which fastgan.ops._native compares with the checkout's; CPU_KERNELS_ISA: see below.
#include <Python.h>

#include "cpu/cpu_isa.h"
#include "source_hash.h"

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "fastgan's native ops; use them through torch.ops.fastgan or fastgan.ops.",
      -1,    // size
      nullptr,
  };
  PyObject* module = PyModule_Create(&module_def);
  // CPU_KERNELS_ISA: which copy of the CPU kernels runs (cpu/cpu_isa.h), fixed at import
  const char* isa = fastgan::cpu::cpu_kernels_isa();
  if (module != nullptr && (PyModule_AddStringConstant(module, "SOURCE_HASH", FASTGAN_SOURCE_HASH) < 0 ||
                            PyModule_AddStringConstant(module, "CPU_KERNELS_ISA", isa) < 0)) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}
#endif
