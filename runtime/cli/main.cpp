// edda: the command line. `edda --help` lists the commands; every command
// has its own --help.
#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "cli/args.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "admin/admin_server.hpp"
#include "door/server.hpp"
#include "node/embedded_node.hpp"
#include "node/shutdown.hpp"
#include "sagas/saga.hpp"
#include "saga.hpp"
#include "txmsg.hpp"
#include <unistd.h>

#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <future>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>

#include <iostream>
#include <mutex>
#include <set>
#include <thread>

namespace edda::cli {
namespace {

namespace pb = wire::v1;
using clock_type = std::chrono::steady_clock;

const char* main_help = R"(edda: transactional messages and sagas on an actor runtime.

Usage: edda COMMAND [ARGS] [--node HOST:PORT] [--json]

Commands:
  node                      run a node (embedded single node by default)
  topic create|list|describe|alter|delete
                            manage topics
  produce                   send messages (or measure throughput with --count)
  consume                   receive messages as a member of a consumer group
  group list|describe       consumer groups; one group's members, addresses
                            and lag per partition
  dlq list|redrive          inspect and redrive a group's dead letters
  txn list|show|resolve     transactions without an outcome; operator override
  saga list|show|start      sagas: filter by state, type, age; steps and history
  status                    the node's storage, durability and counters
  backup NAME               a consistent hot copy of the node's data
  cluster status            members, their addresses and links, the lease
  bench txmsg|disk          benchmarks (BENCHMARKS.md): the txmsg workload
                            against a node process; the LMDB disk floor

Options for every command that talks to a node:
  --node HOST:PORT          the node's client door (api.listen; default
                            $EDDA_NODE or 127.0.0.1:7430)
  --token SECRET            the door's token (api.tokens; default $EDDA_TOKEN)
  --node-port               --node is the node port (CAF) instead: for a node
                            with api.listen = off
  --json                    machine-readable output
Run `edda COMMAND --help` for a command's options.
)";

const char* node_help = R"(Usage: edda node [--config FILE] [--set KEY=VALUE]... [options]

Runs a node until SIGINT or SIGTERM. With no arguments: a single node with
its data in ./edda-data, listening on 127.0.0.1:7420, fsync durability.

  --config FILE             TOML settings (see config/default.toml)
  --set KEY=VALUE           override one setting, e.g. --set storage.durability=nosync
  --data-dir DIR            same as --set node.data_dir=DIR
  --listen HOST:PORT        same as node.listen_host / node.listen_port
  --durability MODE         fsync (default), nometasync or nosync
  --print-config            print every setting with its value and description, then exit
)";

const char* topic_help = R"(Usage:
  edda topic create NAME [--partitions N]   (default: broker.default_partitions)
  edda topic list [--all]                   (--all: include %RETRY% topics)
  edda topic describe NAME                  partitions, end offsets, group lag
  edda topic alter NAME --partitions N      add partitions online (only grows)
  edda topic delete NAME                    delete the topic and its messages
)";

const char* produce_help = R"(Usage:
  edda produce --topic T [--key K] [--tag TAG]... [--prop K=V]... [--delay-ms MS] BODY...
      sends one message whose body is BODY (words joined by spaces), or
      standard input when no BODY is given; prints where it was stored.
  edda produce --topic T --count N [--size BYTES] [--window W]
      throughput: N messages of BYTES (default 256) with at most W (default
      256) unacknowledged; every one is durable on the node before it counts.
  edda produce --topic T --count N --transactional [--group G] [--window W]
      transactional throughput: each message is a half message + a local
      transaction that does nothing + a commit, both durable; at most W
      transactions in flight (default 256, pipelined) in producer group G
      (default edda-cli).
)";

const char* txn_help = R"(Usage:
  edda txn list [--limit N]                 transactions without an outcome:
                                            age, check-backs so far, next check
  edda txn show TXN_ID                      one transaction, pending or resolved
  edda txn resolve TXN_ID commit|rollback [--by NAME]
                                            operator override, recorded as
                                            resolved by operator:NAME
)";

const char* consume_help = R"(Usage: edda consume --topic T --group G [options]

  --expr EXPR               tag expression: '*' (default), 'TagA', 'TagA || TagC'
  --broadcast               broadcast mode (default: clustering)
  --from latest             a new group starts at the end (default: earliest)
  --count N                 stop after N messages
  --idle-ms MS              stop after MS without a message (default: run until Ctrl-C,
                            or 3000 with --count)
  --fail-every K            answer retry_later for every K-th message (to try retries)
  --quiet                   do not print messages; print the throughput at the end
  --client-id ID            stable member id (default: host-pid-n)
)";

const char* dlq_help = R"(Usage:
  edda dlq list --group G [--limit N]        dead letters of group G
  edda dlq redrive --group G [--id ID]...    send them back through the group's
                                             retry topic (all, or the given ids)
)";

struct context {
  args a;
  bool json = false;
};

int fail(const std::string& what) {
  std::cerr << "edda: " << what << "\n";
  return 1;
}

int fail(const caf::error& err) {
  return fail(render(err));
}

void print_json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  opts.preserve_proto_field_names = true;
  (void) google::protobuf::util::MessageToJsonString(m, &out, opts);
  std::cout << out << "\n";
}

caf::expected<client::connection> connect(const args& a) {
  bool door = !a.has("node-port");
  std::string ep = a.get("node");
  if (ep.empty()) {
    const char* env = std::getenv("EDDA_NODE");
    ep = env != nullptr ? env : door ? "127.0.0.1:7430" : "127.0.0.1:7420";
  }
  std::string host;
  uint16_t port = 0;
  if (!client::parse_endpoint(ep, host, port, door ? 7430 : 7420))
    return make_error(errc::invalid_argument,
                      "--node expects HOST:PORT, got '" + ep + "'");
  client::connect_options o;
  o.door = door;
  o.token = a.get("token");
  if (o.token.empty())
    if (const char* env = std::getenv("EDDA_TOKEN"))
      o.token = env;
  auto c = client::connection::open(host, port, o);
  if (!c && door && code_of(c.error()) == errc::unavailable)
  {
    auto why = render(c.error());
    const std::string prefix = "unavailable: ";
    if (why.compare(0, prefix.size(), prefix) == 0)
      why.erase(0, prefix.size());
    // The library's hint names its option; the CLI's names its flags.
    if (auto hint = why.find("; something else listens there");
        hint != std::string::npos)
      why.erase(hint);
    return make_error(errc::unavailable,
                      why + "; --node names the node's client door "
                            "(api.listen, by default the node port + 10, e.g. "
                            "7430); --node-port talks to the node port "
                            "instead");
  }
  return c;
}

// -- node ---------------------------------------------------------------------

