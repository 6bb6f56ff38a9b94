// transaction_producer over the client door: one Transact stream (joined
// again every 500 ms after it ends). A writer thread sends what waits (the
// halves together, the ends together), the reader thread hands answers to
// their waiters and check-backs to the checker thread, which answers them
// and also fails waiters past the timeout. Local transactions of the
// pipelined form run on the reader thread.
#include "client/door_impl.hpp"
#include "client/door_transactions.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

namespace edda::client {

namespace {

using clock_type = std::chrono::steady_clock;
using transact_stream
  = grpc::ClientReaderWriter<api::TransactRequest, api::TransactResponse>;
using half_done = std::function<void(caf::expected<std::string>)>;
using end_done = std::function<void(caf::expected<txn_result>)>;

struct session {
  grpc::ClientContext ctx;
  std::unique_ptr<transact_stream> rw;
  // Guarded by the state's mutex:
  std::map<uint64_t, std::pair<half_done, clock_type::time_point>> halves;
  std::multimap<std::string, std::pair<end_done, clock_type::time_point>>
    ends;
  bool broken = false;  // ended: nothing more is written
  bool writing = false; // the writer is in Write()
};

api::Outcome to_api(txn_outcome x) {
  return x == txn_outcome::commit ? api::COMMIT
         : x == txn_outcome::rollback ? api::ROLLBACK
                                      : api::UNKNOWN;
}

/// An end's answer, as transaction_producer::end returns it: the node's
/// refusal (unknown_txn, txn_conflict, ...) is the error.
caf::expected<txn_result> ended(const api::Ended& e) {
  if (e.has_error())
    return from_api(e.error());
  txn_result r;
  r.txn_id = e.txn_id();
  r.ended = true;
  if (e.has_stored()) {
    send_result s;
    s.id = e.stored().id();
    s.topic = e.stored().topic();
    s.partition = e.stored().partition();
    s.offset = e.stored().offset();
    s.delayed = e.stored().delayed();
    r.stored = s;
  }
  return r;
}

} // namespace

struct door_transactions::state {
  std::shared_ptr<door_link> link;
  txn_producer_options opts;
  txn_checker checker;
  std::atomic<uint64_t> answered{0};

  std::mutex mtx;
  std::condition_variable cv;
  bool stopping = false;
  std::shared_ptr<session> current;
  uint64_t next_ref = 0;
  std::deque<api::HalfRequest> out_halves; // for `current`, not written
  std::deque<api::EndRequest> out_ends;
  // Check numbers restart with each stream: a check and its answer belong
  // to the stream that asked.
  std::deque<std::pair<std::shared_ptr<session>, api::CheckAnswer>>
    out_answers;
  std::deque<std::pair<std::shared_ptr<session>, api::Check>> checks;
  uint64_t pipelined = 0; // send_in_transaction_async without result
  std::shared_ptr<session> joining; // being registered: stopping cancels it
  bool writer_done = false; // the timer runs until the writer left
  std::thread reader, writer, checking, timer;

  /// Registers on a new stream, which is `current` once confirmed.
  caf::expected<std::shared_ptr<session>> join_group() {
    auto s = std::make_shared<session>();
    link->prepare(s->ctx);
    {
      std::lock_guard<std::mutex> guard{mtx};
      if (stopping)
        return make_error(errc::unavailable, "the producer is stopping");
      joining = s;
    }
    s->rw = link->stub->Transact(&s->ctx);
    api::TransactRequest reg;
    reg.mutable_register_()->set_group(opts.group);
    reg.mutable_register_()->set_client_id(opts.client_id);
    reg.mutable_register_()->set_check_after_ms(opts.check_after_ms);
    api::TransactResponse first;
    auto err = open_session(
      *link, s->ctx, *s->rw, reg, first,
      [](const api::TransactResponse& r) { return r.has_registered(); },
      "registration");
    if (err) {
      std::lock_guard<std::mutex> guard{mtx};
      joining = nullptr;
      return err;
    }
    {
      std::lock_guard<std::mutex> guard{mtx};
      joining = nullptr;
      current = s;
      cv.notify_all();
    }
    take(s, first);
    return s;
  }

