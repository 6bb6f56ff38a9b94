// Integration tests of transactional messages (half message, local
// transaction, commit / rollback, check-back) as a user sees them: a real
// embedded node (real actors, real LMDB in a fresh temp dir) with short
// [txn] timings, transaction producers over REMOTE connections (so check-
// backs and their answers really cross the wire; each test runs twice: over
// the node port, CAF middleman on 127.0.0.1, and over the client door,
// edda.api.v1 over gRPC) and a consumer group that records every delivery.
//
// One test needs a producer that dies between its local transaction and its
// commit: this binary re-executes itself in a `--child-producer` mode (see
// main() at the bottom) with EDDA_FAILPOINTS=txn.before_end=crash@1.
//
// Waits are polls with deadlines; a fixed window only ever proves that
// something did NOT happen within it.
#include "base/alerts.hpp"
#include "base/errc.hpp"
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/connection_impl.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "client/types.hpp"
#include "config/settings.hpp"
#include "node/embedded_node.hpp"
#include "wire/types.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

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
using edda::client::received;
using edda::client::transaction_producer;
using edda::client::txn_check;
using edda::client::txn_outcome;
using edda::client::txn_producer_options;
using edda::client::txn_result;
using steady = ch::steady_clock;

constexpr const char* topic = "orders";
constexpr uint32_t partitions = 2;

// Short [txn] timings: first check after 300 ms, then 600 ms, then 1 s
// (the cap); three answered checks without an outcome apply the policy; a
// checker silent for 500 ms counts as unknown.
constexpr uint64_t check_after_ms = 300;
constexpr uint32_t max_checks = 3;
constexpr uint64_t max_check_interval_ms = 1000;
constexpr uint64_t check_timeout_ms = 500;

// -- helpers ------------------------------------------------------------------

std::string render(const caf::error& err) {
  return edda::render(err);
}

/// A fresh directory under /tmp, removed with everything in it.
class temp_dir {
public:
  temp_dir() {
    char tmpl[] = "/tmp/edda-txn-it-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::string& path() const {
    return path_;
  }

private:
  std::string path_;
};

/// Polls `pred` every few ms until it holds or `timeout` passes.
template <class Pred>
bool wait_until(Pred pred, ch::milliseconds timeout = 15s,
                ch::milliseconds step = 10ms) {
  auto deadline = steady::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (steady::now() >= deadline)
      return pred();
    std::this_thread::sleep_for(step);
  }
}

const char* state_name(pb::TxnRecord::State s) {
  switch (s) {
    case pb::TxnRecord::PREPARED: return "PREPARED";
    case pb::TxnRecord::COMMITTED: return "COMMITTED";
    case pb::TxnRecord::ROLLED_BACK: return "ROLLED_BACK";
    default: return "?";
  }
}

std::string describe(const pb::TxnRecord& r) {
  return std::string(state_name(r.state())) + " checks=" + std::to_string(r.checks())
         + " resolved_by='" + r.resolved_by() + "' reason='" + r.reason() + "'";
}

message msg(const std::string& id, const std::string& body = {}) {
  message m;
  m.topic = topic;
  m.id = id;
  m.key = id;
  m.body = body.empty() ? "body of " + id : body;
  return m;
}

/// Every delivery any handler saw.
class recorder {
public:
  edda::client::handler handler() {
    return [this](const received& r) {
      std::lock_guard<std::mutex> guard{mtx_};
      ++count_[r.msg.id];
      bodies_[r.msg.id] = r.msg.body;
      return consume_result::success;
    };
  }
  [[nodiscard]] size_t count_of(const std::string& id) const {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = count_.find(id);
    return i == count_.end() ? 0 : i->second;
  }
  [[nodiscard]] std::map<std::string, size_t> counts() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return count_;
  }
  [[nodiscard]] std::set<std::string> ids() const {
    std::lock_guard<std::mutex> guard{mtx_};
    std::set<std::string> out;
    for (auto& [id, n] : count_)
      out.insert(id);
    return out;
  }
  [[nodiscard]] std::string body_of(const std::string& id) const {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = bodies_.find(id);
    return i == bodies_.end() ? std::string{} : i->second;
  }

private:
  mutable std::mutex mtx_;
  std::map<std::string, size_t> count_;
  std::map<std::string, std::string> bodies_;
};

/// Outcomes a checker answers, by message id (unknown if absent), and how
/// often it was asked about each.
class decisions {
public:
  void set(const std::string& id, txn_outcome o) {
    std::lock_guard<std::mutex> guard{mtx_};
    outcome_[id] = o;
  }
  txn_outcome answer(const txn_check& c) {
    std::lock_guard<std::mutex> guard{mtx_};
    ++asked_[c.msg.id];
    auto i = outcome_.find(c.msg.id);
    return i == outcome_.end() ? txn_outcome::unknown : i->second;
  }
  [[nodiscard]] size_t asked(const std::string& id) const {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = asked_.find(id);
    return i == asked_.end() ? 0 : i->second;
  }
  edda::client::txn_checker checker() {
    return [this](const txn_check& c) { return answer(c); };
  }

private:
  mutable std::mutex mtx_;
  std::map<std::string, txn_outcome> outcome_;
  std::map<std::string, size_t> asked_;
};

/// Runs `f` at scope exit (also when an ASSERT returns early).
template <class F>
struct at_exit {
  F f;
  ~at_exit() {
    f();
  }
};
template <class F>
at_exit(F) -> at_exit<F>;

/// Established TCP connections accepted on 127.0.0.1:`port` (the node's
/// side of each client connection), from /proc/net/tcp and tcp6.
size_t connections_to(uint16_t port) {
  size_t n = 0;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in{table};
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line)) {
      std::istringstream row{line};
      std::string slot, local, remote, state;
      row >> slot >> local >> remote >> state;
      auto colon = local.rfind(':');
      if (colon == std::string::npos || state != "01")
        continue;
      if (std::stoul(local.substr(colon + 1), nullptr, 16) == port)
        ++n;
    }
  }
  return n;
}

// -- fixture ------------------------------------------------------------------

class TxnTest : public ::testing::TestWithParam<bool> {
protected:
  void SetUp() override {
    settings_.data_dir = dir_.path() + "/data";
    settings_.listen_host = "127.0.0.1";
    settings_.listen_port = 0;
    settings_.map_size = 256ull << 20;
    settings_.log_level = "error";
    settings_.txn_check_after_ms = check_after_ms;
    settings_.txn_max_checks = max_checks;
    settings_.txn_max_check_interval_ms = max_check_interval_ms;
    settings_.txn_check_timeout_ms = check_timeout_ms;
    ASSERT_TRUE(start_node());
    conn_ = remote();
    ASSERT_TRUE(conn_);
    auto t = admin::create_topic(*conn_, topic, partitions);
    ASSERT_TRUE(t) << render(t.error());
    start_audit();
  }

  void TearDown() override {
    audit_.reset();
    conn_.reset();
    producer_conns_.clear();
    if (node_)
      node_->stop();
    node_.reset();
  }

