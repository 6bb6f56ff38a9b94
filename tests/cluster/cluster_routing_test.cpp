// Producers that route by the cluster map: connected to one node, they send
// each partition's batches (and keyed transactions' half messages and ends)
// straight to the partition's home, so no node passes them on (the nodes'
// `broker.forwarded` / `txn.forwarded` counters stay put), order per key is
// kept, a home's death costs keyless sends nothing and keyed sends to it
// fail fast, and partitions added to the topic are used once the map says
// where they live.
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "cluster_fixture.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <set>

namespace edda::test {
namespace {

using namespace std::chrono_literals;
namespace pb = wire::v1;

class ClusterRoutingTest : public ClusterFixture {
protected:
  /// The sum of `name` over the running nodes.
  uint64_t total(const std::string& name) {
    uint64_t sum = 0;
    for (size_t i = 0; i < node_count(); ++i)
      if (node(i).running())
        sum += counter_of(node(i), name);
    return sum;
  }
  /// Starts `n` nodes and waits until each has a link up to every other
  /// (until then a node counts a peer's partitions unavailable).
  void start_linked(size_t n) {
    start_nodes(n);
    for (size_t i = 0; i < n; ++i)
      ASSERT_TRUE(eventually(10s, [&] {
        auto c = connect(node(i));
        if (!c)
          return false;
        auto s = client::admin::cluster_status(*c);
        if (!s || s->members_size() != static_cast<int>(n))
          return false;
        return std::all_of(s->members().begin(), s->members().end(),
                           [](auto& m) { return m.connected(); });
      })) << node(i).name << " does not see every member linked";
  }
  /// Partition -> home of `topic`, as `conn`'s node describes it.
  std::map<uint32_t, std::string> homes(const client::connection& conn,
                                        const std::string& topic) {
    std::map<uint32_t, std::string> out;
    if (auto d = client::admin::describe_topic(conn, topic))
      for (auto& p : d->partitions())
        out[p.partition()] = p.home();
    return out;
  }
  /// Sends `n` keyless messages one by one; false at the first failure.
  static bool send_keyless(client::producer& p, const std::string& topic,
                           int n, std::set<uint32_t>* used = nullptr) {
    for (int i = 0; i < n; ++i) {
      client::message m;
      m.topic = topic;
      m.body = "warm" + std::to_string(i);
      auto r = p.send(m);
      if (!r)
        return false;
      if (used != nullptr)
        used->insert(r->partition);
    }
    return true;
  }
  /// Sends until no node passes a batch on any more: the producer has its
  /// map and links to every home.
  bool warm_up(client::producer& p, const std::string& topic) {
    return eventually(15s, [&] {
      auto before = total("broker.forwarded");
      return send_keyless(p, topic, 12) && total("broker.forwarded") == before;
    });
  }
};

TEST_F(ClusterRoutingTest, ProducersSendStraightToEachPartitionsHome) {
  start_linked(3);
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1) << render(c1.error());
  ASSERT_TRUE(client::admin::create_topic(*c1, "orders", 6));
  auto home = homes(*c1, "orders");
  ASSERT_EQ(home.size(), 6u);

  // A producer that does not route (as before): n1 passes on the batches
  // of the partitions homed elsewhere, and counts them.
  {
    auto plain_conn = client::connection::open(
      "127.0.0.1", node(0).port, [] {
        auto o = quick_options();
        o.direct_routing = false;
        return o;
      }());
    ASSERT_TRUE(plain_conn);
    client::producer plain{*plain_conn};
    auto before = counter_of(node(0), "broker.forwarded");
    ASSERT_TRUE(send_keyless(plain, "orders", 12));
    EXPECT_GE(counter_of(node(0), "broker.forwarded"), before + 6)
      << "12 keyless sends in turn over 6 partitions, 4 of them elsewhere";
  }

  client::producer p{*c1};
  ASSERT_TRUE(warm_up(p, "orders"))
    << "n1 still passes batches on after the producer had its map";
  auto forwarded = total("broker.forwarded");
  auto stored_n2 = counter_of(node(1), "broker.stored");
  auto stored_n3 = counter_of(node(2), "broker.stored");

