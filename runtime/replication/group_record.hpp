// group_record: a node's replica group in etcd (issue 13, CLUSTER.md phase
// 2):
//
//   /edda/<cluster>/groups/<node> = ReplicaGroup{leader, leader_epoch,
//                                   log_id, isr, ...}
//
// changed only by compare-and-swap on the key's mod_revision, so that two
// writers (this leader, and later the controller electing a new one) never
// both win. What the record is for: a failover may elect only a follower
// in `isr`, so a follower enters it only once it has every acknowledged
// write (the leader's acks already wait for it), and leaves the leader's
// in-sync set (its acks stop waiting for it) only once the record without
// it is written (RocketMQ 5663: a set change that counted before it was
// stored lost acknowledged messages).
//
// claim_group(): at the node's start, before its first commit: the epoch it
// leads with is one above both its own last one and the record's (so a
// node whose data dir was wiped still gets a higher epoch), the isr starts
// empty (followers enter once caught up). A record of another log (this
// data dir was replaced) is kept as previous_* in the new record, with an
// error line naming the followers that hold the old log's writes. A record
// led by another node is refused (`fenced`).
//
// Failover (cluster.failover = auto): the controller writes the record
// with `host` = the node whose copy it elected, and that node claims the
// group with claim_options::host (the copy keeps the log; the epoch goes
// up again). The group's own node, when it starts again, is refused
// (`fenced`, naming the host): it follows its group as "<group>~standby"
// (node/standby.hpp) until the controller elects that copy (`host` =
// standby_id(group)), and then claims the group at home from it.
//
// The recorder actor (detached: etcd calls block) writes in-sync set
// changes for the shipper and watches the record:
//   ReplicaGroup{isr} -> ReplicaGroup (as written)
//   (stop_atom) -> bool     a clean stop: `stopped_ms` is set in the record
//                          (the controller waits `restart_wait` for it)
//   (watch_atom, shipper)  the shipper is sent (lost_atom, error) once the
//                          record names another leader or epoch, or is
//                          deleted (a watch from the record as written;
//                          read again and watched anew if it ends)
// errors: fenced (the record's leader or epoch is no longer this one's),
// unavailable / timeout (etcd; the shipper tries again).
#pragma once

#include "coord/coord.hpp"

#include "replication.pb.h"

#include <caf/fwd.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace edda::replication {

struct group_claim {
  uint64_t epoch = 0;
  int64_t mod_revision = 0; ///< of the record as written
  /// Set once the group had an election (a failover or a hand-back; kept
  /// in the record for every later claim): the epoch the controller raised
  /// it to and the elected copy's seq when it was asked. A copy of this log last written at a lower epoch may hold
  /// writes of the deposed leader that the elected copy lacks (never
  /// acknowledged: each was on every in-sync copy first): it is copied
  /// over. (The old leader may acknowledge a few more through the elected
  /// copy until its node releases it: those are in the copy, so
  /// elected_seq is not a bound to truncate at.)
  uint64_t election_epoch = 0;
  uint64_t elected_seq = 0;
  uint64_t elected_copy_epoch = 0; ///< the elected copy's epoch then
};

struct claim_options {
  /// "" : the group's own node claims it. Else the node the controller
  /// elected to serve it (the record's `host` must name it).
  std::string host;
  /// cluster.failover = auto: the controller may elect a new leader when
  /// this one is gone.
  bool failover = false;
  /// The claimer's position (with local_epoch): a hand-back's claim (the
  /// record's host is the node's standby) is refused unless the data dir
  /// is the elected copy (its log, epoch, and at least its seq).
  uint64_t local_seq = 0;
};

/// The member id of `group`'s own node while it follows its group to take
/// it back (a hand-back: "<group>~standby"; `~` is never in a node id).
[[nodiscard]] std::string standby_id(const std::string& group);

/// "/edda/<cluster>/groups/<group>".
[[nodiscard]] std::string group_key(const std::string& cluster_name,
                                    const std::string& group);

/// Writes this node's record as its leader (see the header comment).
/// Errors: fenced, unavailable, timeout.
/// `fenced` (naming the host) if `group` is served by another node since a
/// failover: what its own node's start checks first, before anything else
/// (a live twin would be the hosted group itself). Errors also:
/// unavailable, timeout, invalid_argument.
[[nodiscard]] caf::error refuse_if_served_elsewhere(
  coord::client& store, const std::string& cluster_name,
  const std::string& group);

[[nodiscard]] caf::expected<group_claim>
claim_group(coord::client& store, const std::string& cluster_name,
            const std::string& group, const std::string& log_id,
            uint64_t local_epoch, int64_t now_ms,
            const claim_options& opts = {});

/// "n2,n3" (an in-sync set, for logs), "none" if empty.
[[nodiscard]] std::string
joined(const google::protobuf::RepeatedPtrField<std::string>& ids);

/// One group's record as listed, with the key's mod_revision.
struct group_entry {
  wire::v1::ReplicaGroup rec;
  int64_t mod_revision = 0;
};

/// Every group's record (those that parse), by group. Errors: unavailable,
/// timeout.
[[nodiscard]] caf::expected<std::map<std::string, group_entry>>
list_groups(coord::client& store, const std::string& cluster_name);

/// The record of `group` (nullopt: none). Errors: unavailable, timeout,
/// invalid_argument (it does not parse).
[[nodiscard]] caf::expected<std::optional<wire::v1::ReplicaGroup>>
read_group(coord::client& store, const std::string& cluster_name,
           const std::string& group);

/// `on_lost` (may be null) is called once, on the recorder's thread, when
/// the record no longer names this leader at this epoch (keep it short:
/// the node stops on it; the shipper is told as well).
[[nodiscard]] caf::actor
spawn_group_recorder(caf::actor_system& sys, coord::client_ptr store,
                     std::string cluster_name, std::string group,
                     uint64_t epoch, int64_t mod_revision,
                     std::function<void(const caf::error&)> on_lost = {});

} // namespace edda::replication
