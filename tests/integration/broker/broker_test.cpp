// Integration tests of the broker as a user sees it: a real embedded node
// (real actors, real LMDB in a fresh temp dir) and the public client API,
// mostly over a remote connection so that the same client code runs over
// the network: each test runs twice, over the node port (CAF middleman on
// 127.0.0.1) and over the client door (edda.api.v1, gRPC).
//
// Waits are polls with deadlines; a sleep only ever proves that something
// did NOT happen within a window.
#include "base/errc.hpp"
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/consumer.hpp"
#include "client/idempotency.hpp"
#include "client/producer.hpp"
#include "client/types.hpp"
#include "config/settings.hpp"
#include "node/embedded_node.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace ch = std::chrono;
namespace admin = edda::client::admin;
namespace pb = edda::wire::v1;
using namespace std::chrono_literals;
using edda::client::connection;
using edda::client::consume_from;
using edda::client::consume_mode;
using edda::client::consume_result;
using edda::client::consumer;
using edda::client::consumer_options;
using edda::client::message;
using edda::client::producer;
using edda::client::received;
using edda::client::send_result;
using steady = ch::steady_clock;

// -- helpers ------------------------------------------------------------------

/// A fresh directory under /tmp, removed with everything in it.
class temp_dir {
public:
  temp_dir() {
    char tmpl[] = "/tmp/edda-broker-it-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::string& path() const {
    return path_;
  }

private:
  std::string path_;
};

/// Polls `pred` every few ms until it holds or `timeout` passes.
template <class Pred>
bool wait_until(Pred pred, ch::milliseconds timeout = 15s) {
  auto deadline = steady::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (steady::now() >= deadline)
      return pred();
    std::this_thread::sleep_for(5ms);
  }
}

int64_t ms_between(steady::time_point a, steady::time_point b) {
  return ch::duration_cast<ch::milliseconds>(b - a).count();
}

std::string render(const caf::error& err) {
  return edda::render(err);
}

/// Every delivery any handler saw, in the order the handlers saw them.
struct delivery {
  received r;
  std::string member;
  steady::time_point at;
};

class recorder {
public:
  using decide_fn = std::function<consume_result(const received&)>;

  /// A handler that records each delivery, then returns `decide(r)`
  /// (success by default). The recorder must outlive the consumer.
  edda::client::handler handler(std::string member, decide_fn decide = {}) {
    return [this, member = std::move(member),
            decide = std::move(decide)](const received& r) {
      {
        std::lock_guard<std::mutex> guard{mtx_};
        items_.push_back(delivery{r, member, steady::now()});
      }
      return decide ? decide(r) : consume_result::success;
    };
  }

  [[nodiscard]] std::vector<delivery> all() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return items_;
  }
  [[nodiscard]] size_t size() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return items_.size();
  }
  /// Distinct message ids seen (by `member`, or by anyone if empty).
  [[nodiscard]] std::set<std::string> ids(const std::string& member = {}) const {
    std::lock_guard<std::mutex> guard{mtx_};
    std::set<std::string> out;
    for (auto& d : items_)
      if (member.empty() || d.member == member)
        out.insert(d.r.msg.id);
    return out;
  }
  [[nodiscard]] size_t count_of(const std::string& id) const {
    std::lock_guard<std::mutex> guard{mtx_};
    size_t n = 0;
    for (auto& d : items_)
      n += d.r.msg.id == id ? 1 : 0;
    return n;
  }
  [[nodiscard]] std::vector<delivery> of(const std::string& id) const {
    std::lock_guard<std::mutex> guard{mtx_};
    std::vector<delivery> out;
    for (auto& d : items_)
      if (d.r.msg.id == id)
        out.push_back(d);
    return out;
  }

private:
  mutable std::mutex mtx_;
  std::vector<delivery> items_;
};

/// Rows of `info.groups()` for one cursor, by partition.
std::map<uint32_t, pb::GroupLag> cursor_rows(const pb::TopicInfo& info,
                                             const std::string& cursor) {
  std::map<uint32_t, pb::GroupLag> out;
  for (auto& g : info.groups())
    if (g.cursor() == cursor)
      out[g.partition()] = g;
  return out;
}

std::map<uint32_t, uint64_t> end_offsets(const pb::TopicInfo& info) {
  std::map<uint32_t, uint64_t> out;
  for (auto& p : info.partitions())
    out[p.partition()] = p.end_offset();
  return out;
}

/// True once the cursor has a row for every partition of the topic and each
/// row has lag 0 and nothing in flight.
bool fully_consumed(const connection& c, const std::string& topic,
                    const std::string& cursor) {
  auto info = admin::describe_topic(c, topic);
  if (!info)
    return false;
  auto rows = cursor_rows(*info, cursor);
  if (rows.size() != info->meta().partitions())
    return false;
  auto ends = end_offsets(*info);
  for (auto& [p, row] : rows)
    if (row.lag() != 0 || row.inflight() != 0 || row.committed() != ends[p])
      return false;
  return true;
}

/// The cursor's committed offsets summed over the topic's partitions: what
/// the node stored durably for it (how a client over the door, which does
/// not confirm acks, sees them durable).
uint64_t committed_sum(const connection& c, const std::string& topic,
                       const std::string& cursor) {
  auto info = admin::describe_topic(c, topic);
  if (!info)
    return 0;
  uint64_t sum = 0;
  for (auto& [p, row] : cursor_rows(*info, cursor))
    sum += row.committed();
  return sum;
}

/// Keys whose FNV-1a hash maps to `partition` of `partitions`.
std::vector<std::string> keys_for_partition(uint32_t partition,
                                            uint32_t partitions, size_t n,
                                            const std::string& prefix) {
  std::vector<std::string> out;
  for (int i = 0; out.size() < n; ++i) {
    auto k = prefix + std::to_string(i);
    if (edda::shard_of(k, partitions) == partition)
      out.push_back(k);
  }
  return out;
}

message msg(const std::string& topic, std::string body, std::string key = {},
            std::vector<std::string> tags = {}) {
  message m;
  m.topic = topic;
  m.body = std::move(body);
  m.key = std::move(key);
  m.tags = std::move(tags);
  return m;
}

// -- fixture ------------------------------------------------------------------

class BrokerIntegration : public ::testing::TestWithParam<bool> {
protected:
  /// Settings for a node on the temp dir, OS-picked port, quiet logs. nosync
  /// is enough for in-process restarts (no OS crash); durability tests
  /// switch to fsync.
  edda::config::node_settings base_settings() const {
    edda::config::node_settings s;
    s.data_dir = dir_.path() + "/data";
    s.listen_host = "127.0.0.1";
    s.listen_port = 0;
    s.mode = edda::config::durability::nosync;
    s.map_size = 256ull << 20;
    s.log_level = "error";
    return s;
  }

