// topic_manager: routes every request for a topic to its partitions and
// supervises the partition actors this node holds: a partition that dies is
// respawned from storage and the group manager is told so that cursors are
// reassigned.
//
// Where topic metadata lives: on a single node in its LMDB (db `topics`,
// `meta`), written by this manager; in a cluster in etcd, through the topic
// table (topic_table.hpp), which pushes what etcd says (TopicUpdate). In a
// cluster each partition has a home node (never changing): the manager
// spawns the partitions homed here, and passes requests for the others to
// their home's gateway (a keyless send skips partitions whose home is down;
// a keyed one fails fast with partition_unavailable, keeping per-key order).
#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "base/partition_choice.hpp"
#include "broker/actors.hpp"
#include "broker/partition_actor.hpp"
#include "broker/topic_table.hpp"
#include "config/settings.hpp"
#include "base/inflight.hpp"
#include "storage/environment.hpp"
#include "storage/keys.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/message_handler.hpp>
#include <caf/sec.hpp>
#include <caf/skip.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <set>

namespace edda::broker {

namespace {

namespace pb = wire::pb;
using storage::db;
namespace keys = storage::keys;

struct topic_entry {
  pb::TopicMeta meta;
  /// Partition actors by index; in a cluster only those homed here (the
  /// others are null).
  std::vector<caf::actor> partitions;
  /// Cluster: the home node of each partition. Empty on a single node.
  std::vector<std::string> homes;
  int64_t revision = 0; // cluster: mod_revision of topics/<name> in etcd
  bool recorded = false; // cluster: its local record is in db `topics`
  bool pending = false; // create or alter being written
  uint32_t round_robin = 0;
  std::vector<caf::response_promise> waiters; // route requests during create
};

struct topic_manager_state {
  context_ptr ctx;
  caf::actor groups; // told about route changes
  std::map<std::string, topic_entry> topics;
  uint32_t next_topic_id = 1;
  pb::NodeMeta node;
  // -- cluster --------------------------------------------------------------
  caf::actor table;                     ///< topic_table (etcd)
  caf::actor txn;                       ///< this node's txn coordinator
  std::set<std::string> members;        ///< live node ids
  std::map<std::string, std::string> endpoints; ///< member -> host:port
  int64_t view_revision = 0;   ///< etcd revision of the membership view
  int64_t topics_revision = 0; ///< etcd revision of the last topic update
  std::map<std::string, caf::actor> peers; ///< node id -> its gateway
  std::set<std::string> local_records;  ///< topics with a record in db topics
  inflight requests; ///< to peers: failed at once when a link drops
  static inline const char* name = "edda.topic_manager";
};

using self_ptr = caf::stateful_actor<topic_manager_state>*;

caf::error check_name(const std::string& name, bool internal) {
  if (name.empty() || name.size() > 127)
    return make_error(errc::invalid_argument,
                      "topic name must be 1-127 characters, got "
                        + std::to_string(name.size()));
  for (char c : name) {
    bool ok = is_name_char(c) || (internal && c == '%');
    if (!ok)
      return make_error(errc::invalid_argument,
                        "topic name '" + name
                          + "' may only contain letters, digits, '_', '-' "
                            "and '.'");
  }
  return caf::none;
}

pb::TopicInfo info_of(const topic_entry& t) {
  pb::TopicInfo info;
  *info.mutable_meta() = t.meta;
  return info;
}

void spawn_partitions(self_ptr self, topic_entry& t) {
  auto& sys = self->home_system();
  for (auto p = static_cast<uint32_t>(t.partitions.size());
       p < t.meta.partitions(); ++p) {
    auto a = spawn_partition(sys, self->state.ctx, t.meta, p);
    self->link_to(a); // partitions stop with the manager
    t.partitions.push_back(a);
  }
}

/// The checks of an AlterTopic both modes make (`now`: the partitions the
/// topic has, 0 when the topic table checks them).
caf::error check_alter(const pb::AlterTopic& req, const std::string& name,
                       uint32_t now) {
  if (req.partitions() == 0 && !req.set_retention()
      && !req.set_retention_bytes())
    return make_error(errc::invalid_argument,
                      "nothing to alter: give partitions or a retention");
  if (now != 0 && req.partitions() != 0
      && (req.partitions() <= now || req.partitions() > 1024))
    return make_error(errc::invalid_argument,
                      "partitions can only grow (now " + std::to_string(now)
                        + ", at most 1024), got "
                        + std::to_string(req.partitions()));
  if (req.partitions() > 1024)
    return make_error(errc::invalid_argument,
                      "at most 1024 partitions, got "
                        + std::to_string(req.partitions()));
  constexpr uint64_t century_ms = 100ull * 365 * 24 * 3600 * 1000;
  if (req.set_retention() && req.retention_ms() > century_ms)
    return make_error(errc::invalid_argument,
                      "a retention of at most 100 years (0: for ever), got "
                        + config::format_duration_ms(req.retention_ms()));
  if ((req.set_retention() || req.set_retention_bytes()) && !name.empty()
      && name[0] == '%')
    return make_error(errc::invalid_argument,
                      "internal topics keep what their group needs: no "
                      "retention on '" + name + "'");
  return caf::none;
}

void apply_retention(const pb::AlterTopic& req, pb::TopicMeta& meta) {
  if (req.set_retention())
    meta.set_retention_ms(req.retention_ms());
  if (req.set_retention_bytes())
    meta.set_retention_bytes(req.retention_bytes());
}

bool retention_changed(const pb::TopicMeta& a, const pb::TopicMeta& b) {
  return a.retention_ms() != b.retention_ms()
         || a.retention_bytes() != b.retention_bytes();
}

/// "retention 72h and 1GiB per partition", "kept for ever".
std::string retention_text(const pb::TopicMeta& m) {
  if (m.retention_ms() == 0 && m.retention_bytes() == 0)
    return "kept for ever";
  std::string out = "retention";
  if (m.retention_ms() > 0)
    out += " " + config::format_duration_ms(m.retention_ms());
  if (m.retention_bytes() > 0)
    out += std::string(m.retention_ms() > 0 ? " and" : "") + " "
           + config::format_size_bytes(m.retention_bytes())
           + (m.retention_bytes() % 1024 == 0 ? "" : " bytes") + " a partition";
  return out;
}

void notify_route(self_ptr self, const std::string& topic) {
  if (self->state.groups)
    self->send(self->state.groups, wire::route_atom::value, topic);
}


// -- cluster ----------------------------------------------------------------

bool clustered(self_ptr self) {
  return self->state.ctx->clustered();
}

bool is_local(self_ptr self, const topic_entry& t, size_t p) {
  return t.homes.empty() || t.homes[p] == self->state.ctx->node_id;
}

/// The gateway of partition p's home, if the home is a live member and the
/// link to it is up.
caf::actor home_gateway(self_ptr self, const topic_entry& t, size_t p) {
  auto& st = self->state;
  if (t.homes.empty() || st.members.count(t.homes[p]) == 0)
    return {};
  auto i = st.peers.find(t.homes[p]);
  return i == st.peers.end() ? caf::actor{} : i->second;
}

bool available(self_ptr self, const topic_entry& t, size_t p) {
  return is_local(self, t, p) || home_gateway(self, t, p) != nullptr;
}

caf::error unavailable_partition(const topic_entry& t, size_t p) {
  return make_error(errc::partition_unavailable,
                    "partition " + t.meta.name() + "/" + std::to_string(p)
                      + " lives on node " + t.homes[p]
                      + ", which is down or unreachable; its messages wait "
                        "there until it is back");
}

/// Writes (or deletes) this node's record of a topic it holds partitions
/// of, so that the data of a topic deleted while the node was down can be
/// found and removed.
void record_locally(self_ptr self, topic_entry& t) {
  if (t.recorded)
    return;
  t.recorded = true;
  self->state.local_records.insert(t.meta.name());
  pb::WriteBatch b;
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::topics));
  op->set_key(t.meta.name());
  op->set_value(t.meta.SerializeAsString());
  auto ctx = self->state.ctx;
  self
    ->request(ctx->writer, std::chrono::milliseconds(ctx->write_timeout_ms),
              std::move(b))
    .then([](const pb::WriteResult&) {},
          [](caf::error& err) {
            EDDA_WARN("topics", "could not record a topic locally: "
                                  << render(err));
          });
}

