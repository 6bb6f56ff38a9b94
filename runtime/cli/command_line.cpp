#include "cli/command_line.hpp"

#include "cli/suggest.hpp"
#include "config/settings.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <ostream>
#include <sstream>
#include <tuple>

namespace edda::cli {
namespace {

// -- help texts ---------------------------------------------------------------

const char* const main_description
  = "edda: transactional messages and sagas on an actor runtime.";

const char* const main_footer
  = R"(Options for every command that talks to a node:
  --node HOST:PORT          the node's client door (api.listen; default
                            $EDDA_NODE or 127.0.0.1:7430)
  --token SECRET            the door's token (api.tokens; default $EDDA_TOKEN)
  --node-port               --node is the node port (CAF) instead: for a node
                            with api.listen = off
  --json                    machine-readable output
Run `edda COMMAND --help` for a command's options.

Exit codes:
  0  success
  1  any other failure
  2  usage: an unknown command or option, a missing or malformed argument
  3  not found: the node knows no such topic, group, transaction, saga
     type or id
  4  unavailable: the node cannot be reached or is stopping, a partition's
     home is down, a request timed out)";

const char* const node_footer
  = R"(Runs a node until SIGINT or SIGTERM. With no arguments: a single node with
its data in ./edda-data, listening on 127.0.0.1:7420, fsync durability.)";

const char* const topic_footer = R"(Usage:
  edda topic create NAME [--partitions N]   (default: broker.default_partitions)
  edda topic list [--all]                   (--all: include %RETRY% topics)
  edda topic describe NAME                  partitions, end offsets, group lag
  edda topic alter NAME [--partitions N] [--retention D] [--retention-bytes S]
                                            add partitions online (only
                                            grows); keep messages for D
                                            (72h, 7d; 0: for ever) and at
                                            most S a partition (1GiB; 0: no
                                            limit), applied within seconds:
                                            the oldest go first, and groups
                                            that had not read them skip them
  edda topic delete NAME                    delete the topic and its messages)";

const char* const produce_footer = R"(Usage:
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
      (default edda-cli).)";

const char* const group_footer = R"(Usage:
  edda group list                           groups: mode, members, topics
  edda group describe GROUP                 its members (client id, address,
                                            subscriptions) and, per topic and
                                            partition, committed offset, end
                                            offset, lag, in flight, member
  edda group reset-offsets GROUP --topic T (--to-earliest | --to-latest |
                                  --to-offset N | --to-datetime TIME)
                                  [--execute [--force]] [--by NAME]
                                            move GROUP's committed offset on
                                            every partition of T; shows what
                                            it would do unless --execute;
                                            refused while GROUP has live
                                            members unless --force (they are
                                            then given everything again from
                                            the new offset)

TIME is 2026-12-08T09:30:00Z (ISO 8601; UTC unless it has an offset such as
+01:00), 2026-12-08, now-1h, now-30m, or epoch ms.)";

const char* const message_footer = R"(Usage:
  edda message show ID [--topic T]          one stored message: where, when,
                                            key, tags, properties, body
  edda message find --topic T [--key K] [--since TIME] [--limit N]
                                            T's messages with key K and / or
                                            stored since TIME, oldest first
                                            (default at most 100)

These read what a topic stores (its retention decides how long), not what a
group consumed. TIME is 2026-12-08T09:30:00Z (ISO 8601; UTC unless it has an
offset such as +01:00), 2026-12-08, now-1h, now-30m, or epoch ms.)";

const char* const dlq_footer = R"(Usage:
  edda dlq list --group G [--limit N]        dead letters of group G
  edda dlq redrive --group G [--id ID]...    send them back through the group's
                                             retry topic (all, or the given ids))";

const char* const txn_footer = R"(Usage:
  edda txn list [--limit N]                 transactions without an outcome:
                                            age, check-backs so far, next check
  edda txn show TXN_ID                      one transaction, pending or resolved
  edda txn resolve TXN_ID commit|rollback [--by NAME]
                                            operator override, recorded as
                                            resolved by operator:NAME)";

const char* const saga_footer = R"(Usage:
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
Every operator command is recorded in the saga's history.)";

const char* const backup_footer
  = R"(A consistent copy of the node's data (LMDB), taken while it serves: writes
go on meanwhile, the copy holds exactly what was committed when it began.
It is written on the node's machine as storage.backup_dir/NAME/data.mdb
(by default next to the data dir: <node.data_dir>.backups/NAME), synced,
one backup at a time; NAME is new, made of letters, digits, _ - . only.
--compact leaves free pages out (smaller, slower). --by names who asks
(default $USER), logged. Restore: stop the node and start it with
--data-dir <the backup's dir>, or put its data.mdb in place of the data
dir's. In a cluster this copies one node's data, which restores that node
only (its identity is inside).)";

const char* const cluster_usage
  = R"(Usage: edda cluster status [--node HOST:PORT] [--json]
       edda cluster elect NODE --unclean --by NAME [--node HOST:PORT]
       edda cluster add-replica GROUP NODE --by NAME [--node HOST:PORT]
       edda cluster move-group GROUP --to NODE --by NAME [--node HOST:PORT]
)";

const char* const cluster_status_text
  = R"(The cluster as the node at --node sees it: its members (from etcd), their
