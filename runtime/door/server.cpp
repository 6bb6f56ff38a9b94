#include "door/server.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/connection_impl.hpp"
#include "door/door_impl.hpp"
#include "wire/types.hpp"

#include <grpcpp/resource_quota.h>

namespace edda::door {

namespace {

namespace pb = edda::wire::v1;
using namespace std::chrono_literals;

constexpr auto admin_cap = std::chrono::milliseconds{30000};
constexpr auto saga_wait_cap = std::chrono::milliseconds{300000};
constexpr auto elect_cap = std::chrono::milliseconds{125000};
constexpr auto backup_cap = std::chrono::milliseconds{3600000};

/// Passes `req` to the node and answers with its reply (or its error),
/// without holding a thread meanwhile.
template <class Reply, class Request>
grpc::ServerUnaryReactor* forward(const state_ptr& st,
                                  grpc::CallbackServerContext* ctx,
                                  const Request& req, Reply* out,
                                  std::chrono::milliseconds cap = admin_cap) {
  caf_thread_scope scope;
  auto* r = ctx->DefaultReactor();
  call_slot slot;
  auto admitted = admit(st, ctx, slot);
  if (!admitted.ok()) {
    r->Finish(admitted);
    return r;
  }
  auto held = std::make_shared<call_slot>(std::move(slot));
  st->node.impl()->call_async<Reply>(
    req, time_left(ctx, cap),
    [r, ctx, out, held](caf::expected<Reply> x) {
      if (x) {
        *out = std::move(*x);
        r->Finish(grpc::Status::OK);
      } else {
        r->Finish(to_status(x.error(), ctx));
      }
    });
  return r;
}

/// A client's request without the node-to-node field `local_only`.
template <class Request>
Request from_client(const Request& req) {
  auto q = req;
  q.set_local_only(false);
  return q;
}

grpc::ServerUnaryReactor* refuse(grpc::CallbackServerContext* ctx,
                                 const caf::error& why) {
  auto* r = ctx->DefaultReactor();
  r->Finish(to_status(why, ctx));
  return r;
}

class service final : public api::Edda::CallbackService {
public:
  explicit service(state_ptr st) : st_(std::move(st)) {
  }

  grpc::ServerBidiReactor<api::ProduceRequest, api::ProduceResponse>*
  Produce(grpc::CallbackServerContext* ctx) override {
    return open_produce(st_, ctx);
  }

  grpc::ServerBidiReactor<api::ConsumeRequest, api::ConsumeResponse>*
  Consume(grpc::CallbackServerContext* ctx) override {
    return open_consume(st_, ctx);
  }

  grpc::ServerBidiReactor<api::ParticipateRequest, api::ParticipateResponse>*
  Participate(grpc::CallbackServerContext* ctx) override {
    return open_participate(st_, ctx);
  }

  grpc::ServerBidiReactor<api::TransactRequest, api::TransactResponse>*
  Transact(grpc::CallbackServerContext* ctx) override {
    return open_transact(st_, ctx);
  }

