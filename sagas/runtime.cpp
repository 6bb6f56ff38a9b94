#include "sagas/runtime.hpp"
#include "sagas/step_call.hpp"

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
#include <mutex>
#include <optional>
#include <set>

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

/// Named participants as registered by participant processes
/// (ParticipantRegister); read by instances, written by the directory
/// actor.
class directory_table {
public:
  struct entry {
    caf::actor who;
    bool batches = false; ///< answers StepBatch too
  };

  /// One of the actors serving `name` (in turn), or none.
  entry pick(const std::string& name) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = by_name_.find(name);
    if (i == by_name_.end() || i->second.empty())
      return {};
    return i->second[next_++ % i->second.size()];
  }
  /// Whether anyone serves `name` (does not take a turn).
  bool has(const std::string& name) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = by_name_.find(name);
    return i != by_name_.end() && !i->second.empty();
  }
  void add(const std::string& name, const caf::actor& a, bool batches) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto& v = by_name_[name];
    for (auto& e : v)
      if (e.who == a) {
        e.batches = batches;
        return;
      }
    v.push_back(entry{a, batches});
  }
  /// Forgets `a` everywhere; returns how many names it served.
  size_t remove(const caf::actor_addr& a) {
    std::lock_guard<std::mutex> guard{mtx_};
    size_t n = 0;
    for (auto& [name, v] : by_name_) {
      auto before = v.size();
      v.erase(std::remove_if(v.begin(), v.end(),
                             [&](const entry& x) {
                               // The same proxy, not one made since for
                               // the same remote actor (same address).
                               return caf::actor_cast<caf::actor_control_block*>(x.who)
                                      == a.get();
                             }),
              v.end());
      n += before - v.size();
    }
    return n;
  }

private:
  std::mutex mtx_;
  std::map<std::string, std::vector<entry>> by_name_;
  size_t next_ = 0;
};

/// What shards and instances share: the types, the named participants and
/// the topics (reliable-message steps append through it).
struct runtime_shared {
  registry reg;
  std::shared_ptr<directory_table> directory;
  caf::actor topics;
  std::vector<caf::actor> outboxes; // batch commands to named participants
};
using shared_env = std::shared_ptr<const runtime_shared>;

// -- function participants ----------------------------------------------------

caf::behavior function_participant(caf::event_based_actor*, step_function fn) {
  return {
    [=](const pb::StepCommand& c) { return call_step(fn, c); },
  };
}

// -- saga_instance ------------------------------------------------------------

/// A part of a step to send once the write that authorises it is stored.
struct pending_send {
  size_t step;
  part what;
};

struct instance_state {
  broker::context_ptr ctx;
  shared_env rt; // keeps `type` alive
  const type_entry* type = nullptr;
  pb::SagaRecord rec;
  std::vector<char> busy;    // per step: a part of it is in flight
  std::vector<char> waiting; // per step: a retry timer is pending
  uint64_t timer_gen = 1;    // timers of an older generation are ignored
  // Write-ahead: what the next write authorises, sent once it is stored.
  std::vector<pending_send> sends;
  struct timer {
    size_t step;
    milliseconds delay;
    uint64_t gen; // the generation when it was decided
  };
  std::vector<timer> timers;
  bool past_deadline = false; // the deadline was acted on (once)
  std::vector<caf::response_promise> after_write; // operator commands
  bool writing = false;  // one write at a time, so writes land in order
  std::string stored;    // the record as last stored
  int emit = -1;         // a message step whose append carries the write
  pb::Message emit_msg;
  bool ended = false;      // the next write ends the saga
  bool stored_once = false;
  bool claimed = false;    // the start that created it has been answered
  std::vector<std::pair<caf::response_promise, bool>> on_stored, on_end;
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
pb::WriteBatch record_write(const std::string& id, std::string bytes) {
  pb::WriteBatch b;
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::saga));
  op->set_key(id);
  op->set_value(std::move(bytes));
  return b;
}

pb::WriteBatch record_write(const pb::SagaRecord& rec) {
  return record_write(rec.id(), rec.SerializeAsString());
}

pb::SagaStep& step_at(instance_ptr self, size_t i) {
  return *self->state.rec.mutable_steps(static_cast<int>(i));
}

void advance(instance_ptr self);
void commit(instance_ptr self);
void fail_attempt(instance_ptr self, size_t i, part p, std::string error,
                  bool retryable);

void finish(instance_ptr self, saga_state s, const std::string& reason) {
  auto& st = self->state;
  st.rec.set_state(static_cast<uint32_t>(s));
  if (!reason.empty())
    st.rec.set_reason(reason);
  note(self, std::string(to_string(s)) + (reason.empty() ? "" : ": " + reason));
  st.ended = true;
}

