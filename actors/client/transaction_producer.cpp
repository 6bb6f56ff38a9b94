#include "client/transaction_producer.hpp"

#include "base/tags.hpp"
#include "base/errc.hpp"
#include "base/failpoint.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "client/connection_impl.hpp"
#include "client/door_transactions.hpp"
#include "client/handoff.hpp"
#include "client/route_table.hpp"
#include "base/inflight.hpp"
#include "wire/types.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <set>
#include <future>
#include <thread>
#include <unistd.h>

namespace edda::client {

namespace pb = wire::pb;

const char* to_string(txn_outcome x) {
  switch (x) {
    case txn_outcome::commit: return "commit";
    case txn_outcome::rollback: return "rollback";
    default: return "unknown";
  }
}

/// One send_in_transaction_async on its way to the sender actor.
struct txn_item {
  pb::HalfMessage half;
  message msg;
  local_transaction fn;
  transaction_producer::txn_callback cb;
};

struct transaction_producer::impl {
  std::shared_ptr<connection_impl> conn;
  txn_producer_options opts;
  txn_checker checker;
  caf::actor actor;
  caf::actor sender; // send_in_transaction_async
  std::shared_ptr<handoff<txn_item>> q = std::make_shared<handoff<txn_item>>();
  std::atomic<uint64_t> answered{0};
};

/// Runs the application's local transaction; a throw counts as unknown.
txn_outcome run_local(const local_transaction& fn, const message& m,
                      const std::string& txn_id) {
  try {
    return fn(m, txn_id);
  } catch (const std::exception& e) {
    EDDA_WARN("txn_producer", "local transaction " << txn_id << " threw: "
                                << e.what() << " (left to check-back)");
  } catch (...) {
    EDDA_WARN("txn_producer", "local transaction " << txn_id
                                << " threw (left to check-back)");
  }
  return txn_outcome::unknown;
}

caf::error outcome_unknown() {
  return make_error(errc::txn_outcome_unknown,
                    "local transaction outcome unknown: left to check-back");
}

caf::expected<txn_result>
run_and_end(std::string txn_id, const message& m, const local_transaction& fn,
            const std::function<caf::expected<txn_result>(
              const std::string&, txn_outcome)>& end) {
  txn_result out;
  out.txn_id = std::move(txn_id);
  out.local = run_local(fn, m, out.txn_id);
  EDDA_FAILPOINT("txn.before_end");
  if (out.local == txn_outcome::unknown) {
    out.end_error = outcome_unknown();
    return out;
  }
  auto r = end(out.txn_id, out.local);
  if (!r) {
    out.end_error = r.error();
    return out;
  }
  r->local = out.local;
  return std::move(*r);
}

namespace {

pb::TxnOutcome to_wire(txn_outcome x) {
  return x == txn_outcome::commit     ? pb::TXN_COMMIT
         : x == txn_outcome::rollback ? pb::TXN_ROLLBACK
                                      : pb::TXN_UNKNOWN;
}

message from_wire(const pb::Message& m) {
  message out;
  out.topic = m.topic();
  out.body = m.body();
  out.key = m.key();
  out.tags.assign(m.tags().begin(), m.tags().end());
  out.properties.insert(m.properties().begin(), m.properties().end());
  out.deliver_at_ms = m.deliver_at_ms();
  out.id = m.id();
  return out;
}

struct checker_state {
  std::shared_ptr<transaction_producer::impl> impl;
  caf::actor frontend;
  bool stopping = false;
  static inline const char* name = "edda.txn_checker";
};

using self_ptr = caf::stateful_actor<checker_state>*;

void retry_later(self_ptr self) {
  retry_after_pause(caf::actor_cast<caf::actor>(self));
}

/// In a cluster a transaction lives on the home of its partition, and that
/// node checks back with the producers registered *there*: the checker
/// registers with every member (again every 2 s: for members that joined
/// or restarted since). Blocking links: the checker is a detached actor.
void register_everywhere(self_ptr self) {
  auto& st = self->state;
  if (st.stopping || !st.frontend)
    return;
  pb::RegisterProducer r;
  r.set_group(st.impl->opts.group);
  r.set_client_id(st.impl->opts.client_id);
  for (auto& [id, gw] : st.impl->conn->other_members(st.frontend))
    self->request(gw, std::chrono::seconds(5), r)
      .then([](const pb::ProducerRegistered&) {},
            [id = id](caf::error& err) {
              EDDA_DEBUG("txn_producer", "could not register with "
                                           << id << ": " << render(err));
            });
}

void register_with(self_ptr self,
                   std::shared_ptr<std::promise<caf::error>> done) {
  auto& st = self->state;
  auto fe = st.impl->conn->reconnect(st.frontend);
  if (!fe) {
    if (done)
      done->set_value(fe.error());
    else
      retry_later(self);
    return;
  }
  st.frontend = *fe;
  self->monitor(st.frontend);
  pb::RegisterProducer r;
  r.set_group(st.impl->opts.group);
  r.set_client_id(st.impl->opts.client_id);
  self->request(st.frontend, st.impl->opts.timeout, r)
    .then(
      [=](const pb::ProducerRegistered&) {
        register_everywhere(self);
        if (done)
          done->set_value(caf::error{});
      },
      [=](caf::error& err) {
        if (done) {
          done->set_value(err);
          return;
        }
        retry_later(self);
      });
}

caf::behavior checker_actor(self_ptr self,
                            std::shared_ptr<transaction_producer::impl> impl,
                            std::shared_ptr<std::promise<caf::error>> started) {
  self->state.impl = impl;
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.stopping || !st.frontend || dm.source != st.frontend.address())
      return;
    EDDA_WARN("txn_producer", "lost the node; re-registering");
    retry_later(self);
  });
  register_with(self, started);
  auto ticker = start_ticker(self->home_system(),
                             caf::actor_cast<caf::actor>(self),
                             std::chrono::seconds(2),
                             caf::make_message(wire::flush_atom::value));
  self->attach_functor(
    [ticker] { caf::anon_send_exit(ticker, caf::exit_reason::user_shutdown); });
  return {
    [=](const pb::CheckTxn& q) {
      auto& im = *self->state.impl;
      txn_check c;
      c.txn_id = q.txn_id();
      c.msg = from_wire(q.message());
      c.check = q.check();
      auto outcome = txn_outcome::unknown;
      try {
        outcome = im.checker(c);
      } catch (const std::exception& e) {
        EDDA_WARN("txn_producer", "checker threw for " << q.txn_id() << ": "
                                                       << e.what()
                                                       << " (answering unknown)");
      } catch (...) {
        EDDA_WARN("txn_producer", "checker threw for " << q.txn_id());
      }
      im.answered++;
      pb::CheckAnswer a;
      a.set_txn_id(q.txn_id());
      a.set_outcome(to_wire(outcome));
      return a;
    },
    [=](wire::tick_atom) {
      if (!self->state.stopping)
        register_with(self, nullptr);
    },
    [=](wire::flush_atom) {
      if (!self->state.stopping)
        register_everywhere(self);
    },
    [=](wire::stop_atom) {
      self->state.stopping = true;
      self->quit();
    },
  };
}