int cmd_node(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "print-config"},
               {"config", "set", "data-dir", "listen", "durability"}, err))
    return fail(err + "\n" + node_help);
  if (a.has("help")) {
    std::cout << node_help;
    return 0;
  }
  if (!a.positional.empty())
    return fail("unexpected argument '" + a.positional[0] + "'\n" + node_help);
  config::node_settings s;
  if (a.has("config") && !config::load_settings_file(a.get("config"), s, err))
    return fail(make_error(errc::bad_config, err));
  std::vector<std::string> overrides = a.all("set");
  if (a.has("data-dir"))
    overrides.push_back("node.data_dir=" + a.get("data-dir"));
  if (a.has("durability"))
    overrides.push_back("storage.durability=" + a.get("durability"));
  if (a.has("listen")) {
    std::string host;
    uint16_t port = 0;
    if (!client::parse_endpoint(a.get("listen"), host, port, 7420))
      return fail("--listen expects HOST:PORT, got '" + a.get("listen") + "'");
    overrides.push_back("node.listen_host=" + host);
    overrides.push_back("node.listen_port=" + std::to_string(port));
  }
  for (auto& o : overrides)
    if (!config::apply_override(o, s, err))
      return fail(make_error(errc::bad_config, err));
  if (a.has("print-config")) {
    std::cout << config::render_settings(s);
    return 0;
  }
  // SIGINT / SIGTERM stop the node at every moment, from here on (a second
  // signal, or a stop longer than 10 s, ends the process at once).
  node::shutdown_signal shutdown{std::chrono::milliseconds(s.stop_grace_ms)};
  node::start_options opts;
  opts.cancel = shutdown.flag();
  // The node stopping on its own (its storage writer died) ends the process
  // with status 1, through the same stop as a signal. Its replica group
  // moved to another node by an operator (move-group): it starts again,
  // and follows the group as a standby (embedded_node::start).
  auto moved = std::make_shared<std::atomic<bool>>(false);
  opts.on_fatal = [&shutdown, moved](const caf::error& why) {
    // Once moved, what follows (the record naming the new leader) is part
    // of the same move.
    if (code_of(why) == errc::not_owner || moved->load()) {
      moved->store(true);
      shutdown.wake();
    } else {
      shutdown.request();
    }
  };
  for (;;) {
    auto node = node::embedded_node::start(s, opts);
    if (!node) {
      shutdown.stopped();
      return fail(node.error());
    }
    std::cout << "edda node listening on " << s.listen_host << ":"
              << (*node)->port() << " (data dir " << s.data_dir
              << ", durability " << config::to_string(s.mode) << ")";
    if ((*node)->admin_port() != 0) { // before the door's: parsed last
      std::string admin_host;
      uint16_t ignored = 0;
      (void)edda::admin::admin_address(s, admin_host, ignored);
      std::cout << ", admin (HTTP) on " << admin_host << ":"
                << (*node)->admin_port();
    }
    if ((*node)->api_port() != 0) {
      std::string api_host;
      uint16_t ignored = 0;
      (void)door::api_address(s, api_host, ignored);
      std::cout << ", client api (gRPC) on " << api_host << ":"
                << (*node)->api_port();
    }
    std::cout << std::endl;
    shutdown.wait();
    auto failure = (*node)->failure();
    if (moved->exchange(false) && !shutdown.requested()) {
      // Stopped, within node.stop_grace as after a signal (a stop that
      // hangs must not keep the data dir open for the next start).
      std::promise<void> stopped;
      std::thread watchdog{[done = stopped.get_future(),
                            grace = s.stop_grace_ms]() mutable {
        if (done.wait_for(std::chrono::milliseconds(grace))
            != std::future_status::ready) {
          std::cerr << "edda: the node did not stop within " << grace
                    << " ms after its group moved; exiting now (storage is "
                       "crash-safe: nothing acknowledged is lost)"
                    << std::endl;
          std::_Exit(1);
        }
      }};
      (*node)->stop();
      stopped.set_value();
      watchdog.join();
      std::cout << "edda node: " << render(failure)
                << "; starting again to follow it" << std::endl;
      continue;
    }
    (*node)->stop();
    shutdown.stopped();
    if (failure)
      return fail(failure);
    return 0;
  }
}

// -- topic --------------------------------------------------------------------

void print_topic(const pb::TopicInfo& t) {
  std::cout << "topic " << t.meta().name() << ": " << t.meta().partitions()
            << " partitions, id " << t.meta().id() << "\n";
  for (auto& p : t.partitions()) {
    std::cout << "  partition " << p.partition() << ": ";
    if (p.unavailable())
      std::cout << "unavailable (its home is down or unreachable)";
    else
      std::cout << "end offset " << p.end_offset() << ", "
                << p.message_count() << " messages";
    if (!p.home().empty())
      std::cout << ", home " << p.home();
    std::cout << "\n";
  }
  for (auto& g : t.groups())
    std::cout << "  group " << g.cursor() << " partition " << g.partition()
              << ": committed " << g.committed() << ", lag " << g.lag()
              << ", in flight " << g.inflight()
              << (g.member().empty() ? ", no member" : ", member " + g.member())
              << "\n";
}

int cmd_topic(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json", "all"}, {"node", "partitions"}, err))
    return fail(err + "\n" + topic_help);
  if (a.has("help") || a.positional.empty()) {
    std::cout << topic_help;
    return a.has("help") ? 0 : 1;
  }
  bool json = a.has("json");
  const auto& verb = a.positional[0];
  auto need_name = [&]() -> std::string {
    return a.positional.size() > 1 ? a.positional[1] : std::string{};
  };
  uint64_t partitions = 0;
  if (!a.get_uint("partitions", 0, partitions, err))
    return fail(err);
  if (a.has("partitions") && partitions == 0)
    return fail(make_error(errc::invalid_argument,
                           "--partitions must be at least 1 (without it: "
                           "broker.default_partitions)"));
  if (verb != "list" && need_name().empty())
    return fail("topic " + verb + " needs a topic NAME\n" + topic_help);
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  if (verb == "create" || verb == "alter" || verb == "describe") {
    if (verb == "alter" && partitions == 0)
      return fail("topic alter needs --partitions N");
    auto r = verb == "create"
               ? client::admin::create_topic(*conn, need_name(),
                                             static_cast<uint32_t>(partitions))
             : verb == "alter"
               ? client::admin::alter_topic(*conn, need_name(),
                                            static_cast<uint32_t>(partitions))
               : client::admin::describe_topic(*conn, need_name());
    if (!r)
      return fail(r.error());
    if (json)
      print_json(*r);
    else
      print_topic(*r);
    return 0;
  }
  if (verb == "list") {
    auto r = client::admin::list_topics(*conn, a.has("all"));
    if (!r)
      return fail(r.error());
    if (json) {
      print_json(*r);
      return 0;
    }
    for (auto& t : r->topics())
      std::cout << t.meta().name() << "\t" << t.meta().partitions()
                << " partitions\n";
    if (r->topics().empty())
      std::cout << "(no topics)\n";
    return 0;
  }
  if (verb == "delete") {
    auto r = client::admin::delete_topic(*conn, need_name());
    if (!r)
      return fail(r.error());
    if (json)
      print_json(*r);
    else
      std::cout << r->what() << "\n";
    return 0;
  }
  return fail("unknown topic command '" + verb + "'\n" + topic_help);
}

// -- produce ------------------------------------------------------------------

std::string durability_of(const client::connection& conn) {
  auto status = client::admin::node_status(conn);
  return status ? status->durability() : "unknown";
}