addresses, incarnations and the partitions homed on each, whether this
node's link to each is up, the owners of the consumer groups' coordinators
with their fencing tokens, and the node's own lease (renewed how long ago;
FENCED when it could not be renewed in time, so its movable duties are
stopped). With cluster.replication_factor above 1: the copies of this
node's storage, each follower in or out of the in-sync set, how many
commits behind, and what it is doing (streaming, copying, diverged), and
every replica group as etcd records it: served by its node or, after a
failover, by another; its epoch and in-sync copies. A node without
cluster.etcd answers as a cluster of one.)";

const char* const cluster_elect_text
  = R"(elect: when node NODE is gone and none of its in-sync copies is on a live
node, its group waits for it (cluster.failover = auto elects only an
in-sync copy, which has every acknowledged write). --unclean lets the
controller elect the live copy with the most writes instead: the writes
NODE acknowledged after that copy are LOST. Recorded in etcd with --by,
logged as an ERROR and raised as the alert unclean_election. Prints the
node that serves the group now.)";

const char* const cluster_add_replica_text
  = R"(add-replica: node NODE keeps a copy of replica group GROUP (a node's whole
storage; the group is named by its node) beyond cluster.replication_factor:
a full copy, then every commit. Waits until that copy is in sync (up to
120 s; it goes on after that). Recorded in etcd with --by.)";

const char* const cluster_move_group_text
  = R"(move-group: moves GROUP to NODE's in-sync copy, online: the node serving
it stops serving it (its followers get its last commits first), that copy
is elected (nothing acknowledged is lost) and NODE serves GROUP's
partitions, transactions and sagas; clients follow through etcd. A group
moved away from its own node stays where it was moved; its node keeps
running as a standby with a copy, and "move-group GROUP --to GROUP" brings
it back. NODE without an in-sync copy: add-replica first. Waits until NODE
serves it (up to 60 s); ask through a node other than the one serving
GROUP (it stops serving it on the way). To replace a machine: start the
new node, add a replica of the old node's group on it, move the group
there, stop the old node.)";

const char* const bench_footer = R"(Usage:
  edda bench txmsg [options]   the txmsg workload (`edda bench txmsg --help`)
  edda bench saga [options]    three-step sagas, participants in another
                               process (`edda bench saga --help`)
  edda bench disk [--dir DIR]  the LMDB commit floor of this disk)";

// -- declaring options --------------------------------------------------------

std::string user_or_cli() {
  const char* user = std::getenv("USER");
  return user != nullptr ? user : "cli";
}

/// --node, --token, --node-port, --json: on every command that talks to a
/// node, and on its command group (`edda topic --json list`), bound to the
/// same fields. $EDDA_NODE and $EDDA_TOKEN apply where the connection is
/// made: the default of --node depends on --node-port.
void add_node_options(CLI::App* app, node_options& o) {
  const char* group = "Options for talking to the node";
  app
    ->add_option("--node", o.node,
                 "the node's client door (api.listen; default $EDDA_NODE "
                 "or 127.0.0.1:7430; with --node-port 127.0.0.1:7420)")
    ->type_name("HOST:PORT")
    ->group(group);
  app
    ->add_option("--token", o.token,
                 "the door's token (api.tokens; default $EDDA_TOKEN)")
    ->type_name("SECRET")
    ->group(group);
  app
    ->add_flag("--node-port", o.node_port,
               "--node is the node port (CAF) instead: for a node "
               "with api.listen = off")
    ->group(group);
  app->add_flag("--json", o.json, "machine-readable output")->group(group);
}

/// An unsigned number: digits only (as many as fit), else a usage error
/// naming the option and what was given.
CLI::Option* add_number(CLI::App* app, const std::string& name, number& n,
                        const std::string& what,
                        const std::string& type = "N") {
  auto set = [&n, name](const std::string& text) {
    if (text.empty()
        || text.find_first_not_of("0123456789") != std::string::npos
        || text.size() > 19)
      throw CLI::ValidationError(name + " expects a non-negative integer, got '"
                                 + text + "'");
    n.value = std::stoull(text);
    n.given = true;
  };
  return app->add_option_function<std::string>(name, set, what)
    ->type_name(type);
}

/// A duration or a size ("72h", "1GiB"; "0" turns it off): parsed by
/// `parse` (config's, as in the settings), else a usage error.
CLI::Option* add_amount(CLI::App* app, const std::string& name, number& n,
                        const std::string& type,
                        bool (*parse)(const std::string&, uint64_t&),
                        const std::string& what) {
  auto set = [&n, name, type, parse](const std::string& text) {
    uint64_t v = 0;
    if (!parse(text, v))
      throw CLI::ValidationError(
        name + ": '" + text + "' is not "
        + (type == "D" ? "a duration (72h, 7d, 30m, 500ms; 0: for ever)"
                       : "a size (1GiB, 500MiB, 64KiB, bytes; 0: no limit)"));
    n.value = v;
    n.given = true;
  };
  return app->add_option_function<std::string>(name, set, what)
    ->type_name(type);
}

/// A repeatable option: one value per occurrence, every occurrence kept.
CLI::Option* add_list(CLI::App* app, const std::string& name,
                      std::vector<std::string>& values, const std::string& what,
                      const std::string& type) {
  return app->add_option(name, values, what)
    ->allow_extra_args(false)
    ->take_all()
    ->type_name(type);
}

CLI::Option* add_text(CLI::App* app, const std::string& name,
                      std::string& value, const std::string& what,
                      const std::string& type) {
  return app->add_option(name, value, what)->type_name(type);
}