  /// Starts the node on settings_ (same data dir on every call) and hooks
  /// its alerts.
  [[nodiscard]] bool start_node() {
    auto n = edda::node::embedded_node::start(settings_); // listening
    if (!n) {
      ADD_FAILURE() << "node did not start: " << render(n.error());
      return false;
    }
    node_ = std::move(*n);
    if (node_->port() == 0) {
      ADD_FAILURE() << "node does not listen";
      return false;
    }
    node_->alerts().add_hook([this](const edda::alert& a) {
      std::lock_guard<std::mutex> guard{alerts_mtx_};
      alerts_.push_back(a);
    });
    return true;
  }

  /// Stops the audit consumer, drops the fixture's connection and stops the
  /// node (callers drop their producers first).
  void stop_node() {
    audit_.reset();
    conn_.reset();
    producer_conns_.clear();
    node_->stop();
    node_.reset();
  }

  /// Over the client door (the test's parameter), else the node port.
  [[nodiscard]] bool over_door() const {
    return GetParam();
  }
  /// The port remote() connects to.
  [[nodiscard]] uint16_t remote_port() const {
    return over_door() ? node_->api_port() : node_->port();
  }

  /// A connection over TCP on 127.0.0.1: to the client door or through the
  /// middleman.
  std::optional<connection> remote() {
    edda::client::connect_options o;
    o.request_timeout = 10s;
    o.door = over_door();
    auto c = connection::open("127.0.0.1", remote_port(), o);
    if (!c) {
      ADD_FAILURE() << "cannot connect: " << render(c.error());
      return std::nullopt;
    }
    return std::move(*c);
  }

  /// A consumer group (from the earliest offset) that records deliveries.
  void start_audit(const std::string& group = "audit") {
    consumer_options o;
    o.group = group;
    o.topic = topic;
    o.request_timeout = 10s;
    auto c = consumer::start(*conn_, o, seen_.handler());
    ASSERT_TRUE(c) << render(c.error());
    audit_ = std::move(*c);
    audit_group_ = group;
  }

  /// A transaction producer of `group` on its own remote connection. The
  /// fixture keeps a copy of that connection until the test ends, so the
  /// connection outlives the producer (see
  /// ProducerDestroyedWithItsOwnConnectionLeavesTheGroup for why).
  std::unique_ptr<transaction_producer>
  producer(const std::string& group, edda::client::txn_checker checker,
           const std::string& client_id = {}, int64_t check_after = 0) {
    auto c = remote();
    if (!c)
      return nullptr;
    producer_conns_.push_back(*c);
    txn_producer_options o;
    o.group = group;
    o.client_id = client_id;
    o.check_after_ms = check_after;
    o.timeout = 10s;
    auto p = transaction_producer::start(*c, o, std::move(checker));
    if (!p) {
      ADD_FAILURE() << "producer did not start: " << render(p.error());
      return nullptr;
    }
    return std::move(*p);
  }

  /// send_in_transaction whose local transaction answers `local` (and
  /// reports the txn id to `txn_out` before returning, if given).
  txn_result send(transaction_producer& p, const std::string& id,
                  txn_outcome local) {
    auto r = p.send_in_transaction(msg(id), [&](const message& m,
                                                const std::string&) {
      EXPECT_EQ(m.id, id);
      return local;
    });
    if (!r) {
      ADD_FAILURE() << "send_in_transaction(" << id
                    << ") failed: " << render(r.error());
      return txn_result{};
    }
    return std::move(*r);
  }

  std::optional<pb::TxnRecord> show(const std::string& txn) {
    auto r = admin::txn_show(*conn_, txn);
    if (!r) {
      ADD_FAILURE() << "txn show " << txn << ": " << render(r.error());
      return std::nullopt;
    }
    return std::move(*r);
  }

  /// Waits until the transaction is no longer PREPARED; returns its record.
  pb::TxnRecord wait_resolved(const std::string& txn,
                              ch::milliseconds timeout = 15s) {
    pb::TxnRecord last;
    bool done = wait_until(
      [&] {
        auto r = admin::txn_show(*conn_, txn);
        if (!r)
          return false;
        last = std::move(*r);
        return last.state() != pb::TxnRecord::PREPARED;
      },
      timeout, 20ms);
    EXPECT_TRUE(done) << "txn " << txn << " still unresolved after "
                      << timeout.count() << " ms: " << describe(last);
    return last;
  }

  /// Messages in the log of `topic` (all partitions).
  uint64_t log_size() {
    auto info = admin::describe_topic(*conn_, topic);
    if (!info) {
      ADD_FAILURE() << "describe " << topic << ": " << render(info.error());
      return 0;
    }
    uint64_t n = 0;
    for (auto& p : info->partitions())
      n += p.end_offset();
    return n;
  }

  /// True once the audit group has acknowledged everything in the log: on
  /// every partition with messages, committed == end offset and nothing in
  /// flight.
  bool audit_caught_up() {
    auto info = admin::describe_topic(*conn_, topic);
    if (!info)
      return false;
    std::map<uint32_t, const pb::GroupLag*> rows;
    for (auto& g : info->groups())
      if (g.cursor() == audit_group_)
        rows[g.partition()] = &g;
    for (auto& p : info->partitions()) {
      if (p.end_offset() == 0)
        continue;
      auto i = rows.find(p.partition());
      if (i == rows.end() || i->second->committed() != p.end_offset()
          || i->second->inflight() != 0)
        return false;
    }
    return true;
  }

  /// Waits until the audit group has everything in the log and checks that
  /// it saw exactly `expected`, each once, and that the log holds exactly
  /// that many messages.
  void expect_delivered_exactly(const std::set<std::string>& expected) {
    ASSERT_TRUE(wait_until([&] { return audit_caught_up(); }, 15s))
      << "audit group did not catch up with the log";
    EXPECT_EQ(seen_.ids(), expected);
    for (auto& [id, n] : seen_.counts())
      EXPECT_EQ(n, 1u) << id << " delivered " << n << " times";
    EXPECT_EQ(log_size(), expected.size());
  }

  std::vector<edda::alert> alerts_of(const std::string& kind) {
    std::lock_guard<std::mutex> guard{alerts_mtx_};
    std::vector<edda::alert> out;
    for (auto& a : alerts_)
      if (a.kind == kind)
        out.push_back(a);
    return out;
  }

  temp_dir dir_;
  edda::config::node_settings settings_;
  std::mutex alerts_mtx_;
  std::vector<edda::alert> alerts_;
  recorder seen_;
  // Destroyed before the members above (reverse declaration order).
  std::unique_ptr<edda::node::embedded_node> node_;
  std::optional<connection> conn_;
  std::vector<connection> producer_conns_;
  std::unique_ptr<consumer> audit_;
  std::string audit_group_;
};

// -- commit, rollback, unknown ------------------------------------------------

