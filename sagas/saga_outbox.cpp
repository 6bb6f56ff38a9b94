#include "sagas/saga_outbox.hpp"

#include "base/errc.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace edda::sagas {

namespace {

namespace pb = wire::pb;

/// Who serves one name, as the directory last said.
struct route {
  std::vector<caf::actor> who; ///< in the order they registered
  std::vector<char> batches;   ///< per participant: answers StepBatch
  size_t next = 0;             ///< whose turn it is (mod who.size())
};

struct outbox_state {
  using item = std::pair<pb::StepCommand, caf::response_promise>;
  uint32_t index = 0;
  std::map<std::string, route> routes; // only names someone serves
  std::map<caf::actor, std::vector<item>> pending; // batching participants
  bool flush_scheduled = false;
  static inline const char* name = "edda.saga_outbox";
};

using outbox_ptr = caf::stateful_actor<outbox_state>*;

caf::behavior saga_outbox(outbox_ptr self, uint32_t index) {
  self->state.index = index;
  return {
    [=](pb::StepCommand& c) -> caf::result<pb::StepReply> {
      auto& st = self->state;
      auto i = st.routes.find(c.participant());
      if (i == st.routes.end()) {
        pb::StepReply none;
        none.set_error("no participant '" + c.participant()
                       + "' is registered");
        none.set_retryable(true);
        return none;
      }
      auto& r = i->second;
      auto k = r.next++ % r.who.size();
      if (!r.batches[k]) {
        self->delegate(r.who[k], std::move(c));
        return caf::delegated<pb::StepReply>{};
      }
      auto rp = self->make_response_promise<pb::StepReply>();
      st.pending[r.who[k]].emplace_back(std::move(c), rp);
      if (!st.flush_scheduled) {
        st.flush_scheduled = true;
        self->send(self, wire::flush_atom::value);
      }
      return rp;
    },
    [=](wire::serving_atom, const std::string& name,
        std::vector<caf::actor>& serving,
        const std::vector<caf::actor>& batching) {
      auto& routes = self->state.routes;
      if (serving.empty()) {
        routes.erase(name);
        return;
      }
      auto [i, added] = routes.try_emplace(name);
      auto& r = i->second;
      if (added)
        r.next = self->state.index;
      r.batches.assign(serving.size(), 0);
      for (size_t k = 0; k < serving.size(); ++k)
        r.batches[k] = std::find(batching.begin(), batching.end(), serving[k])
                       != batching.end();
      r.who = std::move(serving);
    },
    [=](wire::flush_atom) {
      auto& st = self->state;
      st.flush_scheduled = false;
      auto pending = std::move(st.pending);
      st.pending.clear();
      // Instances time out on their own; this only bounds a lost batch.
      auto bound = std::chrono::minutes(10);
      for (auto& [target, items] : pending) {
        if (items.size() == 1) {
          auto rp = items.front().second;
          self->request(target, bound, std::move(items.front().first))
            .then([=](pb::StepReply& r) mutable { rp.deliver(std::move(r)); },
                  [=](caf::error& err) mutable { rp.deliver(err); });
          continue;
        }
        pb::StepBatch b;
        auto rps = std::make_shared<std::vector<caf::response_promise>>();
        for (auto& [c, rp] : items) {
          *b.add_commands() = std::move(c);
          rps->push_back(rp);
        }
        self->request(target, bound, std::move(b))
          .then(
            [=](pb::StepBatchReply& r) {
              for (size_t i = 0; i < rps->size(); ++i) {
                if (i < static_cast<size_t>(r.replies_size()))
                  (*rps)[i].deliver(std::move(*r.mutable_replies(static_cast<int>(i))));
                else
                  (*rps)[i].deliver(make_error(errc::invalid_argument,
                                               "the participant answered "
                                               "fewer commands than it got"));
              }
            },
            [=](caf::error& err) {
              for (auto& rp : *rps)
                rp.deliver(err);
            });
      }
    },
    [=](wire::stop_atom) { self->quit(); },
  };
}

} // namespace

caf::actor spawn_saga_outbox(caf::actor_system& sys, uint32_t index) {
  return sys.spawn(saga_outbox, index);
}

} // namespace edda::sagas
