#include "cluster/membership.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "wire/types.hpp"

#include <algorithm>

namespace edda::cluster {

namespace pb = wire::pb;
namespace ch = std::chrono;

namespace {

int64_t to_ns(steady_time t) {
  return ch::duration_cast<ch::nanoseconds>(t.time_since_epoch()).count();
}

std::optional<member> parse_member(const coord::key_value& kv) {
  pb::MemberInfo info;
  if (!info.ParseFromString(kv.value) || info.node_id().empty())
    return std::nullopt;
  member m;
  m.node_id = info.node_id();
  m.endpoint = info.endpoint();
  m.incarnation = info.incarnation();
  m.started_ms = info.started_ms();
  m.hosted_by = info.hosted_by();
  m.standby_for = info.standby_for();
  m.node_tls = info.node_tls();
  m.lease = kv.lease;
  m.create_revision = kv.create_revision;
  return m;
}

} // namespace

std::string membership::prefix(const std::string& cluster_name) {
  return "/edda/" + cluster_name + "/";
}

membership::membership(coord::client_ptr store, membership_options opts)
  : store_(std::move(store)), opts_(std::move(opts)) {
  if (!opts_.now)
    opts_.now = [] { return std::chrono::steady_clock::now(); };
  if (!opts_.wall_ms)
    opts_.wall_ms = [] {
      return ch::duration_cast<ch::milliseconds>(
               ch::system_clock::now().time_since_epoch())
        .count();
    };
  period_ = std::max(opts_.ttl / 4, ch::milliseconds(50));
  valid_ = opts_.ttl * 3 / 4;
  incarnation_ = opts_.previous_incarnation;
}

caf::expected<std::optional<coord::key_value>>
membership::previous_member_key(coord::client& store,
                                const std::string& cluster_name,
                                const std::string& node_id,
                                coord::lease_id own_lease) {
  auto cur = store.get(prefix(cluster_name) + "members/" + node_id);
  if (!cur)
    return cur.error();
  if (!cur->first)
    return std::optional<coord::key_value>{};
  auto& kv = *cur->first;
  if (own_lease == 0 || kv.lease != own_lease) {
    auto holder = parse_member(kv);
    return make_error(
      errc::bad_config,
      "node id '" + node_id + "' is already a live member of cluster '"
        + cluster_name + "' (at "
        + (holder ? holder->endpoint : std::string{"?"})
        + "): another node runs with the same node.name or a copy of this "
          "data dir; stop it (or wait cluster.lease_ttl if it just died)");
  }
  return std::optional<coord::key_value>{kv};
}

std::string membership::key() const {
  return prefix(opts_.cluster_name) + "members/" + opts_.node_id;
}

caf::expected<std::unique_ptr<membership>>
membership::join(coord::client_ptr store, membership_options opts) {
  std::unique_ptr<membership> m{new membership(std::move(store),
                                               std::move(opts))};
  if (auto err = m->join_once(true))
    return err;
  if (auto err = m->list_and_watch()) {
    m->leave();
    return err;
  }
  {
    std::lock_guard<std::mutex> guard{m->mtx_};
    m->notify();
  }
  if (m->opts_.run_thread)
    m->thread_ = std::thread([p = m.get()] { p->run(); });
  return m;
}

caf::error membership::join_once(bool first) {
  auto& st = *store_;
  auto k = key();
  coord::lease_id old;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    old = first ? opts_.previous_lease : lease_;
  }
  // The key of a previous life (ours if it is bound to the lease we
  // persisted) goes first, with everything else bound to that lease.
  auto cur = previous_member_key(st, opts_.cluster_name, opts_.node_id, old);
  if (!cur)
    return cur.error();
  if (*cur) {
    auto del = st.cas_delete(k, (*cur)->mod_revision);
    if (!del)
      return del.error();
  }
  if (old != 0) {
    auto err = st.revoke(old);
    if (err && code_of(err) != errc::not_found)
      return err;
  }
  auto ttl_s = ch::seconds((opts_.ttl.count() + 999) / 1000);
  auto sent = opts_.now();
  auto lease = st.grant(ttl_s);
  if (!lease)
    return lease.error();
  uint64_t inc;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    inc = incarnation_ + 1;
  }
  if (opts_.persist)
    if (auto err = opts_.persist(*lease, inc)) {
      (void) st.revoke(*lease);
      return err;
    }
  pb::MemberInfo info;
  info.set_node_id(opts_.node_id);
  info.set_endpoint(opts_.endpoint);
  info.set_cluster_name(opts_.cluster_name);
  info.set_incarnation(inc);
  info.set_started_ms(opts_.wall_ms());
  info.set_version(opts_.version);
  info.set_hosted_by(opts_.hosted_by);
  info.set_standby_for(opts_.standby_for);
  info.set_node_tls(opts_.node_tls);
  auto put = st.cas_put(k, info.SerializeAsString(), 0, *lease);
  if (!put) {
    (void) st.revoke(*lease);
    return put.error();
  }
  if (!put->succeeded) {
    (void) st.revoke(*lease);
    auto holder = put->current ? parse_member(*put->current) : std::nullopt;
    return make_error(errc::bad_config,
                      "node id '" + opts_.node_id
                        + "' was taken by another node (at "
                        + (holder ? holder->endpoint : std::string{"?"})
                        + ") while this one joined");
  }
  // The node's lasting registration (not bound to the lease).
  pb::NodeRecord nr;
  nr.set_node_id(opts_.node_id);
  nr.set_runs_sagas(opts_.runs_sagas);
  nr.set_registered_ms(opts_.wall_ms());
  auto nkey = prefix(opts_.cluster_name) + "nodes/" + opts_.node_id;
  // A standby is no node of its own: never registered.
  if (auto old_nr = st.get(nkey); old_nr && opts_.standby_for.empty()) {
    pb::NodeRecord before;
    bool same = old_nr->first && before.ParseFromString(old_nr->first->value)
                && before.runs_sagas() == nr.runs_sagas();
    if (!same) {
      auto r = st.cas_put(nkey, nr.SerializeAsString(),
                          old_nr->first ? old_nr->first->mod_revision : 0);
      if (!r || !r->succeeded)
        EDDA_WARN("cluster", "could not register node " << opts_.node_id
                                                        << " in nodes/");
    }
  }
  std::lock_guard<std::mutex> guard{mtx_};
  lease_ = *lease;
  incarnation_ = inc;
  fenced_ = false;
  renewed_ = sent;
  last_attempt_ = sent;
  problem_.clear();
  valid_until_ns_ = to_ns(sent + valid_);
  if (opts_.shared)
    opts_.shared->set(inc, to_ns(sent + valid_));
  if (auto m = parse_member(put->current ? *put->current : coord::key_value{}))
    members_[m->node_id] = *m;
  EDDA_INFO("cluster", "joined cluster " << opts_.cluster_name << " as "
                                         << opts_.node_id << " (incarnation "
                                         << inc << ", lease " << *lease
                                         << ", ttl " << opts_.ttl.count()
                                         << " ms)");
  return caf::none;
}

