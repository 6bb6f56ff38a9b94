// Fault test of transactional messages: `edda node` runs as a separate
// process with short [txn] timings and is killed with SIGKILL (three times
// from outside at random points, once by the storage.after_commit failpoint
// right after an LMDB commit and before any reply) in the middle of a load
// of transactional sends, and restarted on the same data dir and port.
//
// The load is a random mix of
//   * commit:      the local transaction says commit;
//   * rollback:    the local transaction says rollback;
//   * lost commit: the local transaction records commit but reports
//                  unknown, so no end is sent and only check-back commits it.
// The checker answers from an in-memory map "txn id -> decided outcome"
// (unknown if never decided). A send that fails before its local
// transaction ran (the node is gone) is retried as a NEW transaction (new
// txn id, new message id, same business id); a half message stored by such
// a failed attempt is unknown to the checker, so the final policy (rollback)
// settles it.
//
// Invariant, checked from the outside once check-back has settled every
// transaction (txn list empty): for each of two fresh consumer groups, the
// set of delivered business ids is exactly the set decided commit (lost
// commits included), each delivered exactly once; nothing decided rollback
// and no orphaned attempt is ever delivered; every decided transaction's
// record says what was decided.
//
// Every wait is a poll with a deadline; every child process is killed in
// TearDown, also when an assertion fails. Set EDDA_FAULT_SEED to replay the
// random choices of a run (the seed is printed).
#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/consumer.hpp"
#include "client/transaction_producer.hpp"
#include "node_process.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
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
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using namespace edda;
using namespace edda::fault;
using client::txn_outcome;

constexpr uint32_t partitions = 4;
constexpr const char* topic = "txn-fault";
constexpr const char* group = "txn-fault-producers";
// Short [txn] timings: checks after 300 ms, 600 ms, then every 1 s; an
// orphaned half message (nobody decided it) is rolled back by the policy
// after 4 unknown answers, ~3 s after it was stored.
const std::vector<std::string> node_settings = {
  "txn.check_after=300ms", "txn.max_check_interval=1s", "txn.max_checks=4",
  "txn.check_timeout=1s"};

// -- small helpers (the shared ones are in node_process.hpp) ---------------------

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos;
       at = text.find(what, at + what.size()))
    ++n;
  return n;
}

std::string code_name(const caf::error& err) {
  return code_of(err) == errc::none ? std::string{"other"}
                                    : std::string{to_string(code_of(err))};
}

/// True once `cursor` has acknowledged everything in the log of `topic`:
/// a row on every partition, lag 0, nothing in flight. `log` gets the
/// number of messages in the log.
bool caught_up(const client::connection& c, const std::string& cursor,
               uint64_t& log) {
  auto info = client::admin::describe_topic(c, topic);
  if (!info || info->partitions_size() != static_cast<int>(partitions))
    return false;
  log = 0;
  for (auto& p : info->partitions())
    log += p.end_offset();
  std::set<uint32_t> rows;
  for (auto& g : info->groups()) {
    if (g.cursor() != cursor)
      continue;
    if (g.lag() != 0 || g.inflight() != 0)
      return false;
    rows.insert(g.partition());
  }
  return rows.size() == partitions;
}

class TxnKill9Test : public NodeFixture {
protected:
  TxnKill9Test() : NodeFixture("edda-txn-fault", node_settings) {
  }
  void scenario(bool door);
};

// -- the load ----------------------------------------------------------------------

enum class kind { commit, rollback, lost };

const char* name_of(kind k) {
  return k == kind::commit ? "commit" : k == kind::rollback ? "rollback" : "lost";
}

/// What the producer side decided. Written by local transactions, read by
/// the checker (the application's own store, as it were).
struct decisions {
  std::mutex mtx;
  std::unordered_map<std::string, txn_outcome> by_txn; // decided txn -> outcome
  std::map<std::string, kind> decided;                 // business id -> kind
  std::map<std::string, std::string> txn_of;           // business id -> txn id
  std::map<std::string, std::string> msg_of;           // business id -> message id
  std::map<std::string, uint64_t> failures_by_code;    // failed attempts
  std::map<std::string, std::string> first_failure;
  uint64_t attempts = 0;
  uint64_t retried = 0;      // business ids that needed more than one attempt
  uint64_t ended = 0;        // the node confirmed the producer's end
  uint64_t end_failed = 0;   // decided, but the end was not confirmed
  uint64_t answered_commit = 0, answered_rollback = 0, answered_unknown = 0;

