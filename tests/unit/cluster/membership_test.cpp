// cluster::membership on the in-memory coordination store: joining, a node id
// taken twice, a restart clearing its previous life, fencing on the
// monotonic clock and on an expired lease, rejoining with a new
// incarnation, and views following other members. The membership's clock
// and the store's are both driven by the test (no sleeps, no thread).
#include "cluster/membership.hpp"
#include "coord/fake.hpp"

#include "base/errc.hpp"

#include <gtest/gtest.h>

#include <mutex>

namespace edda::cluster {
namespace {

using namespace std::chrono_literals;
using ms = std::chrono::milliseconds;

struct manual_clock {
  steady_time t{std::chrono::hours(1)};
  std::function<steady_time()> fn() {
    return [this] { return t; };
  }
};

class MembershipTest : public ::testing::Test {
protected:
  coord::fake_store store;
  manual_clock clock;
  std::mutex mtx;
  std::vector<membership_view> views;
  std::vector<std::pair<coord::lease_id, uint64_t>> persisted;

  membership_options options(const std::string& id) {
    membership_options o;
    o.cluster_name = "c1";
    o.node_id = id;
    o.endpoint = "127.0.0.1:70" + id.substr(1);
    o.ttl = 4000ms;
    o.now = clock.fn();
    o.run_thread = false;
    o.persist = [this](coord::lease_id l, uint64_t inc) {
      std::lock_guard<std::mutex> guard{mtx};
      persisted.emplace_back(l, inc);
      return caf::error{};
    };
    o.on_view = [this](const membership_view& v) {
      std::lock_guard<std::mutex> guard{mtx};
      views.push_back(v);
    };
    return o;
  }

  /// Both clocks move together (the store's decides lease expiry).
  void advance(ms d) {
    clock.t += d;
    store.advance(d);
  }

  std::optional<coord::key_value> member_key(const std::string& id) {
    auto c = store.connect();
    auto r = c->get("/edda/c1/members/" + id);
    EXPECT_TRUE(r) << render(r.error());
    return r ? r->first : std::nullopt;
  }

