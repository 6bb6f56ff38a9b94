// Sagas on CAF's deterministic scheduler with virtual time and a real LMDB
// in a temp dir: definitions, the forward path, retries with backoff,
// timeouts, compensation in reverse order, the deadline, failed
// compensations, idempotent start and recovery from the stored state.
#include "../broker/fixture.hpp"

#include "sagas/runtime.hpp"
#include "sagas/saga_checker.hpp"
#include "sagas/saga.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>

namespace edda::testing {
namespace {

using sagas::participant;
using sagas::saga_definition;
using sagas::saga_state;
using sagas::step_options;
using sagas::step_request;
using sagas::step_result;

/// What participants saw, in order: "debit:<key>:<attempt>", "~debit:..."
/// for compensations.
struct journal {
  std::vector<std::string> calls;
  sagas::step_function record(const std::string& tag, step_result result) {
    return [this, tag, result](const step_request& r) {
      calls.push_back((r.compensate ? "~" : "") + tag + ":" + r.idempotency_key
                      + ":" + std::to_string(r.attempt));
      return result;
    };
  }
};

step_options fast(uint32_t attempts = 3) {
  step_options o;
  o.retry.max_attempts = attempts;
  o.retry.initial_backoff = milliseconds(100);
  o.retry.multiplier = 2.0;
  o.retry.max_backoff = milliseconds(1000);
  o.timeout = milliseconds(500);
  return o;
}

/// An actor participant that never answers (its promises are kept open).
caf::behavior silent(caf::event_based_actor* self,
                     std::shared_ptr<std::vector<std::string>> seen) {
  auto kept = std::make_shared<std::vector<caf::response_promise>>();
  return {
    [=](const pb::StepCommand& c) {
      seen->push_back(c.idempotency_key() + ":" + std::to_string(c.attempt()));
      kept->push_back(self->make_response_promise());
      return kept->back();
    },
  };
}

/// An actor participant that holds every command until the test releases
/// it: (step, ok) answers every held command of that step (a timed-out
/// one's answer is dropped by CAF).
caf::behavior gate(caf::event_based_actor* self,
                   std::shared_ptr<std::vector<std::string>> seen) {
  using held = std::pair<std::string, caf::response_promise>;
  auto kept = std::make_shared<std::vector<held>>();
  return {
    [=](const pb::StepCommand& c) {
      seen->push_back(std::string(c.compensate() ? "~" : "") + c.step() + ":"
                      + std::to_string(c.attempt()));
      kept->emplace_back(c.step(), self->make_response_promise());
      return kept->back().second;
    },
    [=](const std::string& step, bool ok) {
      for (auto i = kept->begin(); i != kept->end();) {
        if (i->first != step) {
          ++i;
          continue;
        }
        pb::StepReply r;
        r.set_ok(ok);
        r.set_error(ok ? "" : "refused");
        r.set_retryable(false);
        i->second.deliver(r);
        i = kept->erase(i);
      }
    },
  };
}

/// A participant that answers every command, counting them per `who`, and
/// registers `name` with the directory it is sent.
caf::behavior counting(caf::event_based_actor* self,
                       std::shared_ptr<std::map<int, int>> served, int who,
                       std::string name) {
  return {
    [=](const pb::StepCommand&) {
      ++(*served)[who];
      pb::StepReply r;
      r.set_ok(true);
      return r;
    },
    [=](const caf::actor& directory) {
      pb::ParticipantRegister reg;
      reg.add_names(name);
      self->request(directory, std::chrono::seconds(1), reg)
        .then([](const pb::ParticipantRegistered&) {});
    },
  };
}

class SagaTest : public DeterministicFixture {
protected:
  ~SagaTest() override {
    rt_.reset();
    sched_.run();
  }

  void start_runtime(std::vector<saga_definition> defs,
                     caf::actor topics = {}, int64_t retention_ms = -1) {
    sagas::runtime_options o;
    o.shards = 2;
    o.detached_participants = false;
    o.topics = std::move(topics);
    auto ctx = ctx_;
    if (retention_ms >= 0) {
      auto c = std::make_shared<broker::context>(*ctx_);
      c->settings.saga_retention_ms = static_cast<uint64_t>(retention_ms);
      ctx = c;
    }
    rt_ = std::make_unique<sagas::saga_runtime>(sys_, ctx, o);
    for (auto& d : defs)
      ASSERT_FALSE(rt_->add(std::move(d)));
    rt_->start();
    sched_.run();
  }

  std::optional<pb::SagaStarted> start(const std::string& type,
                                       const std::string& id,
                                       const std::string& input = "{}") {
    pb::SagaStart s;
    s.set_type(type);
    s.set_id(id);
    s.set_input(input);
    self_->send(rt_->shard_for(id), s);
    return next<pb::SagaStarted>(self_);
  }

  pb::SagaRecord get(const std::string& id) {
    pb::SagaGet g;
    g.set_id(id);
    self_->send(rt_->shard_for(id), g);
    auto r = next<pb::SagaRecord>(self_);
    EXPECT_TRUE(r) << "no record for " << id;
    return r ? *r : pb::SagaRecord{};
  }

  saga_state state(const std::string& id) {
    return static_cast<saga_state>(get(id).state());
  }

  /// Sends an operator command; the saga after it, or the error.
  caf::expected<pb::SagaRecord> command(const std::string& id,
                                        pb::SagaCommand::Op op,
                                        const std::string& step = {}) {
    pb::SagaCommand cmd;
    cmd.set_id(id);
    cmd.set_op(op);
    cmd.set_step(step);
    cmd.set_by("operator:test");
    self_->send(rt_->shard_for(id), cmd);
    sched_.run();
    std::optional<pb::SagaRecord> rec;
    caf::error err = make_error(errc::timeout, "no answer to the command");
    self_->receive([&](pb::SagaRecord& r) { rec = std::move(r); },
                   [&](caf::error& e) { err = std::move(e); },
                   caf::after(std::chrono::seconds(0)) >> [] {});
    if (rec)
      return std::move(*rec);
    return err;
  }

  bool in_history(const std::string& id, const std::string& what) {
    auto rec = get(id);
    for (auto& e : rec.history())
      if (e.what().find(what) != std::string::npos)
        return true;
    return false;
  }

