#include "txn/coordinator.hpp"

#include "broker/tag_expression.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "base/open_promises.hpp"
#include "storage/environment.hpp"
#include "storage/keys.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <functional>
#include <limits>
#include <map>
#include <set>

namespace edda::txn {

namespace {

namespace pb = wire::pb;
using storage::db;
namespace keys = storage::keys;
using std::chrono::milliseconds;

using end_cb = std::function<void(caf::expected<pb::EndResult>)>;
using topic_cb = std::function<void(const caf::error&, uint32_t partitions)>;
using write_cb = std::function<void(const caf::error&)>;
using append_cb =
  std::function<void(const caf::error&, uint32_t partition, uint64_t offset)>;

constexpr int64_t topic_ttl_ms = 1000;

struct coordinator_state {
  broker::context_ptr ctx;
  caf::actor topics;
  // PREPARED records as persisted (next_check_ms = the key in txn_due).
  std::map<std::string, pb::TxnRecord> pending;
  // When each is checked next, in memory: may run ahead of the persisted
  // time when nobody could be asked (that is not worth a write).
  std::multimap<int64_t, std::string> due;
  std::map<std::string, int64_t> due_at;
  // group -> client id -> checker
  std::map<std::string, std::map<std::string, caf::actor>> producers;
  /// In doubt past txn.orphan_alert_after with nobody to ask: alerted once.
  std::set<std::string> orphan_alerted;
  /// Producer group -> when a check-back first found none of its members
  /// (erased once one is found): a transaction is orphaned once both it
  /// and this absence are older than txn.orphan_alert_after, so producers
  /// that re-register after a restart or a link drop alert nothing.
  std::map<std::string, int64_t> orphan_since;
  /// Outcomes being written, by txn id: an entry exists from the first end
  /// (producer, check-back, policy or operator) until its write completes.
  struct ending_entry {
    pb::TxnOutcome outcome = pb::TXN_UNKNOWN;
    bool initiator_waits = false; // the first end came with a requester
    std::vector<end_cb> waiters;
  };
  std::map<std::string, ending_entry> ending;
  std::set<std::string> checking;
  int64_t next_wakeup = std::numeric_limits<int64_t>::max();
  // Topics seen recently (partition counts), so that a half message does
  // not cost a lookup at the topic manager; refreshed after topic_ttl_ms.
  struct topic_entry {
    uint32_t partitions = 1;
    int64_t fetched_ms = 0;
    uint32_t round_robin = 0;
  };
  std::map<std::string, topic_entry> topic_cache;
  std::map<std::string, std::vector<topic_cb>> topic_lookups;
  // Writes gathered until the flush message comes back around: every half
  // message, rollback and commit handled in between shares one write (and
  // commits one append per partition).
  std::vector<std::pair<pb::WriteBatch, write_cb>> writes;
  struct commit_entry {
    pb::Message msg;
    pb::WriteBatch extra;
    append_cb done;
  };
  std::map<std::string, std::vector<commit_entry>> commits; // by topic
  bool flush_scheduled = false;
  /// Requests waiting for their commit: failed at once if this actor ends
  /// (the node's supervisor restarts it), not at the caller's timeout.
  std::shared_ptr<open_promises> open;
  static inline const char* name = "edda.txn_coordinator";
};

using self_ptr = caf::stateful_actor<coordinator_state>*;

void put(pb::WriteBatch& b, db d, std::string key, std::string value) {
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(d));
  op->set_key(std::move(key));
  op->set_value(std::move(value));
}

void del(pb::WriteBatch& b, db d, std::string key) {
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(d));
  op->set_key(std::move(key));
  op->set_kind(pb::WriteOp::DEL);
}

void schedule_flush(self_ptr self) {
  if (self->state.flush_scheduled)
    return;
  // Queues behind everything already in the mailbox: it all joins.
  self->state.flush_scheduled = true;
  self->send(self, wire::flush_atom::value);
}

/// Queues `b` for the next flush; `done` runs after the commit.
void queue_write(self_ptr self, pb::WriteBatch b, write_cb done) {
  self->state.writes.emplace_back(std::move(b), std::move(done));
  schedule_flush(self);
}