  [[nodiscard]] bool start_node(const edda::config::node_settings& s) {
    settings_ = s;
    edda::node::start_options opts;
    opts.listen = true;
    auto n = edda::node::embedded_node::start(s, opts);
    if (!n) {
      ADD_FAILURE() << "node did not start: " << render(n.error());
      return false;
    }
    node_ = std::move(*n);
    if (node_->port() == 0) {
      ADD_FAILURE() << "node does not listen";
      return false;
    }
    return true;
  }
  [[nodiscard]] bool start_node() {
    return start_node(base_settings());
  }

  /// Stops the node (callers first stop their consumers and drop their
  /// producers and connections) and starts it again on the same data dir.
  [[nodiscard]] bool restart_node() {
    node_->stop();
    node_.reset();
    return start_node(settings_);
  }

  /// Over the client door (the test's parameter), else the node port.
  [[nodiscard]] bool over_door() const {
    return GetParam();
  }

  /// A connection over TCP on 127.0.0.1: to the client door or through the
  /// middleman.
  std::optional<connection> remote() {
    edda::client::connect_options o;
    o.door = over_door();
    auto c = connection::open("127.0.0.1",
                              o.door ? node_->api_port() : node_->port(), o);
    if (!c) {
      ADD_FAILURE() << "cannot connect: " << render(c.error());
      return std::nullopt;
    }
    return std::move(*c);
  }

  /// An in-process connection.
  connection local() {
    return node_->connect();
  }

  std::unique_ptr<consumer> start_consumer(const connection& c,
                                           consumer_options o,
                                           edda::client::handler h) {
    auto r = consumer::start(c, std::move(o), std::move(h));
    if (!r) {
      ADD_FAILURE() << "consumer did not start: " << render(r.error());
      return nullptr;
    }
    return std::move(*r);
  }

  static consumer_options opts(std::string group, std::string topic,
                               std::string client_id) {
    consumer_options o;
    o.group = std::move(group);
    o.topic = std::move(topic);
    o.client_id = std::move(client_id);
    return o;
  }

  temp_dir dir_;
  edda::config::node_settings settings_;
  // Destroyed before dir_ (reverse declaration order). Test bodies keep
  // their connections, producers and consumers as locals, so those are gone
  // before the node stops.
  std::unique_ptr<edda::node::embedded_node> node_;
};

// 1 ---------------------------------------------------------------------------

TEST_P(BrokerIntegration,
       ProduceConsumeRoundTripOverTheNetworkDeliversEveryMessageOnceInKeyOrder) {
  ASSERT_TRUE(start_node());
  auto conn = remote();
  ASSERT_TRUE(conn);
  auto created = admin::create_topic(*conn, "orders", 4);
  ASSERT_TRUE(created) << render(created.error());
  ASSERT_EQ(created->meta().partitions(), 4u);

  constexpr int n = 1000;
  auto key_of = [](int i) { return "customer-" + std::to_string(i % 37); };
  auto body_of = [](int i) {
    // Binary: NUL and 0xff bytes inside, at both ends.
    return std::string("\0\xff", 2) + "payload-" + std::to_string(i)
           + std::string("\xff\0\x01\0", 4);
  };
  auto props_of = [](int i) {
    return std::map<std::string, std::string>{
      {"seq", std::to_string(i)},
      // Property values are proto3 strings: any valid UTF-8, NUL included.
      {"text", std::string("a\0b \xc3\xa9 \xe2\x82\xac", 10)},
      {"empty", ""}};
  };
  auto tags_of = [](int i) {
    return std::vector<std::string>{i % 2 == 0 ? "TagA" : "TagB",
                                    "n" + std::to_string(i % 5)};
  };

  std::vector<std::optional<send_result>> sent(n);
  std::atomic<int> send_errors{0};
  std::mutex sent_mtx;
  std::string first_error;
  {
    producer prod{*conn};
    for (int i = 0; i < n; ++i) {
      auto m = msg("orders", body_of(i), key_of(i), tags_of(i));
      m.properties = props_of(i);
      prod.send_async(std::move(m), [&, i](caf::expected<send_result> r) {
        std::lock_guard<std::mutex> guard{sent_mtx};
        if (r) {
          sent[static_cast<size_t>(i)] = *r;
        } else {
          if (send_errors++ == 0)
            first_error = render(r.error());
        }
      });
    }
    prod.flush();
  }
  ASSERT_EQ(send_errors.load(), 0) << first_error;

  // The producer reports the partition of the key's hash and, per key,
  // increasing offsets in send order.
  std::map<std::string, std::vector<int>> by_key;
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(sent[static_cast<size_t>(i)]) << "no result for message " << i;
    auto& r = *sent[static_cast<size_t>(i)];
    EXPECT_EQ(r.topic, "orders");
    EXPECT_FALSE(r.delayed);
    EXPECT_EQ(r.partition, edda::shard_of(key_of(i), 4)) << "message " << i;
    by_key[key_of(i)].push_back(i);
  }
  for (auto& [key, seqs] : by_key)
    for (size_t j = 1; j < seqs.size(); ++j)
      EXPECT_LT(sent[static_cast<size_t>(seqs[j - 1])]->offset,
                sent[static_cast<size_t>(seqs[j])]->offset)
        << "key " << key;

  recorder rec;
  auto c = start_consumer(*conn, opts("billing", "orders", "billing-1"),
                          rec.handler("billing-1"));
  ASSERT_TRUE(c);
  ASSERT_TRUE(wait_until([&] { return rec.ids().size() == n; }, 30s))
    << "received " << rec.ids().size() << " of " << n;
  // Nothing arrives twice (give stragglers a moment to show up).
  std::this_thread::sleep_for(300ms);
  auto all = rec.all();
  EXPECT_EQ(all.size(), static_cast<size_t>(n)) << "duplicate deliveries";

  std::map<std::string, std::vector<const delivery*>> delivered_by_key;
  for (auto& d : all) {
    auto& r = d.r;
    auto seq_it = r.msg.properties.find("seq");
    ASSERT_NE(seq_it, r.msg.properties.end());
    int i = std::stoi(seq_it->second);
    ASSERT_GE(i, 0);
    ASSERT_LT(i, n);
    auto& s = *sent[static_cast<size_t>(i)];
    EXPECT_EQ(r.msg.id, s.id);
    EXPECT_EQ(r.msg.topic, "orders");
    EXPECT_EQ(r.msg.body, body_of(i)) << "body of message " << i;
    EXPECT_EQ(r.msg.key, key_of(i));
    EXPECT_EQ(r.msg.tags, tags_of(i));
    EXPECT_EQ(r.msg.properties, props_of(i));
    EXPECT_EQ(r.partition, s.partition);
    EXPECT_EQ(r.offset, s.offset);
    EXPECT_EQ(r.group, "billing");
    EXPECT_EQ(r.reconsume_times, 0u);
    EXPECT_FALSE(r.from_retry);
    EXPECT_GT(r.born_ms, 0);
    EXPECT_GE(r.stored_ms, r.born_ms - 1000);
    delivered_by_key[r.msg.key].push_back(&d);
  }
  // Per key: one partition, delivered in production order.
  for (auto& [key, ds] : delivered_by_key) {
    for (size_t j = 1; j < ds.size(); ++j) {
      EXPECT_EQ(ds[j]->r.partition, ds[0]->r.partition) << "key " << key;
      EXPECT_LT(ds[j - 1]->r.offset, ds[j]->r.offset) << "key " << key;
      EXPECT_LT(std::stoi(ds[j - 1]->r.msg.properties.at("seq")),
                std::stoi(ds[j]->r.msg.properties.at("seq")))
        << "key " << key;
    }
  }
  EXPECT_TRUE(wait_until([&] { return fully_consumed(*conn, "orders", "billing"); }))
    << "acks did not commit every offset";
  c->stop();
}