  std::unique_ptr<sagas::saga_runtime> rt_;
  journal j_;
};

saga_definition three_steps(journal& j, step_result third,
                            step_options third_opts = fast()) {
  saga_definition d("transfer");
  d.step("debit", j.record("debit", step_result::success("d1")),
         j.record("debit", step_result::success()), fast())
    .step("credit", j.record("credit", step_result::success()),
          j.record("credit", step_result::success()), fast())
    .step("voucher", j.record("voucher", third),
          j.record("voucher", step_result::success()), third_opts);
  return d;
}

// -- definitions ----------------------------------------------------------------

TEST(SagaDefinition, ValidationNamesWhatIsWrong) {
  auto ok = [](const step_request&) { return step_result::success(); };
  auto msg = [](const saga_definition& d) {
    auto err = d.validate();
    return err ? render(err) : std::string{"ok"};
  };
  saga_definition good("pay");
  good.step("a", ok, ok).step("b", ok, nullptr, [] {
    step_options o;
    o.compensable = false;
    return o;
  }());
  EXPECT_EQ(msg(good), "ok");

  EXPECT_NE(msg(saga_definition("empty")).find("has no steps"),
            std::string::npos);
  saga_definition dup("pay");
  dup.step("a", ok, ok).step("a", ok, ok);
  EXPECT_NE(msg(dup).find("step 2 'a': duplicate step name"), std::string::npos)
    << msg(dup);
  saga_definition nocomp("pay");
  nocomp.step("a", ok, nullptr);
  EXPECT_NE(msg(nocomp).find("step 1 'a': no compensation"), std::string::npos)
    << msg(nocomp);
  saga_definition pivot_first("pay");
  step_options pivot;
  pivot.compensable = false;
  pivot_first.step("a", ok, nullptr, pivot).step("b", ok, ok);
  EXPECT_NE(msg(pivot_first).find("only best-effort steps may follow it"),
            std::string::npos)
    << msg(pivot_first);
  step_options notify;
  notify.best_effort = true;
  saga_definition pivot_then_notify("pay");
  pivot_then_notify.step("a", ok, nullptr, pivot).step("n", ok, nullptr, notify);
  EXPECT_FALSE(pivot_then_notify.validate()) << msg(pivot_then_notify);
  step_options par;
  par.parallel = true;
  saga_definition first_parallel("pay");
  first_parallel.step("a", ok, ok, par);
  EXPECT_NE(msg(first_parallel).find("the first step cannot be parallel"),
            std::string::npos);
  saga_definition parallel_pivot("pay");
  parallel_pivot.step("a", ok, nullptr, pivot).step("b", ok, ok, par);
  EXPECT_NE(msg(parallel_pivot).find("runs alone"), std::string::npos)
    << msg(parallel_pivot);
  auto build = [](const step_request&) { return sagas::outgoing_message{}; };
  saga_definition parallel_message("pay");
  parallel_message.step("a", ok, ok).message_step("m", build, ok, par);
  EXPECT_NE(msg(parallel_message).find("a message step runs alone"),
            std::string::npos)
    << msg(parallel_message);
  saga_definition bad_name("pay");
  bad_name.step("a", participant::named("ledger debit"), ok);
  EXPECT_NE(msg(bad_name).find("participant name 'ledger debit'"),
            std::string::npos)
    << msg(bad_name);
  saga_definition groups("pay");
  groups.step("a", ok, ok).step("b", ok, ok).step("c", ok, ok, par).step("d", ok, ok);
  EXPECT_FALSE(groups.validate());
  EXPECT_EQ(groups.groups(), 3u);
  EXPECT_EQ(groups.steps()[2].group, 1u);
  saga_definition noaction("pay");
  noaction.step("a", nullptr, ok);
  EXPECT_NE(msg(noaction).find("no action"), std::string::npos);
  saga_definition zero("pay");
  step_options z;
  z.retry.max_attempts = 0;
  zero.step("a", ok, ok, z);
  EXPECT_NE(msg(zero).find("max_attempts"), std::string::npos);
  saga_definition slash("pay");
  slash.step("a/b", ok, ok);
  EXPECT_NE(msg(slash).find("without '/'"), std::string::npos);
  EXPECT_EQ(edda::code_of(dup.validate()), errc::invalid_saga);
}

TEST(SagaDefinition, DeclaredTypeNamesItsParticipantsAndChecksItsInput) {
  auto d = sagas::declared_saga("transfer = debit, credit, +points, notify~");
  ASSERT_TRUE(d) << render(d.error());
  ASSERT_EQ(d->steps().size(), 4u);
  EXPECT_EQ(d->steps()[0].action.name(), "transfer.debit");
  EXPECT_EQ(d->steps()[0].compensation.name(), "transfer.debit.undo");
  EXPECT_TRUE(d->steps()[2].options.parallel);
  EXPECT_EQ(d->steps()[2].group, d->steps()[1].group);
  EXPECT_TRUE(d->steps()[3].options.best_effort);
  EXPECT_TRUE(d->steps()[3].compensation.empty());
  EXPECT_EQ(d->input_checker()(""), "");
  EXPECT_EQ(d->input_checker()(R"({"amount": 100, "to": ["b", 1.5e3, null]})"), "");
  EXPECT_NE(d->input_checker()(R"({"amount": 100,})"), "");
  auto pivot = sagas::declared_saga("pay = charge!, notify~");
  ASSERT_TRUE(pivot) << render(pivot.error());
  EXPECT_FALSE(pivot->steps()[0].options.compensable);
  for (auto bad : {"no equals sign", "x = a,, b", " = a", "bad name = a",
                   "t = a!, b"}) {
    auto r = sagas::declared_saga(bad);
    EXPECT_FALSE(r) << bad;
  }
}

TEST(SagaDefinition, DeclaredMessageStepAppendsTheInputToItsTopic) {
  auto d = sagas::declared_saga("ship = reserve, notify>shipments, mail>mails!");
  ASSERT_TRUE(d) << render(d.error());
  ASSERT_EQ(d->steps().size(), 3u);
  auto& notify = d->steps()[1];
  EXPECT_EQ(notify.name, "notify");
  ASSERT_TRUE(notify.is_message());
  EXPECT_EQ(notify.compensation.name(), "ship.notify.undo");
  sagas::step_request r;
  r.saga_id = "s1";
  r.input = R"({"to": "b"})";
  auto m = notify.message(r);
  EXPECT_EQ(m.topic, "shipments");
  EXPECT_EQ(m.body, r.input);
  EXPECT_EQ(m.key, "") << "empty: keyed by the saga id";
  EXPECT_FALSE(d->steps()[2].options.compensable);
  EXPECT_TRUE(d->steps()[2].compensation.empty());
  for (auto bad : {"t = a>", "t = a>b~", "t = a, +b>c", "t = a>b!, c"}) {
    auto r = sagas::declared_saga(bad);
    EXPECT_FALSE(r) << bad;
  }
}

// The check-back of a remote message step's transaction, answered from the
// stored saga record: commit only if the step is recorded with it.
TEST(SagaChecker, AnswersFromTheStoredRecord) {
  using sagas::check_outcome;
  wire::pb::SagaRecord rec;
  rec.set_id("s1");
  rec.set_state(static_cast<uint32_t>(sagas::saga_state::running));
  auto* st = rec.add_steps();
  st->set_name("notify");
  auto outcome = [&](uint32_t attempt, const std::string& txn) {
    return sagas::outcome_from_record(&rec, "notify", attempt, txn);
  };
  // Attempt 1 not recorded yet: ask again later.
  EXPECT_EQ(outcome(1, "x"), check_outcome::unknown);
  // Recorded with this transaction: commit (also once compensated later).
  st->set_attempts(1);
  st->set_status(wire::pb::SagaStep::DONE);
  st->set_txn_id("x");
  EXPECT_EQ(outcome(1, "x"), check_outcome::commit);
  st->set_status(wire::pb::SagaStep::COMPENSATED);
  EXPECT_EQ(outcome(1, "x"), check_outcome::commit);
  // Attempt 1 recorded with another transaction (it ran again after a
  // crash) or failed: roll back.
  st->set_txn_id("y");
  EXPECT_EQ(outcome(1, "x"), check_outcome::rollback);
  st->set_txn_id("");
  st->set_status(wire::pb::SagaStep::FAILED);
  EXPECT_EQ(outcome(1, "x"), check_outcome::rollback);
  // A later attempt, not recorded: unknown while the saga runs, rollback
  // once it has ended without it.
  EXPECT_EQ(outcome(2, "z"), check_outcome::unknown);
  rec.set_state(static_cast<uint32_t>(sagas::saga_state::compensated));
  EXPECT_EQ(outcome(2, "z"), check_outcome::rollback);
  // Sent before the node's last restart and not recorded: that run died
  // between the half and the record (the attempt runs again).
  rec.set_state(static_cast<uint32_t>(sagas::saga_state::running));
  EXPECT_EQ(sagas::outcome_from_record(&rec, "notify", 2, "z", true),
            check_outcome::rollback);
  st->set_txn_id("z");
  EXPECT_EQ(sagas::outcome_from_record(&rec, "notify", 1, "z", true),
            check_outcome::commit) << "recorded: commit, whatever the run";
  // No record: not written yet (unknown), or never (an earlier run).
  EXPECT_EQ(sagas::outcome_from_record(nullptr, "notify", 1, "x"),
            check_outcome::unknown);
  EXPECT_EQ(sagas::outcome_from_record(nullptr, "notify", 1, "x", true),
            check_outcome::rollback);
  EXPECT_EQ(sagas::outcome_from_record(&rec, "other", 1, "x"),
            check_outcome::rollback);
}

TEST(SagaDefinition, JsonCheckFindsTheFirstProblem) {
  for (auto good : {"0", "-1.5e-3", "\"a\\n\\u00e9\"", "[]", "{}", "true",
                    " {\"a\": [1, {\"b\": false}]} "})
    EXPECT_EQ(sagas::check_json(good), "") << good;
  EXPECT_EQ(sagas::check_json("{\"a\" 1}"), "expected ':' at byte 5");
  EXPECT_EQ(sagas::check_json("[1, 2"), "expected ',' or ']' at byte 5");
  EXPECT_EQ(sagas::check_json("01"), "unexpected '1' after the value at byte 1");
  EXPECT_EQ(sagas::check_json(""), "a value is missing at byte 0");
  EXPECT_EQ(sagas::check_json(std::string(100, '[')), "nested too deep at byte 65");
  EXPECT_NE(sagas::check_json("\"tab\there\""), "");
}

TEST(SagaDefinition, BackoffGrowsByTheMultiplierUpToTheCap) {
  sagas::retry_policy p;
  p.initial_backoff = milliseconds(100);
  p.multiplier = 2;
  p.max_backoff = milliseconds(500);
  EXPECT_EQ(p.backoff(1), milliseconds(100));
  EXPECT_EQ(p.backoff(2), milliseconds(200));
  EXPECT_EQ(p.backoff(3), milliseconds(400));
  EXPECT_EQ(p.backoff(4), milliseconds(500));
}

// -- running ------------------------------------------------------------------

TEST_F(SagaTest, StepsRunInOrderWithOneIdempotencyKeyEachAndComplete) {
  start_runtime({three_steps(j_, step_result::success())});
  auto s = start("transfer", "t-1", R"({"amount":100})");
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->existed());
  sched_.run();
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"debit:t-1/debit:1",
                                                "credit:t-1/credit:1",
                                                "voucher:t-1/voucher:1"}));
  auto rec = get("t-1");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::completed);
  ASSERT_EQ(rec.steps_size(), 3);
  EXPECT_EQ(rec.steps(0).output(), "d1");
  EXPECT_EQ(rec.input(), R"({"amount":100})");
  for (auto& st : rec.steps())
    EXPECT_EQ(st.status(), pb::SagaStep::DONE) << st.name();
}

