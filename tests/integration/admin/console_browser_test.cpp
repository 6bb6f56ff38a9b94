// The web console in a real browser: Debian's headless Chromium, driven
// through chromedriver with the W3C WebDriver protocol (a small client over
// httplib below). The test makes a dead letter, a transaction in doubt and
// failed sagas on a real node, clicks Redrive, Rollback and Retry as an
// operator who typed their name, and checks the outcome with the `edda`
// CLI. A screenshot of each section goes to
// build/screenshots/console-<section>.png (and of the DLQ and the saga
// after the actions: console-dlq-redriven.png, console-sagas-retried.png).
//
// Chromium missing is a failure, not a skip: scripts/setup installs it.
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "config/settings.hpp"
#include "node/embedded_node.hpp"
#include "sagas/remote.hpp"
#include "support/util.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using edda::test::eventually;
using json = nlohmann::json;
namespace client = edda::client;
namespace pb = edda::wire::v1;

std::string base64_decode(const std::string& in) {
  static const std::string abc =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    auto v = abc.find(c);
    if (v == std::string::npos)
      continue; // '=' and line breaks
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

/// The output and exit code of a command (stderr joined to stdout).
std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr)
    return {-1, "popen failed"};
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

/// chromedriver as a child process in a process group of its own, with the
/// Chromium it starts: the whole group is stopped by the driver's pid.
struct driver_process {
  pid_t pid = -1;
  ~driver_process() {
    if (pid > 0) {
      ::kill(-pid, SIGTERM);
      int status = 0;
      for (int i = 0; i < 50; ++i) {
        if (::waitpid(pid, &status, WNOHANG) == pid) {
          ::kill(-pid, SIGKILL); // a browser the driver left behind
          return;
        }
        std::this_thread::sleep_for(100ms);
      }
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
  }
};

/// A W3C WebDriver session: just what the test needs. Every call fails the
/// test (an ADD_FAILURE) on an error answer and returns null.
class webdriver {
public:
  explicit webdriver(uint16_t port) : http_("127.0.0.1", port) {
    http_.set_connection_timeout(5, 0);
    http_.set_read_timeout(60, 0);
    http_.set_write_timeout(10, 0);
  }

  bool ready() {
    auto r = http_.Get("/status");
    if (!r || r->status != 200)
      return false;
    auto j = json::parse(r->body, nullptr, false);
    return !j.is_discarded() && j["value"].value("ready", false);
  }

  bool open_session(const std::string& chromium, const std::string& profile) {
    json caps = {
      {"capabilities",
       {{"alwaysMatch",
         {{"browserName", "chrome"},
          {"goog:chromeOptions",
           {{"binary", chromium},
            {"args",
             {"--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", "--user-data-dir=" + profile,
              "--window-size=1280,1100", "--no-first-run"}}}}}}}}};
    auto v = call("POST", "/session", caps);
    if (v.is_null())
      return false;
    session_ = v.value("sessionId", "");
    return !session_.empty();
  }

  void close_session() {
    if (!session_.empty())
      (void) call("DELETE", "/session/" + session_, nullptr);
    session_.clear();
  }

  json go(const std::string& url) {
    return call("POST", s("/url"), {{"url", url}});
  }

  json script(const std::string& js, json args = json::array()) {
    return call("POST", s("/execute/sync"), {{"script", js}, {"args", args}});
  }

  /// The element's reference, or "" when none matches `css`.
  std::string find(const std::string& css, bool quiet = false) {
    auto v = call("POST", s("/element"),
                  {{"using", "css selector"}, {"value", css}}, quiet);
    if (!v.is_object())
      return {};
    return v.value("element-6066-11e4-a52e-4f735466cecf", "");
  }

  /// Waits (at most `timeout`) for an element matching `css`.
  std::string wait_for(const std::string& css,
                       std::chrono::milliseconds timeout = 10s) {
    std::string e;
    eventually(timeout, [&] { return !(e = find(css, true)).empty(); },
               100ms);
    return e;
  }

  bool click(const std::string& element) {
    return !element.empty()
           && call("POST", s("/element/" + element + "/click"), json::object())
                .is_null()
           && last_ok_;
  }

  bool type(const std::string& element, const std::string& text) {
    return !element.empty()
           && call("POST", s("/element/" + element + "/value"),
                   {{"text", text}})
                .is_null()
           && last_ok_;
  }

  std::string text(const std::string& element) {
    auto v = call("GET", s("/element/" + element + "/text"), nullptr);
    return v.is_string() ? v.get<std::string>() : std::string{};
  }

