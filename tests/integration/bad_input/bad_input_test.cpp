// Bad input: every way a client, a peer or an operator can hand a node
// something wrong. Each test checks the exact error code, that the text
// names the offending value, and that nothing was lost or stored wrongly.
// Real actors, real LMDB in a fresh temp dir, remote peers on 127.0.0.1.
// Tests blocked by a known bug are skipped; EDDA_RUN_BLOCKED=1 runs them.
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "config/settings.hpp"
#include "base/node_link.hpp"
#include "node/embedded_node.hpp"
#include "support/certs.hpp"
#include "support/raw_peer.hpp"
#include "support/run_edda.hpp"
#include "base/metrics.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/scoped_actor.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <random>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>


namespace {

using namespace edda;
namespace admin = edda::client::admin;
namespace ch = std::chrono;
using ch::milliseconds;
using strings = std::vector<std::string>;

#define SKIP_IF_BLOCKED(why)                                                   \
  do {                                                                         \
    if (std::getenv("EDDA_RUN_BLOCKED") == nullptr) {                          \
      GTEST_SKIP() << "blocked by: " << why;                                   \
    }                                                                          \
  } while (false)

/// Options for a client of the node port (CAF's BASP), which several tests
/// here attack or use on purpose.
client::connect_options node_port() {
  client::connect_options o;
  o.door = false;
  return o;
}

std::string text(const caf::error& e) {
  return edda::render(e);
}

/// The error has code `want` and its text names every one of `mentions`.
void expect_error(const caf::error& err, errc want, const strings& mentions,
                  const std::string& what = "") {
  EXPECT_STREQ(to_string(code_of(err)), to_string(want))
    << what << ": " << text(err);
  for (const auto& m : mentions)
    EXPECT_NE(text(err).find(m), std::string::npos)
      << what << ": '" << m << "' missing in \"" << text(err) << "\"";
}

/// The call failed with code `want` and a text naming all of `mentions`.
template <class T>
void expect_error(const caf::expected<T>& x, errc want, const strings& mentions,
                  const std::string& what = "") {
  if (x)
    ADD_FAILURE() << what << ": succeeded, expected " << to_string(want);
  else
    expect_error(x.error(), want, mentions, what);
}

/// Polls `pred` every 10 ms until it holds or `limit` passes.
template <class Pred>
bool wait_until(Pred pred, milliseconds limit = milliseconds(15000)) {
  auto deadline = ch::steady_clock::now() + limit;
  while (ch::steady_clock::now() < deadline) {
    if (pred())
      return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return pred();
}

/// Collects the bodies a consumer's handler sees.
struct inbox {
  std::mutex mtx;
  strings got;
  client::handler handler() {
    return [this](const client::received& r) {
      std::lock_guard<std::mutex> guard{mtx};
      got.push_back(r.msg.body);
      return client::consume_result::success;
    };
  }
  strings bodies() {
    std::lock_guard<std::mutex> guard{mtx};
    return got;
  }
  size_t size() {
    return bodies().size();
  }
};

client::message msg(const std::string& topic, std::string body,
                    strings tags = {}) {
  return client::message{topic, std::move(body), "", std::move(tags), {}, 0,
                         ""};
}

caf::expected<std::unique_ptr<client::consumer>>
start_consumer(const client::connection& c, const std::string& group,
               const std::string& topic, const std::string& expr, inbox& box,
               const std::string& client_id = "",
               client::consume_mode mode = client::consume_mode::clustering) {
  client::consumer_options o;
  o.group = group;
  o.topic = topic;
  o.expression = expr;
  o.client_id = client_id;
  o.mode = mode;
  o.request_timeout = milliseconds(10000);
  return client::consumer::start(c, o, box.handler());
}

/// Sum of the end offsets of `topic`'s partitions (UINT64_MAX on error).
uint64_t end_offset(const client::connection& c, const std::string& topic) {
  auto info = admin::describe_topic(c, topic);
  if (!info) {
    ADD_FAILURE() << "describe " << topic << ": " << text(info.error());
    return UINT64_MAX;
  }
  uint64_t sum = 0;
  for (auto& p : info->partitions())
    sum += p.end_offset();
  return sum;
}

/// Consumes `topic` as a new group until `n` messages arrived (or 15 s),
/// stops the consumer and returns the bodies in arrival order.
strings consume_n(const client::connection& c, const std::string& group,
                  const std::string& topic, size_t n) {
  inbox box;
  auto cons = start_consumer(c, group, topic, "*", box);
  if (!cons) {
    ADD_FAILURE() << "consumer " << group << ": " << text(cons.error());
    return {};
  }
  EXPECT_TRUE(wait_until([&] { return box.size() >= n; }))
    << group << " got " << box.size() << " of " << n;
  (*cons)->stop();
  return box.bodies();
}

/// start_options that only say whether the node listens.
edda::node::start_options listening(bool listen) {
  edda::node::start_options o;
  o.listen = listen;
  return o;
}

class BadInputTest : public ::testing::Test {
protected:
  std::string tmp;

  void SetUp() override {
    char pattern[] = "/tmp/edda-bad-input-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    tmp = pattern;
  }

  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(tmp, ec);
  }

  config::node_settings settings() {
    config::node_settings s;
    s.data_dir = tmp + "/data";
    s.listen_host = "127.0.0.1";
    s.listen_port = 0;
    s.mode = config::durability::nosync;
    s.max_threads = 2;
    s.log_level = "error";
    return s;
  }

  std::unique_ptr<node::embedded_node> start(const config::node_settings& s,
                                             bool listen = false) {
    auto n = node::embedded_node::start(s, listening(listen));
    if (!n) {
      ADD_FAILURE() << "node start: " << text(n.error());
      return nullptr;
    }
    return std::move(*n);
  }
};

// -- 1. message size ----------------------------------------------------------

TEST_F(BadInputTest, OversizedMessageIsRejectedByTheClientAndNothingIsStored) {
  auto node = start(settings());
  ASSERT_TRUE(node);
  auto c = node->connect();
  ASSERT_TRUE(admin::create_topic(c, "sized", 1));
  client::producer prod{c};
  ASSERT_TRUE(prod.send(msg("sized", "before")));
  expect_error(prod.send(msg("sized", std::string((4u << 20) + 1, 'x'))),
               errc::message_too_large, {"4194305", "4194304"});
  EXPECT_EQ(end_offset(c, "sized"), 1u);
  EXPECT_EQ(consume_n(c, "g-sized", "sized", 1), strings{"before"});
}

TEST_F(BadInputTest, MessageOverTheNodeLimitIsRejectedAndTheNextOneSucceeds) {
  auto s = settings();
  s.max_message_size = 64u << 10;
  auto node = start(s);
  ASSERT_TRUE(node);
  auto c = node->connect();
  ASSERT_TRUE(admin::create_topic(c, "sized", 1));
  client::producer_options po;
  po.max_message_size = 1u << 20; // the client lets it through
  client::producer prod{c, po};
  ASSERT_TRUE(prod.send(msg("sized", "first")));
  expect_error(prod.send(msg("sized", std::string((64u << 10) + 1, 'x'))),
               errc::message_too_large, {"65536", "broker.max_message_size"});
  EXPECT_EQ(end_offset(c, "sized"), 1u);
  auto ok = prod.send(msg("sized", "second"));
  ASSERT_TRUE(ok) << text(ok.error());
  EXPECT_EQ(ok->offset, 1u);
  EXPECT_EQ(end_offset(c, "sized"), 2u);
  EXPECT_EQ(consume_n(c, "g-sized", "sized", 2), (strings{"first", "second"}));
}

// broker.max_message_size is documented (config/settings.hpp, settings.cpp)
// as "body + properties + key + tags", which is also what the producer
// checks: a message of exactly that size fits on both sides.
TEST_F(BadInputTest, MessageExactlyAtTheNodeLimitIsAccepted) {
  auto s = settings();
  s.max_message_size = 64u << 10;
  auto node = start(s);
  ASSERT_TRUE(node);
  auto c = node->connect();
  ASSERT_TRUE(admin::create_topic(c, "sized", 1));
  client::producer_options po;
  po.max_message_size = 64u << 10; // same limit on both sides
  client::producer prod{c, po};
  auto r = prod.send(msg("sized", std::string(64u << 10, 'x')));
  EXPECT_TRUE(r) << "the client accepted it, the node said: "
                 << text(r.error());
  EXPECT_EQ(end_offset(c, "sized"), r ? 1u : 0u);
}

TEST_F(BadInputTest, FiveMiBMessageOverARemoteConnectionIsStoredIntact) {
  auto s = settings();
  s.max_message_size = 8u << 20;
  auto node = start(s, true);
  ASSERT_TRUE(node);
  auto remote = client::connection::open("127.0.0.1", node->port(), node_port());
  ASSERT_TRUE(remote) << text(remote.error());
  ASSERT_TRUE(admin::create_topic(*remote, "big", 1));
  client::producer_options po;
  po.max_message_size = 8u << 20;
  po.timeout = milliseconds(15000);
  client::producer prod{*remote, po};
  ASSERT_TRUE(prod.send(msg("big", "small")));
  std::string body(5u << 20, 'b');
  body.front() = '<';
  body.back() = '>';
  // CAF 0.17's middleman has no frame limit that 5 MiB would hit: it is
  // stored (a timeout or unavailable here would be the unclear answer).
  auto t0 = ch::steady_clock::now();
  auto r = prod.send(msg("big", body));
  auto took = ch::duration_cast<milliseconds>(ch::steady_clock::now() - t0);
  ASSERT_TRUE(r) << "after " << took.count() << " ms: " << text(r.error());
  EXPECT_EQ(r->offset, 1u);
  EXPECT_LT(took, milliseconds(10000));
  ASSERT_TRUE(prod.send(msg("big", "after")));
  EXPECT_EQ(end_offset(*remote, "big"), 3u);
  auto got = consume_n(*remote, "g-big", "big", 3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], "small");
  EXPECT_TRUE(got[1] == body)
    << "the 5 MiB body changed, size " << got[1].size();
  EXPECT_EQ(got[2], "after");
}

