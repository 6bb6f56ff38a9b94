// Produce: a stream of record batches in, per-record outcomes out, each
// once the node has stored the record durably (client::producer on the
// node's in-process connection: the same batching and routing as any C++
// producer).
#include "door/door_impl.hpp"

#include "base/errc.hpp"
#include "client/producer.hpp"

namespace edda::door {

namespace {

class produce_stream final
  : public grpc::ServerBidiReactor<api::ProduceRequest, api::ProduceResponse> {
public:
  produce_stream(state_ptr st, call_slot slot)
    : st_(std::move(st)),
      slot_(std::move(slot)),
      producer_(std::make_unique<client::producer>(
        st_->node, producer_opts(st_->settings))) {
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    reading_ = true;
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    caf_thread_scope scope;
    if (!ok) {
      bool finish = false;
      {
        std::lock_guard<std::recursive_mutex> guard{mtx_};
        reading_ = false;
        read_done_ = true;
        finish = finishing_locked();
      }
      if (finish)
        Finish(grpc::Status::OK);
      return;
    }
    uint64_t first = 0;
    api::ProduceRequest batch; // in_ may take the next request meanwhile
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      batch.Swap(&in_);
      reading_ = false;
      dispatching_ = true; // no next read before this batch is handed on
      first = next_ref_;
      next_ref_ += static_cast<uint64_t>(batch.records_size());
      inflight_ += static_cast<uint64_t>(batch.records_size());
    }
    auto n = static_cast<uint64_t>(batch.records_size());
    // Outside the lock: a record refused at once is answered inline.
    for (uint64_t i = 0; i < n; ++i) {
      auto m = to_message(std::move(*batch.mutable_records(static_cast<int>(i))));
      auto ref = first + i;
      producer_->send_async(std::move(m),
                           [this, ref](caf::expected<client::send_result> r) {
                             on_result(ref, std::move(r));
                           });
    }
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      dispatching_ = false;
      read_more_locked();
      finish = finishing_locked();
    }
    if (finish)
      Finish(grpc::Status::OK);
  }

  void OnWriteDone(bool ok) override {
    caf_thread_scope scope;
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      writing_ = false;
      written_ += static_cast<uint64_t>(out_.results_size());
      out_.Clear();
      if (!ok)
        broken_ = true; // the client is gone: its outcomes are lost with it
      else
        write_locked();
      read_more_locked();
      finish = finishing_locked();
    }
    if (finish)
      Finish(grpc::Status::OK);
  }

  void OnCancel() override {
    caf_thread_scope scope;
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      cancelled_ = true;
      finish = finishing_locked();
    }
    if (finish)
      Finish(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    caf_thread_scope scope;
    // Its teardown waits for the producer's actor: not on gRPC's thread.
    // (Without a thread to be had, it happens here, when `f` is dropped.)
    auto p = std::shared_ptr<client::producer>(std::move(producer_));
    (void) st_->in_background([p = std::move(p)]() mutable { p.reset(); });
    delete this;
  }

private:
  static client::producer_options producer_opts(const config::node_settings& s) {
    client::producer_options o;
    o.group = "api-producer";
    o.max_message_size = s.max_message_size;
    return o;
  }

  void on_result(uint64_t ref, caf::expected<client::send_result> r) {
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      inflight_--;
      auto* p = pending_.add_results();
      p->set_ref(ref);
      if (r) {
        p->set_id(std::move(r->id));
        p->set_topic(std::move(r->topic));
        p->set_partition(r->partition);
        p->set_offset(r->offset);
        p->set_delayed(r->delayed);
      } else {
        to_api_error(r.error(), p->mutable_error());
      }
      write_locked();
      read_more_locked();
      finish = finishing_locked();
    }
    if (finish)
      Finish(grpc::Status::OK);
  }

  /// Records of this stream not yet acknowledged to the client.
  [[nodiscard]] uint64_t unacknowledged_locked() const {
    return inflight_ + static_cast<uint64_t>(pending_.results_size())
           + static_cast<uint64_t>(out_.results_size());
  }

  void write_locked() {
    if (writing_ || finished_ || cancelled_ || broken_
        || pending_.results_size() == 0)
      return;
    out_.Swap(&pending_);
    writing_ = true;
    StartWrite(&out_);
  }

  void read_more_locked() {
    // (Records of one request reach the producer before the next request's:
    // per-key order across requests.)
    if (reading_ || dispatching_ || read_done_ || finished_ || cancelled_
        || broken_)
      return;
    if (unacknowledged_locked() >= st_->settings.api_produce_window)
      return; // flow control: the next request waits for acknowledgements
    reading_ = true;
    StartRead(&in_);
  }

  /// True once (the caller then calls Finish, outside the lock): every
  /// record answered and written (or the client gone), no read pending.
  bool finishing_locked() {
    if (finished_ || reading_ || writing_ || dispatching_ || inflight_ > 0)
      return false;
    bool gone = cancelled_ || broken_;
    if (!gone && !(read_done_ && pending_.results_size() == 0))
      return false;
    finished_ = true;
    return true;
  }

  state_ptr st_;
  call_slot slot_;
  std::unique_ptr<client::producer> producer_;
  std::recursive_mutex mtx_;
  api::ProduceRequest in_;
  api::ProduceResponse pending_; // outcomes not yet written
  api::ProduceResponse out_;     // the write in progress
  uint64_t next_ref_ = 0;
  uint64_t inflight_ = 0; // sent to the node, not yet answered
  uint64_t written_ = 0;
  bool reading_ = false, writing_ = false, read_done_ = false;
  bool dispatching_ = false;
  bool cancelled_ = false, broken_ = false, finished_ = false;
};

} // namespace

grpc::ServerBidiReactor<api::ProduceRequest, api::ProduceResponse>*
open_produce(const state_ptr& st, grpc::CallbackServerContext* ctx) {
  caf_thread_scope scope; // the producer spawns its actor here
  call_slot slot;
  auto admitted = admit(st, ctx, slot);
  if (!admitted.ok())
    return new refused_stream<api::ProduceRequest, api::ProduceResponse>(
      admitted);
  return new produce_stream(st, std::move(slot));
}

} // namespace edda::door
