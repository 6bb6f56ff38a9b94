// Saga definitions: a named, ordered list of steps, each with a participant
// that does it, a compensation that undoes it, a retry policy and a timeout.
//
//   saga_definition buy("fund_purchase");
//   buy.step("redeem_money_market", wallet.redeem, wallet.refund)
//      .step("buy_target_fund", fund.buy, fund.sell_back)
//      .step("credit_points", points.add, points.remove, {.parallel = true})
//      .message_step("voucher", voucher_message)
//      .step("notify", notifier.send, nullptr, {.best_effort = true})
//      .deadline(std::chrono::minutes(5));
//
// Steps run in order; a step marked `parallel` runs alongside the step
// before it (a group), and the next group starts once the whole group has
// succeeded.
//
// Every command a participant receives carries the idempotency key
// "<saga id>/<step>", the same on every attempt and for the compensation,
// so that a participant applies each step at most once.
//
// States (fixed numbers, stored in LMDB):
//
//   running --all steps done---------------------------> completed
//      |
//      | a step failed after its retries, or the deadline passed
//      v
//   compensating --every attempted step compensated----> compensated
//      |
//      | a compensation failed after its retries
//      v
//   failed (listed, alerted: an operator decides)
//
// Compensation runs in reverse order over every step that was attempted,
// group by group (the steps of one group are compensated together, once
// none of them has an action in flight), including the one that failed (its
// last attempt may have been applied before a timeout), so a compensation
// must tolerate an action that never happened ("empty compensation").
#pragma once

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

namespace edda::sagas {

enum class saga_state : uint32_t {
  running = 1,
  compensating = 2,
  completed = 3,
  compensated = 4,
  failed = 5,
};

[[nodiscard]] const char* to_string(saga_state x);
[[nodiscard]] bool is_terminal(saga_state x);
/// The name of a stored state (SagaRecord.state); "unknown" outside 1..5.
[[nodiscard]] const char* state_name(uint32_t state);
/// The stored state named `name` ("running", ...); 0 when none is.
[[nodiscard]] uint32_t state_number(const std::string& name);
/// The name of a step's status (SagaStep.status), as operators read it
/// ("gave up", "compensation failed"); "unknown" for another number.
[[nodiscard]] const char* step_status_name(uint32_t status);

struct retry_policy {
  uint32_t max_attempts = 3; ///< including the first
  std::chrono::milliseconds initial_backoff{200};
  double multiplier = 2.0;
  std::chrono::milliseconds max_backoff{10000};
  /// Failures whose error starts with one of these are not retried.
  std::vector<std::string> non_retryable;

  /// The pause before attempt `attempt + 1` (attempt >= 1).
  [[nodiscard]] std::chrono::milliseconds backoff(uint32_t attempt) const;
};

/// What a participant is asked to do.
struct step_request {
  std::string saga_id;
  std::string saga_type;
  std::string step;
  std::string idempotency_key; ///< "<saga id>/<step>"
  std::string input;           ///< the saga's input
  /// The outputs of the steps that succeeded so far, by step name.
  std::map<std::string, std::string> outputs;
  uint32_t attempt = 1;
  bool compensate = false; ///< the compensation (TCC: the cancel)
  bool confirm = false;    ///< TCC: the confirm
};

struct step_result {
  bool ok = false;
  std::string output;
  std::string error;
  bool retryable = true;