/// Removes the partitions and data this node holds of a deleted topic.
void drop_local(self_ptr self, const std::string& name, uint32_t id) {
  auto& st = self->state;
  auto i = st.topics.find(name);
  if (i != st.topics.end())
    for (auto& p : i->second.partitions)
      if (p)
        self->send_exit(p, caf::exit_reason::user_shutdown);
  if (st.local_records.erase(name) == 0 && i == st.topics.end())
    return;
  pb::WriteBatch b;
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::topics));
  op->set_key(name);
  op->set_kind(pb::WriteOp::DEL);
  op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::log));
  op->set_key(keys::topic_log_prefix(id));
  op->set_kind(pb::WriteOp::DEL_PREFIX);
  auto ctx = st.ctx;
  self
    ->request(ctx->writer, std::chrono::milliseconds(ctx->write_timeout_ms),
              std::move(b))
    .then([](const pb::WriteResult&) {},
          [](caf::error& err) {
            EDDA_WARN("topics", "could not delete a topic's data: "
                                  << render(err));
          });
}

/// Takes what etcd says about one topic: spawns the partitions homed here.
void apply_topic(self_ptr self, const pb::ClusterTopic& ct) {
  auto& st = self->state;
  if (auto old = st.topics.find(ct.name());
      old != st.topics.end() && !old->second.meta.name().empty()
      && old->second.meta.id() != ct.id()) {
    // Deleted and made anew (another id) while this node was not looking:
    // the old one's partitions and data go, the new one starts empty.
    EDDA_INFO("topics", "topic " << ct.name() << " was made anew (id "
                                 << old->second.meta.id() << " -> " << ct.id()
                                 << ")");
    drop_local(self, ct.name(), old->second.meta.id());
    st.topics.erase(old);
  }
  auto& t = st.topics[ct.name()];
  bool changed = t.meta.name().empty()
                 || static_cast<int>(t.homes.size()) != ct.homes_size();
  bool retention = t.meta.retention_ms() != ct.retention_ms()
                   || t.meta.retention_bytes() != ct.retention_bytes();
  t.meta.set_retention_ms(ct.retention_ms());
  t.meta.set_retention_bytes(ct.retention_bytes());
  if (retention && !t.meta.name().empty())
    for (auto& p : t.partitions)
      if (p)
        self->send(p, t.meta);
  t.meta.set_name(ct.name());
  t.meta.set_id(ct.id());
  t.meta.set_partitions(static_cast<uint32_t>(ct.homes_size()));
  t.meta.set_created_ms(ct.created_ms());
  t.meta.set_kind(ct.kind());
  t.homes.assign(ct.homes().begin(), ct.homes().end());
  t.revision = std::max(t.revision, ct.mod_revision());
  t.pending = false;
  t.partitions.resize(t.homes.size());
  auto& sys = self->home_system();
  for (size_t p = 0; p < t.homes.size(); ++p) {
    if (t.partitions[p] || t.homes[p] != st.ctx->node_id)
      continue;
    t.partitions[p] = spawn_partition(sys, st.ctx, t.meta,
                                      static_cast<uint32_t>(p));
    self->link_to(t.partitions[p]);
    record_locally(self, t);
  }
  if (changed) {
    EDDA_INFO("topics", "topic " << ct.name() << ": " << ct.homes_size()
                                 << " partitions, homes "
                                 << [&] {
                                      std::string h;
                                      for (auto& x : ct.homes())
                                        h += (h.empty() ? "" : ",") + x;
                                      return h;
                                    }());
    auto waiters = std::move(t.waiters);
    for (auto& w : waiters)
      w.deliver(t.meta, t.partitions);
  }
}


void apply_update(self_ptr self, const pb::TopicUpdate& u) {
  auto& st = self->state;
  st.topics_revision = std::max(st.topics_revision, u.revision());
  std::set<std::string> seen;
  for (auto& ct : u.topics()) {
    seen.insert(ct.name());
    auto before = st.topics.count(ct.name()) != 0
                    ? st.topics[ct.name()].homes.size()
                    : 0;
    apply_topic(self, ct);
    if (st.topics[ct.name()].homes.size() != before)
      notify_route(self, ct.name());
  }
  std::vector<std::pair<std::string, uint32_t>> gone;
  for (auto& d : u.deleted())
    if (auto i = st.topics.find(d); i != st.topics.end())
      gone.emplace_back(d, i->second.meta.id());
  if (u.snapshot()) {
    // Only what etcd no longer has at all is gone (a record that does not
    // parse is left alone).
    for (auto& p : u.present())
      seen.insert(p);
    for (auto& [name, t] : st.topics)
      if (seen.count(name) == 0)
        gone.emplace_back(name, t.meta.id());
    // Data of topics deleted while this node was down.
    auto txn = st.ctx->env->read();
    std::vector<uint32_t> stale_ids; // a name made anew while we were down
    txn.scan(db::topics, "", "", [&](std::string_view k, std::string_view v) {
      std::string name{k};
      pb::TopicMeta meta;
      if (!meta.ParseFromArray(v.data(), static_cast<int>(v.size())))
        return true;
      if (auto t = st.topics.find(name);
          t != st.topics.end() && t->second.meta.id() != meta.id())
        stale_ids.push_back(meta.id());
      if (seen.count(name) != 0 || st.topics.count(name) != 0)
        return true;
      st.local_records.insert(name);
      gone.emplace_back(name, meta.id());
      return true;
    });
    for (auto id : stale_ids) {
      pb::WriteBatch b;
      auto* op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::log));
      op->set_key(keys::topic_log_prefix(id));
      op->set_kind(pb::WriteOp::DEL_PREFIX);
      self->request(st.ctx->writer, std::chrono::seconds(60), std::move(b))
        .then([](const pb::WriteResult&) {}, [](caf::error&) {});
    }
  }
  for (auto& [name, id] : gone) {
    EDDA_INFO("topics", "topic " << name << " was deleted; removing its "
                                 << "partitions on this node");
    drop_local(self, name, id);
    st.topics.erase(name);
    notify_route(self, name);
  }
}

/// Runs `then(topic_entry*)` once `name` is known: in a cluster a topic the
/// watch has not delivered yet is read from etcd first.
template <class F>
void with_topic(self_ptr self, const std::string& name, F then) {
  auto& st = self->state;
  auto i = st.topics.find(name);
  if (i != st.topics.end() && !(i->second.pending && i->second.partitions.empty())) {
    then(caf::expected<topic_entry*>{&i->second});
    return;
  }
  if (!clustered(self) || !st.table) {
    then(caf::expected<topic_entry*>{
      make_error(errc::unknown_topic, "no topic named '" + name + "'")});
    return;
  }
  pb::GetTopic q;
  q.set_name(name);
  self->request(st.table, std::chrono::seconds(10), q)
    .then(
      [=](const pb::ClusterTopic& ct) mutable {
        apply_topic(self, ct);
        then(caf::expected<topic_entry*>{&self->state.topics[name]});
      },
      [=](caf::error& err) mutable { then(caf::expected<topic_entry*>{err}); });
}

/// Picks a partition for `key` (keyless: in turn, skipping partitions whose
/// home is down; the choice clients that route by the cluster map make
/// too). Errors: partition_unavailable.
caf::expected<int32_t> pick_available(self_ptr self, topic_entry& t,
                                      const std::string& key) {
  auto n = static_cast<uint32_t>(t.partitions.size());
  auto c = choose_partition(key, n, t.round_robin, [&](uint32_t p) {
    return available(self, t, p);
  });
  switch (c.status) {
    case partition_choice::ok:
      return static_cast<int32_t>(c.partition);
    case partition_choice::empty:
      return make_error(errc::unknown_topic,
                        "topic '" + t.meta.name() + "' has no partitions");
    case partition_choice::home_down:
      return unavailable_partition(t, c.partition);
    default:
      return make_error(errc::partition_unavailable,
                        "no partition of topic '" + t.meta.name()
                          + "' has a live home");
  }
}

