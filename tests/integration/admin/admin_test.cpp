// The admin port (runtime/admin): /metrics parsed back and checked against
// the state the test made; /health and /ready; bad requests answered 4xx.
#include "admin/admin_server.hpp"
#include "admin/prometheus.hpp"
#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "config/settings.hpp"
#include "node/embedded_node.hpp"
#include "sagas/remote.hpp"
#include "support/raw_peer.hpp"
#include "support/util.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using edda::test::eventually;
namespace client = edda::client;

/// One sample of the exposition: name, labels, value.
struct sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

/// Parses the Prometheus text format strictly enough to catch a malformed
/// line: every line is a comment (# HELP / # TYPE), or a sample of the
/// family typed last (a histogram's: `_bucket`, `_sum`, `_count`).
std::vector<sample> parse(const std::string& text, std::set<std::string>& counters,
                          std::vector<std::string>& bad,
                          std::set<std::string>* histogram_families = nullptr) {
  std::set<std::string> own;
  auto* histograms = histogram_families != nullptr ? histogram_families : &own;
  static const std::regex line_re{
    R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([-+]?([0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?|Inf)|NaN)$)"};
  static const std::regex label_re{R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re"};
  std::vector<sample> out;
  std::set<std::string> typed;
  std::string family;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0)
      continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t{line.substr(7)};
      std::string name, type;
      t >> name >> type;
      if (!typed.insert(name).second)
        bad.push_back("a second TYPE: " + line);
      if (type == "counter")
        counters.insert(name);
      else if (type == "histogram")
        histograms->insert(name);
      else if (type != "gauge")
        bad.push_back(line);
      family = name;
      continue;
    }
    std::smatch m;
    if (!std::regex_match(line, m, line_re)) {
      bad.push_back(line);
      continue;
    }
    sample s;
    s.name = m[1];
    bool ours = s.name == family;
    if (histograms->count(family) != 0)
      ours = s.name == family + "_bucket" || s.name == family + "_sum"
             || s.name == family + "_count";
    if (!ours)
      bad.push_back("outside its family: " + line);
    s.value = std::stod(m[4]);
    std::string labels = m[3];
    for (std::sregex_iterator i{labels.begin(), labels.end(), label_re}, end;
         i != end; ++i)
      s.labels[(*i)[1]] = (*i)[2];
    out.push_back(std::move(s));
  }
  return out;
}

/// `s` is named `name` and its labels include `want`.
bool matches(const sample& s, const std::string& name,
             const std::map<std::string, std::string>& want) {
  if (s.name != name)
    return false;
  for (auto& [k, v] : want)
    if (auto i = s.labels.find(k); i == s.labels.end() || i->second != v)
      return false;
  return true;
}

/// The sum of the samples named `name` whose labels include `want`.
double sum(const std::vector<sample>& all, const std::string& name,
           const std::map<std::string, std::string>& want = {}) {
  double total = 0;
  for (auto& s : all)
    if (matches(s, name, want))
      total += s.value;
  return total;
}

/// A sample named `name` whose labels include `want` is there.
bool has(const std::vector<sample>& all, const std::string& name,
         const std::map<std::string, std::string>& want = {}) {
  for (auto& s : all)
    if (matches(s, name, want))
      return true;
  return false;
}

/// A transaction of producer group `group` on `topic` left in doubt (its
/// local transaction and every check-back say unknown), with its producer
/// (alive until reset).
struct in_doubt {
  std::unique_ptr<client::transaction_producer> producer;
  std::string txn_id;
};

in_doubt leave_in_doubt(const client::connection& conn, const std::string& topic,
                        const std::string& group) {
  in_doubt out;
  client::txn_producer_options to;
  to.group = group;
  auto tp = client::transaction_producer::start(
    conn, to, [](const client::txn_check&) { return client::txn_outcome::unknown; });
  if (!tp) {
    ADD_FAILURE() << edda::render(tp.error());
    return out;
  }
  client::message tm;
  tm.topic = topic;
  tm.body = "pending";
  auto tr = (*tp)->send_in_transaction(
    tm, [](const client::message&, const std::string&) {
      return client::txn_outcome::unknown;
    });
  if (!tr) {
    ADD_FAILURE() << edda::render(tr.error());
    return out;
  }
  out.producer = std::move(*tp);
  out.txn_id = tr->txn_id;
  return out;
}

/// Serves step `charge` of the declared saga type `pay` (participant
/// pay.charge), always with success.
auto serve_pay(const client::connection& conn) {
  return edda::sagas::participant_host::start(
    conn,
    {{"pay.charge", [](const edda::sagas::step_request&) {
        return edda::sagas::step_result::success("charged");
      }}},
    {.client_id = "pay-1", .workers = 1});
}

TEST(Prometheus, AHistogramHasCumulativeBucketsThenSumAndCount) {
  edda::admin::exposition x;
  x.family("edda_storage.commit_seconds", "histogram", "commit time");
  x.histogram({{"part", "action"}}, {0.001, 0.0025, 1}, {2, 5, 7}, 9, 3.5);
  EXPECT_EQ(x.text(),
            "# HELP edda_storage_commit_seconds commit time\n"
            "# TYPE edda_storage_commit_seconds histogram\n"
            "edda_storage_commit_seconds_bucket{part=\"action\",le=\"0.001\"} 2\n"
            "edda_storage_commit_seconds_bucket{part=\"action\",le=\"0.0025\"} 5\n"
            "edda_storage_commit_seconds_bucket{part=\"action\",le=\"1\"} 7\n"
            "edda_storage_commit_seconds_bucket{part=\"action\",le=\"+Inf\"} 9\n"
            "edda_storage_commit_seconds_sum{part=\"action\"} 3.5\n"
            "edda_storage_commit_seconds_count{part=\"action\"} 9\n");
}

