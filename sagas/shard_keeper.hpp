// shard_keeper: the stable handle of saga shard `index` (what the frontend
// and saga_runtime::shard_for() hand out). It passes requests to its
// current saga_shard and, when that crashes, starts a new one after 200 ms
// (the instances died with it; the new shard resumes every open saga of the
// shard from LMDB). Metric: sagas.shard_restarts.
//
// It is also a subscriber of the participant_directory: it keeps which
// names of named actions are served, starts each new shard with that, and
// tells the current shard when a name becomes served or unserved.
//
// Protocol (from the frontend, tests, saga_runtime):
//   SagaStart, SagaGet, SagaCommand, SagaList  delegated to the current
//                  shard (see saga_shard.hpp); `unavailable` while it
//                  restarts
//   route_atom  -> caf::actor   the current shard (tests, diagnostics)
//   stop_atom                   from saga_runtime::stop(): stops the shard,
//                               quits once it has
//   tick_atom                   from itself: start the shard again
//   (serving_atom, name, serving, batching)  from the participant_directory
//                  (see participant_directory.hpp); no reply
// It sends (serving_atom, name, bool served) to the current shard when a
// name of a named action becomes served (true) or unserved (false).
#pragma once

#include "broker/context.hpp"
#include "sagas/runtime_shared.hpp"

#include <caf/fwd.hpp>

#include <cstdint>

namespace edda::sagas {

[[nodiscard]] caf::actor spawn_shard_keeper(caf::actor_system& sys,
                                            broker::context_ptr ctx,
                                            shared_env rt, uint32_t index,
                                            uint32_t count);

} // namespace edda::sagas