TEST_F(SagaTest, InputThatDoesNotParseIsRefusedWithTheReason) {
  saga_definition d("typed");
  d.step("a", j_.record("a", step_result::success()),
         j_.record("a", step_result::success()), fast())
    .input(sagas::check_json);
  start_runtime({d});
  pb::SagaStart s;
  s.set_type("typed");
  s.set_id("in-1");
  s.set_input("{amount: 1}");
  self_->send(rt_->shard_for("in-1"), s);
  sched_.run();
  std::string refused;
  self_->receive([&](caf::error& e) { refused = render(e); },
                 caf::after(std::chrono::seconds(0)) >> [] {});
  EXPECT_NE(refused.find("input of saga type 'typed' does not parse: "
                         "expected a member name at byte 1"),
            std::string::npos)
    << refused;
  ASSERT_TRUE(start("typed", "in-2", R"({"amount": 1})"));
  sched_.run();
  EXPECT_EQ(state("in-2"), saga_state::completed);
  EXPECT_TRUE(j_.calls.size() == 1) << "the refused saga ran nothing";
}

TEST_F(SagaTest, StartIsIdempotentAndAnUnknownTypeIsRefused) {
  start_runtime({three_steps(j_, step_result::success())});
  ASSERT_TRUE(start("transfer", "t-2"));
  sched_.run();
  auto again = start("transfer", "t-2");
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->existed());
  EXPECT_EQ(static_cast<saga_state>(again->record().state()),
            saga_state::completed);
  EXPECT_EQ(j_.calls.size(), 3u) << "no step ran twice";

  pb::SagaStart bad;
  bad.set_type("no-such-saga");
  bad.set_id("t-3");
  self_->send(rt_->shard_for("t-3"), bad);
  sched_.run();
  bool refused = false;
  self_->receive(
    [&](caf::error& err) {
      refused = true;
      EXPECT_EQ(edda::code_of(err), errc::unknown_saga_type) << render(err);
    },
    [&](pb::SagaStarted&) {}, caf::after(std::chrono::seconds(0)) >> [] {});
  EXPECT_TRUE(refused);
}

TEST_F(SagaTest, FailingStepIsRetriedWithBackoffThenAllAttemptedStepsCompensateInReverse) {
  start_runtime({three_steps(j_, step_result::failure("ledger down"))});
  ASSERT_TRUE(start("transfer", "t-4"));
  sched_.run();
  EXPECT_EQ(j_.calls.back(), "voucher:t-4/voucher:1");
  EXPECT_EQ(state("t-4"), saga_state::running);
  advance(99);
  EXPECT_EQ(j_.calls.back(), "voucher:t-4/voucher:1") << "backoff is 100 ms";
  advance(1);
  EXPECT_EQ(j_.calls.back(), "voucher:t-4/voucher:2");
  advance(199);
  EXPECT_EQ(j_.calls.back(), "voucher:t-4/voucher:2") << "then 200 ms";
  advance(1);
  // The third attempt fails too: compensate voucher (attempted), credit,
  // debit, in that order.
  EXPECT_EQ(j_.calls, (std::vector<std::string>{
                        "debit:t-4/debit:1", "credit:t-4/credit:1",
                        "voucher:t-4/voucher:1", "voucher:t-4/voucher:2",
                        "voucher:t-4/voucher:3", "~voucher:t-4/voucher:1",
                        "~credit:t-4/credit:1", "~debit:t-4/debit:1"}));
  auto rec = get("t-4");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::compensated);
  EXPECT_NE(rec.reason().find("voucher failed after 3 attempts: ledger down"),
            std::string::npos)
    << rec.reason();
  EXPECT_EQ(rec.steps(2).status(), pb::SagaStep::COMPENSATED);
}

TEST_F(SagaTest, NonRetryableErrorCompensatesAtOnce) {
  auto opts = fast(5);
  opts.retry.non_retryable = {"insufficient funds"};
  start_runtime({three_steps(
    j_, step_result::failure("insufficient funds: 10 < 100"), opts)});
  ASSERT_TRUE(start("transfer", "t-5"));
  sched_.run();
  EXPECT_EQ(state("t-5"), saga_state::compensated);
  EXPECT_EQ(std::count(j_.calls.begin(), j_.calls.end(),
                       "voucher:t-5/voucher:1"),
            1);
  EXPECT_EQ(j_.calls.size(), 6u) << "3 actions, 3 compensations, no retry";
}

