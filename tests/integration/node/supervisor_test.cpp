// Integration tests of the node supervisor (runtime/node/supervisor.hpp): a
// real embedded node (real actors, real LMDB in a temp dir) and clients over
// TCP. Each test crashes one service (its current actor gets an exit with
// exit_reason::kill) while a client works, and checks that the node keeps
// serving: produce and consume go on, nothing acknowledged is lost, the
// restart counter went up.
//
// Waits are polls with deadlines; a sleep only ever proves that something
// did NOT happen within a window. EDDA_TEST_LOG=warn (or info, debug) shows
// the node's log lines (the restarts).
#include "base/errc.hpp"
#include "base/metrics.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/consumer.hpp"
#include "client/idempotency.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "client/types.hpp"
#include "config/settings.hpp"
#include "node/embedded_node.hpp"
#include "sagas/saga.hpp"

#include <caf/actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace ch = std::chrono;
namespace admin = edda::client::admin;
namespace pb = edda::wire::v1;
using namespace std::chrono_literals;
using edda::errc;
using edda::client::connection;
using edda::client::consume_result;
using edda::client::consumer;
using edda::client::consumer_options;
using edda::client::message;
using edda::client::producer;
using edda::client::received;
using edda::client::transaction_producer;
using edda::client::txn_outcome;
using edda::sagas::saga_definition;
using edda::sagas::step_request;
using edda::sagas::step_result;
using steady = ch::steady_clock;

/// These tests reach the node's gateway on the node port (CAF's BASP).
edda::client::connect_options node_port_options() {
  edda::client::connect_options o;
  o.door = false;
  return o;
}

template <class Pred>
bool wait_until(Pred pred, ch::milliseconds timeout = 15s) {
  auto deadline = steady::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (steady::now() >= deadline)
      return pred();
    std::this_thread::sleep_for(5ms);
  }
}

uint64_t restarts(const std::string& service) {
  return edda::metrics::counter("node.restarts." + service).load();
}

message msg(const std::string& topic, std::string body, std::string key = {}) {
  message m;
  m.topic = topic;
  m.body = std::move(body);
  m.key = std::move(key);
  return m;
}

/// A client at work: one thread produces to `topic` (one message in flight,
/// each with a unique body, errors tolerated and counted) and a consumer of
/// group "workers" records what it receives.
class traffic {
public:
  traffic(const connection& c, std::string topic) : topic_(std::move(topic)) {
    consumer_options o;
    o.group = "workers";
    o.topic = topic_;
    o.client_id = "worker-1";
    auto cons = consumer::start(c, o, handler());
    if (!cons)
      throw std::runtime_error("consumer: " + edda::render(cons.error()));
    consumer_ = std::move(*cons);
    producer_ = std::make_unique<producer>(c);
    thread_ = std::thread([this] { run(); });
  }

  ~traffic() {
    stop();
  }

  /// A handler that records what it receives (for more members).
  edda::client::handler handler() {
    return [this](const received& r) {
      std::lock_guard<std::mutex> guard{mtx_};
      received_.insert(r.msg.body);
      return consume_result::success;
    };
  }

  void stop() {
    stop_ = true;
    if (thread_.joinable())
      thread_.join();
  }

  size_t acked() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return acked_.size();
  }
  size_t errors() const {
    return errors_.load();
  }
  size_t received_count() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return received_.size();
  }

  /// Acknowledged messages the consumer has not received (yet).
  std::vector<std::string> missing() const {
    std::lock_guard<std::mutex> guard{mtx_};
    std::vector<std::string> out;
    for (auto& b : acked_)
      if (received_.count(b) == 0)
        out.push_back(b);
    return out;
  }

  /// True once the consumer received every body in `want`.
  bool has_all(const std::set<std::string>& want) const {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& b : want)
      if (received_.count(b) == 0)
        return false;
    return true;
  }

  /// Waits until `n` more messages were acknowledged and received.
  bool progress(size_t n, ch::milliseconds timeout = 20s) {
    auto a = acked();
    auto r = received_count();
    return wait_until(
      [&] { return acked() >= a + n && received_count() >= r + n; }, timeout);
  }

  consumer& cons() {
    return *consumer_;
  }