pb::HalfMessage half_message(const transaction_producer::impl& im, message& m) {
  pb::HalfMessage h;
  h.set_txn_id(new_unique_id());
  h.set_producer_group(im.opts.group);
  h.set_client_id(im.opts.client_id);
  h.set_check_after_ms(im.opts.check_after_ms);
  auto* pm = h.mutable_message();
  pm->set_id(m.id.empty() ? new_unique_id() : m.id);
  pm->set_topic(m.topic);
  pm->set_key(m.key);
  for (auto& t : m.tags)
    pm->add_tags(t);
  for (auto& [k, v] : m.properties)
    (*pm->mutable_properties())[k] = v;
  pm->set_body(m.body);
  pm->set_born_ms(now_ms());
  pm->set_producer_group(im.opts.group);
  m.id = pm->id();
  return h;
}

txn_result ended(const pb::EndResult& r, const std::string& txn_id,
                 txn_outcome outcome) {
  txn_result out;
  out.txn_id = txn_id;
  out.local = outcome;
  out.ended = true;
  if (r.record().state() == pb::TxnRecord::COMMITTED && !r.already()) {
    send_result s;
    s.id = r.record().message().id();
    s.topic = r.record().message().topic();
    s.partition = r.partition();
    s.offset = r.offset();
    out.stored = s;
  }
  return out;
}

