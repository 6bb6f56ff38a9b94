// Sagas on a real embedded node (real actors, real LMDB in a temp dir),
// driven over a remote connection the way `edda saga` does: a transfer
// whose steps move money in an in-memory ledger that deduplicates by the
// idempotency key, run to completion, compensated, and resumed after the
// node restarts with a step unfinished; a reliable-message step whose
// message is on its topic exactly when the step committed; participants
// served from a participant_host over a remote connection. Each test runs
// over the node port and over the client door (edda.api.v1, gRPC).
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/consumer.hpp"
#include "node/embedded_node.hpp"
#include "sagas/remote.hpp"
#include "sagas/saga.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unistd.h>

namespace {

using namespace std::chrono_literals;
using edda::errc;
using edda::sagas::saga_definition;
using edda::sagas::saga_state;
using edda::sagas::step_options;
using edda::sagas::step_request;
using edda::sagas::step_result;
namespace admin = edda::client::admin;
namespace pb = edda::wire::v1;

/// Accounts that apply each (idempotency key, direction) at most once.
class ledger {
public:
  explicit ledger(std::map<std::string, int64_t> balances)
    : balances_(std::move(balances)) {
  }

  /// Moves `amount` into (positive) or out of `account` once per key.
  step_result apply(const step_request& r, const std::string& account,
                    int64_t amount) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto key = r.idempotency_key + (r.compensate ? "#undo" : "#do");
    keys_seen_.push_back(key);
    if (!applied_.insert(key).second)
      return step_result::success("duplicate ignored");
    if (r.compensate) {
      // Undo only what was done (an empty compensation is a no-op).
      if (applied_.count(r.idempotency_key + "#do") == 0)
        return step_result::success("nothing to undo");
      balances_[account] -= amount;
      return step_result::success();
    }
    if (balances_[account] + amount < 0) {
      applied_.erase(key);
      return step_result::failure("insufficient funds in " + account, false);
    }
    balances_[account] += amount;
    return step_result::success();
  }

  int64_t balance(const std::string& a) {
    std::lock_guard<std::mutex> guard{mtx_};
    return balances_[a];
  }

  size_t seen(const std::string& key) {
    std::lock_guard<std::mutex> guard{mtx_};
    return static_cast<size_t>(
      std::count(keys_seen_.begin(), keys_seen_.end(), key));
  }

private:
  std::mutex mtx_;
  std::map<std::string, int64_t> balances_;
  std::set<std::string> applied_;
  std::vector<std::string> keys_seen_;
};

step_options quick(uint32_t attempts = 3) {
  step_options o;
  o.retry.max_attempts = attempts;
  o.retry.initial_backoff = 50ms;
  o.retry.max_backoff = 200ms;
  o.timeout = 2000ms;
  return o;
}

/// transfer: debit `from`, credit `to` (amount 100, from the input).
saga_definition transfer(ledger& l, std::function<bool()> credit_works = {}) {
  saga_definition d("transfer");
  d.step("debit",
         [&l](const step_request& r) { return l.apply(r, "alice", -100); },
         [&l](const step_request& r) { return l.apply(r, "alice", -100); },
         quick())
    .step("credit",
          [&l, credit_works](const step_request& r) {
            if (!r.compensate && credit_works && !credit_works())
              return step_result::failure("bank b unreachable");
            return l.apply(r, "bob", 100);
          },
          [&l](const step_request& r) { return l.apply(r, "bob", 100); },
          quick(1000));
  return d;
}

class SagaIntegration : public ::testing::TestWithParam<bool> {
protected:
  void SetUp() override {
    char tmpl[] = "/tmp/edda-saga-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    settings_.data_dir = dir_ + "/data";
    settings_.listen_host = "127.0.0.1";
    settings_.listen_port = 0;
    settings_.map_size = 64ull << 20;
    settings_.log_level = "error";
    settings_.saga_shards = 3;
  }

  void TearDown() override {
    node_.reset();
    std::string cmd = "rm -rf " + dir_;
    (void) std::system(cmd.c_str());
  }

  void start_node(std::vector<saga_definition> defs) {
    edda::node::start_options o;
    o.sagas = std::move(defs);
    auto n = edda::node::embedded_node::start(settings_, o);
    ASSERT_TRUE(n) << edda::render(n.error());
    node_ = std::move(*n);
    // The test's parameter: over the client door, else the node port.
    edda::client::connect_options co;
    co.door = GetParam();
    auto c = edda::client::connection::open(
      "127.0.0.1", co.door ? node_->api_port() : node_->port(), co);
    ASSERT_TRUE(c) << edda::render(c.error());
    conn_ = std::move(*c);
  }

  void stop_node() {
    conn_.reset();
    node_->stop();
    node_.reset();
  }

  /// Waits until saga `id` is in `want` (or 10 s pass).
  pb::SagaRecord wait_for(const std::string& id, saga_state want) {
    pb::SagaRecord last;
    auto until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until) {
      auto r = admin::saga_show(*conn_, id);
      if (r) {
        last = *r;
        if (static_cast<saga_state>(r->state()) == want)
          return last;
      }
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << id << " did not reach " << to_string(want) << "; state "
                  << last.state() << ", reason: " << last.reason();
    return last;
  }