/// Up to `window` transactions in flight (pipelined, batched on the wire):
/// half message, a local transaction that does nothing, commit.
int produce_transactional(const args& a, const client::connection& conn,
                          uint64_t count, uint64_t size, uint64_t window) {
  if (count == 0)
    count = 1;
  client::txn_producer_options o;
  o.group = a.get("group", "edda-cli");
  auto p = client::transaction_producer::start(
    conn, o, [](const client::txn_check&) { return client::txn_outcome::commit; });
  if (!p)
    return fail(p.error());
  std::atomic<uint64_t> ok{0}, failed{0};
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t inflight = 0;
  caf::error first_error;
  std::string body(size, 'x');
  auto start = clock_type::now();
  for (uint64_t i = 0; i < count; ++i) {
    {
      std::unique_lock<std::mutex> guard{mtx};
      cv.wait(guard, [&] { return inflight < window; });
      ++inflight;
    }
    client::message m;
    m.topic = a.get("topic");
    m.body = body;
    (*p)->send_in_transaction_async(
      std::move(m),
      [](const client::message&, const std::string&) {
        return client::txn_outcome::commit;
      },
      [&](caf::expected<client::txn_result> r) {
        std::lock_guard<std::mutex> guard{mtx};
        if (r && r->ended) {
          ++ok;
        } else {
          ++failed;
          if (!first_error)
            first_error = r ? r->end_error : r.error();
        }
        --inflight;
        cv.notify_all();
      });
  }
  (*p)->flush();
  auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
  auto mode = durability_of(conn);
  if (a.has("json"))
    std::printf("{\"transactions\":%llu,\"failed\":%llu,\"seconds\":%.3f,"
                "\"txn_per_s\":%.0f,\"durability\":\"%s\"}\n",
                static_cast<unsigned long long>(ok.load()),
                static_cast<unsigned long long>(failed.load()), secs,
                ok / secs, mode.c_str());
  else
    std::printf("committed %llu transactional messages of %llu bytes in %.3f "
                "s: %.0f msg/s (half + commit both durable; node durability "
                "%s, window %llu)\n",
                static_cast<unsigned long long>(ok.load()),
                static_cast<unsigned long long>(size), secs, ok / secs,
                mode.c_str(), static_cast<unsigned long long>(window));
  if (failed > 0)
    return fail(std::to_string(failed.load()) + " transactions failed, first: "
                + render(first_error));
  return 0;
}

int cmd_produce(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json", "transactional"},
               {"node", "topic", "key", "tag", "prop", "delay-ms", "count",
                "size", "window", "group"},
               err))
    return fail(err + "\n" + produce_help);
  if (a.has("help")) {
    std::cout << produce_help;
    return 0;
  }
  if (a.get("topic").empty())
    return fail("produce needs --topic\n" + std::string(produce_help));
  uint64_t count = 0, size = 256, window = 256, delay = 0;
  if (!a.get_uint("count", 0, count, err) || !a.get_uint("size", 256, size, err)
      || !a.get_uint("window", 256, window, err)
      || !a.get_uint("delay-ms", 0, delay, err))
    return fail(err);
  if (window == 0)
    return fail("--window must be at least 1");
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  if (a.has("transactional"))
    return produce_transactional(a, *conn, count, size, window);
  client::producer prod{*conn};
  if (count == 0) {
    client::message m;
    m.topic = a.get("topic");
    m.key = a.get("key");
    m.tags = a.all("tag");
    for (auto& kv : a.all("prop")) {
      auto eq = kv.find('=');
      if (eq == std::string::npos)
        return fail("--prop expects KEY=VALUE, got '" + kv + "'");
      m.properties[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    if (delay > 0)
      m.deliver_at_ms = now_ms() + static_cast<int64_t>(delay);
    if (a.positional.empty()) {
      std::string line;
      while (std::getline(std::cin, line))
        m.body += line + "\n";
    } else {
      for (size_t i = 0; i < a.positional.size(); ++i)
        m.body += (i ? " " : "") + a.positional[i];
    }
    auto r = prod.send(std::move(m));
    if (!r)
      return fail(r.error());
    if (a.has("json")) {
      std::cout << "{\"id\":\"" << r->id << "\",\"topic\":\"" << r->topic
                << "\",\"partition\":" << r->partition
                << ",\"offset\":" << r->offset
                << ",\"delayed\":" << (r->delayed ? "true" : "false") << "}\n";
    } else if (r->delayed) {
      std::cout << "stored " << r->id << " (delayed " << delay
                << " ms) for " << r->topic << "\n";
    } else {
      std::cout << "stored " << r->id << " at " << r->topic << "/"
                << r->partition << " offset " << r->offset << "\n";
    }
    return 0;
  }
  // Throughput mode.
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t outstanding = 0, ok = 0, failed = 0;
  caf::error first_error;
  std::string body(size, 'x');
  auto start = clock_type::now();
  for (uint64_t i = 0; i < count; ++i) {
    {
      std::unique_lock<std::mutex> guard{mtx};
      cv.wait(guard, [&] { return outstanding < window; });
      ++outstanding;
    }
    client::message m;
    m.topic = a.get("topic");
    m.body = body;
    m.tags = a.all("tag");
    if (a.has("key"))
      m.key = a.get("key") + std::to_string(i % 1024);
    prod.send_async(std::move(m), [&](caf::expected<client::send_result> r) {
      std::lock_guard<std::mutex> guard{mtx};
      --outstanding;
      if (r)
        ++ok;
      else {
        ++failed;
        if (!first_error)
          first_error = r.error();
      }
      cv.notify_all();
    });
  }
  prod.flush();
  auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
  std::string mode = durability_of(*conn);
  if (a.has("json")) {
    std::printf("{\"messages\":%llu,\"failed\":%llu,\"bytes\":%llu,"
                "\"seconds\":%.3f,\"msg_per_s\":%.0f,\"durability\":\"%s\"}\n",
                static_cast<unsigned long long>(ok),
                static_cast<unsigned long long>(failed),
                static_cast<unsigned long long>(size), secs, ok / secs,
                mode.c_str());
  } else {
    std::printf("produced %llu messages of %llu bytes in %.3f s: %.0f msg/s "
                "durable (node durability %s, window %llu)\n",
                static_cast<unsigned long long>(ok),
                static_cast<unsigned long long>(size), secs, ok / secs,
                mode.c_str(), static_cast<unsigned long long>(window));
  }
  if (failed > 0)
    return fail(std::to_string(failed) + " sends failed, first: "
                + render(first_error));
  return 0;
}

// -- consume ------------------------------------------------------------------

int cmd_consume(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json", "broadcast", "quiet"},
               {"node", "topic", "group", "expr", "from", "count", "idle-ms",
                "fail-every", "client-id"},
               err))
    return fail(err + "\n" + consume_help);
  if (a.has("help")) {
    std::cout << consume_help;
    return 0;
  }
  if (a.get("topic").empty() || a.get("group").empty())
    return fail("consume needs --topic and --group\n"
                + std::string(consume_help));
  uint64_t count = 0, idle = 0, fail_every = 0;
  if (!a.get_uint("count", 0, count, err)
      || !a.get_uint("idle-ms", 0, idle, err)
      || !a.get_uint("fail-every", 0, fail_every, err))
    return fail(err);
  if (idle == 0 && count > 0)
    idle = 3000;
  auto from = a.get("from", "earliest");
  if (from != "earliest" && from != "latest")
    return fail("--from expects earliest or latest, got '" + from + "'");
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  client::consumer_options o;
  o.group = a.get("group");
  o.topic = a.get("topic");
  o.expression = a.get("expr", "*");
  o.mode = a.has("broadcast") ? client::consume_mode::broadcast
                              : client::consume_mode::clustering;
  o.from = from == "latest" ? client::consume_from::latest
                            : client::consume_from::earliest;
  o.client_id = a.get("client-id");
  bool quiet = a.has("quiet"), json = a.has("json");
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t seen = 0;
  auto last = clock_type::now();
  clock_type::time_point first{};
  auto c = client::consumer::start(
    *conn, o, [&](const client::received& r) {
      std::lock_guard<std::mutex> guard{mtx};
      // --count N: exactly N are taken (and acknowledged); any delivered
      // beyond them are released, for the group to deliver again.
      if (count > 0 && seen >= count)
        return client::consume_result::release;
      ++seen;
      if (seen == 1)
        first = clock_type::now();
      last = clock_type::now();
      bool fail_it = fail_every > 0 && seen % fail_every == 0;
      if (!quiet) {
        if (json)
          std::cout << "{\"id\":\"" << r.msg.id << "\",\"topic\":\""
                    << r.msg.topic << "\",\"partition\":" << r.partition
                    << ",\"offset\":" << r.offset
                    << ",\"reconsume_times\":" << r.reconsume_times
                    << ",\"body_bytes\":" << r.msg.body.size() << "}\n";
        else
          std::cout << r.msg.topic << "/" << r.partition << "@" << r.offset
                    << (r.msg.tags.empty() ? "" : " [" + r.msg.tags[0] + "]")
                    << (r.reconsume_times ? " (retry "
                                              + std::to_string(r.reconsume_times)
                                              + ")"
                                          : "")
                    << ": " << r.msg.body << "\n";
        std::cout.flush();
      }
      cv.notify_all();
      return fail_it ? client::consume_result::retry_later
                     : client::consume_result::success;
    });
  if (!c)
    return fail(c.error());
  if (!quiet && !json)
    std::cerr << "consuming " << o.topic << " as " << o.group << " ("
              << (*c)->client_id() << "), Ctrl-C to stop\n";
  {
    std::unique_lock<std::mutex> guard{mtx};
    for (;;) {
      if (count > 0 && seen >= count)
        break;
      cv.wait_for(guard, std::chrono::milliseconds(100));
      if (idle > 0 && seen > 0
          && clock_type::now() - last > std::chrono::milliseconds(idle))
        break;
      if (idle > 0 && seen == 0
          && clock_type::now() - last > std::chrono::milliseconds(idle * 10))
        break;
    }
  }
  auto end = clock_type::now();
  auto counters = (*c)->counters();
  (*c)->stop();
  if (quiet) {
    auto secs = seen > 1 ? std::chrono::duration<double>(end - first).count()
                         : 0.0;
    std::printf("consumed %llu messages in %.3f s: %.0f msg/s (%llu durable "
                "ack batches)\n",
                static_cast<unsigned long long>(seen), secs,
                secs > 0 ? seen / secs : 0.0,
                static_cast<unsigned long long>(counters.acks_durable));
  }
  if (count > 0 && seen < count)
    return fail("stopped after " + std::to_string(seen) + " of "
                + std::to_string(count) + " messages (idle)");
  return 0;
}

