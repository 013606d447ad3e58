// Layouts of the sm_90a asynchronous units, one definition for kernels, launchers and the emulator's tests
// (host and device, no CUDA dependency): the shared-memory swizzle shared by TMA and wgmma, the 64-bit wgmma
// matrix descriptor, the K-major tile that TMA writes box by box and wgmma reads, and the register fragments of
// wgmma.m64nNk16. Source: PTX_FACTS.md §6 (confidence marks there). Tests: tests/emu/test_wgmma*.py, test_tma.py.
#pragma once
#include <cstdint>

#include "q35/common.h"

namespace q35::ptx {

// Swizzle mode of a shared-memory tile, named by its row span in bytes (the same names for TMA tensor maps and
// wgmma descriptors). Swizzled rows hold 32/64/128 bytes; an unswizzled "row" is a 16-byte core-matrix row.
enum class Swizzle : uint32_t { kNone = 0, k32B = 32, k64B = 64, k128B = 128 };

Q35_HD constexpr uint32_t swizzle_row_bytes(Swizzle s) { return s == Swizzle::kNone ? 16u : static_cast<uint32_t>(s); }
// The pattern repeats every 8 rows: a swizzled tile (and a TMA box) must start on this boundary of shared
// addresses (256 / 512 / 1024 bytes for 32B / 64B / 128B).
Q35_HD constexpr uint32_t swizzle_repeat_bytes(Swizzle s) { return 8u * swizzle_row_bytes(s); }

// Physical shared address of logical address `addr`: 16-byte chunk bits [4, 4 + B) XOR row bits [7, 7 + B),
// B = 1 / 2 / 3 for 32B / 64B / 128B (CuTe Swizzle<B, 4, 3> on byte addresses). An involution.
Q35_HD constexpr uint32_t swizzle_address(uint32_t addr, Swizzle s) {
  return s == Swizzle::kNone ? addr : addr ^ (((addr >> 7) & (static_cast<uint32_t>(s) / 16u - 1u)) << 4);
}

// ---- the shared-memory matrix descriptor (PTX_FACTS §6, HIGH) ----
// bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte offset >> 4, 49-51 base
// offset (always 0 here: tiles start on a pattern boundary), 62-63 layout (0 none, 1 128B, 2 64B, 3 32B).
Q35_HD constexpr uint64_t smem_desc_layout(Swizzle s) {
  return s == Swizzle::k128B ? 1u : (s == Swizzle::k64B ? 2u : (s == Swizzle::k32B ? 3u : 0u));
}
Q35_HD constexpr uint64_t make_smem_desc(uint32_t smem_addr, Swizzle s, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  return ((smem_addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFFu) << 32) | (smem_desc_layout(s) << 62);
}

// ---- K-major tile of 16-bit elements: tile[rows][cols] as TMA writes it and wgmma reads it ----
// Columns are stored in blocks of box_cols() (8 / 16 / 32 / 64 for none / 32B / 64B / 128B), one TMA box
// {box_cols, rows} each, block kb at kb * box_bytes(); inside a block row r sits at r * row_bytes() (swizzled).
//   No swizzle (PTX canonical ((8,m),(T,2k)):((1T,SBO),(1,LBO)), HIGH): element (r, k) at
//     (k / 8) * rows * 16 + r * 16 + (k % 8) * 2;  descriptor LBO = rows * 16 (next 8 columns), SBO = 128.
//   Swizzled, S = 32 / 64 / 128 bytes (MED-HIGH): element (r, k) at
//     (k / (S/2)) * rows * S + swizzle_address(r * S + (k % (S/2)) * 2);  SBO = 8 * S, LBO unused (16).
// Requires: rows % 8 == 0, the tile's shared address a multiple of swizzle_repeat_bytes (1024 covers all).
struct KMajorTile {
  Swizzle swizzle;
  uint32_t rows;

