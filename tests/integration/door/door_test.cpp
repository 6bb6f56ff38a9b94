// The client door (runtime/door): edda.api.v1 over gRPC against an embedded
// node, as a service in another language uses it: produce with per-record
// outcomes, consume with a window and settlements, a client that vanishes,
// tokens, size limits, call caps, garbage and silent connections on the
// port, and the admin calls' error codes.

#include "api.grpc.pb.h"

#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "config/settings.hpp"
#include "node/embedded_node.hpp"
#include "support/util.hpp"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <filesystem>
#include <map>
#include <mutex>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace api = edda::api::v1;
namespace pb = edda::wire::v1;
using namespace std::chrono_literals;
using edda::test::eventually;

api::Record record(const std::string& topic, const std::string& body,
                   const std::string& key = {}) {
  api::Record r;
  r.set_topic(topic);
  r.set_body(body);
  r.set_key(key);
  return r;
}

/// The trailing `edda-error` of a failed call.
std::string edda_error(const grpc::ClientContext& ctx) {
  auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find("edda-error");
  return it == md.end() ? std::string{}
                        : std::string(it->second.data(), it->second.size());
}

class DoorTest : public ::testing::Test {
protected:
  edda::config::node_settings base_settings() const {
    edda::config::node_settings s;
    s.data_dir = dir_.path() + "/data";
    s.listen_port = 0; // api.listen auto: the OS picks its port too
    s.mode = edda::config::durability::nosync;
    s.map_size = 256ull << 20;
    s.log_level = "error";
    return s;
  }

  /// Saga type `pay = charge`, retried quickly (50 ms, 5 attempts).
  edda::config::node_settings pay_settings() const {
    auto s = base_settings();
    s.saga_types = {"pay = charge"};
    s.saga_step_backoff_ms = 50;
    s.saga_step_attempts = 5;
    return s;
  }