TEST_P(TxnTest, CommittedTransactionIsDeliveredOnceAndRolledBackIsNever) {
  decisions dec;
  // A local transaction that throws leaves its outcome to check-back, which
  // asks this checker.
  dec.set("throws-then-commit", txn_outcome::commit);
  dec.set("throws-then-rollback", txn_outcome::rollback);
  auto p = producer("shop", dec.checker());
  ASSERT_TRUE(p);

  auto committed = send(*p, "committed", txn_outcome::commit);
  EXPECT_EQ(committed.local, txn_outcome::commit);
  EXPECT_TRUE(committed.ended) << render(committed.end_error);
  ASSERT_TRUE(committed.stored.has_value());
  EXPECT_EQ(committed.stored->id, "committed");
  EXPECT_EQ(committed.stored->topic, topic);

  auto rolled = send(*p, "rolled-back", txn_outcome::rollback);
  EXPECT_EQ(rolled.local, txn_outcome::rollback);
  EXPECT_TRUE(rolled.ended) << render(rolled.end_error);
  EXPECT_FALSE(rolled.stored.has_value());

  std::vector<txn_result> thrown;
  for (auto id : {"throws-then-commit", "throws-then-rollback"}) {
    auto r = p->send_in_transaction(msg(id), [](const message&,
                                                const std::string&) -> txn_outcome {
      throw std::runtime_error("local database went away");
    });
    ASSERT_TRUE(r) << render(r.error());
    EXPECT_EQ(r->local, txn_outcome::unknown);
    EXPECT_FALSE(r->ended);
    EXPECT_TRUE(r->end_error) << "an unended transaction needs a reason";
    EXPECT_FALSE(r->stored.has_value());
    thrown.push_back(std::move(*r));
  }

  // Ended by the producer: recorded as such, no checks.
  if (auto rec = show(committed.txn_id)) {
    EXPECT_EQ(rec->state(), pb::TxnRecord::COMMITTED) << describe(*rec);
    EXPECT_EQ(rec->resolved_by(), "producer");
    EXPECT_EQ(rec->message().id(), "committed");
  }
  if (auto rec = show(rolled.txn_id)) {
    EXPECT_EQ(rec->state(), pb::TxnRecord::ROLLED_BACK) << describe(*rec);
    EXPECT_EQ(rec->resolved_by(), "producer");
  }
  // Settled by check-back as the checker says.
  auto c = wait_resolved(thrown[0].txn_id);
  EXPECT_EQ(c.state(), pb::TxnRecord::COMMITTED) << describe(c);
  EXPECT_EQ(c.resolved_by(), "check-back");
  auto r = wait_resolved(thrown[1].txn_id);
  EXPECT_EQ(r.state(), pb::TxnRecord::ROLLED_BACK) << describe(r);
  EXPECT_EQ(r.resolved_by(), "check-back");
  EXPECT_GE(dec.asked("throws-then-commit"), 1u);
  EXPECT_GE(dec.asked("throws-then-rollback"), 1u);
  // Ended transactions are never checked back.
  EXPECT_EQ(dec.asked("committed"), 0u);
  EXPECT_EQ(dec.asked("rolled-back"), 0u);

  expect_delivered_exactly({"committed", "throws-then-commit"});
  EXPECT_EQ(seen_.body_of("committed"), "body of committed");
  auto pending = admin::txn_list(*conn_);
  ASSERT_TRUE(pending) << render(pending.error());
  EXPECT_EQ(pending->records_size(), 0);
  EXPECT_TRUE(alerts_of("txn_policy").empty());
}

TEST_P(TxnTest, LostCommitIsSettledByCheckBack) {
  // The local transaction committed, but the end never reaches the node
  // (simulated: the local transaction reports unknown, so no end is sent);
  // the checker knows it committed.
  decisions dec;
  dec.set("lost-commit", txn_outcome::commit);
  auto p = producer("shop", dec.checker());
  ASSERT_TRUE(p);
  auto r = send(*p, "lost-commit", txn_outcome::unknown);
  EXPECT_FALSE(r.ended);
  ASSERT_FALSE(r.txn_id.empty());

  // Invisible until check-back commits it.
  auto before = show(r.txn_id);
  ASSERT_TRUE(before);
  if (before->state() == pb::TxnRecord::PREPARED) {
    EXPECT_EQ(seen_.count_of("lost-commit"), 0u);
  }

  auto rec = wait_resolved(r.txn_id);
  EXPECT_EQ(rec.state(), pb::TxnRecord::COMMITTED) << describe(rec);
  EXPECT_EQ(rec.resolved_by(), "check-back");
  EXPECT_EQ(rec.checks(), 0u) << "a decisive answer does not use the budget";
  EXPECT_EQ(dec.asked("lost-commit"), 1u);
  EXPECT_GE(p->checks_answered(), 1u);
  expect_delivered_exactly({"lost-commit"});
}

// -- a producer that dies between its local transaction and its commit -----

/// Spawns this binary in --child-producer mode with `failpoints` armed;
/// its stdout and stderr go to `log`.
pid_t spawn_child_producer(uint16_t port, bool door, const std::string& group,
                           const std::string& id, const std::string& ledger,
                           const std::string& failpoints,
                           const std::string& log) {
  std::vector<std::string> args{"txn_integration_test", "--child-producer",
                                std::to_string(port), group, id, ledger,
                                door ? "door" : "node"};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "EDDA_FAILPOINTS=", 16) != 0)
      env.emplace_back(*e);
  env.push_back("EDDA_FAILPOINTS=" + failpoints);
  std::vector<char*> argv, envp;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(),
                         envp.data());
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

/// "msg-id txn-id" lines the child's local transaction wrote (fsync'd).
std::map<std::string, std::string> read_ledger(const std::string& path) {
  std::map<std::string, std::string> out;
  std::ifstream in{path};
  std::string id, txn;
  while (in >> id >> txn)
    out[id] = txn;
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_P(TxnTest,
       ProducerCrashAfterLocalTransactionIsAnsweredByAnotherMemberOfTheGroup) {
  const std::string group = "wallet";
  const std::string ledger = dir_.path() + "/wallet.ledger";
  const std::string log = dir_.path() + "/child.log";
  // The surviving member answers from the shared ledger: bought -> commit.
  std::atomic<int> survivor_asked{0};
  auto survivor = producer(group, [&](const txn_check& c) {
    ++survivor_asked;
    return read_ledger(ledger).count(c.msg.id) != 0 ? txn_outcome::commit
                                                    : txn_outcome::unknown;
  });
  ASSERT_TRUE(survivor);

  pid_t child = spawn_child_producer(remote_port(), over_door(), group, "order-3", ledger,
                                     "txn.before_end=crash@1", log);
  ASSERT_GT(child, 0) << "posix_spawn failed";
  int status = 0;
  bool reaped = wait_until([&] { return ::waitpid(child, &status, WNOHANG) == child; },
                           30s, 10ms);
  if (!reaped) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
    FAIL() << "the child producer did not end; its log:\n" << slurp(log);
  }
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
    << "the child producer was not killed by the failpoint (status " << status
    << "); its log:\n" << slurp(log);

  // The local transaction ran (the ledger says so) and the commit never
  // left the child.
  auto entries = read_ledger(ledger);
  ASSERT_EQ(entries.count("order-3"), 1u) << slurp(log);
  auto txn = entries["order-3"];
  auto rec = wait_resolved(txn);
  EXPECT_EQ(rec.state(), pb::TxnRecord::COMMITTED) << describe(rec);
  EXPECT_EQ(rec.resolved_by(), "check-back");
  EXPECT_NE(rec.client_id(), survivor->client_id())
    << "the half message came from the child";
  EXPECT_GE(survivor->checks_answered(), 1u);
  EXPECT_GE(survivor_asked.load(), 1);
  expect_delivered_exactly({"order-3"});
}

