// broker::assign_sticky: balanced shares, and the fewest partitions moved
// when members join or leave (a moved partition redelivers what its old
// member had not acknowledged).
#include "broker/assignment.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

using edda::broker::assign_sticky;
using owners = std::vector<std::string>;

namespace {

/// Partitions held by each member.
std::map<std::string, size_t> loads(const owners& o) {
  std::map<std::string, size_t> out;
  for (auto& m : o)
    out[m]++;
  return out;
}

/// Partitions whose owner differs between `a` and `b`.
size_t moved(const owners& a, const owners& b) {
  size_t n = 0;
  for (size_t p = 0; p < a.size(); ++p)
    n += a[p] != b[p] ? 1 : 0;
  return n;
}

/// Every partition has one of `members`, and each member holds
/// floor(n/m) or ceil(n/m).
void expect_balanced(const owners& o, const std::vector<std::string>& members) {
  std::set<std::string> ms(members.begin(), members.end());
  auto load = loads(o);
  auto lo = o.size() / ms.size();
  auto hi = lo + (o.size() % ms.size() != 0 ? 1 : 0);
  for (auto& m : ms) {
    EXPECT_GE(load[m], lo) << m;
    EXPECT_LE(load[m], hi) << m;
  }
  for (auto& m : o)
    EXPECT_EQ(ms.count(m), 1u) << "partition owned by '" << m << "'";
}

} // namespace

TEST(AssignmentTest, FirstAssignmentIsContiguousBalancedRanges) {
  EXPECT_EQ(assign_sticky(owners(5), {"b", "a"}),
            (owners{"a", "a", "a", "b", "b"}));
  EXPECT_EQ(assign_sticky(owners(4), {"a", "b", "c", "d"}),
            (owners{"a", "b", "c", "d"}));
  for (size_t parts = 1; parts < 40; ++parts)
    for (size_t n = 1; n < 12; ++n) {
      std::vector<std::string> members;
      for (size_t i = 0; i < n; ++i)
        members.push_back("m" + std::to_string(100 + i));
      auto o = assign_sticky(owners(parts), members);
      ASSERT_EQ(o.size(), parts);
      expect_balanced(o, members);
      EXPECT_TRUE(std::is_sorted(o.begin(), o.end())) << parts << "/" << n;
    }
  EXPECT_EQ(assign_sticky(owners(3), {}), owners(3)) << "no members: nobody";
  EXPECT_TRUE(assign_sticky({}, {"a"}).empty());
}

TEST(AssignmentTest, AJoiningMemberTakesTheFewestPartitionsAllFromTheOthers) {
  auto before = assign_sticky(owners(12), {"a", "b", "c"});
  auto after = assign_sticky(before, {"a", "b", "c", "d"});
  expect_balanced(after, {"a", "b", "c", "d"});
  EXPECT_EQ(moved(before, after), 3u) << "d's share, and nothing else";
  for (size_t p = 0; p < 12; ++p) {
    if (after[p] != before[p]) {
      EXPECT_EQ(after[p], "d") << "partition " << p;
    }
  }
  // Each old member gives up its highest partitions.
  EXPECT_EQ(after, (owners{"a", "a", "a", "d", "b", "b", "b", "d", "c", "c",
                           "c", "d"}));

  // Uneven shares: 10 over {a, b, c} is 4, 3, 3; with d, two must move
  // (d's floor share) and the larger shares stay with a and b.
  before = assign_sticky(owners(10), {"a", "b", "c"});
  after = assign_sticky(before, {"a", "b", "c", "d"});
  expect_balanced(after, {"a", "b", "c", "d"});
  EXPECT_EQ(moved(before, after), 2u);
  EXPECT_EQ(loads(after)["d"], 2u);
}

