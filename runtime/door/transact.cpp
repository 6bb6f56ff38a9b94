// Transact: transactional messages for a producer group over a stream. A
// client::transaction_producer on the node's in-process connection joins
// the group (with every node of a cluster) and answers the node's
// check-backs by asking the client (its checker blocks on the producer's
// own thread until the client answers, or says unknown after
// txn.check_timeout less a margin); halves and ends go to the node
// without holding a thread, at most api.produce_window unanswered.
#include "door/door_impl.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/connection_impl.hpp"
#include "client/transaction_producer.hpp"

#include <condition_variable>
#include <deque>
#include <future>
#include <map>

namespace edda::door {

namespace {

constexpr size_t max_errors = 1000;
constexpr size_t max_batch = 256; // halves or ends per request to the node

client::txn_outcome from_api(api::Outcome o) {
  switch (o) {
    case api::COMMIT:
      return client::txn_outcome::commit;
    case api::ROLLBACK:
      return client::txn_outcome::rollback;
    default:
      return client::txn_outcome::unknown;
  }
}

api::Outcome to_api(client::txn_outcome o) {
  switch (o) {
    case client::txn_outcome::commit:
      return api::COMMIT;
    case client::txn_outcome::rollback:
      return api::ROLLBACK;
    default:
      return api::UNKNOWN;
  }
}

class transact_stream final
  : public grpc::ServerBidiReactor<api::TransactRequest,
                                   api::TransactResponse> {
public:
  transact_stream(state_ptr st, call_slot slot,
                  grpc::CallbackServerContext* ctx)
    : st_(std::move(st)), slot_(std::move(slot)), ctx_(ctx) {
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    reading_ = true;
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    caf_thread_scope scope;
    finish_on_exit<transact_stream> fin{this}; // after the lock below is released
    api::TransactRequest req;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      reading_ = false;
      if (finished_)
        return;
      if (!ok) {
        // The client sends no more: it leaves once what it sent is
        // answered (and written), unless it is gone altogether.
        read_done_ = true;
        if (inflight_ == 0)
          close_locked();
        return;
      }
      if (!registration_seen_) {
        registration_seen_ = true;
        if (!in_.has_register_()) {
          start_error_ = make_error(errc::invalid_argument,
                                    "the first request of Transact must "
                                    "register the producer group");
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
      req.Swap(&in_);
      // Each answered once the node answers the batch it goes in.
      auto half = [&](api::HalfRequest& h) {
        ++inflight_;
        halves_q_.emplace_back(h.ref(),
                               to_message(std::move(*h.mutable_record())));
      };
      auto end = [&](const api::EndRequest& e) {
        ++inflight_;
        ends_q_.emplace_back(e.txn_id(), from_api(e.outcome()));
      };
      if (req.has_half())
        half(*req.mutable_half());
      else if (req.has_end())
        end(req.end());
      else if (req.has_halves())
        for (auto& h : *req.mutable_halves()->mutable_halves())
          half(h);
      else if (req.has_ends())
        for (auto& e : req.ends().ends())
          end(e);
      if (closing_)
        fail_queued_locked();
    }
    pump();
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      if (req.has_answer()) {
        auto it = checks_.find(req.answer().check());
        if (it == checks_.end()) {
          error_locked(make_error(errc::not_found,
                                  "check " + std::to_string(req.answer().check())
                                    + " is not waiting for an answer: "
                                      "answered before or timed out"));
        } else {
          it->second.set_value(from_api(req.answer().outcome()));
          checks_.erase(it);
        }
      } else if (req.has_register_()) {
        error_locked(make_error(errc::invalid_argument,
                                "already registered: a later request is a "
                                "half, an end or an answer"));
      } else if (req.kind_case() == api::TransactRequest::KIND_NOT_SET) {
        error_locked(make_error(errc::invalid_argument,
                                "a request without a half, an end or an "
                                "answer"));
      }
      write_locked();
      read_more_locked();
      finish = finishing_locked();
    }
    if (finish)
      Finish(status_);
  }

  void OnWriteDone(bool ok) override {
    caf_thread_scope scope;
    finish_on_exit<transact_stream> fin{this}; // after the lock below is released
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      writing_ = false;
      out_.Clear();
      if (!ok) {
        gone_ = true; // the client is gone: nothing more is written
        close_locked();
      } else {
        write_locked();
      }
      read_more_locked();
      finish = finishing_locked();
    }
    if (finish)
      Finish(status_);
  }

