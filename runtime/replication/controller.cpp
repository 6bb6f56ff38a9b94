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
  /// When this holder first saw each group unserved.
  std::map<std::string, std::chrono::steady_clock::time_point> unserved;
  /// Groups said to wait (no in-sync copy on a live node), not said again.
  std::set<std::string> waiting;
  static inline const char* name = "edda.replication.controller";
};

using self_ptr = caf::stateful_actor<controller_state>*;

/// One group's election in progress: the record as read, the answers.
struct election {
  std::string group;
  pb::ReplicaGroup rec;
  int64_t mod_revision = 0;
  size_t pending = 0;
  std::vector<pb::ReplAck> copies;
};

std::string joined(const std::vector<std::string>& xs) {
  std::string out;
  for (auto& x : xs)
    out += (out.empty() ? "" : ",") + x;
  return out.empty() ? "none" : out;
}

/// Writes the election's outcome (the answers are in).
void decide(self_ptr self, const std::shared_ptr<election>& e,
            uint64_t token) {
  auto& st = self->state;
  st.electing.erase(e->group);
  if (token != st.token || token == 0)
    return; // the duty moved meanwhile
  const pb::ReplAck* best = nullptr;
  for (auto& a : e->copies) {
    if (a.log_id() != e->rec.log_id() || a.unfinished_copy())
      continue;
    if (!best || a.epoch() > best->epoch()
        || (a.epoch() == best->epoch() && a.seq() > best->seq()))
      best = &a;
  }
  if (!best) {
    if (st.waiting.insert(e->group).second)
      EDDA_WARN("replication",
                "controller: group " << e->group
                                     << " has no node serving it and no "
                                        "in-sync copy answered (of "
                                     << e->rec.isr_size()
                                     << " recorded); it waits for its node");
    return;
  }
  pb::ReplicaGroup next = e->rec;
  auto now = now_ms();
  next.set_host(best->follower());
  next.set_leader_epoch(e->rec.leader_epoch() + 1);
  next.clear_isr();
  next.add_isr(best->follower());
  next.set_elected_by(token);
  next.set_elected_ms(now);
  next.set_elected_seq(best->seq());
  next.set_elected_epoch(next.leader_epoch());
  next.set_changed_ms(now);
  auto guard = cluster::membership::prefix(st.opts.cluster_name) + "owners/"
               + duty;
  auto put = st.opts.store->cas_put_guarded(
    group_key(st.opts.cluster_name, e->group), next.SerializeAsString(),
    e->mod_revision, guard, static_cast<int64_t>(token));
  if (!put) {
    EDDA_WARN("replication", "controller: electing a leader for group "
                               << e->group << ": " << render(put.error())
                               << "; trying again");
    return;
  }
  if (!put->succeeded) {
    EDDA_INFO("replication", "controller: group "
                               << e->group
                               << " changed while electing (or the duty "
                                  "moved); looking again");
    return;
  }
  st.waiting.erase(e->group);
  metrics::counter("replication.elections")++;
  EDDA_WARN("replication",
            "controller (token " << token << "): group " << e->group
                                 << " lost its node; elected the copy on "
                                 << best->follower() << " (epoch "
                                 << best->epoch() << ", seq " << best->seq()
                                 << ") to serve it at epoch "
                                 << next.leader_epoch());
}

/// Lists groups and members, and starts an election for each group that
/// needs one.
void run_round(self_ptr self) {
  auto& st = self->state;
  auto prefix = cluster::membership::prefix(st.opts.cluster_name);
  auto groups = st.opts.store->get_prefix(prefix + "groups/");
  if (!groups)
    return;
  auto members = st.opts.store->get_prefix(prefix + "members/");
  if (!members)
    return;
  std::map<std::string, pb::MemberInfo> live;
  for (auto& kv : members->kvs) {
    pb::MemberInfo m;
    if (m.ParseFromString(kv.value) && !m.node_id().empty())
      live.emplace(m.node_id(), m);
  }
  auto token = st.token;
  for (auto& kv : groups->kvs) {
    auto group = kv.key.substr(prefix.size() + 7);
    pb::ReplicaGroup rec;
    if (!rec.ParseFromString(kv.value) || !rec.failover()
        || rec.leader().empty())
      continue;
    if (live.count(group) != 0) {
      st.waiting.erase(group);
      st.unserved.erase(group);
      continue; // served
    }
    auto now = std::chrono::steady_clock::now();
    auto first = st.unserved.try_emplace(group, now).first->second;
    if (now - first < st.opts.grace)
      continue; // its node may be rejoining
    if (st.electing.count(group) != 0)
      continue; // the last round's queries are still out
    if (!rec.host().empty()) {
      auto h = live.find(rec.host());
      if (h != live.end() && h->second.hosted_by().empty())
        continue; // the elected node is starting it
    }
    auto e = std::make_shared<election>();
    e->group = group;
    e->rec = rec;
    e->mod_revision = kv.mod_revision;
    std::vector<std::string> asked;
    for (auto& id : rec.isr()) {
      auto m = live.find(id);
      // A node, live, not the one that failed to serve it.
      if (m == live.end() || !m->second.hosted_by().empty() || id == group)
        continue;
      asked.push_back(id);
    }
    if (asked.empty()) {
      if (st.waiting.insert(group).second)
        EDDA_WARN("replication",
                  "controller: group "
                    << group << " has no node serving it and no in-sync copy "
                    << "on a live node (recorded in sync: "
                    << joined({rec.isr().begin(), rec.isr().end()})
                    << "); it waits for its node");
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
