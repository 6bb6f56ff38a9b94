// consumer over the client door: one Consume stream (opened again after it
// ends, every 500 ms until the node answers), read by the reader thread,
// handled one message at a time by the handler thread, which writes the
// settlements (one Settle per burst of handled messages).
#include "client/door_consumer.hpp"
#include "client/door_impl.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <map>
#include <thread>

namespace edda::client {

namespace {

using consume_stream
  = grpc::ClientReaderWriter<api::ConsumeRequest, api::ConsumeResponse>;

struct session {
  grpc::ClientContext ctx;
  std::unique_ptr<consume_stream> rw;
  std::mutex write_mtx; // one writer at a time
  bool closed = false;  // WritesDone sent or the stream ended: no more writes
  bool dead = false;    // ended (guarded by the state's mutex): the node put
                        // back what it had delivered on it

  bool write(const api::ConsumeRequest& q) {
    std::lock_guard<std::mutex> guard{write_mtx};
    return !closed && rw->Write(q);
  }
};

api::ConsumeRequest subscription(const consumer_options& o) {
  api::ConsumeRequest q;
  auto* s = q.mutable_subscribe();
  s->set_group(o.group);
  s->set_topic(o.topic);
  s->set_expression(o.expression);
  s->set_mode(o.mode == consume_mode::broadcast ? edda::wire::v1::BROADCAST
                                                : edda::wire::v1::CLUSTERING);
  s->set_from(o.from == consume_from::latest ? edda::wire::v1::LATEST
                                             : edda::wire::v1::EARLIEST);
  s->set_max_reconsume(o.max_reconsume);
  for (auto d : o.retry_delays_ms)
    s->add_retry_delays_ms(d);
  s->set_client_id(o.client_id);
  return q;
}

} // namespace

struct door_consumer::state {
  std::shared_ptr<door_link> link;
  consumer_options opts;
  handler h;
  std::atomic<uint64_t> delivered{0}, succeeded{0}, failed{0}, reconnects{0};

  std::mutex mtx;
  std::condition_variable cv;
  bool stopping = false;
  std::shared_ptr<session> current; // guarded by mtx
  struct item {
    std::shared_ptr<session> from;
    api::Delivery d;
  };
  std::deque<item> inbox; // read, not yet handled
  // Deferred or in the handler, by number, with the stream that numbered
  // them (numbers restart with each stream; only one stream is alive).
  std::map<uint64_t, std::shared_ptr<session>> held;
  std::shared_ptr<session> joining; // being subscribed: stop() cancels it
  std::thread reader, worker;

  /// `s` ended: what it delivered and was not settled is the node's again.
  void bury(const std::shared_ptr<session>& s) {
    std::lock_guard<std::mutex> guard{mtx};
    s->dead = true;
    for (auto it = held.begin(); it != held.end();)
      it = it->second == s ? held.erase(it) : std::next(it);
    for (auto it = inbox.begin(); it != inbox.end();)
      it = it->from == s ? inbox.erase(it) : std::next(it);
  }

  /// Opens a stream and subscribes; the subscription's error.
  caf::expected<std::shared_ptr<session>> subscribe() {
    auto s = std::make_shared<session>();
    link->prepare(s->ctx);
    {
      std::lock_guard<std::mutex> guard{mtx};
      if (stopping)
        return make_error(errc::unavailable, "the consumer is stopping");
      joining = s;
    }
    s->rw = link->stub->Consume(&s->ctx);
    api::ConsumeResponse first;
    auto err = open_session(
      *link, s->ctx, *s->rw, subscription(opts), first,
      [](const api::ConsumeResponse& r) { return r.has_subscribed(); },
      "subscription");
    if (err) {
      std::lock_guard<std::mutex> guard{mtx};
      joining = nullptr;
      return err;
    }
    // The stream is current from here; deliveries may come with the
    // confirmation.
    std::lock_guard<std::mutex> guard{mtx};
    joining = nullptr;
    current = s;
    for (auto& d : *first.mutable_deliveries())
      inbox.push_back({s, std::move(d)});
    cv.notify_all();
    return s;
  }

  void read_loop(std::shared_ptr<session> s) {
    for (;;) {
      api::ConsumeResponse resp;
      while (s->rw->Read(&resp)) {
        for (auto& e : resp.errors())
          EDDA_DEBUG("consumer", "a settlement was refused: " << e.message());
        std::lock_guard<std::mutex> guard{mtx};
        for (auto& d : *resp.mutable_deliveries())
          inbox.push_back({s, std::move(d)});
        cv.notify_all();
      }
      {
        std::lock_guard<std::mutex> w{s->write_mtx};
        s->closed = true;
      }
      auto st = s->rw->Finish();
      bury(s);
      {
        std::lock_guard<std::mutex> guard{mtx};
        if (stopping)
          return;
      }
      reconnects++; // lost: reconnecting (as over the node port)
      EDDA_WARN("consumer", opts.group << ": the consume stream to "
                                       << link->endpoint << " ended ("
                                       << st.error_message()
                                       << "); subscribing again");
      for (;;) {
        {
          std::unique_lock<std::mutex> guard{mtx};
          if (cv.wait_for(guard, std::chrono::milliseconds(500),
                          [&] { return stopping; }))
            return;
        }
        auto again = subscribe();
        if (again) {
          s = *again; // current now
          std::unique_lock<std::mutex> guard{mtx};
          if (stopping) {
            // stop() may have looked before it was current: leave now.
            guard.unlock();
            std::lock_guard<std::mutex> w{s->write_mtx};
            if (!s->closed) {
              s->closed = true;
              s->rw->WritesDone();
            }
          }
          break;
        }
        EDDA_DEBUG("consumer", "subscribing again: " << render(again.error()));
      }
    }
  }