  void start(const edda::config::node_settings& s) {
    auto n = edda::node::embedded_node::start(s);
    ASSERT_TRUE(n) << edda::render(n.error());
    node_ = std::move(*n);
    ASSERT_NE(node_->api_port(), 0);
    ASSERT_NE(node_->api_port(), node_->port());
    channel_ = grpc::CreateChannel("127.0.0.1:"
                                     + std::to_string(node_->api_port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = api::Edda::NewStub(channel_);
  }

  void create_topic(const std::string& name, uint32_t partitions) {
    grpc::ClientContext ctx;
    pb::CreateTopic q;
    q.set_name(name);
    q.set_partitions(partitions);
    pb::TopicInfo info;
    auto st = stub_->CreateTopic(&ctx, q, &info);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(info.meta().partitions(), partitions);
  }

  /// Produces `n` records to `topic` in batches of 10 and returns the
  /// outcomes by ref.
  std::map<uint64_t, api::Produced> produce(const std::string& topic, int n) {
    grpc::ClientContext ctx;
    auto stream = stub_->Produce(&ctx);
    for (int b = 0; b < n; b += 10) {
      api::ProduceRequest req;
      for (int i = b; i < std::min(n, b + 10); ++i)
        *req.add_records() = record(topic, "m" + std::to_string(i),
                                    "k" + std::to_string(i % 3));
      EXPECT_TRUE(stream->Write(req));
    }
    stream->WritesDone();
    std::map<uint64_t, api::Produced> out;
    api::ProduceResponse resp;
    while (stream->Read(&resp))
      for (auto& r : resp.results())
        out[r.ref()] = r;
    auto st = stream->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
    return out;
  }

  uint64_t committed(const std::string& topic, const std::string& group) {
    auto info = edda::client::admin::describe_topic(node_->connect(), topic);
    uint64_t sum = 0;
    if (!info)
      return 0;
    for (auto& g : info->groups())
      if (g.cursor() == group)
        sum += g.committed();
    return sum;
  }

  edda::test::temp_dir dir_{"edda-door-it"};
  std::unique_ptr<edda::node::embedded_node> node_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<api::Edda::Stub> stub_;
};

TEST_F(DoorTest, AClientTalksToTheDoorByDefaultAndIsToldWhenGivenTheNodePort) {
  start(base_settings());
  // Default options: the client door.
  auto c = edda::client::connection::open("127.0.0.1", node_->api_port());
  ASSERT_TRUE(c) << edda::render(c.error());
  ASSERT_TRUE(edda::client::admin::create_topic(*c, "by-default", 1));
  edda::client::producer p{*c};
  edda::client::message m;
  m.topic = "by-default";
  m.body = "x";
  auto r = p.send(m);
  ASSERT_TRUE(r) << edda::render(r.error());
  // The node port with the defaults: refused at once, saying what to do.
  auto wrong = edda::client::connection::open("127.0.0.1", node_->port());
  ASSERT_FALSE(wrong);
  EXPECT_EQ(edda::code_of(wrong.error()), edda::errc::unavailable);
  auto text = edda::render(wrong.error());
  EXPECT_NE(text.find("maybe the node port"), std::string::npos) << text;
  EXPECT_NE(text.find("connect_options::door = false"), std::string::npos)
    << text;
  // And with door = false, the node port works.
  edda::client::connect_options o;
  o.door = false;
  auto np = edda::client::connection::open("127.0.0.1", node_->port(), o);
  ASSERT_TRUE(np) << edda::render(np.error());
  auto d = edda::client::admin::describe_topic(*np, "by-default");
  ASSERT_TRUE(d) << edda::render(d.error());
  EXPECT_EQ(d->partitions(0).end_offset(), 1u) << d->ShortDebugString();
}

TEST_F(DoorTest, ProduceAcknowledgesEveryRecordOnceStoredAndRefusesBadOnesAlone) {
  auto s = base_settings();
  s.max_message_size = 4096;
  start(s);
  create_topic("orders", 3);
  grpc::ClientContext ctx;
  auto stream = stub_->Produce(&ctx);
  api::ProduceRequest req;
  for (int i = 0; i < 5; ++i)
    *req.add_records() = record("orders", "ok" + std::to_string(i), "acct-1");
  *req.add_records() = record("no-such-topic", "x");          // ref 5
  *req.add_records() = record("orders", std::string(5000, 'x')); // ref 6
  *req.add_records() = record("", "no topic");                 // ref 7
  auto bad_tag = record("orders", "tag");                      // ref 8
  bad_tag.add_tags("a b");
  *req.add_records() = bad_tag;
  *req.add_records() = record("orders", "last", "acct-1");     // ref 9
  ASSERT_TRUE(stream->Write(req));
  stream->WritesDone();
  std::map<uint64_t, api::Produced> out;
  api::ProduceResponse resp;
  while (stream->Read(&resp))
    for (auto& r : resp.results())
      out[r.ref()] = r;
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(out.size(), 10u);
  std::set<uint64_t> offsets;
  uint32_t partition = out[0].partition();
  for (uint64_t ref : {0, 1, 2, 3, 4, 9}) {
    EXPECT_FALSE(out[ref].has_error()) << ref << ": " << out[ref].error().message();
    EXPECT_EQ(out[ref].partition(), partition) << "one key, one partition";
    offsets.insert(out[ref].offset());
  }
  EXPECT_EQ(offsets.size(), 6u);
  EXPECT_EQ(out[5].error().code(), "unknown_topic");
  EXPECT_EQ(out[6].error().code(), "message_too_large");
  EXPECT_EQ(out[7].error().code(), "invalid_argument");
  EXPECT_EQ(out[8].error().code(), "invalid_argument");
  // What was acknowledged is stored: exactly those six.
  auto info = edda::client::admin::describe_topic(node_->connect(), "orders");
  ASSERT_TRUE(info);
  uint64_t stored = 0;
  for (auto& p : info->partitions())
    stored += p.end_offset();
  EXPECT_EQ(stored, 6u);
}

TEST_F(DoorTest, OutcomesMatchTheirRecordsAcrossRequestsWithRefusals) {
  start(base_settings());
  create_topic("refs", 2);
  grpc::ClientContext ctx;
  auto stream = stub_->Produce(&ctx);
  // Each request: a record refused at once (no topic), then two good ones;
  // sent back to back, before any outcome is read.
  for (int r = 0; r < 20; ++r) {
    api::ProduceRequest req;
    *req.add_records() = record("", "bad");
    for (int i = 1; i < 3; ++i) {
      auto rec = record("refs", "b" + std::to_string(3 * r + i));
      rec.set_id("id-" + std::to_string(3 * r + i));
      *req.add_records() = rec;
    }
    ASSERT_TRUE(stream->Write(req));
  }
  stream->WritesDone();
  std::map<uint64_t, api::Produced> out;
  api::ProduceResponse resp;
  while (stream->Read(&resp))
    for (auto& p : resp.results())
      EXPECT_TRUE(out.emplace(p.ref(), p).second) << "ref twice: " << p.ref();
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(out.size(), 60u);
  for (auto& [ref, p] : out) {
    if (ref % 3 == 0) {
      EXPECT_EQ(p.error().code(), "invalid_argument") << ref;
    } else {
      EXPECT_FALSE(p.has_error()) << ref << ": " << p.error().message();
      EXPECT_EQ(p.id(), "id-" + std::to_string(ref)) << "outcome of another record";
    }
  }
}

TEST_F(DoorTest, ConsumeKeepsAtMostTheWindowUnsettledAndSettlementsCommit) {
  start(base_settings());
  create_topic("pay", 2);
  auto acked = produce("pay", 40);
  ASSERT_EQ(acked.size(), 40u);
  grpc::ClientContext ctx;
  auto stream = stub_->Consume(&ctx);
  api::ConsumeRequest sub;
  sub.mutable_subscribe()->set_group("ledger");
  sub.mutable_subscribe()->set_topic("pay");
  sub.mutable_subscribe()->set_window(5);
  ASSERT_TRUE(stream->Write(sub));
  api::ConsumeResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_TRUE(resp.has_subscribed());
  EXPECT_EQ(resp.subscribed().group(), "ledger");
  std::vector<api::Delivery> held(resp.deliveries().begin(),
                                  resp.deliveries().end());
  std::set<std::string> bodies;
  int retried = 0;
  uint32_t redelivered = 0;
  // m7 fails once (retry with a reason), everything else is acknowledged.
  auto settle = [&](const std::vector<api::Delivery>& ds) {
    api::ConsumeRequest req;
    for (auto& d : ds) {
      if (d.record().body() == "m7" && d.reconsume_times() == 0) {
        auto* r = req.mutable_settle()->add_retry();
        r->set_delivery(d.delivery());
        r->set_reason("ledger locked");
        retried++;
        continue;
      }
      if (d.record().body() == "m7") {
        redelivered = d.reconsume_times();
        EXPECT_EQ(d.last_error(), "ledger locked");
      }
      req.mutable_settle()->add_ack(d.delivery());
      bodies.insert(d.record().body());
    }
    return stream->Write(req);
  };
  while (bodies.size() < 35) {
    // Nothing settled yet: the node sends at most the window.
    while (held.size() < 5) {
      ASSERT_TRUE(stream->Read(&resp));
      held.insert(held.end(), resp.deliveries().begin(),
                  resp.deliveries().end());
      ASSERT_LE(held.size(), 5u) << "more deliveries than the window";
    }
    ASSERT_TRUE(settle(held));
    held.clear();
  }
  // The tail may be fewer than a window (m7 comes back after its delay).
  while (bodies.size() < 40 && stream->Read(&resp)) {
    std::vector<api::Delivery> ds(resp.deliveries().begin(),
                                  resp.deliveries().end());
    ASSERT_LE(ds.size(), 5u);
    ASSERT_TRUE(settle(ds));
  }
  EXPECT_EQ(bodies.size(), 40u);
  EXPECT_EQ(retried, 1);
  EXPECT_EQ(redelivered, 1u) << "m7 comes back once after its retry";
  // A settlement of a number the stream does not hold is an error in the
  // stream, which goes on.
  api::ConsumeRequest bogus;
  bogus.mutable_settle()->add_ack(999999);
  ASSERT_TRUE(stream->Write(bogus));
  bool saw_error = false;
  while (!saw_error && stream->Read(&resp))
    for (auto& e : resp.errors())
      saw_error = saw_error || e.code() == "not_found";
  EXPECT_TRUE(saw_error);
  stream->WritesDone();
  while (stream->Read(&resp)) {
  }
  auto st = stream->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(eventually(5s, [&] { return committed("pay", "ledger") == 40; }))
    << committed("pay", "ledger");
}

TEST_F(DoorTest, DeliveriesOfAClientThatVanishesGoBackToTheGroup) {
  auto s = base_settings();
  // Given back when the client goes, not when the timeout passes.
  s.consume_timeout_ms = 60000;
  start(s);
  create_topic("jobs", 1);
  ASSERT_EQ(produce("jobs", 10).size(), 10u);
  std::set<std::string> first;
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Consume(&ctx);
    api::ConsumeRequest sub;
    sub.mutable_subscribe()->set_group("workers");
    sub.mutable_subscribe()->set_topic("jobs");
    ASSERT_TRUE(stream->Write(sub));
    api::ConsumeResponse resp;
    while (first.size() < 10 && stream->Read(&resp))
      for (auto& d : resp.deliveries())
        first.insert(d.record().body());
    ASSERT_EQ(first.size(), 10u);
    ctx.TryCancel(); // gone without settling anything
    stream->Finish();
  }
  EXPECT_EQ(committed("jobs", "workers"), 0u);
  // Another member gets all ten again and settles them.
  std::set<std::string> again;
  edda::client::consumer_options o;
  o.group = "workers";
  o.topic = "jobs";
  auto c = edda::client::consumer::start(
    node_->connect(), o, [&](const edda::client::received& r) {
      again.insert(r.msg.body);
      return edda::client::consume_result::success;
    });
  ASSERT_TRUE(c) << edda::render(c.error());
  EXPECT_TRUE(eventually(10s, [&] { return committed("jobs", "workers") == 10; }));
  (*c)->stop();
  EXPECT_EQ(again, first);
}

TEST_F(DoorTest, TokensAreRequiredWhenConfigured) {
  auto s = base_settings();
  s.api_tokens = {"billing:0123456789abcdef0123"};
  start(s);
  pb::ListTopics q;
  pb::TopicList out;
  {
    grpc::ClientContext ctx;
    auto st = stub_->ListTopics(&ctx, q, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_NE(st.error_message().find("requires a token"), std::string::npos)
      << st.error_message();
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer wrong-token-wrong-token");
    auto st = stub_->ListTopics(&ctx, q, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer wrong-token-wrong-token");
    auto stream = stub_->Produce(&ctx);
    api::ProduceRequest req;
    *req.add_records() = record("t", "x");
    stream->Write(req);
    stream->WritesDone();
    api::ProduceResponse resp;
    EXPECT_FALSE(stream->Read(&resp));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer 0123456789abcdef0123");
    auto st = stub_->ListTopics(&ctx, q, &out);
    EXPECT_TRUE(st.ok()) << st.error_message();
  }
}

TEST_F(DoorTest, AnOversizedRequestIsRefusedBeforeItIsReadAndTheNodeServesOn) {
  auto s = base_settings();
  s.max_message_size = 64 << 10;
  s.api_max_request_size = 256 << 10;
  start(s);
  create_topic("big", 1);
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Produce(&ctx);
    api::ProduceRequest req;
    *req.add_records() = record("big", std::string(2 << 20, 'x'));
    stream->Write(req);
    stream->WritesDone();
    api::ProduceResponse resp;
    EXPECT_FALSE(stream->Read(&resp));
    EXPECT_EQ(stream->Finish().error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  auto out = produce("big", 3);
  ASSERT_EQ(out.size(), 3u);
  for (auto& [ref, r] : out)
    EXPECT_FALSE(r.has_error()) << r.error().message();
}

TEST_F(DoorTest, CallsPerAddressAreCapped) {
  auto s = base_settings();
  s.api_max_calls_per_address = 2;
  start(s);
  create_topic("cap", 1);
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<api::ConsumeRequest,
                                                       api::ConsumeResponse>>>
    streams;
  for (int i = 0; i < 2; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub_->Consume(ctxs.back().get()));
    api::ConsumeRequest sub;
    sub.mutable_subscribe()->set_group("g" + std::to_string(i));
    sub.mutable_subscribe()->set_topic("cap");
    ASSERT_TRUE(streams.back()->Write(sub));
    api::ConsumeResponse resp;
    ASSERT_TRUE(streams.back()->Read(&resp)); // subscribed
  }
  {
    grpc::ClientContext ctx;
    pb::TopicList out;
    auto st = stub_->ListTopics(&ctx, pb::ListTopics{}, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(st.error_message().find("api.max_calls_per_address"),
              std::string::npos)
      << st.error_message();
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    streams[i]->WritesDone();
    api::ConsumeResponse resp;
    while (streams[i]->Read(&resp)) {
    }
    EXPECT_TRUE(streams[i]->Finish().ok());
  }
  // The slots are free again.
  EXPECT_TRUE(eventually(5s, [&] {
    grpc::ClientContext ctx;
    pb::TopicList out;
    return stub_->ListTopics(&ctx, pb::ListTopics{}, &out).ok();
  }));
}

/// A raw TCP connection to the door.
int connect_raw(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// True if the peer closes `fd` within `limit` (reads until EOF/error).
bool closed_within(int fd, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) {
      auto n = ::read(fd, buf, sizeof(buf));
      if (n <= 0)
        return true;
    }
  }
  return false;
}

TEST_F(DoorTest, GarbageAndSilentConnectionsAreClosedAndOthersAreServed) {
  auto s = base_settings();
  s.api_handshake_timeout_ms = 300;
  start(s);
  // Garbage instead of the HTTP/2 preface.
  int garbage = connect_raw(node_->api_port());
  ASSERT_GE(garbage, 0);
  std::string junk(4096, '\xff');
  ASSERT_EQ(::write(garbage, junk.data(), junk.size()),
            static_cast<ssize_t>(junk.size()));
  // Half a preface, then nothing; and nothing at all.
  int half = connect_raw(node_->api_port());
  ASSERT_GE(half, 0);
  const char preface[] = "PRI * HTTP/2.0\r\n";
  ASSERT_GT(::write(half, preface, sizeof(preface) - 1), 0);
  int silent = connect_raw(node_->api_port());
  ASSERT_GE(silent, 0);
  // A 4 GiB frame announced after the preface.
  int huge = connect_raw(node_->api_port());
  ASSERT_GE(huge, 0);
  std::string frame = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  frame += std::string("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9); // SETTINGS
  frame += std::string("\xff\xff\xff\x00\x00\x00\x00\x00\x01", 9); // 16 MiB DATA
  ASSERT_GT(::write(huge, frame.data(), frame.size()), 0);
  EXPECT_TRUE(closed_within(garbage, 3s)) << "garbage";
  EXPECT_TRUE(closed_within(half, 3s)) << "half a preface";
  EXPECT_TRUE(closed_within(silent, 3s)) << "silent";
  EXPECT_TRUE(closed_within(huge, 3s)) << "oversized frame";
  for (int fd : {garbage, half, silent, huge})
    ::close(fd);
  // Meanwhile and after, a real client is served.
  create_topic("still", 1);
  EXPECT_EQ(produce("still", 5).size(), 5u);
}

TEST_F(DoorTest, AdminCallsCarryEddaErrorCodes) {
  start(base_settings());
  {
    grpc::ClientContext ctx;
    pb::DescribeTopic q;
    q.set_name("nope");
    pb::TopicInfo out;
    auto st = stub_->DescribeTopic(&ctx, q, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(edda_error(ctx), "unknown_topic");
    EXPECT_EQ(st.error_message().rfind("unknown_topic: ", 0), 0u)
      << st.error_message();
  }
  create_topic("dup", 1);
  {
    grpc::ClientContext ctx;
    pb::CreateTopic q;
    q.set_name("dup");
    q.set_partitions(1);
    pb::TopicInfo out;
    auto st = stub_->CreateTopic(&ctx, q, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
    EXPECT_EQ(edda_error(ctx), "topic_exists");
  }
  {
    grpc::ClientContext ctx;
    pb::SagaCommand q;
    q.set_id("some-saga");
    q.set_op(pb::SagaCommand::PAUSE);
    pb::SagaRecord out;
    auto st = stub_->CommandSaga(&ctx, q, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("by"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    pb::SagaStart q;
    q.set_type("no-such-type");
    pb::SagaStarted out;
    auto st = stub_->StartSaga(&ctx, q, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(edda_error(ctx), "unknown_saga_type");
  }
  {
    grpc::ClientContext ctx;
    pb::DedupMark m;
    m.set_scope("orders");
    m.set_key("o-1");
    m.set_result("done");
    pb::DedupStatus out;
    ASSERT_TRUE(stub_->MarkKey(&ctx, m, &out).ok());
    grpc::ClientContext ctx2;
    pb::DedupCheck c;
    c.set_scope("orders");
    c.set_key("o-1");
    ASSERT_TRUE(stub_->CheckKey(&ctx2, c, &out).ok());
    EXPECT_TRUE(out.done());
    EXPECT_EQ(out.result(), "done");
  }
  {
    grpc::ClientContext ctx;
    pb::NodeStatus out;
    ASSERT_TRUE(stub_->NodeStatus(&ctx, pb::NodeStatusRequest{}, &out).ok());
    EXPECT_FALSE(out.node_id().empty());
  }
}

TEST_F(DoorTest, ANodeStoppingEndsOpenStreamsAndStopsPromptly) {
  start(base_settings());
  create_topic("live", 1);
  ASSERT_EQ(produce("live", 5).size(), 5u);
  grpc::ClientContext cctx;
  auto consume = stub_->Consume(&cctx);
  api::ConsumeRequest sub;
  sub.mutable_subscribe()->set_group("g");
  sub.mutable_subscribe()->set_topic("live");
  ASSERT_TRUE(consume->Write(sub));
  api::ConsumeResponse resp;
  ASSERT_TRUE(consume->Read(&resp));
  grpc::ClientContext pctx;
  auto produce_stream = stub_->Produce(&pctx);
  api::ProduceRequest req;
  *req.add_records() = record("live", "one more");
  api::ProduceResponse presp;
  ASSERT_TRUE(produce_stream->Write(req));
  ASSERT_TRUE(produce_stream->Read(&presp));
  EXPECT_FALSE(presp.results(0).has_error());
  // Neither stream is ended by its client: the node ends them.
  auto t0 = std::chrono::steady_clock::now();
  node_->stop();
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 5s);
  while (consume->Read(&resp)) {
  }
  EXPECT_FALSE(consume->Finish().ok());
  while (produce_stream->Read(&presp)) {
  }
  EXPECT_FALSE(produce_stream->Finish().ok());
}

/// Joins the threads left running when a test returns early.
struct joined {
  std::vector<std::thread>& threads;
  ~joined() {
    for (auto& t : threads)
      if (t.joinable())
        t.join();
  }
};

using participate_stream =
  grpc::ClientReaderWriter<api::ParticipateRequest, api::ParticipateResponse>;

/// Opens a Participate stream serving `names` and waits for its
/// registration.
std::unique_ptr<participate_stream>
participate(api::Edda::Stub& stub, grpc::ClientContext& ctx,
            const std::vector<std::string>& names, uint32_t timeout_ms = 0) {
  // No test waits on a stream for ever (a broken wake must fail, not pass
  // late).
  ctx.set_deadline(std::chrono::system_clock::now() + 20s);
  auto s = stub.Participate(&ctx);
  api::ParticipateRequest reg;
  for (auto& n : names)
    reg.mutable_register_()->add_names(n);
  reg.mutable_register_()->set_call_timeout_ms(timeout_ms);
  EXPECT_TRUE(s->Write(reg));
  api::ParticipateResponse resp;
  EXPECT_TRUE(s->Read(&resp));
  EXPECT_EQ(resp.registered().names(), names.size());
  // Several outcomes may go in one request (StepOutcomes), up to this.
  EXPECT_EQ(resp.registered().max_outcomes(), 256u);
  return s;
}

TEST_F(DoorTest, AParticipantStreamServesADeclaredSagaAndItsCompensation) {
  auto s = base_settings();
  s.saga_types = {"transfer = debit, credit"};
  s.saga_step_backoff_ms = 50;
  start(s);
  grpc::ClientContext ctx;
  auto p = participate(*stub_, ctx,
                       {"transfer.debit", "transfer.debit.undo",
                        "transfer.credit", "transfer.credit.undo"});
  std::vector<std::string> seen;
  std::thread server{[&] {
    api::ParticipateResponse resp;
    while (p->Read(&resp)) {
      for (auto& c : resp.calls()) {
        seen.push_back(c.command().participant());
        api::ParticipateRequest out;
        auto* o = out.mutable_outcome();
        o->set_call(c.call());
        // The second saga's credit is refused for good: it compensates.
        bool refuse = c.command().participant() == "transfer.credit"
                      && c.command().input() == "{\"amount\": 2}";
        o->set_ok(!refuse);
        o->set_error(refuse ? "account closed" : "");
        o->set_retryable(false);
        o->set_output("out-" + c.command().participant());
        if (!p->Write(out))
          return;
      }
    }
  }};
  auto conn = node_->connect();
  auto ok = edda::client::admin::saga_start(conn, "transfer", "s1",
                                            "{\"amount\": 1}", 10s);
  ASSERT_TRUE(ok) << edda::render(ok.error());
  EXPECT_EQ(ok->record().state(), 3u) << ok->record().ShortDebugString(); // completed
  auto bad = edda::client::admin::saga_start(conn, "transfer", "s2",
                                             "{\"amount\": 2}", 10s);
  ASSERT_TRUE(bad) << edda::render(bad.error());
  EXPECT_EQ(bad->record().state(), 4u) << bad->record().ShortDebugString(); // compensated
  p->WritesDone();
  server.join();
  EXPECT_TRUE(p->Finish().ok());
  // A failed step is compensated too (it may have done part of its work),
  // then the steps before it, in reverse.
  std::vector<std::string> expected = {
    "transfer.debit", "transfer.credit",      "transfer.debit",
    "transfer.credit", "transfer.credit.undo", "transfer.debit.undo"};
  EXPECT_EQ(seen, expected);
}

TEST_F(DoorTest, OutcomesSentTogetherAreSettledEachOnItsOwn) {
  start(pay_settings());
  grpc::ClientContext ctx;
  auto p = participate(*stub_, ctx, {"pay.charge"});
  auto conn = node_->connect();
  // Four sagas at once: their calls are answered in one request, with an
  // outcome for a call that was never sent among them (refused alone).
  std::vector<std::thread> starters;
  joined on_exit{starters}; // a failed ASSERT returns with them running
  std::vector<caf::expected<edda::wire::v1::SagaStarted>> results(
    4, caf::expected<edda::wire::v1::SagaStarted>{caf::error{}});
  for (int i = 0; i < 4; ++i)
    starters.emplace_back([&, i] {
      results[i] = edda::client::admin::saga_start(
        conn, "pay", "b" + std::to_string(i), "{}", 15s);
    });
  std::vector<api::StepCall> calls;
  api::ParticipateResponse resp;
  while (calls.size() < 4 && p->Read(&resp))
    for (auto& c : resp.calls())
      calls.push_back(c);
  ASSERT_EQ(calls.size(), 4u);
  api::ParticipateRequest out;
  for (auto& c : calls) {
    auto* o = out.mutable_outcomes()->add_outcomes();
    o->set_call(c.call());
    // b3's charge fails, retryably: its next attempt comes on its own.
    bool refuse = c.command().saga_id() == "b3";
    o->set_ok(!refuse);
    o->set_error(refuse ? "bank busy" : "");
    o->set_retryable(refuse);
    o->set_output("paid-" + c.command().saga_id());
  }
  out.mutable_outcomes()->add_outcomes()->set_call(987654);
  ASSERT_TRUE(p->Write(out));
  std::vector<api::Error> errors;
  std::vector<api::StepCall> again;
  while ((errors.empty() || again.empty()) && p->Read(&resp)) {
    errors.insert(errors.end(), resp.errors().begin(), resp.errors().end());
    again.insert(again.end(), resp.calls().begin(), resp.calls().end());
  }
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].code(), "not_found");
  EXPECT_NE(errors[0].message().find("987654"), std::string::npos);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].command().saga_id(), "b3");
  EXPECT_EQ(again[0].command().attempt(), 2u);
  api::ParticipateRequest retry;
  retry.mutable_outcome()->set_call(again[0].call());
  retry.mutable_outcome()->set_ok(true);
  ASSERT_TRUE(p->Write(retry));
  for (auto& t : starters)
    t.join();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(results[i]) << edda::render(results[i].error());
    auto& rec = results[i]->record();
    EXPECT_EQ(rec.state(), 3u) << rec.ShortDebugString(); // completed
    EXPECT_EQ(rec.steps(0).attempts(), i == 3 ? 2u : 1u)
      << rec.ShortDebugString();
  }
  // More outcomes in one request than calls can be outstanding: refused
  // whole, with a clear error; the stream goes on serving.
  api::ParticipateRequest flood;
  for (int i = 0; i < 257; ++i)
    flood.mutable_outcomes()->add_outcomes()->set_call(100000 + i);
  ASSERT_TRUE(p->Write(flood));
  ASSERT_TRUE(p->Read(&resp));
  ASSERT_EQ(resp.errors_size(), 1) << resp.ShortDebugString();
  EXPECT_EQ(resp.errors(0).code(), "invalid_argument");
  EXPECT_NE(resp.errors(0).message().find("at most 256"), std::string::npos)
    << resp.errors(0).message();
  std::promise<caf::expected<edda::wire::v1::SagaStarted>> last;
  starters.emplace_back([&] {
    last.set_value(edda::client::admin::saga_start(conn, "pay", "b4", "{}", 15s));
  });
  ASSERT_TRUE(p->Read(&resp));
  ASSERT_EQ(resp.calls_size(), 1);
  api::ParticipateRequest one;
  one.mutable_outcomes()->add_outcomes()->set_call(resp.calls(0).call());
  one.mutable_outcomes()->mutable_outcomes(0)->set_ok(true);
  ASSERT_TRUE(p->Write(one));
  starters.back().join();
  auto r = last.get_future().get();
  ASSERT_TRUE(r) << edda::render(r.error());
  EXPECT_EQ(r->record().state(), 3u) << r->record().ShortDebugString();
  p->WritesDone();
  while (p->Read(&resp)) {
  }
  EXPECT_TRUE(p->Finish().ok());
}

TEST_F(DoorTest, CallsOutstandingWhenAParticipantLeavesAreRetriedOnAnother) {
  start(pay_settings());
  // The first participant takes the call and leaves without an outcome.
  auto first_ctx = std::make_unique<grpc::ClientContext>();
  auto first = participate(*stub_, *first_ctx, {"pay.charge"});
  auto conn = node_->connect();
  std::promise<caf::expected<edda::wire::v1::SagaStarted>> started;
  std::thread starter{[&] {
    started.set_value(
      edda::client::admin::saga_start(conn, "pay", "p1", "{}", 20s));
  }};
  api::ParticipateResponse resp;
  ASSERT_TRUE(first->Read(&resp));
  ASSERT_EQ(resp.calls_size(), 1);
  EXPECT_EQ(resp.calls(0).command().attempt(), 1u);
  // An outcome for a call it never got is refused in the stream.
  api::ParticipateRequest bogus;
  bogus.mutable_outcome()->set_call(12345);
  bogus.mutable_outcome()->set_ok(true);
  ASSERT_TRUE(first->Write(bogus));
  ASSERT_TRUE(first->Read(&resp));
  ASSERT_EQ(resp.errors_size(), 1);
  EXPECT_EQ(resp.errors(0).code(), "not_found");
  first_ctx->TryCancel();
  first->Finish();
  // A second participant gets the next attempt and completes it.
  grpc::ClientContext ctx;
  auto second = participate(*stub_, ctx, {"pay.charge"});
  ASSERT_TRUE(second->Read(&resp));
  ASSERT_EQ(resp.calls_size(), 1);
  EXPECT_GE(resp.calls(0).command().attempt(), 2u);
  EXPECT_EQ(resp.calls(0).command().idempotency_key(), "p1/charge");
  api::ParticipateRequest out;
  out.mutable_outcome()->set_call(resp.calls(0).call());
  out.mutable_outcome()->set_ok(true);
  ASSERT_TRUE(second->Write(out));
  starter.join();
  auto r = started.get_future().get();
  ASSERT_TRUE(r) << edda::render(r.error());
  EXPECT_EQ(r->record().state(), 3u) << r->record().ShortDebugString();
  second->WritesDone();
  while (second->Read(&resp)) {
  }
  EXPECT_TRUE(second->Finish().ok());
}

TEST_F(DoorTest, CallsBeyondConcurrencyWaitAndUnansweredCallsTimeOutAlone) {
  start(pay_settings());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 20s);
  auto p = stub_->Participate(&ctx);
  api::ParticipateRequest reg;
  reg.mutable_register_()->add_names("pay.charge");
  reg.mutable_register_()->set_concurrency(2);
  reg.mutable_register_()->set_call_timeout_ms(400);
  ASSERT_TRUE(p->Write(reg));
  api::ParticipateResponse resp;
  ASSERT_TRUE(p->Read(&resp));
  ASSERT_TRUE(resp.has_registered());
  // The participant keeps the first two calls unanswered and answers every
  // other. With 2 out, the third waits in the node until the kept ones time
  // out (400 ms each, on their own); their sagas' next attempts come back.
  using clk = std::chrono::steady_clock;
  std::mutex mtx;
  std::vector<uint64_t> held;
  clk::time_point second_held_at, third_at;
  int received = 0;
  bool refused_late = false;
  std::thread server{[&] {
    api::ParticipateResponse r;
    while (p->Read(&r)) {
      std::lock_guard<std::mutex> guard{mtx};
      for (auto& e : r.errors())
        if (e.code() == "not_found")
          refused_late = true;
      for (auto& c : r.calls()) {
        ++received;
        if (held.size() < 2) {
          held.push_back(c.call());
          if (held.size() == 2)
            second_held_at = clk::now();
          continue;
        }
        if (third_at == clk::time_point{})
          third_at = clk::now();
        api::ParticipateRequest out;
        out.mutable_outcome()->set_call(c.call());
        out.mutable_outcome()->set_ok(true);
        if (!p->Write(out))
          return;
      }
    }
  }};
  auto conn = node_->connect();
  std::vector<std::thread> starters;
  std::vector<caf::expected<edda::wire::v1::SagaStarted>> results(
    3, caf::expected<edda::wire::v1::SagaStarted>{caf::error{}});
  for (int i = 0; i < 3; ++i)
    starters.emplace_back([&, i] {
      results[i] = edda::client::admin::saga_start(
        conn, "pay", "q" + std::to_string(i), "{}", 15s);
    });
  for (auto& t : starters)
    t.join();
  for (auto& r : results) {
    ASSERT_TRUE(r) << edda::render(r.error());
    EXPECT_EQ(r->record().state(), 3u) << r->record().ShortDebugString();
  }
  {
    std::lock_guard<std::mutex> guard{mtx};
    ASSERT_EQ(held.size(), 2u);
    EXPECT_EQ(received, 5); // 3 sagas, the two kept ones attempted twice
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      third_at - second_held_at);
    EXPECT_GE(waited.count(), 300)
      << "a third call went out while 2 were out (concurrency 2)";
    // A kept call's outcome, too late: refused as unknown.
    api::ParticipateRequest late;
    late.mutable_outcome()->set_call(held.front());
    late.mutable_outcome()->set_ok(true);
    ASSERT_TRUE(p->Write(late));
  }
  EXPECT_TRUE(eventually(5s, [&] {
    std::lock_guard<std::mutex> guard{mtx};
    return refused_late;
  }));
  p->WritesDone();
  server.join();
  EXPECT_TRUE(p->Finish().ok());
}

TEST_F(DoorTest, AStepWaitsForItsParticipantToRegisterThenGoesOn) {
  auto s = base_settings();
  s.saga_types = {"pay = charge"};
  s.saga_participant_wait_ms = 60000;
  start(s);
  auto conn = node_->connect();
  // Started while no participant serves pay.charge (a redeploy).
  auto started = edda::client::admin::saga_start(conn, "pay", "w1", "{}");
  ASSERT_TRUE(started) << edda::render(started.error());
  edda::wire::v1::SagaRecord rec;
  ASSERT_TRUE(eventually(5s, [&] {
    auto r = edda::client::admin::saga_show(conn, "w1");
    if (r)
      rec = *r;
    return r && r->steps(0).waiting_since_ms() > 0;
  }));
  EXPECT_EQ(rec.steps(0).waiting_for(), "pay.charge");
  EXPECT_EQ(rec.steps(0).attempts(), 0u) << "waiting is not an attempt";
  EXPECT_EQ(rec.state(), 1u) << "still running"; // saga_state::running
  std::this_thread::sleep_for(300ms);
  // The participant comes back: the step goes on at once (the wait is 60 s).
  auto back = std::chrono::steady_clock::now();
  grpc::ClientContext ctx;
  auto p = participate(*stub_, ctx, {"pay.charge"});
  api::ParticipateResponse resp;
  ASSERT_TRUE(p->Read(&resp));
  ASSERT_EQ(resp.calls_size(), 1);
  EXPECT_EQ(resp.calls(0).command().attempt(), 1u);
  api::ParticipateRequest out;
  out.mutable_outcome()->set_call(resp.calls(0).call());
  out.mutable_outcome()->set_ok(true);
  ASSERT_TRUE(p->Write(out));
  ASSERT_TRUE(eventually(5s, [&] {
    auto r = edda::client::admin::saga_show(conn, "w1");
    if (r)
      rec = *r;
    return r && r->state() == 3u; // completed
  })) << rec.ShortDebugString();
  EXPECT_LT(std::chrono::steady_clock::now() - back, 10s);
  EXPECT_EQ(rec.steps(0).waiting_since_ms(), 0);
  EXPECT_EQ(rec.steps(0).unsent(), 0u);
  p->WritesDone();
  while (p->Read(&resp)) {
  }
  EXPECT_TRUE(p->Finish().ok());
}

TEST_F(DoorTest, AStepWhoseParticipantNeverComesFailsAfterTheWait) {
  auto s = base_settings();
  s.saga_types = {"pay = charge"};
  s.saga_participant_wait_ms = 400;
  s.saga_step_attempts = 3; // the wait is the step's, not each attempt's
  start(s);
  auto conn = node_->connect();
  auto t0 = std::chrono::steady_clock::now();
  auto r = edda::client::admin::saga_start(conn, "pay", "w2", "{}", 10s);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r) << edda::render(r.error());
  EXPECT_NE(r->record().state(), 3u) << r->record().ShortDebugString();
  EXPECT_NE(r->record().steps(0).last_error().find("(waited 0 s)"),
            std::string::npos)
    << r->record().steps(0).last_error();
  EXPECT_GE(took, 400ms);
  EXPECT_LT(took, 3s) << "each attempt waited again";
  EXPECT_EQ(r->record().steps(0).unsent(), 3u);
}