  Q35_HD constexpr uint32_t row_bytes() const { return swizzle_row_bytes(swizzle); }
  Q35_HD constexpr uint32_t box_cols() const { return row_bytes() / 2u; }      // TMA box inner dimension
  Q35_HD constexpr uint32_t box_bytes() const { return rows * row_bytes(); }   // one column block
  Q35_HD constexpr uint32_t bytes(uint32_t cols) const { return (cols + box_cols() - 1) / box_cols() * box_bytes(); }
  // Byte offset of element (r, k) from the tile start.
  Q35_HD constexpr uint32_t offset(uint32_t r, uint32_t k) const {
    return (k / box_cols()) * box_bytes() + swizzle_address(r * row_bytes() + (k % box_cols()) * 2u, swizzle);
  }
  // Descriptor of the wgmma operand rows [r0, r0 + 64 or N) x columns [k0, k0 + 16) of the tile at shared
  // address `base` (r0 % 8 == 0, k0 % 16 == 0). Successive k16 steps inside a swizzled row only move the start
  // address (by 32 bytes), as CuTe and DeepGEMM do (MED).
  Q35_HD constexpr uint64_t desc(uint32_t base, uint32_t r0, uint32_t k0) const {
    const uint32_t start = base + (k0 / box_cols()) * box_bytes() + r0 * row_bytes() + (k0 % box_cols()) * 2u;
    return swizzle == Swizzle::kNone ? make_smem_desc(start, swizzle, box_bytes(), 8u * row_bytes())
                                     : make_smem_desc(start, swizzle, 16u, 8u * row_bytes());
  }
  // The same bytes read as an MN-major B operand (wgmma imm-trans-b = 1): B[k][n] = tile[k][n], the tile's rows
  // being K and its columns N (e.g. V [key][d] as TMA lays it down, for O += P V). Descriptor of rows [k0, k0 + 16)
  // x columns [n0, n0 + N) (k0 % 8 == 0; n0 % box_cols() == 0). PTX canonical MN-major layouts (LOW until the GPU
  // twins pass): swizzled ((T,S/16,m),(8,k)):((1,T,LBO),(S/16 T,SBO)) -- LBO = box_bytes() between column
  // blocks, SBO = 8 rows; no swizzle ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)) -- SBO = box_bytes() between blocks
  // of 8 columns, LBO = 8 rows of 16 bytes.
  Q35_HD constexpr uint64_t desc_mn_major(uint32_t base, uint32_t k0, uint32_t n0) const {
    const uint32_t start = base + (n0 / box_cols()) * box_bytes() + k0 * row_bytes();
    return swizzle == Swizzle::kNone ? make_smem_desc(start, swizzle, 8u * row_bytes(), box_bytes())
                                     : make_smem_desc(start, swizzle, box_bytes(), 8u * row_bytes());
  }
};

// ---- register fragments of wgmma.m64nNk16 (thread T = 0..127 of the warpgroup, w = T / 32, l = T % 32) ----
// Accumulator d[i], i < N/2 (HIGH): row 16w + l/4 + 8 * ((i >> 1) & 1), column 8 * (i >> 2) + 2 * (l % 4) + (i & 1).
// So d[4j .. 4j+3] is an mma.m16n8 C fragment of columns 8j..8j+7 for the warp's rows 16w..16w+15.
Q35_HD constexpr int wgmma_acc_row(int thread, int i) {
  return 16 * (thread / 32) + (thread % 32) / 4 + 8 * ((i >> 1) & 1);
}
Q35_HD constexpr int wgmma_acc_col(int thread, int i) { return 8 * (i >> 2) + 2 * (thread % 4) + (i & 1); }
// A from registers (RS form): a[r] packs elements 2r (low half) and 2r+1 (high half); element e < 8 sits at
// row 16w + l/4 + 8 * ((e >> 1) & 1), column 2 * (l % 4) + (e & 1) + 8 * (e >> 2): the mma.m16n8k16 A fragment
// of the warp's 16 rows (MED: CuTe only).
Q35_HD constexpr int wgmma_a_row(int thread, int e) {
  return 16 * (thread / 32) + (thread % 32) / 4 + 8 * ((e >> 1) & 1);
}
Q35_HD constexpr int wgmma_a_col(int thread, int e) { return 2 * (thread % 4) + (e & 1) + 8 * (e >> 2); }

}  // namespace q35::ptx
