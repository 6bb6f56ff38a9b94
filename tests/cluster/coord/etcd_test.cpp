// coord::connect_etcd against a real etcd 3.4 that each test starts on its
// own ports (etcd_process.hpp): the behavioural checks the fake passes
// (tests/unit/coord/checks.hpp), then what only a real store shows: leases
// expiring in real time, an unreachable, killed or paused etcd.
#include "checks.hpp"
#include "coord/etcd.hpp"
#include "etcd_process.hpp"
#include "relay.hpp"

#include <chrono>
#include <gtest/gtest.h>
#include <thread>

namespace edda::coord {
namespace {

using namespace std::chrono_literals;
using checks::recorder;
using steady = std::chrono::steady_clock;

class etcd_test : public ::testing::Test {
protected:
  void SetUp() override {
    auto p = test::etcd_process::start();
    ASSERT_TRUE(p) << render(p.error());
    etcd = std::move(*p);
    auto cl = connect();
    ASSERT_TRUE(cl) << render(cl.error());
    c = *cl;
  }

  caf::expected<client_ptr> connect(std::chrono::milliseconds call_timeout
                                    = 2s) {
    etcd_options opts;
    opts.endpoints = {etcd->endpoint()};
    opts.call_timeout = call_timeout;
    return connect_etcd(opts);
  }

  void compact(int64_t rev) {
    auto out = etcd->etcdctl({"compact", std::to_string(rev)});
    ASSERT_TRUE(out) << render(out.error());
  }