/// A name a command needs (NAME, GROUP, ...): required, though what it
/// says when missing is check()'s.
CLI::Option* add_name(CLI::App* app, const std::string& name,
                      std::string& value, const std::string& what) {
  return app->add_option(name, value, what)->type_name("")->required();
}

/// A command (or a command group) under `parent`; with `cl` it talks to a
/// node and takes the node options.
CLI::App* add_command(CLI::App* parent, const std::string& name,
                      const std::string& what, command_line* cl) {
  auto* app = parent->add_subcommand(name, what);
  if (cl != nullptr)
    add_node_options(app, cl->conn);
  return app;
}

/// A group of commands (topic, saga, ...): one of them is required.
CLI::App* add_group(CLI::App* parent, const std::string& name,
                    const std::string& what, command_line* cl) {
  auto* app = add_command(parent, name, what, cl);
  app->require_subcommand(1);
  return app;
}

void describe_node(CLI::App& root, command_line& cl) {
  auto* node = add_command(
    &root, "node", "run a node (embedded single node by default)", nullptr);
  auto& o = cl.node;
  add_text(node, "--config", o.config,
           "TOML settings (see config/default.toml)", "FILE");
  add_list(node, "--set", o.set,
           "override one setting, e.g. --set storage.durability=nosync "
           "(repeatable)",
           "KEY=VALUE");
  add_text(node, "--data-dir", o.data_dir, "same as --set node.data_dir=DIR",
           "DIR");
  add_text(node, "--listen", o.listen,
           "same as node.listen_host / node.listen_port", "HOST:PORT");
  add_text(node, "--durability", o.durability,
           "fsync (default), nometasync or nosync", "MODE");
  node->add_flag("--print-config", o.print_config,
                 "print every setting with its value and description, then "
                 "exit");
  node->footer(node_footer);
}

void describe_topic(CLI::App& root, command_line& cl) {
  auto* topic = add_group(&root, "topic",
                          "manage topics: create, list, describe, alter, "
                          "delete",
                          &cl);
  auto& o = cl.topic;
  auto name = [&](CLI::App* app) {
    add_name(app, "NAME", o.name, "the topic");
  };
  auto retention = [&](CLI::App* app) {
    add_amount(app, "--retention", o.retention_ms, "D", config::parse_duration_ms,
               "keep messages for D: 72h, 7d, 30m (0: for ever)");
    add_amount(app, "--retention-bytes", o.retention_bytes, "S",
               config::parse_size_bytes,
               "keep at most S a partition: 1GiB, 500MiB (0: no limit)");
  };
  auto* create = add_command(topic, "create", "create a topic", &cl);
  name(create);
  add_number(create, "--partitions", o.partitions,
             "its partitions (default: broker.default_partitions)");
  retention(create);
  auto* list
    = add_command(topic, "list", "the topics and their partitions", &cl);
  list->add_flag("--all", o.all, "include %RETRY% topics");
  auto* describe
    = add_command(topic, "describe", "partitions, end offsets, group lag", &cl);
  name(describe);
  auto* alter = add_command(
    topic, "alter", "add partitions (only grows), set retention; online", &cl);
  name(alter);
  add_number(alter, "--partitions", o.partitions,
             "the topic's partitions from now on");
  retention(alter);
  auto* del
    = add_command(topic, "delete", "delete the topic and its messages", &cl);
  name(del);
  topic->footer(topic_footer);
}

void describe_produce(CLI::App& root, command_line& cl) {
  auto* produce = add_command(&root, "produce",
                              "send messages (or measure throughput with "
                              "--count)",
                              &cl);
  auto& o = cl.produce;
  add_text(produce, "--topic", o.topic, "the topic", "T")->required();
  add_text(produce, "--key", o.key,
           "the message's key (with --count: K0 ... K1023)", "K");
  add_list(produce, "--tag", o.tags, "a tag (repeatable)", "TAG");
  add_list(produce, "--prop", o.props, "a property (repeatable)", "K=V");
  add_number(produce, "--delay-ms", o.delay_ms,
             "deliver it MS from now (a delayed message)", "MS");
  add_number(produce, "--count", o.count,
             "throughput: send N messages of --size bytes");
  add_number(produce, "--size", o.size,
             "with --count: bytes a message (default 256)",
             "BYTES");
  add_number(produce, "--window", o.window,
             "with --count: at most W unacknowledged (default 256)", "W");
  produce->add_flag("--transactional", o.transactional,
                    "with --count: each message in a transaction");
  add_text(produce, "--group", o.group,
           "with --transactional: the producer group (default edda-cli)", "G");
  produce
    ->add_option("BODY", o.body,
                 "the body, words joined by spaces (default: standard input)")
    ->type_name("");
  produce->footer(produce_footer);
}

void describe_consume(CLI::App& root, command_line& cl) {
  auto* consume = add_command(&root, "consume",
                              "receive messages as a member of a consumer "
                              "group",
                              &cl);
  auto& o = cl.consume;
  add_text(consume, "--topic", o.topic, "the topic", "T")->required();
  add_text(consume, "--group", o.group, "the consumer group", "G")->required();
  add_text(consume, "--expr", o.expr,
           "tag expression: '*' (default), 'TagA', 'TagA || TagC'", "EXPR");
  consume->add_flag("--broadcast", o.broadcast,
                    "broadcast mode (default: clustering)");
  add_text(consume, "--from", o.from,
           "latest: a new group starts at the end (default: earliest)",
           "latest");
  add_number(consume, "--count", o.count, "stop after N messages");
  add_number(consume, "--idle-ms", o.idle_ms,
             "stop after MS without a message (default: run until "
             "Ctrl-C, or 3000 with --count)",
             "MS");
  add_number(consume, "--fail-every", o.fail_every,
             "answer retry_later for every K-th message (to try retries)", "K");
  consume->add_flag("--quiet", o.quiet,
                    "do not print messages; print the throughput at the end");
  add_text(consume, "--client-id", o.client_id,
           "stable member id (default: host-pid-n)", "ID");
}