/// Once a TCC step is being confirmed the saga only goes forward.
bool confirming(instance_ptr self) {
  for (auto& s : self->state.rec.steps())
    if (s.status() == pb::SagaStep::CONFIRMING
        || s.status() == pb::SagaStep::CONFIRMED)
      return true;
  return false;
}

/// Pending retries are dropped: whatever waited is taken up again now.
void cancel_timers(instance_ptr self) {
  auto& st = self->state;
  ++st.timer_gen;
  std::fill(st.waiting.begin(), st.waiting.end(), 0);
}

/// A step that cannot be undone and may have taken effect (in flight or
/// done): the saga can then only go forward. Null if there is none.
const pb::SagaStep* past_pivot(instance_ptr self) {
  auto& st = self->state;
  auto& steps = st.type->def->steps();
  for (size_t i = 0; i < steps.size(); ++i) {
    auto& s = st.rec.steps(static_cast<int>(i));
    if (!steps[i].compensable() && !steps[i].options.best_effort
        && (st.busy[i] || s.status() == pb::SagaStep::RUNNING
            || s.status() == pb::SagaStep::DONE))
      return &s;
  }
  return nullptr;
}

/// Why the saga cannot turn back now, or "".
std::string cannot_compensate(instance_ptr self) {
  if (confirming(self))
    return "TCC steps are confirming";
  if (auto* p = past_pivot(self))
    return "step " + p->name() + " cannot be undone and has been attempted";
  return {};
}

/// Turns a running saga back, unless it can only go forward (then the
/// refusal is noted and returned).
std::string to_compensating(instance_ptr self, const std::string& reason) {
  auto& st = self->state;
  if (state_of(st.rec) != saga_state::running)
    return {};
  if (auto why = cannot_compensate(self); !why.empty()) {
    note(self, "not compensating (" + reason + "): " + why);
    return why;
  }
  cancel_timers(self);
  st.rec.set_state(static_cast<uint32_t>(saga_state::compensating));
  st.rec.set_reason(reason);
  note(self, "compensating: " + reason);
  return {};
}

void on_reply(instance_ptr self, size_t i, part p, bool ok,
              std::string output, std::string error, bool retryable);

