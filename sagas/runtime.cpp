#include "sagas/runtime.hpp"

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

namespace edda::sagas {

namespace {

namespace pb = wire::pb;
using storage::db;
using std::chrono::milliseconds;

/// Who carries out each part of a step.
struct step_actors {
  caf::actor action, compensation, confirm;
};

/// Per type: the definition and its step actors.
struct type_entry {
  definition_ptr def;
  std::vector<step_actors> steps;
};

/// The three things a step can be asked to do.
enum class part { action, compensation, confirm };
using registry = std::map<std::string, type_entry>;
using registry_ptr = std::shared_ptr<const registry>;

// -- function participants ----------------------------------------------------

caf::behavior function_participant(caf::event_based_actor*, step_function fn) {
  return {
    [=](const pb::StepCommand& c) {
      step_request r;
      r.saga_id = c.saga_id();
      r.saga_type = c.saga_type();
      r.step = c.step();
      r.idempotency_key = c.idempotency_key();
      r.input = c.input();
      r.attempt = c.attempt();
      r.compensate = c.compensate();
      r.confirm = c.confirm();
      step_result res;
      try {
        res = fn(r);
      } catch (const std::exception& e) {
        res = step_result::failure(std::string("participant threw: ") + e.what());
      } catch (...) {
        res = step_result::failure("participant threw");
      }
      pb::StepReply rep;
      rep.set_ok(res.ok);
      rep.set_output(std::move(res.output));
      rep.set_error(std::move(res.error));
      rep.set_retryable(res.retryable);
      return rep;
    },
  };
}

// -- saga_instance ------------------------------------------------------------

struct instance_state {
  broker::context_ptr ctx;
  const type_entry* type = nullptr;
  registry_ptr reg; // keeps `type` alive
  pb::SagaRecord rec;
  bool inflight = false;
  uint64_t timer_gen = 0; // retry timers of older attempts are ignored
  static inline const char* name = "edda.saga_instance";
};

using instance_ptr = caf::stateful_actor<instance_state>*;

saga_state state_of(const pb::SagaRecord& r) {
  return static_cast<saga_state>(r.state());
}

void note(instance_ptr self, std::string what) {
  auto* e = self->state.rec.add_history();
  e->set_at_ms(self->state.ctx->clock());
  e->set_what(std::move(what));
}

/// The write that stores `rec` as it is now (db saga, key: its id).
pb::WriteBatch record_write(const pb::SagaRecord& rec) {
  pb::WriteBatch b;
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::saga));
  op->set_key(rec.id());
  op->set_value(rec.SerializeAsString());
  return b;
}

/// Writes the record, then runs `then` (after the commit). A failed write
/// is retried after a second: nothing goes out before it is stored.
template <class F>
void persist(instance_ptr self, F then) {
  auto& st = self->state;
  st.rec.set_updated_ms(st.ctx->clock());
  self->request(st.ctx->writer, milliseconds(st.ctx->write_timeout_ms),
                record_write(st.rec))
    .then([=](const pb::WriteResult&) mutable { then(); },
          [=](caf::error& err) mutable {
            EDDA_ERROR("saga", self->state.rec.id()
                                 << ": state not stored, retrying in 1 s: "
                                 << render(err));
            self->delayed_send(self, std::chrono::seconds(1),
                               wire::retry_atom::value, uint64_t{0});
          });
}

void advance(instance_ptr self);

void finish(instance_ptr self, saga_state s, const std::string& reason) {
  auto& st = self->state;
  st.rec.set_state(static_cast<uint32_t>(s));
  if (!reason.empty())
    st.rec.set_reason(reason);
  note(self, std::string(to_string(s)) + (reason.empty() ? "" : ": " + reason));
  persist(self, [=] {
    auto& st = self->state;
    metrics::counter(std::string("sagas.") + to_string(s))++;
    if (s == saga_state::failed)
      st.ctx->alerts->raise(alert{"saga_failed", st.rec.id(),
                                  "saga " + st.rec.id() + " (" + st.rec.type()
                                    + ") failed: " + st.rec.reason(),
                                  "", st.ctx->clock()});
    self->quit();
  });
}

bool confirming(instance_ptr self);