// -- 2. unknown topic ---------------------------------------------------------

TEST_F(BadInputTest, UnknownTopicIsNamedByEveryOperation) {
  auto node = start(settings());
  ASSERT_TRUE(node);
  auto c = node->connect();
  {
    client::producer prod{c};
    expect_error(prod.send(msg("ghost", "boo")), errc::unknown_topic,
                 {"'ghost'"}, "produce");
    expect_error(prod.send(msg("", "no topic")), errc::invalid_argument,
                 {"topic"}, "no topic");
  }
  expect_error(admin::describe_topic(c, "ghost"), errc::unknown_topic,
               {"'ghost'"}, "describe");
  expect_error(admin::alter_topic(c, "ghost", 4), errc::unknown_topic,
               {"'ghost'"}, "alter");
  expect_error(admin::delete_topic(c, "ghost"), errc::unknown_topic,
               {"'ghost'"}, "delete");
  inbox box;
  expect_error(start_consumer(c, "g-ghost", "ghost", "*", box),
               errc::unknown_topic, {"'ghost'"}, "subscribe");
  auto list = admin::list_topics(c, true);
  ASSERT_TRUE(list);
  EXPECT_EQ(list->topics_size(), 0) << "a failed call created a topic";
}

// -- 3. unknown group ---------------------------------------------------------

