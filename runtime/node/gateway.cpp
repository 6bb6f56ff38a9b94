// gateway: the actor a node publishes. Clients (in-process or remote)
// send every request here; it delegates to the owning actor, so replies go
// straight back to the client.
#include "node/gateway.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/ids.hpp"
#include "base/inflight.hpp"
#include "base/metrics.hpp"
#include "cluster/placement.hpp"
#include "broker/actors.hpp"
#include "storage/environment.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <set>

namespace edda::node {

namespace {

namespace pb = wire::pb;

struct gateway_state {
  // Cluster: where sagas live (cluster/membership.hpp, saga_homes) and the
  // other nodes' gateways.
  std::vector<std::string> saga_homes;
  std::vector<int64_t> saga_home_revisions; ///< when each registered
  int64_t saga_epoch = 0; ///< when the cluster's first saga started
  caf::actor epoch_maker; ///< cluster: sets the saga epoch in etcd, once
  bool have_view = false; ///< cluster: saga_homes came from etcd
  std::map<std::string, caf::actor> peers;
  /// Cluster: every node known (live members and registered nodes), whose
  /// part a gathered list may miss.
  std::set<std::string> members;
  std::string self_id;           ///< this node's id
  inflight requests; ///< to peers: failed at once when a link drops
  static inline const char* name = "edda.gateway";
};

using gateway_ptr = caf::stateful_actor<gateway_state>*;

/// Cluster: the node a saga id lives on (rendezvous over the nodes that run
/// sagas; stable while a node is down), "" if this node decides alone.
std::string saga_home(gateway_ptr self, const std::string& id) {
  return cluster::owner_of("saga/" + id, node_ids(self->state.saga_homes))
    .value();
}

/// Where a saga with this id may live, its home now first. A node that
/// registered later took the home of some ids; their sagas stay where they
/// were started: the owner over the nodes registered before each later
/// registration (saga_homes is in registration order).
std::vector<std::string> saga_homes_of(gateway_ptr self,
                                       const std::string& id) {
  auto& st = self->state;
  auto& homes = st.saga_homes;
  // Nodes that registered before the cluster's first saga all count from
  // the start: only later registrations can have moved an id's home.
  size_t first = homes.size();
  if (st.saga_epoch != 0) {
    first = 0;
    while (first < homes.size() && first < st.saga_home_revisions.size()
           && st.saga_home_revisions[first] < st.saga_epoch)
      ++first;
    first = std::max<size_t>(first, 1);
  }
  std::vector<std::string> out;
  for (size_t k = homes.size(); k >= first && k >= 1; --k) {
    std::vector<std::string> earlier(homes.begin(),
                                     homes.begin() + static_cast<long>(k));
    auto o = cluster::owner_of("saga/" + id, node_ids(earlier)).value();
    if (std::find(out.begin(), out.end(), o) == out.end())
      out.push_back(o);
  }
  return out;
}

/// Relays `req` to the gateway of node `home` and its reply to `rp`.
template <class Reply, class Request>
void to_home(gateway_ptr self, const std::string& home, Request req,
             caf::response_promise rp, std::chrono::milliseconds timeout) {
  auto i = self->state.peers.find(home);
  if (i == self->state.peers.end()) {
    rp.deliver(make_error(errc::unavailable,
                          "saga " + req.id() + " lives on node " + home
                            + ", which is down or unreachable; it goes on "
                              "when that node is back"));
    return;
  }
  self->state.requests.request<Reply>(
    self, i->second, timeout, std::move(req),
    [=](Reply& r) mutable { rp.deliver(std::move(r)); },
    [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
}

/// Asks `local` and every peer's gateway `req` (with local_only set), and
/// once all have answered or failed gives `done` the replies, the errors
/// and the nodes whose part is missing: the known nodes (live members and
/// registered nodes, down ones too) that have no link, and the peers that
/// failed with another error than `answered` (a node that says it has
/// nothing).
template <class Reply, class Request, class Done>
void gather(gateway_ptr self, const caf::actor& local, Request req,
            errc answered, Done done) {
  auto& st = self->state;
  req.set_local_only(true);
  std::vector<std::pair<std::string, caf::actor>> ask{{"", local}};
  for (auto& [id, gw] : st.peers)
    ask.emplace_back(id, gw);
  struct acc {
    std::vector<Reply> replies;
    std::vector<caf::error> errors;
    std::set<std::string> missed;
    size_t left = 0;
  };
  auto a = std::make_shared<acc>();
  a->left = ask.size();
  std::set<std::string> known(st.members.begin(), st.members.end());
  known.insert(st.saga_homes.begin(), st.saga_homes.end());
  for (auto& id : known)
    if (id != st.self_id && st.peers.count(id) == 0)
      a->missed.insert(id);
  auto one_done = [a, done]() mutable {
    if (--a->left == 0)
      done(std::move(a->replies), std::move(a->errors),
           std::vector<std::string>(a->missed.begin(), a->missed.end()));
  };
  for (auto& [id, who] : ask)
    st.requests.request<Reply>(
      self, who, std::chrono::seconds(10), req,
      [a, one_done](Reply& r) mutable {
        a->replies.push_back(std::move(r));
        one_done();
      },
      [a, one_done, id = id, answered](caf::error& err) mutable {
        if (!id.empty() && code_of(err) != answered
            && code_of(err) != errc::not_found)
          a->missed.insert(id);
        a->errors.push_back(std::move(err));
        one_done();
      });
}

/// Names the missing nodes in `out` (its `unreachable`).
template <class Reply>
void note_missed(Reply& out, const std::vector<std::string>& missed) {
  for (auto& id : missed)
    out.add_unreachable(id);
}

/// The error of a gathered request none of whose answers was a reply: one
/// that is not `ignorable` if any (a node that could not answer), else the
/// first.
caf::error first_error(const std::vector<caf::error>& errors, errc ignorable) {
  for (auto& e : errors)
    if (code_of(e) != ignorable)
      return e;
  return errors.empty() ? caf::error{} : errors.front();
}

/// Passes `x` on to the node's cluster actor (peer handshakes, replication,
/// elections), which answers the sender; unavailable without one.
template <class Reply, class... Request>
caf::result<Reply> to_cluster(gateway_ptr self, const caf::actor& cluster,
                              Request&... x) {
  if (!cluster)
    return make_error(errc::unavailable, "this node has no cluster view");
  self->delegate(cluster, std::move(x)...);
  return caf::delegated<Reply>{};
}

/// Every group as the cluster knows it (a single node: as it knows it),
/// for `done`: each group once, as its coordinator tells it, and the nodes
/// whose part is missing.
template <class Done>
void every_group(gateway_ptr self, bool clustered, const caf::actor& groups,
                 Done done) {
  if (!clustered) {
    self->request(groups, std::chrono::seconds(10), pb::ListGroups{})
      .then([=](pb::GroupList& r) mutable { done(std::move(r)); },
            [=](caf::error& err) mutable { done(std::move(err)); });
    return;
  }
  gather<pb::GroupList>(
    self, groups, pb::ListGroups{}, errc::unknown_group,
    [done](std::vector<pb::GroupList> rs, std::vector<caf::error> errs,
           std::vector<std::string> missed) mutable {
      if (rs.empty() && missed.empty()) {
        done(first_error(errs, errc::unknown_group));
        return;
      }
      // A group once, as its coordinator tells it (a node that only
      // knows its name lists no members and generation 0).
      std::map<std::string, pb::GroupInfo> by_name;
      for (auto& r : rs)
        for (auto& g : *r.mutable_groups()) {
          auto& slot = by_name[g.group()];
          if (slot.group().empty() || g.generation() > slot.generation())
            slot = std::move(g);
        }
      pb::GroupList out;
      note_missed(out, missed);
      for (auto& [name, g] : by_name)
        *out.add_groups() = std::move(g);
      done(std::move(out));
    });
}

/// "to offset 5", "to the earliest", ... for the audit line.
std::string reset_target(const pb::ResetOffsets& x) {
  switch (x.to()) {
    case pb::ResetOffsets::TO_OFFSET:
      return "to offset " + std::to_string(x.offset());
    case pb::ResetOffsets::TO_EARLIEST:
      return "to the earliest";
    case pb::ResetOffsets::TO_LATEST:
      return "to the latest";
    default:
      return "to the first message at or after "
             + std::to_string(x.datetime_ms()) + " ms";
  }
}

caf::behavior gateway(gateway_ptr self,
                      broker::context_ptr ctx, caf::actor topics, caf::actor groups,
                       caf::actor dedup, caf::actor txn,
                       std::vector<caf::actor> shards, caf::actor directory,
                       caf::actor cluster) {
  auto txns = ctx->clustered() ? topics : txn;
  self->state.self_id = ctx->node_id;
  if (ctx->clustered() && cluster)
    self->send(cluster, wire::watch_atom::value,
               caf::actor_cast<caf::actor>(self));
  // A saga lives on shard shard_of(id, shards) (sagas/runtime.hpp).
  auto shard_for = [shards](const std::string& id) {
    return shards[shard_of(id, shards.size())];
  };
  // A show or an operator command goes to the saga's shard: here, or on
  // the node it lives on in a cluster (its home now, else a home it had
  // before a node joined: tried in turn while the answer is not_found).
  // In a cluster, where a saga lives is known only once the node has seen
  // the registered nodes: until then sagas wait (not decided alone here).
  auto joining = [=] {
    return ctx->clustered() && !self->state.have_view;
  };
  auto not_yet = [] {
    return make_error(errc::unavailable,
                      "this node is joining the cluster; try again shortly");
  };
  auto to_saga = [=](auto x) -> caf::result<pb::SagaRecord> {
    if (joining() && !x.local_only())
      return not_yet();
    if (shards.empty() && self->state.saga_homes.empty())
      return make_error(errc::not_found, "no saga '" + x.id() + "'");
    if (x.local_only() || self->state.saga_homes.empty()) {
      if (shards.empty())
        return make_error(errc::not_found, "no saga '" + x.id() + "'");
      self->delegate(shard_for(x.id()), std::move(x));
      return caf::delegated<pb::SagaRecord>{};
    }
    auto rp = self->make_response_promise<pb::SagaRecord>();
    auto cands = std::make_shared<std::vector<std::string>>(
      saga_homes_of(self, x.id()));
    x.set_local_only(true);
    auto next = std::make_shared<std::function<void(size_t)>>();
    *next = [=](size_t i) mutable {
      auto fail_over = [=](caf::error err) mutable {
        if (code_of(err) == errc::not_found && i + 1 < cands->size())
          (*next)(i + 1);
        else
          rp.deliver(std::move(err));
      };
      caf::actor dest;
      if ((*cands)[i] == ctx->node_id) {
        if (shards.empty()) {
          fail_over(make_error(errc::not_found, "no saga '" + x.id() + "'"));
          return;
        }
        dest = shard_for(x.id());
      } else if (auto p = self->state.peers.find((*cands)[i]);
                 p != self->state.peers.end()) {
        dest = p->second;
      } else {
        rp.deliver(make_error(errc::unavailable,
                              "saga " + x.id() + " may live on node "
                                + (*cands)[i]
                                + ", which is down or unreachable"));
        return;
      }
      self->state.requests.request<pb::SagaRecord>(
        self, dest, std::chrono::seconds(30), x,
        [=](pb::SagaRecord& r) mutable { rp.deliver(std::move(r)); },
        fail_over);
    };
    (*next)(0);
    return rp;
  };
  auto no_sagas = [] {
    return make_error(errc::unknown_saga_type,
                      "no saga types are registered on this node (sagas "
                      "are registered by the program that embeds the node)");
  };
  return {
    [=](pb::ParticipantRegister& x)
      -> caf::result<pb::ParticipantRegistered> {
      if (!directory)
        return no_sagas();
      self->delegate(directory, std::move(x));
      return caf::delegated<pb::ParticipantRegistered>{};
    },
    [=](pb::SagaStart& x) -> caf::result<pb::SagaStarted> {
      if (joining())
        return not_yet();
      if (ctx->clustered() && self->state.saga_epoch == 0
          && !self->state.saga_homes.empty()) {
        // The cluster's first saga: the moment is recorded in etcd first,
        // so that nodes registering from now on count as later ones.
        auto& st = self->state;
        if (!st.epoch_maker)
          st.epoch_maker = self->home_system().spawn<caf::detached>(
            [store = ctx->store,
             key = "/edda/" + ctx->settings.cluster_name
                   + "/nodes/%saga-epoch"](caf::event_based_actor*) {
              return caf::behavior{
                [=](wire::flush_atom) -> caf::result<int64_t> {
                  auto r = store->cas_put(key, "first saga", 0);
                  if (!r)
                    return r.error();
                  if (!r->current)
                    return make_error(errc::unavailable,
                                      "the saga epoch changed meanwhile");
                  return r->current->create_revision;
                }};
            });
        auto rp = self->make_response_promise<pb::SagaStarted>();
        self->request(st.epoch_maker, std::chrono::seconds(10),
                      wire::flush_atom::value)
          .then(
            [=](int64_t rev) mutable {
              auto& st = self->state;
              st.saga_epoch = std::max(st.saga_epoch, rev);
              rp.delegate(caf::actor_cast<caf::actor>(self), std::move(x));
            },
            [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
        return rp;
      }
      auto& homes = self->state.saga_homes;
      if (shards.empty() && homes.empty())
        return no_sagas();
      if (x.id().empty()) {
        // A fresh id that lives here (a few tries: rendezvous spreads ids
        // evenly over the homes).
        x.set_id(new_unique_id());
        for (int k = 0; k < 256 && !homes.empty()
                        && saga_home(self, x.id()) != ctx->node_id;
             ++k)
          x.set_id(new_unique_id());
      }
      if (!homes.empty()) {
        auto cands = saga_homes_of(self, x.id());
        auto home = cands.front();
        auto rp = self->make_response_promise<pb::SagaStarted>();
        // A start that waits for the end may take as long as the saga.
        auto timeout = x.wait() ? std::chrono::milliseconds(3600000)
                                : std::chrono::milliseconds(30000);
        auto start_at_home = [=](pb::SagaStart x) mutable {
          if (home != ctx->node_id)
            to_home<pb::SagaStarted>(self, home, std::move(x), rp, timeout);
          else if (shards.empty())
            rp.deliver(make_error(errc::unknown_saga_type, "no sagas here"));
          else
            rp.delegate(shard_for(x.id()), std::move(x));
        };
        if (cands.size() == 1) {
          start_at_home(std::move(x));
          return rp;
        }
        // The id's home moved when a node joined: a saga started before
        // lives on an earlier home. Start is idempotent by id: look there
        // first.
        pb::SagaGet q;
        q.set_id(x.id());
        q.set_local_only(true);
        auto left = std::make_shared<size_t>(cands.size() - 1);
        auto found = std::make_shared<bool>(false);
        for (size_t i = 1; i < cands.size(); ++i) {
          caf::actor dest;
          if (cands[i] == ctx->node_id && !shards.empty())
            dest = shard_for(x.id());
          else if (auto p = self->state.peers.find(cands[i]);
                   p != self->state.peers.end())
            dest = p->second;
          auto done = [=](caf::expected<pb::SagaRecord> r) mutable {
            if (*found)
              return;
            if (r) {
              *found = true;
              pb::SagaStarted st;
              st.set_existed(true);
              *st.mutable_record() = std::move(*r);
              rp.deliver(std::move(st));
              return;
            }
            if (code_of(r.error()) != errc::not_found) {
              *found = true; // cannot tell: refuse rather than start twice
              rp.deliver(make_error(errc::unavailable,
                                    "cannot tell whether saga " + x.id()
                                      + " exists on an earlier home: "
                                      + render(r.error())));
              return;
            }
            if (--*left == 0)
              start_at_home(x);
          };
          if (!dest) {
            done(make_error(errc::unavailable, "node " + cands[i]
                                                 + " is down or unreachable"));
            continue;
          }
          self->state.requests.request<pb::SagaRecord>(
            self, dest, std::chrono::seconds(30), q,
            [=](pb::SagaRecord& r) mutable {
              done(caf::expected<pb::SagaRecord>{std::move(r)});
            },
            [=](caf::error& err) mutable {
              done(caf::expected<pb::SagaRecord>{std::move(err)});
            });
        }
        return rp;
      }
      auto shard = shard_for(x.id());
      self->delegate(shard, std::move(x));
      return caf::delegated<pb::SagaStarted>{};
    },
    [=](pb::SagaGet& x) -> caf::result<pb::SagaRecord> {
      return to_saga(std::move(x));
    },
    [=](pb::SagaCommand& x) -> caf::result<pb::SagaRecord> {
      return to_saga(std::move(x));
    },
    [=](pb::SagaList& x) -> caf::result<pb::SagaRecords> {
      if (shards.empty()) {
        pb::SagaRecords none;
        none.set_now_ms(ctx->clock());
        return none;
      }
      if (x.local_only() || !ctx->clustered()) {
        self->delegate(shards.front(), std::move(x));
        return caf::delegated<pb::SagaRecords>{};
      }
      // Every node's sagas, oldest first, at most the limit.
      auto rp = self->make_response_promise<pb::SagaRecords>();
      auto limit = x.limit() == 0 ? 1000u : x.limit();
      gather<pb::SagaRecords>(
        self, shards.front(), std::move(x), errc::not_found,
        [rp, limit](std::vector<pb::SagaRecords> rs, std::vector<caf::error>,
                    std::vector<std::string> missed) mutable {
          pb::SagaRecords out;
          note_missed(out, missed);
          for (auto& r : rs) {
            for (auto& rec : *r.mutable_records())
              *out.add_records() = std::move(rec);
            out.set_now_ms(std::max(out.now_ms(), r.now_ms()));
          }
          auto* recs = out.mutable_records();
          std::sort(recs->begin(), recs->end(),
                    [](const pb::SagaRecord& a, const pb::SagaRecord& b) {
                      return a.created_ms() < b.created_ms();
                    });
          while (static_cast<uint32_t>(recs->size()) > limit)
            recs->RemoveLast();
          rp.deliver(std::move(out));
        });
      return rp;
    },
    [=](pb::MembershipView& v) {
      auto& st = self->state;
      st.members.clear();
      for (auto& m : v.members())
        st.members.insert(m.node_id());
      st.members.insert(v.registered().begin(), v.registered().end());
      st.saga_homes.assign(v.saga_homes().begin(), v.saga_homes().end());
      st.saga_home_revisions.assign(v.saga_home_revisions().begin(),
                                    v.saga_home_revisions().end());
      st.saga_epoch = std::max(st.saga_epoch, v.saga_epoch());
      st.have_view = true;
    },
    [=](wire::link_atom, const std::string& id, caf::actor& gw) {
      auto& st = self->state;
      if (auto i = st.peers.find(id); i != st.peers.end() && i->second != gw)
        st.requests.fail(i->second.address(), inflight::lost("node " + id));
      if (gw)
        st.peers[id] = std::move(gw);
      else
        st.peers.erase(id);
    },
    [=](pb::ProduceRequest& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::CreateTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::AlterTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::DeleteTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::DescribeTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::AssignCursor& a, caf::actor& member) {
      // A group coordinator on another node assigns a partition homed here.
      self->send(topics, std::move(a), std::move(member));
    },
    [=](pb::ListTopics& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::GetTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::ClusterMapRequest& x) {
      return self->delegate(topics, std::move(x));
    },
    [=](pb::Subscribe& x) { return self->delegate(groups, std::move(x)); },
    [=](pb::FindCoordinator& x) {
      return self->delegate(groups, std::move(x));
    },
    [=](pb::Unsubscribe& x) { return self->delegate(groups, std::move(x)); },
    // In a cluster a group's coordinator lives on one node and its dead
    // letters on the nodes of its partitions: these ask every member.
    [=](pb::ListGroups& x) -> caf::result<pb::GroupList> {
      if (x.local_only() || !ctx->clustered()) {
        self->delegate(groups, std::move(x));
        return caf::delegated<pb::GroupList>{};
      }
      auto rp = self->make_response_promise<pb::GroupList>();
      every_group(self, ctx->clustered(), groups,
                  [rp](caf::expected<pb::GroupList> r) mutable {
        if (r)
          rp.deliver(std::move(*r));
        else
          rp.deliver(r.error());
      });
      return rp;
    },
    [=](pb::ResetOffsets& x) -> caf::result<pb::OffsetsReset> {
      if (x.local_only()) { // another node's: its home partitions here
        self->delegate(topics, std::move(x));
        return caf::delegated<pb::OffsetsReset>{};
      }
      if (x.group().empty() || x.topic().empty())
        return make_error(errc::invalid_argument,
                          "reset-offsets needs a group and a topic");
      if (broker::is_node_group(x.group()))
        return make_error(errc::invalid_argument,
                          "groups starting with 'edda.' are the nodes' own");
      if (x.execute() && x.by().empty())
        return make_error(errc::invalid_argument,
                          "reset-offsets --execute needs `by` (who asks), "
                          "logged with it");
      if (!pb::ResetOffsets::To_IsValid(x.to()))
        return make_error(errc::invalid_argument,
                          "reset-offsets: unknown target "
                            + std::to_string(x.to()));
      auto rp = self->make_response_promise<pb::OffsetsReset>();
      // The group as its coordinator tells it: known, clustering, and,
      // unless forced, without live members.
      every_group(self, ctx->clustered(), groups,
                  [=](caf::expected<pb::GroupList> r) mutable {
        if (!r) {
          rp.deliver(r.error());
          return;
        }
        const pb::GroupInfo* g = nullptr;
        for (auto& info : r->groups())
          if (info.group() == x.group())
            g = &info;
        if (g == nullptr) {
          rp.deliver(make_error(
            r->unreachable().empty() ? errc::unknown_group : errc::unavailable,
            "no consumer group '" + x.group() + "'"
              + (r->unreachable().empty()
                   ? std::string{" (a group exists once a member subscribed)"}
                   : "; its coordinator may be on a node that is down")));
          return;
        }
        if (g->mode() == pb::BROADCAST) {
          rp.deliver(make_error(errc::invalid_argument,
                                "group '" + x.group()
                                  + "' consumes in broadcast mode: each "
                                    "client keeps its own offsets; "
                                    "reset-offsets moves a clustering "
                                    "group's"));
          return;
        }
        if (!r->unreachable().empty() && x.execute() && !x.force()) {
          // Its coordinator, and live members, may be on a node that did
          // not answer.
          std::string names;
          for (auto& n : r->unreachable())
            names += (names.empty() ? "" : ", ") + n;
          rp.deliver(make_error(
            errc::unavailable,
            "cannot tell whether group '" + x.group()
              + "' has live members: node(s) " + names
              + " did not answer; try again, or pass --force"));
          return;
        }
        if (g->members_size() > 0 && x.execute() && !x.force()) {
          std::string names;
          for (auto& m : g->members())
            names += (names.empty() ? "" : ", ") + m;
          rp.deliver(make_error(
            errc::invalid_argument,
            "group '" + x.group() + "' has "
              + std::to_string(g->members_size()) + " live member"
              + (g->members_size() == 1 ? "" : "s") + " (" + names
              + "): stop them first, or pass --force (they are then given "
                "what they had not acknowledged again, from the new "
                "offset)"));
          return;
        }
        auto req = x;
        self->request(topics, std::chrono::seconds(60), std::move(req))
          .then(
            [=](pb::OffsetsReset& done) mutable {
              if (x.execute())
                EDDA_INFO_F("audit",
                            "offsets of group " << x.group() << " on topic "
                                                << x.topic() << " reset ("
                                                << reset_target(x) << ") by "
                                                << x.by(),
                            {"action", "reset-offsets"}, {"group", x.group()},
                            {"topic", x.topic()}, {"by", x.by()});
              rp.deliver(std::move(done));
            },
            [=](caf::error& err) mutable {
              // Some partitions may have moved before one failed.
              if (x.execute())
                EDDA_WARN_F("audit",
                            "offsets of group "
                              << x.group() << " on topic " << x.topic()
                              << " reset (" << reset_target(x) << ") by "
                              << x.by() << " failed, in part or whole: "
                              << render(err),
                            {"action", "reset-offsets"}, {"group", x.group()},
                            {"topic", x.topic()}, {"by", x.by()});
              rp.deliver(std::move(err));
            });
      });
      return rp;
    },
    [=](pb::FindMessages& x) -> caf::result<pb::FoundMessages> {
      if (!x.local_only() && x.id().empty() && !x.by_key()
          && x.since_ms() == 0)
        return make_error(errc::invalid_argument,
                          "find messages by an id, a key or a time");
      if (!x.local_only() && x.id().empty() && x.topic().empty())
        return make_error(errc::invalid_argument,
                          "find by key or time needs a topic");
      if (x.local_only() || x.id().empty()) {
        self->delegate(topics, std::move(x));
        return caf::delegated<pb::FoundMessages>{};
      }
      // A show: no such id is not_found, unless a part went unread.
      auto rp = self->make_response_promise<pb::FoundMessages>();
      auto id = x.id();
      auto where = x.topic().empty() ? std::string{"any topic"}
                                     : "topic '" + x.topic() + "'";
      self->request(topics, std::chrono::seconds(60), std::move(x))
        .then(
          [=](pb::FoundMessages& found) mutable {
            if (found.messages_size() == 0 && found.unreachable_size() == 0
                && !found.truncated())
              rp.deliver(make_error(errc::not_found,
                                    "no message with id " + id + " in "
                                      + where));
            else
              rp.deliver(std::move(found));
          },
          [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [=](pb::DlqList& x) -> caf::result<pb::DlqEntries> {
      if (x.local_only() || !ctx->clustered()) {
        self->delegate(groups, std::move(x));
        return caf::delegated<pb::DlqEntries>{};
      }
      auto rp = self->make_response_promise<pb::DlqEntries>();
      auto limit = x.limit() == 0 ? 1000u : x.limit();
      gather<pb::DlqEntries>(
        self, groups, std::move(x), errc::unknown_group,
        [rp, limit](std::vector<pb::DlqEntries> rs,
                    std::vector<caf::error> errs,
                    std::vector<std::string> missed) mutable {
          // No live node knows the group but some node is down: its dead
          // letters may be there (an empty list naming it, not "unknown").
          if (rs.empty() && missed.empty()) {
            rp.deliver(first_error(errs, errc::unknown_group));
            return;
          }
          pb::DlqEntries out;
          note_missed(out, missed);
          for (auto& r : rs)
            for (auto& e : *r.mutable_entries())
              if (static_cast<uint32_t>(out.entries_size()) < limit)
                *out.add_entries() = std::move(e);
          rp.deliver(std::move(out));
        });
      return rp;
    },
    [=](pb::DlqRedrive& x) -> caf::result<pb::DlqRedriven> {
      if (x.local_only() || !ctx->clustered()) {
        self->delegate(groups, std::move(x));
        return caf::delegated<pb::DlqRedriven>{};
      }
      auto rp = self->make_response_promise<pb::DlqRedriven>();
      auto group = x.group();
      gather<pb::DlqRedriven>(
        self, groups, std::move(x), errc::unknown_group,
        [rp, group](std::vector<pb::DlqRedriven> rs,
                    std::vector<caf::error> errs,
                    std::vector<std::string> missed) mutable {
          // Each node redrives its own dead letters; a node that has none
          // of the given ids (not_found) or does not know the group is no
          // failure while another redrove some.
          pb::DlqRedriven out;
          note_missed(out, missed);
          for (auto& r : rs)
            out.set_count(out.count() + r.count());
          for (auto& e : errs)
            if (code_of(e) != errc::not_found
                && code_of(e) != errc::unknown_group) {
              rp.deliver(make_error(
                code_of(e), "redrove " + std::to_string(out.count())
                              + " dead letters of " + group
                              + "; a node could not: " + render(e)));
              return;
            }
          if (rs.empty() && !missed.empty()) {
            std::string names;
            for (auto& m : missed)
              names += (names.empty() ? "" : ", ") + m;
            rp.deliver(make_error(errc::unavailable,
                                  "no live node knows group '" + group
                                    + "'; its dead letters may be on "
                                    + names + ", down or unreachable"));
            return;
          }
          if (rs.empty()) {
            rp.deliver(first_error(errs, errc::unknown_group));
            return;
          }
          for (auto& e : errs)
            if (out.count() == 0 && code_of(e) == errc::not_found) {
              rp.deliver(e); // none of the given ids anywhere
              return;
            }
          rp.deliver(std::move(out));
        });
      return rp;
    },
    [=](pb::DedupCheck& x) { return self->delegate(dedup, std::move(x)); },
    [=](pb::DedupMark& x) { return self->delegate(dedup, std::move(x)); },
    [=](pb::RegisterProducer& x) -> caf::result<pb::ProducerRegistered> {
      if (broker::is_node_group(x.group()))
        return make_error(errc::invalid_producer_group,
                          "producer group '" + x.group()
                            + "': groups starting with 'edda.' are the "
                              "nodes' own");
      self->delegate(txn, std::move(x));
      return caf::delegated<pb::ProducerRegistered>{};
    },
    [=](wire::txn_atom, pb::RegisterProducer& x) {
      // Another node's saga checker joining its own group here
      // (sagas/saga_checker.hpp).
      self->delegate(txn, std::move(x));
      return caf::delegated<pb::ProducerRegistered>{};
    },
    [=](pb::UnregisterProducer& x) {
      return self->delegate(txn, std::move(x));
    },
    // In a cluster a transaction lives on the home of its partition: the
    // topic manager routes it there (and gathers txn lists from every node).
    [=](pb::HalfMessage& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::EndTxn& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::HalfBatch& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::EndBatch& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::TxnList& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::TxnShow& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::ClusterStatusRequest& x) -> caf::result<pb::ClusterStatus> {
      if (!cluster)
        return make_error(errc::unavailable, "this node has no cluster view");
      if (!ctx->clustered() || x.brief()) {
        self->delegate(cluster, std::move(x));
        return caf::delegated<pb::ClusterStatus>{};
      }
      // The members and links, then the partitions each holds and the
      // owners of the groups (each part best effort: a status must answer).
      auto rp = self->make_response_promise<pb::ClusterStatus>();
      auto t = std::chrono::seconds(5);
      self->request(cluster, t, x).then(
        [=](pb::ClusterStatus& s) mutable {
          auto acc = std::make_shared<pb::ClusterStatus>(std::move(s));
          pb::ClusterMapRequest every;
          every.set_all_topics(true);
          self->request(topics, t, every).then(
            [=](const pb::ClusterMap& map) mutable {
              std::map<std::string, uint32_t> homed;
              for (auto& r : map.topics())
                for (auto& h : r.homes())
                  ++homed[h];
              for (auto& m : *acc->mutable_members())
                if (auto i = homed.find(m.node_id()); i != homed.end())
                  m.set_partitions(i->second);
              self->request(groups, t, pb::ListOwners{}).then(
                [=](pb::OwnerList& o) mutable {
                  for (auto& x : *o.mutable_owners())
                    *acc->add_owners() = std::move(x);
                  // The replica groups (none without replication).
                  self->request(cluster, t, pb::ListReplicaGroups{}).then(
                    [=](pb::ReplicaGroupList& g) mutable {
                      for (auto& x : *g.mutable_groups())
                        *acc->add_groups() = std::move(x);
                      rp.deliver(*acc);
                    },
                    [=](caf::error&) mutable { rp.deliver(*acc); });
                },
                [=](caf::error&) mutable { rp.deliver(*acc); });
            },
            [=](caf::error&) mutable { rp.deliver(*acc); });
        },
        [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [=](pb::PeerHello& x) -> caf::result<pb::PeerWelcome> {
      return to_cluster<pb::PeerWelcome>(self, cluster, x);
    },
    [=](pb::PeerHello& x, caf::actor& gw) -> caf::result<pb::PeerWelcome> {
      return to_cluster<pb::PeerWelcome>(self, cluster, x, gw);
    },
    [=](pb::ReplShip& x) -> caf::result<pb::ReplAck> {
      return to_cluster<pb::ReplAck>(self, cluster, x);
    },
    [=](pb::ElectRequest& x) -> caf::result<pb::ElectReply> {
      return to_cluster<pb::ElectReply>(self, cluster, x);
    },
    [=](pb::ReplPositionQuery& x) -> caf::result<pb::ReplAck> {
      return to_cluster<pb::ReplAck>(self, cluster, x);
    },
    [=](pb::BackupRequest& x) -> caf::result<pb::BackupDone> {
      // storage.backup_dir/NAME, NAME a plain name: a client picks a name,
      // never a place on the node's machine.
      auto root = ctx->settings.backup_dir;
      if (root == "off")
        return make_error(errc::unavailable,
                          "backups are off on this node (storage.backup_dir "
                          "= off)");
      if (root.empty()) {
        root = ctx->settings.data_dir;
        while (root.size() > 1 && root.back() == '/')
          root.pop_back();
        root += ".backups";
      }
      const auto& name = x.name();
      if (name.empty() || name.size() > 128 || !only_name_chars(name)
          || name == "." || name == "..")
        return make_error(errc::invalid_argument,
                          "a backup NAME is 1 to 128 letters, digits, '_', "
                          "'-' or '.' (not . or ..), got '" + name + "'");
      if (x.by().empty())
        return make_error(errc::invalid_argument,
                          "a backup needs `by` (who asks), logged with it");
      auto dir = root + "/" + name;
      EDDA_INFO_F("audit", "backup to " << dir << " by " << x.by(),
                  {"action", "backup"}, {"target", dir}, {"by", x.by()});
      // The copy blocks for as long as it takes: a thread of its own.
      auto env = ctx->env;
      auto node = ctx->node_id;
      auto worker = self->home_system().spawn<caf::detached>(
        [env, node, dir](caf::event_based_actor* w) -> caf::behavior {
          return {[=](const pb::BackupRequest& r) -> caf::result<pb::BackupDone> {
            w->quit();
            auto began = std::chrono::steady_clock::now();
            auto bytes = env->copy_to(dir, r.compact());
            if (!bytes) {
              EDDA_WARN("storage", "backup to '" << dir << "' refused or "
                                                 << "failed: "
                                                 << render(bytes.error()));
              return bytes.error();
            }
            pb::BackupDone done;
            done.set_dir(dir);
            done.set_node_id(node);
            done.set_bytes(*bytes);
            done.set_millis(static_cast<uint64_t>(
              std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - began)
                .count()));
            metrics::counter("storage.backups")++;
            EDDA_INFO("storage", "backup written to '"
                                   << dir << "': " << done.bytes()
                                   << " bytes in " << done.millis() << " ms"
                                   << (r.compact() ? " (compacted)" : ""));
            return done;
          }};
        });
      auto rp = self->make_response_promise<pb::BackupDone>();
      self->request(worker, std::chrono::seconds{3600}, std::move(x))
        .then([rp](pb::BackupDone& d) mutable { rp.deliver(std::move(d)); },
              [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [=](const pb::NodeStatusRequest&) {
      pb::NodeStatus s;
      s.set_node_id(ctx->node_id);
      s.set_data_dir(ctx->settings.data_dir);
      s.set_listen(ctx->settings.listen_host + ":"
                   + std::to_string(ctx->settings.listen_port));
      s.set_durability(config::to_string(ctx->settings.mode));
      s.set_map_size(ctx->settings.map_size);
      s.set_map_used(ctx->env->map_used());
      for (auto& [k, v] : metrics::snapshot())
        (*s.mutable_counters())[k] = v;
      return s;
    },
  };
}

} // namespace

caf::actor spawn_gateway(caf::actor_system& sys, broker::context_ptr ctx,
                         caf::actor topics, caf::actor groups,
                         caf::actor dedup, caf::actor txn,
                         std::vector<caf::actor> saga_shards,
                         caf::actor saga_directory, caf::actor cluster) {
  return sys.spawn(gateway, std::move(ctx), std::move(topics),
                   std::move(groups), std::move(dedup), std::move(txn),
                   std::move(saga_shards), std::move(saga_directory),
                   std::move(cluster));
}

} // namespace edda::node
