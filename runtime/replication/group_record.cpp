#include "replication/group_record.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "cluster/membership.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/weak_intrusive_ptr.hpp>

#include <algorithm>
#include <optional>

namespace edda::replication {

namespace {

namespace pb = wire::pb;

} // namespace

std::string joined(const google::protobuf::RepeatedPtrField<std::string>& ids) {
  std::string out;
  for (auto& x : ids)
    out += (out.empty() ? "" : ",") + x;
  return out.empty() ? "none" : out;
}

std::string standby_id(const std::string& group) {
  return group + "~standby";
}

std::string group_key(const std::string& cluster_name,
                      const std::string& group) {
  return cluster::membership::prefix(cluster_name) + "groups/" + group;
}

caf::expected<std::map<std::string, group_entry>>
list_groups(coord::client& store, const std::string& cluster_name) {
  auto prefix = group_key(cluster_name, "");
  auto got = store.get_prefix(prefix);
  if (!got)
    return got.error();
  std::map<std::string, group_entry> out;
  for (auto& kv : got->kvs) {
    group_entry e;
    if (!e.rec.ParseFromString(kv.value))
      continue;
    e.mod_revision = kv.mod_revision;
    out.emplace(kv.key.substr(prefix.size()), std::move(e));
  }
  return out;
}

caf::expected<std::optional<pb::ReplicaGroup>>
read_group(coord::client& store, const std::string& cluster_name,
           const std::string& group) {
  auto got = store.get(group_key(cluster_name, group));
  if (!got)
    return got.error();
  if (!got->first)
    return std::optional<pb::ReplicaGroup>{};
  pb::ReplicaGroup g;
  if (!g.ParseFromString(got->first->value))
    return make_error(errc::invalid_argument,
                      "the replica group record of " + group
                        + " does not parse");
  return std::optional<pb::ReplicaGroup>{std::move(g)};
}

namespace {

/// The record leaves the group to its own node: no host, or the copy in
/// the node's own data dir elected for a hand-back.
bool at_home(const std::string& group, const pb::ReplicaGroup& rec) {
  return (rec.host().empty() || rec.host() == group
          || rec.host() == standby_id(group))
         && (rec.move_to().empty() || rec.move_to() == standby_id(group));
}

caf::error served_elsewhere(const std::string& group,
                            const pb::ReplicaGroup& rec) {
  if (rec.host().empty() || rec.host() == group)
    return make_error(errc::fenced,
                      "replica group " + group + " is being moved to "
                        + rec.move_to() + " (asked by " + rec.moved_by()
                        + "): this node follows it as " + standby_id(group)
                        + (rec.pinned() ? " and keeps a copy (edda cluster "
                                          "move-group "
                                            + group + " --to " + group
                                            + " brings it back)"
                                        : ""));
  return make_error(
    errc::fenced,
    "replica group " + group + " is served by node " + rec.host()
      + " since a failover (epoch " + std::to_string(rec.leader_epoch())
      + ", its copy elected at seq " + std::to_string(rec.elected_seq())
      + "): this node's data dir may lack writes acknowledged there since; "
        "it follows the group as " + standby_id(group)
      + " and takes it back once in sync");
}

} // namespace

caf::error refuse_if_served_elsewhere(coord::client& store,
                                      const std::string& cluster_name,
                                      const std::string& group) {
  auto rec = read_group(store, cluster_name, group);
  if (!rec)
    return rec.error();
  if (*rec && !at_home(group, **rec))
    return served_elsewhere(group, **rec);
  return caf::none;
}

caf::expected<group_claim>
claim_group(coord::client& store, const std::string& cluster_name,
            const std::string& group, const std::string& log_id,
            uint64_t local_epoch, int64_t now_ms,
            const claim_options& opts) {
  auto key = group_key(cluster_name, group);
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto got = store.get(key);
    if (!got)
      return got.error();
    pb::ReplicaGroup old;
    int64_t expect = 0;
    if (got->first) {
      expect = got->first->mod_revision;
      if (!old.ParseFromString(got->first->value))
        return make_error(errc::invalid_argument,
                          "the replica group record " + key
                            + " does not parse");
      if (!old.leader().empty() && old.leader() != group)
        return make_error(errc::fenced,
                          "replica group " + group + " is led by "
                            + old.leader() + " (epoch "
                            + std::to_string(old.leader_epoch())
                            + "): this node must not lead it");
      if (opts.host.empty() && !at_home(group, old))
        return served_elsewhere(group, old);
      if (!opts.host.empty() && old.host() != opts.host)
        return make_error(errc::fenced,
                          "replica group " + group + " was not elected onto "
                            + opts.host + " (its record names host '"
                            + old.host() + "' at epoch "
                            + std::to_string(old.leader_epoch()) + ")");
      if (old.host() == standby_id(group)
          && (old.log_id() != log_id
              || local_epoch != old.elected_copy_epoch()
              || opts.local_seq < old.elected_seq()))
        return make_error(
          errc::fenced,
          "replica group " + group + " was handed back to the copy its "
            "standby kept (log '" + old.log_id() + "', epoch "
            + std::to_string(old.elected_copy_epoch()) + ", seq "
            + std::to_string(old.elected_seq()) + "), but this data dir is at "
            "log '" + log_id + "', epoch " + std::to_string(local_epoch)
            + ", seq " + std::to_string(opts.local_seq)
            + ": it is not that copy and must not serve the group");
    } else if (!opts.host.empty()) {
      return make_error(errc::fenced, "replica group " + group
                                        + " has no record: nothing elected "
                                          "it onto "
                                        + opts.host);
    }
    if (!opts.host.empty() && old.log_id() != log_id)
      return make_error(errc::fenced,
                        "the copy of " + group + " on " + opts.host
                          + " is of log '" + log_id + "', the record's is '"
                          + old.log_id() + "'");
    pb::ReplicaGroup rec;
    rec.set_leader(group);
    rec.set_host(opts.host);
    // A group served elsewhere keeps its own node's choice (not its
    // host's).
    rec.set_failover(opts.host.empty() ? opts.failover : old.failover());
    // The record keeps the last election (every later leader copies over
    // a follower last written before it, see group_claim).
    rec.set_elected_by(old.elected_by());
    rec.set_elected_ms(old.elected_ms());
    rec.set_elected_seq(old.elected_seq());
    rec.set_elected_epoch(old.elected_epoch());
    rec.set_elected_copy_epoch(old.elected_copy_epoch());
    // What operators asked (add-replica, move-group) stays; the claimer
    // itself is no extra replica of its group.
    for (auto& x : old.extra_replicas())
      if (x != group && x != opts.host)
        rec.add_extra_replicas(x);
    rec.set_move_wanted(old.move_wanted());
    rec.set_moved_by(old.moved_by());
    rec.set_pinned(old.pinned());
    if (!opts.host.empty() || old.host() == standby_id(group)) {
      rec.set_unclean(old.unclean());
      rec.set_unclean_elected_by(old.unclean_elected_by());
    }
    rec.set_leader_epoch(std::max(local_epoch, old.leader_epoch()) + 1);
    rec.set_log_id(log_id);
    rec.set_changed_ms(now_ms);
    if (got->first && old.log_id() != log_id && !old.log_id().empty()) {
      // This data dir began another log: the old one's acknowledged
      // writes are on the followers the record named in sync.
      EDDA_ERROR("replication",
                 "group " << group << ": this data dir starts log '"
                          << log_id << "', but etcd records log '"
                          << old.log_id() << "' with copies in sync on "
                          << joined(old.isr())
                          << ": this node's data dir was replaced; the "
                             "writes acknowledged before are on those copies "
                             "(kept, never overwritten)");
      rec.set_previous_log_id(old.log_id());
      *rec.mutable_previous_isr() = old.isr();
    } else {
      rec.set_previous_log_id(old.previous_log_id());
      *rec.mutable_previous_isr() = old.previous_isr();
    }
    auto put = store.cas_put(key, rec.SerializeAsString(), expect);
    if (!put)
      return put.error();
    if (put->succeeded) {
      group_claim c{rec.leader_epoch(), put->revision};
      // Since the last election (also at a later restart of this leader):
      // a follower last written before it may hold what the deposed
      // leader wrote beyond the elected copy.
      c.election_epoch = old.elected_epoch();
      c.elected_seq = old.elected_seq();
      c.elected_copy_epoch = old.elected_copy_epoch();
      return c;
    }
  }
  return make_error(errc::unavailable,
                    "the replica group record " + key
                      + " kept changing while this node claimed it");
}

