// Flash-attention-2 style kernels with the contract of src/kernels/attention.cc.
//
// Every kernel runs 4 warps over a tile of "rows" (queries in the forward and the dq pass, keys in
// the dk/dv pass) and streams tiles of "cols" (the other set) through shared memory, staged as
// fp32 whatever T is, so the bf16 path does the same fp32 arithmetic as the fp32 one on the
// rounded values. Lane (rg = lane / 8, cg = lane % 8) of warp w owns rows
// w * 4 * kRM + rg * kRM + i (i < kRM), score columns cg + 8 j (j < kCN) and head dims
// 32 m + 4 cg + {0..3}: the 8 lanes of a row group share the row's softmax statistics through
// xor-shuffles, and the layout keeps shared-memory reads conflict-free (row stride kD + 4 and
// float4 reads along the head dim).
//
// The head dim is padded to a multiple of 32 (the staged tiles are zero-filled past D, which
// changes no dot product), so any valid D runs, with one instantiation per padded size.
//
// Tile pairs are skipped from per-tile ranges of document id and position, exactly as
// ClassifyBlockPair's kNone: only when no pair can be visible. Those ranges are computed in the
// kernel, one warp per tile with warp reductions, in chunks of kChunkTiles tiles whose flags sit in
// shared memory, so no workspace is needed and every block walks the tiles in the same order
// (results are deterministic; no atomics anywhere: the backward runs one pass for dk/dv and one
// for dq).
#include "src/cuda/flash_attention.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace loom::gpu {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kChunkTiles = 64;  // tiles classified per pass: the flags' shared-memory footprint
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxGridY = 65535;

__device__ __forceinline__ float NegInf() { return -INFINITY; }

__device__ __forceinline__ float LoadAsFloat(const float* p) { return *p; }
__device__ __forceinline__ float LoadAsFloat(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}
__device__ __forceinline__ void StoreFromFloat(float* p, float x) { *p = x; }
__device__ __forceinline__ void StoreFromFloat(__nv_bfloat16* p, float x) {
  *p = __float2bfloat16(x);
}

// kRM rows and kCN score columns per lane (see the file comment); kD the padded head dim.
template <int kD_, int kRM_, int kCN_>
struct Tiles {
  static constexpr int kD = kD_;
  static constexpr int kRM = kRM_;
  static constexpr int kCN = kCN_;
  static constexpr int kRows = kWarps * 4 * kRM;
  static constexpr int kCols = 8 * kCN;
  static constexpr int kLd = kD + 4;      // floats between staged tokens: float4-aligned rows
  static constexpr int kLdS = kCols + 4;  // ... between rows of a staged score tile
  static constexpr int kAcc = kD / 8;     // accumulators per owned row
  static_assert(kD % 32 == 0 && kD <= kMaxHeadDim, "head dims are padded to multiples of 32");
  static_assert(kCols <= kThreads, "one thread stages each column's token data");
  static_assert((kRows * kD) % kThreads == 0 && (kCols * kD) % kThreads == 0,
                "tiles stage in whole rounds of the block");
};

// Everything the kernels need besides the tensors.
struct Problem {
  const int32_t* q_doc;
  const int32_t* q_pos;
  const int32_t* k_doc;
  const int32_t* k_pos;
  int Tq;
  int Tk;
  int n_heads;
  int n_kv_heads;
  int group;  // query heads per kv head
  int D;
  bool causal;
  float scale;       // 1 / sqrt(D)
  float scale_log2;  // scale * log2(e): scores are kept in base 2 so exp2f does the softmax
};

struct TokenRange {
  int32_t doc_min;
  int32_t doc_max;
  int32_t pos_min;
  int32_t pos_max;
};

// ClassifyBlockPair's kNone test, negated.
__device__ __forceinline__ bool MayBeVisible(const TokenRange& q, const TokenRange& k,
                                             bool causal) {
  if (q.doc_max < k.doc_min || k.doc_max < q.doc_min) return false;
  if (causal && k.pos_min > q.pos_max) return false;
  return true;
}

// The range of tokens [begin, begin + count) (1 <= count <= kTile), reduced by the whole warp;
// every lane gets it.
template <int kTile>
__device__ __forceinline__ TokenRange WarpTokenRange(const int32_t* doc, const int32_t* pos,
                                                     int begin, int count, int lane) {
  int32_t doc_min = INT_MAX, doc_max = INT_MIN, pos_min = INT_MAX, pos_max = INT_MIN;
#pragma unroll
  for (int i = 0; i < (kTile + 31) / 32; ++i) {
    const int k = lane + 32 * i;
    if (k < count) {
      const int32_t d = doc[begin + k];
      const int32_t p = pos[begin + k];
      doc_min = min(doc_min, d);
      doc_max = max(doc_max, d);
      pos_min = min(pos_min, p);
      pos_max = max(pos_max, p);
    }
  }
  return TokenRange{__reduce_min_sync(kFullMask, doc_min), __reduce_max_sync(kFullMask, doc_max),
                    __reduce_min_sync(kFullMask, pos_min), __reduce_max_sync(kFullMask, pos_max)};
}

