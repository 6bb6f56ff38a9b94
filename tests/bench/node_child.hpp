// `edda node` as a child process of a benchmark driver: started with a data
// dir (a fresh temp dir unless given) and settings, its listening line read
// from its stdout, stopped with SIGTERM (and SIGTERM'd by the kernel when
// the driver dies). Temp dirs of killed earlier runs are removed.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace edda::bench {

struct node_process {
  pid_t pid = -1;
  std::string endpoint; ///< "127.0.0.1:PORT"; empty if it did not start
  std::string api_endpoint; ///< its client door (gRPC); empty if none
  std::string data_dir;
  bool owns_dir = false;
};

/// Starts `self_exe node` with `storage.durability=durability` and each of
/// `settings` as --set. Empty endpoint on error (the reason goes to stderr).
[[nodiscard]] node_process start_node(const std::string& self_exe,
                                      const std::string& durability,
                                      const std::string& data_dir,
                                      const std::vector<std::string>& settings);

/// SIGTERM, reap, and remove the data dir if it was made here.
void stop_node(node_process& n);

/// `base` plus the settings of node n`index` of cluster `name` on `etcd`
/// (lease TTL 3 s), with that replication factor, min in sync and failover.
[[nodiscard]] std::vector<std::string>
cluster_node_settings(std::vector<std::string> base, const std::string& etcd,
                      const std::string& name, uint64_t index,
                      uint64_t replication, uint64_t min_insync,
                      bool failover);

/// One etcd (`etcd` on PATH, from Debian's etcd-server) on free 127.0.0.1
/// ports in a temp dir, for `edda bench txmsg --cluster N`.
struct etcd_child {
  pid_t pid = -1;
  std::string endpoint; ///< "127.0.0.1:PORT"; empty if it did not start
  std::string dir;
};

/// Starts etcd and waits (at most 10 s) until it answers. Empty endpoint on
/// error (the reason goes to stderr).
[[nodiscard]] etcd_child start_etcd();
void stop_etcd(etcd_child& e);

} // namespace edda::bench
