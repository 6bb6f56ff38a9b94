#include "config/settings.hpp"
#include "config/toml.hpp"

#include <cstdio>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace edda::config;

// Parses `text` as "edda.toml" on top of the defaults.
node_settings parse_ok(const std::string& text) {
  node_settings s;
  std::string error;
  EXPECT_TRUE(parse_settings(text, "edda.toml", s, error)) << error << "\nin:\n"
                                                           << text;
  return s;
}

std::string parse_error(const std::string& text) {
  node_settings s;
  std::string error;
  EXPECT_FALSE(parse_settings(text, "edda.toml", s, error)) << text;
  return error;
}

std::string override_error(const std::string& arg) {
  node_settings s;
  std::string error;
  EXPECT_FALSE(apply_override(arg, s, error)) << arg;
  return error;
}

void expect_same_group(const group_settings& a, const group_settings& b) {
  EXPECT_EQ(a.max_reconsume, b.max_reconsume);
  EXPECT_EQ(a.retry_delays_ms, b.retry_delays_ms);
}

void expect_same(const node_settings& a, const node_settings& b) {
  EXPECT_EQ(a.data_dir, b.data_dir);
  EXPECT_EQ(a.listen_host, b.listen_host);
  EXPECT_EQ(a.listen_port, b.listen_port);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.advertise, b.advertise);
  EXPECT_EQ(a.stop_grace_ms, b.stop_grace_ms);
  EXPECT_EQ(a.cluster_name, b.cluster_name);
  EXPECT_EQ(a.cluster_etcd, b.cluster_etcd);
  EXPECT_EQ(a.cluster_lease_ttl_ms, b.cluster_lease_ttl_ms);
  EXPECT_EQ(a.replication_factor, b.replication_factor);
  EXPECT_EQ(a.min_insync, b.min_insync);
  EXPECT_EQ(a.replica_lag_max_ms, b.replica_lag_max_ms);
  EXPECT_EQ(a.failover, b.failover);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.map_size, b.map_size);
  EXPECT_EQ(a.backup_dir, b.backup_dir);
  EXPECT_EQ(a.max_message_size, b.max_message_size);
  EXPECT_EQ(a.default_partitions, b.default_partitions);
  expect_same_group(a.group_defaults, b.group_defaults);
  EXPECT_EQ(a.consume_timeout_ms, b.consume_timeout_ms);
  EXPECT_EQ(a.max_inflight, b.max_inflight);
  EXPECT_EQ(a.max_span, b.max_span);
  EXPECT_EQ(a.rebalance_delay_ms, b.rebalance_delay_ms);
  EXPECT_EQ(a.dedup_retention_ms, b.dedup_retention_ms);
  EXPECT_EQ(a.heartbeat_interval_ms, b.heartbeat_interval_ms);
  EXPECT_EQ(a.connection_timeout_ms, b.connection_timeout_ms);
  EXPECT_EQ(a.scheduler_policy, b.scheduler_policy);
  EXPECT_EQ(a.max_threads, b.max_threads);
  EXPECT_EQ(a.log_level, b.log_level);
  EXPECT_EQ(a.log_format, b.log_format);
  EXPECT_EQ(a.log_levels, b.log_levels);
  EXPECT_EQ(a.txn_orphan_alert_after_ms, b.txn_orphan_alert_after_ms);
  ASSERT_EQ(a.groups.size(), b.groups.size());
  for (const auto& [name, g] : a.groups) {
    ASSERT_EQ(b.groups.count(name), 1u) << name;
    expect_same_group(g, b.groups.at(name));
  }
}

