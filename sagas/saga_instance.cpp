#include "sagas/saga_instance.hpp"

#include "base/errc.hpp"
#include "base/failpoint.hpp"
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
#include <functional>
#include <optional>

namespace edda::sagas {

namespace {

namespace pb = wire::pb;
using storage::db;
using std::chrono::milliseconds;

/// The three things a step can be asked to do.
enum class part { action, compensation, confirm };

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
  // Per step: its action's named participant is served, as the shard last
  // said (empty if no action is named).
  std::vector<char> served;
  std::vector<uint32_t> wait_seq; // per step: participant waits woken
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
  // A remote message step's transaction being committed: the saga waits
  // for it (a later message to the same key must not overtake it).
  std::string committing;
  std::function<void()> after_commit;
  bool ended = false;      // the next write ends the saga
  bool stored_once = false;
  bool claimed = false;    // the start that created it has been answered
  std::vector<std::pair<caf::response_promise, bool>> on_stored, on_end;
  static inline const char* name = "edda.saga_instance";
};

using instance_ptr = caf::stateful_actor<instance_state>*;

void note(instance_ptr self, std::string what) {
  auto* e = self->state.rec.add_history();
  e->set_at_ms(self->state.ctx->clock());
  e->set_what(std::move(what));
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
  EDDA_INFO_F("saga", "saga " << st.rec.id() << " (" << st.rec.type()
                              << ") compensating: " << reason,
              {"saga_id", st.rec.id()}, {"saga_type", st.rec.type()});
  return {};
}

void on_reply(instance_ptr self, size_t i, part p, bool ok,
              std::string output, std::string error, bool retryable);

/// How long participants take to answer part `p` (sent to reply, a
/// timeout included).
metrics::histogram& step_latency(part p) {
  static auto& action = metrics::latency("sagas.step", "part", "action");
  static auto& compensation = metrics::latency("sagas.step", "part",
                                               "compensation");
  static auto& confirm = metrics::latency("sagas.step", "part", "confirm");
  return p == part::action         ? action
         : p == part::compensation ? compensation
                                   : confirm;
}

/// How long sagas take from start to end, by the state they ended in.
metrics::histogram& duration_latency(saga_state s) {
  static auto& completed = metrics::latency("sagas.duration", "state",
                                            to_string(saga_state::completed));
  static auto& compensated = metrics::latency(
    "sagas.duration", "state", to_string(saga_state::compensated));
  if (s == saga_state::completed)
    return completed;
  if (s == saga_state::compensated)
    return compensated;
  return metrics::latency("sagas.duration", "state", to_string(s)); // rare
}

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
  // A named participant: the outbox picks one of those serving the name
  // (in turn) and answers for it if nobody does.
  if (!who.name().empty()) {
    auto& outboxes = st.rt->outboxes;
    target = outboxes[shard_of(st.rec.id(), outboxes.size())];
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
  auto began = std::chrono::steady_clock::now();
  self->request(target, def.options.timeout, std::move(cmd))
    .then(
      [=](pb::StepReply& r) {
        step_latency(p).observe(std::chrono::steady_clock::now() - began);
        on_reply(self, i, p, r.ok(), std::move(*r.mutable_output()),
                 std::move(*r.mutable_error()), r.retryable());
      },
      [=](caf::error& err) {
        step_latency(p).observe(std::chrono::steady_clock::now() - began);
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
  s.clear_txn_id();
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

/// The step no longer waits for its participant.
void clear_wait(pb::SagaStep& s) {
  s.set_waiting_since_ms(0);
  s.clear_waiting_for();
}

/// A participant wait's timer: the step, marked, with its wait's sequence
/// (a registration bumps it: that timer then finds nothing to do, and
/// never cuts a later retry backoff short).
uint64_t wait_timer(size_t i, uint32_t seq) {
  return (uint64_t{1} << 63) | (uint64_t{seq & 0x7fffffffu} << 32)
         | uint64_t{i};
}

/// An attempt of a step's action begins.
void begin_attempt(pb::SagaStep& s, int64_t now) {
  s.set_status(pb::SagaStep::RUNNING);
  s.set_attempts(s.attempts() + 1);
  if (s.started_ms() == 0)
    s.set_started_ms(now);
}

void start_action(instance_ptr self, size_t i) {
  auto& st = self->state;
  if (st.type->def->steps()[i].is_message()) {
    start_emit(self, i);
    return;
  }
  auto& s = step_at(self, i);
  auto& def = st.type->def->steps()[i];
  auto& name = def.action.name();
  auto now = st.ctx->clock();
  // A named participant that is not registered now: the step waits for
  // one (participant_wait; a registration wakes it, see serving_atom),
  // then the attempt fails unsent (an action never sent needs no undo).
  if (!name.empty() && !st.served[i]) {
    auto wait = def.options.participant_wait.count();
    if (wait > 0) {
      if (s.waiting_since_ms() == 0) {
        s.set_waiting_since_ms(now);
        s.set_waiting_for(name);
        note(self, "step " + s.name() + " waits for participant '" + name
                     + "' to register (at most "
                     + std::to_string(wait / 1000) + " s)");
      }
      // The wait is the step's, not each attempt's: once it is over, the
      // attempts left fail at once.
      auto left = s.waiting_since_ms() + wait - now;
      if (left > 0) {
        st.waiting[i] = 1;
        st.timers.push_back(instance_state::timer{
          wait_timer(i, st.wait_seq[i]), milliseconds(left), st.timer_gen});
        return;
      }
    }
    begin_attempt(s, now);
    s.set_unsent(s.unsent() + 1);
    fail_attempt(self, i, part::action,
                 "no participant '" + name + "' is registered"
                   + (wait > 0 ? " (waited " + std::to_string(wait / 1000)
                                   + " s)"
                               : std::string{}),
                 true);
    return;
  }
  if (s.waiting_since_ms() != 0) {
    note(self, "participant '" + name + "' registered after "
                 + std::to_string(now - s.waiting_since_ms())
                 + " ms: step " + s.name() + " goes on");
    clear_wait(s);
  }
  begin_attempt(s, now);
  st.busy[i] = 1; // until the reply, even while the write is pending
  st.sends.push_back({i, part::action});
}

void start_compensation(instance_ptr self, size_t i) {
  auto& s = step_at(self, i);
  clear_wait(s);
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

/// Commits the transaction of a remote message step, then runs
/// `after_commit`. Until the home confirms, the saga waits, asking again
/// every second (an end is idempotent; the home's check-back, answered
/// from the stored record, may settle it first: then the end says
/// `already`). A message of a later step to the same key so never
/// overtakes this one.
void end_remote(instance_ptr self, const std::string& txn,
                milliseconds timeout) {
  pb::EndTxn e;
  e.set_txn_id(txn);
  e.set_outcome(pb::TXN_COMMIT);
  auto id = self->state.rec.id();
  auto proceed = [self, txn] {
    auto& st = self->state;
    if (st.committing != txn)
      return;
    st.committing.clear();
    auto then = std::move(st.after_commit);
    st.after_commit = nullptr;
    if (then)
      then();
  };
  self->request(self->state.rt->topics, timeout, std::move(e))
    .then(
      [proceed](const pb::EndResult&) mutable {
        metrics::counter("sagas.remote_commits")++;
        proceed();
      },
      [self, id, txn, proceed](caf::error& err) mutable {
        if (code_of(err) == errc::txn_conflict) {
          // Rolled back although the step is recorded: only an operator's
          // resolve or the final policy can do that. Say so loudly.
          metrics::counter("sagas.remote_commits_refused")++;
          EDDA_ERROR("saga", id << ": transaction " << txn
                                << " of a recorded message step was rolled "
                                   "back by someone else: "
                                << render(err));
          self->state.ctx->alerts->raise(
            alert{"saga_message_lost", id,
                  "saga " + id + ": the message of transaction " + txn
                    + " was rolled back after its step was recorded",
                  "", self->state.ctx->clock()});
          proceed();
          return;
        }
        metrics::counter("sagas.remote_commits_pending")++;
        EDDA_INFO("saga", id << ": the commit of transaction " << txn
                             << " was not confirmed (" << render(err)
                             << "); asking again in 1 s");
        self->delayed_send(self, std::chrono::seconds(1),
                           wire::flush_atom::value, txn);
      });
}

/// A reliable-message step whose partition lives on another node (the
/// topic manager answered not_owner to the append that would carry the
/// saga's write): the transactional-message protocol instead of one local
/// LMDB transaction. The half message is stored on the partition's home;
/// then the step is recorded done with the transaction's id (the saga's
/// own write); then the transaction is committed. Should this node stop in
/// between, the home's check-back settles it from the stored record: commit
/// if the step is recorded with this transaction, roll back if its attempt
/// was recorded without it.
template <class Stored, class Failed>
void emit_remote(instance_ptr self, size_t i, const pb::Message& msg,
                 std::string written, milliseconds timeout, Stored stored,
                 Failed failed) {
  auto& st = self->state;
  auto& s = step_at(self, i);
  pb::HalfMessage h;
  h.set_txn_id(new_unique_id());
  h.set_producer_group(saga_producer_group(st.ctx->node_id));
  h.set_client_id(st.ctx->node_id);
  *h.mutable_message() = msg;
  auto& props = *h.mutable_message()->mutable_properties();
  props["saga_step"] = s.name();
  props["saga_attempt"] = std::to_string(s.attempts());
  props["saga_boot"] = st.rt->boot;
  auto h_id = msg.id();
  auto h_topic = msg.topic();
  self->request(st.rt->topics, timeout, std::move(h))
    .then(
      [=](const pb::HalfAck& ack) mutable {
        EDDA_FAILPOINT("saga.after_remote_half");
        auto& st = self->state;
        auto txn = ack.txn_id();
        // What commit() was writing, with the transaction: not the record
        // as it is now (another message step of the group may have been
        // marked done meanwhile, its message not sent yet).
        auto output = "message " + h_id + " to " + h_topic + " (transaction "
                      + txn + ")";
        pb::SagaRecord rec;
        if (!rec.ParseFromString(written)
            || rec.steps_size() <= static_cast<int>(i)) {
          failed(make_error(errc::storage_error,
                            "saga record unreadable before its write"));
          return;
        }
        for (auto* r : {&rec, &st.rec}) {
          auto* s = r->mutable_steps(static_cast<int>(i));
          s->set_txn_id(txn);
          s->set_output(output);
        }
        st.stored = rec.SerializeAsString();
        self
          ->request(st.ctx->writer, timeout,
                    record_write(st.rec.id(), st.stored))
          .then(
            [=](const pb::WriteResult&) mutable {
              EDDA_FAILPOINT("saga.before_remote_commit");
              auto& st = self->state;
              st.committing = txn;
              st.after_commit = stored;
              end_remote(self, txn, timeout);
            },
            [=](caf::error& err) mutable {
              failed(err);
              // The write may have landed after all (failed() reads it):
              // then the message goes too; else the check-back rolls the
              // transaction back once the attempt is recorded without it.
              auto& s = step_at(self, i);
              if (s.status() == pb::SagaStep::DONE && s.txn_id() == txn
                  && self->state.committing.empty()) {
                self->state.committing = txn;
                end_remote(self, txn, timeout);
              }
            });
      },
      [=](caf::error& err) mutable { failed(err); });
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
  // Another message step of the same group may start while this write is
  // pending: keep this one's message.
  auto emit_msg = emit >= 0 ? std::make_shared<const pb::Message>(st.emit_msg)
                            : nullptr;
  auto written = st.stored; // the bytes this write stores
  bool final = st.ended && is_terminal(state_of(st.rec));
  auto stored = [=]() mutable {
    auto& st = self->state;
    st.writing = false;
    if (!st.stored_once) {
      st.stored_once = true;
      metrics::counter("sagas.started")++;
      EDDA_INFO_F("saga", "saga " << st.rec.id() << " (" << st.rec.type()
                                  << ") started",
                  {"saga_id", st.rec.id()}, {"saga_type", st.rec.type()});
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
      // Start to end by the wall clock (a restart in between included).
      auto took_ms = std::max<int64_t>(0, st.ctx->clock() - st.rec.created_ms());
      duration_latency(s).observe(static_cast<double>(took_ms) / 1000.0);
      EDDA_INFO_F("saga", "saga " << st.rec.id() << " (" << st.rec.type()
                                  << ") " << to_string(s) << " in " << took_ms
                                  << " ms"
                                  << (st.rec.reason().empty()
                                        ? std::string{}
                                        : ": " + st.rec.reason()),
                  {"saga_id", st.rec.id()}, {"saga_type", st.rec.type()},
                  {"state", to_string(s)});
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
      s.clear_txn_id();
      s.set_finished_ms(0);
      fail_attempt(self, i, part::action,
                   "message to " + emit_msg->topic()
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
    app.set_topic(emit_msg->topic());
    app.set_partition(-1); // by key
    *app.add_messages() = *emit_msg;
    *app.mutable_extra() = record_write(st.rec.id(), st.stored);
    self->request(st.rt->topics, timeout, std::move(app))
      .then(
        [=](const pb::ProduceResult& r) mutable {
          auto& s = step_at(self, static_cast<size_t>(emit));
          s.set_output(emit_msg->topic() + "/"
                       + std::to_string(r.partition()) + "/"
                       + std::to_string(r.offsets_size() > 0 ? r.offsets(0)
                                                             : 0));
          stored();
        },
        [=](caf::error& err) mutable {
          if (code_of(err) == errc::not_owner && self->state.ctx->clustered())
            emit_remote(self, static_cast<size_t>(emit), *emit_msg,
                        std::move(written), timeout, stored, failed);
          else
            failed(err);
        });
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
    // A step waiting for its participant waits on (advance, start_action).
    if (status == pb::SagaStep::RUNNING && running
        && st.rec.steps(static_cast<int>(i)).waiting_since_ms() == 0) {
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
  // A remote message step recorded before a restart may not have been
  // committed: commit it again (idempotent) rather than wait for the
  // check-back. (Not waited for: a message step after it can overtake it
  // only if this node died between the record and the commit.)
  for (auto& s : st.rec.steps())
    if (!s.txn_id().empty() && s.status() != pb::SagaStep::FAILED) {
      pb::EndTxn e;
      e.set_txn_id(s.txn_id());
      e.set_outcome(pb::TXN_COMMIT);
      self->request(st.rt->topics, milliseconds(st.ctx->write_timeout_ms), e)
        .then([](const pb::EndResult&) {}, [](caf::error&) {});
    }
  advance(self);
}

bool any_busy(instance_ptr self) {
  auto& b = self->state.busy;
  return std::any_of(b.begin(), b.end(), [](char x) { return x != 0; });
}

caf::behavior saga_instance(instance_ptr self, broker::context_ptr ctx,
                            shared_env rt, pb::SagaRecord rec, bool fresh,
                            std::vector<char> served) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.rt = std::move(rt);
  st.type = &st.rt->reg.at(rec.type());
  st.rec = std::move(rec);
  st.busy.assign(static_cast<size_t>(st.rec.steps_size()), 0);
  st.waiting.assign(st.busy.size(), 0);
  st.wait_seq.assign(st.busy.size(), 0);
  st.served = std::move(served);
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
    [=](wire::flush_atom, const std::string& txn) {
      // Ask again for the commit of a remote message step's transaction.
      if (self->state.committing == txn)
        end_remote(self, txn, milliseconds(self->state.ctx->write_timeout_ms));
    },
    [=](wire::retry_atom, uint64_t gen, uint64_t i) {
      auto& st = self->state;
      if (gen == 0) { // a write failed: write again
        commit(self);
        return;
      }
      if (gen != st.timer_gen)
        return;
      if ((i >> 63) != 0) { // a participant wait's timer
        auto step = static_cast<size_t>(i & 0xffffffffu);
        auto seq = static_cast<uint32_t>((i >> 32) & 0x7fffffffu);
        if (step >= st.waiting.size() || seq != (st.wait_seq[step] & 0x7fffffffu))
          return; // woken by a registration meanwhile
        i = step;
      }
      if (i >= st.waiting.size())
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
      // Every command taken is an operator's action: an audit line.
      auto reply = [=](const std::string& action) mutable {
        EDDA_INFO_F("audit", "saga " << self->state.rec.id() << ": " << action
                                     << " by " << who,
                    {"action", "saga " + action}, {"saga_id", self->state.rec.id()},
                    {"by", who});
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
          return reply("pause");
        case pb::SagaCommand::RESUME:
          if (!st.rec.paused())
            return st.rec;
          st.rec.set_paused(false);
          note(self, "resumed by " + who);
          return reply("resume");
        case pb::SagaCommand::RETRY:
          if (std::none_of(st.waiting.begin(), st.waiting.end(),
                           [](char w) { return w != 0; }))
            return make_error(errc::invalid_argument,
                              "saga " + st.rec.id()
                                + ": no step waits for a retry");
          cancel_timers(self); // the pending backoff is not waited for
          note(self, "retry now, by " + who);
          return reply("retry");
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
            clear_wait(s);
            cancel_timers(self);
            note(self, "step " + c.step() + " skipped by " + who);
            return reply("skip " + c.step());
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
          return reply("compensate");
        }
        default:
          return make_error(errc::invalid_argument, "unknown saga command");
      }
    },
    [=](wire::serving_atom, const std::string& name, bool served) {
      // From the shard: `name` is served now, or no longer. A step waiting
      // for it goes on at once.
      auto& st = self->state;
      auto& steps = st.type->def->steps();
      bool wake = false;
      for (size_t i = 0; i < st.served.size(); ++i)
        if (steps[i].action.name() == name) {
          st.served[i] = served;
          if (served && st.waiting[i] && !st.busy[i]
              && st.rec.steps(static_cast<int>(i)).waiting_since_ms() != 0) {
            st.waiting[i] = 0;
            st.wait_seq[i]++; // its wait timer finds nothing to do
            wake = true;
          }
        }
      if (wake)
        advance(self);
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

} // namespace

caf::actor spawn_saga_instance(caf::local_actor* shard,
                               broker::context_ptr ctx, shared_env rt,
                               pb::SagaRecord rec, bool fresh,
                               std::vector<char> served) {
  return shard->spawn<caf::linked>(saga_instance, std::move(ctx),
                                   std::move(rt), std::move(rec), fresh,
                                   std::move(served));
}

} // namespace edda::sagas
