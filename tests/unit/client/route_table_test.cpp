// How a client chooses a partition and where it sends it: the choice the
// node makes too (base/partition_choice.hpp) and the client's copy of the
// cluster map (client/route_table.hpp).
#include "base/partition_choice.hpp"
#include "client/route_table.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>

#include <gtest/gtest.h>

#include <set>

using namespace edda;
using client::route_table;
namespace pb = edda::wire::pb;

namespace {

/// A map from node `self` of a 3-node cluster: topic t, 6 partitions homed
/// n1,n2,n3,n1,n2,n3; `dead` homes not live.
pb::ClusterMap cluster_map(const std::string& self, int64_t revision,
                           std::set<std::string> dead = {},
                           uint32_t partitions = 6) {
  pb::ClusterMap m;
  m.set_clustered(true);
  m.set_node_id(self);
  m.set_revision(revision);
  for (auto id : {"n1", "n2", "n3"}) {
    if (dead.count(id) != 0)
      continue;
    auto* x = m.add_members();
    x->set_node_id(id);
    x->set_endpoint(std::string{"127.0.0.1:"} + (id + 1));
    x->set_self(self == id);
  }
  auto* t = m.add_topics();
  t->set_name("t");
  t->set_id(7);
  t->set_partitions(partitions);
  t->set_revision(revision);
  for (uint32_t p = 0; p < partitions; ++p) {
    std::string home = "n" + std::to_string(p % 3 + 1);
    t->add_homes(home);
    t->add_live(dead.count(home) == 0);
  }
  return m;
}

} // namespace

TEST(ChoosePartitionTest, AKeyAlwaysGetsItsOwnPartitionOrNone) {
  uint32_t turn = 0;
  auto all = [](uint32_t) { return true; };
  auto c = choose_partition("order-42", 6, turn, all);
  EXPECT_EQ(c.status, partition_choice::ok);
  EXPECT_EQ(c.partition, shard_of("order-42", 6));
  auto down = [&](uint32_t p) { return p != shard_of("order-42", 6); };
  c = choose_partition("order-42", 6, turn, down);
  EXPECT_EQ(c.status, partition_choice::home_down);
  EXPECT_EQ(c.partition, shard_of("order-42", 6)) << "never another one";
  EXPECT_EQ(turn, 0u) << "keyed sends take no turn";
}

TEST(ChoosePartitionTest, KeylessGoInTurnOverLivePartitionsOnly) {
  uint32_t turn = 0;
  auto live = [](uint32_t p) { return p % 3 != 2; }; // 2 and 5 are down
  std::vector<uint32_t> got;
  for (int i = 0; i < 8; ++i) {
    auto c = choose_partition("", 6, turn, live);
    ASSERT_EQ(c.status, partition_choice::ok);
    got.push_back(c.partition);
  }
  EXPECT_EQ(got, (std::vector<uint32_t>{0, 1, 3, 4, 0, 1, 3, 4}));
  auto none = [](uint32_t) { return false; };
  EXPECT_EQ(choose_partition("", 6, turn, none).status,
            partition_choice::none_live);
  EXPECT_EQ(choose_partition("", 0, turn, live).status,
            partition_choice::empty);
}

TEST(RouteTableTest, ASingleNodeHasNoHomesAndNothingToLink) {
  route_table rt;
  pb::ClusterMap m;
  m.set_node_id("solo");
  auto* t = m.add_topics();
  t->set_name("t");
  t->set_partitions(4);
  rt.apply(m, {"t"}, 1);
  ASSERT_NE(rt.find("t"), nullptr);
  EXPECT_FALSE(rt.clustered());
  for (uint32_t p = 0; p < 4; ++p) {
    EXPECT_TRUE(rt.usable(*rt.find("t"), p));
    EXPECT_FALSE(rt.direct(*rt.find("t"), p));
  }
  EXPECT_TRUE(rt.to_link().empty());
}

TEST(RouteTableTest, LinksLiveHomesButItsOwnNodeAndRoutesToThem) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto gw = sys.spawn([] { return caf::behavior{[](int) {}}; });
  route_table rt;
  rt.apply(cluster_map("n1", 10, {"n3"}), {"t"}, 1);
  auto* t = rt.find("t");
  ASSERT_NE(t, nullptr);
  // n1 is the client's own node (reached through the connection), n3 is
  // down: only n2 is linked.
  auto want = rt.to_link();
  ASSERT_EQ(want.size(), 1u);
  EXPECT_EQ(want[0].first, "n2");
  EXPECT_TRUE(rt.to_link().empty()) << "a link being made is not asked again";
  EXPECT_FALSE(rt.direct(*t, 1)) << "not linked yet: through the node";
  rt.linked("n2", gw);
  EXPECT_EQ(rt.direct(*t, 1), gw);
  EXPECT_EQ(rt.direct(*t, 4), gw);
  EXPECT_FALSE(rt.direct(*t, 0)) << "the client's own node";
  EXPECT_FALSE(rt.usable(*t, 2)) << "n3 is down";
  // The link drops: n2's partitions go through the node and keyless sends
  // skip them, until a map says n2 is live again.
  EXPECT_EQ(rt.down(gw.address()), "n2");
  EXPECT_FALSE(rt.usable(*t, 1));
  EXPECT_FALSE(rt.direct(*t, 1));
  rt.apply(cluster_map("n1", 11, {"n3"}), {"t"}, 2);
  EXPECT_TRUE(rt.usable(*rt.find("t"), 1));
  caf::anon_send_exit(gw, caf::exit_reason::user_shutdown);
}

TEST(RouteTableTest, AnOlderMapDoesNotUndoANewerOne) {
  route_table rt;
  rt.apply(cluster_map("n1", 20, {}, 9), {"t"}, 1);
  rt.apply(cluster_map("n2", 15, {}, 6), {"t"}, 2);
  ASSERT_NE(rt.find("t"), nullptr);
  EXPECT_EQ(rt.find("t")->partitions, 9u);
  EXPECT_EQ(rt.find("t")->revision, 20);
}

TEST(RouteTableTest, AReplyTellingOfMorePartitionsAddsThemWithoutAHome) {
  route_table rt;
  rt.apply(cluster_map("n1", 5), {"t"}, 1);
  rt.grow("t", 8);
  auto* t = rt.find("t");
  EXPECT_EQ(t->partitions, 8u);
  EXPECT_FALSE(rt.usable(*t, 7)) << "its home is not known yet";
  EXPECT_FALSE(rt.direct(*t, 7));
}

TEST(RouteTableTest, ATopicMissingFromTheAnswerIsForgotten) {
  route_table rt;
  rt.apply(cluster_map("n1", 5), {"t"}, 1);
  pb::ClusterMap none;
  none.set_clustered(true);
  none.set_node_id("n1");
  none.set_revision(6);
  rt.apply(none, {"t"}, 2);
  EXPECT_EQ(rt.find("t"), nullptr);
}
