// Replication between nodes (issue 13, first part: the data path). Two
// nodes, cluster.replication_factor 2, cluster.min_insync 2: each keeps a
// copy of the other's storage. A checker opens those copies after the
// nodes are killed and finds every acknowledged message there; with the
// follower down a write is refused (not acknowledged), and once it is back
// it catches up and writes are acknowledged again.
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/producer.hpp"
#include "cluster_fixture.hpp"
#include "replication/follower.hpp"
#include "replication/group_record.hpp"
#include "replication/replica_host.hpp"
#include "storage/environment.hpp"
#include "support/certs.hpp"
#include "wire/types.hpp"

#include "records.pb.h"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <atomic>
#include <filesystem>
#include <map>
#include <thread>
#include <set>
#include <string>

namespace edda::test {
namespace {

using namespace std::chrono_literals;
namespace pb = wire::v1;

class ClusterReplicationTest : public ClusterFixture {
protected:
  ClusterReplicationTest()
      : ClusterFixture({"cluster.replication_factor=2",
                        "cluster.min_insync=2",
                        "cluster.replica_lag_max=3s",
                        // What copies do without failover (its tests:
                        // cluster_failover_test).
                        "cluster.failover=off"},
                       "edda-repl") {}

  /// Two nodes that see each other, and topic `t` with a partition homed
  /// on each. With tls_: their node ports behind mutual TLS (clients over
  /// the client doors).
  void start_pair(const std::string& t) {
    node_options o;
    if (tls_) {
      ASSERT_TRUE(make_certs(root()));
      o.settings = {"network.tls_certificate=" + root() + "/node.pem",
                    "network.tls_key=" + root() + "/node.key",
                    "network.tls_ca=" + root() + "/ca.pem"};
      clients_over_door_ = true;
    }
    start_nodes(2, o);
    auto c = connect(node(0));
    ASSERT_TRUE(c) << render(c.error());
    ASSERT_TRUE(eventually(10s, [&] {
      auto s = client::admin::cluster_status(*c);
      if (!s || s->members_size() != 2)
        return false;
      for (auto& m : s->members())
        if (!m.connected())
          return false;
      return true;
    }));
    ASSERT_TRUE(client::admin::create_topic(*c, t, 2));
    auto d = client::admin::describe_topic(*c, t);
    ASSERT_TRUE(d);
    for (auto& p : d->partitions())
      homes_[p.partition()] = p.home();
    std::set<std::string> distinct;
    for (auto& [p, h] : homes_)
      distinct.insert(h);
    ASSERT_EQ(distinct.size(), 2u) << "a partition on each node";
  }

  /// Bodies of the messages in the copy that `keeper` holds of `group`'s
  /// storage (the node must not run: the copy's env is opened here).
  std::set<std::string> bodies_in_copy(const cluster_node& keeper,
                                       const std::string& group,
                                       replication::position* at = nullptr) {
    std::set<std::string> out;
    storage::options o;
    o.dir = replication::replica_dir(keeper.data_dir + "/replicas", group);
    o.map_size = 64ull << 20;
    auto env = storage::environment::open(o);
    EXPECT_TRUE(env) << o.dir << ": " << render(env.error());
    if (!env)
      return out;
    if (at != nullptr)
      *at = replication::read_position(**env);
    auto r = (*env)->read();
    r.scan(storage::db::log, "", "",
           [&](std::string_view, std::string_view v) {
             pb::Message m;
             if (m.ParseFromArray(v.data(), static_cast<int>(v.size())))
               out.insert(m.body());
             return true;
           });
    return out;
  }

  /// The in-sync followers etcd records for `group`'s storage.
  std::vector<std::string> recorded_isr(const std::string& group) {
    auto c = connect_etcd();
    if (!c)
      return {"<no etcd>"};
    auto r = replication::read_group(**c, cluster_name(), group);
    if (!r || !*r)
      return {"<no record>"};
    return {(*r)->isr().begin(), (*r)->isr().end()};
  }