TEST_F(BadInputTest, DeadLetterCallsForANeverSeenGroupAreUnknownGroup) {
  auto node = start(settings());
  ASSERT_TRUE(node);
  auto c = node->connect();
  expect_error(admin::dlq_list(c, "nobody-home"), errc::unknown_group,
               {"'nobody-home'"}, "list");
  expect_error(admin::dlq_redrive(c, "nobody-home"), errc::unknown_group,
               {"'nobody-home'"}, "redrive");
  auto groups = admin::list_groups(c);
  ASSERT_TRUE(groups);
  EXPECT_EQ(groups->groups_size(), 0);
  auto topics = admin::list_topics(c, true);
  ASSERT_TRUE(topics);
  EXPECT_EQ(topics->topics_size(), 0) << "redrive created a retry topic";
}

// -- 4. tag expressions -------------------------------------------------------

TEST_F(BadInputTest, InvalidTagExpressionIsRejectedWithItsPosition) {
  auto node = start(settings());
  ASSERT_TRUE(node);
  auto c = node->connect();
  ASSERT_TRUE(admin::create_topic(c, "tags", 1));
  // The position of the first character the parser cannot use
  // (actors/broker/tag_expression.cpp): a space ends a tag, so "Tag A" is
  // two tags without "||" between them.
  const std::pair<std::string, int> bad[] = {
    {"TagA &&", 5}, {"||", 0}, {"TagA ||", 7}, {"Tag A", 4}, {"*x", 1},
  };
  int n = 0;
  for (auto& [expr, pos] : bad) {
    inbox box;
    expect_error(
      start_consumer(c, "g" + std::to_string(n++), "tags", expr, box),
      errc::invalid_tag_expression,
      {"'" + expr + "'", "position " + std::to_string(pos)}, expr);
  }
  {
    client::producer prod{c};
    for (auto tag : {"TagA", "TagB", "TagC"})
      ASSERT_TRUE(prod.send(msg("tags", tag, {tag})));
  }
  const std::pair<std::string, strings> good[] = {
    {"*", {"TagA", "TagB", "TagC"}},
    {"", {"TagA", "TagB", "TagC"}},
    {"TagA", {"TagA"}},
    {"TagA||TagB", {"TagA", "TagB"}},
    {" TagA || TagC ", {"TagA", "TagC"}},
  };
  for (auto& [expr, want] : good) {
    inbox box;
    auto cons = start_consumer(c, "g" + std::to_string(n++), "tags", expr, box);
    ASSERT_TRUE(cons) << "'" << expr << "': " << text(cons.error());
    EXPECT_TRUE(wait_until([&] { return box.size() >= want.size(); }))
      << "'" << expr << "' got " << box.size();
    (*cons)->stop();
    EXPECT_EQ(box.bodies(), want) << "'" << expr << "'";
  }
}

// -- 5. garbage from a peer ---------------------------------------------------

