// cluster::owner_table on the in-memory coordination store: two nodes that
// each believe they should coordinate a group (their membership views have
// not seen each other yet) race to claim owners/group/<g>. Exactly one wins;
// the loser is told who holds it; when the winner's lease goes, the winner
// is told it lost the group and the other claims it with a higher fencing
// token. The tables are real (detached) actors; the test waits on their
// answers with deadlines.
#include "cluster/owner_table.hpp"
#include "coord/fake.hpp"
#include "wire/types.hpp"

#include "base/errc.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/after.hpp>
#include <caf/scoped_actor.hpp>

#include <gtest/gtest.h>

#include <deque>
#include <memory>

namespace edda::cluster {
namespace {

namespace pb = wire::pb;
using namespace std::chrono_literals;

struct test_config : caf::actor_system_config {
  test_config() {
    wire::register_types(*this);
  }
};

class OwnerTableTest : public ::testing::Test {
protected:
  struct node {
    std::string id;
    coord::client_ptr client;
    coord::lease_id lease = 0;
    caf::actor table;
    std::unique_ptr<caf::scoped_actor> inbox; ///< told of lost resources
  };

  ~OwnerTableTest() override {
    for (auto& n : nodes_)
      caf::anon_send_exit(n.table, caf::exit_reason::user_shutdown);
  }

  /// A node whose owner table sees only itself as a live member.
  node& start(const std::string& id) {
    auto& n = nodes_.emplace_back();
    n.id = id;
    n.client = store_.connect();
    auto lease = n.client->grant(10s);
    EXPECT_TRUE(lease) << render(lease.error());
    n.lease = lease ? *lease : 0;
    n.inbox = std::make_unique<caf::scoped_actor>(sys_);
    owner_table_options o;
    o.store = n.client;
    o.cluster_name = "c1";
    o.node_id = id;
    o.subscriber = caf::actor{*n.inbox};
    n.table = spawn_owner_table(sys_, std::move(o));
    pb::MembershipView v;
    auto* m = v.add_members();
    m->set_node_id(id);
    m->set_endpoint("127.0.0.1:70" + id.substr(1));
    v.add_leases(n.lease);
    v.set_lease_id(n.lease);
    v.set_fenced(false);
    self_->send(n.table, v);
    return n;
  }

  void ask(node& n, const std::string& resource) {
    pb::FindOwner q;
    q.set_resource(resource);
    self_->send(n.table, q);
  }

  /// The next Owner answer (any table), within 10 s.
  pb::Owner answer() {
    pb::Owner out;
    self_->receive([&](pb::Owner& o) { out = std::move(o); },
                   [&](caf::error& err) { ADD_FAILURE() << render(err); },
                   caf::after(10s) >> [] { ADD_FAILURE() << "no answer"; });
    return out;
  }

  coord::fake_store store_;
  test_config cfg_;
  caf::actor_system sys_{cfg_};
  caf::scoped_actor self_{sys_};
  std::deque<node> nodes_;
};

TEST_F(OwnerTableTest, TwoNodesRaceForAGroupOneWinsAndTheOtherTakesOverHigher) {
  auto& n1 = start("n1");
  auto& n2 = start("n2");
  ask(n1, "group/g");
  ask(n2, "group/g");
  auto x = answer();
  auto y = answer();
  ASSERT_NE(x.self(), y.self()) << "exactly one node holds the group";
  auto& win = x.self() ? x : y;
  auto& lose = x.self() ? y : x;
  EXPECT_GT(win.token(), 0u);
  EXPECT_EQ(lose.node_id(), win.node_id()) << "the loser sees the winner";
  EXPECT_EQ(lose.token(), win.token());
  auto& winner = win.node_id() == "n1" ? n1 : n2;
  auto& loser = win.node_id() == "n1" ? n2 : n1;
  ASSERT_NE(&winner, &loser);

  // The winner's lease goes (as when its node dies and the TTL runs out).
  ASSERT_FALSE(winner.client->revoke(winner.lease));
  (*winner.inbox)
    ->receive(
      [&](wire::lost_atom, const std::string& resource, uint64_t token) {
        EXPECT_EQ(resource, "group/g");
        EXPECT_EQ(token, win.token());
      },
      caf::after(10s) >> [] { ADD_FAILURE() << "the winner was not told"; });

  ask(loser, "group/g");
  auto next = answer();
  EXPECT_TRUE(next.self()) << "the other node takes the group over";
  EXPECT_EQ(next.node_id(), loser.id);
  EXPECT_GT(next.token(), win.token())
    << "a new owner's token is higher: partitions refuse the old owner";
}

} // namespace
} // namespace edda::cluster