// flags[t - t0] = whether tile t (kTile tokens of the other set, of n in all) may hold a visible
// pair with the block's own tile, for t in [t0, t1). One warp per tile.
template <int kTile>
__device__ void ClassifyChunk(int* flags, const int32_t* doc, const int32_t* pos, int n, int t0,
                              int t1, const TokenRange& own, bool own_is_query, bool causal,
                              int warp, int lane) {
  for (int t = t0 + warp; t < t1; t += kWarps) {
    const int begin = t * kTile;
    const TokenRange other = WarpTokenRange<kTile>(doc, pos, begin, min(kTile, n - begin), lane);
    const bool may =
        own_is_query ? MayBeVisible(own, other, causal) : MayBeVisible(other, own, causal);
    if (lane == 0) flags[t - t0] = may ? 1 : 0;
  }
}

// Stages tokens [first, first + count) of one head (src already offset to it; token_stride
// elements between tokens) into dst [kTileRows][kD + 4] as fp32, zero past count and past D.
template <int kTileRows, int kD, typename Src>
__device__ __forceinline__ void StageTokens(float* dst, const Src* src, int64_t token_stride,
                                            int first, int count, int D) {
  constexpr int kLd = kD + 4;
#pragma unroll 8
  for (int it = 0; it < kTileRows * kD / kThreads; ++it) {
    const int e = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = e / kD;
    const int d = e - r * kD;
    float x = 0.0f;
    if (r < count && d < D)
      x = LoadAsFloat(src + static_cast<int64_t>(first + r) * token_stride + d);
    dst[r * kLd + d] = x;
  }
}

// s[i][j] = dot(rows[row_base + i], cols[cg + 8 j]) over the padded head dim.
template <class S>
__device__ __forceinline__ void TileDot(float (&s)[S::kRM][S::kCN], const float* rows,
                                        const float* cols, int row_base, int cg) {
#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
#pragma unroll
    for (int j = 0; j < S::kCN; ++j) s[i][j] = 0.0f;
  }
#pragma unroll 4
  for (int d = 0; d < S::kD; d += 4) {
    float4 a[S::kRM];
    float4 b[S::kCN];
#pragma unroll
    for (int i = 0; i < S::kRM; ++i) {
      a[i] = *reinterpret_cast<const float4*>(rows + (row_base + i) * S::kLd + d);
    }
#pragma unroll
    for (int j = 0; j < S::kCN; ++j) {
      b[j] = *reinterpret_cast<const float4*>(cols + (cg + 8 * j) * S::kLd + d);
    }
#pragma unroll
    for (int i = 0; i < S::kRM; ++i) {
#pragma unroll
      for (int j = 0; j < S::kCN; ++j) {
        float x = s[i][j];
        x = fmaf(a[i].x, b[j].x, x);
        x = fmaf(a[i].y, b[j].y, x);
        x = fmaf(a[i].z, b[j].z, x);
        x = fmaf(a[i].w, b[j].w, x);
        s[i][j] = x;
      }
    }
  }
}

__device__ __forceinline__ float Component(const float4& v, int c) {
  return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w;
}

// acc[i][4 m + e] += sum_c scores[row_base + i][c] * vals[c][32 m + 4 cg + e]: a [rows, cols]
// tile (row stride kLdS) times a staged [cols, kD] token tile.
template <class S>
__device__ __forceinline__ void TileAccumulate(float (&acc)[S::kRM][S::kAcc], const float* scores,
                                               const float* vals, int row_base, int cg) {
#pragma unroll 2
  for (int c = 0; c < S::kCols; c += 4) {
    float4 p[S::kRM];
#pragma unroll
    for (int i = 0; i < S::kRM; ++i) {
      p[i] = *reinterpret_cast<const float4*>(scores + (row_base + i) * S::kLdS + c);
    }
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) {
#pragma unroll
      for (int m = 0; m < S::kD / 32; ++m) {
        const float4 v =
            *reinterpret_cast<const float4*>(vals + (c + cc) * S::kLd + 32 * m + 4 * cg);
#pragma unroll
        for (int i = 0; i < S::kRM; ++i) {
          const float pi = Component(p[i], cc);
          acc[i][4 * m + 0] = fmaf(pi, v.x, acc[i][4 * m + 0]);
          acc[i][4 * m + 1] = fmaf(pi, v.y, acc[i][4 * m + 1]);
          acc[i][4 * m + 2] = fmaf(pi, v.z, acc[i][4 * m + 2]);
          acc[i][4 * m + 3] = fmaf(pi, v.w, acc[i][4 * m + 3]);
        }
      }
    }
  }
}

// Sum and max over the 8 lanes of a row group (lanes that differ in the low 3 bits). Xor
// butterflies leave every lane with the same bits (fp addition is commutative), so the row
// statistics agree across the group.
__device__ __forceinline__ float RowGroupMax(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFullMask, x, 1));
  x = fmaxf(x, __shfl_xor_sync(kFullMask, x, 2));
  x = fmaxf(x, __shfl_xor_sync(kFullMask, x, 4));
  return x;
}
__device__ __forceinline__ float RowGroupSum(float x) {
  x += __shfl_xor_sync(kFullMask, x, 1);
  x += __shfl_xor_sync(kFullMask, x, 2);
  x += __shfl_xor_sync(kFullMask, x, 4);
  return x;
}

