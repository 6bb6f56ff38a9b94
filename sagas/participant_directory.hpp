// participant_directory: the named participants of the node, as its own
// state (no other actor reads it). Participant processes (participant_host)
// register the names they serve; a participant is forgotten when it goes
// down (only that proxy, not one made since for the same remote actor).
// Whoever needs the names gets them pushed: after every change to a name,
// each subscriber is told who serves it now, and keeps its own copy.
//
// Protocol:
//   ParticipantRegister -> ParticipantRegistered | invalid_argument
//                  from participant processes, through the frontend, which
//                  delegates: the sender is the participant's actor, which
//                  answers StepCommand (and StepBatch with `batches`)
//   stop_atom      from saga_runtime::stop()
// It sends, to each subscriber, after each change to a name:
//   (serving_atom, name, std::vector<caf::actor> serving,
//    std::vector<caf::actor> batching)
//                  every actor that serves `name`, in the order they
//                  registered (empty: nobody does), and those of them that
//                  answer StepBatch. No reply. A registration is pushed
//                  before it is answered, so whatever the participant
//                  causes after the answer (a saga start) finds it known.
// The subscribers are the saga_outboxes (they route commands by name) and
// the shard_keepers (their shards check that a name is served before an
// action is sent). Every subscriber starts from an empty view, as the
// directory does.
#pragma once

#include <caf/fwd.hpp>

#include <vector>

namespace edda::sagas {

/// Spawns an empty directory that tells `subscribers` about each change.
[[nodiscard]] caf::actor
spawn_participant_directory(caf::actor_system& sys,
                            std::vector<caf::actor> subscribers);

} // namespace edda::sagas