using edda::test::basp_header;
using edda::test::closed_by_peer;
using edda::test::raw_connect;
using edda::test::write_all;
constexpr auto client_handshake = edda::test::basp_client_handshake;
constexpr auto direct_message = edda::test::basp_direct_message;

TEST_F(BadInputTest, GarbledAndTruncatedFramesFromAPeerDoNotStopTheNode) {
  auto node = start(settings(), true);
  ASSERT_TRUE(node);
  auto local = node->connect();
  ASSERT_TRUE(admin::create_topic(local, "survive", 1));
  {
    client::producer prod{local};
    ASSERT_TRUE(prod.send(msg("survive", "before")));
  }
  // (a) 4 KiB of random bytes starting with an invalid operation: dropped.
  std::mt19937 rng{42};
  std::string garbage(4096, '\0');
  for (auto& x : garbage)
    x = static_cast<char>(rng());
  garbage[0] = static_cast<char>(0xee);
  int a = raw_connect(node->port());
  ASSERT_GE(a, 0);
  ASSERT_TRUE(write_all(a, garbage));
  EXPECT_TRUE(closed_by_peer(a, milliseconds(5000))) << "garbage kept open";
  ::close(a);
  // (b) half a header, kept open while others are served.
  int b = raw_connect(node->port());
  ASSERT_GE(b, 0);
  ASSERT_TRUE(write_all(b, basp_header(client_handshake, 0).substr(0, 13)));
  // (c) a handshake announcing 16 MiB that never come: CAF reserves the
  // buffer, then drops the peer when the handshake times out (~1 s).
  int c = raw_connect(node->port());
  ASSERT_GE(c, 0);
  ASSERT_TRUE(write_all(c, basp_header(client_handshake, 16u << 20)));
  EXPECT_TRUE(closed_by_peer(c, milliseconds(10000))) << "stuck peer kept";
  ::close(c);
  // (d) a message before any handshake, announcing ~4 GiB: dropped at once.
  int d = raw_connect(node->port());
  ASSERT_GE(d, 0);
  ASSERT_TRUE(write_all(d, basp_header(direct_message, 0xfffffff0u) + "xx"));
  EXPECT_TRUE(closed_by_peer(d, milliseconds(5000)));
  ::close(d);
  // (e) connect and leave without a byte.
  int e = raw_connect(node->port());
  ASSERT_GE(e, 0);
  ::close(e);
  // The node (same process: it did not crash) serves old and new clients.
  auto remote = client::connection::open("127.0.0.1", node->port(), node_port());
  ASSERT_TRUE(remote) << text(remote.error());
  auto status = admin::node_status(*remote);
  ASSERT_TRUE(status) << text(status.error());
  {
    client::producer prod{*remote};
    auto r = prod.send(msg("survive", "after"));
    ASSERT_TRUE(r) << text(r.error());
    EXPECT_EQ(r->offset, 1u);
  }
  EXPECT_EQ(consume_n(*remote, "g-survive", "survive", 2),
            (strings{"before", "after"}));
  EXPECT_EQ(end_offset(local, "survive"), 2u);
  ::close(b);
}

// Only a handshake header with a huge payload_len hurts a plain node port:
// CAF 0.17's BASP broker reserves payload_len bytes before reading any, on
// the middleman's one thread (measured with 0xffffffff: ~4 GiB resident and
// ~30 s in which no client can connect). A plain node port is for a trusted
// network; with network.tls_* it takes mutual TLS, and a peer without a
// certificate signed by the CA never reaches BASP.

namespace pb = edda::wire::v1;

/// A file's text (empty if unreadable).
std::string read_text(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// This process's peak resident set (VmHWM), in KiB.
long peak_rss_kib() {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0)
      return std::stol(line.substr(6));
  return -1;
}

/// A peer's actor system with (or without) a certificate, asking the node
/// port for the node's status: the answer, or the error.
caf::expected<pb::NodeStatus> ask_as_peer(uint16_t port, const std::string& cert,
                                          const std::string& key,
                                          const std::string& ca) {
  caf::actor_system_config cfg;
  wire::register_types(cfg);
  cfg.load<caf::io::middleman>();
  if (!cert.empty()) {
    cfg.load<caf::openssl::manager>();
    cfg.set("openssl.certificate", cert);
    cfg.set("openssl.key", key);
    cfg.set("openssl.cafile", ca);
  }
  caf::actor_system sys{cfg};
  auto gw = remote_node(sys, "127.0.0.1", port);
  if (!gw)
    return make_error(errc::unavailable, sys.render(gw.error()));
  caf::expected<pb::NodeStatus> out{pb::NodeStatus{}};
  caf::scoped_actor self{sys};
  self->request(*gw, ch::seconds(5), pb::NodeStatusRequest{})
    .receive([&](pb::NodeStatus& st) { out = std::move(st); },
             [&](caf::error& err) { out = std::move(err); });
  return out;
}

