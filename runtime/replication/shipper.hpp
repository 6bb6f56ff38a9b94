// shipper: the leader's side of replication on a node (issue 13).
// Up to max_inflight_ships ships are in flight to each follower: a commit
// need not wait for the previous ship's round trip.
//
// The storage writer hands every group commit to the shipper (its
// commit_stream, storage/writer_actor.hpp, gated); the shipper sends the
// commits, in seq order and about 1 MiB per message, to each follower's
// replica host (replica_host.hpp; through the follower node's gateway) and
// tells the writer which commits the replicas have, so that the writer
// answers those writes (a client's "stored") only then:
//
//   writer -> shipper   ReplBatch                 (each durable commit)
//   shipper -> writer   (replicated_atom, seq)    (replicated up to seq)
//                       (replicated_atom, seq, error)
//   node   -> shipper   (serving_atom, writer)    the writer to tell (it is
//                                                  spawned after the shipper)
//   node   -> shipper   (link_atom, node_id, host) a follower and where its
//                                                  replica host is (a null
//                                                  host: no longer one)
//   node   -> shipper   (current_atom) -> ClusterStatus  its replication
//                                                  fields: factor, epoch,
//                                                  seqs, each follower
//   node   -> shipper   (stop_atom) -> bool        at a clean stop: answered
//                                                  once every in-sync
//                                                  follower has the last
//                                                  commit (true), or at once
//                                                  if none is in sync
//
// The shipper is linked to the writer: if it dies, the writer dies with it
// (which stops the node loudly) rather than park writes for ever.
//
// In-sync set (Kafka's ISR): every follower starts in it; one that has not
// been caught up with the leader's last commit for `lag_max` leaves it
// (logged), and comes back once it has caught up. A commit is replicated
// when every in-sync follower has it, and only while the in-sync set with
// the leader counts at least `min_insync` replicas; otherwise its writes
// are answered `unavailable` at once (stored on the leader only, not
// acknowledged). With a recorder (group_record.hpp) the in-sync set is
// kept in etcd: a follower enters the record once it has caught up (acks
// wait for it from then on), and leaves the set (acks stop waiting for it)
// only once the record without it is written; while etcd cannot be
// written, writes wait. A record that names another leader or epoch
// (`fenced`) stops all acknowledgements.
//
// Full copy: a follower with an empty copy (a new one, a wiped one), one
// behind the commits still kept in memory (`window_bytes`: after this
// leader restarted, or a long absence), or one with a copy left
// unfinished, gets a full copy of the leader's storage: a
// detached copier reads one LMDB snapshot and sends it (ReplCopy BEGIN,
// DATA of about 1 MiB, END at the snapshot's position) while the shipper
// keeps every commit after the snapshot; then the follower streams on from
// there and rejoins the in-sync set once caught up. A failed copy is tried
// again after 2 s. After a failover (this leader was elected), a follower
// last written at an epoch before the election gets a full copy, which
// truncates whatever the deposed leader wrote that the elected copy lacks
// (not acknowledged before the election; what the old leader acknowledged
// through the elected copy until its release is in that copy).
// Otherwise a follower *ahead* of the leader, or holding another
// log (the leader's data dir was wiped: a new log), is never copied over,
// since it may hold the only copy of acknowledged writes: it stays out,
// logged as an error, for an operator. So does one that refuses this
// leader's epoch, or a commit too large for it.
#pragma once

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace edda::storage {
class environment;
} // namespace edda::storage

namespace edda::replication {

struct shipper_options {
  std::string group;        ///< this leader's node id
  /// The leader's storage, read for full copies (null: no copies).
  std::shared_ptr<storage::environment> env;
  uint64_t epoch = 0;       ///< leader epoch of the batches
  std::string log_id;       ///< this leader's log (ReplPosition.log_id)
  /// Writes the in-sync set to etcd (group_record.hpp); null: set changes
  /// count at once (tests without a store).
  caf::actor recorder;
  uint64_t last_seq = 0;    ///< the last commit before this start
  /// Set once this group had an election (a failover or a hand-back,
  /// group_record.hpp; kept for every later leader): a follower of this
  /// log last written at an epoch
  /// below `election_epoch` may hold writes of the deposed leader that the
  /// elected copy lacks (never acknowledged: every in-sync copy had each
  /// acknowledged write): it gets a full copy (the only way to truncate a
  /// copy here), instead of streaming on or being left out as diverged.
  uint64_t election_epoch = 0;
  uint64_t elected_seq = 0;
  /// The elected copy's own epoch: a follower last written at it, at or
  /// below `elected_seq`, is a prefix of the elected copy (one leader per
  /// epoch): it streams on.
  uint64_t elected_copy_epoch = 0;
  /// The epoch of this storage's last commit before this start. A
  /// follower last written at that same epoch, at or below `last_seq`, is
  /// a prefix of this log (both followed that epoch's leader): it streams
  /// on, even after an election.
  uint64_t start_epoch = 0;
  uint32_t min_insync = 1;  ///< replicas, the leader included
  /// Followers expected (replication_factor - 1): while fewer are known,
  /// every commit is kept (up to window_bytes) for the ones to come.
  uint32_t followers = 1;
  std::chrono::milliseconds lag_max{10000};
  std::chrono::milliseconds request_timeout{5000};
  size_t max_ship_bytes = size_t{1} << 20;
  /// Ships in flight to one follower (each up to max_ship_bytes); the
  /// follower answers them in order.
  uint32_t max_inflight_ships = 4;
  size_t window_bytes = size_t{256} << 20;
};

[[nodiscard]] caf::actor spawn_shipper(caf::actor_system& sys,
                                       shipper_options opts);

} // namespace edda::replication
