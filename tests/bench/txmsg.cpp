#include "txmsg.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "cluster/placement.hpp"
#include "door.hpp"
#include "harness.hpp"
#include "node_child.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

namespace edda::bench {

namespace {

struct txmsg_options {
  options load;
  std::string node;        ///< host:port of a running node; empty = start one
  std::string durability = "fsync";
  uint32_t partitions = 4;
  std::string modes = "both"; ///< plain, transactional, both
  std::string csv;
  std::string data_dir;    ///< for the node we start; default a temp dir
  std::string floor_dir;   ///< measure the disk floor here too
  std::vector<std::string> node_settings; ///< --node-set KEY=VALUE
  uint32_t cluster = 0; ///< --cluster N: also N nodes on one etcd
  uint32_t replication = 1; ///< --replication RF: of the cluster's nodes
  uint32_t min_insync = 1;  ///< --min-insync N
  bool failover = false;    ///< --failover: cluster.failover = auto
  bool door = false;        ///< --door: the plain phases over gRPC too
};

/// --no-direct-routing: clients send everything through their node (set
/// before the phases fork).
bool direct_routing = true;

const char* txmsg_help = R"(usage: edda bench txmsg [options]

Runs the txmsg workload (BENCHMARKS.md): one producer process and one
consumer process talk to an edda node process over 127.0.0.1. Phases, each
on a fresh topic, for plain and then transactional messages:
  throughput  --count messages unpaced, at most --window unacknowledged:
              producer msg/s and end-to-end msg/s (to the consumer's last
              durable ack)
  latency     --latency-count messages at --latency-rate msg/s: p50/p99
              send to receive
  sync        --sync-count messages, one in flight: msg/s, p50/p99 send to
              durable ack
Every phase checks that each message arrived exactly once. At the end: the
node's peak RSS and a table.

options:
  --count N            throughput messages (default 50000)
  --window W           max sent but unacknowledged (default 256)
  --size B             message body bytes, at least 16 (default 256)
  --partitions P       partitions per topic (default 4)
  --latency-count N    (default 2000)     --latency-rate R  (default 1000)
  --sync-count N       (default 5000)
  --mode M             plain, transactional or both (default both)
  --durability D       fsync, nometasync or nosync for the node started here
                       (default fsync)
  --node HOST:PORT     use a running node instead (no RSS figure then)
  --data-dir DIR       data dir of the node started here (default: a new
                       temporary dir, removed afterwards)
  --node-set KEY=VALUE a setting for the node started here (repeatable),
                       e.g. --node-set scheduler.max_threads=1
  --disk-floor         also measure the LMDB commit floor next to the data dir
  --csv FILE           append one row per phase (tests/bench/peers joins them)
  --cluster N          then the same phases against N nodes on one etcd
                       started here (clients talk to the first node and
                       send to each partition's home directly), and
                       the failover figures: kill -9 of a node under a
                       keyless load, time to the first send acknowledged
                       after it, longest gap between acknowledgements, time
                       until the group's coordinator runs on a survivor
  --replication RF     the cluster's nodes keep RF copies of each node's
                       storage (cluster.replication_factor; default 1):
                       every acknowledgement waits for the in-sync copies
  --min-insync N       cluster.min_insync of the cluster's nodes (default 1)
  --failover           cluster.failover = auto on the cluster's nodes (needs
                       --replication 2 or more; else off, not the
                       default auto, for the figures): the killed node's
                       partitions are served from a copy; the failover
                       figures then say when a keyed send to one of them is
                       acknowledged again
  --no-direct-routing  clients send everything through the node they talk
                       to, which passes it on (as before direct routing)
  --door               the phases again through the node's client door
                       (gRPC, edda.api.v1), in the same run: rows "edda-door"
)";

caf::expected<client::connection> connect(const std::string& endpoint) {
  std::string host;
  uint16_t port = 0;
  if (!client::parse_endpoint(endpoint, host, port, 7420))
    return make_error(errc::invalid_argument,
                      "'" + endpoint + "' is not HOST:PORT");
  client::connect_options co;
  co.direct_routing = direct_routing;
  co.door = false; // the node port; run_door_phases() has the door's
  return client::connection::open(host, port, co);
}

std::string error_text(const caf::error& err) {
  return render(err);
}

/// The consumer side of one phase: creates the topic, subscribes, signals
/// ready, then counts every message until all n arrived and their acks are
/// durable.
report consume(const std::string& endpoint, uint32_t partitions,
               const phase_spec& spec, const std::function<void()>& ready) {
  report r;
  auto conn = connect(endpoint);
  if (!conn) {
    r["error"] = error_text(conn.error());
    return r;
  }
  if (auto t = client::admin::create_topic(*conn, spec.topic, partitions); !t) {
    r["error"] = "create topic " + spec.topic + ": " + error_text(t.error());
    return r;
  }
  std::mutex mtx;
  receipts seen(spec.n);
  samples lat;
  lat.reserve(spec.n);
  client::consumer_options co;
  co.group = "bench";
  co.topic = spec.topic;
  auto c = client::consumer::start(
    *conn, co, [&](const client::received& m) {
      auto now = mono_ns();
      uint64_t seq = 0;
      int64_t sent = 0;
      std::lock_guard<std::mutex> guard{mtx};
      if (read_body(m.msg.body, seq, sent)) {
        seen.add(seq);
        lat.add(now - sent);
      } else {
        seen.add(~uint64_t{0});
      }
      return client::consume_result::success;
    });
  if (!c) {
    r["error"] = "subscribe: " + error_text(c.error());
    return r;
  }
  ready();
  int64_t last_progress = mono_ns();
  uint64_t last_count = 0;
  int64_t last_ack_ns = 0;
  for (;;) {
    auto counters = (*c)->counters();
    auto now = mono_ns();
    if (counters.acked_durable >= spec.n) {
      last_ack_ns = now;
      break;
    }
    if (counters.acked_durable + counters.delivered != last_count) {
      last_count = counters.acked_durable + counters.delivered;
      last_progress = now;
    }
    if (now - last_progress > 30'000'000'000) {
      r["error"] = "no progress for 30 s";
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  // Anything else (duplicates) would arrive right after the last message.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  (*c)->stop();
  std::lock_guard<std::mutex> guard{mtx};
  r["received"] = std::to_string(seen.received());
  r["distinct"] = std::to_string(seen.distinct());
  r["duplicates"] = std::to_string(seen.duplicates());
  r["foreign"] = std::to_string(seen.foreign());
  r["p50_ms"] = std::to_string(lat.percentile_ms(0.5));
  r["p99_ms"] = std::to_string(lat.percentile_ms(0.99));
  r["last_ack_ns"] = std::to_string(last_ack_ns);
  return r;
}

/// Keeps at most `window` sends in flight and records their outcomes.
struct flight {
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t inflight = 0, acked = 0, failed = 0;
  int64_t last_ack_ns = 0;
  std::string first_error;
  samples ack_lat;

  void admit(uint64_t window) {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait(guard, [&] { return inflight < window; });
    ++inflight;
  }

  void settle(int64_t sent_ns, const caf::error* err) {
    auto now = mono_ns();
    std::lock_guard<std::mutex> guard{mtx};
    --inflight;
    if (err != nullptr) {
      ++failed;
      if (first_error.empty())
        first_error = error_text(*err);
    } else {
      ++acked;
      ack_lat.add(now - sent_ns);
      last_ack_ns = std::max(last_ack_ns, now);
    }
    cv.notify_all();
  }

  void wait_all() {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait(guard, [&] { return inflight == 0; });
  }
};

report produce(const std::string& endpoint, const phase_spec& spec,
               const std::function<void()>& ready) {
  report r;
  auto conn = connect(endpoint);
  if (!conn) {
    r["error"] = error_text(conn.error());
    return r;
  }
  flight f;
  f.ack_lat.reserve(spec.n);
  int64_t first = 0;
  auto run = [&](auto&& send_one) {
    first = mono_ns();
    pacer pace(spec.rate, first);
    for (uint64_t i = 0; i < spec.n; ++i) {
      pace.wait(i);
      f.admit(spec.window);
      send_one(i);
    }
    f.wait_all();
  };
  if (!spec.transactional) {
    client::producer p(*conn);
    run([&](uint64_t i) {
      client::message m;
      m.topic = spec.topic;
      auto t = mono_ns();
      m.body = make_body(i, t, spec.size);
      p.send_async(std::move(m), [&f, t](caf::expected<client::send_result> res) {
        f.settle(t, res ? nullptr : &res.error());
      });
    });
  } else {
    client::txn_producer_options to;
    to.group = "bench-txn";
    // The local transaction always commits, so a check-back can only be
    // about an end that did not arrive: commit is the true answer.
    auto tp = client::transaction_producer::start(
      *conn, to, [](const client::txn_check&) { return client::txn_outcome::commit; });
    if (!tp) {
      r["error"] = "start transaction producer: " + error_text(tp.error());
      return r;
    }
    auto& p = **tp;
    run([&](uint64_t i) {
      client::message m;
      m.topic = spec.topic;
      auto t = mono_ns();
      m.body = make_body(i, t, spec.size);
      p.send_in_transaction_async(
        std::move(m),
        [](const client::message&, const std::string&) {
          return client::txn_outcome::commit; // a local transaction doing nothing
        },
        [&f, t](caf::expected<client::txn_result> res) {
          if (!res) {
            f.settle(t, &res.error());
          } else if (!res->ended) {
            f.settle(t, &res->end_error);
          } else {
            f.settle(t, nullptr);
          }
        });
    });
  }
  r["first_send_ns"] = std::to_string(first);
  r["last_ack_ns"] = std::to_string(f.last_ack_ns);
  r["acked"] = std::to_string(f.acked);
  r["failed"] = std::to_string(f.failed);
  if (!f.first_error.empty())
    r["first_error"] = f.first_error;
  r["ack_p50_ms"] = std::to_string(f.ack_lat.percentile_ms(0.5));
  r["ack_p99_ms"] = std::to_string(f.ack_lat.percentile_ms(0.99));
  return r;
}

bool parse(const std::vector<std::string>& argv, txmsg_options& o,
           std::string& err) {
  auto need = [&](size_t& i) -> const std::string* {
    if (i + 1 >= argv.size()) {
      err = argv[i] + " needs a value";
      return nullptr;
    }
    return &argv[++i];
  };
  for (size_t i = 0; i < argv.size(); ++i) {
    auto a = argv[i];
    if (a == "--no-direct-routing") {
      direct_routing = false;
      continue;
    }
    if (a == "--disk-floor") {
      o.floor_dir = "auto";
      continue;
    }
    if (auto took = parse_load_option(argv, i, o.load, err); took != 0) {
      if (took < 0)
        return false;
      continue;
    }
    const std::string* v = nullptr;
    if (a == "--cluster") {
      uint64_t x = 0;
      if (!(v = need(i)) || !parse_positive(a, *v, x, err))
        return false;
      if (x < 2 || x > 9) {
        err = "--cluster takes 2 to 9 nodes, got " + *v;
        return false;
      }
      o.cluster = static_cast<uint32_t>(x);
      continue;
    }
    if (a == "--failover") {
      o.failover = true;
      continue;
    }
    if (a == "--door") {
      o.door = true;
      continue;
    }
    if (a == "--replication" || a == "--min-insync") {
      uint64_t x = 0;
      if (!(v = need(i)) || !parse_positive(a, *v, x, err))
        return false;
      if (x > 5) {
        err = a + " takes 1 to 5, got " + *v;
        return false;
      }
      (a == "--replication" ? o.replication : o.min_insync)
        = static_cast<uint32_t>(x);
      continue;
    }
    if (a == "--partitions") {
      uint64_t x = 0;
      if (!(v = need(i)) || !parse_positive(a, *v, x, err))
        return false;
      o.partitions = static_cast<uint32_t>(x);
      continue;
    }
    if (a == "--mode" || a == "--durability" || a == "--node" || a == "--csv"
        || a == "--data-dir" || a == "--node-set") {
      if (!(v = need(i)))
        return false;
      if (a == "--mode") {
        if (*v != "plain" && *v != "transactional" && *v != "both") {
          err = "--mode takes plain, transactional or both, got '" + *v + "'";
          return false;
        }
        o.modes = *v;
      } else if (a == "--durability") {
        if (*v != "fsync" && *v != "nometasync" && *v != "nosync") {
          err = "--durability takes fsync, nometasync or nosync, got '" + *v + "'";
          return false;
        }
        o.durability = *v;
      } else if (a == "--node") {
        o.node = *v;
      } else if (a == "--csv") {
        o.csv = *v;
      } else if (a == "--node-set") {
        o.node_settings.push_back(*v);
      } else {
        o.data_dir = *v;
      }
      continue;
    }
    err = "unknown option '" + a + "'";
    return false;
  }
  if (o.replication > 1 && o.cluster < o.replication) {
    err = "--replication " + std::to_string(o.replication)
          + " needs --cluster with at least as many nodes";
    return false;
  }
  if (o.failover && o.replication < 2) {
    err = "--failover needs --replication 2 or more (copies to elect from)";
    return false;
  }
  if (o.min_insync > o.replication) {
    err = "--min-insync " + std::to_string(o.min_insync)
          + " must be <= --replication (" + std::to_string(o.replication)
          + ")";
    return false;
  }
  return true;
}

/// Every phase of the run against `endpoint`, each result labelled
/// `system`; stops after a failed phase.
std::vector<phase_result> run_phases(const txmsg_options& o,
                                     const std::string& endpoint,
                                     const std::string& prefix,
                                     const std::string& system, pid_t node_pid,
                                     uint64_t& rss_after_plain) {
  std::vector<phase_result> results;
  for (bool txn : {false, true}) {
    if ((txn && o.modes == "plain") || (!txn && o.modes == "transactional"))
      continue;
    if (!results.empty() && !results.back().error.empty())
      break;
    for (auto& spec : standard_phases(o.load, prefix, txn)) {
      auto parts = o.partitions;
      auto r = run_phase(
        system, spec,
        [&](const phase_spec& s, const std::function<void()>& ready) {
          return consume(endpoint, parts, s, ready);
        },
        [&](const phase_spec& s, const std::function<void()>& ready) {
          return produce(endpoint, s, ready);
        });
      std::cout << line(r) << "\n" << std::flush;
      results.push_back(r);
      if (!r.error.empty()) {
        std::cerr << "edda bench txmsg: stopping after a failed phase\n";
        break;
      }
      if (!txn && spec.kind == phase_kind::throughput && node_pid > 0)
        rss_after_plain = peak_rss_kib(node_pid);
    }
  }
  return results;
}

/// `--door`: the phases again, through the node's client door
/// (gRPC) instead of the C++ client's node port, labelled "edda-door".
std::vector<phase_result> run_door_phases(const txmsg_options& o,
                                          const std::string& api_endpoint,
                                          const std::string& prefix) {
  std::vector<phase_result> results;
  for (bool txn : {false, true}) {
  if ((txn && o.modes == "plain") || (!txn && o.modes == "transactional"))
    continue;
  if (!results.empty() && !results.back().error.empty())
    break;
  for (auto& spec : standard_phases(o.load, prefix + "-door", txn)) {
    auto parts = o.partitions;
    auto r = run_phase(
      "edda-door", spec,
      [&](const phase_spec& s, const std::function<void()>& ready) {
        return consume_door(api_endpoint, parts, s, ready);
      },
      [&](const phase_spec& s, const std::function<void()>& ready) {
        return produce_door(api_endpoint, s, ready);
      });
    std::cout << line(r) << "\n" << std::flush;
    results.push_back(r);
    if (!r.error.empty()) {
      std::cerr << "edda bench txmsg: stopping after a failed phase\n";
      break;
    }
  }
  }
  return results;
}

[[noreturn]] void failover_child(const std::string& endpoint, pid_t victim_pid,
                                 const std::string& victim);

/// `--cluster N`: etcd and N nodes, the same phases through the first
/// node, then the failover figures.
std::vector<phase_result> run_cluster(const txmsg_options& o,
                                      const std::string& self_exe,
                                      const std::string& prefix) {
  std::vector<phase_result> out;
  auto etcd = start_etcd();
  if (etcd.endpoint.empty())
    return out;
  std::vector<node_process> nodes;
  auto name = "bench-" + std::to_string(::getpid());
  for (uint32_t i = 1; i <= o.cluster; ++i) {
    auto settings = cluster_node_settings(o.node_settings, etcd.endpoint, name,
                                          i, o.replication, o.min_insync,
                                          o.failover);
    nodes.push_back(start_node(self_exe, o.durability, "", settings));
    if (nodes.back().endpoint.empty()) {
      for (auto& n : nodes)
        stop_node(n);
      stop_etcd(etcd);
      return out;
    }
  }
  std::cout << "edda bench txmsg: " << o.cluster << " nodes on one etcd ("
            << etcd.endpoint << "), clients through n1 at "
            << nodes[0].endpoint << "; replication factor " << o.replication
            << ", min in sync " << o.min_insync << "\n"
            << std::flush;
  uint64_t rss = 0;
  auto label = "edda x" + std::to_string(o.cluster);
  if (o.replication > 1)
    label += " rf" + std::to_string(o.replication);
  out = run_phases(o, nodes[0].endpoint, prefix + "-c", label, -1, rss);
  // Failover: kill -9 of the last node under a keyless load through n1.
  int fds[2];
  if (pipe(fds) == 0) {
    std::fflush(nullptr);
    auto victim = nodes.back();
    auto pid = fork();
    if (pid == 0) {
      ::close(fds[0]);
      dup2(fds[1], 1);
      failover_child(nodes[0].endpoint, victim.pid,
                     "n" + std::to_string(o.cluster));
    }
    ::close(fds[1]);
    std::string report;
    char buf[512];
    ssize_t got;
    while ((got = ::read(fds[0], buf, sizeof(buf))) > 0)
      report.append(buf, static_cast<size_t>(got));
    ::close(fds[0]);
    waitpid(pid, nullptr, 0);
    waitpid(victim.pid, nullptr, WNOHANG);
    nodes.back().pid = -1; // killed
    std::map<std::string, std::string> kv;
    size_t pos = 0;
    while (pos < report.size()) {
      auto end = report.find('\n', pos);
      if (end == std::string::npos)
        end = report.size();
      auto line = report.substr(pos, end - pos);
      pos = end + 1;
      auto eq = line.find('=');
      if (eq != std::string::npos)
        kv[line.substr(0, eq)] = line.substr(eq + 1);
    }
    if (kv.count("forwarded") != 0)
      std::cout << "during the phases n1 passed on " << kv["forwarded"]
                << " produce batches and " << kv["txn_forwarded"]
                << " half messages and ends to other nodes (direct routing "
                << (direct_routing ? "on" : "off") << "); the nodes "
                << "stored " << kv["stored"] << " messages in "
                << kv["commits"] << " LMDB commits\n";
    if (kv.count("error") != 0)
      std::cout << "failover: " << kv["error"] << "\n";
    else
      std::cout << "failover (kill -9 of n" << o.cluster
                << ", keyless sends through n1, lease TTL 3 s): first send "
                << "acknowledged after the kill " << kv["first_send_ms"]
                << " ms, longest gap between acknowledgements "
                << kv["max_gap_ms"] << " ms; the group's coordinator (on n"
                << o.cluster << " before) on " << kv["owner"] << " "
                << kv["coordinator_ms"] << " ms after the kill; "
                << kv["sent"] << " sent, "
                << kv["failed"] << " failed, " << kv["consumed"]
                << " consumed (any missing were stored on n" << o.cluster
                << " before the kill: they wait there until it returns)\n";
    if (kv.count("keyed_ms") != 0) {
      if (kv["keyed_ms"] != "-1.0")
        std::cout << "a keyed send to a partition of n" << o.cluster
                  << " was acknowledged again " << kv["keyed_ms"]
                  << " ms after the kill (its data served from a copy: "
                     "cluster.failover = auto)\n";
      else
        std::cout << "keyed sends to the partitions of n" << o.cluster
                  << " were not acknowledged within 10 s of the kill (they "
                     "wait for it; with copies, cluster.failover = auto "
                     "serves them from one)\n";
    }
    std::cout << std::flush;
  }
  for (auto& n : nodes)
    stop_node(n);
  stop_etcd(etcd);
  return out;
}

/// In a child process: a keyless load through `endpoint` and a consumer
/// group, kill -9 of `victim_pid` (node `victim`) after a second, and the
/// failover figures on stdout as key=value lines.
[[noreturn]] void failover_child(const std::string& endpoint, pid_t victim_pid,
                                 const std::string& victim) {
  auto conn = connect(endpoint);
  if (!conn) {
    std::printf("error=%s\n", render(conn.error()).c_str());
    std::fflush(stdout);
    _exit(1);
  }
  // What n1 passed on to the homes during the phases (before this load),
  // and the LMDB commits of all nodes for the messages they stored.
  if (auto ns = client::admin::node_status(*conn)) {
    auto get = [](const client::admin::pb::NodeStatus& x, const char* k) {
      auto i = x.counters().find(k);
      return i == x.counters().end() ? uint64_t{0} : i->second;
    };
    uint64_t commits = 0, stored = 0;
    if (auto st = client::admin::cluster_status(*conn))
      for (auto& m : st->members()) {
        std::string host;
        uint16_t port = 0;
        if (!client::parse_endpoint(m.endpoint(), host, port, 7420))
          continue;
        client::connect_options co;
        co.door = false; // a member's endpoint is its node port
        auto c = client::connection::open(host, port, co);
        if (!c)
          continue;
        if (auto x = client::admin::node_status(*c)) {
          commits += get(*x, "storage.commits");
          stored += get(*x, "broker.stored");
        }
      }
    std::printf("forwarded=%llu\ntxn_forwarded=%llu\ncommits=%llu\n"
                "stored=%llu\n",
                static_cast<unsigned long long>(get(*ns, "broker.forwarded")),
                static_cast<unsigned long long>(get(*ns, "txn.forwarded")),
                static_cast<unsigned long long>(commits),
                static_cast<unsigned long long>(stored));
  }
  auto topic = "failover-" + std::to_string(::getpid());
  (void) client::admin::create_topic(*conn, topic, 6);
  // A group whose coordinator runs on the victim (rendezvous over the
  // members, the same on every node), so that the kill moves it.
  std::vector<std::string> members;
  if (auto st = client::admin::cluster_status(*conn))
    for (auto& m : st->members())
      members.push_back(m.node_id());
  std::string group = "failover";
  for (int i = 0; i < 1000; ++i) {
    auto g = "failover-" + std::to_string(i);
    if (cluster::owner_of("group/" + g, node_ids(members)).value() == victim) {
      group = g;
      break;
    }
  }
  std::atomic<uint64_t> consumed{0};
  client::consumer_options co;
  co.group = group;
  co.topic = topic;
  auto cons = client::consumer::start(*conn, co, [&](const client::received&) {
    ++consumed;
    return client::consume_result::success;
  });
  auto owner_now = [&] {
    std::string owner;
    if (auto st = client::admin::cluster_status(*conn))
      for (auto& o : st->owners())
        if (o.resource() == "group/" + group)
          owner = o.node_id();
    return owner;
  };
  auto owner_before = owner_now();
  // A key whose partition is homed on the victim: once it is dead, a send
  // to it is acknowledged again only when its data is served from a copy
  // (cluster.failover = auto); else it waits for the node.
  std::string victim_key;
  if (auto info = client::admin::describe_topic(*conn, topic)) {
    auto n = static_cast<size_t>(info->partitions_size());
    for (int i = 0; n > 0 && victim_key.empty() && i < 10000; ++i) {
      auto k = "k" + std::to_string(i);
      if (info->partitions(static_cast<int>(shard_of(k, n))).home() == victim)
        victim_key = k;
    }
  }
  client::producer p{*conn};
  int64_t kill_ns = 0, first_after = 0, last_ok = 0, max_gap = 0, moved = 0;
  int64_t next_poll = 0, keyed_back = 0, next_keyed = 0;
  std::string owner;
  uint64_t ok = 0, failed = 0;
  auto start = mono_ns();
  // Bounded: at most 20 s and 200,000 sends.
  for (uint64_t i = 0; i < 200000 && mono_ns() - start < 20'000'000'000; ++i) {
    if (kill_ns == 0 && mono_ns() - start > 1'000'000'000) {
      ::kill(victim_pid, SIGKILL);
      kill_ns = mono_ns();
    }
    if (kill_ns != 0 && moved == 0 && mono_ns() >= next_poll) {
      owner = owner_now();
      if (!owner.empty() && owner != victim)
        moved = mono_ns();
      next_poll = mono_ns() + 50'000'000;
    }
    if (kill_ns != 0 && keyed_back == 0 && !victim_key.empty()
        && mono_ns() >= next_keyed) {
      client::message k;
      k.topic = topic;
      k.key = victim_key;
      k.body = "keyed " + std::to_string(i);
      if (p.send(k))
        keyed_back = mono_ns();
      next_keyed = mono_ns() + 100'000'000;
    }
    client::message m;
    m.topic = topic;
    m.body = "f" + std::to_string(i);
    auto sent_at = mono_ns();
    auto r = p.send(m);
    auto now = mono_ns();
    if (!r) {
      ++failed;
      continue;
    }
    ++ok;
    if (last_ok != 0)
      max_gap = std::max(max_gap, now - last_ok);
    last_ok = now;
    if (kill_ns != 0 && first_after == 0 && sent_at >= kill_ns)
      first_after = now;
    // A second of load after the coordinator moved, and the victim's
    // partitions served again or 10 s gone since the kill.
    if (moved != 0 && now - moved > 1'000'000'000
        && (keyed_back != 0 || victim_key.empty()
            || now - kill_ns > 10'000'000'000))
      break;
  }
  (void) owner_before;
  // The last sends may still be on their way to the consumer: wait for
  // them (at most 3 s). What stays missing was stored on the killed node
  // before it died and waits there until it returns (phase 1: no replica).
  for (auto until = mono_ns() + 3'000'000'000;
       consumed.load() < ok && mono_ns() < until;)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::printf("keyed_ms=%.1f\n",
              keyed_back ? (keyed_back - kill_ns) / 1e6 : -1.0);
  std::printf("first_send_ms=%.1f\nmax_gap_ms=%.1f\ncoordinator_ms=%.1f\n"
              "owner=%s\nsent=%llu\nfailed=%llu\nconsumed=%llu\n",
              first_after ? (first_after - kill_ns) / 1e6 : -1.0,
              max_gap / 1e6, moved ? (moved - kill_ns) / 1e6 : -1.0,
              owner.c_str(), static_cast<unsigned long long>(ok),
              static_cast<unsigned long long>(failed),
              static_cast<unsigned long long>(consumed.load()));
  std::fflush(stdout);
  _exit(0);
}

} // namespace

int txmsg_main(const std::vector<std::string>& argv, const std::string& self_exe) {
  if (!argv.empty() && (argv[0] == "--help" || argv[0] == "-h")) {
    std::cout << txmsg_help;
    return 0;
  }
  txmsg_options o;
  std::string err;
  if (!parse(argv, o, err)) {
    std::cerr << "edda bench txmsg: " << err << "\n\n" << txmsg_help;
    return 2;
  }
  node_process node;
  std::string endpoint = o.node;
  if (endpoint.empty()) {
    node = start_node(self_exe, o.durability, o.data_dir, o.node_settings);
    if (node.endpoint.empty())
      return 1;
    endpoint = node.endpoint;
  }
  std::cout << "edda bench txmsg: node " << endpoint
            << (o.node.empty() ? " (started here, durability " + o.durability
                                   + ", data dir " + node.data_dir + ")"
                               : std::string{" (running node)"})
            << ", " << o.partitions << " partitions, " << o.load.size
            << "-byte messages, window " << o.load.window << ", "
            << std::thread::hardware_concurrency() << " cores\n"
            << std::flush;
  auto prefix = "bench-" + std::to_string(::getpid());
  uint64_t rss_after_plain = 0;
  auto results = run_phases(o, endpoint, prefix, "edda", node.pid,
                            rss_after_plain);
  if (o.door) {
    if (node.api_endpoint.empty()) {
      std::cerr << "edda bench txmsg: --door needs the node started here, "
                   "with its client door (api.listen)\n";
    } else {
      auto door = run_door_phases(o, node.api_endpoint, prefix);
      results.insert(results.end(), door.begin(), door.end());
    }
  }
  if (node.pid > 0) {
    auto rss = peak_rss_kib(node.pid);
    std::cout << "edda node peak RSS: " << grouped(static_cast<double>(rss) / 1024.0)
              << " MiB over the whole run";
    if (rss_after_plain > 0)
      std::cout << " (" << grouped(static_cast<double>(rss_after_plain) / 1024.0)
                << " MiB after the plain throughput phase)";
    // File-backed pages are LMDB's mapped data file, read back for
    // delivery; anonymous ones are the node's own memory.
    std::cout << "; resident now: "
              << grouped(static_cast<double>(status_kib(node.pid, "RssAnon")) / 1024.0)
              << " MiB anonymous, "
              << grouped(static_cast<double>(status_kib(node.pid, "RssFile")) / 1024.0)
              << " MiB file-backed\n";
  }
  if (!o.floor_dir.empty()) {
    auto dir = (node.data_dir.empty() ? std::string{"/tmp"} : node.data_dir)
               + "-floor";
    std::cout << line(measure_disk_floor(dir)) << "\n";
  }
  stop_node(node);
  if (o.cluster > 0 && o.node.empty()) {
    auto cluster_results = run_cluster(o, self_exe, prefix);
    results.insert(results.end(), cluster_results.begin(),
                   cluster_results.end());
  }
  print_table(std::cout, results);
  if (!o.csv.empty())
    append_csv(o.csv, results);
  bool ok = true;
  for (auto& r : results)
    ok = ok && r.error.empty() && r.exactly_once;
  return ok ? 0 : 1;
}

int disk_main(const std::vector<std::string>& argv) {
  std::string dir;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == "--help" || argv[i] == "-h") {
      std::cout << "usage: edda bench disk [--dir DIR]\n\n"
                   "Measures the disk floor with LMDB as edda opens it (fsync):\n"
                   "p50/p99 of a single-put commit and puts/s with 100 puts per\n"
                   "commit, in DIR (default: a new directory under /tmp,\n"
                   "removed afterwards).\n";
      return 0;
    }
    if (argv[i] == "--dir" && i + 1 < argv.size()) {
      dir = argv[++i];
      continue;
    }
    std::cerr << "edda bench disk: unknown option '" << argv[i] << "'\n";
    return 2;
  }
  if (dir.empty())
    dir = "/tmp/edda-disk-floor-" + std::to_string(::getpid());
  auto d = measure_disk_floor(dir);
  std::cout << line(d) << "\n";
  return d.error.empty() ? 0 : 1;
}

} // namespace edda::bench