  /// n1, and n2 started with `n2`'s options; topic "pay" (2 partitions);
  /// n2's copy of n1 recorded in sync. A key of n1's partition.
  std::string n1_followed_by(node_options n2) {
    add_node();
    n2.name = "n2";
    add_node(std::move(n2));
    auto c = connect(node(0));
    EXPECT_TRUE(c);
    if (!c)
      return {};
    EXPECT_TRUE(eventually(10s, [&] {
      return connected_members(node(0)).size() == 2;
    }));
    EXPECT_TRUE(client::admin::create_topic(*c, "pay", 2));
    auto key = key_on(*c, "pay", "n1");
    EXPECT_FALSE(key.empty());
    EXPECT_TRUE(eventually(15s, [&] {
      return recorded_isr("n1") == std::vector<std::string>{"n2"};
    })) << "n2's copy of n1 never recorded in sync";
    return key;
  }

  /// Every message acknowledged by either node of a pair is in the other's
  /// copy after both are killed (start_pair; with tls_ over TLS links).
  void every_acknowledged_message_is_in_the_other_copy();

  std::map<uint32_t, std::string> homes_;
  bool tls_ = false;
};

TEST_F(ClusterReplicationTest, EveryAcknowledgedMessageIsInTheOtherNodesCopy) {
  every_acknowledged_message_is_in_the_other_copy();
}

TEST_F(ClusterReplicationTest, EveryAcknowledgedMessageIsInTheOtherNodesCopyOverTlsLinks) {
  // The follower's copy is shipped over a link taken from the leader's
  // hello or made by this node (one-way links, as in every cluster):
  // a ship is taken only from the group's node over its link.
  tls_ = true;
  every_acknowledged_message_is_in_the_other_copy();
}

void ClusterReplicationTest::every_acknowledged_message_is_in_the_other_copy() {
  ASSERT_NO_FATAL_FAILURE(start_pair("pay"));
  auto c = connect(node(0));
  ASSERT_TRUE(c);
  client::producer p{*c};
  std::map<std::string, std::set<std::string>> acked_by_home;
  int failed = 0;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  for (int i = 0; i < 300 && std::chrono::steady_clock::now() < deadline;
       ++i) {
    client::message m;
    m.topic = "pay";
    m.key = "acct-" + std::to_string(i % 17);
    m.body = "debit " + std::to_string(i);
    auto r = p.send(m);
    if (!r) {
      ++failed;
      continue;
    }
    acked_by_home[homes_.at(r->partition)].insert(m.body);
  }
  EXPECT_EQ(failed, 0) << "both copies in sync: nothing refused";
  // The status shows the copy on the other node, in sync, caught up.
  ASSERT_TRUE(eventually(5s, [&] {
    auto s = client::admin::cluster_status(*c);
    return s && s->replicas_size() == 1 && s->replicas(0).in_sync()
           && s->replicas(0).acked_seq() == s->leader_seq();
  }));
  auto s = client::admin::cluster_status(*c);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->replication_factor(), 2u);
  EXPECT_EQ(s->min_insync(), 2u);
  EXPECT_EQ(s->replicas(0).follower(), node(1).name);
  EXPECT_EQ(s->replicated_seq(), s->leader_seq());
  EXPECT_GT(s->leader_seq(), 0u);
  // etcd records each node's copy as in sync, under compare-and-swap.
  EXPECT_TRUE(eventually(5s, [&] {
    return recorded_isr(node(0).name)
             == std::vector<std::string>{node(1).name}
           && recorded_isr(node(1).name)
                == std::vector<std::string>{node(0).name};
  })) << recorded_isr(node(0).name).size() << " / "
      << recorded_isr(node(1).name).size();
  s = client::admin::cluster_status(*c);
  ASSERT_TRUE(s);
  ASSERT_EQ(s->recorded_isr_size(), 1);
  EXPECT_EQ(s->recorded_isr(0), node(1).name);
  ASSERT_EQ(acked_by_home.size(), 2u);
  EXPECT_GT(counter_of(node(0), "replication.batches_applied"), 0u);
  EXPECT_GT(counter_of(node(1), "replication.batches_applied"), 0u);
  // Both die at once (no goodbye): what each acknowledged is in the
  // other's copy.
  kill9(node(0));
  kill9(node(1));
  for (size_t k = 0; k < 2; ++k) {
    auto& keeper = node(1 - k);
    auto group = node(k).name;
    replication::position at;
    auto copy = bodies_in_copy(keeper, group, &at);
    EXPECT_EQ(at.epoch, 1u) << "first start of " << group;
    EXPECT_GT(at.seq, 0u);
    size_t missing = 0;
    for (auto& b : acked_by_home[group])
      if (copy.count(b) == 0)
        ++missing;
    EXPECT_EQ(missing, 0u) << missing << " of " << acked_by_home[group].size()
                           << " messages acknowledged by " << group
                           << " are not in " << keeper.name << "'s copy";
  }
}

TEST_F(ClusterReplicationTest, WithTheFollowerDownWritesAreRefusedThenCatchUp) {
  ASSERT_NO_FATAL_FAILURE(start_pair("pay"));
  auto c = connect(node(0));
  ASSERT_TRUE(c);
  // A key whose partition lives on n1.
  std::string key;
  for (int i = 0; key.empty() && i < 1000; ++i) {
    client::message m;
    m.topic = "pay";
    m.key = "k" + std::to_string(i);
    m.body = "probe";
    client::producer p{*c};
    auto r = p.send(m);
    ASSERT_TRUE(r) << render(r.error());
    if (homes_.at(r->partition) == node(0).name)
      key = m.key;
  }
  ASSERT_FALSE(key.empty());
  client::producer p{*c};
  auto send = [&](const std::string& body) {
    client::message m;
    m.topic = "pay";
    m.key = key;
    m.body = body;
    return p.send(m);
  };
  ASSERT_TRUE(send("before"));
  kill9(node(1));
  // Refused once n2 is out of the in-sync set (replica_lag_max 3 s), with
  // an error that says why; never acknowledged meanwhile.
  caf::error refused;
  std::set<std::string> acked_while_down;
  ASSERT_TRUE(eventually(15s, [&] {
    auto body = "during " + std::to_string(acked_while_down.size());
    auto r = send(body);
    if (r) {
      acked_while_down.insert(body);
      return false;
    }
    refused = r.error();
    return true;
  }));
  EXPECT_EQ(code_of(refused), errc::unavailable) << render(refused);
  EXPECT_NE(render(refused).find("cluster.min_insync 2"), std::string::npos)
    << render(refused);
  // Refused only once etcd no longer records n2 in sync.
  EXPECT_TRUE(recorded_isr(node(0).name).empty());
  // n2 comes back: it catches up from n1's commits kept in memory, and
  // writes are acknowledged again.
  ASSERT_TRUE(restart(node(1)));
  ASSERT_TRUE(eventually(20s, [&] { return bool(send("after")); }))
    << "writes still refused after the follower came back";
  kill9(node(0));
  kill9(node(1));
  auto copy = bodies_in_copy(node(1), node(0).name);
  EXPECT_EQ(copy.count("before"), 1u);
  EXPECT_EQ(copy.count("after"), 1u);
  for (auto& b : acked_while_down)
    EXPECT_EQ(copy.count(b), 1u) << b;
}

TEST_F(ClusterReplicationTest, ACutLinkShrinksTheRecordedInSyncSetFirst) {
  // n2, the follower of n1, is reached by its peers through a relay.
  node_options through_relay;
  through_relay.advertise_via_relay = true;
  auto key = n1_followed_by(through_relay);
  ASSERT_FALSE(HasFailure());
  auto& f = node("n2");
  auto c = connect(node(0));
  ASSERT_TRUE(c);
  acked_producer p{*c, "pay"};
  ASSERT_TRUE(p.send(key, "before"));
  // The link is cut (a blackhole, both nodes still on etcd): n1's writes
  // wait for n2 until it leaves the in-sync set (replica_lag_max 3 s), and
  // are refused from then on, with the reason, once etcd records the
  // smaller set (min in sync 2: never acknowledged on one copy).
  f.peer_relay->cut();
  caf::error refused;
  ASSERT_TRUE(eventually(20s, [&] {
    auto r = p.send(key, "during " + std::to_string(p.acked.size()));
    if (r)
      return false;
    refused = r.error();
    return code_of(refused) == errc::unavailable
           && render(refused).find("cluster.min_insync 2") != std::string::npos;
  })) << render(refused);
  // The shipper counts n2 out only once the record without it is written
  // (shipper.hpp); by the time the refusal is here, etcd says so.
  EXPECT_TRUE(recorded_isr("n1").empty())
    << "refused before etcd recorded n2 out of sync";
  // The link comes back: n2 catches up, enters the record again, and
  // writes are acknowledged.
  f.peer_relay->restore();
  ASSERT_TRUE(eventually(30s, [&] { return bool(p.send(key, "after")); }))
    << "writes still refused after the link came back";
  // (Acknowledgements wait for a caught-up follower before etcd records it
  // back: the record follows shortly.)
  EXPECT_TRUE(eventually(10s, [&] {
    return recorded_isr("n1") == std::vector<std::string>{"n2"};
  }));
  kill9(node(0));
  kill9(f);
  auto copy = bodies_in_copy(f, "n1");
  for (auto& b : p.acked)
    EXPECT_EQ(copy.count(b), 1u) << b << " acknowledged, not in n2's copy";
}

TEST_F(ClusterReplicationTest, AFollowersFullDiskRefusesWritesClearlyAndLosesNothing) {
  // n2's LMDB map (its own storage and its copies) is small: n1's writes
  // fill n2's copy of n1 long before n1's own map.
  node_options small_map;
  small_map.settings = {"storage.map_size=3MiB"};
  auto key = n1_followed_by(small_map);
  ASSERT_FALSE(HasFailure());
  auto c = connect(node(0));
  ASSERT_TRUE(c);
  acked_producer p{*c, "pay"};
  std::string big(64 << 10, 'x');
  caf::error refused;
  for (int i = 0; i < 200 && !refused; ++i) {
    auto r = p.send(key, "big " + std::to_string(i) + " " + big);
    if (!r)
      refused = r.error();
  }
  // Refused, not acknowledged on one copy (min in sync 2), saying why.
  ASSERT_TRUE(refused) << "200 writes of 64 KiB all fit in a 3 MiB copy?";
  EXPECT_EQ(code_of(refused), errc::unavailable) << render(refused);
  EXPECT_NE(render(refused).find("cluster.min_insync 2"), std::string::npos)
    << render(refused);
  // The copy's state tells the operator the follower's disk is full.
  auto s = status_of(node(0));
  ASSERT_TRUE(s);
  ASSERT_EQ(s->replicas_size(), 1);
  EXPECT_NE(s->replicas(0).error().find("storage_full"), std::string::npos)
    << s->DebugString();
  EXPECT_FALSE(s->replicas(0).in_sync());
  // Both nodes still run, and every acknowledged write is in n2's copy.
  EXPECT_TRUE(node(0).running());
  EXPECT_TRUE(node(1).running());
  ASSERT_FALSE(p.acked.empty());
  kill9(node(0));
  kill9(node(1));
  std::set<std::string> copy;
  for (auto& b : bodies_in_copy(node(1), "n1"))
    copy.insert(b.substr(0, b.find(' ', 4)));
  for (auto& b : p.acked)
    EXPECT_EQ(copy.count(b.substr(0, b.find(' ', 4))), 1u)
      << b.substr(0, 12) << " acknowledged, not in n2's copy";
}

TEST_F(ClusterReplicationTest, AWipedNodeGetsAFullCopyAndItsOwnCopyIsKept) {
  ASSERT_NO_FATAL_FAILURE(start_pair("pay"));
  auto c = connect(node(0));
  ASSERT_TRUE(c);
  // Keys of each node's partition.
  std::map<std::string, std::string> key_on;
  {
    client::producer p{*c};
    for (int i = 0; key_on.size() < 2 && i < 1000; ++i) {
      client::message m;
      m.topic = "pay";
      m.key = "k" + std::to_string(i);
      m.body = "probe";
      auto r = p.send(m);
      ASSERT_TRUE(r) << render(r.error());
      key_on.emplace(homes_.at(r->partition), m.key);
    }
  }
  ASSERT_EQ(key_on.size(), 2u);
  auto n1 = node(0).name, n2 = node(1).name;
  client::producer p{*c};
  auto send = [&](const std::string& home, const std::string& body) {
    client::message m;
    m.topic = "pay";
    m.key = key_on.at(home);
    m.body = body;
    return p.send(m);
  };
  std::map<std::string, std::set<std::string>> acked;
  for (int i = 0; i < 40; ++i)
    for (auto& home : {n1, n2}) {
      auto body = home + "-" + std::to_string(i);
      auto r = send(home, body);
      ASSERT_TRUE(r) << render(r.error());
      acked[home].insert(body);
    }
  // n2 loses its disk: it comes back empty under the same name (once its
  // lease expired: a live member's name is refused).
  kill9(node(1));
  std::filesystem::remove_all(node(1).data_dir);
  ASSERT_TRUE(eventually(15s, [&] {
    auto s = client::admin::cluster_status(*c);
    return s && s->members_size() == 1;
  }));
  auto copies = counter_of(node(0), "replication.copies");
  ASSERT_TRUE(restart(node(1)));
  // n1 gives it a full copy of n1's storage (n1 no longer keeps the first
  // commits in memory) and acknowledges writes again.
  ASSERT_TRUE(eventually(30s, [&] {
    auto body = n1 + "-after";
    auto r = send(n1, body);
    if (r)
      acked[n1].insert(body);
    return bool(r);
  })) << "n1's writes still refused after n2 came back";
  EXPECT_GT(counter_of(node(0), "replication.copies"), copies);
  // n1's copy of n2's storage is ahead of the empty n2: never overwritten
  // (it may hold the only copy of what n2 acknowledged), and n2's writes
  // are refused meanwhile.
  auto r = send(n2, n2 + "-after-wipe");
  ASSERT_FALSE(r) << "n2 acknowledged with its only copy diverged";
  EXPECT_EQ(code_of(r.error()), errc::unavailable) << render(r.error());
  kill9(node(0));
  kill9(node(1));
  auto n2_copy = bodies_in_copy(node(1), n1);
  for (auto& b : acked[n1])
    EXPECT_EQ(n2_copy.count(b), 1u) << b << " missing in n2's new copy";
  auto n1_copy = bodies_in_copy(node(0), n2);
  for (auto& b : acked[n2])
    EXPECT_EQ(n1_copy.count(b), 1u) << b << " lost from n1's copy of n2";
}

TEST_F(ClusterReplicationTest, ALeaderKilledUnderLoadRestartsAndItsFollowerCatchesUp) {
  ASSERT_NO_FATAL_FAILURE(start_pair("pay"));
  auto n1 = node(0).name;
  // A client of n2: it keeps working while n1 is down and back.
  auto c = connect(node(1));
  ASSERT_TRUE(c);
  client::producer p{*c};
  std::set<std::string> acked_on_n1;
  std::atomic<size_t> acked_n1{0};
  std::atomic<bool> stop{false};
  std::thread load([&] {
    for (int i = 0; i < 5000 && !stop.load(); ++i) {
      client::message m;
      m.topic = "pay";
      m.key = "acct-" + std::to_string(i % 13);
      m.body = "burst " + std::to_string(i);
      auto r = p.send(m);
      if (r && homes_.at(r->partition) == n1) {
        acked_on_n1.insert(m.body);
        ++acked_n1;
      }
    }
  });
  // Mid-burst (at least 50 acknowledged by n1): commits durable on n1 and
  // not yet shipped.
  bool enough = eventually(20s, [&] { return acked_n1.load() >= 50; });
  kill9(node(0));
  stop = true;
  load.join();
  ASSERT_TRUE(enough) << acked_n1.load() << " acknowledged by n1";
  // n1 comes back: it keeps no commits in memory from before, so n2 gets a
  // full copy, and n1's writes are acknowledged again.
  ASSERT_TRUE(restart(node(0)));
  client::producer p2{*c};
  std::string after;
  int attempt = 0;
  ASSERT_TRUE(eventually(30s, [&] {
    client::message m;
    m.topic = "pay";
    m.key = "acct-" + std::to_string(++attempt % 13); // some live on n1
    m.body = "after " + std::to_string(attempt);
    auto r = p2.send(m);
    if (!r || homes_.at(r->partition) != n1)
      return false;
    after = m.body;
    return true;
  })) << "n1's writes not acknowledged after its restart";
  kill9(node(0));
  kill9(node(1));
  auto copy = bodies_in_copy(node(1), n1);
  size_t missing = 0;
  for (auto& b : acked_on_n1)
    missing += copy.count(b) == 0 ? 1 : 0;
  EXPECT_EQ(missing, 0u) << "of " << acked_on_n1.size()
                         << " acknowledged by n1 before its kill";
  EXPECT_EQ(copy.count(after), 1u);
}

TEST_F(ClusterReplicationTest, ASecondProcessWithALiveNodesNameCannotFenceIt) {
  ASSERT_NO_FATAL_FAILURE(start_pair("pay"));
  std::vector<std::string> in_sync{node(1).name};
  ASSERT_TRUE(eventually(10s, [&] {
    return recorded_isr(node(0).name) == in_sync;
  }));
  // Same node.name, another data dir: refused before it claims n1's group.
  auto [rc, out] = run_until_exit({node(0).name, {}, false, false, {}},
                                   root() + "/dup");
  EXPECT_GT(rc, 0) << out;
  EXPECT_NE(out.find("already a live member"), std::string::npos) << out;
  // n1 still leads its group and acknowledges.
  auto c = connect(node(0));
  ASSERT_TRUE(c);
  client::producer p{*c};
  for (int i = 0; i < 20; ++i) {
    client::message m;
    m.topic = "pay";
    m.key = "k" + std::to_string(i);
    m.body = "after the twin " + std::to_string(i);
    auto r = p.send(m);
    ASSERT_TRUE(r) << render(r.error());
  }
  auto got = connect_etcd();
  ASSERT_TRUE(got);
  auto rec = replication::read_group(**got, cluster_name(), node(0).name);
  ASSERT_TRUE(rec && *rec);
  EXPECT_EQ((*rec)->leader(), node(0).name);
  EXPECT_EQ((*rec)->leader_epoch(), 1u) << "the twin raised the epoch";
  EXPECT_EQ(recorded_isr(node(0).name), in_sync);
}

TEST_F(ClusterReplicationTest, AClientCannotWriteANodesCopy) {
  ASSERT_NO_FATAL_FAILURE(start_pair("pay"));
  caf::actor_system_config cfg;
  wire::register_types(cfg);
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  auto gw = sys.middleman().remote_actor("127.0.0.1", node(1).port);
  ASSERT_TRUE(gw) << sys.render(gw.error());
  pb::ReplShip ship;
  ship.set_group(node(0).name); // n2 keeps n1's copy
  ship.set_leader_epoch(99);
  auto* b = ship.add_batches();
  b->set_leader_epoch(99);
  b->set_seq(1000000);
  auto* op = b->add_ops();
  op->set_db(static_cast<uint32_t>(storage::db::log));
  op->set_key("forged");
  op->set_value("a client's write");
  auto before = counter_of(node(1), "replication.ships_refused");
  caf::error err;
  {
    caf::scoped_actor self{sys};
    self->request(*gw, 5s, ship)
      .receive([](const pb::ReplAck&) {}, [&](caf::error& e) { err = e; });
  }
  EXPECT_EQ(code_of(err), errc::invalid_argument) << render(err);
  EXPECT_NE(render(err).find("only from that node"), std::string::npos)
    << render(err);
  EXPECT_EQ(counter_of(node(1), "replication.ships_refused"), before + 1);
  kill9(node(1));
  auto copy = bodies_in_copy(node(1), node(0).name);
  EXPECT_EQ(copy.count("a client's write"), 0u);
}

} // namespace
} // namespace edda::test
