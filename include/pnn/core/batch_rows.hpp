// pnn/core/batch_rows.hpp: which rows of a global batch a rank, or a process, holds. RowRange is a run
// of rows, batch_share the row formula of data-parallel shares and pipeline micro-batches, and BatchRows
// the rows of a batch's inputs and of its targets that one rank needs.
//
// Below data/, train/ and dist/ so that all three speak of the same rows: a strategy rank says which
// rows it needs (Rank::rows, dist/strategy_rank.hpp), a Distributed model which rows its process holds
// (the ranks it runs together), and the batcher (data/batcher.hpp) gathers only those rows' samples.
#pragma once

#include "pnn/core/config.hpp"

namespace pnn {

// Rows [begin, begin + count) of a batch.
struct RowRange {
  index begin = 0, count = 0;

  constexpr index end() const { return begin + count; }
  friend constexpr bool operator==(const RowRange&, const RowRange&) = default;
};

// Part `part` of `parts` of a batch of `batch` rows: rows [batch part / parts, batch (part + 1) / parts).
// Parts differ by at most one row, and a part may be empty.
constexpr RowRange batch_share(index batch, index part, index parts) {
  const index begin = batch * part / parts;
  return {begin, batch * (part + 1) / parts - begin};
}

// The rows of a global batch's inputs and targets that a rank (or a process) needs.
struct BatchRows {
  RowRange inputs, targets;

  // Every row of a batch of `batch` rows (a serial model's, or a process that runs every rank).
  static constexpr BatchRows whole(index batch) { return {{0, batch}, {0, batch}}; }
  friend constexpr bool operator==(const BatchRows&, const BatchRows&) = default;
};

}  // namespace pnn
