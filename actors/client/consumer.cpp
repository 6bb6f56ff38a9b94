#include "client/consumer.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/connection_impl.hpp"
#include "client/door_consumer.hpp"
#include "wire/types.hpp"

#include <caf/blocking_actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <future>
#include <thread>
#include <mutex>
#include <map>
#include <tuple>
#include <unordered_map>
#include <unistd.h>

namespace edda::client {

namespace pb = wire::pb;

struct consumer::impl {
  std::shared_ptr<connection_impl> conn;
  consumer_options opts;
  handler h;
  caf::actor actor;
  std::atomic<uint64_t> delivered{0}, succeeded{0}, failed{0}, acks{0},
    acked{0}, reconnects{0};
  std::atomic<bool> stopped{false};
  // Deferred deliveries (consume_result::deferred), by number, and the
  // number of each message's latest delivery.
  struct held {
    // Weak: a strong handle here would keep the partition actor, and with
    // it this consumer's detached actor, alive past the node's stop.
    caf::actor_addr partition_actor;
    std::string cursor, topic;
    uint32_t partition = 0;
    uint64_t offset = 0;
  };
  using message_key = std::tuple<std::string, std::string, uint32_t, uint64_t>;
  std::mutex held_mtx;
  std::unordered_map<uint64_t, held> held_by_number;
  std::map<message_key, uint64_t> latest;
  uint64_t next_delivery = 1; // guarded by held_mtx
};

namespace {

struct consumer_state {
  std::shared_ptr<consumer::impl> impl;
  caf::actor frontend;    // the node this client talks to
  caf::actor coordinator; // the gateway of the node coordinating the group
  bool subscribed = false;
  bool stopping = false;
  caf::actor ticker; // heartbeats
  static inline const char* name = "edda.consumer";
};

using self_ptr = caf::stateful_actor<consumer_state>*;

pb::Subscribe subscribe_request(const consumer_options& o) {
  pb::Subscribe s;
  s.set_group(o.group);
  s.set_client_id(o.client_id);
  s.set_address(o.address);
  s.set_topic(o.topic);
  s.set_expression(o.expression);
  s.set_mode(o.mode == consume_mode::broadcast ? pb::BROADCAST
                                               : pb::CLUSTERING);
  s.set_from(o.from == consume_from::latest ? pb::LATEST : pb::EARLIEST);
  s.set_max_reconsume(o.max_reconsume);
  for (auto d : o.retry_delays_ms)
    s.add_retry_delays_ms(d);
  return s;
}

void subscribe(self_ptr self, std::shared_ptr<std::promise<caf::error>> done);

void schedule_reconnect(self_ptr self) {
  retry_after_pause(caf::actor_cast<caf::actor>(self));
}

/// Where the group's coordinator runs: its node's gateway. In a cluster the
/// client also links to every member first, so that partitions on any node
/// deliver to it directly (never through a third node). Blocking (the
/// consumer is a detached actor).
caf::expected<caf::actor> find_coordinator(self_ptr self, caf::actor fe) {
  auto& st = self->state;
  auto& conn = *st.impl->conn;
  auto timeout = std::min(st.impl->opts.request_timeout,
                          std::chrono::milliseconds(10000));
  caf::expected<pb::Owner> owner{pb::Owner{}};
  {
    caf::scoped_actor blocking{*conn.sys};
    pb::FindCoordinator q;
    q.set_group(st.impl->opts.group);
    blocking->request(fe, timeout, q)
      .receive([&](pb::Owner& x) { owner = std::move(x); },
               [&](caf::error& err) { owner = std::move(err); });
  }
  if (!owner)
    return owner.error();
  auto others = conn.other_members(fe); // links to every member
  if (owner->self() || others.empty())
    return fe;
  for (auto& [id, gw] : others)
    if (id == owner->node_id())
      return gw;
  if (owner->node_id().empty() || owner->endpoint().empty())
    return make_error(errc::unavailable,
                      "no live node can coordinate group '"
                        + st.impl->opts.group + "' now");
  return conn.link(owner->endpoint());
}

void subscribe(self_ptr self, std::shared_ptr<std::promise<caf::error>> done) {
  auto& st = self->state;
  auto fail = [=](const caf::error& err) {
    if (done)
      done->set_value(err);
    else
      schedule_reconnect(self);
  };
  auto fe = st.impl->conn->reconnect(st.frontend);
  if (!fe) {
    fail(fe.error());
    return;
  }
  if (st.frontend != *fe) {
    st.frontend = *fe;
    self->monitor(st.frontend);
  }
  auto coord = find_coordinator(self, st.frontend);
  if (!coord) {
    if (!done)
      EDDA_WARN("consumer", "cannot find the coordinator of "
                              << st.impl->opts.group << ": "
                              << render(coord.error()));
    fail(coord.error());
    return;
  }
  if (st.coordinator != *coord) {
    st.coordinator = *coord;
    self->monitor(st.coordinator);
  }
  self->request(st.coordinator, st.impl->opts.request_timeout,
                subscribe_request(st.impl->opts))
    .then(
      [=](const pb::Subscribed&) {
        self->state.subscribed = true;
        if (done)
          done->set_value(caf::error{});
      },
      [=](caf::error& err) {
        auto& st = self->state;
        st.subscribed = false;
        if (code_of(err) == errc::not_owner)
          st.coordinator = nullptr; // find it again
        if (done) {
          done->set_value(err);
          return;
        }
        EDDA_WARN("consumer", "re-subscribe failed: " << render(err));
        schedule_reconnect(self);
      });
}

/// Re-asserts the subscription with the coordinator now and then (a cheap
/// no-op when nothing changed): a coordinator that stopped (its node lost
/// the group) answers not_owner, and the member finds the new one.
void heartbeat(self_ptr self) {
  auto& st = self->state;
  if (st.stopping || !st.subscribed || !st.coordinator)
    return;
  self->request(st.coordinator, std::chrono::seconds(5),
                subscribe_request(st.impl->opts))
    .then([](const pb::Subscribed&) {},
          [=](caf::error& err) {
            auto& st = self->state;
            if (st.stopping || !st.subscribed)
              return;
            EDDA_WARN("consumer", st.impl->opts.group
                                    << ": the coordinator did not confirm ("
                                    << render(err) << "); finding it again");
            st.subscribed = false;
            st.coordinator = nullptr;
            schedule_reconnect(self);
          });
}

/// Runs the handler on each delivered message, then acknowledges the batch
/// (acks and nacks together) to the partition that sent it.
void deliver(self_ptr self, pb::Deliver& d) {
  auto& st = self->state;
  auto& im = *st.impl;
  auto partition_actor = caf::actor_cast<caf::actor>(self->current_sender());
  pb::AckRequest ack;
  ack.set_cursor(d.cursor());
  ack.set_topic(d.topic());
  ack.set_partition(d.partition());
  bool retry = d.topic().rfind("%RETRY%", 0) == 0;
  for (auto& m : *d.mutable_messages()) {
    received r;
    r.msg.topic = retry && !m.origin_topic().empty() ? m.origin_topic()
                                                     : m.topic();
    r.msg.body = std::move(*m.mutable_body());
    r.msg.key = m.key();
    r.msg.tags.assign(m.tags().begin(), m.tags().end());
    r.msg.properties.insert(m.properties().begin(), m.properties().end());
    r.msg.id = m.id();
    r.msg.deliver_at_ms = m.deliver_at_ms();
    r.group = im.opts.group;
    r.partition = d.partition();
    r.offset = m.offset();
    r.reconsume_times = m.reconsume_times();
    r.born_ms = m.born_ms();
    r.stored_ms = m.stored_ms();
    r.last_error = m.last_error();
    r.from_retry = retry;
    consumer::impl::message_key mk{};
    if (im.opts.allow_deferred) {
      mk = {d.cursor(), d.topic(), d.partition(), m.offset()};
      // Numbered (and held, in case the handler defers it) before the
      // handler runs: it may settle from another thread at once.
      std::lock_guard<std::mutex> guard{im.held_mtx};
      r.delivery = im.next_delivery++;
      auto& latest = im.latest[mk];
      if (latest != 0) {
        r.replaces = latest;
        im.held_by_number.erase(latest);
      }
      latest = r.delivery;
      im.held_by_number[r.delivery] = {partition_actor.address(), d.cursor(),
                                       d.topic(), d.partition(), m.offset()};
    }
    consume_result res = consume_result::retry_later;
    std::string why = "handler asked to retry later";
    try {
      res = im.h(r);
    } catch (const std::exception& e) {
      why = std::string("handler threw: ") + e.what();
    } catch (...) {
      why = "handler threw a non-standard exception";
    }
    if (res == consume_result::deferred) {
      if (im.opts.allow_deferred)
        continue; // settled later (consumer::settle)
      res = consume_result::retry_later;
      why = "the handler deferred without consumer_options::allow_deferred";
    }
    if (im.opts.allow_deferred) {
      std::lock_guard<std::mutex> guard{im.held_mtx};
      im.held_by_number.erase(r.delivery);
      im.latest.erase(mk);
    }
    if (res == consume_result::release)
      continue; // not taken: left in flight, delivered again later
    im.delivered++;
    if (res == consume_result::success) {
      im.succeeded++;
      ack.add_acks(m.offset());
    } else {
      im.failed++;
      auto* n = ack.add_nacks();
      n->set_offset(m.offset());
      n->set_reason(why);
    }
  }
  if (ack.acks_size() == 0 && ack.nacks_size() == 0)
    return;
  if (!partition_actor)
    return;
  auto acked = static_cast<uint64_t>(ack.acks_size());
  self->request(partition_actor, im.opts.request_timeout, std::move(ack))
    .then([=](const pb::AckResult&) {
            self->state.impl->acks++;
            self->state.impl->acked += acked;
          },
          [=](caf::error& err) {
            EDDA_DEBUG("consumer", "ack not confirmed: " << render(err));
          });
}

caf::behavior consumer_actor(self_ptr self, std::shared_ptr<consumer::impl> impl,
                             std::shared_ptr<std::promise<caf::error>> started) {
  self->state.impl = impl;
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.stopping)
      return;
    st.impl->conn->forget_link(dm.source);
    if (st.coordinator && dm.source == st.coordinator.address()
        && st.coordinator != st.frontend) {
      EDDA_WARN("consumer", st.impl->opts.group
                              << ": lost the coordinator's node; finding the "
                                 "coordinator again");
      st.coordinator = nullptr;
      st.subscribed = false;
      st.impl->reconnects++;
      schedule_reconnect(self);
      return;
    }
    if (!st.frontend || dm.source != st.frontend.address())
      return;
    st.coordinator = nullptr;
    st.subscribed = false;
    EDDA_WARN("consumer", st.impl->opts.group << "/" << st.impl->opts.client_id
                            << ": lost the node at " << st.impl->conn->endpoint
                            << ", reconnecting");
    st.impl->reconnects++;
    schedule_reconnect(self);
  });
  subscribe(self, started);
  self->state.ticker = start_ticker(
    self->home_system(), caf::actor_cast<caf::actor>(self),
    std::chrono::seconds(1), caf::make_message(wire::flush_atom::value));
  self->attach_functor([t = self->state.ticker] {
    caf::anon_send_exit(t, caf::exit_reason::user_shutdown);
  });
  return {
    [=](pb::DeliverFrame& f) {
      pb::Deliver d;
      if (!d.ParseFromString(f.deliver())) {
        // Left unacknowledged: redelivered after the consume timeout.
        EDDA_ERROR("consumer", "a delivery from the node does not parse; "
                               "ignored");
        return;
      }
      deliver(self, d);
    },
    [=](caf::actor& partition_actor, pb::AckRequest& ack) {
      // Deferred deliveries settled (consumer::settle).
      auto acked = static_cast<uint64_t>(ack.acks_size());
      self->request(partition_actor, self->state.impl->opts.request_timeout,
                    std::move(ack))
        .then(
          [=](const pb::AckResult&) {
            self->state.impl->acks++;
            self->state.impl->acked += acked;
          },
          [=](caf::error& err) {
            EDDA_DEBUG("consumer", "ack not confirmed: " << render(err));
          });
    },
    [=](wire::tick_atom) {
      if (!self->state.stopping && !self->state.subscribed)
        subscribe(self, nullptr);
    },
    [=](wire::flush_atom) { heartbeat(self); },
    [=](wire::stop_atom) -> caf::result<bool> {
      auto& st = self->state;
      st.stopping = true;
      auto rp = self->make_response_promise<bool>();
      if (st.coordinator)
        st.frontend = st.coordinator; // leave where we joined
      if (!st.frontend) {
        rp.deliver(true);
        self->quit();
        return rp;
      }
      pb::Unsubscribe u;
      u.set_group(st.impl->opts.group);
      u.set_client_id(st.impl->opts.client_id);
      self->request(st.frontend, std::chrono::seconds(5), u)
        .then(
          [=](const pb::Done&) mutable {
            rp.deliver(true);
            self->quit();
          },
          [=](caf::error&) mutable {
            rp.deliver(false);
            self->quit();
          });
      return rp;
    },
  };
}

} // namespace

