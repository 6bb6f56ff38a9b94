// Participate: a process in any language serves named saga participants
// over a stream. A sagas::participant_host on the node's in-process
// connection registers the names (with every node of a cluster, in
// batches) and runs one worker whose steps answer later
// (participant_host::start_async): each step call goes to the client as a
// StepCall, at most `concurrency` outstanding (the rest wait in order), and
// is answered by its StepOutcome, or fails, retryable, after the call
// timeout or when the stream ends. No thread waits for an outcome.
#include "door/door_impl.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/connection_impl.hpp"
#include "sagas/remote.hpp"

#include <condition_variable>
#include <deque>
#include <map>
#include <system_error>
#include <thread>

namespace edda::door {

namespace {

constexpr uint32_t default_concurrency = 16;
constexpr uint32_t max_concurrency = 256;
constexpr size_t max_errors = 1000;
// In one StepOutcomes: no more calls than that can be outstanding.
constexpr int max_outcomes = static_cast<int>(max_concurrency);

class participate_stream;

/// What the host's step functions reach the stream through: closed (null)
/// before the stream may be deleted, so a step that comes late (a worker
/// that outlived the stop's wait) fails instead of touching freed memory.
struct stream_gate {
  std::mutex mtx;
  participate_stream* stream = nullptr;
};

class participate_stream final
  : public grpc::ServerBidiReactor<api::ParticipateRequest,
                                   api::ParticipateResponse> {
public:
  participate_stream(state_ptr st, call_slot slot,
                     grpc::CallbackServerContext* ctx)
    : st_(std::move(st)), slot_(std::move(slot)), ctx_(ctx) {
    gate_->stream = this;
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    reading_ = true;
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    caf_thread_scope scope;
    finish_on_exit<participate_stream> fin{this}; // after the lock below is released
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    reading_ = false;
    if (finished_)
      return;
    if (!ok) {
      close_locked(); // the client ended its requests: it serves no more
      return;
    }
    if (!registration_seen_) {
      registration_seen_ = true;
      if (!in_.has_register_()) {
        start_error_ = make_error(errc::invalid_argument,
                                  "the first request of Participate must "
                                  "register the participant names");
        close_locked();
        return;
      }
      reg_ = in_.register_();
      thread_started_ = true;
      if (auto err = start_stream_thread([this] { run(); })) {
        thread_started_ = false;
        start_error_ = std::move(err);
        close_locked();
      }
      return;
    }
    if (in_.has_outcome()) {
      settle_locked(in_.outcome());
    } else if (in_.has_outcomes()
               && in_.outcomes().outcomes_size() <= max_outcomes) {
      for (auto& o : in_.outcomes().outcomes())
        settle_locked(o);
    } else if (in_.has_outcomes()) {
      error_locked(make_error(errc::invalid_argument,
                              std::to_string(in_.outcomes().outcomes_size())
                                + " outcomes in one request: at most "
                                + std::to_string(max_outcomes)
                                + "; none of them was taken"));
    } else {
      error_locked(make_error(errc::invalid_argument,
                              "already registered: a later request is an "
                              "outcome"));
    }
    write_locked();
    reading_ = true;
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    caf_thread_scope scope;
    finish_on_exit<participate_stream> fin{this}; // after the lock below is released
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      writing_ = false;
      out_.Clear();
      if (!ok)
        close_locked(); // the client is gone
      else
        write_locked();
      finish = finishing_locked();
    }
    if (finish)
      Finish(status_);
  }

  void OnCancel() override {
    caf_thread_scope scope;
    finish_on_exit<participate_stream> fin{this}; // after the lock below is released
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    close_locked();
  }