void begin_compensation(instance_ptr self, const std::string& reason) {
  auto& st = self->state;
  if (state_of(st.rec) != saga_state::running)
    return;
  if (confirming(self)) {
    // Reservations are being confirmed: going back is no longer possible.
    note(self, "not compensating (" + reason + "): TCC steps are confirming");
    persist(self, [=] { advance(self); });
    return;
  }
  st.rec.set_state(static_cast<uint32_t>(saga_state::compensating));
  st.rec.set_reason(reason);
  note(self, "compensating: " + reason);
  persist(self, [=] { advance(self); });
}

void on_reply(instance_ptr self, size_t i, part p, bool ok,
              std::string output, std::string error, bool retryable);

/// Sends part `p` of step `i` as recorded (attempt counts included).
void send(instance_ptr self, size_t i, part p) {
  auto& st = self->state;
  auto& def = st.type->def->steps()[i];
  auto& s = st.rec.steps(static_cast<int>(i));
  auto& actors = st.type->steps[i];
  auto target = p == part::action         ? actors.action
                : p == part::compensation ? actors.compensation
                                          : actors.confirm;
  pb::StepCommand cmd;
  cmd.set_saga_id(st.rec.id());
  cmd.set_saga_type(st.rec.type());
  cmd.set_step(s.name());
  cmd.set_idempotency_key(st.rec.id() + "/" + s.name());
  cmd.set_compensate(p == part::compensation);
  cmd.set_confirm(p == part::confirm);
  cmd.set_input(st.rec.input());
  cmd.set_attempt(p == part::action         ? s.attempts()
                  : p == part::compensation ? s.compensations()
                                            : s.confirms());
  st.inflight = true;
  self->request(target, def.options.timeout, std::move(cmd))
    .then(
      [=](pb::StepReply& r) {
        on_reply(self, i, p, r.ok(), std::move(*r.mutable_output()),
                 std::move(*r.mutable_error()), r.retryable());
      },
      [=](caf::error& err) {
        auto why = err == caf::sec::request_timeout
                     ? "no reply within "
                         + std::to_string(def.options.timeout.count()) + " ms"
                     : render(err);
        on_reply(self, i, p, false, {}, why, true);
      });
}

/// Once a TCC step is being confirmed the saga only goes forward.
bool confirming(instance_ptr self) {
  for (auto& s : self->state.rec.steps())
    if (s.status() == pb::SagaStep::CONFIRMING
        || s.status() == pb::SagaStep::CONFIRMED)
      return true;
  return false;
}

void run_action(instance_ptr self, size_t i) {
  auto& st = self->state;
  auto& s = *st.rec.mutable_steps(static_cast<int>(i));
  s.set_status(pb::SagaStep::RUNNING);
  s.set_attempts(s.attempts() + 1);
  if (s.started_ms() == 0)
    s.set_started_ms(st.ctx->clock());
  st.inflight = true; // until the reply, even while the write is pending
  persist(self, [=] { send(self, i, part::action); });
}

void run_compensation(instance_ptr self, size_t i) {
  auto& st = self->state;
  auto& s = *st.rec.mutable_steps(static_cast<int>(i));
  s.set_status(pb::SagaStep::COMPENSATING);
  s.set_compensations(s.compensations() + 1);
  st.inflight = true;
  persist(self, [=] { send(self, i, part::compensation); });
}

void run_confirm(instance_ptr self, size_t i) {
  auto& st = self->state;
  auto& s = *st.rec.mutable_steps(static_cast<int>(i));
  s.set_status(pb::SagaStep::CONFIRMING);
  s.set_confirms(s.confirms() + 1);
  st.inflight = true;
  persist(self, [=] { send(self, i, part::confirm); });
}

bool non_retryable(const retry_policy& p, const std::string& error) {
  for (auto& prefix : p.non_retryable)
    if (error.rfind(prefix, 0) == 0)
      return true;
  return false;
}

void schedule_retry(instance_ptr self, size_t i, uint32_t attempt) {
  auto& st = self->state;
  auto& policy = st.type->def->steps()[i].options.retry;
  auto gen = ++st.timer_gen;
  // The retry takes whatever the record says is next (advance()).
  self->delayed_send(self, policy.backoff(attempt), wire::retry_atom::value,
                     gen);
}

