// Companion messaging: one topic, tags per department.
//   TagA = operations, TagB = customer service, TagC = orchestration.
// Each department's group subscribes to its own tag; compliance subscribes
// to "TagA || TagC" and the data centre to "*". Filtering happens at the
// node: a group never receives what its expression does not select.
// Prints the count per group and exits 1 if any count is wrong.
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "node/embedded_node.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <unistd.h>

using namespace edda;

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  config::node_settings s;
  char tmpl[] = "/tmp/edda-companion-XXXXXX";
  s.data_dir = argc > 1 ? argv[1] : ::mkdtemp(tmpl);
  s.log_level = "warn";
  node::start_options in_process;
  in_process.listen = false; // this process only: no port
  auto node = node::embedded_node::start(s, in_process);
  if (!node) {
    std::fprintf(stderr, "cannot start node: %s\n", render(node.error()).c_str());
    return 1;
  }
  auto conn = (*node)->connect();
  if (auto t = client::admin::create_topic(conn, "companion", 4); !t) {
    std::fprintf(stderr, "create topic: %s\n", render(t.error()).c_str());
    return 1;
  }
  struct dept {
    const char* group;
    const char* expression;
    int expected;
    std::atomic<int> got{0};
  };
  // 30 TagA, 20 TagB, 10 TagC.
  std::map<std::string, int> sent{{"TagA", 30}, {"TagB", 20}, {"TagC", 10}};
  dept depts[] = {{"operations", "TagA", 30},
                  {"customer-service", "TagB", 20},
                  {"orchestration", "TagC", 10},
                  {"compliance", "TagA || TagC", 40},
                  {"data-centre", "*", 60}};
  std::vector<std::unique_ptr<client::consumer>> consumers;
  for (auto& d : depts) {
    client::consumer_options o;
    o.group = d.group;
    o.topic = "companion";
    o.expression = d.expression;
    auto c = client::consumer::start(conn, o, [&d](const client::received&) {
      d.got++;
      return client::consume_result::success;
    });
    if (!c) {
      std::fprintf(stderr, "subscribe %s: %s\n", d.group,
                   render(c.error()).c_str());
      return 1;
    }
    consumers.push_back(std::move(*c));
  }
  {
    client::producer prod{conn};
    int n = 0;
    for (auto& [tag, count] : sent)
      for (int i = 0; i < count; ++i) {
        client::message m;
        m.topic = "companion";
        m.key = "customer-" + std::to_string(n++ % 7);
        m.tags = {tag};
        m.body = tag + " notice #" + std::to_string(i);
        prod.send_async(std::move(m), [](caf::expected<client::send_result> r) {
          if (!r)
            std::fprintf(stderr, "send failed: %s\n", render(r.error()).c_str());
        });
      }
    prod.flush();
  }
  std::printf("sent: 30 x TagA (operations), 20 x TagB (customer service), "
              "10 x TagC (orchestration) to topic 'companion'\n");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto all_in = [&] {
    for (auto& d : depts)
      if (d.got < d.expected)
        return false;
    return true;
  };
  while (!all_in() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // Anything extra would arrive now.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  bool ok = true;
  std::printf("%-18s %-14s %8s %8s\n", "group", "subscription", "expected",
              "received");
  for (auto& d : depts) {
    bool good = d.got == d.expected;
    ok = ok && good;
    std::printf("%-18s %-14s %8d %8d %s\n", d.group, d.expression, d.expected,
                d.got.load(), good ? "ok" : "WRONG");
  }
  consumers.clear();
  (*node)->stop();
  std::printf(ok ? "all groups received exactly what they subscribed to\n"
                 : "MISMATCH\n");
  return ok ? 0 : 1;
}
