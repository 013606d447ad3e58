// ldmatrix, stmatrix and mma.sync as warp collectives, element by element as PTX_FACTS.md §1-§3 lay them out
// (lane l, g = l >> 2, t = l & 3). The last lane to arrive gathers every lane's operands, computes, scatters.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <string>

#include "emu/block_runner.h"
#include "emu/half_bits.h"
#include "q35/emu/half_intrinsics.h"
#include "q35/emu/ptx_emu.h"

namespace q35::simt {
namespace {

constexpr uint32_t kFullMask = 0xffffffffu;
constexpr unsigned kRowBytes = 16;  // one 8-element row of 16-bit values

struct LdArgs {
  const unsigned char* row;
  uint32_t* regs;
};
struct StArgs {
  unsigned char* row;
  const uint32_t* regs;
};

template <int kNum, bool kTrans>
void ldmatrix_compute(void* const* args, uint32_t, uint32_t) {
  const unsigned char* rows[kNum][8];
  for (int j = 0; j < kNum; ++j)
    for (int r = 0; r < 8; ++r) rows[j][r] = static_cast<const LdArgs*>(args[8 * j + r])->row;
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    uint32_t* regs = static_cast<const LdArgs*>(args[l])->regs;
    for (int j = 0; j < kNum; ++j) {
      uint32_t word;
      if constexpr (!kTrans) {
        std::memcpy(&word, rows[j][g] + 4 * t, 4);  // {M_j[g][2t], M_j[g][2t+1]}
      } else {
        uint16_t lo, hi;  // {M_j[2t][g], M_j[2t+1][g]}
        std::memcpy(&lo, rows[j][2 * t] + 2 * g, 2);
        std::memcpy(&hi, rows[j][2 * t + 1] + 2 * g, 2);
        word = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
      }
      regs[j] = word;
    }
  }
}

template <int kNum, bool kTrans>
void stmatrix_compute(void* const* args, uint32_t, uint32_t) {
  uint32_t regs[32][kNum];
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < kNum; ++j) regs[l][j] = static_cast<const StArgs*>(args[l])->regs[j];
  for (int j = 0; j < kNum; ++j) {
    for (int r = 0; r < 8; ++r) {
      unsigned char* row = static_cast<const StArgs*>(args[8 * j + r])->row;
      for (int c = 0; c < 8; ++c) {
        // the inverse of ldmatrix: element (r, c) of matrix j sits in lane (g = r, t = c / 2), half c % 2;
        // with .trans in lane (g = c, t = r / 2), half r % 2
        const int lane = kTrans ? 4 * c + r / 2 : 4 * r + c / 2;
        const int half = kTrans ? r % 2 : c % 2;
        const uint16_t v = static_cast<uint16_t>(regs[lane][j] >> (16 * half));
        std::memcpy(row + 2 * c, &v, 2);
      }
    }
  }
}

template <int kNum, bool kTrans>
constexpr CollectiveOp make_ld_op(const char* name) {
  return CollectiveOp{name, false, ldmatrix_compute<kNum, kTrans>};
}
const CollectiveOp kLdOps[2][3] = {
    {make_ld_op<1, false>("ldmatrix.x1"), make_ld_op<2, false>("ldmatrix.x2"), make_ld_op<4, false>("ldmatrix.x4")},
    {make_ld_op<1, true>("ldmatrix.x1.trans"), make_ld_op<2, true>("ldmatrix.x2.trans"),
     make_ld_op<4, true>("ldmatrix.x4.trans")}};
const CollectiveOp kStOps[2][3] = {
    {{"stmatrix.x1", false, stmatrix_compute<1, false>}, {"stmatrix.x2", false, stmatrix_compute<2, false>},
     {"stmatrix.x4", false, stmatrix_compute<4, false>}},
    {{"stmatrix.x1.trans", false, stmatrix_compute<1, true>}, {"stmatrix.x2.trans", false, stmatrix_compute<2, true>},
     {"stmatrix.x4.trans", false, stmatrix_compute<4, true>}}};

int matrix_index(int num_matrices) { return num_matrices == 1 ? 0 : (num_matrices == 2 ? 1 : 2); }

void check_row_address(int num_matrices, const void* row, const char* op, Site site) {
  const unsigned lane = cur().lane;
  if (lane < 8u * static_cast<unsigned>(num_matrices) && reinterpret_cast<uintptr_t>(row) % kRowBytes != 0) {
    kernel_error((std::string(op) + ": row address of this lane is not 16-byte aligned").c_str(), site);
  }
}

// ---- mma ----

template <MmaInput kIn>
float input_to_float(uint16_t bits) {
  return kIn == MmaInput::kBf16 ? bf16_bits_to_float(bits) : f16_bits_to_float(bits);
}

uint16_t half_bits(uint32_t reg, int index) { return static_cast<uint16_t>(reg >> (16 * (index & 1))); }

struct MmaArgs {
  void* d;
  const uint32_t* a;
  const uint32_t* b;
  const void* c;
};

