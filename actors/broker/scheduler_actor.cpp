// scheduler: moves delayed messages and retry copies (db `delay`, keyed by
// due time) into their target topics when due. The move is one transaction:
// the append to the partition log and the delete of the delay record, so a
// crash can neither lose nor duplicate it. Due-time order means one stuck
// entry never holds back the others.
#include "base/errc.hpp"
#include "base/log.hpp"
#include "broker/actors.hpp"
#include "storage/environment.hpp"
#include "storage/keys.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <limits>
#include <map>
#include <set>

namespace edda::broker {

namespace {

namespace pb = wire::pb;
using storage::db;
namespace keys = storage::keys;

constexpr size_t max_fire = 1024;

struct scheduler_state {
  context_ptr ctx;
  caf::actor topics;
  std::set<std::string> moving; // delay keys with an append in flight
  int64_t next_wakeup = std::numeric_limits<int64_t>::max();
  static inline const char* name = "edda.scheduler";
};

using self_ptr = caf::stateful_actor<scheduler_state>*;

void arm(self_ptr self, int64_t due) {
  auto& st = self->state;
  if (due >= st.next_wakeup)
    return;
  st.next_wakeup = due;
  auto delay = std::max<int64_t>(0, due - st.ctx->clock());
  self->delayed_send(self, std::chrono::milliseconds(delay),
                     wire::tick_atom::value);
}

void fire(self_ptr self) {
  auto& st = self->state;
  if (!st.topics)
    return;
  auto now = st.ctx->clock();
  struct target {
    pb::AppendInternal req;
    std::vector<std::string> keys;
  };
  std::map<std::pair<std::string, int32_t>, target> work;
  size_t taken = 0;
  int64_t next_due = std::numeric_limits<int64_t>::max();
  {
    auto txn = st.ctx->env->read();
    txn.scan(db::delay, "", "", [&](std::string_view k, std::string_view v) {
      auto due = static_cast<int64_t>(keys::delay_key_due(k));
      std::string key{k};
      if (st.moving.count(key) != 0)
        return true;
      if (due > now || taken >= max_fire) {
        next_due = due;
        return false;
      }
      pb::Delayed d;
      if (!d.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
        EDDA_ERROR("scheduler", "unparsable delay record dropped");
        return true;
      }
      auto& t = work[{d.target_topic(), d.target_partition()}];
      t.req.set_topic(d.target_topic());
      t.req.set_partition(d.target_partition());
      *t.req.add_messages() = d.message();
      auto* op = t.req.mutable_extra()->add_ops();
      op->set_db(static_cast<uint32_t>(db::delay));
      op->set_key(key);
      op->set_kind(pb::WriteOp::DEL);
      t.keys.push_back(key);
      ++taken;
      return true;
    });
  }
  for (auto& [dst, t] : work) {
    for (auto& k : t.keys)
      st.moving.insert(k);
    auto moved = t.keys;
    auto topic = dst.first;
    self->request(st.topics, std::chrono::seconds(60), std::move(t.req))
      .then(
        [=](const pb::ProduceResult&) {
          for (auto& k : moved)
            self->state.moving.erase(k);
          fire(self);
        },
        [=](caf::error& err) {
          if (code_of(err) == errc::unknown_topic) {
            // The target went away (deleted topic): drop the records.
            EDDA_WARN("scheduler", "dropping " << moved.size()
                                               << " delayed messages for "
                                                  "missing topic "
                                               << topic);
            pb::WriteBatch b;
            for (auto& k : moved) {
              auto* op = b.add_ops();
              op->set_db(static_cast<uint32_t>(db::delay));
              op->set_key(k);
              op->set_kind(pb::WriteOp::DEL);
            }
            self->request(self->state.ctx->writer, std::chrono::seconds(60),
                          std::move(b))
              .then([=](const pb::WriteResult&) {
                for (auto& k : moved)
                  self->state.moving.erase(k);
              },
              [=](caf::error&) {
                for (auto& k : moved)
                  self->state.moving.erase(k);
              });
            return;
          }
          EDDA_WARN("scheduler", "moving delayed messages to " << topic
                                   << " failed, will retry: " << render(err));
          for (auto& k : moved)
            self->state.moving.erase(k);
          arm(self, self->state.ctx->clock() + 1000);
        });
  }
  if (next_due != std::numeric_limits<int64_t>::max())
    arm(self, next_due);
}

caf::behavior scheduler(self_ptr self, context_ptr ctx) {
  self->state.ctx = std::move(ctx);
  return {
    [=](caf::actor topics) {
      self->state.topics = std::move(topics);
      fire(self);
    },
    [=](const pb::DelayAdded& d) { arm(self, d.due_ms()); },
    [=](wire::tick_atom) {
      self->state.next_wakeup = std::numeric_limits<int64_t>::max();
      fire(self);
    },
  };
}

} // namespace

caf::actor spawn_scheduler(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(scheduler, std::move(ctx));
}

} // namespace edda::broker