// -- group, dlq, status -------------------------------------------------------

/// A cluster list that misses the part of nodes that did not answer says
/// so (on stderr, so that scripts reading stdout are unaffected).
template <class Names>
void warn_unreachable(const Names& nodes, const char* what) {
  if (nodes.empty())
    return;
  std::cerr << "warning: not included, the " << what << " of node(s)";
  for (auto& n : nodes)
    std::cerr << " " << n;
  std::cerr << ": down or unreachable\n";
}

const char* group_help = R"(Usage:
  edda group list                           groups: mode, members, topics
  edda group describe GROUP                 its members (client id, address,
                                            subscriptions) and, per topic and
                                            partition, committed offset, end
                                            offset, lag, in flight, member
)";

/// `cursor` is group `g`'s: the group itself, or one of its broadcast
/// members' (g@client).
bool cursor_of(const std::string& cursor, const std::string& g) {
  return cursor == g || cursor.rfind(g + "@", 0) == 0;
}

int group_describe(const client::connection& conn, const std::string& name,
                   bool json) {
  auto groups = client::admin::list_groups(conn);
  if (!groups)
    return fail(groups.error());
  pb::GroupDescription out;
  bool known = false;
  for (auto& g : groups->groups())
    if (g.group() == name) {
      *out.mutable_group() = g;
      known = true;
    }
  // The lag is the topics': every topic the group has offsets on, even
  // with no member now.
  auto topics = client::admin::list_topics(conn, true);
  if (!topics)
    return fail(topics.error());
  std::vector<std::string> missing;
  for (auto& t : topics->topics()) {
    auto d = client::admin::describe_topic(conn, t.meta().name());
    if (!d) {
      missing.push_back(t.meta().name() + " (" + render(d.error()) + ")");
      continue;
    }
    pb::TopicInfo mine;
    *mine.mutable_meta() = d->meta();
    *mine.mutable_partitions() = d->partitions();
    for (auto& l : d->groups())
      if (cursor_of(l.cursor(), name))
        *mine.add_groups() = l;
    if (mine.groups_size() > 0) {
      known = true;
      *out.add_topics() = std::move(mine);
    }
  }
  if (!known) {
    for (auto& m : missing)
      std::cerr << "edda: warning: topic " << m << " not read\n";
    std::string where;
    for (auto& u : groups->unreachable())
      where += (where.empty() ? "" : ", ") + u;
    return fail(make_error(
      errc::unknown_group,
      "no group '" + name + "': it has no members and no offsets"
        + (where.empty() ? std::string{}
                         : " on the nodes that answered (not reached: " + where
                             + ")")
        + " (edda group list shows the groups)"));
  }
  out.mutable_group()->set_group(name);
  // Members as ids (a node from before member_details lists only those).
  if (out.group().member_details_size() == 0)
    for (auto& m : out.group().members())
      out.mutable_group()->add_member_details()->set_client_id(m);
  std::set<std::string> live;
  for (auto& m : out.group().member_details())
    live.insert(m.client_id());
  // A broadcast cursor (group@client) of a client that left stays with its
  // offsets; its lag is not the group's.
  auto departed = [&](const pb::GroupLag& l) {
    return l.cursor() != name
           && live.count(l.cursor().substr(name.size() + 1)) == 0;
  };
  if (json) {
    print_json(out);
  } else {
    auto& g = out.group();
    std::cout << "group " << name << ": "
              << (g.mode() == pb::BROADCAST ? "broadcast" : "clustering")
              << ", generation " << g.generation() << ", "
              << g.member_details_size() << " members\n";
    if (g.member_details_size() > 0)
      std::cout << "  MEMBER\tADDRESS\tSUBSCRIPTIONS\n";
    for (auto& m : g.member_details()) {
      std::cout << "  " << m.client_id() << "\t"
                << (m.address().empty() ? "-" : m.address()) << "\t";
      for (int i = 0; i < m.subscriptions_size(); ++i)
        std::cout << (i > 0 ? ", " : "") << m.subscriptions(i);
      std::cout << "\n";
    }
    if (out.topics_size() > 0)
      std::cout << "  TOPIC\tPARTITION\tCOMMITTED\tEND\tLAG\tIN FLIGHT\tMEMBER\n";
    uint64_t total = 0;
    for (auto& t : out.topics())
      for (auto& l : t.groups()) {
        std::string end = "?";
        for (auto& p : t.partitions())
          if (p.partition() == l.partition())
            end = p.unavailable() ? "unavailable"
                                  : std::to_string(p.end_offset());
        bool gone = departed(l);
        std::cout << "  " << t.meta().name() << "\t" << l.partition() << "\t"
                  << l.committed() << "\t" << end << "\t" << l.lag() << "\t"
                  << l.inflight() << "\t"
                  << (l.member().empty() ? "-" : l.member())
                  << (l.cursor() != name ? " (" + l.cursor() + ")" : "")
                  << (gone ? " departed, not in the total" : "") << "\n";
        if (!gone)
          total += l.lag();
      }
    std::cout << "  total lag " << total << "\n";
  }
  for (auto& m : missing)
    std::cerr << "edda: warning: topic " << m << " not read\n";
  warn_unreachable(groups->unreachable(), "groups");
  return 0;
}