node_settings non_defaults() {
  node_settings s;
  s.data_dir = "/var/lib/edda \"main\"";
  s.listen_host = "0.0.0.0";
  s.listen_port = 0;
  s.name = "node-a";
  s.advertise = "10.0.0.7:7420";
  s.stop_grace_ms = 2500;
  s.cluster_name = "payments.eu";
  s.cluster_etcd = {"127.0.0.1:2379", "http://10.0.0.2:2379"};
  s.cluster_lease_ttl_ms = 4000;
  s.replication_factor = 3;
  s.min_insync = 2;
  s.replica_lag_max_ms = 750;
  s.failover = "auto";
  s.mode = durability::nometasync;
  s.map_size = (16ull << 30) + 4096;
  s.backup_dir = "/var/backups/edda";
  s.max_message_size = 1500;
  s.default_partitions = 1024;
  s.group_defaults.max_reconsume = 0;
  s.group_defaults.retry_delays_ms = {250, 1500, 90000};
  s.consume_timeout_ms = 1;
  s.max_inflight = 7;
  s.max_span = 7;
  s.rebalance_delay_ms = 1500;
  s.dedup_retention_ms = 3 * 86400000ull;
  s.heartbeat_interval_ms = 0;
  s.connection_timeout_ms = 0;
  s.tls_certificate = "/etc/edda/tls/node.pem";
  s.tls_key = "/etc/edda/tls/node.key";
  s.tls_ca = "/etc/edda/tls/ca.pem";
  s.scheduler_policy = "stealing";
  s.max_threads = 3;
  s.log_level = "debug";
  s.log_format = "json";
  s.log_levels = "saga=warn,txn=debug";
  s.txn_orphan_alert_after_ms = 90000;
  s.groups["orders"] = {3, {1000}};
  s.groups["pay.v2 \"fast\""] = {64, {1, 2, 3}};
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// -- defaults, rendering and the declaration table -----------------------

TEST(ConfigTest, DefaultsRoundTripThroughRenderAndParse) {
  auto text = render_settings(node_settings{});
  auto parsed = parse_ok(text);
  expect_same(parsed, node_settings{});
  EXPECT_EQ(parsed.map_size, 4ull << 30);
  EXPECT_EQ(parsed.group_defaults.retry_delays_ms.size(), 18u);
}

TEST(ConfigTest, NonDefaultValuesRoundTripThroughRenderAndParse) {
  auto original = non_defaults();
  auto parsed = parse_ok(render_settings(original));
  expect_same(parsed, original);
}

TEST(ConfigTest, RenderWritesOneCommentedLinePerSettingGroupedByTable) {
  auto text = render_settings(node_settings{});
  EXPECT_NE(text.find("\n[storage]\ndurability = \"fsync\"  # enum, "
                      "default fsync: "),
            std::string::npos)
    << text;
  EXPECT_NE(text.find("\nmap_size = \"4GiB\"  # size, default 4GiB: "),
            std::string::npos);
  EXPECT_NE(text.find("\nlisten_port = 7420  # integer, default 7420: "),
            std::string::npos);
  EXPECT_NE(text.find("\nheartbeat_interval = \"100ms\"  # duration, "
                      "default 100ms: "),
            std::string::npos);
  auto s = non_defaults();
  auto custom = render_settings(s);
  EXPECT_NE(custom.find("\n[groups.\"orders\"]\nmax_reconsume = 3  # "),
            std::string::npos)
    << custom;
  EXPECT_NE(custom.find("\nlisten_port = 0  # integer, default 7420: "),
            std::string::npos);
}

TEST(ConfigTest, CheckedInDefaultTomlIsTheRenderedDefaults) {
  auto path = std::string(EDDA_SOURCE_DIR) + "/config/default.toml";
  node_settings s = non_defaults();
  s.groups.clear();
  std::string error;
  ASSERT_TRUE(load_settings_file(path, s, error)) << error;
  expect_same(s, node_settings{});
  EXPECT_EQ(read_file(path), render_settings(node_settings{}))
    << "config/default.toml is stale: regenerate it from "
       "render_settings(node_settings{})";
}

TEST(ConfigTest, DeclarationTableDescribesEverySetting) {
  const auto& all = all_settings();
  std::vector<std::string> keys;
  for (const auto& info : all) {
    keys.push_back(info.key);
    EXPECT_FALSE(info.type.empty()) << info.key;
    EXPECT_FALSE(info.description.empty()) << info.key;
    EXPECT_FALSE(info.default_value.empty()) << info.key;
    EXPECT_FALSE(info.runtime_changeable) << info.key;
  }
  std::vector<std::string> expected = {"node.data_dir",
                                       "node.listen_host",
                                       "node.listen_port",
                                       "node.name",
                                       "node.advertise",
                                       "node.admin_listen",
                                       "node.stop_grace",
                                       "cluster.name",
                                       "cluster.etcd",
                                       "cluster.lease_ttl",
                                       "cluster.replication_factor",
                                       "cluster.min_insync",
                                       "cluster.replica_lag_max",
                                       "cluster.failover",
                                       "storage.durability",
                                       "storage.map_size", "storage.backup_dir",
                                       "broker.max_message_size",
                                       "broker.default_partitions",
                                       "consumer.max_reconsume",
                                       "consumer.retry_delays",
                                       "consumer.consume_timeout",
                                       "consumer.max_inflight",
                                       "consumer.max_span", "consumer.offset_flush_delay",
                                       "consumer.rebalance_delay",
                                       "idempotency.retention",
                                       "txn.check_after",
                                       "txn.max_checks",
                                       "txn.max_check_interval",
                                       "txn.check_timeout", "txn.orphan_alert_after",
                                       "txn.final_policy",
                                       "txn.retention", "saga.shards", "saga.types",
                                       "saga.step_timeout", "saga.step_attempts",
                                       "saga.step_backoff",
                                       "saga.participant_wait",
                                       "saga.retention",
                                       "network.heartbeat_interval",
                                       "network.connection_timeout",
                                       "network.tls_certificate",
                                       "network.tls_key",
                                       "network.tls_ca",
                                       "scheduler.policy",
                                       "scheduler.max_threads",
                                       "log.level", "log.format", "log.levels",
                                       "api.listen",
                                       "api.tokens",
                                       "api.max_request_size",
                                       "api.produce_window",
                                       "api.max_calls",
                                       "api.max_calls_per_address",
                                       "api.handshake_timeout",
                                       "api.idle_timeout",
                                       "groups.<name>.max_reconsume",
                                       "groups.<name>.retry_delays"};
  EXPECT_EQ(keys, expected);
  auto find = [&](const std::string& key) {
    for (const auto& info : all)
      if (info.key == key)
        return info;
    return setting_info{};
  };
  EXPECT_EQ(find("storage.map_size").default_value, "4GiB");
  EXPECT_EQ(find("storage.map_size").type, "size");
  EXPECT_EQ(find("storage.durability").default_value, "fsync");
  EXPECT_EQ(find("storage.durability").bounds, "fsync, nometasync, nosync");
  EXPECT_EQ(find("node.listen_port").bounds, "0..65535");
  EXPECT_EQ(find("node.listen_port").default_value, "7420");
  EXPECT_EQ(find("broker.max_message_size").bounds, "1KiB..64MiB");
  EXPECT_EQ(find("consumer.consume_timeout").default_value, "1m");
  EXPECT_EQ(find("consumer.retry_delays").default_value,
            "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h");
}

TEST(ConfigTest, DurabilityNamesMatchTheTomlValues) {
  EXPECT_STREQ(to_string(durability::fsync), "fsync");
  EXPECT_STREQ(to_string(durability::nometasync), "nometasync");
  EXPECT_STREQ(to_string(durability::nosync), "nosync");
  EXPECT_EQ(parse_ok("[storage]\ndurability = 'nosync'").mode,
            durability::nosync);
  EXPECT_EQ(parse_ok("[storage]\ndurability = \"nometasync\"").mode,
            durability::nometasync);
}

// -- reading values ------------------------------------------------------

TEST(ConfigTest, EveryKeyIsReadIntoItsField) {
  auto s = parse_ok(R"(
[node]
data_dir = "/srv/edda"
listen_host = '::1'
listen_port = 9000
[storage]
durability = "nosync"
map_size = "1TiB"
[broker]
max_message_size = "64KiB"
default_partitions = 12
[consumer]
max_reconsume = 3
retry_delays = ["250ms", "2s", 60000]
consume_timeout = "30s"
max_inflight = 10
max_span = 20
[idempotency]
retention = "2h"
[network]
heartbeat_interval = "1s"
connection_timeout = "5s"
[scheduler]
policy = "stealing"
max_threads = 8
[log]
level = "warn"
)");
  EXPECT_EQ(s.data_dir, "/srv/edda");
  EXPECT_EQ(s.listen_host, "::1");
  EXPECT_EQ(s.listen_port, 9000);
  EXPECT_EQ(s.mode, durability::nosync);
  EXPECT_EQ(s.map_size, 1ull << 40);
  EXPECT_EQ(s.max_message_size, 64u * 1024);
  EXPECT_EQ(s.default_partitions, 12u);
  EXPECT_EQ(s.group_defaults.max_reconsume, 3u);
  EXPECT_EQ(s.group_defaults.retry_delays_ms,
            (std::vector<uint64_t>{250, 2000, 60000}));
  EXPECT_EQ(s.consume_timeout_ms, 30000u);
  EXPECT_EQ(s.max_inflight, 10u);
  EXPECT_EQ(s.max_span, 20u);
  EXPECT_EQ(s.dedup_retention_ms, 7200000u);
  EXPECT_EQ(s.heartbeat_interval_ms, 1000u);
  EXPECT_EQ(s.connection_timeout_ms, 5000u);
  EXPECT_EQ(s.scheduler_policy, "stealing");
  EXPECT_EQ(s.max_threads, 8u);
  EXPECT_EQ(s.log_level, "warn");
}

TEST(ConfigTest, DottedKeysWorkWithoutTableHeaders) {
  auto s = parse_ok("storage.map_size = \"8MiB\"\n"
                    "node . listen_port = 1\n"
                    "\"log\".level = \"error\"\n");
  EXPECT_EQ(s.map_size, 8u << 20);
  EXPECT_EQ(s.listen_port, 1);
  EXPECT_EQ(s.log_level, "error");
}

TEST(ConfigTest, IntegersAreAcceptedAsMillisecondsAndBytes) {
  auto s = parse_ok("[consumer]\nconsume_timeout = 250\n"
                    "retry_delays = \"1500 2s\"\n"
                    "[storage]\nmap_size = 2_097_152\n");
  EXPECT_EQ(s.consume_timeout_ms, 250u);
  EXPECT_EQ(s.group_defaults.retry_delays_ms,
            (std::vector<uint64_t>{1500, 2000}));
  EXPECT_EQ(s.map_size, 2u << 20);
}

TEST(ConfigTest, RetryDelaysMayBeOneSpaceSeparatedString) {
  auto s = parse_ok("[consumer]\nretry_delays = \"  1s 5s\t10m \"\n");
  EXPECT_EQ(s.group_defaults.retry_delays_ms,
            (std::vector<uint64_t>{1000, 5000, 600000}));
}

TEST(ConfigTest, CommentsAndBlankLinesAreIgnored) {
  auto s = parse_ok("# leading comment\n"
                    "\n"
                    "   # indented comment\n"
                    "[node]   # table comment\n"
                    "data_dir = \"dir#1\" # '#' inside a string is text\n"
                    "listen_host='h#2'#no space before comment\n"
                    "\t\n");
  EXPECT_EQ(s.data_dir, "dir#1");
  EXPECT_EQ(s.listen_host, "h#2");
}

TEST(ConfigTest, StringEscapesAreDecodedAndLiteralStringsAreNot) {
  auto s = parse_ok("[node]\n"
                    R"(data_dir = "a\"b\\c\nd\te\u00e9")"
                    "\n"
                    R"(listen_host = 'C:\path\n')"
                    "\n");
  EXPECT_EQ(s.data_dir, "a\"b\\c\nd\te\xC3\xA9");
  EXPECT_EQ(s.listen_host, "C:\\path\\n");
}

