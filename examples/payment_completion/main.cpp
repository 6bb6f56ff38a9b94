// Completing a payment as a saga. The user has paid; the saga marks the
// order paid (a local step), credits the merchant and the user's points
// (two TCC steps in one parallel group), sends the accounting voucher as a
// reliable message and notifies the merchant (best effort).
//
// What happens:
//  1. pay-1 and pay-2 complete; pay-2's merchant endpoint fails twice first.
//  2. pay-3: carol's points account is frozen. The points try fails for good,
//     the merchant's reservation is cancelled, the points cancel is an empty
//     rollback, the order goes back to unpaid (refunded), no voucher.
//  3. pay-4: m-tea's endpoint is down, the notification is given up and the
//     saga completes; m-tea reconciles by querying the saga.
//  4. The accounting consumer loses one acknowledgement: the redelivered
//     voucher is recognised by its idempotency key and written once.
//  5. Ledger: paid by users == merchants credited + refunded, one voucher
//     per completed payment, no reservation left. Exits 1 otherwise.
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/idempotency.hpp"
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
#include <vector>

using namespace edda;
using namespace std::chrono_literals;
using sagas::saga_state;
using sagas::step_request;
using sagas::step_result;

namespace {

/// "payment=pay-1;user=alice;amount=120" -> the value of `key`.
std::string field(const std::string& input, const std::string& key) {
  auto at = input.find(key + "=");
  if (at == std::string::npos)
    return {};
  auto from = at + key.size() + 1;
  return input.substr(from, input.find(';', from) - from);
}

int64_t amount_of(const step_request& r) {
  return std::stoll(field(r.input, "amount"));
}

/// The payment service's orders (the saga's local step). The user has paid
/// already; putting an order back to unpaid refunds the user.
struct order_table {
  std::mutex mtx;
  std::map<std::string, std::string> status; // payment id -> paid/unpaid
  int64_t refunded = 0;

  step_result mark_paid(const step_request& r) {
    std::lock_guard<std::mutex> guard{mtx};
    status[r.saga_id] = "paid";
    return step_result::success();
  }
  step_result mark_unpaid(const step_request& r) {
    std::lock_guard<std::mutex> guard{mtx};
    if (status[r.saga_id] != "paid")
      return step_result::success("nothing to undo");
    status[r.saga_id] = "unpaid";
    refunded += amount_of(r);
    std::printf("  order %s back to unpaid, %lld refunded\n", r.saga_id.c_str(),
                static_cast<long long>(amount_of(r)));
    return step_result::success();
  }
};

/// A TCC participant's books: a try reserves amount / `per` for the account
/// named by the input field `who`, a confirm credits the reservation, a
/// cancel releases it; the fence guards each key.
class tcc_books {
public:
  tcc_books(std::string name, std::string who, int64_t per,
            std::set<std::string> frozen = {})
      : name_(std::move(name)), who_(std::move(who)), per_(per),
        frozen_(std::move(frozen)) {}
  step_result reserve(const step_request& r) {
    auto account = field(r.input, who_);
    auto amount = amount_of(r) / per_;
    std::lock_guard<std::mutex> guard{mtx_};
    if (frozen_.count(account) != 0) {
      std::printf("  %s: account %s is frozen, try refused\n", name_.c_str(),
                  account.c_str());
      return step_result::failure("frozen: " + name_ + " " + account, false);
    }
    if (!fence_.begin_try(r.idempotency_key))
      return step_result::success("repeat or late try: nothing reserved");
    held_[r.idempotency_key] = {account, amount};
    reserved_[account] += amount;
    return step_result::success(account + " +" + std::to_string(amount));
  }
  step_result confirm(const step_request& r) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!fence_.begin_confirm(r.idempotency_key))
      return step_result::success("confirmed already");
    auto [account, amount] = held_.at(r.idempotency_key);
    reserved_[account] -= amount;
    balance_[account] += amount;
    held_.erase(r.idempotency_key);
    return step_result::success();
  }
  step_result cancel(const step_request& r) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!fence_.begin_cancel(r.idempotency_key)) {
      std::printf(
        "  %s: cancel of %s is an empty rollback (nothing reserved)\n",
        name_.c_str(), r.idempotency_key.c_str());
      return step_result::success("empty rollback");
    }
    auto [account, amount] = held_.at(r.idempotency_key);
    reserved_[account] -= amount;
    held_.erase(r.idempotency_key);
    std::printf("  %s: reservation %s of %lld for %s cancelled\n",
                name_.c_str(), r.idempotency_key.c_str(),
                static_cast<long long>(amount), account.c_str());
    return step_result::success("released");
  }
  /// Prints the confirmed balances; returns their sum, `held` what is
  /// still reserved.
  int64_t print(int64_t& held) {
    std::lock_guard<std::mutex> guard{mtx_};
    int64_t sum = 0;
    held = 0;
    std::printf("  %-9s", name_.c_str());
    for (auto& [a, v] : balance_) {
      std::printf("  %s=%lld", a.c_str(), static_cast<long long>(v));
      sum += v;
    }
    for (auto& [a, v] : reserved_)
      held += v;
    std::printf("  (reserved %lld)\n", static_cast<long long>(held));
    return sum;
  }

