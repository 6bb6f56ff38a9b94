// Retry and dead letters. A payment-notification handler fails for one
// message ("order-13": the merchant's endpoint is down). edda redelivers it
// on the group's delay schedule (shortened here to 200ms 400ms 800ms),
// moves it to %DLQ%notify after max_reconsume = 3 failed redeliveries,
// raises an alert, and, once the endpoint is fixed, `dlq redrive` delivers
// it again. Every other message is delivered once. Exits 1 if any of that
// does not happen.
#include "base/errc.hpp"
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "node/embedded_node.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>
#include <unistd.h>

using namespace edda;
using namespace std::chrono_literals;

namespace {
template <class Pred>
bool wait_until(Pred p, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!p()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}
} // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  config::node_settings s;
  char tmpl[] = "/tmp/edda-retry-XXXXXX";
  s.data_dir = argc > 1 ? argv[1] : ::mkdtemp(tmpl);
  s.log_level = "warn";
  node::start_options in_process;
  in_process.listen = false; // this process only: no port
  auto node = node::embedded_node::start(s, in_process);
  if (!node) {
    std::fprintf(stderr, "cannot start node: %s\n", render(node.error()).c_str());
    return 1;
  }
  std::atomic<int> alerts{0};
  (*node)->alerts().add_hook([&](const alert& a) {
    std::printf("  ALERT [%s] %s: %s\n", a.kind.c_str(), a.subject.c_str(),
                a.detail.c_str());
    alerts++;
  });
  auto conn = (*node)->connect();
  if (auto t = client::admin::create_topic(conn, "payments", 2); !t) {
    std::fprintf(stderr, "create topic: %s\n", render(t.error()).c_str());
    return 1;
  }
  std::mutex mtx;
  std::map<std::string, int> deliveries;
  std::atomic<bool> endpoint_fixed{false};
  auto t0 = now_ms();
  client::consumer_options o;
  o.group = "notify";
  o.topic = "payments";
  o.max_reconsume = 3;
  o.retry_delays_ms = {200, 400, 800};
  auto c = client::consumer::start(conn, o, [&](const client::received& r) {
    std::lock_guard<std::mutex> guard{mtx};
    deliveries[r.msg.key]++;
    if (r.msg.key != "order-13")
      return client::consume_result::success;
    std::printf("  t=%5lld ms  %s delivery %d (reconsume_times %u)%s\n",
                static_cast<long long>(now_ms() - t0), r.msg.key.c_str(),
                deliveries[r.msg.key], r.reconsume_times,
                endpoint_fixed ? " -> merchant notified" : " -> endpoint down, retry later");
    return endpoint_fixed ? client::consume_result::success
                          : client::consume_result::retry_later;
  });
  if (!c) {
    std::fprintf(stderr, "subscribe: %s\n", render(c.error()).c_str());
    return 1;
  }
  {
    client::producer prod{conn};
    for (int i = 10; i < 20; ++i) {
      client::message m;
      m.topic = "payments";
      m.key = "order-" + std::to_string(i);
      m.body = "payment of order " + std::to_string(i) + " completed";
      if (auto r = prod.send(std::move(m)); !r) {
        std::fprintf(stderr, "send: %s\n", render(r.error()).c_str());
        return 1;
      }
    }
  }
  std::printf("sent 10 payment notifications; order-13's merchant endpoint is "
              "down\n");
  bool ok = true;
  auto check = [&](bool cond, const char* what) {
    std::printf("%s %s\n", cond ? "  ok:" : "  FAILED:", what);
    ok = ok && cond;
  };
  check(wait_until([&] { return alerts.load() >= 1; }, 15s),
        "order-13 reached the dead-letter queue with an alert");
  auto dlq = client::admin::dlq_list(conn, "notify");
  check(dlq && dlq->entries_size() == 1
          && dlq->entries(0).message().key() == "order-13",
        "%DLQ%notify holds exactly order-13");
  {
    std::lock_guard<std::mutex> guard{mtx};
    check(deliveries["order-13"] == 4,
          "order-13 was delivered 1 + 3 times (max_reconsume = 3)");
    int once = 0;
    for (auto& [k, n] : deliveries)
      once += (k != "order-13" && n == 1);
    check(once == 9, "the 9 other notifications were delivered exactly once");
  }
  std::printf("the endpoint is fixed; redriving the dead letter\n");
  endpoint_fixed = true;
  auto red = client::admin::dlq_redrive(conn, "notify");
  check(red && red->count() == 1, "one dead letter redriven");
  check(wait_until(
          [&] {
            std::lock_guard<std::mutex> guard{mtx};
            return deliveries["order-13"] == 5;
          },
          10s),
        "order-13 delivered again after the redrive and acknowledged");
  std::this_thread::sleep_for(300ms);
  auto after = client::admin::dlq_list(conn, "notify");
  check(after && after->entries_size() == 0, "%DLQ%notify is empty");
  (*c)->stop();
  (*node)->stop();
  std::printf(ok ? "retry and dead-letter flow behaved as specified\n"
                 : "retry and dead-letter flow FAILED\n");
  return ok ? 0 : 1;
}
