// The warp-level matrix and async-copy instructions, one wrapper per PTX instruction family: inline PTX under
// nvcc, exact warp-collective emulation under Q35_EMULATE. The only place inline PTX appears (STYLE habit 9).
// Register layouts: ../shared/PTX_FACTS.md (lane l, g = l >> 2, t = l & 3). Tests: tests/emu/.
#pragma once
#include "q35/device.cuh"
#include "q35/ptx/cp_async.cuh"
#include "q35/ptx/ldmatrix.cuh"
#include "q35/ptx/stmatrix.cuh"
#include "q35/ptx/mma.cuh"