template <class S>
constexpr size_t ForwardSmemBytes() {
  return sizeof(float) * ((S::kRows + 2 * S::kCols) * S::kLd + S::kRows * S::kLdS) +
         sizeof(int) * (2 * S::kCols + kChunkTiles);
}

// One block per (query tile, head): out and lse of the tile's rows over every key tile.
template <typename T, class S>
__global__ void __launch_bounds__(kThreads)
    ForwardKernel(T* out, float* lse, const T* q, const T* k, const T* v, Problem pb) {
  extern __shared__ float4 smem4[];
  float* q_tile = reinterpret_cast<float*>(smem4);  // [kRows][kLd]
  float* k_tile = q_tile + S::kRows * S::kLd;       // [kCols][kLd]
  float* v_tile = k_tile + S::kCols * S::kLd;       // [kCols][kLd]
  float* p_tile = v_tile + S::kCols * S::kLd;       // [kRows][kLdS]
  int* k_doc_s = reinterpret_cast<int*>(p_tile + S::kRows * S::kLdS);
  int* k_pos_s = k_doc_s + S::kCols;
  int* flags = k_pos_s + S::kCols;  // [kChunkTiles]

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int cg = lane % 8;
  const int row_base = warp * 4 * S::kRM + (lane / 8) * S::kRM;
  // Under the causal mask later query tiles see more keys: start them first.
  const int qt = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int h = static_cast<int>(blockIdx.y);
  const int kv_head = h / pb.group;
  const int q0 = qt * S::kRows;
  const int q_count = min(S::kRows, pb.Tq - q0);
  const int64_t q_stride = static_cast<int64_t>(pb.n_heads) * pb.D;
  const int64_t kv_stride = static_cast<int64_t>(pb.n_kv_heads) * pb.D;
  const T* k_head = k + static_cast<int64_t>(kv_head) * pb.D;
  const T* v_head = v + static_cast<int64_t>(kv_head) * pb.D;

  StageTokens<S::kRows, S::kD>(q_tile, q + static_cast<int64_t>(h) * pb.D, q_stride, q0, q_count,
                               pb.D);
  bool row_ok[S::kRM];
  int32_t row_doc[S::kRM], row_pos[S::kRM];
#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
    row_ok[i] = row_base + i < q_count;
    row_doc[i] = row_ok[i] ? pb.q_doc[q0 + row_base + i] : 0;
    row_pos[i] = row_ok[i] ? pb.q_pos[q0 + row_base + i] : 0;
  }
  const TokenRange own = WarpTokenRange<S::kRows>(pb.q_doc, pb.q_pos, q0, q_count, lane);

  float row_max[S::kRM], row_sum[S::kRM], acc[S::kRM][S::kAcc];
#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
    row_max[i] = NegInf();
    row_sum[i] = 0.0f;
#pragma unroll
    for (int x = 0; x < S::kAcc; ++x) acc[i][x] = 0.0f;
  }

  const int n_tiles = (pb.Tk + S::kCols - 1) / S::kCols;
  for (int t0 = 0; t0 < n_tiles; t0 += kChunkTiles) {
    const int t1 = min(t0 + kChunkTiles, n_tiles);
    __syncthreads();  // the previous chunk's flags are read by all (and q_tile is staged)
    ClassifyChunk<S::kCols>(flags, pb.k_doc, pb.k_pos, pb.Tk, t0, t1, own, true, pb.causal, warp,
                            lane);
    __syncthreads();
    for (int t = t0; t < t1; ++t) {
      if (flags[t - t0] == 0) continue;  // block-uniform
      const int k0 = t * S::kCols;
      const int k_count = min(S::kCols, pb.Tk - k0);
      __syncthreads();  // the previous tile's k_tile, v_tile and token data are read by all
      StageTokens<S::kCols, S::kD>(k_tile, k_head, kv_stride, k0, k_count, pb.D);
      StageTokens<S::kCols, S::kD>(v_tile, v_head, kv_stride, k0, k_count, pb.D);
      if (static_cast<int>(threadIdx.x) < S::kCols) {
        const int c = static_cast<int>(threadIdx.x);
        k_doc_s[c] = c < k_count ? pb.k_doc[k0 + c] : 0;
        k_pos_s[c] = c < k_count ? pb.k_pos[k0 + c] : 0;
      }
      __syncthreads();

      float s[S::kRM][S::kCN];
      TileDot<S>(s, q_tile, k_tile, row_base, cg);
#pragma unroll
      for (int i = 0; i < S::kRM; ++i) {
        float tile_max = NegInf();
#pragma unroll
        for (int j = 0; j < S::kCN; ++j) {
          const int c = cg + 8 * j;
          const bool visible = row_ok[i] && c < k_count && k_doc_s[c] == row_doc[i] &&
                               (!pb.causal || k_pos_s[c] <= row_pos[i]);
          s[i][j] = visible ? s[i][j] * pb.scale_log2 : NegInf();
          tile_max = fmaxf(tile_max, s[i][j]);
        }
        const float new_max = fmaxf(row_max[i], RowGroupMax(tile_max));
        float rescale = 1.0f;
        float sum = 0.0f;
        if (new_max != NegInf()) {
          // exp2f(-inf) = 0 covers both masked scores and a row that had seen nothing yet.
          rescale = exp2f(row_max[i] - new_max);
#pragma unroll
          for (int j = 0; j < S::kCN; ++j) {
            s[i][j] = exp2f(s[i][j] - new_max);
            sum += s[i][j];
          }
        } else {
          // Nothing visible in this row yet: -inf - -inf must not be formed.
#pragma unroll
          for (int j = 0; j < S::kCN; ++j) s[i][j] = 0.0f;
        }
        sum = RowGroupSum(sum);
        row_sum[i] = row_sum[i] * rescale + sum;
        row_max[i] = new_max;
#pragma unroll
        for (int x = 0; x < S::kAcc; ++x) acc[i][x] *= rescale;
#pragma unroll
        for (int j = 0; j < S::kCN; ++j) p_tile[(row_base + i) * S::kLdS + cg + 8 * j] = s[i][j];
      }
      __syncwarp();  // a warp reads back only the probability rows it wrote
      TileAccumulate<S>(acc, p_tile, v_tile, row_base, cg);
    }
  }