TEST_F(BadInputTest, PeerAnnouncingAFourGiBHandshakeDoesNotStallTheNode) {
  ASSERT_TRUE(test::make_certs(tmp)) << "the openssl command failed: "
                               << read_text(tmp + "/openssl.log");
  auto s = settings();
  s.tls_certificate = tmp + "/node.pem";
  s.tls_key = tmp + "/node.key";
  s.tls_ca = tmp + "/ca.pem";
  auto node = start(s, true);
  ASSERT_TRUE(node);
  auto before = peak_rss_kib();
  auto refused_before = metrics::counter("network.tls_refused").load();
  int fd = raw_connect(node->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(write_all(fd, basp_header(client_handshake, 0xffffffffu)));
  // Not TLS: the node drops the connection at once.
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 3000), 1) << "the connection is still open after 3 s";
  char buf[64];
  EXPECT_LE(::read(fd, buf, sizeof(buf)), 0);
  ::close(fd);
  // Nothing was allocated for it, and the node serves on: a peer with a
  // certificate of the CA is answered, over TLS.
  auto t0 = ch::steady_clock::now();
  auto good = ask_as_peer(node->port(), s.tls_certificate, s.tls_key, s.tls_ca);
  ASSERT_TRUE(good) << text(good.error());
  EXPECT_LT(ch::steady_clock::now() - t0, ch::seconds(3));
  EXPECT_LT(peak_rss_kib() - before, 256 * 1024)
    << "peak RSS grew by " << (peak_rss_kib() - before) << " KiB";
  // Refused: a peer with a certificate the CA did not sign, and a peer
  // without TLS (plain BASP: the C++ client's node port).
  EXPECT_FALSE(ask_as_peer(node->port(), tmp + "/rogue.pem", tmp + "/rogue.key",
                           s.tls_ca))
    << "a peer with a rogue certificate was answered";
  EXPECT_FALSE(ask_as_peer(node->port(), "", "", ""))
    << "a peer without TLS was answered";
  // Each of the three failed handshakes is counted (and logged, at most
  // once a minute per address).
  EXPECT_GE(metrics::counter("network.tls_refused").load() - refused_before, 3u);
  // Clients use the door.
  client::connect_options o;
  o.door = true;
  auto door = client::connection::open("127.0.0.1", node->api_port(), o);
  ASSERT_TRUE(door) << text(door.error());
  EXPECT_TRUE(admin::node_status(*door));
}

TEST_F(BadInputTest, TlsSettingsThatDoNotLoadAreRefusedAtStart) {
  ASSERT_TRUE(test::make_certs(tmp)) << read_text(tmp + "/openssl.log");
  auto s = settings();
  s.tls_certificate = tmp + "/node.pem";
  s.tls_key = tmp + "/rogue.key"; // not the certificate's key
  s.tls_ca = tmp + "/ca.pem";
  expect_error(node::embedded_node::start(s, listening(true)), errc::bad_config,
               {"network.tls_key", "rogue.key", "node.pem"});
  s.tls_key = tmp + "/node.key";
  s.tls_ca = tmp + "/missing.pem";
  expect_error(node::embedded_node::start(s, listening(true)), errc::bad_config,
               {"network.tls_ca", "missing.pem"});
  s.tls_ca.clear();
  expect_error(node::embedded_node::start(s, listening(true)), errc::bad_config,
               {"network.tls_ca"});
}

// -- 6. LMDB map full ---------------------------------------------------------

TEST_F(BadInputTest, FullMapStopsWritesWithStorageFullAndLosesNothing) {
  auto s = settings();
  s.map_size = 1u << 20; // the smallest allowed
  strings acked;
  {
    auto node = start(s);
    ASSERT_TRUE(node);
    auto c = node->connect();
    ASSERT_TRUE(admin::create_topic(c, "fill", 1));
    {
      client::producer prod{c};
      caf::error failure;
      for (int i = 0; i < 1000 && !failure; ++i) {
        std::string body = "m" + std::to_string(i) + ":";
        body.resize(4096, 'f');
        auto r = prod.send(msg("fill", body));
        if (r)
          acked.push_back(body);
        else
          failure = r.error();
      }
      ASSERT_TRUE(failure) << "1000 x 4 KiB fit in a 1 MiB map";
      expect_error(failure, errc::storage_full,
                   {"writes stopped", "storage.map_size"});
      expect_error(prod.send(msg("fill", "small")), errc::storage_full, {},
                   "after the first");
    }
    RecordProperty("acked_before_full", static_cast<int>(acked.size()));
    EXPECT_GT(acked.size(), 10u);
    EXPECT_EQ(end_offset(c, "fill"), acked.size());
    // Reads go on while writes are stopped.
    EXPECT_EQ(consume_n(c, "g-full", "fill", acked.size()), acked);
  } // the node stops here
  s.map_size = 64u << 20;
  auto node = start(s);
  ASSERT_TRUE(node);
  auto c = node->connect();
  EXPECT_EQ(end_offset(c, "fill"), acked.size());
  EXPECT_EQ(consume_n(c, "g-restarted", "fill", acked.size()), acked);
  client::producer prod{c};
  auto r = prod.send(msg("fill", "after restart"));
  ASSERT_TRUE(r) << text(r.error());
  EXPECT_EQ(r->offset, acked.size());
  EXPECT_EQ(end_offset(c, "fill"), acked.size() + 1);
}