private:
  void run() {
    for (int i = 0; !stop_; ++i) {
      auto body = "m-" + std::to_string(i);
      auto r = producer_->send(msg(topic_, body, "k" + std::to_string(i % 7)));
      if (r) {
        std::lock_guard<std::mutex> guard{mtx_};
        acked_.insert(body);
      } else {
        ++errors_;
        std::this_thread::sleep_for(20ms);
      }
      std::this_thread::sleep_for(2ms);
    }
  }

  std::string topic_;
  mutable std::mutex mtx_;
  std::set<std::string> acked_;
  std::set<std::string> received_;
  std::atomic<size_t> errors_{0};
  std::atomic<bool> stop_{false};
  std::unique_ptr<consumer> consumer_;
  std::unique_ptr<producer> producer_;
  std::thread thread_;
};

class Supervision : public ::testing::Test {
protected:
  void SetUp() override {
    char tmpl[] = "/tmp/edda-super-it-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    settings_.data_dir = dir_ + "/data";
    settings_.listen_host = "127.0.0.1";
    settings_.listen_port = 0;
    settings_.mode = edda::config::durability::nosync;
    settings_.map_size = 128ull << 20;
    settings_.log_level
      = std::getenv("EDDA_TEST_LOG") ? std::getenv("EDDA_TEST_LOG") : "error";
    settings_.saga_shards = 2;
  }

  void TearDown() override {
    conn_.reset();
    if (node_)
      node_->stop();
    node_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  /// A saga of one step that needs the topic manager: a reliable message
  /// to topic "vouchers".
  static saga_definition voucher_saga() {
    saga_definition d("voucher");
    d.step(
       "order", [](const step_request&) { return step_result::success(); },
       [](const step_request&) { return step_result::success(); })
      .message_step("voucher", [](const step_request& r) {
        edda::sagas::outgoing_message m;
        m.topic = "vouchers";
        m.body = "voucher for " + r.saga_id;
        return m;
      });
    return d;
  }

  void start_node() {
    edda::node::start_options o;
    o.sagas.push_back(voucher_saga());
    o.on_fatal = [this](const caf::error&) {
      fatal_calls_++;
    };
    auto n = edda::node::embedded_node::start(settings_, o);
    ASSERT_TRUE(n) << edda::render(n.error());
    node_ = std::move(*n);
    port_ = node_->port();
    ASSERT_NE(port_, 0);
    auto c = connection::open("127.0.0.1", port_, node_port_options());
    ASSERT_TRUE(c) << edda::render(c.error());
    conn_ = std::move(*c);
  }

  /// Stops the current actor of `service` with `reason` (by default
  /// exit_reason::kill) and waits until its keeper has started a new one
  /// (and counted the restart).
  [[nodiscard]] bool crash(const std::string& service,
                           caf::error reason = {}) {
    auto before = restarts(service);
    auto old = node_->incarnation(service);
    if (!old) {
      ADD_FAILURE() << service << " has no current actor";
      return false;
    }
    if (reason)
      caf::anon_send(old, caf::exit_msg{caf::actor_addr{}, std::move(reason)});
    else
      caf::anon_send_exit(old, caf::exit_reason::kill);
    bool back = wait_until([&] {
      auto now = node_->incarnation(service);
      return now && now != old;
    });
    EXPECT_TRUE(back) << service << " was not started again";
    EXPECT_TRUE(wait_until([&] { return restarts(service) == before + 1; }))
      << "node.restarts." << service << " is " << restarts(service) << ", was "
      << before;
    return back;
  }

  /// Checks that every acknowledged message of `t` was received.
  static void expect_nothing_lost(traffic& t) {
    t.stop();
    EXPECT_TRUE(wait_until([&] { return t.missing().empty(); }))
      << t.missing().size() << " acknowledged messages never arrived, e.g. "
      << t.missing().front();
  }

  std::string dir_;
  edda::config::node_settings settings_;
  std::unique_ptr<edda::node::embedded_node> node_;
  uint16_t port_ = 0;
  std::optional<connection> conn_;
  std::atomic<int> fatal_calls_{0};
};

// -- one test per service -----------------------------------------------------

TEST_F(Supervision,
       GatewayRestartIsInvisibleToConnectedClientsAndTheSamePortServesNewOnes) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  ASSERT_TRUE(admin::create_topic(*conn_, "orders", 2));
  auto local = node_->connect();
  traffic t(*conn_, "orders");
  ASSERT_TRUE(t.progress(20));
  ASSERT_TRUE(crash("gateway"));
  // The connection made before the crash (over TCP) goes on...
  EXPECT_TRUE(t.progress(50)) << t.errors() << " errors";
  EXPECT_EQ(t.cons().counters().reconnects, 0u)
    << "the published actor never went away";
  // ...an in-process one too...
  auto listed = admin::list_topics(local);
  EXPECT_TRUE(listed) << edda::render(listed.error());
  // ...and a new client reaches the new gateway on the same port.
  EXPECT_EQ(node_->port(), port_);
  auto fresh = connection::open("127.0.0.1", port_, node_port_options());
  ASSERT_TRUE(fresh) << edda::render(fresh.error());
  producer p(*fresh);
  auto r = p.send(msg("orders", "through a new connection"));
  EXPECT_TRUE(r) << edda::render(r.error());
  auto status = admin::node_status(*fresh);
  ASSERT_TRUE(status) << edda::render(status.error());
  EXPECT_GE(status->counters().at("node.restarts.gateway"), 1u);
  expect_nothing_lost(t);
}