struct pending_end {
  std::shared_ptr<txn_item> item;
  txn_outcome local = txn_outcome::unknown;
};

struct sender_state {
  std::shared_ptr<transaction_producer::impl> impl;
  caf::actor frontend;
  bool direct_routing = false; // a remote connection that routes by the map
  route_table routes;          // cluster: where keyed halves and ends go
  std::set<std::string> refreshing;
  std::deque<std::shared_ptr<txn_item>> halves; // not sent yet
  std::deque<pending_end> ends;                 // local done, end not sent
  size_t halves_inflight = 0, ends_inflight = 0; // batches
  inflight requests; // failed at once when the node is lost
  static inline const char* name = "edda.txn_sender";
};

using sender_ptr = caf::stateful_actor<sender_state>*;

// Batches of at most max_items go out, at most max_inflight of each kind at
// a time: while one is being stored, the next one fills up.
constexpr size_t max_items = 256;
constexpr size_t max_inflight = 2;

void finish(sender_ptr self, const std::shared_ptr<txn_item>& it,
            caf::expected<txn_result> r) {
  it->cb(std::move(r));
  self->state.impl->q->done(1);
}

caf::error from_wire(const pb::BatchItem& item) {
  auto code = static_cast<errc>(item.code());
  std::string what = item.error();
  std::string prefix = std::string(to_string(code)) + ": ";
  if (what.rfind(prefix, 0) == 0)
    what.erase(0, prefix.size());
  return make_error(code, what);
}

void pump(sender_ptr self);

constexpr int64_t route_refresh_ms = 2000;

/// Cluster: asks the node for the route of `topic` (homes, members to
/// link), in the background; until it is there, halves and ends of the
/// topic go through the node.
void fetch_route(sender_ptr self, const std::string& topic) {
  auto& st = self->state;
  if (!st.frontend || !st.refreshing.insert(topic).second)
    return;
  pb::ClusterMapRequest req;
  req.add_topics(topic);
  self->request(st.frontend, st.impl->opts.timeout, req)
    .then(
      [=](const pb::ClusterMap& m) {
        auto& st = self->state;
        st.refreshing.erase(topic);
        st.routes.apply(m, {topic}, now_ms());
        link_members(self->home_system(), st.routes, st.impl->conn,
                     caf::actor_cast<caf::actor>(self));
      },
      [=](caf::error&) { self->state.refreshing.erase(topic); });
}

/// The route of `topic` if it is known (fetching it when it is missing or
/// old), null when routing is off.
topic_route* route_of(sender_ptr self, const std::string& topic) {
  auto& st = self->state;
  if (!st.direct_routing)
    return nullptr;
  auto* r = st.routes.find(topic);
  if (r == nullptr || now_ms() - r->fetched_ms > route_refresh_ms)
    fetch_route(self, topic);
  return r;
}