// -- 7. unusable data dir -----------------------------------------------------

TEST_F(BadInputTest, DataDirUnderARegularFileOrEmptyIsUnusable) {
  // Tests run as root, so permissions stop nothing; a file in the path does.
  auto file = tmp + "/file";
  std::ofstream{file} << "not a directory";
  for (const auto& dir : {file + "/sub", file, std::string{}}) {
    auto s = settings();
    s.data_dir = dir;
    expect_error(node::embedded_node::start(s, listening(false)),
                 errc::data_dir_unusable, {dir.empty() ? "data dir" : dir},
                 "'" + dir + "'");
  }
  EXPECT_TRUE(std::filesystem::is_regular_file(file));
}

// -- 8. locked data dir -------------------------------------------------------

TEST_F(BadInputTest, SecondNodeOnTheSameDataDirIsLockedOutAndTheFirstGoesOn) {
  auto s = settings();
  {
    auto first = start(s);
    ASSERT_TRUE(first);
    auto c = first->connect();
    ASSERT_TRUE(admin::create_topic(c, "shared", 1));
    client::producer prod{c};
    ASSERT_TRUE(prod.send(msg("shared", "one")));
    expect_error(node::embedded_node::start(s, listening(false)),
                 errc::data_dir_locked,
                 {s.data_dir, "pid " + std::to_string(::getpid())});
    auto r = prod.send(msg("shared", "two"));
    ASSERT_TRUE(r) << text(r.error());
    EXPECT_EQ(end_offset(c, "shared"), 2u);
    EXPECT_EQ(consume_n(c, "g-shared", "shared", 2), (strings{"one", "two"}));
  }
  // Stopping the first releases the lock.
  auto again = start(s);
  ASSERT_TRUE(again);
  EXPECT_EQ(end_offset(again->connect(), "shared"), 2u);
}

// -- 9. bad configuration -----------------------------------------------------

using edda::test::run_result;

/// Runs `edda ARGS...` with its output captured, killing it after 20 s.
run_result run_edda(const strings& args, const std::string& dir) {
  return edda::test::run_command(EDDA_BINARY, args, dir);
}

TEST_F(BadInputTest, BadConfigMakesTheNodeCommandFailAndNameTheProblem) {
  auto file = [&](const std::string& name, const std::string& body) {
    std::ofstream{tmp + "/" + name} << body;
    return tmp + "/" + name;
  };
  auto check = [&](strings args, const strings& mentions) {
    args.insert(args.begin(), "node");
    // Should it start after all: never the default data dir or port.
    args.insert(args.end(),
                {"--data-dir", tmp + "/cli-data", "--listen", "127.0.0.1:0"});
    auto r = run_edda(args, tmp);
    EXPECT_FALSE(r.timed_out) << args[1] << " " << args[2] << " started";
    EXPECT_NE(r.exit_code, 0) << r.err;
    for (auto& m : mentions)
      EXPECT_NE(r.err.find(m), std::string::npos)
        << "'" << m << "' missing in stderr: " << r.err;
  };
  check({"--config", file("unknown.toml", "[storage]\nmapsize = 1\n")},
        {"bad_config", "unknown.toml:2:1:", "unknown key 'storage.mapsize'",
         "did you mean 'storage.map_size'"});
  check({"--config", file("value.toml", "[storage]\ndurability = \"fast\"\n")},
        {"value.toml:2:1:", "storage.durability", "'fast'", "nosync"});
  check({"--config", tmp + "/no-such.toml"},
        {"cannot read '" + tmp + "/no-such.toml'"});
  check({"--set", "nonsense=1"}, {"command line", "unknown key 'nonsense'"});
  EXPECT_FALSE(std::filesystem::exists(tmp + "/cli-data"))
    << "a rejected config still created the data dir";
}