TEST_F(SagaTest, ParticipantThatNeverRepliesTimesOutIsRetriedAndCompensated) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto mute = sys_.spawn(silent, seen);
  saga_definition d("mute");
  d.step("debit", j_.record("debit", step_result::success()),
         j_.record("debit", step_result::success()), fast())
    .step("call", participant::of(mute),
          j_.record("call", step_result::success()), fast(2));
  start_runtime({d});
  ASSERT_TRUE(start("mute", "t-6"));
  sched_.run();
  EXPECT_EQ(*seen, (std::vector<std::string>{"t-6/call:1"}));
  advance(500); // timeout
  EXPECT_EQ(get("t-6").steps(1).last_error(), "no reply within 500 ms");
  advance(100); // backoff
  EXPECT_EQ(*seen, (std::vector<std::string>{"t-6/call:1", "t-6/call:2"}));
  advance(500); // second timeout: out of attempts
  EXPECT_EQ(state("t-6"), saga_state::compensated);
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"debit:t-6/debit:1",
                                                "~call:t-6/call:1",
                                                "~debit:t-6/debit:1"}));
  caf::anon_send_exit(mute, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, DeadlineTurnsARunningSagaToCompensation) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto mute = sys_.spawn(silent, seen);
  saga_definition d("slow");
  step_options long_wait = fast(1);
  long_wait.timeout = milliseconds(10000);
  d.step("debit", j_.record("debit", step_result::success()),
         j_.record("debit", step_result::success()), fast())
    .step("wait", participant::of(mute),
          j_.record("wait", step_result::success()), long_wait)
    .deadline(milliseconds(2000));
  start_runtime({d});
  ASSERT_TRUE(start("slow", "t-7"));
  sched_.run();
  advance(2000);
  auto rec = get("t-7");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::compensating);
  EXPECT_EQ(rec.reason(), "deadline passed");
  // The step in flight ends (here by its timeout) before compensation
  // starts: a late reply cannot race the compensation of its own step.
  advance(8000);
  EXPECT_EQ(state("t-7"), saga_state::compensated);
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"debit:t-7/debit:1",
                                                "~wait:t-7/wait:1",
                                                "~debit:t-7/debit:1"}));
  caf::anon_send_exit(mute, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, CompensationThatKeepsFailingLeavesTheSagaFailedAndAlerts) {
  saga_definition d("stuck");
  d.step("debit", j_.record("debit", step_result::success()),
         j_.record("debit", step_result::failure("bank offline")), fast(2))
    .step("credit", j_.record("credit", step_result::failure("no", false)),
          j_.record("credit", step_result::success()), fast());
  start_runtime({d});
  ASSERT_TRUE(start("stuck", "t-8"));
  sched_.run();
  advance(100);
  auto rec = get("t-8");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::failed);
  EXPECT_NE(rec.reason().find("compensation of debit failed after 2 attempts: "
                              "bank offline"),
            std::string::npos)
    << rec.reason();
  EXPECT_EQ(rec.steps(0).status(), pb::SagaStep::COMPENSATION_FAILED);
  ASSERT_EQ(alerts_.size(), 1u);
  EXPECT_EQ(alerts_[0].kind, "saga_failed");
}

TEST_F(SagaTest, RestartedRuntimeResumesAStepInFlightWithTheSameKey) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto mute = sys_.spawn(silent, seen);
  auto def = [&](participant second) {
    saga_definition d("resume");
    d.step("debit", j_.record("debit", step_result::success()),
           j_.record("debit", step_result::success()), fast())
      .step("credit", std::move(second),
            j_.record("credit", step_result::success()), fast());
    return d;
  };
  start_runtime({def(participant::of(mute))});
  ASSERT_TRUE(start("resume", "t-9"));
  sched_.run();
  EXPECT_EQ(*seen, (std::vector<std::string>{"t-9/credit:1"}));
  // The node goes down with credit in flight: only LMDB remains.
  rt_.reset();
  sched_.run();
  caf::anon_send_exit(mute, caf::exit_reason::user_shutdown);
  start_runtime({def(j_.record("credit", step_result::success()))});
  sched_.run();
  EXPECT_EQ(state("t-9"), saga_state::completed);
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"debit:t-9/debit:1",
                                                "credit:t-9/credit:1"}))
    << "debit is not applied again; credit is sent again with its key and "
       "attempt number";
}


// -- TCC ----------------------------------------------------------------------

TEST(TccFence, GuardsAgainstEmptyRollbackAndLateTry) {
  sagas::tcc_fence f;
  EXPECT_TRUE(f.begin_try("s/a"));
  EXPECT_FALSE(f.begin_try("s/a")) << "a repeated try reserves nothing more";
  EXPECT_TRUE(f.begin_confirm("s/a"));
  EXPECT_FALSE(f.begin_confirm("s/a"));
  EXPECT_FALSE(f.begin_cancel("s/b")) << "cancel without try: empty rollback";
  EXPECT_FALSE(f.begin_try("s/b")) << "a try after its cancel is refused";
  EXPECT_EQ(f.of("s/b"), sagas::tcc_fence::phase::cancelled);
  EXPECT_TRUE(f.begin_try("s/c"));
  EXPECT_TRUE(f.begin_cancel("s/c")) << "a real reservation is released";
  EXPECT_FALSE(f.begin_cancel("s/c")) << "once";
}

/// A TCC participant: reserves, confirms and cancels through a fence.
struct points_service {
  sagas::tcc_fence fence;
  int64_t reserved = 0, confirmed = 0;
  std::vector<std::string> calls;
  bool fail_try = false;
  int failing_confirms = 0;

  step_result tried(const step_request& r) {
    calls.push_back("try " + r.idempotency_key);
    if (fail_try)
      return step_result::failure("points frozen", false);
    if (fence.begin_try(r.idempotency_key))
      reserved += 10;
    return step_result::success();
  }
  step_result confirmed_(const step_request& r) {
    calls.push_back("confirm " + r.idempotency_key + ":"
                    + std::to_string(r.attempt));
    if (failing_confirms > 0) {
      --failing_confirms;
      return step_result::failure("ledger busy");
    }
    if (fence.begin_confirm(r.idempotency_key)) {
      reserved -= 10;
      confirmed += 10;
    }
    return step_result::success();
  }
  step_result cancelled(const step_request& r) {
    calls.push_back("cancel " + r.idempotency_key);
    if (fence.begin_cancel(r.idempotency_key))
      reserved -= 10;
    return step_result::success();
  }
};

saga_definition tcc_saga(points_service& points, points_service& credit,
                         journal& j, step_result last) {
  saga_definition d("payment");
  d.tcc_step("points", [&](const step_request& r) { return points.tried(r); },
             [&](const step_request& r) { return points.confirmed_(r); },
             [&](const step_request& r) { return points.cancelled(r); }, fast())
    .tcc_step("credit", [&](const step_request& r) { return credit.tried(r); },
              [&](const step_request& r) { return credit.confirmed_(r); },
              [&](const step_request& r) { return credit.cancelled(r); },
              fast())
    .step("voucher", j.record("voucher", last),
          j.record("voucher", step_result::success()), fast());
  return d;
}

TEST_F(SagaTest, TccStepsAreConfirmedInOrderOnceEveryStepSucceeded) {
  points_service points, credit;
  points.failing_confirms = 1;
  start_runtime({tcc_saga(points, credit, j_, step_result::success())});
  ASSERT_TRUE(start("payment", "p-1"));
  sched_.run();
  advance(100); // the first confirm of points failed: retried after 100 ms
  auto rec = get("p-1");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::completed);
  EXPECT_EQ(points.calls, (std::vector<std::string>{
                            "try p-1/points", "confirm p-1/points:1",
                            "confirm p-1/points:2"}));
  EXPECT_EQ(credit.calls, (std::vector<std::string>{"try p-1/credit",
                                                    "confirm p-1/credit:1"}));
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"voucher:p-1/voucher:1"}))
    << "the voucher ran after both tries, before the confirms";
  EXPECT_EQ(points.confirmed, 10);
  EXPECT_EQ(points.reserved, 0);
  EXPECT_EQ(rec.steps(0).status(), pb::SagaStep::CONFIRMED);
  EXPECT_EQ(rec.steps(0).confirms(), 2u);
  EXPECT_EQ(rec.steps(2).status(), pb::SagaStep::DONE);
}