TEST(ConfigTest, CrLfLineEndingsAndByteOrderMarkAreAccepted) {
  auto s = parse_ok("\xEF\xBB\xBF[node]\r\nlisten_port = 1234\r\n");
  EXPECT_EQ(s.listen_port, 1234);
}

TEST(ConfigTest, ParseLayersOnTopOfExistingSettings) {
  node_settings s;
  s.data_dir = "from-earlier";
  s.listen_port = 1;
  std::string error;
  ASSERT_TRUE(parse_settings("[node]\nlisten_port = 2\n", "b.toml", s, error))
    << error;
  EXPECT_EQ(s.data_dir, "from-earlier");
  EXPECT_EQ(s.listen_port, 2);
}

TEST(ConfigTest, FailedParseLeavesSettingsUnchanged) {
  node_settings s;
  s.listen_port = 9;
  std::string error;
  EXPECT_FALSE(parse_settings("[node]\nlisten_port = 1\nbogus = 1\n",
                              "edda.toml", s, error));
  EXPECT_EQ(s.listen_port, 9);
  EXPECT_EQ(error, "edda.toml:3:1: unknown key 'node.bogus'");
}

// -- validation ----------------------------------------------------------

TEST(ConfigTest, UnknownKeyIsRejectedWithSuggestion) {
  EXPECT_EQ(parse_error("[node]\n\n[storage]\nmapsize = 1\n"),
            "edda.toml:4:1: unknown key 'storage.mapsize' "
            "(did you mean 'storage.map_size'?)");
  EXPECT_EQ(parse_error("[consumer]\nretry_delay = \"1s\"\n"),
            "edda.toml:2:1: unknown key 'consumer.retry_delay' "
            "(did you mean 'consumer.retry_delays'?)");
}

TEST(ConfigTest, KeyInTheWrongTableSuggestsWhereItBelongs) {
  EXPECT_EQ(parse_error("[node]\nmap_size = \"8MiB\"\n"),
            "edda.toml:2:1: unknown key 'node.map_size' "
            "(did you mean 'storage.map_size'?)");
}

TEST(ConfigTest, TopLevelKeyWithoutTableIsAnUnknownKey) {
  EXPECT_EQ(parse_error("listen_port = 7000\n"),
            "edda.toml:1:1: unknown key 'listen_port' "
            "(did you mean 'node.listen_port'?)");
}

TEST(ConfigTest, UnknownKeyFarFromAnyKnownKeyHasNoSuggestion) {
  EXPECT_EQ(parse_error("[node]\nbanana = 1\n"),
            "edda.toml:2:1: unknown key 'node.banana'");
}

TEST(ConfigTest, UnknownTableIsRejectedWithSuggestion) {
  EXPECT_EQ(parse_error("# x\n[storge]\n"),
            "edda.toml:2:2: unknown table 'storge' (did you mean 'storage'?)");
  EXPECT_EQ(parse_error("[storage.map_size]\n"),
            "edda.toml:1:10: storage.map_size: expected a value, got a table");
}

TEST(ConfigTest, WrongTypeNamesKeyAndLine) {
  EXPECT_EQ(parse_error("[node]\nlisten_port = \"7420\"\n"),
            "edda.toml:2:1: node.listen_port: expected an integer, got a "
            "string (\"7420\")");
  EXPECT_EQ(parse_error("[node]\nlisten_port = 1.5\n"),
            "edda.toml:2:1: node.listen_port: expected an integer, got a "
            "float (1.5)");
  EXPECT_EQ(parse_error("[node]\ndata_dir = true\n"),
            "edda.toml:2:1: node.data_dir: expected a string, got a boolean "
            "(true)");
  EXPECT_EQ(parse_error("[node]\ndata_dir = [\"a\"]\n"),
            "edda.toml:2:1: node.data_dir: expected a string, got an array");
  auto err = parse_error("[consumer]\nconsume_timeout = false\n");
  EXPECT_EQ(err.rfind("edda.toml:2:1: consumer.consume_timeout: expected a "
                      "duration",
                      0),
            0u)
    << err;
}

TEST(ConfigTest, EmptyStringsAreRejected) {
  EXPECT_EQ(parse_error("[node]\ndata_dir = \"\"\n"),
            "edda.toml:2:1: node.data_dir: must not be empty");
}

TEST(ConfigTest, BadEnumValuesAreRejected) {
  EXPECT_EQ(parse_error("\n\n[storage]\ndurability = \"fast\"\n"),
            "edda.toml:4:1: storage.durability: 'fast' is not one of fsync, "
            "nometasync, nosync");
  EXPECT_EQ(parse_error("[scheduler]\npolicy = \"greedy\"\n"),
            "edda.toml:2:1: scheduler.policy: 'greedy' is not one of "
            "sharing, stealing");
  EXPECT_EQ(parse_error("[log]\nlevel = \"INFO\"\n"),
            "edda.toml:2:1: log.level: 'INFO' is not one of debug, info, "
            "warn, error");
}

