// Broker actors on the deterministic scheduler (see fixture.hpp).
#include "fixture.hpp"

#include "base/metrics.hpp"

using namespace edda;
using namespace edda::testing;

namespace {
class BrokerDeterministicTest : public DeterministicFixture {};
} // namespace
namespace pb = edda::wire::pb;
using std::chrono::milliseconds;


TEST_F(BrokerDeterministicTest, WriterGroupCommitsEverythingPendingAtOnce) {
  for (int i = 0; i < 5; ++i) {
    pb::WriteBatch b;
    auto* op = b.add_ops();
    op->set_db(static_cast<uint32_t>(storage::db::dedup));
    op->set_key("k" + std::to_string(i));
    op->set_value("v");
    self_->send(writer_, b);
  }
  sched_.run();
  std::set<uint64_t> seqs;
  for (int i = 0; i < 5; ++i) {
    auto r = next<pb::WriteResult>(self_);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->batches_in_commit(), 5u);
    seqs.insert(r->commit_seq());
  }
  EXPECT_EQ(seqs.size(), 1u) << "one transaction for all five batches";
  auto txn = env_->read();
  EXPECT_TRUE(txn.get(storage::db::dedup, "k4"));
}

TEST_F(BrokerDeterministicTest, DeferrableWriteWaitsForAnUrgentOneOrItsDelay) {
  // Consumer offsets are written deferrable: they share the next message
  // write's commit, or commit alone once the delay has passed; never are
  // they answered before a commit.
  auto writer = storage::spawn_writer(sys_, env_, false, milliseconds(5));
  auto batch = [](const std::string& key, bool deferrable) {
    pb::WriteBatch b;
    auto* op = b.add_ops();
    op->set_db(static_cast<uint32_t>(storage::db::dedup));
    op->set_key(key);
    op->set_value("v");
    b.set_deferrable(deferrable);
    return b;
  };
  self_->send(writer, batch("offset-1", true));
  sched_.run();
  EXPECT_FALSE(env_->read().get(storage::db::dedup, "offset-1"))
    << "a deferrable write alone waits";
  self_->send(writer, batch("message-1", false));
  sched_.run();
  auto a = next<pb::WriteResult>(self_);
  auto b = next<pb::WriteResult>(self_);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->commit_seq(), b->commit_seq()) << "one commit for both";
  EXPECT_EQ(a->batches_in_commit(), 2u);
  self_->send(writer, batch("offset-2", true));
  sched_.run();
  EXPECT_FALSE(env_->read().get(storage::db::dedup, "offset-2"));
  advance(5);
  auto c = next<pb::WriteResult>(self_);
  ASSERT_TRUE(c) << "committed alone after the delay";
  EXPECT_EQ(c->batches_in_commit(), 1u);
  EXPECT_TRUE(env_->read().get(storage::db::dedup, "offset-2"));
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
  sched_.run();
}

TEST_F(BrokerDeterministicTest, CommittedOffsetIsTheLowestUnackedAndIsPersisted) {
  create_topic("t", 1);
  produce("t", 0, 10);
  subscribe(self_, subscription("g", "t", "c1"));
  auto ds = deliveries(self_);
  ASSERT_EQ(ds.size(), 1u);
  auto& [d, part] = ds[0];
  ASSERT_EQ(d.messages_size(), 10);
  EXPECT_EQ(d.messages(0).offset(), 0u);
  auto r = ack(self_, part, d, {0, 1, 2, 5, 6});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->committed(), 3u) << "offset 3 is the lowest unacked";
  EXPECT_EQ(stored_offset("g", 1, 0), 3u);
  r = ack(self_, part, d, {3, 4});
  EXPECT_EQ(r->committed(), 7u);
  r = ack(self_, part, d, {7, 8, 9});
  EXPECT_EQ(r->committed(), 10u);
  EXPECT_EQ(stored_offset("g", 1, 0), 10u);
  r = ack(self_, part, d, {3});
  EXPECT_EQ(r->committed(), 10u) << "a repeated ack changes nothing";
  EXPECT_TRUE(deliveries(self_).empty()) << "nothing is redelivered";
}