void describe_group(CLI::App& root, command_line& cl) {
  auto* group = add_group(&root, "group",
                          "consumer groups; one group's members, addresses "
                          "and lag per partition",
                          &cl);
  add_command(group, "list", "groups: mode, members, topics", &cl);
  auto* describe = add_command(group, "describe",
                               "its members (client id, address, "
                               "subscriptions) and, per topic and partition, "
                               "committed offset, end offset, lag, in flight, "
                               "member",
                               &cl);
  add_name(describe, "GROUP", cl.group.name, "the consumer group");
  auto& o = cl.group;
  o.by = user_or_cli();
  auto* reset = add_command(group, "reset-offsets",
                            "move GROUP's committed offset on every partition "
                            "of a topic (a dry run unless --execute)",
                            &cl);
  add_name(reset, "GROUP", o.name, "the consumer group");
  add_text(reset, "--topic", o.topic, "the topic", "T")->required();
  reset->add_flag("--to-earliest", o.to_earliest,
                  "to the oldest message kept");
  reset->add_flag("--to-latest", o.to_latest,
                  "to the end: only what comes next");
  add_number(reset, "--to-offset", o.to_offset,
             "to offset N on every partition (kept within each)");
  add_text(reset, "--to-datetime", o.to_datetime,
           "to the first message stored at or after TIME", "TIME");
  reset->add_flag("--execute", o.execute,
                  "do it (without: show what it would do)");
  reset->add_flag("--force", o.force,
                  "even while the group has live members");
  add_text(reset, "--by", o.by, "who asks, logged (default $USER)", "NAME");
  group->footer(group_footer);
}

void describe_message(CLI::App& root, command_line& cl) {
  auto* message = add_group(&root, "message",
                            "read a topic's stored messages: show one by id, "
                            "find by key or time",
                            &cl);
  auto& o = cl.message;
  auto* show = add_command(message, "show",
                           "one stored message by its id: where, when, key, "
                           "tags, properties, body",
                           &cl);
  add_name(show, "ID", o.id, "the message id");
  add_text(show, "--topic", o.topic, "look only in topic T (faster)", "T");
  auto* find = add_command(message, "find",
                           "a topic's messages by key and / or time, oldest "
                           "first",
                           &cl);
  add_text(find, "--topic", o.topic, "the topic", "T")->required();
  find->add_option_function<std::string>(
    "--key",
    [&o](const std::string& k) {
      o.key = k;
      o.by_key = true;
    },
    "messages with key K");
  add_text(find, "--since", o.since, "messages stored at or after TIME",
           "TIME");
  add_number(find, "--limit", o.limit, "at most N of them (default 100)");
  message->footer(message_footer);
}

void describe_dlq(CLI::App& root, command_line& cl) {
  auto* dlq = add_group(&root, "dlq",
                        "inspect and redrive a group's dead letters", &cl);
  auto& o = cl.dlq;
  auto* list = add_command(dlq, "list", "dead letters of group G", &cl);
  add_text(list, "--group", o.group, "the consumer group", "G")->required();
  add_number(list, "--limit", o.limit, "at most N of them");
  auto* redrive = add_command(dlq, "redrive",
                              "send them back through the group's retry "
                              "topic (all, or the given ids)",
                              &cl);
  add_text(redrive, "--group", o.group, "the consumer group", "G")->required();
  add_list(redrive, "--id", o.ids, "only this dead letter (repeatable)", "ID");
  dlq->footer(dlq_footer);
}

void describe_txn(CLI::App& root, command_line& cl) {
  auto* txn = add_group(
    &root, "txn", "transactions without an outcome; operator override", &cl);
  auto& o = cl.txn;
  o.by = user_or_cli();
  auto* list = add_command(txn, "list",
                           "transactions without an outcome: age, check-backs "
                           "so far, next check",
                           &cl);
  add_number(list, "--limit", o.limit, "at most N of them");
  auto* show
    = add_command(txn, "show", "one transaction, pending or resolved", &cl);
  add_name(show, "TXN_ID", o.id, "the transaction");
  auto* resolve = add_command(txn, "resolve",
                              "operator override, recorded as resolved by "
                              "operator:NAME",
                              &cl);
  add_name(resolve, "TXN_ID", o.id, "the transaction");
  add_name(resolve, "OUTCOME", o.outcome, "commit or rollback");
  add_text(resolve, "--by", o.by, "who decides (default $USER)", "NAME");
  txn->footer(txn_footer);
}

