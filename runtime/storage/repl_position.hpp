// Where a node's storage is in its commit stream (replication, issue 13):
// db `meta` key "repl" holds a ReplPosition (epoch, seq, log id), written
// in the same LMDB transaction as the commit it numbers. One reader and one
// writer of that key for the storage writer, a replica's rules and the
// full copy's snapshot.
#pragma once

namespace edda::wire::v1 {
class ReplPosition;
class WriteBatch;
} // namespace edda::wire::v1

namespace edda::storage {

class read_txn;

/// db `meta` key of the position (a ReplPosition).
inline constexpr const char* repl_position_key = "repl";

/// The position in `r` (all fields 0 / empty if absent or unparsable).
[[nodiscard]] wire::v1::ReplPosition read_repl_position(read_txn& r);

/// Appends to `b` the put of `p` as the position.
void put_repl_position(wire::v1::WriteBatch& b, const wire::v1::ReplPosition& p);

} // namespace edda::storage