/// Passes `req` to the home of its partition and relays the reply.
template <class Request>
void forward(self_ptr self, topic_entry& t, size_t p, Request req,
             caf::response_promise rp) {
  auto gw = home_gateway(self, t, p);
  if (!gw) {
    rp.deliver(unavailable_partition(t, p));
    return;
  }
  req.set_forwarded(true);
  metrics::counter("broker.forwarded")++;
  self->state.requests.request<pb::ProduceResult>(
    self, gw, std::chrono::seconds(30), std::move(req),
    [=](pb::ProduceResult& r) mutable { rp.deliver(std::move(r)); },
    [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
}


// -- transactions in a cluster ---------------------------------------------------

/// The topic with id `id`, if known.
topic_entry* topic_by_id(self_ptr self, uint32_t id) {
  for (auto& [name, t] : self->state.topics)
    if (t.meta.id() == id)
      return &t;
  return nullptr;
}

/// Where a half message goes: chooses its partition (a key's own; without a
/// key one homed here if any is, so that the commit needs no hop), names it
/// in the txn id, and returns the node that stores it (this node's txn
/// coordinator or another's gateway). Errors: partition_unavailable.
caf::expected<caf::actor> route_half(self_ptr self, topic_entry& e,
                                     pb::HalfMessage& h) {
  auto& st = self->state;
  auto n = e.partitions.size();
  if (n == 0)
    return make_error(errc::unknown_topic,
                      "topic '" + e.meta.name() + "' has no partitions");
  uint32_t tid = 0, p = 0;
  if (txn_home(h.txn_id(), tid, p)) {
    if (tid != e.meta.id() || p >= n)
      return make_error(errc::invalid_argument,
                        "txn id " + h.txn_id() + " names another partition");
  } else {
    auto& key = h.message().key();
    if (!key.empty()) {
      p = shard_of(key, n);
    } else {
      bool found = false;
      for (size_t k = 0; k < n && !found; ++k) {
        auto c = (e.round_robin++) % n;
        if (is_local(self, e, c)) {
          p = static_cast<uint32_t>(c);
          found = true;
        }
      }
      if (!found) {
        auto picked = pick_available(self, e, std::string{});
        if (!picked)
          return picked.error();
        p = static_cast<uint32_t>(*picked);
      }
    }
    h.set_txn_id(txn_id_at(h.txn_id(), e.meta.id(), p));
  }
  h.mutable_message()->set_partition(p);
  if (is_local(self, e, p))
    return st.txn;
  if (!available(self, e, p))
    return unavailable_partition(e, p);
  return home_gateway(self, e, p);
}

/// Where the transaction `txn_id` lives: this node's coordinator (also for
/// a plain id) or the gateway of its home. Errors: unavailable.
caf::expected<caf::actor> route_txn(self_ptr self, const std::string& txn_id) {
  auto& st = self->state;
  uint32_t tid = 0, p = 0;
  if (!txn_home(txn_id, tid, p))
    return st.txn;
  auto* e = topic_by_id(self, tid);
  if (e == nullptr || p >= e->partitions.size())
    return st.txn; // unknown topic: the local coordinator answers unknown_txn
  if (is_local(self, *e, p))
    return st.txn;
  if (auto gw = home_gateway(self, *e, p))
    return gw;
  return make_error(errc::unavailable,
                    "transaction " + txn_id + " lives on node " + e->homes[p]
                      + ", which is down or unreachable; its check-back "
                        "settles it there when it is back");
}

/// Runs `then()` once every topic in `names` is known (or has failed).
template <class F>
void with_topics(self_ptr self, std::shared_ptr<std::vector<std::string>> names,
                 size_t i, F then) {
  if (i >= names->size()) {
    then();
    return;
  }
  with_topic(self, (*names)[i], [=](caf::expected<topic_entry*>) mutable {
    with_topics(self, names, i + 1, then);
  });
}

void set_error(pb::BatchItem& slot, const caf::error& err) {
  auto code = code_of(err);
  slot.set_code(static_cast<uint32_t>(code == errc::none ? errc::unavailable
                                                         : code));
  slot.set_error(render(err));
}

/// Sends the items of `batch` to where each goes (one sub-batch per node)
/// and answers with every item's result in the original order.
/// `items(batch)` is the batch's repeated field; `route(item, slot)` says
/// where an item goes (it may rewrite the item and fill its slot).
template <class Batch, class Items, class Route>
void scatter(self_ptr self, Batch batch, Items items, Route route,
             caf::response_promise rp) {
  auto res = std::make_shared<pb::BatchResult>();
  std::map<caf::actor, std::pair<Batch, std::vector<int>>> parts;
  auto& all = *items(batch);
  for (int i = 0; i < all.size(); ++i) {
    auto* slot = res->add_items();
    caf::expected<caf::actor> d = route(all[i], *slot);
    if (d && !*d)
      d = make_error(errc::unavailable, "no transaction coordinator here");
    if (!d) {
      set_error(*slot, d.error());
      continue;
    }
    auto& part = parts[*d];
    *items(part.first)->Add() = std::move(all[i]);
    part.second.push_back(i);
  }
  if (parts.empty()) {
    rp.deliver(*res);
    return;
  }
  auto left = std::make_shared<size_t>(parts.size());
  for (auto& [dest, part] : parts) {
    auto idx = part.second;
    if (dest != self->state.txn)
      metrics::counter("txn.forwarded") += idx.size();
    self->state.requests.request<pb::BatchResult>(
      self, dest, std::chrono::seconds(30), std::move(part.first),
      [=](pb::BatchResult& r) mutable {
        for (size_t k = 0; k < idx.size(); ++k)
          if (k < static_cast<size_t>(r.items_size()))
            *res->mutable_items(idx[k]) = r.items(static_cast<int>(k));
        if (--*left == 0)
          rp.deliver(*res);
      },
      [=](caf::error& err) mutable {
        for (auto i : idx)
          set_error(*res->mutable_items(i), err);
        if (--*left == 0)
          rp.deliver(*res);
      });
  }
}

/// Each half of `batch` to the home of the partition it chooses.
void scatter_halves(self_ptr self, pb::HalfBatch batch,
                    caf::response_promise rp) {
  scatter(
    self, std::move(batch), [](pb::HalfBatch& b) { return b.mutable_halves(); },
    [self](pb::HalfMessage& h, pb::BatchItem& slot) {
      caf::expected<caf::actor> d{caf::actor{}};
      auto t = self->state.topics.find(h.message().topic());
      if (t == self->state.topics.end())
        d = make_error(errc::unknown_topic,
                       "no topic named '" + h.message().topic() + "'");
      else
        d = route_half(self, t->second, h);
      slot.set_txn_id(h.txn_id());
      return d;
    },
    rp);
}

/// Each end of `batch` to the node its transaction lives on.
void scatter_ends(self_ptr self, pb::EndBatch batch, caf::response_promise rp) {
  scatter(
    self, std::move(batch), [](pb::EndBatch& b) { return b.mutable_ends(); },
    [self](pb::EndTxn& e, pb::BatchItem&) { return route_txn(self, e.txn_id()); },
    rp);
}

/// Relays `req` to `dest` and its reply of type Reply to `rp`.
template <class Reply, class Request>
void relay(self_ptr self, const caf::actor& dest, Request req,
           caf::response_promise rp) {
  self->state.requests.request<Reply>(
    self, dest, std::chrono::seconds(30), std::move(req),
    [=](Reply& r) mutable { rp.deliver(std::move(r)); },
    [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
}

/// Persists `meta` (and the node record), then calls done(err).
template <class F>
void persist(self_ptr self, const pb::TopicMeta& meta, F done) {
  auto& st = self->state;
  pb::WriteBatch b;
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::topics));
  op->set_key(meta.name());
  op->set_value(meta.SerializeAsString());
  st.node.set_next_topic_id(st.next_topic_id);
  op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::meta));
  op->set_key("node");
  op->set_value(st.node.SerializeAsString());
  self
    ->request(st.ctx->writer, std::chrono::milliseconds(st.ctx->write_timeout_ms),
              std::move(b))
    .then([=](const pb::WriteResult&) mutable { done(caf::error{}); },
          [=](caf::error& err) mutable { done(err); });
}