TEST(AssignmentTest, ALeavingMemberMovesOnlyItsOwnPartitions) {
  auto before = assign_sticky(owners(12), {"a", "b", "c", "d"});
  auto after = assign_sticky(before, {"a", "b", "d"});
  expect_balanced(after, {"a", "b", "d"});
  for (size_t p = 0; p < 12; ++p) {
    if (before[p] == "c")
      EXPECT_NE(after[p], "c") << "partition " << p;
    else
      EXPECT_EQ(after[p], before[p]) << "partition " << p << " moved";
  }
  // A member that left and came back is a new member: nothing is owed to it.
  auto back = assign_sticky(after, {"a", "b", "c", "d"});
  expect_balanced(back, {"a", "b", "c", "d"});
  EXPECT_EQ(moved(after, back), 3u);
}

TEST(AssignmentTest, MoreMembersThanPartitionsLeavesTheExtraMembersIdle) {
  auto o = assign_sticky(owners(2), {"a", "b", "c"});
  EXPECT_EQ(o, (owners{"a", "b"}));
  // A newcomer takes nothing from members holding one partition each.
  EXPECT_EQ(assign_sticky(o, {"a", "b", "c", "d"}), o);
  // a leaves: its partition goes to an idle member, b keeps its own.
  auto after = assign_sticky(o, {"b", "c", "d"});
  EXPECT_EQ(after[1], "b");
  EXPECT_TRUE(after[0] == "c" || after[0] == "d") << after[0];
}

TEST(AssignmentTest, NewPartitionsGoToTheMembersBelowTheirShare) {
  auto before = assign_sticky(owners(4), {"a", "b"});
  auto grown = before;
  grown.resize(8); // the topic was altered to 8 partitions
  auto after = assign_sticky(grown, {"a", "b"});
  expect_balanced(after, {"a", "b"});
  for (size_t p = 0; p < 4; ++p)
    EXPECT_EQ(after[p], before[p]) << "partition " << p << " moved";
}

TEST(AssignmentTest, RandomJoinsAndLeavesStayBalancedAndMoveOnlyWhatMust) {
  std::mt19937 rng{20240611};
  for (int run = 0; run < 20; ++run) {
    auto n = std::uniform_int_distribution<size_t>{1, 40}(rng);
    std::vector<std::string> members;
    owners cur(n);
    int next_id = 0;
    for (int step = 0; step < 200; ++step) {
      // One to three joins or leaves at once (a debounced burst).
      auto changes = std::uniform_int_distribution<int>{1, 3}(rng);
      for (int c = 0; c < changes; ++c) {
        bool join = members.empty()
                    || std::uniform_int_distribution<int>{0, 1}(rng) == 0;
        if (join && members.size() < 50) {
          members.push_back("c" + std::to_string(next_id++));
        } else if (!members.empty()) {
          auto i
            = std::uniform_int_distribution<size_t>{0, members.size() - 1}(rng);
          members.erase(members.begin() + static_cast<ptrdiff_t>(i));
        }
      }
      auto shuffled = members;
      std::shuffle(shuffled.begin(), shuffled.end(), rng);
      auto next = assign_sticky(cur, shuffled);
      ASSERT_EQ(next, assign_sticky(cur, members))
        << "the order of the members changes nothing";
      if (members.empty()) {
        EXPECT_EQ(next, owners(n));
        cur = next;
        continue;
      }
      expect_balanced(next, members);
      // The fewest moves: each member can keep at most floor(n/m) of what
      // it held, and n % m of them one more.
      auto lo = n / members.size();
      auto extra = n % members.size();
      auto held = loads(cur);
      size_t can_keep = 0, above = 0;
      for (auto& m : members) {
        can_keep += std::min(held[m], lo);
        above += held[m] > lo ? 1 : 0;
      }
      can_keep += std::min(extra, above);
      EXPECT_EQ(moved(cur, next), n - can_keep)
        << "run " << run << " step " << step;
      // Nobody both gives and takes.
      std::set<std::string> gave, took;
      for (size_t p = 0; p < n; ++p)
        if (cur[p] != next[p]) {
          gave.insert(cur[p]);
          took.insert(next[p]);
        }
      for (auto& m : took)
        EXPECT_EQ(gave.count(m), 0u) << m << " gave and took";
      cur = next;
    }
  }
}