  /// Answers and check-backs of a response of `s`.
  void take(const std::shared_ptr<session>& s, api::TransactResponse& x) {
    std::vector<std::pair<half_done, caf::expected<std::string>>> hs;
    std::vector<std::pair<end_done, api::Ended>> es;
    {
      std::lock_guard<std::mutex> guard{mtx};
      for (auto& h : x.halves()) {
        auto it = s->halves.find(h.ref());
        if (it == s->halves.end())
          continue; // timed out meanwhile
        if (h.has_error())
          hs.emplace_back(std::move(it->second.first), from_api(h.error()));
        else
          hs.emplace_back(std::move(it->second.first), h.txn_id());
        s->halves.erase(it);
      }
      for (auto& e : x.ends()) {
        auto it = s->ends.find(e.txn_id());
        if (it == s->ends.end())
          continue;
        es.emplace_back(std::move(it->second.first), e);
        s->ends.erase(it);
      }
      for (auto& c : *x.mutable_checks())
        checks.emplace_back(s, std::move(c));
      for (auto& e : x.errors())
        EDDA_DEBUG("txn_producer", "an answer was refused: " << e.message());
      cv.notify_all();
    }
    for (auto& [f, r] : hs)
      f(std::move(r));
    for (auto& [f, e] : es)
      f(ended(e)); // the caller sets `local`
  }

  void read_loop(std::shared_ptr<session> s) {
    for (;;) {
      api::TransactResponse x;
      while (s->rw->Read(&x))
        take(s, x);
      fail(s);
      for (;;) {
        {
          std::unique_lock<std::mutex> guard{mtx};
          if (cv.wait_for(guard, std::chrono::milliseconds(500),
                          [&] { return stopping; }))
            return;
        }
        auto again = join_group();
        if (again) {
          s = *again; // current now
          break;    // (stopping meanwhile: the writer leaves on it)
        }
        EDDA_DEBUG("txn_producer", "joining again: " << render(again.error()));
      }
    }
  }

  /// `s` ended: its waiters fail (a stored half or an end may have been
  /// recorded: check-back settles the transaction).
  void fail(const std::shared_ptr<session>& s) {
    std::unique_lock<std::mutex> guard{mtx};
    s->broken = true;
    s->ctx.TryCancel();
    cv.wait(guard, [&] { return !s->writing; });
    guard.unlock();
    auto st = s->rw->Finish();
    auto why = render(st.ok() ? make_error(errc::unavailable, "stream ended")
                              : from_status(st, s->ctx, "transact stream"));
    guard.lock();
    auto halves = std::move(s->halves);
    auto ends = std::move(s->ends);
    s->halves.clear();
    s->ends.clear();
    if (current == s) {
      out_halves.clear(); // their waiters are in `halves`
      out_ends.clear();
    }
    auto mine = [&](const auto& x) { return x.first == s; };
    out_answers.erase(
      std::remove_if(out_answers.begin(), out_answers.end(), mine),
      out_answers.end());
    checks.erase(std::remove_if(checks.begin(), checks.end(), mine),
                 checks.end());
    cv.notify_all();
    guard.unlock();
    for (auto& [ref, h] : halves)
      h.first(make_error(errc::unavailable,
                         "the transact stream to " + link->endpoint
                           + " ended before the half message was answered ("
                           + why + "); it may or may not have been stored "
                                   "(a check-back settles it)"));
    for (auto& [id, e] : ends)
      e.first(make_error(errc::unavailable,
                         "the transact stream to " + link->endpoint
                           + " ended before the end was answered (" + why
                           + "); the outcome is left to check-back"));
  }

