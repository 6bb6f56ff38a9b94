// The storage writer: the only actor that writes to the node's LMDB
// environment. It group-commits: every WriteBatch that arrives while a
// commit is pending joins the next transaction, which is committed once
// (with the node's durability mode); then each requester gets its reply.
// A requester is never answered before the commit that stored its batch.
// A batch marked deferrable (consumer offsets) waits up to `defer` for an
// urgent batch to share a commit with, instead of costing a commit alone.
//
// Protocol:  request(writer, deadline, WriteBatch) -> WriteResult | error
// Errors:    storage_full (sticky: the writer refuses all later writes;
//            nothing is lost, raise storage.map_size and restart),
//            storage_error (sticky), invalid_argument (this batch only).
#pragma once

#include "storage/repl_position.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace edda::wire::v1 {
class ReplBatch;
} // namespace edda::wire::v1

namespace edda::storage {

class environment;

/// Replication (issue 13; replication/follower.hpp is the other side):
/// with `ship` set, each group commit is numbered (the seq goes on from
/// the one kept in db `meta` "repl", written in the same transaction) and,
/// once durable, given to `ship` as a ReplBatch of `epoch` with the puts
/// and deletes it applied, in order (a batch refused on its own is not in
/// it). `ship` runs on the writer's thread: it must only hand the batch on.
/// With `gated` also set, a write is answered only once its commit is
/// replicated: the shipper sends the writer `(replicated_atom, seq)` when
/// the replicas have every commit up to `seq` (replication/shipper.hpp),
/// or `(replicated_atom, seq, error)` when they cannot have them in time,
/// and those writes are answered with the error (stored on this node, not
/// acknowledged: "may or may not survive its loss"). A batch marked
/// `local` is answered once durable here (still shipped).

/// With a commit stream, one group commit holds at most this many bytes of
/// writes (a single larger write still commits alone): a replica applies a
/// commit whole, up to replication::max_batch_bytes (64 MiB).
inline constexpr size_t max_shipped_commit_bytes = size_t{32} << 20;

struct commit_stream {
  std::function<void(wire::v1::ReplBatch&&)> ship;
  uint64_t epoch = 0;
  std::string log_id; ///< kept in the position with each commit
  bool gated = false;
  /// Called after a commit, at most once a second, with the bytes the data
  /// holds (environment::live_bytes) and the map's size (the node's
  /// map-usage alert), on the writer's thread.
  std::function<void(uint64_t used, uint64_t size)> usage;
};

/// Spawns the writer. `detached` gives it its own thread (production);
/// deterministic tests pass false so that the test scheduler runs it.
/// `defer` 0 commits deferrable batches at once.
[[nodiscard]] caf::actor
spawn_writer(caf::actor_system& sys, std::shared_ptr<environment> env,
             bool detached = true,
             std::chrono::milliseconds defer = std::chrono::milliseconds{0},
             commit_stream stream = {});

} // namespace edda::storage