// Keys and property values are std::string in the client API and nothing
// documents a UTF-8 requirement. A message carrying bytes that are not UTF-8
// there must either arrive intact or be rejected on its own (invalid_argument),
// the same way in-process and over the network; it must never take down the
// other messages of its batch, and an acknowledged message must be delivered.
TEST_P(BrokerIntegration,
       NonUtf8KeyOrPropertyIsDeliveredIntactOrRejectedAloneOnEveryConnection) {
  ASSERT_TRUE(start_node());
  auto net = remote();
  ASSERT_TRUE(net);
  auto in_process = local();
  const std::string topic = "bytes";
  ASSERT_TRUE(admin::create_topic(*net, topic, 1));
  const auto raw_key = std::string("\xff\xfe-key", 6);
  const auto raw_value = std::string("\xff\0\x80", 3);
  using result = caf::expected<send_result>;
  auto send_batch = [&](const connection& c, const std::string& tag) {
    std::mutex mtx;
    std::vector<std::optional<result>> rs(10);
    {
      producer prod{c};
      for (int i = 0; i < 10; ++i) {
        auto m = msg(topic, tag + std::to_string(i));
        if (i == 5) {
          m.key = raw_key;
          m.properties["raw"] = raw_value;
        }
        prod.send_async(std::move(m), [&, i](result r) {
          std::lock_guard<std::mutex> guard{mtx};
          rs[static_cast<size_t>(i)] = std::move(r);
        });
      }
      prod.flush();
    }
    std::vector<result> out;
    for (auto& r : rs)
      out.push_back(r ? std::move(*r)
                      : result{edda::make_error(edda::errc::timeout)});
    return out;
  };
  recorder rec;
  auto c = start_consumer(*net, opts("bytes-g", topic, "bytes-1"),
                          rec.handler("bytes-1"));
  ASSERT_TRUE(c);

  std::vector<std::string> blockers;
  auto check = [&](const std::vector<result>& rs, const char* how) {
    size_t failed_good = 0;
    std::string error;
    for (size_t i = 0; i < rs.size(); ++i)
      if (i != 5 && !rs[i]) {
        ++failed_good;
        error = render(rs[i].error());
      }
    if (failed_good > 0 && !rs[5]) {
      blockers.push_back(
        std::string(how) + ": the non-UTF-8 message failed " + std::to_string(failed_good)
        + " other messages of its batch (" + error
        + "): Message.key / properties are proto3 `string` fields "
          "(runtime/wire/records.proto) and the request does not parse");
      return;
    }
    for (size_t i = 0; i < rs.size(); ++i) {
      if (i != 5) {
        EXPECT_TRUE(rs[i]) << how << ": message " << i;
      }
    }
    if (!rs[5]) {
      EXPECT_EQ(edda::code_of(rs[5].error()), edda::errc::invalid_argument)
        << how << ": " << render(rs[5].error());
      return;
    }
    auto id = rs[5]->id;
    if (!wait_until([&] { return rec.count_of(id) >= 1; }, 2s)) {
      blockers.push_back(
        std::string(how) + ": the non-UTF-8 message was acknowledged durable "
        "but is never delivered (partition_actor.cpp pump() cannot parse the "
        "stored record and skips it as 'unparsable')");
      return;
    }
    auto d = rec.of(id).front();
    EXPECT_EQ(d.r.msg.key, raw_key) << how;
    EXPECT_EQ(d.r.msg.properties["raw"], raw_value) << how;
  };
  auto local_rs = send_batch(in_process, "local-");
  check(local_rs, "in-process");
  auto net_rs = send_batch(*net, "net-");
  check(net_rs, "over the network");
  c->stop();
  if (!blockers.empty()) {
    std::string all;
    for (auto& b : blockers)
      all += "\n  - " + b;
    GTEST_SKIP() << "blocked by:" << all;
  }
  EXPECT_EQ(static_cast<bool>(local_rs[5]), static_cast<bool>(net_rs[5]))
    << "accepted on one kind of connection, rejected on the other";
}

// 2 ---------------------------------------------------------------------------

