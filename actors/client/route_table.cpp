#include "client/route_table.hpp"

#include "client/connection_impl.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/weak_intrusive_ptr.hpp>

namespace edda::client {

void route_table::apply(const wire::pb::ClusterMap& m,
                        const std::vector<std::string>& asked, int64_t now) {
  clustered_ = m.clustered();
  if (m.revision() >= revision_) {
    revision_ = m.revision();
    self_ = m.node_id();
    endpoints_.clear();
    for (auto& x : m.members())
      endpoints_[x.node_id()] = x.endpoint();
    for (auto i = gateways_.begin(); i != gateways_.end();)
      if (endpoints_.count(i->first) == 0)
        i = gateways_.erase(i);
      else
        ++i;
    // A member the node still lists may have come back: try again.
    down_.clear();
  }
  std::set<std::string> got;
  for (auto& r : m.topics()) {
    got.insert(r.name());
    auto& t = topics_[r.name()];
    if (t.fetched_ms != 0 && r.revision() < t.revision && r.id() == t.id)
      continue; // an older view than the one held
    t.id = r.id();
    t.partitions = r.partitions();
    t.homes.assign(r.homes().begin(), r.homes().end());
    t.live.assign(r.live().begin(), r.live().end());
    t.live.resize(t.homes.size(), false);
    t.revision = r.revision();
    t.fetched_ms = now;
  }
  for (auto& name : asked)
    if (got.count(name) == 0)
      topics_.erase(name);
}

topic_route* route_table::find(const std::string& topic) {
  auto i = topics_.find(topic);
  return i == topics_.end() ? nullptr : &i->second;
}

void route_table::forget(const std::string& topic) {
  topics_.erase(topic);
}

std::vector<std::string> route_table::topics() const {
  std::vector<std::string> out;
  for (auto& [name, t] : topics_)
    out.push_back(name);
  return out;
}

void route_table::grow(const std::string& topic, uint32_t n) {
  auto* t = find(topic);
  if (t == nullptr || n <= t->partitions)
    return;
  t->partitions = n;
  if (clustered_) {
    t->homes.resize(n);
    t->live.resize(n, false);
  }
}

bool route_table::usable(const topic_route& t, uint32_t p) const {
  if (!clustered_)
    return p < t.partitions;
  return p < t.homes.size() && t.live[p] && down_.count(t.homes[p]) == 0;
}

caf::actor route_table::direct(const topic_route& t, uint32_t p) const {
  if (!clustered_ || !usable(t, p) || t.homes[p] == self_)
    return {};
  auto i = gateways_.find(t.homes[p]);
  return i == gateways_.end() ? caf::actor{} : i->second;
}

std::vector<std::pair<std::string, std::string>> route_table::to_link() {
  std::vector<std::pair<std::string, std::string>> out;
  if (!clustered_)
    return out;
  std::set<std::string> wanted;
  for (auto& [name, t] : topics_)
    for (size_t p = 0; p < t.homes.size(); ++p)
      if (t.live[p])
        wanted.insert(t.homes[p]);
  for (auto& id : wanted) {
    auto ep = endpoints_.find(id);
    if (id == self_ || ep == endpoints_.end() || gateways_.count(id) != 0
        || linking_.count(id) != 0 || down_.count(id) != 0)
      continue;
    linking_.insert(id);
    out.emplace_back(id, ep->second);
  }
  return out;
}

void route_table::linked(const std::string& node, caf::actor gw) {
  linking_.erase(node);
  if (!gw)
    down_.insert(node); // not reachable from here: through the node
  else if (endpoints_.count(node) != 0)
    gateways_[node] = std::move(gw);
}

std::string route_table::down(const caf::actor_addr& gw) {
  for (auto i = gateways_.begin(); i != gateways_.end(); ++i)
    if (i->second.address() == gw) {
      auto id = i->first;
      gateways_.erase(i);
      down_.insert(id);
      return id;
    }
  return {};
}

void link_members(caf::actor_system& sys, route_table& rt,
                  const std::shared_ptr<connection_impl>& conn,
                  const caf::actor& target) {
  auto wanted = rt.to_link();
  if (wanted.empty())
    return;
  std::weak_ptr<connection_impl> weak_conn = conn;
  auto weak_target = caf::actor_cast<caf::weak_actor_ptr>(target);
  for (auto& [id, ep] : wanted)
    sys.spawn<caf::detached>(
      [weak_conn, weak_target, id = id, ep = ep](caf::event_based_actor*) {
        caf::actor gw;
        if (auto c = weak_conn.lock())
          if (auto x = c->link(ep))
            gw = *x;
        if (auto t = weak_target.lock())
          caf::anon_send(caf::actor_cast<caf::actor>(t), wire::link_atom::value,
                         id, gw);
      });
}

} // namespace edda::client