TEST_F(SagaTest, FailedTryCancelsEveryReservationAndTheFenceAbsorbsTheEmptyOne) {
  points_service points, credit;
  credit.fail_try = true;
  start_runtime({tcc_saga(points, credit, j_, step_result::success())});
  ASSERT_TRUE(start("payment", "p-2"));
  sched_.run();
  EXPECT_EQ(state("p-2"), saga_state::compensated);
  // credit's try failed before reserving: its cancel is an empty rollback.
  EXPECT_EQ(credit.calls, (std::vector<std::string>{"try p-2/credit",
                                                    "cancel p-2/credit"}));
  EXPECT_EQ(points.calls, (std::vector<std::string>{"try p-2/points",
                                                    "cancel p-2/points"}));
  EXPECT_EQ(points.reserved, 0);
  EXPECT_EQ(credit.reserved, 0);
  EXPECT_EQ(points.confirmed + credit.confirmed, 0);
  EXPECT_TRUE(j_.calls.empty()) << "the voucher never ran";
  // A try that arrives late (after its cancel) reserves nothing.
  step_request late;
  late.idempotency_key = "p-2/credit";
  credit.fail_try = false;
  (void) credit.tried(late);
  EXPECT_EQ(credit.reserved, 0);
}

// -- best-effort notification ---------------------------------------------------

TEST_F(SagaTest, BestEffortNotificationGivesUpAndTheSagaGoesOn) {
  auto notify = fast(3);
  notify.best_effort = true;
  notify.compensable = false;
  saga_definition d("notify");
  d.step("debit", j_.record("debit", step_result::success()),
         j_.record("debit", step_result::success()), fast())
    .step("tell_merchant", j_.record("tell", step_result::failure("503")),
          nullptr, notify)
    .step("credit", j_.record("credit", step_result::failure("closed", false)),
          j_.record("credit", step_result::success()), fast());
  start_runtime({d});
  ASSERT_TRUE(start("notify", "n-1"));
  sched_.run();
  advance(100);
  advance(200); // three attempts on 0 / 100 / 300 ms, then given up
  auto rec = get("n-1");
  EXPECT_EQ(rec.steps(1).status(), pb::SagaStep::GAVE_UP);
  EXPECT_EQ(rec.steps(1).attempts(), 3u);
  EXPECT_TRUE(in_history("n-1", "gave up on tell_merchant after 3 attempts"));
  // The saga went on; credit failed, so it compensated, skipping the
  // notification (nothing to undo).
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::compensated);
  EXPECT_EQ(j_.calls, (std::vector<std::string>{
                        "debit:n-1/debit:1", "tell:n-1/tell_merchant:1",
                        "tell:n-1/tell_merchant:2", "tell:n-1/tell_merchant:3",
                        "credit:n-1/credit:1", "~credit:n-1/credit:1",
                        "~debit:n-1/debit:1"}));
  saga_definition bad("bad");
  bad.step("a", j_.record("a", step_result::success()),
           j_.record("a", step_result::success()), notify);
  EXPECT_NE(render(bad.validate()).find("best-effort step has no compensation"),
            std::string::npos);
}

// -- operator commands --------------------------------------------------------

TEST_F(SagaTest, PausedSagaStartsNoStepUntilResumed) {
  bool up = false;
  saga_definition d("flaky");
  d.step("debit", j_.record("debit", step_result::success()),
         j_.record("debit", step_result::success()), fast())
    .step("credit",
          [&](const step_request& r) {
            j_.calls.push_back("credit:" + std::to_string(r.attempt));
            return up ? step_result::success()
                      : step_result::failure("bank down");
          },
          j_.record("credit", step_result::success()), fast(10));
  start_runtime({d});
  ASSERT_TRUE(start("flaky", "op-1"));
  sched_.run(); // credit attempt 1 failed: backoff 100 ms
  auto p = command("op-1", pb::SagaCommand::PAUSE);
  ASSERT_TRUE(p) << render(p.error());
  EXPECT_TRUE(p->paused());
  advance(5000);
  EXPECT_EQ(j_.calls.back(), "credit:1") << "no attempt while paused";
  up = true;
  auto r = command("op-1", pb::SagaCommand::RESUME);
  ASSERT_TRUE(r);
  EXPECT_EQ(state("op-1"), saga_state::completed);
  EXPECT_EQ(j_.calls.back(), "credit:2");
  EXPECT_TRUE(in_history("op-1", "paused by operator:test"));
  EXPECT_TRUE(in_history("op-1", "resumed by operator:test"));
  auto done = command("op-1", pb::SagaCommand::RETRY);
  ASSERT_FALSE(done) << "a completed saga has nothing to retry";
  EXPECT_EQ(edda::code_of(done.error()), errc::invalid_argument);
  EXPECT_NE(render(done.error()).find("is completed"), std::string::npos);
}

TEST_F(SagaTest, ForcedCompensationUndoesWhatWasDoneInReverse) {
  start_runtime({three_steps(j_, step_result::failure("slow ledger"), fast(10))});
  ASSERT_TRUE(start("transfer", "op-2"));
  sched_.run(); // voucher failed once, waiting 100 ms
  auto r = command("op-2", pb::SagaCommand::COMPENSATE);
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_EQ(state("op-2"), saga_state::compensated);
  EXPECT_EQ(get("op-2").reason(), "compensation forced by operator:test");
  EXPECT_EQ(j_.calls, (std::vector<std::string>{
                        "debit:op-2/debit:1", "credit:op-2/credit:1",
                        "voucher:op-2/voucher:1", "~voucher:op-2/voucher:1",
                        "~credit:op-2/credit:1", "~debit:op-2/debit:1"}));
}

TEST_F(SagaTest, FailedSagaIsRetriedOrItsStepSkippedByAnOperator) {
  bool bank_back = false;
  saga_definition d("stuck");
  d.step("debit", j_.record("debit", step_result::success()),
         [&](const step_request&) {
           j_.calls.push_back("~debit");
           return bank_back ? step_result::success()
                            : step_result::failure("bank offline");
         },
         fast(2))
    .step("credit", j_.record("credit", step_result::failure("no", false)),
          j_.record("credit", step_result::success()), fast());
  start_runtime({d});
  for (auto id : {"op-3", "op-4"})
    ASSERT_TRUE(start("stuck", id));
  sched_.run();
  advance(100);
  ASSERT_EQ(state("op-3"), saga_state::failed);
  ASSERT_EQ(state("op-4"), saga_state::failed);
  bank_back = true;
  auto r = command("op-3", pb::SagaCommand::RETRY);
  ASSERT_TRUE(r) << render(r.error());
  sched_.run();
  EXPECT_EQ(state("op-3"), saga_state::compensated);
  EXPECT_TRUE(in_history("op-3", "compensation retried by operator:test"));
  bank_back = false;
  auto s = command("op-4", pb::SagaCommand::SKIP, "debit");
  ASSERT_TRUE(s) << render(s.error());
  sched_.run();
  auto rec = get("op-4");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::compensated);
  EXPECT_EQ(rec.steps(0).last_error(),
            "compensation skipped by operator:test");
  auto again = command("op-4", pb::SagaCommand::SKIP, "debit");
  ASSERT_FALSE(again) << "a compensated saga has nothing to skip";
  auto missing = command("nope", pb::SagaCommand::PAUSE);
  ASSERT_FALSE(missing);
  EXPECT_EQ(edda::code_of(missing.error()), errc::not_found);
}

