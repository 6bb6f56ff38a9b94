// Operator reads and moves of a topic's messages and a group's offsets,
// through the client door as `edda` does: group reset-offsets (dry run,
// refusal with live members, earliest / datetime / offset / latest),
// message show / find, and topic retention by time and size (online, the
// low watermark in describe, cursors moved up to it).
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "config/settings.hpp"
#include "node/embedded_node.hpp"
#include "support/util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using edda::test::eventually;
namespace client = edda::client;
namespace admin = edda::client::admin;
namespace pb = edda::wire::v1;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

class OffsetsTest : public ::testing::Test {
protected:
  void SetUp() override {
    edda::config::node_settings s;
    s.data_dir = dir_.path() + "/data";
    s.listen_port = 0;
    s.mode = edda::config::durability::nosync;
    s.map_size = 256ull << 20;
    s.log_level = "error";
    settings_ = s;
    start();
  }

  void start() {
    auto n = edda::node::embedded_node::start(settings_);
    ASSERT_TRUE(n) << edda::render(n.error());
    node_ = std::move(*n);
    auto c = client::connection::open("127.0.0.1", node_->api_port(), {});
    ASSERT_TRUE(c) << edda::render(c.error());
    conn_ = std::make_unique<client::connection>(std::move(*c));
  }

  void restart() {
    conn_.reset();
    node_->stop();
    node_.reset();
    start();
  }

  void send(const std::string& topic, const std::string& key,
            const std::string& body) {
    client::producer p{*conn_};
    client::message m;
    m.topic = topic;
    m.key = key;
    m.body = body;
    auto r = p.send(m);
    ASSERT_TRUE(r) << edda::render(r.error());
  }

  /// A member of `group` on `topic` that counts the bodies it was given.
  struct member {
    std::mutex mx;
    std::multiset<std::string> bodies;
    std::unique_ptr<client::consumer> c;
    size_t count() {
      std::lock_guard<std::mutex> g{mx};
      return bodies.size();
    }
  };

  std::unique_ptr<member> join(const std::string& group,
                               const std::string& topic) {
    auto m = std::make_unique<member>();
    client::consumer_options o;
    o.group = group;
    o.topic = topic;
    o.client_id = group + "-1";
    auto* raw = m.get();
    auto c = client::consumer::start(*conn_, o, [raw](const client::received& r) {
      std::lock_guard<std::mutex> g{raw->mx};
      raw->bodies.insert(r.msg.body);
      return client::consume_result::success;
    });
    EXPECT_TRUE(c) << edda::render(c.error());
    if (c)
      m->c = std::move(*c);
    return m;
  }

  /// Waits until the node lists `group` without members.
  void wait_gone(const std::string& group) {
    ASSERT_TRUE(eventually(10s, [&] {
      auto l = admin::list_groups(*conn_);
      if (!l)
        return false;
      for (auto& g : l->groups())
        if (g.group() == group)
          return g.members_size() == 0;
      return false;
    }));
  }

  /// The group's committed offset per partition, as describe shows it.
  std::map<uint32_t, uint64_t> committed(const std::string& topic,
                                         const std::string& group) {
    std::map<uint32_t, uint64_t> out;
    auto d = admin::describe_topic(*conn_, topic);
    EXPECT_TRUE(d) << edda::render(d.error());
    if (d)
      for (auto& g : d->groups())
        if (g.cursor() == group)
          out[g.partition()] = g.committed();
    return out;
  }

  pb::ResetOffsets reset(const std::string& group, const std::string& topic,
                         pb::ResetOffsets::To to, bool execute) {
    pb::ResetOffsets r;
    r.set_group(group);
    r.set_topic(topic);
    r.set_to(to);
    r.set_execute(execute);
    r.set_by("ops-alice");
    return r;
  }

  pb::TopicInfo describe(const std::string& topic) {
    auto d = admin::describe_topic(*conn_, topic);
    EXPECT_TRUE(d) << edda::render(d.error());
    return d ? *d : pb::TopicInfo{};
  }