/// Where a half message goes straight to: the gateway of its partition's
/// home when it has a key (its partition is the key's, as the node would
/// choose: the txn id then names it). Null: through the node, which also
/// places keyless ones, on a partition of its own.
caf::actor home_of_half(sender_ptr self, pb::HalfMessage& h) {
  auto& key = h.message().key();
  if (key.empty())
    return {};
  auto* r = route_of(self, h.message().topic());
  if (r == nullptr || r->partitions == 0)
    return {};
  auto p = shard_of(key, r->partitions);
  auto gw = self->state.routes.direct(*r, p);
  if (gw) {
    h.set_txn_id(txn_id_at(h.txn_id(), r->id, p));
    h.mutable_message()->set_partition(p);
  }
  return gw;
}

/// Where the end of transaction `txn_id` (of `topic`) goes straight to:
/// the gateway of the home its id names. Null: through the node.
caf::actor home_of_end(sender_ptr self, const std::string& topic,
                       const std::string& txn_id) {
  uint32_t tid = 0, p = 0;
  if (!txn_home(txn_id, tid, p))
    return {};
  auto* r = route_of(self, topic);
  if (r == nullptr || r->id != tid)
    return {};
  return self->state.routes.direct(*r, p);
}

/// Splits `items` by where each goes (`where(item)`: a gateway, or null for
/// the node); returns (destination, indexes into items) in first-seen
/// order, the node's part as a null actor.
template <class Items, class Where>
std::vector<std::pair<caf::actor, std::vector<size_t>>>
split_by_home(Items& items, Where where) {
  std::vector<std::pair<caf::actor, std::vector<size_t>>> parts;
  for (size_t i = 0; i < items.size(); ++i) {
    auto d = where(items[i]);
    auto it = std::find_if(parts.begin(), parts.end(),
                           [&](auto& x) { return x.first == d; });
    if (it == parts.end()) {
      parts.emplace_back(d, std::vector<size_t>{});
      it = parts.end() - 1;
    }
    it->second.push_back(i);
  }
  return parts;
}

/// Sends the ends `idx` of `batch` to `dest` (a home's gateway, or null:
/// the node). An end is idempotent: a home that refused it or whose link
/// dropped gets it once more through the node.
template <class Unsent, class Done>
void send_ends(sender_ptr self,
               std::shared_ptr<std::vector<pending_end>> batch,
               std::vector<size_t> idx, caf::actor dest, pb::EndBatch req,
               Unsent unsent, Done done) {
  auto& st = self->state;
  bool direct = static_cast<bool>(dest);
  auto again = direct ? std::make_shared<pb::EndBatch>(req) : nullptr;
  if (!direct)
    dest = st.frontend;
  if (!dest) {
    unsent(idx, make_error(errc::unavailable,
                           "lost the node before the end; left to "
                           "check-back"));
    done();
    return;
  }
  st.requests.request<pb::BatchResult>(
    self, dest, st.impl->opts.timeout, std::move(req),
    [=](const pb::BatchResult& res) {
      for (size_t k = 0; k < idx.size(); ++k) {
        auto& e = (*batch)[idx[k]];
        auto& txn_id = e.item->half.txn_id();
        if (k >= static_cast<size_t>(res.items_size())) {
          txn_result out;
          out.txn_id = txn_id;
          out.local = e.local;
          out.end_error = make_error(errc::malformed_message,
                                     "end batch result is short");
          finish(self, e.item, std::move(out));
          continue;
        }
        auto& item = res.items(static_cast<int>(k));
        if (item.code() == 0) {
          finish(self, e.item, ended(item.end(), txn_id, e.local));
          continue;
        }
        txn_result out;
        out.txn_id = txn_id;
        out.local = e.local;
        out.end_error = from_wire(item);
        finish(self, e.item, std::move(out));
      }
      done();
    },
    [=](caf::error& err) {
      auto c = code_of(err);
      if (again && (c == errc::unavailable || c == errc::not_owner)) {
        send_ends(self, batch, idx, caf::actor{}, std::move(*again), unsent,
                  done);
        return;
      }
      unsent(idx, err);
      done();
    });
}