  std::vector<std::string> ids(const membership_view& v) {
    std::vector<std::string> out;
    for (auto& m : v.members)
      out.push_back(m.node_id);
    return out;
  }
};

TEST_F(MembershipTest, JoinPutsTheMemberKeyUnderItsPersistedLease) {
  auto m = membership::join(store.connect(), options("n1"));
  ASSERT_TRUE(m) << render(m.error());
  auto kv = member_key("n1");
  ASSERT_TRUE(kv);
  auto v = (*m)->view();
  EXPECT_EQ(kv->lease, v.lease);
  ASSERT_EQ(persisted.size(), 1u);
  EXPECT_EQ(persisted[0].first, v.lease) << "the lease is persisted";
  EXPECT_EQ(persisted[0].second, 1u) << "first incarnation";
  EXPECT_EQ(ids(v), std::vector<std::string>{"n1"});
  EXPECT_EQ(v.members[0].endpoint, "127.0.0.1:701");
  EXPECT_FALSE(v.fenced);
  EXPECT_TRUE((*m)->lease_valid());
}

TEST_F(MembershipTest, PersistRunsBeforeTheKeyIsWritten) {
  auto o = options("n1");
  bool key_absent_at_persist = false;
  o.persist = [&](coord::lease_id, uint64_t) {
    key_absent_at_persist = !member_key("n1").has_value();
    return caf::error{};
  };
  auto m = membership::join(store.connect(), o);
  ASSERT_TRUE(m);
  EXPECT_TRUE(key_absent_at_persist);
  // A failing persist stops the join: nothing is written under a lease the
  // node could not have found again after a crash.
  auto o2 = options("n2");
  o2.persist = [](coord::lease_id, uint64_t) {
    return make_error(errc::storage_full, "disk full");
  };
  auto m2 = membership::join(store.connect(), o2);
  ASSERT_FALSE(m2);
  EXPECT_EQ(code_of(m2.error()), errc::storage_full);
  EXPECT_FALSE(member_key("n2"));
}

TEST_F(MembershipTest, ASecondLiveNodeWithTheSameIdIsRefused) {
  auto a = membership::join(store.connect(), options("n1"));
  ASSERT_TRUE(a);
  auto o = options("n1");
  o.endpoint = "127.0.0.1:7999";
  auto b = membership::join(store.connect(), o);
  ASSERT_FALSE(b);
  EXPECT_EQ(code_of(b.error()), errc::bad_config);
  EXPECT_NE(render(b.error()).find("already a live member"),
            std::string::npos)
    << render(b.error());
  EXPECT_NE(render(b.error()).find("127.0.0.1:701"), std::string::npos)
    << "names where the holder is: " << render(b.error());
  EXPECT_EQ(member_key("n1")->lease, (*a)->view().lease)
    << "the live node keeps its key";
}

TEST_F(MembershipTest, ARestartedNodeClearsItsPreviousLifeAtOnce) {
  coord::lease_id old_lease = 0;
  {
    auto c = store.connect();
    auto first = membership::join(c, options("n1"));
    ASSERT_TRUE(first);
    old_lease = (*first)->view().lease;
    // kill -9: nothing is revoked, the lease would live on for its TTL.
    // Cut off from the store, the old node's leave() cannot revoke either.
    store.cut(c, true);
  }
  ASSERT_TRUE(member_key("n1"));
  auto o = options("n1");
  o.previous_lease = old_lease;
  o.previous_incarnation = 1;
  auto again = membership::join(store.connect(), o);
  ASSERT_TRUE(again) << render(again.error());
  auto v = (*again)->view();
  EXPECT_NE(v.lease, old_lease);
  EXPECT_EQ(v.incarnation, 2u);
  EXPECT_EQ(member_key("n1")->lease, v.lease);
  auto c = store.connect();
  EXPECT_EQ(code_of(c->keepalive(old_lease).error()), errc::not_found)
    << "the previous life's lease is revoked, not left to expire";
}

TEST_F(MembershipTest, NoRenewalForThreeQuartersOfTheTtlFencesAndRejoins) {
  auto c = store.connect();
  auto m = membership::join(c, options("n1"));
  ASSERT_TRUE(m);
  auto first_lease = (*m)->view().lease;
  // Renewals succeed while etcd answers.
  for (int i = 0; i < 8; ++i) {
    advance(1000ms);
    (*m)->tick();
  }
  EXPECT_FALSE((*m)->view().fenced);
  EXPECT_EQ((*m)->view().lease, first_lease);
  // etcd unreachable: renewals fail; at 3/4 of the TTL the node fences,
  // before etcd could expire the lease (a TTL after the last renewal).
  store.cut(c, true);
  advance(1000ms);
  (*m)->tick();
  advance(1000ms);
  (*m)->tick();
  EXPECT_FALSE((*m)->view().fenced) << "2 s of 4: not yet";
  EXPECT_TRUE((*m)->lease_valid());
  advance(1000ms);
  (*m)->tick();
  EXPECT_TRUE((*m)->view().fenced) << "3 s of 4: fenced";
  EXPECT_FALSE((*m)->lease_valid());
  EXPECT_TRUE(member_key("n1")) << "etcd still has the key: the fence came "
                                   "first";
  // etcd back: the node rejoins with a new lease and incarnation.
  store.cut(c, false);
  advance(1000ms);
  (*m)->tick();
  auto v = (*m)->view();
  EXPECT_FALSE(v.fenced);
  EXPECT_TRUE((*m)->lease_valid());
  EXPECT_NE(v.lease, first_lease);
  EXPECT_EQ(v.incarnation, 2u);
  EXPECT_EQ(member_key("n1")->lease, v.lease);
  ASSERT_EQ(persisted.size(), 2u);
  EXPECT_EQ(persisted[1].first, v.lease);
}

TEST_F(MembershipTest, AClockJumpAsAfterSigcontFencesAtTheNextTick) {
  auto m = membership::join(store.connect(), options("n1"));
  ASSERT_TRUE(m);
  EXPECT_TRUE((*m)->lease_valid());
  // The process was stopped for 10 s: the monotonic clock moved on; etcd
  // expired the lease meanwhile.
  advance(10000ms);
  EXPECT_FALSE((*m)->lease_valid())
    << "a duty checking right after SIGCONT is refused, before any tick";
  (*m)->tick(); // fences, then rejoins at once: etcd answers
  auto v = (*m)->view();
  EXPECT_EQ(v.incarnation, 2u);
  bool saw_fence = false;
  {
    std::lock_guard<std::mutex> guard{mtx};
    for (auto& x : views)
      saw_fence = saw_fence || x.fenced;
  }
  EXPECT_TRUE(saw_fence) << "the fence was announced before the rejoin";
}

TEST_F(MembershipTest, AnExpiredLeaseFencesEvenIfTheClockSaysOtherwise) {
  auto c = store.connect();
  auto m = membership::join(c, options("n1"));
  ASSERT_TRUE(m);
  // Only the store's clock moves (its lease expired), the node's has not.
  store.advance(5000ms);
  EXPECT_FALSE(member_key("n1"));
  clock.t += 1100ms; // a renewal is due
  (*m)->tick();
  // etcd said not_found: fenced, then the next due tick rejoins.
  clock.t += 1100ms;
  (*m)->tick();
  auto v = (*m)->view();
  EXPECT_FALSE(v.fenced);
  EXPECT_EQ(v.incarnation, 2u);
  EXPECT_TRUE(member_key("n1"));
}

TEST_F(MembershipTest, ViewsFollowOtherMembersJoiningAndLeaving) {
  auto a = membership::join(store.connect(), options("n1"));
  ASSERT_TRUE(a);
  {
    auto b = membership::join(store.connect(), options("n2"));
    ASSERT_TRUE(b);
    auto until = std::chrono::steady_clock::now() + 5s;
    while (ids((*a)->view()).size() < 2
           && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(5ms);
    EXPECT_EQ(ids((*a)->view()), (std::vector<std::string>{"n1", "n2"}));
  } // b leaves: its lease is revoked, its key goes at once
  auto until = std::chrono::steady_clock::now() + 5s;
  while (ids((*a)->view()).size() > 1
         && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(ids((*a)->view()), std::vector<std::string>{"n1"});
}

} // namespace
} // namespace edda::cluster
