// Network faults on loopback, by a relay in the test (cluster/relay.hpp),
// and a node stopped with SIGSTOP past its lease:
//  * B cut from etcd (its peers and clients still reach it): B fences
//    itself, still serves its partitions to its own clients, the others
//    drop it; healed, it rejoins with a new incarnation;
//  * everyone cut from B while B and the others still reach etcd: no
//    ownership changes (B stays a member), sends to B's partitions fail
//    fast instead of hanging; healed, they succeed again;
//  * etcd itself stopped (SIGSTOP) under a running cluster: sends to the
//    partitions of the node a client talks to are acknowledged and its
//    consumer gets them; admin changes fail at once saying etcd is
//    unreachable; etcd back, the nodes rejoin, the change succeeds and
//    every acknowledged message is consumed;
//  * a node given two etcd endpoints whose first goes silent (a cut relay)
//    keeps its lease: its calls move to the second;
//  * B (coordinating a group) SIGSTOPped for twice the TTL: the group moves
//    to a survivor and its consumer goes on; on SIGCONT B fences itself at
//    once and its stale coordinator stops; the consumer gets B's partitions
//    again without a restart.
#include "support/http_get.hpp"
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "cluster/placement.hpp"
#include "cluster_fixture.hpp"

#include <mutex>
#include <set>
#include <thread>