TEST(Metrics, AnObservationCountsInItsBucketAndEveryLargerOne) {
  edda::metrics::histogram h;
  h.observe(0.003);                       // (0.0025, 0.005]
  h.observe(std::chrono::microseconds{50}); // <= 0.0001
  h.observe(0.005);                       // a bound is inclusive
  h.observe(60.0);                        // over the last bound: +Inf only
  auto r = h.read();
  const auto& b = edda::metrics::histogram::bounds;
  auto at = [&](double le) {
    for (size_t i = 0; i < b.size(); ++i)
      if (b[i] == le)
        return r.buckets[i];
    ADD_FAILURE() << "no bound " << le;
    return uint64_t{0};
  };
  EXPECT_EQ(at(0.0001), 1u);
  EXPECT_EQ(at(0.0025), 1u);
  EXPECT_EQ(at(0.005), 3u);
  EXPECT_EQ(at(10.0), 3u);
  EXPECT_EQ(r.count, 4u);
  EXPECT_NEAR(r.sum, 0.003 + 0.00005 + 0.005 + 60.0, 1e-6);
  // The registry hands out one histogram per name and label value.
  auto& a = edda::metrics::latency("test.x", "part", "a");
  EXPECT_EQ(&a, &edda::metrics::latency("test.x", "part", "a"));
  EXPECT_NE(&a, &edda::metrics::latency("test.x", "part", "b"));
}

TEST(Prometheus, NamesAreMadeValidAndLabelValuesEscaped) {
  EXPECT_EQ(edda::admin::metric_name("edda_group.rebalances_total"),
            "edda_group_rebalances_total");
  EXPECT_EQ(edda::admin::metric_name("9lives"), "_9lives");
  EXPECT_EQ(edda::admin::escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  edda::admin::exposition x;
  x.family("edda_x.y", "gauge", "help with a \\ and\na newline");
  x.sample({{"topic", "we\"ird"}, {"partition", "0"}}, 3);
  x.sample(0.25);
  EXPECT_EQ(x.text(),
            "# HELP edda_x_y help with a \\\\ and\\na newline\n"
            "# TYPE edda_x_y gauge\n"
            "edda_x_y{topic=\"we\\\"ird\",partition=\"0\"} 3\n"
            "edda_x_y 0.25\n");
  std::set<std::string> counters;
  std::vector<std::string> bad;
  auto all = parse(x.text(), counters, bad);
  EXPECT_TRUE(bad.empty());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].labels["topic"], "we\\\"ird"); // as written, escaped
  EXPECT_EQ(all[1].value, 0.25);
}

class AdminHttpTest : public ::testing::Test {
protected:
  edda::config::node_settings settings() const {
    edda::config::node_settings s;
    s.data_dir = dir_.path() + "/data";
    s.listen_port = 0; // node.admin_listen auto: the OS picks its port too
    s.mode = edda::config::durability::nosync;
    s.map_size = 256ull << 20;
    s.log_level = "error";
    s.saga_types = {"pay = charge"};
    return s;
  }

  edda::test::temp_dir dir_;
};