TEST(ConfigTest, OutOfRangeNumbersAreRejected) {
  struct bad {
    const char* text;
    const char* error;
  };
  const bad cases[] = {
    {"[node]\nlisten_port = 65536",
     "edda.toml:2:1: node.listen_port: 65536 is out of range 0..65535"},
    {"[node]\nlisten_port = -1",
     "edda.toml:2:1: node.listen_port: -1 is out of range 0..65535"},
    {"[broker]\ndefault_partitions = 0",
     "edda.toml:2:1: broker.default_partitions: 0 is out of range 1..1024"},
    {"[broker]\ndefault_partitions = 1025",
     "edda.toml:2:1: broker.default_partitions: 1025 is out of range "
     "1..1024"},
    {"[consumer]\nmax_reconsume = 65",
     "edda.toml:2:1: consumer.max_reconsume: 65 is out of range 0..64"},
    {"[broker]\nmax_message_size = \"1023\"",
     "edda.toml:2:1: broker.max_message_size: 1023 is out of range "
     "1KiB..64MiB"},
    {"[broker]\nmax_message_size = \"65MiB\"",
     "edda.toml:2:1: broker.max_message_size: 65MiB is out of range "
     "1KiB..64MiB"},
    {"[storage]\nmap_size = \"512KiB\"",
     "edda.toml:2:1: storage.map_size: must be >= 1MiB, got 512KiB"},
    {"[storage]\nmap_size = -5",
     "edda.toml:2:1: storage.map_size: size must not be negative, got -5"},
    {"[consumer]\nmax_inflight = 0",
     "edda.toml:2:1: consumer.max_inflight: must be >= 1, got 0"},
    {"[scheduler]\nmax_threads = 5000000000",
     "edda.toml:2:1: scheduler.max_threads: 5000000000 is out of range "
     "0..4294967295"},
    {"[network]\nheartbeat_interval = -1",
     "edda.toml:2:1: network.heartbeat_interval: duration must not be "
     "negative, got -1"},
  };
  for (const auto& c : cases)
    EXPECT_EQ(parse_error(c.text), c.error);
}

TEST(ConfigTest, BoundaryValuesAreAccepted) {
  auto low = parse_ok("[node]\nlisten_port = 0\n"
                      "[broker]\ndefault_partitions = 1\n"
                      "max_message_size = \"1KiB\"\n"
                      "[storage]\nmap_size = \"1MiB\"\n"
                      "[consumer]\nmax_reconsume = 0\nmax_inflight = 1\n"
                      "max_span = 1\n");
  EXPECT_EQ(low.listen_port, 0);
  EXPECT_EQ(low.default_partitions, 1u);
  EXPECT_EQ(low.max_message_size, 1024u);
  EXPECT_EQ(low.map_size, 1u << 20);
  EXPECT_EQ(low.group_defaults.max_reconsume, 0u);
  EXPECT_EQ(low.max_inflight, 1u);
  EXPECT_EQ(low.max_span, 1u);
  auto high = parse_ok("[node]\nlisten_port = 65535\n"
                       "[broker]\ndefault_partitions = 1024\n"
                       "max_message_size = \"64MiB\"\n"
                       "[consumer]\nmax_reconsume = 64\n");
  EXPECT_EQ(high.listen_port, 65535);
  EXPECT_EQ(high.default_partitions, 1024u);
  EXPECT_EQ(high.max_message_size, 64u << 20);
  EXPECT_EQ(high.group_defaults.max_reconsume, 64u);
}

TEST(ConfigTest, RetryDelaysMustBeNonEmptyAndPositive) {
  EXPECT_EQ(parse_error("[consumer]\nretry_delays = []\n"),
            "edda.toml:2:1: consumer.retry_delays: must not be empty");
  EXPECT_EQ(parse_error("[consumer]\nretry_delays = \"  \"\n"),
            "edda.toml:2:1: consumer.retry_delays: must not be empty");
  EXPECT_EQ(parse_error("[consumer]\nretry_delays = [\"1s\", \"0s\"]\n"),
            "edda.toml:2:1: consumer.retry_delays: each delay must be > 0, "
            "got \"0s\"");
  EXPECT_EQ(parse_error("[consumer]\nretry_delays = \"1s 0\"\n"),
            "edda.toml:2:1: consumer.retry_delays: each delay must be > 0, "
            "got \"0\"");
  EXPECT_EQ(parse_error("[consumer]\nretry_delays = [\"1s\", \"5x\"]\n"),
            "edda.toml:2:1: consumer.retry_delays: '5x' is not a duration "
            "(use e.g. 250ms, 5s, 2m, 1h, 1d)");
  auto err = parse_error("[consumer]\nretry_delays = 5\n");
  EXPECT_EQ(err.rfind("edda.toml:2:1: consumer.retry_delays: expected an "
                      "array of durations",
                      0),
            0u)
    << err;
}

TEST(ConfigTest, BadDurationAndSizeStringsNameTheKey) {
  EXPECT_EQ(parse_error("[network]\nconnection_timeout = \"5 s\"\n"),
            "edda.toml:2:1: network.connection_timeout: '5 s' is not a "
            "duration (use e.g. 250ms, 5s, 2m, 1h, 1d)");
  EXPECT_EQ(parse_error("[storage]\nmap_size = \"4GB\"\n"),
            "edda.toml:2:1: storage.map_size: '4GB' is not a size (use bytes "
            "or KiB, MiB, GiB, TiB, e.g. 4MiB)");
}

TEST(ConfigTest, MaxSpanBelowMaxInflightIsRejected) {
  EXPECT_EQ(parse_error("[consumer]\nmax_inflight = 100\nmax_span = 50\n"),
            "edda.toml:3:1: consumer.max_span: 50 must be >= "
            "consumer.max_inflight (100)");
  // Only max_inflight changed: blame it, at its line.
  EXPECT_EQ(parse_error("[consumer]\nmax_inflight = 4096\n"),
            "edda.toml:2:1: consumer.max_inflight: 4096 must be <= "
            "consumer.max_span (2048)");
  auto s = parse_ok("[consumer]\nmax_inflight = 4096\nmax_span = 4096\n");
  EXPECT_EQ(s.max_span, 4096u);
}

TEST(ConfigTest, ConnectionTimeoutMustExceedHeartbeatInterval) {
  EXPECT_EQ(parse_error("[network]\nheartbeat_interval = \"1s\"\n"
                        "connection_timeout = \"1s\"\n"),
            "edda.toml:3:1: network.connection_timeout: 1s must be > "
            "network.heartbeat_interval (1s)");
  EXPECT_EQ(parse_error("[network]\nheartbeat_interval = \"2s\"\n"),
            "edda.toml:2:1: network.heartbeat_interval: 2s must be < "
            "network.connection_timeout (1s)");
  // A zero heartbeat disables the rule.
  auto s = parse_ok("[network]\nheartbeat_interval = 0\n"
                    "connection_timeout = \"10ms\"\n");
  EXPECT_EQ(s.heartbeat_interval_ms, 0u);
  EXPECT_EQ(s.connection_timeout_ms, 10u);
}