  size_t decided_count() {
    std::lock_guard<std::mutex> guard{mtx};
    return decided.size();
  }

  txn_outcome check(const client::txn_check& c) {
    std::lock_guard<std::mutex> guard{mtx};
    auto i = by_txn.find(c.txn_id);
    auto o = i == by_txn.end() ? txn_outcome::unknown : i->second;
    (o == txn_outcome::commit     ? answered_commit
     : o == txn_outcome::rollback ? answered_rollback
                                  : answered_unknown)++;
    return o;
  }
};

/// One load thread: takes business ids from `next` until `stop`, decides
/// each at random and sends it in a transaction; an attempt that fails
/// before its local transaction ran is retried as a new transaction.
void load_loop(client::transaction_producer& p, decisions& dec,
               std::atomic<uint64_t>& next, std::atomic<bool>& stop,
               uint64_t seed) {
  std::mt19937_64 rng{seed};
  std::uniform_int_distribution<int> pct{0, 99};
  while (!stop) {
    auto bid = "b-" + std::to_string(next++);
    int roll = pct(rng);
    kind k = roll < 50 ? kind::commit : roll < 75 ? kind::rollback : kind::lost;
    for (int attempt = 0; !stop; ++attempt) {
      client::message m;
      m.topic = topic;
      m.key = bid;
      m.id = bid + "." + std::to_string(attempt);
      m.body = bid;
      m.properties["business_id"] = bid;
      bool ran = false;
      auto r = p.send_in_transaction(m, [&](const client::message& sent,
                                            const std::string& txn) {
        ran = true;
        std::lock_guard<std::mutex> guard{dec.mtx};
        dec.by_txn[txn] = k == kind::rollback ? txn_outcome::rollback
                                              : txn_outcome::commit;
        dec.decided[bid] = k;
        dec.txn_of[bid] = txn;
        dec.msg_of[bid] = sent.id;
        return k == kind::commit     ? txn_outcome::commit
               : k == kind::rollback ? txn_outcome::rollback
                                     : txn_outcome::unknown; // a lost commit
      });
      {
        std::lock_guard<std::mutex> guard{dec.mtx};
        ++dec.attempts;
        if (r) {
          if (attempt > 0)
            ++dec.retried;
          if (k != kind::lost)
            (r->ended ? dec.ended : dec.end_failed)++;
        } else {
          // Nothing was decided: the local transaction never ran.
          if (ran)
            ADD_FAILURE() << bid << ": the local transaction ran but the "
                          << "send reported " << render(r.error());
          auto code = code_name(r.error());
          if (dec.failures_by_code[code]++ == 0)
            dec.first_failure[code] = render(r.error());
        }
      }
      if (r)
        break;
      // Pace retries while the node is away (not a synchronization).
      std::this_thread::sleep_for(milliseconds(20));
    }
  }
}

/// Deliveries of one consumer group, by business id.
struct deliveries {
  std::mutex mtx;
  std::map<std::string, uint32_t> count;
  std::set<std::string> message_ids;
  uint64_t total = 0;
  uint64_t bad = 0; // body and property disagree

  client::consume_result record(const client::received& r) {
    std::lock_guard<std::mutex> guard{mtx};
    auto i = r.msg.properties.find("business_id");
    auto bid = i == r.msg.properties.end() ? std::string{} : i->second;
    if (bid != r.msg.body)
      ++bad;
    ++count[r.msg.body];
    message_ids.insert(r.msg.id);
    ++total;
    return client::consume_result::success;
  }
};

// -- the test ------------------------------------------------------------------------