void on_reply(instance_ptr self, size_t i, part p, bool ok,
              std::string output, std::string error, bool retryable) {
  auto& st = self->state;
  st.inflight = false;
  auto& def = st.type->def->steps()[i];
  auto& s = *st.rec.mutable_steps(static_cast<int>(i));
  auto& policy = def.options.retry;
  if (p == part::confirm) {
    if (ok) {
      s.set_status(pb::SagaStep::CONFIRMED);
      s.set_last_error("");
      persist(self, [=] { advance(self); });
      return;
    }
    s.set_last_error(error);
    if (retryable && !non_retryable(policy, error)
        && s.confirms() < policy.max_attempts) {
      note(self, s.name() + " confirm attempt " + std::to_string(s.confirms())
                   + " failed: " + error);
      auto attempt = s.confirms();
      persist(self, [=] { schedule_retry(self, i, attempt); });
      return;
    }
    finish(self, saga_state::failed,
           "confirm of " + s.name() + " failed after "
             + std::to_string(s.confirms()) + " attempts: " + error);
    return;
  }
  if (p == part::action) {
    if (ok) {
      s.set_status(pb::SagaStep::DONE);
      s.set_output(std::move(output));
      s.set_last_error("");
      s.set_finished_ms(st.ctx->clock());
      persist(self, [=] { advance(self); });
      return;
    }
    s.set_last_error(error);
    bool again = retryable && !non_retryable(policy, error)
                 && s.attempts() < policy.max_attempts
                 && state_of(st.rec) == saga_state::running;
    if (again) {
      note(self, s.name() + " attempt " + std::to_string(s.attempts())
                   + " failed: " + error);
      auto attempt = s.attempts();
      persist(self, [=] { schedule_retry(self, i, attempt); });
      return;
    }
    s.set_status(pb::SagaStep::FAILED);
    s.set_finished_ms(st.ctx->clock());
    if (def.options.best_effort) {
      note(self, "gave up on " + s.name() + " after "
                   + std::to_string(s.attempts()) + " attempts (best effort): "
                   + error);
      persist(self, [=] { advance(self); });
      return;
    }
    if (state_of(st.rec) == saga_state::running) {
      begin_compensation(self, "step " + s.name() + " failed after "
                                 + std::to_string(s.attempts())
                                 + " attempts: " + error);
      return;
    }
    persist(self, [=] { advance(self); });
    return;
  }
  if (ok) {
    s.set_status(pb::SagaStep::COMPENSATED);
    s.set_last_error("");
    persist(self, [=] { advance(self); });
    return;
  }
  s.set_last_error(error);
  if (retryable && !non_retryable(policy, error)
      && s.compensations() < policy.max_attempts) {
    note(self, s.name() + " compensation attempt "
                 + std::to_string(s.compensations()) + " failed: " + error);
    auto attempt = s.compensations();
    persist(self, [=] { schedule_retry(self, i, attempt); });
    return;
  }
  s.set_status(pb::SagaStep::COMPENSATION_FAILED);
  finish(self, saga_state::failed,
         "compensation of " + s.name() + " failed after "
           + std::to_string(s.compensations()) + " attempts: " + error);
}

/// Takes the next step forward or back, or ends the saga.
void advance(instance_ptr self) {
  auto& st = self->state;
  if (st.inflight || st.rec.paused())
    return;
  auto& def = *st.type->def;
  auto n = static_cast<size_t>(st.rec.steps_size());
  switch (state_of(st.rec)) {
    case saga_state::running: {
      if (st.rec.deadline_ms() > 0 && st.ctx->clock() >= st.rec.deadline_ms()) {
        begin_compensation(self, "deadline passed");
        return;
      }
      for (size_t i = 0; i < n; ++i) {
        auto status = st.rec.steps(static_cast<int>(i)).status();
        bool given_up = def.steps()[i].options.best_effort
                        && status == pb::SagaStep::FAILED;
        if (status != pb::SagaStep::DONE && status != pb::SagaStep::CONFIRMING
            && status != pb::SagaStep::CONFIRMED && !given_up) {
          run_action(self, i);
          return;
        }
      }
      // Every try succeeded: confirm the TCC steps, in order.
      for (size_t i = 0; i < n; ++i)
        if (def.steps()[i].is_tcc()
            && st.rec.steps(static_cast<int>(i)).status()
                 != pb::SagaStep::CONFIRMED) {
          run_confirm(self, i);
          return;
        }
      finish(self, saga_state::completed, "");
      return;
    }
    case saga_state::compensating: {
      for (size_t k = n; k-- > 0;) {
        auto& s = st.rec.steps(static_cast<int>(k));
        if (s.attempts() == 0 || !def.steps()[k].options.compensable
            || def.steps()[k].options.best_effort
            || s.status() == pb::SagaStep::COMPENSATED)
          continue;
        run_compensation(self, k);
        return;
      }
      finish(self, saga_state::compensated, "");
      return;
    }
    default:
      self->quit(); // terminal
  }
}