#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
    if (!row_ok[i]) continue;
    const int64_t row = static_cast<int64_t>(q0 + row_base + i) * pb.n_heads + h;
    // The row's largest score contributes exp2(0) = 1, so a row that saw a key has sum >= 1.
    const bool any = row_sum[i] > 0.0f;
    const float inv = any ? 1.0f / row_sum[i] : 0.0f;
    T* out_row = out + row * pb.D;
#pragma unroll
    for (int m = 0; m < S::kD / 32; ++m) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = 32 * m + 4 * cg + e;
        if (d < pb.D) StoreFromFloat(out_row + d, acc[i][4 * m + e] * inv);
      }
    }
    if (cg == 0) lse[row] = any ? (row_max[i] + log2f(row_sum[i])) * kLn2 : NegInf();
  }
}

template <class S>
constexpr size_t BackwardDqSmemBytes() {
  return sizeof(float) * (2 * (S::kRows + S::kCols) * S::kLd + S::kRows * S::kLdS) +
         sizeof(int) * (2 * S::kCols + kChunkTiles);
}

// One block per (query tile, head): dq += dS K over every key tile, with P = exp(S - lse) and
// dS = P * (dO V^T - delta) * scale.
template <typename T, class S>
__global__ void __launch_bounds__(kThreads)
    BackwardDqKernel(float* dq, const float* dout, const T* q, const T* k, const T* v,
                     const float* lse, const float* delta, Problem pb) {
  extern __shared__ float4 smem4[];
  float* q_tile = reinterpret_cast<float*>(smem4);  // [kRows][kLd]
  float* do_tile = q_tile + S::kRows * S::kLd;      // [kRows][kLd]
  float* k_tile = do_tile + S::kRows * S::kLd;      // [kCols][kLd]
  float* v_tile = k_tile + S::kCols * S::kLd;       // [kCols][kLd]
  float* ds_tile = v_tile + S::kCols * S::kLd;      // [kRows][kLdS]
  int* k_doc_s = reinterpret_cast<int*>(ds_tile + S::kRows * S::kLdS);
  int* k_pos_s = k_doc_s + S::kCols;
  int* flags = k_pos_s + S::kCols;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int cg = lane % 8;
  const int row_base = warp * 4 * S::kRM + (lane / 8) * S::kRM;
  const int qt = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int h = static_cast<int>(blockIdx.y);
  const int kv_head = h / pb.group;
  const int q0 = qt * S::kRows;
  const int q_count = min(S::kRows, pb.Tq - q0);
  const int64_t q_stride = static_cast<int64_t>(pb.n_heads) * pb.D;
  const int64_t kv_stride = static_cast<int64_t>(pb.n_kv_heads) * pb.D;
  const T* k_head = k + static_cast<int64_t>(kv_head) * pb.D;
  const T* v_head = v + static_cast<int64_t>(kv_head) * pb.D;

  StageTokens<S::kRows, S::kD>(q_tile, q + static_cast<int64_t>(h) * pb.D, q_stride, q0, q_count,
                               pb.D);
  StageTokens<S::kRows, S::kD>(do_tile, dout + static_cast<int64_t>(h) * pb.D, q_stride, q0,
                               q_count, pb.D);
  bool row_ok[S::kRM];
  int32_t row_doc[S::kRM], row_pos[S::kRM];
  float row_lse[S::kRM], row_delta[S::kRM];  // lse in base 2, like the scores
#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
    const int r = q0 + row_base + i;
    row_ok[i] = row_base + i < q_count;
    row_doc[i] = row_ok[i] ? pb.q_doc[r] : 0;
    row_pos[i] = row_ok[i] ? pb.q_pos[r] : 0;
    row_lse[i] = row_ok[i] ? lse[static_cast<int64_t>(r) * pb.n_heads + h] * kLog2e : NegInf();
    row_delta[i] = row_ok[i] ? delta[static_cast<int64_t>(r) * pb.n_heads + h] : 0.0f;
  }
  const TokenRange own = WarpTokenRange<S::kRows>(pb.q_doc, pb.q_pos, q0, q_count, lane);

  float acc[S::kRM][S::kAcc];
