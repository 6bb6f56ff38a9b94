// coord::fake_store: the behavioural checks every coord::client passes
// (checks.hpp, also run on a real etcd by tests/cluster/coord), plus what
// only the fake can show: lease expiry on its manual clock, cut clients,
// compaction on demand.
#include "checks.hpp"
#include "coord/fake.hpp"

#include <gtest/gtest.h>

namespace edda::coord {
namespace {

using namespace std::chrono_literals;
using checks::recorder;

class fake_test : public ::testing::Test {
protected:
  fake_store store;
  client_ptr c = store.connect();
};

TEST_F(fake_test, revisions_and_cas) {
  EXPECT_EQ(store.revision(), 1) << "a new store is at revision 1, as etcd";
  checks::revisions_and_cas(*c, "/t/");
}

TEST_F(fake_test, guarded_cas) {
  checks::guarded_cas(*c, "/t/");
}

TEST_F(fake_test, prefix_listing) {
  checks::prefix_listing(*c, "/t/");
}

TEST_F(fake_test, two_clients_race_for_a_key_and_exactly_one_wins) {
  checks::cas_race(store.connect(), store.connect(), "/race/", 2000);
}

TEST_F(fake_test, lease_revoke_deletes_its_keys_in_one_revision) {
  checks::lease_revoke(*c, "/t/");
}

TEST_F(fake_test, watch_from_a_past_revision_replays_the_later_events) {
  checks::watch_replay(*c, "/t/");
}

TEST_F(fake_test, watch_sees_many_events_in_order) {
  checks::watch_many_events(*c, "/t/", 1000);
}

TEST_F(fake_test, watch_cancel_stops_callbacks) {
  checks::watch_cancel(*c, "/t/");
}

TEST_F(fake_test, invalid_arguments_are_refused) {
  checks::invalid_arguments(*c, "/t/");
}

TEST_F(fake_test, compacted_watch_fails_with_compacted) {
  checks::compacted_watch(*c, "/t/",
                          [this](int64_t rev) { store.compact(rev); });
}

TEST_F(fake_test, lease_expiry_deletes_bound_keys_seen_by_a_watch) {
  recorder rec;
  EDDA_ASSIGN_OR_FAIL(w, c->watch_prefix("/t/", 0, rec.handlers()));
  EDDA_ASSIGN_OR_FAIL(id, c->grant(2s));
  EDDA_ASSIGN_OR_FAIL(other, c->grant(10s));
  ASSERT_TRUE(c->cas_put("/t/a", "1", 0, id)->succeeded);
  ASSERT_TRUE(c->cas_put("/t/b", "1", 0, id)->succeeded);
  ASSERT_TRUE(c->cas_put("/t/c", "1", 0, other)->succeeded);
  ASSERT_TRUE(rec.wait_for_events(3));
  auto before = store.revision();

  store.advance(1999ms);
  EXPECT_EQ(store.revision(), before);
  EXPECT_TRUE(c->get("/t/a")->first);
  store.advance(1ms);
  EXPECT_EQ(store.revision(), before + 1) << "one revision for the expiry";
  EXPECT_FALSE(c->get("/t/a")->first);
  EXPECT_FALSE(c->get("/t/b")->first);
  EXPECT_TRUE(c->get("/t/c")->first);
  ASSERT_TRUE(rec.wait_for_events(5));
  auto evs = rec.events();
  for (size_t i = 3; i < 5; ++i) {
    EXPECT_EQ(evs[i].type, watch_event::kind::del);
    EXPECT_EQ(evs[i].kv.mod_revision, before + 1);
  }
  auto ka = c->keepalive(id);
  ASSERT_FALSE(ka);
  EXPECT_EQ(code_of(ka.error()), errc::not_found);
  EXPECT_EQ(code_of(c->revoke(id)), errc::not_found);

  // A lease without keys expires without a revision.
  EDDA_ASSIGN_OR_FAIL(empty, c->grant(1s));
  store.advance(10s); // `other` expires too: one revision, for /t/c
  EXPECT_EQ(store.revision(), before + 2);
  EXPECT_EQ(code_of(c->keepalive(empty).error()), errc::not_found);
}

TEST_F(fake_test, keepalive_keeps_a_lease_alive_across_advance) {
  EDDA_ASSIGN_OR_FAIL(id, c->grant(2s));
  ASSERT_TRUE(c->cas_put("/t/a", "1", 0, id)->succeeded);
  for (int i = 0; i < 10; ++i) {
    store.advance(1500ms);
    EDDA_ASSIGN_OR_FAIL(ttl, c->keepalive(id));
    EXPECT_EQ(ttl, 2s);
  }
  EXPECT_TRUE(c->get("/t/a")->first);
  store.advance(2s);
  EXPECT_FALSE(c->get("/t/a")->first);
}

TEST_F(fake_test, a_put_moves_a_key_between_leases) {
  EDDA_ASSIGN_OR_FAIL(l1, c->grant(2s));
  EDDA_ASSIGN_OR_FAIL(l2, c->grant(5s));
  EDDA_ASSIGN_OR_FAIL(p1, c->cas_put("/t/a", "1", 0, l1));
  ASSERT_TRUE(c->cas_put("/t/a", "2", p1.revision, l2)->succeeded);
  store.advance(3s); // l1 expires: the key is no longer its
  EDDA_ASSIGN_OR_FAIL(g, c->get("/t/a"));
  ASSERT_TRUE(g.first);
  EXPECT_EQ(g.first->lease, l2);
  store.advance(2s);
  EXPECT_FALSE(c->get("/t/a")->first);
}

TEST_F(fake_test, cut_client_fails_with_unavailable_and_its_watch_ends) {
  auto other = store.connect();
  recorder rec;
  recorder others;
  EDDA_ASSIGN_OR_FAIL(w, c->watch_prefix("/t/", 0, rec.handlers()));
  EDDA_ASSIGN_OR_FAIL(ow, other->watch_prefix("/t/", 0, others.handlers()));
  EDDA_ASSIGN_OR_FAIL(id, c->grant(2s));
  ASSERT_TRUE(c->cas_put("/t/a", "1", 0, id)->succeeded);
  ASSERT_TRUE(rec.wait_for_events(1));

  store.cut(c, true);
  ASSERT_TRUE(rec.wait_for_error());
  EXPECT_EQ(code_of(rec.error()), errc::unavailable) << render(rec.error());
  auto code = [](const auto& x) {
    return x ? errc::none : code_of(x.error());
  };
  EXPECT_EQ(code(c->get("/t/a")), errc::unavailable);
  EXPECT_EQ(code(c->get_prefix("/t/")), errc::unavailable);
  EXPECT_EQ(code(c->cas_put("/t/b", "1", 0)), errc::unavailable);
  EXPECT_EQ(code(c->cas_delete("/t/a", 0)), errc::unavailable);
  EXPECT_EQ(code(c->grant(2s)), errc::unavailable);
  EXPECT_EQ(code(c->keepalive(id)), errc::unavailable);
  EXPECT_EQ(code_of(c->revoke(id)), errc::unavailable);
  EXPECT_EQ(code(c->watch_prefix("/t/", 0, {})), errc::unavailable);

  // The store goes on: the cut client's lease runs out, others see it.
  store.advance(2s);
  ASSERT_TRUE(others.wait_for_events(2));
  EXPECT_EQ(others.events()[1].type, watch_event::kind::del);
  EXPECT_FALSE(others.ended());
  EXPECT_EQ(rec.events().size(), 1u);

  store.cut(c, false);
  EDDA_ASSIGN_OR_FAIL(g, c->get("/t/a"));
  EXPECT_FALSE(g.first);
}

TEST_F(fake_test, store_may_go_before_its_clients) {
  auto s = std::make_unique<fake_store>();
  auto c2 = s->connect();
  recorder rec;
  EDDA_ASSIGN_OR_FAIL(w, c2->watch_prefix("/t/", 0, rec.handlers()));
  s.reset();
  EXPECT_TRUE(c2->cas_put("/t/a", "1", 0)->succeeded);
  EXPECT_TRUE(rec.wait_for_events(1));
}

TEST_F(fake_test, watch_from_the_future_and_from_zero) {
  recorder now;
  recorder later;
  EDDA_ASSIGN_OR_FAIL(w0, c->watch_prefix("/t/", 0, now.handlers()));
  auto r = store.revision();
  EDDA_ASSIGN_OR_FAIL(w1, c->watch_prefix("/t/", r + 2, later.handlers()));
  checks::put(*c, "/t/a", "1");
  checks::put(*c, "/t/a", "2");
  ASSERT_TRUE(now.wait_for_events(2));
  ASSERT_TRUE(later.wait_for_events(1));
  EXPECT_EQ(later.events().size(), 1u);
  EXPECT_EQ(later.events()[0].kv.value, "2");
}

} // namespace
} // namespace edda::coord