// -- parallel groups ---------------------------------------------------------

step_options in_parallel(step_options o = fast()) {
  o.parallel = true;
  return o;
}

TEST_F(SagaTest, ParallelGroupStartsTogetherAndTheNextGroupWaitsForAllOfIt) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto g = sys_.spawn(gate, seen);
  auto ok = j_.record("undo", step_result::success());
  saga_definition d("pay");
  d.step("order", j_.record("order", step_result::success()), ok, fast())
    .step("merchant", participant::of(g), ok, fast())
    .step("points", participant::of(g), ok, in_parallel())
    .step("voucher", j_.record("voucher", step_result::success()), ok, fast());
  start_runtime({d});
  ASSERT_TRUE(start("pay", "p-1"));
  sched_.run();
  EXPECT_EQ(*seen, (std::vector<std::string>{"merchant:1", "points:1"}))
    << "both steps of the group are in flight at once";
  self_->send(g, std::string{"points"}, true);
  sched_.run();
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"order:p-1/order:1"}))
    << "the next group waits for the whole group";
  self_->send(g, std::string{"merchant"}, true);
  sched_.run();
  EXPECT_EQ(state("p-1"), saga_state::completed);
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"order:p-1/order:1",
                                                "voucher:p-1/voucher:1"}));
  caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, FailureInAGroupWaitsForTheLateSiblingThenUndoesGroupsInReverse) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto g = sys_.spawn(gate, seen);
  saga_definition d("pay");
  d.step("order", j_.record("order", step_result::success()),
         j_.record("order", step_result::success()), fast())
    .step("merchant", j_.record("merchant", step_result::failure("closed", false)),
          j_.record("merchant", step_result::success()), fast())
    .step("points", participant::of(g), participant::of(g), in_parallel());
  start_runtime({d});
  ASSERT_TRUE(start("pay", "p-2"));
  sched_.run();
  // merchant failed for good while points is still in flight.
  EXPECT_EQ(state("p-2"), saga_state::compensating);
  EXPECT_EQ(*seen, (std::vector<std::string>{"points:1"}))
    << "points is not compensated while its action is in flight";
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"order:p-2/order:1",
                                                "merchant:p-2/merchant:1",
                                                "~merchant:p-2/merchant:1"}));
  self_->send(g, std::string{"points"}, true); // the late reply: applied
  sched_.run();
  EXPECT_EQ(*seen, (std::vector<std::string>{"points:1", "~points:1"}));
  EXPECT_EQ(j_.calls.size(), 3u) << "order waits for its later group";
  self_->send(g, std::string{"points"}, true); // compensation done
  sched_.run();
  EXPECT_EQ(state("p-2"), saga_state::compensated);
  EXPECT_EQ(j_.calls.back(), "~order:p-2/order:1");
  caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, CompensationRacingALateReplyRunsOnceAndTheLateReplyIsIgnored) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto g = sys_.spawn(gate, seen);
  saga_definition d("late");
  d.step("debit", j_.record("debit", step_result::success()),
         j_.record("debit", step_result::success()), fast())
    .step("call", participant::of(g),
          j_.record("call", step_result::success()), fast(1));
  start_runtime({d});
  ASSERT_TRUE(start("late", "l-1"));
  sched_.run();
  advance(500); // the call times out: out of attempts, compensate
  EXPECT_EQ(state("l-1"), saga_state::compensated);
  self_->send(g, std::string{"call"}, true); // the reply arrives too late
  sched_.run();
  advance(1000);
  auto rec = get("l-1");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::compensated);
  EXPECT_EQ(rec.steps(1).status(), pb::SagaStep::COMPENSATED);
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"debit:l-1/debit:1",
                                                "~call:l-1/call:1",
                                                "~debit:l-1/debit:1"}))
    << "each compensation once; the late success changed nothing";
  caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, ParallelStepsAreRetriedEachOnItsOwnBackoff) {
  int left = 2; // the points service fails twice, then works
  saga_definition d("retry");
  d.step("order", j_.record("order", step_result::success()),
         j_.record("order", step_result::success()), fast())
    .step("merchant", j_.record("merchant", step_result::success()),
          j_.record("merchant", step_result::success()), fast())
    .step("points",
          [&](const step_request& r) {
            j_.calls.push_back("points:" + std::to_string(r.attempt));
            return left-- > 0 ? step_result::failure("busy")
                              : step_result::success();
          },
          j_.record("points", step_result::success()), in_parallel());
  start_runtime({d});
  ASSERT_TRUE(start("retry", "r-1"));
  sched_.run();
  EXPECT_EQ(state("r-1"), saga_state::running);
  advance(100); // first backoff
  EXPECT_EQ(j_.calls.back(), "points:2");
  advance(200); // second backoff
  EXPECT_EQ(state("r-1"), saga_state::completed);
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"order:r-1/order:1",
                                                "merchant:r-1/merchant:1",
                                                "points:1", "points:2",
                                                "points:3"}));
}

TEST_F(SagaTest, GroupWhoseStepsEndTogetherStoresTheEndBeforeItIsReported) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto g = sys_.spawn(gate, seen);
  auto ok = j_.record("undo", step_result::success());
  saga_definition d("pair");
  d.step("left", participant::of(g), ok, fast())
    .step("right", participant::of(g), ok, in_parallel());
  start_runtime({d});
  ASSERT_TRUE(start("pair", "e-1"));
  sched_.run();
  // Both replies arrive before either is written.
  self_->send(g, std::string{"left"}, true);
  self_->send(g, std::string{"right"}, true);
  sched_.run();
  auto rec = get("e-1"); // read from LMDB
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::completed);
  EXPECT_EQ(rec.steps(0).status(), pb::SagaStep::DONE);
  EXPECT_EQ(rec.steps(1).status(), pb::SagaStep::DONE);
  caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
}

// -- reliable-message steps (a stand-in topic manager) ----------------------

/// Holds every AppendInternal until the test answers it: stored (the
/// extra write goes to the writer first, as a partition does) or failed.
struct held_appends {
  std::vector<std::pair<pb::AppendInternal, caf::response_promise>> held;
};

caf::behavior fake_topics(caf::event_based_actor* self,
                          std::shared_ptr<held_appends> h, caf::actor writer) {
  return {
    [=](pb::AppendInternal& a) {
      h->held.emplace_back(std::move(a), self->make_response_promise());
      return h->held.back().second;
    },
    [=](bool store) {
      if (h->held.empty())
        return;
      auto [a, rp] = std::move(h->held.front());
      h->held.erase(h->held.begin());
      if (!store) {
        rp.deliver(make_error(errc::unknown_topic, "no topic " + a.topic()));
        return;
      }
      self->request(writer, std::chrono::seconds(5), a.extra())
        .then([=](const pb::WriteResult&) mutable {
          pb::ProduceResult r;
          r.set_partition(0);
          r.add_offsets(7);
          rp.deliver(r);
        });
    },
  };
}

saga_definition voucher_saga(journal& j, step_options voucher_opts) {
  step_options notify = fast(2);
  notify.best_effort = true;
  saga_definition d("pay");
  d.step("order", j.record("order", step_result::success("o-1")),
         j.record("order", step_result::success()), fast())
    .message_step("voucher",
                  [](const step_request& r) {
                    sagas::outgoing_message m;
                    m.topic = "vouchers";
                    m.body = "order output " + r.outputs.at("order");
                    return m;
                  },
                  nullptr, voucher_opts)
    .step("notify", j.record("notify", step_result::success()), nullptr, notify)
    .deadline(milliseconds(1000));
  return d;
}