int cmd_group(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json"}, {"node"}, err))
    return fail(err + "\n" + group_help);
  if (a.has("help") || a.positional.empty()) {
    std::cout << group_help;
    return a.has("help") ? 0 : 1;
  }
  const auto& verb = a.positional[0];
  if (verb != "list" && verb != "describe")
    return fail("unknown group command '" + verb + "'\n" + group_help);
  if (verb == "describe" && a.positional.size() != 2)
    return fail("group describe needs one GROUP\n" + std::string{group_help});
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  if (verb == "describe")
    return group_describe(*conn, a.positional[1], a.has("json"));
  auto r = client::admin::list_groups(*conn);
  if (!r)
    return fail(r.error());
  if (a.has("json")) {
    print_json(*r);
    return 0;
  }
  for (auto& g : r->groups()) {
    std::cout << g.group() << "\t"
              << (g.mode() == pb::BROADCAST ? "broadcast" : "clustering")
              << "\t" << g.members_size() << " members";
    for (auto& t : g.topics())
      std::cout << "\t" << t;
    std::cout << "\n";
  }
  if (r->groups().empty())
    std::cout << "(no groups)\n";
  warn_unreachable(r->unreachable(), "groups");
  return 0;
}

int cmd_dlq(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json"}, {"node", "group", "limit", "id"}, err))
    return fail(err + "\n" + dlq_help);
  if (a.has("help") || a.positional.empty()) {
    std::cout << dlq_help;
    return a.has("help") ? 0 : 1;
  }
  if (a.get("group").empty())
    return fail("dlq needs --group\n" + std::string(dlq_help));
  uint64_t limit = 0;
  if (!a.get_uint("limit", 0, limit, err))
    return fail(err);
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  const auto& verb = a.positional[0];
  if (verb == "list") {
    auto r = client::admin::dlq_list(*conn, a.get("group"),
                                     static_cast<uint32_t>(limit));
    if (!r)
      return fail(r.error());
    if (a.has("json")) {
      print_json(*r);
      return 0;
    }
    for (auto& e : r->entries())
      std::cout << e.message().id() << "\t" << e.message().origin_topic()
                << "/" << e.message().origin_partition() << "@"
                << e.message().origin_offset() << "\tattempts "
                << e.message().reconsume_times() << "\t" << e.reason() << "\n";
    std::cout << r->entries_size() << " dead letters in %DLQ%" << a.get("group")
              << "\n";
    warn_unreachable(r->unreachable(), "dead letters");
    return 0;
  }
  if (verb == "redrive") {
    auto r = client::admin::dlq_redrive(*conn, a.get("group"), a.all("id"));
    if (!r)
      return fail(r.error());
    if (a.has("json"))
      print_json(*r);
    else
      std::cout << "redrove " << r->count() << " dead letters to %RETRY%"
                << a.get("group") << "\n";
    warn_unreachable(r->unreachable(), "dead letters (not redriven)");
    return 0;
  }
  return fail("unknown dlq command '" + verb + "'\n" + dlq_help);
}

