// When an automatic path choice (no arch / impl / block_m given) takes an sm_90a kernel that can run here.
// Under the emulator: always, so that CI covers the sm_90a kernels through every op and the model. On a GPU: only
// with the environment variable QWEN35_SM90A=1, until the sm_90a kernels have passed their `pytest -m gpu` tests on
// hardware. So far they have run only under the emulator, and the emulator's wgmma / TMA layouts they rely on
// (PTX_FACTS.md §6, the MED and LOW items) are not yet checked on a GPU either: a layout bug consistent in both
// would pass every CPU test. Explicit choices are not affected (the -m gpu tests and the benchmarks use them).
#pragma once
#include <cstdlib>
#include <cstring>

namespace q35::glue {

inline bool sm90a_auto(bool on_cuda) {
  if (!on_cuda) return true;
  const char* opt_in = std::getenv("QWEN35_SM90A");
  return opt_in != nullptr && std::strcmp(opt_in, "1") == 0;
}

}  // namespace q35::glue