void pump_ends(sender_ptr self) {
  auto& st = self->state;
  while (st.ends_inflight < max_inflight && !st.ends.empty()) {
    auto batch = std::make_shared<std::vector<pending_end>>();
    pb::EndBatch req;
    while (!st.ends.empty() && batch->size() < max_items) {
      auto& e = st.ends.front();
      auto* x = req.add_ends();
      x->set_txn_id(e.item->half.txn_id());
      x->set_outcome(to_wire(e.local));
      batch->push_back(std::move(e));
      st.ends.pop_front();
    }
    auto unsent = [=](const std::vector<size_t>& idx, const caf::error& err) {
      for (auto i : idx) {
        auto& e = (*batch)[i];
        txn_result out;
        out.txn_id = e.item->half.txn_id();
        out.local = e.local;
        out.end_error = err;
        finish(self, e.item, std::move(out));
      }
    };
    if (!st.frontend) {
      std::vector<size_t> all(batch->size());
      for (size_t i = 0; i < all.size(); ++i)
        all[i] = i;
      unsent(all, make_error(errc::unavailable,
                             "lost the node before the end; left to "
                             "check-back"));
      continue;
    }
    auto parts = split_by_home(*batch, [&](const pending_end& e) {
      return home_of_end(self, e.item->msg.topic, e.item->half.txn_id());
    });
    ++st.ends_inflight;
    auto left = std::make_shared<size_t>(parts.size());
    auto part_done = [=] {
      if (--*left == 0) {
        --self->state.ends_inflight;
        pump_ends(self);
      }
    };
    for (auto& [dest, idx] : parts) {
      pb::EndBatch part;
      for (auto i : idx)
        *part.add_ends() = req.ends(static_cast<int>(i));
      send_ends(self, batch, idx, dest, std::move(part), unsent, part_done);
    }
  }
}

/// Handles the answer for the halves `idx` of `batch`.
void halves_answered(sender_ptr self,
                     const std::shared_ptr<std::vector<std::shared_ptr<txn_item>>>& batch,
                     const std::vector<size_t>& idx, const pb::BatchResult& res) {
  auto& st = self->state;
  for (size_t k = 0; k < idx.size(); ++k) {
    auto& it = (*batch)[idx[k]];
    if (k >= static_cast<size_t>(res.items_size())) {
      finish(self, it, make_error(errc::malformed_message,
                                  "half batch result is short"));
      continue;
    }
    auto& item = res.items(static_cast<int>(k));
    if (!item.txn_id().empty())
      it->half.set_txn_id(item.txn_id()); // its home, in a cluster
    if (item.code() != 0) {
      finish(self, it, from_wire(item));
      continue;
    }
    auto& txn_id = it->half.txn_id();
    auto local = run_local(it->fn, it->msg, txn_id);
    if (local == txn_outcome::unknown) {
      txn_result out;
      out.txn_id = txn_id;
      out.end_error = outcome_unknown();
      finish(self, it, std::move(out));
      continue;
    }
    st.ends.push_back(pending_end{it, local});
  }
}

