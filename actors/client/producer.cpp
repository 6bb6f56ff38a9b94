#include "client/producer.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "client/connection_impl.hpp"
#include "base/inflight.hpp"
#include "base/partition_choice.hpp"
#include "base/tags.hpp"
#include "client/handoff.hpp"
#include "client/door_producer.hpp"
#include "client/route_table.hpp"
#include "wire/types.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>

namespace edda::client {

namespace pb = wire::pb;

namespace {

struct pending {
  pb::Message msg;
  producer::callback cb;
};

using queue = handoff<pending>;

struct partition_queue {
  std::deque<pending> backlog;
  size_t inflight = 0;
  /// A refused direct batch goes again through the node: nothing more of
  /// the partition is sent until it is answered (no batch may overtake it
  /// on the other path).
  bool held = false;
};

/// One batch in flight; completed once, by its reply or by the loss of the
/// node (whichever comes first: a late timeout is then ignored).
struct batch_state {
  std::string topic;
  uint32_t partition = 0;
  bool holds = false; ///< sent again through the node: its partition waits
  std::vector<producer::callback> cbs;
  bool completed = false;
  /// Sent straight to the partition's home: kept to be sent again through
  /// the node once if the home refuses it or its link drops.
  std::shared_ptr<pb::ProduceRequest> retry;
};

struct producer_state {
  std::shared_ptr<connection_impl> conn;
  caf::actor frontend; // monitored; null after it was lost
  caf::actor lost;     // the handle we lost, for reconnect()
  uint64_t route_gen = 0; // bumped on loss: late route replies are ignored
  uint64_t next_batch = 0;
  std::map<uint64_t, std::shared_ptr<batch_state>> inflight;
  std::shared_ptr<queue> q;
  producer_options opts;
  bool direct_routing = false; // a remote connection that routes by the map
  route_table routes;
  std::set<std::string> refreshing;
  std::map<std::string, std::vector<pending>> awaiting_route;
  std::map<std::pair<std::string, uint32_t>, partition_queue> parts;
  /// Batches sent straight to a home: failed at once when its link drops.
  edda::inflight direct;
  static inline const char* name = "edda.producer";
};

using self_ptr = caf::stateful_actor<producer_state>*;

void fail(self_ptr self, pending& p, const caf::error& err) {
  p.cb(err);
  self->state.q->done(1);
}

void dispatch(self_ptr self, const std::string& topic, uint32_t partition);
void enqueue(self_ptr self, pending p);

constexpr int64_t route_refresh_ms = 2000;

/// The node's frontend, reconnecting after a loss. Errors: unavailable.
caf::expected<caf::actor> node(self_ptr self) {
  auto& st = self->state;
  if (st.frontend)
    return st.frontend;
  auto fe = st.conn->reconnect(st.lost ? st.lost : st.conn->frontend());
  if (!fe)
    return fe.error();
  st.frontend = *fe;
  st.lost = nullptr;
  self->monitor(st.frontend);
  return st.frontend;
}

/// Asks the node for the route of `topic` (its partition count; in a
/// cluster also the homes, and the members to link). Sends waiting for the
/// route go on once it is known, or fail.
void fetch_route(self_ptr self, const std::string& topic) {
  auto& st = self->state;
  if (!st.refreshing.insert(topic).second)
    return; // one lookup at a time
  auto fail_waiting = [self, topic](const caf::error& err) {
    auto& st = self->state;
    auto waiting = std::move(st.awaiting_route[topic]);
    st.awaiting_route.erase(topic);
    for (auto& w : waiting)
      fail(self, w, err);
  };
  auto fe = node(self);
  if (!fe) {
    st.refreshing.erase(topic);
    fail_waiting(fe.error());
    return;
  }
  pb::ClusterMapRequest req;
  req.add_topics(topic);
  auto gen = st.route_gen;
  self->request(*fe, st.opts.timeout, req)
    .then(
      [=](const pb::ClusterMap& m) {
        auto& st = self->state;
        if (gen != st.route_gen)
          return; // abandoned when the node was lost
        st.refreshing.erase(topic);
        st.routes.apply(m, {topic}, now_ms());
        if (st.direct_routing)
          link_members(self->home_system(), st.routes, st.conn,
                       caf::actor_cast<caf::actor>(self));
        if (st.routes.find(topic) == nullptr) {
          fail_waiting(
            make_error(errc::unknown_topic, "no topic named '" + topic + "'"));
          return;
        }
        auto waiting = std::move(st.awaiting_route[topic]);
        st.awaiting_route.erase(topic);
        for (auto& w : waiting)
          enqueue(self, std::move(w));
      },
      [=](caf::error& err) {
        auto& st = self->state;
        if (gen != st.route_gen)
          return;
        st.refreshing.erase(topic);
        fail_waiting(err);
      });
}

void enqueue(self_ptr self, pending p) {
  auto& st = self->state;
  auto topic = p.msg.topic();
  auto* r = st.routes.find(topic);
  if (r == nullptr) {
    st.awaiting_route[topic].push_back(std::move(p));
    fetch_route(self, topic);
    return;
  }
  // Partitions can be added to a live topic and homes come and go: refresh
  // the route now and then (in the background; this message uses the one
  // we have).
  if (now_ms() - r->fetched_ms > route_refresh_ms) {
    fetch_route(self, topic);
    r = st.routes.find(topic);
  }
  uint32_t n = std::max<uint32_t>(1, r->partitions);
  // The node's own choice (base/partition_choice.hpp): a key's partition,
  // keyless ones in turn over the partitions with a live home. A keyed
  // message whose home is down goes to the node, which refuses it as it
  // always did (partition_unavailable); keyless ones when no home is live
  // as far as we know: the node picks.
  auto c = choose_partition(p.msg.key(), n, r->turn, [&](uint32_t q) {
    return !st.direct_routing || st.routes.usable(*r, q);
  });
  uint32_t part = c.status == partition_choice::none_live ? r->turn++ % n
                                                         : c.partition;
  st.parts[{topic, part}].backlog.push_back(std::move(p));
  dispatch(self, topic, part);
}

void complete(self_ptr self, uint64_t id, std::shared_ptr<batch_state> batch,
              const caf::error* err, std::vector<send_result>* results) {
  batch->completed = true;
  self->state.inflight.erase(id);
  for (size_t i = 0; i < batch->cbs.size(); ++i) {
    if (err != nullptr)
      batch->cbs[i](*err);
    else
      batch->cbs[i](std::move((*results)[i]));
  }
  auto& pq = self->state.parts[{batch->topic, batch->partition}];
  --pq.inflight;
  if (batch->holds)
    pq.held = false;
  self->state.q->done(batch->cbs.size());
  dispatch(self, batch->topic, batch->partition);
}

/// The results of `batch` from `res`.
void delivered(self_ptr self, uint64_t id,
               const std::shared_ptr<batch_state>& batch,
               const pb::ProduceResult& res) {
  auto& st = self->state;
  if (res.topic_partitions() > 0) {
    // The node tells us the current count: learn of added partitions
    // from the first reply after an alter (their homes from a new map).
    auto* r = st.routes.find(batch->topic);
    if (r != nullptr && res.topic_partitions() > r->partitions) {
      st.routes.grow(batch->topic, res.topic_partitions());
      if (st.routes.clustered())
        fetch_route(self, batch->topic);
    }
  }
  if (batch->completed)
    return;
  std::vector<send_result> out(batch->cbs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].id = res.ids(static_cast<int>(i));
    out[i].topic = res.topic();
    out[i].partition = res.partition();
    out[i].offset = res.offsets(static_cast<int>(i));
  }
  complete(self, id, batch, nullptr, &out);
}

/// Sends `req` through the node (which passes it on to the partition's
/// home in a cluster).
void via_node(self_ptr self, uint64_t id, std::shared_ptr<batch_state> batch,
              const caf::actor& fe, pb::ProduceRequest req) {
  auto& st = self->state;
  auto topic = batch->topic;
  self->request(fe, st.opts.timeout, std::move(req))
    .then([=](const pb::ProduceResult& res) { delivered(self, id, batch, res); },
          [=](caf::error& err) {
            if (batch->completed)
              return;
            if (code_of(err) == errc::unknown_topic)
              self->state.routes.forget(topic);
            complete(self, id, batch, &err, nullptr);
          });
}

/// A direct send that may be tried again through the node: the home
/// refused it (it is not the home, or does not know the topic or the
/// partition yet), so nothing of it was stored. Not after a dropped link or
/// a timeout: the home may have stored it, and a second send would store it
/// twice (the caller gets the error, as through the node). Only while no
/// other batch of the partition is in flight, so that order is kept.
bool worth_retrying(self_ptr self, const batch_state& b, const caf::error& e) {
  auto c = code_of(e);
  if (c != errc::not_owner && c != errc::partition_unavailable
      && c != errc::unknown_topic && c != errc::invalid_argument)
    return false;
  return self->state.parts[{b.topic, b.partition}].inflight == 1;
}

/// Sends `req` straight to the home's gateway `gw`; on a refusal or a
/// dropped link, refreshes the route and sends it once more through the
/// node (the server-side forwarding stays the fallback).
void direct_to_home(self_ptr self, uint64_t id,
                    std::shared_ptr<batch_state> batch, const caf::actor& gw,
                    pb::ProduceRequest req) {
  auto& st = self->state;
  req.set_forwarded(true);
  batch->retry = std::make_shared<pb::ProduceRequest>(req);
  batch->retry->set_forwarded(false);
  st.direct.request<pb::ProduceResult>(
    self, gw, st.opts.timeout, std::move(req),
    [=](pb::ProduceResult& res) {
      batch->retry.reset();
      delivered(self, id, batch, res);
    },
    [=](caf::error& err) {
      if (batch->completed)
        return;
      auto again = std::move(batch->retry);
      if (!again || !worth_retrying(self, *batch, err)) {
        complete(self, id, batch, &err, nullptr);
        return;
      }
      EDDA_DEBUG("producer", "direct send to " << batch->topic << "/"
                                               << batch->partition
                                               << " refused (" << render(err)
                                               << "); through the node");
      fetch_route(self, batch->topic);
      auto fe = node(self);
      if (!fe) {
        complete(self, id, batch, &fe.error(), nullptr);
        return;
      }
      batch->holds = true;
      self->state.parts[{batch->topic, batch->partition}].held = true;
      via_node(self, id, batch, *fe, std::move(*again));
    });
}

void dispatch(self_ptr self, const std::string& topic, uint32_t partition) {
  auto& st = self->state;
  auto& pq = st.parts[{topic, partition}];
  while (!pq.held && pq.inflight < st.opts.max_inflight_batches
         && !pq.backlog.empty()) {
    caf::actor home;
    if (st.direct_routing)
      if (auto* r = st.routes.find(topic))
        home = st.routes.direct(*r, partition);
    auto fe = home ? caf::expected<caf::actor>{home} : node(self);
    pb::ProduceRequest req;
    req.set_topic(topic);
    req.set_partition(static_cast<int32_t>(partition));
    auto batch = std::make_shared<batch_state>();
    batch->topic = topic;
    batch->partition = partition;
    while (!pq.backlog.empty() && batch->cbs.size() < st.opts.max_batch) {
      auto& p = pq.backlog.front();
      *req.add_messages() = std::move(p.msg);
      batch->cbs.push_back(std::move(p.cb));
      pq.backlog.pop_front();
    }
    if (!fe) {
      for (auto& cb : batch->cbs)
        cb(fe.error());
      st.q->done(batch->cbs.size());
      continue;
    }
    ++pq.inflight;
    auto id = st.next_batch++;
    st.inflight[id] = batch;
    if (home)
      direct_to_home(self, id, batch, home, std::move(req));
    else
      via_node(self, id, batch, *fe, std::move(req));
  }
}

caf::behavior producer_actor(self_ptr self, std::shared_ptr<connection_impl> conn,
                             std::shared_ptr<queue> q, producer_options opts) {
  self->state.conn = std::move(conn);
  self->state.q = std::move(q);
  self->state.opts = opts;
  // Only a remote client saves a hop: an in-process one is on a node that
  // has its own links to the homes.
  self->state.direct_routing = self->state.conn->own_sys != nullptr
                               && self->state.conn->opts.direct_routing;
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (auto node_id = st.routes.down(dm.source); !node_id.empty()) {
      // A home's link dropped: its batches go through the node (now, and
      // until a new map says the home is back).
      EDDA_DEBUG("producer", "lost the link to node " << node_id);
      st.direct.fail(dm.source, inflight::lost("node " + node_id));
      for (auto& t : st.routes.topics())
        fetch_route(self, t);
      return;
    }
    if (!st.frontend || dm.source != st.frontend.address())
      return;
    EDDA_WARN("producer", "lost the node at " << st.conn->endpoint
                                              << "; failing in-flight sends");
    st.lost = st.frontend;
    st.frontend = nullptr;
    st.routes.clear_routes();
    st.refreshing.clear();
    ++st.route_gen;
    auto err = make_error(errc::unavailable,
                          "connection to " + st.conn->endpoint
                            + " lost before the node confirmed the batch; "
                              "it may or may not be stored");
    // Batches sent straight to a home are not lost with the node.
    auto lost = st.inflight;
    for (auto& [id, b] : lost)
      if (!b->retry)
        complete(self, id, b, &err, nullptr);
    auto waiting = std::move(st.awaiting_route);
    st.awaiting_route.clear();
    auto lookup_err = make_error(errc::unavailable,
                                 "connection to " + st.conn->endpoint
                                   + " lost; not sent");
    for (auto& [topic, ps] : waiting)
      for (auto& p : ps)
        fail(self, p, lookup_err);
  });
  return {
    [=](wire::drain_atom) {
      for (auto& p : self->state.q->take())
        enqueue(self, std::move(p));
    },
    [=](wire::link_atom, const std::string& node_id, caf::actor& gw) {
      if (gw)
        self->monitor(gw);
      self->state.routes.linked(node_id, std::move(gw));
    },
  };
}

} // namespace