void describe_saga(CLI::App& root, command_line& cl) {
  auto* saga = add_group(&root, "saga",
                         "sagas: filter by state, type, age; steps and "
                         "history; start; operator commands",
                         &cl);
  auto& o = cl.saga;
  auto* list = add_command(
    saga, "list", "sagas, oldest first, filtered by state, type, age", &cl);
  add_text(list, "--state", o.state,
           "running, compensating, completed, compensated or failed", "S");
  add_text(list, "--type", o.type_filter, "only sagas of type T", "T");
  add_number(list, "--older-than", o.older_than,
             "only sagas started at least SECONDS ago", "SECONDS");
  add_number(list, "--limit", o.limit, "at most N of them");
  auto id = [&](CLI::App* app) {
    add_name(app, "ID", o.id, "the saga");
  };
  auto* show = add_command(saga, "show",
                           "one saga: state, steps, attempts, errors, "
                           "timings, history",
                           &cl);
  id(show);
  auto* start = add_command(
    saga, "start", "start a saga of a type registered on the node", &cl);
  add_name(start, "TYPE", o.type, "the saga type");
  add_text(start, "--id", o.new_id,
           "its id; idempotent: an existing ID returns that saga", "ID");
  add_text(start, "--input", o.input, "its input", "JSON");
  add_number(start, "--wait", o.wait,
             "wait until it has ended (at most SECONDS)",
             "SECONDS");
  struct verb {
    const char* name;
    const char* what;
  };
  for (auto v : {verb{"pause", "no new step starts"},
                 verb{"resume", "steps start again"},
                 verb{"retry", "the waiting step now; a failed saga: its "
                               "failed compensations"},
                 verb{"skip", "take STEP as done (forward) or compensated "
                              "(backward)"},
                 verb{"compensate", "stop going forward, undo what was "
                                    "done"}}) {
    auto* op = add_command(saga, v.name, v.what, &cl);
    id(op);
    if (std::string{v.name} == "skip")
      add_name(op, "STEP", o.step, "the step");
    add_text(op, "--by", o.by,
             "who asks, recorded in the saga's history (default "
             "operator:cli)",
             "NAME");
  }
  saga->footer(saga_footer);
}

void describe_status_and_backup(CLI::App& root, command_line& cl) {
  add_command(&root, "status", "the node's storage, durability and counters",
              &cl);
  auto* backup = add_command(&root, "backup",
                             "a consistent hot copy of the node's data", &cl);
  auto& o = cl.backup;
  o.by = user_or_cli();
  add_name(backup, "NAME", o.name, "the backup's name (new)");
  backup->add_flag("--compact", o.compact,
                   "leave free pages out (smaller, slower)");
  add_text(backup, "--by", o.by, "who asks, logged (default $USER)", "WHO");
  backup->footer(backup_footer);
}

void describe_cluster(CLI::App& root, command_line& cl) {
  auto* cluster = add_group(&root, "cluster",
                            "members, their addresses and links, the lease; "
                            "elect, add-replica, move-group",
                            &cl);
  auto& o = cl.cluster;
  auto by = [&](CLI::App* app) {
    add_text(app, "--by", o.by, "who asks, recorded in etcd", "NAME")
      ->required();
  };
  auto* status = add_command(cluster, "status",
                             "members, their addresses and links, the lease, "
                             "the copies",
                             &cl);
  status->footer(cluster_status_text);
  auto* elect = add_command(cluster, "elect",
                            "elect a copy of gone node NODE's group that may "
                            "miss writes",
                            &cl);
  add_name(elect, "NODE", o.node_id, "the node whose group to elect");
  elect
    ->add_flag("--unclean", o.unclean,
               "the writes after the elected copy are lost")
    ->required();
  by(elect);
  elect->footer(cluster_elect_text);
  auto* add = add_command(cluster, "add-replica",
                          "node NODE keeps a copy of replica group GROUP", &cl);
  add_name(add, "GROUP", o.group, "the replica group (named by its node)");
  add_name(add, "NODE", o.node_id, "the node to keep the copy");
  by(add);
  add->footer(cluster_add_replica_text);
  auto* move = add_command(cluster, "move-group",
                           "move GROUP to NODE's in-sync copy, online", &cl);
  add_name(move, "GROUP", o.group, "the replica group (named by its node)");
  add_text(move, "--to", o.to, "the node to serve it", "NODE")->required();
  by(move);
  move->footer(cluster_move_group_text);
  cluster->footer(std::string{cluster_usage} + "\n" + cluster_status_text
                  + "\n\n" + cluster_elect_text + "\n\n"
                  + cluster_add_replica_text + "\n\n"
                  + cluster_move_group_text);
}

void describe_bench(CLI::App& root) {
  auto* bench = add_group(&root, "bench",
                          "benchmarks (BENCHMARKS.md): the txmsg workload "
                          "against a node process; sagas; the LMDB disk floor",
                          nullptr);
  // Each benchmark parses its own options (tests/bench): every word after
  // its name goes to it, -h and --help too.
  for (auto [name, what] :
       {std::pair{"txmsg", "the txmsg workload (`edda bench txmsg --help`)"},
        std::pair{"saga", "three-step sagas, participants in another process "
                          "(`edda bench saga --help`)"},
        std::pair{"disk", "the LMDB commit floor of this disk "
                          "(`edda bench disk --help`)"}}) {
    auto* b = bench->add_subcommand(name, what);
    b->set_help_flag();
    b->prefix_command();
  }
  // CLI11 hands what follows a `--` back to the group: it may keep it
  // (parse() passes the words on as they were typed).
  bench->allow_extras();
  bench->footer(bench_footer);
}

constexpr size_t name_column = 28; // then descriptions, to column 80