TEST_F(BrokerDeterministicTest, FilteredMessagesDoNotHoldTheCommittedOffset) {
  create_topic("t", 1);
  produce("t", 0, 3, "TagB");
  produce("t", 0, 2, "TagA");
  auto s = subscription("g", "t", "c1");
  s.set_expression("TagA");
  subscribe(self_, s);
  auto ds = deliveries(self_);
  ASSERT_EQ(ds.size(), 1u);
  ASSERT_EQ(ds[0].first.messages_size(), 2);
  EXPECT_EQ(ds[0].first.messages(0).offset(), 3u);
  auto r = ack(self_, ds[0].second, ds[0].first, {3, 4});
  EXPECT_EQ(r->committed(), 5u);
}

TEST_F(BrokerDeterministicTest, NackedMessageIsRedeliveredAtEachDelayLevelThenDeadLettered) {
  create_topic("t", 1);
  produce("t", 0, 1);
  auto s = subscription("g", "t", "c1");
  s.set_max_reconsume(2);
  s.add_retry_delays_ms(1000);
  s.add_retry_delays_ms(5000);
  subscribe(self_, s);
  auto ds = deliveries(self_);
  ASSERT_EQ(ds.size(), 1u);
  auto r = ack(self_, ds[0].second, ds[0].first, {}, {0});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->committed(), 1u) << "the retry copy is durable: offset moves on";
  advance(999);
  EXPECT_TRUE(deliveries(self_).empty()) << "not before the first delay";
  advance(1);
  ds = deliveries(self_);
  ASSERT_EQ(ds.size(), 1u) << "redelivered at 1 s";
  EXPECT_EQ(ds[0].first.topic(), "%RETRY%g");
  ASSERT_EQ(ds[0].first.messages_size(), 1);
  EXPECT_EQ(ds[0].first.messages(0).reconsume_times(), 1u);
  EXPECT_EQ(ds[0].first.messages(0).origin_topic(), "t");
  EXPECT_EQ(ds[0].first.messages(0).last_error(), "test nack");
  ack(self_, ds[0].second, ds[0].first, {}, {ds[0].first.messages(0).offset()});
  advance(4999);
  EXPECT_TRUE(deliveries(self_).empty()) << "second level is 5 s";
  advance(1);
  ds = deliveries(self_);
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_EQ(ds[0].first.messages(0).reconsume_times(), 2u);
  EXPECT_TRUE(alerts_.empty());
  ack(self_, ds[0].second, ds[0].first, {}, {ds[0].first.messages(0).offset()});
  ASSERT_EQ(alerts_.size(), 1u) << "the move to the DLQ raises one alert";
  EXPECT_EQ(alerts_[0].kind, "dlq");
  EXPECT_EQ(alerts_[0].subject, "g");
  advance(3'600'000);
  EXPECT_TRUE(deliveries(self_).empty()) << "a dead letter is not retried";
  pb::DlqList list;
  list.set_group("g");
  self_->send(frontend_, list);
  auto dlq = next<pb::DlqEntries>(self_);
  ASSERT_TRUE(dlq);
  ASSERT_EQ(dlq->entries_size(), 1);
  EXPECT_EQ(dlq->entries(0).message().reconsume_times(), 3u);
  EXPECT_EQ(dlq->entries(0).message().origin_offset(), 0u);
}

