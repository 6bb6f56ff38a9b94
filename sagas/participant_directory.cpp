#include "sagas/participant_directory.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

namespace edda::sagas {

namespace {

namespace pb = wire::pb;

/// Takes ParticipantRegister from participant processes (through the
/// frontend, which delegates: the sender is the participant's actor) and
/// forgets a participant when it goes down.
caf::behavior participant_directory(caf::event_based_actor* self,
                                    std::shared_ptr<directory_table> table) {
  self->set_down_handler([=](caf::down_msg& dm) {
    if (auto n = table->remove(dm.source); n > 0)
      EDDA_INFO("saga", "a participant serving " << n
                                                 << " names went away");
  });
  return {
    [=](const pb::ParticipantRegister& r)
      -> caf::result<pb::ParticipantRegistered> {
      auto who = caf::actor_cast<caf::actor>(self->current_sender());
      if (!who)
        return make_error(errc::invalid_argument,
                          "ParticipantRegister needs a sender that answers "
                          "StepCommand");
      if (r.names_size() == 0)
        return make_error(errc::invalid_argument,
                          "ParticipantRegister names no participant");
      for (auto& n : r.names())
        if (!valid_participant_name(n))
          return make_error(errc::invalid_argument,
                            "participant name '" + n
                              + "' must be 1-120 of [A-Za-z0-9_.-]");
      for (auto& n : r.names())
        table->add(n, who, r.batches());
      self->monitor(who);
      EDDA_INFO("saga", "participant " << r.client_id() << " registered "
                                       << r.names_size() << " names");
      pb::ParticipantRegistered out;
      out.set_names(static_cast<uint32_t>(r.names_size()));
      return out;
    },
    [=](wire::stop_atom) { self->quit(); },
  };
}

} // namespace

caf::actor spawn_participant_directory(caf::actor_system& sys,
                                       std::shared_ptr<directory_table> table) {
  return sys.spawn(participant_directory, std::move(table));
}

} // namespace edda::sagas