namespace {

struct recorder_state {
  coord::client_ptr store;
  std::string cluster_name;
  std::string group;
  uint64_t epoch = 0;
  int64_t mod_revision = 0;
  caf::actor shipper; ///< told when the record is no longer this leader's
  caf::actor followers; ///< told the record (its extra replicas) on change
  bool moving = false;  ///< a move away was seen (on_lost told once)
  std::function<void(const caf::error&)> on_lost;
  std::unique_ptr<coord::watch> watch;
  uint64_t watch_gen = 0;
  bool lost = false;
  ~recorder_state() {
    if (watch)
      watch->cancel();
  }
  static inline const char* name = "edda.replication.recorder";
};

using rec_ptr = caf::stateful_actor<recorder_state>*;

bool ours(const recorder_state& st, const pb::ReplicaGroup& rec) {
  return rec.leader() == st.group && rec.leader_epoch() == st.epoch;
}

/// `fenced`: `rec` (nullopt: deleted) is no longer this leader's.
caf::error taken_over(const recorder_state& st,
                      const std::optional<pb::ReplicaGroup>& rec) {
  if (!rec)
    return make_error(errc::fenced, "the replica group record of " + st.group
                                      + " was deleted");
  std::string where;
  if (!rec->host().empty())
    where = " (served by node " + rec->host() + ")";
  return make_error(errc::fenced,
                    "replica group " + st.group + " is now led by "
                      + rec->leader() + where + " at epoch "
                      + std::to_string(rec->leader_epoch())
                      + ", not by this node at epoch "
                      + std::to_string(st.epoch));
}

/// Checks `rec` (nullopt: deleted): still this leader's at this epoch?
void check(rec_ptr self, const std::optional<pb::ReplicaGroup>& rec) {
  auto& st = self->state;
  if (st.lost)
    return;
  if (rec && st.followers)
    self->send(st.followers, *rec);
  if (rec && ours(st, *rec)) {
    // Marked to move to another copy (move-group, or a hand-back of a
    // group served here after a failover): this leader stops, cleanly
    // (its followers get the last commits); the controller then elects
    // that copy.
    if (!rec->move_to().empty() && !st.moving) {
      st.moving = true;
      auto why = make_error(errc::not_owner,
                            "replica group " + st.group + " moves to "
                              + rec->move_to()
                              + (rec->moved_by().empty()
                                   ? std::string{}
                                   : " (asked by " + rec->moved_by() + ")")
                              + ": this node stops serving it");
      EDDA_WARN("replication", render(why));
      if (st.on_lost)
        st.on_lost(why);
    }
    return;
  }
  st.lost = true;
  auto err = taken_over(st, rec);
  EDDA_ERROR("replication", render(err));
  if (st.shipper)
    self->send(st.shipper, wire::lost_atom::value, err);
  if (st.on_lost && !st.moving) // after a move: expected, told already
    st.on_lost(err);
}

/// Watches the record from `from` on (events come on the store's thread
/// and are passed to the actor); read again and watched anew after an
/// error.
void watch_record(rec_ptr self, int64_t from) {
  auto& st = self->state;
  if (st.watch) {
    st.watch->cancel();
    st.watch.reset();
  }
  auto key = group_key(st.cluster_name, st.group);
  auto gen = ++st.watch_gen;
  caf::weak_actor_ptr me = self->ctrl(); // the watch must not keep it
  coord::watch_handlers h;
  h.on_events = [me, key, gen](const std::vector<coord::watch_event>& evs) {
    auto strong = me.lock();
    if (!strong)
      return;
    auto to = caf::actor_cast<caf::actor>(strong);
    for (auto& ev : evs) {
      if (ev.kv.key != key)
        continue; // another group under the same prefix
      pb::ReplicaGroup rec;
      if (ev.type == coord::watch_event::kind::del
          || !rec.ParseFromString(ev.kv.value))
        caf::anon_send(to, wire::lost_atom::value, gen, false,
                       pb::ReplicaGroup{});
      else
        caf::anon_send(to, wire::lost_atom::value, gen, true, rec);
    }
  };
  h.on_error = [me, gen](const caf::error&) {
    if (auto strong = me.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong),
                     wire::watch_atom::value, gen);
  };
  auto w = st.store->watch_prefix(key, from, std::move(h));
  if (!w) {
    self->delayed_send(self, std::chrono::seconds(1), wire::watch_atom::value,
                       gen);
    return;
  }
  st.watch = std::move(*w);
}