TEST(ConfigTest, DuplicateKeyIsAnError) {
  // toml++'s words, at the second definition.
  EXPECT_EQ(parse_error("[node]\nlisten_port = 1\nlisten_port = 2\n"),
            "edda.toml:3:15: Error while parsing key-value pair: cannot "
            "redefine existing integer 'listen_port'");
  // TOML 1.0: a table made by a dotted key cannot be opened again.
  EXPECT_EQ(parse_error("node.listen_port = 1\n[node]\nlisten_port = 2\n"),
            "edda.toml:2:1: Error while parsing table header: cannot "
            "redefine existing table 'node'");
  EXPECT_EQ(parse_error("[node]\n[log]\n[node]\n"),
            "edda.toml:3:1: Error while parsing table header: cannot "
            "redefine existing table 'node'");
}

// -- groups --------------------------------------------------------------

TEST(ConfigTest, GroupOverridesFallBackToConsumerDefaults) {
  auto s = parse_ok("[groups.\"orders\"]\n"
                    "retry_delays = [\"1s\", \"10s\"]\n"
                    "[groups.audit]\n"
                    "max_reconsume = 1\n"
                    "[consumer]\n" // after the groups, still inherited
                    "max_reconsume = 5\n"
                    "retry_delays = \"2s\"\n");
  ASSERT_EQ(s.groups.size(), 2u);
  EXPECT_EQ(s.group("orders").max_reconsume, 5u);
  EXPECT_EQ(s.group("orders").retry_delays_ms,
            (std::vector<uint64_t>{1000, 10000}));
  EXPECT_EQ(s.group("audit").max_reconsume, 1u);
  EXPECT_EQ(s.group("audit").retry_delays_ms, (std::vector<uint64_t>{2000}));
  // No table: the defaults themselves.
  EXPECT_EQ(&s.group("billing"), &s.group_defaults);
  EXPECT_EQ(s.group("billing").max_reconsume, 5u);
}

TEST(ConfigTest, QuotedGroupNamesMayContainDotsAndSpaces) {
  auto s = parse_ok("[groups.\"pay.v2 fast\"]\nmax_reconsume = 2\n"
                    "[ groups . 'a.b' ]\nmax_reconsume = 3\n");
  ASSERT_EQ(s.groups.count("pay.v2 fast"), 1u);
  EXPECT_EQ(s.group("pay.v2 fast").max_reconsume, 2u);
  EXPECT_EQ(s.group("a.b").max_reconsume, 3u);
  EXPECT_EQ(s.groups.count("pay"), 0u);
  EXPECT_EQ(s.group("a.b").retry_delays_ms,
            node_settings{}.group_defaults.retry_delays_ms);
}

TEST(ConfigTest, EmptyGroupTableCreatesGroupWithDefaults) {
  auto s = parse_ok("[groups]\n[groups.\"quiet\"]\n");
  ASSERT_EQ(s.groups.count("quiet"), 1u);
  EXPECT_EQ(s.groups.at("quiet").max_reconsume, 16u);
  EXPECT_EQ(parse_error("[groups.\"\"]\n"),
            "edda.toml:1:9: group name must not be empty");
}

TEST(ConfigTest, GroupKeysAreValidatedWithTheirFullName) {
  EXPECT_EQ(parse_error("[groups.\"orders\"]\nmax_reconsume = 65\n"),
            "edda.toml:2:1: groups.orders.max_reconsume: 65 is out of range "
            "0..64");
  EXPECT_EQ(parse_error("[groups.\"a.b\"]\nretry_delays = []\n"),
            "edda.toml:2:1: groups.\"a.b\".retry_delays: must not be empty");
  EXPECT_EQ(parse_error("[groups.orders]\nmax_reconsum = 1\n"),
            "edda.toml:2:1: unknown key 'groups.orders.max_reconsum' "
            "(did you mean 'groups.orders.max_reconsume'?)");
  EXPECT_EQ(parse_error("[groups.orders.extra]\n"),
            "edda.toml:1:16: unknown table 'groups.orders.extra'");
}

// -- TOML syntax ---------------------------------------------------------

TEST(ConfigTest, SyntaxErrorsNameTheLineAndColumn) {
  struct bad {
    const char* text;
    const char* error;
  };
  // toml++'s words, at the line and column of the mistake.
  const bad cases[] = {
    {"[node]\ndata_dir \"x\"",
     "edda.toml:2:10: Error while parsing key-value pair: expected '=', saw "
     "'\"'"},
    {"[node]\ndata_dir = \"x",
     "edda.toml:2:14: Error while parsing string: encountered end-of-file"},
    {"[node]\ndata_dir = \"\\q\"",
     "edda.toml:2:14: Error while parsing string: unknown escape sequence "
     "'\\q'"},
    {"[node]\ndata_dir = x",
     "edda.toml:2:12: Error while parsing value: could not determine value "
     "type (strings must be quoted)"},
    {"[node]\ndata_dir =",
     "edda.toml:2:11: Error while parsing key-value pair: encountered "
     "end-of-file"},
    {"[node]\ndata_dir = \"x\" y",
     "edda.toml:2:16: Error while parsing key-value pair: expected a comment "
     "or whitespace, saw 'y'"},
    {"[node", "edda.toml:1:6: Error while parsing table header: encountered "
              "end-of-file"},
    {"[consumer]\nretry_delays = [\"1s\",",
     "edda.toml:2:22: Error while parsing array: encountered end-of-file"},
    {"[node]\nlisten_port = 07",
     "edda.toml:2:17: Error while parsing decimal integer: leading zeroes are "
     "prohibited"},
    {"[node]\nlisten_port = 99999999999999999999",
     "edda.toml:2:35: Error while parsing decimal integer: "
     "'99999999999999999999' is not representable in 64 bits"},
    {"= 5", "edda.toml:1:1: Error while parsing root table: expected keys, "
            "tables, whitespace or comments, saw '='"},
    // Valid TOML that is not a setting.
    {"[[node]]", "edda.toml:1:3: 'node' is a table: write [node] and its "
                 "keys below it"},
    {"[node]\nlisten_port = {}",
     "edda.toml:2:1: node.listen_port: expected a value, got a table"},
    {"[node]\ndata_dir = 1979-05-27",
     "edda.toml:2:1: node.data_dir: expected a string, got a date-time"},
  };
  for (const auto& c : cases)
    EXPECT_EQ(parse_error(c.text), c.error) << c.text;
}

TEST(ConfigTest, FullTomlOneIsRead) {
  // Forms the old hand-written subset refused: a list over several lines,
  // multi-line and literal strings, inline tables, dotted keys, hex.
  auto s = parse_ok("[saga]\ntypes = [\n  \"pay = debit, credit\",\n"
                    "  \"refund = credit~\", # two\n]\n"
                    "[node]\ndata_dir = '''\n/var/lib/edda'''\n"
                    "listen_port = 0x1CFC\n"
                    "[groups]\norders = { max_reconsume = 3 }\n"
                    "audit.retry_delays = [\"1s\"]\n");
  EXPECT_EQ(s.saga_types, (std::vector<std::string>{"pay = debit, credit",
                                                    "refund = credit~"}));
  EXPECT_EQ(s.data_dir, "/var/lib/edda");
  EXPECT_EQ(s.listen_port, 7420);
  EXPECT_EQ(s.group("orders").max_reconsume, 3u);
  EXPECT_EQ(s.group("audit").retry_delays_ms, (std::vector<uint64_t>{1000}));
}