// -- the final policy ----------------------------------------------------------

TEST_P(TxnTest, UnknownForeverAppliesThePolicyAfterMaxChecksAndAlerts) {
  std::atomic<int> asked{0};
  auto p = producer("undecided", [&](const txn_check&) {
    ++asked;
    return txn_outcome::unknown;
  });
  ASSERT_TRUE(p);
  auto r = send(*p, "never-decided", txn_outcome::unknown);
  ASSERT_FALSE(r.txn_id.empty());
  auto rec = wait_resolved(r.txn_id, 20s);
  EXPECT_EQ(rec.state(), pb::TxnRecord::ROLLED_BACK) << describe(rec);
  EXPECT_EQ(rec.resolved_by(), "policy");
  EXPECT_EQ(rec.checks(), max_checks);
  EXPECT_NE(rec.reason().find("rollback"), std::string::npos) << rec.reason();
  EXPECT_EQ(asked.load(), static_cast<int>(max_checks));

  ASSERT_TRUE(wait_until([&] { return !alerts_of("txn_policy").empty(); }, 5s));
  auto alerts = alerts_of("txn_policy");
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0].subject, r.txn_id);
  EXPECT_EQ(alerts[0].message_id, "never-decided");

  // The producer finds its answer only now: too late.
  auto late = p->end(r.txn_id, txn_outcome::commit);
  ASSERT_FALSE(late) << "a commit after the policy's rollback was accepted";
  EXPECT_EQ(edda::code_of(late.error()), errc::txn_conflict)
    << render(late.error());
  // Agreeing with the recorded outcome is harmless.
  auto agree = p->end(r.txn_id, txn_outcome::rollback);
  ASSERT_TRUE(agree) << render(agree.error());
  EXPECT_TRUE(agree->ended);
  if (auto again = show(r.txn_id)) {
    EXPECT_EQ(again->state(), pb::TxnRecord::ROLLED_BACK);
    EXPECT_EQ(again->resolved_by(), "policy");
  }
  expect_delivered_exactly({});
  auto pending = admin::txn_list(*conn_);
  ASSERT_TRUE(pending) << render(pending.error());
  EXPECT_EQ(pending->records_size(), 0);
}

TEST_P(TxnTest, UnknownForeverUnderTheCommitPolicyIsDeliveredOnceAndAlerts) {
  stop_node();
  settings_.txn_final_policy = "commit";
  ASSERT_TRUE(start_node());
  conn_ = remote();
  ASSERT_TRUE(conn_);
  start_audit();
  auto p = producer("undecided", [](const txn_check&) {
    return txn_outcome::unknown;
  });
  ASSERT_TRUE(p);
  auto r = send(*p, "committed-by-policy", txn_outcome::unknown);
  auto rec = wait_resolved(r.txn_id, 20s);
  EXPECT_EQ(rec.state(), pb::TxnRecord::COMMITTED) << describe(rec);
  EXPECT_EQ(rec.resolved_by(), "policy");
  EXPECT_EQ(rec.checks(), max_checks);
  ASSERT_TRUE(wait_until([&] { return !alerts_of("txn_policy").empty(); }, 5s));
  EXPECT_EQ(alerts_of("txn_policy")[0].subject, r.txn_id);
  // A late rollback contradicts the policy's commit.
  auto late = p->end(r.txn_id, txn_outcome::rollback);
  ASSERT_FALSE(late);
  EXPECT_EQ(edda::code_of(late.error()), errc::txn_conflict);
  expect_delivered_exactly({"committed-by-policy"});
}

// -- late and racing ends -------------------------------------------------------

TEST_P(TxnTest, LateCommitAfterCheckBackCommitIsOneMessage) {
  decisions dec;
  dec.set("late", txn_outcome::commit);
  auto p = producer("shop", dec.checker());
  ASSERT_TRUE(p);
  // The local transaction is slow to report: check-back commits first.
  auto r = send(*p, "late", txn_outcome::unknown);
  auto rec = wait_resolved(r.txn_id);
  ASSERT_EQ(rec.state(), pb::TxnRecord::COMMITTED) << describe(rec);
  EXPECT_EQ(rec.resolved_by(), "check-back");
  ASSERT_TRUE(wait_until([&] { return seen_.count_of("late") == 1; }));

  // Then the producer's own commit arrives: acknowledged, not stored again.
  auto end = p->end(r.txn_id, txn_outcome::commit);
  ASSERT_TRUE(end) << render(end.error());
  EXPECT_TRUE(end->ended);
  EXPECT_FALSE(end->stored.has_value()) << "a repeated commit was stored again";
  // The raw reply says `already`.
  auto raw = admin::txn_resolve(*conn_, r.txn_id, true, "test");
  ASSERT_TRUE(raw) << render(raw.error());
  EXPECT_TRUE(raw->already());
  EXPECT_EQ(raw->record().resolved_by(), "check-back");
  // A rollback now is a conflict.
  auto contra = p->end(r.txn_id, txn_outcome::rollback);
  ASSERT_FALSE(contra);
  EXPECT_EQ(edda::code_of(contra.error()), errc::txn_conflict);
  expect_delivered_exactly({"late"});
}

/// Races a producer's end against a check-back's commit of the same
/// transaction. The checker first hands the node's storage writer a large
/// unrelated write (ballast: 3 MiB over an in-process connection, to another
/// topic), then answers: the commit its answer triggers is written behind
/// (or with) that ballast, which takes a while. The local transaction
/// reports its outcome only after the checker has answered, plus a lag that
/// grows with each transaction (0.5 ms, 0.75 ms, ...), so the producer's end
/// reaches the node after the check-back's answer and, for most lags, while
/// its commit is still being written. The lags sweep that window; they are
/// not a synchronization: every outcome is checked for what it is.
class end_race {
public:
  explicit end_race(edda::client::connection in_process)
    : conn_(std::move(in_process)), ballast_(conn_) {
  }

  /// Creates the ballast topic, warms up the ballast producer and puts one
  /// message (returned) in every partition of the test topic, so that an
  /// append by a commit never has offset 0.
  [[nodiscard]] std::set<std::string> prepare() {
    std::set<std::string> seeds;
    auto t = admin::create_topic(conn_, "ballast", 1);
    if (!t) {
      ADD_FAILURE() << render(t.error());
      return seeds;
    }
    std::set<uint64_t> covered;
    for (int i = 0; covered.size() < partitions && i < 100; ++i) {
      auto id = "seed-" + std::to_string(i);
      if (!covered.insert(edda::shard_of(id, partitions)).second)
        continue;
      auto r = ballast_.send(msg(id));
      if (!r) {
        ADD_FAILURE() << "seed: " << render(r.error());
        return seeds;
      }
      seeds.insert(id);
    }
    return seeds;
  }

