// producer over the client door: one Produce stream at a time, written by
// the producer's writer thread (up to max_batch records per request), read
// by the stream's reader thread, which runs the callbacks.
#include "client/door_impl.hpp"
#include "client/door_producer.hpp"

#include "base/errc.hpp"

#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <thread>

namespace edda::client {

namespace {

using clock_type = std::chrono::steady_clock;

struct written {
  producer::callback cb;
  clock_type::time_point deadline;
};

struct produce_stream {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<api::ProduceRequest,
                                           api::ProduceResponse>>
    rw;
  uint64_t next_ref = 0;
  std::map<uint64_t, written> pending; // written, no outcome yet
  bool broken = false;                 // no more writes
  bool writing = false;                // the writer is in Write()
  bool finished = false;               // the reader is done
  bool answered = false;               // any outcome came back
  caf::error why;                      // why it ended (once finished)
  std::thread reader;
};

} // namespace

struct door_producer::state {
  std::shared_ptr<door_link> link;
  producer_options opts;
  std::mutex mtx;
  std::condition_variable cv;
  struct queued {
    api::Record rec;
    producer::callback cb;
  };
  std::deque<queued> queue;
  uint64_t outstanding = 0; // queued or written, callback not yet run
  bool stopping = false;
  std::shared_ptr<produce_stream> current;
  std::list<std::shared_ptr<produce_stream>> streams; // readers to join

  /// The reader of `s`: outcomes to their callbacks; at the end, everything
  /// still unanswered fails (it may or may not have been stored).
  void read(const std::shared_ptr<produce_stream>& s) {
    api::ProduceResponse resp;
    while (s->rw->Read(&resp)) {
      std::vector<std::pair<producer::callback, caf::expected<send_result>>>
        done;
      {
        std::lock_guard<std::mutex> guard{mtx};
        s->answered = true;
        for (auto& p : resp.results()) {
          auto it = s->pending.find(p.ref());
          if (it == s->pending.end())
            continue; // timed out meanwhile: its caller was told
          if (p.has_error()) {
            done.emplace_back(std::move(it->second.cb), from_api(p.error()));
          } else {
            send_result r;
            r.id = p.id();
            r.topic = p.topic();
            r.partition = p.partition();
            r.offset = p.offset();
            r.delayed = p.delayed();
            done.emplace_back(std::move(it->second.cb), std::move(r));
          }
          s->pending.erase(it);
        }
      }
      settle(done);
    }
    std::unique_lock<std::mutex> guard{mtx};
    s->broken = true;
    s->ctx.TryCancel(); // a Write blocked on flow control returns
    cv.wait(guard, [&] { return !s->writing; });
    guard.unlock();
    auto st = s->rw->Finish();
    auto why = st.ok() ? make_error(errc::unavailable, "the node ended the "
                                                       "stream")
                       : from_status(st, s->ctx, "produce stream");
    guard.lock();
    // Refused before any answer with a code of edda's (a wrong token, a cap
    // on calls, ...): the node took nothing from this stream.
    bool refused = !s->answered && !st.ok()
                   && code_of(why) != errc::unavailable
                   && code_of(why) != errc::timeout;
    std::vector<std::pair<producer::callback, caf::expected<send_result>>>
      done;
    for (auto& [ref, w] : s->pending)
      done.emplace_back(
        std::move(w.cb),
        refused ? why
                : make_error(errc::unavailable,
                             "the produce stream to " + link->endpoint
                               + " ended before the node answered ("
                               + render(why)
                               + "); the message may or may not have been "
                                 "stored"));
    s->pending.clear();
    s->why = why;
    s->finished = true;
    cv.notify_all();
    guard.unlock();
    settle(done);
  }

  void settle(std::vector<std::pair<producer::callback,
                                    caf::expected<send_result>>>& done) {
    for (auto& [cb, r] : done)
      if (cb)
        cb(std::move(r));
    if (done.empty())
      return;
    std::lock_guard<std::mutex> guard{mtx};
    outstanding -= done.size();
    cv.notify_all();
  }

