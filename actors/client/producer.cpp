#include "client/producer.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "client/connection_impl.hpp"
#include "client/handoff.hpp"
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
};

/// One batch in flight; completed once, by its reply or by the loss of the
/// node (whichever comes first: a late timeout is then ignored).
struct batch_state {
  std::string topic;
  uint32_t partition = 0;
  std::vector<producer::callback> cbs;
  bool completed = false;
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
  std::map<std::string, uint32_t> routes; // topic -> partitions
  std::map<std::string, int64_t> route_age; // topic -> when fetched (ms)
  std::set<std::string> refreshing;
  std::map<std::string, std::vector<pending>> awaiting_route;
  std::map<std::pair<std::string, uint32_t>, partition_queue> parts;
  std::map<std::string, uint32_t> round_robin;
  static inline const char* name = "edda.producer";
};

using self_ptr = caf::stateful_actor<producer_state>*;

void fail(self_ptr self, pending& p, const caf::error& err) {
  p.cb(err);
  self->state.q->done(1);
}

void dispatch(self_ptr self, const std::string& topic, uint32_t partition);

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

void enqueue(self_ptr self, pending p) {
  auto& st = self->state;
  auto topic = p.msg.topic();
  auto r = st.routes.find(topic);
  if (r == st.routes.end()) {
    auto& waiting = st.awaiting_route[topic];
    waiting.push_back(std::move(p));
    if (waiting.size() > 1)
      return; // lookup already running
    pb::GetTopic req;
    req.set_name(topic);
    auto fe = node(self);
    if (!fe) {
      auto waiting = std::move(st.awaiting_route[topic]);
      st.awaiting_route.erase(topic);
      for (auto& w : waiting)
        fail(self, w, fe.error());
      return;
    }
    auto gen = st.route_gen;
    self->request(*fe, st.opts.timeout, req)
      .then(
        [=](const pb::TopicMeta& meta) {
          auto& st = self->state;
          if (gen != st.route_gen)
            return; // abandoned when the node was lost
          st.routes[topic] = meta.partitions();
          st.route_age[topic] = now_ms();
          auto waiting = std::move(st.awaiting_route[topic]);
          st.awaiting_route.erase(topic);
          for (auto& w : waiting)
            enqueue(self, std::move(w));
        },
        [=](caf::error& err) {
          auto& st = self->state;
          if (gen != st.route_gen)
            return;
          auto waiting = std::move(st.awaiting_route[topic]);
          st.awaiting_route.erase(topic);
          for (auto& w : waiting)
            fail(self, w, err);
        });
    return;
  }
  // Partitions can be added to a live topic: refresh the count now and then
  // (in the background; this message uses the count we have).
  if (now_ms() - st.route_age[topic] > route_refresh_ms
      && st.refreshing.insert(topic).second) {
    if (auto fe = node(self)) {
      pb::GetTopic req;
      req.set_name(topic);
      self->request(*fe, st.opts.timeout, req)
        .then(
          [=](const pb::TopicMeta& meta) {
            self->state.routes[topic] = meta.partitions();
            self->state.route_age[topic] = now_ms();
            self->state.refreshing.erase(topic);
          },
          [=](caf::error&) { self->state.refreshing.erase(topic); });
    } else {
      st.refreshing.erase(topic);
    }
  }
  uint32_t n = std::max<uint32_t>(1, r->second);
  uint32_t part = p.msg.key().empty()
                    ? st.round_robin[topic]++ % n
                    : shard_of(p.msg.key(), n);
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
  self->state.q->done(batch->cbs.size());
  dispatch(self, batch->topic, batch->partition);
}

void dispatch(self_ptr self, const std::string& topic, uint32_t partition) {
  auto& st = self->state;
  auto& pq = st.parts[{topic, partition}];
  while (pq.inflight < st.opts.max_inflight_batches && !pq.backlog.empty()) {
    auto fe = node(self);
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
    self->request(*fe, st.opts.timeout, std::move(req))
      .then(
        [=](const pb::ProduceResult& res) {
          if (res.topic_partitions() > 0) {
            // The node tells us the current count: learn of added partitions
            // from the first reply after an alter.
            self->state.routes[topic] = res.topic_partitions();
            self->state.route_age[topic] = now_ms();
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
        },
        [=](caf::error& err) {
          if (batch->completed)
            return;
          if (code_of(err) == errc::unknown_topic)
            self->state.routes.erase(topic);
          complete(self, id, batch, &err, nullptr);
        });
  }
}

caf::behavior producer_actor(self_ptr self, std::shared_ptr<connection_impl> conn,
                             std::shared_ptr<queue> q, producer_options opts) {
  self->state.conn = std::move(conn);
  self->state.q = std::move(q);
  self->state.opts = opts;
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.frontend || dm.source != st.frontend.address())
      return;
    EDDA_WARN("producer", "lost the node at " << st.conn->endpoint
                                              << "; failing in-flight sends");
    st.lost = st.frontend;
    st.frontend = nullptr;
    st.routes.clear();
    st.refreshing.clear();
    ++st.route_gen;
    auto lost = st.inflight;
    auto err = make_error(errc::unavailable,
                          "connection to " + st.conn->endpoint
                            + " lost before the node confirmed the batch; "
                              "it may or may not be stored");
    for (auto& [id, b] : lost)
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
  impl_->actor = impl_->conn->sys->spawn(producer_actor, impl_->conn, impl_->q,
                                         opts);
}

producer::~producer() {
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
  if (size > impl_->opts.max_message_size) {
    cb(make_error(errc::message_too_large,
                  "message is " + std::to_string(size)
                    + " bytes, over the limit of "
                    + std::to_string(impl_->opts.max_message_size)
                    + " bytes; not sent"));
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
  impl_->q->wait_idle();
}

} // namespace edda::client