  // Keyed and keyless, concurrently: every one acknowledged (durable on
  // its home), none passed on by a node.
  std::mutex mtx;
  std::vector<std::string> errors;
  std::set<uint32_t> keyless_parts;
  constexpr int keyed = 240, keyless = 120;
  for (int i = 0; i < keyed + keyless; ++i) {
    client::message m;
    m.topic = "orders";
    bool with_key = i < keyed;
    if (with_key)
      m.key = "k" + std::to_string(i % 24);
    m.body = "m" + std::to_string(i);
    auto want = with_key ? std::optional<uint32_t>{shard_of(m.key, 6)}
                         : std::nullopt;
    p.send_async(m, [&, want](caf::expected<client::send_result> r) {
      std::lock_guard<std::mutex> guard{mtx};
      if (!r) {
        errors.push_back(render(r.error()));
        return;
      }
      if (want && r->partition != *want)
        errors.push_back("a key went to partition "
                         + std::to_string(r->partition));
      if (!want)
        keyless_parts.insert(r->partition);
    });
  }
  p.flush();
  EXPECT_TRUE(errors.empty()) << errors.size() << " failed, first: "
                              << errors.front();
  EXPECT_EQ(keyless_parts.size(), 6u) << "keyless sends use every partition";
  EXPECT_EQ(total("broker.forwarded"), forwarded)
    << "a node passed batches on to a home";
  // The homes stored their partitions' messages themselves.
  EXPECT_GT(counter_of(node(1), "broker.stored"), stored_n2);
  EXPECT_GT(counter_of(node(2), "broker.stored"), stored_n3);

  // Every message once, in order per key.
  inbox got;
  auto c3 = connect(node(2));
  ASSERT_TRUE(c3);
  auto cons = got.consume(*c3, "billing", "orders");
  ASSERT_TRUE(cons) << render(cons.error());
  ASSERT_TRUE(eventually(30s, [&] {
    return got.distinct() >= static_cast<size_t>(keyed + keyless);
  })) << got.distinct() << " consumed";
  std::lock_guard<std::mutex> guard{got.mtx};
  ASSERT_EQ(got.by_key.size(), 24u);
  for (auto& [key, bodies] : got.by_key) {
    std::vector<int> order;
    for (auto& b : bodies)
      order.push_back(std::stoi(b.substr(1)));
    EXPECT_EQ(order.size(), static_cast<size_t>(keyed / 24)) << key;
    EXPECT_TRUE(std::is_sorted(order.begin(), order.end()))
      << "key " << key << " out of order";
  }
}

TEST_F(ClusterRoutingTest, AHomesDeathAndAnAlterReachTheProducersMap) {
  start_linked(3);
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1) << render(c1.error());
  ASSERT_TRUE(client::admin::create_topic(*c1, "pay", 6));
  auto home = homes(*c1, "pay");
  std::set<uint32_t> on_n3;
  for (auto& [part, h] : home)
    if (h == "n3")
      on_n3.insert(part);
  ASSERT_EQ(on_n3.size(), 2u);
  client::producer p{*c1};
  ASSERT_TRUE(warm_up(p, "pay"));

  // n3 dies: keyless sends go on at once, on the partitions of the others.
  // A send that went to n3 before the producer saw its link drop (a few
  // ms) fails with unavailable ("may or may not have been applied": it is
  // never sent again, so never stored twice); every send after the first
  // that succeeds succeeds.
  kill9(node(2));
  std::set<uint32_t> used;
  int lost = 0;
  for (int i = 0; i < 30; ++i) {
    client::message m;
    m.topic = "pay";
    m.body = "keyless" + std::to_string(i);
    auto r = p.send(m);
    if (!r && used.empty() && lost < 2
        && code_of(r.error()) == errc::unavailable) {
      ++lost;
      continue;
    }
    ASSERT_TRUE(r) << "keyless send " << i << ": " << render(r.error());
    used.insert(r->partition);
  }
  for (auto part : on_n3)
    EXPECT_EQ(used.count(part), 0u) << "partition " << part << " of dead n3";
  // A key of n3's partitions fails fast (order per key: never elsewhere).
  std::string key;
  for (int i = 0; key.empty() && i < 1000; ++i)
    if (on_n3.count(shard_of("key" + std::to_string(i), 6)) != 0)
      key = "key" + std::to_string(i);
  ASSERT_TRUE(eventually(6s, [&] {
    auto s = client::admin::cluster_status(*c1);
    return s && s->members_size() == 2;
  }));
  client::message m;
  m.topic = "pay";
  m.key = key;
  m.body = "keyed";
  auto err = send_fails_fast(p, m);
  EXPECT_EQ(code_of(err), errc::partition_unavailable) << render(err);