/// Creates a topic; `done(err)` runs once it is durable (or failed).
/// Synchronous validation errors are returned and `done` is not called.
caf::error create(self_ptr self, const std::string& name, uint32_t partitions,
                  pb::TopicKind kind,
                  std::function<void(const caf::error&)> done) {
  auto& st = self->state;
  if (auto err = check_name(name, kind == pb::TOPIC_RETRY))
    return err;
  if (name[0] == '%' && kind != pb::TOPIC_RETRY)
    return make_error(errc::invalid_argument, "names starting with '%' are "
                                              "reserved");
  if (partitions == 0)
    partitions = st.ctx->settings.default_partitions;
  if (partitions > 1024)
    return make_error(errc::invalid_argument,
                      "at most 1024 partitions, got "
                        + std::to_string(partitions));
  if (st.topics.count(name) != 0)
    return make_error(errc::topic_exists, "topic '" + name + "' exists");
  auto& t = st.topics[name];
  t.pending = true;
  t.meta.set_name(name);
  t.meta.set_id(st.next_topic_id++);
  t.meta.set_partitions(partitions);
  t.meta.set_created_ms(st.ctx->clock());
  t.meta.set_kind(kind);
  persist(self, t.meta, [=](const caf::error& err) {
    auto& st = self->state;
    auto i = st.topics.find(name);
    if (err) {
      auto waiters = std::move(i->second.waiters);
      st.topics.erase(i);
      for (auto& w : waiters)
        w.deliver(err);
      done(err);
      return;
    }
    auto& t = i->second;
    t.pending = false;
    spawn_partitions(self, t);
    EDDA_INFO("topics", "created " << name << " with " << partitions
                                   << " partitions");
    auto waiters = std::move(t.waiters);
    for (auto& w : waiters)
      w.deliver(t.meta, t.partitions);
    done(caf::error{});
  });
  return caf::none;
}

/// Looks up a topic that is ready for traffic.
caf::expected<topic_entry*> find(self_ptr self, const std::string& name) {
  auto i = self->state.topics.find(name);
  if (i == self->state.topics.end() || (i->second.pending
                                        && i->second.partitions.empty()))
    return make_error(errc::unknown_topic, "no topic named '" + name + "'");
  return &i->second;
}

int32_t pick_partition(topic_entry& t, const std::string& key) {
  auto n = static_cast<uint32_t>(t.partitions.size());
  auto c = choose_partition(key, n, t.round_robin, [](uint32_t) {
    return true;
  });
  return static_cast<int32_t>(c.partition);
}


/// The route of `t` for a cluster map.
pb::TopicRoute route_of(self_ptr self, const topic_entry& t) {
  pb::TopicRoute r;
  r.set_name(t.meta.name());
  r.set_id(t.meta.id());
  r.set_partitions(static_cast<uint32_t>(t.partitions.size()));
  r.set_revision(t.revision);
  for (size_t p = 0; p < t.homes.size(); ++p) {
    r.add_homes(t.homes[p]);
    r.add_live(available(self, t, p));
  }
  return r;
}

/// What this node tells a client about where to send (ClusterMapRequest):
/// the members with their endpoints and the routes of `names` (or of every
/// topic), those it knows.
pb::ClusterMap cluster_map(self_ptr self, const std::vector<std::string>& names,
                           bool all) {
  auto& st = self->state;
  pb::ClusterMap m;
  m.set_clustered(clustered(self));
  m.set_node_id(st.ctx->node_id);
  m.set_revision(std::max(st.view_revision, st.topics_revision));
  for (auto& [id, ep] : st.endpoints) {
    auto* x = m.add_members();
    x->set_node_id(id);
    x->set_endpoint(ep);
    x->set_self(id == st.ctx->node_id);
  }
  auto add = [&](const topic_entry& t) {
    if ((t.pending && t.partitions.empty()) || t.meta.name().empty())
      return;
    *m.add_topics() = route_of(self, t);
    // A topic changed here (create, alter) before the watch said so.
    m.set_revision(std::max(m.revision(), t.revision));
  };
  if (all) {
    for (auto& [name, t] : st.topics)
      add(t);
  } else {
    for (auto& name : names)
      if (auto i = st.topics.find(name); i != st.topics.end())
        add(i->second);
  }
  return m;
}


// -- cluster behaviour ----------------------------------------------------------

/// Validates a create in a cluster; the table then writes it to etcd.
caf::error check_create(self_ptr self, const std::string& name,
                        uint32_t& partitions, pb::TopicKind kind) {
  if (auto err = check_name(name, kind == pb::TOPIC_RETRY))
    return err;
  if (name[0] == '%' && kind != pb::TOPIC_RETRY)
    return make_error(errc::invalid_argument, "names starting with '%' are "
                                              "reserved");
  if (partitions == 0)
    partitions = self->state.ctx->settings.default_partitions;
  if (partitions > 1024)
    return make_error(errc::invalid_argument,
                      "at most 1024 partitions, got "
                        + std::to_string(partitions));
  return caf::none;
}

/// Spawns (again) the topic table, which reads etcd and pushes updates.
void start_table(self_ptr self) {
  auto& st = self->state;
  topic_table_options o;
  o.store = st.ctx->store;
  o.cluster_name = st.ctx->settings.cluster_name;
  o.manager = caf::actor_cast<caf::actor>(self);
  st.table = spawn_topic_table(self->home_system(), std::move(o));
  self->monitor(st.table);
}

/// Handlers a clustered manager has while it loads and after.
caf::message_handler cluster_updates(self_ptr self) {
  return {
    [=](pb::TopicUpdate& u) { apply_update(self, u); },
    [=](pb::MembershipView& v) {
      auto& st = self->state;
      st.members.clear();
      st.endpoints.clear();
      for (auto& m : v.members()) {
        st.members.insert(m.node_id());
        st.endpoints[m.node_id()] = m.endpoint();
      }
      st.view_revision = std::max(st.view_revision, v.revision());
    },
    [=](wire::link_atom, const std::string& id, caf::actor& gateway) {
      auto& st = self->state;
      if (auto i = st.peers.find(id); i != st.peers.end() && i->second != gateway)
        st.requests.fail(i->second.address(), inflight::lost("node " + id));
      if (gateway)
        st.peers[id] = std::move(gateway);
      else
        st.peers.erase(id);
      // The routes of partitions homed on that node changed (their gateway
      // is back, or gone): groups reassign them, so a group takes back the
      // partitions of a node that returned.
      for (auto& [name, t] : st.topics)
        if (std::find(t.homes.begin(), t.homes.end(), id) != t.homes.end())
          notify_route(self, name);
    },
  };
}

/// Asks every partition of `t` homed here, and each other home once (with
/// local_only set, for all of its partitions), `req`. `done(replies,
/// errors, unreachable)` gets the replies, the errors of those that
/// answered with one, and the partitions whose home is down, unreachable
/// or did not answer. With req.local_only(): only the partitions here.
template <class Reply, class Request, class Done>
void ask_partitions(self_ptr self, const topic_entry& t, const Request& req,
                    Done done) {
  struct target {
    caf::actor who;
    std::vector<uint32_t> partitions;
  };
  std::vector<target> ask;
  std::map<std::string, size_t> by_home;
  struct acc {
    std::vector<Reply> replies;
    std::vector<caf::error> errors;
    std::vector<uint32_t> unreachable;
    size_t left = 0;
  };
  auto a = std::make_shared<acc>();
  for (uint32_t p = 0; p < t.partitions.size(); ++p) {
    if (is_local(self, t, p)) {
      ask.push_back({t.partitions[p], {p}});
    } else if (!req.local_only()) {
      auto gw = home_gateway(self, t, p);
      if (!gw) {
        a->unreachable.push_back(p);
        continue;
      }
      auto [i, fresh] = by_home.emplace(t.homes[p], ask.size());
      if (fresh)
        ask.push_back({gw, {p}});
      else
        ask[i->second].partitions.push_back(p);
    }
  }
  a->left = ask.size();
  if (ask.empty()) {
    done(std::move(a->replies), std::move(a->errors),
         std::move(a->unreachable));
    return;
  }
  auto one_done = [a, done]() mutable {
    if (--a->left == 0)
      done(std::move(a->replies), std::move(a->errors),
           std::move(a->unreachable));
  };
  auto local = req;
  local.set_local_only(true);
  for (auto& x : ask)
    self->state.requests.request<Reply>(
      self, x.who, std::chrono::seconds(30), local,
      [a, one_done](Reply& r) mutable {
        a->replies.push_back(std::move(r));
        one_done();
      },
      [a, one_done, ps = x.partitions](caf::error& err) mutable {
        // A partition's own refusal is an answer; a lost link, a home or
        // partition that stopped or did not answer in time is not.
        if (code_of(err) == errc::unavailable || code_of(err) == errc::timeout
            || code_of(err) == errc::partition_unavailable
            || code_of(err) == errc::shutting_down
            || err == caf::sec::request_timeout
            || err == caf::sec::request_receiver_down)
          a->unreachable.insert(a->unreachable.end(), ps.begin(), ps.end());
        else
          a->errors.push_back(std::move(err));
        one_done();
      });
}