TEST_P(BrokerIntegration,
       GroupResumesAfterRestartWithoutRedeliveringDurablyAckedMessages) {
  auto s = base_settings();
  s.mode = edda::config::durability::fsync;
  ASSERT_TRUE(start_node(s));

  const std::string topic = "ledger";
  constexpr int consumed_first = 200;
  constexpr int total = 500;
  std::vector<send_result> sent;
  std::set<std::string> first_ids, rest_ids;
  std::map<uint32_t, uint64_t> first_per_partition;
  {
    auto conn = remote();
    ASSERT_TRUE(conn);
    ASSERT_TRUE(admin::create_topic(*conn, topic, 2));
    recorder before;
    auto c = start_consumer(*conn, opts("g", topic, "g-1"),
                            before.handler("g-1"));
    ASSERT_TRUE(c);
    producer prod{*conn};
    // Sent one at a time while the consumer is subscribed: each message is
    // delivered on its own, so every ack batch holds exactly one message and
    // acks_durable counts messages whose ack the node confirmed durable.
    for (int i = 0; i < consumed_first; ++i) {
      auto r = prod.send(msg(topic, "m-" + std::to_string(i),
                             "k" + std::to_string(i % 7)));
      ASSERT_TRUE(r) << render(r.error());
      sent.push_back(*r);
      first_ids.insert(r->id);
      ++first_per_partition[r->partition];
    }
    ASSERT_TRUE(wait_until([&] { return before.ids() == first_ids; }))
      << "received " << before.ids().size() << " of " << consumed_first;
    ASSERT_TRUE(wait_until([&] {
      if (over_door())
        return committed_sum(*conn, topic, "g")
               >= static_cast<uint64_t>(consumed_first);
      return c->counters().acks_durable >= static_cast<uint64_t>(consumed_first);
    })) << "acks confirmed durable: " << c->counters().acks_durable
        << ", committed " << committed_sum(*conn, topic, "g");
    EXPECT_EQ(before.size(), static_cast<size_t>(consumed_first));
    EXPECT_EQ(c->counters().succeeded, static_cast<uint64_t>(consumed_first));
    c->stop();

    // The rest is produced (and acknowledged durable) with no member online.
    for (int i = consumed_first; i < total; ++i) {
      auto r = prod.send(msg(topic, "m-" + std::to_string(i),
                             "k" + std::to_string(i % 7)));
      ASSERT_TRUE(r) << render(r.error());
      sent.push_back(*r);
      rest_ids.insert(r->id);
    }
    auto info = admin::describe_topic(*conn, topic);
    ASSERT_TRUE(info);
    auto rows = cursor_rows(*info, "g");
    for (auto& [p, n] : first_per_partition) {
      ASSERT_EQ(rows.count(p), 1u);
      EXPECT_EQ(rows[p].committed(), n) << "partition " << p;
    }
  }

  ASSERT_TRUE(restart_node());
  auto conn = remote();
  ASSERT_TRUE(conn);

  // The topic and its log are intact.
  auto info = admin::describe_topic(*conn, topic);
  ASSERT_TRUE(info) << render(info.error());
  EXPECT_EQ(info->meta().partitions(), 2u);
  std::map<uint32_t, uint64_t> expected_end;
  for (auto& r : sent)
    expected_end[r.partition] = std::max(expected_end[r.partition], r.offset + 1);
  EXPECT_EQ(end_offsets(*info), expected_end);
  uint64_t count = 0;
  for (auto& p : info->partitions())
    count += p.message_count();
  EXPECT_EQ(count, static_cast<uint64_t>(total));
  auto groups = admin::list_groups(*conn);
  ASSERT_TRUE(groups);
  bool known = false;
  for (auto& g : groups->groups())
    known = known || g.group() == "g";
  EXPECT_TRUE(known) << "group g forgotten across the restart";

  // Resubscribe with a gated handler: while nothing is acknowledged, the
  // committed offsets are the ones persisted before the restart. The check
  // runs on its own thread because consumer::start may only return once the
  // first batch was handled (the subscribe reply and the deliveries are
  // processed by the same consumer actor).
  std::atomic<bool> open{false}, entered{false}, started{false};
  std::map<uint32_t, pb::GroupLag> rows_after_restart;
  std::string describe_error;
  std::thread checker([&] {
    wait_until([&] { return entered.load() || started.load(); }, 30s);
    auto d = admin::describe_topic(*conn, topic);
    if (d)
      rows_after_restart = cursor_rows(*d, "g");
    else
      describe_error = render(d.error());
    open = true;
  });
  recorder after;
  auto c = start_consumer(*conn, opts("g", topic, "g-1"),
                          after.handler("g-1", [&](const received&) {
                            entered = true;
                            while (!open.load())
                              std::this_thread::sleep_for(1ms);
                            return consume_result::success;
                          }));
  started = true;
  checker.join();
  ASSERT_TRUE(c);
  ASSERT_TRUE(describe_error.empty()) << describe_error;
  for (auto& [p, end] : expected_end) {
    ASSERT_EQ(rows_after_restart.count(p), 1u) << "no cursor on partition " << p;
    EXPECT_EQ(rows_after_restart[p].committed(), first_per_partition[p])
      << "committed offset of partition " << p << " after the restart";
  }
  ASSERT_TRUE(wait_until([&] {
    auto got = after.ids();
    return std::includes(got.begin(), got.end(), rest_ids.begin(),
                         rest_ids.end());
  })) << "received " << after.ids().size() << " after the restart";
  std::this_thread::sleep_for(200ms);
  for (auto& d : after.all())
    EXPECT_EQ(first_ids.count(d.r.msg.id), 0u)
      << "message " << d.r.msg.id << " (offset " << d.r.offset
      << ") was acked durably before the restart but delivered again";
  EXPECT_EQ(after.size(), rest_ids.size());
  EXPECT_TRUE(wait_until([&] { return fully_consumed(*conn, topic, "g"); }));
  c->stop();
}

// 3 ---------------------------------------------------------------------------

TEST_P(BrokerIntegration,
       ClusteringSplitsPartitionsAndSurvivorTakesOverWhenAMemberLeaves) {
  ASSERT_TRUE(start_node());
  auto conn_a = remote();
  auto conn_b = remote();
  ASSERT_TRUE(conn_a && conn_b);
  const std::string topic = "jobs";
  ASSERT_TRUE(admin::create_topic(*conn_a, topic, 4));

  recorder rec;
  auto a = start_consumer(*conn_a, opts("workers", topic, "worker-a"),
                          rec.handler("worker-a"));
  auto b = start_consumer(*conn_b, opts("workers", topic, "worker-b"),
                          rec.handler("worker-b"));
  ASSERT_TRUE(a && b);

  auto owners = [&] {
    std::map<uint32_t, std::string> out;
    auto info = admin::describe_topic(*conn_a, topic);
    if (info)
      for (auto& [p, row] : cursor_rows(*info, "workers"))
        out[p] = row.member();
    return out;
  };
  std::map<uint32_t, std::string> split{
    {0, "worker-a"}, {1, "worker-a"}, {2, "worker-b"}, {3, "worker-b"}};
  ASSERT_TRUE(wait_until([&] { return owners() == split; }))
    << "partitions are not split 2/2";

  std::set<std::string> all_ids;
  producer prod{*conn_a};
  auto produce = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      auto r = prod.send(msg(topic, "job-" + std::to_string(i)));
      if (!r) {
        ADD_FAILURE() << render(r.error());
        return;
      }
      all_ids.insert(r->id);
    }
  };
  produce(0, 200);
  ASSERT_TRUE(wait_until([&] { return rec.ids() == all_ids; }))
    << "received " << rec.ids().size() << " of " << all_ids.size();
  EXPECT_FALSE(rec.ids("worker-a").empty());
  EXPECT_FALSE(rec.ids("worker-b").empty());
  for (auto& d : rec.all()) {
    if (d.member == "worker-a")
      EXPECT_LT(d.r.partition, 2u) << "worker-a got a partition of worker-b";
    else
      EXPECT_GE(d.r.partition, 2u) << "worker-b got a partition of worker-a";
  }

  b->stop();
  auto delivered_to_b = rec.ids("worker-b").size();
  std::map<uint32_t, std::string> all_a{
    {0, "worker-a"}, {1, "worker-a"}, {2, "worker-a"}, {3, "worker-a"}};
  ASSERT_TRUE(wait_until([&] { return owners() == all_a; }))
    << "the survivor did not get the leaver's partitions";

  std::set<std::string> before = all_ids;
  produce(200, 400);
  std::set<std::string> later;
  for (auto& id : all_ids)
    if (before.count(id) == 0)
      later.insert(id);
  ASSERT_TRUE(wait_until([&] {
    auto got = rec.ids("worker-a");
    return std::includes(got.begin(), got.end(), later.begin(), later.end());
  })) << "the survivor did not receive everything produced after the leave";
  EXPECT_EQ(rec.ids("worker-b").size(), delivered_to_b);
  // Nothing produced is lost.
  EXPECT_EQ(rec.ids(), all_ids);
  EXPECT_TRUE(
    wait_until([&] { return fully_consumed(*conn_a, topic, "workers"); }));
  a->stop();
}