  /// The visible page as PNG bytes.
  std::string screenshot() {
    auto v = call("GET", s("/screenshot"), nullptr);
    return v.is_string() ? base64_decode(v.get<std::string>()) : std::string{};
  }

private:
  std::string s(const std::string& path) const {
    return "/session/" + session_ + path;
  }

  json call(const std::string& method, const std::string& path,
            const json& body, bool quiet = false) {
    last_ok_ = false;
    httplib::Result r{nullptr, httplib::Error::Unknown};
    if (method == "GET")
      r = http_.Get(path.c_str());
    else if (method == "DELETE")
      r = http_.Delete(path.c_str());
    else
      r = http_.Post(path.c_str(), body.dump(), "application/json");
    if (!r) {
      ADD_FAILURE() << method << " " << path << ": no answer from chromedriver";
      return nullptr;
    }
    auto j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      ADD_FAILURE() << method << " " << path << ": not JSON: " << r->body;
      return nullptr;
    }
    if (r->status != 200) {
      if (!quiet)
        ADD_FAILURE() << method << " " << path << ": " << r->status << " "
                      << j.dump().substr(0, 600);
      return nullptr;
    }
    last_ok_ = true;
    return j.contains("value") ? j["value"] : json(nullptr);
  }

  httplib::Client http_;
  std::string session_;
  bool last_ok_ = false;
};

class ConsoleBrowserTest : public ::testing::Test {
protected:
  edda::config::node_settings settings() const {
    edda::config::node_settings s;
    s.data_dir = dir_.path() + "/data";
    s.listen_port = 0;
    s.mode = edda::config::durability::nosync;
    s.map_size = 256ull << 20;
    s.log_level = "error";
    // One attempt per step and compensation: a compensation that fails
    // once leaves the saga failed, for an operator.
    s.saga_types = {"pay = charge, ship"};
    s.saga_step_attempts = 1;
    return s;
  }

  void save(const std::string& section, const std::string& png) {
    std::filesystem::create_directories(EDDA_SCREENSHOT_DIR);
    auto path = std::string{EDDA_SCREENSHOT_DIR} + "/console-" + section + ".png";
    std::ofstream f{path, std::ios::binary};
    f << png;
    EXPECT_TRUE(f.good()) << path;
    // A PNG, and not a blank one: some kilobytes.
    EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << section;
    EXPECT_GT(png.size(), 5000u) << section;
  }

  edda::test::temp_dir dir_;
};