std::string age(int64_t ms) {
  if (ms < 0)
    return "-" + age(-ms);
  if (ms < 10'000)
    return std::to_string(ms) + "ms";
  if (ms < 600'000)
    return std::to_string(ms / 1000) + "s";
  return std::to_string(ms / 60'000) + "m";
}


int cmd_txn(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json"}, {"node", "limit", "by"}, err))
    return fail(err + "\n" + txn_help);
  if (a.has("help") || a.positional.empty()) {
    std::cout << txn_help;
    return a.has("help") ? 0 : 1;
  }
  uint64_t limit = 0;
  if (!a.get_uint("limit", 0, limit, err))
    return fail(err);
  const auto& verb = a.positional[0];
  if ((verb == "show" && a.positional.size() != 2)
      || (verb == "resolve"
          && (a.positional.size() != 3
              || (a.positional[2] != "commit" && a.positional[2] != "rollback"))))
    return fail("wrong arguments for txn " + verb + "\n" + txn_help);
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  if (verb == "list") {
    auto r = client::admin::txn_list(*conn, static_cast<uint32_t>(limit));
    if (!r)
      return fail(r.error());
    if (a.has("json")) {
      print_json(*r);
      return 0;
    }
    std::printf("%-34s %-16s %-16s %8s %6s %10s\n", "txn", "producer group",
                "topic", "age", "checks", "next check");
    int orphaned = 0;
    for (auto& t : r->records()) {
      std::printf("%-34s %-16s %-16s %8s %6u %10s%s\n", t.txn_id().c_str(),
                  t.producer_group().c_str(), t.message().topic().c_str(),
                  age(r->now_ms() - t.created_ms()).c_str(), t.checks(),
                  age(t.next_check_ms() - r->now_ms()).c_str(),
                  t.orphaned() ? "  no producer alive" : "");
      orphaned += t.orphaned() ? 1 : 0;
    }
    std::printf("%d transactions in doubt\n", r->records_size());
    if (orphaned > 0)
      std::printf("%d of them with no producer of their group alive to answer "
                  "a check-back: start one, or `edda txn resolve`\n",
                  orphaned);
    return 0;
  }
  if (verb == "show") {
    auto r = client::admin::txn_show(*conn, a.positional[1]);
    if (!r)
      return fail(r.error());
    if (a.has("json")) {
      print_json(*r);
      return 0;
    }
    std::cout << "txn " << r->txn_id() << ": " << client::admin::txn_state_name(r->state())
              << "\n  producer group " << r->producer_group() << " (sent by "
              << r->client_id() << ")\n  topic " << r->message().topic()
              << ", message " << r->message().id() << ", "
              << r->message().body().size() << " bytes\n  check-backs "
              << r->checks() << "\n";
    if (r->orphaned())
      std::cout << "  no producer of group " << r->producer_group()
                << " is alive to answer a check-back: start one, or settle "
                   "it with `edda txn resolve`\n";
    if (r->state() != pb::TxnRecord::PREPARED)
      std::cout << "  resolved by " << r->resolved_by()
                << (r->reason().empty() ? "" : ": " + r->reason()) << "\n";
    return 0;
  }
  if (verb == "resolve") {
    const char* user = std::getenv("USER");
    auto who = a.get("by", user != nullptr ? user : "cli");
    auto r = client::admin::txn_resolve(*conn, a.positional[1],
                                        a.positional[2] == "commit", who);
    if (!r)
      return fail(r.error());
    if (a.has("json"))
      print_json(*r);
    else
      std::cout << "txn " << a.positional[1] << " "
                << (r->already() ? "was already " : "is now ")
                << client::admin::txn_state_name(r->record().state()) << " (by "
                << r->record().resolved_by() << ")\n";
    return 0;
  }
  return fail("unknown txn command '" + verb + "'\n" + txn_help);
}

const char* backup_help = R"(Usage: edda backup NAME [--compact] [--by WHO] [--node HOST:PORT] [--json]

A consistent copy of the node's data (LMDB), taken while it serves: writes
go on meanwhile, the copy holds exactly what was committed when it began.
It is written on the node's machine as storage.backup_dir/NAME/data.mdb
(by default next to the data dir: <node.data_dir>.backups/NAME), synced,
one backup at a time; NAME is new, made of letters, digits, _ - . only.
--compact leaves free pages out (smaller, slower). --by names who asks
(default $USER), logged. Restore: stop the node and start it with
--data-dir <the backup's dir>, or put its data.mdb in place of the data
dir's. In a cluster this copies one node's data, which restores that node
only (its identity is inside).
)";

int cmd_backup(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json", "compact"}, {"node", "by"}, err))
    return fail(err + "\n" + backup_help);
  if (a.has("help")) {
    std::cout << backup_help;
    return 0;
  }
  if (a.positional.size() != 1)
    return fail(std::string{"backup needs one NAME\n"} + backup_help);
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  const char* user = std::getenv("USER");
  auto r = client::admin::backup(*conn, a.positional[0],
                                 a.get("by", user != nullptr ? user : "cli"),
                                 a.has("compact"));
  if (!r)
    return fail(r.error());
  if (a.has("json")) {
    print_json(*r);
    return 0;
  }
  std::cout << "backup of node " << r->node_id() << " written to "
            << r->dir() << "/data.mdb: " << r->bytes() << " bytes in "
            << r->millis() << " ms\n";
  return 0;
}

int cmd_status(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json"}, {"node"}, err))
    return fail(err);
  if (a.has("help")) {
    std::cout << "Usage: edda status [--node HOST:PORT] [--json]\n";
    return 0;
  }
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  auto r = client::admin::node_status(*conn);
  if (!r)
    return fail(r.error());
  if (a.has("json")) {
    print_json(*r);
    return 0;
  }
  std::cout << "node at " << conn->endpoint() << "\n  data dir " << r->data_dir()
            << "\n  durability " << r->durability() << "\n  map "
            << r->map_used() << " of " << r->map_size() << " bytes used\n";
  for (auto& [k, v] : r->counters())
    std::cout << "  " << k << " = " << v << "\n";
  return 0;
}

// -- cluster ------------------------------------------------------------------

const char* cluster_help = R"(Usage: edda cluster status [--node HOST:PORT] [--json]
       edda cluster elect NODE --unclean --by NAME [--node HOST:PORT]
       edda cluster add-replica GROUP NODE --by NAME [--node HOST:PORT]
       edda cluster move-group GROUP --to NODE --by NAME [--node HOST:PORT]

The cluster as the node at --node sees it: its members (from etcd), their
addresses, incarnations and the partitions homed on each, whether this
node's link to each is up, the owners of the consumer groups' coordinators
with their fencing tokens, and the node's own lease (renewed how long ago; FENCED when it could not be renewed
in time, so its movable duties are stopped). With cluster.replication_factor
above 1: the copies of this node's storage, each follower in or out of the
in-sync set, how many commits behind, and what it is doing (streaming,
copying, diverged), and every replica group as etcd records it: served by
its node or, after a failover, by another; its epoch and in-sync copies. A
node without cluster.etcd answers as a cluster of one.

elect: when node NODE is gone and none of its in-sync copies is on a live
node, its group waits for it (cluster.failover = auto elects only an
in-sync copy, which has every acknowledged write). --unclean lets the
controller elect the live copy with the most writes instead: the writes
NODE acknowledged after that copy are LOST. Recorded in etcd with --by,
logged as an ERROR and raised as the alert unclean_election. Prints the
node that serves the group now.

add-replica: node NODE keeps a copy of replica group GROUP (a node's whole
storage; the group is named by its node) beyond cluster.replication_factor:
a full copy, then every commit. Waits until that copy is in sync (up to
120 s; it goes on after that). Recorded in etcd with --by.

move-group: moves GROUP to NODE's in-sync copy, online: the node serving
it stops serving it (its followers get its last commits first), that copy
is elected (nothing acknowledged is lost) and NODE serves GROUP's
partitions, transactions and sagas; clients follow through etcd. A group
moved away from its own node stays where it was moved; its node keeps
running as a standby with a copy, and "move-group GROUP --to GROUP" brings
it back. NODE without an in-sync copy: add-replica first. Waits until NODE
serves it (up to 60 s); ask through a node other than the one serving
GROUP (it stops serving it on the way). To replace a machine: start the new node, add a
replica of the old node's group on it, move the group there, stop the old
node.
)";

std::string age_of(int64_t ms) {
  if (ms < 0)
    return "?";
  if (ms < 1000)
    return std::to_string(ms) + "ms";
  auto s = ms / 1000;
  if (s < 60)
    return std::to_string(s) + "s";
  if (s < 3600)
    return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + std::to_string((s % 3600) / 60)
         + "m";
}

