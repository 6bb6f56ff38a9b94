// saga_instance: one running saga. It writes every transition of its
// SagaRecord through the storage writer (or, for a reliable-message step,
// through the topic manager's AppendInternal) before the side effect that
// the transition authorises, one write at a time, and quits once the write
// that ends the saga is stored.
//
// Protocol:
//   SagaStart   -> SagaStarted    from its shard (delegated or asked):
//                  once the first write is stored, or with `wait` once
//                  the saga has ended
//   SagaCommand -> SagaRecord     from its shard: operator commands;
//                  invalid_argument, not_found
//   (retry_atom, generation, step)  from itself: a backoff has passed
//                  (generation 0: write again after a failed write)
//   deadline_atom                   from itself: the saga's deadline
//   (serving_atom, name, bool served)  from its shard: whether someone
//                  serves the named participant `name` now. An action
//                  whose named participant is not served fails unsent
//                  (`unsent` in the step; it is retried, and an action
//                  never sent is not compensated).
// It sends:
//   StepCommand -> StepReply      to a step's actor, or, for a named
//                  participant, to its outbox (which picks who serves it)
//   WriteBatch -> WriteResult     to the writer
//   AppendInternal -> ProduceResult  to the topic manager
// An exit message (the runtime stops) answers whoever waits with
// `unavailable`.
#pragma once

#include "broker/context.hpp"
#include "sagas/runtime_shared.hpp"

#include <caf/fwd.hpp>

#include <vector>

namespace edda::sagas {

/// Spawns the instance of `rec`, linked to `shard` (a crashed shard takes
/// its instances with it). `fresh`: a new saga that has not been stored
/// yet; otherwise one loaded from storage, whose part in flight is sent
/// again (same idempotency key and attempt number). `served`: per step,
/// whether its action's named participant is served now (empty if no
/// action of the type is named).
[[nodiscard]] caf::actor spawn_saga_instance(caf::local_actor* shard,
                                             broker::context_ptr ctx,
                                             shared_env rt,
                                             wire::v1::SagaRecord rec,
                                             bool fresh,
                                             std::vector<char> served);

} // namespace edda::sagas