#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
#pragma unroll
    for (int x = 0; x < S::kAcc; ++x) acc[i][x] = 0.0f;
  }

  const int n_tiles = (pb.Tk + S::kCols - 1) / S::kCols;
  for (int t0 = 0; t0 < n_tiles; t0 += kChunkTiles) {
    const int t1 = min(t0 + kChunkTiles, n_tiles);
    __syncthreads();
    ClassifyChunk<S::kCols>(flags, pb.k_doc, pb.k_pos, pb.Tk, t0, t1, own, true, pb.causal, warp,
                            lane);
    __syncthreads();
    for (int t = t0; t < t1; ++t) {
      if (flags[t - t0] == 0) continue;
      const int k0 = t * S::kCols;
      const int k_count = min(S::kCols, pb.Tk - k0);
      __syncthreads();
      StageTokens<S::kCols, S::kD>(k_tile, k_head, kv_stride, k0, k_count, pb.D);
      StageTokens<S::kCols, S::kD>(v_tile, v_head, kv_stride, k0, k_count, pb.D);
      if (static_cast<int>(threadIdx.x) < S::kCols) {
        const int c = static_cast<int>(threadIdx.x);
        k_doc_s[c] = c < k_count ? pb.k_doc[k0 + c] : 0;
        k_pos_s[c] = c < k_count ? pb.k_pos[k0 + c] : 0;
      }
      __syncthreads();

      float s[S::kRM][S::kCN];
      float dp[S::kRM][S::kCN];
      TileDot<S>(s, q_tile, k_tile, row_base, cg);
      TileDot<S>(dp, do_tile, v_tile, row_base, cg);
#pragma unroll
      for (int i = 0; i < S::kRM; ++i) {
#pragma unroll
        for (int j = 0; j < S::kCN; ++j) {
          const int c = cg + 8 * j;
          // A row with lse = -inf sees no key in any set: no gradient flows through it.
          const bool visible = row_ok[i] && c < k_count && k_doc_s[c] == row_doc[i] &&
                               (!pb.causal || k_pos_s[c] <= row_pos[i]) && row_lse[i] != NegInf();
          const float p = visible ? exp2f(s[i][j] * pb.scale_log2 - row_lse[i]) : 0.0f;
          ds_tile[(row_base + i) * S::kLdS + c] = p * (dp[i][j] - row_delta[i]) * pb.scale;
        }
      }
      __syncwarp();
      TileAccumulate<S>(acc, ds_tile, k_tile, row_base, cg);
    }
  }

#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
    if (!row_ok[i]) continue;
    float* dq_row = dq + (static_cast<int64_t>(q0 + row_base + i) * pb.n_heads + h) * pb.D;
#pragma unroll
    for (int m = 0; m < S::kD / 32; ++m) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = 32 * m + 4 * cg + e;
        if (d < pb.D) dq_row[d] += acc[i][4 * m + e];
      }
    }
  }
}

template <class S>
constexpr size_t BackwardDkvSmemBytes() {
  return sizeof(float) *
             (2 * (S::kRows + S::kCols) * S::kLd + 2 * S::kRows * S::kLdS + 2 * S::kCols) +
         sizeof(int) * (2 * S::kCols + kChunkTiles);
}

// One block per (key tile, kv head): dk += dS^T Q and dv += P^T dO over every query tile of
// every query head that reads the kv head. Rows are keys here, columns queries.
template <typename T, class S>
__global__ void __launch_bounds__(kThreads)
    BackwardDkvKernel(float* dk, float* dv, const float* dout, const T* q, const T* k, const T* v,
                      const float* lse, const float* delta, Problem pb) {
  extern __shared__ float4 smem4[];
  float* k_tile = reinterpret_cast<float*>(smem4);  // [kRows][kLd]
  float* v_tile = k_tile + S::kRows * S::kLd;       // [kRows][kLd]
  float* q_tile = v_tile + S::kRows * S::kLd;       // [kCols][kLd]
  float* do_tile = q_tile + S::kCols * S::kLd;      // [kCols][kLd]
  float* p_tile = do_tile + S::kCols * S::kLd;      // [kRows][kLdS]
  float* ds_tile = p_tile + S::kRows * S::kLdS;     // [kRows][kLdS]
  float* q_lse_s = ds_tile + S::kRows * S::kLdS;    // [kCols], base 2
  float* q_delta_s = q_lse_s + S::kCols;            // [kCols]
  int* q_doc_s = reinterpret_cast<int*>(q_delta_s + S::kCols);
  int* q_pos_s = q_doc_s + S::kCols;
  int* flags = q_pos_s + S::kCols;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int cg = lane % 8;
  const int row_base = warp * 4 * S::kRM + (lane / 8) * S::kRM;
  // Under the causal mask early key tiles are seen by the most queries: they go first.
  const int kt = static_cast<int>(blockIdx.x);
  const int kv_head = static_cast<int>(blockIdx.y);
  const int k0 = kt * S::kRows;
  const int k_count = min(S::kRows, pb.Tk - k0);
  const int64_t q_stride = static_cast<int64_t>(pb.n_heads) * pb.D;
  const int64_t kv_stride = static_cast<int64_t>(pb.n_kv_heads) * pb.D;

  StageTokens<S::kRows, S::kD>(k_tile, k + static_cast<int64_t>(kv_head) * pb.D, kv_stride, k0,
                               k_count, pb.D);
  StageTokens<S::kRows, S::kD>(v_tile, v + static_cast<int64_t>(kv_head) * pb.D, kv_stride, k0,
                               k_count, pb.D);
  bool row_ok[S::kRM];
  int32_t row_doc[S::kRM], row_pos[S::kRM];
#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
    row_ok[i] = row_base + i < k_count;
    row_doc[i] = row_ok[i] ? pb.k_doc[k0 + row_base + i] : 0;
    row_pos[i] = row_ok[i] ? pb.k_pos[k0 + row_base + i] : 0;
  }
  const TokenRange own = WarpTokenRange<S::kRows>(pb.k_doc, pb.k_pos, k0, k_count, lane);

  float acc_dk[S::kRM][S::kAcc], acc_dv[S::kRM][S::kAcc];
