// The edda command line, declared with CLI11: every command and subcommand
// with its options and positionals, `-h` / `--help` on each, did-you-mean
// for a mistyped command or option, and the exit codes (README.md here).
// What it parses lands in plain structs; running a command is main.cpp's.
// No CAF and no CLI11 in this header: the parse is unit tested without a
// node (tests/unit/cli/command_line_test.cpp).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace edda::cli {

/// The exit codes of `edda`, distinct so that a script can tell a mistake
/// of its own from a missing thing and from a node it cannot reach.
enum exit_code : int {
  exit_ok = 0,
  exit_failure = 1,     ///< any other failure
  exit_usage = 2,       ///< an unknown command or option, a bad argument
  exit_not_found = 3,   ///< the node knows no such topic, group, txn, ...
  exit_unavailable = 4, ///< the node cannot be reached, or cannot serve it
};

/// An unsigned number option: its value (or its default) and whether it
/// was given.
struct number {
  uint64_t value = 0;
  bool given = false;
};

/// How a command reaches its node: --node, --token, --node-port, and
/// --json for what it prints. $EDDA_NODE and $EDDA_TOKEN are read where
/// the connection is made (main.cpp) when the options are not given.
struct node_options {
  std::string node;
  std::string token;
  bool node_port = false;
  bool json = false;
};

struct node_command {
  std::string config;
  std::vector<std::string> set;
  std::string data_dir;
  std::string listen;
  std::string durability;
  bool print_config = false;
};

struct topic_command {
  std::string name;
  number partitions;
  bool all = false;
  number retention_ms;    ///< --retention 72h (0: keep for ever)
  number retention_bytes; ///< --retention-bytes 1GiB (0: no size limit)
};

struct produce_command {
  std::string topic;
  std::string key;
  std::vector<std::string> tags;
  std::vector<std::string> props;
  number delay_ms;
  number count;
  number size{256, false};
  number window{256, false};
  bool transactional = false;
  std::string group = "edda-cli";
  std::vector<std::string> body;
};

struct consume_command {
  std::string topic;
  std::string group;
  std::string expr = "*";
  bool broadcast = false;
  std::string from = "earliest";
  number count;
  number idle_ms;
  number fail_every;
  bool quiet = false;
  std::string client_id;
};

struct group_command {
  std::string name;
  // reset-offsets
  std::string topic;
  bool to_earliest = false;
  bool to_latest = false;
  number to_offset;
  std::string to_datetime; ///< as typed (parse_time_ms)
  int64_t datetime_ms = 0;
  bool execute = false;
  bool force = false;
  std::string by; ///< default $USER, else "cli"
};

struct message_command {
  std::string id;    ///< show
  std::string topic; ///< find; show: only this topic
  std::string key;
  bool by_key = false;
  std::string since; ///< as typed (parse_time_ms)
  int64_t since_ms = 0;
  number limit;
};

struct dlq_command {
  std::string group;
  number limit;
  std::vector<std::string> ids;
};

struct txn_command {
  std::string id;
  std::string outcome; ///< commit or rollback
  number limit;
  std::string by; ///< default $USER, else "cli"
};

struct saga_command {
  std::string id;   ///< show and the operator commands: the saga
  std::string type; ///< start: the saga type
  std::string step; ///< skip
  // list
  std::string state;
  std::string type_filter;
  number older_than;
  number limit;
  // start
  std::string new_id;
  std::string input;
  number wait;
  std::string by = "operator:cli";
};

struct backup_command {
  std::string name;
  bool compact = false;
  std::string by; ///< default $USER, else "cli"
};

struct cluster_command {
  std::string group;   ///< add-replica, move-group
  std::string node_id; ///< elect: the node whose group; add-replica: where
  std::string to;
  std::string by;
  bool unclean = false;
};

struct bench_command {
  std::vector<std::string> args; ///< passed to the benchmark's own parser
};

/// A parsed command line: the command as typed (e.g. {"topic", "create"})
/// and what its options and positionals said.
struct command_line {
  std::vector<std::string> path;
  node_options conn;
  node_command node;
  topic_command topic;
  produce_command produce;
  consume_command consume;
  group_command group;
  message_command message;
  dlq_command dlq;
  txn_command txn;
  saga_command saga;
  backup_command backup;
  cluster_command cluster;
  bench_command bench;
};

/// A point in time as an operator types it, in ms since the epoch:
/// "2026-12-08T09:30:00Z" (ISO 8601: a date, a time to the minute, second
/// or ms, then Z or +HH:MM / -HH:MM; without a zone it is UTC),
/// "2026-12-08" (midnight UTC), "now-1h" / "now-90s" / "now", or epoch ms
/// (digits). False if it is none of these.
[[nodiscard]] bool parse_time_ms(const std::string& text, int64_t now_ms,
                                 int64_t& out);

/// Parses `args` (argv without the program name) into `out`. Returns -1
/// when the command in `out.path` is to run. Otherwise returns the exit
/// code, having written what the user asked for or got wrong: help to
/// `out_stream` (exit 0, or exit_usage for `edda` or a command group
/// without a command), a usage error to `err_stream` ("edda: unknown
/// option --partiton; did you mean --partitions?", exit_usage).
int parse(const std::vector<std::string>& args, command_line& out,
          std::ostream& out_stream, std::ostream& err_stream);

} // namespace edda::cli
