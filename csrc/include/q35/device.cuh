// The one include for kernel sources. Under nvcc it is the CUDA runtime and the bf16/fp16 types; compiled by
// the host compiler with Q35_EMULATE it maps the CUDA builtins onto the SIMT emulator (csrc/emu/), so that the
// same kernel source runs on the CPU. Kernel sources define their launchers inside `namespace q35::Q35_TARGET`.
#pragma once

#if defined(Q35_EMULATE)
#include "q35/emu/device_emu.h"
#define Q35_TARGET emu
#else
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define Q35_TARGET cuda
#endif

#include <cstdint>

#include "q35/common.h"
#include "q35/smem.cuh"
#include "q35/cvt.cuh"
#include "q35/vec.cuh"
#include "q35/warp_reduce.cuh"
#include "q35/block_reduce.cuh"