TEST_F(ConsoleBrowserTest, AnOperatorRedrivesADeadLetterAndRetriesAFailedSaga) {
  const std::string chromium = EDDA_CHROMIUM_BINARY;
  const std::string chromedriver = EDDA_CHROMEDRIVER_BINARY;
  ASSERT_FALSE(chromium.empty() || chromedriver.empty())
    << "chromium or chromedriver not found when configured: install the "
       "Debian packages chromium and chromium-driver (scripts/setup does)";
  ASSERT_EQ(::access(chromium.c_str(), X_OK), 0) << chromium;
  ASSERT_EQ(::access(chromedriver.c_str(), X_OK), 0) << chromedriver;

  auto node = edda::node::embedded_node::start(settings());
  ASSERT_TRUE(node) << edda::render(node.error());
  auto& n = **node;
  ASSERT_NE(n.admin_port(), 0);
  auto conn = n.connect();
  ASSERT_TRUE(client::admin::create_topic(conn, "orders", 2));

  // A dead letter: group billing fails the message until it is healed.
  std::atomic<bool> healed{false};
  std::atomic<int> after_heal{0};
  client::consumer_options o;
  o.group = "billing";
  o.topic = "orders";
  o.max_reconsume = 1;
  o.retry_delays_ms = {100};
  auto consumer = client::consumer::start(conn, o, [&](const client::received&) {
    if (!healed.load())
      return client::consume_result::retry_later;
    ++after_heal;
    return client::consume_result::success;
  });
  ASSERT_TRUE(consumer) << edda::render(consumer.error());
  client::producer p{conn};
  client::message m;
  m.topic = "orders";
  m.key = "order-7";
  m.body = R"({"order": 7, "amount": 42})";
  m.tags = {"payment"};
  auto sent = p.send(m);
  ASSERT_TRUE(sent) << edda::render(sent.error());
  ASSERT_TRUE(eventually(20s, [&] {
    auto d = client::admin::dlq_list(conn, "billing");
    return d && d->entries_size() == 1;
  })) << "the message did not reach the DLQ";
  // A list for a page or a count carries bodies cut by the node, with
  // their sizes: a DLQ of large messages costs no more than its previews.
  auto cut = client::admin::dlq_list(conn, "billing", 10, 4);
  ASSERT_TRUE(cut) << edda::render(cut.error());
  ASSERT_EQ(cut->entries_size(), 1);
  EXPECT_EQ(cut->entries(0).message().body(), m.body.substr(0, 4));
  EXPECT_EQ(cut->entries(0).body_bytes(), m.body.size());

  // A failed saga: ship fails for good, the undo of charge fails once.
  std::atomic<bool> undo_works{false};
  auto host = edda::sagas::participant_host::start(
    conn,
    {{"pay.charge",
      [](const edda::sagas::step_request&) {
        return edda::sagas::step_result::success("charged");
      }},
     {"pay.charge.undo",
      [&](const edda::sagas::step_request&) {
        return undo_works.load()
                 ? edda::sagas::step_result::success("refunded")
                 : edda::sagas::step_result::failure("bank offline");
      }},
     {"pay.ship",
      [](const edda::sagas::step_request&) {
        return edda::sagas::step_result::failure("no stock", false);
      }},
     {"pay.ship.undo",
      [](const edda::sagas::step_request&) {
        return edda::sagas::step_result::success();
      }}});
  ASSERT_TRUE(host) << edda::render(host.error());
  ASSERT_TRUE(client::admin::saga_start(conn, "pay", "pay-42", "{\"order\":7}"));
  ASSERT_TRUE(client::admin::saga_start(conn, "pay", "pay-43", "{\"order\":8}"));
  ASSERT_TRUE(eventually(20s, [&] {
    auto a = client::admin::saga_show(conn, "pay-42");
    auto b = client::admin::saga_show(conn, "pay-43");
    return a && b && a->state() == 5 && b->state() == 5; // failed
  })) << "the sagas did not fail";
  // Whatever happens now is the console's doing.
  healed = true;
  undo_works = true;

  // A transaction in doubt, for the transactions page.
  client::txn_producer_options to;
  to.group = "wallets";
  auto tp = client::transaction_producer::start(
    conn, to, [](const client::txn_check&) { return client::txn_outcome::unknown; });
  ASSERT_TRUE(tp) << edda::render(tp.error());
  client::message tm;
  tm.topic = "orders";
  tm.body = "pending";
  ASSERT_TRUE((*tp)->send_in_transaction(
    tm, [](const client::message&, const std::string&) {
      return client::txn_outcome::unknown;
    }));

  // chromedriver on a free port, chromium under it.
  auto port = edda::test::free_port();
  ASSERT_NE(port, 0);
  auto driver_log = dir_.path() + "/chromedriver.log";
  driver_process driver;
  {
    std::string port_arg = "--port=" + std::to_string(port);
    std::vector<std::string> args{chromedriver, port_arg};
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    driver.pid = ::fork();
    ASSERT_GE(driver.pid, 0);
    if (driver.pid == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = ::open(driver_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::setpgid(driver.pid, driver.pid); // also here: no kill before the child's
  }
  webdriver wd{port};
  ASSERT_TRUE(eventually(20s, [&] { return wd.ready(); }, 100ms))
    << "chromedriver did not come up: "
    << edda::test::read_file(driver_log);
  auto profile = dir_.path() + "/chromium-profile";
  ASSERT_TRUE(wd.open_session(chromium, profile))
    << edda::test::read_file(driver_log);
  struct closer {
    webdriver& w;
    ~closer() { w.close_session(); }
  } close_at_end{wd};

  auto base = "http://127.0.0.1:" + std::to_string(n.admin_port());
  wd.go(base + "/");
  auto loaded = [&](const std::string& section) {
    return eventually(15s, [&] {
      auto v = wd.script("return document.body.dataset.loaded || '';");
      return v.is_string() && v.get<std::string>() == section;
    }, 100ms);
  };
  auto open = [&](const std::string& section) {
    EXPECT_TRUE(wd.click(wd.find("#tab-" + section))) << section;
    EXPECT_TRUE(loaded(section)) << section;
  };
  auto message_has = [&](const std::string& want) {
    std::string last;
    bool ok = eventually(15s, [&] {
      auto e = wd.find("#message", true);
      last = e.empty() ? "" : wd.text(e);
      return last.find(want) != std::string::npos;
    }, 100ms);
    EXPECT_TRUE(ok) << "the page says: '" << last << "', not '" << want << "'";
    return ok;
  };
  ASSERT_TRUE(loaded("cluster"));
  ASSERT_TRUE(wd.type(wd.find("#by"), "alice-ops"));
  save("cluster", wd.screenshot());
  for (auto section : {"topics", "groups", "txns"}) {
    open(section);
    save(section, wd.screenshot());
  }

  // Transactions: roll the one in doubt back.
  auto txns = client::admin::txn_list(conn);
  ASSERT_TRUE(txns);
  ASSERT_EQ(txns->records_size(), 1);
  const auto txn = txns->records(0).txn_id();
  ASSERT_TRUE(wd.click(wd.wait_for("button.txn-rollback[data-id='" + txn + "']")));
  EXPECT_TRUE(message_has("Transaction " + txn + " is now rolled back"));

  // Dead letters: tick the one and redrive it.
  open("dlq");
  auto box = wd.wait_for("input.dlq-check[value='" + sent->id + "']");
  ASSERT_FALSE(box.empty()) << "the dead letter is not on the page";
  save("dlq", wd.screenshot());
  ASSERT_TRUE(wd.click(box));
  ASSERT_TRUE(wd.click(wd.find("#dlq-redrive")));
  EXPECT_TRUE(message_has("Redrove 1 dead letters of billing"));
  EXPECT_TRUE(eventually(10s, [&] {
    return wd.find("input.dlq-check[value='" + sent->id + "']", true).empty();
  }, 100ms)) << "the page still lists the dead letter";
  save("dlq-redriven", wd.screenshot());

  // Sagas: the failed ones, open pay-42, retry it.
  open("sagas");
  auto row = wd.wait_for("tr[data-saga='pay-42']");
  ASSERT_FALSE(row.empty()) << "saga pay-42 is not on the page";
  ASSERT_TRUE(wd.click(row));
  ASSERT_FALSE(wd.wait_for("#saga-detail:not([hidden])").empty());
  EXPECT_TRUE(eventually(10s, [&] {
    return wd.text(wd.find("#saga-detail-id")) == "pay-42";
  }, 100ms));
  save("sagas", wd.screenshot());
  ASSERT_TRUE(wd.click(wd.find("#saga-retry")));
  EXPECT_TRUE(message_has("Saga pay-42: retry done"));
  // The page shows the retry in the saga's history, with the name.
  EXPECT_TRUE(eventually(10s, [&] {
    auto h = wd.find("#saga-history", true);
    return !h.empty()
           && wd.text(h).find("compensation retried by alice-ops")
                != std::string::npos;
  }, 100ms)) << "the history on the page does not show the retry";
  save("sagas-retried", wd.screenshot());
  // The filter shows only what matches: failed sagas, pay-42 no longer.
  auto state = wd.find("#saga-state");
  ASSERT_FALSE(state.empty());
  wd.script("document.getElementById('saga-state').value = 'failed';");
  ASSERT_TRUE(wd.click(wd.find("#saga-filter")));
  EXPECT_TRUE(loaded("sagas"));
  EXPECT_TRUE(eventually(10s, [&] {
    return !wd.find("tr[data-saga='pay-43']", true).empty()
           && wd.find("tr[data-saga='pay-42']", true).empty();
  }, 100ms)) << "the state filter does not hold pay-43 alone";
  open("audit");
  save("audit", wd.screenshot());

  // What the CLI says: the dead letter is gone and was delivered again;
  // the saga was compensated after a retry recorded with the name typed.
  const std::string edda = EDDA_BINARY;
  auto at = " --node 127.0.0.1:" + std::to_string(n.api_port());
  auto [dlq_rc, dlq_out] = run(edda + " dlq list --group billing" + at);
  EXPECT_EQ(dlq_rc, 0) << dlq_out;
  EXPECT_NE(dlq_out.find("0 dead letters in %DLQ%billing"), std::string::npos)
    << dlq_out;
  EXPECT_TRUE(eventually(15s, [&] { return after_heal.load() >= 1; }))
    << "the redriven message was not delivered again";
  json saga;
  EXPECT_TRUE(eventually(15s, [&] {
    auto [rc, out] = run(edda + " saga show pay-42 --json" + at);
    saga = json::parse(out, nullptr, false);
    return rc == 0 && !saga.is_discarded() && saga.value("state", 0) == 4;
  }, 200ms)) << "saga pay-42 was not compensated: " << saga.dump();
  bool recorded = false;
  if (saga.is_object() && saga.contains("history"))
    for (auto& e : saga["history"])
      recorded = recorded
                 || e.value("what", "") == "compensation retried by alice-ops";
  EXPECT_TRUE(recorded) << "the history does not name the operator: "
                        << saga.dump();
  auto [txn_rc, txn_out] = run(edda + " txn show " + txn + at);
  EXPECT_EQ(txn_rc, 0) << txn_out;
  EXPECT_NE(txn_out.find(": rolled back"), std::string::npos) << txn_out;
  EXPECT_NE(txn_out.find("resolved by operator:alice-ops"), std::string::npos)
    << txn_out;
  auto [rc43, out43] = run(edda + " saga show pay-43" + at);
  EXPECT_NE(out43.find("failed"), std::string::npos)
    << "pay-43 was not touched: " << out43;
}

} // namespace