#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
#pragma unroll
    for (int x = 0; x < S::kAcc; ++x) {
      acc_dk[i][x] = 0.0f;
      acc_dv[i][x] = 0.0f;
    }
  }

  const int n_tiles = (pb.Tq + S::kCols - 1) / S::kCols;
  for (int t0 = 0; t0 < n_tiles; t0 += kChunkTiles) {
    const int t1 = min(t0 + kChunkTiles, n_tiles);
    __syncthreads();
    ClassifyChunk<S::kCols>(flags, pb.q_doc, pb.q_pos, pb.Tq, t0, t1, own, false, pb.causal, warp,
                            lane);
    __syncthreads();
    for (int hh = 0; hh < pb.group; ++hh) {
      const int h = kv_head * pb.group + hh;
      const T* q_head = q + static_cast<int64_t>(h) * pb.D;
      const float* do_head = dout + static_cast<int64_t>(h) * pb.D;
      for (int t = t0; t < t1; ++t) {
        if (flags[t - t0] == 0) continue;
        const int q0 = t * S::kCols;
        const int q_count = min(S::kCols, pb.Tq - q0);
        __syncthreads();
        StageTokens<S::kCols, S::kD>(q_tile, q_head, q_stride, q0, q_count, pb.D);
        StageTokens<S::kCols, S::kD>(do_tile, do_head, q_stride, q0, q_count, pb.D);
        if (static_cast<int>(threadIdx.x) < S::kCols) {
          const int c = static_cast<int>(threadIdx.x);
          const bool ok = c < q_count;
          const int64_t row = static_cast<int64_t>(q0 + c) * pb.n_heads + h;
          q_doc_s[c] = ok ? pb.q_doc[q0 + c] : 0;
          q_pos_s[c] = ok ? pb.q_pos[q0 + c] : 0;
          q_lse_s[c] = ok ? lse[row] * kLog2e : NegInf();
          q_delta_s[c] = ok ? delta[row] : 0.0f;
        }
        __syncthreads();

        float s[S::kRM][S::kCN];
        float dp[S::kRM][S::kCN];
        TileDot<S>(s, k_tile, q_tile, row_base, cg);
        TileDot<S>(dp, v_tile, do_tile, row_base, cg);
#pragma unroll
        for (int i = 0; i < S::kRM; ++i) {
#pragma unroll
          for (int j = 0; j < S::kCN; ++j) {
            const int c = cg + 8 * j;
            const float q_lse = q_lse_s[c];
            const bool visible = row_ok[i] && c < q_count && q_doc_s[c] == row_doc[i] &&
                                 (!pb.causal || row_pos[i] <= q_pos_s[c]) && q_lse != NegInf();
            const float p = visible ? exp2f(s[i][j] * pb.scale_log2 - q_lse) : 0.0f;
            p_tile[(row_base + i) * S::kLdS + c] = p;
            ds_tile[(row_base + i) * S::kLdS + c] = p * (dp[i][j] - q_delta_s[c]) * pb.scale;
          }
        }
        __syncwarp();
        TileAccumulate<S>(acc_dv, p_tile, do_tile, row_base, cg);
        TileAccumulate<S>(acc_dk, ds_tile, q_tile, row_base, cg);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < S::kRM; ++i) {
    if (!row_ok[i]) continue;
    const int64_t offset =
        (static_cast<int64_t>(k0 + row_base + i) * pb.n_kv_heads + kv_head) * pb.D;
#pragma unroll
    for (int m = 0; m < S::kD / 32; ++m) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = 32 * m + 4 * cg + e;
        if (d < pb.D) {
          dk[offset + d] += acc_dk[i][4 * m + e];
          dv[offset + d] += acc_dv[i][4 * m + e];
        }
      }
    }
  }
}

// Rows are handled one warp each by the row-wise kernels below.
constexpr int kRowWarps = 8;

template <typename T>
__global__ void __launch_bounds__(32 * kRowWarps)
    MergeKernel(T* out, float* lse, const T* part_out, const float* part_lse, int64_t n_rows,
                int D) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / 32;
  if (r >= n_rows) return;  // warp-uniform
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const float a = lse[r];
  const float b = part_lse[r];
  // Lane 0 overwrites lse[r] below: every lane must have read it first.
  __syncwarp();
  if (b == NegInf()) return;  // the part saw no key of this row: nothing to fold in
  T* o = out + r * D;
  const T* po = part_out + r * D;
  if (a == NegInf()) {  // the running result saw none: take the part as it is
    for (int d = lane; d < D; d += 32) o[d] = po[d];
    if (lane == 0) lse[r] = b;
    return;
  }
  // log(e^a + e^b) = hi + log1p(e^(lo - hi)) never exponentiates a positive number.
  const float hi = fmaxf(a, b);
  const float merged = hi + log1pf(expf(fminf(a, b) - hi));
  const float wa = expf(a - merged);
  const float wb = expf(b - merged);
  for (int d = lane; d < D; d += 32) {
    StoreFromFloat(o + d, wa * LoadAsFloat(o + d) + wb * LoadAsFloat(po + d));
  }
  if (lane == 0) lse[r] = merged;
}