  /// Fails what waited past opts.timeout on `s` (refs are written in order,
  /// so the oldest come first). Called with mtx held; returns the failures.
  std::vector<std::pair<producer::callback, caf::expected<send_result>>>
  expire(produce_stream& s) {
    std::vector<std::pair<producer::callback, caf::expected<send_result>>>
      done;
    auto now = clock_type::now();
    while (!s.pending.empty() && s.pending.begin()->second.deadline <= now) {
      done.emplace_back(std::move(s.pending.begin()->second.cb),
                        make_error(errc::timeout,
                                   "no answer from " + link->endpoint
                                     + " within "
                                     + std::to_string(opts.timeout.count())
                                     + " ms; the message may or may not "
                                       "have been stored"));
      s.pending.erase(s.pending.begin());
    }
    return done;
  }

  void write_loop() {
    std::unique_lock<std::mutex> guard{mtx};
    for (;;) {
      cv.wait_for(guard, std::chrono::milliseconds(100),
                  [&] { return stopping || !queue.empty(); });
      if (current) {
        auto late = expire(*current);
        if (!late.empty()) {
          guard.unlock();
          settle(late);
          guard.lock();
        }
      }
      join_finished(guard);
      if (queue.empty()) {
        if (stopping)
          break;
        continue;
      }
      if (!current || current->broken) {
        auto s = std::make_shared<produce_stream>();
        link->prepare(s->ctx);
        guard.unlock();
        s->rw = link->stub->Produce(&s->ctx);
        s->reader = std::thread{[this, s] { read(s); }};
        guard.lock();
        current = s;
        streams.push_back(s);
      }
      auto s = current;
      if (s->broken) {
        // Ended before anything was written on it (refused, or the node is
        // down): what waits fails with that reason; nothing was sent.
        cv.wait(guard, [&] { return s->finished; });
        std::vector<std::pair<producer::callback, caf::expected<send_result>>>
          failed;
        auto why = s->why;
        if (code_of(why) == errc::unavailable)
          why = make_error(errc::unavailable,
                           "no produce stream to " + link->endpoint + " ("
                             + render(why) + "); not sent");
        for (; !queue.empty(); queue.pop_front())
          failed.emplace_back(std::move(queue.front().cb), why);
        guard.unlock();
        settle(failed);
        guard.lock();
        continue;
      }
      api::ProduceRequest req;
      auto deadline = clock_type::now() + opts.timeout;
      while (!queue.empty()
             && static_cast<size_t>(req.records_size()) < opts.max_batch) {
        *req.add_records() = std::move(queue.front().rec);
        s->pending.emplace(s->next_ref++,
                           written{std::move(queue.front().cb), deadline});
        queue.pop_front();
      }
      s->writing = true;
      guard.unlock();
      bool ok = s->rw->Write(req);
      guard.lock();
      s->writing = false;
      if (!ok)
        s->broken = true; // the reader fails what it did not answer
      cv.notify_all();
    }
    // Stopping: nothing is queued or outstanding (the destructor flushed).
    if (current && !current->broken) {
      auto s = current;
      s->writing = true;
      guard.unlock();
      s->rw->WritesDone();
      guard.lock();
      s->writing = false;
      cv.notify_all();
    }
    auto all = streams;
    guard.unlock();
    for (auto& s : all)
      if (s->reader.joinable())
        s->reader.join();
  }

  void join_finished(std::unique_lock<std::mutex>& guard) {
    for (auto it = streams.begin(); it != streams.end();) {
      if ((*it)->finished && *it != current) {
        auto s = *it;
        it = streams.erase(it);
        guard.unlock();
        s->reader.join();
        guard.lock();
      } else {
        ++it;
      }
    }
  }
};

door_producer::door_producer(std::shared_ptr<door_link> link,
                             producer_options opts)
  : st_(std::make_shared<state>()) {
  st_->link = std::move(link);
  st_->opts = std::move(opts);
  if (st_->opts.max_batch == 0)
    st_->opts.max_batch = 1;
  writer_ = std::thread{[st = st_] { st->write_loop(); }};
}

door_producer::~door_producer() {
  flush();
  {
    std::lock_guard<std::mutex> guard{st_->mtx};
    st_->stopping = true;
    st_->cv.notify_all();
  }
  writer_.join();
}

void door_producer::send_async(message m, producer::callback cb) {
  std::lock_guard<std::mutex> guard{st_->mtx};
  st_->queue.push_back({to_api(m), std::move(cb)});
  ++st_->outstanding;
  st_->cv.notify_all();
}

void door_producer::flush() {
  std::unique_lock<std::mutex> guard{st_->mtx};
  st_->cv.wait(guard, [&] { return st_->outstanding == 0; });
}

} // namespace edda::client
