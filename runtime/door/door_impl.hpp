// Internal to runtime/door: what the door's calls share (gRPC included).
#pragma once

#include "api.grpc.pb.h"
#include "client/connection.hpp"
#include "client/types.hpp"
#include "config/settings.hpp"

#include <grpcpp/grpcpp.h>

#include <caf/error.hpp>
#include <caf/logger.hpp>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace edda::door {

namespace api = edda::api::v1;

/// The gRPC status of an edda error: the nearest code, the message
/// "code: text", and `edda-error: code` in the trailing metadata (set on
/// `ctx` if given).
[[nodiscard]] grpc::Status to_status(const caf::error& err,
                                     grpc::ServerContextBase* ctx);
/// The same as an in-stream error.
void to_api_error(const caf::error& err, api::Error* out);

/// Put at the top of every gRPC handler and reaction that may touch CAF.
/// A CAF spawn (a request, a producer, a blocking wait) leaves the actor
/// system's logger in a thread-local of the calling thread; gRPC's threads
/// outlive the node, and ~actor_system waits for that reference for ever.
/// This drops it when the handler returns.
struct caf_thread_scope {
  caf_thread_scope() = default;
  caf_thread_scope(const caf_thread_scope&) = delete;
  caf_thread_scope& operator=(const caf_thread_scope&) = delete;
  ~caf_thread_scope() {
    caf::logger::set_current_actor_system(nullptr);
  }
};

/// A record of the API as a client message (moving its bytes), and back.
[[nodiscard]] client::message to_message(api::Record&& r);
void to_record(const client::message& m, api::Record* out);

/// One open call, counted against api.max_calls and
/// api.max_calls_per_address until it is destroyed.
class call_slot;

struct door_state {
  client::connection node;
  config::node_settings settings;
  std::map<std::string, std::string> clients_by_secret; ///< api.tokens

  std::mutex calls_mtx;
  uint32_t calls = 0;
  std::map<std::string, uint32_t> calls_by_address;
  std::atomic<uint64_t> refused_auth{0}, refused_busy{0};

  door_state(client::connection n, config::node_settings s)
    : node(std::move(n)), settings(std::move(s)) {
  }

  /// Runs `f` on a thread of its own (work that blocks, off gRPC's
  /// threads); the server's stop waits for every such thread. False if no
  /// thread could be started (then `f` has not run).
  bool in_background(std::function<void()> f);
  /// Waits until every in_background() thread has ended.
  void await_background();

private:
  std::mutex bg_mtx_;
  std::condition_variable bg_cv_;
  uint32_t bg_running_ = 0;
};
using state_ptr = std::shared_ptr<door_state>;

class call_slot {
public:
  call_slot() = default;
  call_slot(call_slot&& other) noexcept
    : st_(std::move(other.st_)), address_(std::move(other.address_)) {
  }
  call_slot& operator=(call_slot&&) = delete;
  call_slot(const call_slot&) = delete;
  ~call_slot();
  /// Holds a slot counted by admit() (this one empty before).
  void take(state_ptr st, std::string address) {
    st_ = std::move(st);
    address_ = std::move(address);
  }

private:
  state_ptr st_;
  std::string address_;
};

/// Starts a thread (detached): a stream's own, or in_background() work. An
/// error (unavailable) if the process cannot start one now (`f` is then
/// dropped on the calling thread).
[[nodiscard]] caf::error start_stream_thread(std::function<void()> f);

/// Admits a call: its token (api.tokens) and a free slot. On refusal the
/// status says why (UNAUTHENTICATED, RESOURCE_EXHAUSTED) and is logged.
[[nodiscard]] grpc::Status admit(const state_ptr& st,
                                 grpc::CallbackServerContext* ctx,
                                 call_slot& slot);

/// How long a request may take: the call's deadline, at most `cap`.
[[nodiscard]] std::chrono::milliseconds
time_left(grpc::CallbackServerContext* ctx, std::chrono::milliseconds cap);

/// A stream refused before it started: finishes with `why` at once.
template <class Req, class Resp>
class refused_stream : public grpc::ServerBidiReactor<Req, Resp> {
public:
  explicit refused_stream(grpc::Status why) {
    this->Finish(std::move(why));
  }
  void OnDone() override {
    delete this;
  }
};

/// In every reaction of a stream (consume, participate, transact),
/// declared before its lock: finishes the stream if its close_locked()
/// decided so (`finish_pending_`), once the lock is released (the last
/// thing the reaction does with the stream). The stream befriends it.
template <class Stream>
struct finish_on_exit {
  explicit finish_on_exit(Stream* stream) : s(stream) {
  }
  finish_on_exit(const finish_on_exit&) = delete;
  finish_on_exit& operator=(const finish_on_exit&) = delete;
  ~finish_on_exit() {
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{s->mtx_};
      finish = std::exchange(s->finish_pending_, false);
    }
    if (finish)
      s->Finish(s->status_);
  }
  Stream* s;
};

grpc::ServerBidiReactor<api::ProduceRequest, api::ProduceResponse>*
open_produce(const state_ptr& st, grpc::CallbackServerContext* ctx);

grpc::ServerBidiReactor<api::ConsumeRequest, api::ConsumeResponse>*
open_consume(const state_ptr& st, grpc::CallbackServerContext* ctx);

grpc::ServerBidiReactor<api::ParticipateRequest, api::ParticipateResponse>*
open_participate(const state_ptr& st, grpc::CallbackServerContext* ctx);

grpc::ServerBidiReactor<api::TransactRequest, api::TransactResponse>*
open_transact(const state_ptr& st, grpc::CallbackServerContext* ctx);

} // namespace edda::door