/// Calls `f` with the partition count of `topic` (cached for topic_ttl_ms),
/// or with the lookup's error (unknown_topic).
void with_topic(self_ptr self, const std::string& topic, topic_cb f) {
  auto& st = self->state;
  auto i = st.topic_cache.find(topic);
  if (i != st.topic_cache.end()
      && st.ctx->clock() - i->second.fetched_ms < topic_ttl_ms) {
    f(caf::error{}, i->second.partitions);
    return;
  }
  auto& waiting = st.topic_lookups[topic];
  waiting.push_back(std::move(f));
  if (waiting.size() > 1)
    return;
  pb::GetTopic gt;
  gt.set_name(topic);
  auto answer = [=](const caf::error& err, uint32_t n) {
    auto& st = self->state;
    auto fs = std::move(st.topic_lookups[topic]);
    st.topic_lookups.erase(topic);
    if (!err) {
      auto& e = st.topic_cache[topic];
      e.partitions = std::max<uint32_t>(1, n);
      e.fetched_ms = st.ctx->clock();
    } else {
      st.topic_cache.erase(topic);
    }
    for (auto& g : fs)
      g(err, n);
  };
  self->request(st.topics, std::chrono::seconds(30), gt)
    .then([=](const pb::TopicMeta& meta) { answer({}, meta.partitions()); },
          [=](caf::error& err) { answer(err, 0); });
}

/// Appends a committed message (with `extra`, its record update) at the
/// next flush, batched with the other commits for the same partition.
void queue_commit(self_ptr self, pb::Message msg, pb::WriteBatch extra,
                  append_cb done) {
  auto topic = msg.topic();
  self->state.commits[topic].push_back(
    {std::move(msg), std::move(extra), std::move(done)});
  schedule_flush(self);
}

void flush(self_ptr self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  auto timeout = milliseconds(st.ctx->write_timeout_ms);
  if (!st.writes.empty()) {
    auto work = std::make_shared<std::vector<std::pair<pb::WriteBatch, write_cb>>>();
    work->swap(st.writes);
    pb::WriteBatch b;
    for (auto& [w, cb] : *work)
      for (auto& op : *w.mutable_ops())
        *b.add_ops() = std::move(op);
    self->request(st.ctx->writer, timeout, std::move(b))
      .then(
        [=](const pb::WriteResult&) {
          for (auto& [w, cb] : *work)
            cb(caf::error{});
        },
        [=](caf::error& err) {
          for (auto& [w, cb] : *work)
            cb(err);
        });
  }
  auto commits = std::move(st.commits);
  st.commits.clear();
  for (auto& [topic, entries] : commits) {
    auto& t = st.topic_cache[topic];
    auto n = std::max<uint32_t>(1, t.partitions);
    // Keyed messages keep the producer's mapping; keyless ones of one
    // flush go together to the next partition in turn.
    auto keyless = static_cast<int32_t>(t.round_robin++ % n);
    std::map<int32_t, std::vector<size_t>> by_partition;
    for (size_t i = 0; i < entries.size(); ++i) {
      auto& key = entries[i].msg.key();
      auto p = key.empty() ? keyless
                           : static_cast<int32_t>(shard_of(key, n));
      // In a cluster the partition was chosen with the half message (its
      // id names it): one of this node's, so the commit stays one local
      // LMDB transaction.
      uint32_t topic_id = 0, fixed = 0;
      if (txn_home(entries[i].msg.txn_id(), topic_id, fixed))
        p = static_cast<int32_t>(fixed);
      by_partition[p].push_back(i);
    }
    auto shared = std::make_shared<std::vector<coordinator_state::commit_entry>>(std::move(entries));
    for (auto& [p, idx] : by_partition) {
      pb::AppendInternal app;
      app.set_topic(topic);
      app.set_partition(p);
      auto dones = std::make_shared<std::vector<append_cb>>();
      for (auto i : idx) {
        auto& e = (*shared)[i];
        *app.add_messages() = std::move(e.msg);
        for (auto& op : *e.extra.mutable_ops())
          *app.mutable_extra()->add_ops() = std::move(op);
        dones->push_back(std::move(e.done));
      }
      self->request(st.topics, timeout, std::move(app))
        .then(
          [=](const pb::ProduceResult& r) {
            for (size_t i = 0; i < dones->size(); ++i)
              (*dones)[i](caf::error{}, r.partition(),
                          i < static_cast<size_t>(r.offsets_size())
                            ? r.offsets(static_cast<int>(i))
                            : 0);
          },
          [=](caf::error& err) {
            for (auto& d : *dones)
              d(err, 0, 0);
          });
    }
  }
}

void arm(self_ptr self, int64_t due) {
  auto& st = self->state;
  if (due >= st.next_wakeup)
    return;
  st.next_wakeup = due;
  auto delay = std::max<int64_t>(0, due - st.ctx->clock());
  self->delayed_send(self, milliseconds(delay), wire::tick_atom::value);
}