/// Picks up where the record left off: a step in flight is sent again
/// (same idempotency key, same attempt number).
void resume(instance_ptr self) {
  auto& st = self->state;
  auto n = st.rec.steps_size();
  for (int i = 0; i < n; ++i) {
    auto status = st.rec.steps(i).status();
    if (status == pb::SagaStep::RUNNING
        && state_of(st.rec) == saga_state::running) {
      send(self, static_cast<size_t>(i), part::action);
      return;
    }
    if (status == pb::SagaStep::COMPENSATING) {
      send(self, static_cast<size_t>(i), part::compensation);
      return;
    }
    if (status == pb::SagaStep::CONFIRMING) {
      send(self, static_cast<size_t>(i), part::confirm);
      return;
    }
  }
  advance(self);
}

caf::behavior saga_instance(instance_ptr self, broker::context_ptr ctx,
                            registry_ptr reg, pb::SagaRecord rec, bool fresh) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.reg = std::move(reg);
  st.type = &st.reg->at(rec.type());
  st.rec = std::move(rec);
  if (st.rec.deadline_ms() > 0
      && state_of(st.rec) == saga_state::running) {
    auto left = std::max<int64_t>(0, st.rec.deadline_ms() - st.ctx->clock());
    self->delayed_send(self, milliseconds(left), wire::deadline_atom::value);
  }
  if (fresh)
    advance(self);
  else
    resume(self);
  return {
    [=](wire::retry_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen == 0) { // a write failed: try the same transition again
        persist(self, [=] { resume(self); });
        return;
      }
      if (gen != st.timer_gen || st.inflight || st.rec.paused())
        return;
      advance(self);
    },
    [=](const pb::SagaCommand& c) -> caf::result<pb::SagaRecord> {
      auto& st = self->state;
      auto who = c.by().empty() ? std::string{"operator"} : c.by();
      auto state = state_of(st.rec);
      auto reply = [=]() mutable {
        auto rp = self->make_response_promise<pb::SagaRecord>();
        persist(self, [=]() mutable {
          rp.deliver(self->state.rec);
          advance(self);
        });
        return rp;
      };
      switch (c.op()) {
        case pb::SagaCommand::PAUSE:
          if (st.rec.paused())
            return st.rec;
          st.rec.set_paused(true);
          note(self, "paused by " + who);
          return reply();
        case pb::SagaCommand::RESUME:
          if (!st.rec.paused())
            return st.rec;
          st.rec.set_paused(false);
          note(self, "resumed by " + who);
          return reply();
        case pb::SagaCommand::RETRY:
          if (st.inflight)
            return make_error(errc::invalid_argument,
                              "saga " + st.rec.id()
                                + " has a step in flight; nothing waits");
          ++st.timer_gen; // the pending backoff is not waited for
          note(self, "retry now, by " + who);
          return reply();
        case pb::SagaCommand::SKIP: {
          if (st.inflight)
            return make_error(errc::invalid_argument,
                              "saga " + st.rec.id() + ": step in flight; "
                              "pause, wait for it, then skip");
          for (auto& s : *st.rec.mutable_steps()) {
            if (s.name() != c.step())
              continue;
            if (state == saga_state::running
                && s.status() != pb::SagaStep::DONE) {
              s.set_status(pb::SagaStep::DONE);
              s.set_last_error("skipped by " + who);
            } else if (state == saga_state::compensating
                       && s.status() != pb::SagaStep::COMPENSATED) {
              s.set_status(pb::SagaStep::COMPENSATED);
              s.set_last_error("compensation skipped by " + who);
            } else {
              return make_error(errc::invalid_argument,
                                "step " + c.step() + " has nothing to skip");
            }
            ++st.timer_gen;
            note(self, "step " + c.step() + " skipped by " + who);
            return reply();
          }
          return make_error(errc::not_found, "saga " + st.rec.id()
                                               + " has no step '" + c.step()
                                               + "'");
        }
        case pb::SagaCommand::COMPENSATE: {
          if (state == saga_state::running && confirming(self))
            return make_error(errc::invalid_argument,
                              "saga " + st.rec.id()
                                + " is confirming its TCC steps; it can only "
                                  "go forward");
          if (state != saga_state::running)
            return make_error(errc::invalid_argument,
                              "saga " + st.rec.id() + " is "
                                + to_string(state)
                                + "; only a running saga can be compensated");
          ++st.timer_gen;
          st.rec.set_state(static_cast<uint32_t>(saga_state::compensating));
          st.rec.set_reason("compensation forced by " + who);
          note(self, "compensation forced by " + who);
          return reply();
        }
        default:
          return make_error(errc::invalid_argument, "unknown saga command");
      }
    },
    [=](wire::deadline_atom) {
      if (state_of(self->state.rec) != saga_state::running)
        return;
      ++self->state.timer_gen; // a pending retry is not taken
      begin_compensation(self, "deadline passed");
    },
  };
}

