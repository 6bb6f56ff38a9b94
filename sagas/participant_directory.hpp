// participant_directory: the named participants of the node. Participant
// processes (participant_host) register the names they serve; a
// participant is forgotten when it goes down (only that proxy).
//
// Protocol:
//   ParticipantRegister -> ParticipantRegistered | invalid_argument
//                  from participant processes, through the frontend, which
//                  delegates: the sender is the participant's actor, which
//                  answers StepCommand (and StepBatch with `batches`)
//   stop_atom      from saga_runtime::stop()
#pragma once

#include "sagas/runtime_shared.hpp"

#include <caf/fwd.hpp>

#include <memory>

namespace edda::sagas {

/// Spawns the directory that fills `table`.
[[nodiscard]] caf::actor
spawn_participant_directory(caf::actor_system& sys,
                            std::shared_ptr<directory_table> table);

} // namespace edda::sagas