private:
  std::string name_;
  std::string who_;
  int64_t per_;
  std::set<std::string> frozen_;
  std::mutex mtx_;
  sagas::tcc_fence fence_;
  std::map<std::string, std::pair<std::string, int64_t>> held_; // by key
  std::map<std::string, int64_t> reserved_;
  std::map<std::string, int64_t> balance_;
};

struct world {
  order_table orders;
  tcc_books merchants{"merchants", "merchant", 1};
  tcc_books points{"points", "user", 10, {"carol"}}; // 1 point per 10 paid
  std::mutex mtx;
  std::set<std::string> notified;              // payment ids
  std::map<std::string, std::string> vouchers; // idempotency key -> body
  std::atomic<int> voucher_deliveries{0};
};

sagas::saga_definition payment_completion(world& w) {
  sagas::step_options quick;
  quick.retry.max_attempts = 5;
  quick.retry.initial_backoff = 20ms;
  quick.retry.max_backoff = 100ms;
  quick.timeout = 2s;
  auto beside = quick;
  beside.parallel = true;
  auto notify = quick;
  notify.best_effort = true;
  notify.retry.max_attempts = 3;
  sagas::saga_definition d("payment_completion");
  d.step(
     "mark_order_paid", [&w](auto& r) { return w.orders.mark_paid(r); },
     [&w](auto& r) { return w.orders.mark_unpaid(r); }, quick)
    .tcc_step(
      "credit_merchant", [&w](auto& r) { return w.merchants.reserve(r); },
      [&w](auto& r) { return w.merchants.confirm(r); },
      [&w](auto& r) { return w.merchants.cancel(r); }, quick)
    .tcc_step(
      "credit_points", [&w](auto& r) { return w.points.reserve(r); },
      [&w](auto& r) { return w.points.confirm(r); },
      [&w](auto& r) { return w.points.cancel(r); }, beside)
    .message_step(
      "accounting_voucher",
      [](const step_request& r) {
        sagas::outgoing_message m;
        m.topic = "vouchers";
        m.body = "clearing -" + field(r.input, "amount") + ", merchant "
                 + r.outputs.at("credit_merchant") + ", points "
                 + r.outputs.at("credit_points");
        return m;
      },
      nullptr, quick)
    .step(
      "notify_merchant",
      [&w](const step_request& r) {
        auto m = field(r.input, "merchant");
        if (m == "m-tea" || (m == "m-cafe" && r.attempt <= 2)) {
          std::printf("  notify %s about %s: attempt %u failed\n", m.c_str(),
                      r.saga_id.c_str(), r.attempt);
          return step_result::failure("merchant endpoint unreachable");
        }
        std::lock_guard<std::mutex> guard{w.mtx};
        w.notified.insert(r.saga_id);
        std::printf("  notify %s about %s: delivered (attempt %u)\n", m.c_str(),
                    r.saga_id.c_str(), r.attempt);
        return step_result::success();
      },
      nullptr, notify)
    .deadline(30s);
  return d;
}

} // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  config::node_settings s;
  char tmpl[] = "/tmp/edda-payment-XXXXXX";
  s.data_dir = argc > 1 ? argv[1] : ::mkdtemp(tmpl);
  s.log_level = "error";
  world w;
  node::start_options o;
  o.listen = false;
  o.sagas.push_back(payment_completion(w));
  auto started = node::embedded_node::start(s, std::move(o));
  if (!started) {
    std::fprintf(stderr, "cannot start node: %s\n",
                 render(started.error()).c_str());
    return 1;
  }
  auto& node = *started;
  auto conn = node->connect();
  if (auto t = client::admin::create_topic(conn, "vouchers", 2); !t) {
    std::fprintf(stderr, "%s\n", render(t.error()).c_str());
    return 1;
  }
  // Accounting: one voucher per idempotency key. The first delivery's
  // acknowledgement is lost (retry_later after writing): it comes again.
  client::idempotency once{conn, "accounting"};
  client::consumer_options co;
  co.group = "accounting";
  co.topic = "vouchers";
  co.retry_delays_ms = {50};
  auto accounting
    = client::consumer::start(conn, co, [&](const client::received& r) {
        auto key = r.msg.properties.at("idempotency_key");
        auto ran = once.run_once(key, [&] {
          std::lock_guard<std::mutex> guard{w.mtx};
          w.vouchers[key] = r.msg.body;
        });
        if (!ran)
          return client::consume_result::retry_later;
        std::printf("  accounting: %s %s: %s\n", key.c_str(),
                    *ran ? "voucher written" : "duplicate delivery, skipped",
                    r.msg.body.c_str());
        return ++w.voucher_deliveries == 1 ? client::consume_result::retry_later
                                           : client::consume_result::success;
      });
  if (!accounting) {
    std::fprintf(stderr, "%s\n", render(accounting.error()).c_str());
    return 1;
  }

  struct payment {
    std::string id, input;
    saga_state want;
  };
  std::vector<payment> payments{
    {"pay-1", "user=alice;merchant=m-books;amount=120", saga_state::completed},
    {"pay-2", "user=bob;merchant=m-cafe;amount=45", saga_state::completed},
    {"pay-3", "user=carol;merchant=m-cafe;amount=80", saga_state::compensated},
    {"pay-4", "user=dave;merchant=m-tea;amount=60", saga_state::completed}};
  bool ok = true;
  int64_t paid = 0;
  std::set<std::string> completed;
  for (auto& p : payments) {
    paid += std::stoll(field(p.input, "amount")); // the user has paid
    std::printf("payment %s (%s)\n", p.id.c_str(), p.input.c_str());
    auto r = client::admin::saga_start(conn, "payment_completion", p.id,
                                       p.input, 10s);
    if (!r) {
      std::printf("  start failed: %s\n", render(r.error()).c_str());
      ok = false;
      continue;
    }
    auto& rec = r->record();
    auto state = static_cast<saga_state>(rec.state());
    if (state == saga_state::completed)
      completed.insert(p.id);
    std::printf("  saga %s: %s%s%s\n", p.id.c_str(), sagas::to_string(state),
                rec.reason().empty() ? "" : " - ", rec.reason().c_str());
    for (auto& s : rec.steps())
      std::printf("    %-18s %-11s attempts %u\n", s.name().c_str(),
                  wire::v1::SagaStep::Status_Name(s.status()).c_str(),
                  s.attempts());
    if (state != p.want) {
      std::printf("  EXPECTED %s\n", sagas::to_string(p.want));
      ok = false;
    }
  }

  // m-tea's end-of-day check: the payment it was not told about.
  std::printf("m-tea reconciles the notification it missed (pay-4):\n");
  if (auto rec = client::admin::saga_show(conn, "pay-4"); rec) {
    auto& credit = rec->steps(1);
    std::printf("  saga_show pay-4: %s, %s %s (%s)\n",
                sagas::to_string(static_cast<saga_state>(rec->state())),
                credit.name().c_str(),
                wire::v1::SagaStep::Status_Name(credit.status()).c_str(),
                credit.output().c_str());
    for (auto& e : rec->history())
      if (e.what().find("gave up") != std::string::npos)
        std::printf("  history: %s\n", e.what().c_str());
    ok &= static_cast<saga_state>(rec->state()) == saga_state::completed
          && credit.status() == wire::v1::SagaStep::CONFIRMED;
  } else {
    std::printf("  saga_show pay-4: %s\n", render(rec.error()).c_str());
    ok = false;
  }

  // Wait for the vouchers (and the redelivery), then for nothing more.
  for (int i = 0; i < 1000 && w.voucher_deliveries < 4; ++i)
    std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(200ms);
  accounting->reset();
  node->stop(); // all is quiet: read the books

  std::printf("ledger:\n");
  int64_t merchants_held = 0;
  int64_t points_held = 0;
  auto credited = w.merchants.print(merchants_held);
  auto points = w.points.print(points_held);
  auto refunded = w.orders.refunded;
  bool balanced = paid == credited + refunded;
  std::printf("  paid by users %lld == merchants credited %lld + refunded "
              "%lld: %s\n",
              static_cast<long long>(paid), static_cast<long long>(credited),
              static_cast<long long>(refunded), balanced ? "yes" : "NO");
  std::printf("  reservations left pending: %lld\n",
              static_cast<long long>(merchants_held + points_held));
  ok &= balanced && credited == 225 && refunded == 80 && points == 22
        && merchants_held == 0 && points_held == 0;
  std::set<std::string> got;
  for (auto& [key, body] : w.vouchers)
    got.insert(key.substr(0, key.find('/')));
  std::printf("  vouchers written %zu == completed payments %zu (%d "
              "deliveries): %s\n",
              got.size(), completed.size(), w.voucher_deliveries.load(),
              got == completed ? "yes" : "NO");
  ok &= got == completed && completed.size() == 3;
  std::printf("  orders:");
  for (auto& [id, st] : w.orders.status)
    std::printf(" %s=%s", id.c_str(), st.c_str());
  std::printf("\n");
  ok &= w.orders.status["pay-3"] == "unpaid"
        && w.orders.status["pay-4"] == "paid";
  ok &= w.notified == std::set<std::string>{"pay-1", "pay-2"};
  std::printf(ok ? "payment completion: every payment ended as expected, the "
                   "ledger balances\n"
                 : "payment completion: SOMETHING IS WRONG (see above)\n");
  return ok ? 0 : 1;
}