TEST(ConfigTest, TomlParserKeepsPathsTypesAndLines) {
  toml::document doc;
  std::string error;
  ASSERT_TRUE(toml::parse("a = 1_000\n[t.\"x.y\"]\nb = [1, -2, 'three',]\n"
                          "c = -1.5e3\nd = false\n",
                          "t.toml", doc, error))
    << error;
  // `t` is made on the way to `t."x.y"`.
  ASSERT_EQ(doc.tables.size(), 2u);
  EXPECT_EQ(doc.tables[0].path, (toml::key_path{"t"}));
  EXPECT_EQ(doc.tables[1].path, (toml::key_path{"t", "x.y"}));
  EXPECT_EQ(doc.tables[1].line, 2);
  EXPECT_EQ(doc.tables[1].column, 4);
  ASSERT_EQ(doc.entries.size(), 4u);
  EXPECT_EQ(doc.entries[0].path, (toml::key_path{"a"}));
  EXPECT_EQ(doc.entries[0].val.integer, 1000);
  const auto& b = doc.entries[1];
  EXPECT_EQ(b.path, (toml::key_path{"t", "x.y", "b"}));
  EXPECT_EQ(b.line, 3);
  EXPECT_EQ(b.column, 1);
  ASSERT_EQ(b.val.type, toml::kind::array);
  ASSERT_EQ(b.val.array.size(), 3u);
  EXPECT_EQ(b.val.array[1].integer, -2);
  EXPECT_EQ(b.val.array[2].str, "three");
  EXPECT_EQ(doc.entries[2].val.type, toml::kind::floating);
  EXPECT_DOUBLE_EQ(doc.entries[2].val.floating, -1500.0);
  EXPECT_EQ(doc.entries[3].val.type, toml::kind::boolean);
  EXPECT_FALSE(doc.entries[3].val.boolean);
  EXPECT_EQ(toml::format_key(b.path), "t.\"x.y\".b");
  EXPECT_EQ(toml::format_value(b.val), "[1, -2, \"three\"]");
}

// -- durations and sizes -------------------------------------------------

TEST(ConfigTest, DurationsParseWithEveryUnit) {
  struct ok {
    const char* text;
    uint64_t ms;
  };
  const ok cases[]
    = {{"250ms", 250},   {"5s", 5000}, {"2m", 120000}, {"1h", 3600000},
       {"1d", 86400000}, {"0", 0},     {"1500", 1500}, {"0s", 0}};
  for (const auto& c : cases) {
    uint64_t out = 12345;
    EXPECT_TRUE(parse_duration_ms(c.text, out)) << c.text;
    EXPECT_EQ(out, c.ms) << c.text;
  }
  for (const char* text :
       {"", "s", "5x", "1.5s", "-1s", "5 s", " 5s", "5S", "5sec",
        "99999999999999999999", "999999999999999999d"}) {
    uint64_t out = 7;
    EXPECT_FALSE(parse_duration_ms(text, out)) << text;
    EXPECT_EQ(out, 7u) << text;
  }
}

TEST(ConfigTest, DurationsFormatWithTheLargestExactUnit) {
  EXPECT_EQ(format_duration_ms(60000), "1m");
  EXPECT_EQ(format_duration_ms(1500), "1500ms");
  EXPECT_EQ(format_duration_ms(0), "0ms");
  EXPECT_EQ(format_duration_ms(100), "100ms");
  EXPECT_EQ(format_duration_ms(90000), "90s");
  EXPECT_EQ(format_duration_ms(86400000), "1d");
  EXPECT_EQ(format_duration_ms(25 * 3600000ull), "25h");
  for (uint64_t ms : {1ull, 999ull, 61000ull, 7200000ull, 123456789ull}) {
    uint64_t back = 0;
    ASSERT_TRUE(parse_duration_ms(format_duration_ms(ms), back));
    EXPECT_EQ(back, ms);
  }
}

TEST(ConfigTest, SizesParseOnlyBinaryUnitsAndBytes) {
  struct ok {
    const char* text;
    uint64_t bytes;
  };
  const ok cases[]
    = {{"512", 512},         {"64KiB", 64ull << 10}, {"4MiB", 4ull << 20},
       {"1GiB", 1ull << 30}, {"2TiB", 2ull << 40},   {"0", 0}};
  for (const auto& c : cases) {
    uint64_t out = 1;
    EXPECT_TRUE(parse_size_bytes(c.text, out)) << c.text;
    EXPECT_EQ(out, c.bytes) << c.text;
  }
  for (const char* text : {"", "4MB", "4mib", "4 MiB", "1.5GiB", "-1", "4M",
                           "4B", "17179869184GiB"}) {
    uint64_t out = 7;
    EXPECT_FALSE(parse_size_bytes(text, out)) << text;
    EXPECT_EQ(out, 7u) << text;
  }
}

TEST(ConfigTest, SizesFormatWithTheLargestExactUnit) {
  EXPECT_EQ(format_size_bytes(4194304), "4MiB");
  EXPECT_EQ(format_size_bytes(4ull << 30), "4GiB");
  EXPECT_EQ(format_size_bytes(3072), "3KiB");
  EXPECT_EQ(format_size_bytes(1000), "1000");
  EXPECT_EQ(format_size_bytes(1536), "1536");
  EXPECT_EQ(format_size_bytes(0), "0");
  EXPECT_EQ(format_size_bytes(1ull << 40), "1TiB");
}

// -- command line overrides ----------------------------------------------

TEST(ConfigTest, ApplyOverrideSetsTypedValues) {
  node_settings s;
  std::string error;
  for (const char* arg :
       {"storage.durability=nosync", "storage.map_size = 8GiB",
        "node.listen_port=8000", "consumer.retry_delays=1s 5s",
        "node.data_dir=/var/lib/edda", "node.listen_host=\"::1\"",
        "groups.\"a.b\".max_reconsume=3", "consumer.consume_timeout=250",
        "log.level='debug'"}) {
    ASSERT_TRUE(apply_override(arg, s, error)) << arg << ": " << error;
  }
  EXPECT_EQ(s.mode, durability::nosync);
  EXPECT_EQ(s.map_size, 8ull << 30);
  EXPECT_EQ(s.listen_port, 8000);
  EXPECT_EQ(s.group_defaults.retry_delays_ms,
            (std::vector<uint64_t>{1000, 5000}));
  EXPECT_EQ(s.data_dir, "/var/lib/edda");
  EXPECT_EQ(s.listen_host, "::1");
  EXPECT_EQ(s.consume_timeout_ms, 250u);
  EXPECT_EQ(s.log_level, "debug");
  EXPECT_EQ(s.group("a.b").max_reconsume, 3u);
  // Inherited from the defaults as they were when the group was created.
  EXPECT_EQ(s.group("a.b").retry_delays_ms,
            (std::vector<uint64_t>{1000, 5000}));
  ASSERT_TRUE(apply_override("consumer.retry_delays=[\"2s\", 3000]", s, error))
    << error;
  EXPECT_EQ(s.group_defaults.retry_delays_ms,
            (std::vector<uint64_t>{2000, 3000}));
}