  grpc::ServerUnaryReactor* CreateTopic(grpc::CallbackServerContext* ctx,
                                        const pb::CreateTopic* req,
                                        pb::TopicInfo* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* AlterTopic(grpc::CallbackServerContext* ctx,
                                       const pb::AlterTopic* req,
                                       pb::TopicInfo* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* DeleteTopic(grpc::CallbackServerContext* ctx,
                                        const pb::DeleteTopic* req,
                                        pb::Done* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* DescribeTopic(grpc::CallbackServerContext* ctx,
                                          const pb::DescribeTopic* req,
                                          pb::TopicInfo* out) override {
    return forward(st_, ctx, from_client(*req), out);
  }
  grpc::ServerUnaryReactor* ListTopics(grpc::CallbackServerContext* ctx,
                                       const pb::ListTopics* req,
                                       pb::TopicList* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* ListGroups(grpc::CallbackServerContext* ctx,
                                       const pb::ListGroups* req,
                                       pb::GroupList* out) override {
    return forward(st_, ctx, pb::ListGroups{}, out);
  }
  grpc::ServerUnaryReactor* ListDeadLetters(grpc::CallbackServerContext* ctx,
                                            const pb::DlqList* req,
                                            pb::DlqEntries* out) override {
    return forward(st_, ctx, from_client(*req), out);
  }
  grpc::ServerUnaryReactor*
  RedriveDeadLetters(grpc::CallbackServerContext* ctx,
                     const pb::DlqRedrive* req,
                     pb::DlqRedriven* out) override {
    return forward(st_, ctx, from_client(*req), out);
  }
  grpc::ServerUnaryReactor* ResetOffsets(grpc::CallbackServerContext* ctx,
                                         const pb::ResetOffsets* req,
                                         pb::OffsetsReset* out) override {
    return forward(st_, ctx, from_client(*req), out);
  }
  grpc::ServerUnaryReactor* FindMessages(grpc::CallbackServerContext* ctx,
                                         const pb::FindMessages* req,
                                         pb::FoundMessages* out) override {
    return forward(st_, ctx, from_client(*req), out);
  }
  grpc::ServerUnaryReactor* NodeStatus(grpc::CallbackServerContext* ctx,
                                       const pb::NodeStatusRequest* req,
                                       pb::NodeStatus* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* Backup(grpc::CallbackServerContext* ctx,
                                   const pb::BackupRequest* req,
                                   pb::BackupDone* out) override {
    return forward(st_, ctx, *req, out, backup_cap);
  }
  grpc::ServerUnaryReactor* ListTransactions(grpc::CallbackServerContext* ctx,
                                             const pb::TxnList* req,
                                             pb::TxnRecords* out) override {
    return forward(st_, ctx, from_client(*req), out);
  }
  grpc::ServerUnaryReactor* ShowTransaction(grpc::CallbackServerContext* ctx,
                                            const pb::TxnShow* req,
                                            pb::TxnRecord* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* ClusterStatus(grpc::CallbackServerContext* ctx,
                                          const pb::ClusterStatusRequest* req,
                                          pb::ClusterStatus* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* ClusterMap(grpc::CallbackServerContext* ctx,
                                       const pb::ClusterMapRequest* req,
                                       pb::ClusterMap* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* Elect(grpc::CallbackServerContext* ctx,
                                  const pb::ElectRequest* req,
                                  pb::ElectReply* out) override {
    if (req->by().empty())
      return refuse(ctx, make_error(errc::invalid_argument,
                                    "an election or move needs `by` (who "
                                    "asks), recorded with it"));
    return forward(st_, ctx, *req, out, elect_cap);
  }
  grpc::ServerUnaryReactor*
  ResolveTransaction(grpc::CallbackServerContext* ctx,
                     const api::ResolveTransactionRequest* req,
                     pb::EndResult* out) override {
    if (req->by().empty())
      return refuse(ctx, make_error(errc::invalid_argument,
                                    "an operator override needs `by` (who "
                                    "decided), recorded with the outcome"));
    if (req->txn_id().empty())
      return refuse(ctx, make_error(errc::invalid_argument, "no txn_id"));
    pb::EndTxn q;
    q.set_txn_id(req->txn_id());
    q.set_outcome(req->commit() ? pb::TXN_COMMIT : pb::TXN_ROLLBACK);
    q.set_resolved_by("operator:" + req->by());
    return forward(st_, ctx, q, out);
  }
  grpc::ServerUnaryReactor* CheckKey(grpc::CallbackServerContext* ctx,
                                     const pb::DedupCheck* req,
                                     pb::DedupStatus* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* MarkKey(grpc::CallbackServerContext* ctx,
                                    const pb::DedupMark* req,
                                    pb::DedupStatus* out) override {
    return forward(st_, ctx, *req, out);
  }
  grpc::ServerUnaryReactor* StartSaga(grpc::CallbackServerContext* ctx,
                                      const pb::SagaStart* req,
                                      pb::SagaStarted* out) override {
    return forward(st_, ctx, *req, out, req->wait() ? saga_wait_cap
                                                    : admin_cap);
  }
  grpc::ServerUnaryReactor* ShowSaga(grpc::CallbackServerContext* ctx,
                                     const pb::SagaGet* req,
                                     pb::SagaRecord* out) override {
    return forward(st_, ctx, from_client(*req), out);
  }
  grpc::ServerUnaryReactor* ListSagas(grpc::CallbackServerContext* ctx,
                                      const pb::SagaList* req,
                                      pb::SagaRecords* out) override {
    return forward(st_, ctx, from_client(*req), out);
  }
  grpc::ServerUnaryReactor* CommandSaga(grpc::CallbackServerContext* ctx,
                                        const pb::SagaCommand* req,
                                        pb::SagaRecord* out) override {
    if (req->by().empty())
      return refuse(ctx, make_error(errc::invalid_argument,
                                    "an operator command needs `by` (who), "
                                    "recorded in the saga's history"));
    return forward(st_, ctx, from_client(*req), out);
  }

private:
  state_ptr st_;
};

} // namespace

struct server::impl {
  state_ptr st;
  std::unique_ptr<service> svc;
  std::unique_ptr<grpc::Server> grpc_server;
  uint16_t port = 0;
  std::once_flag stopped;
};

server::server(std::unique_ptr<impl> i) : impl_(std::move(i)) {
}

server::~server() {
  stop();
}

uint16_t server::port() const {
  return impl_->port;
}

caf::expected<std::unique_ptr<server>>
server::start(const config::node_settings& settings, const std::string& host,
              uint16_t port, client::connection node) {
  auto im = std::make_unique<impl>();
  im->st = std::make_shared<door_state>(std::move(node), settings);
  for (auto& t : settings.api_tokens) {
    auto colon = t.find(':');
    if (colon == std::string::npos)
      return make_error(errc::bad_config, "api.tokens: '" + t.substr(0, 8)
                                            + "...' is not client:secret");
    im->st->clients_by_secret[t.substr(colon + 1)] = t.substr(0, colon);
  }
  im->svc = std::make_unique<service>(im->st);
  auto address = (host.find(':') != std::string::npos ? "[" + host + "]"
                                                      : host)
                 + ":" + std::to_string(port);
  grpc::ServerBuilder b;
  int selected = 0;
  b.AddListeningPort(address, grpc::InsecureServerCredentials(), &selected);
  b.RegisterService(im->svc.get());
  // A request must hold at least one message of the largest size.
  auto max_size = static_cast<int>(std::max<uint64_t>(
    settings.api_max_request_size, settings.max_message_size + (1u << 20)));
  b.SetMaxReceiveMessageSize(max_size);
  b.SetMaxSendMessageSize(max_size);
  b.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                       static_cast<int>(settings.api_handshake_timeout_ms));
  b.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                       static_cast<int>(settings.api_idle_timeout_ms));
  // A client that vanished (its host died, SIGSTOP) is noticed by pings.
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Clients ping every second or so to notice a hung node (the C++ client:
  // max(connect_options::heartbeat, 1 s)); more often than every 500 ms
  // counts as abuse (gRPC closes such a connection after two strikes).
  b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                       500);
  // One stream more than the calls an address may open: the first call
  // over the cap gets a clear refusal (admit()); HTTP/2 would only queue
  // it at the client.
  b.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                       static_cast<int>(settings.api_max_calls_per_address)
                         + 1);
  // Memory for gRPC's buffers, all connections together.
  grpc::ResourceQuota quota("edda-api");
  quota.Resize(std::max<size_t>(256ull << 20,
                                4 * settings.api_max_request_size));
  b.SetResourceQuota(quota);
  im->grpc_server = b.BuildAndStart();
  if (!im->grpc_server || selected == 0)
    return make_error(errc::unavailable,
                      "cannot listen on " + address
                        + " (api.listen): the port is in use or the address "
                          "is not this machine's");
  im->port = static_cast<uint16_t>(selected);
  EDDA_INFO("api", "client door (gRPC edda.api.v1) on "
                     << host << ":" << im->port
                     << (settings.api_tokens.empty()
                           ? ", no authentication (api.tokens empty)"
                           : ", " + std::to_string(settings.api_tokens.size())
                               + " client token(s)"));
  return std::unique_ptr<server>{new server(std::move(im))};
}

void server::stop() {
  std::call_once(impl_->stopped, [this] {
    if (!impl_->grpc_server)
      return;
    // Calls still open after 1 s are cancelled; returns once all ended.
    impl_->grpc_server->Shutdown(std::chrono::system_clock::now() + 1s);
    impl_->grpc_server->Wait();
    impl_->grpc_server.reset();
    impl_->st->await_background(); // producers being torn down
  });
}

bool api_address(const config::node_settings& s, std::string& host,
                 uint16_t& port) {
  return config::listen_address(s.api_listen, s, s.listen_host, 10, host,
                                port);
}

} // namespace edda::door