  void OnCancel() override {
    caf_thread_scope scope;
    finish_on_exit<transact_stream> fin{this}; // after the lock below is released
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    gone_ = true;
    close_locked();
  }

  void OnDone() override {
    caf_thread_scope scope;
    delete this;
  }

private:
  friend struct finish_on_exit<transact_stream>;
  /// The stream's thread: join the group, serve until closed, leave.
  void run() {
    client::txn_producer_options o;
    o.group = reg_.group();
    o.client_id = reg_.client_id();
    o.check_after_ms = reg_.check_after_ms();
    auto p = client::transaction_producer::start(
      st_->node, o, [this](const client::txn_check& c) { return check(c); });
    {
      std::unique_lock<std::recursive_mutex> lock{mtx_};
      if (!p) {
        start_error_ = p.error();
      } else {
        producer_ = std::move(*p);
        auto* r = pending_.mutable_registered();
        r->set_group(o.group);
        r->set_client_id(producer_->client_id());
        ready_ = true;
        write_locked();
        read_more_locked();
        closed_cv_.wait(lock,
                        [this] { return closing_ && dispatching_ == 0; });
      }
    }
    // Leaves the group (its check-backs go to other members); halves and
    // ends still out are answered by the node on their own.
    std::unique_ptr<client::transaction_producer> leaving;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      leaving = std::move(producer_);
    }
    leaving.reset();
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      stopped_ = true;
      if (start_error_)
        status_ = to_status(start_error_, ctx_);
      finish = finishing_locked();
    }
    if (finish)
      Finish(status_); // the last thing this thread does with the stream
  }

  /// On the producer's thread: asks the client, waits for its answer.
  client::txn_outcome check(const client::txn_check& c) {
    std::future<client::txn_outcome> answer;
    uint64_t id = 0;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      if (closing_)
        return client::txn_outcome::unknown;
      id = next_check_++;
      api::Check k;
      k.set_check(id);
      k.set_txn_id(c.txn_id);
      to_record(c.msg, k.mutable_record());
      k.set_attempt(c.check);
      answer = checks_[id].get_future();
      *pending_.add_checks() = std::move(k);
      write_locked();
    }
    // Within the node's check timeout: a late answer would be lost.
    auto limit = std::chrono::milliseconds{std::max<int64_t>(
      500, static_cast<int64_t>(st_->settings.txn_check_timeout_ms) - 500)};
    if (answer.wait_for(limit) == std::future_status::ready)
      return answer.get();
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      // An answer may have come between the wait and the lock.
      if (answer.wait_for(std::chrono::seconds(0))
          != std::future_status::ready) {
        checks_.erase(id); // a later answer is refused as unknown
        // Not sent yet (the client does not read): not sent at all.
        auto* cs = pending_.mutable_checks();
        for (int i = 0; i < cs->size(); ++i)
          if (cs->Get(i).check() == id) {
            cs->DeleteSubrange(i, 1);
            break;
          }
      }
    }
    if (answer.wait_for(std::chrono::seconds(0)) == std::future_status::ready)
      return answer.get();
    return client::txn_outcome::unknown;
  }

  /// Sends what waits as one HalfBatch and one EndBatch (at most 256
  /// each), unless one of that kind is still out: under load the next batch
  /// is what arrived meanwhile.
  void pump() {
    std::vector<uint64_t> refs;
    std::vector<client::message> halves;
    std::vector<std::pair<std::string, client::txn_outcome>> ends;
    client::transaction_producer* p = nullptr;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      if (closing_ || !producer_)
        return;
      p = producer_.get();
      if (!halves_busy_ && !halves_q_.empty()) {
        while (!halves_q_.empty() && halves.size() < max_batch) {
          refs.push_back(halves_q_.front().first);
          halves.push_back(std::move(halves_q_.front().second));
          halves_q_.pop_front();
        }
        halves_busy_ = true;
      }
      if (!ends_busy_ && !ends_q_.empty()) {
        while (!ends_q_.empty() && ends.size() < max_batch) {
          ends.push_back(std::move(ends_q_.front()));
          ends_q_.pop_front();
        }
        ends_busy_ = true;
      }
      if (halves.empty() && ends.empty())
        return;
      ++dispatching_; // run() keeps the producer until these are sent
    }
    if (!halves.empty())
      p->store_halves_async(
        std::move(halves),
        [this, refs](std::vector<caf::expected<std::string>> rs) {
          on_halves(refs, rs);
        });
    if (!ends.empty()) {
      auto sent = ends;
      p->end_many_async(
        std::move(ends),
        [this, sent](std::vector<caf::expected<client::txn_result>> rs) {
          on_ends(sent, rs);
        });
    }
    std::lock_guard<std::recursive_mutex> guard{mtx_};
    --dispatching_;
    closed_cv_.notify_all();
  }

  void on_halves(const std::vector<uint64_t>& refs,
                 std::vector<caf::expected<std::string>>& rs) {
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      for (size_t i = 0; i < refs.size(); ++i) {
        --inflight_;
        auto* h = pending_.add_halves();
        h->set_ref(refs[i]);
        if (i < rs.size() && rs[i])
          h->set_txn_id(*rs[i]);
        else
          to_api_error(i < rs.size() ? rs[i].error()
                                     : make_error(errc::unavailable,
                                                  "no answer"),
                       h->mutable_error());
      }
      halves_busy_ = false;
      if (read_done_ && inflight_ == 0)
        close_locked(); // the client sent its last request: it leaves
      write_locked();
      read_more_locked();
      finish = finishing_locked();
    }
    if (finish)
      Finish(status_);
    else
      pump();
  }

  void on_ends(const std::vector<std::pair<std::string, client::txn_outcome>>& sent,
               std::vector<caf::expected<client::txn_result>>& rs) {
    bool finish = false;
    {
      std::lock_guard<std::recursive_mutex> guard{mtx_};
      for (size_t i = 0; i < sent.size(); ++i) {
        --inflight_;
        auto* e = pending_.add_ends();
        e->set_txn_id(sent[i].first);
        e->set_outcome(to_api(sent[i].second));
        if (i >= rs.size()) {
          to_api_error(make_error(errc::unavailable, "no answer"),
                       e->mutable_error());
        } else if (!rs[i]) {
          to_api_error(rs[i].error(), e->mutable_error());
        } else if (rs[i]->stored) {
          auto* st = e->mutable_stored();
          st->set_id(rs[i]->stored->id);
          st->set_topic(rs[i]->stored->topic);
          st->set_partition(rs[i]->stored->partition);
          st->set_offset(rs[i]->stored->offset);
        }
      }
      ends_busy_ = false;
      if (read_done_ && inflight_ == 0)
        close_locked(); // the client sent its last request: it leaves
      write_locked();
      read_more_locked();
      finish = finishing_locked();
    }
    if (finish)
      Finish(status_);
    else
      pump();
  }

  /// Halves and ends not yet sent when the stream closes: answered as not
  /// sent (nothing stored, nothing ended).
  void fail_queued_locked() {
    auto why = make_error(errc::unavailable, "the stream ended first; not sent");
    for (auto& [ref, m] : halves_q_) {
      --inflight_;
      auto* h = pending_.add_halves();
      h->set_ref(ref);
      to_api_error(why, h->mutable_error());
    }
    for (auto& [txn, outcome] : ends_q_) {
      --inflight_;
      auto* e = pending_.add_ends();
      e->set_txn_id(txn);
      e->set_outcome(to_api(outcome));
      to_api_error(why, e->mutable_error());
    }
    halves_q_.clear();
    ends_q_.clear();
  }

  void error_locked(const caf::error& err) {
    if (pending_.errors_size() < static_cast<int>(max_errors))
      to_api_error(err, pending_.add_errors());
  }

  /// Answers of this stream not yet written to the client.
  [[nodiscard]] uint64_t unanswered_locked() const {
    return inflight_ + static_cast<uint64_t>(pending_.halves_size())
           + static_cast<uint64_t>(pending_.ends_size())
           + static_cast<uint64_t>(out_.halves_size())
           + static_cast<uint64_t>(out_.ends_size());
  }

  void write_locked() {
    if (writing_ || !ready_ || gone_ || finished_)
      return;
    if (!pending_.has_registered() && pending_.halves_size() == 0
        && pending_.ends_size() == 0 && pending_.checks_size() == 0
        && pending_.errors_size() == 0)
      return;
    out_.Swap(&pending_);
    writing_ = true;
    StartWrite(&out_);
  }

  void read_more_locked() {
    if (reading_ || read_done_ || !ready_ || closing_ || finished_)
      return;
    if (unanswered_locked() >= st_->settings.api_produce_window)
      return; // flow control: the next request waits for answers
    reading_ = true;
    StartRead(&in_);
  }

  void close_locked() {
    if (closing_)
      return;
    closing_ = true;
    fail_queued_locked();
    pending_.clear_checks(); // unanswerable now: checked back later
    for (auto& [id, p] : checks_)
      p.set_value(client::txn_outcome::unknown); // asked again later
    checks_.clear();
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

  /// Once: left the group, every half and end answered, no write pending.
  bool finishing_locked() {
    if (finished_ || !stopped_ || writing_ || inflight_ > 0)
      return false;
    // Answers still to write go first, unless the client is gone.
    if (!gone_ && ready_
        && (pending_.halves_size() > 0 || pending_.ends_size() > 0
            || pending_.errors_size() > 0))
      return false;
    finished_ = true;
    return true;
  }

  state_ptr st_;
  call_slot slot_;
  grpc::CallbackServerContext* ctx_;
  std::recursive_mutex mtx_;
  std::condition_variable_any closed_cv_;
  api::TransactRequest in_;
  api::TransactRegistration reg_;
  api::TransactResponse pending_, out_;
  std::unique_ptr<client::transaction_producer> producer_;
  std::map<uint64_t, std::promise<client::txn_outcome>> checks_;
  uint64_t next_check_ = 1;
  uint64_t inflight_ = 0; // halves and ends the node has not answered
  uint32_t dispatching_ = 0; // being handed to the producer now
  std::deque<std::pair<uint64_t, client::message>> halves_q_; // not yet sent
  std::deque<std::pair<std::string, client::txn_outcome>> ends_q_;
  bool halves_busy_ = false, ends_busy_ = false; // a batch of each kind out
  caf::error start_error_;
  grpc::Status status_ = grpc::Status::OK;
  bool registration_seen_ = false, thread_started_ = false, ready_ = false;
  bool read_done_ = false, gone_ = false;
  bool reading_ = false, writing_ = false;
  bool finish_pending_ = false;
  bool closing_ = false, stopped_ = false, finished_ = false;
};

} // namespace

grpc::ServerBidiReactor<api::TransactRequest, api::TransactResponse>*
open_transact(const state_ptr& st, grpc::CallbackServerContext* ctx) {
  caf_thread_scope scope;
  call_slot slot;
  auto admitted = admit(st, ctx, slot);
  if (!admitted.ok())
    return new refused_stream<api::TransactRequest, api::TransactResponse>(
      admitted);
  return new transact_stream(st, std::move(slot), ctx);
}

} // namespace edda::door
