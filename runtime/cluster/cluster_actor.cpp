#include "cluster/cluster_actor.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "base/node_link.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <map>

namespace edda::cluster {

namespace {

namespace pb = wire::pb;
namespace ch = std::chrono;

struct link {
  std::string endpoint;
  uint64_t incarnation = 0;
  bool tls = false; ///< its node port is behind mutual TLS
  caf::actor handle;  ///< the peer's gateway, once the hello succeeded
  uint64_t attempt = 0; ///< replies of older attempts are ignored
  bool connecting = false;
  bool ever_up = false; ///< linked once (to this incarnation)
  ch::milliseconds backoff{0};
  std::string error; ///< why it is down
};

struct cluster_state {
  cluster_actor_options opts;
  caf::actor controller; ///< replication's controller (elections), if any
  pb::MembershipView view;
  std::map<std::string, link> links; // by node id, every other member
  std::vector<caf::actor> subscribers; // told of views and links
  uint64_t attempts = 0; ///< link attempts ever: replies of old ones are stale
  caf::actor own_gateway; ///< sent in hellos with one_way_links
  static inline const char* name = "edda.cluster";
};

using self_ptr = caf::stateful_actor<cluster_state>*;

/// The same actor instance (CAF's == compares node and id only: a new
/// proxy of a peer reached again equals the dead one).
bool same_actor(const caf::actor& a, const caf::actor& b) {
  return caf::actor_cast<caf::actor_control_block*>(a)
         == caf::actor_cast<caf::actor_control_block*>(b);
}

/// Tells the subscribers that the link to `id` is `gateway` (null: down).
void publish_link(self_ptr self, const std::string& id,
                  const caf::actor& gateway) {
  for (auto& s : self->state.subscribers)
    self->send(s, wire::link_atom::value, id, gateway);
}

/// The link to `id` is up with `gateway` (the peer's gateway: reached by
/// this node, or taken from the peer's hello; `how` says which, for the
/// log). A new gateway replaces the old one, which is no longer watched.
void link_up(self_ptr self, const std::string& id, const caf::actor& gateway,
             const char* how) {
  auto& l = self->state.links[id];
  if (!same_actor(l.handle, gateway)) {
    if (l.handle) {
      self->demonitor(l.handle);
      publish_link(self, id, caf::actor{});
    }
    l.handle = gateway;
    self->monitor(gateway);
    publish_link(self, id, gateway);
    EDDA_INFO("cluster", "link " << how << " " << id << " at " << l.endpoint
                                 << " is up");
  }
  l.connecting = false;
  l.ever_up = true;
  l.error.clear();
  l.backoff = ch::milliseconds(0);
}

/// With one_way_links: this node says its hello to `id` again after
/// `after`, over the link it has (see hello()).
void hello_again(self_ptr self, const std::string& id, uint64_t attempt,
                 ch::milliseconds after) {
  self->delayed_send(self, after, wire::link_atom::value, id, attempt,
                     caf::actor{}, std::string{"hello again"});
}

bool split_endpoint(const std::string& ep, std::string& host, uint16_t& port) {
  auto colon = ep.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return false;
  host = ep.substr(0, colon);
  auto p = ep.substr(colon + 1);
  if (p.empty() || p.find_first_not_of("0123456789") != std::string::npos
      || p.size() > 5)
    return false;
  auto v = std::stoul(p);
  if (v == 0 || v > 65535)
    return false;
  port = static_cast<uint16_t>(v);
  return true;
}

/// Two cluster ids agree, or one is not known (a node that does not send
/// it).
bool same_cluster_id(const std::string& mine, const std::string& theirs) {
  return mine.empty() || theirs.empty() || mine == theirs;
}

void connect(self_ptr self, const std::string& id);

void schedule(self_ptr self, const std::string& id, ch::milliseconds after) {
  auto& l = self->state.links[id];
  self->delayed_send(self, after, wire::link_atom::value, id, l.attempt,
                     caf::actor{}, std::string{"retry"});
}

/// The link to `id` is down (`why`); tried again later. `refused`: the
/// peer answered and said no (another cluster, another node): not retried
/// sooner than reconnect_after, even for a first link.
void down(self_ptr self, const std::string& id, const std::string& why,
          bool refused = false) {
  auto i = self->state.links.find(id);
  if (i == self->state.links.end())
    return;
  auto& l = i->second;
  auto& opts = self->state.opts;
  if (l.handle) {
    self->demonitor(l.handle);
    publish_link(self, id, caf::actor{});
  }
  l.handle = nullptr;
  l.connecting = false;
  l.error = why;
  l.attempt = ++self->state.attempts;
  // A link that was up waits for the peer to drop its side of it; a first
  // link that did not come up (the peer still starting, a dial racing its
  // own start) is tried again sooner: a new member serves its partitions
  // only once linked.
  auto first = l.ever_up || refused
                 ? opts.reconnect_after
                 : std::min(opts.reconnect_after, ch::milliseconds(200));
  l.backoff = l.backoff.count() == 0
                ? first
                : std::min(l.backoff * 2, ch::milliseconds(5000));
  schedule(self, id, l.backoff);
}

/// With one_way_links, the node of the smaller id makes the pair's link.
bool links_to(const cluster_state& st, const std::string& id) {
  return !st.opts.one_way_links || st.opts.node_id < id;
}

void connect(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto i = st.links.find(id);
  if (i == st.links.end() || i->second.connecting || i->second.handle
      || i->second.tls != st.opts.node_tls)
    return;
  auto& l = i->second;
  if (!links_to(st, id)) {
    auto waiting = "waiting for " + id
                   + " to link (the node of the smaller id makes the link; "
                     "if this lasts, see its log"
                   + (st.opts.node_tls
                        ? std::string{": each node's certificate must be "
                                      "signed by the other's network.tls_ca)"}
                        : std::string{")"});
    if (l.error.empty() || l.error.rfind("waiting for ", 0) == 0)
      l.error = waiting;
    else
      l.error = waiting + "; before: " + l.error;
    return;
  }
  if (st.opts.one_way_links && !st.own_gateway) {
    l.error = "this node's gateway is not known yet";
    schedule(self, id, ch::milliseconds(100)); // told soon after the start
    return;
  }
  std::string host;
  uint16_t port = 0;
  if (!split_endpoint(l.endpoint, host, port)) {
    l.error = "member " + id + " published endpoint '" + l.endpoint
              + "', which is not host:port";
    return;
  }
  l.connecting = true;
  auto attempt = l.attempt = ++st.attempts;
  auto me = caf::actor_cast<caf::actor>(self);
  // remote_actor blocks: on its own (detached) actor.
  self->home_system().spawn<caf::detached>(
    [me, id, attempt, host, port](caf::event_based_actor* c) {
      auto r = remote_node(c->home_system(), host, port);
      if (r)
        c->send(me, wire::link_atom::value, id, attempt, *r, std::string{});
      else
        c->send(me, wire::link_atom::value, id, attempt, caf::actor{},
                c->home_system().render(r.error()));
      c->quit();
    });
}

void hello(self_ptr self, const std::string& id, uint64_t attempt,
           caf::actor peer) {
  auto& st = self->state;
  pb::PeerHello h;
  h.set_cluster_name(st.opts.cluster_name);
  h.set_cluster_id(st.opts.cluster_id);
  h.set_node_id(st.opts.node_id);
  h.set_incarnation(st.view.incarnation());
  h.set_expect_node_id(id);
  auto sent = st.opts.one_way_links
                ? self->request(peer, st.opts.hello_timeout, h, st.own_gateway)
                : self->request(peer, st.opts.hello_timeout, h);
  std::move(sent).then(
      [=](const pb::PeerWelcome& w) {
        auto i = self->state.links.find(id);
        if (i == self->state.links.end() || i->second.attempt != attempt)
          return;
        auto& l = i->second;
        l.connecting = false;
        auto& opts = self->state.opts;
        if (w.node_id() != id || w.cluster_name() != opts.cluster_name
            || !same_cluster_id(opts.cluster_id, w.cluster_id())) {
          auto why = "the node at " + l.endpoint + " is '" + w.node_id()
                     + "' of cluster '" + w.cluster_name() + "' (id "
                     + w.cluster_id() + "), not '" + id + "' of cluster '"
                     + opts.cluster_name + "' (id " + opts.cluster_id + ")";
          EDDA_WARN("cluster", "no link to " << id << ": " << why);
          metrics::counter("cluster.peers_refused")++;
          down(self, id, why, true);
          return;
        }
        link_up(self, id, peer, "to");
        if (opts.one_way_links)
          // Said again now and then: the other node takes the link anew
          // after it lost it without the connection dropping (this node
          // rejoined with a new incarnation, its view dropped this one).
          hello_again(self, id, attempt, opts.reconnect_after);
      },
      [=](caf::error& err) {
        auto i = self->state.links.find(id);
        if (i == self->state.links.end() || i->second.attempt != attempt)
          return;
        auto& opts = self->state.opts;
        auto code = code_of(err);
        if (opts.one_way_links && code != errc::invalid_argument) {
          // Not refused. unavailable: its view does not have this node (of
          // this incarnation) yet; soon, over the same connection.
          auto after = code == errc::unavailable ? ch::milliseconds(200)
                                                 : opts.reconnect_after;
          if (i->second.handle) { // said again on a working link: keep it
            hello_again(self, id, attempt, after);
            return;
          }
          if (code == errc::unavailable) {
            i->second.error = "hello to " + i->second.endpoint + ": "
                              + render(err);
            self->delayed_send(self, after, wire::link_atom::value, id,
                               attempt, peer, std::string{});
            return;
          }
        }
        i->second.connecting = false;
        down(self, id,
             "hello to " + i->second.endpoint + " failed: " + render(err),
             code == errc::invalid_argument);
      });
}

/// Links follow the member list: new members get one, gone ones lose it.
/// Standbys are linked as well (they follow their own group).
void follow(self_ptr self) {
  auto& st = self->state;
  std::map<std::string, const pb::MemberInfo*> now;
  for (auto* list : {&st.view.members(), &st.view.standbys()})
    for (auto& m : *list)
      if (m.node_id() != st.opts.node_id)
        now[m.node_id()] = &m;
  for (auto i = st.links.begin(); i != st.links.end();) {
    auto n = now.find(i->first);
    if (n != now.end() && n->second->endpoint() == i->second.endpoint
        && n->second->incarnation() == i->second.incarnation) {
      ++i;
      continue;
    }
    if (i->second.handle) {
      self->demonitor(i->second.handle);
      publish_link(self, i->first, caf::actor{});
    }
    i = st.links.erase(i);
  }
  for (auto& [id, m] : now) {
    if (st.links.count(id) != 0)
      continue;
    auto& l = st.links[id];
    l.endpoint = m->endpoint();
    l.incarnation = m->incarnation();
    l.tls = m->node_tls();
    if (l.tls != st.opts.node_tls) {
      auto mine = st.opts.node_tls ? "is" : "is not";
      auto theirs = l.tls ? "is" : "is not";
      l.error = "no link: the node port of " + id + " " + theirs
                + " behind mutual TLS and this node's " + mine
                + " (network.tls_*: the nodes of a cluster must agree)";
      EDDA_WARN("cluster", l.error);
      metrics::counter("cluster.peers_refused")++;
      continue;
    }
    connect(self, id);
  }
}

pb::ClusterStatus status(self_ptr self) {
  auto& st = self->state;
  pb::ClusterStatus s;
  s.set_clustered(st.opts.clustered);
  s.set_cluster_name(st.opts.cluster_name);
  s.set_node_id(st.opts.node_id);
  s.set_etcd(st.opts.etcd);
  s.set_now_ms(now_ms());
  if (!st.opts.clustered) {
    auto* m = s.add_members();
    m->set_node_id(st.opts.node_id);
    m->set_endpoint(st.opts.endpoint);
    m->set_self(true);
    m->set_connected(true);
    return s;
  }
  s.set_fenced(st.view.fenced());
  s.set_lease_id(st.view.lease_id());
  s.set_lease_ttl_ms(st.opts.lease_ttl.count());
  if (st.view.renewed_ms() > 0)
    s.set_renewed_ms_ago(std::max<int64_t>(0, now_ms() - st.view.renewed_ms()));
  s.set_revision(st.view.revision());
  s.set_incarnation(st.view.incarnation());
  s.set_problem(st.view.problem());
  auto n = st.view.members_size();
  for (int k = 0; k < n + st.view.standbys_size(); ++k) {
    auto& mi = k < n ? st.view.members(k) : st.view.standbys(k - n);
    auto* m = s.add_members();
    m->set_node_id(mi.node_id());
    m->set_endpoint(mi.endpoint());
    m->set_incarnation(mi.incarnation());
    m->set_started_ms(mi.started_ms());
    m->set_hosted_by(mi.hosted_by());
    m->set_standby_for(mi.standby_for());
    if (k < n && k < st.view.leases_size())
      m->set_lease_id(st.view.leases(k));
    bool self_member = mi.node_id() == st.opts.node_id;
    m->set_self(self_member);
    if (self_member) {
      m->set_connected(true);
      continue;
    }
    auto l = st.links.find(mi.node_id());
    if (l != st.links.end()) {
      m->set_connected(static_cast<bool>(l->second.handle));
      if (!l->second.handle)
        m->set_link_error(l->second.connecting && l->second.error.empty()
                            ? "connecting"
                            : l->second.error);
    }
  }
  return s;
}

/// `to` (a detached actor of this node: the replica host, the controller)
/// answers `x` through this actor, which answers the sender: never
/// delegated, so that a detached actor never becomes known to another node
/// or a client (a remote reference kept such an actor alive past the
/// node's stop, and the actor system's end waited for it for ever).
template <class R, class T>
caf::result<R> ask(self_ptr self, const caf::actor& to, T x,
                   std::chrono::seconds timeout) {
  auto rp = self->make_response_promise<R>();
  self->request(to, timeout, std::move(x))
    .then([rp](R& a) mutable { rp.deliver(std::move(a)); },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

template <class T>
caf::result<pb::ReplAck> ask_replicas(self_ptr self, T x) {
  return ask<pb::ReplAck>(self, self->state.opts.replicas, std::move(x),
                          std::chrono::seconds(60));
}

/// Why a hello is refused (another cluster, or meant for another node);
/// none: accepted.
caf::error check_hello(self_ptr self, const pb::PeerHello& h) {
  auto& st = self->state;
  if (h.cluster_name() != st.opts.cluster_name) {
    EDDA_WARN("cluster", "refused a peer of cluster '" << h.cluster_name()
                                                       << "' (node "
                                                       << h.node_id()
                                                       << ")");
    metrics::counter("cluster.peers_refused")++;
    return make_error(errc::invalid_argument,
                      "this node is of cluster '" + st.opts.cluster_name
                        + "', not '" + h.cluster_name() + "'");
  }
  if (!same_cluster_id(st.opts.cluster_id, h.cluster_id())) {
    EDDA_WARN("cluster", "refused a peer of another cluster '"
                           << h.cluster_name() << "' with id "
                           << h.cluster_id() << " (node " << h.node_id()
                           << "); this one has id " << st.opts.cluster_id
                           << ": one name on two etcds?");
    metrics::counter("cluster.peers_refused")++;
    return make_error(errc::invalid_argument,
                      "this node is of cluster '" + st.opts.cluster_name
                        + "' with id " + st.opts.cluster_id + ", not "
                        + h.cluster_id());
  }
  if (!h.expect_node_id().empty()
      && h.expect_node_id() != st.opts.node_id) {
    metrics::counter("cluster.peers_refused")++;
    return make_error(errc::invalid_argument,
                      "this node is '" + st.opts.node_id + "', not '"
                        + h.expect_node_id() + "'");
  }
  return caf::none;
}

pb::PeerWelcome welcome(self_ptr self) {
  auto& st = self->state;
  pb::PeerWelcome w;
  w.set_cluster_name(st.opts.cluster_name);
  w.set_cluster_id(st.opts.cluster_id);
  w.set_node_id(st.opts.node_id);
  w.set_incarnation(st.view.incarnation());
  return w;
}

/// One_way_links: the member `h.node_id()` links here with its gateway
/// `gw`.
caf::result<pb::PeerWelcome> take_link(self_ptr self, const pb::PeerHello& h,
                                       caf::actor gw) {
  auto& st = self->state;
  auto refuse = [&](errc code, std::string why) {
    EDDA_WARN("cluster", "refused a link from " << h.node_id().substr(0, 80)
                                                << ": " << why);
    metrics::counter("cluster.peers_refused")++;
    return make_error(code, std::move(why));
  };
  if (!st.opts.one_way_links)
    return refuse(errc::invalid_argument,
                  "node " + st.opts.node_id
                    + " makes its own links: say hello without a gateway");
  auto sender = self->current_sender();
  if (!gw || !sender || gw.node() != sender->node()
      || sender->node() == self->node())
    return refuse(errc::invalid_argument,
                  "a hello's gateway must be on the node that sends it");
  if (links_to(st, h.node_id()))
    return refuse(errc::invalid_argument,
                  "the link between " + st.opts.node_id + " and "
                    + h.node_id() + " is made by " + st.opts.node_id);
  auto i = st.links.find(h.node_id());
  if (i != st.links.end() && i->second.tls != st.opts.node_tls)
    return refuse(errc::invalid_argument, i->second.error);
  if (i == st.links.end() || i->second.incarnation != h.incarnation())
    // The sender saw this node in etcd before this node saw it: it tries
    // again.
    return make_error(errc::unavailable,
                      "node " + h.node_id() + " of incarnation "
                        + std::to_string(h.incarnation())
                        + " is not a member in " + st.opts.node_id
                        + "'s view yet");
  auto& l = i->second;
  if (l.handle && l.handle.node() != gw.node())
    return refuse(errc::invalid_argument,
                  "node " + h.node_id() + " is linked from another process "
                    + "already");
  link_up(self, h.node_id(), gw, "from");
  l.attempt = ++st.attempts; // a retry scheduled before is stale
  return welcome(self);
}

caf::behavior cluster_actor(self_ptr self, cluster_actor_options opts) {
  self->state.opts = std::move(opts);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& subs = self->state.subscribers;
    auto gone = std::remove_if(subs.begin(), subs.end(), [&](const caf::actor& a) {
      return a.address() == dm.source;
    });
    if (gone != subs.end()) {
      subs.erase(gone, subs.end());
      return;
    }
    auto* gone_block = caf::actor_cast<caf::actor_control_block*>(dm.source);
    for (auto& [id, l] : self->state.links)
      if (l.handle
          && caf::actor_cast<caf::actor_control_block*>(l.handle)
               == gone_block) {
        EDDA_WARN("cluster", "link to " << id << " at " << l.endpoint
                                        << " dropped ("
                                        << render(dm.reason) << ")");
        metrics::counter("cluster.link_drops")++;
        auto name = id;
        down(self, name, "dropped: " + render(dm.reason));
        return;
      }
  });
  return {
    [=](wire::link_atom, const std::string& endpoint) {
      self->state.opts.endpoint = endpoint; // known once the node listens
    },
    [=](pb::MembershipView& v) {
      auto& st = self->state;
      auto before = st.view.incarnation();
      st.view = std::move(v);
      for (auto& s : st.subscribers)
        self->send(s, st.view);
      follow(self);
      if (st.opts.one_way_links && before != 0
          && st.view.incarnation() != before)
        // Rejoined: the others dropped this node's old incarnation; the
        // links this node makes are said again at once.
        for (auto& [id, l] : st.links)
          if (l.handle && links_to(st, id))
            hello(self, id, l.attempt, l.handle);
    },
    [=](wire::watch_atom, caf::actor& subscriber) {
      // A node actor that follows members and links: it gets the current
      // view and links now, then every change.
      auto& st = self->state;
      if (st.opts.clustered)
        self->send(subscriber, st.view);
      for (auto& [id, l] : st.links)
        if (l.handle)
          self->send(subscriber, wire::link_atom::value, id, l.handle);
      self->monitor(subscriber);
      st.subscribers.push_back(std::move(subscriber));
    },
    [=](const pb::ClusterStatusRequest& q) -> caf::result<pb::ClusterStatus> {
      auto& st = self->state;
      if (q.brief() || !st.opts.shipper)
        return status(self);
      auto rp = self->make_response_promise<pb::ClusterStatus>();
      self
        ->request(st.opts.shipper, std::chrono::seconds(1),
                  wire::current_atom::value)
        .then(
          [=](const pb::ClusterStatus& repl) mutable {
            auto s = status(self);
            s.MergeFrom(repl);
            rp.deliver(std::move(s));
          },
          [=](caf::error&) mutable { rp.deliver(status(self)); });
      return rp;
    },
    [=](const pb::PeerHello& h) -> caf::result<pb::PeerWelcome> {
      if (auto err = check_hello(self, h))
        return err;
      return welcome(self);
    },
    [=](const pb::PeerHello& h, caf::actor& gw) -> caf::result<pb::PeerWelcome> {
      if (auto err = check_hello(self, h))
        return err;
      return take_link(self, h, std::move(gw));
    },
    [=](wire::link_atom, caf::actor& own_gateway) {
      auto sender = self->current_sender();
      if (sender && sender->node() != self->node())
        return; // told by the node itself only
      self->state.own_gateway = std::move(own_gateway);
    },
    [=](pb::ReplShip& ship) -> caf::result<pb::ReplAck> {
      auto& st = self->state;
      if (!st.opts.replicas)
        return make_error(errc::unavailable,
                          "node " + st.opts.node_id
                            + " keeps no replicas "
                              "(cluster.replication_factor is 1)");
      // Only the group's leader writes its replica: the sender must be on
      // the node linked here under that id.
      auto i = st.links.find(ship.group());
      auto sender = self->current_sender();
      if (i == st.links.end() || !i->second.handle || !sender
          || sender->node() != i->second.handle.node()) {
        metrics::counter("replication.ships_refused")++;
        return make_error(errc::invalid_argument,
                          "replication batches of group '"
                            + ship.group().substr(0, 80)
                            + "' are taken only from that node over its "
                              "cluster link");
      }
      return ask_replicas(self, std::move(ship));
    },
    [=](pb::ReplPositionQuery& q) -> caf::result<pb::ReplAck> {
      // A member's controller asks where this node's copy of a group is:
      // only over a cluster link.
      auto& st = self->state;
      if (!st.opts.replicas)
        return make_error(errc::unavailable,
                          "node " + st.opts.node_id + " keeps no replicas");
      auto sender = self->current_sender();
      bool linked = false;
      for (auto& [id, l] : st.links)
        if (sender && l.handle && sender->node() == l.handle.node())
          linked = true;
      if (!linked && !(sender && sender->node() == self->node()))
        return make_error(errc::invalid_argument,
                          "replica positions are told only to members over "
                          "their cluster link");
      return ask_replicas(self, std::move(q));
    },
    [=](wire::serving_atom, caf::actor& controller) {
      self->state.controller = std::move(controller);
    },
    [=](pb::ListReplicaGroups& r) -> caf::result<pb::ReplicaGroupList> {
      auto& st = self->state;
      if (!st.controller)
        return pb::ReplicaGroupList{};
      return ask<pb::ReplicaGroupList>(self, st.controller, std::move(r),
                                       std::chrono::seconds(10));
    },
    [=](pb::ElectRequest& r) -> caf::result<pb::ElectReply> {
      auto& st = self->state;
      if (!st.controller)
        return make_error(errc::unavailable,
                          "node " + st.opts.node_id
                            + " runs no controller (cluster.replication_factor "
                              "is 1, or no cluster)");
      // A move or an added replica is answered within 125 s.
      return ask<pb::ElectReply>(self, st.controller, std::move(r),
                                 std::chrono::seconds(130));
    },
    [=](wire::current_atom, const std::string& node,
        pb::ReplPositionQuery& q) -> caf::result<pb::ReplAck> {
      // This node's controller: ask `node` (itself included) over its link.
      auto& st = self->state;
      if (node == st.opts.node_id) {
        if (!st.opts.replicas)
          return make_error(errc::unavailable, "this node keeps no replicas");
        self->delegate(st.opts.replicas, std::move(q));
        return caf::delegated<pb::ReplAck>{};
      }
      auto i = st.links.find(node);
      if (i == st.links.end() || !i->second.handle)
        return make_error(errc::unavailable, "no link to node " + node);
      // Asked and answered here, not delegated: the controller never
      // becomes known to another node (see ask()).
      return ask<pb::ReplAck>(self, i->second.handle, std::move(q),
                              std::chrono::seconds(5));
    },
    [=](wire::link_atom, const std::string& id, uint64_t attempt,
        caf::actor& peer, const std::string& err) {
      if (auto s = self->current_sender(); s && s->node() != self->node())
        return; // from its own connectors and timers only
      auto i = self->state.links.find(id);
      if (i == self->state.links.end() || i->second.attempt != attempt)
        return; // stale (the member changed, or a newer attempt runs)
      auto& l = i->second;
      if (err == "retry") {
        l.connecting = false;
        connect(self, id);
        return;
      }
      if (err == "hello again") {
        if (l.handle)
          hello(self, id, attempt, l.handle);
        return;
      }
      if (!peer) {
        l.connecting = false;
        auto why = "cannot connect to " + l.endpoint + ": " + err;
        if (self->state.opts.node_tls)
          why += " (mutual TLS: each node's certificate must be signed by "
                 "the other's network.tls_ca)";
        if (why != l.error) // once, not at every retry
          EDDA_WARN("cluster", "no link to " << id << ": " << why);
        down(self, id, why);
        return;
      }
      hello(self, id, attempt, std::move(peer));
    },
  };
}

} // namespace

caf::actor spawn_cluster_actor(caf::actor_system& sys,
                               cluster_actor_options opts) {
  return sys.spawn(cluster_actor, std::move(opts));
}

} // namespace edda::cluster
