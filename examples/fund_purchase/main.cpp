// Fund purchase ("buy at a discount"): the transaction center turns "buy a
// money-market fund, then buy the target fund with it" into one business
// transaction with a transactional message.
//
//  * wallet service (a separate process, producer group "wallet"): for each
//    order, sends a half message, then buys the money-market fund in its own
//    ledger (a file, fsync'd) as the local transaction, then commits. It
//    answers check-backs from its ledger: bought -> commit, not -> rollback.
//  * target-fund service (consumer group "target-fund"): buys the target
//    fund, idempotently (client::idempotency keyed by order id).
//
// The run injects a crash: the first wallet process is killed (SIGKILL, by
// the failpoint txn.before_end) right after buying order-3's money-market
// fund and before its commit. The half message stays invisible; check-back
// asks the live member of the producer group (a second wallet process),
// which finds order-3 in the ledger and commits. order-4 is rolled back
// (insufficient balance) and never delivered; order-5 targets a closed fund:
// the target-fund service fails, retries, and it lands in the DLQ with an
// alert. Exits 1 unless the ledgers balance.
#include "base/errc.hpp"
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/idempotency.hpp"
#include "client/transaction_producer.hpp"
#include "node/embedded_node.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <spawn.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

using namespace edda;
using namespace std::chrono_literals;

namespace {

int64_t t0 = now_ms();

void say(const char* who, const std::string& what) {
  std::printf("[%6.2fs] %-12s %s\n", (now_ms() - t0) / 1000.0, who,
              what.c_str());
}

struct order {
  std::string id;
  int64_t amount;
  std::string target_fund;
};

order parse_order(const std::string& body) {
  order o;
  std::istringstream in{body};
  in >> o.id >> o.amount >> o.target_fund;
  return o;
}

// -- wallet service (child process) --------------------------------------------

/// The wallet's own store: one fsync'd line per money-market purchase.
struct wallet_ledger {
  std::string path;
  std::map<std::string, int64_t> bought() const {
    std::map<std::string, int64_t> out;
    std::ifstream in{path};
    std::string id;
    int64_t amount = 0;
    while (in >> id >> amount)
      out[id] = amount;
    return out;
  }
  void buy(const std::string& id, int64_t amount) {
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
    auto line = id + " " + std::to_string(amount) + "\n";
    (void) !::write(fd, line.data(), line.size());
    ::fsync(fd);
    ::close(fd);
  }
};

int run_wallet(uint16_t port, const std::string& dir,
               const std::vector<order>& orders) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  wallet_ledger ledger{dir + "/wallet.ledger"};
  const int64_t balance = 10'000;
  auto conn = client::connection::open("127.0.0.1", port);
  if (!conn) {
    std::fprintf(stderr, "wallet: %s\n", render(conn.error()).c_str());
    return 1;
  }
  client::txn_producer_options o;
  o.group = "wallet";
  auto checker = [&](const client::txn_check& c) {
    auto ord = parse_order(c.msg.body);
    bool bought = ledger.bought().count(ord.id) != 0;
    say("wallet", "check-back #" + std::to_string(c.check) + " for " + ord.id
                    + ": ledger says " + (bought ? "bought -> commit"
                                                 : "not bought -> rollback"));
    return bought ? client::txn_outcome::commit : client::txn_outcome::rollback;
  };
  auto prod = client::transaction_producer::start(*conn, o, checker);
  if (!prod) {
    std::fprintf(stderr, "wallet: %s\n", render(prod.error()).c_str());
    return 1;
  }
  say("wallet", "process " + std::to_string(::getpid())
                  + " joined producer group 'wallet'");
  for (auto& ord : orders) {
    client::message m;
    m.topic = "fund-orders";
    m.key = ord.id;
    m.body = ord.id + " " + std::to_string(ord.amount) + " " + ord.target_fund;
    auto r = (*prod)->send_in_transaction(m, [&](const client::message&,
                                                 const std::string&) {
      int64_t spent = 0;
      for (auto& [id, a] : ledger.bought())
        spent += a;
      if (spent + ord.amount > balance) {
        say("wallet", ord.id + ": balance too low for "
                        + std::to_string(ord.amount) + " -> rollback");
        return client::txn_outcome::rollback;
      }
      ledger.buy(ord.id, ord.amount);
      say("wallet", ord.id + ": bought " + std::to_string(ord.amount)
                      + " of the money-market fund (local transaction)");
      return client::txn_outcome::commit;
    });
    if (!r) {
      say("wallet", ord.id + ": not sent: " + render(r.error()));
      continue;
    }
    say("wallet", ord.id + ": " + client::to_string(r->local)
                    + (r->ended ? " acknowledged" : " not acknowledged"));
  }
  // Stay in the group to answer check-backs until told to stop.
  auto stop = dir + "/stop-wallet";
  for (int i = 0; i < 600 && ::access(stop.c_str(), F_OK) != 0; ++i)
    std::this_thread::sleep_for(100ms);
  return 0;
}