  void write_loop() {
    std::unique_lock<std::mutex> guard{mtx};
    for (;;) {
      auto done = [&] {
        // Stopping, and nothing left to write or to be answered.
        return stopping && pipelined == 0 && out_halves.empty()
               && out_ends.empty()
               && (!current || current->broken
                   || (current->halves.empty() && current->ends.empty()));
      };
      cv.wait(guard, [&] {
        return done()
               || (current && !current->broken
                   && (!out_halves.empty() || !out_ends.empty()
                       || !out_answers.empty()));
      });
      if (done())
        break;
      if (!current || current->broken)
        continue;
      auto s = current;
      std::vector<api::TransactRequest> qs;
      if (!out_halves.empty()) {
        api::TransactRequest q;
        for (; !out_halves.empty() && q.halves().halves_size() < 256;
             out_halves.pop_front())
          *q.mutable_halves()->add_halves() = std::move(out_halves.front());
        qs.push_back(std::move(q));
      }
      if (!out_ends.empty()) {
        api::TransactRequest q;
        for (; !out_ends.empty() && q.ends().ends_size() < 256;
             out_ends.pop_front())
          *q.mutable_ends()->add_ends() = std::move(out_ends.front());
        qs.push_back(std::move(q));
      }
      for (; !out_answers.empty(); out_answers.pop_front()) {
        if (out_answers.front().first != s)
          continue; // asked on a stream that ended
        api::TransactRequest q;
        *q.mutable_answer() = out_answers.front().second;
        qs.push_back(std::move(q));
      }
      s->writing = true;
      guard.unlock();
      bool ok = true;
      for (auto& q : qs)
        ok = ok && s->rw->Write(q);
      guard.lock();
      s->writing = false;
      if (!ok)
        s->broken = true; // the reader fails the waiters
      cv.notify_all();
    }
    // Leaving the group: the node answers what it owes, then ends.
    if (current && !current->broken) {
      auto s = current;
      s->writing = true;
      guard.unlock();
      s->rw->WritesDone();
      guard.lock();
      s->writing = false;
    }
    writer_done = true;
    cv.notify_all();
  }

  /// Fails waiters past the timeout (its own thread: never blocked by I/O
  /// or the application's checker).
  void timer_loop() {
    std::unique_lock<std::mutex> guard{mtx};
    while (!writer_done) {
      cv.wait_for(guard, std::chrono::milliseconds(100));
      expire(guard);
    }
  }

  /// Check-backs to the checker.
  void check_loop() {
    std::unique_lock<std::mutex> guard{mtx};
    while (!stopping || !checks.empty()) {
      cv.wait(guard, [&] { return stopping || !checks.empty(); });
      while (!checks.empty()) {
        auto s = std::move(checks.front().first);
        auto c = std::move(checks.front().second);
        checks.pop_front();
        guard.unlock();
        txn_check q;
        q.txn_id = c.txn_id();
        q.msg = from_api(c.record());
        q.check = c.attempt();
        txn_outcome x = txn_outcome::unknown;
        try {
          x = checker(q);
        } catch (const std::exception& e) {
          EDDA_WARN("txn_producer", "checker threw for " << q.txn_id << ": "
                                      << e.what() << " (answered unknown)");
        } catch (...) {
          EDDA_WARN("txn_producer", "checker threw for " << q.txn_id
                                      << " (answered unknown)");
        }
        guard.lock();
        if (s == current && !s->broken) {
          api::CheckAnswer a;
          a.set_check(c.check());
          a.set_outcome(to_api(x));
          out_answers.emplace_back(s, a);
          answered++;
          cv.notify_all();
        }
      }
    }
  }

  void expire(std::unique_lock<std::mutex>& guard) {
    auto s = current;
    if (!s)
      return;
    auto now = clock_type::now();
    std::vector<half_done> hs;
    std::vector<end_done> es;
    for (auto it = s->halves.begin(); it != s->halves.end();)
      if (it->second.second <= now) {
        hs.push_back(std::move(it->second.first));
        it = s->halves.erase(it);
      } else {
        ++it;
      }
    for (auto it = s->ends.begin(); it != s->ends.end();)
      if (it->second.second <= now) {
        es.push_back(std::move(it->second.first));
        it = s->ends.erase(it);
      } else {
        ++it;
      }
    if (hs.empty() && es.empty())
      return;
    guard.unlock();
    auto ms = std::to_string(opts.timeout.count());
    for (auto& h : hs)
      h(make_error(errc::timeout,
                   "no answer to the half message within " + ms
                     + " ms; it may or may not have been stored (a "
                       "check-back settles it)"));
    for (auto& e : es)
      e(make_error(errc::timeout, "no answer to the end within " + ms
                                    + " ms; the outcome is left to "
                                      "check-back"));
    guard.lock();
  }