caf::error membership::list_and_watch() {
  auto pfx = prefix(opts_.cluster_name) + "members/";
  if (watch_) {
    watch_->cancel();
    watch_.reset();
  }
  if (nodes_watch_) {
    nodes_watch_->cancel();
    nodes_watch_.reset();
  }
  auto npfx = prefix(opts_.cluster_name) + "nodes/";
  auto nodes = store_->get_prefix(npfx);
  if (!nodes)
    return nodes.error();
  {
    std::lock_guard<std::mutex> guard{mtx_};
    registered_.clear();
    saga_epoch_ = 0;
    for (auto& kv : nodes->kvs) {
      if (kv.key == npfx + "%saga-epoch") {
        saga_epoch_ = kv.create_revision;
        continue;
      }
      pb::NodeRecord nr;
      if (nr.ParseFromString(kv.value) && !nr.node_id().empty())
        registered_[nr.node_id()] = {nr.runs_sagas(), kv.create_revision};
    }
  }
  coord::watch_handlers nh;
  nh.on_events = [this](const std::vector<coord::watch_event>& evs) {
    on_node_events(evs);
  };
  nh.on_error = [this](const caf::error& err) {
    std::lock_guard<std::mutex> guard{mtx_};
    relist_ = true;
    problem_ = "node watch ended: " + render(err);
  };
  auto nw = store_->watch_prefix(npfx, nodes->revision + 1, std::move(nh));
  if (!nw)
    return nw.error();
  {
    std::lock_guard<std::mutex> guard{mtx_};
    nodes_watch_ = std::move(*nw);
  }
  auto r = store_->get_prefix(pfx);
  if (!r)
    return r.error();
  {
    std::lock_guard<std::mutex> guard{mtx_};
    members_.clear();
    for (auto& kv : r->kvs)
      if (auto m = parse_member(kv))
        members_[m->node_id] = *m;
    revision_ = r->revision;
    relist_ = false;
  }
  coord::watch_handlers h;
  h.on_events = [this](const std::vector<coord::watch_event>& evs) {
    on_events(evs);
  };
  h.on_error = [this](const caf::error& err) {
    std::lock_guard<std::mutex> guard{mtx_};
    relist_ = true;
    problem_ = "member watch ended: " + render(err);
  };
  auto w = store_->watch_prefix(pfx, r->revision + 1, std::move(h));
  if (!w)
    return w.error();
  std::lock_guard<std::mutex> guard{mtx_};
  watch_ = std::move(*w);
  return caf::none;
}

