// Fund purchase as a saga. A customer buys a target fund with money held in
// a money-market fund (MMF). The steps are: redeem the MMF units (the wallet
// service), buy the target fund (the fund service), notify the customer.
// Each step has a compensation except the last one.
//
// What happens:
//  1. alice buys F1 for 1000: every step succeeds.
//  2. bob buys F9, which is closed. The fund service refuses for good, so
//     bob's redemption is compensated and his MMF units come back.
//  3. carol buys F2 while the fund service is unreachable. Her purchase is
//     retried, then the node stops with the saga unfinished. After the
//     restart (the service is back) it resumes and completes. Her MMF is
//     redeemed once, because each service applies a key only once.
//  4. alice's order is submitted again: the same saga, with nothing done twice.
//  5. Audit: the MMF and fund ledgers together still hold every unit.
// Exits 1 if any of that does not happen.
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "node/embedded_node.hpp"
#include "sagas/saga.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unistd.h>

using namespace edda;
using namespace std::chrono_literals;
using sagas::saga_state;
using sagas::step_request;
using sagas::step_result;

namespace {

/// "customer=alice;fund=F1;amount=1000" -> the value of `key`.
std::string field(const std::string& input, const std::string& key) {
  auto at = input.find(key + "=");
  if (at == std::string::npos)
    return {};
  auto from = at + key.size() + 1;
  return input.substr(from, input.find(';', from) - from);
}

/// A service's books: units per account, each idempotency key applied once.
class books {
public:
  books(std::string name, std::map<std::string, int64_t> units)
    : name_(std::move(name)), units_(std::move(units)) {
  }

  step_result move(const step_request& r, const std::string& account,
                   int64_t delta) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto key = r.idempotency_key + (r.compensate ? "#undo" : "#do");
    if (applied_.count(key) != 0)
      return step_result::success("already applied");
    if (r.compensate && applied_.count(r.idempotency_key + "#do") == 0)
      return step_result::success("nothing to undo");
    if (!r.compensate && units_[account] + delta < 0)
      return step_result::failure("insufficient units in " + account, false);
    units_[account] += delta;
    applied_.insert(key);
    ++applications_[r.idempotency_key];
    return step_result::success();
  }

  int64_t total() {
    std::lock_guard<std::mutex> guard{mtx_};
    int64_t t = 0;
    for (auto& [a, u] : units_)
      t += u;
    return t;
  }

  int64_t units(const std::string& a) {
    std::lock_guard<std::mutex> guard{mtx_};
    return units_[a];
  }

  /// How often the action of `key` was applied (0 or 1 if all is well).
  int applications(const std::string& key) {
    std::lock_guard<std::mutex> guard{mtx_};
    return applications_[key];
  }

  void print() {
    std::lock_guard<std::mutex> guard{mtx_};
    std::printf("  %-6s", name_.c_str());
    for (auto& [a, u] : units_)
      std::printf("  %s=%lld", a.c_str(), static_cast<long long>(u));
    std::printf("\n");
  }

private:
  std::string name_;
  std::mutex mtx_;
  std::map<std::string, int64_t> units_;
  std::set<std::string> applied_;
  std::map<std::string, int> applications_;
};

struct world {
  books mmf{"MMF", {{"alice", 5000}, {"bob", 3000}, {"carol", 2000}}};
  books funds{"funds", {{"alice", 0}, {"bob", 0}, {"carol", 0}}};
  std::atomic<bool> fund_service_up{true};
  std::atomic<int> buy_attempts{0};
  std::set<std::string> closed{"F9"};
  std::mutex notes_mtx;
  std::vector<std::string> notes;
};

/// The fund purchase, as the business describes it.
sagas::saga_definition fund_purchase(world& w) {
  sagas::step_options retrying;
  retrying.retry.max_attempts = 50;
  retrying.retry.initial_backoff = 50ms;
  retrying.retry.max_backoff = 200ms;
  retrying.timeout = 2s;
  sagas::step_options last = retrying;
  last.compensable = false;
  auto amount = [](const step_request& r) {
    return std::stoll(field(r.input, "amount"));
  };
  sagas::saga_definition d("fund_purchase");
  d.step("redeem_mmf",
         [&w, amount](const step_request& r) {
           return w.mmf.move(r, field(r.input, "customer"),
                             r.compensate ? amount(r) : -amount(r));
         },
         [&w, amount](const step_request& r) {
           return w.mmf.move(r, field(r.input, "customer"), amount(r));
         },
         retrying)
    .step("buy_target_fund",
          [&w, amount](const step_request& r) {
            auto fund = field(r.input, "fund");
            if (w.closed.count(fund) != 0)
              return step_result::failure("fund " + fund + " is closed", false);
            ++w.buy_attempts;
            if (!w.fund_service_up)
              return step_result::failure("fund service unreachable");
            return w.funds.move(r, field(r.input, "customer"), amount(r));
          },
          [&w, amount](const step_request& r) {
            return w.funds.move(r, field(r.input, "customer"), -amount(r));
          },
          retrying)
    .step("notify",
          [&w](const step_request& r) {
            std::lock_guard<std::mutex> guard{w.notes_mtx};
            w.notes.push_back(r.saga_id);
            return step_result::success();
          },
          nullptr, last)
    .deadline(1min);
  return d;
}

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

