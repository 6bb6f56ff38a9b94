// Typed node settings: every setting is declared once (key, type, default,
// bounds, description, runtime changeability) in settings.cpp; defaults live
// in the member initializers below and nowhere else.
//
// Sources, later ones winning: built-in defaults, a TOML file
// (load_settings_file / parse_settings), then command line "key=value"
// overrides (apply_override). All three run the same validation.
//
// Thread-safety: free functions without shared state; all_settings() returns
// an immutable table built on first use (thread-safe static init).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace edda::config {

/// LMDB sync mode of the storage environment.
enum class durability : uint8_t {
  fsync = 0,      ///< fsync data and meta pages on every commit
  nometasync = 1, ///< MDB_NOMETASYNC: skip the meta page sync
  nosync = 2,     ///< MDB_NOSYNC: leave flushing to the OS
};

/// "fsync", "nometasync" or "nosync".
[[nodiscard]] const char* to_string(durability);

/// Retry behaviour of one consumer group.
struct group_settings {
  /// Redeliveries of a failed message before it is given up.
  uint32_t max_reconsume = 16;
  /// Delay before each redelivery, in milliseconds.
  std::vector<uint64_t> retry_delays_ms = {
    1000,   5000,   10000,  30000,  60000,  120000,  180000,  240000,  300000,
    360000, 420000, 480000, 540000, 600000, 1200000, 1800000, 3600000, 7200000};
};

struct node_settings {
  // [node]
  std::string data_dir = "edda-data"; // LMDB env directory, created if missing
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 7420; // 0 = OS picks
  std::string name; // node id; empty = generated on the first start, kept in LMDB
  std::string advertise; // host:port peers and clients use; empty = listen address
  uint64_t stop_grace_ms = 10000; // after SIGTERM: exit at once if not stopped by then
  // The admin port (HTTP: /metrics, /health, /ready; runtime/admin):
  // "auto": 127.0.0.1, port node.listen_port + 20 (the OS picks one when
  // node.listen_port is 0); "off"; or "host:port" (port 0: OS picks).
  std::string admin_listen = "auto";
  // [cluster] (no etcd endpoints: a single node that needs nothing else)
  std::string cluster_name = "edda";  // etcd key prefix /edda/<name>/
  std::vector<std::string> cluster_etcd; // etcd endpoints, host:port
  uint64_t cluster_lease_ttl_ms = 10000; // membership lease; fence after it
  // Replication (issue 13): copies of this node's storage, itself included;
  // writes are acknowledged once every in-sync copy has them, and only
  // while at least min_insync copies are in sync.
  uint32_t replication_factor = 1;
  uint32_t min_insync = 1;
  uint64_t replica_lag_max_ms = 5000; // not caught up this long: out of sync
  // "auto": when this node's lease expires, the controller elects the
  // in-sync copy with the most writes and that node serves the group;
  // "off": the group waits for this node.
  std::string failover = "auto";
  // [storage]
  durability mode = durability::fsync;
  uint64_t map_size = 4ull << 30; // bytes
  // Where `edda backup NAME` writes (NAME/data.mdb): "" = the data dir's
  // path + ".backups"; "off" refuses backups.
  std::string backup_dir;
  // [broker]
  uint64_t max_message_size = 4ull << 20; // bytes, body+properties+key+tags
  uint32_t default_partitions = 4;
  // [consumer]
  group_settings group_defaults;
  uint64_t consume_timeout_ms = 60000; // unacked delivery -> failed attempt
  uint32_t max_inflight = 1024; // unacked messages per member per partition
  uint32_t max_span = 2048;     // max offsets lowest unacked .. next to deliver
  uint64_t offset_flush_delay_ms = 5; // an ack's offset write waits this long to share a commit
  // A group's membership change waits this long for others before the
  // partitions are reassigned (one generation per burst); 0 = at once.
  uint64_t rebalance_delay_ms = 300;
  // [idempotency]
  uint64_t dedup_retention_ms = 24ull * 3600 * 1000;
  // [txn] transactional messages
  uint64_t txn_check_after_ms = 6000;        // first check-back of a half message
  uint32_t txn_max_checks = 15;              // answered checks before the final policy
  uint64_t txn_max_check_interval_ms = 60000; // backoff cap between checks
  uint64_t txn_check_timeout_ms = 3000;      // a checker silent this long = unknown
  // In doubt this long with no member of its producer group alive to ask:
  // alerted (txn_orphaned) once, and counted by /metrics.
  uint64_t txn_orphan_alert_after_ms = 60000;
  std::string txn_final_policy = "rollback"; // after max_checks: rollback | commit
  uint64_t txn_retention_ms = 24ull * 3600 * 1000; // resolved outcomes kept
  // [saga]
  uint32_t saga_shards = 4; // actors that own running sagas (by id hash)
  // Saga types declared in settings, served by named participants
  // ("transfer = debit, credit, notify~"; sagas::declared_saga).
  std::vector<std::string> saga_types;
  uint64_t saga_step_timeout_ms = 5000; // per attempt, declared types
  uint32_t saga_step_attempts = 3;      // including the first
  uint64_t saga_step_backoff_ms = 200;  // first retry; doubles up to 10 s
  // A step whose participant is not registered waits this long for one
  // before its attempt fails (declared types).
  uint64_t saga_participant_wait_ms = 5 * 60 * 1000;
  uint64_t saga_retention_ms = 7ull * 24 * 3600 * 1000; // ended sagas kept
  // [network]
  uint64_t heartbeat_interval_ms = 100; // 0 = no heartbeats
  uint64_t connection_timeout_ms = 1000;
  // Mutual TLS on the node port (PEM files; all three or none): only peers
  // whose certificate the CA signed may connect (libcaf-openssl).
  std::string tls_certificate, tls_key, tls_ca;
  // [scheduler]
  std::string scheduler_policy = "sharing"; // "sharing" or "stealing"
  uint32_t max_threads = 0;                 // 0 = number of cores
  // [log]
  std::string log_level = "info"; // "debug", "info", "warn", "error"
  std::string log_format = "text"; // "text" or "json" (one object a line)
  std::string log_levels;          // "saga=debug,txn=warn": per component
  // [api] the client door (gRPC, runtime/door)
  // "auto": node.listen_host, port node.listen_port + 10 (the OS picks one
  // when node.listen_port is 0); "off"; or "host:port" (port 0: OS picks).
  std::string api_listen = "auto";
  std::vector<std::string> api_tokens; // "client:secret" each; empty = no auth
  uint64_t api_max_request_size = 16ull << 20; // one gRPC message, bytes
  uint32_t api_produce_window = 4096; // unacknowledged records per stream
  uint32_t api_max_calls = 1024;      // calls open at once, in all
  uint32_t api_max_calls_per_address = 256;
  uint64_t api_handshake_timeout_ms = 5000;
  uint64_t api_idle_timeout_ms = 300000; // a connection without calls
  // [groups."<name>"]: per group overrides. Each entry is complete: keys a
  // group table leaves out are copied from `group_defaults` when the file
  // or override is applied (later changes to the defaults do not reach
  // groups already present).
  std::map<std::string, group_settings> groups;

