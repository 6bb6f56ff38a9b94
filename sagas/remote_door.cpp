// participant_host over the client door: each worker thread holds one
// Participate stream and serves the calls it reads one after another; a
// writer thread per stream sends the outcomes, those ready together in one
// request (StepOutcomes); after the stream ends it registers again every
// 500 ms until stopped. With host_options::batches (the default) the node
// may have 16 calls outstanding on a stream, which wait in the stream while
// the worker serves the one before (as the node port's batches); without,
// one at a time.
#include "sagas/remote_door.hpp"
#include "sagas/step_call.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/door_impl.hpp"

#include <algorithm>
#include <condition_variable>
#include <iterator>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace edda::sagas {

namespace {

namespace api = edda::api::v1;
using participate_stream
  = grpc::ClientReaderWriter<api::ParticipateRequest, api::ParticipateResponse>;

/// One Participate stream. The worker reads calls and serves them one after
/// another; a writer thread sends their outcomes: whatever is ready when it
/// is free goes in one request, so nothing finished waits for a later step
/// and under load many outcomes share a message.
struct session {
  grpc::ClientContext ctx;
  std::unique_ptr<participate_stream> rw;
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<api::StepOutcome> ready; // outcomes not yet written
  /// Outcomes per request, as the node said at registration (1: each
  /// alone, for a node that does not take StepOutcomes).
  size_t per_request = 1;
  bool leaving = false; // WritesDone once `ready` is written
  bool closed = false;  // WritesDone sent, or the stream ended
  std::thread writer;

  ~session() {
    stop_writer();
  }

  void start_writer() {
    writer = std::thread{[this] { write_loop(); }};
  }

  /// False once the stream is closing or closed: a call read now is not
  /// served (the node fails it, retryably).
  bool open() {
    std::lock_guard<std::mutex> guard{mtx};
    return !closed && !leaving;
  }

  /// False once the stream is closed: the node fails the call, retryably.
  bool push(api::StepOutcome o) {
    std::lock_guard<std::mutex> guard{mtx};
    if (closed || leaving)
      return false;
    ready.push_back(std::move(o));
    if (ready.size() == 1)
      cv.notify_one();
    return true;
  }

  /// Writes what is ready, then WritesDone: the node ends the stream.
  void close() {
    std::lock_guard<std::mutex> guard{mtx};
    leaving = true;
    cv.notify_one();
  }

  /// The stream ended (read to its end): nothing more is written.
  void stop_writer() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      closed = true;
      cv.notify_one();
    }
    if (writer.joinable())
      writer.join();
  }

private:
  void write_loop() {
    std::vector<api::StepOutcome> batch;
    std::unique_lock<std::mutex> lock{mtx};
    for (;;) {
      cv.wait(lock, [&] { return closed || leaving || !ready.empty(); });
      if (closed)
        return;
      if (ready.empty()) { // leaving, all written
        closed = true;
        lock.unlock();
        rw->WritesDone();
        return;
      }
      if (ready.size() <= per_request) {
        batch.swap(ready);
      } else { // the rest goes in the next request
        auto cut = ready.begin() + static_cast<std::ptrdiff_t>(per_request);
        batch.assign(std::make_move_iterator(ready.begin()),
                     std::make_move_iterator(cut));
        ready.erase(ready.begin(), cut);
      }
      lock.unlock();
      api::ParticipateRequest out;
      if (batch.size() == 1) {
        *out.mutable_outcome() = std::move(batch.front());
      } else {
        auto* all = out.mutable_outcomes()->mutable_outcomes();
        all->Reserve(static_cast<int>(batch.size()));
        for (auto& o : batch)
          *all->Add() = std::move(o);
      }
      batch.clear();
      bool ok = rw->Write(out);
      lock.lock();
      if (!ok) {
        closed = true; // the stream ended: the reader sees it too
        return;
      }
    }
  }
};
} // namespace

struct door_host::state {
  std::shared_ptr<client::door_link> link;
  std::map<std::string, step_function> handlers;
  host_options opts;
  std::atomic<uint64_t> served{0};
  std::mutex mtx;
  std::condition_variable cv;
  bool stopping = false;
  std::vector<std::shared_ptr<session>> current; // per worker
  std::vector<std::thread> workers;