void pump(sender_ptr self) {
  auto& st = self->state;
  while (st.halves_inflight < max_inflight && !st.halves.empty()) {
    auto batch = std::make_shared<std::vector<std::shared_ptr<txn_item>>>();
    while (!st.halves.empty() && batch->size() < max_items) {
      batch->push_back(std::move(st.halves.front()));
      st.halves.pop_front();
    }
    auto fe = st.impl->conn->reconnect(st.frontend);
    if (!fe) {
      for (auto& it : *batch)
        finish(self, it, fe.error());
      continue;
    }
    if (st.frontend != *fe) {
      st.frontend = *fe;
      self->monitor(st.frontend);
    }
    // Keyed halves straight to their partition's home (the id then names
    // it), the others through the node.
    auto parts = split_by_home(*batch, [&](std::shared_ptr<txn_item>& it) {
      return home_of_half(self, it->half);
    });
    ++st.halves_inflight;
    auto left = std::make_shared<size_t>(parts.size());
    for (auto& part : parts) {
      auto dest = part.first;
      auto idx = part.second;
      pb::HalfBatch req;
      for (auto i : idx)
        *req.add_halves() = (*batch)[i]->half;
      auto part_done = [=] {
        if (--*left == 0)
          --self->state.halves_inflight;
        pump_ends(self);
        pump(self);
      };
      st.requests.request<pb::BatchResult>(
        self, dest ? dest : *fe, st.impl->opts.timeout, std::move(req),
        [=](const pb::BatchResult& res) {
          halves_answered(self, batch, idx, res);
          part_done();
        },
        [=](caf::error& err) {
          // A half may be stored although its answer was lost: check-back
          // settles it (the error says so).
          for (auto i : idx)
            finish(self, (*batch)[i], err);
          part_done();
        });
    }
  }
}

/// Pipelines transactions: half messages and ends travel in batches, each
/// transaction still strictly half -> local -> end.
caf::behavior sender_actor(sender_ptr self,
                           std::shared_ptr<transaction_producer::impl> impl) {
  self->state.impl = impl;
  // Only a remote client saves a hop: an in-process one is on a node that
  // has its own links to the homes.
  self->state.direct_routing = impl->conn->own_sys != nullptr
                               && impl->conn->opts.direct_routing;
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (auto node_id = st.routes.down(dm.source); !node_id.empty()) {
      // A home's link dropped: what was out to it fails now (ends go
      // through the node again), the rest goes through the node until a
      // new map says the home is back.
      st.requests.fail(dm.source, inflight::lost("node " + node_id));
      for (auto& t : st.routes.topics())
        fetch_route(self, t);
      return;
    }
    if (!st.frontend || dm.source != st.frontend.address())
      return;
    st.frontend = nullptr; // the next batch reconnects
    st.refreshing.clear();  // lookups out to it are abandoned
    // Halves and ends out to the lost node fail now, not at their timeout:
    // a half's error says it may be stored (check-back settles it), an
    // end's that the outcome is left to check-back.
    st.requests.fail(dm.source, inflight::lost(st.impl->conn->endpoint));
  });
  return {
    [=](wire::drain_atom) {
      auto& st = self->state;
      for (auto& item : st.impl->q->take())
        st.halves.push_back(std::make_shared<txn_item>(std::move(item)));
      pump(self);
    },
    [=](wire::link_atom, const std::string& node_id, caf::actor& gw) {
      if (gw)
        self->monitor(gw);
      self->state.routes.linked(node_id, std::move(gw));
    },
  };
}

} // namespace

transaction_producer::transaction_producer(std::shared_ptr<impl> i)
  : impl_(std::move(i)) {
}

caf::expected<std::unique_ptr<transaction_producer>>
transaction_producer::start(connection conn, txn_producer_options opts,
                            txn_checker checker) {
  if (!checker)
    return make_error(errc::invalid_argument,
                      "a transaction producer needs a checker");
  if (opts.client_id.empty())
    opts.client_id = make_client_id("t");
  auto im = std::make_shared<impl>();
  im->conn = conn.impl();
  if (im->conn->door) {
    auto d = door_transactions::start(im->conn->door, opts, std::move(checker));
    if (!d)
      return d.error();
    im->opts = std::move(opts);
    std::unique_ptr<transaction_producer> p{new transaction_producer(im)};
    p->door_ = std::move(*d);
    return p;
  }
  im->opts = std::move(opts);
  im->checker = std::move(checker);
  auto started = std::make_shared<std::promise<caf::error>>();
  auto fut = started->get_future();
  // Detached: a checker may block on the application's own store.
  im->actor = im->conn->sys->spawn<caf::detached>(checker_actor, im, started);
  im->sender = im->conn->sys->spawn(sender_actor, im);
  if (auto err = fut.get()) {
    caf::anon_send_exit(im->sender, caf::exit_reason::user_shutdown);
    im->sender = nullptr;
    caf::anon_send(im->actor, wire::stop_atom::value);
    im->actor = nullptr;
    return err;
  }
  return std::unique_ptr<transaction_producer>{new transaction_producer(im)};
}