/// `text` flowed into lines of at most `width` (a longer word alone).
std::string wrapped(const std::string& text, size_t width) {
  std::string out, line, word;
  std::istringstream words{text};
  while (words >> word) {
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      out += line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  return out + line;
}

/// The descriptions of `app`'s options and commands, and theirs, flowed
/// into the column CLI11 prints them in (it does not wrap them itself).
void wrap_descriptions(CLI::App& app) {
  for (auto* opt : app.get_options())
    opt->description(wrapped(opt->get_description(), 80 - name_column));
  for (auto* sub : app.get_subcommands({})) {
    sub->description(wrapped(sub->get_description(), 80 - name_column));
    wrap_descriptions(*sub);
  }
}

/// The whole command line, bound to `cl`.
void describe(CLI::App& app, command_line& cl) {
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.require_subcommand(1);
  app.get_formatter()->column_width(name_column);
  describe_node(app, cl);
  describe_topic(app, cl);
  describe_produce(app, cl);
  describe_consume(app, cl);
  describe_group(app, cl);
  describe_message(app, cl);
  describe_dlq(app, cl);
  describe_txn(app, cl);
  describe_saga(app, cl);
  describe_status_and_backup(app, cl);
  describe_cluster(app, cl);
  describe_bench(app);
  wrap_descriptions(app);
  app.footer(main_footer);
}

// -- what went wrong ----------------------------------------------------------

/// The app and the commands chosen under it: edda, topic, create.
std::vector<CLI::App*> chosen(CLI::App& root) {
  std::vector<CLI::App*> chain{&root};
  for (auto subs = root.get_subcommands(); !subs.empty();
       subs = chain.back()->get_subcommands())
    chain.push_back(subs.front());
  return chain;
}

/// The command as typed: topic, create.
std::vector<std::string> path_of(const std::vector<CLI::App*>& chain) {
  std::vector<std::string> path;
  for (size_t i = 1; i < chain.size(); ++i)
    path.push_back(chain[i]->get_name());
  return path;
}

std::string name_of(const std::vector<CLI::App*>& chain) {
  std::string out;
  for (auto* app : chain)
    out += (out.empty() ? "" : " ") + app->get_name();
  return out;
}

bool is_dashed(const std::string& word) {
  return word.size() > 1 && word[0] == '-';
}

std::string unknown_option(const CLI::App& app, std::string word) {
  word = word.substr(0, word.find('='));
  std::vector<std::string> known;
  for (const auto* opt : app.get_options())
    for (const auto& name : opt->get_lnames())
      known.push_back("--" + name);
  auto near = closest(word, known);
  if (!near.empty())
    return "unknown option " + word + "; did you mean " + near + "?";
  if (word.compare(0, 2, "--") != 0)
    return "unknown option " + word
           + " (options are --name; a positional word starting with '-' goes "
             "after --)";
  return "unknown option " + word;
}

std::string unknown_command(const CLI::App& app, const std::string& word) {
  std::vector<std::string> known;
  for (const auto* sub : app.get_subcommands({}))
    known.push_back(sub->get_name());
  auto what = app.get_parent() == nullptr
                ? std::string{"unknown command '"}
                : "unknown " + app.get_name() + " command '";
  auto near = closest(word, known);
  return what + word + "'"
         + (near.empty() ? std::string{} : "; did you mean '" + near + "'?");
}

/// What the parse left over, said where it was typed: an unknown option
/// first, else an unknown command or an argument too many; `chain` ends
/// with the command it was typed to. Empty when nothing was left. A word
/// after `--` is an argument, whatever it looks like (CLI11 hands those a
/// command has no room for to its group).
std::string leftover(std::vector<CLI::App*>& chain,
                     const std::vector<std::string>& args) {
  auto mark = std::find(args.begin(), args.end(), "--");
  auto typed_as_option = [&](const std::string& word) {
    return is_dashed(word) && word != "--"
           && std::find(args.begin(), mark, word) != mark;
  };
  for (size_t depth = 0; depth < chain.size(); ++depth) {
    auto rest = chain[depth]->remaining(false);
    auto option = std::find_if(rest.begin(), rest.end(), typed_as_option);
    if (option != rest.end()) {
      chain.resize(depth + 1);
      return unknown_option(*chain.back(), *option);
    }
  }
  for (size_t depth = 0; depth < chain.size(); ++depth) {
    auto rest = chain[depth]->remaining(false);
    rest.erase(std::remove(rest.begin(), rest.end(), "--"), rest.end());
    if (rest.empty())
      continue;
    const auto& word = rest.front();
    if (std::find(args.begin(), mark, word) == mark) // after --: the command's
      return "unexpected argument '" + word + "'";
    chain.resize(depth + 1);
    if (!chain.back()->get_subcommands({}).empty())
      return unknown_command(*chain.back(), word);
    return "unexpected argument '" + word + "'";
  }
  return {};
}

/// A word starting with '-' is never a name: CLI11 takes "-5" or "---x"
/// as a positional, edda refuses it unless it follows `--`. Walks `args`
/// as the parse did (every option here takes one value or none); returns
/// the first such word, or "".
std::string dashed_positional(const std::vector<std::string>& args,
                              CLI::App& root) {
  auto chain = chosen(root);
  size_t depth = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const auto& word = args[i];
    auto* app = chain[depth];
    if (word == "--" || app->get_prefix_command())
      return {};
    if (depth + 1 < chain.size() && word == chain[depth + 1]->get_name()) {
      ++depth;
      continue;
    }
    if (!is_dashed(word))
      continue;
    auto name = word.substr(0, word.find('='));
    const auto* opt = app->get_option_no_throw(name);
    if (opt == nullptr)
      return word;
    if (name.size() == word.size() && opt->get_expected_min() > 0)
      ++i; // its value, whatever it looks like
  }
  return {};
}