  /// The group's overrides, or `group_defaults` for a group without any.
  [[nodiscard]] const group_settings& group(const std::string& name) const;
};

/// One row of the declaration table.
struct setting_info {
  std::string key;           ///< dotted TOML key, e.g. "storage.map_size"
  std::string type;          ///< "string", "integer", "size", "duration", ...
  std::string default_value; ///< human form, e.g. "4GiB", "fsync"
  std::string description;
  std::string bounds; ///< e.g. "0..65535", "fsync, nometasync, nosync"
  bool runtime_changeable = false;
};

/// Every setting, in file order. Group keys appear as
/// "groups.<name>.max_reconsume" and "groups.<name>.retry_delays".
[[nodiscard]] const std::vector<setting_info>& all_settings();

/// Parses a TOML document on top of `out`: keys absent from `text` keep the
/// value they have in `out`. On failure returns false, leaves `out` as it
/// was and sets `error` to one line naming the file/line and the key, e.g.
/// "edda.toml:7: unknown key 'storage.mapsize' (did you mean
/// 'storage.map_size'?)" or "edda.toml:3: storage.durability: 'fast' is not
/// one of fsync, nometasync, nosync".
[[nodiscard]] bool parse_settings(const std::string& text,
                                  const std::string& source_name,
                                  node_settings& out, std::string& error);

/// Reads and parses `path` (see parse_settings). An unreadable file gives
/// "cannot read '<path>': <strerror>".
[[nodiscard]] bool load_settings_file(const std::string& path,
                                      node_settings& out, std::string& error);

/// Applies one "key=value" from the command line, with the same validation
/// as a file. The value may be TOML ("\"x\"", "[\"1s\", \"5s\"]") or bare
/// text ("nosync", "8MiB", "1s 5s"). Errors start with "command line: ";
/// on failure `out` is unchanged.
[[nodiscard]] bool apply_override(const std::string& key_eq_value,
                                  node_settings& out, std::string& error);

/// Every setting as valid TOML, grouped by table, one
/// "key = value  # type, default X: description" line each.
[[nodiscard]] std::string render_settings(const node_settings& s);

/// "250ms", "5s", "2m", "1h", "1d"; a bare integer is milliseconds.
[[nodiscard]] bool parse_duration_ms(const std::string& text, uint64_t& out);

/// "512" (bytes), "64KiB", "4MiB", "1GiB", "1TiB". Decimal units (MB) are
/// rejected on purpose: they are too easily confused with MiB.
[[nodiscard]] bool parse_size_bytes(const std::string& text, uint64_t& out);

/// log.levels, "saga=debug, txn=warn": component -> level (debug, info,
/// warn, error, off). False, with `error` naming the item, if malformed.
[[nodiscard]] bool parse_log_levels(const std::string& spec,
                                    std::map<std::string, std::string>& out,
                                    std::string& error);

/// Largest unit that divides exactly: 60000 -> "1m", 1500 -> "1500ms".
[[nodiscard]] std::string format_duration_ms(uint64_t ms);

/// Largest binary unit that divides exactly: 4194304 -> "4MiB", 1000 ->
/// "1000".
[[nodiscard]] std::string format_size_bytes(uint64_t b);

/// Where a listen setting of `s` ("auto", "off" or "host:port", checked
/// when set; a bracketed IPv6 host loses its brackets) puts a port: false
/// for "off". "auto" is `auto_host` and node.listen_port + `offset` (0 if
/// that port is 0, at most 65535).
[[nodiscard]] bool listen_address(const std::string& spec,
                                  const node_settings& s,
                                  const std::string& auto_host,
                                  uint16_t offset, std::string& host,
                                  uint16_t& port);

} // namespace edda::config
