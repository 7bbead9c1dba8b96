// Whether the instruction-set copies of the CPU kernels (cpu/*_avx2.cpp, cpu/*_avx512.cpp)
// are built: on x86-64 with GCC or Clang. Both builds (setup.py, CMakeLists.txt) compile
// those files, and those alone, with their ISA's flags (-mavx2 -mfma -mf16c; the AVX-512
// copies add -mavx512f -mavx512bw -mavx512vl -mavx512dq), as ATen builds its per-capability
// kernels. (A `#pragma GCC target` over the file fails with GCC 13 and 14.1 as soon as a
// libstdc++ header is included: "inlining failed in call to 'always_inline'
// '~allocator()': target specific option mismatch".)
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTGAN_BUILD_ISA_COPIES 1
#else
#define FASTGAN_BUILD_ISA_COPIES 0
#endif
