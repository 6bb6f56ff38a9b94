// The follower's side of the commit stream (issue 13, CLUSTER.md phase 2):
// what a replica does with one shipped group commit of its leader.
//
// A replica keeps where it is, (epoch, seq) of the last batch it applied,
// in db `meta` key "repl", written in the same LMDB transaction as the
// batch's own puts and deletes, so that a crash never separates the two.
// A batch
//   * of another log than the replica's (once it has one) is refused
//     (`fenced`): a leader whose data dir was wiped starts another log,
//     and the copy of its old one is never mixed with it;
//   * of an older leader epoch than the replica's is refused (`fenced`):
//     a deposed leader's late write;
//   * at or below the position is a duplicate (a resend after a lost
//     acknowledgement): nothing is written, and it is acknowledged again;
//     but one of a newer epoch there is refused (`fenced`): this replica
//     holds the old leader's suffix, which is never merged (truncation to
//     the new epoch's start is not built yet);
//   * beyond the next seq is a gap (`invalid_argument`, naming the seq the
//     replica expects): the leader sends again from there;
//   * over `max_bytes`, or with an op of a bad db or key, is refused and
//     nothing of it is written.
// A batch of a newer epoch is applied if it is the next seq, and the
// replica takes that epoch.
//
// Not yet here: the leader's shipping from the storage writer, the
// acknowledgements that a client's "stored" waits for, the in-sync set in
// etcd, and truncation of a returning leader to the new epoch's boundary.
#pragma once

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace edda::storage {
class environment;
} // namespace edda::storage

namespace edda::wire::v1 {
class ReplBatch;
class WriteBatch;
} // namespace edda::wire::v1

namespace edda::replication {

struct position {
  uint64_t epoch = 0;
  uint64_t seq = 0;
  std::string log_id; ///< the log counted (empty: nothing applied yet)
};

/// The largest batch a replica takes: one group commit, whole (a commit
/// must apply atomically; it holds at most what the writer gathered while
/// the previous one was committing), bounded against a garbled peer.
inline constexpr size_t max_batch_bytes = size_t{64} << 20;

/// This replica's position ({0, 0} before its first batch).
[[nodiscard]] position read_position(const storage::environment& env);

/// Ends the log of a node's own storage (its position keeps epoch and seq,
/// loses the log id): used when the node runs without replication, whose
/// commits are not numbered; a later start with replication begins a new
/// log. Only before the node's writer runs. Errors: storage_error.
[[nodiscard]] caf::error end_log(storage::environment& env);

enum class verdict { apply, duplicate };

/// What a replica at `at` does with `b`; for `apply`, `write` gets the
/// batch's ops followed by the new position (one LMDB transaction).
/// Errors: fenced, invalid_argument (a gap), message_too_large.
[[nodiscard]] caf::expected<verdict>
plan(position at, const wire::v1::ReplBatch& b, wire::v1::WriteBatch& write,
     size_t max_bytes = max_batch_bytes);

/// plan(), then the write, for the one actor that applies a replica's
/// batches (or tools and tests; a node's other writes go through its
/// storage writer). Errors: those of plan(), invalid_argument (a bad op:
/// nothing written), storage_full, storage_error.
[[nodiscard]] caf::expected<verdict>
apply(storage::environment& env, const wire::v1::ReplBatch& b,
      size_t max_bytes = max_batch_bytes);

} // namespace edda::replication
