#include "node/embedded_node.hpp"
#include "admin/admin_server.hpp"
#include "door/server.hpp"
#include "node/hosting.hpp"
#include "node/services.hpp"
#include "node/supervisor.hpp"
#include "node/tls.hpp"

#include "sagas/runtime.hpp"

#include "base/errc.hpp"
#include "base/failpoint.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "broker/actors.hpp"
#include "client/connection_impl.hpp"
#include "cluster/cluster_actor.hpp"
#include "cluster/identity.hpp"
#include "cluster/membership.hpp"
#include "coord/etcd.hpp"
#include "replication/controller.hpp"
#include "replication/follower.hpp"
#include "replication/followers.hpp"
#include "replication/group_record.hpp"
#include "replication/replica_host.hpp"
#include "replication/shipper.hpp"
#include "storage/environment.hpp"
#include "storage/writer_actor.hpp"
#include "txn/coordinator.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/publish.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/function_view.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/scoped_actor.hpp>

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <mutex>
#include <thread>

namespace edda::node {

struct embedded_node::impl {
  config::node_settings settings;
  std::shared_ptr<storage::environment> env;
  std::shared_ptr<alert_sink> alerts = std::make_shared<alert_sink>();
  caf::actor_system_config cfg;
  // Declared before sys: it must outlive the actor system (its writer watch
  // calls into it); stop() resets it after sys.
  std::unique_ptr<supervisor> sup;
  std::unique_ptr<caf::actor_system> sys;
  // Every handle but the writer is a keeper (supervisor.hpp): stable across
  // restarts of the service behind it.
  caf::actor writer, scheduler, topics, groups, dedup, txn, frontend;
  caf::actor cluster; ///< the node's view of its cluster (cluster_actor.hpp)
  /// Replication (cluster.replication_factor > 1): this node's shipper and
  /// follower choice, and the host of the replicas it keeps for others.
  caf::actor shipper, followers, replicas, recorder;
  caf::actor controller; ///< failover elections (replication/controller.hpp)
  /// Groups of other nodes served here after a failover.
  std::unique_ptr<hosting> hosted;
  /// Saga types given in code (start_options::sagas before the declared
  /// ones were added): a hosted group runs them too.
  std::vector<sagas::saga_definition> coded_sagas;
  std::string hosted_by; ///< start_options::hosted_by
  std::string standby_for; ///< start_options::standby_for
  /// The start was refused: this node's group is served elsewhere since a
  /// failover (start() then follows it as a standby).
  bool served_elsewhere = false;
  /// Why this node's replica group was taken from it (a failover while it
  /// was paused or cut off), set by the recorder: failure() tells it.
  struct deposed_state {
    std::mutex mtx;
    caf::error why;
  };
  std::shared_ptr<deposed_state> deposed = std::make_shared<deposed_state>();
  std::unique_ptr<sagas::saga_runtime> sagas;
  std::string node_id;
  std::string cluster_id; ///< etcd's id of the cluster, in a cluster
  coord::client_ptr store; ///< etcd, in a cluster
  std::unique_ptr<cluster::membership> membership;
  std::shared_ptr<cluster::lease_state> lease; ///< cluster: for the duties
  uint16_t port = 0;
  /// The client door (gRPC, api.listen), for a node that listens.
  std::unique_ptr<door::server> door;
  std::unique_ptr<admin::server> admin; ///< the admin port (HTTP)
  std::string endpoint; ///< where peers and clients reach it (advertised)
  std::once_flag stopped;
};

embedded_node::embedded_node(std::unique_ptr<impl> i) : impl_(std::move(i)) {
}

namespace {

/// Why the OS refuses to listen on host:port ("Address already in use"), or
/// empty if it would accept (CAF's error does not carry errno).
std::string listen_problem(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  auto service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res))
    return ::gai_strerror(rc);
  std::string why;
  for (auto* ai = res; ai != nullptr && why.empty(); ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 1) != 0)
      why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return why;
}

/// The error of a server (the door, the admin port) that did not start on
/// host:port, set by `setting`: the OS's reason if the port is taken,
/// else `err`.
caf::error cannot_listen(const caf::error& err, const std::string& host,
                         uint16_t port, const char* setting) {
  auto why = port != 0 ? listen_problem(host, port) : std::string{};
  if (why.empty())
    return err;
  return make_error(errc::unavailable, "cannot listen on " + host + ":"
                                         + std::to_string(port) + " ("
                                         + setting + "): " + why);
}

/// bad_config if a live process holds this node's member key (a lease
/// other than this data dir's last one): a second process with the same
/// node.name or a copy of this data dir (the join's own check).
caf::error refuse_a_live_twin(embedded_node::impl& im) {
  auto& s = im.settings;
  auto rec = cluster::load_cluster_record(*im.env, s.cluster_name);
  if (!rec)
    return rec.error();
  auto got = cluster::membership::previous_member_key(
    *im.store, s.cluster_name, im.node_id, rec->last_lease_id);
  return got ? caf::error{} : got.error();
}

