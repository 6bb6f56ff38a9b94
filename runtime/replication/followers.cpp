#include "replication/followers.hpp"

#include "base/ids.hpp"
#include "base/log.hpp"
#include "cluster/placement.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <map>
#include <set>

namespace edda::replication {

namespace {

namespace pb = wire::pb;

struct followers_state {
  std::string group;
  std::string host; ///< the node serving this group after a failover
  uint32_t rf = 1;
  caf::actor shipper;
  std::set<std::string> members;          // live, this node excluded
  std::map<std::string, caf::actor> links; // up links, by node id
  std::set<std::string> followers;
  /// The group's own node back as a standby ("<group>~standby"), if it is
  /// live: one more follower (it takes the group back once in sync).
  std::string standby;
  /// Members asked to keep a copy beyond the factor (the record's
  /// extra_replicas: add-replica), followed while they are live members.
  std::set<std::string> extras;
  static inline const char* name = "edda.replication.followers";
};

using self_ptr = caf::stateful_actor<followers_state>*;

void pick(self_ptr self) {
  auto& st = self->state;
  std::set<std::string> next;
  for (auto& f : st.followers)
    if (st.members.count(f) != 0)
      next.insert(f); // sticky
  if (next.size() + 1 < st.rf) {
    std::vector<node_id> ms;
    for (auto& m : st.members)
      ms.emplace_back(m);
    for (auto& m : cluster::ranked("replicas/" + st.group, std::move(ms))) {
      if (next.size() + 1 >= st.rf)
        break;
      next.insert(m.value());
    }
  }
  bool short_of = next.size() + 1 < st.rf;
  for (auto& x : st.extras)
    if (st.members.count(x) != 0)
      next.insert(x); // beyond the factor: an operator asked for it
  if (!st.standby.empty())
    next.insert(st.standby); // beyond the factor: it is taking the group back
  for (auto& f : st.followers)
    if (next.count(f) == 0) {
      EDDA_INFO("replication", "node " << f << " no longer keeps a copy of "
                                       << st.group);
      self->send(st.shipper, wire::link_atom::value, f, caf::actor{});
    }
  for (auto& f : next)
    if (st.followers.count(f) == 0) {
      EDDA_INFO("replication", "node " << f << " keeps a copy of "
                                       << st.group);
      if (auto i = st.links.find(f); i != st.links.end())
        self->send(st.shipper, wire::link_atom::value, f, i->second);
    }
  if (short_of && next != st.followers)
    EDDA_WARN("replication", st.group << " has " << next.size() + 1
                                      << " of cluster.replication_factor "
                                      << st.rf
                                      << " copies: not enough live nodes");
  st.followers = std::move(next);
}

caf::behavior followers(self_ptr self, std::string group, std::string host,
                        uint32_t rf, caf::actor shipper, caf::actor cluster,
                        caf::actor recorder) {
  auto& st = self->state;
  st.group = std::move(group);
  st.host = std::move(host);
  st.rf = rf;
  st.shipper = std::move(shipper);
  self->send(cluster, wire::watch_atom::value,
             caf::actor_cast<caf::actor>(self));
  if (recorder)
    self->send(recorder, wire::serving_atom::value,
               caf::actor_cast<caf::actor>(self));
  return {
    [=](const pb::ReplicaGroup& rec) {
      auto& st = self->state;
      std::set<std::string> extras;
      for (auto& x : rec.extra_replicas())
        if (x != st.group && x != st.host)
          extras.insert(x);
      if (extras == st.extras)
        return;
      st.extras = std::move(extras);
      pick(self);
    },
    [=](const pb::MembershipView& v) {
      auto& st = self->state;
      std::set<std::string> ms;
      // Not this group, not the node serving it (its copy is the group's
      // storage there), not a group served elsewhere (it keeps no copies).
      for (auto& m : v.members())
        if (m.node_id() != st.group && m.node_id() != st.host
            && m.hosted_by().empty())
          ms.insert(m.node_id());
      // The group's own node back as a standby, while the group is
      // served elsewhere (at home, a standby is its node's last moment
      // before it took the group back: never followed).
      std::string standby;
      for (auto& m : v.standbys())
        if (m.standby_for() == st.group && !st.host.empty())
          standby = m.node_id();
      if (ms == st.members && standby == st.standby && !st.followers.empty())
        return;
      st.members = std::move(ms);
      st.standby = std::move(standby);
      pick(self);
    },
    [=](wire::link_atom, const std::string& id, caf::actor& gw) {
      auto& st = self->state;
      if (!gw) {
        // A dropped link: the follower keeps its place (it may come back
        // within the shipper's lag_max); ships to it fail meanwhile.
        st.links.erase(id);
        return;
      }
      st.links[id] = gw;
      if (st.followers.count(id) != 0)
        self->send(st.shipper, wire::link_atom::value, id, gw);
    },
  };
}

} // namespace

caf::actor spawn_followers(caf::actor_system& sys, std::string group,
                           std::string host, uint32_t replication_factor,
                           caf::actor shipper, caf::actor cluster,
                           caf::actor recorder) {
  return sys.spawn(followers, std::move(group), std::move(host),
                   replication_factor, std::move(shipper), std::move(cluster),
                   std::move(recorder));
}

} // namespace edda::replication
