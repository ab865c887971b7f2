// pnn/cpu/gemm.hpp: pnn's own single-precision matrix product on the CPU,
// C = alpha * op(A) * op(B) + beta * C, which gemm<float> in cpu/linalg.hpp calls.
//
// The structure is GotoBLAS / BLIS. C is cut into column blocks (block_columns wide), the depth into
// slices (at most block_depth deep) and the rows into row blocks (block_rows high). For each column block
// and depth slice, op(B) is packed into panels tile_columns wide in the order the micro-kernel reads
// them (panel by panel as the first row block reaches it, so each is used while still in L1), and for
// each row block op(A) into panels tile_rows high; the packing routines absorb the transposes. The micro-kernel keeps a
// tile_rows x tile_columns tile of C in vector registers and adds one outer product per step of the depth: a broadcast
// of each A element, fused multiply-adds with the vectors of the B row. alpha and beta are applied once, when the tile
// is stored.
//
// Packing is skipped where it would only copy, which is what makes the skinny products of training fast
// (im2col x W^T with 16 or 32 output channels, weight gradients whose depth is the batch): the kernel
// broadcasts single elements of A, so op(A) needs no layout and is read in place when its rows (or, for
// a narrow C, its columns) are contiguous; a non-transposed op(B) is read in place when few row tiles
// reuse each panel. (Not when rows are a multiple of 2 KB apart: such panels evict themselves.) Operands read in place
// are prefetched a panel ahead, since the hardware prefetchers miss their short strided streams. Tiles at the right and
// bottom edges run the same kernel with clamped rows and masked loads, into a tile in local memory.
//
// The tile follows the instruction set the user compiles for: 12 x 32 with AVX-512, 6 x 16 with AVX2
// and FMA, 6 x 8 with plain 16-byte vectors otherwise. pnn never adds compiler flags: build with
// -march=native to get the wide kernels. With OpenMP, large products are split into rectangles of C, one
// per thread, cut on the tile grid, and the depth slices depend on k alone: every element of C is
// computed by one thread with the same operations in the same order whatever the number of threads,
// so the results do not depend on it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <exception>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "pnn/core/config.hpp"
#include "pnn/cpu/simd.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/device.hpp"

namespace pnn::cpu_gemm {

// A read-only matrix whose element (row, column) lies at data[row * row_stride + column * column_stride].
// A transposed view swaps the two strides, so the products take transposes without copying.
struct StridedMatrix {
  const float* data = nullptr;
  index row_stride = 0;
  index column_stride = 1;