using transact_stream =
  grpc::ClientReaderWriter<api::TransactRequest, api::TransactResponse>;

std::unique_ptr<transact_stream> transact(api::Edda::Stub& stub,
                                          grpc::ClientContext& ctx,
                                          const std::string& group,
                                          api::TransactResponse& first,
                                          int64_t check_after_ms = 300) {
  ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  auto s = stub.Transact(&ctx);
  api::TransactRequest reg;
  reg.mutable_register_()->set_group(group);
  reg.mutable_register_()->set_check_after_ms(check_after_ms);
  EXPECT_TRUE(s->Write(reg));
  EXPECT_TRUE(s->Read(&first));
  EXPECT_EQ(first.registered().group(), group);
  return s;
}

/// The bodies group `group` consumes from `topic` within `wait`.
std::set<std::string> consume_bodies(edda::node::embedded_node& node,
                                     const std::string& topic,
                                     const std::string& group,
                                     std::chrono::milliseconds wait) {
  std::mutex mtx;
  std::set<std::string> got;
  edda::client::consumer_options o;
  o.group = group;
  o.topic = topic;
  auto c = edda::client::consumer::start(
    node.connect(), o, [&](const edda::client::received& r) {
      std::lock_guard<std::mutex> guard{mtx};
      got.insert(r.msg.body);
      return edda::client::consume_result::success;
    });
  EXPECT_TRUE(c) << edda::render(c.error());
  std::this_thread::sleep_for(wait);
  if (c)
    (*c)->stop();
  std::lock_guard<std::mutex> guard{mtx};
  return got;
}