/// Rewrites the record by compare-and-swap while it is this leader's:
/// `change` edits it. The record as written. Errors: fenced (gone, or
/// another leader or epoch), unavailable / timeout (etcd, or it changed
/// meanwhile: again).
caf::expected<pb::ReplicaGroup>
rewrite(rec_ptr self, const std::function<void(pb::ReplicaGroup&)>& change) {
  auto& st = self->state;
  auto key = group_key(st.cluster_name, st.group);
  auto got = st.store->get(key);
  if (!got)
    return got.error();
  pb::ReplicaGroup rec;
  if (!got->first || !rec.ParseFromString(got->first->value))
    return taken_over(st, std::nullopt);
  if (!ours(st, rec))
    return taken_over(st, rec);
  if (got->first->mod_revision != st.mod_revision)
    EDDA_DEBUG("replication", "group " << st.group
                                       << ": record changed elsewhere");
  change(rec);
  auto put = st.store->cas_put(key, rec.SerializeAsString(),
                               got->first->mod_revision);
  if (!put)
    return put.error();
  if (!put->succeeded)
    return make_error(errc::unavailable, "the replica group record " + key
                                           + " changed meanwhile; again");
  st.mod_revision = put->revision;
  return rec;
}

caf::behavior recorder(rec_ptr self, coord::client_ptr store,
                       std::string cluster_name, std::string group,
                       uint64_t epoch, int64_t mod_revision,
                       std::function<void(const caf::error&)> on_lost) {
  auto& st = self->state;
  st.on_lost = std::move(on_lost);
  st.store = std::move(store);
  st.cluster_name = std::move(cluster_name);
  st.group = std::move(group);
  st.epoch = epoch;
  st.mod_revision = mod_revision;
  return {
    [=](wire::serving_atom, caf::actor& followers) {
      // The followers actor: told the record now and at every change.
      auto& st = self->state;
      st.followers = std::move(followers);
      if (auto got = read_group(*st.store, st.cluster_name, st.group);
          got && *got)
        self->send(st.followers, **got);
    },
    [=](wire::watch_atom, caf::actor& shipper) {
      // The shipper to tell when the record is taken over; the watch runs
      // from the record as this node wrote it.
      self->state.shipper = std::move(shipper);
      watch_record(self, self->state.mod_revision + 1);
    },
    [=](wire::lost_atom, uint64_t gen, bool present,
        const pb::ReplicaGroup& rec) {
      if (gen != self->state.watch_gen)
        return;
      check(self, present ? std::optional<pb::ReplicaGroup>{rec}
                          : std::nullopt);
    },
    [=](wire::watch_atom, uint64_t gen) {
      // The watch ended (etcd lost, compacted): read the record again and
      // watch on from there.
      auto& st = self->state;
      if (gen != st.watch_gen || st.lost)
        return;
      auto got = st.store->get(group_key(st.cluster_name, st.group));
      if (!got) {
        self->delayed_send(self, std::chrono::seconds(1),
                           wire::watch_atom::value, gen);
        return;
      }
      std::optional<pb::ReplicaGroup> rec;
      if (got->first) {
        pb::ReplicaGroup g;
        if (g.ParseFromString(got->first->value))
          rec = std::move(g);
      }
      check(self, rec);
      if (!st.lost)
        watch_record(self, got->second + 1);
    },
    [=](wire::stop_atom) -> bool {
      // A clean stop: the record says so (while it is still this
      // leader's), so that the controller waits for a restart.
      if (self->state.lost)
        return false;
      return static_cast<bool>(rewrite(
        self, [](pb::ReplicaGroup& rec) { rec.set_stopped_ms(now_ms()); }));
    },
    [=](const pb::ReplicaGroup& want) -> caf::result<pb::ReplicaGroup> {
      auto rec = rewrite(self, [&](pb::ReplicaGroup& r) {
        *r.mutable_isr() = want.isr();
        r.set_changed_ms(now_ms());
      });
      if (!rec)
        return rec.error();
      EDDA_INFO("replication", "group " << self->state.group
                                        << ": in-sync copies on "
                                        << joined(rec->isr())
                                        << " (recorded in etcd)");
      return *rec;
    },
  };
}

} // namespace

caf::actor spawn_group_recorder(caf::actor_system& sys,
                                coord::client_ptr store,
                                std::string cluster_name, std::string group,
                                uint64_t epoch, int64_t mod_revision,
                                std::function<void(const caf::error&)> on_lost) {
  return sys.spawn<caf::detached>(recorder, std::move(store),
                                  std::move(cluster_name), std::move(group),
                                  epoch, mod_revision, std::move(on_lost));
}

} // namespace edda::replication