consumer::consumer(std::shared_ptr<impl> i) : impl_(std::move(i)) {
}

caf::expected<std::unique_ptr<consumer>>
consumer::start(connection conn, consumer_options opts, handler h) {
  if (opts.group.empty() || opts.topic.empty())
    return make_error(errc::invalid_argument,
                      "a consumer needs a group and a topic");
  if (!h)
    return make_error(errc::invalid_argument, "a consumer needs a handler");
  if (opts.client_id.empty())
    opts.client_id = make_client_id("");
  auto im = std::make_shared<impl>();
  im->conn = conn.impl();
  if (opts.address.empty()) {
    char host[64] = "host";
    ::gethostname(host, sizeof(host) - 1);
    opts.address = im->conn->endpoint == "embedded"
                     ? std::string{"in-process"}
                     : std::string(host) + " pid " + std::to_string(::getpid());
  }
  if (im->conn->door) {
    auto d = door_consumer::start(im->conn->door, opts, std::move(h));
    if (!d)
      return d.error();
    im->opts = std::move(opts);
    std::unique_ptr<consumer> c{new consumer(im)};
    c->door_ = std::move(*d);
    return c;
  }
  im->opts = std::move(opts);
  im->h = std::move(h);
  auto started = std::make_shared<std::promise<caf::error>>();
  auto fut = started->get_future();
  // Detached: a handler may block without stalling the scheduler.
  im->actor = im->conn->sys->spawn<caf::detached>(consumer_actor, im, started);
  auto err = fut.get();
  if (err) {
    caf::anon_send_exit(im->actor, caf::exit_reason::user_shutdown);
    return err;
  }
  return std::unique_ptr<consumer>{new consumer(im)};
}