/// ResetOffsets for the partitions of req.topic() (the gateway checked the
/// group): one row per partition, those whose home is down marked
/// unavailable (left as they were).
void reset_offsets(self_ptr self, pb::ResetOffsets req,
                   caf::response_promise rp) {
  auto name = req.topic();
  with_topic(self, name, [=](caf::expected<topic_entry*> t) mutable {
    if (!t) {
      rp.deliver(t.error());
      return;
    }
    auto homes = (*t)->homes;
    ask_partitions<pb::OffsetsReset>(
      self, **t, req,
      [=](std::vector<pb::OffsetsReset> rs, std::vector<caf::error> errs,
          std::vector<uint32_t> unreachable) mutable {
        pb::OffsetsReset out;
        out.set_group(req.group());
        out.set_topic(name);
        out.set_executed(req.execute());
        std::map<uint32_t, pb::PartitionReset> rows;
        for (auto& r : rs)
          for (auto& row : *r.mutable_partitions())
            rows[row.partition()] = std::move(row);
        for (auto p : unreachable) {
          rows[p].set_partition(p);
          rows[p].set_unavailable(true);
        }
        for (auto& [p, row] : rows) {
          if (p < homes.size())
            row.set_home(homes[p]);
          *out.add_partitions() = std::move(row);
        }
        if (!errs.empty()) {
          // Some partitions were moved, some refused: say both.
          std::string moved;
          for (auto& [p, row] : rows)
            if (!row.unavailable())
              moved += (moved.empty() ? "" : ", ") + std::to_string(p);
          auto code = code_of(errs.front());
          rp.deliver(make_error(
            code == errc::none ? errc::unavailable : code,
            render(errs.front())
              + (req.execute() && !moved.empty()
                   ? " (partitions reset anyway: " + moved + ")"
                   : "")));
          return;
        }
        rp.deliver(std::move(out));
      });
  });
}

/// FindMessages over req.topic(), or every topic but the internal ones when
/// it names none (a show by id): oldest first, at most the limit.
void find_messages(self_ptr self, pb::FindMessages req,
                   caf::response_promise rp) {
  auto limit = req.limit() == 0 ? 100u : req.limit();
  auto names = std::make_shared<std::vector<std::string>>();
  if (!req.topic().empty()) {
    names->push_back(req.topic());
  } else {
    for (auto& [name, t] : self->state.topics)
      if (!t.pending && name[0] != '%')
        names->push_back(name);
  }
  struct acc {
    pb::FoundMessages out;
    caf::error err;
    size_t left = 0;
  };
  auto a = std::make_shared<acc>();
  a->left = names->size();
  auto finish = [a, rp, limit]() mutable {
    if (a->err) {
      rp.deliver(a->err);
      return;
    }
    auto* ms = a->out.mutable_messages();
    std::stable_sort(ms->begin(), ms->end(),
                     [](const pb::Message& x, const pb::Message& y) {
                       if (x.stored_ms() != y.stored_ms())
                         return x.stored_ms() < y.stored_ms();
                       if (x.partition() != y.partition())
                         return x.partition() < y.partition();
                       return x.offset() < y.offset();
                     });
    if (static_cast<uint32_t>(ms->size()) > limit) {
      ms->DeleteSubrange(static_cast<int>(limit),
                         ms->size() - static_cast<int>(limit));
      a->out.set_truncated(true);
    }
    rp.deliver(std::move(a->out));
  };
  if (names->empty()) {
    finish();
    return;
  }
  for (auto& name : *names)
    with_topic(self, name, [=](caf::expected<topic_entry*> t) mutable {
      if (!t) {
        if (!req.topic().empty())
          a->err = t.error();
        if (--a->left == 0)
          finish();
        return;
      }
      ask_partitions<pb::FoundMessages>(
        self, **t, req,
        [=](std::vector<pb::FoundMessages> rs, std::vector<caf::error> errs,
            std::vector<uint32_t> unreachable) mutable {
          for (auto& r : rs) {
            a->out.set_scanned(a->out.scanned() + r.scanned());
            a->out.set_truncated(a->out.truncated() || r.truncated());
            for (auto& m : *r.mutable_messages())
              *a->out.add_messages() = std::move(m);
            for (auto& u : r.unreachable())
              a->out.add_unreachable(u);
          }
          for (auto p : unreachable)
            a->out.add_unreachable(name + "/" + std::to_string(p));
          if (!errs.empty() && !a->err)
            a->err = errs.front();
          if (--a->left == 0)
            finish();
        });
    });
}

/// What both modes answer alike: operators' offset resets and message
/// searches, over the partitions wherever they live.
caf::message_handler operator_requests(self_ptr self) {
  return {
    [=](pb::ResetOffsets& req) -> caf::result<pb::OffsetsReset> {
      auto rp = self->make_response_promise<pb::OffsetsReset>();
      reset_offsets(self, std::move(req), rp);
      return rp;
    },
    [=](pb::FindMessages& req) -> caf::result<pb::FoundMessages> {
      auto rp = self->make_response_promise<pb::FoundMessages>();
      find_messages(self, std::move(req), rp);
      return rp;
    },
  };
}