  // More partitions (homed on the live nodes): the map has a newer
  // revision, and the producer sends to the new partitions straight to
  // their homes once it has it.
  auto before = client::admin::cluster_map(*c1, {"pay"});
  ASSERT_TRUE(before) << render(before.error());
  ASSERT_TRUE(before->clustered());
  ASSERT_TRUE(client::admin::alter_topic(*c1, "pay", 9));
  auto after = client::admin::cluster_map(*c1, {"pay"});
  ASSERT_TRUE(after);
  ASSERT_EQ(after->topics_size(), 1);
  EXPECT_EQ(after->topics(0).partitions(), 9u);
  EXPECT_GT(after->revision(), before->revision());
  EXPECT_GT(after->topics(0).revision(), before->topics(0).revision());
  for (int q = 6; q < 9; ++q)
    EXPECT_TRUE(after->topics(0).live(q)) << "new partition " << q;
  std::set<uint32_t> new_used;
  ASSERT_TRUE(eventually(10s, [&] {
    return send_keyless(p, "pay", 9, &new_used)
           && *new_used.rbegin() >= 6;
  })) << "the producer does not use the new partitions";
  ASSERT_TRUE(warm_up(p, "pay"));
  auto forwarded = total("broker.forwarded");
  new_used.clear();
  ASSERT_TRUE(send_keyless(p, "pay", 28, &new_used));
  for (int q = 6; q < 9; ++q)
    EXPECT_EQ(new_used.count(static_cast<uint32_t>(q)), 1u) << q;
  EXPECT_EQ(total("broker.forwarded"), forwarded);
}

TEST_F(ClusterRoutingTest, KeyedTransactionsGoStraightToTheirHome) {
  start_linked(3);
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1);
  ASSERT_TRUE(client::admin::create_topic(*c1, "tx", 6));
  client::txn_producer_options to;
  to.group = "wallets";
  auto tp = client::transaction_producer::start(
    *c1, to, [](const client::txn_check&) { return client::txn_outcome::commit; });
  ASSERT_TRUE(tp) << render(tp.error());
  auto commit = [](const client::message&, const std::string&) {
    return client::txn_outcome::commit;
  };
  // Sends `n` keyed transactions; the number that committed.
  auto run = [&](int from, int n) {
    std::atomic<int> ok{0};
    for (int i = from; i < from + n; ++i) {
      client::message m;
      m.topic = "tx";
      m.key = "acct" + std::to_string(i % 18);
      m.body = "t" + std::to_string(i);
      auto want = shard_of(m.key, 6);
      (*tp)->send_in_transaction_async(
        m, commit, [&ok, want](caf::expected<client::txn_result> r) {
          uint32_t tid = 0, part = 0;
          if (r && r->ended && r->stored && txn_home(r->txn_id, tid, part)
              && part == want && r->stored->partition == want)
            ++ok;
        });
    }
    (*tp)->flush();
    return ok.load();
  };
  // The first ones may go through n1 while the producer fetches its map.
  ASSERT_TRUE(eventually(15s, [&] {
    auto before = total("txn.forwarded");
    return run(0, 18) == 18 && total("txn.forwarded") == before;
  })) << "n1 still passes transactions on";
  auto forwarded = total("txn.forwarded");
  EXPECT_EQ(run(100, 90), 90);
  EXPECT_EQ(total("txn.forwarded"), forwarded)
    << "a node passed half messages or ends on";
  auto pending = client::admin::txn_list(*c1);
  ASSERT_TRUE(pending);
  EXPECT_EQ(pending->records_size(), 0);
}