consumer::~consumer() {
  stop();
}

void consumer::stop() {
  if (impl_->stopped.exchange(true))
    return;
  if (door_) {
    door_->stop();
    return;
  }
  stop_and_wait(*impl_->conn->sys, impl_->actor,
                caf::make_message(wire::stop_atom::value));
  {
    // Deferred deliveries not settled go back to the group.
    std::lock_guard<std::mutex> guard{impl_->held_mtx};
    impl_->held_by_number.clear();
    impl_->latest.clear();
    // A detached actor's thread ends only when its last handle is gone.
    impl_->actor = nullptr;
  }
}

std::vector<uint64_t> consumer::settle(const std::vector<settlement>& batch) {
  if (door_)
    return door_->settle(batch);
  std::vector<uint64_t> unknown;
  auto& im = *impl_;
  if (im.stopped) {
    for (auto& s : batch)
      unknown.push_back(s.delivery);
    return unknown;
  }
  // One ack request per partition cursor (few per batch).
  std::vector<std::pair<caf::actor_addr, pb::AckRequest>> out;
  {
    std::lock_guard<std::mutex> guard{im.held_mtx};
    for (auto& s : batch) {
      auto it = im.held_by_number.find(s.delivery);
      if (it == im.held_by_number.end()
          || s.result == consume_result::deferred) {
        unknown.push_back(s.delivery);
        continue;
      }
      auto h = std::move(it->second);
      im.held_by_number.erase(it);
      im.latest.erase({h.cursor, h.topic, h.partition, h.offset});
      if (s.result == consume_result::release)
        continue; // left in flight: delivered again after the timeout
      auto at = std::find_if(out.begin(), out.end(), [&](const auto& o) {
        return o.first == h.partition_actor && o.second.cursor() == h.cursor
               && o.second.topic() == h.topic
               && o.second.partition() == h.partition;
      });
      if (at == out.end()) {
        out.emplace_back(h.partition_actor, pb::AckRequest{});
        at = std::prev(out.end());
        at->second.set_cursor(h.cursor);
        at->second.set_topic(h.topic);
        at->second.set_partition(h.partition);
      }
      im.delivered++;
      if (s.result == consume_result::success) {
        im.succeeded++;
        at->second.add_acks(h.offset);
      } else {
        im.failed++;
        auto* n = at->second.add_nacks();
        n->set_offset(h.offset);
        n->set_reason(s.reason.empty() ? "the application asked to retry "
                                         "later"
                                       : s.reason);
      }
    }
  }
  caf::actor self;
  {
    std::lock_guard<std::mutex> guard{im.held_mtx}; // stop() resets it
    self = im.actor;
  }
  for (auto& [addr, ack] : out)
    if (auto partition_actor = caf::actor_cast<caf::actor>(addr);
        partition_actor && self)
      caf::anon_send(self, partition_actor, std::move(ack));
  return unknown;
}

consumer_counters consumer::counters() const {
  if (door_)
    return door_->counters();
  consumer_counters c;
  c.delivered = impl_->delivered;
  c.succeeded = impl_->succeeded;
  c.failed = impl_->failed;
  c.acks_durable = impl_->acks;
  c.acked_durable = impl_->acked;
  c.reconnects = impl_->reconnects;
  return c;
}

const std::string& consumer::client_id() const {
  return impl_->opts.client_id;
}

} // namespace edda::client
