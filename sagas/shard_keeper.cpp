#include "sagas/shard_keeper.hpp"
#include "sagas/saga_shard.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <set>
#include <string>
#include <vector>

namespace edda::sagas {

namespace {

namespace pb = wire::pb;
using std::chrono::milliseconds;

/// The stable handle of shard `index` (what the frontend and shard_for()
/// hand out): passes requests to the current shard and, when it crashes,
/// starts a new one after a short pause (its instances died with it; the
/// new one resumes every open saga of the shard from LMDB).
struct keeper_state {
  caf::actor current;
  bool stopping = false;
  /// The names of named actions (of any type) that someone serves, as the
  /// directory last said; a new shard starts from this.
  std::set<std::string> served;
  std::set<std::string> wanted; // the names of named actions of any type
  static inline const char* name = "edda.saga_shard_keeper";
};

using keeper_ptr = caf::stateful_actor<keeper_state>*;

caf::error restarting(uint32_t index) {
  return make_error(errc::unavailable, "saga shard " + std::to_string(index)
                                         + " is restarting; try again");
}

/// Passes a request on to the keeper's current shard, whose reply goes
/// straight to the requester.
template <class Reply, class Request>
caf::result<Reply> pass_on(keeper_ptr self, Request& x, uint32_t index) {
  if (!self->state.current)
    return restarting(index);
  self->delegate(self->state.current, std::move(x));
  return caf::delegated<Reply>{};
}

caf::behavior shard_keeper(keeper_ptr self,
                           broker::context_ptr ctx, shared_env rt,
                           uint32_t index, uint32_t count) {
  for (auto& [type, e] : rt->reg)
    for (auto& s : e.def->steps())
      if (!s.action.name().empty())
        self->state.wanted.insert(s.action.name());
  auto start = [=] {
    auto& st = self->state;
    st.current = spawn_saga_shard(self, ctx, rt, index, count, st.served);
    self->monitor(st.current);
  };
  start();
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.current || dm.source != st.current.address())
      return;
    st.current = nullptr;
    if (st.stopping || dm.reason == caf::exit_reason::normal) {
      self->quit();
      return;
    }
    metrics::counter("sagas.shard_restarts")++;
    EDDA_WARN("saga", "shard " << index << " stopped (" << render(dm.reason)
                               << "); starting it again from LMDB");
    self->delayed_send(self, milliseconds(200), wire::tick_atom::value);
  });
  return {
    [=](wire::tick_atom) {
      if (!self->state.current && !self->state.stopping)
        start();
    },
    [=](pb::SagaStart& x) { return pass_on<pb::SagaStarted>(self, x, index); },
    [=](pb::SagaGet& x) { return pass_on<pb::SagaRecord>(self, x, index); },
    [=](pb::SagaCommand& x) { return pass_on<pb::SagaRecord>(self, x, index); },
    [=](pb::SagaList& x) { return pass_on<pb::SagaRecords>(self, x, index); },
    [=](wire::serving_atom, const std::string& name,
        const std::vector<caf::actor>& serving,
        const std::vector<caf::actor>&) {
      // From the directory. The shard only needs to know whether a name
      // is served, so only a change of that is passed on.
      auto& st = self->state;
      if (st.wanted.count(name) == 0)
        return;
      bool now = !serving.empty();
      if (now == (st.served.count(name) != 0))
        return;
      if (now)
        st.served.insert(name);
      else
        st.served.erase(name);
      if (st.current)
        self->send(st.current, wire::serving_atom::value, name, now);
    },
    [=](wire::route_atom) -> caf::result<caf::actor> {
      // The shard behind this keeper (for tests and diagnostics).
      if (!self->state.current)
        return restarting(index);
      return self->state.current;
    },
    [=](wire::stop_atom) {
      auto& st = self->state;
      st.stopping = true;
      if (!st.current) {
        self->quit();
        return;
      }
      self->send(st.current, wire::stop_atom::value); // quits once it has
    },
  };
}

} // namespace

caf::actor spawn_shard_keeper(caf::actor_system& sys, broker::context_ptr ctx,
                              shared_env rt, uint32_t index, uint32_t count) {
  return sys.spawn(shard_keeper, std::move(ctx), std::move(rt), index, count);
}

} // namespace edda::sagas
