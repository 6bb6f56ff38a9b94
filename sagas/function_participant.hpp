// function_participant: the actor that edda wraps around a step function
// (participant::of(fn)) when a saga type is added to the runtime.
//
// Protocol:
//   StepCommand -> StepReply   from the saga instances of the node
// An exception thrown by the function is a retryable failure (call_step).
#pragma once

#include "sagas/saga.hpp"

#include <caf/fwd.hpp>

namespace edda::sagas {

/// Spawns a participant that runs `fn` for each StepCommand. `detached`:
/// on a thread of its own (production), else on the actor system's
/// scheduler (deterministic tests).
[[nodiscard]] caf::actor spawn_function_participant(caf::actor_system& sys,
                                                    step_function fn,
                                                    bool detached);

} // namespace edda::sagas
