#include "storage/writer_actor.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "storage/environment.hpp"
#include "wire/types.hpp"

#include "replication.pb.h"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <deque>
#include <vector>

namespace edda::storage {

namespace {

struct pending_write {
  wire::pb::WriteBatch batch;
  caf::response_promise promise;
};

/// A commit durable here whose writes wait for their replicas (gated).
struct parked_commit {
  uint64_t seq = 0;
  std::vector<caf::response_promise> promises;
  wire::pb::WriteResult result;
};

struct writer_state {
  std::shared_ptr<environment> env;
  std::vector<pending_write> pending;
  bool flush_scheduled = false;
  bool timer_armed = false;   // a delayed flush for deferrable writes
  size_t urgent = 0;          // pending writes that are not deferrable
  caf::error stopped; // sticky failure
  uint64_t commit_seq = 0;
  commit_stream stream;
  uint64_t repl_seq = 0; // the last commit shipped (stream.ship set)
  uint64_t replicated = 0; // gated: the last commit the replicas have
  std::deque<parked_commit> parked; // gated: by seq
  std::chrono::steady_clock::time_point usage_told{}; // stream.usage
  static inline const char* name = "edda.storage.writer";
};

caf::behavior writer(caf::stateful_actor<writer_state>* self,
                     std::shared_ptr<environment> env,
                     std::chrono::milliseconds defer, commit_stream stream) {
  self->state.env = std::move(env);
  self->state.stream = std::move(stream);
  if (self->state.stream.ship) {
    auto r = self->state.env->read();
    self->state.repl_seq = read_repl_position(r).seq();
  }
  if (self->state.stream.gated)
    self->state.replicated = self->state.repl_seq; // durable before a restart
  auto& commits = metrics::counter("storage.commits");
  auto& batches_total = metrics::counter("storage.batches");
  auto& commit_latency = metrics::latency("storage.commit");
  return {
    [=](wire::pb::WriteBatch& batch) -> caf::result<wire::pb::WriteResult> {
      auto& st = self->state;
      if (st.stopped)
        return st.stopped;
      auto rp = self->make_response_promise<wire::pb::WriteResult>();
      bool deferrable = batch.deferrable() && defer.count() > 0;
      st.pending.push_back(pending_write{std::move(batch), rp});
      if (deferrable) {
        // Waits for an urgent write to share its commit, at most `defer`.
        if (!st.timer_armed && st.urgent == 0) {
          st.timer_armed = true;
          self->delayed_send(self, defer, wire::tick_atom::value);
        }
        return rp;
      }
      ++st.urgent;
      if (!st.flush_scheduled) {
        // The flush message queues behind every write already in the
        // mailbox: they all join this commit.
        st.flush_scheduled = true;
        self->send(self, wire::flush_atom::value);
      }
      return rp;
    },
    [=](wire::tick_atom) {
      auto& st = self->state;
      st.timer_armed = false;
      if (st.urgent == 0 && !st.pending.empty() && !st.flush_scheduled) {
        st.flush_scheduled = true;
        self->send(self, wire::flush_atom::value);
      }
    },
    [=, &commits, &batches_total, &commit_latency](wire::flush_atom) {
      auto& st = self->state;
      st.flush_scheduled = false;
      st.urgent = 0;
      if (st.pending.empty())
        return;
      std::vector<pending_write> work;
      work.swap(st.pending);
      if (st.stopped) {
        for (auto& w : work)
          w.promise.deliver(st.stopped);
        return;
      }
      if (st.stream.ship && work.size() > 1) {
        // A shipped commit stays within what a replica takes whole: the
        // writes past max_shipped_commit_bytes wait for the next commit
        // (at once: a flush is queued for them).
        size_t bytes = 0;
        size_t keep = 0;
        while (keep < work.size()) {
          bytes += work[keep].batch.ByteSizeLong();
          if (keep > 0 && bytes > max_shipped_commit_bytes)
            break;
          ++keep;
        }
        if (keep < work.size()) {
          st.pending.insert(st.pending.begin(),
                            std::make_move_iterator(work.begin() + keep),
                            std::make_move_iterator(work.end()));
          work.resize(keep);
          st.urgent = st.pending.size();
          if (!st.flush_scheduled) {
            st.flush_scheduled = true;
            self->send(self, wire::flush_atom::value);
          }
        }
      }
      std::vector<const wire::pb::WriteBatch*> ptrs;
      ptrs.reserve(work.size() + 1);
      for (auto& w : work)
        ptrs.push_back(&w.batch);
      // Replication: the commit's number, kept in the same transaction.
      wire::pb::WriteBatch position;
      if (st.stream.ship) {
        wire::pb::ReplPosition p;
        p.set_epoch(st.stream.epoch);
        p.set_seq(st.repl_seq + 1);
        p.set_log_id(st.stream.log_id);
        put_repl_position(position, p);
        ptrs.push_back(&position);
      }
      std::vector<caf::error> failed;
      auto began = std::chrono::steady_clock::now();
      auto err = st.env->apply(ptrs, failed);
      commit_latency.observe(std::chrono::steady_clock::now() - began);
      if (err) {
        EDDA_ERROR("storage", "write transaction failed, writes stopped: "
                                << render(err));
        metrics::counter("storage.failures")++;
        st.stopped = err;
        for (auto& w : work)
          w.promise.deliver(err);
        return;
      }
      ++st.commit_seq;
      commits++;
      if (st.stream.usage && began - st.usage_told >= std::chrono::seconds(1)) {
        st.usage_told = began;
        st.stream.usage(st.env->live_bytes(), st.env->opts().map_size);
      }
      if (st.stream.ship) {
        wire::pb::ReplBatch out;
        out.set_leader_epoch(st.stream.epoch);
        out.set_seq(++st.repl_seq);
        out.set_log_id(st.stream.log_id);
        for (size_t i = 0; i < work.size(); ++i)
          if (!failed[i])
            for (auto& op : work[i].batch.ops())
              *out.add_ops() = op;
        st.stream.ship(std::move(out));
      }
      batches_total += work.size();
      wire::pb::WriteResult res;
      res.set_commit_seq(st.commit_seq);
      res.set_batches_in_commit(static_cast<uint32_t>(work.size()));
      bool park = st.stream.gated && st.repl_seq > st.replicated;
      parked_commit p;
      for (size_t i = 0; i < work.size(); ++i) {
        if (failed[i])
          work[i].promise.deliver(failed[i]);
        else if (park && !work[i].batch.local())
          p.promises.push_back(std::move(work[i].promise));
        else
          work[i].promise.deliver(res);
      }
      if (park && !p.promises.empty()) {
        p.seq = st.repl_seq;
        p.result = std::move(res);
        st.parked.push_back(std::move(p));
      }
    },
    // Gated: the replicas have every commit up to `seq` durably.
    [=](wire::replicated_atom, uint64_t seq) {
      auto& st = self->state;
      st.replicated = std::max(st.replicated, seq);
      while (!st.parked.empty() && st.parked.front().seq <= st.replicated) {
        auto p = std::move(st.parked.front());
        st.parked.pop_front();
        for (auto& rp : p.promises)
          rp.deliver(p.result);
      }
    },
    // Gated: the replicas cannot have the commits up to `seq` in time:
    // their writes are answered with `err` (stored here, not acknowledged).
    [=](wire::replicated_atom, uint64_t seq, caf::error& err) {
      auto& st = self->state;
      while (!st.parked.empty() && st.parked.front().seq <= seq) {
        auto p = std::move(st.parked.front());
        st.parked.pop_front();
        for (auto& rp : p.promises)
          rp.deliver(err);
      }
    },
  };
}

} // namespace

caf::actor spawn_writer(caf::actor_system& sys,
                        std::shared_ptr<environment> env, bool detached,
                        std::chrono::milliseconds defer,
                        commit_stream stream) {
  if (detached)
    return sys.spawn<caf::detached>(writer, std::move(env), defer,
                                    std::move(stream));
  return sys.spawn(writer, std::move(env), defer, std::move(stream));
}

} // namespace edda::storage