int cmd_cluster(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json", "unclean"}, {"node", "by", "to"}, err))
    return fail(err + "\n" + cluster_help);
  if (a.has("help")) {
    std::cout << cluster_help;
    return 0;
  }
  if (!a.positional.empty() && a.positional[0] == "elect") {
    if (a.positional.size() != 2)
      return fail("cluster elect needs the NODE whose group to elect\n"
                  + std::string{cluster_help});
    if (!a.has("unclean"))
      return fail("a clean election happens by itself (cluster.failover = "
                  "auto) once a node is gone; elect asks for an unclean one: "
                  "--unclean\n"
                  + std::string{cluster_help});
    if (!a.has("by"))
      return fail("an unclean election is recorded with who asked: --by "
                  "NAME\n"
                  + std::string{cluster_help});
    auto conn = connect(a);
    if (!conn)
      return fail(conn.error());
    auto r = client::admin::elect_unclean(*conn, a.positional[1],
                                          a.get("by", ""));
    if (!r)
      return fail(r.error());
    std::cout << "group " << r->group() << " is served by " << r->host()
              << " at epoch " << r->epoch() << " (the copy elected at seq "
              << r->elected_seq() << ", "
              << (r->unclean() ? "UNCLEAN: writes after it are lost"
                               : "in sync: nothing lost")
              << ")\n";
    return 0;
  }
  if (!a.positional.empty()
      && (a.positional[0] == "move-group" || a.positional[0] == "add-replica")) {
    bool move = a.positional[0] == "move-group";
    if (a.positional.size() != (move ? 2u : 3u) || (move && !a.has("to")))
      return fail(std::string{move ? "cluster move-group needs GROUP and "
                                     "--to NODE"
                                   : "cluster add-replica needs GROUP and "
                                     "NODE"}
                  + "\n" + cluster_help);
    if (!a.has("by"))
      return fail("a move or a replica is recorded with who asked: --by "
                  "NAME\n"
                  + std::string{cluster_help});
    auto conn = connect(a);
    if (!conn)
      return fail(conn.error());
    auto& group = a.positional[1];
    auto r = move ? client::admin::move_group(*conn, group, a.get("to", ""),
                                              a.get("by", ""))
                  : client::admin::add_replica(*conn, group, a.positional[2],
                                               a.get("by", ""));
    if (!r)
      return fail(r.error());
    std::string isr;
    for (auto& x : r->isr())
      isr += (isr.empty() ? "" : ", ") + x;
    std::cout << "group " << r->group() << " is served by " << r->host()
              << " at epoch " << r->epoch() << "; in-sync copies: "
              << (isr.empty() ? "none" : isr) << "\n";
    return 0;
  }
  if (a.positional.empty() || a.positional[0] != "status")
    return fail((a.positional.empty() ? std::string{"missing command"}
                                      : "unknown cluster command '"
                                          + a.positional[0] + "'")
                + "\n" + cluster_help);
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  auto r = client::admin::cluster_status(*conn);
  if (!r)
    return fail(r.error());
  if (a.has("json")) {
    print_json(*r);
    return 0;
  }
  if (!r->clustered()) {
    std::cout << "single node " << r->node_id() << " (no cluster.etcd)\n";
    return 0;
  }
  std::cout << "cluster " << r->cluster_name() << " (etcd " << r->etcd()
            << "), seen from " << r->node_id() << "\n";
  std::cout << "  lease " << r->lease_id() << ", ttl "
            << age_of(r->lease_ttl_ms()) << ", renewed "
            << age_of(r->renewed_ms_ago()) << " ago, incarnation "
            << r->incarnation() << (r->fenced() ? ", FENCED" : "") << "\n";
  if (!r->problem().empty())
    std::cout << "  problem: " << r->problem() << "\n";
  std::cout << "  " << r->members_size() << " member"
            << (r->members_size() == 1 ? "" : "s") << ":\n";
  for (auto& m : r->members()) {
    std::cout << "    " << m.node_id() << "  " << m.endpoint()
              << "  incarnation " << m.incarnation() << "  up "
              << age_of(r->now_ms() - m.started_ms()) << "  "
              << m.partitions() << " partitions  ";
    if (!m.hosted_by().empty())
      std::cout << "(served by " << m.hosted_by() << " since a failover)  ";
    if (!m.standby_for().empty())
      std::cout << "(standby: " << m.standby_for()
                << " back, following its group to take it back)  ";
    if (m.self())
      std::cout << "(this node)";
    else if (m.connected())
      std::cout << "link up";
    else
      std::cout << "link down"
                << (m.link_error().empty() ? "" : ": " + m.link_error());
    std::cout << "\n";
  }
  if (r->replication_factor() > 1) {
    std::cout << "  replication: factor " << r->replication_factor()
              << ", min in sync " << r->min_insync() << ", leader epoch "
              << r->leader_epoch() << ", last commit " << r->leader_seq()
              << ", acknowledged up to " << r->replicated_seq() << "\n";
    std::cout << "    in sync as etcd records it: ";
    if (r->recorded_isr_size() == 0)
      std::cout << "this node only";
    for (int k = 0; k < r->recorded_isr_size(); ++k)
      std::cout << (k == 0 ? "" : ", ") << r->recorded_isr(k);
    std::cout << "\n";
    if (r->replicas_size() == 0)
      std::cout << "    no follower yet\n";
    for (auto& x : r->replicas()) {
      std::cout << "    copy on " << x.follower() << "  "
                << (x.in_sync() ? "in sync" : "OUT of sync") << "  "
                << x.state() << "  at " << x.acked_seq() << " ("
                << (r->leader_seq() > x.acked_seq()
                      ? r->leader_seq() - x.acked_seq()
                      : 0)
                << " behind, caught up " << age_of(x.caught_up_ms_ago())
                << " ago)";
      if (!x.error().empty())
        std::cout << "  last error: " << x.error();
      std::cout << "\n";
    }
  }
  if (r->groups_size() > 0) {
    std::cout << "  replica groups (etcd):\n";
    for (auto& g : r->groups()) {
      std::cout << "    " << g.group() << "  "
                << (g.host().empty() ? std::string{"served by its node"}
                    : g.host() == g.group() + "~standby"
                      ? "handed back: its node starts it"
                      : "served by " + g.host() + " since a failover")
                << "  epoch " << g.leader_epoch() << "  in sync: ";
      if (g.isr_size() == 0)
        std::cout << "no copy";
      for (int k = 0; k < g.isr_size(); ++k)
        std::cout << (k == 0 ? "" : ", ") << g.isr(k);
      std::cout << "  failover " << (g.failover() ? "auto" : "off");
      if (!g.move_to().empty())
        std::cout << "  (moving to " << g.move_to() << ")";
      else if (!g.move_wanted().empty())
        std::cout << "  (move to " << g.move_wanted() << " asked)";
      else if (g.stopped())
        std::cout << "  (its node stopped cleanly)";
      if (g.unclean())
        std::cout << "  UNCLEAN election asked by " << g.unclean_elected_by();
      if (g.pinned())
        std::cout << "  (moved by " << g.moved_by() << ": stays)";
      for (int k = 0; k < g.extra_replicas_size(); ++k)
        std::cout << (k == 0 ? "  replicas added: " : ", ")
                  << g.extra_replicas(k);
      std::cout << "\n";
    }
  }
  if (r->owners_size() > 0) {
    std::cout << "  owners (fencing token = the etcd key's create revision):\n";
    for (auto& o : r->owners())
      std::cout << "    " << o.resource() << "  " << o.node_id() << "  token "
                << o.token() << "\n";
  }
  return 0;
}

// -- saga ---------------------------------------------------------------------

const char* saga_help = R"(Usage:
  edda saga list [--state S] [--type T] [--older-than SECONDS] [--limit N]
                                            sagas, oldest first; S is running,
                                            compensating, completed,
                                            compensated or failed
  edda saga show ID                         one saga: state, steps, attempts,
                                            errors, timings, history
  edda saga start TYPE [--id ID] [--input JSON] [--wait SECONDS]
                                            start a saga of a type registered
                                            on the node; idempotent: an
                                            existing ID returns that saga;
                                            --wait: until it has ended
  edda saga pause ID [--by NAME]            no new step starts
  edda saga resume ID [--by NAME]
  edda saga retry ID [--by NAME]            the waiting step now; a failed
                                            saga: its failed compensations
  edda saga skip ID STEP [--by NAME]        take STEP as done (forward) or
                                            compensated (backward)
  edda saga compensate ID [--by NAME]       stop going forward, undo what
                                            was done
Every operator command is recorded in the saga's history.
)";



