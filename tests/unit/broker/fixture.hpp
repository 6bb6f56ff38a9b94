// Shared fixture: the broker's actors (and the txn coordinator) on CAF's
// deterministic scheduler. Nothing runs until the test says so, and time
// moves only when the test advances it (the broker's wall clock is a manual
// clock advanced in step). Storage is a real LMDB in a temp dir; the writer
// runs as an ordinary actor so the scheduler drives it too.
#pragma once

#include "base/errc.hpp"
#include "broker/actors.hpp"
#include "node/gateway.hpp"
#include "storage/environment.hpp"
#include "storage/keys.hpp"
#include "storage/writer_actor.hpp"
#include "txn/coordinator.hpp"
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
#include <optional>
#include <set>
#include <unistd.h>

namespace edda::testing {

namespace pb = edda::wire::pb;
using std::chrono::milliseconds;


inline std::string make_temp_dir() {
  char tmpl[] = "/tmp/edda-unit-XXXXXX";
  return ::mkdtemp(tmpl);
}

struct det_config : caf::actor_system_config {
  det_config() {
    wire::register_types(*this);
    set("scheduler.policy", caf::atom("testing"));
  }
};

class DeterministicFixture : public ::testing::Test {
protected:
  explicit DeterministicFixture(config::node_settings s = settings()) {
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
    ctx->settings = std::move(s);
    ctx->scheduler = scheduler_ = broker::spawn_scheduler(sys_, ctx);
    topics_ = broker::spawn_topic_manager(sys_, ctx);
    groups_ = broker::spawn_group_manager(sys_, ctx, topics_);
    dedup_ = broker::spawn_dedup(sys_, ctx);
    ctx_ = ctx;
    txn_ = txn::spawn_coordinator(sys_, ctx, topics_);
    frontend_ = node::spawn_gateway(sys_, ctx, topics_, groups_, dedup_,
                                       txn_);
    broker::wire_up(scheduler_, topics_, groups_);
    sched_.run();
  }

  ~DeterministicFixture() override {
    for (auto* a : {&frontend_, &txn_, &dedup_, &groups_, &topics_,
                    &scheduler_, &writer_})
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
        [&](pb::DeliverFrame& f) {
          pb::Deliver d;
          EXPECT_TRUE(d.ParseFromString(f.deliver()));
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
  caf::actor writer_, scheduler_, topics_, groups_, dedup_, txn_, frontend_;
  std::shared_ptr<const broker::context> ctx_;
  /// Node settings for the fixture (txn timings as in the tests below);
  /// a derived fixture may pass others to the constructor.
  static config::node_settings settings() {
    config::node_settings s;
    s.txn_check_after_ms = 6000;
    s.txn_max_checks = 3;
    s.txn_max_check_interval_ms = 60000;
    s.txn_check_timeout_ms = 3000;
    // Groups rebalance at once unless a test is about the debounce
    // (group_test.cpp).
    s.rebalance_delay_ms = 0;
    return s;
  }
};


} // namespace edda::testing