  edda::client::txn_checker checker(txn_outcome answer) {
    return [this, answer](const txn_check&) {
      message m;
      m.topic = "ballast";
      m.body = std::string(3u << 20, 'b');
      ballast_.send_async(std::move(m),
                          [](caf::expected<edda::client::send_result>) {});
      std::lock_guard<std::mutex> guard{mtx_};
      ++answered_;
      cv_.notify_all();
      return answer;
    };
  }

  /// The local transaction of the i-th racing transaction: waits for the
  /// check-back's answer, lets the i-th lag pass, says `local`.
  edda::client::local_transaction local(int i, txn_outcome local) {
    uint64_t before = 0;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      before = answered_;
    }
    return [this, i, local, before](const message& m, const std::string&) {
      std::unique_lock<std::mutex> guard{mtx_};
      if (!cv_.wait_for(guard, 10s, [&] { return answered_ > before; }))
        ADD_FAILURE() << m.id << ": no check-back within 10 s";
      guard.unlock();
      std::this_thread::sleep_for(500us + 250us * i); // the sweep
      return local;
    };
  }

  void flush() {
    ballast_.flush();
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  uint64_t answered_ = 0;
  edda::client::connection conn_;
  edda::client::producer ballast_;
};

TEST_P(TxnTest, CommitRacingACheckBackCommitIsOneMessage) {
  end_race race{node_->connect()};
  auto seeds = race.prepare();
  ASSERT_EQ(seeds.size(), partitions);
  auto p = producer("race", race.checker(txn_outcome::commit), {}, 50);
  ASSERT_TRUE(p);
  // The producer's end goes out as the wire carries it (EndTxn on the
  // producer's connection), so that its reply shows how it met the
  // check-back's commit: first (not `already`), joined while it was being
  // written (`already`, with the offset of that append) or after it was
  // recorded (`already`, no offset).
  // Over the client door a producer's ends travel in its Transact stream,
  // whose answer does not say `already`: the same EndTxn goes in process.
  auto wire_conn = over_door() ? node_->connect() : producer_conns_.back();
  constexpr int n = 12;
  std::set<std::string> ids = seeds;
  int first = 0, joined = 0, after = 0;
  for (int i = 0; i < n; ++i) {
    auto id = "race-commit-" + std::to_string(i);
    auto r = p->send_in_transaction(msg(id), race.local(i, txn_outcome::unknown));
    ASSERT_TRUE(r) << id << ": " << render(r.error());
    pb::EndTxn e;
    e.set_txn_id(r->txn_id);
    e.set_outcome(pb::TXN_COMMIT);
    auto res = wire_conn.impl()->call<pb::EndResult>(e, 10s);
    ASSERT_TRUE(res) << id << ": " << render(res.error());
    EXPECT_EQ(res->record().state(), pb::TxnRecord::COMMITTED)
      << id << ": " << describe(res->record());
    if (!res->already()) {
      ++first;
      EXPECT_EQ(res->record().resolved_by(), "producer");
    } else {
      res->offset() > 0 ? ++joined : ++after;
      EXPECT_EQ(res->record().resolved_by(), "check-back");
    }
    ids.insert(id);
    auto rec = wait_resolved(r->txn_id);
    EXPECT_EQ(rec.state(), pb::TxnRecord::COMMITTED) << id << ": " << describe(rec);
  }
  race.flush();
  expect_delivered_exactly(ids);
  std::printf("[ summary  ] %d racing ends: %d came first, %d joined the "
              "check-back's commit while it was written, %d came after it\n",
              n, first, joined, after);
}

TEST_P(TxnTest, RollbackRacingACheckBackCommitIsRefusedAsAConflict) {
  end_race race{node_->connect()};
  auto seeds = race.prepare();
  ASSERT_EQ(seeds.size(), partitions);
  auto p = producer("race", race.checker(txn_outcome::commit), {}, 50);
  ASSERT_TRUE(p);
  constexpr int n = 12;
  std::set<std::string> committed = seeds;
  int refused = 0, refused_in_flight = 0;
  for (int i = 0; i < n; ++i) {
    auto id = "race-rollback-" + std::to_string(i);
    auto r = p->send_in_transaction(msg(id), race.local(i, txn_outcome::rollback));
    ASSERT_TRUE(r) << id << ": " << render(r.error());
    auto rec = wait_resolved(r->txn_id);
    // Either may come first, but the producer's answer, the record and the
    // log must agree.
    if (rec.state() == pb::TxnRecord::COMMITTED) {
      ++refused;
      committed.insert(id);
      EXPECT_EQ(rec.resolved_by(), "check-back") << describe(rec);
      EXPECT_FALSE(r->ended)
        << id << ": the producer's rollback was acknowledged but the record "
        << "says " << describe(rec);
      EXPECT_EQ(edda::code_of(r->end_error), errc::txn_conflict)
        << id << ": " << render(r->end_error);
      if (render(r->end_error).find("being") != std::string::npos)
        ++refused_in_flight;
    } else {
      EXPECT_TRUE(r->ended) << id << ": " << render(r->end_error);
      EXPECT_EQ(rec.resolved_by(), "producer") << describe(rec);
    }
  }
  race.flush();
  expect_delivered_exactly(committed);
  std::printf("[ summary  ] %d racing rollbacks: %d refused as conflicts (%d "
              "while the check-back's commit was written), %d recorded\n",
              n, refused, refused_in_flight, n - refused);
}

// -- checkers that fail ---------------------------------------------------------

