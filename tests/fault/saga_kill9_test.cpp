// Fault test of sagas: `edda node` runs as a separate process with a
// declared saga type (saga.types) whose steps are served by named
// participants in THIS process (a participant_host over TCP), and is killed
// with SIGKILL three times at random points in the middle of a load of
// sagas, then restarted on the same data dir and port.
//
//   pay = debit, credit, +points, notify~
//
// debit takes the amount from alice, credit gives it to bob, points (run
// alongside credit) gives bob a point, notify is best effort. Failures are
// injected: every action fails (retryable) with some probability, an amount
// over 900 makes the debit fail for good ("insufficient funds") and a
// "poison" input makes the credit fail for good, so that both forward and
// compensating sagas are under way when the node dies.
//
// The participants guard by idempotency key, as a real one must: a step in
// flight at a crash is sent again with the same key, and a repeat changes
// nothing. Invariants, checked once every saga has ended:
//   * every key is "<saga id>/<step>", and no saga's step took effect twice
//     (counted per saga and step, so a key that changed would show);
//   * every saga is completed, compensated or failed (none stays open), and
//     none is failed (compensations never fail here);
//   * no action arrived after its compensation had been applied;
//   * each saga's effects match its end: completed = debit, credit, points
//     applied and not undone; compensated = whatever was applied is undone;
//   * the money balances: alice + bob == what alice had; bob == the sum of
//     the completed amounts.
//
// Set EDDA_FAULT_SEED to replay the random choices of a run (printed).
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "node_process.hpp"
#include "sagas/remote.hpp"
#include "sagas/saga.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace edda::fault {
namespace {

using sagas::step_request;
using sagas::step_result;
namespace pb = client::admin::pb;

const std::vector<std::string> node_settings = {
  R"(saga.types=["pay = debit, credit, +points, notify~"])",
  "saga.step_timeout=1s",
  "saga.step_attempts=8",
  "saga.step_backoff=50ms",
  "saga.shards=4",
  "log.level=warn",
};

constexpr int64_t alice_start = 1'000'000'000;

/// The participants' side: accounts that apply each key at most once.
class bank {
public:
  explicit bank(uint64_t seed) : rng_(seed) {}

  /// The handler for participant `step` (action or ".undo").
  step_result handle(const std::string& step, bool undo, const step_request& r) {
    auto amount = amount_of(r.input);
    std::lock_guard<std::mutex> guard{mtx_};
    ++deliveries_;
    auto key = r.idempotency_key;
    if (key != r.saga_id + "/" + r.step)
      ++odd_keys_;
    auto& k = keys_[key];
    if (undo) {
      if (k.undone)
        return step_result::success("repeat");
      k.undone = true; // also an empty compensation: a later try is refused
      if (k.applied)
        apply(step, r.saga_id, -amount);
      return step_result::success();
    }
    if (k.undone) {
      ++action_after_undo_;
      return step_result::failure("cancelled already", false);
    }
    if (k.applied)
      return step_result::success("repeat");
    if (std::uniform_int_distribution<int>{1, 100}(rng_) <= 15)
      return step_result::failure("injected: try again");
    if (step == "debit" && amount > 900)
      return step_result::failure("insufficient funds", false);
    if (step == "credit" && r.input.find("poison") != std::string::npos)
      return step_result::failure("account closed", false);
    k.applied = true;
    // Counted per saga and step, not per key: a key that changed across a
    // crash (a saga started twice, an attempt in the key) shows up here.
    ++effects_[r.saga_id + ":" + step];
    apply(step, r.saga_id, amount);
    return step_result::success();
  }

  step_result notify(const step_request&) {
    std::lock_guard<std::mutex> guard{mtx_};
    ++notified_;
    return std::uniform_int_distribution<int>{1, 2}(rng_) == 1
             ? step_result::success()
             : step_result::failure("merchant offline");
  }

  static int64_t amount_of(const std::string& input) {
    auto at = input.find("\"amount\":");
    return at == std::string::npos ? 0 : std::atoll(input.c_str() + at + 9);
  }

  struct key_state {
    bool applied = false, undone = false;
  };

