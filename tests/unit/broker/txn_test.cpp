// The txn coordinator on the deterministic scheduler: check-back schedule,
// backoff, the budget rule, the final policy, idempotent ends, recovery.
// Fixture settings: check_after 6 s, max_checks 3, check_timeout 3 s.
#include "fixture.hpp"

using namespace edda;
using namespace edda::testing;

namespace {

class TxnCoordinatorTest : public DeterministicFixture {
protected:
  void SetUp() override {
    create_topic("funds", 1);
  }

  /// Registers `who` as a checker of producer group "wallet".
  void register_checker(caf::scoped_actor& who, const std::string& client) {
    pb::RegisterProducer r;
    r.set_group("wallet");
    r.set_client_id(client);
    who->send(frontend_, r);
    ASSERT_TRUE(next<pb::ProducerRegistered>(who));
  }

  std::string half(const std::string& body, const std::string& client = "p1") {
    pb::HalfMessage h;
    h.set_txn_id("txn-" + body);
    h.set_producer_group("wallet");
    h.set_client_id(client);
    h.mutable_message()->set_topic("funds");
    h.mutable_message()->set_body(body);
    self_->send(frontend_, h);
    auto ack = next<pb::HalfAck>(self_);
    EXPECT_TRUE(ack);
    return h.txn_id();
  }

  /// Waits (in virtual time, already advanced) for a check at `who`, and
  /// answers it with `outcome`. Returns the check number, 0 if none came.
  uint32_t answer(caf::scoped_actor& who, pb::TxnOutcome outcome) {
    sched_.run();
    uint32_t got = 0;
    who->receive(
      [&](const pb::CheckTxn& q) {
        got = q.check();
        pb::CheckAnswer a;
        a.set_txn_id(q.txn_id());
        a.set_outcome(outcome);
        return a;
      },
      caf::after(std::chrono::seconds(0)) >> [] {});
    sched_.run();
    return got;
  }

  pb::TxnRecord show(const std::string& txn) {
    pb::TxnShow q;
    q.set_txn_id(txn);
    self_->send(frontend_, q);
    auto r = next<pb::TxnRecord>(self_);
    EXPECT_TRUE(r);
    return r ? *r : pb::TxnRecord{};
  }

  caf::expected<pb::EndResult> end(const std::string& txn, pb::TxnOutcome o) {
    pb::EndTxn e;
    e.set_txn_id(txn);
    e.set_outcome(o);
    self_->send(frontend_, e);
    sched_.run();
    caf::expected<pb::EndResult> out{caf::error{}};
    self_->receive([&](pb::EndResult& r) { out = std::move(r); },
                   [&](caf::error& err) { out = std::move(err); },
                   caf::after(std::chrono::seconds(0)) >> [] {});
    return out;
  }

  uint64_t end_offset() {
    pb::DescribeTopic d;
    d.set_name("funds");
    self_->send(frontend_, d);
    auto info = next<pb::TopicInfo>(self_);
    return info ? info->partitions(0).end_offset() : UINT64_MAX;
  }
};

} // namespace

TEST_F(TxnCoordinatorTest, HalfMessageIsInvisibleAndCommitAppendsItOnce) {
  subscribe(self_, subscription("g", "funds", "c1"));
  auto txn = half("buy-1");
  EXPECT_TRUE(deliveries(self_).empty()) << "a half message is invisible";
  EXPECT_EQ(end_offset(), 0u);
  auto r = end(txn, pb::TXN_COMMIT);
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_FALSE(r->already());
  EXPECT_EQ(r->record().state(), pb::TxnRecord::COMMITTED);
  auto ds = deliveries(self_);
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_EQ(ds[0].first.messages(0).txn_id(), txn);
  auto again = end(txn, pb::TXN_COMMIT);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->already()) << "a repeated commit is a no-op";
  EXPECT_EQ(end_offset(), 1u) << "one message, not two";
}