TEST_P(TxnTest, CheckerThatThrowsOrHangsCountsAsUnknown) {
  // A checker that throws: each check counts, nothing is ever committed.
  std::atomic<int> thrown{0};
  auto thrower = producer("throwing", [&](const txn_check&) -> txn_outcome {
    ++thrown;
    throw std::runtime_error("ledger unavailable");
  });
  ASSERT_TRUE(thrower);
  // A checker that answers commit, but only after check_timeout: the node has
  // given up on it by then, so it counts as unknown, never as commit.
  std::mutex mtx;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> hung{0};
  auto hanging = producer("hanging", [&](const txn_check&) {
    ++hung;
    std::unique_lock<std::mutex> guard{mtx};
    // The fault's length (not a wait for an event): 1.6 x check_timeout.
    cv.wait_for(guard, ch::milliseconds(check_timeout_ms * 8 / 5),
                [&] { return release; });
    return txn_outcome::commit;
  });
  ASSERT_TRUE(hanging);
  at_exit unblock{[&] {
    std::lock_guard<std::mutex> guard{mtx};
    release = true;
    cv.notify_all();
  }};

  auto t = send(*thrower, "checked-by-thrower", txn_outcome::unknown);
  auto h = send(*hanging, "checked-by-hanger", txn_outcome::unknown);

  // The budget is used one check at a time.
  uint32_t seen_checks = 0;
  EXPECT_TRUE(wait_until(
    [&] {
      auto r = admin::txn_show(*conn_, t.txn_id);
      if (r && r->state() == pb::TxnRecord::PREPARED)
        seen_checks = std::max(seen_checks, r->checks());
      return seen_checks >= 1;
    },
    10s))
    << "a throwing checker's answer was not counted";

  auto tr = wait_resolved(t.txn_id, 20s);
  EXPECT_EQ(tr.state(), pb::TxnRecord::ROLLED_BACK) << describe(tr);
  EXPECT_EQ(tr.resolved_by(), "policy");
  EXPECT_EQ(tr.checks(), max_checks);
  EXPECT_EQ(thrown.load(), static_cast<int>(max_checks));

  auto hr = wait_resolved(h.txn_id, 20s);
  EXPECT_EQ(hr.state(), pb::TxnRecord::ROLLED_BACK)
    << "a checker that answered after check_timeout decided the outcome: "
    << describe(hr);
  EXPECT_EQ(hr.resolved_by(), "policy");
  EXPECT_EQ(hr.checks(), max_checks);
  EXPECT_GE(hung.load(), 1);

  EXPECT_EQ(alerts_of("txn_policy").size(), 2u);
  expect_delivered_exactly({});
}

// -- nobody to ask ----------------------------------------------------------------

TEST_P(TxnTest, NoLiveProducerDoesNotUseTheBudget) {
  std::string txn;
  int64_t first_due = 0;
  {
    auto gone = producer("lonely", [](const txn_check&) {
      return txn_outcome::unknown;
    });
    ASSERT_TRUE(gone);
    auto r = send(*gone, "orphan", txn_outcome::unknown);
    txn = r.txn_id;
    auto rec = show(txn);
    ASSERT_TRUE(rec);
    first_due = rec->next_check_ms();
  } // the only member of "lonely" leaves the group

  // Several check intervals (the window is the claim: the policy would have
  // struck after ~2 s if undeliverable checks used the budget).
  std::set<int64_t> dues;
  auto window_end = steady::now()
                    + ch::milliseconds(check_after_ms * (max_checks + 6));
  while (steady::now() < window_end) {
    auto rec = show(txn);
    ASSERT_TRUE(rec);
    ASSERT_EQ(rec->state(), pb::TxnRecord::PREPARED) << describe(*rec);
    ASSERT_EQ(rec->checks(), 0u) << "an undeliverable check used the budget";
    dues.insert(rec->next_check_ms());
    std::this_thread::sleep_for(50ms);
  }
  // The node did try (its next check moved on), it just had nobody to ask.
  EXPECT_GE(dues.size(), 3u);
  EXPECT_GT(*dues.rbegin(), first_due);

  decisions dec;
  dec.set("orphan", txn_outcome::commit);
  auto joiner = producer("lonely", dec.checker());
  ASSERT_TRUE(joiner);
  auto rec = wait_resolved(txn);
  EXPECT_EQ(rec.state(), pb::TxnRecord::COMMITTED) << describe(rec);
  EXPECT_EQ(rec.resolved_by(), "check-back");
  EXPECT_EQ(rec.checks(), 0u);
  EXPECT_EQ(dec.asked("orphan"), 1u);
  expect_delivered_exactly({"orphan"});
}

TEST_P(TxnTest, ProducerDestroyedWithItsOwnConnectionLeavesTheGroupAndClosesIt) {
  // The usual shape of client code: a producer made from a connection that
  // goes out of scope first, so the producer holds the last reference to
  // it. When that producer is destroyed it must leave its group (its half
  // messages are then checked back with another live member, not with the
  // departed one, which would time out, use up the budget and end in the
  // final policy's rollback of a transaction that committed), and its
  // connection must close.
  decisions dec;
  dec.set("handed-over", txn_outcome::commit);
  auto survivor = producer("handover", dec.checker());
  ASSERT_TRUE(survivor);
  const auto port = remote_port();
  const auto connections_before = connections_to(port);
  std::string txn;
  {
    std::unique_ptr<transaction_producer> first;
    {
      auto c = remote();
      ASSERT_TRUE(c);
      txn_producer_options o;
      o.group = "handover";
      o.timeout = 10s;
      auto p = transaction_producer::start(*c, o, [](const txn_check&) {
        return txn_outcome::unknown;
      });
      ASSERT_TRUE(p) << render(p.error());
      first = std::move(*p);
    } // the connection's last owner is now the producer
    EXPECT_EQ(connections_to(port), connections_before + 1);
    txn = send(*first, "handed-over", txn_outcome::unknown).txn_id;
    ASSERT_FALSE(txn.empty());
  } // the producer (and with it its connection) goes away
  auto rec = wait_resolved(txn, 20s);
  EXPECT_EQ(rec.state(), pb::TxnRecord::COMMITTED) << describe(rec);
  EXPECT_EQ(rec.resolved_by(), "check-back") << describe(rec);
  EXPECT_EQ(rec.checks(), 0u)
    << "checks sent to the departed producer used up the budget: "
    << describe(rec);
  EXPECT_EQ(dec.asked("handed-over"), 1u);
  expect_delivered_exactly(rec.state() == pb::TxnRecord::COMMITTED
                             ? std::set<std::string>{"handed-over"}
                             : std::set<std::string>{});
  size_t now = 0;
  EXPECT_TRUE(wait_until(
    [&] {
      now = connections_to(port);
      return now == connections_before;
    },
    5s))
    << "the destroyed producer's connection is still open (" << now
    << " connections, " << connections_before << " before it was made)";
}

// -- bad input --------------------------------------------------------------------

TEST_P(TxnTest, EndForAnUnknownTransactionIsUnknownTxn) {
  auto p = producer("shop", [](const txn_check&) { return txn_outcome::unknown; });
  ASSERT_TRUE(p);
  for (auto outcome : {txn_outcome::commit, txn_outcome::rollback}) {
    auto r = p->end("no-such-transaction", outcome);
    ASSERT_FALSE(r);
    EXPECT_EQ(edda::code_of(r.error()), errc::unknown_txn) << render(r.error());
  }
  auto show_r = admin::txn_show(*conn_, "no-such-transaction");
  ASSERT_FALSE(show_r);
  EXPECT_EQ(edda::code_of(show_r.error()), errc::unknown_txn);
  // An end must say commit or rollback.
  auto r = send(*p, "left-open", txn_outcome::unknown);
  auto unknown_end = p->end(r.txn_id, txn_outcome::unknown);
  ASSERT_FALSE(unknown_end);
  EXPECT_EQ(edda::code_of(unknown_end.error()), errc::invalid_argument);
  auto rec = show(r.txn_id);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->state(), pb::TxnRecord::PREPARED) << describe(*rec);
}

