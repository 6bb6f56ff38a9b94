// Consumer group rebalances on the deterministic scheduler (fixture.hpp):
// debounced (membership changes within consumer.rebalance_delay make one
// generation) and sticky (a member keeps its partitions when others come
// and go). Who holds a partition is read from where its messages go.
#include "fixture.hpp"

#include "base/metrics.hpp"

using namespace edda;
using namespace edda::testing;

namespace {

namespace pb = edda::wire::pb;
using parts = std::set<uint32_t>;

class GroupRebalanceTest : public DeterministicFixture {
protected:
  static constexpr int64_t delay_ms = 300;

  GroupRebalanceTest() : DeterministicFixture(debounced()) {}

  static config::node_settings debounced() {
    auto s = settings();
    s.rebalance_delay_ms = delay_ms;
    return s;
  }

  /// The group's current generation, as ListGroups shows it.
  uint64_t generation(const std::string& group) {
    self_->send(groups_, pb::ListGroups{});
    auto list = next<pb::GroupList>(self_);
    EXPECT_TRUE(list);
    if (list)
      for (auto& g : list->groups())
        if (g.group() == group)
          return g.generation();
    ADD_FAILURE() << "no group " << group;
    return 0;
  }

  /// Partitions of topic "t" that delivered to `who`, and how many
  /// messages each.
  std::map<uint32_t, int> got(caf::scoped_actor& who) {
    std::map<uint32_t, int> out;
    for (auto& [d, p] : deliveries(who))
      if (d.topic() == "t")
        out[d.partition()] += d.messages_size();
    return out;
  }

  static parts keys(const std::map<uint32_t, int>& m) {
    parts out;
    for (auto& [k, v] : m)
      out.insert(k);
    return out;
  }

  /// `who` asks to join group g on topic t (answered once assigned).
  void join(caf::scoped_actor& who, const std::string& client) {
    who->send(frontend_, subscription("g", "t", client));
    sched_.run();
  }

  void produce_everywhere(uint32_t partitions) {
    for (uint32_t p = 0; p < partitions; ++p)
      produce("t", static_cast<int32_t>(p), 1);
  }
};

} // namespace

TEST_F(GroupRebalanceTest, MembersJoiningWithinTheWindowMakeOneGeneration) {
  create_topic("t", 6);
  produce_everywhere(6);
  caf::scoped_actor a{sys_, true};
  join(a, "a");
  EXPECT_FALSE(next<pb::Subscribed>(a)) << "answered once assigned";
  EXPECT_TRUE(got(a).empty());
  advance(delay_ms);
  ASSERT_TRUE(next<pb::Subscribed>(a)) << "the first member waits one window";
  EXPECT_EQ(keys(got(a)), (parts{0, 1, 2, 3, 4, 5}));
  auto first = generation("g");
  auto rebalances = metrics::counter("group.rebalances").load();

  // Three members join, 100 ms apart: all within b's window.
  caf::scoped_actor b{sys_, true};
  caf::scoped_actor c{sys_, true};
  caf::scoped_actor d{sys_, true};
  join(b, "b");
  advance(100);
  join(c, "c");
  advance(100);
  join(d, "d");
  advance(delay_ms - 201);
  EXPECT_EQ(generation("g"), first) << "nothing moves before the window ends";
  EXPECT_FALSE(next<pb::Subscribed>(d));
  advance(1);
  ASSERT_TRUE(next<pb::Subscribed>(b));
  ASSERT_TRUE(next<pb::Subscribed>(c));
  ASSERT_TRUE(next<pb::Subscribed>(d));
  EXPECT_EQ(generation("g"), first + 1) << "one generation for three joins";
  EXPECT_EQ(metrics::counter("group.rebalances").load(), rebalances + 1);

  // Sticky: a keeps two of its six (not redelivered: they did not move);
  // the four others move, with their unacknowledged messages, to the new
  // members only.
  EXPECT_TRUE(got(a).empty());
  auto gb = got(b), gc = got(c), gd = got(d);
  EXPECT_EQ(gb.size() + gc.size() + gd.size(), 4u);
  for (auto* g : {&gb, &gc, &gd}) {
    EXPECT_GE(g->size(), 1u);
    EXPECT_LE(g->size(), 2u);
    for (auto& [p, n] : *g)
      EXPECT_EQ(n, 1) << "partition " << p << ": its unacked message";
  }
  parts moved;
  for (auto* g : {&gb, &gc, &gd})
    for (auto& [p, n] : *g)
      moved.insert(p);
  EXPECT_EQ(moved.size(), 4u) << "each moved partition has one new owner";
  produce_everywhere(6);
  auto kept = keys(got(a));
  EXPECT_EQ(kept.size(), 2u);
  for (auto p : kept)
    EXPECT_EQ(moved.count(p), 0u) << p;
}