  std::unique_ptr<test::etcd_process> etcd;
  client_ptr c;
};

TEST_F(etcd_test, revisions_and_cas) {
  checks::revisions_and_cas(*c, "/t/");
  EXPECT_EQ(c->describe(), "etcd " + etcd->endpoint());
}

TEST_F(etcd_test, guarded_cas) {
  checks::guarded_cas(*c, "/t/");
}

TEST_F(etcd_test, prefix_listing) {
  checks::prefix_listing(*c, "/t/");
}

TEST_F(etcd_test, two_clients_race_for_a_key_and_exactly_one_wins) {
  auto a = connect();
  auto b = connect();
  ASSERT_TRUE(a && b);
  checks::cas_race(*a, *b, "/race/", 200);
}

TEST_F(etcd_test, lease_revoke_deletes_its_keys_in_one_revision) {
  checks::lease_revoke(*c, "/t/");
}

TEST_F(etcd_test, watch_from_a_past_revision_replays_the_later_events) {
  checks::watch_replay(*c, "/t/");
}

TEST_F(etcd_test, watch_sees_many_events_in_order) {
  checks::watch_many_events(*c, "/t/", 500);
}

TEST_F(etcd_test, watch_cancel_stops_callbacks) {
  checks::watch_cancel(*c, "/t/");
}

TEST_F(etcd_test, invalid_arguments_are_refused) {
  checks::invalid_arguments(*c, "/t/");
}

TEST_F(etcd_test, compacted_watch_fails_with_compacted) {
  checks::compacted_watch(*c, "/t/", [this](int64_t rev) { compact(rev); });
}

// etcd raises a TTL below its minimum, ceil(1.5 election timeouts) in whole
// seconds: 1 s with the test's 50 ms election timeout (2 s with etcd's
// default 1 s).
TEST_F(etcd_test, lease_ttl_is_raised_to_the_minimum) {
  EDDA_ASSIGN_OR_FAIL(id, c->grant(1s));
  EDDA_ASSIGN_OR_FAIL(ttl, c->keepalive(id));
  EXPECT_EQ(ttl, 1s);
}

TEST_F(etcd_test, lease_expiry_deletes_bound_keys_seen_by_a_watch) {
  recorder rec;
  EDDA_ASSIGN_OR_FAIL(w, c->watch_prefix("/t/", 0, rec.handlers()));
  EDDA_ASSIGN_OR_FAIL(id, c->grant(2s));
  auto granted = steady::now();
  ASSERT_TRUE(c->cas_put("/t/a", "1", 0, id)->succeeded);
  ASSERT_TRUE(c->cas_put("/t/b", "1", 0, id)->succeeded);
  ASSERT_TRUE(rec.wait_for_events(2));
  // No keepalive: gone within TTL + 1.5 s (etcd checks every 0.5 s).
  ASSERT_TRUE(rec.wait_for_events(4, 3500ms));
  auto took = steady::now() - granted;
  EXPECT_GE(took, 2s);
  EXPECT_LE(took, 3500ms);
  std::cout
    << "lease of 2 s expired after "
    << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
    << " ms\n";
  auto evs = rec.events();
  EXPECT_EQ(evs[2].type, watch_event::kind::del);
  EXPECT_EQ(evs[3].type, watch_event::kind::del);
  EXPECT_EQ(evs[2].kv.mod_revision, evs[3].kv.mod_revision)
    << "an expiry is one revision";
  EXPECT_FALSE(c->get("/t/a")->first);
  auto ka = c->keepalive(id);
  ASSERT_FALSE(ka);
  EXPECT_EQ(code_of(ka.error()), errc::not_found) << render(ka.error());
  EXPECT_EQ(code_of(c->revoke(id)), errc::not_found);
}

TEST_F(etcd_test, keepalive_keeps_a_2s_lease_alive_for_5s) {
  recorder rec;
  EDDA_ASSIGN_OR_FAIL(w, c->watch_prefix("/t/", 0, rec.handlers()));
  EDDA_ASSIGN_OR_FAIL(id, c->grant(2s));
  ASSERT_TRUE(c->cas_put("/t/a", "1", 0, id)->succeeded);
  auto end = steady::now() + 5s;
  while (steady::now() < end) {
    std::this_thread::sleep_for(500ms); // the keepalive period
    EDDA_ASSIGN_OR_FAIL(ttl, c->keepalive(id));
    EXPECT_EQ(ttl, 2s);
  }
  EXPECT_TRUE(c->get("/t/a")->first);
  checks::put(*c, "/t/fence", "1");
  ASSERT_TRUE(rec.wait_for_events(2));
  EXPECT_EQ(rec.events().size(), 2u) << "no delete in between";
  EXPECT_EQ(rec.events()[1].kv.key, "/t/fence");
}

TEST_F(etcd_test, nothing_listening_is_unavailable_within_the_dial_timeout) {
  auto port = test::free_port();
  ASSERT_NE(port, 0);
  etcd_options opts;
  opts.endpoints = {"http://127.0.0.1:" + std::to_string(port)};
  opts.dial_timeout = 1s;
  auto start = steady::now();
  auto r = connect_etcd(opts);
  auto took = steady::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::unavailable);
  auto text = render(r.error());
  EXPECT_NE(text.find("127.0.0.1:" + std::to_string(port)), std::string::npos)
    << text;
  EXPECT_LE(took, 1500ms);
  std::cout << text << "\n";
}

TEST_F(etcd_test, malformed_endpoints_are_refused) {
  for (auto ep : {"https://127.0.0.1:2379", "127.0.0.1",
                  "127.0.0.1:", "127.0.0.1:99999", "http://127.0.0.1:x", ""}) {
    etcd_options opts;
    opts.endpoints = {ep};
    auto r = connect_etcd(opts);
    ASSERT_FALSE(r) << ep;
    EXPECT_EQ(code_of(r.error()), errc::invalid_argument) << ep;
  }
  auto r = connect_etcd(etcd_options{});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::invalid_argument);
}

TEST_F(etcd_test, a_dead_first_endpoint_is_skipped) {
  etcd_options opts;
  opts.endpoints
    = {"127.0.0.1:" + std::to_string(test::free_port()), etcd->endpoint()};
  EDDA_ASSIGN_OR_FAIL(two, connect_etcd(opts));
  EDDA_ASSIGN_OR_FAIL(p, two->cas_put("/t/a", "1", 0));
  EXPECT_TRUE(p.succeeded);
  recorder rec;
  EDDA_ASSIGN_OR_FAIL(w, two->watch_prefix("/t/", 1, rec.handlers()));
  EXPECT_TRUE(rec.wait_for_events(1));
}

// Two independent one-member etcds stand in for two members: when the
// first dies, calls move on to the second.
TEST_F(etcd_test, a_call_moves_to_the_next_endpoint_when_one_is_down) {
  auto second = test::etcd_process::start();
  ASSERT_TRUE(second) << render(second.error());
  etcd_options opts;
  opts.endpoints = {etcd->endpoint(), (*second)->endpoint()};
  EDDA_ASSIGN_OR_FAIL(two, connect_etcd(opts));
  EXPECT_EQ(two->describe(),
            "etcd " + etcd->endpoint() + "," + (*second)->endpoint());
  ASSERT_TRUE(two->cas_put("/t/first", "1", 0)->succeeded);
  etcd->kill9();
  EDDA_ASSIGN_OR_FAIL(g, two->get("/t/first"));
  EXPECT_FALSE(g.first) << "answered by the second etcd";
  EDDA_ASSIGN_OR_FAIL(p, two->cas_put("/t/second", "1", 0));
  EXPECT_TRUE(p.succeeded);
}