// 4 ---------------------------------------------------------------------------

TEST_P(BrokerIntegration, BroadcastGroupGivesEveryMemberEveryMessage) {
  ASSERT_TRUE(start_node());
  auto conn = local();
  const std::string topic = "news";
  ASSERT_TRUE(admin::create_topic(conn, topic, 2));
  recorder rec;
  auto o1 = opts("screens", topic, "screen-1");
  o1.mode = consume_mode::broadcast;
  auto o2 = opts("screens", topic, "screen-2");
  o2.mode = consume_mode::broadcast;
  auto c1 = start_consumer(conn, o1, rec.handler("screen-1"));
  auto c2 = start_consumer(conn, o2, rec.handler("screen-2"));
  ASSERT_TRUE(c1 && c2);

  std::set<std::string> ids;
  {
    producer prod{conn};
    std::mutex mtx;
    for (int i = 0; i < 100; ++i)
      prod.send_async(msg(topic, "headline-" + std::to_string(i),
                          "k" + std::to_string(i)),
                      [&](caf::expected<send_result> r) {
                        std::lock_guard<std::mutex> guard{mtx};
                        if (r)
                          ids.insert(r->id);
                      });
    prod.flush();
  }
  ASSERT_EQ(ids.size(), 100u);
  ASSERT_TRUE(wait_until([&] {
    return rec.ids("screen-1") == ids && rec.ids("screen-2") == ids;
  })) << "screen-1 got " << rec.ids("screen-1").size() << ", screen-2 got "
      << rec.ids("screen-2").size();
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(rec.size(), 200u) << "a member got a message twice";
  // Each member has its own cursor.
  EXPECT_TRUE(wait_until([&] {
    return fully_consumed(conn, topic, "screens@screen-1")
           && fully_consumed(conn, topic, "screens@screen-2");
  }));
  c1->stop();
  c2->stop();
}

// 5 ---------------------------------------------------------------------------

TEST_P(BrokerIntegration, PartitionsAddedOnlineAreConsumedWithoutRestart) {
  ASSERT_TRUE(start_node());
  auto conn = remote();
  ASSERT_TRUE(conn);
  const std::string topic = "growing";
  ASSERT_TRUE(admin::create_topic(*conn, topic, 2));
  recorder rec;
  auto c = start_consumer(*conn, opts("grow-g", topic, "grow-1"),
                          rec.handler("grow-1"));
  ASSERT_TRUE(c);
  {
    producer prod{*conn};
    auto r = prod.send(msg(topic, "before"));
    ASSERT_TRUE(r);
    ASSERT_TRUE(wait_until([&] { return rec.size() == 1; }));
  }

  auto altered = admin::alter_topic(*conn, topic, 4);
  ASSERT_TRUE(altered) << render(altered.error());
  EXPECT_EQ(altered->meta().partitions(), 4u);

  std::set<std::string> ids;
  std::set<uint32_t> partitions;
  {
    producer prod{*conn};
    auto keys2 = keys_for_partition(2, 4, 5, "p2-");
    auto keys3 = keys_for_partition(3, 4, 5, "p3-");
    for (auto* ks : {&keys2, &keys3})
      for (auto& k : *ks) {
        auto r = prod.send(msg(topic, "after-" + k, k));
        ASSERT_TRUE(r) << render(r.error());
        EXPECT_EQ(r->partition, edda::shard_of(k, 4));
        ids.insert(r->id);
        partitions.insert(r->partition);
      }
  }
  EXPECT_EQ(partitions, (std::set<uint32_t>{2, 3}));
  ASSERT_TRUE(wait_until([&] {
    auto got = rec.ids();
    return std::includes(got.begin(), got.end(), ids.begin(), ids.end());
  })) << "messages on the new partitions were not delivered";
  std::set<uint32_t> got_from;
  for (auto& d : rec.all())
    got_from.insert(d.r.partition);
  EXPECT_TRUE(got_from.count(2) && got_from.count(3));
  auto info = admin::describe_topic(*conn, topic);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->meta().partitions(), 4u);
  EXPECT_EQ(info->partitions_size(), 4);
  EXPECT_TRUE(wait_until([&] { return fully_consumed(*conn, topic, "grow-g"); }));
  c->stop();
}

// A producer that was in use before the alter is still the producer of the
// application afterwards: keys must map over the new partition count, as
// they do for a new producer (else one key lands on two partitions and its
// order is lost).
TEST_P(BrokerIntegration, ProducerCreatedBeforeAnAlterUsesTheNewPartitions) {
  ASSERT_TRUE(start_node());
  auto conn = remote();
  ASSERT_TRUE(conn);
  const std::string topic = "growing2";
  ASSERT_TRUE(admin::create_topic(*conn, topic, 2));
  producer prod{*conn};
  ASSERT_TRUE(prod.send(msg(topic, "warm-up", "x")));
  ASSERT_TRUE(admin::alter_topic(*conn, topic, 4));
  // Contract: the producer learns the new count from its next reply.
  ASSERT_TRUE(prod.send(msg(topic, "first-after-alter", "y")));
  auto keys = keys_for_partition(3, 4, 3, "late-");
  std::vector<uint32_t> got;
  for (auto& k : keys) {
    auto r = prod.send(msg(topic, "after-" + k, k));
    ASSERT_TRUE(r) << render(r.error());
    got.push_back(r->partition);
  }
  EXPECT_EQ(got, std::vector<uint32_t>(keys.size(), 3u))
    << "keys map over the new partition count after the first reply";
}

// 6 ---------------------------------------------------------------------------