/// Sends part `p` of step `i` as recorded (attempt counts included).
void send(instance_ptr self, size_t i, part p) {
  auto& st = self->state;
  auto& def = st.type->def->steps()[i];
  auto& s = st.rec.steps(static_cast<int>(i));
  auto& actors = st.type->steps[i];
  auto& who = p == part::action         ? def.action
              : p == part::compensation ? def.compensation
                                        : def.confirm;
  auto target = p == part::action         ? actors.action
                : p == part::compensation ? actors.compensation
                                          : actors.confirm;
  bool batch = false;
  if (!who.name().empty()) {
    auto e = st.rt->directory->pick(who.name());
    target = std::move(e.who);
    batch = e.batches;
    if (!target) {
      on_reply(self, i, p, false, {},
               "no participant '" + who.name() + "' is registered", true);
      return;
    }
  }
  pb::StepCommand cmd;
  cmd.set_saga_id(st.rec.id());
  cmd.set_saga_type(st.rec.type());
  cmd.set_step(s.name());
  cmd.set_idempotency_key(st.rec.id() + "/" + s.name());
  cmd.set_compensate(p == part::compensation);
  cmd.set_confirm(p == part::confirm);
  cmd.set_input(st.rec.input());
  cmd.set_participant(who.name());
  for (auto& o : st.rec.steps())
    if (o.status() == pb::SagaStep::DONE || o.status() == pb::SagaStep::CONFIRMING
        || o.status() == pb::SagaStep::CONFIRMED)
      (*cmd.mutable_outputs())[o.name()] = o.output();
  cmd.set_attempt(p == part::action         ? s.attempts()
                  : p == part::compensation ? s.compensations()
                                            : s.confirms());
  st.busy[i] = 1;
  auto sent = !batch
                ? self->request(target, def.options.timeout, std::move(cmd))
                : self->request(st.rt->outboxes[stable_hash(st.rec.id())
                                                % st.rt->outboxes.size()],
                                def.options.timeout, std::move(target),
                                std::move(cmd));
  sent.then(
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

/// The step as a participant would see it (for message builders).
step_request request_for(instance_ptr self, size_t i) {
  auto& st = self->state;
  step_request r;
  r.saga_id = st.rec.id();
  r.saga_type = st.rec.type();
  r.step = st.rec.steps(static_cast<int>(i)).name();
  r.idempotency_key = r.saga_id + "/" + r.step;
  r.input = st.rec.input();
  r.attempt = st.rec.steps(static_cast<int>(i)).attempts();
  for (auto& o : st.rec.steps())
    if (o.status() == pb::SagaStep::DONE)
      r.outputs[o.name()] = o.output();
  return r;
}

/// Step `i` as stored in LMDB now, if the saga is stored.
std::optional<pb::SagaStep> stored_status(instance_ptr self, size_t i) {
  auto txn = self->state.ctx->env->read();
  pb::SagaRecord stored;
  auto v = txn.get(db::saga, self->state.rec.id());
  if (!v || !stored.ParseFromArray(v->data(), static_cast<int>(v->size()))
      || static_cast<int>(i) >= stored.steps_size())
    return std::nullopt;
  return stored.steps(static_cast<int>(i));
}

/// A reliable-message step: its message goes out with the write that
/// records the step as done (commit(): one AppendInternal, one LMDB txn).
void start_emit(instance_ptr self, size_t i) {
  auto& st = self->state;
  auto& s = step_at(self, i);
  if (s.attempts() > 0) {
    // An earlier append reported an error but may have committed (a
    // timeout): the stored record knows.
    if (auto stored_step = stored_status(self, i);
        stored_step && stored_step->status() == pb::SagaStep::DONE) {
      s = *stored_step;
      note(self, s.name() + ": the message of an attempt that reported an "
                            "error was stored after all");
      return;
    }
  }
  s.set_attempts(s.attempts() + 1);
  if (s.started_ms() == 0)
    s.set_started_ms(st.ctx->clock());
  outgoing_message m;
  try {
    m = st.type->def->steps()[i].message(request_for(self, i));
  } catch (const std::exception& e) {
    fail_attempt(self, i, part::action,
                 std::string("message builder threw: ") + e.what(), true);
    return;
  } catch (...) {
    fail_attempt(self, i, part::action, "message builder threw", true);
    return;
  }
  if (m.topic.empty()) {
    fail_attempt(self, i, part::action, "message builder gave no topic",
                 false);
    return;
  }
  pb::Message msg;
  msg.set_id(new_unique_id());
  msg.set_topic(m.topic);
  msg.set_key(m.key.empty() ? st.rec.id() : m.key);
  for (auto& t : m.tags)
    msg.add_tags(t);
  for (auto& [k, v] : m.properties)
    (*msg.mutable_properties())[k] = v;
  (*msg.mutable_properties())["saga_id"] = st.rec.id();
  (*msg.mutable_properties())["idempotency_key"] = st.rec.id() + "/" + s.name();
  msg.set_body(std::move(m.body));
  msg.set_born_ms(st.ctx->clock());
  s.set_status(pb::SagaStep::DONE);
  s.set_output("message " + msg.id() + " to " + msg.topic());
  s.set_last_error("");
  s.set_finished_ms(st.ctx->clock());
  st.emit = static_cast<int>(i);
  st.emit_msg = std::move(msg);
  st.busy[i] = 1;
}

void start_action(instance_ptr self, size_t i) {
  auto& st = self->state;
  if (st.type->def->steps()[i].is_message()) {
    start_emit(self, i);
    return;
  }
  auto& s = step_at(self, i);
  s.set_status(pb::SagaStep::RUNNING);
  s.set_attempts(s.attempts() + 1);
  if (s.started_ms() == 0)
    s.set_started_ms(st.ctx->clock());
  // A named participant that is not registered now is not asked at all:
  // the attempt fails unsent, and an action never sent needs no undo.
  auto& name = st.type->def->steps()[i].action.name();
  if (!name.empty() && !st.rt->directory->has(name)) {
    s.set_unsent(s.unsent() + 1);
    fail_attempt(self, i, part::action,
                 "no participant '" + name + "' is registered", true);
    return;
  }
  st.busy[i] = 1; // until the reply, even while the write is pending
  st.sends.push_back({i, part::action});
}

void start_compensation(instance_ptr self, size_t i) {
  auto& s = step_at(self, i);
  s.set_status(pb::SagaStep::COMPENSATING);
  s.set_compensations(s.compensations() + 1);
  self->state.busy[i] = 1;
  self->state.sends.push_back({i, part::compensation});
}

void start_confirm(instance_ptr self, size_t i) {
  auto& s = step_at(self, i);
  s.set_status(pb::SagaStep::CONFIRMING);
  s.set_confirms(s.confirms() + 1);
  self->state.busy[i] = 1;
  self->state.sends.push_back({i, part::confirm});
}

bool non_retryable(const retry_policy& p, const std::string& error) {
  for (auto& prefix : p.non_retryable)
    if (error.rfind(prefix, 0) == 0)
      return true;
  return false;
}

/// Retries part of step `i` after the policy's backoff for `attempt`.
void retry_later(instance_ptr self, size_t i, uint32_t attempt) {
  auto& st = self->state;
  st.waiting[i] = 1;
  st.timers.push_back(instance_state::timer{
    i, st.type->def->steps()[i].options.retry.backoff(attempt), st.timer_gen});
}

/// An attempt failed: retry it by the policy, else give up on the step
/// (best effort), turn back, or end failed.
void fail_attempt(instance_ptr self, size_t i, part p, std::string error,
                  bool retryable) {
  auto& st = self->state;
  auto& def = st.type->def->steps()[i];
  auto& s = step_at(self, i);
  auto& policy = def.options.retry;
  s.set_last_error(error);
  bool may_retry = retryable && !non_retryable(policy, error);
  if (p == part::confirm) {
    if (may_retry && s.confirms() < policy.max_attempts) {
      note(self, s.name() + " confirm attempt " + std::to_string(s.confirms())
                   + " failed: " + error);
      retry_later(self, i, s.confirms());
    } else {
      finish(self, saga_state::failed,
             "confirm of " + s.name() + " failed after "
               + std::to_string(s.confirms()) + " attempts: " + error);
    }
    return;
  }
  if (p == part::compensation) {
    if (may_retry && s.compensations() < policy.max_attempts) {
      note(self, s.name() + " compensation attempt "
                   + std::to_string(s.compensations()) + " failed: " + error);
      retry_later(self, i, s.compensations());
      return;
    }
    s.set_status(pb::SagaStep::COMPENSATION_FAILED);
    finish(self, saga_state::failed,
           "compensation of " + s.name() + " failed after "
             + std::to_string(s.compensations()) + " attempts: " + error);
    return;
  }
  if (may_retry && s.attempts() < policy.max_attempts
      && state_of(st.rec) == saga_state::running) {
    note(self, s.name() + " attempt " + std::to_string(s.attempts())
                 + " failed: " + error);
    retry_later(self, i, s.attempts());
    return;
  }
  s.set_finished_ms(st.ctx->clock());
  if (def.options.best_effort) {
    s.set_status(pb::SagaStep::GAVE_UP);
    note(self, "gave up on " + s.name() + " after "
                 + std::to_string(s.attempts()) + " attempts (best effort): "
                 + error);
    return;
  }
  s.set_status(pb::SagaStep::FAILED);
  (void) to_compensating(self, "step " + s.name() + " failed after "
                                 + std::to_string(s.attempts())
                                 + " attempts: " + error);
}

void on_reply(instance_ptr self, size_t i, part p, bool ok,
              std::string output, std::string error, bool retryable) {
  auto& st = self->state;
  if (st.ended)
    return;
  st.busy[i] = 0;
  auto& s = step_at(self, i);
  if (!ok) {
    fail_attempt(self, i, p, std::move(error), retryable);
  } else if (p == part::confirm) {
    s.set_status(pb::SagaStep::CONFIRMED);
    s.set_last_error("");
  } else if (p == part::action) {
    // Also while compensating (a sibling failed): it is then compensated.
    s.set_status(pb::SagaStep::DONE);
    s.set_output(std::move(output));
    s.set_last_error("");
    s.set_finished_ms(st.ctx->clock());
  } else {
    s.set_status(pb::SagaStep::COMPENSATED);
    s.set_last_error("");
  }
  advance(self);
}

/// Writes the record if it changed, then sends what the write authorised.
/// One write at a time: the next one starts when this one is stored.
void commit(instance_ptr self) {
  auto& st = self->state;
  if (st.writing)
    return;
  if (st.emit < 0 && st.rec.SerializeAsString() == st.stored) {
    // Nothing to store: what waited for a write may go now.
    auto sends = std::move(st.sends);
    auto timers = std::move(st.timers);
    auto replies = std::move(st.after_write);
    st.sends.clear();
    st.timers.clear();
    st.after_write.clear();
    for (auto& rp : replies)
      rp.deliver(st.rec);
    for (auto& t : timers)
      self->delayed_send(self, t.delay, wire::retry_atom::value, t.gen,
                         uint64_t{t.step});
    for (auto& x : sends)
      send(self, x.step, x.what);
    return;
  }
  st.rec.set_updated_ms(st.ctx->clock());
  st.stored = st.rec.SerializeAsString();
  st.writing = true;
  auto sends = std::make_shared<std::vector<pending_send>>(std::move(st.sends));
  auto timers = std::move(st.timers);
  auto replies = std::move(st.after_write);
  st.sends.clear();
  st.timers.clear();
  st.after_write.clear();
  auto emit = st.emit;
  st.emit = -1;
  bool final = st.ended && is_terminal(state_of(st.rec));
  auto stored = [=]() mutable {
    auto& st = self->state;
    st.writing = false;
    if (!st.stored_once) {
      st.stored_once = true;
      metrics::counter("sagas.started")++;
    }
    for (auto& [rp, existed] : st.on_stored) {
      pb::SagaStarted out;
      out.set_existed(existed);
      *out.mutable_record() = st.rec;
      rp.deliver(std::move(out));
    }
    st.on_stored.clear();
    for (auto& rp : replies)
      rp.deliver(st.rec);
    if (emit >= 0)
      st.busy[static_cast<size_t>(emit)] = 0;
    auto s = state_of(st.rec);
    if (final) {
      metrics::counter(std::string("sagas.") + to_string(s))++;
      if (s == saga_state::failed)
        st.ctx->alerts->raise(alert{"saga_failed", st.rec.id(),
                                    "saga " + st.rec.id() + " ("
                                      + st.rec.type()
                                      + ") failed: " + st.rec.reason(),
                                    "", st.ctx->clock()});
      for (auto& [rp, existed] : st.on_end) {
        pb::SagaStarted out;
        out.set_existed(existed);
        *out.mutable_record() = st.rec;
        rp.deliver(std::move(out));
      }
      self->quit();
      return;
    }
    for (auto& t : timers)
      self->delayed_send(self, t.delay, wire::retry_atom::value, t.gen,
                         uint64_t{t.step});
    for (auto& x : *sends)
      send(self, x.step, x.what);
    advance(self); // changes made meanwhile, the step after a message step
  };
  auto failed = [=](const caf::error& err) mutable {
    auto& st = self->state;
    st.writing = false;
    st.stored.clear();
    if (!st.stored_once) {
      // The saga was never stored: it does not exist.
      for (auto& [rp, existed] : st.on_stored)
        rp.deliver(err);
      for (auto& [rp, existed] : st.on_end)
        rp.deliver(err);
      for (auto& rp : replies)
        rp.deliver(err);
      self->quit(err);
      return;
    }
    st.sends.insert(st.sends.begin(), sends->begin(), sends->end());
    st.timers.insert(st.timers.end(), timers.begin(), timers.end());
    st.after_write.insert(st.after_write.end(), replies.begin(), replies.end());
    if (emit >= 0) {
      auto i = static_cast<size_t>(emit);
      st.busy[i] = 0;
      auto& s = step_at(self, i);
      // An error (a timeout) does not prove the append failed: the stored
      // record does. (A commit later still, after a writer stalled for the
      // whole write timeout, is found before the next attempt.)
      if (auto stored_step = stored_status(self, i);
          stored_step && stored_step->status() == pb::SagaStep::DONE) {
        note(self, s.name() + ": its message was stored although the append "
                              "reported " + render(err));
        s = *stored_step;
        advance(self);
        return;
      }
      // The message and the step's new state were not stored.
      s.set_status(pb::SagaStep::FAILED);
      s.set_output("");
      s.set_finished_ms(0);
      fail_attempt(self, i, part::action,
                   "message to " + st.emit_msg.topic()
                     + " not stored: " + render(err),
                   true);
      advance(self);
      return;
    }
    EDDA_ERROR("saga", st.rec.id() << ": state not stored, retrying in 1 s: "
                                   << render(err));
    self->delayed_send(self, std::chrono::seconds(1), wire::retry_atom::value,
                       uint64_t{0}, uint64_t{0});
  };
  auto timeout = milliseconds(st.ctx->write_timeout_ms);
  if (emit >= 0) {
    pb::AppendInternal app;
    app.set_topic(st.emit_msg.topic());
    app.set_partition(-1); // by key
    *app.add_messages() = st.emit_msg;
    *app.mutable_extra() = record_write(st.rec.id(), st.stored);
    self->request(st.rt->topics, timeout, std::move(app))
      .then(
        [=](const pb::ProduceResult& r) mutable {
          auto& s = step_at(self, static_cast<size_t>(emit));
          s.set_output(self->state.emit_msg.topic() + "/"
                       + std::to_string(r.partition()) + "/"
                       + std::to_string(r.offsets_size() > 0 ? r.offsets(0)
                                                             : 0));
          stored();
        },
        [=](caf::error& err) mutable { failed(err); });
    return;
  }
  self->request(st.ctx->writer, timeout, record_write(st.rec.id(), st.stored))
    .then([=](const pb::WriteResult&) mutable { stored(); },
          [=](caf::error& err) mutable { failed(err); });
}

/// Whether step `i` still has to be undone on the way back.
bool needs_compensation(instance_ptr self, size_t i) {
  auto& def = self->state.type->def->steps()[i];
  auto& s = self->state.rec.steps(static_cast<int>(i));
  if (s.attempts() <= s.unsent() || !def.compensable()
      || s.status() == pb::SagaStep::COMPENSATED)
    return false;
  // A message step that failed was never sent.
  return !def.is_message() || s.status() != pb::SagaStep::FAILED;
}

/// Takes every step forward or back that can go now, or ends the saga,
/// then writes what changed.
void advance(instance_ptr self) {
  auto& st = self->state;
  if (st.ended || st.rec.paused()) {
    commit(self);
    return;
  }
  auto& def = *st.type->def;
  auto& steps = def.steps();
  auto n = steps.size();
  auto idle = [&](size_t i) { return !st.busy[i] && !st.waiting[i]; };
  if (state_of(st.rec) == saga_state::running && st.rec.deadline_ms() > 0
      && !st.past_deadline && st.ctx->clock() >= st.rec.deadline_ms()) {
    st.past_deadline = true; // acted on once, even if refused
    (void) to_compensating(self, "deadline passed");
  }
  switch (state_of(st.rec)) {
    case saga_state::running: {
      // The first group with a step not yet done: start what is idle.
      for (size_t i = 0; i < n;) {
        bool open = false;
        auto g = steps[i].group;
        for (; i < n && steps[i].group == g; ++i) {
          auto status = st.rec.steps(static_cast<int>(i)).status();
          // A message step is done once its append is stored (not busy).
          if (!st.busy[i]
              && (status == pb::SagaStep::DONE
                  || status == pb::SagaStep::CONFIRMING
                  || status == pb::SagaStep::CONFIRMED
                  || status == pb::SagaStep::GAVE_UP))
            continue;
          open = true;
          if (idle(i) && st.emit < 0)
            start_action(self, i);
        }
        if (open || state_of(st.rec) != saga_state::running) {
          if (state_of(st.rec) != saga_state::running)
            return advance(self); // an attempt failed for good on the way
          commit(self);
          return;
        }
      }
      // Every try succeeded: confirm the TCC steps, in order.
      for (size_t i = 0; i < n; ++i)
        if (steps[i].is_tcc()
            && st.rec.steps(static_cast<int>(i)).status()
                 != pb::SagaStep::CONFIRMED) {
          if (idle(i))
            start_confirm(self, i);
          commit(self);
          return;
        }
      finish(self, saga_state::completed, "");
      commit(self);
      return;
    }
    case saga_state::compensating: {
      // The last group with something to undo, once none of it is in
      // flight (a late action reply is compensated, not raced).
      for (size_t k = n; k > 0;) {
        auto g = steps[k - 1].group;
        size_t lo = k;
        while (lo > 0 && steps[lo - 1].group == g)
          --lo;
        bool open = false;
        for (size_t i = k; i-- > lo;) {
          if (!needs_compensation(self, i))
            continue;
          open = true;
          if (idle(i))
            start_compensation(self, i);
        }
        if (open) {
          commit(self);
          return;
        }
        k = lo;
      }
      finish(self, saga_state::compensated, "");
      commit(self);
      return;
    }
    default:
      commit(self);
  }
}

/// Picks up where the record left off: a part in flight is sent again
/// (same idempotency key, same attempt number).
void resume(instance_ptr self) {
  auto& st = self->state;
  auto running = state_of(st.rec) == saga_state::running;
  for (size_t i = 0; i < st.busy.size(); ++i) {
    auto status = st.rec.steps(static_cast<int>(i)).status();
    if (status == pb::SagaStep::RUNNING && running) {
      st.busy[i] = 1;
      st.sends.push_back({i, part::action});
    } else if (status == pb::SagaStep::COMPENSATING) {
      st.busy[i] = 1;
      st.sends.push_back({i, part::compensation});
    } else if (status == pb::SagaStep::CONFIRMING) {
      st.busy[i] = 1;
      st.sends.push_back({i, part::confirm});
    }
  }
  advance(self);
}

bool any_busy(instance_ptr self) {
  auto& b = self->state.busy;
  return std::any_of(b.begin(), b.end(), [](char x) { return x != 0; });
}

caf::behavior saga_instance(instance_ptr self, broker::context_ptr ctx,
                            shared_env rt, pb::SagaRecord rec, bool fresh) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.rt = std::move(rt);
  st.type = &st.rt->reg.at(rec.type());
  st.rec = std::move(rec);
  st.busy.assign(static_cast<size_t>(st.rec.steps_size()), 0);
  st.waiting.assign(st.busy.size(), 0);
  if (!fresh) {
    st.stored = st.rec.SerializeAsString();
    st.stored_once = true;
    st.claimed = true;
  }
  if (st.rec.deadline_ms() > 0
      && state_of(st.rec) == saga_state::running) {
    auto left = std::max<int64_t>(0, st.rec.deadline_ms() - st.ctx->clock());
    self->delayed_send(self, milliseconds(left), wire::deadline_atom::value);
  }
  // Stopped from outside (the runtime stops): whoever waits is told.
  self->set_exit_handler([=](caf::exit_msg& em) {
    auto& st = self->state;
    auto err = make_error(errc::unavailable,
                          "saga " + st.rec.id()
                            + ": the saga runtime stopped; it resumes when "
                              "the node starts again");
    for (auto& [rp, existed] : st.on_stored)
      rp.deliver(err);
    for (auto& [rp, existed] : st.on_end)
      rp.deliver(err);
    for (auto& rp : st.after_write)
      rp.deliver(err);
    st.on_stored.clear();
    st.on_end.clear();
    st.after_write.clear();
    self->quit(em.reason);
  });
  if (fresh)
    advance(self);
  else
    resume(self);
  return {
    [=](wire::retry_atom, uint64_t gen, uint64_t i) {
      auto& st = self->state;
      if (gen == 0) { // a write failed: write again
        commit(self);
        return;
      }
      if (gen != st.timer_gen || i >= st.waiting.size())
        return;
      st.waiting[i] = 0;
      advance(self);
    },
    [=](pb::SagaStart& req) -> caf::result<pb::SagaStarted> {
      auto& st = self->state;
      bool existed = st.claimed;
      st.claimed = true;
      auto rp = self->make_response_promise<pb::SagaStarted>();
      if (req.wait())
        st.on_end.emplace_back(rp, existed);
      else if (!st.stored_once)
        st.on_stored.emplace_back(rp, existed);
      else {
        pb::SagaStarted out;
        out.set_existed(existed);
        *out.mutable_record() = st.rec;
        rp.deliver(std::move(out));
      }
      return rp;
    },
    [=](const pb::SagaCommand& c) -> caf::result<pb::SagaRecord> {
      auto& st = self->state;
      auto who = c.by().empty() ? std::string{"operator"} : c.by();
      auto state = state_of(st.rec);
      if (st.ended)
        return make_error(errc::invalid_argument,
                          "saga " + st.rec.id() + " is ending");
      auto reply = [=]() mutable {
        auto rp = self->make_response_promise<pb::SagaRecord>();
        self->state.after_write.push_back(rp);
        advance(self);
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
          if (std::none_of(st.waiting.begin(), st.waiting.end(),
                           [](char w) { return w != 0; }))
            return make_error(errc::invalid_argument,
                              "saga " + st.rec.id()
                                + ": no step waits for a retry");
          cancel_timers(self); // the pending backoff is not waited for
          note(self, "retry now, by " + who);
          return reply();
        case pb::SagaCommand::SKIP: {
          if (any_busy(self))
            return make_error(errc::invalid_argument,
                              "saga " + st.rec.id() + ": step in flight; "
                              "pause, wait for it, then skip");
          for (auto& s : *st.rec.mutable_steps()) {
            if (s.name() != c.step())
              continue;
            if (state == saga_state::running
                && s.status() != pb::SagaStep::DONE
                && s.status() != pb::SagaStep::CONFIRMING
                && s.status() != pb::SagaStep::CONFIRMED) {
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
            cancel_timers(self);
            note(self, "step " + c.step() + " skipped by " + who);
            return reply();
          }
          return make_error(errc::not_found, "saga " + st.rec.id()
                                               + " has no step '" + c.step()
                                               + "'");
        }
        case pb::SagaCommand::COMPENSATE: {
          if (state == saga_state::running) {
            if (auto why = cannot_compensate(self); !why.empty())
              return make_error(errc::invalid_argument,
                                "saga " + st.rec.id() + " can only go forward: "
                                  + why);
          }
          if (state != saga_state::running)
            return make_error(errc::invalid_argument,
                              "saga " + st.rec.id() + " is "
                                + to_string(state)
                                + "; only a running saga can be compensated");
          (void) to_compensating(self, "compensation forced by " + who);
          return reply();
        }
        default:
          return make_error(errc::invalid_argument, "unknown saga command");
      }
    },
    [=](wire::deadline_atom) {
      auto& st = self->state;
      if (state_of(st.rec) != saga_state::running || st.past_deadline)
        return;
      st.past_deadline = true;
      (void) to_compensating(self, "deadline passed");
      advance(self);
    },
  };
}

// -- saga_shard -----------------------------------------------------------------

struct shard_state {
  broker::context_ptr ctx;
  shared_env rt;
  uint32_t index = 0, count = 1;
  std::map<std::string, caf::actor> live;
  std::set<std::string> reopening; // failed sagas whose retry is being stored
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
  // Linked: if the shard crashes, its instances go with it, and the shard
  // that replaces it resumes them from LMDB (no saga runs twice).
  auto a = self->spawn<caf::linked>(saga_instance, st.ctx, st.rt,
                                    std::move(rec), fresh);
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
                         shared_env rt, uint32_t index, uint32_t count) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.rt = std::move(rt);
  st.index = index;
  st.count = count;
  // An instance that ends is handled by the down handler (restart from
  // storage), not by dying with it.
  self->set_exit_handler([](caf::exit_msg&) {});
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
        while (stable_hash(req.id()) % st.count != st.index);
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
      if (stable_hash(req.id()) % st.count != st.index)
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
          if (stable_hash(key) % st.count != st.index)
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
    [=](wire::stop_atom) {
      for (auto& [id, a] : self->state.live)
        self->send_exit(a, caf::exit_reason::user_shutdown);
      self->state.live.clear();
      self->quit();
    },
  };
}