  const float* at(index row, index column) const { return data + row * row_stride + column * column_stride; }
};

// The depth of a product cut into pieces (a batch's pieces, core/batch_sum.hpp): piece i is depth steps
// [ends[i - 1], ends[i]) (from 0). Each element of C is then the binary-counter tree over the pieces of
// each piece's chain of multiply-adds, the tree core/batch_sum.hpp's BatchSum builds from leaves, so the
// kernel gives the bits of a product per piece added up there, in one pass over C.
struct DepthPieces {
  static constexpr int max_pieces = 16;
  int count = 0;
  index ends[max_pieces] = {};
};

// Tile and block sizes of one micro-kernel. The B panel of a tile (block_depth x tile_columns) stays in
// L1 while the row tiles of a block pass over it; the packed A block (block_rows x block_depth) stays in
// L2; a packed B block (block_depth x block_columns) stays in L3.
template <int VectorFloats, int TileRows, int VectorsPerRow, index BlockRows, index BlockDepth, index BlockColumns>
struct KernelShape {
  static constexpr int vector_floats = VectorFloats;
  static constexpr int tile_rows = TileRows;
  static constexpr int vectors_per_row = VectorsPerRow;
  static constexpr int tile_columns = VectorFloats * VectorsPerRow;
  static constexpr index block_rows = BlockRows;
  static constexpr index block_depth = BlockDepth;
  static constexpr index block_columns = BlockColumns;
  static_assert(VectorFloats == 4 || VectorFloats == 8 || VectorFloats == 16,
                "vector_floats must be 4, 8 or 16: the kernels use 16-, 32- or 64-byte vectors");
  static_assert(BlockRows % TileRows == 0, "block_rows must be a multiple of tile_rows");
  static_assert(BlockColumns % (VectorFloats * VectorsPerRow) == 0, "block_columns must be a multiple of tile_columns");
};

// 24 zmm accumulators; the 24 KB B panel fits the 32 KB L1 of Zen 4 and the 48 KB of recent Xeons.
using Avx512Shape = KernelShape<16, 12, 2, 144, 192, 4096>;
// 12 ymm accumulators, as BLIS's Haswell/Zen kernel; a 16 KB B panel in a 32 KB L1, a 144 KB A block
// in a 512 KB L2.
using Avx2Shape = KernelShape<8, 6, 2, 144, 256, 4080>;
// 12 of 16 xmm (or NEON) registers.
using PortableShape = KernelShape<4, 6, 2, 120, 256, 2040>;

// Everything below is compiled for the instruction set of the translation unit, so it lives in an inline
// namespace named after it: two translation units built with different flags then link two separate
// copies instead of silently sharing one that the other's processor may not run.
#if defined(__AVX512F__)
#define PNN_GEMM_ISA isa_avx512
#elif defined(__AVX2__) && defined(__FMA__)
#define PNN_GEMM_ISA isa_avx2_fma
#elif defined(__AVX__)
#define PNN_GEMM_ISA isa_avx
#else
#define PNN_GEMM_ISA isa_portable
#endif
inline namespace PNN_GEMM_ISA {

#if defined(__AVX512F__)
using NativeShape = Avx512Shape;
#elif defined(__AVX2__) && defined(__FMA__)
using NativeShape = Avx2Shape;
#else
using NativeShape = PortableShape;
#endif
// The tile of products whose depth is cut into pieces (DepthPieces): half the rows, so that a piece's
// accumulators and its partner's fit in the registers together.
template <class Shape>
using TreeShapeOf = KernelShape<Shape::vector_floats, Shape::tile_rows / 2, Shape::vectors_per_row, Shape::block_rows,
                                Shape::block_depth, Shape::block_columns>;
using TreeShape = TreeShapeOf<NativeShape>;

// Which path runs, for logs and benchmark reports.
inline const char* kernel_name() {
#if defined(__AVX512F__)
  return "pnn sgemm 12x32 (AVX-512)";
#elif defined(__AVX2__) && defined(__FMA__)
  return "pnn sgemm 6x16 (AVX2+FMA)";
#else
  return "pnn sgemm 6x8 (portable vectors; compile with -march=native for AVX2/AVX-512)";
#endif
}

namespace detail {

// GCC/Clang vector extensions. Only passed by reference: a 64-byte vector passed by value changes the
// calling convention where AVX-512 is off (the AVX-512 shape is still compiled there, by the tests).
template <int Floats>
struct VectorOf;
template <>
struct VectorOf<4> {
  typedef float type __attribute__((vector_size(16)));
};
template <>
struct VectorOf<8> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VectorOf<16> {
  typedef float type __attribute__((vector_size(64)));
};

template <class Vector>
[[gnu::always_inline]] inline void load(Vector& v, const float* source) {
  std::memcpy(&v, source, sizeof(Vector));
}
template <class Vector>
[[gnu::always_inline]] inline void store(float* destination, const Vector& v) {
  std::memcpy(destination, &v, sizeof(Vector));
}
template <class Vector>
[[gnu::always_inline]] inline void broadcast(Vector& v, float value) {
  v = value - Vector{};  // value - 0 is value for every float, -0 included, so this folds to a broadcast
}
// accumulator += a * b, fused: spelled with intrinsics where the compiler has them, so the kernel stays
// fused under -ffp-contract=off.
template <class Vector>
[[gnu::always_inline]] inline void multiply_add(Vector& accumulator, const Vector& a, const Vector& b) {
#if defined(__AVX512F__)
  if constexpr (sizeof(Vector) == 64) {
    accumulator = Vector(_mm512_fmadd_ps(__m512(a), __m512(b), __m512(accumulator)));
    return;
  }
#endif
#if defined(__FMA__)
  if constexpr (sizeof(Vector) == 32) {
    accumulator = Vector(_mm256_fmadd_ps(__m256(a), __m256(b), __m256(accumulator)));
    return;
  }
#endif
  accumulator = a * b + accumulator;
}

// Loads the first `count` floats of a vector (0 <= count <= its width) and zeroes the rest, reading
// nothing past source + count.
template <class Vector>
[[gnu::always_inline]] inline void load_first(Vector& v, const float* source, int count) {
#if defined(__AVX512F__)
  if constexpr (sizeof(Vector) == 64) {
    v = Vector(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1), source));
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (sizeof(Vector) == 32) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    v = Vector(_mm256_maskload_ps(source, mask));
    return;
  }
#endif
  v = Vector{};
  std::memcpy(&v, source, sizeof(float) * static_cast<std::size_t>(count));
}

// The accumulators of one tile: tile_rows x vectors_per_row vectors.
template <class Shape>
struct TileSums {
  using Vector = typename VectorOf<Shape::vector_floats>::type;
  Vector rows[Shape::tile_rows][Shape::vectors_per_row];
};

// Zeroes a tile's accumulators; into += entry. Functions, not lambdas: a captureless lambda is implicitly
// constexpr, and nvcc (with --expt-relaxed-constexpr) then compiles it for the device too, where its
// 64-byte vector constants crash its code generator.
template <class Shape>
[[gnu::always_inline]] inline void zero_tile(TileSums<Shape>& tile) {
  using Vector = typename TileSums<Shape>::Vector;
#pragma GCC unroll 16
  for (int i = 0; i < Shape::tile_rows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < Shape::vectors_per_row; ++v) tile.rows[i][v] = Vector{};
}
template <class Shape>
[[gnu::always_inline]] inline void add_tile(TileSums<Shape>& into, const TileSums<Shape>& entry) {
#pragma GCC unroll 16
  for (int i = 0; i < Shape::tile_rows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < Shape::vectors_per_row; ++v) into.rows[i][v] = entry.rows[i][v] + into.rows[i][v];
}

// sums = A panel x B panel over `depth` steps: one broadcast of a_element(i) per row and one fused
// multiply-add per accumulator. Every element of C is therefore a chain of fused multiply-adds in the
// order of the depth, whichever kernel variant computes it. With `pieces`, one chain per piece, and the
// chains added up in the binary-counter tree (DepthPieces): a piece's chain is summed in registers, then
// pushed on a short stack of tiles in L1, where equal-sized subtrees merge.
template <class Shape, bool Tree, class LoadBRow, class ElementA, class Advance>
[[gnu::always_inline]] inline void accumulate(TileSums<Shape>& sums, index depth, const DepthPieces* pieces,
                                              LoadBRow&& load_b_row, ElementA&& a_element, Advance&& advance) {
  using Vector = typename TileSums<Shape>::Vector;
  auto steps = [&](TileSums<Shape>& tile, index begin, index end) {
    for (index p = begin; p < end; ++p) {
      Vector b_row[Shape::vectors_per_row];
      load_b_row(b_row, p);
#pragma GCC unroll 16
      for (int i = 0; i < Shape::tile_rows; ++i) {
        Vector a_broadcast;
        broadcast(a_broadcast, a_element(i, p));
#pragma GCC unroll 4
        for (int v = 0; v < Shape::vectors_per_row; ++v) multiply_add(tile.rows[i][v], a_broadcast, b_row[v]);
      }
      advance();
    }
  };
  zero_tile(sums);
  if constexpr (!Tree) {
    steps(sums, 0, depth);
  } else {
    if (pieces->count == 0) return;
    // The binary counter's stack (core/canonical_sum.hpp), walked two pieces at a time: the pair's second
    // piece runs in registers of its own and is added to the first there, so only subtrees of two pieces
    // or more are stored, on a stack of tiles in L1; a finished subtree is added, in registers, to the
    // entries of its size on top of the stack (a + b has the bits of b + a, so which operand comes first
    // does not matter), and stored only if more pieces follow. The tree kernel's tile has half the rows of
    // the product kernel's (TreeShape), so that two tiles of accumulators fit in the registers.
    constexpr int levels = 6;  // a binary counter of at most DepthPieces::max_pieces leaves
    TileSums<Shape> stack[levels];
    index counts[levels];
    int top = 0;
    TileSums<Shape> partner;
    for (int piece = 0; piece < pieces->count; piece += 2) {
      if (piece > 0) zero_tile(sums);
      const index begin = piece == 0 ? 0 : pieces->ends[piece - 1];
      steps(sums, begin, pieces->ends[piece]);
      index count = 1;
      if (piece + 1 < pieces->count) {
        zero_tile(partner);
        steps(partner, pieces->ends[piece], pieces->ends[piece + 1]);
        add_tile(sums, partner);
        count = 2;
      }
      while (top > 0 && counts[top - 1] == count) {
        add_tile(sums, stack[--top]);
        count *= 2;
      }
      if (piece + 2 < pieces->count) {
        stack[top] = sums;
        counts[top++] = count;
      }
    }
    // The last subtree is in sums: fold the stack into it from the top.
    while (top > 0) add_tile(sums, stack[--top]);
  }
}

// C tile = alpha * sums + beta * C tile, for a full tile in memory; beta == 0 never reads C.
template <class Shape>
[[gnu::always_inline]] inline void finish_tile(const TileSums<Shape>& sums, float* c, index c_row_stride, float alpha,
                                               float beta) {
  using Vector = typename TileSums<Shape>::Vector;
  constexpr int width = Shape::vector_floats;
  Vector alpha_vector;
  broadcast(alpha_vector, alpha);
  if (beta == 0) {
#pragma GCC unroll 16
    for (int i = 0; i < Shape::tile_rows; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < Shape::vectors_per_row; ++v)
        store(c + i * c_row_stride + v * width, Vector(alpha_vector * sums.rows[i][v]));
  } else {
    Vector beta_vector;
    broadcast(beta_vector, beta);
#pragma GCC unroll 16
    for (int i = 0; i < Shape::tile_rows; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < Shape::vectors_per_row; ++v) {
        Vector result;
        load(result, c + i * c_row_stride + v * width);
        result = beta_vector * result;
        multiply_add(result, alpha_vector, sums.rows[i][v]);
        store(c + i * c_row_stride + v * width, result);
      }
  }
}

// Where a micro-kernel finds its rows of op(A): element (i, p) at data[i * row_stride + p * column_stride].
// That covers a packed panel (row_stride 1, column_stride tile_rows, rows past the matrix zero) and
// op(A) read in place, transposed or not. Only valid_rows rows exist (at most tile_rows).
struct PanelA {
  const float* data;
  index row_stride;
  index column_stride;
  index valid_rows;
};
// Row p of a B panel starts at data + p * row_stride (packed: tile_columns, zero-padded; in place: the
// matrix's row stride, and only valid_columns may be read).
struct PanelB {
  const float* data;
  index row_stride;
  index valid_columns;
};

// Operand panels to fetch into cache while a tile is computed: the next B panel to the right and the
// next A panel below, when those are read in place from memory that has not been touched yet (the
// hardware prefetchers miss these short strided streams). nullptr: nothing to fetch.
struct Prefetch {
  const float* next_b = nullptr;
  const float* next_a = nullptr;
};

// A full tile: C tile = alpha * (A panel x B panel) + beta * C tile. ContiguousRows selects the kernel
// for A panels with column_stride 1 (op(A) in place, not transposed); the other reads A panels with
// row_stride 1 (packed, or transposed in place).
template <class Shape, bool ContiguousRows, bool Tree>
[[gnu::always_inline]] inline void multiply_tile(index depth, const DepthPieces* pieces, const PanelA& a,
                                                 const PanelB& b, float* c, index c_row_stride, float alpha, float beta,
                                                 const Prefetch& ahead) {
  using Vector = typename TileSums<Shape>::Vector;
  constexpr int width = Shape::vector_floats;
  constexpr int line_floats = 16;  // a 64-byte cache line
  // The C tile is read (unless beta is 0) and written only after the loop: start fetching it now.
#pragma GCC unroll 16
  for (int i = 0; i < Shape::tile_rows; ++i) {
    __builtin_prefetch(c + i * c_row_stride, 1);
    __builtin_prefetch(c + i * c_row_stride + Shape::tile_columns - 1, 1);
  }
  TileSums<Shape> sums;
  const float* b_row = b.data;
  const float* next_b_row = ahead.next_b;
  // Loads row p of the B panel, and issues this step's prefetches.
  auto load_b_row = [&](Vector* row, index p) {
#pragma GCC unroll 4
    for (int v = 0; v < Shape::vectors_per_row; ++v) load(row[v], b_row + v * width);
    if (next_b_row) {
#pragma GCC unroll 4
      for (int j = 0; j < Shape::tile_columns; j += line_floats) __builtin_prefetch(next_b_row + j);
      next_b_row += b.row_stride;
    }
    if constexpr (ContiguousRows) {
      // One cache line of each of the next panel's rows every line_floats / 2 steps: each line twice.
      if (ahead.next_a && p % (line_floats / 2) == 0) {
#pragma GCC unroll 16
        for (int i = 0; i < Shape::tile_rows; ++i) __builtin_prefetch(ahead.next_a + i * a.row_stride + p);
      }
    }
  };
  if constexpr (ContiguousRows) {
    const float* row[Shape::tile_rows];
#pragma GCC unroll 16
    for (int i = 0; i < Shape::tile_rows; ++i) row[i] = a.data + i * a.row_stride;
    accumulate<Shape, Tree>(
        sums, depth, pieces, load_b_row, [&](int i, index p) { return row[i][p]; }, [&] { b_row += b.row_stride; });
  } else {
    const float* column = a.data;
    accumulate<Shape, Tree>(
        sums, depth, pieces, load_b_row, [&](int i, index) { return column[i]; },
        [&] {
          column += a.column_stride;
          b_row += b.row_stride;
        });
  }
  finish_tile<Shape>(sums, c, c_row_stride, alpha, beta);
}

// A partial tile at the bottom or right edge of C. Rows of A past valid_rows repeat the last valid
// row and B's columns past valid_columns load as zero, so nothing outside the operands is read; the tile
// is finished in local memory and its valid part copied out, so edge elements go through exactly the
// operations of interior ones.
template <class Shape, bool Tree>
void multiply_edge_tile(index depth, const DepthPieces* pieces, const PanelA& a, const PanelB& b, float* c,
                        index c_row_stride, index valid_columns, float alpha, float beta) {
  using Vector = typename TileSums<Shape>::Vector;
  constexpr int width = Shape::vector_floats;
  constexpr int columns = Shape::tile_columns;
  TileSums<Shape> sums;
  index offset[Shape::tile_rows];
  for (int i = 0; i < Shape::tile_rows; ++i) offset[i] = std::min<index>(i, a.valid_rows - 1) * a.row_stride;
  const float* column = a.data;
  const float* b_row = b.data;
  auto a_element = [&](int i, index) { return column[offset[i]]; };
  auto advance = [&] {
    column += a.column_stride;
    b_row += b.row_stride;
  };
  if (b.valid_columns >= columns) {
    auto load_b_row = [&](Vector* row, index) {
#pragma GCC unroll 4
      for (int v = 0; v < Shape::vectors_per_row; ++v) load(row[v], b_row + v * width);
    };
    accumulate<Shape, Tree>(sums, depth, pieces, load_b_row, a_element, advance);
  } else {
    int count[Shape::vectors_per_row];
    for (int v = 0; v < Shape::vectors_per_row; ++v)
      count[v] = static_cast<int>(std::clamp<index>(b.valid_columns - v * width, 0, width));
    auto load_b_row = [&](Vector* row, index) {
#pragma GCC unroll 4
      for (int v = 0; v < Shape::vectors_per_row; ++v) load_first(row[v], b_row + v * width, count[v]);
    };
    accumulate<Shape, Tree>(sums, depth, pieces, load_b_row, a_element, advance);
  }

  alignas(64) float tile[Shape::tile_rows * columns];
  const index tile_rows = std::min<index>(a.valid_rows, Shape::tile_rows);
  if (beta != 0) {
    std::fill(tile, tile + Shape::tile_rows * columns, 0.0f);
    for (index i = 0; i < tile_rows; ++i)
      std::copy(c + i * c_row_stride, c + i * c_row_stride + valid_columns, tile + i * columns);
  }
  finish_tile<Shape>(sums, tile, columns, alpha, beta);
  for (index i = 0; i < tile_rows; ++i)
    std::copy(tile + i * columns, tile + i * columns + valid_columns, c + i * c_row_stride);
}

#if defined(__AVX__)
// Transposes 8 x 8 floats held in eight vectors: afterwards rows[r] holds what was column r.
inline void transpose_8x8(__m256 (&rows)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(rows[0], rows[1]), t1 = _mm256_unpackhi_ps(rows[0], rows[1]);
  const __m256 t2 = _mm256_unpacklo_ps(rows[2], rows[3]), t3 = _mm256_unpackhi_ps(rows[2], rows[3]);
  const __m256 t4 = _mm256_unpacklo_ps(rows[4], rows[5]), t5 = _mm256_unpackhi_ps(rows[4], rows[5]);
  const __m256 t6 = _mm256_unpacklo_ps(rows[6], rows[7]), t7 = _mm256_unpackhi_ps(rows[6], rows[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  rows[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  rows[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  rows[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  rows[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  rows[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  rows[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  rows[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  rows[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Copies the transpose of Rows rows x 8 columns of a matrix (rows source_stride apart, Rows <= 8) into
// 8 rows of Rows floats, destination_stride apart.
template <int Rows>
inline void transpose_rows(const float* source, index source_stride, float* destination, index destination_stride) {
  static_assert(Rows >= 1 && Rows <= 8, "transpose_rows moves 1 to 8 rows at a time");
  __m256 rows[8];
  for (int r = 0; r < 8; ++r) rows[r] = _mm256_loadu_ps(source + std::min(r, Rows - 1) * source_stride);
  transpose_8x8(rows);
  for (int r = 0; r < 8; ++r) {
    if constexpr (Rows == 8) {
      _mm256_storeu_ps(destination + r * destination_stride, rows[r]);
    } else {
      alignas(32) float column[8];
      _mm256_store_ps(column, rows[r]);
      std::memcpy(destination + r * destination_stride, column, sizeof(float) * Rows);
    }
  }
}
#endif

// Packs rows [0, rows) x depth [0, depth) of op(A) into panels of tile_rows, zero-padding the last.
template <class Shape>
void pack_a(const StridedMatrix& a, index rows, index depth, float* packed) {
  constexpr int tile = Shape::tile_rows;
  for (index row = 0; row < rows; row += tile) {
    const index valid = std::min<index>(tile, rows - row);
    if (a.row_stride == 1 && valid == tile) {
      // Transposed A: the tile's rows are adjacent elements of each stored row.
      for (index p = 0; p < depth; ++p) std::memcpy(packed + p * tile, a.at(row, p), sizeof(float) * tile);
    } else if (a.row_stride == 1) {
      for (index p = 0; p < depth; ++p) {
        std::fill(packed + p * tile, packed + (p + 1) * tile, 0.0f);
        std::copy(a.at(row, p), a.at(row, p) + valid, packed + p * tile);
      }
    } else {
      // Contiguous rows: each step of the depth takes one element from each of the tile's rows.
      index done = 0;
#if defined(__AVX__)
      if (a.column_stride == 1 && valid == tile) {
        for (; done + 8 <= depth; done += 8) {
          for (int i = 0; i + 8 <= tile; i += 8)
            transpose_rows<8>(a.at(row + i, done), a.row_stride, packed + done * tile + i, tile);
          if constexpr (tile % 8 != 0)
            transpose_rows<tile % 8>(a.at(row + tile / 8 * 8, done), a.row_stride, packed + done * tile + tile / 8 * 8,
                                     tile);
        }
      }
#endif
      if (valid < tile) std::fill(packed, packed + depth * tile, 0.0f);
      for (index i = 0; i < valid; ++i) {
        const float* source = a.at(row + i, 0);
        for (index p = done; p < depth; ++p) packed[p * tile + i] = source[p * a.column_stride];
      }
    }
    packed += depth * tile;
  }
}

// Packs depth [0, depth) x columns [0, columns) of op(B) into panels of tile_columns, zero-padding the last.
template <class Shape>
void pack_b(const StridedMatrix& b, index depth, index columns, float* packed) {
  constexpr int tile = Shape::tile_columns;
  for (index column = 0; column < columns; column += tile) {
    const index valid = std::min<index>(tile, columns - column);
    if (b.column_stride == 1 && valid == tile) {
      for (index p = 0; p < depth; ++p) std::memcpy(packed + p * tile, b.at(p, column), sizeof(float) * tile);
    } else if (b.column_stride == 1) {
      for (index p = 0; p < depth; ++p) {
        const float* source = b.at(p, column);
        std::copy(source, source + valid, packed + p * tile);
        std::fill(packed + p * tile + valid, packed + (p + 1) * tile, 0.0f);
      }
    } else {
      // Transposed B: the panel's columns are stored rows, so this is a transpose.
      index j = 0;
#if defined(__AVX__)
      if constexpr (tile % 8 == 0) {
        for (; j + 8 <= valid; j += 8) {
          index p = 0;
          for (; p + 8 <= depth; p += 8)
            transpose_rows<8>(b.at(p, column + j), b.column_stride, packed + p * tile + j, tile);
          for (; p < depth; ++p)
            for (index jj = j; jj < j + 8; ++jj) packed[p * tile + jj] = *b.at(p, column + jj);
        }
      }
#endif
      for (; j < tile; ++j) {
        if (j < valid) {
          const float* source = b.at(0, column + j);
          for (index p = 0; p < depth; ++p) packed[p * tile + j] = source[p * b.row_stride];
        } else {
          for (index p = 0; p < depth; ++p) packed[p * tile + j] = 0;
        }
      }
    }
    packed += depth * tile;
  }
}

// Packing buffers, one pair per thread, grown on demand and kept: after the first product of a given
// size no call allocates.
struct Workspace {
  Buffer<float, cpu> a;
  Buffer<float, cpu> b;

  static float* reserve(Buffer<float, cpu>& buffer, index floats) {
    if (buffer.capacity() < floats) buffer = Buffer<float, cpu>(floats);
    return buffer.data();
  }
};
inline Workspace& workspace() {
  thread_local Workspace buffers;
  return buffers;
}

// C = beta * C, where the product term vanishes (k == 0 or alpha == 0).
inline void scale(index m, index n, float beta, float* c, index c_row_stride) {
  for (index i = 0; i < m; ++i) {
    float* row = c + i * c_row_stride;
    if (beta == 0) std::fill(row, row + n, 0.0f);
    else if (beta != 1)
      for (index j = 0; j < n; ++j) row[j] *= beta;
  }
}

// The depth slices: as even as possible, at most block_depth deep, and a function of k alone, because
// the slices decide the rounding and the result must not depend on how C is split between threads.
template <class Shape>
index depth_slice(index k) {
  if (k <= 0) return 1;
  const index slices = (k + Shape::block_depth - 1) / Shape::block_depth;
  return (k + slices - 1) / slices;
}

// Whether rows `stride` floats apart fall into so few cache sets (their distance is a multiple of 2 KB)
// that a panel read in place evicts itself from L1 and L2 before the next tile reads it again.
inline bool conflicting_stride(index stride) { return (stride * index{sizeof(float)}) % 2048 == 0; }

// Whether the micro-kernel reads an operand in place or from a packed copy. Only an operand with
// contiguous rows (B, A) or contiguous columns (A) can be read in place. The tests force each choice so
// that every path is covered on every shape; the benchmarks force them to tune `automatic`.
enum class Packing { automatic, pack, in_place };
struct Plan {
  Packing a = Packing::automatic;
  Packing b = Packing::automatic;
};

// The operands of one block of C (rows x columns, one depth slice): each is read in place or from
// packed panels.
struct BlockOperands {
  StridedMatrix a;
  const float* packed_a;  // nullptr: read op(A) in place
  StridedMatrix b;
  float* packed_b;  // nullptr: read op(B) in place
  // Pack each B panel just before its first use: the first row block of C packs B panel by panel, so
  // each panel is used while it is still in L1 instead of after the whole block has gone out to L3.
  bool pack_b_panels;
  const DepthPieces* pieces;  // nullptr: one chain over the depth
};

template <class Shape, bool ContiguousRows, bool Tree>
void multiply_block(index rows, index columns, index depth, const BlockOperands& operands, float alpha, float beta,
                    float* c, index c_row_stride) {
  constexpr int tile_rows = Shape::tile_rows;
  constexpr int tile_columns = Shape::tile_columns;
  // The first row tile of each column panel brings that B panel into cache; the row tiles of the first
  // column panel bring the A block in.
  auto prefetch_for = [&](index row, index column) {
    Prefetch ahead;
    if (!operands.packed_b && row == 0 && column + 2 * tile_columns <= columns)
      ahead.next_b = operands.b.at(0, column + tile_columns);
    if (ContiguousRows && !operands.packed_a && column == 0 && row + 2 * tile_rows <= rows)
      ahead.next_a = operands.a.at(row + tile_rows, 0);
    return ahead;
  };
  for (index column = 0; column < columns; column += tile_columns) {
    const index valid_columns = std::min<index>(tile_columns, columns - column);
    if (operands.pack_b_panels)
      pack_b<Shape>(StridedMatrix{operands.b.at(0, column), operands.b.row_stride, operands.b.column_stride}, depth,
                    valid_columns, operands.packed_b + column * depth);
    const PanelB b_panel = operands.packed_b ? PanelB{operands.packed_b + column * depth, tile_columns, tile_columns}
                                             : PanelB{operands.b.at(0, column), operands.b.row_stride, valid_columns};
    for (index row = 0; row < rows; row += tile_rows) {
      const index valid_rows = std::min<index>(tile_rows, rows - row);
      const PanelA a_panel = operands.packed_a ? PanelA{operands.packed_a + row * depth, 1, tile_rows, valid_rows}
                                               : PanelA{operands.a.at(row, 0), operands.a.row_stride,
                                                        operands.a.column_stride, valid_rows};
      float* c_tile = c + row * c_row_stride + column;
      if (valid_rows == tile_rows && valid_columns == tile_columns)
        multiply_tile<Shape, ContiguousRows, Tree>(depth, operands.pieces, a_panel, b_panel, c_tile, c_row_stride,
                                                   alpha, beta, prefetch_for(row, column));
      else
        multiply_edge_tile<Shape, Tree>(depth, operands.pieces, a_panel, b_panel, c_tile, c_row_stride, valid_columns,
                                        alpha, beta);
    }
  }
}

// One thread's share: the whole product restricted to a rectangle of C. `slice` is the depth of the
// depth slices, chosen for the whole product (see depth_slice).
template <class Shape>
void multiply_serial(index m, index n, index k, index slice, float alpha, const StridedMatrix& a,
                     const StridedMatrix& b, float beta, float* c, index c_row_stride, const Plan& plan,
                     const DepthPieces* pieces = nullptr) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0) {
    scale(m, n, beta, c, c_row_stride);
    return;
  }
  constexpr int tile_rows = Shape::tile_rows;
  constexpr int tile_columns = Shape::tile_columns;
  // A non-transposed op(A) is read in place: the kernel broadcasts single elements, so the layout costs
  // nothing and a copy would be a second pass over A. A transposed one is read in place only when at
  // most two column tiles reuse each row panel; wider products pack it, because reading a panel whose
  // rows are a short stride apart, over many column tiles, costs more than copying it once. Neither is
  // read in place, for wide products, when its rows are a conflicting stride apart.
  const bool narrow = n <= 2 * tile_columns;
  const bool a_in_place =
      plan.a == Packing::in_place
          ? a.column_stride == 1 || a.row_stride == 1
          : plan.a == Packing::automatic && ((a.column_stride == 1 && (narrow || !conflicting_stride(a.row_stride))) ||
                                             (a.row_stride == 1 && narrow));
  // op(B) is read in place when at most a few hundred rows of C reuse each of its panels: packing would
  // then cost more than it saves; but not when its rows are a conflicting stride apart.
  const bool b_in_place =
      b.column_stride == 1 &&
      (plan.b == Packing::in_place || (plan.b == Packing::automatic && m <= 512 && !conflicting_stride(b.row_stride)));

  Workspace& buffers = workspace();
  const index padded_rows = (std::min(Shape::block_rows, m) + tile_rows - 1) / tile_rows * tile_rows;
  const index padded_columns = (std::min(Shape::block_columns, n) + tile_columns - 1) / tile_columns * tile_columns;
  float* packed_a = a_in_place ? nullptr : Workspace::reserve(buffers.a, padded_rows * slice);
  float* packed_b = b_in_place ? nullptr : Workspace::reserve(buffers.b, padded_columns * slice);

  for (index column_block = 0; column_block < n; column_block += Shape::block_columns) {
    const index columns = std::min(Shape::block_columns, n - column_block);
    for (index depth_begin = 0; depth_begin < k; depth_begin += slice) {
      const index depth = std::min(slice, k - depth_begin);
      const float slice_beta = depth_begin == 0 ? beta : 1.0f;  // later slices add to the first
      const StridedMatrix b_block{b.at(depth_begin, column_block), b.row_stride, b.column_stride};
      for (index row_block = 0; row_block < m; row_block += Shape::block_rows) {
        const index rows = std::min(Shape::block_rows, m - row_block);
        const StridedMatrix a_block{a.at(row_block, depth_begin), a.row_stride, a.column_stride};
        if (packed_a) pack_a<Shape>(a_block, rows, depth, packed_a);
        const BlockOperands operands{a_block, packed_a, b_block, packed_b, packed_b && row_block == 0, pieces};
        float* c_block = c + row_block * c_row_stride + column_block;
        // The tree over pieces is an instantiation of its own, so a plain product's kernel has none of it.
        const bool contiguous = !packed_a && a.column_stride == 1;
        if (pieces && contiguous)
          multiply_block<Shape, true, true>(rows, columns, depth, operands, alpha, slice_beta, c_block, c_row_stride);
        else if (pieces)
          multiply_block<Shape, false, true>(rows, columns, depth, operands, alpha, slice_beta, c_block, c_row_stride);
        else if (contiguous)
          multiply_block<Shape, true, false>(rows, columns, depth, operands, alpha, slice_beta, c_block, c_row_stride);
        else
          multiply_block<Shape, false, false>(rows, columns, depth, operands, alpha, slice_beta, c_block, c_row_stride);
      }
    }
  }
}

// How C is split between threads: a grid of row_parts x column_parts rectangles, cut on tile
// boundaries so that the tiles (and with them the rounding) are those of a single thread.
struct Split {
  int row_parts = 1;
  int column_parts = 1;
  int threads() const { return row_parts * column_parts; }
};

// Below this many multiply-adds per thread, waking threads costs more than it saves.
inline constexpr double minimum_work_per_thread = 1 << 19;

template <class Shape>
Split choose_split(index m, index n, index k, int max_threads) {
  Split best;
  if (max_threads <= 1) return best;
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int threads = static_cast<int>(std::min<double>(max_threads, work / minimum_work_per_thread));
  if (threads <= 1) return best;
  const index row_tiles = (m + Shape::tile_rows - 1) / Shape::tile_rows;
  const index column_tiles = (n + Shape::tile_columns - 1) / Shape::tile_columns;
  // Cost per step of depth of the busiest thread: its tiles' multiply-adds, plus the operand panels it
  // reads or packs (each thread does so for its own rectangle, so splitting the rows repeats B's).
  double best_cost = 0;
  for (int row_parts = 1; row_parts <= threads && row_parts <= row_tiles; ++row_parts) {
    const int column_parts = static_cast<int>(std::min<index>(threads / row_parts, column_tiles));
    const double rows = static_cast<double>((row_tiles + row_parts - 1) / row_parts * Shape::tile_rows);
    const double columns = static_cast<double>((column_tiles + column_parts - 1) / column_parts * Shape::tile_columns);
    const double cost = rows * columns + 4 * (rows + columns);
    if (best.threads() == 1 || cost < best_cost) {
      best = Split{row_parts, column_parts};
      best_cost = cost;
    }
  }
  return best;
}

template <class Shape>
void multiply(index m, index n, index k, float alpha, const StridedMatrix& a, const StridedMatrix& b, float beta,
              float* c, index c_row_stride, int max_threads, const Plan& plan = {},
              const DepthPieces* pieces = nullptr) {
  if (m <= 0 || n <= 0) return;
  const index slice = depth_slice<Shape>(k);
#if defined(_OPENMP)
  const Split split = omp_in_parallel() ? Split{} : choose_split<Shape>(m, n, k, max_threads);
  if (split.threads() > 1) {
    const index row_tiles = (m + Shape::tile_rows - 1) / Shape::tile_rows;
    const index column_tiles = (n + Shape::tile_columns - 1) / Shape::tile_columns;
    // An exception may not leave a parallel region: the first one (a packing buffer that could not be
    // allocated) is carried out and rethrown.
    std::exception_ptr failure;
#pragma omp parallel num_threads(split.threads())
    try {
      // A team smaller than asked for still covers every rectangle; each rectangle has one owner.
      for (int part = omp_get_thread_num(); part < split.threads(); part += omp_get_num_threads()) {
        const index row_part = part / split.column_parts, column_part = part % split.column_parts;
        const index row_begin = std::min(m, row_tiles * row_part / split.row_parts * Shape::tile_rows);
        const index row_end = std::min(m, row_tiles * (row_part + 1) / split.row_parts * Shape::tile_rows);
        const index column_begin = std::min(n, column_tiles * column_part / split.column_parts * Shape::tile_columns);
        const index column_end =
            std::min(n, column_tiles * (column_part + 1) / split.column_parts * Shape::tile_columns);
        const StridedMatrix a_part{a.at(row_begin, 0), a.row_stride, a.column_stride};
        const StridedMatrix b_part{b.at(0, column_begin), b.row_stride, b.column_stride};
        multiply_serial<Shape>(row_end - row_begin, column_end - column_begin, k, slice, alpha, a_part, b_part, beta,
                               c + row_begin * c_row_stride + column_begin, c_row_stride, plan, pieces);
      }
    } catch (...) {
#pragma omp critical(pnn_gemm_failure)
      if (!failure) failure = std::current_exception();
    }
    if (failure) std::rethrow_exception(failure);
    return;
  }
#else
  (void)max_threads;
#endif
  multiply_serial<Shape>(m, n, k, slice, alpha, a, b, beta, c, c_row_stride, plan, pieces);
}

}  // namespace detail

// C (m x n, rows c_row_stride apart) = alpha * op(A) * op(B) + beta * C, with op(A) m x k and op(B)
// k x n given as strided views. Uses at most max_threads OpenMP threads (1 without OpenMP). With
// beta == 0, C is not read (it may hold NaN); with alpha == 0 or k == 0, A and B are not read.
inline void sgemm(index m, index n, index k, float alpha, const StridedMatrix& a, const StridedMatrix& b, float beta,
                  float* c, index c_row_stride, int max_threads = 1) {
  detail::multiply<NativeShape>(m, n, k, alpha, a, b, beta, c, c_row_stride, max_threads);
}

// The same product with its depth cut into `pieces` (DepthPieces): C = alpha * tree + beta * C. Only for a
// depth the kernel takes in one slice (k <= block_depth), where each piece's chain is the one a product
// over that piece alone computes; returns false, computing nothing, for a deeper product.
inline bool sgemm_pieces(index m, index n, index k, float alpha, const StridedMatrix& a, const StridedMatrix& b,
                         float beta, float* c, index c_row_stride, int max_threads, const DepthPieces& pieces) {
  if (k > TreeShape::block_depth || pieces.count > DepthPieces::max_pieces) return false;
  detail::multiply<TreeShape>(m, n, k, alpha, a, b, beta, c, c_row_stride, max_threads, {}, &pieces);
  return true;
}

}  // namespace PNN_GEMM_ISA
}  // namespace pnn::cpu_gemm

#undef PNN_GEMM_ISA
