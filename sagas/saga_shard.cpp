#include "sagas/saga_shard.hpp"
#include "sagas/saga_instance.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "storage/environment.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>

namespace edda::sagas {

namespace {

namespace pb = wire::pb;
using storage::db;
using std::chrono::milliseconds;

struct shard_state {
  broker::context_ptr ctx;
  shared_env rt;
  uint32_t index = 0, count = 1;
  std::map<std::string, caf::actor> live;
  std::set<std::string> reopening; // failed sagas whose retry is being stored
  /// The names of named actions that someone serves, as the keeper last
  /// said (the directory tells the keeper).
  std::set<std::string> served;
  static inline const char* name = "edda.saga_shard";
};

using shard_ptr = caf::stateful_actor<shard_state>*;

std::optional<pb::SagaRecord> load(shard_ptr self, const std::string& id) {
  auto txn = self->state.ctx->env->read();
  auto v = txn.get(db::saga, id);
  pb::SagaRecord rec;
  if (!v || !rec.ParseFromArray(v->data(), static_cast<int>(v->size())))
    return std::nullopt;
  return rec;
}

caf::actor spawn_instance(shard_ptr self, pb::SagaRecord rec, bool fresh) {
  auto& st = self->state;
  if (st.rt->reg.count(rec.type()) == 0) {
    EDDA_ERROR("saga", rec.id() << ": type " << rec.type()
                                << " is not registered; left as it is");
    return {};
  }
  auto id = rec.id();
  // Per step: its action's named participant is served (none named: empty).
  std::vector<char> served;
  auto& steps = st.rt->reg.at(rec.type()).def->steps();
  for (size_t i = 0; i < steps.size(); ++i) {
    auto& name = steps[i].action.name();
    if (name.empty())
      continue;
    served.resize(steps.size(), 0);
    served[i] = st.served.count(name) != 0;
  }
  // Linked: if the shard crashes, its instances go with it, and the shard
  // that replaces it resumes them from LMDB (no saga runs twice).
  auto a = spawn_saga_instance(self, st.ctx, st.rt, std::move(rec), fresh,
                               std::move(served));
  self->monitor(a);
  st.live[id] = a;
  return a;
}

/// Passes a start to the live instance of its saga. An instance that has
/// just ended (its down message not here yet) is answered from storage; one
/// that crashed is restarted from it and asked again (`tries` times).
void ask_instance(shard_ptr self, pb::SagaStart req,
                  caf::response_promise rp, int tries) {
  auto i = self->state.live.find(req.id());
  if (i == self->state.live.end()) {
    rp.deliver(make_error(errc::not_found, "no saga '" + req.id() + "'"));
    return;
  }
  auto asked = i->second;
  // Bounded: a lost promise must not keep a handler here forever.
  self->request(asked, std::chrono::minutes(24 * 60), req)
    .then([=](pb::SagaStarted& out) mutable { rp.deliver(std::move(out)); },
          [=](caf::error& err) mutable {
            auto rec = load(self, req.id());
            if (err != caf::sec::request_receiver_down || !rec) {
              rp.deliver(err);
              return;
            }
            auto& live = self->state.live;
            if (auto j = live.find(req.id()); j != live.end() && j->second != asked) {
              ask_instance(self, req, rp, tries); // restarted meanwhile
              return;
            }
            if (!is_terminal(state_of(*rec)) && tries > 0) {
              live.erase(req.id());
              if (spawn_instance(self, std::move(*rec), false)) {
                ask_instance(self, req, rp, tries - 1);
                return;
              }
              rec = load(self, req.id());
            }
            pb::SagaStarted out;
            out.set_existed(true);
            *out.mutable_record() = std::move(*rec);
            rp.deliver(std::move(out));
          });
}

caf::behavior saga_shard(shard_ptr self, broker::context_ptr ctx,
                         shared_env rt, uint32_t index, uint32_t count,
                         std::set<std::string> served) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.rt = std::move(rt);
  st.index = index;
  st.count = count;
  st.served = std::move(served);
  // An instance that ends is handled by the down handler (restart from
  // storage), not by dying with it.
  self->set_exit_handler([](caf::exit_msg&) {});
  {
    // Recovery: every saga of this shard that is not terminal resumes.
    std::vector<pb::SagaRecord> open;
    auto txn = st.ctx->env->read();
    txn.scan(db::saga, "", "", [&](std::string_view k, std::string_view v) {
      if (shard_of(std::string(k), count) != index)
        return true;
      pb::SagaRecord rec;
      if (rec.ParseFromArray(v.data(), static_cast<int>(v.size()))
          && !is_terminal(state_of(rec)))
        open.push_back(std::move(rec));
      return true;
    });
    for (auto& rec : open)
      spawn_instance(self, std::move(rec), false);
    if (!open.empty())
      EDDA_INFO("saga", "shard " << index << " resumed " << open.size()
                                 << " sagas");
  }
  self->send(self, wire::drain_atom::value); // retention
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    for (auto i = st.live.begin(); i != st.live.end(); ++i) {
      if (i->second.address() != dm.source)
        continue;
      auto id = i->first;
      st.live.erase(i);
      if (dm.reason == caf::exit_reason::normal)
        return;
      // Supervision: a crashed instance restarts from its stored state.
      EDDA_WARN("saga", id << ": instance stopped (" << render(dm.reason)
                           << "), restarting from its stored state");
      if (auto rec = load(self, id); rec && !is_terminal(state_of(*rec)))
        spawn_instance(self, std::move(*rec), false);
      return;
    }
  });
  return {
    [=](pb::SagaStart& req) -> caf::result<pb::SagaStarted> {
      auto& st = self->state;
      auto t = st.rt->reg.find(req.type());
      if (t == st.rt->reg.end())
        return make_error(errc::unknown_saga_type,
                          "no saga type '" + req.type() + "' is registered");
      if (req.id().empty()) // one that belongs here
        do
          req.set_id(new_unique_id());
        while (shard_of(req.id(), st.count) != st.index);
      if (req.id().size() > 200)
        return make_error(errc::invalid_argument,
                          "saga id must be at most 200 bytes");
      if (auto& check = t->second.def->input_checker()) {
        auto what = check(req.input());
        if (!what.empty())
          return make_error(errc::invalid_argument,
                            "input of saga type '" + req.type()
                              + "' does not parse: " + what);
      }
      if (shard_of(req.id(), st.count) != st.index)
        return make_error(errc::invalid_argument,
                          "saga " + req.id() + " belongs to another shard");
      if (st.live.count(req.id()) != 0) {
        auto rp = self->make_response_promise<pb::SagaStarted>();
        ask_instance(self, std::move(req), rp, 1);
        return rp;
      }
      if (auto rec = load(self, req.id())) {
        if (is_terminal(state_of(*rec)) || st.rt->reg.count(rec->type()) == 0) {
          pb::SagaStarted out;
          out.set_existed(true);
          *out.mutable_record() = std::move(*rec);
          return out;
        }
        // Stored but not running here (a first write that committed after
        // it had reported an error): run it.
        spawn_instance(self, std::move(*rec), false);
        auto rp = self->make_response_promise<pb::SagaStarted>();
        ask_instance(self, std::move(req), rp, 1);
        return rp;
      }
      // The instance stores the saga with its first step and answers once
      // that write is durable (or, with `wait`, once the saga has ended).
      auto now = st.ctx->clock();
      auto& def = *t->second.def;
      pb::SagaRecord rec;
      rec.set_id(req.id());
      rec.set_type(req.type());
      rec.set_input(std::move(*req.mutable_input()));
      rec.set_state(static_cast<uint32_t>(saga_state::running));
      rec.set_created_ms(now);
      rec.set_updated_ms(now);
      if (def.deadline().count() > 0)
        rec.set_deadline_ms(now + def.deadline().count());
      for (auto& s : def.steps())
        rec.add_steps()->set_name(s.name);
      auto* e = rec.add_history();
      e->set_at_ms(now);
      e->set_what("started");
      auto a = spawn_instance(self, std::move(rec), true);
      self->delegate(a, std::move(req));
      return caf::delegated<pb::SagaStarted>{};
    },
    [=](pb::SagaCommand& c) -> caf::result<pb::SagaRecord> {
      auto& st = self->state;
      if (auto i = st.live.find(c.id()); i != st.live.end()) {
        auto rp = self->make_response_promise<pb::SagaRecord>();
        auto id = c.id();
        self->request(i->second, std::chrono::minutes(24 * 60), std::move(c))
          .then([=](pb::SagaRecord& out) mutable { rp.deliver(std::move(out)); },
                [=](caf::error& err) mutable {
                  auto rec = load(self, id);
                  if (err == caf::sec::request_receiver_down && rec)
                    err = make_error(errc::invalid_argument,
                                     "saga " + id + " has just ended ("
                                       + to_string(state_of(*rec))
                                       + "); look at it and try again");
                  rp.deliver(err);
                });
        return rp;
      }
      if (st.reopening.count(c.id()) != 0)
        return make_error(errc::invalid_argument,
                          "saga " + c.id() + " is being reopened by another "
                          "command; look at it and try again");
      auto rec = load(self, c.id());
      if (!rec)
        return make_error(errc::not_found, "no saga '" + c.id() + "'");
      auto state = state_of(*rec);
      auto who = c.by().empty() ? std::string{"operator"} : c.by();
      if (state != saga_state::failed
          || (c.op() != pb::SagaCommand::RETRY
              && c.op() != pb::SagaCommand::SKIP))
        return make_error(errc::invalid_argument,
                          "saga " + c.id() + " is " + to_string(state)
                            + (state == saga_state::failed
                                 ? ": retry its compensation or skip the "
                                   "failed step"
                                 : ": nothing to do"));
      // A failed saga goes back to compensating: its failed compensations
      // are tried again (RETRY) or taken as done (SKIP STEP).
      bool found = false;
      for (auto& s : *rec->mutable_steps()) {
        if (s.status() != pb::SagaStep::COMPENSATION_FAILED)
          continue;
        if (c.op() == pb::SagaCommand::RETRY) {
          s.set_compensations(0);
          found = true;
        } else if (s.name() == c.step()) {
          s.set_status(pb::SagaStep::COMPENSATED);
          s.set_last_error("compensation skipped by " + who);
          found = true;
        }
      }
      if (!found)
        return make_error(errc::invalid_argument,
                          "saga " + c.id() + " has no failed compensation"
                            + (c.step().empty() ? "" : " at step " + c.step()));
      rec->set_state(static_cast<uint32_t>(saga_state::compensating));
      auto* e = rec->add_history();
      e->set_at_ms(st.ctx->clock());
      e->set_what(c.op() == pb::SagaCommand::RETRY
                    ? "compensation retried by " + who
                    : "step " + c.step() + " compensation skipped by " + who);
      rec->set_updated_ms(st.ctx->clock());
      EDDA_INFO_F("audit", "saga " << c.id() << ": " << e->what(),
                  {"action", c.op() == pb::SagaCommand::RETRY
                               ? "saga retry"
                               : "saga skip " + c.step()},
                  {"saga_id", c.id()}, {"by", who});
      auto rp = self->make_response_promise<pb::SagaRecord>();
      auto stored = *rec;
      st.reopening.insert(stored.id());
      self->request(st.ctx->writer, milliseconds(st.ctx->write_timeout_ms),
                    record_write(stored))
        .then(
          [=](const pb::WriteResult&) mutable {
            self->state.reopening.erase(stored.id());
            spawn_instance(self, stored, false);
            rp.deliver(stored);
          },
          [=](caf::error& err) mutable {
            self->state.reopening.erase(stored.id());
            rp.deliver(err);
          });
      return rp;
    },
    [=](const pb::SagaGet& req) -> caf::result<pb::SagaRecord> {
      if (auto rec = load(self, req.id()))
        return std::move(*rec);
      return make_error(errc::not_found, "no saga '" + req.id() + "'");
    },
    [=](const pb::SagaList& q) {
      // Any shard answers for the node: they share one environment.
      auto& st = self->state;
      auto now = st.ctx->clock();
      auto limit = q.limit() == 0 ? 1000u : q.limit();
      std::vector<pb::SagaRecord> found;
      auto txn = st.ctx->env->read();
      txn.scan(db::saga, "", "", [&](std::string_view, std::string_view v) {
        pb::SagaRecord rec;
        if (!rec.ParseFromArray(v.data(), static_cast<int>(v.size())))
          return true;
        if ((q.state() != 0 && rec.state() != q.state())
            || (!q.type().empty() && rec.type() != q.type())
            || (q.older_than_ms() > 0
                && now - rec.created_ms() < q.older_than_ms()))
          return true;
        rec.clear_history();
        found.push_back(std::move(rec));
        return true;
      });
      std::sort(found.begin(), found.end(), [](auto& a, auto& b) {
        return a.created_ms() != b.created_ms() ? a.created_ms() < b.created_ms()
                                                : a.id() < b.id();
      });
      pb::SagaRecords out;
      out.set_now_ms(now);
      for (auto& r : found) {
        if (static_cast<uint32_t>(out.records_size()) >= limit)
          break;
        *out.add_records() = std::move(r);
      }
      return out;
    },
    [=](wire::drain_atom) {
      // Ended sagas older than saga.retention are purged (at most 10,000
      // per pass; the next pass takes the rest).
      auto& st = self->state;
      auto keep = static_cast<int64_t>(st.ctx->settings.saga_retention_ms);
      if (keep <= 0)
        return;
      auto cutoff = st.ctx->clock() - keep;
      pb::WriteBatch b;
      {
        auto txn = st.ctx->env->read();
        txn.scan(db::saga, "", "", [&](std::string_view k, std::string_view v) {
          std::string key{k};
          if (shard_of(key, st.count) != st.index)
            return true;
          pb::SagaRecord rec;
          if (rec.ParseFromArray(v.data(), static_cast<int>(v.size()))
              && is_terminal(state_of(rec)) && rec.updated_ms() < cutoff
              && st.live.count(key) == 0) {
            auto* op = b.add_ops();
            op->set_db(static_cast<uint32_t>(db::saga));
            op->set_key(key);
            op->set_kind(pb::WriteOp::DEL);
          }
          return b.ops_size() < 10000;
        });
      }
      auto purged = b.ops_size();
      auto again = std::min<int64_t>(keep / 10 + 1, 600000); // ms
      if (purged > 0)
        self->request(st.ctx->writer, milliseconds(st.ctx->write_timeout_ms),
                      std::move(b))
          .then([=](const pb::WriteResult&) {
                  metrics::counter("sagas.purged") += static_cast<uint64_t>(purged);
                  EDDA_INFO("saga", "shard " << self->state.index << " purged "
                                             << purged << " ended sagas");
                },
                [](caf::error&) {});
      self->delayed_send(self, milliseconds(purged >= 10000 ? 1000 : again),
                         wire::drain_atom::value);
    },
    [=](wire::serving_atom, const std::string& name, bool served) {
      // From the keeper: a name of a named action is now served or not.
      // Rare (a participant's first registration, the last one going
      // away): every live instance is told.
      auto& st = self->state;
      if (served)
        st.served.insert(name);
      else
        st.served.erase(name);
      for (auto& [id, a] : st.live)
        self->send(a, wire::serving_atom::value, name, served);
    },
    [=](wire::stop_atom) {
      for (auto& [id, a] : self->state.live)
        self->send_exit(a, caf::exit_reason::user_shutdown);
      self->state.live.clear();
      self->quit();
    },
  };
}

} // namespace

caf::actor spawn_saga_shard(caf::local_actor* keeper, broker::context_ptr ctx,
                            shared_env rt, uint32_t index, uint32_t count,
                            std::set<std::string> served) {
  return keeper->spawn(saga_shard, std::move(ctx), std::move(rt), index,
                       count, std::move(served));
}

} // namespace edda::sagas
