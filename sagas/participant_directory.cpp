#include "sagas/participant_directory.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "sagas/saga.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <map>
#include <string>

namespace edda::sagas {

namespace {

namespace pb = wire::pb;

struct directory_state {
  struct entry {
    caf::actor who;
    bool batches = false; ///< answers StepBatch too
  };
  /// Name -> who serves it, in the order they registered.
  std::map<std::string, std::vector<entry>> by_name;
  std::vector<caf::actor> subscribers;
  static inline const char* name = "edda.saga_directory";
};

using directory_ptr = caf::stateful_actor<directory_state>*;

/// Tells every subscriber who serves `name` now.
void publish(directory_ptr self, const std::string& name) {
  auto& st = self->state;
  std::vector<caf::actor> serving, batching;
  if (auto i = st.by_name.find(name); i != st.by_name.end())
    for (auto& e : i->second) {
      serving.push_back(e.who);
      if (e.batches)
        batching.push_back(e.who);
    }
  for (auto& s : st.subscribers)
    self->send(s, wire::serving_atom::value, name, serving, batching);
}

/// Adds `a` as serving `name`; false if nothing changed.
bool add(directory_ptr self, const std::string& name, const caf::actor& a,
         bool batches) {
  auto& v = self->state.by_name[name];
  for (auto& e : v)
    if (e.who == a) {
      if (e.batches == batches)
        return false;
      e.batches = batches;
      return true;
    }
  v.push_back(directory_state::entry{a, batches});
  return true;
}

/// Forgets `a` everywhere and tells the subscribers; returns how many
/// names it served.
size_t remove(directory_ptr self, const caf::actor_addr& a) {
  auto& by_name = self->state.by_name;
  size_t n = 0;
  for (auto i = by_name.begin(); i != by_name.end();) {
    auto& v = i->second;
    auto before = v.size();
    v.erase(std::remove_if(v.begin(), v.end(),
                           [&](const directory_state::entry& x) {
                             // The same proxy, not one made since for the
                             // same remote actor (same address).
                             return caf::actor_cast<caf::actor_control_block*>(
                                      x.who)
                                    == a.get();
                           }),
            v.end());
    if (v.size() == before) {
      ++i;
      continue;
    }
    n += before - v.size();
    auto name = i->first;
    if (v.empty())
      i = by_name.erase(i);
    else
      ++i;
    publish(self, name);
  }
  return n;
}

/// Takes ParticipantRegister from participant processes (through the
/// frontend, which delegates: the sender is the participant's actor) and
/// forgets a participant when it goes down.
caf::behavior participant_directory(directory_ptr self,
                                    std::vector<caf::actor> subscribers) {
  self->state.subscribers = std::move(subscribers);
  self->set_down_handler([=](caf::down_msg& dm) {
    if (auto n = remove(self, dm.source); n > 0)
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
        if (add(self, n, who, r.batches()))
          publish(self, n);
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
                                       std::vector<caf::actor> subscribers) {
  return sys.spawn(participant_directory, std::move(subscribers));
}

} // namespace edda::sagas