TEST_F(DoorTest, TransactionalMessagesCommitRollBackAndAreCheckedBack) {
  auto s = base_settings();
  s.txn_check_after_ms = 300;
  start(s);
  create_topic("funds", 2);
  grpc::ClientContext ctx;
  api::TransactResponse resp;
  auto t = transact(*stub_, ctx, "wallet", resp, 1500);
  // Three halves: one committed, one rolled back, one left for check-back.
  for (int i = 0; i < 3; ++i) {
    api::TransactRequest h;
    h.mutable_half()->set_ref(static_cast<uint64_t>(i));
    *h.mutable_half()->mutable_record() = record("funds", "buy-" + std::to_string(i));
    ASSERT_TRUE(t->Write(h));
  }
  std::map<uint64_t, std::string> txn;
  while (txn.size() < 3 && t->Read(&resp))
    for (auto& h : resp.halves()) {
      EXPECT_FALSE(h.has_error()) << h.error().message();
      txn[h.ref()] = h.txn_id();
    }
  ASSERT_EQ(txn.size(), 3u);
  // Nothing of a half message is visible before its end.
  EXPECT_TRUE(consume_bodies(*node_, "funds", "early", 300ms).empty());
  for (auto [ref, outcome] :
       {std::pair{0, api::COMMIT}, std::pair{1, api::ROLLBACK}}) {
    api::TransactRequest e;
    e.mutable_end()->set_txn_id(txn[static_cast<uint64_t>(ref)]);
    e.mutable_end()->set_outcome(outcome);
    ASSERT_TRUE(t->Write(e));
  }
  int ends = 0;
  uint64_t checked = 0;
  while ((ends < 2 || checked == 0) && t->Read(&resp)) {
    for (auto& e : resp.ends()) {
      EXPECT_FALSE(e.has_error()) << e.error().message();
      if (e.outcome() == api::COMMIT) {
        EXPECT_EQ(e.stored().topic(), "funds");
      }
      ++ends;
    }
    for (auto& c : resp.checks()) {
      // The node asks about the transaction left without an end (the
      // others, if their ends were late, get the same outcome).
      EXPECT_EQ(c.txn_id(), txn[2]);
      EXPECT_EQ(c.record().body(), "buy-2");
      api::TransactRequest a;
      a.mutable_answer()->set_check(c.check());
      a.mutable_answer()->set_outcome(c.txn_id() == txn[1] ? api::ROLLBACK
                                                            : api::COMMIT);
      ASSERT_TRUE(t->Write(a));
      checked = c.check();
    }
  }
  EXPECT_EQ(ends, 2);
  EXPECT_NE(checked, 0u);
  // The committed and the checked-back ones are delivered, never the
  // rolled-back one.
  std::set<std::string> got;
  ASSERT_TRUE(eventually(10s, [&] {
    got = consume_bodies(*node_, "funds", "ledger", 500ms);
    return got.size() >= 2;
  }));
  EXPECT_EQ(got, (std::set<std::string>{"buy-0", "buy-2"}));
  t->WritesDone();
  while (t->Read(&resp)) {
  }
  EXPECT_TRUE(t->Finish().ok());
}

