// saga_outbox: sends the commands for named participants. It keeps its own
// copy of who serves each name, pushed by the participant_directory, and
// picks one of them per command, in turn (round-robin per name; outbox i
// starts its turns at the i-th participant, so that the outboxes do not all
// begin with the same one). Commands for a participant that answers
// StepBatch (participant_host registers with `batches`) that arrive in one
// mailbox pass go to it as one StepBatch: one network message instead of
// one per command. A command for another participant is passed on as it
// is (delegated: the reply goes straight to the instance). Each instance
// keeps its own per-step timeout. One outbox per shard; an instance uses
// outbox shard_of(saga id, outboxes).
//
// Protocol:
//   StepCommand -> StepReply   from saga instances; the command's
//                  `participant` is the name. Nobody serves it: a
//                  retryable failure "no participant 'NAME' is registered"
//   (serving_atom, name, std::vector<caf::actor> serving,
//    std::vector<caf::actor> batching)
//                              from the participant_directory: who serves
//                              `name` now (see participant_directory.hpp)
//   flush_atom                 from itself: send what this pass gathered
//   stop_atom                  from saga_runtime::stop()
// It sends StepBatch -> StepBatchReply (or a single StepCommand ->
// StepReply) to batching participants.
#pragma once

#include <caf/fwd.hpp>

#include <cstdint>

namespace edda::sagas {

/// Spawns outbox `index` (the shard it serves), knowing no participant.
[[nodiscard]] caf::actor spawn_saga_outbox(caf::actor_system& sys,
                                           uint32_t index);

} // namespace edda::sagas