TEST_F(BadInputTest, CommandLineMistakesGetHelpOrAClearErrorNeverAName) {
  // -h is help (exit 0), for a command and a subcommand, without a node:
  // never a topic or a saga type called "-h".
  for (auto args : {strings{"topic", "-h"}, strings{"saga", "start", "-h"},
                    strings{"cluster", "move-group", "-h"}}) {
    auto r = run_edda(args, tmp);
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << args[0] << " " << args[1] << ": " << r.err;
    EXPECT_EQ(r.err.find("cannot reach"), std::string::npos) << r.err;
  }
  // Any other single-dash word is an unknown option, said at once (no
  // node is asked); --partitions 0 is refused the same way. Both are usage
  // errors: exit 2.
  auto dash = run_edda({"saga", "start", "-x", "--node", "127.0.0.1:1"}, tmp);
  EXPECT_EQ(dash.exit_code, 2);
  EXPECT_NE(dash.err.find("unknown option -x"), std::string::npos) << dash.err;
  auto zero = run_edda(
    {"topic", "create", "t", "--partitions", "0", "--node", "127.0.0.1:1"}, tmp);
  EXPECT_EQ(zero.exit_code, 2);
  EXPECT_NE(zero.err.find("--partitions must be at least 1"), std::string::npos)
    << zero.err;
  // A mistyped option or command: which one was meant.
  auto typo = run_edda(
    {"topic", "create", "t", "--partiton", "3", "--node", "127.0.0.1:1"}, tmp);
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("unknown option --partiton; did you mean "
                          "--partitions?"),
            std::string::npos)
    << typo.err;
  auto command = run_edda({"topc", "list"}, tmp);
  EXPECT_EQ(command.exit_code, 2);
  EXPECT_NE(command.err.find("unknown command 'topc'; did you mean 'topic'?"),
            std::string::npos)
    << command.err;
  // No command at all: the help, and a usage error.
  auto none = run_edda({}, tmp);
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.out.find("Exit codes:"), std::string::npos) << none.out;
  // Nothing listens there: unavailable, exit 4.
  auto down = run_edda({"status", "--node", "127.0.0.1:1"}, tmp);
  EXPECT_FALSE(down.timed_out);
  EXPECT_EQ(down.exit_code, 4) << down.err;
}

TEST_F(BadInputTest, ConsumeCountNAcknowledgesExactlyN) {
  auto node = start(settings(), true);
  ASSERT_TRUE(node);
  auto remote = client::connection::open("127.0.0.1", node->port(), node_port());
  ASSERT_TRUE(remote) << text(remote.error());
  auto& c = *remote;
  ASSERT_TRUE(admin::create_topic(c, "five", 1));
  client::producer prod{c};
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(prod.send(msg("five", "m" + std::to_string(i))));
  auto ep = "127.0.0.1:" + std::to_string(node->api_port()); // its door
  auto r = run_edda({"consume", "--topic", "five", "--group", "once", "--count",
                     "1", "--node", ep},
                    tmp);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // One acknowledged: the group's committed offset is 1, not 5 (the
  // others were delivered in the same batch and released).
  auto info = admin::describe_topic(c, "five");
  ASSERT_TRUE(info) << text(info.error());
  bool found = false;
  for (auto& g : info->groups())
    if (g.cursor() == "once") {
      found = true;
      EXPECT_EQ(g.committed(), 1u) << info->DebugString();
    }
  EXPECT_TRUE(found) << info->DebugString();
}

TEST_F(BadInputTest, ATagNoSubscriptionCouldSelectIsRefusedAtProduce) {
  auto node = start(settings(), true);
  ASSERT_TRUE(node);
  auto remote = client::connection::open("127.0.0.1", node->port(), node_port());
  ASSERT_TRUE(remote) << text(remote.error());
  auto& c = *remote;
  ASSERT_TRUE(admin::create_topic(c, "tagged", 1));
  client::producer prod{c};
  for (const std::string& bad :
       strings{"a||b", "a b", "*", std::string(65, 't'), ""}) {
    auto r = prod.send(msg("tagged", "x", {"ok", bad}));
    ASSERT_FALSE(r) << "tag '" << bad << "' was stored";
    EXPECT_EQ(code_of(r.error()), errc::invalid_argument) << text(r.error());
    EXPECT_NE(text(r.error()).find("could never be selected"),
              std::string::npos)
      << text(r.error());
  }
  EXPECT_EQ(end_offset(c, "tagged"), 0u) << "a refused message was stored";
  // Every selectable tag is taken, and selected.
  ASSERT_TRUE(prod.send(msg("tagged", "y", {"Pay.EU:v2-x_1"})));
  inbox box;
  auto cons = start_consumer(c, "sel", "tagged", "Pay.EU:v2-x_1", box);
  ASSERT_TRUE(cons) << text(cons.error());
  EXPECT_TRUE(wait_until([&] { return box.size() == 1; }, milliseconds(10000)));
  (*cons)->stop();
}

// -- 10. topic administration -------------------------------------------------

