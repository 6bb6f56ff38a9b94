// A cluster as services in any language use it: every client over the
// nodes' client doors (edda.api.v1). Data sent through one node's door is
// stored on every partition's home and consumed through another's, with
// plain node ports and with node ports behind mutual TLS (whose links
// stay up, come back after a kill -9 of either side, and are never made
// to a node without the cluster's certificate).
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "cluster_fixture.hpp"
#include "support/certs.hpp"

#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace edda::test {
namespace {

using namespace std::chrono_literals;

class ClusterDoorTest : public ClusterFixture {
protected:
  /// Settings that put a node port behind mutual TLS with the files
  /// make_certs wrote ("node": signed by the CA; "rogue": self-signed).
  std::vector<std::string> tls(const std::string& cert = "node") {
    return {"network.tls_certificate=" + root() + "/" + cert + ".pem",
            "network.tls_key=" + root() + "/" + cert + ".key",
            "network.tls_ca=" + root() + "/ca.pem"};
  }

  /// The node's counter `name`; fails the test if the node does not answer.
  uint64_t counter(size_t i, const std::string& name) {
    auto c = connect(node(i));
    EXPECT_TRUE(c) << node(i).name << " does not answer";
    if (!c)
      return ~uint64_t{0};
    auto s = client::admin::node_status(*c);
    EXPECT_TRUE(s) << node(i).name << ": " << render(s.error());
    if (!s)
      return ~uint64_t{0};
    auto it = s->counters().find(name);
    return it == s->counters().end() ? 0 : it->second;
  }

  /// Waits until every node of `names` lists exactly `names` as linked.
  void expect_linked(const std::set<std::string>& names,
                     std::chrono::seconds limit = 20s) {
    for (auto& name : names)
      EXPECT_TRUE(eventually(limit, [&] {
        return connected_members(node(name)) == names;
      })) << name << " does not see every member of the set linked";
  }

  /// Sends `count` keyed messages to `topic` through node(from)'s door and
  /// checks that each is consumed exactly once through node(to)'s door by
  /// group `group`; the topic's partitions have homes `homes`.
  void send_and_consume(size_t from, size_t to, const std::string& topic,
                        const std::string& group, int count,
                        const std::set<std::string>& homes) {
    auto cf = connect(node(from));
    ASSERT_TRUE(cf) << render(cf.error());
    ASSERT_TRUE(client::admin::create_topic(*cf, topic, 6));
    {
      client::producer p{*cf};
      for (int i = 0; i < count; ++i) {
        client::message m;
        m.topic = topic;
        m.key = "k" + std::to_string(i);
        m.body = topic + "-" + std::to_string(i);
        auto r = p.send(m);
        ASSERT_TRUE(r) << render(r.error());
      }
    }
    auto other = connect(node((from + 1) % node_count()));
    ASSERT_TRUE(other) << render(other.error());
    auto d = client::admin::describe_topic(*other, topic);
    ASSERT_TRUE(d) << render(d.error());
    std::set<std::string> seen_homes;
    uint64_t stored = 0;
    for (auto& p : d->partitions()) {
      seen_homes.insert(p.home());
      stored += p.end_offset();
    }
    EXPECT_EQ(seen_homes, homes);
    EXPECT_EQ(stored, static_cast<uint64_t>(count));
    auto ct = connect(node(to));
    ASSERT_TRUE(ct) << render(ct.error());
    std::mutex mtx;
    std::map<std::string, int> seen;
    client::consumer_options co;
    co.group = group;
    co.topic = topic;
    auto cons = client::consumer::start(*ct, co, [&](const client::received& r) {
      std::lock_guard<std::mutex> guard{mtx};
      ++seen[r.msg.body];
      return client::consume_result::success;
    });
    ASSERT_TRUE(cons) << render(cons.error());
    EXPECT_TRUE(eventually(20s, [&] {
      std::lock_guard<std::mutex> guard{mtx};
      return seen.size() == static_cast<size_t>(count);
    })) << "consumed " << seen.size() << " of " << count;
    (*cons)->stop();
    std::lock_guard<std::mutex> guard{mtx};
    for (auto& [body, n] : seen)
      EXPECT_EQ(n, 1) << body << " delivered " << n << " times";
  }