void membership::on_events(const std::vector<coord::watch_event>& evs) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto pfx = prefix(opts_.cluster_name) + "members/";
  for (auto& e : evs) {
    revision_ = std::max(revision_, e.kv.mod_revision);
    auto id = e.kv.key.substr(std::min(pfx.size(), e.kv.key.size()));
    if (e.type == coord::watch_event::kind::del) {
      if (members_.erase(id) != 0)
        EDDA_INFO("cluster", "member " << id << " left");
      continue;
    }
    if (auto m = parse_member(e.kv)) {
      auto known = members_.count(m->node_id) != 0;
      members_[m->node_id] = *m;
      if (!known)
        EDDA_INFO("cluster", "member " << m->node_id << " joined at "
                                       << m->endpoint);
    }
  }
  notify();
}

void membership::on_node_events(const std::vector<coord::watch_event>& evs) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto pfx = prefix(opts_.cluster_name) + "nodes/";
  for (auto& e : evs) {
    auto id = e.kv.key.substr(std::min(pfx.size(), e.kv.key.size()));
    if (id == "%saga-epoch") {
      saga_epoch_ = e.type == coord::watch_event::kind::del
                      ? 0
                      : e.kv.create_revision;
      continue;
    }
    if (e.type == coord::watch_event::kind::del) {
      registered_.erase(id);
      continue;
    }
    pb::NodeRecord nr;
    if (nr.ParseFromString(e.kv.value) && !nr.node_id().empty())
      registered_[nr.node_id()] = {nr.runs_sagas(), e.kv.create_revision};
  }
  notify();
}

void membership::fill(membership_view& v) const {
  // mtx_ held.
  for (auto& [id, m] : members_)
    (m.standby_for.empty() ? v.members : v.standbys).push_back(m);
  v.fenced = fenced_;
  v.lease = lease_;
  v.incarnation = incarnation_;
  v.revision = revision_;
  v.renewed = renewed_;
  v.problem = problem_;
  std::vector<std::pair<int64_t, std::string>> homes;
  for (auto& [id, r] : registered_)
    v.registered.push_back(id);
  for (auto& [id, r] : registered_)
    if (r.runs_sagas)
      homes.emplace_back(r.revision, id);
  std::sort(homes.begin(), homes.end());
  for (auto& [rev, id] : homes) {
    v.saga_homes.push_back(id);
    v.saga_home_revisions.push_back(rev);
  }
  v.saga_epoch = saga_epoch_;
}

void membership::fence(const std::string& why) {
  // mtx_ held.
  if (fenced_)
    return;
  fenced_ = true;
  valid_until_ns_ = 0;
  if (opts_.shared)
    opts_.shared->fence();
  EDDA_WARN("cluster", "fenced: " << why
                                  << "; movable duties stop until this node "
                                     "rejoins with a new lease");
  notify();
}