TEST(ConfigTest, SagaTypesTakeOneStringOrAnArrayOfNameEqualsSteps) {
  node_settings s;
  std::string error;
  ASSERT_TRUE(apply_override(R"(saga.types=["a = x, y", "b = z~"])", s, error))
    << error;
  EXPECT_EQ(s.saga_types, (std::vector<std::string>{"a = x, y", "b = z~"}));
  ASSERT_TRUE(apply_override("saga.types=\"t = one\"", s, error)) << error;
  EXPECT_EQ(s.saga_types, (std::vector<std::string>{"t = one"}));
  EXPECT_NE(override_error("saga.types=[\"no steps =\"]").find("is not NAME = STEP"),
            std::string::npos);
  EXPECT_NE(override_error("saga.types=[\"= a\"]").find("is not NAME = STEP"),
            std::string::npos);
  EXPECT_NE(override_error("saga.types=[1]").find("a string like"),
            std::string::npos);
  EXPECT_NE(override_error("saga.step_attempts=0"), "");
}

TEST(ConfigTest, ApplyOverrideWinsOverTheFile) {
  node_settings s;
  std::string error;
  ASSERT_TRUE(parse_settings("[groups.orders]\nmax_reconsume = 2\n"
                             "[node]\nlisten_port = 1\n",
                             "edda.toml", s, error));
  ASSERT_TRUE(apply_override("node.listen_port=2", s, error)) << error;
  ASSERT_TRUE(apply_override("groups.orders.retry_delays=7s", s, error))
    << error;
  EXPECT_EQ(s.listen_port, 2);
  EXPECT_EQ(s.group("orders").max_reconsume, 2u);
  EXPECT_EQ(s.group("orders").retry_delays_ms, (std::vector<uint64_t>{7000}));
}

TEST(ConfigTest, ApplyOverrideValidatesLikeTheFile) {
  EXPECT_EQ(override_error("node.listen_port=abc"),
            "command line: node.listen_port: expected an integer, got a "
            "string (\"abc\")");
  EXPECT_EQ(override_error("node.listen_port=70000"),
            "command line: node.listen_port: 70000 is out of range 0..65535");
  EXPECT_EQ(override_error("storage.mapsize=1GiB"),
            "command line: unknown key 'storage.mapsize' (did you mean "
            "'storage.map_size'?)");
  EXPECT_EQ(override_error("storage.durability=fast"),
            "command line: storage.durability: 'fast' is not one of fsync, "
            "nometasync, nosync");
  EXPECT_EQ(override_error("consumer.max_span=10"),
            "command line: consumer.max_span: 10 must be >= "
            "consumer.max_inflight (1024)");
  EXPECT_EQ(override_error("network.heartbeat_interval=5s"),
            "command line: network.heartbeat_interval: 5s must be < "
            "network.connection_timeout (1s)");
  EXPECT_EQ(override_error("consumer.retry_delays=1s 0s"),
            "command line: consumer.retry_delays: each delay must be > 0, "
            "got \"0s\"");
  EXPECT_EQ(override_error("node.listen_port="),
            "command line: node.listen_port: missing value");
  EXPECT_EQ(override_error("node.data_dir=\"unterminated"),
            "command line: node.data_dir: Error while parsing string: encountered "
            "end-of-file");
  EXPECT_EQ(override_error("node.listen_port"),
            "command line: expected '=' after key in 'node.listen_port' "
            "(use key=value)");
}

TEST(ConfigTest, FailedOverrideLeavesSettingsUnchanged) {
  node_settings s;
  s.max_span = 4000;
  std::string error;
  EXPECT_FALSE(apply_override("consumer.max_inflight=5000", s, error));
  EXPECT_EQ(error, "command line: consumer.max_inflight: 5000 must be <= "
                   "consumer.max_span (4000)");
  EXPECT_EQ(s.max_inflight, 1024u);
}

// -- files ---------------------------------------------------------------

TEST(ConfigTest, LoadSettingsFileOnMissingPathNamesPathAndReason) {
  node_settings s;
  std::string error;
  EXPECT_FALSE(load_settings_file("/nonexistent-edda-dir/edda.toml", s, error));
  EXPECT_EQ(error, "cannot read '/nonexistent-edda-dir/edda.toml': No such "
                   "file or directory");
  expect_same(s, node_settings{});
}

TEST(ConfigTest, LoadSettingsFileReportsErrorsWithTheFilePath) {
  auto path = ::testing::TempDir() + "edda_config_test_load.toml";
  {
    std::ofstream out{path, std::ios::binary};
    out << "[node]\nlisten_port = 4242\n[log]\nlevel = \"loud\"\n";
  }
  node_settings s;
  std::string error;
  EXPECT_FALSE(load_settings_file(path, s, error));
  EXPECT_EQ(error, path
                     + ":4:1: log.level: 'loud' is not one of debug, "
                       "info, warn, error");
  {
    std::ofstream out{path, std::ios::binary | std::ios::trunc};
    out << "[node]\nlisten_port = 4242\n";
  }
  ASSERT_TRUE(load_settings_file(path, s, error)) << error;
  EXPECT_EQ(s.listen_port, 4242);
  std::remove(path.c_str());
}

} // namespace

TEST(ConfigTest, ClusterSettingsAreCheckedAndEtcdTakesACommaList) {
  EXPECT_EQ(override_error("cluster.etcd=localhost"),
            "command line: cluster.etcd: 'localhost' is not host:port (or "
            "http://host:port)");
  EXPECT_EQ(override_error("cluster.etcd=127.0.0.1:0"),
            "command line: cluster.etcd: '127.0.0.1:0' is not host:port (or "
            "http://host:port)");
  EXPECT_EQ(override_error("node.name=a/b"),
            "command line: node.name: 'a/b' may only contain letters, "
            "digits, '_', '-' and '.'");
  EXPECT_EQ(parse_error("[cluster]\nname = \"\"\n"),
            "edda.toml:2:1: cluster.name: '' must be 1-64 characters");
  EXPECT_EQ(override_error("cluster.lease_ttl=1s"),
            "command line: cluster.lease_ttl: '1s' is not within 2s..1m");
  EXPECT_EQ(override_error("node.advertise=example.org"),
            "command line: node.advertise: 'example.org' is not host:port");
  node_settings s;
  std::string error;
  ASSERT_TRUE(apply_override("cluster.etcd=127.0.0.1:2379,http://h:2381", s,
                             error))
    << error;
  EXPECT_EQ(s.cluster_etcd,
            (std::vector<std::string>{"127.0.0.1:2379", "http://h:2381"}));
  ASSERT_TRUE(apply_override("cluster.etcd=[]", s, error)) << error;
  EXPECT_TRUE(s.cluster_etcd.empty());
  auto parsed = parse_ok("[cluster]\nname = \"c1\"\netcd = [\"127.0.0.1:1\","
                         " \"127.0.0.1:2\"]\nlease_ttl = \"3s\"\n");
  EXPECT_EQ(parsed.cluster_name, "c1");
  EXPECT_EQ(parsed.cluster_etcd.size(), 2u);
  EXPECT_EQ(parsed.cluster_lease_ttl_ms, 3000u);
}