TEST_F(AdminHttpTest, MetricsMatchTheStateTheTestMade) {
  auto node = edda::node::embedded_node::start(settings());
  ASSERT_TRUE(node) << edda::render(node.error());
  auto& n = **node;
  ASSERT_NE(n.admin_port(), 0);
  ASSERT_NE(n.admin_port(), n.port());
  auto conn = n.connect();
  ASSERT_TRUE(client::admin::create_topic(conn, "orders", 2));
  client::producer p{conn};
  auto send = [&](int i) {
    client::message m;
    m.topic = "orders";
    m.key = "k" + std::to_string(i);
    m.body = "m" + std::to_string(i);
    auto r = p.send(m);
    ASSERT_TRUE(r) << edda::render(r.error());
  };
  for (int i = 0; i < 5; ++i)
    send(i);
  // Group billing consumes and acknowledges all five.
  {
    std::atomic<int> got{0};
    client::consumer_options o;
    o.group = "billing";
    o.topic = "orders";
    auto c = client::consumer::start(conn, o, [&](const client::received&) {
      ++got;
      return client::consume_result::success;
    });
    ASSERT_TRUE(c) << edda::render(c.error());
    ASSERT_TRUE(eventually(10s, [&] { return got.load() == 5; }));
    ASSERT_TRUE(eventually(10s, [&] {
      auto d = client::admin::describe_topic(conn, "orders");
      if (!d)
        return false;
      uint64_t lag = 0;
      for (auto& g : d->groups())
        lag += g.lag();
      return d->groups_size() > 0 && lag == 0;
    }));
  }
  // Two more after the group stopped: its lag is 2.
  send(5);
  send(6);
  // A transaction whose outcome stays unknown: in doubt.
  auto doubt = leave_in_doubt(conn, "orders", "wallets");
  ASSERT_FALSE(doubt.txn_id.empty());
  // A saga whose participant never registers: running (waiting for it).
  ASSERT_TRUE(client::admin::saga_start(conn, "pay", "s1", "{}"));

  httplib::Client http{"127.0.0.1", n.admin_port()};
  http.set_read_timeout(10, 0);
  auto before = client::admin::node_status(conn);
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res) << "no answer from the admin port";
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->get_header_value("Content-Type").find("version=0.0.4"),
            std::string::npos);
  std::set<std::string> counters;
  std::vector<std::string> bad;
  auto all = parse(res->body, counters, bad);
  EXPECT_TRUE(bad.empty()) << "malformed lines, the first: " << bad.front();
  EXPECT_EQ(sum(all, "edda_up"), 1);
  EXPECT_EQ(sum(all, "edda_scrape_errors"), 0) << res->body;
  EXPECT_GT(sum(all, "edda_lmdb_map_used_bytes"), 0);
  EXPECT_EQ(sum(all, "edda_lmdb_map_size_bytes"), 256.0 * (1 << 20));
  // 7 plain messages; the half message is not in the topic until commit.
  EXPECT_EQ(sum(all, "edda_partition_end_offset", {{"topic", "orders"}}), 7)
    << res->body;
  EXPECT_EQ(sum(all, "edda_partition_messages", {{"topic", "orders"}}), 7);
  EXPECT_EQ(sum(all, "edda_partition_end_offset",
                {{"topic", "orders"}, {"partition", "0"}})
              + sum(all, "edda_partition_end_offset",
                    {{"topic", "orders"}, {"partition", "1"}}),
            7);
  EXPECT_EQ(sum(all, "edda_group_lag", {{"group", "billing"}, {"topic", "orders"}}),
            2)
    << res->body;
  EXPECT_EQ(sum(all, "edda_group_committed_offset",
                {{"group", "billing"}, {"topic", "orders"}}),
            5);
  for (auto p : {"0", "1"}) {
    std::map<std::string, std::string> l{{"group", "billing"},
                                         {"topic", "orders"},
                                         {"partition", p}};
    EXPECT_TRUE(has(all, "edda_group_lag", l)) << p;
    EXPECT_TRUE(has(all, "edda_group_committed_offset", l)) << p;
    EXPECT_TRUE(has(all, "edda_group_inflight", l)) << p;
  }
  EXPECT_TRUE(has(all, "edda_group_members", {{"group", "billing"}}));
  EXPECT_TRUE(has(all, "edda_dlq_depth", {{"group", "billing"}}));
  EXPECT_EQ(sum(all, "edda_dlq_depth", {{"group", "billing"}}), 0);
  EXPECT_EQ(sum(all, "edda_transactions_in_doubt"), 1) << res->body;
  ASSERT_TRUE(has(all, "edda_transaction_oldest_in_doubt_seconds"));
  EXPECT_LT(sum(all, "edda_transaction_oldest_in_doubt_seconds"), 60);
  EXPECT_EQ(sum(all, "edda_sagas", {{"state", "running"}}), 1) << res->body;
  ASSERT_TRUE(has(all, "edda_sagas", {{"state", "failed"}}));
  EXPECT_EQ(sum(all, "edda_sagas", {{"state", "failed"}}), 0);
  ASSERT_TRUE(has(all, "edda_cluster_clustered"));
  EXPECT_EQ(sum(all, "edda_cluster_clustered"), 0);
  // Every counter of the node is there, as a counter, with a value at
  // least what the node said before the scrape (and at most after it).
  ASSERT_TRUE(before);
  auto after = client::admin::node_status(conn);
  ASSERT_TRUE(after);
  EXPECT_GT(before->counters_size(), 0);
  for (auto& [name, value] : before->counters()) {
    std::string metric = "edda_" + name + "_total";
    for (auto& ch : metric)
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_')
        ch = '_';
    EXPECT_EQ(counters.count(metric), 1u) << metric;
    ASSERT_TRUE(has(all, metric)) << metric;
    EXPECT_GE(sum(all, metric), static_cast<double>(value)) << metric;
    EXPECT_LE(sum(all, metric),
              static_cast<double>(after->counters().at(name)))
      << metric;
  }

  // Probes.
  auto health = http.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok\n");
  auto ready = http.Get("/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "ready\n");
}

/// The samples of one scrape of `port`'s /metrics, with its histogram
/// families; fails the test on a malformed line.
std::vector<sample> scrape(uint16_t port, std::set<std::string>& histograms) {
  httplib::Client http{"127.0.0.1", port};
  http.set_read_timeout(10, 0);
  auto res = http.Get("/metrics");
  if (!res) {
    ADD_FAILURE() << "no answer from the admin port";
    return {};
  }
  EXPECT_EQ(res->status, 200);
  std::set<std::string> counters;
  std::vector<std::string> bad;
  auto all = parse(res->body, counters, bad, &histograms);
  EXPECT_TRUE(bad.empty()) << "malformed lines, the first: " << bad.front();
  return all;
}