/// Spawns the node's actors into im.sys. Every handle it makes is kept in
/// `im` (or in actors it spawned), never in a local that outlives it: a
/// strong reference left behind keeps a detached actor's thread, and so the
/// actor system's destruction, waiting for ever (a failed start used to hang
/// that way).
caf::error spawn_actors(embedded_node::impl& im, start_options& opts) {
  auto& settings = im.settings;
  auto& sys = *im.sys;
  // Replication: every commit is shipped to the followers, and a write is
  // answered once they have it (replication/shipper.hpp). The leader epoch
  // goes up with every start of this node (the etcd record of the group
  // and its controller come next: issue 13).
  bool replicate = !settings.cluster_etcd.empty()
                   && settings.replication_factor > 1
                   && opts.standby_for.empty();
  // Served elsewhere since a failover: said first (the live twin would be
  // that group), whatever this node's replication settings now. An etcd
  // error here is left to the claim's retries, which check the same.
  if (im.store && opts.hosted_by.empty() && opts.standby_for.empty())
    if (auto err = replication::refuse_if_served_elsewhere(
          *im.store, settings.cluster_name, im.node_id);
        err && code_of(err) == errc::fenced) {
      im.served_elsewhere = true;
      return err;
    }
  // A full copy left unfinished in this data dir (a hand-back interrupted,
  // or a standby's copy begun by a leader it no longer follows) is never
  // served: its data is partial.
  if (opts.standby_for.empty() && replication::copy_unfinished(*im.env))
    return make_error(errc::bad_config,
                      "data dir " + settings.data_dir
                        + " holds an unfinished copy of replica group "
                        + im.node_id
                        + " (a hand-back was interrupted): it must not serve "
                          "the group; its group is served by another node, "
                          "or ask an operator (edda cluster status)");
  storage::commit_stream stream;
  if (replicate) {
    auto at = replication::read_position(*im.env);
    replication::shipper_options so;
    so.group = im.node_id;
    so.env = im.env;
    // The log this storage's commits are counted in: made at the first
    // start with replication, kept in the position with every commit.
    so.log_id = at.log_id.empty() ? new_unique_id() : at.log_id;
    so.epoch = at.epoch + 1;
    if (im.store) {
      // The group's record in etcd: the epoch goes above both this data
      // dir's and the record's; in-sync set changes are written there.
      // Not while another process runs as this node (the join would refuse
      // it, but only after the claim had fenced the live one).
      if (auto err = refuse_a_live_twin(im))
        return err;
      caf::expected<replication::group_claim> claim{caf::error{}};
      replication::claim_options co;
      co.host = opts.hosted_by;
      co.failover = settings.failover == "auto";
      co.local_seq = at.seq;
      for (int attempt = 1;; ++attempt) {
        claim = replication::claim_group(*im.store, settings.cluster_name,
                                         im.node_id, so.log_id, at.epoch,
                                         now_ms(), co);
        auto code = claim ? errc::none : code_of(claim.error());
        if (claim || attempt == 5
            || (code != errc::unavailable && code != errc::timeout))
          break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
      }
      if (!claim) {
        // Elected elsewhere since the check above (or that check could
        // not read etcd): followed as a standby, like a refusal there.
        if (code_of(claim.error()) == errc::fenced)
          if (auto err = replication::refuse_if_served_elsewhere(
                *im.store, settings.cluster_name, im.node_id);
              err && code_of(err) == errc::fenced)
            im.served_elsewhere = true;
        return make_error(code_of(claim.error()),
                          "claiming replica group " + im.node_id
                            + " in etcd: " + render(claim.error()));
      }
      so.epoch = claim->epoch;
      so.election_epoch = claim->election_epoch;
      so.elected_seq = claim->elected_seq;
      so.elected_copy_epoch = claim->elected_copy_epoch;
      // Deposed (another leader or epoch in the record): the node stops,
      // as when its writer dies; nothing more is acknowledged meanwhile.
      im.recorder = replication::spawn_group_recorder(
        sys, im.store, settings.cluster_name, im.node_id, claim->epoch,
        claim->mod_revision,
        [alerts = im.alerts, on_fatal = opts.on_fatal,
         deposed = im.deposed](const caf::error& e) {
          {
            std::lock_guard<std::mutex> guard{deposed->mtx};
            deposed->why = e;
          }
          if (code_of(e) == errc::not_owner) // moved (move-group)
            alerts->raise(alert{"group_moved", "replica group", render(e),
                                "", now_ms()});
          else
            alerts->raise(alert{"node_fatal", "replica group",
                                "this node's replica group was taken over ("
                                  + render(e) + "); the node stops",
                                "", now_ms()});
          if (on_fatal)
            on_fatal(e);
        });
      so.recorder = im.recorder;
    }
    so.last_seq = at.seq;
    so.start_epoch = at.epoch;
    so.min_insync = settings.min_insync;
    so.followers = settings.replication_factor - 1;
    so.lag_max = std::chrono::milliseconds(settings.replica_lag_max_ms);
    im.shipper = replication::spawn_shipper(sys, so);
    stream.epoch = so.epoch;
    stream.log_id = so.log_id;
    stream.gated = true;
    stream.ship = [shipper = im.shipper](wire::pb::ReplBatch&& b) {
      caf::anon_send(shipper, std::move(b));
    };
    if (opts.hosted_by.empty()) {
      // A group served elsewhere keeps no copies of others.
      replication::replica_host_options ro;
      ro.node_id = im.node_id;
      ro.dir = settings.data_dir + "/replicas";
      ro.map_size = settings.map_size;
      ro.mode = settings.mode;
      im.replicas = replication::spawn_replica_host(sys, ro);
    }
    EDDA_INFO("replication", "replication factor "
                               << settings.replication_factor
                               << ", min in sync " << settings.min_insync
                               << "; leader epoch " << so.epoch << " from seq "
                               << so.last_seq);
  }
  if (!opts.standby_for.empty()) {
    // A standby keeps one copy: its node's group, in its node's data dir.
    replication::replica_host_options ro;
    ro.node_id = im.node_id;
    ro.dir = opts.standby_copy_dir + "/replicas";
    ro.own_group = opts.standby_for;
    ro.own_dir = opts.standby_copy_dir;
    ro.map_size = settings.map_size;
    ro.mode = settings.mode;
    im.replicas = replication::spawn_replica_host(sys, ro);
  }
  if (!replicate) {
    // Commits made without replication are not numbered: a log begun
    // before ends here, so that copies of it are never taken for current
    // if replication is turned on again (they are refused, loudly).
    auto at = replication::read_position(*im.env);
    if (!at.log_id.empty())
      if (auto err = replication::end_log(*im.env))
        return err;
  }
  // An alert at 80%, 90% and 95% of the map in use by live pages (each
  // once, again after it went under 75%): once full, writes fail with
  // storage_full.
  stream.usage = [alerts = im.alerts,
                  told = std::make_shared<uint64_t>(0)](uint64_t used,
                                                        uint64_t size) {
    if (size == 0)
      return;
    auto pct = used * 100 / size;
    if (pct < 75) {
      *told = 0;
      return;
    }
    uint64_t mark = pct >= 95 ? 95 : pct >= 90 ? 90 : pct >= 80 ? 80 : 0;
    if (mark <= *told)
      return;
    *told = mark;
    alerts->raise(alert{
      "storage_map_high", "storage",
      "the LMDB map is " + std::to_string(pct) + "% used ("
        + std::to_string(used >> 20) + " of " + std::to_string(size >> 20)
        + " MiB in live pages): once full, writes fail with storage_full; "
          "raise storage.map_size and restart, or free space (delete "
          "topics, purge dead letters)",
      "", now_ms()});
  };
  im.writer = storage::spawn_writer(
    sys, im.env, true,
    std::chrono::milliseconds(settings.offset_flush_delay_ms),
    std::move(stream));
  if (im.shipper)
    caf::anon_send(im.shipper, wire::serving_atom::value, im.writer);
  im.sup = std::make_unique<supervisor>(sys);
  auto& sup = *im.sup;
  sup.watch_writer(im.writer, [alerts = im.alerts, on_fatal = opts.on_fatal](
                                const caf::error& why) {
    alerts->raise(alert{"node_fatal", "storage writer",
                        "the storage writer died (" + render(why)
                          + "); the node stopped",
                        "", now_ms()});
    if (on_fatal)
      on_fatal(why);
  });
  auto ctx = std::make_shared<broker::context>();
  ctx->env = im.env;
  ctx->writer = im.writer;
  ctx->settings = settings;
  ctx->node_id = im.node_id;
  ctx->store = im.store;
  if (im.store) {
    im.lease = std::make_shared<cluster::lease_state>();
    ctx->lease = im.lease;
  }
  ctx->alerts = im.alerts;
  ctx->clock = opts.clock ? opts.clock : [] { return now_ms(); };
  cluster::cluster_actor_options co;
  co.clustered = !settings.cluster_etcd.empty();
  co.cluster_name = settings.cluster_name;
  co.cluster_id = im.cluster_id;
  co.node_id = im.node_id;
  co.endpoint = settings.advertise;
  for (auto& e : settings.cluster_etcd)
    co.etcd += (co.etcd.empty() ? "" : ",") + e;
  co.lease_ttl = std::chrono::milliseconds(settings.cluster_lease_ttl_ms);
  // Reconnect only after the peer has dropped its side of the old link.
  co.reconnect_after = std::chrono::milliseconds(
    std::max<uint64_t>(500, 2 * settings.connection_timeout_ms + 500));
  co.replicas = im.replicas;
  co.shipper = im.shipper;
  co.node_tls = !settings.tls_certificate.empty();
  // The node of the smaller id makes each pair's link, plain or TLS: two
  // nodes dialing each other at once race (CAF keeps one connection, and
  // under TLS settles on none), and a link cut between two nodes must be
  // the only connection between them.
  co.one_way_links = true;
  im.cluster = cluster::spawn_cluster_actor(sys, std::move(co));
  ctx->cluster = im.cluster;
  if (im.shipper)
    im.followers = replication::spawn_followers(
      sys, im.node_id, opts.hosted_by, settings.replication_factor,
      im.shipper, im.cluster, im.recorder);
  if (im.shipper && im.store) {
    replication::controller_options cto;
    cto.store = im.store;
    cto.cluster_name = settings.cluster_name;
    cto.node_id = im.node_id;
    cto.cluster = im.cluster;
    cto.grace = std::chrono::milliseconds(settings.cluster_lease_ttl_ms / 4
                                          + 500);
    cto.alerts = im.alerts;
    cto.host_wait = std::max(std::chrono::milliseconds(30000),
                             3 * std::chrono::milliseconds(
                                   settings.cluster_lease_ttl_ms));
    cto.restart_wait = cto.host_wait;
    im.controller = replication::spawn_controller(sys, std::move(cto));
    caf::anon_send(im.cluster, wire::serving_atom::value, im.controller);
  }
  auto wired = std::make_shared<services::wiring>();
  im.scheduler = sup.keep(services::scheduler(ctx, wired));
  ctx->scheduler = im.scheduler;
  im.topics = sup.keep(services::topics(ctx, wired));
  im.groups = sup.keep(services::groups(ctx, im.topics));
  wired->topics = im.topics;
  wired->groups = im.groups;
  im.dedup = sup.keep(services::dedup(ctx));
  im.txn = sup.keep(services::txn(ctx, im.topics));
  wired->txn = im.txn;
  caf::anon_send(im.topics, wire::txn_atom::value, im.txn);
  std::vector<caf::actor> shards;
  caf::actor directory;
  if (!opts.sagas.empty()) {
    sagas::runtime_options ro;
    ro.shards = settings.saga_shards;
    ro.topics = im.topics;
    ro.txn = im.txn;
    im.sagas = std::make_unique<sagas::saga_runtime>(sys, ctx, ro);
    for (auto& def : opts.sagas)
      if (auto err = im.sagas->add(std::move(def)))
        return err;
    im.sagas->start();
    shards = im.sagas->shards();
    directory = im.sagas->directory();
  }
  im.frontend = sup.keep(services::gateway(ctx, im.topics, im.groups, im.dedup,
                                           im.txn, std::move(shards),
                                           std::move(directory), im.cluster));
  caf::anon_send(im.cluster, wire::link_atom::value, im.frontend);
  broker::wire_up(im.scheduler, im.topics, im.groups);
  return caf::none;
}

