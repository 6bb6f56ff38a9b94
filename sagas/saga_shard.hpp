// saga_shard: starts the sagas that belong to it (shard_of(id, count)
// == index) and owns one saga_instance per running saga. When it starts it
// resumes its sagas that are not terminal; it restarts a crashed instance
// from its stored state; it purges its ended sagas after saga.retention.
//
// Protocol (from its shard_keeper, which delegates: replies go straight to
// the requester):
//   SagaStart   -> SagaStarted  | unknown_saga_type, invalid_argument
//                  (the new instance answers once its first write is
//                  stored, or with `wait` once the saga has ended)
//   SagaGet     -> SagaRecord   | not_found
//   SagaCommand -> SagaRecord   | not_found, invalid_argument (passed to
//                  the live instance; a failed saga is reopened here)
//   SagaList    -> SagaRecords  (any shard answers for the node)
//   stop_atom                   from the keeper: stops its instances, quits
//   (serving_atom, name, bool served)  from the keeper: a name of a named
//                  action became served or unserved; passed on to every
//                  live instance (each starts with the flags for its own
//                  steps, from the names the shard knows to be served)
//   drain_atom                  from itself: a retention pass
// It sends WriteBatch -> WriteResult to the writer (reopen, purge).
#pragma once

#include "broker/context.hpp"
#include "sagas/runtime_shared.hpp"

#include <caf/fwd.hpp>

#include <cstdint>
#include <set>
#include <string>

namespace edda::sagas {

/// Spawns shard `index` of `count` as a child of `keeper`, which monitors
/// it. The shard's instances are linked to it. `served`: the names of
/// named actions that someone serves now.
[[nodiscard]] caf::actor spawn_saga_shard(caf::local_actor* keeper,
                                          broker::context_ptr ctx,
                                          shared_env rt, uint32_t index,
                                          uint32_t count,
                                          std::set<std::string> served);

} // namespace edda::sagas