  std::string dir_;
  edda::config::node_settings settings_;
  std::unique_ptr<edda::node::embedded_node> node_;
  std::optional<edda::client::connection> conn_;
};

TEST_P(SagaIntegration, TransferCompletesAndAStartWithTheSameIdIsTheSameSaga) {
  ledger l({{"alice", 500}, {"bob", 0}});
  start_node({transfer(l)});
  auto s = admin::saga_start(*conn_, "transfer", "order-1", R"({"amount":100})");
  ASSERT_TRUE(s) << edda::render(s.error());
  EXPECT_FALSE(s->existed());
  auto rec = wait_for("order-1", saga_state::completed);
  EXPECT_EQ(l.balance("alice"), 400);
  EXPECT_EQ(l.balance("bob"), 100);
  EXPECT_EQ(rec.input(), R"({"amount":100})");
  auto again = admin::saga_start(*conn_, "transfer", "order-1", "{}");
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->existed());
  EXPECT_EQ(l.seen("order-1/debit#do"), 1u) << "started once, debited once";
  pb::SagaList q;
  q.set_state(static_cast<uint32_t>(saga_state::completed));
  auto listed = admin::saga_list(*conn_, q);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->records_size(), 1);
  EXPECT_EQ(listed->records(0).id(), "order-1");
  auto unknown = admin::saga_start(*conn_, "refund", "r-1", "{}");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(edda::code_of(unknown.error()), errc::unknown_saga_type);
  auto missing = admin::saga_show(*conn_, "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(edda::code_of(missing.error()), errc::not_found);
}

TEST_P(SagaIntegration, FailedStepCompensatesAndTheLedgerBalances) {
  ledger l({{"alice", 500}, {"bob", 0}});
  saga_definition d("transfer");
  d.step("debit", [&l](const step_request& r) { return l.apply(r, "alice", -100); },
         [&l](const step_request& r) { return l.apply(r, "alice", -100); },
         quick())
    .step("credit",
          [](const step_request& r) {
            return r.compensate ? step_result::success()
                                : step_result::failure("account closed", false);
          },
          [](const step_request&) { return step_result::success(); }, quick());
  start_node({d});
  ASSERT_TRUE(admin::saga_start(*conn_, "transfer", "order-2", "{}"));
  auto rec = wait_for("order-2", saga_state::compensated);
  EXPECT_NE(rec.reason().find("account closed"), std::string::npos) << rec.reason();
  EXPECT_EQ(l.balance("alice"), 500) << "the debit was compensated";
  EXPECT_EQ(l.seen("order-2/debit#undo"), 1u);
}