void membership::notify() {
  // mtx_ held: views go out in order.
  if (!opts_.on_view)
    return;
  membership_view v;
  fill(v);
  opts_.on_view(v);
}

membership_view membership::view() const {
  std::lock_guard<std::mutex> guard{mtx_};
  membership_view v;
  fill(v);
  return v;
}

bool membership::lease_valid() const {
  return to_ns(opts_.now()) < valid_until_ns_.load();
}

void membership::tick() {
  auto now = opts_.now();
  bool fenced, relist, due;
  coord::lease_id lease;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!fenced_ && now - renewed_ >= valid_)
      fence("no lease renewal for "
            + std::to_string(
              ch::duration_cast<ch::milliseconds>(now - renewed_).count())
            + " ms" + (problem_.empty() ? "" : " (" + problem_ + ")"));
    fenced = fenced_;
    relist = relist_;
    lease = lease_;
    due = now - last_attempt_ >= period_;
  }
  if (fenced) {
    if (!due)
      return;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      last_attempt_ = now;
    }
    if (auto err = join_once(false)) {
      std::lock_guard<std::mutex> guard{mtx_};
      if (problem_ != render(err))
        EDDA_WARN("cluster", "cannot rejoin yet: " << render(err));
      problem_ = render(err);
      return;
    }
    relist = true;
  } else if (due) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      last_attempt_ = now;
    }
    auto r = store_->keepalive(lease);
    std::lock_guard<std::mutex> guard{mtx_};
    if (lease_ == lease) {
      if (r) {
        renewed_ = now;
        valid_until_ns_ = to_ns(now + valid_);
        if (opts_.shared)
          opts_.shared->set(incarnation_, to_ns(now + valid_));
        if (!problem_.empty() && !relist_) {
          EDDA_INFO("cluster", "etcd answers again");
          problem_.clear();
        }
        notify(); // the renewal time is part of the view
      } else if (code_of(r.error()) == errc::not_found) {
        fence("etcd says lease " + std::to_string(lease) + " expired");
      } else if (problem_ != render(r.error())) {
        problem_ = render(r.error());
        EDDA_WARN("cluster", "lease renewal failed: " << problem_);
      }
    }
  }
  if (relist)
    start_relist();
}

void membership::start_relist() {
  if (relisting_.exchange(true))
    return; // one at a time
  {
    std::lock_guard<std::mutex> guard{run_mtx_};
    if (stopping_) {
      relisting_ = false;
      return;
    }
  }
  if (relister_.joinable())
    relister_.join();
  relister_ = std::thread([this] {
    auto err = list_and_watch();
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (err) {
        relist_ = true;
        problem_ = "cannot list members: " + render(err);
      } else {
        problem_.clear();
        notify();
      }
    }
    relisting_ = false;
  });
}

void membership::run() {
  std::unique_lock<std::mutex> guard{run_mtx_};
  while (!stopping_) {
    guard.unlock();
    tick();
    guard.lock();
    // Short waits: the fence must follow the clock closely, also right
    // after the process was stopped and continued.
    run_cv_.wait_for(guard, std::min(period_, ch::milliseconds(100)),
                     [this] { return stopping_; });
  }
}

void membership::leave() {
  {
    std::lock_guard<std::mutex> guard{run_mtx_};
    if (left_)
      return;
    left_ = true;
    stopping_ = true;
  }
  run_cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
  if (relister_.joinable())
    relister_.join();
  std::unique_ptr<coord::watch> w, nw;
  coord::lease_id lease;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    w = std::move(watch_);
    nw = std::move(nodes_watch_);
    lease = lease_;
    valid_until_ns_ = 0;
    if (opts_.shared)
      opts_.shared->fence(); // leaving: no duty acts any more
  }
  if (w)
    w->cancel();
  if (nw)
    nw->cancel();
  if (lease != 0) {
    if (auto err = store_->revoke(lease); err && code_of(err) != errc::not_found)
      EDDA_WARN("cluster", "could not revoke lease " << lease << " on leaving ("
                                                     << render(err)
                                                     << "); it expires by "
                                                        "itself");
    else
      EDDA_INFO("cluster", "left cluster " << opts_.cluster_name);
  }
}

membership::~membership() {
  leave();
}

} // namespace edda::cluster