  [[nodiscard]] static step_result success(std::string output = {});
  [[nodiscard]] static step_result failure(std::string error,
                                           bool retryable = true);
};

using step_function = std::function<step_result(const step_request&)>;

/// Who carries out a step: a function (edda wraps it in an actor; an
/// exception counts as a retryable failure), an actor that answers
/// wire::v1::StepCommand with wire::v1::StepReply, or a name that a
/// participant process registers with the node at run time
/// (participant_host, sagas/remote.hpp). A named participant that is not
/// registered yet fails the attempt (retryable).
class participant {
public:
  participant() = default;
  participant(step_function f); // NOLINT: implicit on purpose
  /// Any callable taking a step_request and returning a step_result.
  template <class F,
            class = std::enable_if_t<
              std::is_invocable_r_v<step_result, F, const step_request&>
              && !std::is_same_v<std::decay_t<F>, step_function>
              && !std::is_same_v<std::decay_t<F>, participant>>>
  participant(F f) // NOLINT: implicit on purpose
    : participant(step_function{std::move(f)}) {
  }
  participant(std::nullptr_t) {} // NOLINT: "no participant"
  [[nodiscard]] static participant of(caf::actor a);
  /// 1-120 of [A-Za-z0-9_.-], e.g. "ledger.debit".
  [[nodiscard]] static participant named(std::string name);

  [[nodiscard]] bool empty() const {
    return !fn_ && !actor_ && name_.empty();
  }
  [[nodiscard]] const step_function& function() const { return fn_; }
  [[nodiscard]] const caf::actor& actor() const { return actor_; }
  [[nodiscard]] const std::string& name() const { return name_; }

private:
  step_function fn_;
  caf::actor actor_;
  std::string name_;
};

/// 1-120 of [A-Za-z0-9_.-].
[[nodiscard]] bool valid_participant_name(const std::string& name);

/// The message a reliable-message step sends.
struct outgoing_message {
  std::string topic;
  std::string body;
  std::string key; ///< empty: the saga id (same saga, same partition)
  std::vector<std::string> tags;
  std::map<std::string, std::string> properties;
};

/// Checks a saga's input when it is started: what is wrong, or "" if the
/// input is fine. A start with bad input is refused (invalid_argument).
using input_check = std::function<std::string(const std::string& input)>;

/// An input_check: the input is one JSON value (RFC 8259 syntax; nesting at
/// most 64 deep).
[[nodiscard]] std::string check_json(const std::string& input);

/// Builds a reliable-message step's message from the saga's input and the
/// outputs so far. An exception fails the attempt (retryable).
using message_builder = std::function<outgoing_message(const step_request&)>;

struct step_options {
  retry_policy retry;
  std::chrono::milliseconds timeout{5000}; ///< per attempt
  /// false: the step has no compensation. Only the last step may be so (a
  /// pivot: once it succeeded nothing after it can fail).
  bool compensable = true;
  /// A best-effort notification: tried on the retry schedule, then given
  /// up (status GAVE_UP, recorded, the saga goes on); never compensated, so it needs no
  /// compensation and may stand anywhere. The receiver reconciles through
  /// the saga's state (`SagaGet`, `edda saga show`).
  bool best_effort = false;
  /// Runs alongside the step before it: the two (and any further parallel
  /// steps) form a group that starts together; the saga goes on once every
  /// step of the group has succeeded.
  bool parallel = false;
  /// A named participant that is not registered when the step starts: the
  /// step waits this long for one (status pending, `waiting_for` in the
  /// record, `saga show` says so), then its attempt fails as when this is
  /// 0 (at once, retried by the policy). Declared types take
  /// saga.participant_wait.
  std::chrono::milliseconds participant_wait{0};
};

struct step_definition {
  std::string name;
  participant action;       ///< TCC: the try
  participant compensation; ///< TCC: the cancel
  participant confirm;      ///< TCC only
  step_options options;
  message_builder message;  ///< reliable-message steps only
  uint32_t group = 0;       ///< steps of one group run together
  [[nodiscard]] bool is_tcc() const { return !confirm.empty(); }
  [[nodiscard]] bool is_message() const { return static_cast<bool>(message); }
  /// Compensated on the way back.
  [[nodiscard]] bool compensable() const {
    return !compensation.empty() && !options.best_effort;
  }
};

class saga_definition {
public:
  explicit saga_definition(std::string name);