TEST_F(AdminHttpTest, LatencyHistogramsCountTheCommitsAndStepsTheNodeMade) {
  auto node = edda::node::embedded_node::start(settings());
  ASSERT_TRUE(node) << edda::render(node.error());
  auto& n = **node;
  auto conn = n.connect();
  ASSERT_TRUE(client::admin::create_topic(conn, "orders", 1));
  auto host = serve_pay(conn);
  ASSERT_TRUE(host) << edda::render(host.error());
  std::set<std::string> families;
  auto before = scrape(n.admin_port(), families);
  // Three acknowledged sends: each waited for a commit of its own.
  client::producer p{conn};
  for (int i = 0; i < 3; ++i) {
    client::message m;
    m.topic = "orders";
    m.body = "m" + std::to_string(i);
    auto r = p.send(m);
    ASSERT_TRUE(r) << edda::render(r.error());
  }
  // Two sagas of one step each, waited for to the end.
  for (auto id : {"h1", "h2"}) {
    auto s = client::admin::saga_start(conn, "pay", id, "{}", 10s);
    ASSERT_TRUE(s) << edda::render(s.error());
    ASSERT_EQ(s->record().state(),
              static_cast<uint32_t>(edda::sagas::saga_state::completed));
  }
  auto after = scrape(n.admin_port(), families);
  for (auto f : {"edda_storage_commit_seconds", "edda_sagas_step_seconds",
                 "edda_sagas_duration_seconds"})
    EXPECT_EQ(families.count(f), 1u) << f << " is not a histogram family";

  // Every series: buckets cumulative in the order of their bounds, +Inf
  // equal to _count.
  std::map<std::string, std::vector<std::pair<std::string, double>>> series;
  for (auto& s : after)
    if (s.name.size() > 7 && s.name.rfind("_bucket") == s.name.size() - 7) {
      auto key = s.name;
      for (auto& [k, v] : s.labels)
        if (k != "le")
          key += "|" + k + "=" + v;
      series[key].emplace_back(s.labels.at("le"), s.value);
    }
  ASSERT_GE(series.size(), 3u);
  for (auto& [key, buckets] : series) {
    double last = 0;
    for (auto& [le, v] : buckets) {
      EXPECT_GE(v, last) << key << " le=" << le;
      last = v;
    }
    ASSERT_EQ(buckets.back().first, "+Inf") << key;
  }
  auto delta = [&](const std::string& name,
                   const std::map<std::string, std::string>& l = {}) {
    return sum(after, name, l) - sum(before, name, l);
  };
  EXPECT_EQ(sum(after, "edda_storage_commit_seconds_bucket", {{"le", "+Inf"}}),
            sum(after, "edda_storage_commit_seconds_count"));
  EXPECT_GE(delta("edda_storage_commit_seconds_count"), 3);
  EXPECT_GE(delta("edda_storage_commit_seconds_sum"), 0);
  // One action per saga, no compensation; each answered within 10 s.
  EXPECT_EQ(delta("edda_sagas_step_seconds_count", {{"part", "action"}}), 2);
  EXPECT_EQ(delta("edda_sagas_step_seconds_bucket",
                  {{"part", "action"}, {"le", "10"}}),
            2);
  EXPECT_GT(delta("edda_sagas_step_seconds_sum", {{"part", "action"}}), 0);
  EXPECT_LT(delta("edda_sagas_step_seconds_sum", {{"part", "action"}}), 20);
  EXPECT_EQ(delta("edda_sagas_step_seconds_count", {{"part", "compensation"}}),
            0);
  EXPECT_EQ(delta("edda_sagas_duration_seconds_count",
                  {{"state", "completed"}}),
            2);
  EXPECT_EQ(delta("edda_sagas_duration_seconds_count", {{"state", "failed"}}),
            0);
}

TEST_F(AdminHttpTest, AlertsTellOfAFillingMapAndOfATransactionNobodyCanSettle) {
  auto s = settings();
  s.map_size = 8ull << 20;
  s.txn_check_after_ms = 200;
  s.txn_orphan_alert_after_ms = 600;
  // Declared before the node: its hook may run until the node is gone.
  std::mutex mtx;
  std::vector<edda::alert> alerts;
  auto node = edda::node::embedded_node::start(s);
  ASSERT_TRUE(node) << edda::render(node.error());
  auto& n = **node;
  n.alerts().add_hook([&](const edda::alert& a) {
    std::lock_guard<std::mutex> guard{mtx};
    alerts.push_back(a);
  });
  auto raised = [&](const std::string& kind) {
    std::lock_guard<std::mutex> guard{mtx};
    for (auto& a : alerts)
      if (a.kind == kind)
        return a;
    return edda::alert{};
  };
  auto conn = n.connect();

  // A transaction whose producer goes away before it is settled.
  ASSERT_TRUE(client::admin::create_topic(conn, "fill", 1));
  auto tr = leave_in_doubt(conn, "fill", "wallets");
  ASSERT_FALSE(tr.txn_id.empty());
  auto shown = client::admin::txn_show(conn, tr.txn_id);
  ASSERT_TRUE(shown) << edda::render(shown.error());
  EXPECT_FALSE(shown->orphaned()) << "its producer is alive";
  tr.producer.reset(); // the only producer of group wallets stops
  ASSERT_TRUE(eventually(10s, [&] { return !raised("txn_orphaned").kind.empty(); }))
    << "no txn_orphaned alert";
  auto orphan = raised("txn_orphaned");
  EXPECT_EQ(orphan.subject, tr.txn_id);
  EXPECT_NE(orphan.detail.find("producer group 'wallets'"), std::string::npos)
    << orphan.detail;
  EXPECT_NE(orphan.detail.find("edda txn resolve"), std::string::npos);
  shown = client::admin::txn_show(conn, tr.txn_id);
  ASSERT_TRUE(shown);
  EXPECT_TRUE(shown->orphaned());
  std::set<std::string> families;
  auto all = scrape(n.admin_port(), families);
  EXPECT_EQ(sum(all, "edda_transactions_orphaned"), 1);
  ASSERT_TRUE(client::admin::txn_resolve(conn, tr.txn_id, false, "test"));
  all = scrape(n.admin_port(), families);
  EXPECT_EQ(sum(all, "edda_transactions_orphaned"), 0);
  EXPECT_EQ(sum(all, "edda_transactions_in_doubt"), 0);

  // The map fills: past 80% (told after a commit, at most once a second)
  // an alert says so, before any write fails.
  client::producer p{conn};
  const std::string body(256 * 1024, 'x');
  double ratio = 0;
  for (int i = 0; i < 40 && ratio < 0.84; ++i) {
    client::message m;
    m.topic = "fill";
    m.body = body;
    auto r = p.send(m);
    ASSERT_TRUE(r) << "write " << i << " failed before 84%: "
                   << edda::render(r.error());
    auto st = client::admin::node_status(conn);
    ASSERT_TRUE(st);
    ratio = static_cast<double>(st->map_used()) / static_cast<double>(st->map_size());
  }
  ASSERT_GE(ratio, 0.84);
  // Small writes (a commit each) until the writer's next look tells it.
  client::message small;
  small.topic = "fill";
  small.body = "one more";
  ASSERT_TRUE(eventually(5s, [&] {
    EXPECT_TRUE(p.send(small));
    return !raised("storage_map_high").kind.empty();
  }, 50ms)) << "no storage_map_high alert at " << ratio;
  auto high = raised("storage_map_high");
  EXPECT_NE(high.detail.find("% used"), std::string::npos) << high.detail;
  EXPECT_NE(high.detail.find("storage.map_size"), std::string::npos);
  all = scrape(n.admin_port(), families);
  EXPECT_GE(sum(all, "edda_lmdb_map_used_ratio"), 0.8);
  EXPECT_GE(sum(all, "edda_alerts_storage_map_high_total"), 1);
}

