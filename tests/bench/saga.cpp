// `edda bench saga`: three-step sagas against an `edda node` process whose
// steps are served by participants in a second process.
//
//   driver (this process) --SagaStart{wait}--> node --StepCommand--> participants
//
// The node runs the declared types "bench3 = a, b, c" (every step durable:
// one LMDB write per transition batch, through the group-commit writer) and
// "hold = a", whose participant keeps every command unanswered, so that its
// sagas stay live. Phases:
//   throughput  --count sagas, at most --window in flight: sagas/s, and p50
//               / p99 of start-to-end saga latency under that load;
//   latency     --latency-count sagas one at a time: p50 / p99;
//   memory      --live sagas of type hold started and left waiting: the
//               node's anonymous resident memory before and after, per saga.
#include "saga.hpp"

#include "base/errc.hpp"
#include "client/connection.hpp"
#include "door.hpp"
#include "client/connection_impl.hpp"
#include "harness.hpp"
#include "node_child.hpp"
#include "sagas/remote.hpp"
#include "wire/types.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <iostream>
#include <optional>
#include <thread>

namespace edda::bench {

namespace {

namespace pb = wire::pb;
using clk = std::chrono::steady_clock;

struct saga_options {
  uint64_t count = 20000;
  uint64_t window = 256;
  uint64_t latency_count = 1000;
  uint64_t live = 100000;
  uint64_t workers = 2;
  std::string durability = "fsync";
  std::vector<std::string> node_settings;
  uint64_t cluster = 0;     ///< --cluster N: N nodes on one etcd instead
  uint64_t replication = 1; ///< --replication RF (with --cluster)
  uint64_t min_insync = 1;  ///< --min-insync M (with --cluster)
  bool door = false;        ///< --door: the phases again over the door
};

const char* saga_help = R"(usage: edda bench saga [options]

Three-step sagas with durable state against an edda node process, the steps
served by participants in another process (a participant_host over TCP).
Phases:
  throughput  --count sagas, at most --window in flight: sagas/s and p50/p99
              saga latency (start to end) under that load
  latency     --latency-count sagas one at a time: p50/p99
  memory      --live sagas left waiting for a participant that never
              answers: the node's anonymous memory per live saga
Every saga must complete; the run fails otherwise.

options:
  --count N           (default 20000)   --window W  (default 256)
  --latency-count N   (default 1000)    --live N    (default 100000; 0 = skip)
  --workers N         participant threads (default 2)
  --durability D      fsync, nometasync or nosync (default fsync)
  --node-set KEY=VALUE  a setting for the node (repeatable)
  --cluster N         N nodes on one etcd started here (etcd-server), the
                      participants registered with each, sagas started
                      through the first (each runs on its saga home): the
                      throughput and latency phases at replication factor
                      1, then at --replication RF (default 1: once) with
                      --min-insync M (default 1), in the same run; no
                      memory phase
  --door              then the throughput and latency phases through the
                      client door (gRPC, edda.api.v1) of a fresh node of
                      the same settings, participants served over it too,
                      in the same run: rows "edda-door" (one node)
)";

bool parse(const std::vector<std::string>& argv, saga_options& o,
           std::string& err) {
  for (size_t i = 0; i < argv.size(); ++i) {
    auto& a = argv[i];
    auto value = [&]() -> const std::string* {
      if (i + 1 >= argv.size()) {
        err = a + " needs a value";
        return nullptr;
      }
      return &argv[++i];
    };
    uint64_t* num = a == "--count"           ? &o.count
                    : a == "--window"        ? &o.window
                    : a == "--latency-count" ? &o.latency_count
                    : a == "--workers"       ? &o.workers
                    : a == "--cluster"       ? &o.cluster
                    : a == "--replication"   ? &o.replication
                    : a == "--min-insync"    ? &o.min_insync
                                             : nullptr;
    if (num) {
      auto v = value();
      if (!v || !parse_positive(a, *v, *num, err))
        return false;
    } else if (a == "--live") {
      auto v = value();
      if (!v)
        return false;
      if (*v == "0")
        o.live = 0;
      else if (!parse_positive(a, *v, o.live, err))
        return false;
    } else if (a == "--durability") {
      auto v = value();
      if (!v)
        return false;
      if (*v != "fsync" && *v != "nometasync" && *v != "nosync") {
        err = "--durability takes fsync, nometasync or nosync";
        return false;
      }
      o.durability = *v;
    } else if (a == "--door") {
      o.door = true;
    } else if (a == "--node-set") {
      auto v = value();
      if (!v)
        return false;
      o.node_settings.push_back(*v);
    } else {
      err = "unknown option '" + a + "'";
      return false;
    }
  }
  if (o.door && o.cluster > 0) {
    err = "--door runs against one node: not with --cluster";
    return false;
  }
  if (o.cluster == 0 && (o.replication > 1 || o.min_insync > 1)) {
    err = "--replication and --min-insync need --cluster N";
    return false;
  }
  if (o.cluster > 0 && (o.replication > o.cluster || o.replication > 5
                        || o.min_insync > o.replication)) {
    err = "--replication must be at most --cluster (and 5), --min-insync at "
          "most --replication";
    return false;
  }
  return true;
}

// -- the participant process ---------------------------------------------------

/// Registers "hold.a" and never answers: its sagas stay live.
caf::behavior holder(caf::event_based_actor* self, caf::actor frontend) {
  auto kept = std::make_shared<std::vector<caf::response_promise>>();
  pb::ParticipantRegister r;
  r.add_names("hold.a");
  r.set_client_id("bench-holder");
  self->request(frontend, std::chrono::seconds(10), r)
    .then([](const pb::ParticipantRegistered&) {},
          [](caf::error& err) {
            std::cerr << "edda bench saga: holder not registered: "
                      << render(err) << "\n";
          });
  return {
    [=](const pb::StepCommand&) {
      kept->push_back(self->make_response_promise());
      return kept->back();
    },
  };
}

/// The child: serves bench3.{a,b,c} (and their compensations) and hold.a
/// (over the node port only), writes one byte to `ready` once registered,
/// runs until `quit` closes. `door`: the endpoints are client doors.
[[noreturn]] void participants(const std::vector<std::string>& endpoints,
                               bool door, uint32_t workers, int ready,
                               int quit) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  auto ok = [](const sagas::step_request&) {
    return sagas::step_result::success();
  };
  std::map<std::string, sagas::step_function> handlers;
  for (auto s : {"a", "b", "c"}) {
    handlers[std::string("bench3.") + s] = ok;
    handlers[std::string("bench3.") + s + ".undo"] = ok;
  }
  // One participant host per node (in a cluster, a saga's steps are
  // commanded by its home node).
  std::vector<client::connection> conns;
  std::vector<std::unique_ptr<sagas::participant_host>> hosts;
  for (auto& endpoint : endpoints) {
    std::string host;
    uint16_t port = 0;
    if (!client::parse_endpoint(endpoint, host, port)) {
      std::cerr << "edda bench saga: the node's endpoint '" << endpoint
                << "' is not host:port\n";
      _exit(1);
    }
    client::connect_options co;
    co.door = door;
    auto conn = client::connection::open(host, port, co);
    if (!conn) {
      std::cerr << "edda bench saga: participants cannot connect to "
                << endpoint << ": " << render(conn.error()) << "\n";
      _exit(1);
    }
    sagas::host_options ho;
    ho.client_id = "bench-participants";
    ho.workers = workers;
    auto h = sagas::participant_host::start(*conn, handlers, ho);
    if (!h) {
      std::cerr << "edda bench saga: participant host: " << render(h.error())
                << "\n";
      _exit(1);
    }
    hosts.push_back(std::move(*h));
    conns.push_back(std::move(*conn));
  }
  if (!door) {
    auto& im = *conns.front().impl();
    (void) im.sys->spawn(holder, im.frontend());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  char c = 1;
  (void) ::write(ready, &c, 1);
  while (::read(quit, &c, 1) > 0) {
  }
  _exit(0);
}

// -- the driver ------------------------------------------------------------------

struct driver_state {
  std::shared_ptr<saga_run_result> out;
  std::shared_ptr<std::promise<void>> finished;
  caf::actor frontend;
  std::string type, prefix;
  uint64_t count = 0, window = 0, next = 0, settled = 0;
  bool wait = true;
  clk::time_point began;
  static inline const char* name = "edda.bench_saga_driver";
};

using driver_ptr = caf::stateful_actor<driver_state>*;

void issue(driver_ptr self) {
  auto& st = self->state;
  if (st.next >= st.count)
    return;
  pb::SagaStart s;
  s.set_type(st.type);
  s.set_id(st.prefix + std::to_string(st.next++));
  s.set_input("{}");
  s.set_wait(st.wait);
  auto t0 = clk::now();
  auto settle = [=] {
    auto& st = self->state;
    if (++st.settled == st.count) {
      st.out->seconds
        = std::chrono::duration<double>(clk::now() - st.began).count();
      st.finished->set_value();
      self->quit();
      return;
    }
    issue(self);
  };
  self->request(st.frontend, std::chrono::minutes(5), std::move(s))
    .then(
      [=](const pb::SagaStarted& r) {
        auto& out = *self->state.out;
        out.latency.add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                          clk::now() - t0)
                          .count());
        ++out.done;
        bool want_end = self->state.wait;
        if (want_end && r.record().state() != 3) { // completed
          ++out.not_completed;
          if (out.first_problem.empty())
            out.first_problem = r.record().id() + ": " + r.record().reason();
        }
        settle();
      },
      [=](caf::error& err) {
        auto& out = *self->state.out;
        ++out.errors;
        if (out.first_problem.empty())
          out.first_problem = render(err);
        settle();
      });
}

