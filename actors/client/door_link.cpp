#include "client/door_impl.hpp"

#include "base/errc.hpp"
#include "broker.pb.h"
#include "cluster.pb.h"
#include "replication.pb.h"

#include <map>

namespace edda::client {

namespace {

namespace pb = edda::wire::v1;

/// The door's unary method for each request type the frontend takes.
const std::map<std::string, std::string>& methods() {
  static const std::map<std::string, std::string> table = [] {
    std::map<std::string, std::string> m;
    auto add = [&m](const google::protobuf::Descriptor* d, const char* rpc) {
      m[d->full_name()] = std::string{"/edda.api.v1.Edda/"} + rpc;
    };
    add(pb::CreateTopic::descriptor(), "CreateTopic");
    add(pb::AlterTopic::descriptor(), "AlterTopic");
    add(pb::DeleteTopic::descriptor(), "DeleteTopic");
    add(pb::DescribeTopic::descriptor(), "DescribeTopic");
    add(pb::ListTopics::descriptor(), "ListTopics");
    add(pb::ListGroups::descriptor(), "ListGroups");
    add(pb::DlqList::descriptor(), "ListDeadLetters");
    add(pb::DlqRedrive::descriptor(), "RedriveDeadLetters");
    add(pb::ResetOffsets::descriptor(), "ResetOffsets");
    add(pb::FindMessages::descriptor(), "FindMessages");
    add(pb::NodeStatusRequest::descriptor(), "NodeStatus");
    add(pb::BackupRequest::descriptor(), "Backup");
    add(pb::ClusterStatusRequest::descriptor(), "ClusterStatus");
    add(pb::ClusterMapRequest::descriptor(), "ClusterMap");
    add(pb::ElectRequest::descriptor(), "Elect");
    add(pb::TxnList::descriptor(), "ListTransactions");
    add(pb::TxnShow::descriptor(), "ShowTransaction");
    add(pb::DedupCheck::descriptor(), "CheckKey");
    add(pb::DedupMark::descriptor(), "MarkKey");
    add(pb::SagaStart::descriptor(), "StartSaga");
    add(pb::SagaGet::descriptor(), "ShowSaga");
    add(pb::SagaList::descriptor(), "ListSagas");
    add(pb::SagaCommand::descriptor(), "CommandSaga");
    return m;
  }();
  return table;
}

errc nearest(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return errc::invalid_argument;
    case grpc::StatusCode::NOT_FOUND:
      return errc::not_found;
    case grpc::StatusCode::ALREADY_EXISTS:
      return errc::topic_exists;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return errc::message_too_large;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return errc::timeout;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return errc::unauthenticated;
    default:
      return errc::unavailable;
  }
}

} // namespace

void door_link::prepare(grpc::ClientContext& ctx) const {
  if (!token.empty())
    ctx.AddMetadata("authorization", "Bearer " + token);
}

const std::string& door_endpoint(const door_link& link) {
  return link.endpoint;
}

caf::error from_status(const grpc::Status& st, const grpc::ClientContext& ctx,
                       const std::string& what) {
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find("edda-error");
  auto code = it == md.end()
                ? errc::none
                : errc_named(std::string{it->second.data(), it->second.size()});
  auto text = st.error_message();
  if (code != errc::none) {
    auto prefix = std::string{to_string(code)} + ": ";
    if (text.compare(0, prefix.size(), prefix) == 0)
      text.erase(0, prefix.size());
    return make_error(code, std::move(text));
  }
  // Not from edda: the transport (nothing listens, the call timed out, a
  // size limit of gRPC, ...).
  return make_error(nearest(st.error_code()),
                    what + ": " + (text.empty() ? "gRPC status "
                                                    + std::to_string(
                                                      st.error_code())
                                                : text));
}

caf::error from_api(const api::Error& e) {
  auto code = errc_named(e.code());
  return make_error(code == errc::none ? errc::unavailable : code,
                    e.message());
}

api::Record to_api(const message& m) {
  api::Record r;
  r.set_topic(m.topic);
  r.set_body(m.body);
  r.set_key(m.key);
  for (auto& t : m.tags)
    r.add_tags(t);
  for (auto& [k, v] : m.properties)
    (*r.mutable_properties())[k] = v;
  r.set_deliver_at_ms(m.deliver_at_ms);
  r.set_id(m.id);
  return r;
}

message from_api(const api::Record& r) {
  message m;
  m.topic = r.topic();
  m.body = r.body();
  m.key = r.key();
  m.tags.assign(r.tags().begin(), r.tags().end());
  for (auto& [k, v] : r.properties())
    m.properties[k] = v;
  m.deliver_at_ms = r.deliver_at_ms();
  m.id = r.id();
  return m;
}