/// Everything this process writes to stderr while alive, in a file.
class stderr_capture {
public:
  explicit stderr_capture(const std::string& path) : path_(path) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~stderr_capture() {
    restore();
  }
  /// Stops capturing; the lines written.
  std::vector<std::string> restore() {
    if (saved_ >= 0) {
      std::fflush(stderr);
      ::dup2(saved_, 2);
      ::close(saved_);
      saved_ = -1;
    }
    std::vector<std::string> lines;
    std::istringstream in{edda::test::read_file(path_)};
    for (std::string l; std::getline(in, l);)
      lines.push_back(l);
    return lines;
  }

private:
  std::string path_;
  int saved_ = -1;
};

TEST_F(AdminHttpTest, JsonLogsCarryTheSagaAndTheOperatorOfEachAction) {
  auto s = settings();
  s.log_level = "info";
  s.log_format = "json";
  s.log_levels = "partition=error";
  struct restore { // the process's log settings, however the test ends
    ~restore() {
      edda::log::set_format(edda::log::format_kind::text);
      std::string e;
      (void) edda::log::set_levels("", e);
    }
  } guard;
  stderr_capture capture{dir_.path() + "/stderr.log"};
  std::vector<std::string> lines;
  std::string txn_id;
  {
    auto node = edda::node::embedded_node::start(s);
    ASSERT_TRUE(node) << edda::render(node.error());
    auto& n = **node;
    auto conn = n.connect();
    auto host = serve_pay(conn);
    ASSERT_TRUE(host) << edda::render(host.error());
    auto done = client::admin::saga_start(conn, "pay", "log-1", "{}", 10s);
    ASSERT_TRUE(done) << edda::render(done.error());
    // A transaction settled by an operator.
    ASSERT_TRUE(client::admin::create_topic(conn, "orders", 1));
    auto doubt = leave_in_doubt(conn, "orders", "wallets");
    txn_id = doubt.txn_id;
    ASSERT_FALSE(txn_id.empty());
    ASSERT_TRUE(client::admin::txn_resolve(conn, txn_id, true, "alice"));
    lines = capture.restore();
  }
  bool started = false, completed = false, audited = false;
  static const std::regex text_line{R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z )"};
  for (auto& l : lines) {
    // Other libraries (gRPC) may write their own lines; edda's are JSON.
    EXPECT_FALSE(std::regex_search(l, text_line)) << "a text line: " << l;
    if (l.empty() || l[0] != '{')
      continue;
    auto j = nlohmann::json::parse(l, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "not JSON: " << l;
    ASSERT_TRUE(j.contains("ts") && j.contains("level") && j.contains("msg")
                && j.contains("component"))
      << l;
    EXPECT_EQ(j["ts"].get<std::string>().back(), 'Z') << l;
    EXPECT_NE(j["component"], "partition") << "partition=error let through: " << l;
    if (j["component"] == "saga" && j.value("saga_id", "") == "log-1") {
      EXPECT_EQ(j.value("saga_type", ""), "pay") << l;
      EXPECT_FALSE(j.value("node", "").empty()) << l;
      auto msg = j["msg"].get<std::string>();
      started |= msg.find("started") != std::string::npos;
      completed |= msg.find("completed in") != std::string::npos
                   && j.value("state", "") == "completed";
    }
    if (j["component"] == "audit" && j.value("by", "") == "alice"
        && j.value("action", "") == "txn resolve commit")
      audited = j.value("txn_id", "") == txn_id && j.value("group", "") == "wallets";
  }
  EXPECT_TRUE(started) << "no saga started line";
  EXPECT_TRUE(completed) << "no saga completed line";
  EXPECT_TRUE(audited) << "no audit line for the operator's resolve";
}

TEST_F(AdminHttpTest, BadRequestsGetAReasonAndTheNodeServesOn) {
  auto node = edda::node::embedded_node::start(settings());
  ASSERT_TRUE(node) << edda::render(node.error());
  auto& n = **node;
  httplib::Client http{"127.0.0.1", n.admin_port()};
  http.set_read_timeout(10, 0);
  auto nope = http.Get("/nope?x=1");
  ASSERT_TRUE(nope);
  EXPECT_EQ(nope->status, 404);
  EXPECT_NE(nope->body.find("no route /nope"), std::string::npos) << nope->body;
  EXPECT_NE(nope->body.find("GET /metrics"), std::string::npos) << nope->body;
  auto post = http.Post("/metrics", "x=1", "application/x-www-form-urlencoded");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  EXPECT_EQ(post->get_header_value("Allow"), "GET, HEAD");
  EXPECT_NE(post->body.find("only GET"), std::string::npos) << post->body;
  // A body, even a big one, is not read for a method that is refused.
  auto big = http.Post("/ready", std::string(128 * 1024, 'x'), "text/plain");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 405);
  // A chunked body that never ends is not read: refused at once.
  {
    int cfd = edda::test::raw_connect(n.admin_port());
    ASSERT_GE(cfd, 0);
    std::string head = "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"
                       "100000\r\n";
    ASSERT_TRUE(edda::test::write_all(cfd, head));
    char rb[256];
    auto r = ::read(cfd, rb, sizeof(rb));
    ::close(cfd);
    ASSERT_GT(r, 0);
    EXPECT_EQ(std::string(rb, static_cast<size_t>(r)).rfind("HTTP/1.1 405", 0),
              0u);
  }
  // Garbage on the socket: 400, and the node answers others.
  int fd = edda::test::raw_connect(n.admin_port());
  ASSERT_GE(fd, 0);
  std::string junk = "\x16\x03\x01 not http at all\r\n\r\n";
  ASSERT_TRUE(edda::test::write_all(fd, junk));
  char buf[512];
  auto got = ::read(fd, buf, sizeof(buf));
  ::close(fd);
  ASSERT_GT(got, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(got)).rfind("HTTP/1.1 400", 0),
            0u)
    << std::string(buf, static_cast<size_t>(got));
  auto health = http.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(AdminHttpTest, AStopRightAfterTheStartReturns) {
  auto node = edda::node::embedded_node::start(settings());
  ASSERT_TRUE(node) << edda::render(node.error());
  // Before the fix, a stop that came before the server's thread ran
  // waited for ever (httplib's stop() does nothing until it runs).
  for (int i = 0; i < 50; ++i) {
    auto a = edda::admin::server::start("127.0.0.1", 0, (*node)->connect());
    ASSERT_TRUE(a) << edda::render(a.error());
    (*a)->stop();
  }
}

