// group_manager and group_coordinator.
//
// The manager knows every group (persisted in db `meta` as "group/<name>"),
// spawns one coordinator per group on first use, and answers DLQ requests.
// A coordinator tracks the live members of its group (monitored: a member
// that dies or disconnects leaves), checks that their subscriptions agree,
// and assigns partitions: clustering = balanced and sticky (assignment.hpp:
// only the partitions of members that left, or of members over their share,
// move; plus the group's retry topic); broadcast = every partition to every
// member under its own cursor "group@client".
//
// Rebalances are debounced: a membership change (a member joins or leaves)
// schedules one for `consumer.rebalance_delay` later, and the changes made
// until then join it, so a burst (a deployment of several consumers, a
// node's consumers reconnecting) makes one new generation instead of one
// per change. The window is fixed from the first change, not extended by
// later ones, so nothing waits longer than the delay. A new member is
// answered Subscribed once the rebalance has assigned it (as before: a
// member that starts from `latest` misses nothing produced after its
// answer). A member that leaves (unsubscribes, dies, disconnects) has its
// partitions revoked at once, so nothing more is sent to it, and handed to
// the others at the rebalance; if it comes back within the window it gets
// them back.
//
// A route change (a partition's home back or gone, partitions added) is not
// debounced, and takes in any membership change waiting for its window: it
// moves nothing between the members that stay, so there is no churn to wait
// out, and a returning node's partitions must be assigned at once (in a
// cluster, a partition on a node just back from SIGSTOP that learns its
// member a few hundred ms later never delivers to it: the cluster test
// APausedCoordinatorFencesAndTheConsumerGoesOn).
#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "broker/actors.hpp"
#include "broker/assignment.hpp"
#include "broker/tag_expression.hpp"
#include "cluster/owner_table.hpp"
#include "storage/environment.hpp"
#include "storage/keys.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <utility>
#include <vector>

