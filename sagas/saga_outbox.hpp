// saga_outbox: gathers the commands for batching participants (those that
// registered with `batches`, as participant_host does) that arrive in one
// mailbox pass and sends each participant one StepBatch: one network
// message instead of one per command. Replies go back to each instance,
// which keeps its own per-step timeout. One outbox per shard; an instance
// uses outbox stable_hash(saga id) % outboxes.
//
// Protocol:
//   (caf::actor target, StepCommand) -> StepReply   from saga instances
//   flush_atom                 from itself: send what this pass gathered
//   stop_atom                  from saga_runtime::stop()
// It sends StepBatch -> StepBatchReply (or a single StepCommand ->
// StepReply) to the participants.
#pragma once

#include <caf/fwd.hpp>

namespace edda::sagas {

[[nodiscard]] caf::actor spawn_saga_outbox(caf::actor_system& sys);

} // namespace edda::sagas