namespace edda::test {
namespace {

using namespace std::chrono_literals;

class ClusterFaultTest : public ClusterFixture {
protected:
  bool member_linked(const cluster_node& from, const std::string& id,
                     bool want_linked) {
    auto s = status_of(from);
    if (!s)
      return false;
    for (auto& m : s->members())
      if (m.node_id() == id)
        return m.connected() == want_linked;
    return false;
  }
};

TEST_F(ClusterFaultTest, ANodeCutFromEtcdFencesItselfAndStillServesItsClients) {
  add_node();
  add_node({"n2", {}, true, false, {}}); // etcd through a relay
  add_node();
  auto& b = node("n2");
  auto ca = connect(node(0));
  ASSERT_TRUE(ca);
  ASSERT_TRUE(client::admin::create_topic(*ca, "cut", 3));
  auto info = client::admin::describe_topic(*ca, "cut");
  ASSERT_TRUE(info);
  auto key = key_on(*info, "n2");
  ASSERT_FALSE(key.empty());
  auto before = status_of(b);
  ASSERT_TRUE(before);
  // Its admin port: ready (holding its lease), a member of three.
  auto admin = test::admin_port_of(*b.process());
  ASSERT_NE(admin, 0);
  EXPECT_EQ(test::http_get(admin, "/ready").status, 200);
  auto metrics = test::http_get(admin, "/metrics").body;
  EXPECT_NE(metrics.find("\nedda_cluster_clustered 1\n"), std::string::npos)
    << metrics;
  EXPECT_NE(metrics.find("\nedda_cluster_members 3\n"), std::string::npos);
  EXPECT_NE(metrics.find("\nedda_cluster_fenced 0\n"), std::string::npos);
  b.etcd_relay->cut();
  // B cannot renew: it fences itself at 3/4 of the TTL (2 s)...
  ASSERT_TRUE(eventually(4s, [&] {
    auto s = status_of(b);
    return s && s->fenced();
  })) << "n2 did not fence itself";
  // ...and says it is not ready (a load balancer takes it out), while it
  // is alive.
  auto fenced = test::http_get(admin, "/ready");
  EXPECT_EQ(fenced.status, 503);
  EXPECT_NE(fenced.body.find("not ready: no lease"), std::string::npos)
    << fenced.body;
  EXPECT_EQ(test::http_get(admin, "/health").status, 200);
  EXPECT_NE(test::http_get(admin, "/metrics").body.find(
              "\nedda_cluster_fenced 1\n"),
            std::string::npos);
  // ...while the others drop it once its lease expired in etcd.
  ASSERT_TRUE(eventually(6s, [&] {
    auto s = status_of(node(0));
    return s && s->members_size() == 2;
  }));
  // Its partitions are pinned: a client of B still sends to them.
  auto cb = connect(b);
  ASSERT_TRUE(cb);
  client::producer pb{*cb};
  client::message m;
  m.topic = "cut";
  m.key = key;
  m.body = "while cut from etcd";
  auto r = pb.send(m);
  EXPECT_TRUE(r) << render(r.error());
  b.etcd_relay->restore();
  ASSERT_TRUE(eventually(10s, [&] {
    auto s = status_of(b);
    return s && !s->fenced() && s->incarnation() > before->incarnation()
           && s->members_size() == 3;
  })) << "n2 did not rejoin";
  EXPECT_TRUE(eventually(5s, [&] {
    return test::http_get(admin, "/ready").status == 200;
  }));
}

TEST_F(ClusterFaultTest, ANodeCutFromItsPeersKeepsItsPlaceAndSendsFailFast) {
  add_node();
  add_node({"n2", {}, false, true, {}}); // peers and clients reach it by a relay
  add_node();
  auto& b = node("n2");
  auto ca = connect(node(0));
  ASSERT_TRUE(ca);
  ASSERT_TRUE(eventually(10s, [&] { return member_linked(node(0), "n2", true); }));
  ASSERT_TRUE(client::admin::create_topic(*ca, "split", 3));
  auto info = client::admin::describe_topic(*ca, "split");
  ASSERT_TRUE(info);
  auto key = key_on(*info, "n2");
  ASSERT_FALSE(key.empty());
  client::producer p{*ca};
  client::message m;
  m.topic = "split";
  m.key = key;
  m.body = "before";
  ASSERT_TRUE(p.send(m));
  b.peer_relay->cut();
  // Heartbeats stop: n1's link to n2 times out; n2 stays a member (etcd
  // decides membership, not a link).
  ASSERT_TRUE(eventually(8s, [&] { return member_linked(node(0), "n2", false); }));
  auto s = status_of(node(0));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->members_size(), 3);
  // n1's /metrics: n2's partition is unavailable, with no offsets (a gap
  // in a graph, not a drop to 0), and n2 a member not linked.
  {
    auto part = std::to_string(shard_of(key, 3));
    auto admin = test::admin_port_of(*node(0).process());
    ASSERT_NE(admin, 0);
    std::string metrics;
    EXPECT_TRUE(eventually(5s, [&] {
      metrics = test::http_get(admin, "/metrics").body;
      return metrics.find("edda_partition_unavailable{topic=\"split\","
                          "partition=\"" + part + "\"} 1\n")
             != std::string::npos;
    })) << metrics;
    EXPECT_EQ(metrics.find("edda_partition_end_offset{topic=\"split\","
                           "partition=\"" + part + "\","),
              std::string::npos)
      << metrics;
    EXPECT_NE(metrics.find("edda_cluster_member_linked{node=\"n2\"} 0\n"),
              std::string::npos)
      << metrics;
    EXPECT_NE(metrics.find("edda_cluster_members 3\n"), std::string::npos);
  }
  m.body = "during";
  auto err = send_fails_fast(p, m);
  // The producer sends straight to n2 over its own link, through the same
  // cut relay. Until that link times out too, a send goes out on it and
  // fails when it drops, saying the outcome is unknown (never sent twice);
  // once the producer knows, it goes through n1, which refuses at once.
  if (code_of(err) != errc::partition_unavailable) {
    EXPECT_EQ(code_of(err), errc::unavailable) << render(err);
    EXPECT_NE(render(err).find("may or may not"), std::string::npos)
      << render(err);
    err = send_fails_fast(p, m);
    EXPECT_EQ(code_of(err), errc::partition_unavailable) << render(err);
  }
  b.peer_relay->restore();
  m.body = "after";
  EXPECT_TRUE(eventually(15s, [&] { return static_cast<bool>(p.send(m)); }))
    << "sends to n2's partition did not come back";
}

TEST_F(ClusterFaultTest, WhileEtcdIsLostHomePartitionsServeAndAdminFailsClearly) {
  start_nodes(2);
  auto& a = node(0);
  auto c = connect(a);
  ASSERT_TRUE(c);
  ASSERT_TRUE(client::admin::create_topic(*c, "lost", 4));
  auto key_a = key_on(*c, "lost", "n1");
  auto key_b = key_on(*c, "lost", "n2");
  ASSERT_FALSE(key_a.empty() || key_b.empty());
  inbox got;
  auto cons = got.consume(*c, "keepers", "lost");
  ASSERT_TRUE(cons) << render(cons.error());
  acked_producer p{*c, "lost"};
  auto& acked = p.acked;
  auto send = [&](const std::string& key, const std::string& body) {
    return p.send(key, body);
  };
  for (int i = 0; i < 6; ++i)
    ASSERT_TRUE(send(i % 2 == 0 ? key_a : key_b, "before" + std::to_string(i)));
  ASSERT_TRUE(eventually(15s, [&] { return got.missing(acked).empty(); }));
  std::vector<uint64_t> incarnations;
  for (size_t i = 0; i < 2; ++i) {
    auto s = status_of(node(i));
    ASSERT_TRUE(s);
    incarnations.push_back(s->incarnation());
  }

  etcd().pause();
  // No renewal for 3/4 of the TTL (2 s): the node fences itself.
  ASSERT_TRUE(eventually(4s, [&] {
    auto s = status_of(a);
    return s && s->fenced();
  })) << "n1 did not fence itself";
  // The data path of its home partitions goes on: acknowledged, and the
  // running consumer gets them.
  std::set<std::string> during;
  for (int i = 0; i < 6; ++i) {
    auto body = "during" + std::to_string(i);
    auto r = send(key_a, body);
    ASSERT_TRUE(r) << body << ": " << render(r.error());
    during.insert(body);
  }
  // Across the link to n2 it may go too: counted if acknowledged.
  (void) send(key_b, "during-b");
  EXPECT_TRUE(eventually(10s, [&] { return got.missing(during).empty(); }))
    << got.missing(during).size() << " sent while etcd was lost not consumed";
  // Admin changes need etcd: they fail soon, saying so.
  auto unreachable = [&](const caf::error& err, const char* what) {
    EXPECT_EQ(code_of(err), errc::unavailable) << what << ": " << render(err);
    EXPECT_NE(render(err).find("etcd at " + etcd_address() + " unreachable"),
              std::string::npos)
      << what << ": " << render(err);
  };
  auto t0 = clock_type::now();
  auto created = client::admin::create_topic(*c, "late", 2);
  EXPECT_LT(clock_type::now() - t0, 3s);
  ASSERT_FALSE(created);
  unreachable(created.error(), "topic create");
  t0 = clock_type::now();
  auto altered = client::admin::alter_topic(*c, "lost", 6);
  EXPECT_LT(clock_type::now() - t0, 3s);
  ASSERT_FALSE(altered);
  unreachable(altered.error(), "topic alter");

  etcd().resume();
  // Both rejoin, with a new incarnation (their leases ran out).
  for (size_t i = 0; i < 2; ++i)
    ASSERT_TRUE(eventually(10s, [&] {
      auto s = status_of(node(i));
      return s && !s->fenced() && s->incarnation() > incarnations[i]
             && s->members_size() == 2;
    })) << node(i).name << " did not rejoin";
  // The admin changes succeed now (a create whose answer was lost has
  // happened: topic_exists).
  ASSERT_TRUE(eventually(10s, [&] {
    auto r = client::admin::create_topic(*c, "late", 2);
    return r || code_of(r.error()) == errc::topic_exists;
  }));
  auto grown = client::admin::alter_topic(*c, "lost", 6);
  ASSERT_TRUE(grown) << render(grown.error());
  EXPECT_EQ(grown->meta().partitions(), 6u);
  for (int i = 0; i < 6; ++i)
    ASSERT_TRUE(eventually(10s, [&] {
      return static_cast<bool>(
        send(i % 2 == 0 ? key_a : key_b, "after" + std::to_string(i)));
    }));
  // Nothing acknowledged is lost.
  eventually(20s, [&] { return got.missing(acked).empty(); });
  auto lost = got.missing(acked);
  EXPECT_TRUE(lost.empty()) << lost.size() << " of " << acked.size()
                            << " acknowledged not consumed, e.g. "
                            << (lost.empty() ? "" : *lost.begin());
}

TEST_F(ClusterFaultTest, ANodeGivenTwoEtcdsKeepsItsLeaseWhenTheFirstGoesSilent) {
  auto front = relay::start(0, "127.0.0.1", etcd().client_port());
  ASSERT_TRUE(front) << render(front.error());
  auto& a = add_node(
    {"n1",
     {"cluster.etcd=" + (*front)->address() + "," + etcd_address()},
     false,
     false,
     {}});
  add_node();
  auto before = status_of(a);
  ASSERT_TRUE(before);
  ASSERT_GT((*front)->bytes_to_target(), 0u) << "n1 does not use the first";
  (*front)->cut();
  // For three TTLs (2 s) it never fences: each renewal that meets the
  // silent endpoint moves on to the second within its deadline.
  auto until = clock_type::now() + 6s;
  while (clock_type::now() < until) {
    auto s = status_of(a);
    ASSERT_TRUE(s);
    ASSERT_FALSE(s->fenced()) << s->problem();
    std::this_thread::sleep_for(200ms);
  }
  auto s = status_of(a);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->lease_id(), before->lease_id());
  EXPECT_EQ(s->incarnation(), before->incarnation());
  auto s2 = status_of(node(1));
  ASSERT_TRUE(s2);
  EXPECT_EQ(s2->members_size(), 2) << "n2 lost n1";
  EXPECT_NE(read_file(a.process()->log_path)
              .find("does not answer (" + (*front)->address()),
            std::string::npos);
  // Admin changes through it work: etcd answers it on the second.
  auto c = connect(a);
  ASSERT_TRUE(c);
  auto t = client::admin::create_topic(*c, "moved", 2);
  EXPECT_TRUE(t) << render(t.error());
}

