// Consume: a group member whose deliveries go to the client over the
// stream and whose settlements (ack, retry, release) come back on it
// (client::consumer with deferred results, on the node's in-process
// connection). At most `window` deliveries are unsettled at the client;
// at most max(4 x window, 1024) more wait here: beyond that the consumer's
// thread waits for room (the partitions then stop delivering to this
// member, bounded by consumer.max_inflight per partition; what waits too
// long goes to another member after the consume timeout).
//
// One thread per stream subscribes, waits, and unsubscribes: consumer
// start and stop block, which gRPC's callback threads must not.
#include "door/door_impl.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/consumer.hpp"

#include <condition_variable>
#include <deque>
#include <system_error>
#include <thread>
#include <unordered_set>

namespace edda::door {

namespace {

constexpr uint32_t default_window = 256;
constexpr uint32_t max_window = 100000;
constexpr int max_per_response = 64;
constexpr size_t max_response_bytes = 1u << 20;
constexpr size_t max_errors = 1000;

class consume_stream final
  : public grpc::ServerBidiReactor<api::ConsumeRequest, api::ConsumeResponse> {
public:
  consume_stream(state_ptr st, call_slot slot, grpc::CallbackServerContext* ctx)
    : st_(std::move(st)), slot_(std::move(slot)), ctx_(ctx) {
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    reading_ = true;
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    caf_thread_scope scope;
    finish_on_exit<consume_stream> fin{this}; // after the lock below is released
    std::unique_lock<std::recursive_mutex> lock{mtx_};
    reading_ = false;
    if (finished_)
      return;
    if (!ok) {
      read_done_ = true;
      close_locked(); // the client ended its requests: it leaves the group
      return;
    }
    if (!subscribe_seen_) {
      subscribe_seen_ = true;
      if (!in_.has_subscribe()) {
        start_error_ = make_error(errc::invalid_argument,
                                  "the first request of Consume must be a "
                                  "subscribe");
        close_locked();
        return;
      }
      sub_ = in_.subscribe();
      window_ = sub_.window() == 0 ? default_window
                                   : std::min(sub_.window(), max_window);
      // Reading goes on once subscribed (run()).
      thread_started_ = true;
      if (auto err = start_stream_thread([this] { run(); })) {
        thread_started_ = false;
        start_error_ = std::move(err);
        close_locked();
      }
      return;
    }
    std::vector<client::settlement> batch;
    if (in_.has_settle()) {
      auto& s = in_.settle();
      auto take = [&](uint64_t n, client::consume_result r,
                      const std::string& why) {
        if (sent_.erase(n) == 0) {
          error_locked(make_error(errc::not_found,
                                  "delivery " + std::to_string(n)
                                    + " is not held by this stream: settled "
                                      "before, delivered again, or never "
                                      "sent"));
          return;
        }
        batch.push_back({n, r, why});
      };
      for (auto n : s.ack())
        take(n, client::consume_result::success, {});
      for (auto& r : s.retry())
        take(r.delivery(), client::consume_result::retry_later, r.reason());
      for (auto n : s.release())
        take(n, client::consume_result::release, {});
    } else {
      error_locked(make_error(errc::invalid_argument,
                              "already subscribed: a later request settles"));
    }
    auto* c = consumer_.get();
    lock.unlock();
    std::vector<uint64_t> unknown;
    if (c != nullptr && !batch.empty())
      unknown = c->settle(batch);
    lock.lock();
    for (auto n : unknown)
      error_locked(make_error(errc::not_found,
                              "delivery " + std::to_string(n)
                                + " came back to its group (not settled "
                                  "within the consume timeout)"));
    write_locked();
    if (!closing_ && !finished_) {
      reading_ = true;
      StartRead(&in_);
    }
  }

  void OnWriteDone(bool ok) override {
    caf_thread_scope scope;
    finish_on_exit<consume_stream> fin{this}; // after the lock below is released
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      writing_ = false;
      out_.Clear();
      if (!ok) {
        broken_ = true; // the client is gone
        close_locked();
      } else {
        write_locked();
      }
      finish = finishing_locked();
    }
    if (finish)
      Finish(status_);
  }

  void OnCancel() override {
    caf_thread_scope scope;
    finish_on_exit<consume_stream> fin{this}; // after the lock below is released
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    cancelled_ = true;
    close_locked();
  }

