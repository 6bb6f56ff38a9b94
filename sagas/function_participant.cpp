#include "sagas/function_participant.hpp"
#include "sagas/step_call.hpp"

#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

namespace edda::sagas {

namespace {

namespace pb = wire::pb;

caf::behavior function_participant(caf::event_based_actor*, step_function fn) {
  return {
    [=](const pb::StepCommand& c) { return call_step(fn, c); },
  };
}

} // namespace

caf::actor spawn_function_participant(caf::actor_system& sys,
                                      step_function fn, bool detached) {
  return detached ? sys.spawn<caf::detached>(function_participant,
                                             std::move(fn))
                  : sys.spawn(function_participant, std::move(fn));
}

} // namespace edda::sagas
