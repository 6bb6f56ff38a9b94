// A cluster as services in any language use it: every client over the
// nodes' client doors (edda.api.v1). Data sent through one node's door is
// stored on every partition's home and consumed through another's; a node
// asked for mutual TLS in a cluster is refused with a clear error.
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "cluster_fixture.hpp"
#include "support/certs.hpp"

#include <map>
#include <mutex>
#include <set>

namespace edda::test {
namespace {

using namespace std::chrono_literals;

class ClusterDoorTest : public ClusterFixture {};

TEST_F(ClusterDoorTest, DataSentThroughOneDoorIsStoredOnEveryHomeAndConsumedThroughAnother) {
  clients_over_door_ = true;
  start_nodes(3);
  for (size_t i = 0; i < 3; ++i)
    ASSERT_TRUE(eventually(15s, [&] {
      return connected_members(node(i))
             == std::set<std::string>{"n1", "n2", "n3"};
    })) << node(i).name << " does not see every member linked";
  auto c2 = connect(node(1));
  ASSERT_TRUE(c2) << render(c2.error());
  ASSERT_TRUE(client::admin::create_topic(*c2, "orders", 6));
  {
    client::producer p{*c2};
    for (int i = 0; i < 30; ++i) {
      client::message m;
      m.topic = "orders";
      m.key = "k" + std::to_string(i);
      m.body = "m" + std::to_string(i);
      auto r = p.send(m);
      ASSERT_TRUE(r) << render(r.error());
    }
  }
  auto c3 = connect(node(2));
  ASSERT_TRUE(c3) << render(c3.error());
  auto d = client::admin::describe_topic(*c3, "orders");
  ASSERT_TRUE(d) << render(d.error());
  std::set<std::string> homes;
  uint64_t stored = 0;
  for (auto& p : d->partitions()) {
    homes.insert(p.home());
    stored += p.end_offset();
  }
  EXPECT_EQ(homes, (std::set<std::string>{"n1", "n2", "n3"}));
  EXPECT_EQ(stored, 30u);
  // Consumed through n1's door: every message once.
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1) << render(c1.error());
  std::mutex mtx;
  std::map<std::string, int> seen;
  client::consumer_options co;
  co.group = "billing";
  co.topic = "orders";
  auto cons = client::consumer::start(*c1, co, [&](const client::received& r) {
    std::lock_guard<std::mutex> guard{mtx};
    ++seen[r.msg.body];
    return client::consume_result::success;
  });
  ASSERT_TRUE(cons) << render(cons.error());
  ASSERT_TRUE(eventually(20s, [&] {
    std::lock_guard<std::mutex> guard{mtx};
    return seen.size() == 30;
  }));
  (*cons)->stop();
  std::lock_guard<std::mutex> guard{mtx};
  for (auto& [body, n] : seen)
    EXPECT_EQ(n, 1) << body << " delivered " << n << " times";
}

TEST_F(ClusterDoorTest, MutualTlsInAClusterIsRefusedWithAClearError) {
  ASSERT_TRUE(make_certs(root()));
  node_options o;
  o.settings = {"network.tls_certificate=" + root() + "/node.pem",
                "network.tls_key=" + root() + "/node.key",
                "network.tls_ca=" + root() + "/ca.pem"};
  auto [code, out] = run_until_exit(o, root() + "/tls-node");
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("bad_config"), std::string::npos) << out;
  EXPECT_NE(out.find("network.tls_* with cluster.etcd"), std::string::npos)
    << out;
}

} // namespace
} // namespace edda::test