TEST_P(BrokerIntegration, DelayedMessageIsDeliveredAtItsTimeAndNotBefore) {
  ASSERT_TRUE(start_node());
  auto conn = remote();
  ASSERT_TRUE(conn);
  const std::string topic = "reminders";
  ASSERT_TRUE(admin::create_topic(*conn, topic, 1));
  recorder rec;
  auto c = start_consumer(*conn, opts("remind-g", topic, "remind-1"),
                          rec.handler("remind-1"));
  ASSERT_TRUE(c);
  producer prod{*conn};
  auto t0 = steady::now();
  auto m = msg(topic, "wake up");
  m.deliver_at_ms = edda::now_ms() + 1500;
  auto r = prod.send(m);
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_TRUE(r->delayed);
  EXPECT_EQ(r->offset, 0u);
  ASSERT_TRUE(wait_until([&] { return rec.size() >= 1; }, 6s))
    << "the delayed message never arrived";
  auto d = rec.all().front();
  auto after = ms_between(t0, d.at);
  EXPECT_GE(after, 1400) << "delivered early";
  EXPECT_LE(after, 3500) << "delivered late";
  RecordProperty("delivered_after_ms", std::to_string(after));
  EXPECT_GE(edda::now_ms(), m.deliver_at_ms);
  EXPECT_EQ(d.r.msg.id, r->id);
  EXPECT_EQ(d.r.msg.body, "wake up");
  EXPECT_EQ(d.r.msg.deliver_at_ms, m.deliver_at_ms);
  EXPECT_EQ(d.r.msg.topic, topic);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(rec.size(), 1u);
  c->stop();
}

// Delayed messages and pending retries live in the node's LMDB (db
// `delay`): a restart in between delays nothing forever and loses nothing.
TEST_P(BrokerIntegration, DelayedAndRetryingMessagesSurviveARestart) {
  ASSERT_TRUE(start_node());
  const std::string topic = "deferred";
  auto o = opts("deferred-g", topic, "deferred-1");
  o.retry_delays_ms = {1000};
  int64_t deliver_at = 0;
  std::string delayed_id, failing_id;
  std::atomic<int> calls{0};
  recorder rec;
  {
    auto conn = remote();
    ASSERT_TRUE(conn);
    ASSERT_TRUE(admin::create_topic(*conn, topic, 1));
    auto c = start_consumer(*conn, o,
                            rec.handler("before", [&](const received&) {
                              return calls++ == 0 ? consume_result::retry_later
                                                  : consume_result::success;
                            }));
    ASSERT_TRUE(c);
    producer prod{*conn};
    auto f = prod.send(msg(topic, "fails once"));
    ASSERT_TRUE(f) << render(f.error());
    failing_id = f->id;
    auto m = msg(topic, "delayed across a restart");
    deliver_at = edda::now_ms() + 1200;
    m.deliver_at_ms = deliver_at;
    auto d = prod.send(m);
    ASSERT_TRUE(d) << render(d.error());
    EXPECT_TRUE(d->delayed);
    delayed_id = d->id;
    // The failure is durable (retry copy written) once its ack is confirmed.
    ASSERT_TRUE(wait_until([&] {
      auto k = c->counters();
      if (over_door())
        return k.failed == 1 && committed_sum(*conn, topic, "deferred-g") >= 1;
      return k.failed == 1 && k.acks_durable >= 1;
    }));
    c->stop();
  }
  ASSERT_TRUE(restart_node());
  auto conn = remote();
  ASSERT_TRUE(conn);
  auto c = start_consumer(*conn, o, rec.handler("after"));
  ASSERT_TRUE(c);
  ASSERT_TRUE(wait_until([&] {
    return rec.count_of(delayed_id) >= 1 && rec.count_of(failing_id) >= 2;
  }, 8s)) << "delayed delivered " << rec.count_of(delayed_id)
          << " times, failing one " << rec.count_of(failing_id) << " times";
  std::this_thread::sleep_for(200ms);
  auto delayed = rec.of(delayed_id);
  ASSERT_EQ(delayed.size(), 1u);
  EXPECT_GE(delayed[0].r.stored_ms, deliver_at)
    << "moved into the topic before its time";
  EXPECT_EQ(delayed[0].r.msg.body, "delayed across a restart");
  auto failing = rec.of(failing_id);
  ASSERT_EQ(failing.size(), 2u);
  EXPECT_EQ(failing[0].r.reconsume_times, 0u);
  EXPECT_EQ(failing[1].r.reconsume_times, 1u);
  EXPECT_TRUE(failing[1].r.from_retry);
  EXPECT_EQ(failing[1].r.msg.topic, topic);
  EXPECT_EQ(failing[1].r.msg.body, "fails once");
  EXPECT_TRUE(wait_until([&] {
    return fully_consumed(*conn, topic, "deferred-g")
           && fully_consumed(*conn, "%RETRY%deferred-g", "deferred-g");
  }));
  c->stop();
}

// 7 ---------------------------------------------------------------------------

struct alert_log {
  std::mutex mtx;
  std::vector<edda::alert> items;
  size_t count(const std::string& kind) {
    std::lock_guard<std::mutex> guard{mtx};
    size_t n = 0;
    for (auto& a : items)
      n += a.kind == kind ? 1 : 0;
    return n;
  }
};

