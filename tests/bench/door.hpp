// The txmsg workload's producer and consumer over the client door (gRPC,
// edda.api.v1) instead of the C++ client's node port: `edda bench txmsg
// --door` runs the plain phases both ways in one run. Each runs in a
// forked phase child (harness.hpp): gRPC's threads start there.
#pragma once

#include "harness.hpp"

#include <functional>
#include <string>

namespace edda::bench {

/// Creates the topic, joins group "bench" over a Consume stream (window
/// 1024), signals ready, and counts every delivery until all n arrived;
/// each response's deliveries are acknowledged at once.
[[nodiscard]] report consume_door(const std::string& api, uint32_t partitions,
                                  const phase_spec& spec,
                                  const std::function<void()>& ready);

/// Sends n records over one Produce stream (at most spec.window
/// unacknowledged, up to 64 per request) and records each acknowledgement;
/// transactional: each as a half message over one Transact stream, ended
/// with a commit once stored, acknowledged when the commit is recorded.
[[nodiscard]] report produce_door(const std::string& api, const phase_spec& spec,
                                  const std::function<void()>& ready);

} // namespace edda::bench