void print_saga(const pb::SagaRecord& r, int64_t now) {
  std::cout << "saga " << r.id() << " (" << r.type() << "): "
            << sagas::state_name(r.state()) << (r.paused() ? " (paused)" : "")
            << ", age "
            << age(now - r.created_ms()) << "\n";
  if (!r.reason().empty())
    std::cout << "  reason: " << r.reason() << "\n";
  if (r.deadline_ms() > 0)
    std::cout << "  deadline in " << age(r.deadline_ms() - now) << "\n";
  for (auto& s : r.steps()) {
    std::cout << "  step " << s.name() << ": " << sagas::step_status_name(s.status())
              << ", " << s.attempts() << " attempt(s)";
    if (s.compensations() > 0)
      std::cout << ", " << s.compensations() << " compensation attempt(s)";
    if (s.confirms() > 0)
      std::cout << ", " << s.confirms() << " confirm attempt(s)";
    if (s.finished_ms() > 0 && s.started_ms() > 0)
      std::cout << ", took " << (s.finished_ms() - s.started_ms()) << " ms";
    if (s.waiting_since_ms() > 0 && r.state() == 1 // running
        && (s.status() == pb::SagaStep::PENDING
            || s.status() == pb::SagaStep::RUNNING))
      std::cout << ", waiting for participant '" << s.waiting_for()
                << "' to register for " << age(now - s.waiting_since_ms());
    if (!s.last_error().empty())
      std::cout << ", last error: " << s.last_error();
    std::cout << "\n";
  }
  for (auto& e : r.history())
    std::cout << "  " << age(now - e.at_ms()) << " ago: " << e.what() << "\n";
}

int cmd_saga(const std::vector<std::string>& argv) {
  args a;
  std::string err;
  if (!a.parse(argv, {"help", "json"},
               {"node", "state", "type", "older-than", "limit", "id", "input",
                "by", "wait"},
               err))
    return fail(err + "\n" + saga_help);
  if (a.has("help") || a.positional.empty()) {
    std::cout << saga_help;
    return a.has("help") ? 0 : 1;
  }
  const auto& verb = a.positional[0];
  static const std::map<std::string, pb::SagaCommand::Op> ops{
    {"pause", pb::SagaCommand::PAUSE},   {"resume", pb::SagaCommand::RESUME},
    {"retry", pb::SagaCommand::RETRY},   {"skip", pb::SagaCommand::SKIP},
    {"compensate", pb::SagaCommand::COMPENSATE}};
  auto op = ops.find(verb);
  if (verb != "list" && verb != "show" && verb != "start" && op == ops.end())
    return fail("unknown saga command '" + verb + "'\n" + saga_help);
  size_t want = verb == "list" ? 1 : verb == "skip" ? 3 : 2;
  if (a.positional.size() != want)
    return fail("wrong arguments for saga " + verb + "\n" + saga_help);
  pb::SagaList q;
  if (verb == "list") {
    uint64_t limit = 0, older = 0;
    if (!a.get_uint("limit", 0, limit, err)
        || !a.get_uint("older-than", 0, older, err))
      return fail(err);
    q.set_limit(static_cast<uint32_t>(limit));
    q.set_older_than_ms(static_cast<int64_t>(older) * 1000);
    q.set_type(a.get("type"));
    if (a.has("state")) {
      auto s = a.get("state");
      auto n = sagas::state_number(s);
      if (n == 0)
        return fail("--state takes running, compensating, completed, "
                    "compensated or failed, got '" + s + "'");
      q.set_state(n);
    }
  }
  auto conn = connect(a);
  if (!conn)
    return fail(conn.error());
  if (verb == "list") {
    auto r = client::admin::saga_list(*conn, q);
    if (!r)
      return fail(r.error());
    if (a.has("json")) {
      print_json(*r);
      return 0;
    }
    std::printf("%-34s %-20s %-13s %8s  %s\n", "saga", "type", "state", "age",
                "reason");
    for (auto& s : r->records())
      std::printf("%-34s %-20s %-13s %8s  %s\n", s.id().c_str(),
                  s.type().c_str(), sagas::state_name(s.state()),
                  age(r->now_ms() - s.created_ms()).c_str(),
                  s.reason().c_str());
    std::printf("%d sagas\n", r->records_size());
    std::fflush(stdout);
    warn_unreachable(r->unreachable(), "sagas");
    return 0;
  }
  if (op != ops.end()) {
    auto r = client::admin::saga_command(
      *conn, a.positional[1], op->second,
      verb == "skip" ? a.positional[2] : std::string{},
      a.get("by", "operator:cli"));
    if (!r)
      return fail(r.error());
    if (a.has("json")) {
      print_json(*r);
      return 0;
    }
    print_saga(*r, now_ms());
    return 0;
  }
  if (verb == "show") {
    auto r = client::admin::saga_show(*conn, a.positional[1]);
    if (!r)
      return fail(r.error());
    if (a.has("json")) {
      print_json(*r);
      return 0;
    }
    print_saga(*r, now_ms());
    return 0;
  }
  uint64_t wait_s = 0;
  if (!a.get_uint("wait", 0, wait_s, err))
    return fail(err);
  auto r = client::admin::saga_start(*conn, a.positional[1], a.get("id"),
                                     a.get("input"),
                                     std::chrono::seconds(wait_s));
  if (!r)
    return fail(r.error());
  if (wait_s > 0) {
    if (a.has("json")) {
      print_json(*r);
      return 0;
    }
    print_saga(r->record(), now_ms());
    return r->record().state()
               == static_cast<uint32_t>(sagas::saga_state::completed)
             ? 0
             : 3;
  }
  if (a.has("json")) {
    print_json(*r);
    return 0;
  }
  std::cout << (r->existed() ? "saga exists already: " : "started saga ")
            << r->record().id() << " (" << r->record().type() << "), "
            << sagas::state_name(r->record().state()) << "\n";
  return 0;
}

// -- bench --------------------------------------------------------------------

const char* bench_help = R"(Usage:
  edda bench txmsg [options]   the txmsg workload (`edda bench txmsg --help`)
  edda bench saga [options]    three-step sagas, participants in another
                               process (`edda bench saga --help`)
  edda bench disk [--dir DIR]  the LMDB commit floor of this disk
)";

int cmd_bench(std::vector<std::string> argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") {
    std::cout << bench_help;
    return argv.empty() ? 2 : 0;
  }
  auto what = argv[0];
  argv.erase(argv.begin());
  if (what == "txmsg" || what == "saga") {
    char self[4096];
    auto n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
      std::cerr << "edda bench: cannot find the edda binary (/proc/self/exe)\n";
      return 1;
    }
    auto exe = std::string(self, static_cast<size_t>(n));
    return what == "saga" ? bench::saga_main(argv, exe)
                          : bench::txmsg_main(argv, exe);
  }
  if (what == "disk")
    return bench::disk_main(argv);
  std::cerr << "edda bench: unknown benchmark '" << what
            << "' (txmsg, saga, disk)\n\n"
            << bench_help;
  return 2;
}

} // namespace
} // namespace edda::cli

int main(int argc, char** argv) {
  using namespace edda::cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h"
      || args[0] == "help") {
    std::cout << main_help;
    return args.empty() ? 1 : 0;
  }
  auto cmd = args[0];
  args.erase(args.begin());
  if (cmd == "node")
    return cmd_node(args);
  if (cmd == "topic")
    return cmd_topic(args);
  if (cmd == "produce")
    return cmd_produce(args);
  if (cmd == "consume")
    return cmd_consume(args);
  if (cmd == "group")
    return cmd_group(args);
  if (cmd == "dlq")
    return cmd_dlq(args);
  if (cmd == "status")
    return cmd_status(args);
  if (cmd == "cluster")
    return cmd_cluster(args);
  if (cmd == "txn")
    return cmd_txn(args);
  if (cmd == "bench")
    return cmd_bench(args);
  if (cmd == "saga")
    return cmd_saga(args);
  if (cmd == "backup")
    return cmd_backup(args);
  std::cerr << "edda: unknown command '" << cmd << "'\n\n" << main_help;
  return 1;
}