TEST_F(etcd_test, killed_etcd_is_unavailable_and_ends_watches_then_returns) {
  recorder rec;
  EDDA_ASSIGN_OR_FAIL(w, c->watch_prefix("/t/", 0, rec.handlers()));
  ASSERT_TRUE(c->cas_put("/t/a", "1", 0)->succeeded);
  ASSERT_TRUE(rec.wait_for_events(1));

  etcd->kill9();
  ASSERT_TRUE(rec.wait_for_error(5s));
  EXPECT_EQ(code_of(rec.error()), errc::unavailable) << render(rec.error());
  std::cout << "watch: " << render(rec.error()) << "\n";
  auto start = steady::now();
  auto g = c->get("/t/a");
  ASSERT_FALSE(g);
  EXPECT_EQ(code_of(g.error()), errc::unavailable) << render(g.error());
  EXPECT_NE(render(g.error()).find(etcd->endpoint()), std::string::npos)
    << render(g.error());
  EXPECT_LE(steady::now() - start, 2500ms);
  std::cout << "get: " << render(g.error()) << "\n";

  // Same ports and data dir: the client reconnects, the data is there.
  ASSERT_FALSE(etcd->restart());
  auto deadline = steady::now() + 5s;
  caf::expected<std::pair<std::optional<key_value>, int64_t>> again{
    caf::error{}};
  while (!(again = c->get("/t/a")) && steady::now() < deadline)
    std::this_thread::sleep_for(20ms); // gRPC reconnects within ~1 s
  ASSERT_TRUE(again) << render(again.error());
  ASSERT_TRUE(again->first);
  EXPECT_EQ(again->first->value, "1");
}

TEST_F(etcd_test, paused_etcd_is_unreachable_then_answers_again) {
  auto slow = connect(500ms);
  ASSERT_TRUE(slow);
  etcd->pause();
  auto start = steady::now();
  auto g = (*slow)->get("/t/a");
  auto took = steady::now() - start;
  etcd->resume();
  ASSERT_FALSE(g);
  EXPECT_EQ(code_of(g.error()), errc::unavailable) << render(g.error());
  EXPECT_NE(render(g.error()).find("etcd at " + etcd->endpoint()
                                   + " unreachable: get: "),
            std::string::npos)
    << render(g.error());
  EXPECT_NE(render(g.error()).find("no answer within 500 ms"),
            std::string::npos)
    << render(g.error());
  std::cout << render(g.error()) << "\n";
  EXPECT_GE(took, 450ms);
  EXPECT_LE(took, 1500ms);
  EDDA_ASSIGN_OR_FAIL(g2, (*slow)->get("/t/a"));
  EXPECT_FALSE(g2.first);
}

// Endpoint rotation (a silent endpoint is left, not only a refusing one):
// two endpoints, the first a relay in front of the etcd that the second
// names too; cut, the relay is a blackhole (connections stay open, nothing
// answers), which only a deadline notices.
class etcd_rotation_test : public etcd_test {
protected:
  void SetUp() override {
    etcd_test::SetUp();
    auto r = test::relay::start(0, "127.0.0.1", etcd->client_port());
    ASSERT_TRUE(r) << render(r.error());
    front = std::move(*r);
  }

  caf::expected<client_ptr> connect_two() {
    etcd_options opts;
    opts.endpoints = {front->address(), etcd->endpoint()};
    opts.call_timeout = 1s;
    opts.dial_timeout = 2s;
    return connect_etcd(opts);
  }

  std::unique_ptr<test::relay> front;
};

TEST_F(etcd_rotation_test, a_silent_first_endpoint_is_skipped_at_connect) {
  front->cut();
  auto start = steady::now();
  EDDA_ASSIGN_OR_FAIL(two, connect_two());
  EXPECT_LE(steady::now() - start, 1500ms);
  EDDA_ASSIGN_OR_FAIL(p, two->cas_put("/t/a", "1", 0));
  EXPECT_TRUE(p.succeeded);
}

