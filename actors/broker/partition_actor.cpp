#include "broker/partition_actor.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "base/open_promises.hpp"
#include "broker/tag_expression.hpp"
#include "storage/environment.hpp"
#include "storage/keys.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <optional>

namespace edda::broker {

namespace {

namespace pb = wire::pb;
using storage::db;
namespace keys = storage::keys;

constexpr size_t max_batch_messages = 256;
constexpr size_t max_batch_bytes = 1u << 20;

struct inflight_entry {
  int64_t delivered_ms = 0;   // 0 = waiting for (re)delivery
  int64_t not_before_ms = 0;  // broadcast retries wait for their delay
  uint32_t attempts = 0;      // broadcast: failed attempts so far
};

struct cursor_state {
  std::string name;  // group, or group@client
  std::string group;
  bool broadcast = false;
  caf::actor member;
  std::string member_id;
  tag_expression filter;
  uint64_t token = 0; // the highest coordinator token seen (cluster)
  uint64_t generation = 0;
  uint64_t next_read = 0;
  uint64_t persisted = 0;
  std::map<uint64_t, inflight_entry> inflight;
  uint32_t max_reconsume = 16;
  std::vector<uint64_t> delays;

  uint64_t committed() const {
    return inflight.empty() ? next_read : inflight.begin()->first;
  }
};

struct partition_state {
  context_ptr ctx;
  pb::TopicMeta meta;
  uint32_t partition = 0;
  uint64_t first_offset = 0;
  uint64_t next_offset = 0;
  uint64_t durable_end = 0;
  std::map<std::string, cursor_state> cursors;
  bool tick_scheduled = false;
  // Retention (meta.retention_ms / retention_bytes): what the kept messages
  // take, counted once retention by size is set; a trim pass at a time.
  uint64_t bytes = 0;
  bool bytes_known = false;
  bool trim_scheduled = false;
  bool trimming = false;
  /// Produces and acks waiting for their commit: failed at once if this
  /// partition ends first (its manager restarted), not at the timeout.
  std::shared_ptr<open_promises> open;
  static inline const char* name = "edda.partition";
};

using self_ptr = caf::stateful_actor<partition_state>*;

std::chrono::milliseconds ms(int64_t x) {
  return std::chrono::milliseconds{x};
}

void put(pb::WriteBatch& b, db d, std::string key, std::string value) {
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(d));
  op->set_key(std::move(key));
  op->set_value(std::move(value));
}

void put_offset(self_ptr self, cursor_state& c, pb::WriteBatch& b) {
  auto& st = self->state;
  pb::CommittedOffset rec;
  rec.set_offset(c.committed());
  rec.set_updated_ms(st.ctx->clock());
  rec.set_token(c.token);
  put(b, db::offsets,
      keys::offset_key(c.name, st.meta.id(), st.partition),
      rec.SerializeAsString());
}

/// Delivers what `c` may receive now: pending redeliveries first, then new
/// committed messages that pass the filter, within the inflight and span
/// limits.
void pump(self_ptr self, cursor_state& c) {
  auto& st = self->state;
  if (!c.member)
    return;
  const auto& cfg = st.ctx->settings;
  auto now = st.ctx->clock();
  pb::Deliver d;
  size_t bytes = 0;
  auto txn = st.ctx->env->read();
  auto full = [&] {
    return static_cast<size_t>(d.messages_size()) >= max_batch_messages
           || bytes >= max_batch_bytes;
  };
  std::vector<uint64_t> vanished;
  for (auto& [off, e] : c.inflight) {
    if (full())
      break;
    if (e.delivered_ms != 0 || e.not_before_ms > now)
      continue;
    auto v = txn.get(db::log, keys::log_key(st.meta.id(), st.partition, off));
    if (!v) {
      vanished.push_back(off);
      continue;
    }
    auto* m = d.add_messages();
    if (!m->ParseFromArray(v->data(), static_cast<int>(v->size()))) {
      d.mutable_messages()->RemoveLast();
      vanished.push_back(off);
      continue;
    }
    if (c.broadcast)
      m->set_reconsume_times(e.attempts);
    bytes += v->size();
    e.delivered_ms = now;
  }
  for (auto off : vanished)
    c.inflight.erase(off);
  auto room = [&] {
    return c.inflight.size() < cfg.max_inflight && c.next_read < st.durable_end
           && c.next_read - c.committed() < cfg.max_span && !full();
  };
  if (room()) {
    auto prefix = keys::log_prefix(st.meta.id(), st.partition);
    auto from = keys::log_key(st.meta.id(), st.partition, c.next_read);
    pb::Message msg;
    txn.scan(db::log, from, prefix,
             [&](std::string_view k, std::string_view v) {
               auto off = keys::log_key_offset(k);
               if (off >= st.durable_end)
                 return false;
               if (!msg.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
                 EDDA_ERROR("partition", st.meta.name() << "/" << st.partition
                                           << ": unparsable record at offset "
                                           << off << ", skipped");
                 c.next_read = off + 1;
                 return room();
               }
               c.next_read = off + 1;
               if (c.filter.matches_range(msg.tags())) {
                 *d.add_messages() = msg;
                 bytes += v.size();
                 c.inflight[off].delivered_ms = now;
               }
               return room();
             });
    // Nothing more stored below durable_end: skip holes left by failed
    // writes so that the committed offset can advance past them.
    if (c.next_read < st.durable_end && c.inflight.size() < cfg.max_inflight
        && c.next_read - c.committed() < cfg.max_span && !full())
      c.next_read = st.durable_end;
  }
  if (d.messages_size() == 0)
    return;
  d.set_cursor(c.name);
  d.set_topic(st.meta.name());
  d.set_partition(st.partition);
  d.set_generation(c.generation);
  metrics::counter("broker.delivered") += d.messages_size();
  pb::DeliverFrame f;
  d.SerializeToString(f.mutable_deliver());
  self->send(c.member, std::move(f));
}

void pump_all(self_ptr self) {
  for (auto& [name, c] : self->state.cursors)
    pump(self, c);
}

void schedule_tick(self_ptr self) {
  if (self->state.tick_scheduled)
    return;
  self->state.tick_scheduled = true;
  self->delayed_send(self, std::chrono::seconds(1), wire::tick_atom::value);
}

/// One failed delivery of `off` (nack or timeout). Clustering: a retry copy
/// (or a dead letter) is written to `b` and the entry leaves the window.
/// Broadcast: the message is redelivered here after its delay.
void fail_one(self_ptr self, cursor_state& c, uint64_t off,
              const std::string& reason, storage::read_txn& txn,
              pb::WriteBatch& b, std::vector<int64_t>& dues,
              std::vector<alert>& alerts) {
  auto& st = self->state;
  auto it = c.inflight.find(off);
  if (it == c.inflight.end())
    return; // already acked or failed: idempotent
  auto now = st.ctx->clock();
  auto v = txn.get(db::log, keys::log_key(st.meta.id(), st.partition, off));
  pb::Message msg;
  if (!v || !msg.ParseFromArray(v->data(), static_cast<int>(v->size()))) {
    c.inflight.erase(it);
    return;
  }
  auto delay_for = [&](uint32_t attempt) {
    auto idx = std::min<size_t>(attempt == 0 ? 0 : attempt - 1,
                                c.delays.size() - 1);
    return static_cast<int64_t>(c.delays[idx]);
  };
  auto dead = [&](uint32_t attempts) {
    pb::DeadLetter dl;
    *dl.mutable_message() = msg;
    dl.mutable_message()->set_reconsume_times(attempts);
    dl.mutable_message()->set_last_error(reason);
    if (dl.message().origin_topic().empty()) {
      dl.mutable_message()->set_origin_topic(st.meta.name());
      dl.mutable_message()->set_origin_partition(st.partition);
      dl.mutable_message()->set_origin_offset(off);
    }
    dl.set_group(c.group);
    dl.set_dead_ms(now);
    dl.set_reason(reason);
    put(b, db::dlq, keys::dlq_key(c.group, static_cast<uint64_t>(now), msg.id()),
        dl.SerializeAsString());
    alerts.push_back(alert{"dlq", c.group,
                           "message moved to %DLQ%" + c.group + " after "
                             + std::to_string(attempts)
                             + " failed deliveries; last error: " + reason,
                           msg.id(), now});
  };
  if (c.broadcast) {
    auto& e = it->second;
    ++e.attempts;
    if (e.attempts > c.max_reconsume) {
      dead(e.attempts);
      c.inflight.erase(it);
      return;
    }
    e.delivered_ms = 0;
    e.not_before_ms = now + delay_for(e.attempts);
    return;
  }
  uint32_t attempts = msg.reconsume_times() + 1;
  c.inflight.erase(it);
  if (attempts > c.max_reconsume) {
    dead(attempts);
    return;
  }
  pb::Delayed d;
  auto* copy = d.mutable_message();
  *copy = msg;
  copy->set_reconsume_times(attempts);
  copy->set_last_error(reason);
  if (copy->origin_topic().empty()) {
    copy->set_origin_topic(st.meta.name());
    copy->set_origin_partition(st.partition);
    copy->set_origin_offset(off);
  }
  auto due = now + delay_for(attempts);
  d.set_target_topic(retry_topic(c.group));
  d.set_target_partition(-1);
  d.set_due_ms(due);
  put(b, db::delay, keys::delay_key(static_cast<uint64_t>(due), c.name, msg.id()),
      d.SerializeAsString());
  dues.push_back(due);
  metrics::counter("broker.retries")++;
}

/// Writes `b`, then runs `done(err)`. Notifies the scheduler of `dues` and
/// raises `alerts` only after the commit.
template <class F>
void write(self_ptr self, pb::WriteBatch b, std::vector<int64_t> dues,
           std::vector<alert> alerts, F done) {
  auto ctx = self->state.ctx;
  self->request(ctx->writer, ms(ctx->write_timeout_ms), std::move(b))
    .then(
      [=](const pb::WriteResult&) mutable {
        for (auto due : dues) {
          pb::DelayAdded da;
          da.set_due_ms(due);
          self->send(ctx->scheduler, std::move(da));
        }
        for (auto& a : alerts)
          ctx->alerts->raise(a);
        done(caf::error{});
      },
      [=](caf::error& err) mutable { done(err); });
}

/// Appends `msgs` (and `extra` ops) in one transaction; answers `rp` after
/// the commit. Messages with a future deliver_at go to the delay db.
void append(self_ptr self, google::protobuf::RepeatedPtrField<pb::Message>* msgs,
            const pb::WriteBatch* extra,
            open_promises::kept rp, uint32_t topic_partitions = 0) {
  // Internal appends (due delayed messages, retry copies) are never delayed
  // again: their time has come.
  bool allow_delay = extra == nullptr;
  auto& st = self->state;
  const auto& cfg = st.ctx->settings;
  if (msgs->empty() && extra == nullptr) {
    rp.deliver(make_error(errc::invalid_argument, "empty produce request"));
    return;
  }
  for (int i = 0; i < msgs->size(); ++i) {
    // A client's message (not a retry copy or a due delayed one, stored
    // before): a tag no subscription could select is refused.
    if (extra == nullptr)
      for (const auto& t : msgs->Get(i).tags())
        if (!selectable_tag(t)) {
          rp.deliver(make_error(
            errc::invalid_argument,
            "message " + std::to_string(i) + ": tag '" + t.substr(0, 80)
              + "' could never be selected by a subscription (a tag is 1-64 "
                "of A-Z a-z 0-9 _ . : -); nothing in this batch was stored"));
          return;
        }
    for (const auto& [k, v] : msgs->Get(i).properties())
      if (k.empty() || !is_utf8(k)) {
        rp.deliver(make_error(errc::invalid_argument,
                              "message " + std::to_string(i)
                                + ": property names must be non-empty UTF-8; "
                                  "nothing in this batch was stored"));
        return;
      }
    auto size = wire::payload_size(msgs->Get(i));
    if (size > cfg.max_message_size) {
      rp.deliver(make_error(
        errc::message_too_large,
        "message " + std::to_string(i) + " is " + std::to_string(size)
          + " bytes, over the limit of " + std::to_string(cfg.max_message_size)
          + " bytes (broker.max_message_size); nothing in this batch was "
            "stored"));
      return;
    }
  }
  auto now = st.ctx->clock();
  pb::WriteBatch b;
  pb::ProduceResult res;
  res.set_topic(st.meta.name());
  res.set_partition(st.partition);
  res.set_topic_partitions(topic_partitions);
  std::vector<int64_t> dues;
  uint64_t added_bytes = 0;
  for (auto& m : *msgs) {
    if (m.id().empty())
      m.set_id(new_unique_id());
    m.set_topic(st.meta.name());
    m.set_partition(st.partition);
    m.set_stored_ms(now);
    if (m.born_ms() == 0)
      m.set_born_ms(now);
    res.add_ids(m.id());
    if (allow_delay && m.deliver_at_ms() > now) {
      pb::Delayed d;
      *d.mutable_message() = m;
      d.set_target_topic(st.meta.name());
      d.set_target_partition(static_cast<int32_t>(st.partition));
      d.set_due_ms(m.deliver_at_ms());
      put(b, db::delay,
          keys::delay_key(static_cast<uint64_t>(m.deliver_at_ms()), "", m.id()),
          d.SerializeAsString());
      dues.push_back(m.deliver_at_ms());
      res.add_offsets(0);
      continue;
    }
    auto off = st.next_offset++;
    m.set_offset(off);
    auto record = m.SerializeAsString();
    added_bytes += record.size();
    put(b, db::log, keys::log_key(st.meta.id(), st.partition, off),
        std::move(record));
    res.add_offsets(off);
  }
  if (extra != nullptr)
    for (const auto& op : extra->ops())
      *b.add_ops() = op;
  auto end = st.next_offset;
  auto count = msgs->size();
  write(self, std::move(b), std::move(dues), {},
        [=](const caf::error& err) mutable {
          if (err) {
            rp.deliver(err);
            return;
          }
          auto& st = self->state;
          st.durable_end = std::max(st.durable_end, end);
          st.bytes += added_bytes;
          metrics::counter("broker.stored") += static_cast<uint64_t>(count);
          rp.deliver(std::move(res));
          pump_all(self);
        });
}

/// Messages a trim pass drops at most (one write; the next pass follows at
/// once).
constexpr size_t max_trim_batch = 10000;

bool has_retention(const partition_state& st) {
  return st.meta.retention_ms() > 0 || st.meta.retention_bytes() > 0;
}

void schedule_trim(self_ptr self) {
  auto& st = self->state;
  if (st.trim_scheduled || !has_retention(st))
    return;
  st.trim_scheduled = true;
  self->delayed_send(self, std::chrono::seconds(2), wire::trim_atom::value);
}

/// Drops the oldest messages while they are older than retention_ms or the
/// partition holds more than retention_bytes; cursors below the new low
/// watermark move up to it.
void trim(self_ptr self) {
  auto& st = self->state;
  if (!has_retention(st) || st.trimming)
    return;
  auto txn = st.ctx->env->read();
  auto prefix = keys::log_prefix(st.meta.id(), st.partition);
  if (st.meta.retention_bytes() > 0 && !st.bytes_known) {
    st.bytes = 0;
    // Only what is durable: appends committed since are counted when
    // their commit is answered.
    txn.scan(db::log, prefix, prefix,
             [&](std::string_view k, std::string_view v) {
               if (keys::log_key_offset(k) >= st.durable_end)
                 return false;
               st.bytes += v.size();
               return true;
             });
    st.bytes_known = true;
  }
  // Stored before `cutoff`: too old (a retention longer than the clock's
  // age keeps everything).
  auto now = st.ctx->clock();
  auto cutoff = st.meta.retention_ms() > 0
                    && st.meta.retention_ms() < static_cast<uint64_t>(now)
                  ? now - static_cast<int64_t>(st.meta.retention_ms())
                  : std::numeric_limits<int64_t>::min();
  // Never the newest record: the next offset is found from it at a
  // restart, so offsets never start again at 0. Nor a message out for
  // delivery to a live member: its nack must still find it (a retry copy,
  // a dead letter); it goes in a later pass, once settled.
  uint64_t stop = st.durable_end == 0 ? 0 : st.durable_end - 1;
  for (auto& [name, c] : st.cursors)
    if (c.member && !c.inflight.empty())
      stop = std::min(stop, c.inflight.begin()->first);
  uint64_t kept = st.bytes;
  uint64_t dropped_bytes = 0;
  uint64_t new_first = st.first_offset;
  size_t count = 0;
  pb::WriteBatch b;
  pb::Message m;
  txn.scan(db::log, prefix, prefix,
           [&](std::string_view k, std::string_view v) {
             auto off = keys::log_key_offset(k);
             if (off >= stop || count == max_trim_batch)
               return false;
             bool old = m.ParseFromArray(v.data(), static_cast<int>(v.size()))
                        && m.stored_ms() < cutoff;
             bool over = st.meta.retention_bytes() > 0
                         && kept > st.meta.retention_bytes();
             if (!old && !over)
               return false;
             auto* op = b.add_ops();
             op->set_db(static_cast<uint32_t>(db::log));
             op->set_key(std::string(k));
             op->set_kind(pb::WriteOp::DEL);
             kept -= std::min<uint64_t>(kept, v.size());
             dropped_bytes += v.size();
             new_first = off + 1;
             ++count;
             return true;
           });
  if (count == 0) {
    schedule_trim(self);
    return;
  }
  st.trimming = true;
  write(self, std::move(b), {}, {}, [=](const caf::error& err) {
    auto& st = self->state;
    st.trimming = false;
    if (err) {
      EDDA_WARN_F("partition", st.meta.name() << "/" << st.partition
                                << ": retention could not drop " << count
                                << " messages: " << render(err),
                  {"topic", st.meta.name()},
                  {"partition", std::to_string(st.partition)});
      schedule_trim(self);
      return;
    }
    st.first_offset = std::max(st.first_offset, new_first);
    st.bytes -= std::min(st.bytes, dropped_bytes);
    for (auto& [name, c] : st.cursors) {
      c.inflight.erase(c.inflight.begin(),
                       c.inflight.lower_bound(st.first_offset));
      c.next_read = std::max(c.next_read, st.first_offset);
    }
    metrics::counter("broker.retention_dropped") += count;
    EDDA_DEBUG_F("partition", st.meta.name() << "/" << st.partition
                                 << ": retention dropped " << count
                                 << " messages; low watermark "
                                 << st.first_offset,
                 {"topic", st.meta.name()},
                 {"partition", std::to_string(st.partition)});
    if (count == max_trim_batch)
      self->send(self, wire::trim_atom::value);
    else
      schedule_trim(self);
  });
}

cursor_state& open_cursor(self_ptr self, const pb::AssignCursor& a) {
  auto& st = self->state;
  auto i = st.cursors.find(a.cursor());
  if (i != st.cursors.end())
    return i->second;
  cursor_state c;
  c.name = a.cursor();
  c.group = a.group();
  c.broadcast = a.cursor() != a.group();
  auto txn = st.ctx->env->read();
  auto v = txn.get(db::offsets,
                   keys::offset_key(c.name, st.meta.id(), st.partition));
  pb::CommittedOffset rec;
  if (v && rec.ParseFromArray(v->data(), static_cast<int>(v->size()))) {
    // Retention may have dropped what it had not consumed.
    c.next_read = std::max(rec.offset(), st.first_offset);
    c.token = rec.token(); // an older owner stays refused after a restart
  } else {
    c.next_read = a.from() == pb::LATEST ? st.durable_end : st.first_offset;
  }
  c.persisted = c.next_read;
  return st.cursors.emplace(c.name, std::move(c)).first->second;
}

/// The first stored offset at or after `from` (below durable_end) and when
/// it was stored.
std::optional<std::pair<uint64_t, int64_t>>
stored_at(const partition_state& st, storage::read_txn& txn, uint64_t from) {
  std::optional<std::pair<uint64_t, int64_t>> out;
  auto prefix = keys::log_prefix(st.meta.id(), st.partition);
  txn.scan(db::log, keys::log_key(st.meta.id(), st.partition, from), prefix,
           [&](std::string_view k, std::string_view v) {
             auto off = keys::log_key_offset(k);
             pb::Message m;
             if (off < st.durable_end
                 && m.ParseFromArray(v.data(), static_cast<int>(v.size())))
               out.emplace(off, m.stored_ms());
             return false;
           });
  return out;
}

/// The first offset whose message was stored at or after `at_ms`
/// (durable_end if none): a binary search, as messages are stored in
/// order of time.
uint64_t offset_at_time(const partition_state& st, storage::read_txn& txn,
                        int64_t at_ms) {
  uint64_t lo = st.first_offset;
  uint64_t hi = st.durable_end;
  while (lo < hi) {
    auto mid = lo + (hi - lo) / 2;
    auto x = stored_at(st, txn, mid);
    if (!x || x->first >= hi)
      hi = mid;
    else if (x->second < at_ms)
      lo = x->first + 1;
    else
      hi = mid;
  }
  return lo;
}

/// Messages read by one FindMessages at most (the reply says when the scan
/// stopped there).
constexpr uint64_t max_find_scan = 200'000;

pb::FoundMessages find_messages(const partition_state& st,
                                const pb::FindMessages& req) {
  pb::FoundMessages out;
  auto limit = req.limit() == 0 ? 100u : req.limit();
  auto txn = st.ctx->env->read();
  auto from = req.since_ms() > 0 ? offset_at_time(st, txn, req.since_ms())
                                 : st.first_offset;
  auto prefix = keys::log_prefix(st.meta.id(), st.partition);
  pb::Message m;
  uint64_t scanned = 0;
  txn.scan(db::log, keys::log_key(st.meta.id(), st.partition, from), prefix,
           [&](std::string_view k, std::string_view v) {
             if (keys::log_key_offset(k) >= st.durable_end)
               return false;
             if (scanned++ == max_find_scan) {
               out.set_truncated(true);
               return false;
             }
             if (!m.ParseFromArray(v.data(), static_cast<int>(v.size())))
               return true;
             if ((!req.id().empty() && m.id() != req.id())
                 || (req.by_key() && m.key() != req.key()))
               return true;
             if (static_cast<uint32_t>(out.messages_size()) == limit) {
               out.set_truncated(true);
               return false;
             }
             auto* hit = out.add_messages();
             *hit = m;
             if (req.max_body() > 0 && hit->body().size() > req.max_body())
               hit->mutable_body()->resize(req.max_body());
             return req.id().empty(); // an id is unique: done
           });
  out.set_scanned(scanned);
  return out;
}

caf::behavior partition_actor(self_ptr self, context_ptr ctx,
                              pb::TopicMeta meta, uint32_t partition) {
  auto& st = self->state;
  st.ctx = ctx;
  st.meta = std::move(meta);
  st.partition = partition;
  st.open = open_promises::attach(self, "partition " + st.meta.name() + "/"
                                          + std::to_string(partition));
  {
    auto txn = ctx->env->read();
    auto prefix = keys::log_prefix(st.meta.id(), partition);
    if (auto last = txn.last_key(db::log, prefix))
      st.next_offset = keys::log_key_offset(*last) + 1;
    txn.scan(db::log, prefix, prefix, [&](std::string_view k, std::string_view) {
      st.first_offset = keys::log_key_offset(k);
      return false;
    });
    st.durable_end = st.next_offset;
  }
  schedule_trim(self);
  return {
    [=](wire::trim_atom) {
      self->state.trim_scheduled = false;
      trim(self);
    },
    [=](const pb::TopicMeta& meta) {
      // The topic's retention changed (edda topic alter): applied now.
      auto& st = self->state;
      st.meta.set_retention_ms(meta.retention_ms());
      st.meta.set_retention_bytes(meta.retention_bytes());
      if (st.meta.retention_bytes() == 0)
        st.bytes_known = false;
      if (!st.trimming)
        trim(self);
    },
    [=](pb::ProduceRequest& req) -> caf::result<pb::ProduceResult> {
      auto rp = self->make_response_promise<pb::ProduceResult>();
      append(self, req.mutable_messages(), nullptr, self->state.open->keep(rp),
             req.topic_partitions());
      return rp;
    },
    [=](pb::AppendInternal& req) -> caf::result<pb::ProduceResult> {
      auto rp = self->make_response_promise<pb::ProduceResult>();
      append(self, req.mutable_messages(), &req.extra(),
             self->state.open->keep(rp));
      return rp;
    },
    [=](const pb::AssignCursor& a, caf::actor member) {
      auto& c = open_cursor(self, a);
      // Fencing: a coordinator's token is the create_revision of its
      // ownership key in etcd; a newer owner has a higher one. Assignments
      // of an older owner (one that lost its lease, paused or cut off) are
      // refused; within one owner, older generations are.
      if (a.token() < c.token) {
        metrics::counter("cluster.stale_refused")++;
        EDDA_WARN("partition", self->state.meta.name()
                                 << "/" << self->state.partition
                                 << ": refused an assignment of "
                                 << a.cursor() << " with token " << a.token()
                                 << " (the current owner's is " << c.token
                                 << ")");
        return;
      }
      if (a.token() > c.token) {
        c.token = a.token();
        c.generation = 0; // a new owner counts its generations anew
        // Kept with the offset, so that a restarted partition still
        // refuses the older owner.
        pb::WriteBatch b;
        put_offset(self, c, b);
        self
          ->request(self->state.ctx->writer,
                    std::chrono::milliseconds(self->state.ctx->write_timeout_ms),
                    std::move(b))
          .then([](const pb::WriteResult&) {},
                [](caf::error& err) {
                  EDDA_WARN("partition", "could not keep a coordinator token: "
                                           << render(err));
                });
      }
      if (a.generation() < c.generation)
        return; // stale assignment from before a newer rebalance
      c.generation = a.generation();
      if (a.revoke()) {
        if (!a.member_id().empty() && a.member_id() != c.member_id)
          return;
        c.member = nullptr;
        c.member_id.clear();
        for (auto& [off, e] : c.inflight)
          e.delivered_ms = 0;
        return;
      }
      // Handles compare by address, but after the member's node link
      // dropped and came back CAF makes a new proxy for the same address
      // and the old one reaches nobody: a new handle object counts as a
      // new owner too.
      if (c.member != member
          || caf::actor_cast<caf::abstract_actor*>(c.member)
               != caf::actor_cast<caf::abstract_actor*>(member)) {
        // A new owner gets everything the old one had not acknowledged.
        for (auto& [off, e] : c.inflight)
          e.delivered_ms = 0;
      }
      c.member = member;
      c.member_id = a.member_id();
      if (auto f = tag_expression::parse(a.expression()))
        c.filter = *f;
      c.max_reconsume = a.max_reconsume();
      c.delays.assign(a.retry_delays_ms().begin(), a.retry_delays_ms().end());
      if (c.delays.empty())
        c.delays = self->state.ctx->settings.group_defaults.retry_delays_ms;
      schedule_tick(self);
      pump(self, c);
    },
    [=](pb::AckRequest& req) -> caf::result<pb::AckResult> {
      auto& st = self->state;
      auto i = st.cursors.find(req.cursor());
      if (i == st.cursors.end())
        return make_error(errc::unknown_group,
                          "no cursor '" + req.cursor() + "' on "
                            + st.meta.name() + "/"
                            + std::to_string(st.partition));
      auto& c = i->second;
      for (auto off : req.acks())
        c.inflight.erase(off);
      pb::WriteBatch b;
      std::vector<int64_t> dues;
      std::vector<alert> alerts;
      if (req.nacks_size() > 0) {
        auto txn = st.ctx->env->read();
        for (const auto& n : req.nacks())
          fail_one(self, c, n.offset(), n.reason(), txn, b, dues, alerts);
      }
      auto committed = c.committed();
      pb::AckResult res;
      res.set_committed(committed);
      if (committed != c.persisted)
        put_offset(self, c, b);
      pump(self, c);
      if (b.ops_size() == 0)
        return res;
      auto rp = self->make_response_promise<pb::AckResult>();
      auto kept = st.open->keep(rp);
      auto name = c.name;
      // Only the offset moved: it can share the commit of the next append.
      b.set_deferrable(req.nacks_size() == 0);
      write(self, std::move(b), std::move(dues), std::move(alerts),
            [=](const caf::error& err) mutable {
              if (err) {
                kept.deliver(err);
                return;
              }
              auto j = self->state.cursors.find(name);
              if (j != self->state.cursors.end())
                j->second.persisted = std::max(j->second.persisted, committed);
              kept.deliver(res);
            });
      return rp;
    },
    [=](wire::tick_atom) {
      // Deliveries unacknowledged for longer than consume_timeout count as
      // failed; delayed broadcast retries become due.
      auto& st = self->state;
      st.tick_scheduled = false;
      auto now = st.ctx->clock();
      auto timeout = static_cast<int64_t>(st.ctx->settings.consume_timeout_ms);
      pb::WriteBatch b;
      std::vector<int64_t> dues;
      std::vector<alert> alerts;
      auto txn = st.ctx->env->read();
      std::vector<std::string> touched;
      for (auto& [name, c] : st.cursors) {
        std::vector<uint64_t> expired;
        for (auto& [off, e] : c.inflight)
          if (e.delivered_ms != 0 && now - e.delivered_ms >= timeout)
            expired.push_back(off);
        for (auto off : expired)
          fail_one(self, c, off,
                   "consume timeout: no ack within "
                     + std::to_string(timeout) + " ms",
                   txn, b, dues, alerts);
        if (!expired.empty()) {
          if (c.committed() != c.persisted)
            put_offset(self, c, b);
          touched.push_back(name);
        }
      }
      std::map<std::string, uint64_t> committed;
      for (auto& name : touched)
        committed[name] = st.cursors[name].committed();
      if (b.ops_size() > 0)
        write(self, std::move(b), std::move(dues), std::move(alerts),
              [=](const caf::error& err) {
                if (err) {
                  EDDA_ERROR("partition", "timeout handling not stored: "
                                            << render(err));
                  return;
                }
                for (auto& [name, off] : committed) {
                  auto j = self->state.cursors.find(name);
                  if (j != self->state.cursors.end())
                    j->second.persisted = std::max(j->second.persisted, off);
                }
              });
      pump_all(self);
      if (!st.cursors.empty())
        schedule_tick(self);
    },
    [=](const pb::FindMessages& req) {
      return find_messages(self->state, req);
    },
    [=](const pb::ResetOffsets& req) -> caf::result<pb::OffsetsReset> {
      auto& st = self->state;
      // Broadcast: cursors group@client, here or only stored.
      bool broadcast = false;
      for (auto& [name, c] : st.cursors)
        broadcast = broadcast || (c.group == req.group() && c.broadcast);
      if (!broadcast) {
        auto txn = st.ctx->env->read();
        auto clients = req.group() + "@";
        txn.scan(db::offsets, clients, clients,
                 [&](std::string_view, std::string_view) {
                   broadcast = true;
                   return false;
                 });
      }
      if (broadcast)
        return make_error(errc::invalid_argument,
                          "group '" + req.group()
                            + "' consumes in broadcast mode: each client "
                              "keeps its own offsets; reset-offsets moves a "
                              "clustering group's");
      pb::OffsetsReset out;
      out.set_group(req.group());
      out.set_topic(st.meta.name());
      auto* row = out.add_partitions();
      row->set_partition(st.partition);
      row->set_low_watermark(st.first_offset);
      row->set_end_offset(st.durable_end);
      auto i = st.cursors.find(req.group());
      uint64_t token = 0;
      if (i != st.cursors.end()) {
        row->set_committed(i->second.committed());
        token = i->second.token;
        if (i->second.member)
          row->set_member(i->second.member_id);
      } else {
        // Not consumed since this partition started: what is stored.
        auto txn = st.ctx->env->read();
        auto v = txn.get(db::offsets, keys::offset_key(req.group(),
                                                       st.meta.id(),
                                                       st.partition));
        pb::CommittedOffset rec;
        if (v && rec.ParseFromArray(v->data(), static_cast<int>(v->size()))) {
          row->set_committed(std::max(rec.offset(), st.first_offset));
          token = rec.token();
        } else {
          row->set_committed(st.first_offset);
        }
      }
      uint64_t target = st.first_offset;
      switch (req.to()) {
        case pb::ResetOffsets::TO_OFFSET:
          target = std::clamp(req.offset(), st.first_offset, st.durable_end);
          break;
        case pb::ResetOffsets::TO_LATEST:
          target = st.durable_end;
          break;
        case pb::ResetOffsets::TO_DATETIME: {
          auto txn = st.ctx->env->read();
          target = offset_at_time(st, txn, req.datetime_ms());
          break;
        }
        default:
          break;
      }
      row->set_target(target);
      if (!req.execute())
        return out;
      // (The gateway refused a group with live members unless forced; a
      // member assigned here now is given everything again from target.)
      // The cursor moves now, before the write, so that an ack answered
      // in the meantime stores the new offset too, never the old one;
      // it keeps the coordinator's token (a stale owner stays refused).
      if (i == st.cursors.end()) {
        cursor_state c;
        c.name = req.group();
        c.group = req.group();
        c.token = token;
        i = st.cursors.emplace(c.name, std::move(c)).first;
      }
      auto& c = i->second;
      c.inflight.clear(); // acks of these are no-ops from now on
      c.next_read = target;
      c.persisted = target;
      pb::WriteBatch b;
      put_offset(self, c, b);
      out.set_executed(true);
      auto rp = self->make_response_promise<pb::OffsetsReset>();
      auto kept = st.open->keep(rp);
      write(self, std::move(b), {}, {},
            [=](const caf::error& err) mutable {
              if (err) {
                kept.deliver(make_error(
                  code_of(err) == errc::none ? errc::storage_error
                                             : code_of(err),
                  "the reset of " + self->state.meta.name() + "/"
                    + std::to_string(self->state.partition)
                    + " was not stored (" + render(err)
                    + "); its cursor moved in memory and is stored with its "
                      "next acknowledgement: run the reset again"));
                return;
              }
              kept.deliver(out);
              auto j = self->state.cursors.find(req.group());
              if (j != self->state.cursors.end())
                pump(self, j->second);
            });
      return rp;
    },
    [=](const pb::DescribeTopic&) {
      auto& st = self->state;
      pb::TopicInfo info;
      auto* p = info.add_partitions();
      p->set_partition(st.partition);
      p->set_end_offset(st.durable_end);
      p->set_message_count(st.durable_end - st.first_offset);
      p->set_low_watermark(st.first_offset);
      if (st.bytes_known)
        p->set_bytes(st.bytes);
      for (auto& [name, c] : st.cursors) {
        auto* g = info.add_groups();
        g->set_cursor(name);
        g->set_partition(st.partition);
        g->set_committed(c.committed());
        g->set_lag(st.durable_end - std::min(st.durable_end, c.committed()));
        g->set_inflight(static_cast<uint32_t>(c.inflight.size()));
        g->set_member(c.member_id);
      }
      return info;
    },
  };
}

} // namespace

caf::actor spawn_partition(caf::actor_system& sys, context_ptr ctx,
                           const pb::TopicMeta& meta, uint32_t partition) {
  return sys.spawn(partition_actor, std::move(ctx), meta, partition);
}

} // namespace edda::broker