TEST_P(TxnTest, InvalidProducerGroupIsRefusedAtStart) {
  auto any = [](const txn_check&) { return txn_outcome::unknown; };
  for (const std::string& bad :
       {std::string{}, std::string(121, 'g'), std::string{"a b"},
        std::string{"a/b"},
        // A node's own group: its sagas' check-backs are answered there.
        std::string{"edda.sagas.n1"}}) {
    auto c = remote();
    ASSERT_TRUE(c);
    txn_producer_options o;
    o.group = bad;
    o.timeout = 10s;
    auto p = transaction_producer::start(*c, o, any);
    ASSERT_FALSE(p) << "group '" << bad << "' was accepted";
    EXPECT_EQ(edda::code_of(p.error()), errc::invalid_producer_group)
      << "'" << bad << "': " << render(p.error());
  }
  // The longest valid name and every allowed character.
  auto longest = producer(std::string(120, 'g'), any);
  EXPECT_TRUE(longest);
  auto mixed = producer("Az09_.-", any);
  EXPECT_TRUE(mixed);
  // No checker at all.
  auto c = remote();
  ASSERT_TRUE(c);
  txn_producer_options o;
  o.group = "shop";
  auto none = transaction_producer::start(*c, o, nullptr);
  ASSERT_FALSE(none);
  EXPECT_EQ(edda::code_of(none.error()), errc::invalid_argument);
}

TEST_P(TxnTest, HalfMessageThatCannotBeStoredRunsNoLocalTransaction) {
  auto p = producer("shop", [](const txn_check&) { return txn_outcome::commit; });
  ASSERT_TRUE(p);
  int ran = 0;
  auto local = [&](const message&, const std::string&) {
    ++ran;
    return txn_outcome::commit;
  };
  message to_nowhere = msg("to-nowhere");
  to_nowhere.topic = "no-such-topic";
  auto r = p->send_in_transaction(to_nowhere, local);
  ASSERT_FALSE(r) << "a half message to an unknown topic was stored";
  EXPECT_EQ(edda::code_of(r.error()), errc::unknown_topic) << render(r.error());

  message too_big = msg("too-big", std::string(settings_.max_message_size + 1, 'x'));
  auto big = p->send_in_transaction(too_big, local);
  ASSERT_FALSE(big);
  EXPECT_EQ(edda::code_of(big.error()), errc::message_too_large)
    << render(big.error());

  message no_topic = msg("no-topic");
  no_topic.topic.clear();
  auto nt = p->send_in_transaction(no_topic, local);
  ASSERT_FALSE(nt);
  EXPECT_EQ(edda::code_of(nt.error()), errc::invalid_argument);

  EXPECT_EQ(ran, 0) << "a local transaction ran without a stored half message";
  auto pending = admin::txn_list(*conn_);
  ASSERT_TRUE(pending) << render(pending.error());
  EXPECT_EQ(pending->records_size(), 0) << "something was stored";
  auto topics = admin::list_topics(*conn_, true);
  ASSERT_TRUE(topics) << render(topics.error());
  for (auto& t : topics->topics())
    EXPECT_NE(t.meta().name(), "no-such-topic") << "the half message created its topic";
  expect_delivered_exactly({});
}

// -- restart ------------------------------------------------------------------------

TEST_P(TxnTest, RestartedNodeChecksBackEveryPendingTransaction) {
  const std::string group = "restart";
  // Ten half messages without an outcome: their producer leaves before
  // ending any of them. Even ids will be committed, odd ones rolled back.
  constexpr int n = 10;
  std::vector<std::string> ids, txns;
  std::set<std::string> to_commit;
  decisions dec;
  for (int i = 0; i < n; ++i) {
    ids.push_back("pending-" + std::to_string(i));
    if (i % 2 == 0)
      to_commit.insert(ids.back());
    dec.set(ids.back(), i % 2 == 0 ? txn_outcome::commit : txn_outcome::rollback);
  }
  std::map<std::string, int64_t> first_due;
  {
    auto p = producer(group, [](const txn_check&) { return txn_outcome::unknown; });
    ASSERT_TRUE(p);
    for (auto& id : ids) {
      auto r = send(*p, id, txn_outcome::unknown);
      ASSERT_FALSE(r.txn_id.empty());
      txns.push_back(r.txn_id);
    }
  }
  for (auto& t : txns) {
    auto rec = show(t);
    ASSERT_TRUE(rec);
    first_due[t] = rec->next_check_ms();
  }
  // With nobody to ask, the node moves each next check on (in memory).
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto& t : txns) {
        auto rec = admin::txn_show(*conn_, t);
        if (!rec || rec->next_check_ms() <= first_due[t])
          return false;
      }
      return true;
    },
    10s))
    << "the node never tried to check back";
  // A member that is not sure yet answers unknown once for each, then leaves.
  {
    std::atomic<int> unsure{0};
    auto p = producer(group, [&](const txn_check&) {
      ++unsure;
      return txn_outcome::unknown;
    });
    ASSERT_TRUE(p);
    ASSERT_TRUE(wait_until(
      [&] {
        for (auto& t : txns) {
          auto rec = admin::txn_show(*conn_, t);
          if (!rec || rec->checks() < 1)
            return false;
        }
        return true;
      },
      10s))
      << "not every pending transaction was checked once";
    EXPECT_GE(unsure.load(), n);
  }
  for (auto& t : txns) {
    auto rec = show(t);
    ASSERT_TRUE(rec);
    ASSERT_EQ(rec->state(), pb::TxnRecord::PREPARED) << describe(*rec);
    ASSERT_LT(rec->checks(), max_checks) << describe(*rec);
  }
  {
    auto pending = admin::txn_list(*conn_);
    ASSERT_TRUE(pending) << render(pending.error());
    ASSERT_EQ(pending->records_size(), n);
  }
  EXPECT_EQ(log_size(), 0u);

  stop_node();
  ASSERT_TRUE(start_node());
  conn_ = remote();
  ASSERT_TRUE(conn_);
  {
    // Everything is still pending after the restart, nothing visible.
    auto pending = admin::txn_list(*conn_);
    ASSERT_TRUE(pending) << render(pending.error());
    std::set<std::string> listed;
    for (auto& r : pending->records()) {
      listed.insert(r.txn_id());
      EXPECT_EQ(r.state(), pb::TxnRecord::PREPARED);
      EXPECT_EQ(r.producer_group(), group) << "a malformed record is listed";
    }
    EXPECT_EQ(listed, std::set<std::string>(txns.begin(), txns.end()));
    EXPECT_EQ(pending->records_size(), n) << "a transaction is listed twice";
  }
  start_audit();

  // A member that knows the outcomes joins: everything settles.
  auto p = producer(group, dec.checker());
  ASSERT_TRUE(p);
  std::string unresolved;
  EXPECT_TRUE(wait_until(
    [&] {
      unresolved.clear();
      for (auto& t : txns) {
        auto rec = admin::txn_show(*conn_, t);
        if (!rec || rec->state() == pb::TxnRecord::PREPARED)
          unresolved += " " + t;
      }
      return unresolved.empty();
    },
    15s, 50ms))
    << "still unresolved:" << unresolved;
  for (size_t i = 0; i < txns.size(); ++i) {
    auto rec = show(txns[i]);
    ASSERT_TRUE(rec);
    auto want = to_commit.count(ids[i]) ? pb::TxnRecord::COMMITTED
                                        : pb::TxnRecord::ROLLED_BACK;
    EXPECT_EQ(rec->state(), want) << ids[i] << ": " << describe(*rec);
    EXPECT_EQ(rec->resolved_by(), "check-back") << ids[i];
  }
  pb::TxnRecords last;
  EXPECT_TRUE(wait_until(
    [&] {
      auto pending = admin::txn_list(*conn_);
      if (!pending)
        return false;
      last = std::move(*pending);
      return last.records_size() == 0;
    },
    10s))
    << "txn list still shows " << last.records_size() << " records, first: "
    << (last.records_size() > 0 ? "'" + last.records(0).txn_id() + "' "
                                    + describe(last.records(0))
                                : std::string{});
  expect_delivered_exactly(to_commit);
  for (auto& id : ids)
    EXPECT_LE(dec.asked(id), 1u) << id << " asked again after it was settled";
  EXPECT_TRUE(alerts_of("txn_policy").empty());
}