TEST_F(etcd_rotation_test, calls_leases_and_watches_move_on_when_one_goes_silent) {
  EDDA_ASSIGN_OR_FAIL(two, connect_two());
  EDDA_ASSIGN_OR_FAIL(id, two->grant(2s));
  ASSERT_TRUE(two->cas_put("/t/member", "1", 0, id)->succeeded);
  recorder rec;
  EDDA_ASSIGN_OR_FAIL(w, two->watch_prefix("/t/", 0, rec.handlers()));
  ASSERT_TRUE(c->cas_put("/t/x", "1", 0)->succeeded);
  ASSERT_TRUE(rec.wait_for_events(1));
  auto relayed = front->bytes_to_target();
  EXPECT_GT(relayed, 0u) << "the client did not start on the first endpoint";
  front->cut();
  // Renewals every 500 ms for 4 s (twice the TTL): each within the call
  // timeout, so the lease and its key live on the second endpoint.
  auto until = steady::now() + 4s;
  while (steady::now() < until) {
    auto t0 = steady::now();
    auto ttl = two->keepalive(id);
    ASSERT_TRUE(ttl) << render(ttl.error());
    EXPECT_LE(steady::now() - t0, 1100ms);
    std::this_thread::sleep_for(500ms);
  }
  EDDA_ASSIGN_OR_FAIL(g, c->get("/t/member"));
  EXPECT_TRUE(g.first) << "the lease expired: renewals did not move on";
  // The watch on the silent endpoint ended, saying why, so that its owner
  // watches anew; the new one is on the second endpoint and sees changes.
  ASSERT_TRUE(rec.wait_for_error(1s)) << "the watch on the cut relay goes on";
  EXPECT_EQ(code_of(rec.error()), errc::unavailable) << render(rec.error());
  EXPECT_NE(render(rec.error()).find(front->address() + " stopped answering"),
            std::string::npos)
    << render(rec.error());
  w->cancel();
  recorder rec2;
  EDDA_ASSIGN_OR_FAIL(w2, two->watch_prefix("/t/", 0, rec2.handlers()));
  ASSERT_TRUE(two->cas_put("/t/y", "1", 0)->succeeded);
  EXPECT_TRUE(rec2.wait_for_events(1));
  front->restore();
}

TEST_F(etcd_rotation_test, a_write_that_met_a_silent_endpoint_is_not_replayed) {
  EDDA_ASSIGN_OR_FAIL(two, connect_two());
  ASSERT_TRUE(two->get("/t/a"));
  front->cut();
  // Replayed on the second endpoint after the first may have applied it,
  // a create-only put would fail against itself: it fails as unreachable
  // within the call timeout (all of it: it does not go on), and says so.
  auto t0 = steady::now();
  auto p = two->cas_put("/t/a", "1", 0);
  EXPECT_LE(steady::now() - t0, 1300ms);
  ASSERT_FALSE(p);
  EXPECT_EQ(code_of(p.error()), errc::unavailable) << render(p.error());
  EXPECT_NE(render(p.error()).find("may have been applied"), std::string::npos)
    << render(p.error());
  // The next call goes to the second endpoint at once.
  t0 = steady::now();
  EDDA_ASSIGN_OR_FAIL(again, two->cas_put("/t/b", "1", 0));
  EXPECT_TRUE(again.succeeded);
  EXPECT_LE(steady::now() - t0, 300ms);
}

TEST_F(etcd_rotation_test, no_endpoint_answering_is_unreachable_naming_each) {
  EDDA_ASSIGN_OR_FAIL(two, connect_two());
  front->cut();
  etcd->pause();
  auto t0 = steady::now();
  auto g = two->get("/t/a");
  auto took = steady::now() - t0;
  etcd->resume();
  ASSERT_FALSE(g);
  auto text = render(g.error());
  EXPECT_EQ(code_of(g.error()), errc::unavailable) << text;
  EXPECT_NE(text.find("etcd at " + front->address() + "," + etcd->endpoint()
                      + " unreachable: get: "),
            std::string::npos)
    << text;
  EXPECT_NE(text.find(front->address() + ": no answer within"),
            std::string::npos)
    << text;
  // The paused one: silent, or (a new connection) no HTTP/2 settings.
  EXPECT_NE(text.find("; " + etcd->endpoint() + ": "), std::string::npos)
    << text;
  EXPECT_LE(took, 1500ms);
  std::cout << text << "\n";
}

} // namespace
} // namespace edda::coord