  void OnDone() override {
    caf_thread_scope scope;
    delete this;
  }

private:
  friend struct finish_on_exit<participate_stream>;
  /// The stream's thread: register, expire calls until closed, unregister.
  void run() {
    std::map<std::string, sagas::async_step_function> handlers;
    for (auto& name : reg_.names())
      handlers[name] = [gate = gate_, name](
                         const sagas::step_request& r,
                         std::function<void(sagas::step_result)> done) {
        std::lock_guard<std::mutex> guard{gate->mtx}; // then the stream's
        if (gate->stream == nullptr)
          done(sagas::step_result::failure("the participant's stream ended"));
        else
          gate->stream->submit(name, r, std::move(done));
      };
    sagas::host_options o;
    o.client_id = reg_.client_id().empty() ? client::make_client_id("api")
                                           : reg_.client_id();
    auto n = reg_.concurrency() == 0 ? default_concurrency
                                     : reg_.concurrency();
    concurrency_ = std::min(n, max_concurrency);
    o.workers = 1; // its steps answer later: it serves others meanwhile
    // One promise per command: a slow call holds up no other (calls queued
    // while a write is in progress still go out together).
    o.batches = false;
    // By default what the node gives an attempt (saga.step_timeout): an
    // outcome later than that comes after the node gave up on it.
    call_timeout_ = std::chrono::milliseconds{
      reg_.call_timeout_ms() != 0 ? reg_.call_timeout_ms()
                                  : st_->settings.saga_step_timeout_ms};
    auto host = handlers.empty()
                  ? caf::expected<std::unique_ptr<sagas::participant_host>>{
                    make_error(errc::invalid_argument,
                               "register at least one participant name")}
                  : sagas::participant_host::start_async(st_->node,
                                                         std::move(handlers), o);
    {
      std::unique_lock<std::recursive_mutex> lock{mtx_};
      if (!host) {
        start_error_ = host.error();
      } else {
        auto* r = pending_.mutable_registered();
        r->set_names(static_cast<uint32_t>(reg_.names_size()));
        r->set_client_id(o.client_id);
        r->set_max_outcomes(static_cast<uint32_t>(max_outcomes));
        ready_ = true;
        EDDA_INFO("api", "participant " << o.client_id << " at "
                                        << ctx_->peer() << " serves "
                                        << reg_.names_size() << " name(s)");
        write_locked();
        if (!closing_) {
          reading_ = true;
          StartRead(&in_);
        }
        while (!closing_) {
          closed_cv_.wait_for(lock, std::chrono::milliseconds(100));
          expire_locked();
        }
      }
    }
    // Calls still open were failed by close_locked(): the host's worker
    // stops (the node forgets the names); the gate closes, so no step
    // reaches submit() after, even from a worker that outlived the wait.
    if (host)
      host->reset();
    {
      std::lock_guard<std::mutex> guard{gate_->mtx};
      gate_->stream = nullptr;
    }
    bool finish = false;
    {
      std::unique_lock<std::recursive_mutex> lock{mtx_};
      (void) close_locked();
      stopped_ = true;
      ready_ = false;
      if (start_error_)
        status_ = to_status(start_error_, ctx_);
      finish = finishing_locked();
    }
    if (finish)
      Finish(status_);
  }

  /// On the host's worker: queues the call for the client; `done` gets its
  /// outcome (or a retryable failure) exactly once.
  void submit(const std::string& name, const sagas::step_request& r,
              std::function<void(sagas::step_result)> done) {
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    if (closing_) {
      done(sagas::step_result::failure("the participant's stream ended"));
      return;
    }
    auto id = next_call_++;
    api::StepCall c;
    c.set_call(id);
    auto* cmd = c.mutable_command();
    cmd->set_saga_id(r.saga_id);
    cmd->set_saga_type(r.saga_type);
    cmd->set_step(r.step);
    cmd->set_idempotency_key(r.idempotency_key);
    cmd->set_compensate(r.compensate);
    cmd->set_input(r.input);
    cmd->set_attempt(r.attempt);
    cmd->set_confirm(r.confirm);
    cmd->set_participant(name);
    for (auto& [k, v] : r.outputs)
      (*cmd->mutable_outputs())[k] = v;
    calls_.emplace(id, open_call{std::move(done), name,
                                 std::chrono::steady_clock::now()
                                   + call_timeout_,
                                 false});
    queue_.push_back(std::move(c));
    write_locked();
  }

  /// One outcome from the client: the call's `done` gets it, or the client
  /// gets an error (an unknown call).
  void settle_locked(const api::StepOutcome& o) {
    auto it = calls_.find(o.call());
    if (it == calls_.end() || !it->second.sent) {
      error_locked(make_error(errc::not_found,
                              "call " + std::to_string(o.call())
                                + " is not waiting for an outcome: "
                                  "answered before, timed out, or never "
                                  "sent"));
      return;
    }
    auto done = std::move(it->second.done);
    calls_.erase(it);
    --in_flight_;
    done(o.ok() ? sagas::step_result::success(o.output())
                : sagas::step_result::failure(
                  o.error().empty() ? "failed" : o.error(), o.retryable()));
  }

