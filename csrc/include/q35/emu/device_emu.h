// CUDA device code as host C++ for the SIMT emulator (included by q35/device.cuh under Q35_EMULATE).
// Keywords become plain C++ (static __shared__ arrays are per OS thread, i.e. per running block, since a block
// runs all its threads as fibers on one OS thread); builtins read the running fiber's context; intrinsics are
// rendezvous of the lanes they name. What is not here fails to compile. Limits: csrc/emu/README.md.
#pragma once

// Keywords first: crt/host_defines.h (via the CUDA headers below) keeps definitions that already exist; a header
// that included the CUDA runtime API before this one got its (empty) host-mode versions, replaced here.
#undef __host__
#undef __device__
#undef __global__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __grid_constant__
#undef __launch_bounds__
#define __host__
#define __device__
#define __global__
#define __shared__ static thread_local
#define __constant__
#define __managed__
#define __grid_constant__
#define __launch_bounds__(...)

#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>

#include <cuda_runtime_api.h>
#include <vector_functions.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "q35/emu/runtime.h"
#include "q35/emu/launch_emu.h"
#include "q35/emu/builtins.h"
#include "q35/emu/warp_intrinsics.h"
#include "q35/emu/atomics.h"
#include "q35/emu/math_intrinsics.h"
#include "q35/emu/half_intrinsics.h"