  saga_definition& step(std::string name, participant action,
                        participant compensation, step_options options = {});
  /// A TCC step: `try_` reserves, and once every step of the saga has
  /// succeeded each TCC step is confirmed (in order; a confirm is retried by
  /// the step's policy and a confirm that keeps failing leaves the saga
  /// failed). On the way back the reservation is cancelled. The participant
  /// sees the same idempotency key in all three; tcc_fence gives it the
  /// guards against a cancel without try and a try after its cancel.
  saga_definition& tcc_step(std::string name, participant try_,
                            participant confirm, participant cancel,
                            step_options options = {});
  /// A reliable-message step: the message is appended to its topic in the
  /// same LMDB transaction that records the step as done, so it is sent if
  /// and only if the step committed (no half message, no check-back). The
  /// compensation, if given, runs on the way back (a message cannot be
  /// unsent: typically it sends a reversal); without one the step is a
  /// pivot, after which only best-effort steps may follow. A failed append
  /// (unknown topic, full map) is retried by the policy.
  saga_definition& message_step(std::string name, message_builder build,
                                participant compensation = nullptr,
                                step_options options = {});
  /// The whole saga must end within `d` of its start, else it compensates.
  saga_definition& deadline(std::chrono::milliseconds d);
  /// Refuses starts whose input `check` finds wrong (e.g. check_json).
  saga_definition& input(input_check check);

  /// Errors (invalid_saga): no name, no steps, a duplicate or empty step
  /// name, a step without action, a compensable step without compensation,
  /// a step without compensation followed by one that is not best-effort, a
  /// parallel first step or message step, a bad participant name, a retry
  /// policy or timeout out of range.
  [[nodiscard]] caf::error validate() const;

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] const std::vector<step_definition>& steps() const {
    return steps_;
  }
  [[nodiscard]] std::chrono::milliseconds deadline() const { return deadline_; }
  [[nodiscard]] const input_check& input_checker() const { return input_; }
  [[nodiscard]] uint32_t groups() const {
    return steps_.empty() ? 0 : steps_.back().group + 1;
  }

private:
  saga_definition& add(step_definition s);

  std::string name_;
  std::vector<step_definition> steps_;
  std::chrono::milliseconds deadline_{0};
  input_check input_;
};

using definition_ptr = std::shared_ptr<const saga_definition>;

/// A saga type declared in text (the node's `saga.types` setting), every
/// step served by named participants, so that `edda node` runs it without
/// C++ on the node's side:
///
///   "transfer = debit, credit, +points, notify~"
///
/// Step S of type T is done by "T.S" and compensated by "T.S.undo"; `+S`
/// runs alongside the step before it, `S~` is best effort (no
/// compensation), `S!` has no compensation (only best-effort steps may
/// follow). `S>TOPIC` is a reliable-message step: the saga's input, keyed
/// by the saga id, is appended to TOPIC with the write that records the
/// step done (compensated by "T.S.undo"; `S>TOPIC!`: not compensable).
/// Every step gets `defaults`; the input must be empty or JSON.
/// Errors: invalid_saga.
[[nodiscard]] caf::expected<saga_definition>
declared_saga(const std::string& spec, const step_options& defaults = {});

/// The participant side of a TCC step (Seata's "fence"), per idempotency
/// key: a cancel that arrives before (or without) its try is an empty
/// rollback, and a try that arrives after its cancel must not reserve
/// anything. Thread-safe; in memory (a participant that restarts keeps
/// these records in its own database, next to the reservation).
class tcc_fence {
public:
  enum class phase { none, tried, confirmed, cancelled };

  /// True: reserve now. False: this key was cancelled already (a late try)
  /// or tried already (a repeat): do nothing, answer success for a repeat.
  [[nodiscard]] bool begin_try(const std::string& key);
  /// True: confirm the reservation now. False: confirmed already.
  [[nodiscard]] bool begin_confirm(const std::string& key);
  /// True: release the reservation now. False: nothing was reserved (empty
  /// rollback) or it was cancelled already; either way answer success.
  [[nodiscard]] bool begin_cancel(const std::string& key);
  [[nodiscard]] phase of(const std::string& key) const;

private:
  mutable std::mutex mtx_;
  std::map<std::string, phase> phases_;
};

} // namespace edda::sagas