TEST_F(Supervision,
       TopicManagerRestartRespawnsPartitionsAndConsumersGetTheirCursorsBack) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  ASSERT_TRUE(admin::create_topic(*conn_, "orders", 3));
  ASSERT_TRUE(admin::create_topic(*conn_, "vouchers", 1));
  traffic t(*conn_, "orders");
  ASSERT_TRUE(t.progress(20));
  ASSERT_TRUE(crash("topics"));
  // Produce and consume go on: the consumer's cursors were reassigned on
  // the new partitions (the groups refetched their routes).
  EXPECT_TRUE(t.progress(50)) << t.errors() << " errors";
  auto info = admin::describe_topic(*conn_, "orders");
  ASSERT_TRUE(info) << edda::render(info.error());
  EXPECT_EQ(info->meta().partitions(), 3u);
  // The sagas hold the topics too: a reliable message step still appends.
  auto s = admin::saga_start(*conn_, "voucher", "v-1", "{}", 10s);
  ASSERT_TRUE(s) << edda::render(s.error());
  EXPECT_EQ(static_cast<edda::sagas::saga_state>(s->record().state()),
            edda::sagas::saga_state::completed)
    << s->record().reason();
  auto vouchers = admin::describe_topic(*conn_, "vouchers");
  ASSERT_TRUE(vouchers);
  ASSERT_EQ(vouchers->partitions_size(), 1);
  EXPECT_EQ(vouchers->partitions(0).end_offset(), 1u);
  expect_nothing_lost(t);
}

TEST_F(Supervision, GroupManagerRestartKeepsItsMembersAndTakesNewOnes) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  ASSERT_TRUE(admin::create_topic(*conn_, "orders", 4));
  traffic t(*conn_, "orders");
  ASSERT_TRUE(t.progress(20));
  ASSERT_TRUE(crash("groups"));
  EXPECT_TRUE(t.progress(50)) << t.errors() << " errors";
  // The new manager knows the member from before (its keeper gave the
  // subscription again) and a member that joins now: they share the work.
  std::atomic<int> second_got{0};
  consumer_options o;
  o.group = "workers";
  o.topic = "orders";
  o.client_id = "worker-2";
  auto c2
    = consumer::start(*conn_, o, [&, record = t.handler()](const received& r) {
        second_got++;
        return record(r);
      });
  ASSERT_TRUE(c2) << edda::render(c2.error());
  EXPECT_TRUE(wait_until([&] {
    auto g = admin::list_groups(*conn_);
    if (!g)
      return false;
    for (auto& info : g->groups())
      if (info.group() == "workers")
        return info.members_size() == 2;
    return false;
  }))
    << "the group does not have both members";
  EXPECT_TRUE(wait_until([&] { return second_got.load() > 0; }))
    << "the new member got no partition";
  EXPECT_TRUE(t.progress(50)) << t.errors() << " errors";
  (*c2)->stop();
  expect_nothing_lost(t);
}