void unindex(self_ptr self, const std::string& txn) {
  auto& st = self->state;
  auto at = st.due_at.find(txn);
  if (at == st.due_at.end())
    return;
  auto range = st.due.equal_range(at->second);
  for (auto j = range.first; j != range.second; ++j)
    if (j->second == txn) {
      st.due.erase(j);
      break;
    }
  st.due_at.erase(at);
}

/// Schedules the next check of a pending transaction at `when`.
void reschedule(self_ptr self, const std::string& txn, int64_t when) {
  auto& st = self->state;
  unindex(self, txn);
  st.due.emplace(when, txn);
  st.due_at[txn] = when;
  arm(self, when);
}

void index(self_ptr self, const pb::TxnRecord& rec) {
  self->state.pending[rec.txn_id()] = rec;
  reschedule(self, rec.txn_id(), rec.next_check_ms());
}

/// A pending record as operators see it: with its in-memory next check.
caf::actor pick_checker(self_ptr self, const pb::TxnRecord& rec);

/// In doubt for txn.orphan_alert_after while no producer of its group was
/// there to answer a check-back.
bool orphaned(self_ptr self, const pb::TxnRecord& rec, int64_t now) {
  auto& st = self->state;
  auto since = st.orphan_since.find(rec.producer_group());
  if (since == st.orphan_since.end() || pick_checker(self, rec))
    return false;
  auto from = std::max(rec.created_ms(), since->second);
  return now - from
         >= static_cast<int64_t>(st.ctx->settings.txn_orphan_alert_after_ms);
}

pb::TxnRecord shown(self_ptr self, const std::string& txn) {
  auto rec = self->state.pending[txn];
  auto at = self->state.due_at.find(txn);
  if (at != self->state.due_at.end())
    rec.set_next_check_ms(at->second);
  rec.set_orphaned(orphaned(self, rec, self->state.ctx->clock()));
  return rec;
}

std::optional<pb::TxnRecord> load(self_ptr self, const std::string& txn) {
  auto txn_r = self->state.ctx->env->read();
  auto v = txn_r.get(db::half, txn);
  if (!v)
    return std::nullopt;
  pb::TxnRecord rec;
  if (!rec.ParseFromArray(v->data(), static_cast<int>(v->size())))
    return std::nullopt;
  return rec;
}

const char* outcome_name(pb::TxnOutcome o) {
  return o == pb::TXN_COMMIT ? "commit"
         : o == pb::TXN_ROLLBACK ? "rollback"
                                 : "unknown";
}

/// Records `outcome` for a PREPARED transaction (commit: appends its
/// message in the same LMDB transaction) and answers every waiter.
void finish(self_ptr self, const std::string& txn, pb::TxnOutcome outcome,
            const std::string& by, const std::string& reason) {
  auto& st = self->state;
  auto i = st.pending.find(txn);
  EDDA_ASSERT(i != st.pending.end(), "finish of a transaction not pending");
  auto rec = i->second;
  auto old_due = keys::txn_due_key(static_cast<uint64_t>(rec.next_check_ms()),
                                   txn);
  rec.set_state(outcome == pb::TXN_COMMIT ? pb::TxnRecord::COMMITTED
                                          : pb::TxnRecord::ROLLED_BACK);
  rec.set_resolved_ms(st.ctx->clock());
  rec.set_resolved_by(by);
  rec.set_reason(reason);
  auto reply = [=](const caf::error& err, uint32_t partition, uint64_t offset) {
    auto& st = self->state;
    auto entry = std::move(st.ending[txn]);
    st.ending.erase(txn);
    auto& waiters = entry.waiters;
    if (err) {
      EDDA_WARN("txn", txn << ": recording " << outcome_name(outcome)
                           << " failed, will check back: " << render(err));
      for (auto& w : waiters)
        w(err);
      return;
    }
    unindex(self, txn);
    st.pending.erase(txn);
    st.orphan_alerted.erase(txn);
    if (by.rfind("operator:", 0) == 0) // recorded: an operator's action
      EDDA_INFO_F("audit", "transaction " << txn << ": " << outcome_name(outcome)
                                          << " by " << by.substr(9),
                  {"action", std::string{"txn resolve "} + outcome_name(outcome)},
                  {"txn_id", txn}, {"group", rec.producer_group()},
                  {"topic", rec.message().topic()}, {"by", by.substr(9)});
    metrics::counter(outcome == pb::TXN_COMMIT ? "txn.committed"
                                               : "txn.rolled_back")++;
    pb::EndResult res;
    *res.mutable_record() = rec;
    res.set_partition(partition);
    res.set_offset(offset);
    for (size_t i = 0; i < waiters.size(); ++i) {
      // Only the end that started the write stored it; the others joined.
      res.set_already(!(i == 0 && entry.initiator_waits));
      waiters[i](res);
    }
  };
  if (outcome == pb::TXN_COMMIT) {
    pb::Message m = rec.message();
    m.set_txn_id(txn);
    m.set_deliver_at_ms(0);
    pb::WriteBatch extra;
    put(extra, db::half, txn, rec.SerializeAsString());
    del(extra, db::txn_due, old_due);
    auto topic = m.topic();
    with_topic(self, topic,
               [=](const caf::error& err, uint32_t) mutable {
                 if (err) {
                   reply(err, 0, 0);
                   return;
                 }
                 queue_commit(self, std::move(m), std::move(extra), reply);
               });
    return;
  }
  pb::WriteBatch b;
  put(b, db::half, txn, rec.SerializeAsString());
  del(b, db::txn_due, old_due);
  queue_write(self, std::move(b),
              [=](const caf::error& err) { reply(err, 0, 0); });
}