  /// Fails the calls whose time is up (sent or still queued).
  void expire_locked() {
    auto now = std::chrono::steady_clock::now();
    bool freed = false;
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      if (it->second.sent) {
        --in_flight_;
        freed = true;
      }
      auto done = std::move(it->second.done);
      auto name = std::move(it->second.participant);
      it = calls_.erase(it); // a later outcome is refused as unknown
      done(sagas::step_result::failure(
        "no outcome from participant '" + name + "' within "
        + std::to_string(call_timeout_.count()) + " ms"));
    }
    if (freed)
      write_locked();
  }

  void error_locked(const caf::error& err) {
    if (pending_.errors_size() < static_cast<int>(max_errors))
      to_api_error(err, pending_.add_errors());
  }

  void write_locked() {
    if (writing_ || !ready_ || closing_ || finished_)
      return;
    // The registration's confirmation goes alone, first.
    while (!pending_.has_registered() && !queue_.empty()
           && in_flight_ < concurrency_) {
      auto it = calls_.find(queue_.front().call());
      if (it != calls_.end()) { // else: timed out before it was sent
        it->second.sent = true;
        ++in_flight_;
        *pending_.add_calls() = std::move(queue_.front());
      }
      queue_.pop_front();
    }
    if (!pending_.has_registered() && pending_.calls_size() == 0
        && pending_.errors_size() == 0)
      return;
    out_.Swap(&pending_);
    writing_ = true;
    StartWrite(&out_);
  }

  void close_locked() {
    if (closing_)
      return;
    closing_ = true;
    // Calls waiting for an outcome fail now (retryable): the saga's
    // policy attempts them again, on this or another participant.
    auto open = std::move(calls_);
    calls_.clear();
    queue_.clear();
    in_flight_ = 0;
    for (auto& [id, c] : open)
      c.done(sagas::step_result::failure(
        "the participant's stream ended before its outcome"));
    if (thread_started_) {
      closed_cv_.notify_all();
      return;
    }
    stopped_ = true;
    if (start_error_)
      status_ = to_status(start_error_, ctx_);
    if (finishing_locked())
      finish_pending_ = true; // the reaction finishes once it unlocks
  }

  bool finishing_locked() {
    if (finished_ || !stopped_ || writing_)
      return false;
    finished_ = true;
    return true;
  }

  state_ptr st_;
  std::shared_ptr<stream_gate> gate_ = std::make_shared<stream_gate>();
  call_slot slot_;
  grpc::CallbackServerContext* ctx_;
  std::recursive_mutex mtx_;
  std::condition_variable_any closed_cv_;
  api::ParticipateRequest in_;
  api::ParticipantRegistration reg_;
  api::ParticipateResponse pending_, out_;
  struct open_call {
    std::function<void(sagas::step_result)> done;
    std::string participant;
    std::chrono::steady_clock::time_point deadline;
    bool sent = false; ///< written to the client (counted in in_flight_)
  };
  std::deque<api::StepCall> queue_; // calls not yet sent, in order
  std::map<uint64_t, open_call> calls_; // queued or sent, not answered
  uint64_t next_call_ = 1;
  uint32_t in_flight_ = 0;   // sent, not answered
  uint32_t concurrency_ = default_concurrency;
  std::chrono::milliseconds call_timeout_{5000};
  caf::error start_error_;
  grpc::Status status_ = grpc::Status::OK;
  bool registration_seen_ = false, thread_started_ = false, ready_ = false;
  bool reading_ = false, writing_ = false;
  bool finish_pending_ = false;
  bool closing_ = false, stopped_ = false, finished_ = false;
};

} // namespace

grpc::ServerBidiReactor<api::ParticipateRequest, api::ParticipateResponse>*
open_participate(const state_ptr& st, grpc::CallbackServerContext* ctx) {
  caf_thread_scope scope;
  call_slot slot;
  auto admitted = admit(st, ctx, slot);
  if (!admitted.ok())
    return new refused_stream<api::ParticipateRequest,
                              api::ParticipateResponse>(admitted);
  return new participate_stream(st, std::move(slot), ctx);
}

} // namespace edda::door
