// Loan repayment as a saga, with the installment as the business key. Three
// channels (the app, the scheduled batch, the collections staff) try to
// collect the same installment at the same moment; each starts a saga with
// the id "loan-42/installment-7". SagaStart is idempotent, so there is one
// saga and the borrower is debited once.
//
// The steps: lock the installment on the loan, debit the borrower's bank
// account, post the repayment to the loan (the pivot: from here on the
// repayment stands), reconcile the loan ledger with the bank's (best
// effort, last).
//
// What happens:
//  1. Three threads start installment 7 together: one starts the saga, two
//     find it existing and wait for the same outcome.
//  2. The bank's answer is "unknown" (a timeout, then "still processing"):
//     the step is retried on the policy's backoff, which polls the bank by
//     idempotency key, until the debit settles. The bank debits once.
//  3. The reconciliation step records "balanced" as its output.
//  4. Installment 8: insufficient funds, a failure for good. The debit's
//     compensation has nothing to refund, the installment is unlocked.
//  5. Books: outstanding + repaid == original principal; one bank debit per
//     completed installment. Exits 1 if any of that does not happen.
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "node/embedded_node.hpp"
#include "sagas/saga.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace edda;
using namespace std::chrono_literals;
using sagas::saga_state;
using sagas::step_request;
using sagas::step_result;

namespace {

/// "loan=loan-42;installment=7;amount=500" -> the value of `key`.
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

/// The lender's books for loan-42, installments 1-6 (500 each) repaid.
struct loan_ledger {
  std::mutex mtx;
  const int64_t original = 6000;
  int64_t outstanding = 3000;
  int64_t repaid = 3000;
  std::map<std::string, std::string> installments{{"7", "due"}, {"8", "due"}};
  std::map<std::string, int64_t> posted; // idempotency key -> amount

  /// due -> collecting, so that no other collection takes it.
  step_result lock(const step_request& r) {
    std::lock_guard<std::mutex> guard{mtx};
    auto& st = installments[field(r.input, "installment")];
    if (st == "paid")
      return step_result::failure("installment paid already", false);
    st = "collecting";
    return step_result::success();
  }
  step_result unlock(const step_request& r) {
    std::lock_guard<std::mutex> guard{mtx};
    auto& st = installments[field(r.input, "installment")];
    if (st == "collecting")
      std::printf("  loan: installment %s unlocked, due again\n",
                  field(r.input, "installment").c_str());
    st = st == "collecting" ? "due" : st;
    return step_result::success();
  }
  /// Once per idempotency key.
  step_result post(const step_request& r) {
    std::lock_guard<std::mutex> guard{mtx};
    if (posted.emplace(r.idempotency_key, amount_of(r)).second) {
      outstanding -= amount_of(r);
      repaid += amount_of(r);
      installments[field(r.input, "installment")] = "paid";
    }
    return step_result::success("outstanding " + std::to_string(outstanding));
  }
  int64_t posted_under(const std::string& prefix) {
    std::lock_guard<std::mutex> guard{mtx};
    int64_t sum = 0;
    for (auto& [key, amount] : posted)
      sum += key.rfind(prefix, 0) == 0 ? amount : 0;
    return sum;
  }
};

/// The borrower's bank behind a payment channel that times out. A debit is
/// keyed by idempotency key: the first attempt submits it (the money leaves,
/// the answer is lost), later attempts poll it; it settles on attempt 4.
struct bank {
  struct debit_state {
    int64_t amount = 0;
    int polls = 0;
    std::string ref; // set once settled
  };
  std::mutex mtx;
  const int64_t opening = 700;
  int64_t balance = 700;
  std::map<std::string, debit_state> debits; // by idempotency key
  std::map<std::string, int> requests;       // by idempotency key
  std::chrono::steady_clock::time_point last;