caf::behavior cluster_main(self_ptr self) {
  return caf::message_handler{
    [=](caf::actor groups) {
      self->state.groups = groups;
      for (auto& [name, t] : self->state.topics)
        notify_route(self, name);
    },
    [=](const pb::CreateTopic& req) -> caf::result<pb::TopicInfo> {
      auto n = req.partitions();
      if (auto err = check_create(self, req.name(), n, pb::TOPIC_NORMAL))
        return err;
      auto q = req;
      q.set_partitions(n);
      auto rp = self->make_response_promise<pb::TopicInfo>();
      self
        ->request(self->state.table, std::chrono::seconds(30), q,
                  static_cast<uint32_t>(pb::TOPIC_NORMAL))
        .then(
          [=](const pb::ClusterTopic& ct) mutable {
            apply_topic(self, ct);
            notify_route(self, ct.name());
            EDDA_INFO("topics", "created " << ct.name() << " with "
                                           << ct.homes_size()
                                           << " partitions");
            rp.deliver(info_of(self->state.topics[ct.name()]));
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [=](const pb::AlterTopic& req) -> caf::result<pb::TopicInfo> {
      if (auto err = check_alter(req, req.name(), 0))
        return err;
      auto rp = self->make_response_promise<pb::TopicInfo>();
      self->request(self->state.table, std::chrono::seconds(30), req)
        .then(
          [=](const pb::ClusterTopic& ct) mutable {
            apply_topic(self, ct);
            notify_route(self, ct.name());
            rp.deliver(info_of(self->state.topics[ct.name()]));
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [=](const pb::DeleteTopic& req) -> caf::result<pb::Done> {
      if (!req.name().empty() && req.name()[0] == '%')
        return make_error(errc::invalid_argument,
                          "internal topics go away with their group");
      auto rp = self->make_response_promise<pb::Done>();
      auto name = req.name();
      self->request(self->state.table, std::chrono::seconds(30), req)
        .then(
          [=](pb::Done& d) mutable {
            auto& st = self->state;
            if (auto i = st.topics.find(name); i != st.topics.end()) {
              drop_local(self, name, i->second.meta.id());
              st.topics.erase(i);
            }
            notify_route(self, name);
            EDDA_INFO("topics", "deleted " << name);
            rp.deliver(std::move(d));
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [=](const pb::GetTopic& req) -> caf::result<pb::TopicMeta> {
      auto rp = self->make_response_promise<pb::TopicMeta>();
      with_topic(self, req.name(), [=](caf::expected<topic_entry*> t) mutable {
        if (!t)
          rp.deliver(t.error());
        else
          rp.deliver((*t)->meta);
      });
      return rp;
    },
    [=](const pb::ListTopics& req) {
      pb::TopicList out;
      for (auto& [name, t] : self->state.topics)
        if (!t.pending && (req.include_internal() || name[0] != '%'))
          *out.add_topics() = info_of(t);
      return out;
    },
    [=](const pb::DescribeTopic& req) -> caf::result<pb::TopicInfo> {
      auto rp = self->make_response_promise<pb::TopicInfo>();
      with_topic(self, req.name(), [=](caf::expected<topic_entry*> t) mutable {
        if (!t) {
          rp.deliver(t.error());
          return;
        }
        auto& e = **t;
        auto acc = std::make_shared<pb::TopicInfo>(info_of(e));
        // Asked: each local partition, and each other home once for all of
        // its partitions (local_only).
        std::vector<caf::actor> ask;
        std::set<std::string> remote_homes;
        std::set<size_t> unreachable;
        for (size_t p = 0; p < e.partitions.size(); ++p) {
          if (is_local(self, e, p)) {
            ask.push_back(e.partitions[p]);
          } else if (req.local_only()) {
            continue;
          } else if (remote_homes.insert(e.homes[p]).second) {
            if (auto gw = home_gateway(self, e, p))
              ask.push_back(gw);
            else
              unreachable.insert(p);
          } else if (!home_gateway(self, e, p)) {
            unreachable.insert(p);
          }
        }
        auto homes = e.homes;
        bool local_only = req.local_only();
        auto finish = [acc, homes, unreachable, rp, local_only]() mutable {
          if (local_only) {
            rp.deliver(*acc); // the asking node adds the rest
            return;
          }
          // One row per partition, with its home; unreachable ones marked.
          std::map<uint32_t, pb::PartitionInfo> rows;
          for (auto& r : acc->partitions())
            rows[r.partition()] = r;
          acc->clear_partitions();
          for (uint32_t p = 0; p < homes.size(); ++p) {
            auto& r = rows[p];
            r.set_partition(p);
            r.set_home(homes[p]);
            if (unreachable.count(p) != 0)
              r.set_unavailable(true);
            *acc->add_partitions() = r;
          }
          rp.deliver(*acc);
        };
        if (ask.empty()) {
          finish();
          return;
        }
        auto remaining = std::make_shared<size_t>(ask.size());
        auto local = req;
        local.set_local_only(true);
        for (auto& a : ask)
          self->state.requests.request<pb::TopicInfo>(
            self, a, std::chrono::seconds(10), local,
              [=](pb::TopicInfo& part) mutable {
                for (auto& r : part.partitions())
                  *acc->add_partitions() = r;
                for (auto& g : part.groups())
                  *acc->add_groups() = g;
                if (--*remaining == 0)
                  finish();
              },
              [=](caf::error&) mutable {
                if (--*remaining == 0)
                  finish();
              });
      });
      return rp;
    },
    [=](pb::ProduceRequest& req) -> caf::result<pb::ProduceResult> {
      auto rp = self->make_response_promise<pb::ProduceResult>();
      auto name = req.topic();
      with_topic(self, name, [=](caf::expected<topic_entry*> t) mutable {
        if (!t) {
          rp.deliver(t.error());
          return;
        }
        auto& e = **t;
        auto p = req.partition();
        if (p < 0) {
          auto picked = pick_available(
            self, e, req.messages_size() > 0 ? req.messages(0).key()
                                             : std::string{});
          if (!picked) {
            rp.deliver(picked.error());
            return;
          }
          p = *picked;
        }
        if (static_cast<size_t>(p) >= e.partitions.size()) {
          rp.deliver(make_error(errc::invalid_argument,
                                "topic '" + name + "' has no partition "
                                  + std::to_string(p)));
          return;
        }
        if (!req.forwarded() && !available(self, e, static_cast<size_t>(p))
            && std::all_of(req.messages().begin(), req.messages().end(),
                           [](const pb::Message& m) {
                             return m.key().empty();
                           })) {
          // Keyless messages have no partition to keep: skip a partition
          // whose home is down (the client chose it by turn).
          auto picked = pick_available(self, e, std::string{});
          if (!picked) {
            rp.deliver(picked.error());
            return;
          }
          p = *picked;
        }
        req.set_partition(p);
        req.set_topic_partitions(static_cast<uint32_t>(e.partitions.size()));
        auto up = static_cast<size_t>(p);
        if (is_local(self, e, up)) {
          rp.delegate(e.partitions[up], std::move(req));
          return;
        }
        if (req.forwarded()) {
          rp.deliver(make_error(errc::not_owner,
                                "partition " + name + "/" + std::to_string(p)
                                  + " lives on " + e.homes[up]
                                  + ", not on this node"));
          return;
        }
        forward(self, e, up, std::move(req), rp);
      });
      return rp;
    },
    [=](pb::AppendInternal& req) -> caf::result<pb::ProduceResult> {
      auto rp = self->make_response_promise<pb::ProduceResult>();
      auto name = req.topic();
      with_topic(self, name, [=](caf::expected<topic_entry*> t) mutable {
        if (!t) {
          rp.deliver(t.error());
          return;
        }
        auto& e = **t;
        auto n = e.partitions.size();
        auto p = req.partition();
        bool atomic = req.extra().ops_size() > 0;
        std::string key = req.messages_size() > 0 ? req.messages(0).key()
                                              : std::string{};
        if ((p < 0 || static_cast<size_t>(p) >= n) && atomic && n > 0
            && e.meta.kind() != pb::TOPIC_RETRY && !key.empty()) {
          // A key keeps its partition (order per key), also for an append
          // that carries this node's writes: it commits here only if the
          // key's partition lives here (else not_owner below; a saga then
          // sends its message as a transaction to the home).
          p = static_cast<int32_t>(shard_of(key, n));
        }
        if (p < 0 || static_cast<size_t>(p) >= n) {
          if (e.meta.kind() == pb::TOPIC_RETRY || atomic) {
            // Extra writes must commit with the append: a partition here.
            p = -1;
            for (size_t k = 0; k < n && p < 0; ++k) {
              auto c = (e.round_robin++) % n;
              if (is_local(self, e, c))
                p = static_cast<int32_t>(c);
            }
            if (p < 0 && atomic && e.meta.kind() == pb::TOPIC_RETRY) {
              // A node that joined after the group's retry topic was made:
              // it gets its own partition of it, then appends there.
              pb::AlterTopic grow;
              grow.set_name(name);
              self
                ->request(self->state.table, std::chrono::seconds(30), grow,
                          self->state.ctx->node_id)
                .then(
                  [=](const pb::ClusterTopic& ct) mutable {
                    apply_topic(self, ct);
                    notify_route(self, ct.name());
                    rp.delegate(caf::actor_cast<caf::actor>(self),
                                std::move(req));
                  },
                  [=](caf::error& err) mutable { rp.deliver(err); });
              return;
            }
            if (p < 0 && atomic) {
              rp.deliver(make_error(
                errc::not_owner, "topic '" + name
                                     + "' has no partition on this node for "
                                       "an append that must commit with "
                                       "this node's own writes"));
              return;
            }
          }
          if (p < 0) {
            auto picked = pick_available(self, e, key);
            if (!picked) {
              rp.deliver(picked.error());
              return;
            }
            p = *picked;
          }
        }
        req.set_partition(p);
        auto up = static_cast<size_t>(p);
        if (is_local(self, e, up)) {
          rp.delegate(e.partitions[up], std::move(req));
          return;
        }
        if (atomic || req.forwarded()) {
          rp.deliver(make_error(errc::not_owner,
                                "partition " + name + "/" + std::to_string(p)
                                  + " lives on " + e.homes[up]
                                  + "; an append with this node's own "
                                    "writes cannot commit there"));
          return;
        }
        forward(self, e, up, std::move(req), rp);
      });
      return rp;
    },
    [=](wire::txn_atom, caf::actor& txn) { self->state.txn = std::move(txn); },
    [=](const pb::ClusterMapRequest& req) -> caf::result<pb::ClusterMap> {
      auto rp = self->make_response_promise<pb::ClusterMap>();
      // Topics this node has not seen yet are read from etcd first.
      auto names = std::make_shared<std::vector<std::string>>(
        req.topics().begin(), req.topics().end());
      auto all = req.all_topics();
      with_topics(self, names, 0, [=]() mutable {
        rp.deliver(cluster_map(self, *names, all));
      });
      return rp;
    },
    [=](pb::HalfMessage& h) -> caf::result<pb::HalfAck> {
      auto rp = self->make_response_promise<pb::HalfAck>();
      auto topic = h.message().topic();
      with_topic(self, topic, [=](caf::expected<topic_entry*> t) mutable {
        if (!t) {
          rp.deliver(t.error());
          return;
        }
        auto d = route_half(self, **t, h);
        if (!d)
          rp.deliver(d.error());
        else if (*d == self->state.txn)
          rp.delegate(*d, std::move(h));
        else {
          metrics::counter("txn.forwarded")++;
          relay<pb::HalfAck>(self, *d, std::move(h), rp);
        }
      });
      return rp;
    },
    [=](pb::HalfBatch& b) -> caf::result<pb::BatchResult> {
      auto rp = self->make_response_promise<pb::BatchResult>();
      auto names = std::make_shared<std::vector<std::string>>();
      for (auto& h : b.halves())
        if (std::find(names->begin(), names->end(), h.message().topic())
            == names->end())
          names->push_back(h.message().topic());
      with_topics(self, names, 0, [=]() mutable {
        scatter_halves(self, std::move(b), rp);
      });
      return rp;
    },
    [=](pb::EndTxn& e) -> caf::result<pb::EndResult> {
      auto d = route_txn(self, e.txn_id());
      if (!d)
        return d.error();
      auto rp = self->make_response_promise<pb::EndResult>();
      if (*d == self->state.txn)
        rp.delegate(*d, std::move(e));
      else {
        metrics::counter("txn.forwarded")++;
        relay<pb::EndResult>(self, *d, std::move(e), rp);
      }
      return rp;
    },
    [=](pb::EndBatch& b) -> caf::result<pb::BatchResult> {
      auto rp = self->make_response_promise<pb::BatchResult>();
      scatter_ends(self, std::move(b), rp);
      return rp;
    },
    [=](pb::TxnShow& q) -> caf::result<pb::TxnRecord> {
      auto d = route_txn(self, q.txn_id());
      if (!d)
        return d.error();
      auto rp = self->make_response_promise<pb::TxnRecord>();
      if (*d == self->state.txn)
        rp.delegate(*d, std::move(q));
      else
        relay<pb::TxnRecord>(self, *d, std::move(q), rp);
      return rp;
    },
    [=](pb::TxnList& q) -> caf::result<pb::TxnRecords> {
      auto& st = self->state;
      if (q.local_only() || st.peers.empty()) {
        self->delegate(st.txn, std::move(q));
        return caf::delegated<pb::TxnRecords>{};
      }
      // Every node's transactions without an outcome.
      auto rp = self->make_response_promise<pb::TxnRecords>();
      auto acc = std::make_shared<pb::TxnRecords>();
      auto local = q;
      local.set_local_only(true);
      std::vector<caf::actor> ask{st.txn};
      for (auto& [id, gw] : st.peers)
        ask.push_back(gw);
      auto left = std::make_shared<size_t>(ask.size());
      for (auto& a : ask)
        st.requests.request<pb::TxnRecords>(
          self, a, std::chrono::seconds(10), local,
            [=](pb::TxnRecords& r) mutable {
              for (auto& x : *r.mutable_records())
                *acc->add_records() = std::move(x);
              acc->set_now_ms(std::max(acc->now_ms(), r.now_ms()));
              if (--*left == 0)
                rp.deliver(*acc);
            },
            [=](caf::error&) mutable {
              if (--*left == 0)
                rp.deliver(*acc);
            });
      return rp;
    },
    [=](pb::AssignCursor& a, caf::actor& member) {
      // From a group coordinator on another node, through our gateway. A
      // topic made a moment ago may not have reached this node's table yet:
      // it is read from etcd first.
      with_topic(self, a.topic(), [=](caf::expected<topic_entry*> t) mutable {
        if (!t || a.partition() >= (*t)->partitions.size()
            || !(*t)->partitions[a.partition()]) {
          EDDA_WARN("topics", "cursor assignment for "
                                << a.topic() << "/" << a.partition()
                                << ", which is not here");
          return;
        }
        self->send((*t)->partitions[a.partition()], std::move(a),
                   std::move(member));
      });
    },
    [=](wire::route_atom, const std::string& topic, bool create_retry) {
      // Replies (TopicMeta, partitions) where a partition not homed here is
      // its home's gateway (null while that is down).
      auto rp = self->make_response_promise();
      auto reply = [=](topic_entry& e) mutable {
        std::vector<caf::actor> parts(e.partitions.size());
        for (size_t p = 0; p < parts.size(); ++p)
          parts[p] = is_local(self, e, p) ? e.partitions[p]
                                          : home_gateway(self, e, p);
        rp.deliver(e.meta, parts);
      };
      with_topic(self, topic, [=](caf::expected<topic_entry*> t) mutable {
        if (t) {
          reply(**t);
          return;
        }
        if (!create_retry || !is_retry_topic(topic)) {
          rp.deliver(t.error());
          return;
        }
        pb::CreateTopic q;
        q.set_name(topic);
        q.set_partitions(1);
        self
          ->request(self->state.table, std::chrono::seconds(30), q,
                    static_cast<uint32_t>(pb::TOPIC_RETRY))
          .then(
            [=](const pb::ClusterTopic& ct) mutable {
              apply_topic(self, ct);
              reply(self->state.topics[ct.name()]);
            },
            [=](caf::error& err) mutable { rp.deliver(err); });
      });
      return rp;
    },
  }
    .or_else(cluster_updates(self))
    .or_else(operator_requests(self));
}

/// In a cluster the manager first waits for the table's snapshot; requests
/// that arrive meanwhile wait in the mailbox.
caf::behavior cluster_loading(self_ptr self) {
  self->set_default_handler(caf::skip);
  return caf::message_handler{
    [=](pb::TopicUpdate& u) {
      apply_update(self, u);
      if (!u.snapshot())
        return;
      EDDA_INFO("topics", "topic table loaded: "
                            << self->state.topics.size() << " topics");
      self->set_default_handler(caf::print_and_drop);
      self->become(cluster_main(self));
    },
  }
    .or_else(cluster_updates(self));
}

caf::behavior topic_manager(self_ptr self, context_ptr ctx) {
  auto& st = self->state;
  st.ctx = ctx;
  if (ctx->clustered()) {
    // Partitions come from etcd (the table); db `topics` only records which
    // topics have data here.
    {
      auto txn = ctx->env->read();
      txn.scan(db::topics, "", "", [&](std::string_view k, std::string_view) {
        st.local_records.insert(std::string{k});
        return true;
      });
    }
    self->set_down_handler([=](caf::down_msg& dm) {
      if (dm.source != self->state.table.address())
        return;
      EDDA_WARN("topics", "the topic table died (" << render(dm.reason)
                                                   << "); starting it again");
      start_table(self);
    });
    self->set_exit_handler([=](caf::exit_msg& em) {
      for (auto& [name, t] : self->state.topics)
        for (size_t p = 0; p < t.partitions.size(); ++p) {
          if (!t.partitions[p] || t.partitions[p].address() != em.source)
            continue;
          if (em.reason == caf::exit_reason::user_shutdown
              || em.reason == caf::exit_reason::normal)
            return;
          EDDA_WARN("topics", "partition " << name << "/" << p << " died ("
                                           << render(em.reason)
                                           << "), restarting from storage");
          t.partitions[p] = spawn_partition(self->home_system(),
                                            self->state.ctx, t.meta,
                                            static_cast<uint32_t>(p));
          self->link_to(t.partitions[p]);
          notify_route(self, name);
          return;
        }
      if (self->state.table)
        self->send_exit(self->state.table, em.reason);
      self->quit(em.reason);
    });
    start_table(self);
    if (ctx->cluster)
      self->send(ctx->cluster, wire::watch_atom::value,
                 caf::actor_cast<caf::actor>(self));
    return cluster_loading(self);
  }
  {
    auto txn = ctx->env->read();
    if (auto v = txn.get(db::meta, "node"))
      st.node.ParseFromArray(v->data(), static_cast<int>(v->size()));
    if (st.node.node_id().empty()) {
      st.node.set_node_id(new_unique_id());
      st.node.set_format_version(1);
      st.node.set_created_ms(ctx->clock());
    }
    st.next_topic_id = std::max<uint32_t>(1, st.node.next_topic_id());
    txn.scan(db::topics, "", "", [&](std::string_view k, std::string_view v) {
      pb::TopicMeta meta;
      if (!meta.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
        EDDA_ERROR("topics", "unparsable topic record '" << k << "'");
        return true;
      }
      auto& t = st.topics[meta.name()];
      t.meta = meta;
      st.next_topic_id = std::max(st.next_topic_id, meta.id() + 1);
      return true;
    });
  }
  for (auto& [name, t] : st.topics)
    spawn_partitions(self, t);
  // Partitions are linked: a partition that dies is respawned from storage
  // (its cursors come back when the group manager reassigns them); an exit
  // from anyone else (the node stopping) stops the manager and, through the
  // links, every partition.
  self->set_exit_handler([=](caf::exit_msg& em) {
    for (auto& [name, t] : self->state.topics) {
      for (size_t p = 0; p < t.partitions.size(); ++p) {
        if (t.partitions[p].address() != em.source)
          continue;
        if (em.reason == caf::exit_reason::user_shutdown
            || em.reason == caf::exit_reason::normal)
          return;
        EDDA_WARN("topics", "partition " << name << "/" << p
                                         << " died (" << render(em.reason)
                                         << "), restarting from storage");
        t.partitions[p] = spawn_partition(self->home_system(),
                                          self->state.ctx, t.meta,
                                          static_cast<uint32_t>(p));
        self->link_to(t.partitions[p]);
        notify_route(self, name);
        return;
      }
    }
    self->quit(em.reason);
  });
  return caf::message_handler{
    [=](caf::actor groups) {
      // Startup wiring, and again when the node's supervisor restarted this
      // manager: the partitions the groups knew died with the old one, so
      // every group refetches its routes and reassigns its cursors.
      self->state.groups = groups;
      for (auto& [name, t] : self->state.topics)
        notify_route(self, name);
    },
    [=](wire::txn_atom, caf::actor&) {
      // A single node: transactions go straight to the coordinator.
    },
    [=](const pb::CreateTopic& req) -> caf::result<pb::TopicInfo> {
      auto rp = self->make_response_promise<pb::TopicInfo>();
      auto name = req.name();
      auto err = create(self, name, req.partitions(), pb::TOPIC_NORMAL,
                        [=](const caf::error& err) mutable {
                          if (err)
                            rp.deliver(err);
                          else
                            rp.deliver(info_of(self->state.topics[name]));
                        });
      // Once a promise exists, CAF drops a returned error: deliver it.
      if (err)
        rp.deliver(err);
      return rp;
    },
    [=](const pb::GetTopic& req) -> caf::result<pb::TopicMeta> {
      auto t = find(self, req.name());
      if (!t)
        return t.error();
      return (*t)->meta;
    },
    [=](const pb::ClusterMapRequest& req) {
      std::vector<std::string> names(req.topics().begin(),
                                     req.topics().end());
      return cluster_map(self, names, req.all_topics());
    },
    [=](const pb::ListTopics& req) {
      pb::TopicList out;
      for (auto& [name, t] : self->state.topics)
        if (!t.pending && (req.include_internal() || name[0] != '%'))
          *out.add_topics() = info_of(t);
      return out;
    },
    [=](const pb::DescribeTopic& req) -> caf::result<pb::TopicInfo> {
      auto t = find(self, req.name());
      if (!t)
        return t.error();
      auto rp = self->make_response_promise<pb::TopicInfo>();
      auto acc = std::make_shared<pb::TopicInfo>(info_of(**t));
      auto remaining = std::make_shared<size_t>((*t)->partitions.size());
      for (auto& p : (*t)->partitions)
        self->request(p, std::chrono::seconds(10), req)
          .then(
            [=](pb::TopicInfo& part) mutable {
              acc->MergeFrom(part);
              if (--*remaining == 0)
                rp.deliver(*acc);
            },
            [=](caf::error& err) mutable {
              if (--*remaining == 0)
                rp.deliver(*acc);
            });
      return rp;
    },
    [=](const pb::AlterTopic& req) -> caf::result<pb::TopicInfo> {
      auto t = find(self, req.name());
      if (!t)
        return t.error();
      auto& e = **t;
      if (e.pending)
        return make_error(errc::invalid_argument,
                          "topic '" + req.name() + "' is being changed");
      if (auto err = check_alter(req, e.meta.name(), e.meta.partitions()))
        return err;
      auto meta = e.meta;
      if (req.partitions() != 0)
        meta.set_partitions(req.partitions());
      apply_retention(req, meta);
      e.pending = true;
      auto rp = self->make_response_promise<pb::TopicInfo>();
      auto name = req.name();
      persist(self, meta, [=](const caf::error& err) mutable {
        auto& t = self->state.topics[name];
        t.pending = false;
        if (err) {
          rp.deliver(err);
          return;
        }
        bool retention = retention_changed(t.meta, meta);
        t.meta = meta;
        spawn_partitions(self, t);
        if (retention)
          for (auto& p : t.partitions)
            self->send(p, meta);
        EDDA_INFO("topics", "topic " << name << ": " << meta.partitions()
                                     << " partitions, "
                                     << retention_text(meta));
        notify_route(self, name);
        rp.deliver(info_of(t));
      });
      return rp;
    },
    [=](const pb::DeleteTopic& req) -> caf::result<pb::Done> {
      auto t = find(self, req.name());
      if (!t)
        return t.error();
      if (req.name()[0] == '%')
        return make_error(errc::invalid_argument,
                          "internal topics go away with their group");
      auto& e = **t;
      if (e.pending)
        return make_error(errc::invalid_argument,
                          "topic '" + req.name() + "' is being changed");
      pb::WriteBatch b;
      auto* op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::topics));
      op->set_key(req.name());
      op->set_kind(pb::WriteOp::DEL);
      op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::log));
      op->set_key(keys::topic_log_prefix(e.meta.id()));
      op->set_kind(pb::WriteOp::DEL_PREFIX);
      e.pending = true;
      auto rp = self->make_response_promise<pb::Done>();
      auto name = req.name();
      auto ctx = self->state.ctx;
      self
        ->request(ctx->writer, std::chrono::milliseconds(ctx->write_timeout_ms),
                  std::move(b))
        .then(
          [=](const pb::WriteResult&) mutable {
            auto& topics = self->state.topics;
            auto i = topics.find(name);
            if (i != topics.end()) {
              for (auto& p : i->second.partitions)
                self->send_exit(p, caf::exit_reason::user_shutdown);
              topics.erase(i);
            }
            notify_route(self, name);
            EDDA_INFO("topics", "deleted " << name);
            pb::Done d;
            d.set_what("deleted topic " + name);
            rp.deliver(d);
          },
          [=](caf::error& err) mutable {
            auto i = self->state.topics.find(name);
            if (i != self->state.topics.end())
              i->second.pending = false;
            rp.deliver(err);
          });
      return rp;
    },
    [=](pb::ProduceRequest& req) -> caf::result<pb::ProduceResult> {
      auto t = find(self, req.topic());
      if (!t)
        return t.error();
      auto& e = **t;
      auto p = req.partition();
      if (p < 0)
        p = pick_partition(e, req.messages_size() > 0 ? req.messages(0).key()
                                                      : std::string{});
      if (static_cast<size_t>(p) >= e.partitions.size())
        return make_error(errc::invalid_argument,
                          "topic '" + req.topic() + "' has no partition "
                            + std::to_string(p));
      req.set_partition(p);
      req.set_topic_partitions(static_cast<uint32_t>(e.partitions.size()));
      self->delegate(e.partitions[static_cast<size_t>(p)],
                            std::move(req));
      return caf::delegated<pb::ProduceResult>{};
    },
    [=](pb::AppendInternal& req) -> caf::result<pb::ProduceResult> {
      auto t = find(self, req.topic());
      if (!t)
        return t.error();
      auto& e = **t;
      auto p = req.partition();
      if (p < 0 || static_cast<size_t>(p) >= e.partitions.size())
        p = pick_partition(e, req.messages_size() > 0 ? req.messages(0).key()
                                                      : std::string{});
      req.set_partition(p);
      self->delegate(e.partitions[static_cast<size_t>(p)],
                            std::move(req));
      return caf::delegated<pb::ProduceResult>{};
    },
    [=](wire::route_atom, const std::string& topic, bool create_retry) {
      // Replies (TopicMeta, partitions) once the topic is ready.
      auto rp = self->make_response_promise();
      auto& topics = self->state.topics;
      auto i = topics.find(topic);
      if (i != topics.end()) {
        if (i->second.pending && i->second.partitions.empty())
          i->second.waiters.push_back(rp);
        else
          rp.deliver(i->second.meta, i->second.partitions);
        return rp;
      }
      if (!create_retry || !is_retry_topic(topic)) {
        rp.deliver(make_error(errc::unknown_topic,
                              "no topic named '" + topic + "'"));
        return rp;
      }
      auto err = create(self, topic, 1, pb::TOPIC_RETRY,
                        [](const caf::error&) {});
      if (err)
        rp.deliver(err);
      else
        self->state.topics[topic].waiters.push_back(rp);
      return rp;
    },
  }
    .or_else(operator_requests(self));
}

} // namespace

caf::actor spawn_topic_manager(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(topic_manager, std::move(ctx));
}

void wire_up(caf::actor scheduler, caf::actor topics, caf::actor groups) {
  caf::anon_send(topics, groups);
  caf::anon_send(scheduler, topics);
}

} // namespace edda::broker