caf::behavior driver(driver_ptr self, std::shared_ptr<saga_run_result> out,
                     std::shared_ptr<std::promise<void>> finished,
                     caf::actor frontend, std::string type, std::string prefix,
                     uint64_t count, uint64_t window, bool wait) {
  auto& st = self->state;
  st.out = std::move(out);
  st.finished = std::move(finished);
  st.frontend = std::move(frontend);
  st.type = std::move(type);
  st.prefix = std::move(prefix);
  st.count = count;
  st.window = window;
  st.wait = wait;
  st.began = clk::now();
  for (uint64_t i = 0; i < window; ++i)
    issue(self);
  return {[](wire::tick_atom) {}};
}

std::shared_ptr<saga_run_result> run(client::connection& conn,
                                     const std::string& type,
                                     const std::string& prefix, uint64_t count,
                                     uint64_t window, bool wait) {
  auto out = std::make_shared<saga_run_result>();
  out->latency.reserve(count);
  auto finished = std::make_shared<std::promise<void>>();
  auto fut = finished->get_future();
  auto& im = *conn.impl();
  im.sys->spawn(driver, out, finished, im.frontend(), type, prefix, count,
                window, wait);
  fut.wait();
  return out;
}

std::string ms(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f ms", x);
  return buf;
}

/// The phases against `nodes` (sagas started through the first; the
/// participants registered with each): true if every saga completed.
/// `memory`: also the memory phase (one node). `door`: everything over the
/// nodes' client doors (gRPC); last in a run (no fork after gRPC started).
bool run_against(const std::vector<node_process>& nodes, const saga_options& o,
                 const std::string& label, bool memory, bool door = false) {
  std::vector<std::string> endpoints;
  for (auto& n : nodes)
    endpoints.push_back(door ? n.api_endpoint : n.endpoint);
  // The participant process, forked while this process has no client
  // (the previous run's connection is gone with its threads).
  int ready[2], quit[2];
  if (pipe(ready) != 0 || pipe(quit) != 0)
    return false;
  std::fflush(nullptr);
  auto ppid = fork();
  if (ppid == 0) {
    ::close(ready[0]);
    ::close(quit[1]);
    participants(endpoints, door, static_cast<uint32_t>(o.workers), ready[1],
                 quit[0]);
  }
  ::close(ready[1]);
  ::close(quit[0]);
  char c = 0;
  bool up = ::read(ready[0], &c, 1) == 1;
  ::close(ready[0]);
  auto finish = [&](bool ok) {
    ::close(quit[1]);
    waitpid(ppid, nullptr, 0);
    return ok;
  };
  if (!up) {
    std::cerr << "edda bench saga: the participant process did not start\n";
    return finish(false);
  }
  std::string host;
  uint16_t port = 0;
  if (!client::parse_endpoint(nodes.front().endpoint, host, port, 7420)) {
    std::cerr << "edda bench saga: the node's endpoint '"
              << nodes.front().endpoint << "' is not host:port\n";
    return finish(false);
  }
  std::optional<client::connection> conn;
  if (!door) {
    client::connect_options co;
    co.door = false;
    auto c = client::connection::open(host, port, co);
    if (!c) {
      std::cerr << "edda bench saga: " << render(c.error()) << "\n";
      return finish(false);
    }
    conn = std::move(*c);
  }
  // Either path: the sagas of one phase, `window` in flight.
  auto start = [&](const std::string& type, const std::string& ids,
                   uint64_t count, uint64_t window, bool wait) {
    if (door)
      return std::make_shared<saga_run_result>(start_sagas_door(
        endpoints.front(), type, ids, count, window, wait));
    return run(*conn, type, ids, count, window, wait);
  };
  std::cout << "edda bench saga: " << label << ": sagas through "
            << endpoints.front() << (door ? " (client door)" : "")
            << " (durability " << o.durability
            << "), participants in process " << ppid << " (" << o.workers
            << " workers per node), " << std::thread::hardware_concurrency()
            << " cores\n"
            << std::flush;
  bool ok = true;
  auto report = [&](const char* phase, saga_run_result& r, uint64_t window) {
    ok = ok && r.errors == 0 && r.not_completed == 0 && r.done > 0;
    std::cout << label << " " << phase << "  " << r.done
              << " three-step sagas, window " << window << ": "
              << grouped(static_cast<double>(r.done) / r.seconds)
              << " sagas/s; saga latency p50 "
              << ms(r.latency.percentile_ms(0.5)) << ", p99 "
              << ms(r.latency.percentile_ms(0.99));
    if (r.errors + r.not_completed > 0)
      std::cout << "; " << r.errors << " errors, " << r.not_completed
                << " not completed (" << r.first_problem << ")";
    std::cout << "\n" << std::flush;
  };
  auto prefix = "b" + std::to_string(::getpid()) + "-" + label + "-";
  for (auto& ch : prefix)
    if (ch == ' ')
      ch = '-';
  // A short warm-up: connections, the first LMDB pages.
  (void) start("bench3", prefix + "w", std::min<uint64_t>(o.count, 500),
               o.window, true);
  auto t = start("bench3", prefix + "t", o.count, o.window, true);
  report("throughput", *t, o.window);
  auto l = start("bench3", prefix + "l", o.latency_count, 1, true);
  report("latency   ", *l, 1);
  auto pid = nodes.front().pid;
  auto rss_peak = peak_rss_kib(pid);
  if (memory && !door && o.live > 0 && ok) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto before = status_kib(pid, "RssAnon");
    auto h = run(*conn, "hold", prefix + "h", o.live, o.window, false);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto after = status_kib(pid, "RssAnon");
    ok = ok && h->errors == 0;
    auto per = after > before ? static_cast<double>(after - before) * 1024.0
                                  / static_cast<double>(o.live)
                              : 0.0;
    std::cout << "memory      " << h->done << " live sagas (first step waiting): "
              << "node anonymous RSS " << grouped(before / 1024.0) << " -> "
              << grouped(after / 1024.0) << " MiB, "
              << grouped(per) << " bytes per live saga ("
              << grouped(static_cast<double>(o.live) / h->seconds)
              << " starts/s)\n";
  }
  if (memory)
    std::cout << "edda node peak RSS before the memory phase: "
              << grouped(static_cast<double>(rss_peak) / 1024.0) << " MiB\n";
  return finish(ok);
}