template <typename T>
__global__ void __launch_bounds__(32 * kRowWarps)
    DeltaKernel(float* delta, const float* dout, const T* out, int64_t n_rows, int D) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / 32;
  if (r >= n_rows) return;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  float sum = 0.0f;
  for (int d = lane; d < D; d += 32) sum = fmaf(dout[r * D + d], LoadAsFloat(out + r * D + d), sum);
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(kFullMask, sum, offset);
  if (lane == 0) delta[r] = sum;
}

// Tile shapes per padded head dim: keep the per-lane accumulators near 64 registers and the
// shared memory near or under 100 KiB (2-3 blocks per SM). The dk/dv pass holds two accumulators,
// the dq pass two staged row tiles, hence their fewer rows at large head dims.
template <int kD>
struct Configs;
template <>
struct Configs<32> {
  using Forward = Tiles<32, 4, 8>;
  using Dq = Tiles<32, 4, 8>;
  using Dkv = Tiles<32, 4, 8>;
};
template <>
struct Configs<64> {
  using Forward = Tiles<64, 4, 8>;
  using Dq = Tiles<64, 4, 4>;
  using Dkv = Tiles<64, 4, 4>;
};
template <>
struct Configs<96> {
  using Forward = Tiles<96, 4, 4>;
  using Dq = Tiles<96, 4, 4>;
  using Dkv = Tiles<96, 2, 4>;
};
template <>
struct Configs<128> {
  using Forward = Tiles<128, 4, 4>;
  using Dq = Tiles<128, 2, 4>;
  using Dkv = Tiles<128, 2, 4>;
};
template <>
struct Configs<192> {
  using Forward = Tiles<192, 2, 4>;
  using Dq = Tiles<192, 2, 4>;
  using Dkv = Tiles<192, 1, 4>;
};
template <>
struct Configs<256> {
  using Forward = Tiles<256, 2, 4>;
  using Dq = Tiles<256, 1, 4>;
  using Dkv = Tiles<256, 1, 4>;
};

// Calls f with std::integral_constant<int, kD> for the padded head dim of D.
template <typename F>
cudaError_t DispatchHeadDim(int D, F&& f) {
  if (D <= 32) return f(std::integral_constant<int, 32>{});
  if (D <= 64) return f(std::integral_constant<int, 64>{});
  if (D <= 96) return f(std::integral_constant<int, 96>{});
  if (D <= 128) return f(std::integral_constant<int, 128>{});
  if (D <= 192) return f(std::integral_constant<int, 192>{});
  return f(std::integral_constant<int, 256>{});
}