const char* state_name(uint32_t s) {
  return sagas::to_string(static_cast<saga_state>(s));
}

/// Waits for `id` to end; prints its steps.
bool expect_end(const client::connection& c, const std::string& id,
                saga_state want) {
  wire::v1::SagaRecord last;
  bool ok = wait_until(
    [&] {
      auto r = client::admin::saga_show(c, id);
      if (r)
        last = *r;
      return r && sagas::is_terminal(static_cast<saga_state>(r->state()));
    },
    15s);
  std::printf("  saga %s: %s%s%s\n", id.c_str(), state_name(last.state()),
              last.reason().empty() ? "" : " - ", last.reason().c_str());
  for (auto& s : last.steps())
    std::printf("    %-16s attempts %u, compensations %u%s%s\n",
                s.name().c_str(), s.attempts(), s.compensations(),
                s.last_error().empty() ? "" : ", last error: ",
                s.last_error().c_str());
  if (!ok || static_cast<saga_state>(last.state()) != want) {
    std::printf("  EXPECTED %s\n", sagas::to_string(want));
    return false;
  }
  return true;
}

} // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  config::node_settings s;
  char tmpl[] = "/tmp/edda-fund-saga-XXXXXX";
  s.data_dir = argc > 1 ? argv[1] : ::mkdtemp(tmpl);
  s.log_level = "error";
  world w;
  auto start = [&]() -> std::unique_ptr<node::embedded_node> {
    node::start_options o;
    o.listen = false;
    o.sagas.push_back(fund_purchase(w));
    auto n = node::embedded_node::start(s, std::move(o));
    if (!n) {
      std::fprintf(stderr, "cannot start node: %s\n", render(n.error()).c_str());
      return nullptr;
    }
    (*n)->alerts().add_hook([](const alert& a) {
      std::printf("  ALERT [%s] %s\n", a.kind.c_str(), a.detail.c_str());
    });
    return std::move(*n);
  };
  auto node = start();
  if (!node)
    return 1;
  auto initial = w.mmf.total() + w.funds.total();
  bool ok = true;
  auto begin = [&](const std::string& id, const std::string& input) {
    auto r = client::admin::saga_start(node->connect(), "fund_purchase", id,
                                       input);
    if (!r) {
      std::printf("  start %s failed: %s\n", id.c_str(), render(r.error()).c_str());
      ok = false;
      return false;
    }
    std::printf("start %s (%s): %s\n", id.c_str(), input.c_str(),
                r->existed() ? "exists already" : "started");
    return !r->existed();
  };

  begin("order-1", "customer=alice;fund=F1;amount=1000");
  ok &= expect_end(node->connect(), "order-1", saga_state::completed);

  begin("order-2", "customer=bob;fund=F9;amount=700");
  ok &= expect_end(node->connect(), "order-2", saga_state::compensated);
  ok &= w.mmf.units("bob") == 3000;

  w.fund_service_up = false;
  w.buy_attempts = 0;
  begin("order-3", "customer=carol;fund=F2;amount=800");
  wait_until([&] { return w.buy_attempts >= 3; }, 10s);
  std::printf("  the fund service is down: %d purchase attempts so far; "
              "stopping the node with order-3 unfinished\n",
              w.buy_attempts.load());
  node->stop();
  node.reset();
  w.fund_service_up = true;
  std::printf("restart: the fund service is back\n");
  node = start();
  if (!node)
    return 1;
  ok &= expect_end(node->connect(), "order-3", saga_state::completed);

  ok &= !begin("order-1", "customer=alice;fund=F1;amount=1000");

  std::printf("audit:\n");
  w.mmf.print();
  w.funds.print();
  auto total = w.mmf.total() + w.funds.total();
  std::printf("  units in both books: %lld (at the start %lld)\n",
              static_cast<long long>(total), static_cast<long long>(initial));
  ok &= total == initial;
  ok &= w.mmf.units("alice") == 4000 && w.funds.units("alice") == 1000;
  ok &= w.mmf.units("carol") == 1200 && w.funds.units("carol") == 800;
  for (auto key : {"order-1/redeem_mmf", "order-3/redeem_mmf",
                   "order-1/buy_target_fund", "order-3/buy_target_fund"})
    if (w.mmf.applications(key) + w.funds.applications(key) != 1) {
      std::printf("  %s applied %d times\n", key,
                  w.mmf.applications(key) + w.funds.applications(key));
      ok = false;
    }
  std::printf("  notified: %zu customers (order-1, order-3)\n", w.notes.size());
  ok &= w.notes.size() == 2;
  node->stop();
  std::printf(ok ? "fund purchase saga: every order ended as expected, the "
                   "books balance\n"
                 : "fund purchase saga: SOMETHING IS WRONG (see above)\n");
  return ok ? 0 : 1;
}