TEST_F(AdminHttpTest, OffHasNoPortAndATakenPortIsAClearError) {
  auto s = settings();
  s.admin_listen = "off";
  auto node = edda::node::embedded_node::start(s);
  ASSERT_TRUE(node) << edda::render(node.error());
  EXPECT_EQ((*node)->admin_port(), 0);
  // A second node whose admin port is the first node's node port.
  edda::test::temp_dir other;
  auto t = settings();
  t.data_dir = other.path() + "/data";
  t.admin_listen = "127.0.0.1:" + std::to_string((*node)->port());
  auto second = edda::node::embedded_node::start(t);
  ASSERT_FALSE(second);
  EXPECT_EQ(edda::code_of(second.error()), edda::errc::unavailable);
  auto text = edda::render(second.error());
  EXPECT_NE(text.find("node.admin_listen"), std::string::npos) << text;
  // Two nodes with the same admin port: the second is refused (httplib's
  // SO_REUSEPORT would have let both bind).
  edda::test::temp_dir d1, d2;
  auto a = settings();
  a.data_dir = d1.path() + "/data";
  a.admin_listen = "127.0.0.1:0";
  auto first = edda::node::embedded_node::start(a);
  ASSERT_TRUE(first) << edda::render(first.error());
  auto b = settings();
  b.data_dir = d2.path() + "/data";
  b.admin_listen = "127.0.0.1:" + std::to_string((*first)->admin_port());
  auto twin = edda::node::embedded_node::start(b);
  ASSERT_FALSE(twin) << "two nodes on admin port " << (*first)->admin_port();
  EXPECT_NE(edda::render(twin.error()).find("node.admin_listen"),
            std::string::npos);
}

/// The JSON of an answer (discarded when it is not JSON).
nlohmann::json json_of(const httplib::Result& r) {
  return r ? nlohmann::json::parse(r->body, nullptr, false)
           : nlohmann::json(nlohmann::json::value_t::discarded);
}

/// The answer has `status` and a JSON error that contains `words`.
::testing::AssertionResult refused(const httplib::Result& r, int status,
                                   const std::string& words) {
  if (!r)
    return ::testing::AssertionFailure() << "no answer";
  auto j = json_of(r);
  if (r->status != status || j.is_discarded() || !j.is_object()
      || !j.contains("error") || !j["error"].is_string()
      || j["error"].get<std::string>().find(words) == std::string::npos)
    return ::testing::AssertionFailure()
           << "wanted " << status << " with an error saying '" << words
           << "', got " << r->status << " " << r->body;
  return ::testing::AssertionSuccess();
}