TEST_P(BrokerIntegration,
       FailedMessageIsRetriedOnScheduleThenDeadLetteredAlertedAndRedriven) {
  ASSERT_TRUE(start_node());
  auto alerts = std::make_shared<alert_log>();
  node_->alerts().add_hook([alerts](const edda::alert& a) {
    std::lock_guard<std::mutex> guard{alerts->mtx};
    alerts->items.push_back(a);
  });
  auto conn = remote();
  ASSERT_TRUE(conn);
  const std::string topic = "payments";
  ASSERT_TRUE(admin::create_topic(*conn, topic, 1));

  std::atomic<bool> redriven{false};
  std::atomic<int> calls{0};
  recorder rec;
  auto o = opts("pay-g", topic, "pay-1");
  o.retry_delays_ms = {300, 600};
  o.max_reconsume = 2;
  auto c = start_consumer(*conn, o,
                          rec.handler("pay-1", [&](const received&) {
                            if (redriven.load())
                              return consume_result::success;
                            // The second attempt throws: a failure too.
                            if (calls++ == 1)
                              throw std::runtime_error("boom");
                            return consume_result::retry_later;
                          }));
  ASSERT_TRUE(c);
  producer prod{*conn};
  auto sent = prod.send(msg(topic, "charge 42", "order-42", {"TagA"}));
  ASSERT_TRUE(sent) << render(sent.error());

  ASSERT_TRUE(wait_until([&] { return rec.size() >= 3; }, 10s))
    << "deliveries: " << rec.size();
  auto dlq_entries = [&] {
    auto l = admin::dlq_list(*conn, "pay-g");
    return l ? l->entries_size() : -1;
  };
  ASSERT_TRUE(wait_until([&] { return dlq_entries() == 1; }))
    << "the message did not reach the DLQ";
  ASSERT_TRUE(wait_until([&] { return alerts->count("dlq") >= 1; }));
  // Prove that nothing else happens: no fourth delivery, no second alert.
  std::this_thread::sleep_for(500ms);
  auto ds = rec.all();
  ASSERT_EQ(ds.size(), 3u) << "delivered again after max_reconsume failures";
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ds[i].r.reconsume_times, i) << "delivery " << i;
    EXPECT_EQ(ds[i].r.msg.id, sent->id);
    EXPECT_EQ(ds[i].r.msg.topic, topic) << "retries show the original topic";
    EXPECT_EQ(ds[i].r.msg.body, "charge 42");
    EXPECT_EQ(ds[i].r.msg.key, "order-42");
    EXPECT_EQ(ds[i].r.from_retry, i > 0);
  }
  EXPECT_NE(ds[1].r.last_error.find("retry"), std::string::npos)
    << ds[1].r.last_error;
  EXPECT_NE(ds[2].r.last_error.find("boom"), std::string::npos)
    << "a throwing handler is a failure with its reason: "
    << ds[2].r.last_error;
  auto gap1 = ms_between(ds[0].at, ds[1].at);
  auto gap2 = ms_between(ds[1].at, ds[2].at);
  RecordProperty("retry_gaps_ms",
                 std::to_string(gap1) + " " + std::to_string(gap2));
  EXPECT_GE(gap1, 300 - 50) << "first retry too early";
  EXPECT_LE(gap1, 300 + 750) << "first retry too late";
  EXPECT_GE(gap2, 600 - 50) << "second retry too early";
  EXPECT_LE(gap2, 600 + 750) << "second retry too late";
  EXPECT_GE(ms_between(ds[0].at, ds[2].at), 900 - 50);

  EXPECT_EQ(alerts->count("dlq"), 1u) << "the DLQ alert must fire once";
  {
    std::lock_guard<std::mutex> guard{alerts->mtx};
    ASSERT_FALSE(alerts->items.empty());
    EXPECT_EQ(alerts->items.front().subject, "pay-g");
    EXPECT_EQ(alerts->items.front().message_id, sent->id);
  }
  auto dlq = admin::dlq_list(*conn, "pay-g");
  ASSERT_TRUE(dlq);
  ASSERT_EQ(dlq->entries_size(), 1);
  auto& dead = dlq->entries(0);
  EXPECT_EQ(dead.group(), "pay-g");
  EXPECT_EQ(dead.message().id(), sent->id);
  EXPECT_EQ(dead.message().body(), "charge 42");
  EXPECT_EQ(dead.message().origin_topic(), topic);
  EXPECT_FALSE(dead.reason().empty());

  redriven = true;
  auto rd = admin::dlq_redrive(*conn, "pay-g");
  ASSERT_TRUE(rd) << render(rd.error());
  EXPECT_EQ(rd->count(), 1u);
  ASSERT_TRUE(wait_until([&] { return rec.size() >= 4; }, 10s))
    << "the redriven message was not delivered";
  auto back = rec.all()[3];
  EXPECT_EQ(back.r.msg.id, sent->id);
  EXPECT_EQ(back.r.msg.body, "charge 42");
  EXPECT_EQ(back.r.msg.topic, topic);
  EXPECT_EQ(back.r.reconsume_times, 0u);
  EXPECT_EQ(dlq_entries(), 0);
  EXPECT_TRUE(wait_until([&] {
    return fully_consumed(*conn, "%RETRY%pay-g", "pay-g")
           && fully_consumed(*conn, topic, "pay-g");
  }));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(rec.size(), 4u);
  EXPECT_EQ(alerts->count("dlq"), 1u);
  c->stop();
}

// 8 ---------------------------------------------------------------------------

TEST_P(BrokerIntegration,
       UnackedDeliveryTimesOutIsRedeliveredAndDoesNotHoldBackOthers) {
  auto s = base_settings();
  s.consume_timeout_ms = 1000;
  ASSERT_TRUE(start_node(s));
  auto conn = local();
  const std::string topic = "slow";
  ASSERT_TRUE(admin::create_topic(conn, topic, 2));

  // Members sorted by client id: to-a owns partition 0 and the group's retry
  // topic, to-b owns partition 1. The slow message goes to to-b, so that its
  // redelivery (through the retry topic, to to-a) is not queued behind the
  // blocked handler.
  const auto slow_key = keys_for_partition(1, 2, 1, "slow-").front();
  const auto fast_keys = keys_for_partition(0, 2, 20, "fast-");
  std::atomic<bool> slow_started{false}, slow_finished{false};
  std::atomic<int> slow_calls{0};
  recorder rec;
  auto decide = [&](const received& r) {
    if (r.msg.key == slow_key && slow_calls++ == 0) {
      slow_started = true;
      // Hold the first delivery well past consume_timeout (this sleep is
      // the behaviour under test, not a synchronization).
      std::this_thread::sleep_for(2500ms);
      slow_finished = true;
    }
    return consume_result::success;
  };
  auto oa = opts("timeouts", topic, "to-a");
  oa.retry_delays_ms = {200};
  auto ob = oa;
  ob.client_id = "to-b";
  auto a = start_consumer(conn, oa, rec.handler("to-a", decide));
  auto b = start_consumer(conn, ob, rec.handler("to-b", decide));
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(wait_until([&] {
    auto info = admin::describe_topic(conn, topic);
    if (!info)
      return false;
    auto rows = cursor_rows(*info, "timeouts");
    return rows.size() == 2 && rows[0].member() == "to-a"
           && rows[1].member() == "to-b";
  })) << "partitions not split between the two members";

  producer prod{conn};
  auto slow = prod.send(msg(topic, "slow one", slow_key));
  ASSERT_TRUE(slow);
  ASSERT_EQ(slow->partition, 1u);
  ASSERT_TRUE(wait_until([&] { return slow_started.load(); }));

  std::set<std::string> fast_ids;
  for (auto& k : fast_keys) {
    auto r = prod.send(msg(topic, "fast " + k, k));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->partition, 0u);
    fast_ids.insert(r->id);
  }
  // The other member keeps consuming while the slow handler holds its
  // delivery.
  ASSERT_TRUE(wait_until([&] {
    auto got = rec.ids("to-a");
    return std::includes(got.begin(), got.end(), fast_ids.begin(),
                         fast_ids.end());
  }, 5s));
  EXPECT_FALSE(slow_finished.load())
    << "other messages were held back behind the slow one";

  // The timed-out delivery comes back through the retry topic and is then
  // acknowledged.
  ASSERT_TRUE(wait_until([&] { return rec.count_of(slow->id) >= 2; }, 10s))
    << "the timed-out message was not redelivered";
  auto slow_ds = rec.of(slow->id);
  EXPECT_EQ(slow_ds[0].r.reconsume_times, 0u);
  EXPECT_FALSE(slow_ds[0].r.from_retry);
  EXPECT_EQ(slow_ds[1].r.reconsume_times, 1u);
  EXPECT_TRUE(slow_ds[1].r.from_retry);
  EXPECT_EQ(slow_ds[1].r.msg.topic, topic);
  EXPECT_NE(slow_ds[1].r.last_error.find("timeout"), std::string::npos)
    << slow_ds[1].r.last_error;
  EXPECT_GE(ms_between(slow_ds[0].at, slow_ds[1].at), 1000);
  EXPECT_TRUE(wait_until([&] {
    return fully_consumed(conn, topic, "timeouts")
           && fully_consumed(conn, "%RETRY%timeouts", "timeouts");
  })) << "the redelivered message did not end acknowledged";
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(rec.count_of(slow->id), 2u);
  for (auto& id : fast_ids)
    EXPECT_EQ(rec.count_of(id), 1u);
  auto dlq = admin::dlq_list(conn, "timeouts");
  ASSERT_TRUE(dlq);
  EXPECT_EQ(dlq->entries_size(), 0);
  a->stop();
  b->stop();
}