/// Ends `txn` with `outcome`, calling `cb` (may be empty) once durable.
void end(self_ptr self, const std::string& txn, pb::TxnOutcome outcome,
         const std::string& by, const std::string& reason, end_cb cb) {
  auto& st = self->state;
  auto deliver = [&](caf::expected<pb::EndResult> x) {
    if (cb)
      cb(std::move(x));
  };
  if (outcome == pb::TXN_UNKNOWN) {
    deliver(make_error(errc::invalid_argument,
                       "an end needs commit or rollback; unknown is left to "
                       "check-back"));
    return;
  }
  if (st.pending.count(txn) == 0) {
    auto rec = load(self, txn);
    if (!rec) {
      deliver(make_error(errc::unknown_txn, "no transaction '" + txn + "'"));
      return;
    }
    bool same = (rec->state() == pb::TxnRecord::COMMITTED)
                == (outcome == pb::TXN_COMMIT);
    if (!same) {
      deliver(make_error(
        errc::txn_conflict,
        "transaction '" + txn + "' was already "
          + (rec->state() == pb::TxnRecord::COMMITTED ? "committed"
                                                      : "rolled back")
          + " by " + rec->resolved_by()
          + (rec->reason().empty() ? "" : " (" + rec->reason() + ")")
          + "; " + outcome_name(outcome) + " refused"));
      return;
    }
    pb::EndResult res;
    *res.mutable_record() = *rec;
    res.set_already(true);
    deliver(res);
    return;
  }
  auto [entry, fresh] = st.ending.try_emplace(txn);
  if (!fresh) {
    // An end is being written already: same outcome joins it, a different
    // one is refused (the first one wins, as it will be recorded).
    if (entry->second.outcome != outcome) {
      deliver(make_error(errc::txn_conflict,
                         "transaction '" + txn + "' is being "
                           + (entry->second.outcome == pb::TXN_COMMIT
                                ? "committed"
                                : "rolled back")
                           + "; " + outcome_name(outcome) + " refused"));
      return;
    }
    if (cb)
      entry->second.waiters.push_back(std::move(cb));
    return;
  }
  entry->second.outcome = outcome;
  entry->second.initiator_waits = static_cast<bool>(cb);
  if (cb)
    entry->second.waiters.push_back(std::move(cb));
  finish(self, txn, outcome, by, reason);
}

caf::actor pick_checker(self_ptr self, const pb::TxnRecord& rec) {
  auto& st = self->state;
  auto g = st.producers.find(rec.producer_group());
  if (g == st.producers.end() || g->second.empty())
    return {};
  auto own = g->second.find(rec.client_id());
  if (own != g->second.end())
    return own->second;
  // A node's own group (its sagas' messages: edda.sagas.<node>) is
  // answered by that node alone, from its records: never by another.
  if (broker::is_node_group(rec.producer_group()))
    return {};
  // Any other live member, spread by txn id.
  auto n = shard_of(rec.txn_id(), g->second.size());
  auto i = g->second.begin();
  std::advance(i, static_cast<long>(n));
  return i->second;
}