transaction_producer::~transaction_producer() {
  if (door_) {
    door_.reset(); // flushes, then leaves the group
    return;
  }
  impl_->q->wait_idle();
  stop_and_wait(*impl_->conn->sys, impl_->sender, caf::message{});
  impl_->sender = nullptr;
  // Leave the group first, so that no check-back goes to a producer that is
  // gone (that would cost the transaction a check). Best effort: a node that
  // is unreachable notices by monitoring.
  pb::UnregisterProducer u;
  u.set_group(impl_->opts.group);
  u.set_client_id(impl_->opts.client_id);
  (void) impl_->conn->call<pb::Done>(u, std::chrono::seconds(2));
  stop_and_wait(*impl_->conn->sys, impl_->actor,
                caf::make_message(wire::stop_atom::value));
  impl_->actor = nullptr;
}

caf::expected<txn_result> transaction_producer::end(const std::string& txn_id,
                                                    txn_outcome outcome) {
  if (door_)
    return door_->end(txn_id, outcome);
  pb::EndTxn e;
  e.set_txn_id(txn_id);
  e.set_outcome(to_wire(outcome));
  auto r = impl_->conn->call<pb::EndResult>(e, impl_->opts.timeout);
  if (!r)
    return r.error();
  return ended(*r, txn_id, outcome);
}

namespace {

/// An item of a BatchResult as an error, or none.
caf::error item_error(const pb::BatchItem& item) {
  if (item.code() == 0)
    return {};
  return make_error(static_cast<errc>(item.code()), item.error());
}

/// Fills `out` at the `sent` indexes from the reply to a batch request:
/// the request's error, a missing item ("no answer for this WHAT"), the
/// item's own error, or what `ok(item, k)` makes of a done item (k: its
/// place in the request).
template <class T, class Ok>
void answer_items(const caf::expected<pb::BatchResult>& res,
                  const std::vector<size_t>& sent,
                  std::vector<caf::expected<T>>& out, const char* what,
                  Ok ok) {
  for (size_t k = 0; k < sent.size(); ++k) {
    auto& slot = out[sent[k]];
    if (!res) {
      slot = res.error();
    } else if (k >= static_cast<size_t>(res->items_size())) {
      slot = make_error(errc::unavailable,
                        std::string{"no answer for this "} + what);
    } else if (auto err = item_error(res->items(static_cast<int>(k)))) {
      slot = std::move(err);
    } else {
      slot = ok(res->items(static_cast<int>(k)), k);
    }
  }
}

} // namespace

void transaction_producer::store_halves_async(std::vector<message> ms,
                                              halves_callback cb) {
  if (door_) {
    door_->store_halves_async(std::move(ms), std::move(cb));
    return;
  }
  std::vector<caf::expected<std::string>> out(ms.size(), std::string{});
  std::vector<size_t> sent; // indexes of the messages in the request
  pb::HalfBatch req;
  for (size_t i = 0; i < ms.size(); ++i) {
    auto& m = ms[i];
    if (m.topic.empty()) {
      out[i] = make_error(errc::invalid_argument, "message has no topic");
      continue;
    }
    if (auto why = unselectable_tag(m.tags); !why.empty()) {
      out[i] = make_error(errc::invalid_argument, why + "; not sent");
      continue;
    }
    *req.add_halves() = half_message(*impl_, m);
    sent.push_back(i);
  }
  if (sent.empty()) {
    cb(std::move(out));
    return;
  }
  impl_->conn->call_async<pb::BatchResult>(
    req, impl_->opts.timeout,
    [req, sent, out = std::move(out),
     cb = std::move(cb)](caf::expected<pb::BatchResult> res) mutable {
      answer_items(res, sent, out, "half",
                   [&](const pb::BatchItem& item, size_t k) {
                     // In a cluster the node names the transaction's home
                     // in its id.
                     return item.txn_id().empty()
                              ? req.halves(static_cast<int>(k)).txn_id()
                              : item.txn_id();
                   });
      cb(std::move(out));
    });
}