  step_result debit(const step_request& r) {
    std::lock_guard<std::mutex> guard{mtx};
    ++requests[r.idempotency_key];
    auto since = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - last)
                   .count();
    last = std::chrono::steady_clock::now();
    auto i = debits.find(r.idempotency_key);
    if (i == debits.end()) {
      if (balance < amount_of(r))
        return step_result::failure(
          "insufficient funds: balance " + std::to_string(balance), false);
      balance -= amount_of(r);
      debits[r.idempotency_key].amount = amount_of(r);
      std::printf("  bank channel attempt %u: debit %lld submitted -> "
                  "unknown: bank timeout\n",
                  r.attempt, static_cast<long long>(amount_of(r)));
      return step_result::failure("unknown: bank timeout");
    }
    auto& d = i->second;
    if (d.ref.empty() && ++d.polls < 3) {
      std::printf("  bank channel attempt %u (+%lld ms): poll -> unknown: "
                  "still processing\n",
                  r.attempt, static_cast<long long>(since));
      return step_result::failure("unknown: still processing");
    }
    if (d.ref.empty()) {
      d.ref = "bank ref B-" + std::to_string(debits.size());
      std::printf("  bank channel attempt %u (+%lld ms): poll -> settled, %s\n",
                  r.attempt, static_cast<long long>(since), d.ref.c_str());
    }
    return step_result::success(d.ref);
  }
  step_result refund(const step_request& r) {
    std::lock_guard<std::mutex> guard{mtx};
    auto i = debits.find(r.idempotency_key);
    if (i == debits.end()) {
      std::printf("  bank: nothing was debited for %s, nothing to refund\n",
                  r.idempotency_key.c_str());
      return step_result::success("nothing debited");
    }
    balance += i->second.amount;
    debits.erase(i);
    return step_result::success("refunded");
  }
  /// Settled debits under `prefix`: their sum, and how many in `count`.
  int64_t debited(const std::string& prefix, int* count = nullptr) {
    std::lock_guard<std::mutex> guard{mtx};
    int64_t sum = 0;
    for (auto& [key, d] : debits)
      if (!d.ref.empty() && key.rfind(prefix, 0) == 0) {
        sum += d.amount;
        if (count)
          ++*count;
      }
    return sum;
  }
};

struct world {
  loan_ledger loan;
  bank acct;
};

sagas::saga_definition installment_repayment(world& w) {
  sagas::step_options quick;
  quick.retry.max_attempts = 3;
  quick.retry.initial_backoff = 20ms;
  quick.retry.max_backoff = 100ms;
  quick.timeout = 2s;
  auto polling = quick; // "unknown" is retried: each retry polls the bank
  polling.retry.max_attempts = 10;
  polling.retry.multiplier = 2.0;
  polling.retry.non_retryable = {"insufficient funds"};
  auto pivot = quick; // the repayment stands: only best effort follows
  pivot.compensable = false;
  auto reconcile = quick;
  reconcile.best_effort = true;
  sagas::saga_definition d("installment_repayment");
  d.step(
     "lock_installment", [&w](auto& r) { return w.loan.lock(r); },
     [&w](auto& r) { return w.loan.unlock(r); }, quick)
    .step(
      "debit_bank", [&w](auto& r) { return w.acct.debit(r); },
      [&w](auto& r) { return w.acct.refund(r); }, polling)
    .step(
      "post_repayment", [&w](auto& r) { return w.loan.post(r); }, nullptr,
      pivot)
    .step(
      "reconcile",
      [&w](const step_request& r) {
        auto loan = field(r.input, "loan") + "/";
        auto posted = w.loan.posted_under(loan);
        auto at_bank = w.acct.debited(loan);
        auto line = "loan ledger posted " + std::to_string(posted)
                    + ", bank debited " + std::to_string(at_bank);
        if (posted != at_bank)
          return step_result::failure("mismatch: " + line, false);
        return step_result::success(line + ": balanced");
      },
      nullptr, reconcile)
    .deadline(30s);
  return d;
}