  const std::set<std::string> all3{"n1", "n2", "n3"};
};

TEST_F(ClusterDoorTest, DataSentThroughOneDoorIsStoredOnEveryHomeAndConsumedThroughAnother) {
  clients_over_door_ = true;
  start_nodes(3);
  expect_linked(all3);
  send_and_consume(1, 0, "orders", "billing", 30, all3);
}

TEST_F(ClusterDoorTest, NodesLinkOverMutualTlsStayLinkedAndRelinkAfterAKill) {
  ASSERT_TRUE(make_certs(root()));
  clients_over_door_ = true;
  node_options o;
  o.settings = tls();
  start_nodes(3, o);
  expect_linked(all3);
  send_and_consume(1, 0, "orders", "billing", 30, all3);
  // Over TLS each pair has one connection, made by the node of the
  // smaller id: no link dropped while the nodes ran.
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(counter(i, "cluster.link_drops"), 0u)
      << node(i).name << " saw links drop";
  // n1 makes both of its links, n3 takes both of its: kill -9 each in
  // turn; every link comes back and data still crosses them. Only the
  // links to the killed node drop (a dead TLS peer once made CAF drop every
  // other TLS link of the node too: openssl_errors.cpp).
  ASSERT_TRUE(restart(node(0)));
  expect_linked(all3, 30s);
  send_and_consume(0, 2, "payments", "audit", 30, all3);
  EXPECT_EQ(counter(1, "cluster.link_drops"), 1u);
  EXPECT_EQ(counter(2, "cluster.link_drops"), 1u);
  ASSERT_TRUE(restart(node(2)));
  expect_linked(all3, 30s);
  send_and_consume(2, 1, "refunds", "audit", 30, all3);
  EXPECT_EQ(counter(0, "cluster.link_drops"), 1u);
  EXPECT_EQ(counter(1, "cluster.link_drops"), 2u);
  auto s = status_of(node(1));
  ASSERT_TRUE(s);
  for (auto& m : s->members())
    EXPECT_TRUE(m.connected()) << m.node_id() << ": " << m.link_error();
}

TEST_F(ClusterDoorTest, ANodeWithoutTheClustersCertificateIsNeverLinked) {
  ASSERT_TRUE(make_certs(root()));
  clients_over_door_ = true;
  node_options o;
  o.settings = tls();
  start_nodes(2, o); // n1, n2
  expect_linked({"n1", "n2"});
  // n3 has a certificate the CA did not sign; n4 no TLS at all.
  node_options rogue;
  rogue.settings = tls("rogue");
  add_node(rogue);
  add_node({});
  ASSERT_TRUE(eventually(15s, [&] {
    auto s = status_of(node(0));
    return s && s->members_size() == 4;
  }));
  // A few link attempts later, still only n1 and n2 are linked.
  std::this_thread::sleep_for(3s);
  for (size_t i = 0; i < 2; ++i)
    EXPECT_EQ(connected_members(node(i)),
              (std::set<std::string>{"n1", "n2"}));
  auto s = status_of(node(0));
  ASSERT_TRUE(s);
  for (auto& m : s->members()) {
    if (m.node_id() == "n3") {
      EXPECT_FALSE(m.connected());
      EXPECT_NE(m.link_error().find("cannot connect to"), std::string::npos)
        << m.link_error();
    }
    if (m.node_id() == "n4") {
      EXPECT_FALSE(m.connected());
      EXPECT_NE(m.link_error().find("the node port of n4 is not behind mutual "
                                    "TLS and this node's is"),
                std::string::npos)
        << m.link_error();
    }
  }
  auto s4 = status_of(node(3));
  ASSERT_TRUE(s4);
  for (auto& m : s4->members()) {
    if (!m.self()) {
      EXPECT_FALSE(m.connected()) << "n4 linked to " << m.node_id();
    }
  }
  // n1 and n2 kept their link while n1 failed its TLS handshakes with n3
  // every few seconds (a failed handshake once left OpenSSL errors that
  // made CAF drop the node's other TLS links: openssl_errors.cpp).
  EXPECT_EQ(counter(0, "cluster.link_drops"), 0u);
  EXPECT_EQ(counter(1, "cluster.link_drops"), 0u);
  // The rogue node's own view: no member linked.
  EXPECT_EQ(connected_members(node(2)), (std::set<std::string>{"n3"}));
  EXPECT_GE(counter(0, "cluster.peers_refused"), 1u); // n4
  // The rogue node waits for n1 and n2 to link, and says what to check.
  auto s3 = status_of(node(2));
  ASSERT_TRUE(s3);
  for (auto& m : s3->members()) {
    if (m.node_id() != "n1" && m.node_id() != "n2")
      continue;
    EXPECT_NE(m.link_error().find("must be signed by the other's "
                                    "network.tls_ca"),
              std::string::npos)
      << m.link_error();
  }
  // n1 says once, in its log, why it has no link to n3.
  auto log = read_file(node(0).process()->log_path);
  EXPECT_NE(log.find("no link to n3: cannot connect to"), std::string::npos)
    << log;
  // n3, which took the handshakes, says so too, with OpenSSL's reason, and
  // counts them. (The address is the peer's as the handshake began; a
  // peer that reset the connection even before that is "an unknown peer".)
  auto log3 = read_file(node(2).process()->log_path);
  EXPECT_TRUE(log3.find("refused a TLS connection from 127.0.0.1:")
                != std::string::npos
              || log3.find("refused a TLS connection from an unknown peer")
                   != std::string::npos)
    << log3;
  EXPECT_GE(counter(2, "network.tls_refused"), 1u);
}

TEST_F(ClusterDoorTest, ATlsNodeThatRejoinsWithoutItsConnectionsDroppingIsLinkedAgain) {
  // n1 makes both of its links. Cut from etcd, it is fenced and the others
  // drop it from their views (and their links to it) while its TLS
  // connections stay up; it rejoins with a new incarnation and says hello
  // again: the others take the link anew.
  ASSERT_TRUE(make_certs(root()));
  clients_over_door_ = true;
  node_options o1;
  o1.settings = tls();
  o1.etcd_via_relay = true;
  add_node(o1);
  node_options o;
  o.settings = tls();
  start_nodes(2, o);
  expect_linked(all3);
  auto before = status_of(node(0));
  ASSERT_TRUE(before);
  node(0).etcd_relay->cut();
  ASSERT_TRUE(eventually(10s, [&] {
    auto s = status_of(node(1));
    return s && s->members_size() == 2;
  })) << "n2 did not drop n1";
  node(0).etcd_relay->restore();
  ASSERT_TRUE(eventually(15s, [&] {
    auto s = status_of(node(0));
    return s && !s->fenced() && s->incarnation() > before->incarnation()
           && s->members_size() == 3;
  })) << "n1 did not rejoin";
  expect_linked(all3, 20s);
  send_and_consume(1, 0, "after-rejoin", "billing", 30, all3);
}

} // namespace
} // namespace edda::test