  void store_half(const message& m, half_done done) {
    std::unique_lock<std::mutex> guard{mtx};
    auto s = current;
    if (!s || s->broken) {
      guard.unlock();
      done(make_error(errc::unavailable, "no transact stream to "
                                           + link->endpoint
                                           + " (joining the group again)"));
      return;
    }
    api::HalfRequest h;
    h.set_ref(next_ref++);
    *h.mutable_record() = client::to_api(m);
    s->halves.emplace(h.ref(), std::make_pair(std::move(done),
                                              clock_type::now()
                                                + opts.timeout));
    out_halves.push_back(std::move(h));
    cv.notify_all();
  }

  void send_end(const std::string& txn_id, txn_outcome x, end_done done) {
    std::unique_lock<std::mutex> guard{mtx};
    auto s = current;
    if (!s || s->broken) {
      guard.unlock();
      done(make_error(errc::unavailable,
                      "no transact stream to " + link->endpoint
                        + "; the outcome is left to check-back"));
      return;
    }
    api::EndRequest e;
    e.set_txn_id(txn_id);
    e.set_outcome(to_api(x));
    s->ends.emplace(txn_id, std::make_pair(std::move(done),
                                           clock_type::now() + opts.timeout));
    out_ends.push_back(std::move(e));
    cv.notify_all();
  }
};

caf::expected<std::shared_ptr<door_transactions>>
door_transactions::start(std::shared_ptr<door_link> link,
                         const txn_producer_options& opts,
                         txn_checker checker) {
  auto st = std::make_shared<state>();
  st->link = std::move(link);
  st->opts = opts;
  st->checker = std::move(checker);
  auto s = st->join_group();
  if (!s)
    return s.error();
  st->reader = std::thread{[st, first = *s] { st->read_loop(first); }};
  st->writer = std::thread{[st] { st->write_loop(); }};
  st->checking = std::thread{[st] { st->check_loop(); }};
  st->timer = std::thread{[st] { st->timer_loop(); }};
  return std::shared_ptr<door_transactions>{new door_transactions(st)};
}

namespace {

/// Joins `t`, or lets it end on its own when this is `t` (a callback or
/// checker that destroys its own producer).
void join_or_detach(std::thread& t) {
  if (!t.joinable())
    return;
  if (t.get_id() == std::this_thread::get_id())
    t.detach();
  else
    t.join();
}

} // namespace

door_transactions::~door_transactions() {
  flush();
  {
    std::lock_guard<std::mutex> guard{st_->mtx};
    st_->stopping = true;
    st_->cv.notify_all();
    if (st_->joining)
      st_->joining->ctx.TryCancel(); // a registration waiting for its answer
  }
  // The writer sends what waits, waits for its answers, then WritesDone:
  // the node ends the stream.
  join_or_detach(st_->writer);
  join_or_detach(st_->reader);
  join_or_detach(st_->checking);
  join_or_detach(st_->timer);
}

caf::expected<txn_result>
door_transactions::send_in_transaction(message m,
                                       const local_transaction& fn) {
  if (m.id.empty())
    m.id = new_unique_id(); // the local transaction sees it, as on the node port
  auto p = std::make_shared<std::promise<caf::expected<std::string>>>();
  auto f = p->get_future();
  st_->store_half(m, [p](caf::expected<std::string> id) {
    p->set_value(std::move(id));
  });
  auto id = f.get();
  if (!id)
    return id.error();
  return run_and_end(std::move(*id), m, fn,
                     [this](const std::string& txn_id, txn_outcome x) {
                       return end(txn_id, x);
                     });
}

void door_transactions::send_in_transaction_async(
  message m, local_transaction fn, transaction_producer::txn_callback cb) {
  {
    std::lock_guard<std::mutex> guard{st_->mtx};
    st_->pipelined++;
  }
  auto st = st_;
  auto finish = [st, cb = std::move(cb)](caf::expected<txn_result> r) {
    cb(std::move(r));
    std::lock_guard<std::mutex> guard{st->mtx};
    st->pipelined--;
    st->cv.notify_all();
  };
  if (m.id.empty())
    m.id = new_unique_id();
  auto msg = std::make_shared<message>(std::move(m));
  st_->store_half(*msg, [st, msg, fn = std::move(fn),
                         finish](caf::expected<std::string> id) {
    if (!id) {
      finish(id.error());
      return;
    }
    auto local = run_local(fn, *msg, *id);
    if (local == txn_outcome::unknown) {
      txn_result out;
      out.txn_id = *id;
      out.end_error = outcome_unknown();
      finish(std::move(out));
      return;
    }
    st->send_end(*id, local, [finish, id = *id,
                              local](caf::expected<txn_result> r) {
      if (!r) {
        txn_result out;
        out.txn_id = id;
        out.local = local;
        out.end_error = r.error();
        finish(std::move(out));
        return;
      }
      r->local = local;
      finish(std::move(*r));
    });
  });
}

void door_transactions::flush() {
  std::unique_lock<std::mutex> guard{st_->mtx};
  st_->cv.wait(guard, [&] { return st_->pipelined == 0; });
}

caf::expected<txn_result> door_transactions::end(const std::string& txn_id,
                                                 txn_outcome outcome) {
  auto p = std::make_shared<std::promise<caf::expected<txn_result>>>();
  auto f = p->get_future();
  st_->send_end(txn_id, outcome, [p](caf::expected<txn_result> r) {
    p->set_value(std::move(r));
  });
  auto r = f.get();
  if (r)
    r->local = outcome;
  return r;
}

void door_transactions::store_halves_async(
  std::vector<message> ms, transaction_producer::halves_callback cb) {
  struct gather {
    std::mutex mtx;
    std::vector<caf::expected<std::string>> out;
    size_t left = 0;
    transaction_producer::halves_callback cb;
  };
  auto g = std::make_shared<gather>();
  g->out.resize(ms.size(), caf::expected<std::string>{std::string{}});
  g->left = ms.size();
  g->cb = std::move(cb);
  if (ms.empty()) {
    g->cb({});
    return;
  }
  for (size_t i = 0; i < ms.size(); ++i)
    st_->store_half(ms[i], [g, i](caf::expected<std::string> id) {
      std::unique_lock<std::mutex> guard{g->mtx};
      g->out[i] = std::move(id);
      if (--g->left == 0) {
        guard.unlock();
        g->cb(std::move(g->out));
      }
    });
}

void door_transactions::end_many_async(
  std::vector<std::pair<std::string, txn_outcome>> ends,
  transaction_producer::ends_callback cb) {
  struct gather {
    std::mutex mtx;
    std::vector<caf::expected<txn_result>> out;
    size_t left = 0;
    transaction_producer::ends_callback cb;
  };
  auto g = std::make_shared<gather>();
  g->out.resize(ends.size(), caf::expected<txn_result>{txn_result{}});
  g->left = ends.size();
  g->cb = std::move(cb);
  if (ends.empty()) {
    g->cb({});
    return;
  }
  for (size_t i = 0; i < ends.size(); ++i)
    st_->send_end(ends[i].first, ends[i].second,
                  [g, i, local = ends[i].second](caf::expected<txn_result> r) {
                    if (r)
                      r->local = local;
                    std::unique_lock<std::mutex> guard{g->mtx};
                    g->out[i] = std::move(r);
                    if (--g->left == 0) {
                      guard.unlock();
                      g->cb(std::move(g->out));
                    }
                  });
}

uint64_t door_transactions::checks_answered() const {
  return st_->answered;
}

} // namespace edda::client
