// Broker actors on CAF's deterministic scheduler: nothing runs until the
// test says so, and time moves only when the test advances it (the broker's
// wall clock is a manual clock advanced in step). Storage is a real LMDB in
// a temp dir; the writer runs as an ordinary actor so the scheduler drives
// it too.
#include "base/errc.hpp"
#include "broker/actors.hpp"
#include "storage/environment.hpp"
#include "storage/keys.hpp"
#include "storage/writer_actor.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/after.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <unistd.h>

using namespace edda;
namespace pb = edda::wire::pb;
using std::chrono::milliseconds;

namespace {

std::string make_temp_dir() {
  char tmpl[] = "/tmp/edda-unit-XXXXXX";
  return ::mkdtemp(tmpl);
}

struct det_config : caf::actor_system_config {
  det_config() {
    wire::register_types(*this);
    set("scheduler.policy", caf::atom("testing"));
  }
};

class BrokerDeterministicTest : public ::testing::Test {
protected:
  BrokerDeterministicTest() {
    storage::options so;
    so.dir = dir_;
    so.map_size = 64ull << 20;
    so.mode = config::durability::nosync;
    auto env = storage::environment::open(so);
    EXPECT_TRUE(env) << render(env.error());
    env_ = *env;
    auto ctx = std::make_shared<broker::context>();
    ctx->env = env_;
    ctx->writer = writer_ = storage::spawn_writer(sys_, env_, false);
    ctx->alerts = std::make_shared<alert_sink>();
    ctx->alerts->add_hook([this](const alert& a) { alerts_.push_back(a); });
    auto now = now_;
    ctx->clock = [now] { return now->load(); };
    ctx->scheduler = scheduler_ = broker::spawn_scheduler(sys_, ctx);
    topics_ = broker::spawn_topic_manager(sys_, ctx);
    groups_ = broker::spawn_group_manager(sys_, ctx, topics_);
    dedup_ = broker::spawn_dedup(sys_, ctx);
    frontend_ = broker::spawn_frontend(sys_, ctx, topics_, groups_, dedup_,
                                       caf::actor{});
    broker::wire_up(scheduler_, topics_, groups_);
    sched_.run();
  }

  ~BrokerDeterministicTest() override {
    for (auto* a : {&frontend_, &dedup_, &groups_, &topics_, &scheduler_,
                    &writer_})
      caf::anon_send_exit(*a, caf::exit_reason::user_shutdown);
    sched_.run();
    std::string cmd = "rm -rf " + dir_;
    (void) std::system(cmd.c_str());
  }

  /// Moves virtual time and the broker's clock together, then runs.
  void advance(int64_t ms) {
    *now_ += ms;
    sched_.advance_time(milliseconds(ms));
    sched_.run();
  }

  /// The next message of type T in `who`'s mailbox (after running).
  template <class T>
  std::optional<T> next(caf::scoped_actor& who) {
    sched_.run();
    std::optional<T> out;
    who->receive([&](T& x) { out = std::move(x); },
                 [&](caf::error& err) { ADD_FAILURE() << render(err); },
                 caf::after(std::chrono::seconds(0)) >> [] {});
    return out;
  }

  /// All Deliver messages waiting in `who`'s mailbox, by partition actor.
  std::vector<std::pair<pb::Deliver, caf::actor>> deliveries(
    caf::scoped_actor& who) {
    sched_.run();
    std::vector<std::pair<pb::Deliver, caf::actor>> out;
    for (;;) {
      bool got = false;
      who->receive(
        [&](pb::Deliver& d) {
          out.emplace_back(std::move(d), caf::actor_cast<caf::actor>(
                                           who->current_sender()));
          got = true;
        },
        caf::after(std::chrono::seconds(0)) >> [] {});
      if (!got)
        return out;
    }
  }

  void create_topic(const std::string& name, uint32_t partitions) {
    pb::CreateTopic req;
    req.set_name(name);
    req.set_partitions(partitions);
    self_->send(frontend_, req);
    ASSERT_TRUE(next<pb::TopicInfo>(self_));
  }

  void produce(const std::string& topic, int32_t partition, int n,
               const std::string& tag = {}) {
    pb::ProduceRequest req;
    req.set_topic(topic);
    req.set_partition(partition);
    for (int i = 0; i < n; ++i) {
      auto* m = req.add_messages();
      m->set_body("m" + std::to_string(i));
      if (!tag.empty())
        m->add_tags(tag);
    }
    self_->send(frontend_, req);
    auto res = next<pb::ProduceResult>(self_);
    ASSERT_TRUE(res);
    ASSERT_EQ(res->offsets_size(), n);
  }

  pb::Subscribe subscription(const std::string& group, const std::string& topic,
                             const std::string& client) {
    pb::Subscribe s;
    s.set_group(group);
    s.set_topic(topic);
    s.set_client_id(client);
    s.set_expression("*");
    return s;
  }

  void subscribe(caf::scoped_actor& who, const pb::Subscribe& s) {
    who->send(frontend_, s);
    ASSERT_TRUE(next<pb::Subscribed>(who)) << s.client_id();
  }

  std::optional<pb::AckResult> ack(caf::scoped_actor& who,
                                   const caf::actor& partition,
                                   const pb::Deliver& d,
                                   std::vector<uint64_t> acks,
                                   std::vector<uint64_t> nacks = {}) {
    pb::AckRequest req;
    req.set_cursor(d.cursor());
    req.set_topic(d.topic());
    req.set_partition(d.partition());
    for (auto a : acks)
      req.add_acks(a);
    for (auto n : nacks) {
      auto* x = req.add_nacks();
      x->set_offset(n);
      x->set_reason("test nack");
    }
    who->send(partition, req);
    return next<pb::AckResult>(who);
  }

  uint64_t stored_offset(const std::string& cursor, uint32_t topic_id,
                         uint32_t partition) {
    auto txn = env_->read();
    auto v = txn.get(storage::db::offsets,
                     storage::keys::offset_key(cursor, topic_id, partition));
    if (!v)
      return UINT64_MAX;
    pb::CommittedOffset rec;
    EXPECT_TRUE(rec.ParseFromArray(v->data(), static_cast<int>(v->size())));
    return rec.offset();
  }

  std::string dir_ = make_temp_dir();
  std::shared_ptr<storage::environment> env_;
  det_config cfg_;
  caf::actor_system sys_{cfg_};
  caf::scheduler::test_coordinator& sched_
    = dynamic_cast<caf::scheduler::test_coordinator&>(sys_.scheduler());
  caf::scoped_actor self_{sys_, true};
  std::shared_ptr<std::atomic<int64_t>> now_
    = std::make_shared<std::atomic<int64_t>>(1'700'000'000'000);
  std::vector<alert> alerts_;
  caf::actor writer_, scheduler_, topics_, groups_, dedup_, frontend_;
};

} // namespace

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