TEST_P(SagaIntegration, NodeRestartResumesTheSagaWithoutApplyingAStepTwice) {
  ledger l({{"alice", 500}, {"bob", 0}});
  std::atomic<bool> bank_up{false};
  std::atomic<int> tries{0};
  auto bank = [&] {
    ++tries;
    return bank_up.load();
  };
  start_node({transfer(l, bank)});
  ASSERT_TRUE(admin::saga_start(*conn_, "transfer", "order-3", "{}"));
  // The credit keeps failing (retryable): the saga stays running.
  auto until = std::chrono::steady_clock::now() + 5s;
  while (tries < 2 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  ASSERT_GE(tries.load(), 2);
  auto mid = admin::saga_show(*conn_, "order-3");
  ASSERT_TRUE(mid);
  EXPECT_EQ(static_cast<saga_state>(mid->state()), saga_state::running);
  EXPECT_EQ(l.balance("alice"), 400);
  stop_node();
  bank_up = true;
  start_node({transfer(l, bank)});
  wait_for("order-3", saga_state::completed);
  EXPECT_EQ(l.balance("alice"), 400) << "debit applied once across restarts";
  EXPECT_EQ(l.balance("bob"), 100);
  EXPECT_EQ(l.seen("order-3/debit#do"), 1u);
}

/// Messages a consumer received, by idempotency key.
struct inbox {
  std::mutex mtx;
  std::map<std::string, int> by_key;
  size_t total() {
    std::lock_guard<std::mutex> guard{mtx};
    size_t n = 0;
    for (auto& [k, c] : by_key)
      n += static_cast<size_t>(c);
    return n;
  }
};

TEST_P(SagaIntegration, ReliableMessageIsOnItsTopicExactlyWhenTheStepCommitted) {
  ledger l({{"shop", 0}});
  auto order = [&l](const step_request& r) { return l.apply(r, "shop", 100); };
  auto voucher = [](const step_request& r) {
    edda::sagas::outgoing_message m;
    m.topic = "vouchers";
    m.tags = {"voucher"};
    m.body = "voucher for " + r.saga_id + ", order said " + r.outputs.at("order");
    return m;
  };
  step_options notify = quick(2);
  notify.best_effort = true;
  saga_definition pay("payment");
  pay.step("order", order, order, quick())
    .message_step("voucher", voucher)
    .step("notify", [](const step_request&) { return step_result::failure("merchant down"); },
          nullptr, notify);
  saga_definition lost("payment_to_nowhere");
  lost.step("order", order, order, quick())
    .message_step("voucher",
                  [](const step_request&) {
                    edda::sagas::outgoing_message m;
                    m.topic = "no_such_topic";
                    m.body = "x";
                    return m;
                  },
                  nullptr, quick(2));
  start_node({pay, lost});
  ASSERT_TRUE(admin::create_topic(*conn_, "vouchers", 2));
  for (int i = 0; i < 5; ++i) {
    auto id = "pay-" + std::to_string(i);
    auto s = admin::saga_start(*conn_, "payment", id, "{}", 10s);
    ASSERT_TRUE(s) << edda::render(s.error());
    EXPECT_EQ(static_cast<saga_state>(s->record().state()), saga_state::completed)
      << s->record().reason();
    EXPECT_EQ(s->record().steps(1).status(), pb::SagaStep::DONE);
    EXPECT_EQ(s->record().steps(1).output().rfind("vouchers/", 0), 0u)
      << "topic/partition/offset: " << s->record().steps(1).output();
    EXPECT_EQ(s->record().steps(2).status(), pb::SagaStep::GAVE_UP)
      << "the best-effort notification gave up; the saga completed anyway";
  }
  inbox got;
  edda::client::consumer_options co;
  co.group = "accounting";
  co.topic = "vouchers";
  auto c = edda::client::consumer::start(
    *conn_, co, [&](const edda::client::received& r) {
      std::lock_guard<std::mutex> guard{got.mtx};
      EXPECT_NE(r.msg.body.find("order said"), std::string::npos);
      got.by_key[r.msg.properties.at("idempotency_key")]++;
      return edda::client::consume_result::success;
    });
  ASSERT_TRUE(c) << edda::render(c.error());
  auto until = std::chrono::steady_clock::now() + 10s;
  while (got.total() < 5 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(200ms); // nothing more comes
  EXPECT_EQ(got.total(), 5u);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(got.by_key["pay-" + std::to_string(i) + "/voucher"], 1);
  // The append fails (unknown topic): no message, the order is undone.
  auto s = admin::saga_start(*conn_, "payment_to_nowhere", "lost-1", "{}", 10s);
  ASSERT_TRUE(s) << edda::render(s.error());
  EXPECT_EQ(static_cast<saga_state>(s->record().state()), saga_state::compensated);
  EXPECT_NE(s->record().reason().find("no_such_topic"), std::string::npos)
    << s->record().reason();
  EXPECT_EQ(s->record().steps(1).attempts(), 2u);
  EXPECT_EQ(l.balance("shop"), 500) << "5 orders kept, the lost one undone";
}

TEST_P(SagaIntegration, ParticipantsInAHostProcessServeNamedSteps) {
  using edda::sagas::participant;
  saga_definition d("remote_transfer");
  d.step("debit", participant::named("bank.debit"),
         participant::named("bank.refund"), quick(1000))
    .step("credit", participant::named("bank.credit"),
          participant::named("bank.uncredit"), quick(1000));
  start_node({d});
  ASSERT_TRUE(admin::saga_start(*conn_, "remote_transfer", "rt-1", "{}"));
  // No host yet: attempts fail and are retried.
  auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    auto r = admin::saga_show(*conn_, "rt-1");
    if (r && r->steps(0).last_error().find("no participant 'bank.debit'")
               != std::string::npos)
      break;
    std::this_thread::sleep_for(10ms);
  }
  ledger l({{"alice", 500}, {"bob", 0}});
  auto host = edda::sagas::participant_host::start(
    *conn_,
    {{"bank.debit", [&l](const step_request& r) { return l.apply(r, "alice", -100); }},
     {"bank.refund", [&l](const step_request& r) { return l.apply(r, "alice", -100); }},
     {"bank.credit", [&l](const step_request& r) { return l.apply(r, "bob", 100); }},
     {"bank.uncredit", [&l](const step_request& r) { return l.apply(r, "bob", 100); }}},
    {.client_id = "bank-1", .workers = 2});
  ASSERT_TRUE(host) << edda::render(host.error());
  wait_for("rt-1", saga_state::completed);
  auto s = admin::saga_start(*conn_, "remote_transfer", "rt-2", "{}", 10s);
  ASSERT_TRUE(s) << edda::render(s.error());
  EXPECT_EQ(static_cast<saga_state>(s->record().state()), saga_state::completed);
  EXPECT_EQ(l.balance("alice"), 300);
  EXPECT_EQ(l.balance("bob"), 200);
  EXPECT_EQ((*host)->served(), 4u);
  auto bad = edda::sagas::participant_host::start(
    *conn_, {{"bad name", [](const step_request&) { return step_result::success(); }}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(edda::code_of(bad.error()), errc::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(Over, SagaIntegration, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "ClientDoor" : "NodePort";
                         });

} // namespace