void print_saga(const wire::v1::SagaRecord& rec) {
  std::printf("  saga %s: %s%s%s\n", rec.id().c_str(),
              sagas::to_string(static_cast<saga_state>(rec.state())),
              rec.reason().empty() ? "" : " - ", rec.reason().c_str());
  for (auto& s : rec.steps())
    std::printf("    %-16s %-11s attempts %u, compensations %u%s%s\n",
                s.name().c_str(),
                wire::v1::SagaStep::Status_Name(s.status()).c_str(),
                s.attempts(), s.compensations(),
                s.output().empty() ? "" : ", output: ", s.output().c_str());
}

} // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  config::node_settings s;
  char tmpl[] = "/tmp/edda-loan-XXXXXX";
  s.data_dir = argc > 1 ? argv[1] : ::mkdtemp(tmpl);
  s.log_level = "error";
  world w;
  node::start_options o;
  o.listen = false;
  o.sagas.push_back(installment_repayment(w));
  auto started = node::embedded_node::start(s, std::move(o));
  if (!started) {
    std::fprintf(stderr, "cannot start node: %s\n",
                 render(started.error()).c_str());
    return 1;
  }
  auto& node = *started;
  bool ok = true;

  // 1-3: three channels collect installment 7 at the same moment.
  const std::string id7 = "loan-42/installment-7";
  std::printf("installment 7: the app, the batch and collections start saga "
              "%s at once\n",
              id7.c_str());
  std::printf("  (debit_bank polls on its retry policy: up to 10 attempts, "
              "backoff 20 ms doubling to 100 ms)\n");
  std::vector<std::string> channels{"app", "batch", "collections"};
  std::vector<std::optional<caf::expected<wire::v1::SagaStarted>>> results(
    channels.size());
  std::mutex mtx;
  std::condition_variable cv;
  bool go = false;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < channels.size(); ++i)
    threads.emplace_back([&, i] {
      auto conn = node->connect();
      {
        std::unique_lock<std::mutex> guard{mtx};
        cv.wait(guard, [&] { return go; });
      }
      results[i] = client::admin::saga_start(
        conn, "installment_repayment", id7,
        "loan=loan-42;installment=7;amount=500;channel=" + channels[i], 10s);
    });
  {
    std::lock_guard<std::mutex> guard{mtx};
    go = true;
  }
  cv.notify_all();
  for (auto& t : threads)
    t.join();
  int created = 0;
  for (size_t i = 0; i < channels.size(); ++i) {
    auto& r = *results[i];
    if (!r) {
      std::printf("  %-11s start failed: %s\n", channels[i].c_str(),
                  render(r.error()).c_str());
      ok = false;
      continue;
    }
    created += r->existed() ? 0 : 1;
    std::printf("  %-11s existed=%s, saga %s, started by channel=%s\n",
                channels[i].c_str(), r->existed() ? "true " : "false",
                sagas::to_string(static_cast<saga_state>(r->record().state())),
                field(r->record().input(), "channel").c_str());
    ok &= static_cast<saga_state>(r->record().state()) == saga_state::completed;
  }
  std::printf("  %d of 3 starts created the saga\n", created);
  ok &= created == 1;
  auto rec7 = client::admin::saga_show(node->connect(), id7);
  if (rec7) {
    print_saga(*rec7);
    for (auto& e : rec7->history())
      if (e.what().rfind("debit_bank attempt", 0) == 0)
        std::printf("    history: %s\n", e.what().c_str());
    ok &= rec7->steps(1).attempts() == 4
          && rec7->steps(3).status() == wire::v1::SagaStep::DONE;
  } else {
    ok = false;
  }

  // 4: installment 8 cannot be paid.
  const std::string id8 = "loan-42/installment-8";
  std::printf("installment 8: the batch collects 500, the account holds %lld\n",
              static_cast<long long>(w.acct.balance));
  auto r8
    = client::admin::saga_start(node->connect(), "installment_repayment", id8,
                                "loan=loan-42;installment=8;amount=500;"
                                "channel=batch",
                                10s);
  if (r8) {
    print_saga(r8->record());
    ok &= static_cast<saga_state>(r8->record().state())
          == saga_state::compensated;
  } else {
    std::printf("  start failed: %s\n", render(r8.error()).c_str());
    ok = false;
  }

  // 5: the books.
  node->stop(); // all is quiet: read the books
  auto& loan = w.loan;
  std::printf("books:\n");
  bool loan_ok = loan.outstanding + loan.repaid == loan.original;
  std::printf(
    "  loan-42: outstanding %lld + repaid %lld == original %lld: %s\n",
    static_cast<long long>(loan.outstanding),
    static_cast<long long>(loan.repaid), static_cast<long long>(loan.original),
    loan_ok ? "yes" : "NO");
  ok &= loan_ok && loan.repaid == 3500;
  int debits7 = 0;
  int debits8 = 0;
  w.acct.debited(id7 + "/", &debits7);
  w.acct.debited(id8 + "/", &debits8);
  std::printf("  bank: installment 7 debited %d time(s) for %d debit "
              "requests, installment 8 %d time(s); balance %lld -> %lld\n",
              debits7, w.acct.requests[id7 + "/debit_bank"], debits8,
              static_cast<long long>(w.acct.opening),
              static_cast<long long>(w.acct.balance));
  ok &= debits7 == 1 && debits8 == 0 && w.acct.balance == 200;
  std::printf("  installment 7 %s, installment 8 %s\n",
              loan.installments["7"].c_str(), loan.installments["8"].c_str());
  ok &= loan.installments["7"] == "paid" && loan.installments["8"] == "due";
  std::printf(ok ? "loan repayment: one saga per installment, one debit per "
                   "repayment, the books balance\n"
                 : "loan repayment: SOMETHING IS WRONG (see above)\n");
  return ok ? 0 : 1;
}