/// What CLI11 cannot check: a name a command needs, a value out of range.
/// Empty when all is well; else the message, as edda has always said it.
std::string check(const command_line& cl) {
  const auto& path = cl.path;
  auto cmd = path.front();
  auto verb = path.size() > 1 ? path[1] : std::string{};
  if (cmd == "topic") {
    if (cl.topic.partitions.given && cl.topic.partitions.value == 0)
      return "invalid_argument: --partitions must be at least 1 (without it: "
             "broker.default_partitions)";
    if (verb != "list" && cl.topic.name.empty())
      return "topic " + verb + " needs a topic NAME";
    if (verb == "alter" && !cl.topic.partitions.given
        && !cl.topic.retention_ms.given && !cl.topic.retention_bytes.given)
      return "topic alter needs --partitions N, --retention D or "
             "--retention-bytes S";
  }
  if (cmd == "produce") {
    if (cl.produce.topic.empty())
      return "produce needs --topic";
    if (cl.produce.window.value == 0)
      return "--window must be at least 1";
    for (auto& kv : cl.produce.props)
      if (kv.find('=') == std::string::npos)
        return "--prop expects KEY=VALUE, got '" + kv + "'";
  }
  if (cmd == "consume") {
    if (cl.consume.topic.empty() || cl.consume.group.empty())
      return "consume needs --topic and --group";
    if (cl.consume.from != "earliest" && cl.consume.from != "latest")
      return "--from expects earliest or latest, got '" + cl.consume.from + "'";
  }
  if (cmd == "group" && verb == "describe" && cl.group.name.empty())
    return "group describe needs one GROUP";
  if (cmd == "group" && verb == "reset-offsets") {
    const auto& g = cl.group;
    if (g.name.empty() || g.topic.empty())
      return "group reset-offsets needs GROUP and --topic T";
    int targets = (g.to_earliest ? 1 : 0) + (g.to_latest ? 1 : 0)
                  + (g.to_offset.given ? 1 : 0)
                  + (g.to_datetime.empty() ? 0 : 1);
    if (targets != 1)
      return "group reset-offsets needs one of --to-earliest, --to-latest, "
             "--to-offset N, --to-datetime TIME";
    if (g.force && !g.execute)
      return "--force goes with --execute (a dry run changes nothing)";
    if (g.execute && g.by.empty())
      return "--execute is logged with who asked: --by NAME";
  }
  if (cmd == "message" && cl.message.limit.value > 10000)
    return "--limit is at most 10000 (narrow with --since)";
  if (cmd == "message" && verb == "show" && cl.message.id.empty())
    return "message show needs one message ID";
  if (cmd == "message" && verb == "find" && !cl.message.by_key
      && cl.message.since.empty())
    return "message find needs --key K or --since TIME";
  if (cmd == "dlq" && cl.dlq.group.empty())
    return "dlq needs --group";
  if (cmd == "txn"
      && ((verb != "list" && cl.txn.id.empty())
          || (verb == "resolve" && cl.txn.outcome != "commit"
              && cl.txn.outcome != "rollback")))
    return "wrong arguments for txn " + verb;
  if (cmd == "saga"
      && ((verb == "start" && cl.saga.type.empty())
          || (verb != "list" && verb != "start" && cl.saga.id.empty())
          || (verb == "skip" && cl.saga.step.empty())))
    return "wrong arguments for saga " + verb;
  if (cmd == "backup" && cl.backup.name.empty())
    return "backup needs one NAME";
  if (cmd == "cluster") {
    const auto& o = cl.cluster;
    if (verb == "elect") {
      if (o.node_id.empty())
        return "cluster elect needs the NODE whose group to elect";
      if (!o.unclean)
        return "a clean election happens by itself (cluster.failover = auto) "
               "once a node is gone; elect asks for an unclean one: --unclean";
      if (o.by.empty())
        return "an unclean election is recorded with who asked: --by NAME";
    }
    if (verb == "move-group" && (o.group.empty() || o.to.empty()))
      return "cluster move-group needs GROUP and --to NODE";
    if (verb == "add-replica" && (o.group.empty() || o.node_id.empty()))
      return "cluster add-replica needs GROUP and NODE";
    if ((verb == "move-group" || verb == "add-replica") && o.by.empty())
      return "a move or a replica is recorded with who asked: --by NAME";
  }
  return {};
}

int usage(const std::vector<CLI::App*>& chain, const std::string& what,
          std::ostream& err) {
  err << "edda: " << what << "\nSee `" << name_of(chain) << " --help`.\n";
  return exit_usage;
}

/// CLI11's word for what it refused, as edda says it.
std::string refused(const CLI::ParseError& e) {
  std::string what = e.what();
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e) != nullptr
      && what.compare(0, 2, "--") == 0)
    return "option " + what.substr(0, what.find(':')) + " needs a value";
  return what;
}

} // namespace

// -- times --------------------------------------------------------------------

namespace {

/// Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's
/// days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/// Reads exactly `n` digits at `pos`.
bool digits(const std::string& s, size_t& pos, size_t n, int& out) {
  if (pos + n > s.size())
    return false;
  out = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9')
      return false;
    out = out * 10 + (c - '0');
  }
  pos += n;
  return true;
}

