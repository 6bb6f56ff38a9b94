#include "replication/shipper.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>

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
  bool inflight = false;    // one ship at a time
  uint64_t target = 0;      // the leader's last commit when it was sent
  bool in_sync = false;
  int64_t caught_up_ms = 0; // when it last had everything sent to it
  bool needs_copy = false;  // behind the window, or diverged: out for now
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
  static inline const char* name = "edda.replication.shipper";
};

using self_ptr = caf::stateful_actor<shipper_state>*;

void pump(self_ptr self, const std::string& id);

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

/// Tells the writer what is replicated now, or that commits cannot be.
void advance(self_ptr self) {
  auto& st = self->state;
  auto n = in_sync_count(st);
  if (n < st.opts.min_insync) {
    // At its start a leader waits up to lag_max for its followers to be
    // linked and answer (its writes wait with it).
    if (steady_ms() - st.started_ms < st.opts.lag_max.count())
      return;
    auto from = std::max(st.replicated, st.refused);
    if (st.last <= from)
      return;
    st.refused = st.last;
    std::string who;
    for (auto& [id, f] : st.followers)
      if (!f.in_sync)
        who += (who.empty() ? "" : ", ") + id
               + (f.needs_copy              ? " (needs a full copy)"
                  : !f.last_error.empty() ? " (" + f.last_error + ")"
                                          : " (lagging)");
    metrics::counter("replication.not_enough_replicas") += st.last - from;
    if (st.writer)
      self->send(st.writer, wire::replicated_atom::value, st.last,
                 make_error(errc::unavailable,
                            "stored on node " + st.opts.group + ", but only "
                              + std::to_string(n) + " of cluster.min_insync "
                              + std::to_string(st.opts.min_insync)
                              + " replicas are in sync"
                              + (who.empty() ? "" : " (out: " + who + ")")
                              + ": not acknowledged; it may or may not "
                                "survive the loss of this node"));
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
}

/// Drops the commits every follower has; keeps at most window_bytes.
void trim(self_ptr self) {
  auto& st = self->state;
  uint64_t keep_from = st.followers.size() < st.opts.followers
                         ? first_kept(st) // for a follower still to come
                         : st.last + 1;
  for (auto& [id, f] : st.followers)
    if (f.host && !f.needs_copy)
      keep_from = std::min(keep_from, f.known ? f.acked + 1 : first_kept(st));
  while (!st.window.empty()
         && (st.window.front().seq() < keep_from
             || st.window_bytes > st.opts.window_bytes)) {
    st.window_bytes -= st.window.front().ByteSizeLong();
    st.window.pop_front();
  }
}

void leave_isr(self_ptr self, follower_state& f, const std::string& id,
               const std::string& why) {
  if (!f.in_sync)
    return;
  f.in_sync = false;
  metrics::counter("replication.isr_shrinks")++;
  EDDA_WARN("replication", "group " << self->state.opts.group << ": follower "
                                    << id << " left the in-sync set (" << why
                                    << ")");
}

void on_ack(self_ptr self, const std::string& id, const pb::ReplAck& ack) {
  auto& st = self->state;
  auto& f = st.followers.at(id);
  f.inflight = false;
  f.known = true;
  if (ack.seq() > st.last) {
    // It has commits this leader does not: a diverged log, never merged.
    if (!f.needs_copy)
      EDDA_ERROR("replication",
                 "group " << st.opts.group << ": follower " << id
                          << " is at seq " << ack.seq()
                          << ", beyond this leader's " << st.last
                          << " (epoch " << ack.epoch()
                          << "): a diverged replica, not followed");
    f.needs_copy = true;
    leave_isr(self, f, id, "diverged");
    advance(self);
    return;
  }
  f.acked = ack.seq();
  f.last_error.clear();
  if (f.acked >= f.target) {
    // It had every commit made before this ship was sent.
    f.caught_up_ms = steady_ms();
    if (!f.in_sync && !f.needs_copy) {
      f.in_sync = true;
      EDDA_INFO("replication", "group " << st.opts.group << ": follower "
                                        << id << " is in sync (seq "
                                        << f.acked << ")");
    }
  }
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

void pump(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto i = st.followers.find(id);
  if (i == st.followers.end())
    return;
  auto& f = i->second;
  if (!f.host || f.inflight || f.needs_copy)
    return;
  pb::ReplShip ship;
  ship.set_group(st.opts.group);
  ship.set_leader_epoch(st.opts.epoch);
  if (f.known) {
    if (f.acked >= st.last)
      return;
    auto first = first_kept(st);
    if (f.acked + 1 < first) {
      f.needs_copy = true;
      leave_isr(self, f, id, "behind the commits kept in memory");
      EDDA_WARN("replication",
                "group " << st.opts.group << ": follower " << id
                         << " is at seq " << f.acked << ", the oldest kept is "
                         << first
                         << ": it needs a full copy (not built yet)");
      advance(self);
      return;
    }
    size_t bytes = 0;
    for (auto j = f.acked + 1 - first; j < st.window.size(); ++j) {
      auto& b = st.window[j];
      auto sz = b.ByteSizeLong();
      if (ship.batches_size() > 0 && bytes + sz > st.opts.max_ship_bytes)
        break;
      *ship.add_batches() = b;
      bytes += sz;
    }
    metrics::counter("replication.ships")++;
  }
  f.inflight = true;
  f.target = st.last;
  auto round = f.round;
  self->request(f.host, st.opts.request_timeout, std::move(ship))
    .then(
      [=](const pb::ReplAck& ack) {
        auto& st = self->state;
        auto j = st.followers.find(id);
        if (j == st.followers.end() || j->second.round != round)
          return;
        on_ack(self, id, ack);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        auto j = st.followers.find(id);
        if (j == st.followers.end() || j->second.round != round)
          return;
        auto& f = j->second;
        f.inflight = false;
        if (code_of(err) == errc::fenced) {
          if (!f.needs_copy)
            EDDA_ERROR("replication", "group " << st.opts.group
                                               << ": follower " << id
                                               << " refused: " << render(err));
          f.needs_copy = true;
          leave_isr(self, f, id, "refused this leader's epoch");
          advance(self);
          return;
        }
        EDDA_DEBUG("replication", "group " << st.opts.group << ": ship to "
                                           << id << " failed: "
                                           << render(err));
        f.last_error = render(err);
        schedule_retry(self, id, f);
      });
}

void tick(self_ptr self) {
  auto& st = self->state;
  auto now = steady_ms();
  for (auto& [id, f] : st.followers) {
    if (f.known && f.acked >= st.last && !f.inflight)
      f.caught_up_ms = now; // idle and complete
    if (f.in_sync && now - f.caught_up_ms > st.opts.lag_max.count())
      leave_isr(self, f, id,
                "not caught up for " + std::to_string(now - f.caught_up_ms)
                  + " ms, " + std::to_string(st.last - f.acked)
                  + " commits behind"
                  + (f.last_error.empty() ? "" : "; " + f.last_error));
  }
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
      self->state.writer = std::move(writer);
    },
    [=](wire::link_atom, const std::string& id, caf::actor& host) {
      auto& st = self->state;
      if (!host) {
        if (st.followers.erase(id) != 0)
          EDDA_INFO("replication",
                    "group " << st.opts.group << ": " << id
                             << " is no longer a follower");
        advance(self);
        trim(self);
        return;
      }
      auto [i, added] = st.followers.try_emplace(id);
      auto& f = i->second;
      if (!added && f.host == host)
        return;
      f.host = std::move(host);
      ++f.round;
      f.inflight = false;
      f.known = false;
      f.needs_copy = false;
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
      auto& st = self->state;
      auto i = st.followers.find(id);
      if (i == st.followers.end() || i->second.round != round)
        return;
      i->second.retry_scheduled = false;
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
