// Bad input to a cluster: what an operator or a stranger on the network can
// hand it, each refused with a clear error and nothing lost or mixed up:
//  * a data dir of cluster "a" started with cluster.name "b" on the same
//    etcd: refused at start, naming both; etcd untouched;
//  * two clusters of two names on one etcd: separate key prefixes (one
//    topic name in each), and a node of one that is sent to a node of the
//    other (a member record advertising the wrong address) gets no link;
//  * two clusters of one name on two etcds: the same, caught by the
//    cluster id in the peer hello;
//  * garbage, a truncated BASP header and connections that never shake
//    hands on a node's port while it is linked to a peer: the link, the
//    lease and cross-node sends go on.
#include "cluster_fixture.hpp"
#include "support/raw_peer.hpp"

#include <random>

namespace edda::test {
namespace {

using namespace std::chrono_literals;

class ClusterBadInputTest : public ClusterFixture {
protected:
  /// The link `from` reports for member `id`: {connected, link_error}.
  std::pair<bool, std::string> link_of(const cluster_node& from,
                                       const std::string& id) {
    if (auto s = status_of(from))
      for (auto& m : s->members())
        if (m.node_id() == id)
          return {m.connected(), m.link_error()};
    return {false, "(not listed)"};
  }
};

TEST_F(ClusterBadInputTest, ADataDirOfAnotherClusterIsRefusedNamingBoth) {
  start_nodes(1);
  auto& a = node(0);
  auto c = connect(a);
  ASSERT_TRUE(c);
  ASSERT_TRUE(client::admin::create_topic(*c, "kept", 1));
  {
    client::producer p{*c};
    client::message m;
    m.topic = "kept";
    m.body = "before";
    ASSERT_TRUE(p.send(m));
  }
  stop(a);
  auto other = cluster_name() + "-b";
  auto [rc, out]
    = run_until_exit({"n1", {"cluster.name=" + other}, false, false, {}},
                       a.data_dir);
  EXPECT_GT(rc, 0) << out;
  EXPECT_NE(out.find("belongs to cluster '" + cluster_name() + "'"),
            std::string::npos)
    << out;
  EXPECT_NE(out.find("cluster.name is '" + other + "'"), std::string::npos)
    << out;
  // Nothing of cluster b was written to etcd.
  auto store = connect_etcd();
  ASSERT_TRUE(store);
  auto keys = (*store)->get_prefix("/edda/" + other + "/");
  ASSERT_TRUE(keys) << render(keys.error());
  EXPECT_TRUE(keys->kvs.empty())
    << keys->kvs.size() << " keys, the first " << keys->kvs.front().key;
  // Its own cluster takes it back, data intact.
  ASSERT_TRUE(restart(a));
  auto again = connect(a);
  ASSERT_TRUE(again);
  auto d = client::admin::describe_topic(*again, "kept");
  ASSERT_TRUE(d) << render(d.error());
  EXPECT_EQ(d->partitions_size(), 1);
}

TEST_F(ClusterBadInputTest, TwoClustersOnOneEtcdAreSeparateAndCannotLink) {
  auto& a1 = add_node();
  auto b = cluster_name() + "-b";
  // b's n1 advertises a1's address (a configuration copied from cluster a):
  // b's n0, which makes the pair's link (the smaller id), is sent to a1
  // for its n1.
  auto& b0 = add_node({"b0", {"cluster.name=" + b, "node.name=n0"}, false, false, {}});
  add_node(
    {"b1",
     {"cluster.name=" + b, "node.name=n1", "node.advertise=" + a1.endpoint()},
     false,
     false,
     {}});
  auto sa = status_of(a1);
  ASSERT_TRUE(sa);
  EXPECT_EQ(sa->cluster_name(), cluster_name());
  ASSERT_EQ(sa->members_size(), 1) << sa->ShortDebugString();
  ASSERT_TRUE(eventually(10s, [&] {
    auto sb = status_of(b0);
    return sb && sb->members_size() == 2;
  }));
  // a1 refuses the hello of b's n0: no link, a WARN and a counter there,
  // and b's n0 says why.
  ASSERT_TRUE(eventually(
    10s, [&] { return counter_of(a1, "cluster.peers_refused") >= 1; }));
  EXPECT_NE(read_file(a1.process()->log_path)
              .find("refused a peer of cluster '" + b + "'"),
            std::string::npos);
  auto refused_by_a1 = [&] {
    auto [up, why] = link_of(b0, "n1");
    auto of_a = "of cluster '" + cluster_name() + "'";
    return !up && why.find(of_a) != std::string::npos;
  };
  ASSERT_TRUE(eventually(10s, refused_by_a1)) << link_of(b0, "n1").second;
  // One topic name in each cluster: separate prefixes in etcd.
  auto ca = connect(a1);
  auto cb = connect(b0);
  ASSERT_TRUE(ca && cb);
  ASSERT_TRUE(client::admin::create_topic(*ca, "same", 1));
  auto tb = client::admin::create_topic(*cb, "same", 2);
  ASSERT_TRUE(tb) << render(tb.error());
  auto da = client::admin::describe_topic(*ca, "same");
  ASSERT_TRUE(da);
  EXPECT_EQ(da->partitions_size(), 1);
  for (auto& p : da->partitions())
    EXPECT_EQ(p.home(), "n1");
}

TEST_F(ClusterBadInputTest, AClusterOfTheSameNameOnAnotherEtcdCannotLink) {
  auto& a1 = add_node();
  auto e2 = etcd_process::start();
  ASSERT_TRUE(e2) << render(e2.error());
  auto other_etcd
    = "cluster.etcd=127.0.0.1:" + std::to_string((*e2)->client_port());
  // The same cluster.name on another etcd; its n1 advertises a1's address
  // (its n0 makes the pair's link: it is sent to a1 for its n1).
  auto& x0 = add_node({"x0", {other_etcd, "node.name=n0"}, false, false, {}});
  add_node(
    {"x1",
     {other_etcd, "node.name=n1", "node.advertise=" + a1.endpoint()},
     false,
     false,
     {}});
  ASSERT_TRUE(eventually(10s, [&] {
    auto s = status_of(x0);
    return s && s->members_size() == 2;
  }));
  // Name and node id match; the cluster id does not: no link.
  ASSERT_TRUE(eventually(
    10s, [&] { return counter_of(a1, "cluster.peers_refused") >= 1; }));
  EXPECT_NE(
    read_file(a1.process()->log_path).find("refused a peer of another cluster"),
    std::string::npos);
  auto [up, why] = link_of(x0, "n1");
  EXPECT_FALSE(up);
  EXPECT_NE(why.find("with id"), std::string::npos) << why;
  // The link is tried again (with backoff) and refused again.
  ASSERT_TRUE(eventually(
    15s, [&] { return counter_of(a1, "cluster.peers_refused") >= 2; }));
  EXPECT_FALSE(link_of(x0, "n1").first);
  auto sa = status_of(a1);
  ASSERT_TRUE(sa);
  EXPECT_EQ(sa->members_size(), 1);
}

TEST_F(ClusterBadInputTest, GarbageOnANodesPortLeavesItsLinksLeaseAndSends) {
  start_nodes(2);
  auto& a = node(0);
  auto& b = node(1);
  ASSERT_TRUE(eventually(10s, [&] {
    return connected_members(a).size() == 2 && connected_members(b).size() == 2;
  }));
  auto c = connect(a);
  ASSERT_TRUE(c);
  ASSERT_TRUE(client::admin::create_topic(*c, "g", 2));
  auto key_b = key_on(*c, "g", "n2");
  auto key_a = key_on(*c, "g", "n1");
  ASSERT_FALSE(key_b.empty() || key_a.empty());
  auto before = status_of(a);
  ASSERT_TRUE(before);
  // (a) 4 KiB of random bytes starting with an invalid operation.
  std::mt19937 rng{7};
  std::string garbage(4096, '\0');
  for (auto& x : garbage)
    x = static_cast<char>(rng());
  garbage[0] = static_cast<char>(0xee);
  int ga = raw_connect(a.port);
  ASSERT_GE(ga, 0);
  ASSERT_TRUE(write_all(ga, garbage));
  EXPECT_TRUE(closed_by_peer(ga, 5s)) << "garbage kept open";
  ::close(ga);
  // (b) half a header, and (c) 16 connections that never send a byte:
  // kept open while the cluster is checked.
  std::vector<int> held;
  int half = raw_connect(a.port);
  ASSERT_GE(half, 0);
  held.push_back(half);
  ASSERT_TRUE(
    write_all(half, basp_header(basp_client_handshake, 0).substr(0, 13)));
  for (int i = 0; i < 16; ++i) {
    int fd = raw_connect(a.port);
    ASSERT_GE(fd, 0);
    held.push_back(fd);
  }
  // (d) a message before any handshake, announcing ~4 GiB: dropped.
  int lie = raw_connect(a.port);
  ASSERT_GE(lie, 0);
  ASSERT_TRUE(
    write_all(lie, basp_header(basp_direct_message, 0xfffffff0u) + "xx"));
  EXPECT_TRUE(closed_by_peer(lie, 5s));
  ::close(lie);
  // Sends across the link (to n2's partition) and to a's own go on, for
  // longer than a lease; the link stays up both ways.
  acked_producer p{*c, "g"};
  auto until = clock_type::now() + 3s;
  int sent = 0;
  while (clock_type::now() < until && sent < 60) {
    auto body = "m" + std::to_string(sent);
    auto r = p.send(sent % 2 == 0 ? key_b : key_a, body);
    ASSERT_TRUE(r) << body << ": " << render(r.error());
    ++sent;
    std::this_thread::sleep_for(50ms); // spread over more than a lease
  }
  EXPECT_EQ(connected_members(a).size(), 2u);
  EXPECT_EQ(connected_members(b).size(), 2u);
  // The lease was renewed all along: same lease, same incarnation.
  auto after = status_of(a);
  ASSERT_TRUE(after);
  EXPECT_FALSE(after->fenced());
  EXPECT_EQ(after->lease_id(), before->lease_id());
  EXPECT_EQ(after->incarnation(), before->incarnation());
  EXPECT_LT(after->renewed_ms_ago(), after->lease_ttl_ms());
  EXPECT_EQ(counter_of(a, "cluster.link_drops"), 0u);
  for (int fd : held)
    ::close(fd);
  // Nothing sent was lost: n2's partition holds its half.
  auto cb = connect(b);
  ASSERT_TRUE(cb);
  inbox got;
  auto cons = got.consume(*cb, "audit", "g");
  ASSERT_TRUE(cons) << render(cons.error());
  EXPECT_TRUE(eventually(15s, [&] { return got.missing(p.acked).empty(); }))
    << got.missing(p.acked).size() << " of " << sent << " not consumed";
}

} // namespace
} // namespace edda::test