/// Sleeps `d` in slices, false as soon as `cancel` is set.
bool pause_unless_cancelled(std::chrono::milliseconds d,
                            const std::atomic<bool>* cancel) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
    if (cancel != nullptr && cancel->load())
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cancel == nullptr || !cancel->load();
}

/// Connects to etcd, waiting as long as it takes (saying so at every
/// attempt): a cluster node never runs alone. Errors: shutting_down.
caf::error connect_store(embedded_node::impl& im,
                         const std::atomic<bool>* cancel) {
  auto& s = im.settings;
  auto ttl = std::chrono::milliseconds(s.cluster_lease_ttl_ms);
  coord::etcd_options eo;
  eo.endpoints = s.cluster_etcd;
  // A renewal must fail well within the lease (membership.hpp).
  eo.call_timeout = std::clamp(ttl / 4, std::chrono::milliseconds(200),
                               std::chrono::milliseconds(2000));
  eo.dial_timeout = std::chrono::milliseconds(2000);
  std::string where;
  for (auto& e : s.cluster_etcd)
    where += (where.empty() ? "" : ",") + e;
  auto backoff = std::chrono::milliseconds(200);
  for (uint32_t attempt = 1;; ++attempt) {
    if (cancel != nullptr && cancel->load())
      return make_error(errc::shutting_down,
                        "stopped while waiting for etcd");
    auto c = coord::connect_etcd(eo);
    if (c) {
      im.store = *c;
      return caf::none;
    }
    EDDA_WARN("cluster", "waiting for etcd at "
                           << where << " (attempt " << attempt << "): "
                           << render(c.error()) << "; retrying in "
                           << backoff.count() << " ms");
    if (!pause_unless_cancelled(backoff, cancel))
      return make_error(errc::shutting_down,
                        "stopped while waiting for etcd");
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

/// Joins the cluster (etcd is connected). Retries while etcd is
/// unavailable. Errors: shutting_down (cancelled), bad_config (this node id
/// or data dir belongs elsewhere), storage_error.
caf::error join_cluster(embedded_node::impl& im, const std::string& endpoint,
                        const std::atomic<bool>* cancel) {
  auto& s = im.settings;
  auto ttl = std::chrono::milliseconds(s.cluster_lease_ttl_ms);
  auto backoff = std::chrono::milliseconds(200);
  auto give_up = [] {
    return make_error(errc::shutting_down,
                      "stopped while waiting for etcd to join the cluster");
  };
  auto rec = cluster::load_cluster_record(*im.env, s.cluster_name);
  if (!rec)
    return rec.error();
  cluster::membership_options mo;
  mo.cluster_name = s.cluster_name;
  mo.node_id = im.node_id;
  mo.endpoint = endpoint;
  mo.version = "0.1.0";
  mo.runs_sagas = im.sagas != nullptr;
  mo.hosted_by = im.hosted_by;
  mo.standby_for = im.standby_for;
  mo.node_tls = !im.settings.tls_certificate.empty();
  mo.shared = im.lease;
  mo.ttl = ttl;
  mo.previous_lease = rec->last_lease_id;
  mo.previous_incarnation = rec->incarnation;
  // The lease is durable before the member key is written under it: a node
  // restarted after kill -9 finds it and clears its previous life's key.
  mo.persist = [sys = im.sys.get(), writer = im.writer,
                name = s.cluster_name,
                cluster_id = rec->cluster_id](coord::lease_id lease,
                                       uint64_t inc) -> caf::error {
    wire::pb::WriteBatch b;
    b.set_local(true); // before the join: no follower can have it yet
    auto* op = b.add_ops();
    op->set_db(static_cast<uint32_t>(storage::db::meta));
    op->set_key(cluster::cluster_record_key());
    op->set_value(cluster::encode({name, lease, inc, cluster_id}));
    caf::error out;
    caf::scoped_actor self{*sys};
    self->request(writer, std::chrono::seconds(10), std::move(b))
      .receive([](const wire::pb::WriteResult&) {},
               [&](caf::error& err) { out = std::move(err); });
    return out;
  };
  mo.on_view = [cluster = im.cluster](const cluster::membership_view& v) {
    wire::pb::MembershipView pv;
    auto fill = [](wire::pb::MemberInfo* x, const cluster::member& m) {
      x->set_node_id(m.node_id);
      x->set_endpoint(m.endpoint);
      x->set_incarnation(m.incarnation);
      x->set_started_ms(m.started_ms);
      x->set_hosted_by(m.hosted_by);
      x->set_standby_for(m.standby_for);
      x->set_node_tls(m.node_tls);
    };
    for (auto& m : v.members) {
      fill(pv.add_members(), m);
      pv.add_leases(m.lease);
    }
    for (auto& m : v.standbys)
      fill(pv.add_standbys(), m);
    pv.set_fenced(v.fenced);
    pv.set_lease_id(v.lease);
    pv.set_revision(v.revision);
    pv.set_incarnation(v.incarnation);
    pv.set_problem(v.problem);
    for (auto& h : v.saga_homes)
      pv.add_saga_homes(h);
    for (auto r : v.saga_home_revisions)
      pv.add_saga_home_revisions(r);
    pv.set_saga_epoch(v.saga_epoch);
    for (auto& id : v.registered)
      pv.add_registered(id);
    auto ago = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - v.renewed);
    pv.set_renewed_ms(now_ms() - ago.count());
    caf::anon_send(cluster, std::move(pv));
  };
  backoff = std::chrono::milliseconds(200);
  for (uint32_t attempt = 1;; ++attempt) {
    auto m = cluster::membership::join(im.store, mo);
    if (m) {
      im.membership = std::move(*m);
      return caf::none;
    }
    auto code = code_of(m.error());
    if (code != errc::unavailable && code != errc::timeout)
      return m.error();
    EDDA_WARN("cluster", "cannot join yet (attempt "
                           << attempt << "): " << render(m.error())
                           << "; retrying in " << backoff.count() << " ms");
    if (!pause_unless_cancelled(backoff, cancel))
      return give_up();
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

} // namespace

caf::expected<std::unique_ptr<embedded_node>>
embedded_node::start(const config::node_settings& settings, start_options opts) {
  for (;;) {
    bool elsewhere = false;
    std::string id;
    auto n = start_once(settings, opts, elsewhere, id);
    if (n || !elsewhere)
      return n;
    // Served elsewhere since a failover: follow the group, take it back.
    EDDA_WARN("node", render(n.error()));
    auto standby = follow_own_group(settings, id, opts);
    if (!standby)
      return standby.error();
    EDDA_WARN("node", "taking replica group " << id << " back: starting it "
                                              << "from its copy in "
                                              << settings.data_dir);
    auto back = start_once(settings, opts, elsewhere, id);
    (*standby)->stop();
    if (back || !elsewhere)
      return back;
    // Elected elsewhere again meanwhile: follow it again.
  }
}

caf::expected<std::unique_ptr<embedded_node>>
embedded_node::follow_own_group(const config::node_settings& settings,
                                const std::string& node_id,
                                const start_options& opts) {
  auto standby = replication::standby_id(node_id);
  auto s = settings;
  s.name = standby;
  s.data_dir = settings.data_dir + "/standby";
  s.listen_port = 0;
  s.advertise.clear();
  s.saga_types.clear();
  start_options so;
  so.cancel = opts.cancel;
  so.standby_for = node_id;
  so.standby_copy_dir = settings.data_dir;
  so.advertise_host = opts.advertise_host;
  if (!settings.advertise.empty())
    so.advertise_host
      = settings.advertise.substr(0, settings.advertise.rfind(':'));
  auto ended = std::make_shared<std::atomic<bool>>(false);
  so.on_fatal = [ended](const caf::error&) { ended->store(true); };
  bool unused = false;
  std::string unused_id;
  auto n = start_once(s, std::move(so), unused, unused_id);
  if (!n)
    return make_error(code_of(n.error()),
                      "starting the standby " + standby + ": "
                        + render(n.error()));
  auto& i = *(*n)->impl_;
  EDDA_WARN("node", "following replica group "
                      << node_id << " as " << standby << " at "
                      << i.endpoint << " (its copy in " << settings.data_dir
                      << "): the group is handed back once the copy is in "
                         "sync");
  bool in_sync = false;
  for (;;) {
    if (!pause_unless_cancelled(std::chrono::milliseconds(500), opts.cancel)) {
      (*n)->stop();
      return make_error(errc::shutting_down,
                        "stopped while following replica group " + node_id
                          + " to take it back");
    }
    if (ended->load()) {
      auto why = (*n)->failure();
      (*n)->stop();
      return make_error(errc::unavailable, "the standby " + standby
                                             + " stopped: " + render(why));
    }
    auto rec = replication::read_group(*i.store, settings.cluster_name,
                                       node_id);
    if (!rec || !*rec)
      continue; // etcd: the next round
    auto& r = **rec;
    // A data dir of another log of this node is never overwritten (it may
    // hold the only copy of acknowledged writes): said here, not waited on.
    std::string copy_log;
    {
      caf::scoped_actor self{*i.sys};
      wire::pb::ReplPositionQuery q;
      q.set_group(node_id);
      self->request(i.replicas, std::chrono::seconds(10), std::move(q))
        .receive([&](const wire::pb::ReplAck& a) { copy_log = a.log_id(); },
                 [](caf::error&) {});
    }
    if (!copy_log.empty() && copy_log != r.log_id()) {
      (*n)->stop();
      return make_error(
        errc::bad_config,
        "data dir " + settings.data_dir + " holds log '" + copy_log
          + "' of node " + node_id + ", but its replica group's log is '"
          + r.log_id()
          + "' (served by " + r.host()
          + "): it is never overwritten (it may hold the only copy of "
            "writes acknowledged before it was replaced); move it away and "
            "start this node on an empty data dir to take its group back");
    }
    bool listed = std::find(r.isr().begin(), r.isr().end(), standby)
                  != r.isr().end();
    if (listed && !in_sync)
      EDDA_INFO("node", "the copy of replica group "
                          << node_id << " here is in sync (epoch "
                          << r.leader_epoch()
                          << "); the controller hands the group back");
    in_sync = listed;
    // Elected (host = the standby), or at home with no move under way to
    // another member (a move withdrawn): the node starts its group.
    bool home = (r.host().empty() || r.host() == node_id)
                && (r.move_to().empty() || r.move_to() == standby);
    if (r.host() != standby && !home)
      continue;
    // Elected (or the record leaves the group home): the copy is closed
    // here before this process opens it as the node's storage.
    bool released = false;
    caf::scoped_actor self{*i.sys};
    self
      ->request(i.replicas, std::chrono::seconds(10),
                wire::release_atom::value, node_id, true)
      .receive([&](bool) { released = true; }, [](caf::error&) {});
    if (released)
      return n;
  }
}

caf::expected<std::unique_ptr<embedded_node>>
embedded_node::start_once(const config::node_settings& settings,
                          start_options opts, bool& served_elsewhere,
                          std::string& node_id) {
  served_elsewhere = false;
  failpoint::init_from_env();
  log::level lvl;
  if (log::parse_level(settings.log_level, lvl))
    log::set_level(lvl);
  log::set_format(settings.log_format == "json" ? log::format_kind::json
                                                : log::format_kind::text);
  if (std::string why; !log::set_levels(settings.log_levels, why))
    return make_error(errc::bad_config, "log.levels: " + why);
  auto coded_sagas = opts.sagas; // before the declared ones join them
  // Declared saga types (saga.types), checked before anything is opened.
  sagas::step_options step_defaults;
  step_defaults.timeout = std::chrono::milliseconds(settings.saga_step_timeout_ms);
  step_defaults.participant_wait
    = std::chrono::milliseconds(settings.saga_participant_wait_ms);
  step_defaults.retry.max_attempts = settings.saga_step_attempts;
  step_defaults.retry.initial_backoff
    = std::chrono::milliseconds(std::min<uint64_t>(settings.saga_step_backoff_ms, 10000));
  for (auto& spec : settings.saga_types) {
    auto d = sagas::declared_saga(spec, step_defaults);
    if (!d)
      return make_error(errc::bad_config,
                        "saga.types: " + render(d.error()));
    opts.sagas.push_back(std::move(*d));
  }
  auto im = std::make_unique<impl>();
  im->settings = settings;
  im->coded_sagas = std::move(coded_sagas);
  im->hosted_by = opts.hosted_by;
  im->standby_for = opts.standby_for;
  storage::options so;
  so.dir = settings.data_dir;
  so.map_size = settings.map_size;
  so.mode = settings.mode;
  auto env = storage::environment::open(so);
  if (!env)
    return env.error();
  im->env = *env;
  auto id = cluster::load_node_id(**env, settings.name, now_ms());
  if (!id)
    return id.error();
  im->node_id = *id;
  log::set_node(im->node_id);
  wire::register_types(im->cfg);
  im->cfg.load<caf::io::middleman>();
  if (auto err = load_tls(im->cfg, settings))
    return err;
  client::apply_runtime_settings(
    im->cfg, settings.scheduler_policy, settings.max_threads,
    std::chrono::milliseconds(settings.heartbeat_interval_ms),
    std::chrono::milliseconds(settings.connection_timeout_ms));
  im->sys = std::make_unique<caf::actor_system>(im->cfg);
  if (!settings.cluster_etcd.empty()) {
    if (!opts.listen)
      return make_error(errc::bad_config,
                        "a cluster node must listen (peers connect to it)");
    if (auto err = connect_store(*im, opts.cancel))
      return err;
    auto cluster_id = cluster::check_cluster_data_dir(*im->env, *im->store,
                                                      settings.cluster_name);
    if (!cluster_id)
      return cluster_id.error();
    im->cluster_id = std::move(*cluster_id);
  }
  node_id = im->node_id;
  auto err = spawn_actors(*im, opts);
  served_elsewhere = im->served_elsewhere;
  std::unique_ptr<embedded_node> node{new embedded_node(std::move(im))};
  if (err) {
    node->stop();
    return err;
  }
  if (opts.listen) {
    auto& i = *node->impl_;
    EDDA_FAILPOINT("node.before_listen");
    auto port = i.sys->has_openssl_manager()
                  ? caf::openssl::publish(i.frontend, settings.listen_port,
                                          settings.listen_host.c_str(), true)
                  : caf::io::publish(i.frontend, settings.listen_port,
                                     settings.listen_host.c_str(), true);
    if (!port) {
      auto why = listen_problem(settings.listen_host, settings.listen_port);
      if (why.empty())
        why = i.sys->render(port.error());
      node->stop();
      return make_error(errc::unavailable,
                        "cannot listen on " + settings.listen_host + ":"
                          + std::to_string(settings.listen_port) + ": " + why);
    }
    i.port = *port;
  }
  {
    auto& i = *node->impl_;
    i.endpoint = !settings.advertise.empty() ? settings.advertise
                 : !opts.advertise_host.empty()
                   ? opts.advertise_host + ":" + std::to_string(i.port)
                   : settings.listen_host + ":" + std::to_string(i.port);
    caf::anon_send(i.cluster, wire::link_atom::value, i.endpoint);
    if (i.store) {
      if (auto err = join_cluster(i, i.endpoint, opts.cancel)) {
        node->stop();
        return err;
      }
      // Serving other nodes' groups when the controller elects this
      // node's copy of them (a node, not a group served elsewhere).
      if (i.replicas && i.standby_for.empty()) {
        hosting_options ho;
        ho.settings = settings;
        ho.node_id = i.node_id;
        ho.store = i.store;
        ho.replicas = i.replicas;
        ho.sagas = i.coded_sagas;
        ho.advertise_host = opts.advertise_host;
        if (!settings.advertise.empty())
          ho.advertise_host
            = settings.advertise.substr(0, settings.advertise.rfind(':'));
        i.hosted = std::make_unique<hosting>(*i.sys, std::move(ho));
      }
    }
  }
  {
    auto& i = *node->impl_;
    std::string api_host;
    uint16_t api_port = 0;
    if (opts.listen && i.hosted_by.empty() && i.standby_for.empty()
        && door::api_address(settings, api_host, api_port)) {
      auto d = door::server::start(settings, api_host, api_port,
                                   node->connect());
      if (!d) {
        // Asked before the stop, which frees this node's own ports.
        auto err = cannot_listen(d.error(), api_host, api_port, "api.listen");
        node->stop();
        return err;
      }
      i.door = std::move(*d);
    }
    // The admin port last: /ready answers once everything above serves.
    std::string admin_host;
    uint16_t admin_port = 0;
    if (opts.listen && i.hosted_by.empty() && i.standby_for.empty()
        && admin::admin_address(settings, admin_host, admin_port)) {
      auto a = admin::server::start(admin_host, admin_port, node->connect());
      if (!a) {
        auto err = cannot_listen(a.error(), admin_host, admin_port,
                                 "node.admin_listen");
        node->stop();
        return err;
      }
      i.admin = std::move(*a);
    }
  }
  EDDA_INFO("node", "started: node " << node->impl_->node_id
                                     << ", data dir " << settings.data_dir
                                     << ", durability "
                                         << config::to_string(settings.mode)
                                         << (opts.listen ? ", listening on " : "")
                                         << (opts.listen ? settings.listen_host
                                                             + ":"
                                                             + std::to_string(
                                                               node->port())
                                                         : std::string{}));
  return node;
}

embedded_node::~embedded_node() {
  stop();
}

client::connection embedded_node::connect() const {
  return client::make_local_connection(*impl_->sys, impl_->frontend);
}

uint16_t embedded_node::port() const {
  return impl_->port;
}

uint16_t embedded_node::api_port() const {
  return impl_->door ? impl_->door->port() : 0;
}

uint16_t embedded_node::admin_port() const {
  return impl_->admin ? impl_->admin->port() : 0;
}

const std::string& embedded_node::endpoint() const {
  return impl_->endpoint;
}

const config::node_settings& embedded_node::settings() const {
  return impl_->settings;
}

alert_sink& embedded_node::alerts() {
  return *impl_->alerts;
}

caf::actor embedded_node::incarnation(const std::string& service) const {
  auto& i = *impl_;
  if (service == "writer")
    return i.writer; // not supervised: its death stops the node
  return i.sup ? i.sup->incarnation(service) : caf::actor{};
}

std::vector<std::string> embedded_node::hosted_groups() const {
  auto& i = *impl_;
  return i.hosted ? i.hosted->served() : std::vector<std::string>{};
}

caf::error embedded_node::failure() const {
  auto& i = *impl_;
  {
    std::lock_guard<std::mutex> guard{i.deposed->mtx};
    if (i.deposed->why)
      return i.deposed->why;
  }
  return i.sup ? i.sup->failure() : caf::error{};
}

void embedded_node::stop() {
  std::call_once(impl_->stopped, [this] {
    auto& i = *impl_;
    if (!i.sys)
      return;
    // The admin port first (a probe says "not ready" from then on), then
    // the client door: its calls end while the node still serves
    // (unsettled deliveries go back to their groups).
    if (i.admin)
      i.admin->stop();
    i.admin.reset();
    if (i.door)
      i.door->stop();
    i.door.reset();
    // Groups served here for others first: each leaves the cluster, so the
    // controller elects again while this node still answers.
    if (i.hosted)
      i.hosted->stop();
    i.hosted.reset();
    // Replication: the followers get the commits made so far (at most 2 s)
    // while the links are still up, so that the next start streams on
    // instead of copying everything again.
    if (i.shipper) {
      caf::scoped_actor self{*i.sys};
      self->request(i.shipper, std::chrono::seconds(2), wire::stop_atom::value)
        .receive([](bool) {}, [](caf::error&) {});
    }
    // A clean stop of a replicated node: its group's record says so, and
    // the controller gives it restart time (an upgrade, a config change)
    // before electing a copy. Not for a node deposed by a failover.
    if (i.recorder && !failure()) {
      caf::scoped_actor self{*i.sys};
      self->request(i.recorder, std::chrono::seconds(3), wire::stop_atom::value)
        .receive([](bool) {}, [](caf::error&) {});
    }
    // Leave first: the lease is revoked, so the others see this node gone
    // at once, not a TTL later (its movable duties move at once).
    if (i.membership)
      i.membership->leave();
    i.membership.reset();
    i.store.reset();
    if (i.port != 0 && i.sys->has_openssl_manager()) {
      // (Debian's caf/openssl/unpublish.hpp does not compile: the same
      // request to the openssl manager's actor.)
      auto f = caf::make_function_view(i.sys->openssl_manager().actor_handle());
      (void) f(caf::unpublish_atom::value, i.frontend.address(), i.port);
    } else if (i.port != 0)
      i.sys->middleman().unpublish(i.frontend, i.port);
    // Every service stops through its keeper (the gateway first); stop()
    // waits until each keeper has quit, which it does once its service
    // has ended.
    if (i.sup)
      i.sup->stop();
    if (i.cluster)
      caf::anon_send_exit(i.cluster, caf::exit_reason::user_shutdown);
    if (i.sagas)
      i.sagas->stop();
    // The writer goes last: the actors above may still be finishing writes.
    caf::anon_send_exit(i.writer, caf::exit_reason::user_shutdown);
    for (auto& a :
         {i.followers, i.shipper, i.replicas, i.recorder, i.controller})
      if (a)
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    i.frontend = i.txn = i.dedup = i.groups = i.topics = i.scheduler
      = i.writer = i.cluster = i.followers = i.shipper = i.replicas
      = i.recorder = i.controller = nullptr;
    i.sagas.reset();
    i.sys.reset();
    i.sup.reset();
    i.env.reset();
    EDDA_INFO("node", "stopped");
  });
}

} // namespace edda::node
