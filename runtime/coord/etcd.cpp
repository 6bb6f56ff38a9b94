#include "coord/etcd.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "coord/detail.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h>
#include <grpc/grpc.h>
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/status.h>
#include <grpcpp/support/sync_stream.h>
#include <mutex>
#include <thread>
#include <utility>

namespace edda::coord {

namespace {

namespace pb = etcdserverpb;
using sys_clock = std::chrono::system_clock;
using std::chrono::milliseconds;

/// One etcd member: its channel and the stubs on it (all thread-safe).
struct endpoint {
  std::string name;   ///< as configured, for errors and describe()
  std::string target; ///< host:port, for gRPC
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::KV::Stub> kv;
  std::unique_ptr<pb::Lease::Stub> lease;
  std::unique_ptr<pb::Watch::Stub> watch;
  /// It stopped answering (said once in the log until it answers again).
  std::atomic<bool> failing{false};
};

using endpoint_ptr = std::shared_ptr<endpoint>;

/// "http://host:port[/]" or "host:port" to "host:port"; empty if malformed.
std::string parse_target(const std::string& in) {
  std::string s = in;
  static const std::string http = "http://";
  if (s.compare(0, http.size(), http) == 0)
    s.erase(0, http.size());
  else if (s.find("://") != std::string::npos)
    return {}; // https (TLS) and other schemes: not supported
  while (!s.empty() && s.back() == '/')
    s.pop_back();
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()
      || s.find('/') != std::string::npos)
    return {};
  auto port = s.substr(colon + 1);
  if (port.size() > 5
      || port.find_first_not_of("0123456789") != std::string::npos)
    return {};
  auto n = std::stoi(port);
  if (n < 1 || n > 65535)
    return {};
  return s;
}

endpoint_ptr make_endpoint(const std::string& name, const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1); // a prefix listing may be large
  // Each client its own connection (two clients are two nodes in tests).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Reconnect soon after a restart of etcd (gRPC's default starts at 1 s
  // and backs off to 120 s).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Find a dead connection under a watch within ~15 s. Only while calls
  // are open: etcd refuses pings more often than every 5 s, and pings
  // without a stream.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  auto ep = std::make_shared<endpoint>();
  ep->name = name;
  ep->target = target;
  ep->channel = grpc::CreateCustomChannel(
    target, grpc::InsecureChannelCredentials(), args);
  ep->kv = pb::KV::NewStub(ep->channel);
  ep->lease = pb::Lease::NewStub(ep->channel);
  ep->watch = pb::Watch::NewStub(ep->channel);
  return ep;
}

const char* code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

/// The edda error for a failed gRPC call `what` on `ep`.
caf::error to_error(const grpc::Status& st, const endpoint& ep,
                    const char* what, milliseconds timeout) {
  std::string text = "etcd " + ep.name + ": " + what + ": ";
  const auto& msg = st.error_message();
  if (msg.find("requested lease not found") != std::string::npos)
    return make_error(errc::not_found, text + msg);
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return make_error(errc::unavailable, text + msg);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return make_error(errc::timeout, text + "no answer within "
                                         + std::to_string(timeout.count())
                                         + " ms (" + msg + ")");
    case grpc::StatusCode::NOT_FOUND:
      return make_error(errc::not_found, text + msg);
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::FAILED_PRECONDITION:
      return make_error(errc::invalid_argument, text + msg);
    default:
      return make_error(errc::unavailable,
                        text + code_name(st.error_code()) + ": " + msg);
  }
}

/// A try's share of a deadline that `left` endpoints still share: what is
/// left divided among them, so a silent endpoint leaves time for the next.
sys_clock::duration share_of(sys_clock::time_point deadline, size_t left) {
  auto rest = deadline - sys_clock::now();
  return rest / static_cast<int64_t>(std::max<size_t>(left, 1));
}

/// Why an endpoint gave no answer, for an "unreachable" error.
std::string no_answer(const grpc::Status& st, sys_clock::duration share) {
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
    return "no answer within "
           + std::to_string(std::chrono::round<milliseconds>(share).count())
           + " ms";
  return std::string{code_name(st.error_code())} + ": " + st.error_message();
}

key_value to_kv(const mvccpb::KeyValue& in) {
  key_value out;
  out.key = in.key();
  out.value = in.value();
  out.create_revision = in.create_revision();
  out.mod_revision = in.mod_revision();
  out.version = in.version();
  out.lease = in.lease();
  return out;
}