/// Transactions under load across kill -9, over the node port or the client door.
void TxnKill9Test::scenario(bool door) {
  auto started = clock_type::now();
  auto seed = fault_seed();
  random_points pick{seed};
  constexpr int external_kills = 3;
  constexpr size_t target_decided = 1000;
  constexpr int load_threads = 4;
  // Four lives end in a SIGKILL: three from here, one from the failpoint
  // (not the first life: the topic is created there), after how many
  // commits. A transaction costs two commits (half message, end).
  int failpoint_life = pick(1, external_kills);
  int failpoint_n = pick(20, 200);

  auto& first = start_listening_node();
  ASSERT_TRUE(first.pid > 0 && !first.reaped);
  auto conn = open_client(door);
  ASSERT_TRUE(conn) << render(conn.error());
  {
    auto t = client::admin::create_topic(*conn, topic, partitions);
    ASSERT_TRUE(t) << render(t.error());
  }

  decisions dec; // before the producer: its checker reads it
  client::txn_producer_options po;
  po.group = group;
  po.timeout = seconds(5); // a request lost with the node fails soon
  auto prod = client::transaction_producer::start(
    *conn, po, [&](const client::txn_check& c) { return dec.check(c); });
  ASSERT_TRUE(prod) << render(prod.error());

  std::atomic<uint64_t> next{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < load_threads; ++t)
    threads.emplace_back([&, s = seed + 1 + static_cast<uint64_t>(t)] {
      load_loop(**prod, dec, next, stop, s);
    });
  at_exit stop_load{[&] {
    stop = true;
    for (auto& t : threads)
      if (t.joinable())
        t.join();
  }};

  int kills = 0;
  std::string lives; // what each life did, for the summary
  node_process* node = &first;
  for (int life = 0; life <= external_kills; ++life) {
    if (life > 0) {
      auto fp = life == failpoint_life
                  ? "storage.after_commit=crash@" + std::to_string(failpoint_n)
                  : std::string{};
      node = &start_listening_node(fp);
      ASSERT_FALSE(node->reaped) << "life " << life << " did not start";
    }
    auto before = dec.decided_count();
    auto born = clock_type::now();
    std::string how;
    if (life == failpoint_life) {
      // The failpoint may fire before anything is decided on this life.
      ASSERT_TRUE(wait_exit(*node, seconds(60)))
        << "the failpoint did not fire after " << failpoint_n << " commits";
      EXPECT_TRUE(node->exited_by_sigkill()) << node->describe_status();
      EXPECT_NE(read_file(node->log_path).find("crashing at storage.after_commit"),
                std::string::npos);
      how = "failpoint";
    } else {
      // Kill under load: wait until transactions go through on this life.
      ASSERT_TRUE(eventually(seconds(30), [&] {
        return dec.decided_count() >= before + 20;
      })) << "no transaction went through on life " << life;
      auto delay = pick(50, 300);
      std::this_thread::sleep_for(milliseconds(delay)); // a random point
      kill9(*node);
      how = "kill -9 " + std::to_string(delay) + " ms into the load";
    }
    ++kills;
    lives += " [" + std::to_string(dec.decided_count() - before)
             + " decided in "
             + std::to_string(
               ch::duration_cast<milliseconds>(clock_type::now() - born).count())
             + " ms, " + how + "]";
  }
  node = &start_listening_node();
  ASSERT_FALSE(node->reaped) << "the last life did not start";

  // The last life is clean: load until the target, then stop.
  ASSERT_TRUE(eventually(seconds(60), [&] {
    return dec.decided_count() >= target_decided;
  })) << "decided only " << dec.decided_count();
  stop = true;
  for (auto& t : threads)
    t.join();
  auto load_done = clock_type::now();

  // Check-back settles everything: lost commits, ends the kills swallowed,
  // orphaned half messages (rolled back by the policy).
  auto admin = open_client(door);
  ASSERT_TRUE(admin) << render(admin.error());
  int pending_left = -1;
  std::string pending_example;
  ASSERT_TRUE(eventually(seconds(60), [&] {
    auto l = client::admin::txn_list(*admin);
    if (!l)
      return false;
    pending_left = l->records_size();
    if (pending_left > 0)
      pending_example = l->records(0).txn_id() + " checks="
                        + std::to_string(l->records(0).checks());
    return pending_left == 0;
  }, milliseconds(100)))
    << pending_left << " transactions still pending, e.g. " << pending_example;
  auto settle_ms
    = ch::duration_cast<milliseconds>(clock_type::now() - load_done).count();

  std::lock_guard<std::mutex> d_guard{dec.mtx};
  std::set<std::string> committed, rolled_back;
  std::map<kind, size_t> kinds;
  for (auto& [bid, k] : dec.decided) {
    ++kinds[k];
    (k == kind::rollback ? rolled_back : committed).insert(bid);
  }

  // Every decided transaction is recorded as decided.
  size_t record_mismatch = 0, by_check_back = 0, by_producer = 0, by_other = 0;
  std::string examples;
  auto note = [&](const std::string& what) {
    if (examples.size() < 600)
      examples += " " + what;
  };
  for (auto& [bid, txn] : dec.txn_of) {
    auto rec = client::admin::txn_show(*admin, txn);
    if (!rec) {
      ++record_mismatch;
      note(bid + ":show:" + render(rec.error()));
      continue;
    }
    auto want = committed.count(bid) ? client::admin::pb::TxnRecord::COMMITTED
                                     : client::admin::pb::TxnRecord::ROLLED_BACK;
    if (rec->state() != want) {
      ++record_mismatch;
      note(bid + "(" + name_of(dec.decided[bid]) + "):state="
           + std::to_string(rec->state()) + ",by=" + rec->resolved_by());
    }
    if (rec->resolved_by() == "check-back")
      ++by_check_back;
    else if (rec->resolved_by() == "producer")
      ++by_producer;
    else
      ++by_other;
  }
  EXPECT_EQ(record_mismatch, 0u) << examples;

  // Two fresh groups read the whole log.
  std::vector<std::unique_ptr<deliveries>> seen;
  std::vector<uint64_t> logs;
  for (const char* g : {"audit-a", "audit-b"}) {
    seen.push_back(std::make_unique<deliveries>());
    auto& d = *seen.back();
    client::consumer_options co;
    co.group = g;
    co.topic = topic;
    co.from = client::consume_from::earliest;
    co.request_timeout = seconds(5);
    auto c = client::consumer::start(*admin, co, [&d](const client::received& r) {
      return d.record(r);
    });
    ASSERT_TRUE(c) << render(c.error());
    uint64_t log = 0;
    ASSERT_TRUE(eventually(seconds(60), [&] { return caught_up(*admin, g, log); },
                           milliseconds(100)))
      << "group " << g << " did not catch up with the log";
    (*c)->stop();
    logs.push_back(log);
  }

  std::string summary_groups;
  for (size_t gi = 0; gi < seen.size(); ++gi) {
    auto& d = *seen[gi];
    std::lock_guard<std::mutex> guard{d.mtx};
    std::string g = gi == 0 ? "audit-a" : "audit-b";
    std::set<std::string> delivered;
    size_t twice = 0;
    for (auto& [bid, n] : d.count) {
      delivered.insert(bid);
      if (n != 1) {
        ++twice;
        note(g + ":" + bid + "x" + std::to_string(n));
      }
    }
    size_t missing = 0, rolled_back_delivered = 0, never_decided = 0;
    for (auto& bid : committed)
      if (delivered.count(bid) == 0) {
        ++missing;
        note(g + ":missing:" + bid + "(" + name_of(dec.decided[bid]) + ")");
      }
    for (auto& bid : delivered) {
      if (rolled_back.count(bid) != 0) {
        ++rolled_back_delivered;
        note(g + ":rolled-back-delivered:" + bid);
      } else if (committed.count(bid) == 0) {
        ++never_decided;
        note(g + ":never-decided-delivered:" + bid);
      }
    }
    // What was delivered for a business id is its decided attempt, never
    // an orphaned earlier attempt.
    size_t wrong_attempt = 0;
    for (auto& mid : d.message_ids) {
      auto bid = mid.substr(0, mid.find('.'));
      auto i = dec.msg_of.find(bid);
      if (i == dec.msg_of.end() || i->second != mid) {
        ++wrong_attempt;
        note(g + ":orphan-attempt-delivered:" + mid);
      }
    }
    EXPECT_EQ(wrong_attempt, 0u) << g << ":" << examples;
    EXPECT_EQ(delivered, committed) << g << ":" << examples;
    EXPECT_EQ(twice, 0u) << g << ":" << examples;
    EXPECT_EQ(missing, 0u) << g << ":" << examples;
    EXPECT_EQ(rolled_back_delivered, 0u) << g << ":" << examples;
    EXPECT_EQ(never_decided, 0u) << g << ":" << examples;
    EXPECT_EQ(d.bad, 0u) << g;
    EXPECT_EQ(d.total, logs[gi]) << g << ": deliveries vs messages in the log";
    EXPECT_EQ(logs[gi], committed.size()) << "messages in the log";
    summary_groups += " " + g + "=" + std::to_string(d.total) + "/"
                      + std::to_string(delivered.size()) + " ids";
  }

  // The final policy only ever settled orphaned attempts (half messages
  // stored by a send that then failed, unknown to the checker), never a
  // decided transaction. Alert lines: "[alert] txn_policy TXN: ... (message
  // ID)".
  auto node_logs = all_node_logs();
  auto policy_alerts = count_of(node_logs, "[alert] txn_policy ");
  std::set<std::string> decided_messages;
  for (auto& [bid, mid] : dec.msg_of)
    decided_messages.insert(mid);
  size_t policy_on_decided = 0;
  {
    std::istringstream lines{node_logs};
    for (std::string line; std::getline(lines, line);) {
      if (line.find("[alert] txn_policy ") == std::string::npos)
        continue;
      auto at = line.rfind("(message ");
      auto mid = at == std::string::npos
                   ? std::string{}
                   : line.substr(at + 9, line.size() - at - 10);
      if (decided_messages.count(mid) != 0) {
        ++policy_on_decided;
        note("policy-on-decided:" + mid);
      }
    }
  }
  EXPECT_EQ(policy_on_decided, 0u) << examples;
  uint64_t failed_attempts = 0;
  for (auto& [code, n] : dec.failures_by_code)
    failed_attempts += n;
  EXPECT_LE(policy_alerts, failed_attempts)
    << "more policy decisions than orphaned attempts";
  std::string codes;
  for (auto& [code, n] : dec.failures_by_code)
    codes += " " + code + "=" + std::to_string(n);
  for (auto& [code, text] : dec.first_failure)
    std::printf("[ failure  ] first %s: %s\n", code.c_str(), text.c_str());
  std::printf(
    "[ summary  ] decided=%zu (commit=%zu rollback=%zu lost-commit=%zu) "
    "delivered-set==committed-set=%zu attempts=%llu retried-ids=%llu "
    "(failed attempts:%s) ends confirmed=%llu unconfirmed=%llu; records "
    "resolved by producer=%zu check-back=%zu other=%zu; checker answered "
    "commit=%llu rollback=%llu unknown=%llu; policy rollbacks of orphaned "
    "attempts=%zu; log=%llu;"
    "%s; settled %lld ms after the load; kills=%d (%d external, failpoint "
    "storage.after_commit=crash@%d on life %d); total %lld ms\n"
    "[ lives    ]%s\n",
    dec.decided.size(), kinds[kind::commit], kinds[kind::rollback],
    kinds[kind::lost], committed.size(),
    static_cast<unsigned long long>(dec.attempts),
    static_cast<unsigned long long>(dec.retried), codes.c_str(),
    static_cast<unsigned long long>(dec.ended),
    static_cast<unsigned long long>(dec.end_failed), by_producer,
    by_check_back, by_other,
    static_cast<unsigned long long>(dec.answered_commit),
    static_cast<unsigned long long>(dec.answered_rollback),
    static_cast<unsigned long long>(dec.answered_unknown), policy_alerts,
    static_cast<unsigned long long>(logs.empty() ? 0 : logs[0]),
    summary_groups.c_str(), static_cast<long long>(settle_ms), kills,
    external_kills, failpoint_n, failpoint_life,
    static_cast<long long>(
      ch::duration_cast<milliseconds>(clock_type::now() - started).count()),
    lives.c_str());
}

TEST_F(TxnKill9Test, DeliveredSetIsExactlyTheCommittedSet) {
  scenario(false);
}

TEST_F(TxnKill9Test, DeliveredSetIsExactlyTheCommittedSetOverTheDoor) {
  scenario(true);
}

} // namespace
