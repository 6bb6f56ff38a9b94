#include "replication/shipper.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/ids.hpp"
#include "base/metrics.hpp"
#include "storage/environment.hpp"
#include "storage/writer_actor.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/blocking_actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <set>
#include <vector>

namespace edda::replication {

namespace {

namespace pb = wire::pb;
using std::chrono::milliseconds;

int64_t steady_ms() {
  return std::chrono::duration_cast<milliseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

struct follower_state {
  caf::actor host;
  uint64_t round = 0;       // bumped when the host changes: late replies
  bool known = false;       // its position was learned (probe or ack)
  uint64_t acked = 0;       // the last commit it has
  uint32_t inflight = 0;    // ships sent and not answered yet
  uint64_t sent = 0;        // the last commit sent (acked <= sent)
  bool in_sync = false;
  int64_t caught_up_ms = 0; // when it last had everything sent to it
  bool needs_copy = false;  // behind the window: gets a full copy
  bool copying = false;     // a copier runs for it
  /// Set to stop that copier (a new round, removal, the shipper's end).
  std::shared_ptr<std::atomic<bool>> copy_cancel;
  uint64_t copy_pin = 0;    // the commits after this are kept for it
  int64_t copy_after_ms = 0; // a failed copy is tried again from then
  bool stuck = false;       // diverged or refused this leader: not followed
  bool had_copy = false;    // a full copy was made for it (this round)
  bool confirmed = false;   // caught up at least once: may be recorded
  bool leaving = false;     // out, once etcd records it (acks wait till)
  bool removed = false;     // no longer a follower, once recorded
  bool retry_scheduled = false;
  std::string last_error;   // of the last failed ship, for the logs
};

struct shipper_state {
  shipper_options opts;
  caf::actor writer;
  std::deque<pb::ReplBatch> window; // commits kept for the followers
  size_t window_bytes = 0;
  uint64_t last = 0;        // the leader's last commit
  uint64_t replicated = 0;  // told to the writer as replicated
  uint64_t refused = 0;     // told to the writer as not replicated
  int64_t started_ms = 0;
  std::map<std::string, follower_state> followers;
  uint64_t rounds = 0;      // follower rounds ever: a new one is always new
  std::set<std::string> recorded; // the in-sync followers etcd records
  bool proposing = false;   // a record write is in flight
  bool propose_again = false;
  caf::error fenced;        // the record names another leader or epoch
  std::vector<caf::response_promise> draining; // stop_atom callers
  bool recorded_known = true; // false after a failed write: write again
  ~shipper_state() {
    for (auto& [id, f] : followers)
      if (f.copy_cancel)
        *f.copy_cancel = true;
  }
  static inline const char* name = "edda.replication.shipper";
};

using self_ptr = caf::stateful_actor<shipper_state>*;

void pump(self_ptr self, const std::string& id);

/// The follower `id` if it is still in `round` (replies and timers of an
/// earlier round are stale), else nullptr.
follower_state* current(self_ptr self, const std::string& id, uint64_t round) {
  auto i = self->state.followers.find(id);
  if (i == self->state.followers.end() || i->second.round != round)
    return nullptr;
  return &i->second;
}

uint64_t first_kept(const shipper_state& st) {
  return st.window.empty() ? st.last + 1 : st.window.front().seq();
}

size_t in_sync_count(const shipper_state& st) {
  size_t n = 1; // the leader
  for (auto& [id, f] : st.followers)
    if (f.in_sync)
      ++n;
  return n;
}

/// Answers the stop_atom callers waiting for the drain.
void answer_draining(self_ptr self, bool drained) {
  for (auto& rp : self->state.draining)
    rp.deliver(drained);
  self->state.draining.clear();
}

/// The writes of the commits not yet answered (up to the last) are answered
/// with `err`; returns how many commits that was.
uint64_t refuse(self_ptr self, const caf::error& err) {
  auto& st = self->state;
  auto from = std::max(st.replicated, st.refused);
  if (st.last <= from)
    return 0;
  st.refused = st.last;
  if (st.writer)
    self->send(st.writer, wire::replicated_atom::value, st.last, err);
  return st.last - from;
}

/// Tells the writer what is replicated now, or that commits cannot be.
void advance(self_ptr self) {
  auto& st = self->state;
  if (st.fenced) {
    // Another node leads the group now: nothing more is acknowledged.
    answer_draining(self, false);
    refuse(self, st.fenced);
    return;
  }
  auto n = in_sync_count(st);
  if (n < st.opts.min_insync) {
    // At its start a leader waits up to lag_max for its followers to be
    // linked and answer (its writes wait with it).
    if (steady_ms() - st.started_ms < st.opts.lag_max.count())
      return;
    answer_draining(self, false);
    if (st.last <= std::max(st.replicated, st.refused))
      return;
    std::string who;
    for (auto& [id, f] : st.followers)
      if (!f.in_sync)
        who += (who.empty() ? "" : ", ") + id
               + (f.stuck                   ? " (diverged or refused)"
                  : f.copying             ? " (getting a full copy)"
                  : f.needs_copy          ? " (needs a full copy)"
                  : !f.last_error.empty() ? " (" + f.last_error + ")"
                                          : " (lagging)");
    metrics::counter("replication.not_enough_replicas") += refuse(
      self, make_error(errc::unavailable,
                       "stored on node " + st.opts.group + ", but only "
                         + std::to_string(n) + " of cluster.min_insync "
                         + std::to_string(st.opts.min_insync)
                         + " replicas are in sync"
                         + (who.empty() ? "" : " (out: " + who + ")")
                         + ": not acknowledged; it may or may not survive "
                           "the loss of this node"));
    return;
  }
  auto committed = st.last;
  for (auto& [id, f] : st.followers)
    if (f.in_sync)
      committed = std::min(committed, f.acked);
  if (committed > st.replicated) {
    st.replicated = committed;
    if (st.writer)
      self->send(st.writer, wire::replicated_atom::value, st.replicated);
  }
  if (!st.draining.empty() && committed >= st.last)
    answer_draining(self, true);
}

/// Drops the commits every follower has; keeps at most window_bytes.
void trim(self_ptr self) {
  auto& st = self->state;
  uint64_t keep_from = st.followers.size() < st.opts.followers
                         ? first_kept(st) // for a follower still to come
                         : st.last + 1;
  uint64_t pinned = st.last + 1; // the commits a running copy needs
  for (auto& [id, f] : st.followers) {
    if (f.copying)
      pinned = std::min(pinned, f.copy_pin + 1);
    else if (f.host && !f.needs_copy && !f.stuck)
      keep_from = std::min(keep_from, f.known ? f.acked + 1 : first_kept(st));
  }
  keep_from = std::min(keep_from, pinned);
  // Over the cap, commits go unless a running copy needs them; a copy
  // whose pinned commits reach twice the cap is given up (tried again).
  while (!st.window.empty()
         && (st.window.front().seq() < keep_from
             || (st.window_bytes > st.opts.window_bytes
                 && st.window.front().seq() < pinned))) {
    st.window_bytes -= st.window.front().ByteSizeLong();
    st.window.pop_front();
  }
  if (st.window_bytes > 2 * st.opts.window_bytes)
    for (auto& [id, f] : st.followers)
      if (f.copying && f.copy_cancel) {
        EDDA_WARN("replication", "group " << st.opts.group << ": the copy for "
                                          << id << " takes too long (over "
                                          << st.window_bytes
                                          << " bytes of commits kept for "
                                             "it); given up");
        *f.copy_cancel = true;
      }
}

void propose(self_ptr self);

/// `f` leaves the in-sync set: at once without a recorder; with one, once
/// etcd records the set without it (its acks are waited for until then:
/// a failover may still elect it).
void leave_isr(self_ptr self, follower_state& f, const std::string& id,
               const std::string& why) {
  auto& st = self->state;
  if (!f.in_sync || f.leaving)
    return;
  EDDA_WARN("replication", "group " << st.opts.group << ": follower " << id
                                    << " leaves the in-sync set (" << why
                                    << ")");
  if (!st.opts.recorder) {
    f.in_sync = false;
    metrics::counter("replication.isr_shrinks")++;
    return;
  }
  f.leaving = true;
  propose(self);
}

/// `f` has what the leader had when it was last sent something (or all):
/// it stays in sync, or joins again (acks wait for it at once; etcd
/// records it after).
void caught_up(self_ptr self, const std::string& id, follower_state& f) {
  auto& st = self->state;
  f.caught_up_ms = steady_ms();
  if (f.needs_copy || f.stuck || f.copying || f.removed)
    return;
  // Recorded in sync (a failover may elect it) only once it has every
  // acknowledged write; acks wait for it from now on anyway.
  if (f.acked >= st.replicated)
    f.confirmed = true;
  if (f.leaving)
    f.leaving = false; // back before the record said it left
  if (!f.in_sync) {
    f.in_sync = true;
    EDDA_INFO("replication", "group " << st.opts.group << ": follower "
                                      << id << " is in sync (seq " << f.acked
                                      << ")");
  }
  propose(self);
}

/// Writes the in-sync set to etcd if it changed (one write at a time).
void propose(self_ptr self) {
  auto& st = self->state;
  if (!st.opts.recorder || st.fenced)
    return;
  std::set<std::string> want;
  bool leaving = false;
  for (auto& [id, f] : st.followers) {
    if (f.in_sync && !f.leaving && f.confirmed)
      want.insert(id);
    leaving = leaving || f.leaving;
  }
  if (want == st.recorded && !leaving && st.recorded_known)
    return;
  if (st.proposing) {
    st.propose_again = true;
    return;
  }
  st.proposing = true;
  pb::ReplicaGroup g;
  for (auto& id : want)
    g.add_isr(id);
  self->request(st.opts.recorder, std::chrono::seconds(10), std::move(g))
    .then(
      [=](const pb::ReplicaGroup& rec) {
        auto& st = self->state;
        st.proposing = false;
        st.recorded_known = true;
        st.recorded.clear();
        for (auto& id : rec.isr())
          st.recorded.insert(id);
        for (auto i = st.followers.begin(); i != st.followers.end();) {
          auto& f = i->second;
          if (f.leaving && st.recorded.count(i->first) == 0) {
            f.leaving = false;
            f.in_sync = false;
            metrics::counter("replication.isr_shrinks")++;
            EDDA_WARN("replication", "group " << st.opts.group
                                              << ": follower " << i->first
                                              << " is out of the in-sync set "
                                                 "(recorded)");
          }
          if (f.removed && !f.in_sync)
            i = st.followers.erase(i);
          else
            ++i;
        }
        advance(self);
        trim(self);
        if (st.propose_again) {
          st.propose_again = false;
          propose(self);
        }
      },
      [=](caf::error& err) {
        auto& st = self->state;
        st.proposing = false;
        st.recorded_known = false; // it may have been written: write again
        if (code_of(err) == errc::fenced) {
          EDDA_ERROR("replication", "group " << st.opts.group << ": "
                                             << render(err)
                                             << "; nothing more is "
                                                "acknowledged here");
          st.fenced = err;
          advance(self);
          return;
        }
        EDDA_WARN("replication", "group " << st.opts.group
                                          << ": cannot record the in-sync "
                                             "set in etcd ("
                                          << render(err)
                                          << "); writes wait, trying again");
        // The next tick tries again.
      });
}

/// `id` gets a full copy (out of the in-sync set meanwhile, for `why`).
void copy_over(self_ptr self, const std::string& id, follower_state& f,
               const std::string& why) {
  f.needs_copy = true;
  leave_isr(self, f, id, why);
  advance(self);
  pump(self, id);
}

/// `ack` answers a ship of commits up to `shipped` (0: a probe), sent when
/// the leader's last commit was `target`.
void on_ack(self_ptr self, const std::string& id, const pb::ReplAck& ack,
            uint64_t shipped, uint64_t target) {
  auto& st = self->state;
  auto& f = st.followers.at(id);
  if (f.inflight > 0)
    --f.inflight;
  f.known = true;
  if (ack.seq() > 0 && ack.log_id() != st.opts.log_id) {
    // A copy of another log of this group (this node's data dir was wiped
    // and it began anew): it may hold the only copy of what the old log
    // acknowledged, so it is neither followed nor overwritten.
    if (!f.stuck)
      EDDA_ERROR("replication",
                 "group " << st.opts.group << ": follower " << id
                          << " holds another log of this node ('"
                          << ack.log_id() << "' up to seq " << ack.seq()
                          << "; this node's is '" << st.opts.log_id
                          << "'): its data dir was replaced? The copy is "
                             "kept, not followed and not overwritten");
    f.stuck = true;
    leave_isr(self, f, id, "holds another log");
    advance(self);
    return;
  }
  if (ack.unfinished_copy() || (ack.seq() == 0 && !f.had_copy)) {
    // An empty copy gets a full copy first: this node's storage may hold
    // data written before its commits were numbered.
    copy_over(self, id, f,
              ack.unfinished_copy() ? "its copy is unfinished"
                                    : "its copy is empty");
    return;
  }
  bool prefix = (ack.epoch() == st.opts.start_epoch
                 && ack.seq() <= st.opts.last_seq)
                || (st.opts.elected_copy_epoch != 0
                    && ack.epoch() == st.opts.elected_copy_epoch
                    && ack.seq() <= st.opts.elected_seq);
  if (st.opts.election_epoch != 0 && ack.epoch() < st.opts.election_epoch
      && !f.had_copy && !prefix) {
    // A copy last written before this group's election: the deposed
    // leader may have written it beyond (or, at the same seqs, other than)
    // the elected copy, writes that every in-sync copy did not have (so
    // none acknowledged before the election). Without an epoch history
    // per seq, the only safe truncation is a full copy. (One this leader
    // copied already is not copied again for a late ack of an older ship.)
    if (!f.needs_copy)
      EDDA_WARN("replication",
                "group " << st.opts.group << ": follower " << id
                         << "'s copy is of epoch " << ack.epoch() << " (seq "
                         << ack.seq() << "), before this group's election at "
                         << "epoch " << st.opts.election_epoch
                         << " from seq " << st.opts.elected_seq
                         << ": it may hold a deposed leader's writes; it gets "
                            "a full copy");
    copy_over(self, id, f, "last written before the election");
    return;
  }
  if (ack.seq() > st.last
      || (ack.epoch() < st.opts.epoch && ack.seq() > st.opts.last_seq)) {
    // It has commits this leader does not have (now, or had at its start:
    // this leader lost some it had shipped): never merged, never copied
    // over (it may hold the only copy of acknowledged writes).
    if (!f.stuck)
      EDDA_ERROR("replication",
                 "group " << st.opts.group << ": follower " << id
                          << " is at seq " << ack.seq()
                          << ", beyond this leader's " << st.last
                          << " (epoch " << ack.epoch()
                          << "): a diverged copy, not followed and not "
                             "overwritten; it may hold writes this node "
                             "lost");
    f.stuck = true;
    leave_isr(self, f, id, "diverged");
    advance(self);
    return;
  }
  f.acked = std::max(f.acked, ack.seq()); // replies come in order
  if (shipped == 0 || ack.seq() < shipped)
    f.sent = f.acked; // a probe, or a ship not applied (a gap): from here
  else
    f.sent = std::max(f.sent, f.acked);
  f.last_error.clear();
  if (f.acked >= target) // every commit made before this ship was sent
    caught_up(self, id, f);
  advance(self);
  trim(self);
  pump(self, id);
}

void schedule_retry(self_ptr self, const std::string& id, follower_state& f) {
  if (f.retry_scheduled)
    return;
  f.retry_scheduled = true;
  self->delayed_send(self, milliseconds(200), wire::retry_atom::value, id,
                     f.round);
}

/// Sends one LMDB snapshot of `env` to `host` as a full copy (blocking,
/// on its own thread), then tells the shipper (copied_atom, id, round,
/// epoch, seq) or (copied_atom, id, round, error).
void copier(caf::blocking_actor* self, std::shared_ptr<storage::environment> env,
            caf::actor host, std::string group, uint64_t epoch,
            caf::actor shipper, std::string id, uint64_t round,
            milliseconds timeout, size_t max_bytes,
            std::shared_ptr<std::atomic<bool>> cancel) {
  caf::error err;
  auto copy_id = new_unique_id();
  auto send = [&](pb::ReplShip s) {
    if (cancel->load()) {
      err = make_error(errc::unavailable, "copy cancelled");
      return false;
    }
    s.mutable_copy()->set_copy_id(copy_id);
    bool ok = false;
    self->request(host, timeout, std::move(s))
      .receive([&](const pb::ReplAck&) { ok = true; },
               [&](caf::error& e) { err = std::move(e); });
    return ok;
  };
  auto ship = [&](pb::ReplCopy::Phase phase) {
    pb::ReplShip s;
    s.set_group(group);
    s.set_leader_epoch(epoch);
    s.mutable_copy()->set_phase(phase);
    return s;
  };
  pb::ReplPosition at;
  uint64_t bytes_total = 0;
  bool ok = false;
  {
    auto r = env->read(); // the snapshot: one read transaction throughout
    at = storage::read_repl_position(r);
    ok = send(ship(pb::ReplCopy::BEGIN));
    auto data = ship(pb::ReplCopy::DATA);
    size_t bytes = 0;
    for (unsigned d = 0; ok && d < storage::db_count; ++d)
      r.scan(static_cast<storage::db>(d), "", "",
             [&](std::string_view k, std::string_view v) {
               auto* op = data.mutable_copy()->add_ops();
               op->set_db(d);
               op->set_key(std::string{k});
               op->set_value(std::string{v});
               bytes += k.size() + v.size();
               if (bytes >= max_bytes) {
                 bytes_total += bytes;
                 ok = send(std::move(data));
                 data = ship(pb::ReplCopy::DATA);
                 bytes = 0;
               }
               return ok;
             });
    if (ok && data.copy().ops_size() > 0) {
      bytes_total += bytes;
      ok = send(std::move(data));
    }
  }
  if (ok) {
    auto end = ship(pb::ReplCopy::END);
    end.mutable_copy()->set_epoch(at.epoch());
    end.mutable_copy()->set_seq(at.seq());
    ok = send(std::move(end));
  }
  metrics::counter("replication.copy_bytes") += bytes_total;
  if (ok)
    self->send(shipper, wire::copied_atom::value, id, round, at.epoch(),
               at.seq());
  else
    self->send(shipper, wire::copied_atom::value, id, round,
               err ? err : make_error(errc::unavailable, "copy failed"));
}

/// Starts a full copy for `id` unless one runs or a failed one waits.
void start_copy(self_ptr self, const std::string& id, follower_state& f) {
  auto& st = self->state;
  if (f.copying || !f.host)
    return;
  if (!st.opts.env) {
    f.stuck = true; // nothing to copy from (tests without storage)
    return;
  }
  auto now = steady_ms();
  if (now < f.copy_after_ms) {
    if (!f.retry_scheduled) {
      f.retry_scheduled = true;
      self->delayed_send(self, milliseconds(f.copy_after_ms - now),
                         wire::retry_atom::value, id, f.round);
    }
    return;
  }
  f.copying = true;
  f.copy_pin = st.last; // the snapshot will be at or after it
  if (f.copy_cancel)
    *f.copy_cancel = true;
  f.copy_cancel = std::make_shared<std::atomic<bool>>(false);
  metrics::counter("replication.copies")++;
  EDDA_INFO("replication", "group " << st.opts.group << ": a full copy for "
                                    << id << " (from seq " << st.last
                                    << " or later)");
  self->home_system().spawn<caf::detached>(
    copier, st.opts.env, f.host, st.opts.group, st.opts.epoch,
    caf::actor_cast<caf::actor>(self), id, f.round,
    std::max(st.opts.request_timeout, milliseconds(10000)),
    st.opts.max_ship_bytes, f.copy_cancel);
}

/// Sends `ship` (commits up to `shipped`; 0: a probe) to `id`.
void send_ship(self_ptr self, const std::string& id, follower_state& f,
               pb::ReplShip ship, uint64_t shipped) {
  auto& st = self->state;
  ship.set_group(st.opts.group);
  ship.set_leader_epoch(st.opts.epoch);
  ++f.inflight;
  auto target = st.last;
  auto round = f.round;
  self->request(f.host, st.opts.request_timeout, std::move(ship))
    .then(
      [=](const pb::ReplAck& ack) {
        if (current(self, id, round) != nullptr)
          on_ack(self, id, ack, shipped, target);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        auto* fp = current(self, id, round);
        if (fp == nullptr)
          return;
        auto& f = *fp;
        if (f.inflight > 0)
          --f.inflight;
        if (code_of(err) == errc::fenced
            || code_of(err) == errc::message_too_large) {
          if (!f.stuck)
            EDDA_ERROR("replication", "group " << st.opts.group
                                               << ": follower " << id
                                               << " refused: " << render(err));
          f.stuck = true;
          leave_isr(self, f, id, "refused this leader's ship");
          advance(self);
          return;
        }
        EDDA_DEBUG("replication", "group " << st.opts.group << ": ship to "
                                           << id << " failed: "
                                           << render(err));
        f.last_error = render(err);
        f.sent = f.acked; // sent again from what it has
        schedule_retry(self, id, f);
      });
}

void pump(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto i = st.followers.find(id);
  if (i == st.followers.end())
    return;
  auto& f = i->second;
  if (!f.host || f.stuck || f.copying)
    return;
  if (f.needs_copy) {
    if (f.inflight == 0)
      start_copy(self, id, f);
    return;
  }
  if (!f.known) {
    if (f.inflight == 0)
      send_ship(self, id, f, {}, 0); // a probe: where is it?
    return;
  }
  while (f.inflight < st.opts.max_inflight_ships) {
    auto first = first_kept(st);
    if (f.acked + 1 < first) {
      f.needs_copy = true;
      leave_isr(self, f, id, "behind the commits kept in memory");
      EDDA_WARN("replication",
                "group " << st.opts.group << ": follower " << id
                         << " is at seq " << f.acked << ", the oldest kept is "
                         << first << ": it gets a full copy");
      advance(self);
      if (f.inflight == 0)
        start_copy(self, id, f);
      return;
    }
    auto from = std::max(f.acked, f.sent) + 1;
    if (from > st.last)
      return;
    pb::ReplShip ship;
    size_t bytes = 0;
    for (auto j = from - first; j < st.window.size(); ++j) {
      auto& b = st.window[j];
      auto sz = b.ByteSizeLong();
      if (ship.batches_size() > 0 && bytes + sz > st.opts.max_ship_bytes)
        break;
      *ship.add_batches() = b;
      bytes += sz;
    }
    auto shipped = ship.batches(ship.batches_size() - 1).seq();
    f.sent = shipped;
    metrics::counter("replication.ships")++;
    send_ship(self, id, f, std::move(ship), shipped);
  }
}

void tick(self_ptr self) {
  auto& st = self->state;
  auto now = steady_ms();
  for (auto& [id, f] : st.followers) {
    if (f.known && f.acked >= st.last && f.inflight == 0)
      caught_up(self, id, f); // idle and complete
    if (f.in_sync && now - f.caught_up_ms > st.opts.lag_max.count())
      leave_isr(self, f, id,
                "not caught up for " + std::to_string(now - f.caught_up_ms)
                  + " ms, " + std::to_string(st.last - f.acked)
                  + " commits behind"
                  + (f.last_error.empty() ? "" : "; " + f.last_error));
  }
  propose(self);
  advance(self);
  trim(self);
  for (auto& [id, f] : st.followers)
    pump(self, id);
  auto every = std::max<int64_t>(50, st.opts.lag_max.count() / 4);
  self->delayed_send(self, milliseconds(every), wire::tick_atom::value);
}

caf::behavior shipper(self_ptr self, shipper_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.last = st.opts.last_seq;
  st.replicated = st.opts.last_seq; // durable before this start
  st.started_ms = steady_ms();
  if (st.opts.recorder)
    self->send(st.opts.recorder, wire::watch_atom::value,
               caf::actor_cast<caf::actor>(self));
  tick(self);
  return {
    [=](pb::ReplBatch& b) {
      auto& st = self->state;
      st.last = b.seq();
      st.window_bytes += b.ByteSizeLong();
      st.window.push_back(std::move(b));
      advance(self);
      for (auto& [id, f] : st.followers)
        pump(self, id);
      trim(self);
    },
    [=](wire::serving_atom, caf::actor& writer) {
      // Linked: a shipper that dies takes the writer (and so the node)
      // down, never leaving writes parked for ever.
      self->link_to(writer);
      self->state.writer = std::move(writer);
      if (self->state.replicated > 0)
        self->send(self->state.writer, wire::replicated_atom::value,
                   self->state.replicated);
    },
    [=](wire::current_atom) {
      // Its part of the cluster status.
      auto& st = self->state;
      pb::ClusterStatus s;
      s.set_replication_factor(st.opts.followers + 1);
      s.set_min_insync(st.opts.min_insync);
      s.set_leader_epoch(st.opts.epoch);
      s.set_leader_seq(st.last);
      s.set_replicated_seq(st.replicated);
      for (auto& id : st.recorded)
        s.add_recorded_isr(id);
      auto now = steady_ms();
      for (auto& [id, f] : st.followers) {
        auto* r = s.add_replicas();
        r->set_follower(id);
        r->set_in_sync(f.in_sync);
        r->set_state(f.stuck        ? "diverged (not followed)"
                     : f.copying    ? "copying"
                     : f.needs_copy ? "needs a copy"
                     : !f.known     ? "probing"
                     : f.acked >= st.last ? "caught up"
                                          : "streaming");
        r->set_acked_seq(f.acked);
        r->set_caught_up_ms_ago(now - f.caught_up_ms);
        r->set_error(f.last_error);
      }
      return s;
    },
    [=](wire::lost_atom, caf::error& err) {
      // The recorder saw the group's record taken over: nothing more is
      // acknowledged here.
      auto& st = self->state;
      if (!st.fenced)
        st.fenced = std::move(err);
      advance(self);
    },
    [=](wire::stop_atom) -> caf::result<bool> {
      auto& st = self->state;
      if (in_sync_count(st) == 1 || st.replicated >= st.last)
        return true;
      auto rp = self->make_response_promise<bool>();
      st.draining.push_back(rp);
      return rp;
    },
    [=](wire::link_atom, const std::string& id, caf::actor& host) {
      auto& st = self->state;
      if (!host) {
        auto i = st.followers.find(id);
        if (i == st.followers.end())
          return;
        EDDA_INFO("replication", "group " << st.opts.group << ": " << id
                                          << " is no longer a follower");
        auto& f = i->second;
        f.removed = true;
        f.host = nullptr;
        f.round = ++st.rounds; // its replies are stale now
        if (f.copy_cancel)
          *f.copy_cancel = true;
        f.copying = false;
        if (f.in_sync && st.opts.recorder)
          leave_isr(self, f, id, "no longer a follower"); // erased once recorded
        else
          st.followers.erase(i);
        advance(self);
        trim(self);
        return;
      }
      auto [i, added] = st.followers.try_emplace(id);
      auto& f = i->second;
      // The same handle object only: after a reconnect CAF makes a new
      // proxy for the peer's gateway that compares equal to the old, dead
      // one (same node and actor id), and ships to the old one only time
      // out.
      if (!added
          && caf::actor_cast<caf::actor_control_block*>(f.host)
               == caf::actor_cast<caf::actor_control_block*>(host))
        return;
      f.host = std::move(host);
      f.removed = false;
      f.round = ++st.rounds;
      f.inflight = 0;
      f.sent = 0;
      f.known = false;
      f.needs_copy = false;
      if (f.copy_cancel)
        *f.copy_cancel = true; // a copier of the old round stops
      f.copying = false;
      f.stuck = false;
      f.had_copy = false;
      f.confirmed = false;
      f.retry_scheduled = false;
      if (added) {
        // Followers named at the start begin in sync (as Kafka's replicas
        // of a new partition); one added later joins once caught up.
        f.in_sync = steady_ms() - st.started_ms < st.opts.lag_max.count();
        f.caught_up_ms = steady_ms();
        EDDA_INFO("replication", "group " << st.opts.group << ": follower "
                                          << id << " added");
      }
      pump(self, id);
    },
    [=](wire::retry_atom, const std::string& id, uint64_t round) {
      auto* f = current(self, id, round);
      if (f == nullptr)
        return;
      f->retry_scheduled = false;
      pump(self, id);
    },
    [=](wire::copied_atom, const std::string& id, uint64_t round,
        uint64_t epoch, uint64_t seq) {
      auto& st = self->state;
      auto* fp = current(self, id, round);
      if (fp == nullptr)
        return;
      auto& f = *fp;
      f.copying = false;
      f.needs_copy = false;
      f.had_copy = true;
      f.known = true;
      f.last_error.clear();
      f.acked = seq;
      f.sent = seq;
      if (f.acked >= st.last)
        caught_up(self, id, f);
      advance(self);
      EDDA_INFO("replication", "group " << st.opts.group << ": " << id
                                        << " has a full copy at seq " << seq
                                        << " (epoch " << epoch
                                        << "); it streams on");
      trim(self);
      pump(self, id);
    },
    [=](wire::copied_atom, const std::string& id, uint64_t round,
        caf::error& err) {
      auto& st = self->state;
      auto* fp = current(self, id, round);
      if (fp == nullptr)
        return;
      auto& f = *fp;
      f.copying = false;
      f.copy_after_ms = steady_ms() + 2000;
      EDDA_WARN("replication", "group " << st.opts.group << ": the full copy "
                                        << "for " << id << " failed ("
                                        << render(err)
                                        << "); tried again in 2 s");
      trim(self);
      pump(self, id);
    },
    [=](wire::tick_atom) { tick(self); },
  };
}

} // namespace

caf::actor spawn_shipper(caf::actor_system& sys, shipper_options opts) {
  return sys.spawn(shipper, std::move(opts));
}

} // namespace edda::replication