TEST_F(SagaTest, MessageStepHoldsTheSagaUntilItsAppendIsStored) {
  auto h = std::make_shared<held_appends>();
  auto topics = sys_.spawn(fake_topics, h, ctx_->writer);
  start_runtime({voucher_saga(j_, fast(1))}, topics);
  ASSERT_TRUE(start("pay", "m-1"));
  sched_.run();
  ASSERT_EQ(h->held.size(), 1u);
  auto& app = h->held.front().first;
  EXPECT_EQ(app.messages(0).body(), "order output o-1");
  EXPECT_EQ(app.messages(0).properties().at("idempotency_key"), "m-1/voucher");
  pb::SagaRecord in_extra;
  ASSERT_TRUE(in_extra.ParseFromString(app.extra().ops(0).value()));
  EXPECT_EQ(in_extra.steps(1).status(), pb::SagaStep::DONE)
    << "the step is recorded done in the append's own write";
  EXPECT_EQ(get("m-1").steps(1).status(), pb::SagaStep::PENDING)
    << "and nowhere else before it";
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"order:m-1/order:1"}))
    << "notify waits for the append";
  // The deadline passes with the pivot's message in flight: only forward.
  advance(1500);
  self_->send(topics, true);
  sched_.run();
  EXPECT_TRUE(in_history("m-1", "not compensating (deadline passed): step "
                                "voucher cannot be undone"));
  auto rec = get("m-1");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::completed);
  EXPECT_EQ(rec.steps(1).output(), "vouchers/0/7");
  EXPECT_EQ(j_.calls.back(), "notify:m-1/notify:1");
  caf::anon_send_exit(topics, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, FailedAppendSendsNothingFurtherAndCompensates) {
  auto h = std::make_shared<held_appends>();
  auto topics = sys_.spawn(fake_topics, h, ctx_->writer);
  start_runtime({voucher_saga(j_, fast(2))}, topics);
  ASSERT_TRUE(start("pay", "m-2"));
  sched_.run();
  self_->send(topics, false); // attempt 1: unknown topic
  sched_.run();
  EXPECT_EQ(get("m-2").steps(1).status(), pb::SagaStep::FAILED);
  advance(100); // backoff: attempt 2
  ASSERT_EQ(h->held.size(), 1u);
  self_->send(topics, false);
  sched_.run();
  auto rec = get("m-2");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::compensated);
  EXPECT_EQ(rec.steps(1).attempts(), 2u);
  EXPECT_EQ(j_.calls, (std::vector<std::string>{"order:m-2/order:1",
                                                "~order:m-2/order:1"}))
    << "notify never ran; the order was undone";
  caf::anon_send_exit(topics, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, DeadlineWhileConfirmingIsNotedOnceAndTheConfirmsFinish) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto g = sys_.spawn(gate, seen);
  auto ok = j_.record("x", step_result::success());
  saga_definition d("tcc");
  d.tcc_step("reserve", ok, participant::of(g), ok, fast())
    .deadline(milliseconds(1000));
  start_runtime({d});
  ASSERT_TRUE(start("tcc", "c-1"));
  sched_.run(); // the try succeeded; the confirm is held
  advance(1500);
  advance(1500);
  auto rec = get("c-1");
  int noted = 0;
  for (auto& e : rec.history())
    noted += e.what().find("not compensating") != std::string::npos;
  EXPECT_EQ(noted, 1);
  self_->send(g, std::string{"reserve"}, true);
  sched_.run();
  rec = get("c-1");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::completed);
  EXPECT_EQ(rec.steps(0).confirms(), 2u) << "the first confirm timed out";
  caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, EndedSagasArePurgedAfterTheRetentionRunningOnesStay) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto g = sys_.spawn(gate, seen);
  saga_definition quick_one("quick");
  quick_one.step("a", j_.record("a", step_result::success()),
                 j_.record("a", step_result::success()), fast());
  saga_definition slow_one("slow");
  auto slow_opts = fast();
  slow_opts.timeout = milliseconds(100000);
  slow_one.step("b", participant::of(g), j_.record("b", step_result::success()),
                slow_opts);
  start_runtime({quick_one, slow_one}, {}, 1000);
  ASSERT_TRUE(start("quick", "r-1"));
  ASSERT_TRUE(start("slow", "r-2"));
  sched_.run();
  EXPECT_EQ(state("r-1"), saga_state::completed);
  advance(500);
  EXPECT_EQ(state("r-1"), saga_state::completed) << "within the retention";
  for (int i = 0; i < 20; ++i)
    advance(100);
  pb::SagaGet q;
  q.set_id("r-1");
  self_->send(rt_->shard_for("r-1"), q);
  sched_.run();
  std::string gone;
  self_->receive([&](pb::SagaRecord&) { gone = "still there"; },
                 [&](caf::error& e) { gone = render(e); },
                 caf::after(std::chrono::seconds(0)) >> [] {});
  EXPECT_NE(gone.find("no saga 'r-1'"), std::string::npos) << gone;
  EXPECT_EQ(state("r-2"), saga_state::running) << "a running saga stays";
  caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, CrashedShardIsRestartedAndItsSagasResumeOnce) {
  auto seen = std::make_shared<std::vector<std::string>>();
  auto g = sys_.spawn(gate, seen);
  saga_definition d("kept");
  auto opts = fast();
  opts.timeout = milliseconds(100000);
  d.step("debit", participant::of(g), j_.record("debit", step_result::success()),
         opts);
  start_runtime({d});
  ASSERT_TRUE(start("kept", "k-1"));
  sched_.run();
  EXPECT_EQ(*seen, (std::vector<std::string>{"debit:1"}));
  // Kill the shard behind the keeper (a crash): its instance dies with it.
  self_->send(rt_->shard_for("k-1"), wire::route_atom::value);
  auto shard = next<caf::actor>(self_);
  ASSERT_TRUE(shard && *shard);
  caf::anon_send_exit(*shard, caf::exit_reason::kill);
  sched_.run();
  advance(200); // the keeper starts a new shard, which resumes the saga
  EXPECT_EQ(*seen, (std::vector<std::string>{"debit:1", "debit:1"}))
    << "the step in flight is sent again, same attempt, once";
  self_->send(g, std::string{"debit"}, true);
  sched_.run();
  EXPECT_EQ(state("k-1"), saga_state::completed);
  EXPECT_EQ(seen->size(), 2u);
  caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
}

// -- named participants -----------------------------------------------------