  caf::expected<std::shared_ptr<session>> join() {
    auto s = std::make_shared<session>();
    link->prepare(s->ctx);
    s->rw = link->stub->Participate(&s->ctx);
    api::ParticipateRequest reg;
    for (auto& [name, fn] : handlers)
      reg.mutable_register_()->add_names(name);
    reg.mutable_register_()->set_client_id(opts.client_id);
    reg.mutable_register_()->set_concurrency(opts.batches ? 16 : 1);
    api::ParticipateResponse first;
    if (auto err = client::open_session(
          *link, s->ctx, *s->rw, reg, first,
          [](const api::ParticipateResponse& r) { return r.has_registered(); },
          "registration"))
      return err;
    s->per_request = std::max<size_t>(1, first.registered().max_outcomes());
    s->start_writer();
    // Calls may come with the confirmation: served by the caller.
    if (first.calls_size() > 0)
      serve(*s, first);
    return s;
  }

  void serve(session& s, const api::ParticipateResponse& x) {
    for (auto& c : x.calls()) {
      if (!s.open())
        return; // leaving: the node fails the rest, retryably, unrun
      auto h = handlers.find(c.command().participant());
      wire::v1::StepReply rep;
      if (h == handlers.end()) {
        rep.set_error("participant '" + c.command().participant()
                      + "' is not served here");
        rep.set_retryable(true);
      } else {
        rep = call_step(h->second, c.command());
        served++;
      }
      api::StepOutcome o;
      o.set_call(c.call());
      o.set_ok(rep.ok());
      o.set_output(std::move(*rep.mutable_output()));
      o.set_error(std::move(*rep.mutable_error()));
      o.set_retryable(rep.retryable());
      if (!s.push(std::move(o)))
        return; // the stream ended: the node fails the call, retryably
    }
    for (auto& e : x.errors())
      EDDA_WARN("participant_host", "the node at " << link->endpoint
                                                  << " refused an outcome: "
                                                  << e.message());
  }

  void run(size_t i, std::shared_ptr<session> s) {
    for (;;) {
      api::ParticipateResponse x;
      while (s->rw->Read(&x))
        serve(*s, x);
      s->stop_writer(); // a Write in progress returns: the stream ended
      auto st = s->rw->Finish();
      for (;;) {
        {
          std::unique_lock<std::mutex> guard{mtx};
          if (stopping)
            return;
          EDDA_WARN("participant_host", "the participate stream to "
                                          << link->endpoint << " ended ("
                                          << st.error_message()
                                          << "); registering again");
          if (cv.wait_for(guard, std::chrono::milliseconds(500),
                          [&] { return stopping; }))
            return;
        }
        auto again = join();
        std::lock_guard<std::mutex> guard{mtx};
        if (again) {
          s = *again;
          current[i] = s;
          if (stopping)
            s->close(); // read to its end, then leave
          break;
        }
      }
    }
  }
};

caf::expected<std::shared_ptr<door_host>>
door_host::start(std::shared_ptr<client::door_link> link,
                 std::map<std::string, step_function> handlers,
                 const host_options& opts) {
  auto st = std::make_shared<state>();
  st->link = std::move(link);
  st->handlers = std::move(handlers);
  st->opts = opts;
  std::shared_ptr<door_host> host{new door_host(st)};
  for (uint32_t i = 0; i < opts.workers; ++i) {
    auto s = st->join();
    if (!s)
      return s.error(); // the destructor stops the workers started
    std::lock_guard<std::mutex> guard{st->mtx};
    st->current.push_back(*s);
    st->workers.emplace_back([st, i, first = *s] { st->run(i, first); });
  }
  return host;
}

door_host::~door_host() {
  std::vector<std::shared_ptr<session>> all;
  {
    std::lock_guard<std::mutex> guard{st_->mtx};
    st_->stopping = true;
    st_->cv.notify_all();
    all = st_->current;
  }
  for (auto& s : all)
    s->close(); // leaves: the node ends the stream
  for (auto& t : st_->workers)
    t.join();
}

uint64_t door_host::served() const {
  return st_->served.load();
}

} // namespace edda::sagas