/// An answered check without a decision: count it, back off or apply the
/// final policy.
void count_check(self_ptr self, const std::string& txn, const std::string& why) {
  auto& st = self->state;
  auto i = st.pending.find(txn);
  if (i == st.pending.end() || st.ending.count(txn) != 0)
    return;
  auto rec = i->second;
  rec.set_checks(rec.checks() + 1);
  const auto& cfg = st.ctx->settings;
  if (rec.checks() >= cfg.txn_max_checks) {
    auto policy = cfg.txn_final_policy == "commit" ? pb::TXN_COMMIT
                                                   : pb::TXN_ROLLBACK;
    auto reason = "no outcome after " + std::to_string(rec.checks())
                  + " check-backs (last: " + why + "); final policy "
                  + cfg.txn_final_policy;
    st.pending[txn].set_checks(rec.checks());
    st.ctx->alerts->raise(alert{"txn_policy", txn, reason,
                                rec.message().id(), st.ctx->clock()});
    end(self, txn, policy, "policy", reason, nullptr);
    return;
  }
  auto shift = std::min<uint32_t>(rec.checks(), 20);
  auto backoff = std::min<uint64_t>(
    static_cast<uint64_t>(rec.check_after_ms()) << shift,
    cfg.txn_max_check_interval_ms);
  auto old_due = keys::txn_due_key(static_cast<uint64_t>(rec.next_check_ms()),
                                   txn);
  unindex(self, txn);
  rec.set_next_check_ms(st.ctx->clock() + static_cast<int64_t>(backoff));
  index(self, rec);
  pb::WriteBatch b;
  put(b, db::half, txn, rec.SerializeAsString());
  del(b, db::txn_due, old_due);
  put(b, db::txn_due,
      keys::txn_due_key(static_cast<uint64_t>(rec.next_check_ms()), txn), "");
  queue_write(self, std::move(b), [=](const caf::error& err) {
    if (err)
      EDDA_WARN("txn", txn << ": check count not stored: " << render(err));
  });
}

void check_due(self_ptr self) {
  auto& st = self->state;
  auto now = st.ctx->clock();
  std::vector<std::string> due_now;
  for (auto& [when, txn] : st.due) {
    if (when > now)
      break;
    if (st.checking.count(txn) == 0 && st.ending.count(txn) == 0)
      due_now.push_back(txn);
  }
  for (auto& txn : due_now) {
    auto& rec = st.pending[txn];
    auto checker = pick_checker(self, rec);
    if (!checker) {
      st.orphan_since.emplace(rec.producer_group(), now);
      if (orphaned(self, rec, now) && st.orphan_alerted.insert(txn).second) {
        auto& group = rec.producer_group();
        st.ctx->alerts->raise(alert{
          "txn_orphaned", txn,
          "transaction " + txn + " of producer group '" + group
            + "' in doubt for " + std::to_string((now - rec.created_ms()) / 1000)
            + " s and no producer of the group is alive to answer a "
              "check-back: "
            + (broker::is_node_group(group)
                 ? std::string{"its node answers from its saga records once "
                               "it serves again (restart it)"}
                 : std::string{"start one"})
            + ", or settle it with `edda txn resolve " + txn
            + " commit|rollback --by NAME`",
          rec.message().id(), now});
      }
      // Nobody to ask: try again later, without using up the budget.
      reschedule(self, txn,
                 now
                   + std::min<int64_t>(
                     rec.check_after_ms(),
                     static_cast<int64_t>(
                       st.ctx->settings.txn_max_check_interval_ms)));
      metrics::counter("txn.checks_undeliverable")++;
      continue;
    }
    st.orphan_since.erase(rec.producer_group());
    pb::CheckTxn q;
    q.set_txn_id(txn);
    q.set_producer_group(rec.producer_group());
    *q.mutable_message() = rec.message();
    q.set_check(rec.checks() + 1);
    st.checking.insert(txn);
    metrics::counter("txn.checks")++;
    self
      ->request(checker, milliseconds(st.ctx->settings.txn_check_timeout_ms), q)
      .then(
        [=](const pb::CheckAnswer& a) {
          self->state.checking.erase(txn);
          if (a.outcome() == pb::TXN_UNKNOWN) {
            count_check(self, txn, "producer answered unknown");
            return;
          }
          if (self->state.pending.count(txn) != 0)
            end(self, txn, a.outcome(), "check-back", "", nullptr);
        },
        [=](caf::error& err) {
          auto& st = self->state;
          st.checking.erase(txn);
          // A checker that left (its down notice may arrive while the check
          // is in flight; over the network CAF drops a request to a dead
          // actor, so we see a timeout) could not be asked: not delivered,
          // so it does not count. Forget it and ask again soon.
          bool gone = err == caf::sec::request_receiver_down;
          if (!gone) {
            gone = true;
            for (auto& [group, members] : st.producers)
              for (auto& [id, a] : members)
                if (a == checker)
                  gone = false;
          }
          if (gone) {
            for (auto& [group, members] : st.producers)
              for (auto i = members.begin(); i != members.end(); ++i)
                if (i->second == checker) {
                  members.erase(i);
                  break;
                }
            if (st.pending.count(txn) != 0)
              reschedule(self, txn, st.ctx->clock() + 100);
            metrics::counter("txn.checks_undeliverable")++;
            return;
          }
          count_check(self, txn, render(err));
        });
  }
  // Wake for the first entry that is not already being asked or ended; the
  // others are re-armed when their answer (or end) comes back.
  for (auto& [when, txn] : st.due)
    if (st.checking.count(txn) == 0 && st.ending.count(txn) == 0) {
      arm(self, std::max(when, now + 1));
      return;
    }
  if (!st.due.empty())
    arm(self, now + static_cast<int64_t>(st.ctx->settings.txn_check_timeout_ms));
}