// -- saga_shard -----------------------------------------------------------------

struct shard_state {
  broker::context_ptr ctx;
  registry_ptr reg;
  uint32_t index = 0, count = 1;
  std::map<std::string, caf::actor> live;
  std::map<std::string, std::vector<caf::response_promise>> starting;
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

void spawn_instance(shard_ptr self, pb::SagaRecord rec, bool fresh) {
  auto& st = self->state;
  if (st.reg->count(rec.type()) == 0) {
    EDDA_ERROR("saga", rec.id() << ": type " << rec.type()
                                << " is not registered; left as it is");
    return;
  }
  auto id = rec.id();
  auto a = self->spawn(saga_instance, st.ctx, st.reg, std::move(rec), fresh);
  self->monitor(a);
  st.live[id] = a;
}

caf::behavior saga_shard(shard_ptr self, broker::context_ptr ctx,
                         registry_ptr reg, uint32_t index, uint32_t count) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.reg = std::move(reg);
  st.index = index;
  st.count = count;
  {
    // Recovery: every saga of this shard that is not terminal resumes.
    std::vector<pb::SagaRecord> open;
    auto txn = st.ctx->env->read();
    txn.scan(db::saga, "", "", [&](std::string_view k, std::string_view v) {
      if (stable_hash(std::string(k)) % count != index)
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
      auto t = st.reg->find(req.type());
      if (t == st.reg->end())
        return make_error(errc::unknown_saga_type,
                          "no saga type '" + req.type() + "' is registered");
      if (req.id().empty())
        req.set_id(new_unique_id());
      if (req.id().size() > 200)
        return make_error(errc::invalid_argument,
                          "saga id must be at most 200 bytes");
      if (stable_hash(req.id()) % st.count != st.index)
        return make_error(errc::invalid_argument,
                          "saga " + req.id() + " belongs to another shard");
      auto rp = self->make_response_promise<pb::SagaStarted>();
      if (auto w = st.starting.find(req.id()); w != st.starting.end()) {
        w->second.push_back(rp);
        return rp;
      }
      if (auto rec = load(self, req.id())) {
        pb::SagaStarted out;
        out.set_existed(true);
        *out.mutable_record() = std::move(*rec);
        rp.deliver(std::move(out));
        return rp;
      }
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
      st.starting[req.id()].push_back(rp);
      self->request(st.ctx->writer, milliseconds(st.ctx->write_timeout_ms),
                    record_write(rec))
        .then(
          [=](const pb::WriteResult&) {
            auto& st = self->state;
            auto waiters = std::move(st.starting[rec.id()]);
            st.starting.erase(rec.id());
            metrics::counter("sagas.started")++;
            spawn_instance(self, rec, true);
            for (size_t i = 0; i < waiters.size(); ++i) {
              pb::SagaStarted out;
              out.set_existed(i > 0);
              *out.mutable_record() = rec;
              waiters[i].deliver(std::move(out));
            }
          },
          [=](caf::error& err) {
            auto waiters = std::move(self->state.starting[rec.id()]);
            self->state.starting.erase(rec.id());
            for (auto& w : waiters)
              w.deliver(err);
          });
      return rp;
    },
    [=](pb::SagaCommand& c) -> caf::result<pb::SagaRecord> {
      auto& st = self->state;
      if (auto i = st.live.find(c.id()); i != st.live.end()) {
        self->delegate(i->second, std::move(c));
        return caf::delegated<pb::SagaRecord>{};
      }
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
      auto rp = self->make_response_promise<pb::SagaRecord>();
      auto stored = *rec;
      self->request(st.ctx->writer, milliseconds(st.ctx->write_timeout_ms),
                    record_write(stored))
        .then(
          [=](const pb::WriteResult&) mutable {
            spawn_instance(self, stored, false);
            rp.deliver(stored);
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
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
    [=](wire::stop_atom) {
      for (auto& [id, a] : self->state.live)
        self->send_exit(a, caf::exit_reason::user_shutdown);
      self->state.live.clear();
      self->quit();
    },
  };
}

} // namespace

struct saga_runtime::impl {
  caf::actor_system* sys = nullptr;
  broker::context_ptr ctx;
  runtime_options opts;
  registry reg;
  std::vector<caf::actor> functions; // wrapped function participants
  std::vector<caf::actor> shards;
};

saga_runtime::saga_runtime(caf::actor_system& sys, broker::context_ptr ctx,
                           runtime_options opts)
  : impl_(std::make_unique<impl>()) {
  impl_->sys = &sys;
  impl_->ctx = std::move(ctx);
  impl_->opts = opts;
  if (impl_->opts.shards == 0)
    impl_->opts.shards = 1;
}

saga_runtime::~saga_runtime() {
  stop();
}

caf::error saga_runtime::add(saga_definition def) {
  if (auto err = def.validate())
    return err;
  if (!impl_->shards.empty())
    return make_error(errc::invalid_saga, "saga '" + def.name()
                                            + "': register types before start");
  if (impl_->reg.count(def.name()) != 0)
    return make_error(errc::invalid_saga,
                      "saga '" + def.name() + "' is registered already");
  type_entry e;
  auto wrap = [&](const participant& p) -> caf::actor {
    if (p.empty())
      return {};
    if (p.actor())
      return p.actor();
    auto a = impl_->opts.detached_participants
               ? impl_->sys->spawn<caf::detached>(function_participant,
                                                  p.function())
               : impl_->sys->spawn(function_participant, p.function());
    impl_->functions.push_back(a);
    return a;
  };
  for (auto& s : def.steps())
    e.steps.push_back(
      step_actors{wrap(s.action), wrap(s.compensation), wrap(s.confirm)});
  auto name = def.name();
  e.def = std::make_shared<const saga_definition>(std::move(def));
  impl_->reg.emplace(name, std::move(e));
  return caf::none;
}

void saga_runtime::start() {
  if (!impl_->shards.empty())
    return;
  auto reg = std::make_shared<const registry>(impl_->reg);
  for (uint32_t i = 0; i < impl_->opts.shards; ++i)
    impl_->shards.push_back(
      impl_->sys->spawn(saga_shard, impl_->ctx, reg, i, impl_->opts.shards));
}

void saga_runtime::stop() {
  for (auto& s : impl_->shards)
    caf::anon_send(s, wire::stop_atom::value);
  impl_->shards.clear();
  for (auto& f : impl_->functions)
    caf::anon_send_exit(f, caf::exit_reason::user_shutdown);
  impl_->functions.clear();
}

caf::actor saga_runtime::shard_for(const std::string& saga_id) const {
  if (impl_->shards.empty())
    return {};
  return impl_->shards[stable_hash(saga_id) % impl_->shards.size()];
}

const std::vector<caf::actor>& saga_runtime::shards() const {
  return impl_->shards;
}

} // namespace edda::sagas
