// replica_host: the follower's side of replication on a node (issue 13).
//
// One actor per node (detached: it does LMDB I/O) keeps a replica of each
// replica group this node follows, each in its own LMDB environment under
// `<data_dir>/replicas/<group>` (the group is its leader's node id), apart
// from the node's own data. Protocol:
//
//   ReplShip{group, leader_epoch, batches} -> ReplAck{group, follower,
//   epoch, seq}
//
// The batches are applied with the rules of follower.hpp (a duplicate is
// skipped, a deposed leader's batch or a new leader's batch over the old
// suffix is refused with `fenced`, a gap is not applied) in one LMDB
// transaction committed with the node's durability mode; the ack names
// the replica's position after that commit, so the leader always sends on
// from seq + 1 (a gap or a lost ack heals itself). A ship with no batches
// is a probe: the answer is the position.
//
//   ReplPositionQuery{group} -> ReplAck   where the copy is, without making
//                                         one (log_id empty: none here)
//   (release_atom, group, true) -> bool   this node serves the group from
//                                         its copy (a failover): closed
//                                         here, ships to it refused
//   (release_atom, group, false) -> bool  followed again
//
// Errors: fenced, invalid_argument
// (a group name that is not a node id, a bad op), message_too_large,
// storage_full, storage_error.
#pragma once

#include "config/settings.hpp"

#include <caf/fwd.hpp>

namespace edda::storage {
class environment;
} // namespace edda::storage

#include <string>

namespace edda::replication {

struct replica_host_options {
  std::string node_id;      ///< this follower's id, named in its acks
  std::string dir;          ///< replicas live in dir/<group>
  /// A standby (its node's group is served elsewhere since a failover):
  /// the copy of `own_group` is kept in `own_dir`, the node's own data dir,
  /// so that the node starts the group from it once it is handed back.
  std::string own_group;
  std::string own_dir;
  uint64_t map_size = 1ull << 30;
  config::durability mode = config::durability::fsync;
};

[[nodiscard]] caf::actor spawn_replica_host(caf::actor_system& sys,
                                            replica_host_options opts);

/// A full copy into `env` began and did not finish (its data is partial).
[[nodiscard]] bool copy_unfinished(const storage::environment& env);

/// The directory of `group`'s replica under `dir` (tools, tests).
[[nodiscard]] std::string replica_dir(const std::string& dir,
                                      const std::string& group);

} // namespace edda::replication