TEST_F(ClusterFaultTest, APausedCoordinatorFencesAndTheConsumerGoesOn) {
  start_nodes(3);
  auto b_name
    = cluster::owner_of("group/watchers", node_ids({"n1", "n2", "n3"})).value();
  auto& b = node(b_name);
  auto& via = node(b_name == "n1" ? "n2" : "n1");
  auto c = connect(via);
  ASSERT_TRUE(c);
  ASSERT_TRUE(client::admin::create_topic(*c, "watch", 3));
  auto info = client::admin::describe_topic(*c, "watch");
  ASSERT_TRUE(info);
  auto key_b = key_on(*info, b_name);
  auto key_via = key_on(*info, via.name);
  std::mutex mtx;
  std::set<std::string> got;
  client::consumer_options co;
  co.group = "watchers";
  co.topic = "watch";
  auto cons = client::consumer::start(*c, co, [&](const client::received& r) {
    std::lock_guard<std::mutex> guard{mtx};
    got.insert(r.msg.body);
    return client::consume_result::success;
  });
  ASSERT_TRUE(cons) << render(cons.error());
  auto [owner, token] = owner_in_etcd("group/watchers");
  ASSERT_EQ(owner, b_name);
  auto seen = [&](const std::string& body) {
    std::lock_guard<std::mutex> guard{mtx};
    return got.count(body) != 0;
  };
  client::producer p{*c};
  auto send = [&](const std::string& key, const std::string& body) {
    client::message m;
    m.topic = "watch";
    m.key = key;
    m.body = body;
    return static_cast<bool>(p.send(m));
  };
  pause(b);
  // The lease (2 s) runs out: a survivor takes the group with a higher
  // token; the consumer finds it and goes on with the live partitions.
  ASSERT_TRUE(eventually(10s, [&] {
    auto [o, t] = owner_in_etcd("group/watchers");
    return !o.empty() && o != b_name;
  }));
  EXPECT_GT(owner_in_etcd("group/watchers").second, token);
  ASSERT_TRUE(send(key_via, "while-paused"));
  EXPECT_TRUE(eventually(10s, [&] { return seen("while-paused"); }));
  resume(b);
  // On SIGCONT it fences at once (its lease is gone) and rejoins anew; its
  // old coordinator stopped: nothing it sends is taken (stale token).
  ASSERT_TRUE(eventually(10s, [&] {
    auto s = status_of(b);
    return s && !s->fenced() && s->members_size() == 3;
  }));
  auto log = read_file(b.process()->log_path);
  EXPECT_NE(log.find("fenced"), std::string::npos);
  // The consumer, never restarted, gets B's partitions again.
  ASSERT_TRUE(eventually(10s, [&] { return send(key_b, "after-resume"); }));
  EXPECT_TRUE(eventually(15s, [&] { return seen("after-resume"); }))
    << "the consumer did not get the resumed node's partition back";
}

} // namespace
} // namespace edda::test
