// What the C++ op tests share: expect() tallies each check, and run_checks() is their
// main: seeded, a test's device checks on the CPU, its thread-count checks, its device
// checks on the first CUDA device where there is one, then the tally as the exit status.
#pragma once

#include <ATen/ATen.h>

#include <cstdio>
#include <string>

namespace fastgan_test {

inline int failures = 0;
inline int checks = 0;

inline void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

// check_device(at::Device), check_threads(): the test's own. Exit status 1 on any failure.
template <typename DeviceChecks, typename ThreadChecks>
int run_checks(DeviceChecks check_device, ThreadChecks check_threads) {
  at::manual_seed(0);
  check_device(at::Device(at::kCPU));
  check_threads();
  if (at::hasCUDA()) {
    check_device(at::Device(at::kCUDA, 0));
  } else {
    std::printf("no CUDA device: CUDA kernels compiled, not run\n");
  }
  std::printf("%d of %d checks failed\n", failures, checks);
  return failures == 0 ? 0 : 1;
}

}  // namespace fastgan_test
