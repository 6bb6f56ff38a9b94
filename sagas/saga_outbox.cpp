#include "sagas/saga_outbox.hpp"

#include "base/errc.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <vector>

namespace edda::sagas {

namespace {

namespace pb = wire::pb;

/// Gathers the commands for named (remote) participants that arrive in one
/// mailbox pass and sends each host one StepBatch: one network message
/// instead of one per command. Replies go back to each instance; each
/// instance keeps its own per-step timeout.
struct outbox_state {
  using item = std::pair<pb::StepCommand, caf::response_promise>;
  std::map<caf::actor, std::vector<item>> pending;
  bool flush_scheduled = false;
  static inline const char* name = "edda.saga_outbox";
};

caf::behavior saga_outbox(caf::stateful_actor<outbox_state>* self) {
  return {
    [=](caf::actor& target, pb::StepCommand& c)
      -> caf::result<pb::StepReply> {
      auto& st = self->state;
      auto rp = self->make_response_promise<pb::StepReply>();
      st.pending[std::move(target)].emplace_back(std::move(c), rp);
      if (!st.flush_scheduled) {
        st.flush_scheduled = true;
        self->send(self, wire::flush_atom::value);
      }
      return rp;
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

caf::actor spawn_saga_outbox(caf::actor_system& sys) {
  return sys.spawn(saga_outbox);
}

} // namespace edda::sagas