// -- shard keeper -----------------------------------------------------------------

/// The stable handle of shard `index` (what the frontend and shard_for()
/// hand out): passes requests to the current shard and, when it crashes,
/// starts a new one after a short pause (its instances died with it; the
/// new one resumes every open saga of the shard from LMDB).
struct keeper_state {
  caf::actor current;
  bool stopping = false;
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
  auto start = [=] {
    auto& st = self->state;
    st.current = self->spawn(saga_shard, ctx, rt, index, count);
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

// -- outbox ---------------------------------------------------------------------

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

// -- participant directory ------------------------------------------------------

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

struct saga_runtime::impl {
  caf::actor_system* sys = nullptr;
  broker::context_ptr ctx;
  runtime_options opts;
  registry reg;
  std::vector<caf::actor> functions; // wrapped function participants
  std::vector<caf::actor> shards;
  std::shared_ptr<directory_table> table = std::make_shared<directory_table>();
  caf::actor directory;
  std::vector<caf::actor> outboxes;
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
  auto rt = std::make_shared<runtime_shared>();
  rt->reg = impl_->reg;
  rt->directory = impl_->table;
  rt->topics = impl_->opts.topics;
  for (uint32_t i = 0; i < impl_->opts.shards; ++i)
    rt->outboxes.push_back(impl_->sys->spawn(saga_outbox));
  impl_->outboxes = rt->outboxes;
  impl_->directory = impl_->sys->spawn(participant_directory, impl_->table);
  for (uint32_t i = 0; i < impl_->opts.shards; ++i)
    impl_->shards.push_back(impl_->sys->spawn(
      shard_keeper, impl_->ctx, shared_env{rt}, i, impl_->opts.shards));
}

void saga_runtime::stop() {
  for (auto& s : impl_->shards)
    caf::anon_send(s, wire::stop_atom::value);
  impl_->shards.clear();
  if (impl_->directory)
    caf::anon_send(impl_->directory, wire::stop_atom::value);
  for (auto& o : impl_->outboxes)
    caf::anon_send(o, wire::stop_atom::value);
  impl_->outboxes.clear();
  impl_->directory = nullptr;
  for (auto& f : impl_->functions)
    caf::anon_send_exit(f, caf::exit_reason::user_shutdown);
  impl_->functions.clear();
}

caf::actor saga_runtime::shard_for(const std::string& saga_id) const {
  if (impl_->shards.empty())
    return {};
  return impl_->shards[stable_hash(saga_id) % impl_->shards.size()];
}

const caf::actor& saga_runtime::directory() const {
  return impl_->directory;
}

const std::vector<caf::actor>& saga_runtime::shards() const {
  return impl_->shards;
}

} // namespace edda::sagas
