// The admin port (runtime/admin): /metrics parsed back and checked against
// the state the test made; /health and /ready; bad requests answered 4xx.
#include "admin/admin_server.hpp"
#include "admin/prometheus.hpp"
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "config/settings.hpp"
#include "node/embedded_node.hpp"
#include "support/util.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
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
/// line: every line is a comment (# HELP / # TYPE), or a sample.
std::vector<sample> parse(const std::string& text, std::set<std::string>& counters,
                          std::vector<std::string>& bad) {
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
    if (s.name != family)
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
  client::txn_producer_options to;
  to.group = "wallets";
  auto tp = client::transaction_producer::start(
    conn, to, [](const client::txn_check&) { return client::txn_outcome::unknown; });
  ASSERT_TRUE(tp) << edda::render(tp.error());
  client::message tm;
  tm.topic = "orders";
  tm.body = "pending";
  auto tr = (*tp)->send_in_transaction(
    tm, [](const client::message&, const std::string&) {
      return client::txn_outcome::unknown;
    });
  ASSERT_TRUE(tr) << edda::render(tr.error());
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
    int cfd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(cfd, 0);
    sockaddr_in ca{};
    ca.sin_family = AF_INET;
    ca.sin_port = htons(n.admin_port());
    ca.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(cfd, reinterpret_cast<sockaddr*>(&ca), sizeof(ca)), 0);
    std::string head = "POST /metrics HTTP/1.1\r\nHost: x\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"
                       "100000\r\n";
    ASSERT_EQ(::write(cfd, head.data(), head.size()),
              static_cast<ssize_t>(head.size()));
    char rb[256];
    auto r = ::read(cfd, rb, sizeof(rb));
    ::close(cfd);
    ASSERT_GT(r, 0);
    EXPECT_EQ(std::string(rb, static_cast<size_t>(r)).rfind("HTTP/1.1 405", 0),
              0u);
  }
  // Garbage on the socket: 400, and the node answers others.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(n.admin_port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  std::string junk = "\x16\x03\x01 not http at all\r\n\r\n";
  ASSERT_EQ(::write(fd, junk.data(), junk.size()),
            static_cast<ssize_t>(junk.size()));
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
  client::txn_producer_options to;
  to.group = "wallets";
  auto tp = client::transaction_producer::start(
    conn, to, [](const client::txn_check&) { return client::txn_outcome::unknown; });
  ASSERT_TRUE(tp) << edda::render(tp.error());
  client::message tm;
  tm.topic = "orders";
  tm.body = "pending";
  auto tr = (*tp)->send_in_transaction(
    tm, [](const client::message&, const std::string&) {
      return client::txn_outcome::unknown;
    });
  ASSERT_TRUE(tr) << edda::render(tr.error());
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
    int cfd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(cfd, 0);
    sockaddr_in ca{};
    ca.sin_family = AF_INET;
    ca.sin_port = htons(n.admin_port());
    ca.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(cfd, reinterpret_cast<sockaddr*>(&ca), sizeof(ca)), 0);
    std::string head = std::string{"POST "} + cmd + " HTTP/1.1\r\nHost: x\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n100000\r\n";
    ASSERT_EQ(::write(cfd, head.data(), head.size()),
              static_cast<ssize_t>(head.size()));
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