// Operator commands over partitions homed on several nodes, asked of
// whichever node: a group's offsets reset on every home, a message found
// where it lives, a retention applied by each home.
TEST_F(ClusterRoutingTest, OperatorsResetFindAndTrimOnEveryHome) {
  start_linked(3);
  auto c1 = connect(node(0));
  auto c2 = connect(node(1));
  auto c3 = connect(node(2));
  ASSERT_TRUE(c1 && c2 && c3);
  ASSERT_TRUE(client::admin::create_topic(*c1, "ops", 3));
  auto home = homes(*c1, "ops");
  std::set<std::string> distinct;
  for (auto& [p, h] : home)
    distinct.insert(h);
  ASSERT_GE(distinct.size(), 2u) << "the partitions should be spread";
  client::producer p{*c1};
  for (int i = 0; i < 9; ++i) {
    client::message m;
    m.topic = "ops";
    m.key = "k" + std::to_string(i);
    m.body = "b" + std::to_string(i);
    ASSERT_TRUE(p.send(m));
  }
  {
    std::atomic<int> got{0};
    client::consumer_options o;
    o.group = "ledger";
    o.topic = "ops";
    auto c = client::consumer::start(*c2, o, [&](const client::received&) {
      ++got;
      return client::consume_result::success;
    });
    ASSERT_TRUE(c) << render(c.error());
    ASSERT_TRUE(eventually(15s, [&] { return got.load() == 9; }));
    (*c)->stop();
  }
  ASSERT_TRUE(eventually(15s, [&] {
    auto l = client::admin::list_groups(*c1);
    if (!l)
      return false;
    for (auto& g : l->groups())
      if (g.group() == "ledger")
        return g.members_size() == 0;
    return false;
  }));

  // Reset through n3: every partition, wherever it lives, back to 0.
  pb::ResetOffsets r;
  r.set_group("ledger");
  r.set_topic("ops");
  r.set_to(pb::ResetOffsets::TO_EARLIEST);
  r.set_execute(true);
  r.set_by("ops-bob");
  auto done = client::admin::reset_offsets(*c3, r);
  ASSERT_TRUE(done) << render(done.error());
  ASSERT_EQ(done->partitions_size(), 3);
  uint64_t was = 0;
  for (auto& row : done->partitions()) {
    EXPECT_FALSE(row.unavailable()) << row.partition();
    EXPECT_EQ(row.home(), home[row.partition()]);
    EXPECT_EQ(row.target(), 0u);
    was += row.committed();
  }
  EXPECT_EQ(was, 9u);
  auto d = client::admin::describe_topic(*c1, "ops");
  ASSERT_TRUE(d);
  int rows = 0;
  for (auto& g : d->groups())
    if (g.cursor() == "ledger") {
      ++rows;
      EXPECT_EQ(g.committed(), 0u) << g.partition();
    }
  EXPECT_EQ(rows, 3);

  // A message found through n2, whatever its home.
  for (int i = 0; i < 9; ++i) {
    pb::FindMessages f;
    f.set_topic("ops");
    f.set_by_key(true);
    f.set_key("k" + std::to_string(i));
    auto found = client::admin::find_messages(*c2, f);
    ASSERT_TRUE(found) << render(found.error());
    ASSERT_EQ(found->messages_size(), 1) << i;
    EXPECT_EQ(found->messages(0).body(), "b" + std::to_string(i));
  }

  // Retention set through n1 (one byte: only the newest message of each
  // partition is kept) reaches every home through etcd: each drops the
  // others.
  pb::AlterTopic a;
  a.set_name("ops");
  a.set_set_retention_bytes(true);
  a.set_retention_bytes(1);
  ASSERT_TRUE(client::admin::alter_topic(*c1, a));
  ASSERT_TRUE(eventually(15s, [&] {
    auto d = client::admin::describe_topic(*c3, "ops");
    if (!d || d->partitions_size() != 3)
      return false;
    return std::all_of(d->partitions().begin(), d->partitions().end(),
                       [](auto& p) {
                         return !p.unavailable()
                                && p.low_watermark() + 1 >= p.end_offset();
                       });
  }));
}

} // namespace
} // namespace edda::test
