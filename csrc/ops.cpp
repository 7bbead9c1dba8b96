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
}

#ifdef FASTGAN_PYTHON_MODULE
// setup.py builds this file into the Python extension fastgan._C: an empty module
// whose import loads the library, which runs the registrations above. The CMake build
// (a plain library for torch.ops.load_library) leaves it out.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "fastgan's native ops; use them through torch.ops.fastgan or fastgan.ops.",
      -1,    // size
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}
#endif
