// The node's services as its supervisor runs them (supervisor.hpp): how
// each incarnation is spawned, what a restarted one must be told, and what
// its keeper remembers for the next one.
//
//   name       restarted: told again               keeper remembers
//   scheduler  the topics (it scans db `delay`)    -
//   topics     the groups (they refetch routes:    -
//              the partitions died with it), the
//              txn coordinator
//   groups     -                                   Subscribe (by group,
//                                                  client, topic) until
//                                                  Unsubscribe or the
//                                                  member dies
//   dedup      -                                   -
//   txn        -                                   RegisterProducer (by
//                                                  group, client) until
//                                                  UnregisterProducer or the
//                                                  producer dies
//   gateway    -                                   -
//
// Every handle passed in is a keeper (stable across restarts).
#pragma once

#include "broker/context.hpp"
#include "node/supervisor.hpp"

#include <caf/actor.hpp>

#include <memory>
#include <vector>

namespace edda::node::services {

/// Keepers the restart hooks need that exist only after the hooks' own
/// keeper was spawned (filled in by the node once all exist).
struct wiring {
  caf::actor topics;
  caf::actor groups;
  caf::actor txn;
};
using wiring_ptr = std::shared_ptr<wiring>;

[[nodiscard]] service scheduler(broker::context_ptr ctx, wiring_ptr w);
[[nodiscard]] service topics(broker::context_ptr ctx, wiring_ptr w);
[[nodiscard]] service groups(broker::context_ptr ctx, caf::actor topics);
[[nodiscard]] service dedup(broker::context_ptr ctx);
[[nodiscard]] service txn(broker::context_ptr ctx, caf::actor topics);
[[nodiscard]] service gateway(broker::context_ptr ctx, caf::actor topics,
                              caf::actor groups, caf::actor dedup,
                              caf::actor txn,
                              std::vector<caf::actor> saga_shards,
                              caf::actor saga_directory,
                              caf::actor cluster = {});

} // namespace edda::node::services