TEST_F(AdminHttpTest, ConsoleApiRefusesBadInputAndActionsOnWhatMovedOn) {
  auto node = edda::node::embedded_node::start(settings());
  ASSERT_TRUE(node) << edda::render(node.error());
  auto& n = **node;
  auto conn = n.connect();
  ASSERT_TRUE(client::admin::create_topic(conn, "orders", 1));
  // A running saga (its participant never registers) and a transaction in
  // doubt.
  ASSERT_TRUE(client::admin::saga_start(conn, "pay", "s1", "{}"));
  auto doubt = leave_in_doubt(conn, "orders", "wallets");
  ASSERT_FALSE(doubt.txn_id.empty());
  auto txns = client::admin::txn_list(conn);
  ASSERT_TRUE(txns);
  ASSERT_EQ(txns->records_size(), 1);
  auto txn = txns->records(0).txn_id();

  httplib::Client http{"127.0.0.1", n.admin_port()};
  http.set_read_timeout(10, 0);
  auto post = [&](const std::string& path, const std::string& body) {
    return http.Post(path.c_str(), body, "application/json");
  };

  // The page: HTML with the operator's name field.
  auto page = http.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"),
            std::string::npos);
  EXPECT_NE(page->body.find("id=\"by\""), std::string::npos);
  auto console = http.Get("/console");
  ASSERT_TRUE(console);
  EXPECT_EQ(console->body, page->body);
  // No other site may frame it, act through it (CSRF) or read it by a name
  // rebound to 127.0.0.1 (DNS rebinding): the transaction stays in doubt.
  EXPECT_EQ(page->get_header_value("X-Frame-Options"), "DENY");
  auto resolve_path = "/api/txns/" + txn + "/resolve";
  auto commit = std::string{R"({"outcome": "commit", "by": "mallory"})"};
  auto form = http.Post(resolve_path.c_str(), commit, "text/plain");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 415) << form->body;
  auto foreign = http.Post(resolve_path.c_str(),
                           httplib::Headers{{"Origin", "http://evil.example"}},
                           commit, "application/json");
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->status, 403) << foreign->body;
  auto cross = http.Get("/api/txns",
                        httplib::Headers{{"Sec-Fetch-Site", "cross-site"}});
  ASSERT_TRUE(cross);
  EXPECT_EQ(cross->status, 403) << cross->body;
  httplib::Client rebound{"127.0.0.1", n.admin_port()};
  auto renamed = rebound.Get("/api/txns",
                             httplib::Headers{{"Host", "evil.example"}});
  ASSERT_TRUE(renamed);
  EXPECT_EQ(renamed->status, 421) << renamed->body;
  auto still = client::admin::txn_show(conn, txn);
  ASSERT_TRUE(still);
  EXPECT_EQ(still->state(), edda::wire::v1::TxnRecord::PREPARED);

  // Reads with bad parameters: 400 with a reason; unknown ids: 404.
  EXPECT_TRUE(refused(http.Get("/api/dlq"), 400, "group is required"));
  EXPECT_TRUE(refused(http.Get("/api/dlq?group=g&limit=x"), 400,
                      "limit takes a number"));
  EXPECT_TRUE(refused(http.Get("/api/sagas?state=sleepy"), 400,
                      "state takes running"));
  EXPECT_TRUE(refused(http.Get("/api/sagas?limit=0"), 400,
                      "limit must be from 1"));
  EXPECT_TRUE(refused(http.Get("/api/sagas?older_than=-5"), 400,
                      "older_than takes a number"));
  EXPECT_TRUE(refused(http.Get("/api/txns?limit=99999999999999"), 400,
                      "limit takes a number"));
  EXPECT_TRUE(refused(http.Get("/api/sagas/nope"), 404, "nope"));
  EXPECT_TRUE(refused(http.Get("/api/txns/nope"), 404, ""));
  EXPECT_TRUE(refused(http.Get("/api/nothing/here"), 404, "no route"));

  // Good reads.
  auto sagas = json_of(http.Get("/api/sagas?state=running&type=pay"));
  ASSERT_TRUE(sagas.is_object()) << sagas.dump();
  ASSERT_EQ(sagas["records"].size(), 1u) << sagas.dump();
  EXPECT_EQ(sagas["records"][0]["id"], "s1");
  EXPECT_EQ(json_of(http.Get("/api/sagas?state=failed"))["records"].size(), 0u);
  EXPECT_EQ(json_of(http.Get("/api/sagas?older_than=3600"))["records"].size(),
            0u)
    << "s1 is seconds old";
  auto topics = json_of(http.Get("/api/topics"));
  ASSERT_TRUE(topics.is_object());
  bool orders = false;
  for (auto& t : topics["topics"])
    orders = orders || (t["name"] == "orders" && t["partitions"].size() == 1);
  EXPECT_TRUE(orders) << topics.dump();
  EXPECT_EQ(json_of(http.Get("/api/cluster"))["clustered"], false);
  EXPECT_EQ(json_of(http.Get("/api/txns"))["records"].size(), 1u);

  // Actions with bad bodies: 400, and nothing done.
  auto cmd = "/api/sagas/s1/command";
  EXPECT_TRUE(refused(post(cmd, "{not json"), 400, "JSON object"));
  EXPECT_TRUE(refused(post(cmd, "[1,2]"), 400, "JSON object"));
  EXPECT_TRUE(refused(post(cmd, R"({"command":"pause"})"), 400,
                      "by is required"));
  EXPECT_TRUE(refused(post(cmd, R"({"command":"pause","by":""})"), 400,
                      "by is required"));
  EXPECT_TRUE(refused(post(cmd, R"({"command":"pause","by":7})"), 400,
                      "by must be a string"));
  EXPECT_TRUE(refused(post(cmd, R"({"command":"pause","by":")"
                                  + std::string(65, 'x') + R"("})"),
                      400, "longer than 64"));
  EXPECT_TRUE(refused(post(cmd, R"({"command":"explode","by":"bob"})"), 400,
                      "command takes pause"));
  EXPECT_TRUE(refused(post(cmd, R"({"command":"skip","by":"bob"})"), 400,
                      "skip needs step"));
  EXPECT_TRUE(refused(post(cmd, R"({"command":"skip","step":"nope","by":"bob"})"),
                      400, "no step 'nope'"));
  EXPECT_TRUE(refused(post(cmd, R"({"command":"pause","by":"bob","expect_state":"dozing"})"),
                      400, "not a saga state"));
  EXPECT_TRUE(refused(post("/api/sagas/nope/command",
                           R"({"command":"pause","by":"bob"})"),
                      404, "nope"));
  auto resolve = "/api/txns/" + txn + "/resolve";
  EXPECT_TRUE(refused(post(resolve, R"({"outcome":"maybe","by":"bob"})"), 400,
                      "commit or rollback"));
  EXPECT_TRUE(refused(post("/api/txns/nope/resolve",
                           R"({"outcome":"commit","by":"bob"})"),
                      404, ""));
  EXPECT_TRUE(refused(post("/api/dlq/redrive", R"({"group":"g","by":"bob"})"),
                      400, "ids is required"));
  EXPECT_TRUE(refused(post("/api/dlq/redrive",
                           R"({"group":"g","ids":[3],"by":"bob"})"),
                      400, "non-empty strings"));
  // A dead letter that is not (or no longer) there: refused, none redriven.
  auto gone = post("/api/dlq/redrive",
                   R"({"group":"billing","ids":["0123456789abcdef"],"by":"bob"})");
  ASSERT_TRUE(gone);
  if (gone->status != 404) { // a group the node does not know at all
    EXPECT_TRUE(refused(gone, 409, "not in the DLQ"));
    EXPECT_EQ(json_of(gone)["missing"][0], "0123456789abcdef");
  }
  ASSERT_TRUE(client::admin::txn_show(conn, txn));
  EXPECT_EQ(client::admin::txn_show(conn, txn)->state(),
            edda::wire::v1::TxnRecord::PREPARED)
    << "a refused action did something";

  // A body over 64 KiB is refused before it is read; a chunked one too.
  EXPECT_TRUE(refused(post(cmd, std::string(128 * 1024, ' ')), 413,
                      "larger than 65536"));
  {
    int cfd = edda::test::raw_connect(n.admin_port());
    ASSERT_GE(cfd, 0);
    std::string head = std::string{"POST "} + cmd + " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n100000\r\n";
    ASSERT_TRUE(edda::test::write_all(cfd, head));
    // The whole answer: the server closes the connection after it (the
    // head and the body may come in two reads).
    timeval tv{5, 0};
    ::setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    std::string answer;
    char rb[512];
    for (ssize_t r; (r = ::read(cfd, rb, sizeof(rb))) > 0;)
      answer.append(rb, static_cast<size_t>(r));
    ::close(cfd);
    EXPECT_EQ(answer.rfind("HTTP/1.1 411", 0), 0u) << answer;
    EXPECT_NE(answer.find("chunked"), std::string::npos) << answer;
  }

  // Actions that the state allows: done, and recorded with who did them.
  auto paused = post(cmd, R"({"command":"pause","by":"bob","expect_state":"running"})");
  ASSERT_TRUE(paused);
  EXPECT_EQ(paused->status, 200) << paused->body;
  auto after = client::admin::saga_show(conn, "s1");
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->paused());
  bool recorded = false;
  for (auto& e : after->history())
    recorded = recorded || e.what() == "paused by bob";
  EXPECT_TRUE(recorded) << after->DebugString();

  // The page showed s1 failed, but it is running: refused with its state.
  auto stale = post(cmd, R"({"command":"retry","by":"bob","expect_state":"failed"})");
  EXPECT_TRUE(refused(stale, 409, "is running now, not failed"));
  EXPECT_EQ(json_of(stale)["state"], "running");
  EXPECT_EQ(json_of(stale)["saga"]["id"], "s1");

  // A transaction resolved meanwhile: the second operator is refused.
  auto rolled = post(resolve, R"({"outcome":"rollback","by":"bob"})");
  ASSERT_TRUE(rolled);
  EXPECT_EQ(rolled->status, 200) << rolled->body;
  EXPECT_EQ(json_of(rolled)["state"], "rolled back");
  EXPECT_EQ(json_of(rolled)["resolved_by"], "operator:bob");
  auto late = post(resolve, R"({"outcome":"commit","by":"carol"})");
  EXPECT_TRUE(refused(late, 409, "no longer in doubt"));
  EXPECT_EQ(json_of(late)["state"], "rolled back");
  EXPECT_EQ(json_of(late)["txn"]["resolved_by"], "operator:bob");
  EXPECT_EQ(client::admin::txn_show(conn, txn)->state(),
            edda::wire::v1::TxnRecord::ROLLED_BACK);

  // Every action is in the console's list, with who and how it ended.
  auto audit = json_of(http.Get("/api/audit"));
  ASSERT_TRUE(audit.is_object());
  std::vector<std::string> seen;
  for (auto& a : audit["actions"])
    seen.push_back(a["action"].get<std::string>() + " "
                   + a["by"].get<std::string>() + " "
                   + std::to_string(a["status"].get<int>()));
  std::vector<std::string> want{"commit carol 409", "rollback bob 200",
                                "retry bob 409", "pause bob 200"};
  if (gone->status == 409)
    want.emplace_back("redrive bob 409");
  EXPECT_EQ(seen, want);

  // And the node serves on.
  auto health = http.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

} // namespace