TEST_F(DoorTest, ATransactionOfAVanishedProducerIsCheckedBackWithAnother) {
  auto s = base_settings();
  s.txn_check_after_ms = 300;
  start(s);
  create_topic("funds", 1);
  std::string txn_id;
  {
    auto ctx = std::make_unique<grpc::ClientContext>();
    api::TransactResponse resp;
    auto t = transact(*stub_, *ctx, "wallet", resp);
    api::TransactRequest h;
    h.mutable_half()->set_ref(7);
    *h.mutable_half()->mutable_record() = record("funds", "orphan");
    ASSERT_TRUE(t->Write(h));
    ASSERT_TRUE(t->Read(&resp));
    ASSERT_EQ(resp.halves_size(), 1);
    EXPECT_EQ(resp.halves(0).ref(), 7u);
    txn_id = resp.halves(0).txn_id();
    ctx->TryCancel(); // dies before its end
    t->Finish();
  }
  // Another member of the group answers the check-back: rollback.
  grpc::ClientContext ctx;
  api::TransactResponse resp;
  auto t = transact(*stub_, ctx, "wallet", resp);
  bool answered = false;
  auto handle = [&](const api::TransactResponse& r) {
    for (auto& c : r.checks()) {
      EXPECT_EQ(c.txn_id(), txn_id);
      api::TransactRequest a;
      a.mutable_answer()->set_check(c.check());
      a.mutable_answer()->set_outcome(api::ROLLBACK);
      EXPECT_TRUE(t->Write(a));
      answered = true;
    }
  };
  handle(resp);
  while (!answered && t->Read(&resp))
    handle(resp);
  ASSERT_TRUE(answered);
  ASSERT_TRUE(eventually(10s, [&] {
    auto r = edda::client::admin::txn_show(node_->connect(), txn_id);
    return r && r->state() == edda::wire::v1::TxnRecord::ROLLED_BACK;
  }));
  t->WritesDone();
  while (t->Read(&resp)) {
  }
  EXPECT_TRUE(t->Finish().ok());
}

