// Every client resumes within about a second of its node being back after
// kill -9: calls in flight when the connection drops fail at once (CAF 0.17
// would let them wait for their 30 s timeout) and the next call reconnects.
//
// Clients: a plain producer, a blocking transactional producer
// (send_in_transaction), a pipelined one (send_in_transaction_async) and a
// consumer, all busy when the node is killed. After the restart each must
// succeed again (the consumer: receive a message produced after the
// restart) within `resume_limit` of the node's "listening" line.
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "node_process.hpp"

#include <atomic>
#include <mutex>

namespace edda::fault {
namespace {

using client::txn_outcome;

constexpr const char* topic = "resume";
// Generous for a 2-core machine running other tests; the defect this guards
// against stalled for 30 s.
constexpr milliseconds resume_limit{2000};

class ResumeTest : public NodeFixture {
protected:
  ResumeTest() : NodeFixture("edda-resume") {
  }
};

/// The first success of one client after a point in time.
struct first_success {
  std::mutex mtx;
  std::optional<clock_type::time_point> after;
  std::optional<clock_type::time_point> at;
  uint64_t ok = 0, failed = 0;

  void arm(clock_type::time_point t) {
    std::lock_guard<std::mutex> guard{mtx};
    after = t;
    at.reset();
  }
  void record(bool success) {
    auto now = clock_type::now();
    std::lock_guard<std::mutex> guard{mtx};
    (success ? ok : failed)++;
    if (success && after && !at && now >= *after)
      at = now;
  }
  std::optional<milliseconds> delay() {
    std::lock_guard<std::mutex> guard{mtx};
    if (!after || !at)
      return std::nullopt;
    return ch::duration_cast<milliseconds>(*at - *after);
  }
};

TEST_F(ResumeTest, EveryClientResumesWithinASecondOrTwoOfTheNodesRestart) {
  start_listening_node();
  auto conn = client::connection::open("127.0.0.1", port_, quick_options());
  ASSERT_TRUE(conn) << render(conn.error());
  ASSERT_TRUE(client::admin::create_topic(*conn, topic, 2));

  std::atomic<bool> stop{false};
  first_success plain, blocking_txn, async_txn, consumed;
  // The clients first: the load threads use them, so they are joined
  // (below) before the clients are destroyed.
  client::producer prod{*conn};
  auto checker = [](const client::txn_check&) { return txn_outcome::commit; };
  client::txn_producer_options to;
  to.group = "resume-txn";
  auto txn = client::transaction_producer::start(*conn, to, checker);
  ASSERT_TRUE(txn) << render(txn.error());
  std::atomic<bool> count_consumed{false};
  client::consumer_options co;
  co.group = "resume-consumers";
  co.topic = topic;
  auto cons = client::consumer::start(*conn, co, [&](const client::received&) {
    if (count_consumed)
      consumed.record(true);
    return client::consume_result::success;
  });
  ASSERT_TRUE(cons) << render(cons.error());
  std::vector<std::thread> threads;
  at_exit join{[&] {
    stop = true;
    for (auto& t : threads)
      t.join();
  }};

  threads.emplace_back([&] {
    for (uint64_t i = 0; !stop && i < 200000; ++i) {
      client::message m;
      m.topic = topic;
      m.body = "plain-" + std::to_string(i);
      plain.record(static_cast<bool>(prod.send(m)));
      std::this_thread::sleep_for(milliseconds(5));
    }
  });

  threads.emplace_back([&] {
    for (uint64_t i = 0; !stop && i < 200000; ++i) {
      client::message m;
      m.topic = topic;
      m.body = "txn-" + std::to_string(i);
      auto r = (*txn)->send_in_transaction(
        m, [](const client::message&, const std::string&) {
          return txn_outcome::commit;
        });
      blocking_txn.record(r && r->ended);
      std::this_thread::sleep_for(milliseconds(5));
    }
  });
  threads.emplace_back([&] {
    for (uint64_t i = 0; !stop && i < 200000; ++i) {
      for (int k = 0; k < 16; ++k) {
        client::message m;
        m.topic = topic;
        m.body = "async-" + std::to_string(i) + "-" + std::to_string(k);
        (*txn)->send_in_transaction_async(
          m,
          [](const client::message&, const std::string&) {
            return txn_outcome::commit;
          },
          [&](caf::expected<client::txn_result> r) {
            async_txn.record(r && r->ended);
          });
      }
      (*txn)->flush();
      std::this_thread::sleep_for(milliseconds(5));
    }
  });

  // Busy before the kill.
  ASSERT_TRUE(eventually(seconds(20), [&] {
    std::lock_guard<std::mutex> a{plain.mtx}, b{blocking_txn.mtx},
      c{async_txn.mtx};
    return plain.ok > 20 && blocking_txn.ok > 20 && async_txn.ok > 100;
  }));
  kill9(*nodes_.back());
  std::this_thread::sleep_for(milliseconds(500));
  auto& again = start_node(data_dir_, port_);
  ASSERT_TRUE(wait_listening(again, seconds(20)))
    << tail_of(read_file(again.log_path));
  auto back = clock_type::now();
  for (auto* f : {&plain, &blocking_txn, &async_txn, &consumed})
    f->arm(back);
  count_consumed = true;
  ASSERT_TRUE(eventually(seconds(40), [&] {
    return plain.delay() && blocking_txn.delay() && async_txn.delay()
           && consumed.delay();
  })) << "plain " << (plain.delay() ? "resumed" : "stalled") << ", blocking "
      << (blocking_txn.delay() ? "resumed" : "stalled") << ", async "
      << (async_txn.delay() ? "resumed" : "stalled") << ", consumer "
      << (consumed.delay() ? "resumed" : "stalled");
  std::printf("[ resume   ] after the restart: plain %lld ms, "
              "send_in_transaction %lld ms, async transactions %lld ms, "
              "consumer %lld ms\n",
              static_cast<long long>(plain.delay()->count()),
              static_cast<long long>(blocking_txn.delay()->count()),
              static_cast<long long>(async_txn.delay()->count()),
              static_cast<long long>(consumed.delay()->count()));
  EXPECT_LE(*plain.delay(), resume_limit);
  EXPECT_LE(*blocking_txn.delay(), resume_limit);
  EXPECT_LE(*async_txn.delay(), resume_limit);
  EXPECT_LE(*consumed.delay(), resume_limit);
  stop = true;
}

} // namespace
} // namespace edda::fault