pid_t spawn_wallet(uint16_t port, const std::string& dir,
                   const std::string& orders, const char* failpoint) {
  std::string self = "/proc/self/exe";
  std::string port_s = std::to_string(port);
  std::vector<std::string> args{"fund_purchase", "--wallet", port_s, dir,
                                orders, std::to_string(t0)};
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "EDDA_FAILPOINTS=", 16) != 0)
      env_s.emplace_back(*e);
  if (failpoint != nullptr)
    env_s.emplace_back(std::string("EDDA_FAILPOINTS=") + failpoint);
  std::vector<char*> envp;
  for (auto& e : env_s)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  if (::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(),
                    envp.data())
      != 0)
    return -1;
  return pid;
}

std::vector<order> all_orders() {
  return {{"order-1", 1000, "tech-growth"},  {"order-2", 2500, "bond-plus"},
          {"order-3", 800, "tech-growth"},   {"order-4", 999'999, "bond-plus"},
          {"order-5", 1200, "closed-fund"},  {"order-6", 300, "bond-plus"}};
}

std::vector<order> pick(const std::string& csv) {
  std::vector<order> out;
  for (auto& o : all_orders())
    if (("," + csv + ",").find("," + o.id.substr(6) + ",") != std::string::npos)
      out.push_back(o);
  return out;
}

template <class Pred>
bool wait_until(Pred p, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!p()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

} // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc == 6 && std::strcmp(argv[1], "--wallet") == 0) {
    t0 = std::stoll(argv[5]); // one timeline for every process
    return run_wallet(static_cast<uint16_t>(std::stoi(argv[2])), argv[3],
                      pick(argv[4]));
  }
  char tmpl[] = "/tmp/edda-fund-XXXXXX";
  std::string dir = argc > 1 ? argv[1] : ::mkdtemp(tmpl);
  ::mkdir(dir.c_str(), 0755);
  config::node_settings s;
  s.data_dir = dir + "/node";
  s.listen_port = 0;
  s.log_level = "warn";
  s.txn_check_after_ms = 2000; // RocketMQ's default is 6 s; quicker for a demo
  auto node = node::embedded_node::start(s);
  if (!node) {
    std::fprintf(stderr, "cannot start node: %s\n", render(node.error()).c_str());
    return 1;
  }
  // The wallet service talks to the node's client door (gRPC), as a service
  // in any language would.
  auto port = (*node)->api_port();
  say("node", "embedded node, client door on 127.0.0.1:" + std::to_string(port)
                + " (fsync durability, check-back after 2 s)");
  std::atomic<int> alerts{0};
  (*node)->alerts().add_hook([&](const alert& a) {
    say("ALERT", a.kind + " " + a.subject + ": " + a.detail);
    alerts++;
  });
  auto conn = (*node)->connect();
  if (auto t = client::admin::create_topic(conn, "fund-orders", 2); !t) {
    std::fprintf(stderr, "%s\n", render(t.error()).c_str());
    return 1;
  }
  // Target-fund service.
  std::mutex mtx;
  std::map<std::string, int64_t> target_ledger; // order -> amount bought
  std::map<std::string, int> deliveries;
  client::idempotency once{conn, "target-fund"};
  client::consumer_options co;
  co.group = "target-fund";
  co.topic = "fund-orders";
  co.max_reconsume = 2;
  co.retry_delays_ms = {300, 600};
  auto target = client::consumer::start(conn, co, [&](const client::received& r) {
    auto ord = parse_order(r.msg.body);
    {
      std::lock_guard<std::mutex> guard{mtx};
      deliveries[ord.id]++;
    }
    if (ord.target_fund == "closed-fund") {
      say("target-fund", ord.id + ": " + ord.target_fund
                           + " is closed for subscriptions (attempt "
                           + std::to_string(r.reconsume_times + 1) + ")");
      throw std::runtime_error("fund closed");
    }
    auto ran = once.run_once(ord.id, [&] {
      std::lock_guard<std::mutex> guard{mtx};
      target_ledger[ord.id] += ord.amount;
    });
    if (!ran)
      return client::consume_result::retry_later;
    say("target-fund", ord.id + ": " + (*ran ? "bought " : "already bought ")
                         + std::to_string(ord.amount) + " of " + ord.target_fund);
    return client::consume_result::success;
  });
  if (!target) {
    std::fprintf(stderr, "%s\n", render(target.error()).c_str());
    return 1;
  }
  // Wallet #1 crashes after order-3's local transaction, before its commit.
  say("demo", "starting wallet process #1; it will be killed after buying "
              "order-3's money-market fund, before the commit");
  auto w1 = spawn_wallet(port, dir, "1,2,3", "txn.before_end=crash@3");
  int status = 0;
  ::waitpid(w1, &status, 0);
  say("demo", std::string("wallet #1 ended: ")
                + (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL
                     ? "killed by SIGKILL"
                     : "exited " + std::to_string(WEXITSTATUS(status))));
  auto doubt = client::admin::txn_list(conn);
  if (doubt)
    for (auto& t : doubt->records())
      say("node", "in doubt: txn " + t.txn_id().substr(0, 8) + "... ("
                    + t.message().key() + "), invisible to consumers");
  say("demo", "starting wallet process #2 (same producer group) with orders "
              "4, 5, 6");
  auto w2 = spawn_wallet(port, dir, "4,5,6", nullptr);
  bool settled = wait_until(
    [&] {
      auto l = client::admin::txn_list(conn);
      std::lock_guard<std::mutex> guard{mtx};
      return l && l->records_size() == 0 && target_ledger.size() == 4
             && alerts.load() >= 1;
    },
    60s);
  std::this_thread::sleep_for(500ms); // anything extra would show up now
  ::close(::open((dir + "/stop-wallet").c_str(), O_CREAT | O_WRONLY, 0644));
  ::waitpid(w2, &status, 0);
  (*target)->stop();

  // Audit.
  wallet_ledger wl{dir + "/wallet.ledger"};
  auto wallet = wl.bought();
  auto dlq = client::admin::dlq_list(conn, "target-fund");
  bool ok = settled;
  auto check = [&](bool cond, const std::string& what) {
    std::printf("  %s %s\n", cond ? "ok:" : "FAILED:", what.c_str());
    ok = ok && cond;
  };
  std::printf("\naudit\n");
  int64_t debited = 0, credited = 0, dead = 0;
  for (auto& [id, a] : wallet)
    debited += a;
  for (auto& [id, a] : target_ledger)
    credited += a;
  if (dlq)
    for (auto& e : dlq->entries())
      dead += parse_order(e.message().body()).amount;
  check(wallet.count("order-3") == 1 && target_ledger.count("order-3") == 1,
        "order-3 survived the wallet crash: check-back committed it");
  check(deliveries.count("order-4") == 0 && wallet.count("order-4") == 0,
        "order-4 was rolled back and never delivered");
  check(dlq && dlq->entries_size() == 1
          && parse_order(dlq->entries(0).message().body()).id == "order-5",
        "order-5 (closed fund) is in %DLQ%target-fund after 1 + 2 attempts, "
        "with an alert");
  bool once_each = true;
  for (auto& o : all_orders())
    if (target_ledger.count(o.id) != 0)
      once_each = once_each && target_ledger[o.id] == o.amount;
  check(target_ledger.size() == 4 && once_each,
        "the target fund was bought exactly once for orders 1, 2, 3, 6");
  check(debited == credited + dead,
        "money balances: wallet debited " + std::to_string(debited)
          + " = target funds bought " + std::to_string(credited)
          + " + awaiting the operator in the DLQ " + std::to_string(dead));
  (*node)->stop();
  std::printf(ok ? "fund purchase: every step happened exactly once\n"
                 : "fund purchase: FAILED\n");
  return ok ? 0 : 1;
}