TEST_F(DoorTest, AProducerThatStopsSendingStillGetsEveryAnswer) {
  start(base_settings());
  create_topic("funds", 1);
  grpc::ClientContext ctx;
  api::TransactResponse resp;
  auto t = transact(*stub_, ctx, "wallet", resp, 60000);
  for (int i = 0; i < 50; ++i) {
    api::TransactRequest h;
    h.mutable_half()->set_ref(static_cast<uint64_t>(i));
    *h.mutable_half()->mutable_record() = record("funds", "b" + std::to_string(i));
    ASSERT_TRUE(t->Write(h));
  }
  api::TransactRequest empty; // neither half, end nor answer
  ASSERT_TRUE(t->Write(empty));
  t->WritesDone(); // before any answer was read
  std::set<uint64_t> refs;
  int errors = 0;
  while (t->Read(&resp)) {
    for (auto& h : resp.halves()) {
      EXPECT_FALSE(h.has_error()) << h.error().message();
      refs.insert(h.ref());
    }
    errors += resp.errors_size();
  }
  EXPECT_TRUE(t->Finish().ok());
  EXPECT_EQ(refs.size(), 50u) << "every half answered after the half-close";
  EXPECT_EQ(errors, 1) << "the empty request is refused";
}

TEST_F(DoorTest, HalvesAndEndsSentManyPerRequestAreEachAnswered) {
  start(base_settings());
  create_topic("funds", 2);
  grpc::ClientContext ctx;
  api::TransactResponse resp;
  auto t = transact(*stub_, ctx, "wallet", resp, 60000);
  for (int r = 0; r < 2; ++r) {
    api::TransactRequest req;
    for (int i = 0; i < 25; ++i) {
      auto* h = req.mutable_halves()->add_halves();
      h->set_ref(static_cast<uint64_t>(25 * r + i));
      *h->mutable_record() = record(i == 3 ? "" : "funds",
                                    "m" + std::to_string(25 * r + i));
    }
    ASSERT_TRUE(t->Write(req));
  }
  std::map<uint64_t, std::string> txn;
  int refused = 0;
  while (txn.size() + static_cast<size_t>(refused) < 50 && t->Read(&resp))
    for (auto& h : resp.halves()) {
      if (h.has_error()) {
        EXPECT_EQ(h.error().code(), "invalid_argument");
        ++refused;
      } else {
        txn[h.ref()] = h.txn_id();
      }
    }
  EXPECT_EQ(refused, 2) << "the two records without a topic, alone";
  ASSERT_EQ(txn.size(), 48u);
  api::TransactRequest ends;
  for (auto& [ref, id] : txn) {
    auto* e = ends.mutable_ends()->add_ends();
    e->set_txn_id(id);
    e->set_outcome(ref % 2 == 0 ? api::COMMIT : api::ROLLBACK);
  }
  ASSERT_TRUE(t->Write(ends));
  t->WritesDone();
  int committed = 0, rolled_back = 0;
  while (t->Read(&resp))
    for (auto& e : resp.ends()) {
      EXPECT_FALSE(e.has_error()) << e.error().message();
      (e.outcome() == api::COMMIT ? committed : rolled_back)++;
    }
  EXPECT_TRUE(t->Finish().ok());
  EXPECT_EQ(committed, 24);
  EXPECT_EQ(rolled_back, 24);
  auto info = edda::client::admin::describe_topic(node_->connect(), "funds");
  ASSERT_TRUE(info);
  uint64_t stored = 0;
  for (auto& p : info->partitions())
    stored += p.end_offset();
  EXPECT_EQ(stored, 24u) << "exactly the committed ones appended";
}

TEST_F(DoorTest, ApiListenOffOpensNoDoor) {
  auto s = base_settings();
  s.api_listen = "off";
  auto n = edda::node::embedded_node::start(s);
  ASSERT_TRUE(n) << edda::render(n.error());
  EXPECT_EQ((*n)->api_port(), 0);
}

} // namespace
