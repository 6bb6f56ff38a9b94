// Pure functions of the broker: tag expressions, key encoding, placement
// (partition assignment: assignment_test.cpp).
#include "base/errc.hpp"
#include "broker/tag_expression.hpp"
#include "cluster/placement.hpp"
#include "storage/keys.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

using namespace edda;
using broker::tag_expression;

TEST(TagExpressionTest, StarAndEmptyMatchEverythingIncludingUntagged) {
  for (auto text : {"*", "", "  *  "}) {
    auto e = tag_expression::parse(text);
    ASSERT_TRUE(e) << text;
    EXPECT_TRUE(e->matches({}));
    EXPECT_TRUE(e->matches({"TagZ"}));
    EXPECT_EQ(e->to_string(), "*");
  }
}

TEST(TagExpressionTest, OrOfTagsSelectsExactlyThoseTags) {
  auto e = tag_expression::parse(" TagA ||TagC ");
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->matches({"TagA"}));
  EXPECT_TRUE(e->matches({"TagC"}));
  EXPECT_TRUE(e->matches({"TagB", "TagC"}));
  EXPECT_FALSE(e->matches({"TagB"}));
  EXPECT_FALSE(e->matches({}));
  EXPECT_FALSE(e->matches({"taga"})) << "tags are case-sensitive";
  EXPECT_EQ(e->to_string(), "TagA || TagC");
}

TEST(TagExpressionTest, MalformedExpressionsAreRejectedWithPosition) {
  for (auto text : {"TagA &&", "||", "TagA ||", "Tag A", "*x", "TagA | TagB",
                    "(TagA)"}) {
    auto e = tag_expression::parse(text);
    ASSERT_FALSE(e) << text;
    EXPECT_EQ(code_of(e.error()), errc::invalid_tag_expression) << text;
    EXPECT_NE(render(e.error()).find("position"), std::string::npos) << text;
  }
  EXPECT_FALSE(tag_expression::parse(std::string(65, 'a')));
}

TEST(KeysTest, LogKeysSortNumericallyAndRoundTrip) {
  auto a = storage::keys::log_key(1, 2, 255);
  auto b = storage::keys::log_key(1, 2, 256);
  auto c = storage::keys::log_key(1, 3, 0);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(storage::keys::log_key_offset(b), 256u);
  EXPECT_EQ(a.substr(0, 8), storage::keys::log_prefix(1, 2));
  auto d1 = storage::keys::delay_key(1000, "g", "m1");
  auto d2 = storage::keys::delay_key(999, "z", "m2");
  EXPECT_LT(d2, d1) << "delay keys order by due time first";
  EXPECT_EQ(storage::keys::delay_key_due(d1), 1000u);
}

TEST(PlacementTest, OwnerIsStableAndMovesOnlyFromRemovedMember) {
  auto members = node_ids({"n1", "n2", "n3"});
  std::map<std::string, node_id> before;
  for (int i = 0; i < 300; ++i) {
    auto r = "orders/" + std::to_string(i);
    before[r] = cluster::owner_of(r, members);
    EXPECT_EQ(before[r], cluster::owner_of(r, node_ids({"n3", "n1", "n2"})));
  }
  auto fewer = node_ids({"n1", "n3"});
  for (auto& [r, owner] : before) {
    if (owner != node_id{"n2"}) {
      EXPECT_EQ(cluster::owner_of(r, fewer), owner) << r;
    }
  }
  EXPECT_EQ(cluster::owner_of("x", {}).value(), "");
}

TEST(PlacementTest, RankedStartsWithTheOwnerAndIsTheSameForEveryOrder) {
  std::map<std::string, int> firsts;
  for (int i = 0; i < 60; ++i) {
    auto r = "replicas/n" + std::to_string(i);
    auto a = cluster::ranked(r, node_ids({"n1", "n2", "n3", "n4"}));
    ASSERT_EQ(a.size(), 4u);
    EXPECT_EQ(a.front(), cluster::owner_of(r, node_ids({"n1", "n2", "n3",
                                                         "n4"})));
    EXPECT_EQ(a, cluster::ranked(r, node_ids({"n4", "n2", "n1", "n3"})));
    std::set<node_id> distinct(a.begin(), a.end());
    EXPECT_EQ(distinct.size(), 4u);
    ++firsts[a.front().value()];
    // Without a member, the others keep their order.
    auto without = cluster::ranked(r, node_ids({"n1", "n2", "n4"}));
    std::vector<node_id> expected;
    for (auto& m : a)
      if (m != node_id{"n3"})
        expected.push_back(m);
    EXPECT_EQ(without, expected);
  }
  EXPECT_EQ(firsts.size(), 4u) << "every member comes first for some";
  EXPECT_TRUE(cluster::ranked("x", {}).empty());
}

TEST(PlacementTest, NewPartitionsGoToTheLeastLoadedMembersAndEveryNodeAgrees) {
  auto members = node_ids({"n1", "n2", "n3"});
  auto homes = cluster::place_partitions("orders", 0, 6, members, {});
  ASSERT_EQ(homes.size(), 6u);
  std::map<std::string, int> per;
  for (auto& h : homes)
    ++per[h.value()];
  EXPECT_EQ(per, (std::map<std::string, int>{{"n1", 2}, {"n2", 2}, {"n3", 2}}));
  // Same answer whatever the order of the member list.
  EXPECT_EQ(cluster::place_partitions("orders", 0, 6,
                                      node_ids({"n3", "n1", "n2"}), {}),
            homes);
  // A loaded node gets nothing until the others have caught up.
  node_id n1{"n1"}, n2{"n2"}, n3{"n3"};
  auto more = cluster::place_partitions("pay", 0, 3, members,
                                        {{n1, 5}, {n2, 2}, {n3, 2}});
  EXPECT_EQ(std::count(more.begin(), more.end(), n1), 0) << more[0].value();
  // Partitions added to a topic (alter) start at `first`.
  auto added = cluster::place_partitions("orders", 6, 2, members,
                                         {{n1, 2}, {n2, 2}, {n3, 1}});
  ASSERT_EQ(added.size(), 2u);
  EXPECT_EQ(added[0], n3);
  EXPECT_TRUE(cluster::place_partitions("x", 0, 2, {}, {}).empty());
}

TEST(PlacementTest, OwnersOfSimilarNamesSpreadEvenlyOverSimilarNodes) {
  // Names like "saga/pay-30", "saga/pay-31" and nodes "n1", "n2", "n3"
  // differ in a character: the rendezvous weights must still spread them.
  std::map<std::string, int> per;
  for (int i = 0; i < 3000; ++i)
    ++per[cluster::owner_of("saga/pay-" + std::to_string(i),
                            node_ids({"n1", "n2", "n3"}))
              .value()];
  ASSERT_EQ(per.size(), 3u);
  for (auto& [node, n] : per) {
    EXPECT_GT(n, 800) << node;
    EXPECT_LT(n, 1200) << node;
  }
}
