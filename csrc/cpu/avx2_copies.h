// Whether the AVX2 copies of the CPU kernels (cpu/*_avx2.cpp) are built: with GCC
// before 13 on x86-64. Those files are compiled for AVX2 by `#pragma GCC target` over
// the whole file; GCC 13 (and 14.1) rejects that once a libstdc++ header is included
// ("inlining failed in call to 'always_inline' '~allocator()': target specific option
// mismatch", seen with GCC 13 on the GPU machine), so there the generic kernels run.
// Macros only: the _avx2.cpp files include this before any other header.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ < 13
#define FASTGAN_BUILD_AVX2_COPIES 1
#else
#define FASTGAN_BUILD_AVX2_COPIES 0
#endif