TEST_F(Supervision, TxnCoordinatorRestartKeepsRegisteredProducersForCheckBack) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  ASSERT_TRUE(admin::create_topic(*conn_, "payments", 2));
  std::atomic<int> checks{0};
  edda::client::txn_producer_options o;
  o.group = "wallet";
  o.check_after_ms = 300;
  auto tp = transaction_producer::start(*conn_, o,
                                        [&](const edda::client::txn_check&) {
                                          checks++;
                                          return txn_outcome::commit;
                                        });
  ASSERT_TRUE(tp) << edda::render(tp.error());
  auto commit = [](const message&, const std::string&) {
    return txn_outcome::commit;
  };
  auto before = (*tp)->send_in_transaction(msg("payments", "before"), commit);
  ASSERT_TRUE(before) << edda::render(before.error());
  EXPECT_TRUE(before->ended);
  traffic t(*conn_, "payments");
  ASSERT_TRUE(t.progress(10));
  ASSERT_TRUE(crash("txn"));
  // A transactional send works after the restart...
  auto after = (*tp)->send_in_transaction(msg("payments", "after"), commit);
  ASSERT_TRUE(after) << edda::render(after.error());
  EXPECT_TRUE(after->ended) << edda::render(after->end_error);
  ASSERT_TRUE(after->stored);
  // ...and one left open is checked back with the producer, which did not
  // register again (its connection never broke): the new coordinator knows
  // it from the keeper.
  auto open = (*tp)->send_in_transaction(
    msg("payments", "checked back"),
    [](const message&, const std::string&) { return txn_outcome::unknown; });
  ASSERT_TRUE(open) << edda::render(open.error());
  EXPECT_FALSE(open->ended);
  EXPECT_TRUE(wait_until([&] { return checks.load() > 0; }))
    << "no check-back reached the producer";
  EXPECT_TRUE(wait_until([&] {
    auto r = admin::txn_show(*conn_, open->txn_id);
    return r && r->state() == pb::TxnRecord::COMMITTED;
  }))
    << "the transaction was not committed by its check-back";
  EXPECT_TRUE(wait_until([&] { return t.has_all({"checked back"}); }))
    << "the message committed by check-back did not arrive";
  EXPECT_TRUE(t.progress(20));
  expect_nothing_lost(t);
}

TEST_F(Supervision, DedupRestartRemembersProcessedKeys) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  ASSERT_TRUE(admin::create_topic(*conn_, "orders", 1));
  edda::client::idempotency idem(*conn_, "payments");
  ASSERT_FALSE(idem.mark("pay-1", "ok"));
  traffic t(*conn_, "orders");
  ASSERT_TRUE(crash("dedup"));
  auto done = idem.done("pay-1");
  ASSERT_TRUE(done) << edda::render(done.error());
  EXPECT_TRUE(*done) << "a key marked before the restart is forgotten";
  EXPECT_FALSE(idem.mark("pay-2", "ok"));
  auto done2 = idem.done("pay-2");
  ASSERT_TRUE(done2);
  EXPECT_TRUE(*done2);
  EXPECT_TRUE(t.progress(20));
  expect_nothing_lost(t);
}

TEST_F(Supervision, SchedulerRestartStillDeliversDelayedMessagesOnTime) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  ASSERT_TRUE(admin::create_topic(*conn_, "later", 1));
  traffic t(*conn_, "later");
  ASSERT_TRUE(t.progress(10));
  producer p(*conn_);
  auto at = [](ch::milliseconds d) {
    return ch::duration_cast<ch::milliseconds>(
             ch::system_clock::now().time_since_epoch() + d)
      .count();
  };
  auto early = msg("later", "delayed before the crash");
  early.deliver_at_ms = at(1500ms);
  ASSERT_TRUE(p.send(early));
  ASSERT_TRUE(crash("scheduler"));
  // A delay added after the restart reaches the new scheduler (partitions
  // hold the scheduler's keeper).
  auto late = msg("later", "delayed after the crash");
  late.deliver_at_ms = at(500ms);
  ASSERT_TRUE(p.send(late));
  EXPECT_TRUE(t.progress(10));
  // Both delayed messages arrive (the consumer records every body).
  std::set<std::string> want{"delayed before the crash",
                             "delayed after the crash"};
  EXPECT_TRUE(wait_until([&] { return t.has_all(want); }, 10s))
    << "a delayed message did not arrive";
  expect_nothing_lost(t);
}

TEST_F(Supervision, AServiceStoppedWithAnErrorOfItsOwnIsRestartedToo) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  ASSERT_TRUE(admin::create_topic(*conn_, "orders", 2));
  traffic t(*conn_, "orders");
  ASSERT_TRUE(t.progress(10));
  // The topic and group managers trap exits (for their partitions and
  // coordinators) and quit with the reason; the others just die.
  for (auto s : {"topics", "groups", "dedup"})
    ASSERT_TRUE(crash(s, edda::make_error(errc::storage_error, "boom")))
      << s;
  // A produce in flight when its partition died is answered at once (the
  // promise's actor ended), not after the producer's 30 s timeout.
  EXPECT_TRUE(t.progress(30)) << t.errors() << " errors, " << t.acked()
                              << " acked, " << t.received_count()
                              << " received";
  expect_nothing_lost(t);
}

// -- backoff, stop, the writer ------------------------------------------------