void transaction_producer::end_many_async(
  std::vector<std::pair<std::string, txn_outcome>> ends, ends_callback cb) {
  if (door_) {
    door_->end_many_async(std::move(ends), std::move(cb));
    return;
  }
  std::vector<caf::expected<txn_result>> out(ends.size(), txn_result{});
  std::vector<size_t> sent;
  pb::EndBatch req;
  for (size_t i = 0; i < ends.size(); ++i) {
    if (ends[i].second == txn_outcome::unknown) {
      out[i] = make_error(errc::invalid_argument,
                          "an end is commit or rollback; unknown is left to "
                          "the check-back");
      continue;
    }
    auto* e = req.add_ends();
    e->set_txn_id(ends[i].first);
    e->set_outcome(to_wire(ends[i].second));
    sent.push_back(i);
  }
  if (sent.empty()) {
    cb(std::move(out));
    return;
  }
  impl_->conn->call_async<pb::BatchResult>(
    req, impl_->opts.timeout,
    [ends, sent, out = std::move(out),
     cb = std::move(cb)](caf::expected<pb::BatchResult> res) mutable {
      answer_items(res, sent, out, "end",
                   [&](const pb::BatchItem& item, size_t k) {
                     auto& [txn_id, outcome] = ends[sent[k]];
                     return ended(item.end(), txn_id, outcome);
                   });
      cb(std::move(out));
    });
}

caf::expected<txn_result>
transaction_producer::send_in_transaction(message m,
                                          const local_transaction& fn) {
  if (m.topic.empty())
    return make_error(errc::invalid_argument, "message has no topic");
  if (door_)
    return door_->send_in_transaction(std::move(m), fn);
  auto h = half_message(*impl_, m);
  auto ack = impl_->conn->call<pb::HalfAck>(h, impl_->opts.timeout);
  if (!ack)
    return ack.error();
  // In a cluster the node names the transaction's home in its id.
  return run_and_end(ack->txn_id().empty() ? h.txn_id() : ack->txn_id(), m,
                     fn, [this](const std::string& id, txn_outcome x) {
                       return end(id, x);
                     });
}

void transaction_producer::send_in_transaction_async(message m,
                                                     local_transaction fn,
                                                     txn_callback cb) {
  if (m.topic.empty()) {
    cb(make_error(errc::invalid_argument, "message has no topic"));
    return;
  }
  // Refused here: at the node it would fail the batch of half messages.
  if (auto why = unselectable_tag(m.tags); !why.empty()) {
    cb(make_error(errc::invalid_argument, why + "; not sent"));
    return;
  }
  if (door_) {
    door_->send_in_transaction_async(std::move(m), std::move(fn),
                                     std::move(cb));
    return;
  }
  txn_item item;
  item.half = half_message(*impl_, m);
  item.msg = std::move(m);
  item.fn = std::move(fn);
  item.cb = std::move(cb);
  if (impl_->q->push(std::move(item)))
    caf::anon_send(impl_->sender, wire::drain_atom::value);
}

void transaction_producer::flush() {
  if (door_) {
    door_->flush();
    return;
  }
  impl_->q->wait_idle();
}

const std::string& transaction_producer::client_id() const {
  return impl_->opts.client_id;
}

uint64_t transaction_producer::checks_answered() const {
  if (door_)
    return door_->checks_answered();
  return impl_->answered;
}

} // namespace edda::client