  void OnDone() override {
    caf_thread_scope scope;
    delete this;
  }

private:
  friend struct finish_on_exit<consume_stream>;
  /// The stream's thread: subscribe, serve until closed, unsubscribe.
  void run() {
    client::consumer_options o;
    o.group = sub_.group();
    o.topic = sub_.topic();
    o.expression = sub_.expression().empty() ? "*" : sub_.expression();
    o.mode = sub_.mode() == wire_mode_broadcast ? client::consume_mode::broadcast
                                                : client::consume_mode::clustering;
    o.from = sub_.from() == wire_from_latest ? client::consume_from::latest
                                             : client::consume_from::earliest;
    o.client_id = sub_.client_id();
    o.address = "door " + ctx_->peer();
    o.max_reconsume = sub_.max_reconsume();
    o.retry_delays_ms.assign(sub_.retry_delays_ms().begin(),
                             sub_.retry_delays_ms().end());
    o.request_timeout = std::chrono::seconds(10);
    o.allow_deferred = true; // settled by the client
    auto c = client::consumer::start(
      st_->node, o, [this](const client::received& r) { return deliver(r); });
    {
      std::unique_lock<std::recursive_mutex> lock{mtx_};
      if (!c) {
        start_error_ = c.error();
      } else {
        consumer_ = std::move(*c);
        auto* s = pending_.mutable_subscribed();
        s->set_group(o.group);
        s->set_topic(o.topic);
        s->set_client_id(consumer_->client_id());
        ready_ = true;
        EDDA_DEBUG("api", "consume stream " << ctx_->peer() << " joined "
                                            << o.group << " on " << o.topic);
        write_locked();
        if (!closing_) {
          reading_ = true;
          StartRead(&in_);
        }
        closed_cv_.wait(lock, [this] { return closing_; });
      }
    }
    if (consumer_)
      consumer_->stop(); // leaves the group; unsettled deliveries go back
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      stopped_ = true;
      ready_ = false;
      if (start_error_)
        status_ = to_status(start_error_, ctx_);
      finish = finishing_locked();
    }
    if (finish)
      Finish(status_); // the last thing this thread does with the stream
  }

  /// On the consumer's thread: queue the delivery for the client.
  client::consume_result deliver(const client::received& r) {
    std::unique_lock<std::recursive_mutex> guard{mtx_};
    if (r.replaces != 0 && queued_.erase(r.replaces) == 0)
      sent_.erase(r.replaces); // frees its place in the window
    // Room for it here once the client took what waits (a client that does
    // not settle holds this consumer, never this node's memory). Not taken
    // (delivered again after the consume timeout) if the stream closes.
    room_.wait(guard, [this] {
      return closing_ || queue_.size() < std::max<size_t>(4 * window_, 1024);
    });
    if (closing_)
      return client::consume_result::release;
    api::Delivery d;
    d.set_delivery(r.delivery);
    to_record(r.msg, d.mutable_record());
    d.set_partition(r.partition);
    d.set_offset(r.offset);
    d.set_reconsume_times(r.reconsume_times);
    d.set_born_ms(r.born_ms);
    d.set_stored_ms(r.stored_ms);
    d.set_last_error(r.last_error);
    d.set_from_retry(r.from_retry);
    queued_.insert(r.delivery);
    queue_.push_back(std::move(d));
    write_locked();
    return client::consume_result::deferred;
  }

  void error_locked(const caf::error& err) {
    if (pending_.errors_size() < static_cast<int>(max_errors))
      to_api_error(err, pending_.add_errors());
  }

  void write_locked() {
    if (writing_ || !ready_ || closing_ || finished_)
      return;
    size_t bytes = 0;
    // The subscription's confirmation goes alone, first.
    bool first = pending_.has_subscribed();
    while (!first && !queue_.empty() && sent_.size() < window_
           && pending_.deliveries_size() < max_per_response
           && bytes < max_response_bytes) {
      auto d = std::move(queue_.front());
      queue_.pop_front();
      if (queued_.erase(d.delivery()) == 0)
        continue; // superseded by a redelivery
      sent_.insert(d.delivery());
      bytes += d.record().body().size();
      *pending_.add_deliveries() = std::move(d);
    }
    room_.notify_all();
    if (!pending_.has_subscribed() && pending_.deliveries_size() == 0
        && pending_.errors_size() == 0)
      return;
    out_.Swap(&pending_);
    writing_ = true;
    StartWrite(&out_);
  }

  /// The client left (or must go): the stream's thread unsubscribes, then
  /// finishes; without a thread (no subscription) it finishes here.
  void close_locked() {
    if (closing_)
      return;
    closing_ = true;
    room_.notify_all(); // a delivery waiting for room is not taken
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

  static constexpr auto wire_mode_broadcast = edda::wire::v1::BROADCAST;
  static constexpr auto wire_from_latest = edda::wire::v1::LATEST;

  state_ptr st_;
  call_slot slot_;
  grpc::CallbackServerContext* ctx_;
  std::recursive_mutex mtx_;
  std::condition_variable_any closed_cv_;
  std::condition_variable_any room_; // deliver() waits for a place in queue_
  api::ConsumeRequest in_;
  api::Subscription sub_;
  api::ConsumeResponse pending_, out_;
  std::unique_ptr<client::consumer> consumer_;
  std::deque<api::Delivery> queue_;     // not yet sent to the client
  std::unordered_set<uint64_t> queued_; // numbers in queue_ still valid
  std::unordered_set<uint64_t> sent_;   // sent, not yet settled
  uint32_t window_ = default_window;
  caf::error start_error_;
  grpc::Status status_ = grpc::Status::OK;
  bool subscribe_seen_ = false, thread_started_ = false, ready_ = false;
  bool reading_ = false, writing_ = false, read_done_ = false;
  bool cancelled_ = false, broken_ = false, closing_ = false;
  bool finish_pending_ = false;
  bool stopped_ = false, finished_ = false;
};

} // namespace

grpc::ServerBidiReactor<api::ConsumeRequest, api::ConsumeResponse>*
open_consume(const state_ptr& st, grpc::CallbackServerContext* ctx) {
  caf_thread_scope scope;
  call_slot slot;
  auto admitted = admit(st, ctx, slot);
  if (!admitted.ok())
    return new refused_stream<api::ConsumeRequest, api::ConsumeResponse>(
      admitted);
  return new consume_stream(st, std::move(slot), ctx);
}

} // namespace edda::door