std::optional<key_value> first_kv(const pb::RangeResponse& r) {
  if (r.kvs_size() == 0)
    return std::nullopt;
  return to_kv(r.kvs(0));
}

// -- watches ------------------------------------------------------------------

/// What the watch thread and its owner share. The thread holds it too, so
/// a watch cancelled from its own callback can finish after its owner died.
struct watch_state {
  endpoint_ptr ep;
  std::string prefix;
  int64_t from_revision = 0;
  watch_handlers handlers;
  grpc::ClientContext ctx;
  std::atomic<bool> cancelled{false};
  /// Set (with `moved_why`) when the client stopped using `ep` because it
  /// did not answer a call: the stream is cancelled and the watch ends with
  /// on_error, so that its owner watches anew on the next endpoint (a
  /// stream to a blackholed endpoint notices nothing for ~15 s).
  std::atomic<bool> moved{false};
  std::string moved_why; // written before `moved` is set

  std::mutex mu;
  std::condition_variable cv;
  bool started = false;   // guarded by mu: the server created the watch
  bool finished = false;  // guarded by mu: the thread is done with the stream
  caf::error start_error; // guarded by mu: why it ended before `started`

  void run() {
    auto stream = ep->watch->Watch(&ctx);
    pb::WatchRequest req;
    auto* create = req.mutable_create_request();
    create->set_key(prefix);
    create->set_range_end(detail::prefix_end(prefix));
    create->set_start_revision(from_revision);
    create->set_progress_notify(true);
    caf::error err;
    bool was_started = false;
    pb::WatchResponse resp;
    if (stream->Write(req)) {
      while (stream->Read(&resp)) {
        if (resp.created() && !resp.canceled() && !was_started) {
          was_started = true;
          set_started();
        }
        if (resp.compact_revision() != 0) {
          err = make_error(errc::compacted,
                           "etcd " + ep->name + ": watch of " + prefix
                             + " from revision " + std::to_string(from_revision)
                             + ": compacted up to revision "
                             + std::to_string(resp.compact_revision()));
          break;
        }
        if (resp.canceled()) {
          err = make_error(errc::unavailable, "etcd " + ep->name + ": watch of "
                                                + prefix
                                                + " cancelled by the server: "
                                                + resp.cancel_reason());
          break;
        }
        if (resp.events_size() == 0 || cancelled)
          continue; // progress notification
        std::vector<watch_event> batch;
        batch.reserve(resp.events_size());
        for (auto& ev : resp.events()) {
          watch_event out;
          out.type = ev.type() == mvccpb::Event::DELETE
                       ? watch_event::kind::del
                       : watch_event::kind::put;
          out.kv = to_kv(ev.kv());
          batch.push_back(std::move(out));
        }
        if (handlers.on_events)
          handlers.on_events(batch);
      }
    }
    if (err) {
      // etcd keeps a stream open after cancelling a watch on it: end it.
      ctx.TryCancel();
      while (stream->Read(&resp)) {
      }
    }
    auto st = stream->Finish();
    if (!err && moved)
      err = make_error(errc::unavailable, "etcd " + ep->name + ": watch of "
                                            + prefix + " ended: " + moved_why);
    if (!err) {
      if (st.ok())
        err = make_error(errc::unavailable, "etcd " + ep->name
                                              + ": watch stream of " + prefix
                                              + " closed by the server");
      else
        err = to_error(st, *ep, "watch", milliseconds{0});
    }
    if (!was_started) {
      std::lock_guard<std::mutex> lk(mu);
      start_error = err;
      finished = true;
      cv.notify_all();
      return;
    }
    if (!cancelled && handlers.on_error)
      handlers.on_error(err);
    std::lock_guard<std::mutex> lk(mu);
    finished = true;
  }

  void set_started() {
    std::lock_guard<std::mutex> lk(mu);
    started = true;
    cv.notify_all();
  }
};

class etcd_watch final : public watch {
public:
  etcd_watch(std::shared_ptr<watch_state> st, std::thread t)
      : st_(std::move(st)), thread_(std::move(t)) {}

  ~etcd_watch() override {
    cancel();
  }