void to_wire(const caf::error& err, pb::BatchItem& item) {
  auto code = code_of(err);
  item.set_code(static_cast<uint32_t>(code == errc::none ? errc::unavailable
                                                         : code));
  item.set_error(render(err));
}

/// Answers a batch request: runs `item(i, slot, done)` for each of its `n`
/// items, and once every item called `done` (having filled its slot on an
/// error or a result) replies with all the slots, in order.
template <class F>
caf::result<pb::BatchResult> for_each_item(self_ptr self, int n, F item) {
  auto rp = self->make_response_promise<pb::BatchResult>();
  auto res = std::make_shared<pb::BatchResult>();
  for (int i = 0; i < n; ++i)
    res->add_items();
  if (n == 0) {
    rp.deliver(*res);
    return rp;
  }
  auto kept = self->state.open->keep(rp);
  auto left = std::make_shared<int>(n);
  for (int i = 0; i < n; ++i)
    item(i, res->mutable_items(i), [=]() mutable {
      if (--*left == 0)
        kept.deliver(*res);
    });
  return rp;
}

/// Who ended a transaction, as recorded: the producer unless an operator.
std::string ended_by(const pb::EndTxn& e) {
  return e.resolved_by().empty() ? std::string{"producer"} : e.resolved_by();
}

/// Validates and stores a half message (durable, invisible); `done` runs
/// once it is stored, or with the reason it was refused.
void accept_half(self_ptr self, pb::HalfMessage h, write_cb done) {
  auto& st = self->state;
  if (auto err = check_producer_group(h.producer_group())) {
    done(err);
    return;
  }
  if (h.txn_id().empty() || h.txn_id().size() > 160) {
    done(make_error(errc::invalid_argument, "txn id must be 1-160 bytes"));
    return;
  }
  if (h.message().topic().empty()) {
    done(make_error(errc::invalid_argument, "half message has no topic"));
    return;
  }
  for (const auto& t : h.message().tags())
    if (!broker::selectable_tag(t)) {
      done(make_error(errc::invalid_argument,
                      "half message: tag '" + t.substr(0, 80)
                        + "' could never be selected by a subscription (a tag "
                          "is 1-64 of A-Z a-z 0-9 _ . : -)"));
      return;
    }
  auto size = wire::payload_size(h.message());
  if (size > st.ctx->settings.max_message_size) {
    done(make_error(errc::message_too_large,
                    "half message is " + std::to_string(size)
                      + " bytes, over the limit of "
                      + std::to_string(st.ctx->settings.max_message_size)));
    return;
  }
  if (st.pending.count(h.txn_id()) != 0 || load(self, h.txn_id())) {
    // Same id again: the first half message stands (idempotent resend).
    done(caf::error{});
    return;
  }
  auto topic = h.message().topic();
  with_topic(self, topic, [=, half = std::move(h)](const caf::error& err,
                                                   uint32_t) mutable {
    if (err) {
      done(err);
      return;
    }
    auto& st = self->state;
    auto now = st.ctx->clock();
    pb::TxnRecord rec;
    rec.set_txn_id(half.txn_id());
    rec.set_producer_group(half.producer_group());
    rec.set_client_id(half.client_id());
    *rec.mutable_message() = std::move(*half.mutable_message());
    rec.mutable_message()->set_txn_id(half.txn_id());
    if (rec.message().id().empty())
      rec.mutable_message()->set_id(new_unique_id());
    if (rec.message().born_ms() == 0)
      rec.mutable_message()->set_born_ms(now);
    rec.set_state(pb::TxnRecord::PREPARED);
    rec.set_created_ms(now);
    auto after = half.check_after_ms() > 0
                   ? half.check_after_ms()
                   : static_cast<int64_t>(st.ctx->settings.txn_check_after_ms);
    rec.set_check_after_ms(after);
    rec.set_next_check_ms(now + after);
    pb::WriteBatch b;
    put(b, db::half, rec.txn_id(), rec.SerializeAsString());
    put(b, db::txn_due,
        keys::txn_due_key(static_cast<uint64_t>(rec.next_check_ms()),
                          rec.txn_id()),
        "");
    queue_write(self, std::move(b), [=](const caf::error& err) {
      if (err) {
        done(err);
        return;
      }
      index(self, rec);
      metrics::counter("txn.half")++;
      done(caf::error{});
    });
  });
}