cudaError_t ValidateShape(const AttentionShape& shape) {
  if (shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0) {
    return cudaErrorInvalidValue;
  }
  if (shape.head_dim <= 0 || shape.head_dim % 8 != 0 || shape.head_dim > kMaxHeadDim) {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

cudaError_t ValidateProblem(const DeviceSpans& q_spans, const DeviceSpans& k_spans,
                            const AttentionShape& shape) {
  const cudaError_t err = ValidateShape(shape);
  if (err != cudaSuccess) return err;
  if (q_spans.n < 0 || k_spans.n < 0 || shape.n_heads > kMaxGridY) return cudaErrorInvalidValue;
  return cudaSuccess;
}

Problem MakeProblem(const DeviceSpans& q_spans, const DeviceSpans& k_spans,
                    const AttentionShape& shape, bool causal) {
  Problem pb;
  pb.q_doc = q_spans.doc;
  pb.q_pos = q_spans.pos;
  pb.k_doc = k_spans.doc;
  pb.k_pos = k_spans.pos;
  pb.Tq = q_spans.n;
  pb.Tk = k_spans.n;
  pb.n_heads = shape.n_heads;
  pb.n_kv_heads = shape.n_kv_heads;
  pb.group = shape.n_heads / shape.n_kv_heads;
  pb.D = shape.head_dim;
  pb.causal = causal;
  pb.scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
  pb.scale_log2 = pb.scale * kLog2e;
  return pb;
}

// Launches with `smem` bytes of dynamic shared memory, opting in above the default 48 KiB (the
// attribute is per device, so it is set on every launch rather than cached).
template <typename... Params, typename... Args>
cudaError_t Launch(void (*kernel)(Params...), dim3 grid, size_t smem, cudaStream_t stream,
                   Args... args) {
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  kernel<<<grid, kThreads, smem, stream>>>(args...);
  return cudaGetLastError();
}

unsigned CeilDiv(int n, int d) { return static_cast<unsigned>((n + d - 1) / d); }

}  // namespace

template <typename T>
cudaError_t FlashAttentionForward(T* out, float* lse, const T* q, const T* k, const T* v,
                                  const DeviceSpans& q_spans, const DeviceSpans& k_spans,
                                  const AttentionShape& shape, bool causal, cudaStream_t stream) {
  const cudaError_t err = ValidateProblem(q_spans, k_spans, shape);
  if (err != cudaSuccess) return err;
  if (q_spans.n == 0) return cudaSuccess;
  const Problem pb = MakeProblem(q_spans, k_spans, shape, causal);
  return DispatchHeadDim(shape.head_dim, [&](auto dim) {
    using S = typename Configs<decltype(dim)::value>::Forward;
    const dim3 grid(CeilDiv(pb.Tq, S::kRows), static_cast<unsigned>(pb.n_heads));
    return Launch(ForwardKernel<T, S>, grid, ForwardSmemBytes<S>(), stream, out, lse, q, k, v, pb);
  });
}

template <typename T>
cudaError_t FlashAttentionMerge(T* out, float* lse, const T* part_out, const float* part_lse,
                                int Tq, const AttentionShape& shape, cudaStream_t stream) {
  if (Tq < 0 || shape.n_heads <= 0 || shape.head_dim <= 0) return cudaErrorInvalidValue;
  const int64_t n_rows = static_cast<int64_t>(Tq) * shape.n_heads;
  if (n_rows == 0) return cudaSuccess;
  const int64_t blocks = (n_rows + kRowWarps - 1) / kRowWarps;
  if (blocks > INT_MAX) return cudaErrorInvalidValue;
  MergeKernel<T><<<static_cast<unsigned>(blocks), 32 * kRowWarps, 0, stream>>>(
      out, lse, part_out, part_lse, n_rows, shape.head_dim);
  return cudaGetLastError();
}

template <typename T>
cudaError_t FlashAttentionDelta(float* delta, const float* dout, const T* out, int Tq,
                                const AttentionShape& shape, cudaStream_t stream) {
  if (Tq < 0 || shape.n_heads <= 0 || shape.head_dim <= 0) return cudaErrorInvalidValue;
  const int64_t n_rows = static_cast<int64_t>(Tq) * shape.n_heads;
  if (n_rows == 0) return cudaSuccess;
  const int64_t blocks = (n_rows + kRowWarps - 1) / kRowWarps;
  if (blocks > INT_MAX) return cudaErrorInvalidValue;
  DeltaKernel<T><<<static_cast<unsigned>(blocks), 32 * kRowWarps, 0, stream>>>(
      delta, dout, out, n_rows, shape.head_dim);
  return cudaGetLastError();
}

template <typename T>
cudaError_t FlashAttentionBackward(float* dq, float* dk, float* dv, const float* dout, const T* q,
                                   const T* k, const T* v, const float* lse, const float* delta,
                                   const DeviceSpans& q_spans, const DeviceSpans& k_spans,
                                   const AttentionShape& shape, bool causal, cudaStream_t stream) {
  const cudaError_t err = ValidateProblem(q_spans, k_spans, shape);
  if (err != cudaSuccess) return err;
  // No pair at all: every gradient term is zero.
  if (q_spans.n == 0 || k_spans.n == 0) return cudaSuccess;
  const Problem pb = MakeProblem(q_spans, k_spans, shape, causal);
  return DispatchHeadDim(shape.head_dim, [&](auto dim) {
    using Dkv = typename Configs<decltype(dim)::value>::Dkv;
    using Dq = typename Configs<decltype(dim)::value>::Dq;
    const dim3 dkv_grid(CeilDiv(pb.Tk, Dkv::kRows), static_cast<unsigned>(pb.n_kv_heads));
    cudaError_t e = Launch(BackwardDkvKernel<T, Dkv>, dkv_grid, BackwardDkvSmemBytes<Dkv>(), stream,
                           dk, dv, dout, q, k, v, lse, delta, pb);
    if (e != cudaSuccess) return e;
    const dim3 dq_grid(CeilDiv(pb.Tq, Dq::kRows), static_cast<unsigned>(pb.n_heads));
    return Launch(BackwardDqKernel<T, Dq>, dq_grid, BackwardDqSmemBytes<Dq>(), stream, dq, dout, q,
                  k, v, lse, delta, pb);
  });
}

#define LOOM_INSTANTIATE_FLASH_ATTENTION(T)                                                      \
  template cudaError_t FlashAttentionForward<T>(T*, float*, const T*, const T*, const T*,        \
                                                const DeviceSpans&, const DeviceSpans&,          \
                                                const AttentionShape&, bool, cudaStream_t);      \
  template cudaError_t FlashAttentionMerge<T>(T*, float*, const T*, const float*, int,           \
                                              const AttentionShape&, cudaStream_t);              \
  template cudaError_t FlashAttentionDelta<T>(float*, const float*, const T*, int,               \
                                              const AttentionShape&, cudaStream_t);              \
  template cudaError_t FlashAttentionBackward<T>(float*, float*, float*, const float*, const T*, \
                                                 const T*, const T*, const float*, const float*, \
                                                 const DeviceSpans&, const DeviceSpans&,         \
                                                 const AttentionShape&, bool, cudaStream_t);
LOOM_INSTANTIATE_FLASH_ATTENTION(float)
LOOM_INSTANTIATE_FLASH_ATTENTION(__nv_bfloat16)
#undef LOOM_INSTANTIATE_FLASH_ATTENTION

}  // namespace loom::gpu