  void cancel() override {
    st_->cancelled = true;
    st_->ctx.TryCancel();
    if (!thread_.joinable())
      return;
    if (thread_.get_id() == std::this_thread::get_id())
      thread_.detach(); // cancelled from its own callback: ends on return
    else
      thread_.join();
  }

private:
  std::shared_ptr<watch_state> st_;
  std::thread thread_;
};

// -- the client ---------------------------------------------------------------

class etcd_client final : public client {
public:
  etcd_client(etcd_options opts, std::vector<endpoint_ptr> eps)
      : opts_(std::move(opts)), eps_(std::move(eps)) {
    for (auto& ep : eps_)
      endpoints_ += (endpoints_.empty() ? "" : ",") + ep->name;
  }

  /// Tries the endpoints in turn until one answers a read or `dial_timeout`
  /// passes. Each try gets at most call_timeout and its share of the time
  /// left, so a silent first endpoint leaves time for the next.
  caf::error dial() {
    auto deadline = sys_clock::now() + opts_.dial_timeout;
    auto n = eps_.size();
    std::vector<std::string> reasons(n);
    std::vector<int> attempts(n, 0);
    for (;;) {
      for (size_t i = 0; i < n && sys_clock::now() < deadline; ++i) {
        auto& ep = *eps_[i];
        auto share = std::min<sys_clock::duration>(opts_.call_timeout,
                                                   share_of(deadline, n - i));
        grpc::ClientContext ctx;
        ctx.set_deadline(sys_clock::now() + share);
        pb::RangeRequest req;
        req.set_key("/");
        req.set_keys_only(true);
        req.set_limit(1);
        pb::RangeResponse resp;
        auto st = ep.kv->Range(&ctx, req, &resp);
        if (st.ok()) {
          current_ = i;
          return {};
        }
        auto code = st.error_code();
        if (code != grpc::StatusCode::UNAVAILABLE
            && code != grpc::StatusCode::DEADLINE_EXCEEDED)
          return to_error(st, ep, "dial", opts_.call_timeout);
        // The first reason: gRPC's later ones may only say "tcp
        // handshaker shutdown" where the first said "Connection refused".
        if (reasons[i].empty())
          reasons[i] = ep.name + ": " + no_answer(st, share);
        ++attempts[i];
      }
      if (sys_clock::now() + milliseconds{50} >= deadline)
        break;
      std::this_thread::sleep_for(milliseconds{50});
    }
    std::string text = "etcd at " + endpoints_ + " unreachable: no endpoint "
                       + "answered within "
                       + std::to_string(opts_.dial_timeout.count()) + " ms";
    for (size_t i = 0; i < n; ++i)
      if (!reasons[i].empty())
        text += "; " + reasons[i] + " (" + std::to_string(attempts[i])
                + " attempts)";
    return make_error(errc::unavailable, std::move(text));
  }

  caf::expected<lease_id> grant(std::chrono::seconds ttl) override {
    if (auto err = detail::check_ttl(ttl))
      return err;
    pb::LeaseGrantRequest req;
    req.set_ttl(ttl.count());
    pb::LeaseGrantResponse resp;
    auto err = invoke("lease grant", true, [&](endpoint& ep, grpc::ClientContext& c) {
      return ep.lease->LeaseGrant(&c, req, &resp);
    });
    if (err)
      return err;
    if (!resp.error().empty())
      return make_error(errc::invalid_argument,
                        "etcd: lease grant: " + resp.error());
    return resp.id();
  }