  edda::test::temp_dir dir_;
  edda::config::node_settings settings_;
  std::unique_ptr<edda::node::embedded_node> node_;
  std::unique_ptr<client::connection> conn_;
};

TEST_F(OffsetsTest, ResetToEarliestIsADryRunUntilExecutedAndRedeliversEverything) {
  ASSERT_TRUE(admin::create_topic(*conn_, "orders", 2));
  for (int i = 0; i < 10; ++i)
    send("orders", "k" + std::to_string(i), "m" + std::to_string(i));
  auto m = join("billing", "orders");
  ASSERT_TRUE(eventually(10s, [&] { return m->count() == 10; }));
  ASSERT_TRUE(eventually(10s, [&] {
    auto c = committed("orders", "billing");
    return c.size() == 2 && c[0] + c[1] == 10;
  }));

  // With the member alive: a dry run shows where each partition would go
  // and who has it; executing is refused, nothing moves.
  auto dry = admin::reset_offsets(
    *conn_, reset("billing", "orders", pb::ResetOffsets::TO_EARLIEST, false));
  ASSERT_TRUE(dry) << edda::render(dry.error());
  EXPECT_FALSE(dry->executed());
  ASSERT_EQ(dry->partitions_size(), 2);
  uint64_t ends = 0;
  for (auto& row : dry->partitions()) {
    EXPECT_EQ(row.committed(), row.end_offset());
    EXPECT_EQ(row.target(), 0u);
    EXPECT_EQ(row.member(), "billing-1");
    ends += row.end_offset();
  }
  EXPECT_EQ(ends, 10u);
  auto refused = admin::reset_offsets(
    *conn_, reset("billing", "orders", pb::ResetOffsets::TO_EARLIEST, true));
  ASSERT_FALSE(refused);
  EXPECT_EQ(edda::code_of(refused.error()), edda::errc::invalid_argument);
  EXPECT_NE(edda::render(refused.error()).find("1 live member (billing-1)"),
            std::string::npos)
    << edda::render(refused.error());
  auto c = committed("orders", "billing");
  EXPECT_EQ(c[0] + c[1], 10u);

  // The member stops: executed, every partition back to 0, and a member
  // that joins is given all ten again, once.
  m->c->stop();
  wait_gone("billing");
  auto done = admin::reset_offsets(
    *conn_, reset("billing", "orders", pb::ResetOffsets::TO_EARLIEST, true));
  ASSERT_TRUE(done) << edda::render(done.error());
  EXPECT_TRUE(done->executed());
  c = committed("orders", "billing");
  EXPECT_EQ(c[0], 0u);
  EXPECT_EQ(c[1], 0u);
  auto again = join("billing", "orders");
  ASSERT_TRUE(eventually(10s, [&] { return again->count() == 10; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(again->count(), 10u);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(again->bodies.count("m" + std::to_string(i)), 1u) << i;
}

TEST_F(OffsetsTest, AForcedResetGivesALiveMemberEverythingAgain) {
  ASSERT_TRUE(admin::create_topic(*conn_, "feed", 1));
  for (int i = 0; i < 4; ++i)
    send("feed", "", "f" + std::to_string(i));
  auto m = join("readers", "feed");
  ASSERT_TRUE(eventually(10s, [&] { return m->count() == 4; }));
  ASSERT_TRUE(eventually(10s, [&] {
    return committed("feed", "readers")[0] == 4;
  }));
  auto forced = reset("readers", "feed", pb::ResetOffsets::TO_OFFSET, true);
  forced.set_offset(1);
  forced.set_force(true);
  auto r = admin::reset_offsets(*conn_, forced);
  ASSERT_TRUE(r) << edda::render(r.error());
  EXPECT_EQ(r->partitions(0).member(), "readers-1");
  // The live member is given offsets 1..3 again, without a restart.
  ASSERT_TRUE(eventually(10s, [&] { return m->count() == 7; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(m->count(), 7u);
  EXPECT_EQ(m->bodies.count("f0"), 1u);
  EXPECT_EQ(m->bodies.count("f3"), 2u);
  ASSERT_TRUE(eventually(10s, [&] {
    return committed("feed", "readers")[0] == 4;
  }));
  m->c->stop();
}

TEST_F(OffsetsTest, ResetToADatetimeAnOffsetOrTheLatestAndItsRefusals) {
  ASSERT_TRUE(admin::create_topic(*conn_, "ledger", 1));
  for (int i = 0; i < 5; ++i)
    send("ledger", "", "old" + std::to_string(i));
  std::this_thread::sleep_for(20ms);
  auto at = now_ms();
  std::this_thread::sleep_for(20ms);
  for (int i = 0; i < 3; ++i)
    send("ledger", "", "new" + std::to_string(i));
  // A group that consumed everything, then left.
  {
    auto m = join("audit", "ledger");
    ASSERT_TRUE(eventually(10s, [&] { return m->count() == 8; }));
    ASSERT_TRUE(eventually(10s, [&] {
      return committed("ledger", "audit")[0] == 8;
    }));
    m->c->stop();
  }
  wait_gone("audit");

  auto to_time = reset("audit", "ledger", pb::ResetOffsets::TO_DATETIME, true);
  to_time.set_datetime_ms(at);
  auto r = admin::reset_offsets(*conn_, to_time);
  ASSERT_TRUE(r) << edda::render(r.error());
  ASSERT_EQ(r->partitions_size(), 1);
  EXPECT_EQ(r->partitions(0).committed(), 8u);
  EXPECT_EQ(r->partitions(0).target(), 5u); // the first "new" message
  {
    auto m = join("audit", "ledger");
    ASSERT_TRUE(eventually(10s, [&] { return m->count() == 3; }));
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(m->bodies, (std::multiset<std::string>{"new0", "new1", "new2"}));
    m->c->stop();
  }
  wait_gone("audit");

  // An offset past the end is kept at the end; latest is the end.
  auto to_offset = reset("audit", "ledger", pb::ResetOffsets::TO_OFFSET, true);
  to_offset.set_offset(2);
  r = admin::reset_offsets(*conn_, to_offset);
  ASSERT_TRUE(r) << edda::render(r.error());
  EXPECT_EQ(r->partitions(0).target(), 2u);
  EXPECT_EQ(committed("ledger", "audit")[0], 2u);
  to_offset.set_offset(1000);
  r = admin::reset_offsets(*conn_, to_offset);
  ASSERT_TRUE(r) << edda::render(r.error());
  EXPECT_EQ(r->partitions(0).target(), 8u);
  r = admin::reset_offsets(
    *conn_, reset("audit", "ledger", pb::ResetOffsets::TO_LATEST, true));
  ASSERT_TRUE(r) << edda::render(r.error());
  EXPECT_EQ(r->partitions(0).target(), 8u);

  // The reset is durable: after a restart a member starts from it.
  to_offset.set_offset(6);
  ASSERT_TRUE(admin::reset_offsets(*conn_, to_offset));
  restart();
  {
    auto m = join("audit", "ledger");
    ASSERT_TRUE(eventually(10s, [&] { return m->count() == 2; }));
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(m->bodies, (std::multiset<std::string>{"new1", "new2"}));
    m->c->stop();
  }

  // Refusals: an unknown group or topic, no `by` when executing.
  auto unknown = admin::reset_offsets(
    *conn_, reset("nobody", "ledger", pb::ResetOffsets::TO_LATEST, false));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(edda::code_of(unknown.error()), edda::errc::unknown_group);
  wait_gone("audit");
  auto no_topic = admin::reset_offsets(
    *conn_, reset("audit", "nothing", pb::ResetOffsets::TO_LATEST, false));
  ASSERT_FALSE(no_topic);
  EXPECT_EQ(edda::code_of(no_topic.error()), edda::errc::unknown_topic);
  auto anonymous = reset("audit", "ledger", pb::ResetOffsets::TO_LATEST, true);
  anonymous.clear_by();
  auto refused = admin::reset_offsets(*conn_, anonymous);
  ASSERT_FALSE(refused);
  EXPECT_EQ(edda::code_of(refused.error()), edda::errc::invalid_argument);
}

TEST_F(OffsetsTest, MessagesAreFoundByIdKeyAndTime) {
  ASSERT_TRUE(admin::create_topic(*conn_, "pay", 3));
  ASSERT_TRUE(admin::create_topic(*conn_, "other", 1));
  for (int i = 0; i < 9; ++i)
    send("pay", "acct-" + std::to_string(i % 3), "p" + std::to_string(i));
  std::this_thread::sleep_for(20ms);
  auto at = now_ms();
  std::this_thread::sleep_for(20ms);
  send("pay", "acct-9", "late");
  send("other", "acct-1", "elsewhere");

  pb::FindMessages by_key;
  by_key.set_topic("pay");
  by_key.set_by_key(true);
  by_key.set_key("acct-1");
  auto found = admin::find_messages(*conn_, by_key);
  ASSERT_TRUE(found) << edda::render(found.error());
  ASSERT_EQ(found->messages_size(), 3);
  std::vector<std::string> bodies;
  for (auto& m : found->messages())
    bodies.push_back(m.body());
  EXPECT_EQ(bodies, (std::vector<std::string>{"p1", "p4", "p7"})); // in order
  EXPECT_FALSE(found->truncated());

  // A limit: the oldest first, and it says there is more.
  by_key.set_limit(2);
  found = admin::find_messages(*conn_, by_key);
  ASSERT_TRUE(found) << edda::render(found.error());
  ASSERT_EQ(found->messages_size(), 2);
  EXPECT_EQ(found->messages(0).body(), "p1");
  EXPECT_TRUE(found->truncated());

  pb::FindMessages since;
  since.set_topic("pay");
  since.set_since_ms(at);
  found = admin::find_messages(*conn_, since);
  ASSERT_TRUE(found) << edda::render(found.error());
  ASSERT_EQ(found->messages_size(), 1);
  EXPECT_EQ(found->messages(0).body(), "late");

  // show: by id, in any topic; an unknown id is not_found.
  auto id = found->messages(0).id();
  pb::FindMessages show;
  show.set_id(id);
  found = admin::find_messages(*conn_, show);
  ASSERT_TRUE(found) << edda::render(found.error());
  ASSERT_EQ(found->messages_size(), 1);
  EXPECT_EQ(found->messages(0).topic(), "pay");
  EXPECT_EQ(found->messages(0).key(), "acct-9");
  show.set_id("0123456789abcdef0123456789abcdef");
  found = admin::find_messages(*conn_, show);
  ASSERT_FALSE(found);
  EXPECT_EQ(edda::code_of(found.error()), edda::errc::not_found);

  // Mistakes: nothing to look for, a key without a topic, no such topic.
  found = admin::find_messages(*conn_, pb::FindMessages{});
  ASSERT_FALSE(found);
  EXPECT_EQ(edda::code_of(found.error()), edda::errc::invalid_argument);
  by_key.clear_topic();
  found = admin::find_messages(*conn_, by_key);
  ASSERT_FALSE(found);
  EXPECT_EQ(edda::code_of(found.error()), edda::errc::invalid_argument);
  by_key.set_topic("nothing");
  found = admin::find_messages(*conn_, by_key);
  ASSERT_FALSE(found);
  EXPECT_EQ(edda::code_of(found.error()), edda::errc::unknown_topic);
}

TEST_F(OffsetsTest, RetentionBySizeAndTimeDropsTheOldestOnlineAndMovesCursors) {
  ASSERT_TRUE(admin::create_topic(*conn_, "events", 1));
  std::string body(200, 'x');
  for (int i = 0; i < 20; ++i)
    send("events", "", body + std::to_string(i));
  // A group that read the first 5 and left (its cursor at 5).
  {
    auto m = join("slow", "events");
    ASSERT_TRUE(eventually(10s, [&] { return m->count() == 20; }));
    m->c->stop();
  }
  wait_gone("slow");
  pb::ResetOffsets back;
  back.set_group("slow");
  back.set_topic("events");
  back.set_to(pb::ResetOffsets::TO_OFFSET);
  back.set_offset(5);
  back.set_execute(true);
  back.set_by("ops");
  ASSERT_TRUE(admin::reset_offsets(*conn_, back));

  // Refused: nothing to alter, an internal topic (the group's retry topic
  // exists since it consumed), a retention beyond 100 years.
  pb::AlterTopic nothing;
  nothing.set_name("events");
  auto r = admin::alter_topic(*conn_, nothing);
  ASSERT_FALSE(r);
  EXPECT_EQ(edda::code_of(r.error()), edda::errc::invalid_argument);
  pb::AlterTopic internal;
  internal.set_name("%RETRY%slow");
  internal.set_set_retention(true);
  internal.set_retention_ms(1000);
  r = admin::alter_topic(*conn_, internal);
  ASSERT_FALSE(r);
  EXPECT_NE(edda::render(r.error()).find("internal topics"), std::string::npos)
    << edda::render(r.error());
  pb::AlterTopic forever;
  forever.set_name("events");
  forever.set_set_retention(true);
  forever.set_retention_ms(~0ull);
  r = admin::alter_topic(*conn_, forever);
  ASSERT_FALSE(r);
  EXPECT_EQ(edda::code_of(r.error()), edda::errc::invalid_argument);

  // At most ~2 KiB per partition: the oldest go, online, the newest stay.
  pb::AlterTopic size;
  size.set_name("events");
  size.set_set_retention_bytes(true);
  size.set_retention_bytes(2048);
  r = admin::alter_topic(*conn_, size);
  ASSERT_TRUE(r) << edda::render(r.error());
  EXPECT_EQ(r->meta().retention_bytes(), 2048u);
  ASSERT_TRUE(eventually(10s, [&] {
    auto d = describe("events");
    return d.partitions_size() == 1 && d.partitions(0).low_watermark() > 5;
  }));
  auto d = describe("events");
  auto low = d.partitions(0).low_watermark();
  EXPECT_LE(d.partitions(0).bytes(), 2048u);
  EXPECT_GT(d.partitions(0).bytes(), 1024u); // not more than needed went
  EXPECT_EQ(d.partitions(0).end_offset(), 20u);
  // The lagging group moved up to the low watermark: it is given what is
  // kept, no more.
  {
    auto m = join("slow", "events");
    ASSERT_TRUE(eventually(10s, [&] { return m->count() == 20 - low; }));
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(m->count(), 20 - low);
    EXPECT_EQ(m->bodies.count(body + "19"), 1u);
    m->c->stop();
  }

  // The setting is kept across a restart; then by time: everything older
  // than 200 ms goes but the newest message (offsets go on from it after
  // a restart), and a new message is kept until it is that old.
  restart();
  d = describe("events");
  EXPECT_EQ(d.meta().retention_bytes(), 2048u);
  EXPECT_EQ(d.partitions(0).low_watermark(), low);
  pb::AlterTopic time;
  time.set_name("events");
  time.set_set_retention(true);
  time.set_retention_ms(200);
  ASSERT_TRUE(admin::alter_topic(*conn_, time));
  ASSERT_TRUE(eventually(10s, [&] {
    return describe("events").partitions(0).low_watermark() == 19;
  }));
  send("events", "", "fresh");
  auto kept = describe("events");
  EXPECT_EQ(kept.partitions(0).end_offset(), 21u);
  ASSERT_TRUE(eventually(10s, [&] {
    return describe("events").partitions(0).low_watermark() == 20;
  }));
  restart();
  kept = describe("events");
  EXPECT_EQ(kept.partitions(0).low_watermark(), 20u);
  EXPECT_EQ(kept.partitions(0).end_offset(), 21u);
  send("events", "", "after");
  EXPECT_EQ(describe("events").partitions(0).end_offset(), 22u);

  // Retention off: kept for ever again.
  time.set_retention_ms(0);
  size.set_retention_bytes(0);
  ASSERT_TRUE(admin::alter_topic(*conn_, time));
  r = admin::alter_topic(*conn_, size);
  ASSERT_TRUE(r) << edda::render(r.error());
  EXPECT_EQ(r->meta().retention_ms(), 0u);
  EXPECT_EQ(r->meta().retention_bytes(), 0u);
}

} // namespace