TEST_F(BadInputTest, TopicAdminMisuseIsRejectedAndChangesNothing) {
  auto node = start(settings(), true);
  ASSERT_TRUE(node);
  // A short request timeout: a rejected create must be answered at once,
  // and a lost answer should not cost 30 s per call.
  auto o = node_port();
  o.request_timeout = milliseconds(2000);
  auto remote = client::connection::open("127.0.0.1", node->port(), o);
  ASSERT_TRUE(remote) << text(remote.error());
  auto& c = *remote;
  ASSERT_TRUE(admin::create_topic(c, "orders", 2));
  expect_error(admin::create_topic(c, "orders", 3), errc::topic_exists,
               {"'orders'"}, "create again");
  const std::pair<std::string, std::string> names[] = {
    {"", "got 0"},
    {"a b", "'a b'"},
    {"%x", "'%x'"},
    {std::string(200, 'n'), "got 200"},
  };
  for (auto& [name, mention] : names) {
    auto r = admin::create_topic(c, name, 1);
    expect_error(r, errc::invalid_argument, {mention}, mention);
  }
  expect_error(admin::create_topic(c, "huge", 5000), errc::invalid_argument,
               {"5000", "1024"}, "5000");
  for (uint32_t n : {1u, 2u, 5000u}) {
    expect_error(admin::alter_topic(c, "orders", n), errc::invalid_argument,
                 {"now 2", "got " + std::to_string(n)},
                 "alter to " + std::to_string(n));
  }
  auto list = admin::list_topics(c, false);
  ASSERT_TRUE(list);
  ASSERT_EQ(list->topics_size(), 1);
  EXPECT_EQ(list->topics(0).meta().name(), "orders");
  EXPECT_EQ(list->topics(0).meta().partitions(), 2u);
  auto info = admin::describe_topic(c, "orders");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->partitions_size(), 2);
}

TEST_F(BadInputTest, ConcurrentDeletesOfOneTopicHaveOneWinnerAndTheNodeGoesOn) {
  auto node = start(settings());
  ASSERT_TRUE(node);
  auto c = node->connect();
  for (int i = 0; i < 20; ++i) {
    auto name = "twice" + std::to_string(i);
    ASSERT_TRUE(admin::create_topic(c, name, 1));
    caf::expected<wire::v1::Done> r1{caf::error{}}, r2{caf::error{}};
    std::thread t1{[&] {
      r1 = admin::delete_topic(c, name);
    }};
    std::thread t2{[&] {
      r2 = admin::delete_topic(c, name);
    }};
    t1.join();
    t2.join();
    EXPECT_NE(static_cast<bool>(r1), static_cast<bool>(r2)) << name;
    for (auto* r : {&r1, &r2}) {
      if (!*r) {
        auto code = code_of(r->error());
        EXPECT_TRUE(code == errc::unknown_topic
                    || code == errc::invalid_argument)
          << text(r->error());
      }
    }
  }
  auto list = admin::list_topics(c, false);
  ASSERT_TRUE(list);
  EXPECT_EQ(list->topics_size(), 0);
}

// -- 11. subscription conflict ------------------------------------------------

TEST_F(BadInputTest, SecondMemberWithADifferentExpressionIsAConflict) {
  auto node = start(settings());
  ASSERT_TRUE(node);
  auto c = node->connect();
  ASSERT_TRUE(admin::create_topic(c, "conflict", 2));
  inbox a_box, b_box, c_box, d_box;
  auto a = start_consumer(c, "billing", "conflict", "TagA", a_box, "member-a");
  ASSERT_TRUE(a) << text(a.error());
  auto b = start_consumer(c, "billing", "conflict", "TagB", b_box, "member-b");
  expect_error(b, errc::subscription_conflict,
               {"'billing'", "'TagA'", "'TagB'", "'member-b'"});
  // The other consume mode is a conflict too.
  expect_error(start_consumer(c, "billing", "conflict", "TagA", c_box,
                              "member-c", client::consume_mode::broadcast),
               errc::subscription_conflict,
               {"'billing'", "clustering", "'member-c'"});
  // The same expression spelled differently is no conflict.
  auto d
    = start_consumer(c, "billing", "conflict", "  TagA ", d_box, "member-d");
  ASSERT_TRUE(d) << text(d.error());
  // The group goes on: every TagA message reaches exactly one member.
  {
    client::producer prod{c};
    for (int i = 0; i < 6; ++i) {
      auto m = msg("conflict", "a" + std::to_string(i), {"TagA"});
      m.key = "k" + std::to_string(i);
      ASSERT_TRUE(prod.send(m));
      ASSERT_TRUE(
        prod.send(msg("conflict", "b" + std::to_string(i), {"TagB"})));
    }
  }
  EXPECT_TRUE(wait_until([&] { return a_box.size() + d_box.size() >= 6; }));
  (*d)->stop();
  (*a)->stop();
  auto all = a_box.bodies();
  for (auto& x : d_box.bodies())
    all.push_back(x);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (strings{"a0", "a1", "a2", "a3", "a4", "a5"}));
  EXPECT_EQ(b_box.size() + c_box.size(), 0u);
}

} // namespace
