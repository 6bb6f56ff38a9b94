#include "cluster/owner_table.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "cluster/membership.hpp"
#include "cluster/placement.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/weak_intrusive_ptr.hpp>

#include <map>
#include <set>

namespace edda::cluster {

namespace {

namespace pb = wire::pb;

struct owner_state {
  owner_table_options opts;
  std::string prefix; ///< /edda/<cluster>/owners/
  coord::lease_id lease = 0;
  bool fenced = true; ///< until the first view says otherwise
  std::map<std::string, std::string> members; ///< node id -> endpoint
  std::map<std::string, uint64_t> held;       ///< resource -> token
  std::unique_ptr<coord::watch> watch;
  uint64_t watch_gen = 0;
  static inline const char* name = "edda.owner_table";
};

using self_ptr = caf::stateful_actor<owner_state>*;

void lose(self_ptr self, const std::string& resource, const char* why) {
  auto& st = self->state;
  auto i = st.held.find(resource);
  if (i == st.held.end())
    return;
  auto token = i->second;
  st.held.erase(i);
  EDDA_WARN("cluster", "lost " << resource << " (token " << token << "): "
                               << why);
  if (st.opts.subscriber)
    self->send(st.opts.subscriber, wire::lost_atom::value, resource, token);
}

/// Watches the owners prefix: a deleted key of a resource we hold means we
/// no longer hold it (our lease expired, or an operator removed it).
void watch_owners(self_ptr self) {
  auto& st = self->state;
  if (st.watch) {
    st.watch->cancel();
    st.watch.reset();
  }
  auto gen = ++st.watch_gen;
  caf::weak_actor_ptr me = self->ctrl();
  auto pfx = st.prefix;
  coord::watch_handlers h;
  h.on_events = [me, pfx, gen](const std::vector<coord::watch_event>& evs) {
    for (auto& e : evs)
      if (e.type == coord::watch_event::kind::del)
        if (auto strong = me.lock())
          caf::anon_send(caf::actor_cast<caf::actor>(strong),
                         wire::lost_atom::value, e.kv.key.substr(pfx.size()),
                         gen);
  };
  h.on_error = [me, gen](const caf::error&) {
    if (auto strong = me.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong),
                     wire::tick_atom::value, gen);
  };
  auto w = st.opts.store->watch_prefix(pfx, 0, std::move(h));
  if (!w) {
    self->delayed_send(self, std::chrono::seconds(1), wire::tick_atom::value,
                       gen);
    return;
  }
  st.watch = std::move(*w);
  // Keys deleted before the watch started: check what we hold.
  for (auto i = st.held.begin(); i != st.held.end();) {
    auto cur = st.opts.store->get(pfx + i->first);
    auto name = i->first;
    ++i;
    if (cur && (!cur->first
                || static_cast<uint64_t>(cur->first->create_revision)
                     != st.held[name]))
      lose(self, name, "its key is gone");
  }
}

caf::expected<pb::Owner> find(self_ptr self, const std::string& resource) {
  auto& st = self->state;
  auto key = st.prefix + resource;
  pb::Owner out;
  out.set_resource(resource);
  auto holder = [&](const coord::key_value& kv) {
    pb::OwnerRecord rec;
    rec.ParseFromString(kv.value);
    out.set_node_id(rec.node_id());
    auto m = st.members.find(rec.node_id());
    out.set_endpoint(m != st.members.end() ? m->second : rec.endpoint());
    out.set_token(static_cast<uint64_t>(kv.create_revision));
    bool mine = rec.node_id() == st.opts.node_id && kv.lease == st.lease
                && !st.fenced;
    out.set_self(mine);
    if (mine)
      st.held[resource] = out.token();
    return out;
  };
  auto cur = st.opts.store->get(key);
  if (!cur)
    return cur.error();
  if (cur->first)
    return holder(*cur->first);
  std::vector<std::string> live;
  for (auto& [id, ep] : st.members)
    live.push_back(id);
  auto desired = owner_of(resource, node_ids(live)).value();
  if (desired.empty())
    return out; // nobody to own it
  if (desired != st.opts.node_id || st.fenced || st.lease == 0) {
    out.set_node_id(desired);
    out.set_endpoint(st.members[desired]);
    return out; // that node claims it when asked
  }
  pb::OwnerRecord rec;
  rec.set_node_id(st.opts.node_id);
  rec.set_endpoint(st.members[st.opts.node_id]);
  auto put = st.opts.store->cas_put(key, rec.SerializeAsString(), 0, st.lease);
  if (!put)
    return put.error();
  if (!put->succeeded) {
    if (put->current)
      return holder(*put->current);
    return make_error(errc::unavailable, "the owner of " + resource
                                           + " changed meanwhile; try again");
  }
  out.set_node_id(st.opts.node_id);
  out.set_endpoint(st.members[st.opts.node_id]);
  out.set_token(static_cast<uint64_t>(put->current ? put->current->create_revision
                                                   : put->revision));
  out.set_self(true);
  st.held[resource] = out.token();
  metrics::counter("cluster.ownerships_taken")++;
  EDDA_INFO("cluster", "now owns " << resource << " (token " << out.token()
                                   << ")");
  return out;
}

caf::behavior owner_table(self_ptr self, owner_table_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.prefix = membership::prefix(st.opts.cluster_name) + "owners/";
  if (st.opts.cluster)
    self->send(st.opts.cluster, wire::watch_atom::value,
               caf::actor_cast<caf::actor>(self));
  watch_owners(self);
  return {
    [=](const pb::FindOwner& q) -> caf::result<pb::Owner> {
      auto r = find(self, q.resource());
      if (!r)
        return r.error();
      return *r;
    },
    [=](const pb::ListOwners&) -> caf::result<pb::OwnerList> {
      auto& st = self->state;
      auto r = st.opts.store->get_prefix(st.prefix);
      if (!r)
        return r.error();
      pb::OwnerList out;
      for (auto& kv : r->kvs) {
        pb::OwnerRecord rec;
        rec.ParseFromString(kv.value);
        auto* o = out.add_owners();
        o->set_resource(kv.key.substr(st.prefix.size()));
        o->set_node_id(rec.node_id());
        o->set_token(static_cast<uint64_t>(kv.create_revision));
      }
      return out;
    },
    [=](const pb::MembershipView& v) {
      auto& st = self->state;
      st.members.clear();
      for (auto& m : v.members())
        st.members[m.node_id()] = m.endpoint();
      bool lease_changed = v.lease_id() != st.lease;
      st.lease = v.lease_id();
      st.fenced = v.fenced();
      if (st.fenced || lease_changed) {
        // Everything held under the old lease is gone (or may be).
        std::vector<std::string> names;
        for (auto& [r, t] : st.held)
          names.push_back(r);
        for (auto& r : names)
          lose(self, r, st.fenced ? "this node is fenced"
                                  : "this node rejoined with a new lease");
      }
    },
    [=](wire::link_atom, const std::string&, const caf::actor&) {
      // Links are of no interest here.
    },
    [=](wire::lost_atom, const std::string& resource, uint64_t gen) {
      if (gen == self->state.watch_gen)
        lose(self, resource, "its key was deleted (lease expired?)");
    },
    [=](wire::tick_atom, uint64_t gen) {
      if (gen == self->state.watch_gen)
        watch_owners(self);
    },
  };
}

} // namespace

caf::actor spawn_owner_table(caf::actor_system& sys, owner_table_options opts) {
  return sys.spawn<caf::detached>(owner_table, std::move(opts));
}

} // namespace edda::cluster