// Element i of a lane's fragments (PTX_FACTS.md §1, §2): A (16 x K), B (K x 8), C/D (16 x 8).
template <int K>
int a_row(int g, int i) { return K == 16 ? g + 8 * ((i >> 1) & 1) : g + 8 * (i >> 1); }
template <int K>
int a_col(int t, int i) { return 2 * t + (i & 1) + (K == 16 ? 8 * (i >> 2) : 0); }
int b_row(int t, int i) { return 2 * t + (i & 1) + 8 * (i >> 1); }
int c_row(int g, int i) { return g + 8 * (i >> 1); }
int c_col(int t, int i) { return 2 * t + (i & 1); }

template <int K, MmaInput kIn, bool kF16Acc>
void mma_compute(void* const* args, uint32_t, uint32_t) {
  float a[16][K], b[K][8], c[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const auto* m = static_cast<const MmaArgs*>(args[l]);
    for (int i = 0; i < K / 2; ++i) a[a_row<K>(g, i)][a_col<K>(t, i)] = input_to_float<kIn>(half_bits(m->a[i >> 1], i));
    for (int i = 0; i < K / 4; ++i) b[b_row(t, i)][g] = input_to_float<kIn>(half_bits(m->b[i >> 1], i));
    for (int i = 0; i < 4; ++i) {
      c[c_row(g, i)][c_col(t, i)] = kF16Acc ? f16_bits_to_float(half_bits(static_cast<const uint32_t*>(m->c)[i >> 1], i))
                                            : static_cast<const float*>(m->c)[i];
    }
  }
  double d[16][8];
  for (int row = 0; row < 16; ++row) {
    for (int col = 0; col < 8; ++col) {
      double acc = c[row][col];
      for (int k = 0; k < K; ++k) acc += static_cast<double>(a[row][k]) * static_cast<double>(b[k][col]);
      d[row][col] = acc;
    }
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const auto* m = static_cast<const MmaArgs*>(args[l]);
    if constexpr (kF16Acc) {
      uint32_t* out = static_cast<uint32_t*>(m->d);
      for (int r = 0; r < 2; ++r) {
        uint32_t packed = 0;
        for (int h = 0; h < 2; ++h) {
          const double v = d[c_row(g, 2 * r + h)][c_col(t, 2 * r + h)];
          const double rounded = std::isnan(v) ? v : half::round_to_format(v, 0.0, 11, -14, 65504.0);
          packed |= static_cast<uint32_t>(__half_as_ushort(__double2half(rounded))) << (16 * h);
        }
        out[r] = packed;
      }
    } else {
      float* out = static_cast<float*>(m->d);
      for (int i = 0; i < 4; ++i) out[i] = static_cast<float>(d[c_row(g, i)][c_col(t, i)]);
    }
  }
}

const CollectiveOp kMmaOps[2][2] = {  // [k == 16][input type], f32 accumulators
    {{"mma.sync.m16n8k8.f32.bf16.bf16.f32", false, mma_compute<8, MmaInput::kBf16, false>},
     {"mma.sync.m16n8k8.f32.f16.f16.f32", false, mma_compute<8, MmaInput::kF16, false>}},
    {{"mma.sync.m16n8k16.f32.bf16.bf16.f32", false, mma_compute<16, MmaInput::kBf16, false>},
     {"mma.sync.m16n8k16.f32.f16.f16.f32", false, mma_compute<16, MmaInput::kF16, false>}}};
const CollectiveOp kMmaF16AccOps[2] = {
    {"mma.sync.m16n8k8.f16.f16.f16.f16", false, mma_compute<8, MmaInput::kF16, true>},
    {"mma.sync.m16n8k16.f16.f16.f16.f16", false, mma_compute<16, MmaInput::kF16, true>}};

}  // namespace

void ldmatrix(int num_matrices, bool trans, uint32_t* regs, const void* row_addr, Site site) {
  const CollectiveOp& op = kLdOps[trans][matrix_index(num_matrices)];
  check_row_address(num_matrices, row_addr, op.name, site);
  LdArgs args{static_cast<const unsigned char*>(row_addr), regs};
  warp_collective(op, kFullMask, &args, site);
}

void stmatrix(int num_matrices, bool trans, const uint32_t* regs, void* row_addr, Site site) {
  const CollectiveOp& op = kStOps[trans][matrix_index(num_matrices)];
  check_row_address(num_matrices, row_addr, op.name, site);
  StArgs args{static_cast<unsigned char*>(row_addr), regs};
  warp_collective(op, kFullMask, &args, site);
}

void mma_f32acc(int k, MmaInput type, float* d, const uint32_t* a, const uint32_t* b, const float* c, Site site) {
  MmaArgs args{d, a, b, c};
  warp_collective(kMmaOps[k == 16][static_cast<int>(type)], kFullMask, &args, site);
}

void mma_f16acc(int k, uint32_t* d, const uint32_t* a, const uint32_t* b, const uint32_t* c, Site site) {
  MmaArgs args{d, a, b, c};
  warp_collective(kMmaF16AccOps[k == 16], kFullMask, &args, site);
}

}  // namespace q35::simt
