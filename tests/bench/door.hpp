// The txmsg workload's producer and consumer over the client door (gRPC,
// edda.api.v1) instead of the C++ client's node port: `edda bench txmsg
// --door` runs the plain phases both ways in one run. Each runs in a
// forked phase child (harness.hpp): gRPC's threads start there. And the
// saga driver of `edda bench saga --door`.
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

/// What a run of sagas gave (`edda bench saga`, either path).
struct saga_run_result {
  uint64_t done = 0, not_completed = 0, errors = 0;
  std::string first_problem;
  samples latency; ///< start to answer (to the saga's end with wait)
  double seconds = 0;
};

/// Starts `count` sagas of `type` (ids prefix + i) with StartSaga calls
/// over the door, at most `window` in flight (gRPC's completion queue, on
/// this thread); with `wait` each answer comes at the saga's end and must
/// say completed.
[[nodiscard]] saga_run_result start_sagas_door(const std::string& api,
                                               const std::string& type,
                                               const std::string& prefix,
                                               uint64_t count, uint64_t window,
                                               bool wait);

} // namespace edda::bench