namespace edda::broker {

namespace {

namespace pb = wire::pb;
using storage::db;
namespace keys = storage::keys;
using std::chrono::milliseconds;
using std::chrono::seconds;

// -- coordinator --------------------------------------------------------------

struct member_info {
  caf::actor handle;
  std::map<std::string, std::string> subs; // topic -> expression
  std::string address;                     // Subscribe.address
};

struct route {
  pb::TopicMeta meta;
  std::vector<caf::actor> partitions;
};

struct coordinator_state {
  context_ptr ctx;
  caf::actor topics;
  caf::actor manager;
  bool recorded = false; // the group is known to the manager (persisted)
  std::string group;
  pb::ConsumeMode mode = pb::CLUSTERING;
  pb::ConsumeFrom from = pb::EARLIEST;
  uint32_t max_reconsume = 0;
  std::vector<uint64_t> delays;
  std::map<std::string, member_info> members; // by client id
  std::map<std::string, route> routes;        // by topic
  uint64_t generation = 0;
  /// Clustering: the member holding each partition of each topic as last
  /// assigned (empty: nobody), what the next rebalance keeps where it can.
  std::map<std::string, std::vector<std::string>> held; // by topic
  /// The scheduled rebalance (its round), 0 if none: changes until it runs
  /// join it.
  uint64_t due = 0;
  uint64_t rounds = 0;
  /// New members answered once the scheduled rebalance has assigned them.
  std::vector<std::pair<caf::typed_response_promise<pb::Subscribed>,
                        pb::Subscribed>>
    waiting;
  uint64_t token = 0; // fencing token of this coordinator (cluster; else 0)
  uint64_t incarnation = 0; // the node's lease incarnation it runs under
  static inline const char* name = "edda.group";
};

using coord_ptr = caf::stateful_actor<coordinator_state>*;

/// Topic -> expression as the group subscribes it (from any member).
std::map<std::string, std::string> group_subs(const coordinator_state& st) {
  std::map<std::string, std::string> out;
  for (auto& [id, m] : st.members)
    for (auto& [t, e] : m.subs)
      out.emplace(t, e);
  return out;
}

pb::AssignCursor base_assign(coord_ptr self, const std::string& topic,
                             uint32_t p, const std::string& expr) {
  auto& st = self->state;
  pb::AssignCursor a;
  a.set_cursor(st.group);
  a.set_group(st.group);
  a.set_topic(topic);
  a.set_partition(p);
  a.set_expression(expr);
  a.set_from(st.from);
  a.set_generation(st.generation);
  a.set_token(st.token);
  a.set_max_reconsume(st.max_reconsume);
  for (auto d : st.delays)
    a.add_retry_delays_ms(d);
  return a;
}

/// Cluster: may this coordinator act? Only while the node's lease it was
/// started under is certainly alive (a node that may have lost it must not
/// send a single assignment: another node may own the group by now). A
/// coordinator that may not act stops; members find the owner again (those
/// waiting for a rebalance are told to).
bool may_act(coord_ptr self) {
  auto& st = self->state;
  if (!st.ctx->lease || st.ctx->lease->valid(st.incarnation))
    return true;
  EDDA_WARN("group", st.group << ": coordinator (token " << st.token
                              << ") stops: this node's lease may be gone");
  for (auto& [rp, ok] : st.waiting)
    rp.deliver(make_error(errc::not_owner,
                          "this node may have lost group '" + st.group
                            + "' (its lease is in doubt): find its owner"));
  st.waiting.clear();
  self->quit();
  return false;
}

/// Assigns every partition of the group's topics to its members (a new
/// generation); `again`: the current assignment once more, same generation
/// (partitions take it as a no-op, or learn it if they had lost it).
void rebalance(coord_ptr self, bool again = false) {
  auto& st = self->state;
  if (!may_act(self))
    return;
  if (again && st.due != 0)
    return; // a new generation is due within the window anyway
  if (!again) {
    ++st.generation;
    st.due = 0;
    metrics::counter("group.rebalances")++;
  }
  auto subs = group_subs(st);
  if (st.mode == pb::CLUSTERING && !st.members.empty())
    subs.emplace(retry_topic(st.group), "*");
  for (auto& [topic, r] : st.routes) {
    auto s = subs.find(topic);
    // Members of this topic, sorted by client id (std::map order).
    std::vector<const std::pair<const std::string, member_info>*> owners;
    for (auto& m : st.members)
      if (is_retry_topic(topic) || m.second.subs.count(topic) != 0)
        owners.push_back(&m);
    auto n = static_cast<uint32_t>(r.partitions.size());
    if (st.mode == pb::BROADCAST) {
      if (s == subs.end())
        continue;
      for (auto* m : owners)
        for (uint32_t p = 0; p < n; ++p) {
          auto a = base_assign(self, topic, p, s->second);
          a.set_cursor(st.group + "@" + m->first);
          a.set_member_id(m->first);
          self->send(r.partitions[p], std::move(a), m->second.handle);
        }
      continue;
    }
    if (owners.empty() || s == subs.end()) {
      for (uint32_t p = 0; p < n; ++p) {
        auto a = base_assign(self, topic, p, "*");
        a.set_revoke(true);
        self->send(r.partitions[p], std::move(a), caf::actor{});
      }
      st.held.erase(topic);
      continue;
    }
    std::vector<std::string> ids;
    for (auto* m : owners)
      ids.push_back(m->first);
    auto& held = st.held[topic];
    held.resize(n); // the topic may have grown or shrunk
    held = assign_sticky(held, ids);
    for (uint32_t p = 0; p < n; ++p) {
      auto& m = st.members.at(held[p]);
      auto a = base_assign(self, topic, p, s->second);
      a.set_member_id(held[p]);
      self->send(r.partitions[p], std::move(a), m.handle);
    }
  }
  if (!again) {
    EDDA_DEBUG("group", st.group << " generation " << st.generation << ": "
                                 << st.members.size() << " members");
    for (auto& [rp, ok] : st.waiting)
      rp.deliver(ok);
    st.waiting.clear();
  }
}

/// A membership change: rebalances after `consumer.rebalance_delay`, with
/// every other change made until then (at once if the delay is 0).
void rebalance_soon(coord_ptr self) {
  auto& st = self->state;
  auto delay = st.ctx->settings.rebalance_delay_ms;
  if (delay == 0) {
    rebalance(self);
    return;
  }
  if (st.due != 0)
    return; // joins the scheduled one: the window does not grow
  st.due = ++st.rounds;
  self->delayed_send(self, milliseconds(delay), wire::tick_atom::value, st.due);
}

/// Fetches (or refreshes) the route of `topic`, then runs `then(err)`.
template <class F>
void fetch_route(coord_ptr self, const std::string& topic, bool create, F then) {
  self
    ->request(self->state.topics, seconds(60), wire::route_atom::value, topic,
              create)
    .then(
      [=](pb::TopicMeta& meta, std::vector<caf::actor>& parts) mutable {
        self->state.routes[topic] = route{std::move(meta), std::move(parts)};
        then(caf::error{});
      },
      [=](caf::error& err) mutable {
        self->state.routes.erase(topic);
        then(err);
      });
}

void remove_member(coord_ptr self, const std::string& client_id) {
  auto& st = self->state;
  auto i = st.members.find(client_id);
  if (i == st.members.end())
    return;
  auto subs = i->second.subs;
  st.members.erase(i);
  if (!may_act(self))
    return;
  EDDA_INFO("group", st.group << ": member " << client_id << " left ("
                              << st.members.size() << " remain)");
  // Its partitions stop delivering to it now, in the current generation (a
  // revoke names the member, so a partition it no longer holds ignores it);
  // the next rebalance hands them to the others.
  for (auto& [topic, r] : st.routes) {
    auto held = st.held.find(topic);
    for (uint32_t p = 0; p < r.partitions.size(); ++p) {
      auto a = base_assign(self, topic, p, "*");
      if (st.mode == pb::BROADCAST)
        a.set_cursor(st.group + "@" + client_id);
      else if (held == st.held.end() || p >= held->second.size()
               || held->second[p] != client_id)
        continue;
      a.set_member_id(client_id);
      a.set_revoke(true);
      self->send(r.partitions[p], std::move(a), caf::actor{});
    }
  }
  rebalance_soon(self);
}

/// Adds (or updates) `member` with subscription `sub`; replies once the
/// routes are known and the group is rebalanced.
caf::result<pb::Subscribed> subscribe(coord_ptr self, const pb::Subscribe& sub,
                                      caf::actor member) {
  auto& st = self->state;
  if (!member)
    return make_error(errc::invalid_argument, "subscriber has no address");
  if (st.ctx->lease && !st.ctx->lease->valid(st.incarnation)) {
    // A member heartbeating a coordinator that may have lost the group is
    // sent away to find the owner (and this coordinator stops).
    auto err = make_error(errc::not_owner,
                          "this node may have lost group '" + st.group
                            + "' (its lease is in doubt): find its owner");
    (void) may_act(self);
    return err;
  }
  auto expr = tag_expression::parse(sub.expression());
  if (!expr)
    return expr.error();
  if (sub.client_id().empty())
    return make_error(errc::invalid_argument, "client_id is empty");
  // Every other live member must agree on mode and expression.
  for (auto& [id, m] : st.members) {
    if (id == sub.client_id())
      continue;
    if (st.mode != sub.mode())
      return make_error(errc::subscription_conflict,
                        "group '" + st.group + "' consumes in "
                          + (st.mode == pb::CLUSTERING ? "clustering"
                                                       : "broadcast")
                          + " mode; member '" + sub.client_id()
                          + "' asked for the other");
    auto e = m.subs.find(sub.topic());
    if (e != m.subs.end() && e->second != expr->to_string())
      return make_error(errc::subscription_conflict,
                        "group '" + st.group + "' subscribes to '"
                          + sub.topic() + "' with '" + e->second
                          + "'; member '" + sub.client_id() + "' asked '"
                          + expr->to_string() + "'");
  }
  auto rp = self->make_response_promise<pb::Subscribed>();
  auto norm = expr->to_string();
  auto s = sub;
  fetch_route(self, sub.topic(), false, [=](const caf::error& err) mutable {
    if (err) {
      rp.deliver(err);
      return;
    }
    auto& st = self->state;
    bool first = st.members.empty();
    if (first) {
      st.mode = s.mode();
      st.from = s.from();
      // A group that emptied out starts again from the node's settings.
      st.max_reconsume = st.ctx->settings.group(st.group).max_reconsume;
      st.delays = st.ctx->settings.group(st.group).retry_delays_ms;
      if (s.max_reconsume() != 0)
        st.max_reconsume = s.max_reconsume();
      if (s.retry_delays_ms_size() > 0)
        st.delays.assign(s.retry_delays_ms().begin(),
                         s.retry_delays_ms().end());
    }
    auto& m = st.members[s.client_id()];
    bool unchanged = m.handle == member && m.subs.count(s.topic()) != 0
                     && m.subs[s.topic()] == norm;
    if (m.handle != member) {
      if (m.handle)
        self->demonitor(m.handle);
      m.handle = member;
      self->monitor(member);
    }
    m.subs[s.topic()] = norm;
    if (!s.address().empty())
      m.address = s.address();
    if (unchanged) {
      // A member re-asserting its subscription: nothing to rebalance.
      pb::Subscribed ok;
      ok.set_group(st.group);
      ok.set_topic(s.topic());
      ok.set_partitions(st.routes[s.topic()].meta.partitions());
      rp.deliver(ok);
      return;
    }
    auto finish = [=](const caf::error&) mutable {
      pb::Subscribed ok;
      ok.set_group(self->state.group);
      ok.set_topic(s.topic());
      ok.set_partitions(
        self->state.routes[s.topic()].meta.partitions());
      if (!self->state.recorded) {
        // Only a group that subscribed successfully becomes known.
        self->state.recorded = true;
        pb::GroupInfo g;
        g.set_group(self->state.group);
        self->send(self->state.manager, g);
      }
      EDDA_INFO("group", self->state.group << ": member " << s.client_id()
                           << " subscribed to " << s.topic() << " ("
                           << norm << ")");
      // Answered once assigned.
      self->state.waiting.emplace_back(rp, std::move(ok));
      rebalance_soon(self);
    };
    if (st.mode == pb::CLUSTERING
        && st.routes.count(retry_topic(st.group)) == 0)
      fetch_route(self, retry_topic(st.group), true, finish);
    else
      finish(caf::error{});
  });
  return rp;
}

caf::behavior coordinator(coord_ptr self, context_ptr ctx, caf::actor topics,
                          caf::actor manager, std::string group,
                          uint64_t token) {
  auto& st = self->state;
  st.token = token;
  if (ctx->lease)
    st.incarnation = ctx->lease->incarnation();
  st.ctx = std::move(ctx);
  st.topics = std::move(topics);
  st.manager = std::move(manager);
  st.group = std::move(group);
  st.max_reconsume = st.ctx->settings.group(st.group).max_reconsume;
  st.delays = st.ctx->settings.group(st.group).retry_delays_ms;
  // Partitions ignore an assignment older than the last one they took, so
  // a coordinator that replaces a dead one (respawned here, or with a
  // restarted manager) must count on from above its generations: start
  // from the clock (ms * 1024: room for 1024 rebalances per ms of the old
  // coordinator's life).
  st.generation = static_cast<uint64_t>(std::max<int64_t>(0, st.ctx->clock()))
                  << 10;
  if (st.ctx->clustered()) {
    // A partition on another node that restarted lost its cursor, and
    // nothing here is told: the assignment is said again every 5 s.
    self->delayed_send(self, std::chrono::seconds(5), wire::tick_atom::value);
  }
  self->set_down_handler([=](caf::down_msg& dm) {
    for (auto& [id, m] : self->state.members)
      if (m.handle.address() == dm.source) {
        auto cid = id;
        remove_member(self, cid);
        return;
      }
  });
  return {
    [=](const pb::Subscribe& sub) -> caf::result<pb::Subscribed> {
      return subscribe(self, sub,
                       caf::actor_cast<caf::actor>(self->current_sender()));
    },
    [=](const pb::Subscribe& sub, const caf::actor& member)
      -> caf::result<pb::Subscribed> {
      // A subscription given again by the manager's keeper after the
      // manager restarted (node/supervisor.hpp).
      return subscribe(self, sub, member);
    },
    [=](const pb::Unsubscribe& u) {
      remove_member(self, u.client_id());
      pb::Done d;
      d.set_what("unsubscribed " + u.client_id());
      return d;
    },
    [=](wire::route_atom, const std::string& topic) {
      // The topic changed (partitions added, restarted or deleted).
      if (self->state.routes.count(topic) == 0)
        return;
      fetch_route(self, topic, false,
                  [=](const caf::error&) {
                    // Not debounced: it moves nothing between the members
                    // (sticky), and a partition whose home came back must
                    // learn its member at once (see the file comment).
                    rebalance(self);
                  });
    },
    [=](wire::tick_atom, uint64_t round) {
      // The scheduled rebalance (rebalance_soon).
      if (round == self->state.due)
        rebalance(self);
    },
    [=](wire::tick_atom) {
      if (!self->state.members.empty())
        rebalance(self, true);
      self->delayed_send(self, std::chrono::seconds(5), wire::tick_atom::value);
    },
    [=](const pb::ListGroups&) {
      auto& st = self->state;
      pb::GroupInfo g;
      g.set_group(st.group);
      g.set_mode(st.mode);
      g.set_generation(st.generation);
      for (auto& [id, m] : st.members) {
        g.add_members(id);
        auto* d = g.add_member_details();
        d->set_client_id(id);
        d->set_address(m.address);
        for (auto& [t, e] : m.subs)
          d->add_subscriptions(t + " (" + e + ")");
      }
      for (auto& [t, e] : group_subs(st))
        g.add_topics(t + " (" + e + ")");
      return g;
    },
  };
}

// -- manager ------------------------------------------------------------------

struct manager_state {
  context_ptr ctx;
  caf::actor topics;
  std::map<std::string, caf::actor> coordinators;
  std::map<std::string, uint64_t> tokens; // cluster: token of each coordinator
  caf::actor owners; // cluster: the owner table (cluster/owner_table.hpp)
  std::set<std::string> known; // every group ever seen (persisted)
  static inline const char* name = "edda.group_manager";
};

using manager_ptr = caf::stateful_actor<manager_state>*;

caf::actor coordinator_of(manager_ptr self, const std::string& group,
                          uint64_t token = 0) {
  auto& st = self->state;
  auto& c = st.coordinators[group];
  if (!c) {
    c = self->home_system().spawn(coordinator, st.ctx, st.topics,
                                  caf::actor{self}, group, token);
    self->link_to(c); // coordinators stop with the manager
    st.tokens[group] = token;
  }
  return c;
}

/// Cluster: runs `then(expected<Owner>)` with the owner of `group`'s
/// coordinator, claiming it for this node when it is the desired owner.
template <class F>
void find_owner(manager_ptr self, const std::string& group, F then) {
  pb::FindOwner q;
  q.set_resource("group/" + group);
  self->request(self->state.owners, seconds(10), q)
    .then([=](pb::Owner& o) mutable { then(caf::expected<pb::Owner>{o}); },
          [=](caf::error& err) mutable {
            then(caf::expected<pb::Owner>{err});
          });
}

caf::error not_owner(const std::string& group, const pb::Owner& o) {
  if (o.node_id().empty())
    return make_error(errc::unavailable,
                      "no live node can coordinate group '" + group + "'");
  return make_error(errc::not_owner, "group '" + group
                                       + "' is coordinated by node "
                                       + o.node_id() + " at " + o.endpoint());
}

/// Records a group that a member subscribed to successfully.
void remember_group(manager_ptr self, const std::string& group) {
  auto& st = self->state;
  {
    if (st.known.insert(group).second) {
      pb::GroupInfo g;
      g.set_group(group);
      pb::WriteBatch b;
      auto* op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::meta));
      op->set_key("group/" + group);
      op->set_value(g.SerializeAsString());
      self->request(st.ctx->writer, seconds(60), std::move(b))
        .then([](const pb::WriteResult&) {},
              [=](caf::error& err) {
                EDDA_ERROR("group", "cannot record group " << group << ": "
                                                           << render(err));
              });
    }
  }
}