/// Registers `checker` as a live member of its producer group (asked in
/// check-backs).
caf::result<pb::ProducerRegistered>
register_producer(self_ptr self, const pb::RegisterProducer& r,
                  const caf::actor& checker) {
  if (auto err = check_producer_group(r.group()))
    return err;
  if (r.client_id().empty())
    return make_error(errc::invalid_argument, "client_id is empty");
  if (!checker)
    return make_error(errc::invalid_argument, "producer has no address");
  auto& members = self->state.producers[r.group()];
  auto& slot = members[r.client_id()];
  if (slot != checker) {
    slot = checker;
    self->monitor(checker);
  }
  pb::ProducerRegistered ok;
  ok.set_group(r.group());
  ok.set_members(static_cast<uint32_t>(members.size()));
  return ok;
}

caf::behavior coordinator(self_ptr self, broker::context_ptr ctx,
                          caf::actor topics) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.topics = std::move(topics);
  st.open = open_promises::attach(self, "the transaction coordinator");
  {
    // Recovery: every transaction without an outcome is checked back.
    std::set<std::string> txns;
    auto txn_r = st.ctx->env->read();
    txn_r.scan(db::txn_due, "", "", [&](std::string_view k, std::string_view) {
      txns.emplace(k.substr(8));
      return true;
    });
    for (auto& t : txns)
      if (auto v = txn_r.get(db::half, t)) {
        pb::TxnRecord rec;
        if (rec.ParseFromArray(v->data(), static_cast<int>(v->size()))
            && rec.state() == pb::TxnRecord::PREPARED) {
          st.pending[t] = rec;
          st.due.emplace(rec.next_check_ms(), t);
          st.due_at[t] = rec.next_check_ms();
        }
      }
    if (!st.pending.empty())
      EDDA_INFO("txn", "recovered " << st.pending.size()
                                    << " transactions without outcome");
  }
  if (!st.due.empty())
    arm(self, st.due.begin()->first);
  self->delayed_send(self, std::chrono::minutes(10), wire::drain_atom::value);
  self->set_down_handler([=](caf::down_msg& dm) {
    for (auto& [group, members] : self->state.producers)
      for (auto i = members.begin(); i != members.end(); ++i)
        if (i->second.address() == dm.source) {
          EDDA_INFO("txn", "producer " << i->first << " of " << group
                                       << " left");
          members.erase(i);
          return;
        }
  });
  return {
    [=](const pb::RegisterProducer& r) -> caf::result<pb::ProducerRegistered> {
      return register_producer(
        self, r, caf::actor_cast<caf::actor>(self->current_sender()));
    },
    [=](const pb::RegisterProducer& r, const caf::actor& checker)
      -> caf::result<pb::ProducerRegistered> {
      // A registration given again by this coordinator's keeper after a
      // restart (node/supervisor.hpp): `checker` is the producer that sent
      // it.
      return register_producer(self, r, checker);
    },
    [=](const pb::UnregisterProducer& u) {
      auto& members = self->state.producers[u.group()];
      auto i = members.find(u.client_id());
      if (i != members.end()) {
        self->demonitor(i->second);
        members.erase(i);
      }
      pb::Done d;
      d.set_what("producer " + u.client_id() + " left " + u.group());
      return d;
    },
    [=](pb::HalfMessage& h) -> caf::result<pb::HalfAck> {
      auto rp = self->make_response_promise<pb::HalfAck>();
      auto kept = self->state.open->keep(rp);
      auto txn_id = h.txn_id();
      accept_half(self, std::move(h), [=](const caf::error& err) mutable {
        if (err) {
          kept.deliver(err);
          return;
        }
        pb::HalfAck ack;
        ack.set_txn_id(txn_id);
        kept.deliver(ack);
      });
      return rp;
    },
    [=](pb::HalfBatch& batch) {
      return for_each_item(
        self, batch.halves_size(),
        [&](int i, pb::BatchItem* slot, std::function<void()> done) {
          slot->set_txn_id(batch.halves(i).txn_id());
          accept_half(self, std::move(*batch.mutable_halves(i)),
                      [=](const caf::error& err) {
                        if (err)
                          to_wire(err, *slot);
                        done();
                      });
        });
    },
    [=](const pb::EndTxn& e) -> caf::result<pb::EndResult> {
      auto rp = self->make_response_promise<pb::EndResult>();
      end(self, e.txn_id(), e.outcome(), ended_by(e), "",
          [kept = self->state.open->keep(rp)](
            caf::expected<pb::EndResult> r) mutable {
            if (r)
              kept.deliver(std::move(*r));
            else
              kept.deliver(r.error());
          });
      return rp;
    },
    [=](const pb::EndBatch& batch) {
      return for_each_item(
        self, batch.ends_size(),
        [&](int i, pb::BatchItem* slot, std::function<void()> done) {
          const auto& e = batch.ends(i);
          end(self, e.txn_id(), e.outcome(), ended_by(e), "",
              [=](caf::expected<pb::EndResult> r) {
                if (r) {
                  *slot->mutable_end() = std::move(*r);
                  // The producer has the message: send back where it went.
                  auto* m = slot->mutable_end()->mutable_record()->mutable_message();
                  m->clear_body();
                  m->clear_properties();
                } else {
                  to_wire(r.error(), *slot);
                }
                done();
              });
        });
    },
    [=](const pb::TxnList& q) {
      auto& st = self->state;
      pb::TxnRecords out;
      out.set_now_ms(st.ctx->clock());
      auto limit = q.limit() == 0 ? 1000u : q.limit();
      for (auto& [when, txn] : st.due) {
        if (static_cast<uint32_t>(out.records_size()) >= limit)
          break;
        *out.add_records() = shown(self, txn);
      }
      return out;
    },
    [=](const pb::TxnShow& q) -> caf::result<pb::TxnRecord> {
      if (self->state.pending.count(q.txn_id()) != 0)
        return shown(self, q.txn_id());
      if (auto rec = load(self, q.txn_id()))
        return *rec;
      return make_error(errc::unknown_txn, "no transaction '" + q.txn_id() + "'");
    },
    [=](wire::flush_atom) { flush(self); },
    [=](wire::tick_atom) {
      self->state.next_wakeup = std::numeric_limits<int64_t>::max();
      check_due(self);
    },
    [=](wire::drain_atom) {
      // Resolved outcomes older than txn.retention are forgotten; an end
      // for them afterwards is unknown_txn.
      auto& st = self->state;
      auto cutoff = st.ctx->clock()
                    - static_cast<int64_t>(st.ctx->settings.txn_retention_ms);
      pb::WriteBatch b;
      {
        auto txn_r = st.ctx->env->read();
        txn_r.scan(db::half, "", "", [&](std::string_view k, std::string_view v) {
          pb::TxnRecord rec;
          if (rec.ParseFromArray(v.data(), static_cast<int>(v.size()))
              && rec.state() != pb::TxnRecord::PREPARED
              && rec.resolved_ms() < cutoff)
            del(b, db::half, std::string{k});
          return b.ops_size() < 10000;
        });
      }
      if (b.ops_size() > 0)
        queue_write(self, std::move(b), [](const caf::error&) {});
      self->delayed_send(self, std::chrono::minutes(10), wire::drain_atom::value);
    },
  };
}

} // namespace

caf::error check_producer_group(const std::string& g) {
  if (g.empty() || g.size() > 120)
    return make_error(errc::invalid_producer_group,
                      "producer group must be 1-120 characters, got "
                        + std::to_string(g.size()));
  if (!only_name_chars(g))
    return make_error(errc::invalid_producer_group,
                      "producer group '" + g
                        + "' may only contain letters, digits, '_', '-' "
                          "and '.'");
  return caf::none;
}

caf::actor spawn_coordinator(caf::actor_system& sys, broker::context_ptr ctx,
                             caf::actor topics) {
  return sys.spawn(coordinator, std::move(ctx), std::move(topics));
}

} // namespace edda::txn