  caf::expected<std::chrono::seconds> keepalive(lease_id id) override {
    pb::LeaseKeepAliveRequest req;
    req.set_id(id);
    pb::LeaseKeepAliveResponse resp;
    auto err
      = invoke("lease keepalive", true, [&](endpoint& ep, grpc::ClientContext& c) {
          // One short stream per call: no state shared between callers.
          auto stream = ep.lease->LeaseKeepAlive(&c);
          bool answered = stream->Write(req) && stream->Read(&resp);
          if (answered)
            stream->WritesDone();
          else
            c.TryCancel();
          auto st = stream->Finish();
          if (answered)
            return grpc::Status::OK;
          // Cancelled by us above: say why, so that invoke moves on.
          if (sys_clock::now() >= c.deadline())
            return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                "no keepalive answer");
          if (!st.ok() && st.error_code() != grpc::StatusCode::CANCELLED)
            return st;
          return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "keepalive stream closed without an answer");
        });
    if (err)
      return err;
    if (resp.ttl() <= 0)
      return make_error(errc::not_found, "etcd: lease " + std::to_string(id)
                                           + " not found (expired or revoked)");
    return std::chrono::seconds{resp.ttl()};
  }

  caf::error revoke(lease_id id) override {
    pb::LeaseRevokeRequest req;
    req.set_id(id);
    pb::LeaseRevokeResponse resp;
    return invoke("lease revoke", true, [&](endpoint& ep, grpc::ClientContext& c) {
      return ep.lease->LeaseRevoke(&c, req, &resp);
    });
  }

  caf::expected<std::pair<std::optional<key_value>, int64_t>>
  get(const std::string& key) override {
    if (auto err = detail::check_key(key))
      return err;
    pb::RangeRequest req;
    req.set_key(key);
    pb::RangeResponse resp;
    auto err = invoke("get", true, [&](endpoint& ep, grpc::ClientContext& c) {
      return ep.kv->Range(&c, req, &resp);
    });
    if (err)
      return err;
    return std::make_pair(first_kv(resp), resp.header().revision());
  }

  caf::expected<range_result> get_prefix(const std::string& prefix) override {
    if (auto err = detail::check_key(prefix))
      return err;
    pb::RangeRequest req;
    req.set_key(prefix);
    req.set_range_end(detail::prefix_end(prefix));
    req.set_sort_order(pb::RangeRequest::ASCEND);
    req.set_sort_target(pb::RangeRequest::KEY);
    pb::RangeResponse resp;
    auto err = invoke("get prefix", true, [&](endpoint& ep, grpc::ClientContext& c) {
      return ep.kv->Range(&c, req, &resp);
    });
    if (err)
      return err;
    range_result out;
    out.revision = resp.header().revision();
    out.kvs.reserve(resp.kvs_size());
    for (auto& kv : resp.kvs())
      out.kvs.push_back(to_kv(kv));
    return out;
  }

  caf::expected<cas_result> cas_put(const std::string& key,
                                    const std::string& value,
                                    int64_t expect_mod_revision,
                                    lease_id lease) override {
    if (auto err = detail::check_put(key, value))
      return err;
    pb::TxnRequest req;
    add_compare(req, key, expect_mod_revision);
    auto* put = req.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
    put->set_lease(lease);
    req.add_success()->mutable_request_range()->set_key(key);
    req.add_failure()->mutable_request_range()->set_key(key);
    return txn("cas put", req, true);
  }

  caf::expected<cas_result>
  cas_put_guarded(const std::string& key, const std::string& value,
                  int64_t expect_mod_revision, const std::string& guard_key,
                  int64_t guard_create_revision,
                  const std::string& absent_key) override {
    if (auto err = detail::check_put(key, value))
      return err;
    if (auto err = detail::check_key(guard_key))
      return err;
    pb::TxnRequest req;
    add_compare(req, key, expect_mod_revision);
    auto* cmp = req.add_compare();
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_target(pb::Compare::CREATE);
    cmp->set_key(guard_key);
    cmp->set_create_revision(guard_create_revision);
    if (!absent_key.empty()) {
      auto* none = req.add_compare();
      none->set_result(pb::Compare::EQUAL);
      none->set_target(pb::Compare::VERSION);
      none->set_key(absent_key);
      none->set_version(0);
    }
    auto* put = req.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
    req.add_success()->mutable_request_range()->set_key(key);
    req.add_failure()->mutable_request_range()->set_key(key);
    return txn("guarded cas put", req, true);
  }

  caf::expected<cas_result> cas_delete(const std::string& key,
                                       int64_t expect_mod_revision) override {
    if (auto err = detail::check_key(key))
      return err;
    pb::TxnRequest req;
    add_compare(req, key, expect_mod_revision);
    req.add_success()->mutable_request_delete_range()->set_key(key);
    req.add_failure()->mutable_request_range()->set_key(key);
    return txn("cas delete", req, false);
  }

  caf::expected<std::unique_ptr<watch>>
  watch_prefix(const std::string& prefix, int64_t from_revision,
               watch_handlers handlers) override {
    if (auto err = detail::check_key(prefix))
      return err;
    auto deadline = sys_clock::now() + opts_.call_timeout;
    std::string reasons;
    auto n = eps_.size();
    auto first = current_.load();
    for (size_t i = 0; i < n && sys_clock::now() < deadline; ++i) {
      auto idx = (first + i) % n;
      auto share = share_of(deadline, n - i);
      auto st = std::make_shared<watch_state>();
      st->ep = eps_[idx];
      st->prefix = prefix;
      st->from_revision = std::max<int64_t>(from_revision, 0);
      st->handlers = handlers;
      // Without a leader etcd cancels the watch instead of going silent.
      st->ctx.AddMetadata("hasleader", "true");
      std::thread t([st] { st->run(); });
      bool started;
      caf::error err;
      {
        std::unique_lock<std::mutex> lk(st->mu);
        st->cv.wait_until(lk, sys_clock::now() + share,
                          [&] { return st->started || st->finished; });
        started = st->started;
        err = st->start_error;
      }
      if (started) {
        st->ep->failing = false;
        track(st);
        return std::unique_ptr<watch>{new etcd_watch(st, std::move(t))};
      }
      st->cancelled = true;
      st->ctx.TryCancel();
      t.join();
      std::string why;
      if (!err)
        why = st->ep->name + ": no answer within "
              + std::to_string(std::chrono::round<milliseconds>(share).count())
              + " ms";
      else if (code_of(err) == errc::unavailable)
        why = render(err);
      else
        return err;
      reasons += (reasons.empty() ? "" : "; ") + why;
      move_from(idx, why);
    }
    return unreachable("watch of " + prefix, reasons);
  }

  std::string describe() const override {
    std::string out = "etcd";
    for (size_t i = 0; i < eps_.size(); ++i)
      out += (i == 0 ? " " : ",") + eps_[i]->name;
    return out;
  }