TEST(ConfigTest, ReplicationNeedsAClusterAndMinInsyncAtMostTheFactor) {
  node_settings d;
  EXPECT_EQ(d.replication_factor, 1u);
  EXPECT_EQ(d.min_insync, 1u);
  EXPECT_EQ(d.replica_lag_max_ms, 5000u);
  auto ok = parse_ok("[cluster]\netcd = [\"127.0.0.1:2379\"]\n"
                     "replication_factor = 3\nmin_insync = 2\n"
                     "replica_lag_max = \"2s\"\n");
  EXPECT_EQ(ok.replication_factor, 3u);
  EXPECT_EQ(ok.min_insync, 2u);
  EXPECT_EQ(ok.replica_lag_max_ms, 2000u);
  EXPECT_EQ(parse_error("[cluster]\netcd = [\"127.0.0.1:2379\"]\n"
                        "replication_factor = 2\nmin_insync = 3\n"),
            "edda.toml:4:1: cluster.min_insync: 3 must be <= "
            "cluster.replication_factor (2)");
  EXPECT_EQ(parse_error("[cluster]\netcd = [\"127.0.0.1:2379\"]\n"
                        "min_insync = 2\n"),
            "edda.toml:3:1: cluster.min_insync: 2 must be <= "
            "cluster.replication_factor (1)");
  EXPECT_EQ(parse_error("[cluster]\nreplication_factor = 2\n"),
            "edda.toml:2:1: cluster.replication_factor: 2 needs a cluster "
            "(cluster.etcd): a single node has no other node to keep copies");
  EXPECT_EQ(d.failover, "auto");
  // The default needs no copies (without them there is nothing to elect).
  EXPECT_EQ(parse_ok("[cluster]\netcd = [\"127.0.0.1:2379\"]\n").failover,
            "auto");
  EXPECT_EQ(parse_ok("[cluster]\netcd = [\"127.0.0.1:2379\"]\n"
                     "replication_factor = 2\nfailover = \"auto\"\n")
              .failover,
            "auto");
  EXPECT_EQ(parse_error("[cluster]\nfailover = \"yes\"\n"),
            "edda.toml:2:1: cluster.failover: 'yes' is not one of off, auto");
  EXPECT_EQ(parse_error("[cluster]\nreplication_factor = 6\n"),
            "edda.toml:2:1: cluster.replication_factor: 6 is out of range "
            "1..5");
}

TEST(ConfigTest, RebalanceDelayIsZeroToOneMinuteAndZeroMeansAtOnce) {
  EXPECT_EQ(node_settings{}.rebalance_delay_ms, 300u);
  EXPECT_EQ(parse_ok("[consumer]\nrebalance_delay = 0\n").rebalance_delay_ms,
            0u);
  EXPECT_EQ(parse_ok("[consumer]\nrebalance_delay = \"1m\"\n")
              .rebalance_delay_ms,
            60000u);
  EXPECT_EQ(parse_error("[consumer]\nrebalance_delay = \"61s\"\n"),
            "edda.toml:2:1: consumer.rebalance_delay: '61s' is not within "
            "0ms..1m");
}

TEST(ConfigTest, AdminListenIsAutoOffOrHostPort) {
  EXPECT_EQ(node_settings{}.admin_listen, "auto");
  EXPECT_EQ(parse_ok("[node]\nadmin_listen = \"off\"\n").admin_listen, "off");
  EXPECT_EQ(parse_ok("[node]\nadmin_listen = \"0.0.0.0:9644\"\n").admin_listen,
            "0.0.0.0:9644");
  EXPECT_EQ(parse_error("[node]\nadmin_listen = \"host:99999\"\n"),
            "edda.toml:2:1: node.admin_listen: 'host:99999' is not auto, off or "
            "host:port (port 0-65535)");
}

TEST(ConfigTest, ListenAddressReadsAutoOffAndHostPort) {
  node_settings s;
  s.listen_host = "10.0.0.5";
  s.listen_port = 7420;
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(listen_address("auto", s, s.listen_host, 10, host, port));
  EXPECT_EQ(host, "10.0.0.5");
  EXPECT_EQ(port, 7430);
  ASSERT_TRUE(listen_address("auto", s, "127.0.0.1", 20, host, port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 7440);
  EXPECT_FALSE(listen_address("off", s, "127.0.0.1", 20, host, port));
  ASSERT_TRUE(listen_address("[::1]:9644", s, "127.0.0.1", 20, host, port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 9644);
  s.listen_port = 0; // the OS picks the node's port, and these
  ASSERT_TRUE(listen_address("auto", s, "127.0.0.1", 20, host, port));
  EXPECT_EQ(port, 0);
  s.listen_port = 65530;
  ASSERT_TRUE(listen_address("auto", s, "127.0.0.1", 20, host, port));
  EXPECT_EQ(port, 65535);
}

TEST(ConfigTest, ApiSettingsAreCheckedAndTokensAreNeverPrinted) {
  auto s = parse_ok("[api]\nlisten = \"0.0.0.0:9000\"\n"
                    "tokens = [\"billing:0123456789abcdef\", "
                    "\"ops:fedcba9876543210xyz\"]\n"
                    "produce_window = 10\n");
  EXPECT_EQ(s.api_listen, "0.0.0.0:9000");
  ASSERT_EQ(s.api_tokens.size(), 2u);
  EXPECT_EQ(s.api_tokens[1], "ops:fedcba9876543210xyz");
  EXPECT_EQ(s.api_produce_window, 10u);
  auto text = render_settings(s);
  EXPECT_EQ(text.find("0123456789abcdef"), std::string::npos) << text;
  EXPECT_NE(text.find("\"billing:***\", \"ops:***\""), std::string::npos)
    << text;
  EXPECT_EQ(parse_ok("[api]\nlisten = \"off\"\n").api_listen, "off");
  EXPECT_EQ(parse_error("[api]\nlisten = \"7430\"\n"),
            "edda.toml:2:1: api.listen: '7430' is not auto, off or host:port "
            "(port 0-65535)");
  EXPECT_EQ(parse_error("[api]\ntokens = [\"short:abc\"]\n"),
            "edda.toml:2:1: api.tokens: the secret of client 'short' has 3 "
            "characters; at least 16");
  EXPECT_EQ(parse_error("[api]\ntokens = [\"no-colon-but-long-enough\"]\n"),
            "edda.toml:2:1: api.tokens: a token is \"client:secret\" (a client "
            "name, ':', then the secret); this one has no client name");
  EXPECT_EQ(parse_error("[api]\ntokens = [\"a:0123456789abcdef\", "
                        "\"b:0123456789abcdef\"]\n"),
            "edda.toml:2:1: api.tokens: clients 'a' and 'b' have the same "
            "secret");
  EXPECT_EQ(parse_error("[api]\nproduce_window = 0\n").rfind(
              "edda.toml:2:1: api.produce_window: ", 0),
            0u);
}
