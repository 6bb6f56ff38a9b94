// A node's identity and its place in a cluster, kept in its own LMDB (db
// `meta`): the node id ("node": NodeMeta.node_id, created once on the first
// start, or taken from node.name) and "cluster": the cluster the data dir
// belongs to, the lease of its last start (a restarted node clears the
// member key of its previous life with it) and its incarnation count.
//
// Only for the node's start, before the storage writer runs: these read and
// write the environment directly.
#pragma once

#include "coord/coord.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <cstdint>
#include <string>

namespace edda::storage {
class environment;
} // namespace edda::storage

namespace edda::cluster {

/// The node id of this data dir, created on the first start: `name` if
/// given (node.name), else a generated 32-hex id. Errors: bad_config (the
/// data dir belongs to another node id than `name`), storage_error.
[[nodiscard]] caf::expected<std::string>
load_node_id(storage::environment& env, const std::string& name,
             int64_t now_ms);

struct cluster_record {
  std::string cluster_name;
  int64_t last_lease_id = 0;
  uint64_t incarnation = 0;
  /// The id etcd gave the cluster (`/edda/<name>/cluster_id`) when this data
  /// dir first joined it: an etcd that lost or reset the cluster's keys has
  /// another one, and the node refuses it rather than drop data that etcd
  /// no longer lists.
  std::string cluster_id;
};

/// Before a cluster node starts its actors: the data dir must belong to this
/// cluster as etcd knows it. A data dir that never was in a cluster must
/// hold no topics (a single node's topics are not in etcd: they would be
/// taken for deleted). Creates the cluster id in etcd on the first start of
/// the cluster, and the cluster record on the first start of the data dir.
/// Returns the cluster id. Errors: bad_config (another cluster, a reset
/// etcd, a single node's data dir), unavailable (etcd), storage_error.
[[nodiscard]] caf::expected<std::string>
check_cluster_data_dir(storage::environment& env, coord::client& store,
                       const std::string& cluster_name);

/// This data dir's cluster record. A data dir that never was in a cluster
/// gets one for `cluster_name` (not yet written). Errors: bad_config (the
/// data dir belongs to another cluster), storage_error.
[[nodiscard]] caf::expected<cluster_record>
load_cluster_record(storage::environment& env,
                    const std::string& cluster_name);

/// The db `meta` key and value of `rec` (for a write through the writer;
/// the cluster id is kept from the stored record).
[[nodiscard]] std::string cluster_record_key();
[[nodiscard]] std::string encode(const cluster_record& rec);

} // namespace edda::cluster