TEST_F(BrokerDeterministicTest, UnackedDeliveryTimesOutIntoTheRetryTopic) {
  create_topic("t", 1);
  produce("t", 0, 2);
  subscribe(self_, subscription("g", "t", "c1"));
  auto ds = deliveries(self_);
  ASSERT_EQ(ds.size(), 1u);
  ack(self_, ds[0].second, ds[0].first, {1}); // offset 0 stays unacked
  advance(59'000);
  EXPECT_TRUE(deliveries(self_).empty());
  // consume_timeout is 60 s; the partition checks every second and the
  // retry copy is due 1 s after the timeout.
  advance(1'000);
  advance(1'000);
  advance(1'000);
  ds = deliveries(self_);
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_EQ(ds[0].first.topic(), "%RETRY%g");
  EXPECT_EQ(ds[0].first.messages(0).reconsume_times(), 1u);
  EXPECT_NE(ds[0].first.messages(0).last_error().find("consume timeout"),
            std::string::npos);
  EXPECT_EQ(stored_offset("g", 1, 0), 2u);
}

TEST_F(BrokerDeterministicTest, RebalanceSplitsPartitionsAndMovesUnackedOnLeave) {
  create_topic("t", 4);
  for (int32_t p = 0; p < 4; ++p)
    produce("t", p, 3);
  subscribe(self_, subscription("g", "t", "a"));
  deliveries(self_); // all four partitions while alone; leave them unacked
  std::map<uint32_t, caf::actor> parts;
  {
    caf::scoped_actor b{sys_, true};
    subscribe(b, subscription("g", "t", "b"));
    // b's arrival: a keeps partitions 0,1; b gets 2,3 with their unacked
    // messages.
    auto db = deliveries(b);
    std::set<uint32_t> got_b;
    for (auto& [d, p] : db) {
      got_b.insert(d.partition());
      EXPECT_EQ(d.messages_size(), 3);
      parts[d.partition()] = p;
    }
    EXPECT_EQ(got_b, (std::set<uint32_t>{2, 3}));
    // b acknowledges partition 2 only, then dies.
    for (auto& [d, p] : db)
      if (d.partition() == 2)
        ack(b, p, d, {0, 1, 2});
  }
  sched_.run();
  auto da = deliveries(self_);
  std::map<uint32_t, int> got_a;
  for (auto& [d, p] : da)
    got_a[d.partition()] += d.messages_size();
  EXPECT_EQ(got_a.count(2), 0u) << "acked by b: not redelivered";
  EXPECT_EQ(got_a[3], 3) << "b's unacked partition 3 comes to a";
}

TEST_F(BrokerDeterministicTest, DelayedMessageIsInvisibleUntilDue) {
  create_topic("t", 1);
  subscribe(self_, subscription("g", "t", "c1"));
  pb::ProduceRequest req;
  req.set_topic("t");
  req.set_partition(0);
  auto* m = req.add_messages();
  m->set_body("later");
  m->set_deliver_at_ms(now_->load() + 10'000);
  self_->send(frontend_, req);
  ASSERT_TRUE(next<pb::ProduceResult>(self_));
  advance(9'999);
  EXPECT_TRUE(deliveries(self_).empty());
  advance(1);
  auto ds = deliveries(self_);
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_EQ(ds[0].first.messages(0).body(), "later");
}

TEST_F(BrokerDeterministicTest, AnAssignmentWithAnOlderTokenIsRefusedByThePartition) {
  // Fencing: a group coordinator's token is the create_revision of its
  // ownership key in etcd. A partition keeps the highest token it saw per
  // cursor and refuses an older one, whatever its generation; a newer owner
  // starts its generations anew.
  create_topic("t", 1);
  produce("t", 0, 3);
  self_->send(topics_, wire::route_atom::value, std::string{"t"}, false);
  sched_.run();
  caf::actor partition;
  self_->receive(
    [&](pb::TopicMeta&, std::vector<caf::actor>& parts) {
      ASSERT_EQ(parts.size(), 1u);
      partition = parts[0];
    },
    caf::after(std::chrono::seconds(0)) >> [] { ADD_FAILURE() << "no route"; });
  ASSERT_TRUE(partition);
  auto assign = [&](caf::scoped_actor& member, const std::string& id,
                    uint64_t token, uint64_t generation) {
    pb::AssignCursor a;
    a.set_cursor("g");
    a.set_group("g");
    a.set_topic("t");
    a.set_partition(0);
    a.set_expression("*");
    a.set_member_id(id);
    a.set_generation(generation);
    a.set_token(token);
    self_->send(partition, a, caf::actor{member});
  };
  auto refused_before = metrics::counter("cluster.stale_refused").load();
  assign(self_, "a", 10, 7);
  EXPECT_EQ(deliveries(self_).size(), 1u) << "the owner with token 10";
  caf::scoped_actor stale{sys_, true};
  assign(stale, "b", 9, 1000); // an old owner, however new its generation
  EXPECT_TRUE(deliveries(stale).empty());
  EXPECT_EQ(metrics::counter("cluster.stale_refused").load(),
            refused_before + 1);
  caf::scoped_actor next_owner{sys_, true};
  assign(next_owner, "c", 11, 1); // a new owner, generations anew
  auto got = deliveries(next_owner);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].first.messages_size(), 3)
    << "the unacked messages go to the new owner's member";
}