struct producer::impl {
  std::shared_ptr<connection_impl> conn;
  std::shared_ptr<queue> q = std::make_shared<queue>();
  producer_options opts;
  caf::actor actor;
};

producer::producer(connection conn, producer_options opts)
  : impl_(std::make_shared<impl>()) {
  impl_->conn = conn.impl();
  impl_->opts = opts;
  if (impl_->conn->door) {
    door_ = std::make_shared<door_producer>(impl_->conn->door, opts);
    return;
  }
  impl_->actor = impl_->conn->sys->spawn(producer_actor, impl_->conn, impl_->q,
                                         opts);
}

producer::~producer() {
  if (door_) {
    door_.reset(); // flushes
    return;
  }
  flush();
  stop_and_wait(*impl_->conn->sys, impl_->actor, caf::message{});
  impl_->actor = nullptr;
}

void producer::send_async(message m, callback cb) {
  if (m.topic.empty()) {
    cb(make_error(errc::invalid_argument, "message has no topic"));
    return;
  }
  auto size = m.body.size() + m.key.size();
  for (auto& t : m.tags)
    size += t.size();
  for (auto& [k, v] : m.properties)
    size += k.size() + v.size();
  for (auto& [k, v] : m.properties)
    if (k.empty() || !is_utf8(k)) {
      cb(make_error(errc::invalid_argument,
                    "property names must be non-empty UTF-8; not sent"));
      return;
    }
  // Refused here, not at the node: there it would fail the whole batch the
  // message shares with others.
  if (auto why = unselectable_tag(m.tags); !why.empty()) {
    cb(make_error(errc::invalid_argument, why + "; not sent"));
    return;
  }
  if (size > impl_->opts.max_message_size) {
    cb(make_error(errc::message_too_large,
                  "message is " + std::to_string(size)
                    + " bytes, over the limit of "
                    + std::to_string(impl_->opts.max_message_size)
                    + " bytes; not sent"));
    return;
  }
  if (door_) {
    if (m.id.empty())
      m.id = new_unique_id();
    door_->send_async(std::move(m), std::move(cb));
    return;
  }
  pending p;
  p.msg.set_id(m.id.empty() ? new_unique_id() : m.id);
  p.msg.set_topic(std::move(m.topic));
  p.msg.set_key(std::move(m.key));
  for (auto& t : m.tags)
    p.msg.add_tags(std::move(t));
  for (auto& [k, v] : m.properties)
    (*p.msg.mutable_properties())[k] = v;
  p.msg.set_body(std::move(m.body));
  p.msg.set_born_ms(now_ms());
  p.msg.set_deliver_at_ms(m.deliver_at_ms);
  p.msg.set_producer_group(impl_->opts.group);
  bool delayed = m.deliver_at_ms > now_ms();
  if (delayed) {
    p.cb = [cb = std::move(cb)](caf::expected<send_result> r) {
      if (r)
        r->delayed = true;
      cb(std::move(r));
    };
  } else {
    p.cb = std::move(cb);
  }
  if (impl_->q->push(std::move(p)))
    caf::anon_send(impl_->actor, wire::drain_atom::value);
}

caf::expected<send_result> producer::send(message m) {
  auto prom = std::make_shared<std::promise<caf::expected<send_result>>>();
  auto fut = prom->get_future();
  send_async(std::move(m), [prom](caf::expected<send_result> r) {
    prom->set_value(std::move(r));
  });
  return fut.get();
}

void producer::flush() {
  if (door_) {
    door_->flush();
    return;
  }
  impl_->q->wait_idle();
}

} // namespace edda::client
