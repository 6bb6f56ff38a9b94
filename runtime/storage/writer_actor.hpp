// The storage writer: the only actor that writes to the node's LMDB
// environment. It group-commits: every WriteBatch that arrives while a
// commit is pending joins the next transaction, which is committed once
// (with the node's durability mode); then each requester gets its reply.
// A requester is never answered before the commit that stored its batch.
//
// Protocol:  request(writer, deadline, WriteBatch) -> WriteResult | error
// Errors:    storage_full (sticky: the writer refuses all later writes;
//            nothing is lost, raise storage.map_size and restart),
//            storage_error (sticky), invalid_argument (this batch only).
#pragma once

#include <caf/fwd.hpp>

#include <memory>

namespace edda::storage {

class environment;

/// Spawns the writer. `detached` gives it its own thread (production);
/// deterministic tests pass false so that the test scheduler runs it.
[[nodiscard]] caf::actor spawn_writer(caf::actor_system& sys,
                                      std::shared_ptr<environment> env,
                                      bool detached = true);

} // namespace edda::storage