TEST_F(SagaTest, CommandsForANameGoToItsParticipantsInTurn) {
  saga_definition d("turns");
  d.step("debit", participant::named("bank.debit"),
         j_.record("debit", step_result::success()), fast());
  start_runtime({d});
  auto served = std::make_shared<std::map<int, int>>(); // participant -> commands
  auto make = [&](int who) {
    return sys_.spawn([served, who](caf::event_based_actor* self) -> caf::behavior {
      return {
        [=](const pb::StepCommand&) {
          ++(*served)[who];
          pb::StepReply r;
          r.set_ok(true);
          return r;
        },
        [=](const caf::actor& directory) {
          pb::ParticipantRegister reg;
          reg.add_names("bank.debit");
          self->request(directory, std::chrono::seconds(1), reg)
            .then([](const pb::ParticipantRegistered&) {});
        },
      };
    });
  };
  auto a = make(1);
  auto b = make(2);
  self_->send(a, rt_->directory());
  self_->send(b, rt_->directory());
  sched_.run();
  for (int i = 0; i < 4; ++i) {
    auto id = "t-" + std::to_string(i);
    ASSERT_TRUE(start("turns", id));
    sched_.run();
    EXPECT_EQ(state(id), saga_state::completed);
  }
  EXPECT_EQ(*served, (std::map<int, int>{{1, 2}, {2, 2}}));
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, CommandsForABatchingParticipantTravelTogether) {
  saga_definition d("batched");
  d.step("debit", participant::named("bank.debit"),
         j_.record("debit", step_result::success()), fast());
  start_runtime({d});
  auto sizes = std::make_shared<std::vector<int>>(); // commands per message
  auto p = sys_.spawn([sizes](caf::event_based_actor* self) -> caf::behavior {
    auto answer = [](const pb::StepCommand&) {
      pb::StepReply r;
      r.set_ok(true);
      r.set_output("ok");
      return r;
    };
    return {
      [=](const pb::StepCommand& c) {
        sizes->push_back(1);
        return answer(c);
      },
      [=](const pb::StepBatch& b) {
        sizes->push_back(b.commands_size());
        pb::StepBatchReply out;
        for (auto& c : b.commands())
          *out.add_replies() = answer(c);
        return out;
      },
      [=](const caf::actor& directory) {
        pb::ParticipantRegister reg;
        reg.add_names("bank.debit");
        reg.set_batches(true);
        self->request(directory, std::chrono::seconds(1), reg)
          .then([](const pb::ParticipantRegistered&) {});
      },
    };
  });
  self_->send(p, rt_->directory());
  sched_.run();
  // Ten sagas on one shard start in one go: their first steps are ready in
  // the same moment.
  std::vector<std::string> ids;
  for (int i = 0; ids.size() < 10; ++i) {
    auto id = "b-" + std::to_string(i);
    if (rt_->shard_for(id) == rt_->shard_for("b-0"))
      ids.push_back(id);
  }
  for (auto& id : ids) {
    pb::SagaStart s;
    s.set_type("batched");
    s.set_id(id);
    self_->send(rt_->shard_for(id), s);
  }
  sched_.run();
  for (auto& id : ids)
    EXPECT_EQ(state(id), saga_state::completed) << id;
  int total = 0, largest = 0;
  for (auto n : *sizes) {
    total += n;
    largest = std::max(largest, n);
  }
  EXPECT_EQ(total, 10);
  EXPECT_GT(largest, 1) << "at least one StepBatch carried several commands";
  EXPECT_LT(sizes->size(), 10u);
  caf::anon_send_exit(p, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, NamedParticipantIsUsedOnceRegisteredAndForgottenWhenGone) {
  saga_definition d("named");
  d.step("debit", participant::named("ledger.debit"),
         j_.record("debit", step_result::success()), fast(3));
  start_runtime({d});
  ASSERT_TRUE(start("named", "n-1"));
  sched_.run();
  EXPECT_EQ(get("n-1").steps(0).last_error(),
            "no participant 'ledger.debit' is registered");
  EXPECT_EQ(get("n-1").steps(0).unsent(), 1u);
  // A participant (in production: another process) registers itself; the
  // directory keeps the sender.
  auto seen = std::make_shared<std::vector<std::string>>();
  auto p = sys_.spawn([seen](caf::event_based_actor* self) -> caf::behavior {
    return {
      [seen](const pb::StepCommand& c) {
        seen->push_back(c.participant() + ":" + c.idempotency_key() + ":"
                        + std::to_string(c.attempt()));
        pb::StepReply r;
        r.set_ok(true);
        return r;
      },
      [self](const caf::actor& directory) {
        pb::ParticipantRegister reg;
        reg.add_names("ledger.debit");
        reg.set_client_id("test");
        self->request(directory, std::chrono::seconds(1), reg)
          .then([](const pb::ParticipantRegistered&) {});
      },
    };
  });
  self_->send(p, rt_->directory());
  sched_.run();
  advance(100); // the backoff: attempt 2 goes to the registered actor
  EXPECT_EQ(state("n-1"), saga_state::completed);
  EXPECT_EQ(*seen, (std::vector<std::string>{"ledger.debit:n-1/debit:2"}));
  // Gone: the directory forgets it, and the next saga waits for a new one.
  caf::anon_send_exit(p, caf::exit_reason::kill);
  sched_.run();
  ASSERT_TRUE(start("named", "n-2"));
  sched_.run();
  EXPECT_EQ(get("n-2").steps(0).last_error(),
            "no participant 'ledger.debit' is registered");
  // Out of attempts with nobody registered: nothing was sent, so nothing
  // is undone and the saga ends compensated, not failed.
  advance(100);
  advance(200);
  auto rec = get("n-2");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::compensated)
    << rec.reason();
  EXPECT_EQ(rec.steps(0).unsent(), 3u);
  EXPECT_EQ(j_.calls, std::vector<std::string>{}) << "no compensation ran";
  // A bad registration is refused with the reason.
  pb::ParticipantRegister bad;
  bad.add_names("no spaces");
  self_->send(rt_->directory(), bad);
  sched_.run();
  bool refused = false;
  self_->receive([&](caf::error& e) {
                   refused = render(e).find("must be 1-120") != std::string::npos;
                 },
                 caf::after(std::chrono::seconds(0)) >> [] {});
  EXPECT_TRUE(refused);
}

TEST_F(SagaTest, AParticipantThatGoesAwayIsForgottenAndTheOthersServeOn) {
  saga_definition d("turns");
  d.step("debit", participant::named("bank.debit"),
         j_.record("debit", step_result::success()), fast());
  start_runtime({d});
  auto served = std::make_shared<std::map<int, int>>();
  auto a = sys_.spawn(counting, served, 1, std::string{"bank.debit"});
  auto b = sys_.spawn(counting, served, 2, std::string{"bank.debit"});
  self_->send(a, rt_->directory());
  self_->send(b, rt_->directory());
  sched_.run();
  caf::anon_send_exit(a, caf::exit_reason::kill);
  sched_.run();
  for (int i = 0; i < 4; ++i) {
    auto id = "g-" + std::to_string(i);
    ASSERT_TRUE(start("turns", id));
    sched_.run();
    auto rec = get(id);
    EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::completed)
      << id << ": " << rec.steps(0).last_error();
    EXPECT_EQ(rec.steps(0).attempts(), 1u) << id;
  }
  EXPECT_EQ(*served, (std::map<int, int>{{2, 4}}));
  caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
}

TEST_F(SagaTest, ShardStartedAgainKnowsTheParticipantsThatRegisteredMeanwhile) {
  saga_definition d("named");
  d.step("debit", participant::named("ledger.debit"),
         j_.record("debit", step_result::success()), fast());
  start_runtime({d});
  // The shard crashes; while its keeper waits to start it again, a
  // participant registers.
  self_->send(rt_->shard_for("m-1"), wire::route_atom::value);
  auto shard = next<caf::actor>(self_);
  ASSERT_TRUE(shard && *shard);
  caf::anon_send_exit(*shard, caf::exit_reason::kill);
  sched_.run();
  auto served = std::make_shared<std::map<int, int>>();
  auto p = sys_.spawn(counting, served, 1, std::string{"ledger.debit"});
  self_->send(p, rt_->directory());
  sched_.run();
  advance(200); // the new shard
  ASSERT_TRUE(start("named", "m-1"));
  sched_.run();
  auto rec = get("m-1");
  EXPECT_EQ(static_cast<saga_state>(rec.state()), saga_state::completed)
    << rec.steps(0).last_error();
  EXPECT_EQ(rec.steps(0).unsent(), 0u);
  EXPECT_EQ(*served, (std::map<int, int>{{1, 1}}));
  caf::anon_send_exit(p, caf::exit_reason::user_shutdown);
}

} // namespace
} // namespace edda::testing