  void handle_loop() {
    api::ConsumeRequest out;
    std::shared_ptr<session> out_for;
    auto send = [&] {
      if (out_for && out.has_settle())
        out_for->write(out);
      out.Clear();
      out_for = nullptr;
    };
    for (;;) {
      item it;
      {
        std::unique_lock<std::mutex> guard{mtx};
        if (inbox.empty() || stopping) {
          guard.unlock();
          send(); // the burst is over
          guard.lock();
        }
        cv.wait(guard, [&] { return stopping || !inbox.empty(); });
        if (stopping)
          return; // what is left goes back when the stream ends
        it = std::move(inbox.front());
        inbox.pop_front();
        if (it.from->dead)
          continue; // of a stream that ended: the node put it back
        if (opts.allow_deferred)
          held[it.d.delivery()] = it.from;
      }
      if (out_for && out_for != it.from)
        send();
      received r;
      r.msg = from_api(it.d.record());
      r.group = opts.group;
      r.partition = it.d.partition();
      r.offset = it.d.offset();
      r.reconsume_times = it.d.reconsume_times();
      r.born_ms = it.d.born_ms();
      r.stored_ms = it.d.stored_ms();
      r.last_error = it.d.last_error();
      r.from_retry = it.d.from_retry();
      if (opts.allow_deferred)
        r.delivery = it.d.delivery();
      consume_result res = consume_result::retry_later;
      std::string why = "handler asked to retry later";
      try {
        res = h(r);
      } catch (const std::exception& e) {
        why = std::string("handler threw: ") + e.what();
      } catch (...) {
        why = "handler threw a non-standard exception";
      }
      if (res == consume_result::deferred) {
        if (opts.allow_deferred)
          continue; // settled later (consumer::settle)
        res = consume_result::retry_later;
        why = "the handler deferred without consumer_options::allow_deferred";
      }
      if (opts.allow_deferred) {
        std::lock_guard<std::mutex> guard{mtx};
        auto h = held.find(it.d.delivery());
        if (h != held.end() && h->second == it.from)
          held.erase(h);
      }
      out_for = it.from;
      add(out, it.d.delivery(), res, why);
      if (out.settle().ack_size() + out.settle().retry_size()
            + out.settle().release_size()
          >= 64)
        send();
    }
  }

  void add(api::ConsumeRequest& out, uint64_t number, consume_result res,
           const std::string& why) {
    auto* s = out.mutable_settle();
    if (res == consume_result::release) {
      s->add_release(number); // not taken: delivered again later
      return;
    }
    delivered++;
    if (res == consume_result::success) {
      succeeded++;
      s->add_ack(number);
    } else {
      failed++;
      auto* r = s->add_retry();
      r->set_delivery(number);
      r->set_reason(why);
    }
  }
};

caf::expected<std::shared_ptr<door_consumer>>
door_consumer::start(std::shared_ptr<door_link> link,
                     const consumer_options& opts, handler h) {
  auto st = std::make_shared<state>();
  st->link = std::move(link);
  st->opts = opts;
  st->h = std::move(h);
  auto s = st->subscribe();
  if (!s)
    return s.error();
  st->reader = std::thread{[st, first = *s] { st->read_loop(first); }};
  st->worker = std::thread{[st] { st->handle_loop(); }};
  return std::shared_ptr<door_consumer>{new door_consumer(st)};
}

door_consumer::~door_consumer() {
  stop();
}

namespace {

/// Joins `t`, or lets it end on its own when this is `t` (a handler that
/// stops its own consumer).
void join_or_detach(std::thread& t) {
  if (!t.joinable())
    return;
  if (t.get_id() == std::this_thread::get_id())
    t.detach();
  else
    t.join();
}

} // namespace

void door_consumer::stop() {
  std::shared_ptr<session> s;
  {
    std::lock_guard<std::mutex> guard{st_->mtx};
    if (st_->stopping)
      return;
    st_->stopping = true;
    st_->cv.notify_all();
    if (st_->joining)
      st_->joining->ctx.TryCancel(); // a subscription waiting for its answer
  }
  join_or_detach(st_->worker); // after the message in hand, its settlement
  {
    std::lock_guard<std::mutex> guard{st_->mtx};
    s = st_->current;
  }
  if (s) {
    std::lock_guard<std::mutex> w{s->write_mtx};
    if (!s->closed) {
      s->closed = true;
      s->rw->WritesDone(); // leaves the group; the node ends the stream
    }
  }
  join_or_detach(st_->reader);
  std::lock_guard<std::mutex> guard{st_->mtx};
  st_->inbox.clear();
  st_->held.clear();
}

std::vector<uint64_t>
door_consumer::settle(const std::vector<settlement>& batch) {
  std::vector<uint64_t> unknown;
  api::ConsumeRequest out;
  std::shared_ptr<session> s;
  {
    std::lock_guard<std::mutex> guard{st_->mtx};
    s = st_->current;
    for (auto& x : batch) {
      auto h = st_->held.find(x.delivery);
      if (st_->stopping || x.result == consume_result::deferred
          || h == st_->held.end() || h->second != s || s->dead) {
        unknown.push_back(x.delivery);
        continue;
      }
      st_->held.erase(h);
      st_->add(out, x.delivery, x.result,
               x.reason.empty() ? "the application asked to retry later"
                                : x.reason);
    }
  }
  if (s && out.has_settle())
    s->write(out);
  return unknown;
}

consumer_counters door_consumer::counters() const {
  consumer_counters c;
  c.delivered = st_->delivered;
  c.succeeded = st_->succeeded;
  c.failed = st_->failed;
  c.reconnects = st_->reconnects;
  return c;
}

} // namespace edda::client
