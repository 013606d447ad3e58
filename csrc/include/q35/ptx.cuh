// The warp-level matrix and async-copy instructions, one wrapper per PTX instruction family: inline PTX under
// nvcc, exact warp-collective emulation under Q35_EMULATE. The only place inline PTX appears (STYLE habit 9).
// Register layouts: ../shared/PTX_FACTS.md (lane l, g = l >> 2, t = l & 3). Tests: tests/emu/.
// sm_90a (mbarrier, fences, TMA, wgmma, warpgroup): real instructions in sm_90a device code, the emulator under
// Q35_EMULATE, a trap in device code for other architectures (q35/ptx/arch.cuh).
#pragma once
#include "q35/device.cuh"
#include "q35/ptx/cp_async.cuh"
#include "q35/ptx/ld_global.cuh"
#include "q35/ptx/ldmatrix.cuh"
#include "q35/ptx/stmatrix.cuh"
#include "q35/ptx/mma.cuh"
#include "q35/ptx/fence.cuh"
#include "q35/ptx/mbarrier.cuh"
#include "q35/ptx/tma.cuh"
#include "q35/ptx/cluster.cuh"
#include "q35/ptx/warpgroup.cuh"
#include "q35/ptx/wgmma.cuh"