private:
  static void add_compare(pb::TxnRequest& req, const std::string& key,
                          int64_t expect_mod_revision) {
    auto* cmp = req.add_compare();
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_target(pb::Compare::MOD);
    cmp->set_key(key);
    cmp->set_mod_revision(expect_mod_revision);
  }

  /// Runs a compare-and-swap txn whose last op of either branch reads the
  /// key back (for a delete, the success branch reads nothing).
  caf::expected<cas_result> txn(const char* what, const pb::TxnRequest& req,
                                bool reads_back_on_success) {
    pb::TxnResponse resp;
    auto err = invoke(what, false, [&](endpoint& ep, grpc::ClientContext& c) {
      return ep.kv->Txn(&c, req, &resp);
    });
    if (err)
      return err;
    cas_result out;
    out.succeeded = resp.succeeded();
    out.revision = resp.header().revision();
    if ((!out.succeeded || reads_back_on_success) && resp.responses_size() > 0)
      out.current
        = first_kv(resp.responses(resp.responses_size() - 1).response_range());
    return out;
  }

  /// Endpoint `idx` gave no answer (`why`): calls go to the next one from
  /// now on, and the watches on `idx` end with on_error, so that their
  /// owners watch anew on the next. Said once in the log until `idx`
  /// answers again. One endpoint: nowhere to go, nothing to do.
  void move_from(size_t idx, const std::string& why) {
    auto n = eps_.size();
    if (n == 1)
      return;
    auto expected = idx;
    auto next = (idx + 1) % n;
    if (!current_.compare_exchange_strong(expected, next))
      return; // another call moved on already
    auto& ep = eps_[idx];
    if (!ep->failing.exchange(true))
      EDDA_WARN("etcd", "etcd " << ep->name << " does not answer (" << why
                                << "); moving to " << eps_[next]->name);
    std::vector<std::shared_ptr<watch_state>> on_it;
    {
      std::lock_guard<std::mutex> guard{watches_mu_};
      for (auto& w : watches_)
        if (auto st = w.lock(); st && st->ep == ep)
          on_it.push_back(std::move(st));
    }
    for (auto& st : on_it) {
      {
        std::lock_guard<std::mutex> lk(st->mu);
        if (st->moved)
          continue;
        st->moved_why = ep->name + " stopped answering (" + why
                        + "); watch again: the client moved to "
                        + eps_[next]->name;
        st->moved = true;
      }
      st->ctx.TryCancel();
    }
  }

  /// Keeps a weak handle on a running watch, for move_from.
  void track(const std::shared_ptr<watch_state>& st) {
    std::lock_guard<std::mutex> guard{watches_mu_};
    watches_.erase(std::remove_if(watches_.begin(), watches_.end(),
                                  [](auto& w) { return w.expired(); }),
                   watches_.end());
    watches_.push_back(st);
  }

  /// The error of a call that no endpoint answered.
  caf::error unreachable(const std::string& what, const std::string& reasons,
                         bool maybe_applied = false) const {
    return make_error(errc::unavailable,
                      "etcd at " + endpoints_ + " unreachable: " + what + ": "
                        + reasons
                        + (maybe_applied ? " (the change may have been "
                                           "applied: read before retrying)"
                                         : ""));
  }

  /// Runs `rpc` on the current endpoint. One that gives no answer
  /// (UNAVAILABLE: refused, reset, no leader; DEADLINE_EXCEEDED: silent) is
  /// left for the next (move_from), where the call goes on, unless it is a
  /// write the endpoint may have applied (`replayable` false: silent, or
  /// the call dropped after it was sent; a compare-and-swap replayed would
  /// fail against its own first write; one that could not connect goes on).
  /// All within one call_timeout, of which each try of a replayable call
  /// gets its share (a write, the rest of it).
  /// Errors: unavailable "etcd at <endpoints> unreachable: ..." when no
  /// endpoint answered; else what the endpoint said (to_error).
  template <class Rpc>
  caf::error invoke(const char* what, bool replayable, Rpc&& rpc) {
    auto deadline = sys_clock::now() + opts_.call_timeout;
    auto n = eps_.size();
    auto first = current_.load();
    std::string reasons;
    bool maybe_applied = false;
    for (size_t i = 0; i < n && sys_clock::now() < deadline; ++i) {
      auto idx = (first + i) % n;
      auto& ep = *eps_[idx];
      // A write does not go on after a silent endpoint: it may wait for
      // all the time there is.
      auto share = replayable ? share_of(deadline, n - i)
                              : deadline - sys_clock::now();
      grpc::ClientContext ctx;
      ctx.set_deadline(sys_clock::now() + share);
      auto st = rpc(ep, ctx);
      auto code = st.error_code();
      if (st.ok() || (code != grpc::StatusCode::UNAVAILABLE
                      && code != grpc::StatusCode::DEADLINE_EXCEEDED)) {
        ep.failing = false;
        if (st.ok())
          return {};
        return to_error(st, ep, what, opts_.call_timeout);
      }
      auto why = ep.name + ": " + no_answer(st, share);
      reasons += (reasons.empty() ? "" : "; ") + why;
      move_from(idx, why);
      // A write that may have reached the endpoint is not sent again: a
      // silent one, or one that dropped the call after it was sent (a
      // reset, no leader). A connection that could not be made is safe.
      auto not_connected
        = code == grpc::StatusCode::UNAVAILABLE
          && st.error_message().find("connect") != std::string::npos;
      if (!replayable && !not_connected) {
        maybe_applied = true;
        break;
      }
    }
    return unreachable(what, reasons, maybe_applied);
  }

  etcd_options opts_;
  std::vector<endpoint_ptr> eps_;
  std::string endpoints_; ///< "a,b,c", for errors
  std::atomic<size_t> current_{0};
  std::mutex watches_mu_;
  std::vector<std::weak_ptr<watch_state>> watches_; ///< guarded by watches_mu_
};

} // namespace

caf::expected<client_ptr> connect_etcd(etcd_options opts) {
  if (opts.endpoints.empty())
    return make_error(errc::invalid_argument, "etcd: no endpoint given");
  if (opts.call_timeout <= milliseconds{0}
      || opts.dial_timeout <= milliseconds{0})
    return make_error(errc::invalid_argument,
                      "etcd: call and dial timeouts must be positive");
  std::vector<endpoint_ptr> eps;
  for (auto& name : opts.endpoints) {
    auto target = parse_target(name);
    if (target.empty())
      return make_error(errc::invalid_argument,
                        "etcd: malformed endpoint \"" + name
                          + "\" (want http://host:port or host:port; no TLS)");
    eps.push_back(make_endpoint(name, target));
  }
  auto c = std::make_shared<etcd_client>(std::move(opts), std::move(eps));
  if (auto err = c->dial())
    return err;
  return client_ptr{std::move(c)};
}

} // namespace edda::coord