// -- the child producer ------------------------------------------------------------

/// --child-producer PORT GROUP MSG_ID LEDGER door|node: joins GROUP, sends MSG_ID in a
/// transaction whose local transaction appends "MSG_ID TXN_ID" to LEDGER
/// (fsync'd) and says commit. With txn.before_end=crash@1 armed it is killed
/// before the commit leaves; if it gets past that, it exits 3.
int run_child_producer(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: --child-producer PORT GROUP MSG_ID LEDGER "
                         "door|node\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  auto port = static_cast<uint16_t>(std::stoi(argv[2]));
  std::string group = argv[3], id = argv[4], ledger = argv[5];
  edda::client::connect_options co;
  co.door = std::strcmp(argv[6], "door") == 0;
  auto conn = connection::open("127.0.0.1", port, co);
  if (!conn) {
    std::fprintf(stderr, "child: %s\n", render(conn.error()).c_str());
    return 1;
  }
  txn_producer_options o;
  o.group = group;
  auto p = transaction_producer::start(*conn, o, [](const txn_check&) {
    return txn_outcome::unknown;
  });
  if (!p) {
    std::fprintf(stderr, "child: %s\n", render(p.error()).c_str());
    return 1;
  }
  auto r = (*p)->send_in_transaction(msg(id), [&](const message&,
                                                  const std::string& txn) {
    int fd = ::open(ledger.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
    auto line = id + " " + txn + "\n";
    bool ok = fd >= 0 && ::write(fd, line.data(), line.size())
                           == static_cast<ssize_t>(line.size());
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
    std::printf("child: local transaction %s for %s: %s\n", txn.c_str(),
                id.c_str(), ok ? "commit" : "ledger write failed");
    return ok ? txn_outcome::commit : txn_outcome::rollback;
  });
  if (!r) {
    std::fprintf(stderr, "child: send failed: %s\n", render(r.error()).c_str());
    return 1;
  }
  std::printf("child: survived txn.before_end (ended=%d)\n", r->ended ? 1 : 0);
  return 3;
}

// -- pipelined transactions (send_in_transaction_async) -------------------------

TEST_P(TxnTest, PipelinedTransactionsCommitRollBackAndRefuseItemByItem) {
  // Many transactions in flight from one thread travel in batches; each one
  // still gets its own outcome: committed ones are delivered once, rolled
  // back ones never, undecided ones wait for check-back, and a half
  // message the node refuses fails alone without running its local
  // transaction.
  decisions dec;
  auto p = producer("pipelined", dec.checker(), {}, 60000);
  ASSERT_TRUE(p);
  constexpr int n = 300;
  std::mutex mtx;
  std::map<std::string, caf::expected<txn_result>> results;
  std::set<std::string> ran_local;
  std::set<std::string> committed, undecided;
  for (int i = 0; i < n; ++i) {
    auto id = "p-" + std::to_string(i);
    auto local = i % 3 == 0   ? txn_outcome::commit
                 : i % 3 == 1 ? txn_outcome::rollback
                              : (i % 30 == 2 ? txn_outcome::unknown
                                             : txn_outcome::commit);
    if (local == txn_outcome::commit)
      committed.insert(id);
    if (local == txn_outcome::unknown)
      undecided.insert(id);
    message m = msg(id);
    if (i == 151) {
      m.topic = "no-such-topic"; // refused: unknown_topic
      committed.erase(id);
    }
    if (i == 152) {
      m.body.assign(settings_.max_message_size + 1, 'x'); // refused: too large
      committed.erase(id);
      undecided.erase(id);
    }
    p->send_in_transaction_async(
      std::move(m),
      [&, id, local](const message& got, const std::string&) {
        EXPECT_EQ(got.id, id);
        std::lock_guard<std::mutex> guard{mtx};
        ran_local.insert(id);
        return local;
      },
      [&, id](caf::expected<txn_result> r) {
        std::lock_guard<std::mutex> guard{mtx};
        EXPECT_EQ(results.count(id), 0u) << id << " called back twice";
        results.emplace(id, std::move(r));
      });
  }
  p->flush();
  std::lock_guard<std::mutex> guard{mtx};
  ASSERT_EQ(results.size(), static_cast<size_t>(n));
  for (auto& [id, r] : results) {
    if (id == "p-151" || id == "p-152") {
      ASSERT_FALSE(r) << id << " should have been refused";
      EXPECT_EQ(edda::code_of(r.error()), id == "p-151" ? errc::unknown_topic
                                                  : errc::message_too_large)
        << render(r.error());
      EXPECT_EQ(ran_local.count(id), 0u) << id << ": local ran without half";
      continue;
    }
    ASSERT_TRUE(r) << id << ": " << render(r.error());
    EXPECT_EQ(ran_local.count(id), 1u) << id;
    if (undecided.count(id) != 0) {
      EXPECT_FALSE(r->ended) << id;
      EXPECT_EQ(edda::code_of(r->end_error), errc::txn_outcome_unknown) << id;
      continue;
    }
    EXPECT_TRUE(r->ended) << id << ": " << render(r->end_error);
    EXPECT_EQ(r->stored.has_value(), committed.count(id) != 0) << id;
    if (r->stored) {
      EXPECT_EQ(r->stored->id, id);
      EXPECT_EQ(r->stored->topic, topic);
    }
  }
  expect_delivered_exactly(committed);
  // The undecided ones are still pending at the node, to be checked back.
  auto pending = admin::txn_list(*conn_, 1000);
  ASSERT_TRUE(pending) << render(pending.error());
  EXPECT_EQ(static_cast<size_t>(pending->records_size()), undecided.size());
}

INSTANTIATE_TEST_SUITE_P(Over, TxnTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "ClientDoor" : "NodePort";
                         });

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--child-producer") == 0)
    return run_child_producer(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