caf::expected<std::shared_ptr<door_link>>
open_door(const std::string& host, uint16_t port, const connect_options& opts) {
  auto link = std::make_shared<door_link>();
  link->endpoint = host + ":" + std::to_string(port);
  link->token = opts.token;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20); // deliveries: the node bounds them
  args.SetMaxSendMessageSize(-1);           // the node's api.max_request_size
  // A hung node (SIGSTOP, a dead host whose TCP stays open) is noticed by
  // pings: every max(heartbeat, 1 s), answered within max(connection_timeout,
  // 1 s); then every stream on the connection fails and reconnects.
  using std::chrono::milliseconds;
  auto ping = opts.heartbeat.count() > 0
                ? std::max(opts.heartbeat, milliseconds{1000})
                : milliseconds{30000};
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(ping.count()));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              static_cast<int>(
                std::max(opts.connection_timeout, milliseconds{1000}).count()));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnect soon after a node comes back (gRPC's default backs off to 2 min).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  // One TCP connection per edda connection, closed with it (gRPC shares
  // them between channels to the same address otherwise).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  link->channel = grpc::CreateCustomChannel(
    link->endpoint, grpc::InsecureChannelCredentials(), args);
  link->stub = api::Edda::NewStub(link->channel);
  grpc::ClientContext ctx;
  link->prepare(ctx);
  auto wait = std::max(opts.connection_timeout, std::chrono::milliseconds{2000});
  ctx.set_deadline(std::chrono::system_clock::now() + wait);
  pb::NodeStatus status;
  auto st = link->stub->NodeStatus(&ctx, pb::NodeStatusRequest{}, &status);
  if (!st.ok()) {
    auto err = from_status(st, ctx, "the client door at " + link->endpoint);
    if (code_of(err) == errc::unauthenticated)
      return err;
    // Something that does not speak HTTP/2 answered: most likely the node
    // port (CAF's BASP), given where the door was expected.
    auto hint = st.error_message().find("HTTP/2") != std::string::npos
                  ? std::string{"; something else listens there, maybe the "
                                "node port: the door is at api.listen (by "
                                "default the node port + 10), or set "
                                "connect_options::door = false for the node "
                                "port"}
                  : std::string{};
    return make_error(errc::unavailable, "no edda client door answers at "
                                           + link->endpoint + " ("
                                           + st.error_message() + ")" + hint);
  }
  return link;
}

void door_unary(const std::shared_ptr<door_link>& link,
                const google::protobuf::Message& req,
                google::protobuf::Message* reply,
                std::chrono::milliseconds timeout,
                std::function<void(caf::error)> done) {
  std::shared_ptr<google::protobuf::Message> q{req.New()};
  q->CopyFrom(req);
  // gRPC may keep a pointer to the method's name for the call's life:
  // names from static storage only.
  static const std::string resolve = "/edda.api.v1.Edda/ResolveTransaction";
  const std::string* method = nullptr;
  if (auto* end = dynamic_cast<const pb::EndTxn*>(&req)) {
    // An operator's override; a producer's ends go through Transact.
    const std::string op = "operator:";
    if (end->resolved_by().compare(0, op.size(), op) != 0) {
      done(make_error(errc::invalid_argument,
                      "a transaction's end goes through the Transact stream "
                      "of the client door; only an operator's resolve is a "
                      "unary call"));
      return;
    }
    auto r = std::make_shared<api::ResolveTransactionRequest>();
    r->set_txn_id(end->txn_id());
    r->set_commit(end->outcome() == pb::TXN_COMMIT);
    r->set_by(end->resolved_by().substr(op.size()));
    q = r;
    method = &resolve;
  } else {
    auto it = methods().find(req.GetDescriptor()->full_name());
    if (it == methods().end()) {
      done(make_error(errc::invalid_argument,
                      "the client door has no call for "
                        + req.GetDescriptor()->full_name()));
      return;
    }
    method = &it->second;
  }
  // Blocking, on the caller's thread: a callback call would finish on the
  // channel's own callback queue, which a connection dropped right after
  // the answer would shut down under it (an assertion in gRPC).
  grpc::ClientContext ctx;
  link->prepare(ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  grpc::internal::RpcMethod rpc{method->c_str(),
                                grpc::internal::RpcMethod::NORMAL_RPC};
  auto st = grpc::internal::BlockingUnaryCall<google::protobuf::Message,
                                              google::protobuf::Message>(
    link->channel.get(), rpc, &ctx, *q, reply);
  if (st.ok())
    done(caf::error{});
  else
    done(from_status(st, ctx, *method + " at " + link->endpoint));
}

} // namespace edda::client