TEST_F(GroupRebalanceTest, WhenAMemberDiesOnlyItsPartitionsMove) {
  create_topic("t", 6);
  caf::scoped_actor a{sys_, true};
  caf::scoped_actor b{sys_, true};
  auto c = std::make_unique<caf::scoped_actor>(sys_, true);
  join(a, "a");
  join(b, "b");
  join(*c, "c");
  advance(delay_ms);
  ASSERT_TRUE(next<pb::Subscribed>(a));
  ASSERT_TRUE(next<pb::Subscribed>(b));
  ASSERT_TRUE(next<pb::Subscribed>(*c));
  auto gen = generation("g");
  produce_everywhere(6); // left unacknowledged
  auto of_a = keys(got(a));
  auto of_b = keys(got(b));
  auto of_c = keys(got(*c));
  EXPECT_EQ(of_a.size(), 2u);
  EXPECT_EQ(of_b.size(), 2u);
  EXPECT_EQ(of_c.size(), 2u);

  c.reset(); // c dies
  sched_.run();
  // Within the window, a and b go on consuming their own partitions: no
  // stop-the-world.
  produce_everywhere(6);
  EXPECT_EQ(keys(got(a)), of_a);
  EXPECT_EQ(keys(got(b)), of_b);
  advance(delay_ms);
  EXPECT_EQ(generation("g"), gen + 1);
  // c's partitions, with both its unacknowledged messages, now go to a
  // and b, one each; a and b kept theirs (nothing of theirs redelivered).
  auto ga = got(a), gb = got(b);
  ASSERT_EQ(ga.size(), 1u);
  ASSERT_EQ(gb.size(), 1u);
  EXPECT_EQ(of_c.count(ga.begin()->first), 1u);
  EXPECT_EQ(of_c.count(gb.begin()->first), 1u);
  EXPECT_NE(ga.begin()->first, gb.begin()->first);
  EXPECT_EQ(ga.begin()->second, 2);
  EXPECT_EQ(gb.begin()->second, 2);
  produce_everywhere(6);
  auto now_a = keys(got(a)), now_b = keys(got(b));
  EXPECT_EQ(now_a.size(), 3u);
  EXPECT_EQ(now_b.size(), 3u);
  for (auto p : of_a)
    EXPECT_EQ(now_a.count(p), 1u) << "a keeps partition " << p;
  for (auto p : of_b)
    EXPECT_EQ(now_b.count(p), 1u) << "b keeps partition " << p;
}

TEST_F(GroupRebalanceTest,
       ALeavingMemberGetsNothingMoreAndBackInTheWindowKeepsItsShare) {
  create_topic("t", 4);
  caf::scoped_actor a{sys_, true};
  caf::scoped_actor b{sys_, true};
  join(a, "a");
  join(b, "b");
  advance(delay_ms);
  ASSERT_TRUE(next<pb::Subscribed>(a));
  ASSERT_TRUE(next<pb::Subscribed>(b));
  auto gen = generation("g");
  produce_everywhere(4);
  auto of_a = keys(got(a));
  auto of_b = keys(got(b));
  ASSERT_EQ(of_b.size(), 2u);

  pb::Unsubscribe u;
  u.set_group("g");
  u.set_client_id("b");
  b->send(frontend_, u);
  ASSERT_TRUE(next<pb::Done>(b));
  produce_everywhere(4);
  EXPECT_TRUE(got(b).empty()) << "revoked at once, before the rebalance";
  EXPECT_EQ(keys(got(a)), of_a) << "a goes on meanwhile";

  // b subscribes again within the window: one generation, and b gets its
  // own partitions back (with what it had not acknowledged).
  advance(delay_ms / 2);
  join(b, "b");
  advance(delay_ms / 2);
  ASSERT_TRUE(next<pb::Subscribed>(b));
  EXPECT_EQ(generation("g"), gen + 1);
  EXPECT_EQ(keys(got(b)), of_b);
  EXPECT_TRUE(got(a).empty());
}
