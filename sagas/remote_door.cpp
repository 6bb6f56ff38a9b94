// participant_host over the client door: each worker thread holds one
// Participate stream, serves the calls it reads one after another and
// writes each outcome; after the stream ends it registers again every
// 500 ms until stopped. With host_options::batches (the default) the node
// may have 16 calls outstanding on a stream, which wait in the stream while
// the worker serves the one before (as the node port's batches); without,
// one at a time.
#include "sagas/remote_door.hpp"
#include "sagas/step_call.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/door_impl.hpp"

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace edda::sagas {

namespace {

namespace api = edda::api::v1;
using participate_stream
  = grpc::ClientReaderWriter<api::ParticipateRequest, api::ParticipateResponse>;

struct session {
  grpc::ClientContext ctx;
  std::unique_ptr<participate_stream> rw;
  std::mutex write_mtx;
  bool closed = false; // WritesDone sent or the stream ended

  bool write(const api::ParticipateRequest& q) {
    std::lock_guard<std::mutex> guard{write_mtx};
    return !closed && rw->Write(q);
  }
  void close() {
    std::lock_guard<std::mutex> guard{write_mtx};
    if (!closed) {
      closed = true;
      rw->WritesDone();
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
    // Calls may come with the confirmation: served by the caller.
    if (first.calls_size() > 0)
      serve(*s, first);
    return s;
  }

  void serve(session& s, const api::ParticipateResponse& x) {
    for (auto& c : x.calls()) {
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
      api::ParticipateRequest out;
      auto* o = out.mutable_outcome();
      o->set_call(c.call());
      o->set_ok(rep.ok());
      o->set_output(rep.output());
      o->set_error(rep.error());
      o->set_retryable(rep.retryable());
      if (!s.write(out))
        return; // the stream ended: the node fails the call, retryably
    }
    for (auto& e : x.errors())
      EDDA_DEBUG("participant_host", "an outcome was refused: " << e.message());
  }

  void run(size_t i, std::shared_ptr<session> s) {
    for (;;) {
      api::ParticipateResponse x;
      while (s->rw->Read(&x))
        serve(*s, x);
      {
        std::lock_guard<std::mutex> w{s->write_mtx};
        s->closed = true;
      }
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
