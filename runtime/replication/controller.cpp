#include "replication/controller.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "cluster/membership.hpp"
#include "cluster/owner_table.hpp"
#include "replication/group_record.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <vector>

namespace edda::replication {

namespace {

namespace pb = wire::pb;

constexpr const char* duty = "controller";

struct controller_state {
  controller_options opts;
  caf::actor owners;
  uint64_t token = 0;  ///< the duty's token while held (0: not held)
  std::set<std::string> electing; ///< queries out for these groups
  std::set<std::string> handing;  ///< hand-back queries out
  /// When this holder first saw each group unserved.
  std::map<std::string, std::chrono::steady_clock::time_point> unserved;
  /// Groups said to wait (no in-sync copy on a live node), not said again.
  std::set<std::string> waiting;
  /// `edda cluster elect --unclean` requests taken here, answered once the
  /// group's record shows an election after the request (or at deadline).
  struct pending_elect {
    std::string group;
    /// What answers it: "" an unclean election; "move" the record's host
    /// is `target` ("" : the group's own node) and nothing is pending;
    /// "replica" `target` is in the in-sync set.
    std::string kind;
    std::string target;
    int64_t revision = 0; ///< of the record with the request
    std::chrono::steady_clock::time_point deadline;
    caf::response_promise rp;
  };
  std::vector<pending_elect> pending;
  static inline const char* name = "edda.replication.controller";
};

using self_ptr = caf::stateful_actor<controller_state>*;

/// One group's election in progress: the record as read, the answers.
struct election {
  std::string group;
  pb::ReplicaGroup rec;
  int64_t mod_revision = 0;
  size_t pending = 0;
  bool unclean = false; ///< candidates outside the in-sync set (asked for)
  std::vector<pb::ReplAck> copies;
};

std::string member_key(const controller_options& o, const std::string& id) {
  return cluster::membership::prefix(o.cluster_name) + "members/" + id;
}

/// Writes `next` as `group`'s record if it is still at `mod_revision` and
/// this controller still holds the duty at `token` (and, if given, while
/// `absent_key` is absent): the only way the duty's holder changes a
/// record.
caf::expected<coord::cas_result>
guarded_write(self_ptr self, const std::string& group,
              const pb::ReplicaGroup& next, int64_t mod_revision,
              uint64_t token, const std::string& absent_key = {}) {
  auto& st = self->state;
  auto guard = cluster::membership::prefix(st.opts.cluster_name) + "owners/"
               + duty;
  return st.opts.store->cas_put_guarded(
    group_key(st.opts.cluster_name, group), next.SerializeAsString(),
    mod_revision, guard, static_cast<int64_t>(token), absent_key);
}

/// `group`'s record and its mod_revision, for an operator's request;
/// `code` with "no replica group" if there is none.
caf::expected<std::pair<pb::ReplicaGroup, int64_t>>
requested_group(self_ptr self, const std::string& group, errc code) {
  auto& st = self->state;
  auto got = st.opts.store->get(group_key(st.opts.cluster_name, group));
  if (!got)
    return got.error();
  pb::ReplicaGroup rec;
  if (!got->first || !rec.ParseFromString(got->first->value))
    return make_error(code, "no replica group '" + group.substr(0, 80)
                              + "' (groups are named by their node ids)");
  return std::make_pair(std::move(rec), got->first->mod_revision);
}

/// Writes the election's outcome (the answers are in).
void decide(self_ptr self, const std::shared_ptr<election>& e,
            uint64_t token) {
  auto& st = self->state;
  st.electing.erase(e->group);
  if (token != st.token || token == 0)
    return; // the duty moved meanwhile
  std::vector<const pb::ReplAck*> usable;
  const pb::ReplAck* best = nullptr;
  for (auto& a : e->copies) {
    if (a.log_id() != e->rec.log_id() || a.unfinished_copy())
      continue;
    usable.push_back(&a);
    if (!best || a.epoch() > best->epoch()
        || (a.epoch() == best->epoch() && a.seq() > best->seq()))
      best = &a;
  }
  // A hand-back (move_to): that copy, if it answered. Every copy in the
  // recorded in-sync set has every acknowledged write; what another one
  // has beyond it was never acknowledged (and is truncated by a full copy
  // once the new leader serves).
  for (auto* a : usable)
    if (!e->unclean && !e->rec.move_to().empty()
        && a->follower() == e->rec.move_to())
      best = a;
  if (!best) {
    if (st.waiting.insert(e->group).second)
      EDDA_WARN("replication",
                "controller: group "
                  << e->group << " has no node serving it and no "
                  << (e->unclean ? "copy of its log" : "in-sync copy")
                  << " answered (" << e->copies.size()
                  << " asked); it waits for its node");
    return;
  }
  pb::ReplicaGroup next = e->rec;
  auto now = now_ms();
  next.set_host(best->follower());
  next.set_leader_epoch(e->rec.leader_epoch() + 1);
  // The winner first, then the other in-sync copies that answered: each
  // has every write the old leader acknowledged, so a re-election (the
  // winner fails to serve it) may take them. The elected node's claim
  // starts its own set.
  next.clear_isr();
  next.add_isr(best->follower());
  if (!e->unclean)
    for (auto* a : usable)
      if (a != best)
        next.add_isr(a->follower());
  next.set_elected_by(token);
  next.set_elected_ms(now);
  next.set_elected_seq(best->seq());
  next.set_elected_epoch(next.leader_epoch());
  next.set_elected_copy_epoch(best->epoch());
  next.clear_stopped_ms(); // the elected node has not stopped
  next.set_changed_ms(now);
  next.set_unclean(e->unclean);
  next.set_unclean_elected_by(e->unclean ? e->rec.unclean_by() : "");
  next.clear_unclean_by();
  next.clear_unclean_requested_ms();
  bool handed_back = !e->rec.move_to().empty()
                     && best->follower() == e->rec.move_to();
  next.clear_move_to();
  if (best->follower() == e->rec.move_wanted())
    next.clear_move_wanted();
  if (best->follower() == standby_id(e->group))
    next.set_pinned(false); // its own node serves it again
  next.clear_extra_replicas(); // the winner serves now: no extra of itself
  for (auto& x : e->rec.extra_replicas())
    if (x != best->follower())
      next.add_extra_replicas(x);
  // Only while the group's member key is still absent: a node that
  // rejoined while the copies were asked keeps its group.
  auto put = guarded_write(self, e->group, next, e->mod_revision, token,
                           member_key(st.opts, e->group));
  if (!put) {
    EDDA_WARN("replication", "controller: electing a leader for group "
                               << e->group << ": " << render(put.error())
                               << "; trying again");
    return;
  }
  if (!put->succeeded) {
    EDDA_INFO("replication", "controller: group "
                               << e->group
                               << " changed while electing (its node is back, "
                                  "or the duty moved); looking again");
    return;
  }
  st.waiting.erase(e->group);
  st.unserved.erase(e->group); // a next loss counts its grace anew
  metrics::counter("replication.elections")++;
  if (e->unclean) {
    metrics::counter("replication.unclean_elections")++;
    auto detail = "UNCLEAN election of group " + e->group + " asked by "
                  + next.unclean_elected_by() + ": the copy on "
                  + best->follower() + " (epoch "
                  + std::to_string(best->epoch()) + ", seq "
                  + std::to_string(best->seq())
                  + ") was not in sync; writes the old leader acknowledged "
                    "after it are lost";
    EDDA_ERROR("replication", "controller (token " << token << "): "
                                                  << detail);
    if (st.opts.alerts)
      st.opts.alerts->raise(
        alert{"unclean_election", e->group, detail, "", now});
    return;
  }
  if (handed_back) {
    metrics::counter("replication.handbacks")++;
    EDDA_WARN("replication", "controller (token "
                               << token << "): group " << e->group
                               << " moved as asked"
                               << (e->rec.moved_by().empty()
                                     ? std::string{}
                                     : " by " + e->rec.moved_by())
                               << " to the copy on ("
                               << best->follower() << ", epoch "
                               << best->epoch() << ", seq " << best->seq()
                               << ") at epoch " << next.leader_epoch());
    return;
  }
  EDDA_WARN("replication",
            "controller (token " << token << "): group " << e->group
                                 << " lost its node; elected the copy on "
                                 << best->follower() << " (epoch "
                                 << best->epoch() << ", seq " << best->seq()
                                 << ") to serve it at epoch "
                                 << next.leader_epoch());
}

/// A group to move to another copy in the recorded in-sync set, once that
/// copy answers: the one an operator asked for (move-group), or the
/// group's own node back as a standby after a failover (the hand-back;
/// not while pinned by an operator's move away). The record is marked
/// `move_to` that copy (token-guarded); the node serving the group stops
/// serving it on seeing the mark (its recorder; hosting.hpp), and the
/// next rounds elect the marked copy without waiting.
void move_if_ready(self_ptr self, const std::string& group,
                        group_entry entry,
                        const std::map<std::string, pb::MemberInfo>& live,
                        uint64_t token) {
  auto& st = self->state;
  auto rec = entry.rec;
  // The copy to move to: the one an operator asked for (move-group), else
  // the group's own node back as a standby, unless an operator moved the
  // group away from it (pinned).
  auto standby = !rec.move_wanted().empty() ? rec.move_wanted()
                 : rec.pinned()             ? std::string{}
                                            : standby_id(group);
  auto server = rec.host().empty() ? group : rec.host();
  if (standby.empty() || server == standby || !rec.move_to().empty()
      || live.count(standby) == 0
      || std::find(rec.isr().begin(), rec.isr().end(), standby)
           == rec.isr().end())
    return;
  if (!st.handing.insert(group).second)
    return; // asked already
  // The standby answers first, with a finished copy of the group's log:
  // the group is not stopped for a copy that cannot be elected.
  pb::ReplPositionQuery q;
  q.set_group(group);
  self
    ->request(st.opts.cluster, st.opts.query_timeout,
              wire::current_atom::value, standby, std::move(q))
    .then(
      [=](const pb::ReplAck& a) {
        auto& st = self->state;
        st.handing.erase(group);
        if (token != st.token || a.log_id() != rec.log_id()
            || a.unfinished_copy())
          return;
        auto next = rec;
        next.set_move_to(standby);
        next.clear_move_wanted();
        next.set_changed_ms(now_ms());
        auto put = guarded_write(self, group, next, entry.mod_revision, token);
        if (!put || !put->succeeded)
          return; // changed meanwhile, or etcd: a next round looks again
        EDDA_WARN("replication", "controller (token "
                                   << token << "): group " << group
                                   << ": moving it from " << server
                                   << " to the in-sync copy on " << standby
                                   << " (seq " << a.seq() << ")"
                                   << (rec.move_wanted().empty()
                                         ? ": its node is back"
                                         : ", as " + rec.moved_by()
                                             + " asked"));
      },
      [=](caf::error&) { self->state.handing.erase(group); });
}

/// Lists groups and members, and starts an election for each group that
/// needs one.
void run_round(self_ptr self) {
  auto& st = self->state;
  auto groups = list_groups(*st.opts.store, st.opts.cluster_name);
  if (!groups)
    return;
  auto members = st.opts.store->get_prefix(
    cluster::membership::prefix(st.opts.cluster_name) + "members/");
  if (!members)
    return;
  std::map<std::string, pb::MemberInfo> live;
  for (auto& kv : members->kvs) {
    pb::MemberInfo m;
    if (m.ParseFromString(kv.value) && !m.node_id().empty())
      live.emplace(m.node_id(), m);
  }
  auto token = st.token;
  for (auto& [group, entry] : *groups) {
    auto& rec = entry.rec;
    if (rec.leader().empty()
        || (!rec.failover() && rec.unclean_by().empty()
            && rec.move_wanted().empty() && rec.move_to().empty()))
      continue;
    if (live.count(group) != 0) {
      st.waiting.erase(group);
      st.waiting.erase(group + "@" + rec.host());
      st.unserved.erase(group);
      move_if_ready(self, group, entry, live, token);
      continue; // served
    }
    // How long this holder has seen it unserved (its own clock: no wall
    // clocks of other nodes compared).
    auto now = std::chrono::steady_clock::now();
    auto unserved_for = now - st.unserved.try_emplace(group, now).first->second;
    bool moving = !rec.move_to().empty(); // its server stopped for it
    if (!moving && !rec.failover() && rec.unclean_by().empty())
      continue; // failover off: it waits for its node
    if (unserved_for < st.opts.grace && !moving)
      continue; // its node may be rejoining
    if (moving && unserved_for >= st.opts.host_wait) {
      // The marked copy was not elected in time (it left the in-sync set,
      // or died): the move is withdrawn, so that the group's own node (its
      // standby) or a plain election can serve it again.
      auto next = rec;
      next.clear_move_to();
      next.clear_move_wanted();
      next.set_changed_ms(now_ms());
      auto put = guarded_write(self, group, next, entry.mod_revision, token);
      if (put && put->succeeded)
        EDDA_WARN("replication", "controller (token "
                                   << token << "): the move of group "
                                   << group << " to " << rec.move_to()
                                   << " was not done within "
                                   << st.opts.host_wait.count()
                                   << " ms; withdrawn");
      continue;
    }
    if (!moving && rec.stopped_ms() != 0
        && unserved_for < st.opts.restart_wait) {
      if (st.waiting.insert(group + "@stopped").second)
        EDDA_INFO("replication", "controller: group "
                                   << group << "'s node stopped cleanly; its "
                                   << "copy is elected if it is not back in "
                                   << st.opts.restart_wait.count() << " ms");
      continue; // a clean stop: time to restart
    }
    if (st.electing.count(group) != 0)
      continue; // the last round's queries are still out
    std::string skip; // an elected host that did not serve it in time
    if (!rec.host().empty() && !moving) {
      auto h = live.find(rec.host());
      if (h != live.end() && h->second.hosted_by().empty()) {
        if (unserved_for < st.opts.host_wait)
          continue; // the elected node is starting it
        skip = rec.host();
        if (st.waiting.insert(group + "@" + skip).second)
          EDDA_WARN("replication", "controller: "
                                     << skip << " was elected to serve group "
                                     << group << " and has not for "
                                     << st.opts.host_wait.count()
                                     << " ms; electing another copy");
      }
    }
    auto e = std::make_shared<election>();
    e->group = group;
    e->rec = rec;
    e->mod_revision = entry.mod_revision;
    // A live node (not a group served elsewhere, not another group's
    // standby), not the group itself, not the host that failed to serve it.
    auto candidate = [&](const std::string& id) {
      auto m = live.find(id);
      return m != live.end() && m->second.hosted_by().empty() && id != group
             && id != skip
             && (m->second.standby_for().empty()
                 || m->second.standby_for() == group);
    };
    std::vector<std::string> asked;
    for (auto& id : rec.isr())
      if (candidate(id))
        asked.push_back(id);
    // Stopped to hand the group back: the node that served it has the
    // whole log too (the marked copy is preferred; this one is for when
    // that copy does not answer).
    if (moving && candidate(rec.host())
        && std::find(asked.begin(), asked.end(), rec.host()) == asked.end())
      asked.push_back(rec.host());
    if (asked.empty() && !rec.unclean_by().empty()) {
      // No in-sync copy is live and an operator asked for an unclean
      // election: every live node's copy of the log is a candidate.
      e->unclean = true;
      for (auto& [id, m] : live)
        if (candidate(id))
          asked.push_back(id);
    }
    if (asked.empty()) {
      if (st.waiting.insert(group).second)
        EDDA_WARN("replication",
                  "controller: group "
                    << group << " has no node serving it and no in-sync copy "
                    << "on a live node (recorded in sync: "
                    << joined(rec.isr())
                    << "); it waits for its node (or: edda cluster elect "
                    << group << " --unclean --by NAME)");
      continue;
    }
    e->pending = asked.size();
    st.electing.insert(group);
    for (auto& id : asked) {
      pb::ReplPositionQuery q;
      q.set_group(group);
      self
        ->request(st.opts.cluster, st.opts.query_timeout,
                  wire::current_atom::value, id, std::move(q))
        .then(
          [=](pb::ReplAck& a) {
            a.set_follower(id); // who answered, whatever it says
            e->copies.push_back(std::move(a));
            if (--e->pending == 0)
              decide(self, e, token);
          },
          [=](caf::error& err) {
            EDDA_DEBUG("replication", "controller: no position of "
                                        << group << " from " << id << ": "
                                        << render(err));
            if (--e->pending == 0)
              decide(self, e, token);
          });
    }
  }
}

/// Takes `edda cluster move-group` / `add-replica`: recorded in the
/// group's record (move_wanted, extra_replicas: the duty's holder and the
/// group's leader act on it), answered once done (or at a deadline).
caf::result<pb::ElectReply> take_move(self_ptr self, const pb::ElectRequest& r) {
  auto& st = self->state;
  bool add = !r.add_replica().empty();
  auto target = add ? r.add_replica() : r.move_to();
  if (r.by().empty())
    return make_error(errc::invalid_argument,
                      std::string{add ? "adding a replica" : "a move"}
                        + " is recorded with who asked: --by NAME");
  auto key = group_key(st.opts.cluster_name, r.group());
  auto got = requested_group(self, r.group(), errc::not_found);
  if (!got)
    return got.error();
  auto& [rec, mod_revision] = *got;
  auto server = rec.host().empty() ? r.group() : rec.host();
  bool home = target == r.group();
  if (!add && !home && server == st.opts.node_id)
    return make_error(errc::invalid_argument,
                      "node " + st.opts.node_id + " serves group " + r.group()
                        + " and stops serving it during the move, so it "
                          "could not answer: ask through another node "
                          "(--node)");
  // The member whose copy it is: a node, or the group's own node back as
  // its standby (a move home).
  auto member = home ? standby_id(r.group()) : target;
  if (add && home)
    return make_error(errc::invalid_argument,
                      "node " + target + " is the group's own node: it "
                      "keeps no replica of its group (move-group " + target
                        + " --to " + target + " brings the group home)");
  auto m = st.opts.store->get(member_key(st.opts, member));
  if (!m)
    return m.error();
  pb::MemberInfo info;
  if (!m->first || !info.ParseFromString(m->first->value)
      || !info.hosted_by().empty()
      || (!home && !info.standby_for().empty()))
    return make_error(
      errc::not_found,
      home ? "node " + target + " is not running as a standby of its group "
               "(start it: it follows its group, then it can take it back)"
           : "no live node '" + target.substr(0, 80)
               + "' (a member of the cluster, not a group served "
                 "elsewhere)");
  bool in_sync = std::find(rec.isr().begin(), rec.isr().end(), member)
                 != rec.isr().end();
  pb::ElectReply done;
  done.set_group(r.group());
  done.set_host(rec.host().empty() ? r.group() : rec.host());
  done.set_epoch(rec.leader_epoch());
  *done.mutable_isr() = rec.isr();
  if (add) {
    if (target == server)
      return make_error(errc::invalid_argument,
                        "node " + target + " serves group " + r.group()
                          + ": it keeps no replica of it");
    if (in_sync)
      return done; // it has one
    if (std::find(rec.extra_replicas().begin(), rec.extra_replicas().end(),
                  target)
        == rec.extra_replicas().end())
      rec.add_extra_replicas(target);
  } else {
    if (!rec.move_to().empty())
      return make_error(errc::unavailable,
                        "group " + r.group() + " is moving to "
                          + rec.move_to() + " now; ask again once it is there");
    if ((home && rec.host().empty()) || (!home && rec.host() == target)) {
      if (!rec.move_wanted().empty() || rec.pinned()) {
        // Served there already: an earlier request not carried out yet
        // is withdrawn.
        rec.clear_move_wanted();
        rec.set_pinned(!home);
        rec.set_moved_by(r.by());
        (void) st.opts.store->cas_put(key, rec.SerializeAsString(),
                                      mod_revision);
      }
      return done; // served there already
    }
    if (!in_sync)
      return make_error(
        errc::unavailable,
        "node " + target + " has no in-sync copy of group " + r.group()
          + " (in sync: " + joined(rec.isr()) + ")"
          + (home ? ": it is still catching up"
                  : ": edda cluster add-replica " + r.group() + " " + target
                      + " --by NAME first"));
    rec.set_move_wanted(member);
    rec.set_pinned(!home);
  }
  rec.set_moved_by(r.by());
  rec.set_changed_ms(now_ms());
  auto put = st.opts.store->cas_put(key, rec.SerializeAsString(),
                                    mod_revision);
  if (!put)
    return put.error();
  if (!put->succeeded)
    return make_error(errc::unavailable, "the record of group " + r.group()
                                           + " changed meanwhile; ask again");
  EDDA_WARN("replication", (add ? "a replica of group " : "a move of group ")
                             << r.group() << (add ? " on " : " to ") << target
                             << " was asked by " << r.by());
  EDDA_INFO_F("audit", "replica group " << r.group() << ": "
                                        << (add ? "add replica on " : "move to ")
                                        << target << " by " << r.by(),
              {"action", add ? "cluster add-replica" : "cluster move-group"},
              {"group", r.group()}, {"target", target}, {"by", r.by()});
  auto rp = self->make_response_promise<pb::ElectReply>();
  st.pending.push_back({r.group(), add ? "replica" : "move",
                        add ? target : (home ? std::string{} : target),
                        put->revision,
                        std::chrono::steady_clock::now()
                          + std::chrono::seconds(add ? 120 : 60),
                        rp});
  return rp;
}

/// Takes an `edda cluster elect --unclean` request: recorded in the
/// group's record (the duty's holder elects on its next round).
caf::result<pb::ElectReply> take_request(self_ptr self,
                                         const pb::ElectRequest& r) {
  auto& st = self->state;
  if (!r.move_to().empty() || !r.add_replica().empty())
    return take_move(self, r);
  if (!r.unclean())
    return make_error(errc::invalid_argument,
                      "a clean election happens by itself once a group's "
                      "node is gone; elect asks only for an unclean one "
                      "(--unclean)");
  if (r.by().empty())
    return make_error(errc::invalid_argument,
                      "an unclean election is recorded with who asked: "
                      "--by NAME");
  auto key = group_key(st.opts.cluster_name, r.group());
  auto got = requested_group(self, r.group(), errc::invalid_argument);
  if (!got)
    return got.error();
  auto& [rec, mod_revision] = *got;
  auto member = st.opts.store->get(member_key(st.opts, r.group()));
  if (!member)
    return member.error();
  if (member->first)
    return make_error(errc::invalid_argument,
                      "group " + r.group()
                        + " is served by a live member: nothing to elect");
  rec.set_unclean_by(r.by());
  rec.set_unclean_requested_ms(now_ms());
  auto put = st.opts.store->cas_put(key, rec.SerializeAsString(),
                                    mod_revision);
  if (!put)
    return put.error();
  if (!put->succeeded)
    return make_error(errc::unavailable, "the record of group " + r.group()
                                           + " changed meanwhile; ask again");
  EDDA_WARN("replication", "an unclean election of group "
                             << r.group() << " was asked by " << r.by());
  EDDA_INFO_F("audit", "replica group " << r.group()
                                        << ": unclean election by " << r.by(),
              {"action", "cluster elect --unclean"}, {"group", r.group()},
              {"by", r.by()});
  auto rp = self->make_response_promise<pb::ElectReply>();
  st.pending.push_back({r.group(), "", "", put->revision,
                        std::chrono::steady_clock::now()
                          + std::chrono::seconds(12),
                        rp});
  return rp;
}

/// Answers the requests whose group was elected since (or that waited
/// long enough).
void answer_requests(self_ptr self) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  for (auto i = st.pending.begin(); i != st.pending.end();) {
    auto key = group_key(st.opts.cluster_name, i->group);
    auto got = st.opts.store->get(key);
    pb::ReplicaGroup rec;
    bool read = got && got->first && rec.ParseFromString(got->first->value);
    if (!i->kind.empty()) {
      // A move: served by the target (its own node: no host), nothing
      // pending. A replica: the target's copy is in sync.
      bool done
        = read
          && (i->kind == "move"
                ? rec.host() == i->target && rec.move_to().empty()
                    && rec.move_wanted().empty()
                : std::find(rec.isr().begin(), rec.isr().end(), i->target)
                    != rec.isr().end());
      if (done) {
        pb::ElectReply out;
        out.set_group(i->group);
        out.set_host(rec.host().empty() ? i->group : rec.host());
        out.set_epoch(rec.leader_epoch());
        out.set_elected_seq(rec.elected_seq());
        *out.mutable_isr() = rec.isr();
        i->rp.deliver(out);
        i = st.pending.erase(i);
      } else if (now >= i->deadline) {
        i->rp.deliver(make_error(
          errc::timeout,
          i->kind == "move"
            ? "group " + i->group + " has not moved within 60 s (still "
                "asked: edda cluster status shows where it is)"
            : "the copy of group " + i->group + " on " + i->target
                + " is not in sync after 120 s (it stays asked for: edda "
                  "cluster status shows its progress on the group's node)"));
        i = st.pending.erase(i);
      } else {
        ++i;
      }
      continue;
    }
    // Elected after the request: a later version of the record, the
    // request consumed (the election clears it), a host named.
    if (read && got->first->mod_revision > i->revision
        && rec.unclean_by().empty() && !rec.host().empty()) {
      pb::ElectReply out;
      out.set_group(i->group);
      out.set_host(rec.host());
      out.set_epoch(rec.leader_epoch());
      out.set_elected_seq(rec.elected_seq());
      out.set_unclean(rec.unclean());
      i->rp.deliver(out);
      i = st.pending.erase(i);
    } else if (now >= i->deadline) {
      // Not elected in time: the request is withdrawn (it must not fire
      // later, unexpected), if the record still holds it.
      if (read && got->first->mod_revision == i->revision) {
        rec.clear_unclean_by();
        rec.clear_unclean_requested_ms();
        (void) st.opts.store->cas_put(key, rec.SerializeAsString(),
                                      got->first->mod_revision);
      }
      i->rp.deliver(make_error(
        errc::timeout, "group " + i->group
                         + " was not elected within 12 s: no live node "
                           "answered with a copy of its log (see the "
                           "controller's log); the request is withdrawn"));
      i = st.pending.erase(i);
    } else {
      ++i;
    }
  }
}

caf::behavior controller(self_ptr self, controller_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  cluster::owner_table_options o;
  o.store = st.opts.store;
  o.cluster_name = st.opts.cluster_name;
  o.node_id = st.opts.node_id;
  o.cluster = st.opts.cluster;
  o.subscriber = caf::actor_cast<caf::actor>(self);
  st.owners = cluster::spawn_owner_table(self->home_system(), std::move(o));
  self->link_to(st.owners);
  self->send(self, wire::tick_atom::value);
  return {
    [=](wire::tick_atom) {
      auto& st = self->state;
      self->delayed_send(self, st.opts.period, wire::tick_atom::value);
      if (!st.pending.empty())
        answer_requests(self);
      pb::FindOwner q;
      q.set_resource(duty);
      self->request(st.owners, st.opts.period, std::move(q))
        .then(
          [=](const pb::Owner& o) {
            auto& st = self->state;
            if (!o.self() || o.token() == 0) {
              st.token = 0;
              st.unserved.clear();
              return;
            }
            if (st.token != o.token())
              EDDA_INFO("replication", "controller duty held here (token "
                                         << o.token() << ")");
            st.token = o.token();
            run_round(self);
          },
          [=](caf::error&) {
            self->state.token = 0;
            self->state.unserved.clear();
          });
    },
    [=](const pb::ElectRequest& r) -> caf::result<pb::ElectReply> {
      return take_request(self, r);
    },
    [=](const pb::ListReplicaGroups&) -> caf::result<pb::ReplicaGroupList> {
      auto& st = self->state;
      auto got = list_groups(*st.opts.store, st.opts.cluster_name);
      if (!got)
        return got.error();
      pb::ReplicaGroupList out;
      for (auto& [group, entry] : *got) {
        auto& rec = entry.rec;
        auto* g = out.add_groups();
        g->set_group(group);
        g->set_host(rec.host());
        g->set_leader_epoch(rec.leader_epoch());
        *g->mutable_isr() = rec.isr();
        g->set_failover(rec.failover());
        g->set_unclean(rec.unclean());
        g->set_unclean_elected_by(rec.unclean_elected_by());
        g->set_stopped(rec.stopped_ms() != 0);
        g->set_move_to(rec.move_to());
        *g->mutable_extra_replicas() = rec.extra_replicas();
        g->set_move_wanted(rec.move_wanted());
        g->set_moved_by(rec.moved_by());
        g->set_pinned(rec.pinned());
      }
      return out;
    },
    [=](wire::lost_atom, const std::string& resource, uint64_t token) {
      auto& st = self->state;
      if (resource == duty && token == st.token) {
        EDDA_INFO("replication", "controller duty lost (token " << token
                                                                << ")");
        st.token = 0;
        st.unserved.clear();
      }
    },
  };
}

} // namespace

caf::actor spawn_controller(caf::actor_system& sys, controller_options opts) {
  return sys.spawn<caf::detached>(controller, std::move(opts));
}

} // namespace edda::replication