// 9 ---------------------------------------------------------------------------

TEST_P(BrokerIntegration, IdempotencyRunsAKeyOncePerScopeAndRemembersItAcrossRestart) {
  auto s = base_settings();
  s.mode = edda::config::durability::fsync;
  ASSERT_TRUE(start_node(s));
  {
    auto conn = remote();
    ASSERT_TRUE(conn);
    edda::client::idempotency fund{*conn, "target-fund"};
    edda::client::idempotency mail{*conn, "send-mail"};
    int runs = 0;
    auto done = fund.done("k");
    ASSERT_TRUE(done) << render(done.error());
    EXPECT_FALSE(*done);
    auto first = fund.run_once("k", [&] { ++runs; });
    ASSERT_TRUE(first) << render(first.error());
    EXPECT_TRUE(*first);
    EXPECT_EQ(runs, 1);
    auto second = fund.run_once("k", [&] { ++runs; });
    ASSERT_TRUE(second);
    EXPECT_FALSE(*second);
    EXPECT_EQ(runs, 1) << "run_once ran a processed key again";
    // Another scope is independent.
    auto other = mail.run_once("k", [&] { ++runs; });
    ASSERT_TRUE(other);
    EXPECT_TRUE(*other);
    EXPECT_EQ(runs, 2);
    // A throwing function leaves the key unmarked.
    EXPECT_THROW((void) fund.run_once("k2", [] { throw std::runtime_error("x"); }),
                 std::runtime_error);
    auto k2 = fund.done("k2");
    ASSERT_TRUE(k2);
    EXPECT_FALSE(*k2);
  }
  ASSERT_TRUE(restart_node());
  auto conn = remote();
  ASSERT_TRUE(conn);
  edda::client::idempotency fund{*conn, "target-fund"};
  edda::client::idempotency mail{*conn, "send-mail"};
  int runs = 0;
  auto done = fund.done("k");
  ASSERT_TRUE(done) << render(done.error());
  EXPECT_TRUE(*done) << "the mark did not survive the restart";
  auto again = fund.run_once("k", [&] { ++runs; });
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  auto again_mail = mail.run_once("k", [&] { ++runs; });
  ASSERT_TRUE(again_mail);
  EXPECT_FALSE(*again_mail);
  EXPECT_EQ(runs, 0);
  auto k2 = fund.run_once("k2", [&] { ++runs; });
  ASSERT_TRUE(k2);
  EXPECT_TRUE(*k2);
  EXPECT_EQ(runs, 1);
}

// 10 --------------------------------------------------------------------------

TEST_P(BrokerIntegration, TagFilterDeliversOnlyMatchingTagsAndLeavesNoLag) {
  ASSERT_TRUE(start_node());
  auto conn = local();
  const std::string topic = "events";
  ASSERT_TRUE(admin::create_topic(conn, topic, 2));
  recorder rec;
  auto o = opts("only-a", topic, "only-a-1");
  o.expression = "TagA";
  auto c = start_consumer(conn, o, rec.handler("only-a-1"));
  ASSERT_TRUE(c);

  std::set<std::string> tag_a;
  {
    producer prod{conn};
    std::mutex mtx;
    // 50 TagA, 50 TagB interleaved, then 10 TagB at the end of the log.
    for (int i = 0; i < 110; ++i) {
      bool a = i < 100 && i % 2 == 0;
      prod.send_async(msg(topic, "e" + std::to_string(i),
                          "k" + std::to_string(i % 11),
                          {a ? "TagA" : "TagB"}),
                      [&, a](caf::expected<send_result> r) {
                        EXPECT_TRUE(r);
                        std::lock_guard<std::mutex> guard{mtx};
                        if (r && a)
                          tag_a.insert(r->id);
                      });
    }
    prod.flush();
  }
  ASSERT_EQ(tag_a.size(), 50u);
  ASSERT_TRUE(wait_until([&] { return rec.ids() == tag_a; }))
    << "received " << rec.ids().size() << " TagA messages of 50";
  std::this_thread::sleep_for(300ms);
  for (auto& d : rec.all())
    EXPECT_EQ(d.r.msg.tags, std::vector<std::string>{"TagA"});
  EXPECT_EQ(rec.size(), 50u);
  // Filtered messages do not hold the committed offset back.
  EXPECT_TRUE(wait_until([&] { return fully_consumed(conn, topic, "only-a"); }))
    << "lag left behind by filtered messages";
  c->stop();
}

// 11 --------------------------------------------------------------------------

TEST_P(BrokerIntegration, NewGroupConsumingFromLatestSkipsEarlierMessages) {
  ASSERT_TRUE(start_node());
  auto conn = remote();
  ASSERT_TRUE(conn);
  const std::string topic = "ticks";
  ASSERT_TRUE(admin::create_topic(*conn, topic, 2));
  producer prod{*conn};
  std::set<std::string> old_ids, new_ids;
  for (int i = 0; i < 20; ++i) {
    auto r = prod.send(msg(topic, "old-" + std::to_string(i)));
    ASSERT_TRUE(r);
    old_ids.insert(r->id);
  }
  recorder rec;
  auto o = opts("late-g", topic, "late-1");
  o.from = consume_from::latest;
  auto c = start_consumer(*conn, o, rec.handler("late-1"));
  ASSERT_TRUE(c);
  for (int i = 0; i < 20; ++i) {
    auto r = prod.send(msg(topic, "new-" + std::to_string(i)));
    ASSERT_TRUE(r);
    new_ids.insert(r->id);
  }
  ASSERT_TRUE(wait_until([&] {
    auto got = rec.ids();
    return std::includes(got.begin(), got.end(), new_ids.begin(),
                         new_ids.end());
  })) << "received " << rec.ids().size() << " of 20 new messages";
  std::this_thread::sleep_for(300ms);
  for (auto& d : rec.all())
    EXPECT_EQ(old_ids.count(d.r.msg.id), 0u)
      << "got an earlier message: " << d.r.msg.body;
  EXPECT_EQ(rec.size(), 20u);
  c->stop();
}

INSTANTIATE_TEST_SUITE_P(Over, BrokerIntegration, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "ClientDoor" : "NodePort";
                         });

} // namespace