/// `--cluster N` at replication factor `rf`: etcd and N nodes, the phases,
/// everything stopped. False if a node did not start or a saga failed.
bool run_cluster(const saga_options& o, const std::string& self_exe,
                 const std::vector<std::string>& base, uint64_t rf) {
  auto etcd = start_etcd();
  if (etcd.endpoint.empty())
    return false;
  std::vector<node_process> nodes;
  auto name = "bench-saga-" + std::to_string(::getpid()) + "-rf"
              + std::to_string(rf);
  bool ok = true;
  for (uint64_t i = 1; i <= o.cluster && ok; ++i) {
    auto settings = cluster_node_settings(base, etcd.endpoint, name, i, rf,
                                          rf > 1 ? o.min_insync : 1, false);
    nodes.push_back(start_node(self_exe, o.durability, {}, settings));
    ok = !nodes.back().endpoint.empty();
  }
  if (ok) {
    // The nodes see each other (and, with copies, have their followers)
    // before the first saga.
    std::this_thread::sleep_for(std::chrono::seconds(2));
    auto label = "edda x" + std::to_string(o.cluster)
                 + (rf > 1 ? " rf" + std::to_string(rf) : std::string{});
    ok = run_against(nodes, o, label, false);
  }
  for (auto& n : nodes)
    stop_node(n);
  stop_etcd(etcd);
  return ok;
}

} // namespace