TEST_F(Supervision, ACrashLoopBacksOffInsteadOfSpinning) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  auto before = restarts("dedup");
  // Kill each new incarnation as soon as it is there: the pauses between a
  // crash and the next start double (200, 400, 800, 1600 ms).
  std::vector<int64_t> pauses;
  auto current = node_->incarnation("dedup");
  ASSERT_TRUE(current);
  for (int i = 0; i < 4; ++i) {
    auto killed_at = steady::now();
    caf::anon_send_exit(current, caf::exit_reason::kill);
    auto old = current;
    ASSERT_TRUE(wait_until([&] {
      current = node_->incarnation("dedup");
      return current && current != old;
    }));
    pauses.push_back(
      ch::duration_cast<ch::milliseconds>(steady::now() - killed_at).count());
  }
  EXPECT_EQ(restarts("dedup"), before + 4);
  int64_t expected = 200;
  for (auto p : pauses) {
    EXPECT_GE(p, expected * 9 / 10)
      << "pauses: " << ::testing::PrintToString(pauses);
    EXPECT_LT(p, expected * 3 + 1000)
      << "pauses: " << ::testing::PrintToString(pauses);
    expected *= 2;
  }
  // While it waits, a request fails at once (it does not hang).
  caf::anon_send_exit(current, caf::exit_reason::kill);
  ASSERT_TRUE(wait_until([&] { return !node_->incarnation("dedup"); }));
  edda::client::idempotency idem(*conn_, "s");
  auto t0 = steady::now();
  auto r = idem.done("k");
  EXPECT_FALSE(r);
  if (!r) {
    EXPECT_EQ(edda::code_of(r.error()), errc::unavailable)
      << edda::render(r.error());
  }
  EXPECT_LT(ch::duration_cast<ch::milliseconds>(steady::now() - t0).count(),
            1000);
  // The node stops at once during a pause (3.2 s now).
  t0 = steady::now();
  conn_.reset();
  node_->stop();
  EXPECT_LT(ch::duration_cast<ch::milliseconds>(steady::now() - t0).count(),
            3000);
}

TEST_F(Supervision, StopRightAfterACrashDoesNotHang) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  ASSERT_TRUE(admin::create_topic(*conn_, "orders", 2));
  {
    traffic t(*conn_, "orders");
    ASSERT_TRUE(t.progress(10));
    for (auto s : {"topics", "groups", "txn", "gateway", "scheduler", "dedup"})
      caf::anon_send_exit(node_->incarnation(s), caf::exit_reason::kill);
    t.stop();
  }
  conn_.reset();
  auto t0 = steady::now();
  node_->stop();
  EXPECT_LT(ch::duration_cast<ch::milliseconds>(steady::now() - t0).count(),
            5000);
  EXPECT_FALSE(node_->failure());
  EXPECT_EQ(fatal_calls_.load(), 0);
}

TEST_F(Supervision, WriterDeathStopsTheNodeLoudlyAndLosesNothingAcknowledged) {
  ASSERT_NO_FATAL_FAILURE(start_node());
  ASSERT_TRUE(admin::create_topic(*conn_, "orders", 2));
  auto fatal_before = edda::metrics::counter("node.fatal").load();
  size_t acked = 0;
  {
    traffic t(*conn_, "orders");
    ASSERT_TRUE(t.progress(30));
    auto writer = node_->incarnation("writer");
    ASSERT_TRUE(writer);
    caf::anon_send_exit(writer, caf::exit_reason::kill);
    ASSERT_TRUE(wait_until([&] { return fatal_calls_.load() == 1; }))
      << "on_fatal was not called";
    t.stop();
    acked = t.acked();
  }
  EXPECT_TRUE(node_->failure());
  EXPECT_EQ(edda::metrics::counter("node.fatal").load(), fatal_before + 1);
  // Every service went with it: a client call fails (does not hang).
  auto t0 = steady::now();
  auto r = admin::list_topics(*conn_);
  EXPECT_FALSE(r);
  EXPECT_LT(ch::duration_cast<ch::milliseconds>(steady::now() - t0).count(),
            10000);
  conn_.reset();
  t0 = steady::now();
  node_->stop();
  EXPECT_LT(ch::duration_cast<ch::milliseconds>(steady::now() - t0).count(),
            5000);
  EXPECT_EQ(fatal_calls_.load(), 1);
  node_.reset();
  // Started again on the same data: everything acknowledged is there.
  ASSERT_NO_FATAL_FAILURE(start_node());
  auto info = admin::describe_topic(*conn_, "orders");
  ASSERT_TRUE(info) << edda::render(info.error());
  uint64_t stored = 0;
  for (auto& p : info->partitions())
    stored += p.end_offset();
  EXPECT_GE(stored, acked);
  EXPECT_FALSE(node_->failure());
}

} // namespace