caf::error check_group_name(const std::string& g) {
  if (g.empty() || g.size() > 120)
    return make_error(errc::invalid_argument,
                      "group name must be 1-120 characters");
  if (!only_name_chars(g))
    return make_error(errc::invalid_argument,
                      "group name '" + g
                        + "' may only contain letters, digits, '_', '-' "
                          "and '.'");
  return caf::none;
}

caf::behavior group_manager(manager_ptr self, context_ptr ctx,
                            caf::actor topics) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.topics = std::move(topics);
  if (st.ctx->clustered()) {
    cluster::owner_table_options o;
    o.store = st.ctx->store;
    o.cluster_name = st.ctx->settings.cluster_name;
    o.node_id = st.ctx->node_id;
    o.cluster = st.ctx->cluster;
    o.subscriber = caf::actor_cast<caf::actor>(self);
    st.owners = cluster::spawn_owner_table(self->home_system(), std::move(o));
    self->link_to(st.owners);
  }
  self->set_exit_handler([=](caf::exit_msg& em) {
    auto& cs = self->state.coordinators;
    for (auto i = cs.begin(); i != cs.end(); ++i)
      if (i->second.address() == em.source) {
        // Respawned on the next subscribe; members re-subscribe when their
        // deliveries stop (they keep their offsets).
        EDDA_WARN("group", "coordinator of " << i->first << " stopped: "
                                             << render(em.reason));
        self->state.tokens.erase(i->first);
        cs.erase(i);
        return;
      }
    self->quit(em.reason);
  });
  {
    auto txn = st.ctx->env->read();
    txn.scan(db::meta, "group/", "group/",
             [&](std::string_view k, std::string_view) {
               st.known.emplace(k.substr(6));
               return true;
             });
  }
  return {
    [=](pb::Subscribe& sub) -> caf::result<pb::Subscribed> {
      if (auto err = check_group_name(sub.group()))
        return err;
      auto& st = self->state;
      if (!st.owners || st.coordinators.count(sub.group()) != 0) {
        self->delegate(coordinator_of(self, sub.group()), std::move(sub));
        return caf::delegated<pb::Subscribed>{};
      }
      // Cluster: only the owner of the group runs its coordinator.
      auto rp = self->make_response_promise<pb::Subscribed>();
      auto group = sub.group();
      find_owner(self, group, [=](caf::expected<pb::Owner> o) mutable {
        if (!o) {
          rp.deliver(o.error());
          return;
        }
        if (!o->self()) {
          rp.deliver(not_owner(group, *o));
          return;
        }
        rp.delegate(coordinator_of(self, group, o->token()), std::move(sub));
      });
      return rp;
    },
    [=](pb::ListOwners& q) -> caf::result<pb::OwnerList> {
      if (!self->state.owners)
        return pb::OwnerList{};
      self->delegate(self->state.owners, std::move(q));
      return caf::delegated<pb::OwnerList>{};
    },
    [=](const pb::FindCoordinator& q) -> caf::result<pb::Owner> {
      if (auto err = check_group_name(q.group()))
        return err;
      auto& st = self->state;
      if (!st.owners) {
        pb::Owner o;
        o.set_resource("group/" + q.group());
        o.set_node_id(st.ctx->node_id);
        o.set_self(true);
        return o;
      }
      auto rp = self->make_response_promise<pb::Owner>();
      find_owner(self, q.group(), [=](caf::expected<pb::Owner> o) mutable {
        if (o)
          rp.deliver(std::move(*o));
        else
          rp.deliver(o.error());
      });
      return rp;
    },
    [=](wire::lost_atom, const std::string& resource, uint64_t token) {
      // This node no longer owns the group (lease expired, fenced): its
      // coordinator stops at once; members find the new owner.
      if (resource.rfind("group/", 0) != 0)
        return;
      auto group = resource.substr(6);
      auto& st = self->state;
      auto i = st.coordinators.find(group);
      if (i == st.coordinators.end() || st.tokens[group] != token)
        return;
      EDDA_WARN("group", "coordinator of " << group
                                           << " stops: this node lost the "
                                              "group (token "
                                           << token << ")");
      self->unlink_from(i->second);
      self->send_exit(i->second, caf::exit_reason::user_shutdown);
      st.tokens.erase(group);
      st.coordinators.erase(i);
    },
    [=](pb::Subscribe& sub, caf::actor& member) -> caf::result<pb::Subscribed> {
      // A subscription given again by this manager's keeper after a restart
      // (node/supervisor.hpp): `member` is the consumer that sent it.
      if (auto err = check_group_name(sub.group()))
        return err;
      auto& st = self->state;
      if (!st.owners || st.coordinators.count(sub.group()) != 0) {
        self->delegate(coordinator_of(self, sub.group()), std::move(sub),
                       std::move(member));
        return caf::delegated<pb::Subscribed>{};
      }
      // Cluster: only if this node (still) owns the group; otherwise the
      // member finds the owner with its next heartbeat.
      auto rp = self->make_response_promise<pb::Subscribed>();
      auto group = sub.group();
      find_owner(self, group, [=](caf::expected<pb::Owner> o) mutable {
        if (!o)
          rp.deliver(o.error());
        else if (!o->self())
          rp.deliver(not_owner(group, *o));
        else
          rp.delegate(coordinator_of(self, group, o->token()), std::move(sub),
                      std::move(member));
      });
      return rp;
    },
    [=](pb::Unsubscribe& u) -> caf::result<pb::Done> {
      auto i = self->state.coordinators.find(u.group());
      if (i == self->state.coordinators.end())
        return make_error(errc::unknown_group, "no group '" + u.group() + "'");
      self->delegate(i->second, std::move(u));
      return caf::delegated<pb::Done>{};
    },
    [=](wire::route_atom a, const std::string& topic) {
      for (auto& [g, c] : self->state.coordinators)
        self->send(c, a, topic);
    },
    [=](const pb::GroupInfo& g) { remember_group(self, g.group()); },
    [=](const pb::ListGroups& req) -> caf::result<pb::GroupList> {
      auto& st = self->state;
      auto rp = self->make_response_promise<pb::GroupList>();
      auto acc = std::make_shared<pb::GroupList>();
      for (auto& g : st.known)
        if (st.coordinators.count(g) == 0)
          acc->add_groups()->set_group(g);
      auto remaining = std::make_shared<size_t>(st.coordinators.size());
      if (*remaining == 0) {
        rp.deliver(*acc);
        return rp;
      }
      for (auto& [g, c] : st.coordinators)
        self->request(c, seconds(10), req)
          .then(
            [=](pb::GroupInfo& info) mutable {
              *acc->add_groups() = std::move(info);
              if (--*remaining == 0)
                rp.deliver(*acc);
            },
            [=](caf::error&) mutable {
              if (--*remaining == 0)
                rp.deliver(*acc);
            });
      return rp;
    },
    [=](const pb::DlqList& req) -> caf::result<pb::DlqEntries> {
      // In a cluster a node may hold dead letters of a group whose
      // coordinator lives elsewhere: what is here counts as known.
      auto& st = self->state;
      pb::DlqEntries out;
      auto limit = req.limit() == 0 ? 1000u : req.limit();
      auto txn = st.ctx->env->read();
      auto prefix = keys::dlq_prefix(req.group());
      txn.scan(db::dlq, prefix, prefix,
               [&](std::string_view, std::string_view v) {
                 auto* e = out.add_entries();
                 e->ParseFromArray(v.data(), static_cast<int>(v.size()));
                 auto* body = e->mutable_message()->mutable_body();
                 if (req.max_body() > 0 && body->size() > req.max_body()) {
                   e->set_body_bytes(body->size());
                   body->resize(req.max_body());
                 }
                 return static_cast<uint32_t>(out.entries_size()) < limit;
               });
      if (out.entries_size() == 0 && st.known.count(req.group()) == 0)
        return make_error(errc::unknown_group,
                          "no group '" + req.group() + "'");
      return out;
    },
    [=](const pb::DlqRedrive& req) -> caf::result<pb::DlqRedriven> {
      // Dead letters go back through the group's retry topic, so only this
      // group sees them again; each is removed from the DLQ in the same
      // transaction that appends it.
      auto& st = self->state;
      std::set<std::string> wanted(req.ids().begin(), req.ids().end());
      pb::AppendInternal app;
      app.set_topic(retry_topic(req.group()));
      app.set_partition(-1);
      {
        auto txn = st.ctx->env->read();
        auto prefix = keys::dlq_prefix(req.group());
        txn.scan(db::dlq, prefix, prefix,
                 [&](std::string_view k, std::string_view v) {
                   pb::DeadLetter dl;
                   if (!dl.ParseFromArray(v.data(), static_cast<int>(v.size())))
                     return true;
                   if (!wanted.empty() && wanted.count(dl.message().id()) == 0)
                     return true;
                   auto* m = app.add_messages();
                   *m = dl.message();
                   m->set_reconsume_times(0);
                   auto* op = app.mutable_extra()->add_ops();
                   op->set_db(static_cast<uint32_t>(db::dlq));
                   op->set_key(std::string{k});
                   op->set_kind(pb::WriteOp::DEL);
                   return true;
                 });
      }
      pb::DlqRedriven res;
      res.set_count(static_cast<uint32_t>(app.messages_size()));
      if (app.messages_size() == 0 && st.known.count(req.group()) == 0)
        return make_error(errc::unknown_group,
                          "no group '" + req.group() + "'");
      if (app.messages_size() == 0) {
        if (!wanted.empty())
          return make_error(errc::not_found,
                            "none of the given ids is in %DLQ%" + req.group());
        return res;
      }
      auto rp = self->make_response_promise<pb::DlqRedriven>();
      auto group = req.group();
      // Make sure the retry topic exists (a group may have only broadcast
      // members, or none since a restart).
      self
        ->request(st.topics, seconds(60), wire::route_atom::value,
                  retry_topic(group), true)
        .then(
          [=](pb::TopicMeta&, std::vector<caf::actor>&) mutable {
            self->request(self->state.topics, seconds(60), std::move(app))
              .then(
                [=](const pb::ProduceResult&) mutable {
                  EDDA_INFO("group", "redrove " << res.count()
                                                << " dead letters of "
                                                << group);
                  rp.deliver(res);
                },
                [=](caf::error& err) mutable { rp.deliver(err); });
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
  };
}

} // namespace

caf::actor spawn_group_manager(caf::actor_system& sys, context_ptr ctx,
                               caf::actor topics) {
  return sys.spawn(group_manager, std::move(ctx), std::move(topics));
}

} // namespace edda::broker