int saga_main(const std::vector<std::string>& argv, const std::string& self_exe) {
  if (!argv.empty() && (argv[0] == "--help" || argv[0] == "-h")) {
    std::cout << saga_help;
    return 0;
  }
  saga_options o;
  std::string err;
  if (!parse(argv, o, err)) {
    std::cerr << "edda bench saga: " << err << "\n\n" << saga_help;
    return 2;
  }
  auto settings = o.node_settings;
  settings.insert(settings.begin(),
                  {R"(saga.types=["bench3 = a, b, c", "hold = a"])",
                   "saga.step_timeout=10m"});
  if (o.cluster > 0) {
    // Factor 1 first, then the one asked for: the same run compares them.
    bool ok = run_cluster(o, self_exe, settings, 1);
    if (ok && o.replication > 1)
      ok = run_cluster(o, self_exe, settings, o.replication);
    return ok ? 0 : 1;
  }
  auto node = start_node(self_exe, o.durability, {}, settings);
  if (node.endpoint.empty())
    return 1;
  std::cout << "edda bench saga: node " << node.endpoint << ", data dir "
            << node.data_dir << "\n";
  bool ok = run_against({node}, o, "edda", true);
  stop_node(node);
  if (o.door) {
    // A fresh node of the same settings (the memory phase left live sagas
    // in the first one). All calls come from 127.0.0.1: the window's
    // StartSaga calls and the participant streams must fit under
    // api.max_calls_per_address.
    auto door_settings = settings;
    door_settings.push_back("api.max_calls_per_address="
                            + std::to_string(std::max<uint64_t>(
                              256, o.window + 64)));
    auto fresh = start_node(self_exe, o.durability, {}, door_settings);
    if (fresh.endpoint.empty())
      return 1;
    if (fresh.api_endpoint.empty()) {
      std::cerr << "edda bench saga: --door: the node has no client door "
                   "(api.listen)\n";
      ok = false;
    } else {
      std::cout << "edda bench saga: a fresh node " << fresh.endpoint
                << " (client door " << fresh.api_endpoint << "), data dir "
                << fresh.data_dir << "\n";
      ok = run_against({fresh}, o, "edda-door", false, true) && ok;
    }
    stop_node(fresh);
  }
  return ok ? 0 : 1;
}

} // namespace edda::bench