TEST_F(TxnCoordinatorTest, RolledBackMessageIsNeverDeliveredAndLateCommitIsRefused) {
  subscribe(self_, subscription("g", "funds", "c1"));
  auto txn = half("buy-2");
  ASSERT_TRUE(end(txn, pb::TXN_ROLLBACK));
  auto late = end(txn, pb::TXN_COMMIT);
  ASSERT_FALSE(late);
  EXPECT_EQ(code_of(late.error()), errc::txn_conflict);
  advance(3'600'000);
  EXPECT_TRUE(deliveries(self_).empty());
  EXPECT_EQ(end_offset(), 0u);
}

TEST_F(TxnCoordinatorTest, CheckBackBacksOffThenAppliesAndRecordsThePolicy) {
  caf::scoped_actor checker{sys_, true};
  register_checker(checker, "p2");
  auto txn = half("buy-3"); // sent by p1, which is gone: p2 answers
  advance(5'999);
  EXPECT_EQ(answer(checker, pb::TXN_UNKNOWN), 0u) << "not before check_after";
  advance(1);
  EXPECT_EQ(answer(checker, pb::TXN_UNKNOWN), 1u);
  EXPECT_EQ(show(txn).checks(), 1u);
  advance(11'999);
  EXPECT_EQ(answer(checker, pb::TXN_UNKNOWN), 0u) << "backoff doubles: 12 s";
  advance(1);
  EXPECT_EQ(answer(checker, pb::TXN_UNKNOWN), 2u);
  advance(24'000);
  EXPECT_TRUE(alerts_.empty());
  EXPECT_EQ(answer(checker, pb::TXN_UNKNOWN), 3u);
  auto rec = show(txn);
  EXPECT_EQ(rec.state(), pb::TxnRecord::ROLLED_BACK);
  EXPECT_EQ(rec.resolved_by(), "policy");
  EXPECT_NE(rec.reason().find("3 check-backs"), std::string::npos);
  ASSERT_EQ(alerts_.size(), 1u);
  EXPECT_EQ(alerts_[0].kind, "txn_policy");
  auto late = end(txn, pb::TXN_COMMIT);
  ASSERT_FALSE(late);
  EXPECT_EQ(code_of(late.error()), errc::txn_conflict);
  EXPECT_NE(render(late.error()).find("policy"), std::string::npos);
}

TEST_F(TxnCoordinatorTest, UndeliverableChecksDoNotUseTheBudget) {
  auto txn = half("buy-4");
  for (int i = 0; i < 20; ++i)
    advance(6'000); // two minutes with no producer of the group alive
  auto rec = show(txn);
  EXPECT_EQ(rec.state(), pb::TxnRecord::PREPARED);
  EXPECT_EQ(rec.checks(), 0u);
  caf::scoped_actor checker{sys_, true};
  register_checker(checker, "p9");
  advance(6'000);
  EXPECT_EQ(answer(checker, pb::TXN_COMMIT), 1u);
  EXPECT_EQ(show(txn).state(), pb::TxnRecord::COMMITTED);
  EXPECT_EQ(show(txn).resolved_by(), "check-back");
  EXPECT_EQ(end_offset(), 1u);
}

TEST_F(TxnCoordinatorTest, CheckGoesToTheOriginatingProducerFirst) {
  caf::scoped_actor other{sys_, true}, origin{sys_, true};
  register_checker(other, "p-other");
  register_checker(origin, "p-origin");
  half("buy-5", "p-origin");
  advance(6'000);
  EXPECT_EQ(answer(other, pb::TXN_COMMIT), 0u);
  EXPECT_EQ(answer(origin, pb::TXN_COMMIT), 1u);
}

TEST_F(TxnCoordinatorTest, LateCommitAfterCheckBackCommitIsOneMessage) {
  caf::scoped_actor checker{sys_, true};
  register_checker(checker, "p1");
  auto txn = half("buy-6");
  advance(6'000);
  EXPECT_EQ(answer(checker, pb::TXN_COMMIT), 1u);
  auto late = end(txn, pb::TXN_COMMIT); // the producer's lost end arrives
  ASSERT_TRUE(late);
  EXPECT_TRUE(late->already());
  EXPECT_EQ(end_offset(), 1u);
}

TEST_F(TxnCoordinatorTest, SilentCheckerCountsAsUnknownNeverAsCommit) {
  caf::scoped_actor mute{sys_, true};
  register_checker(mute, "p1");
  auto txn = half("buy-7");
  // Each check is asked at its due time and times out 3 s later; step in
  // 1 s increments so every timer fires at its own time.
  for (int i = 0; i < 200 && show(txn).state() == pb::TxnRecord::PREPARED; ++i)
    advance(1'000);
  auto rec = show(txn);
  EXPECT_EQ(rec.state(), pb::TxnRecord::ROLLED_BACK)
    << "three unanswered checks exhaust the budget";
  EXPECT_EQ(rec.checks(), 3u);
  EXPECT_NE(rec.reason().find("request_timeout"), std::string::npos)
    << rec.reason();
  EXPECT_EQ(end_offset(), 0u);
}

TEST_F(TxnCoordinatorTest, RestartedCoordinatorChecksEveryPendingTransaction) {
  auto a = half("buy-8");
  auto b = half("buy-9");
  ASSERT_TRUE(end(b, pb::TXN_ROLLBACK));
  caf::anon_send_exit(txn_, caf::exit_reason::kill);
  sched_.run();
  auto fresh = txn::spawn_coordinator(sys_, ctx_, topics_);
  sched_.run();
  caf::scoped_actor checker{sys_, true};
  pb::RegisterProducer r;
  r.set_group("wallet");
  r.set_client_id("p1");
  checker->send(fresh, r);
  ASSERT_TRUE(next<pb::ProducerRegistered>(checker));
  advance(6'000);
  EXPECT_EQ(answer(checker, pb::TXN_COMMIT), 1u) << "only the PREPARED one";
  EXPECT_EQ(answer(checker, pb::TXN_COMMIT), 0u);
  pb::TxnShow q;
  q.set_txn_id(a);
  self_->send(fresh, q);
  auto rec = next<pb::TxnRecord>(self_);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->state(), pb::TxnRecord::COMMITTED);
  caf::anon_send_exit(fresh, caf::exit_reason::user_shutdown);
}

TEST_F(TxnCoordinatorTest, BadInputGetsClearErrors) {
  auto e = end("never-seen", pb::TXN_COMMIT);
  ASSERT_FALSE(e);
  EXPECT_EQ(code_of(e.error()), errc::unknown_txn);
  for (auto group : {std::string{}, std::string(121, 'g'), std::string{"a b"}}) {
    pb::HalfMessage h;
    h.set_txn_id("t");
    h.set_producer_group(group);
    h.mutable_message()->set_topic("funds");
    self_->send(frontend_, h);
    sched_.run();
    bool refused = false;
    self_->receive(
      [&](caf::error& err) {
        refused = code_of(err) == errc::invalid_producer_group;
      },
      [&](pb::HalfAck&) {}, caf::after(std::chrono::seconds(0)) >> [] {});
    EXPECT_TRUE(refused) << "'" << group << "'";
  }
  pb::HalfMessage h;
  h.set_txn_id("t2");
  h.set_producer_group("wallet");
  h.mutable_message()->set_topic("no-such-topic");
  self_->send(frontend_, h);
  sched_.run();
  bool unknown_topic = false;
  self_->receive(
    [&](caf::error& err) { unknown_topic = code_of(err) == errc::unknown_topic; },
    [&](pb::HalfAck&) {}, caf::after(std::chrono::seconds(0)) >> [] {});
  EXPECT_TRUE(unknown_topic);
}