bool iso_time_ms(const std::string& s, int64_t& out) {
  size_t pos = 0;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, ms = 0;
  if (!digits(s, pos, 4, y) || pos >= s.size() || s[pos++] != '-'
      || !digits(s, pos, 2, mo) || pos >= s.size() || s[pos++] != '-'
      || !digits(s, pos, 2, d))
    return false;
  static const int month_days[] = {31, 28, 31, 30, 31, 30,
                                   31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1
      || d > month_days[mo - 1] + (mo == 2 && leap(y) ? 1 : 0))
    return false;
  int64_t offset_min = 0;
  if (pos < s.size()) {
    if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ')
      return false;
    ++pos;
    if (!digits(s, pos, 2, h) || pos >= s.size() || s[pos++] != ':'
        || !digits(s, pos, 2, mi))
      return false;
    if (pos < s.size() && s[pos] == ':') {
      ++pos;
      if (!digits(s, pos, 2, sec))
        return false;
      if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
        ++pos;
        size_t from = pos;
        int scale = 100;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
          ms += (s[pos] - '0') * scale;
          scale /= 10;
          ++pos;
        }
        if (pos == from)
          return false;
      }
    }
    if (h > 23 || mi > 59 || sec > 59)
      return false;
    if (pos < s.size()) {
      char z = s[pos++];
      if (z == 'Z' || z == 'z') {
        // UTC
      } else if (z == '+' || z == '-') {
        int oh = 0, om = 0;
        if (!digits(s, pos, 2, oh))
          return false;
        if (pos < s.size() && s[pos] == ':')
          ++pos;
        if (!digits(s, pos, 2, om) || oh > 23 || om > 59)
          return false;
        offset_min = (z == '+' ? 1 : -1) * (oh * 60 + om);
      } else {
        return false;
      }
    }
    if (pos != s.size())
      return false;
  }
  int64_t secs = days_from_civil(y, static_cast<unsigned>(mo),
                                 static_cast<unsigned>(d))
                   * 86400
                 + h * 3600 + mi * 60 + sec - offset_min * 60;
  out = secs * 1000 + ms;
  return true;
}

} // namespace

bool parse_time_ms(const std::string& text, int64_t now_ms, int64_t& out) {
  if (text == "now") {
    out = now_ms;
    return true;
  }
  if (text.compare(0, 4, "now-") == 0) {
    uint64_t ago = 0;
    if (!config::parse_duration_ms(text.substr(4), ago)
        || ago > static_cast<uint64_t>(now_ms))
      return false;
    out = now_ms - static_cast<int64_t>(ago);
    return true;
  }
  // Epoch ms: 10 digits at least (2001 on), so that "2026" or "20261208"
  // is not taken for a time in 1970.
  if (text.size() >= 10 && text.size() <= 16
      && text.find_first_not_of("0123456789") == std::string::npos) {
    out = std::stoll(text);
    return true;
  }
  return iso_time_ms(text, out);
}

int parse(const std::vector<std::string>& args_in, command_line& out,
          std::ostream& out_stream, std::ostream& err_stream) {
  auto args = args_in;
  // `edda help [COMMAND...]` is `edda [COMMAND...] --help`.
  if (!args.empty() && args.front() == "help") {
    args.erase(args.begin());
    args.emplace_back("--help");
  }
  CLI::App app{main_description, "edda"};
  describe(app, out);
  if (args.empty()) {
    out_stream << app.help();
    return exit_usage;
  }
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::Success&) { // -h, --help
    out_stream << app.help();
    return exit_ok;
  } catch (const CLI::ParseError& e) {
    auto chain = chosen(app);
    auto what = leftover(chain, args);
    if (what.empty() && dynamic_cast<const CLI::RequiredError*>(&e)) {
      if (!chain.back()->get_subcommands({}).empty()) {
        // A command group without its command (`edda topic`): its help.
        out_stream << app.help();
        return exit_usage;
      }
      // A name or an option the command needs: said as check() says it.
      out.path = path_of(chain);
      what = check(out);
    }
    return usage(chain, what.empty() ? refused(e) : what, err_stream);
  }
  auto chain = chosen(app);
  if (auto dashed = dashed_positional(args, app); !dashed.empty())
    return usage(chain, unknown_option(*chain.back(), dashed), err_stream);
  out.path = path_of(chain);
  // `edda bench NAME ARGS...` (the bench group has no option but -h, which
  // would have asked for its help): ARGS as they were typed, `--` and all.
  if (out.path.front() == "bench")
    out.bench.args.assign(args.begin() + 2, args.end());
  if (auto what = check(out); !what.empty())
    return usage(chain, what, err_stream);
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
  for (auto [text, ms, name] :
       {std::tuple{&out.group.to_datetime, &out.group.datetime_ms,
                   "--to-datetime"},
        std::tuple{&out.message.since, &out.message.since_ms, "--since"}})
    if (!text->empty() && (!parse_time_ms(*text, now, *ms) || *ms <= 0))
      return usage(chain,
                   std::string{name} + ": '" + *text
                     + "' is not a time (2026-12-08T09:30:00Z, "
                       "2026-12-08T09:30+01:00, 2026-12-08, now-1h, or "
                       "epoch ms)",
                   err_stream);
  return -1;
}

} // namespace edda::cli