  std::mutex mtx_;
  std::mt19937_64 rng_;
  std::map<std::string, key_state> keys_;
  std::map<std::string, int> effects_; // "<saga>:<step>" -> applications
  uint64_t odd_keys_ = 0;
  std::map<std::string, int64_t> balance_{{"alice", alice_start}, {"bob", 0}};
  std::map<std::string, int64_t> points_;
  uint64_t deliveries_ = 0, action_after_undo_ = 0, notified_ = 0;

private:
  void apply(const std::string& step, const std::string& saga, int64_t x) {
    if (step == "debit")
      balance_["alice"] -= x;
    else if (step == "credit")
      balance_["bob"] += x;
    else if (step == "points")
      points_[saga] += x > 0 ? 1 : -1;
  }
};

class SagaKill9Test : public NodeFixture {
protected:
  SagaKill9Test() : NodeFixture("edda-saga-fault", node_settings) {}
  void scenario(bool door);
};

/// Sagas with a participant host across kill -9, over the node port or the client door.
void SagaKill9Test::scenario(bool door) {
  auto seed = fault_seed();
  random_points pick{seed};
  constexpr int kills = 3;
  constexpr int total = 400;
  constexpr int load_threads = 2;

  auto& first = start_listening_node();
  ASSERT_TRUE(first.pid > 0 && !first.reaped);
  auto conn = open_client(door);
  ASSERT_TRUE(conn) << render(conn.error());

  bank b{seed ^ 0x5a5a};
  std::map<std::string, sagas::step_function> handlers;
  for (std::string step : {"debit", "credit", "points"}) {
    handlers["pay." + step] = [&b, step](const step_request& r) {
      return b.handle(step, false, r);
    };
    handlers["pay." + step + ".undo"] = [&b, step](const step_request& r) {
      return b.handle(step, true, r);
    };
  }
  handlers["pay.notify"] = [&b](const step_request& r) { return b.notify(r); };
  auto host_conn = open_client(door);
  ASSERT_TRUE(host_conn) << render(host_conn.error());
  sagas::host_options ho;
  ho.client_id = "bank";
  ho.workers = 2;
  auto host = sagas::participant_host::start(*host_conn, handlers, ho);
  ASSERT_TRUE(host) << render(host.error());

  // The load: sagas pay-0 .. pay-(total-1); a start that fails (the node is
  // down) is repeated with the same id (start is idempotent).
  std::map<std::string, std::string> inputs;
  {
    std::mt19937_64 in_rng{seed + 7};
    for (int i = 0; i < total; ++i) {
      auto roll = std::uniform_int_distribution<int>{1, 100}(in_rng);
      auto amount = roll <= 10 ? 1000 : 10 + roll;
      inputs["pay-" + std::to_string(i)]
        = "{\"amount\":" + std::to_string(amount)
          + (roll > 10 && roll <= 18 ? ",\"poison\":true}" : "}");
    }
  }
  std::atomic<int> next{0}, started{0};
  std::atomic<uint64_t> start_retries{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < load_threads; ++t)
    threads.emplace_back([&] {
      auto c = open_client(door);
      for (int i = next++; i < total; i = next++) {
        auto id = "pay-" + std::to_string(i);
        for (;;) {
          if (c && client::admin::saga_start(*c, "pay", id, inputs.at(id)))
            break;
          ++start_retries;
          std::this_thread::sleep_for(milliseconds(50));
          if (!c)
            c = open_client(door);
        }
        ++started;
        std::this_thread::sleep_for(milliseconds(2));
      }
    });
  at_exit join_load{[&] {
    next = total;
    for (auto& t : threads)
      if (t.joinable())
        t.join();
  }};

  std::string lives;
  node_process* node = &first;
  for (int life = 0; life < kills; ++life) {
    if (life > 0) {
      node = &start_listening_node();
      ASSERT_FALSE(node->reaped) << "life " << life << " did not start";
    }
    auto before = started.load();
    ASSERT_TRUE(eventually(seconds(30), [&] {
      return started.load() >= std::min(total, before + 30);
    })) << "no saga started on life " << life;
    auto delay = pick(20, 300);
    std::this_thread::sleep_for(milliseconds(delay)); // a random point
    kill9(*node);
    lives += " [" + std::to_string(started.load() - before)
             + " started, kill -9 " + std::to_string(delay) + " ms later]";
  }
  node = &start_listening_node();
  ASSERT_FALSE(node->reaped) << "the last life did not start";
  for (auto& t : threads)
    t.join();

  // Every saga ends.
  auto admin = open_client(door);
  ASSERT_TRUE(admin) << render(admin.error());
  std::map<std::string, pb::SagaRecord> ended;
  int open = -1;
  ASSERT_TRUE(eventually(seconds(120), [&] {
    pb::SagaList q;
    q.set_limit(100000);
    auto l = client::admin::saga_list(*admin, q);
    if (!l)
      return false;
    open = 0;
    ended.clear();
    for (auto& r : l->records()) {
      if (!sagas::is_terminal(static_cast<sagas::saga_state>(r.state())))
        ++open;
      ended[r.id()] = r;
    }
    return open == 0 && ended.size() == static_cast<size_t>(total);
  }, milliseconds(200)))
    << open << " sagas still open, " << ended.size() << " known; lives:" << lives;

  std::lock_guard<std::mutex> guard{b.mtx_};
  std::map<sagas::saga_state, int> by_state;
  int64_t completed_amount = 0;
  std::string bad;
  auto note = [&](const std::string& x) {
    if (bad.size() < 800)
      bad += " " + x;
  };
  for (auto& [id, rec] : ended) {
    auto state = static_cast<sagas::saga_state>(rec.state());
    ++by_state[state];
    auto key = [&](const char* step) { return b.keys_[id + "/" + step]; };
    if (state == sagas::saga_state::completed) {
      completed_amount += bank::amount_of(inputs[id]);
      for (auto step : {"debit", "credit", "points"})
        if (!key(step).applied || key(step).undone)
          note(id + ":" + step + " not applied or undone in a completed saga");
    } else if (state == sagas::saga_state::compensated) {
      for (auto step : {"debit", "credit", "points"})
        if (key(step).applied && !key(step).undone)
          note(id + ":" + step + " applied but not undone in a compensated saga");
    } else {
      note(id + " ended " + sagas::to_string(state) + ": " + rec.reason());
    }
  }
  int twice = 0;
  for (auto& [k, n] : b.effects_)
    if (n > 1) {
      ++twice;
      note(k + " applied " + std::to_string(n) + " times");
    }
  std::printf("[ sagas    ] %d completed, %d compensated, %d failed; %llu "
              "step deliveries, %llu start retries; lives:%s\n",
              by_state[sagas::saga_state::completed],
              by_state[sagas::saga_state::compensated],
              by_state[sagas::saga_state::failed],
              static_cast<unsigned long long>(b.deliveries_),
              static_cast<unsigned long long>(start_retries.load()),
              lives.c_str());
  EXPECT_TRUE(bad.empty()) << bad;
  EXPECT_EQ(by_state[sagas::saga_state::failed], 0);
  EXPECT_GT(by_state[sagas::saga_state::completed], 0);
  EXPECT_GT(by_state[sagas::saga_state::compensated], 0);
  EXPECT_EQ(twice, 0) << "steps applied more than once";
  EXPECT_EQ(b.odd_keys_, 0u) << "keys other than <saga id>/<step>";
  EXPECT_EQ(b.action_after_undo_, 0u) << "actions sent after their compensation";
  EXPECT_EQ(b.balance_["alice"] + b.balance_["bob"], alice_start);
  EXPECT_EQ(b.balance_["bob"], completed_amount);
  for (auto& [saga, pts] : b.points_)
    EXPECT_TRUE(pts == 0 || pts == 1) << saga << " has " << pts << " points";
  host->reset();
}

TEST_F(SagaKill9Test, EverySagaEndsAndTheBooksBalanceAcrossKills) {
  scenario(false);
}

TEST_F(SagaKill9Test, EverySagaEndsAndTheBooksBalanceAcrossKillsOverTheDoor) {
  scenario(true);
}

} // namespace
} // namespace edda::fault
