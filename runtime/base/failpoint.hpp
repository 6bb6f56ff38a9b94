// Named failure-injection points for fault tests. A failpoint is armed from
// the environment: EDDA_FAILPOINTS="storage.after_commit=crash@3,..." makes
// the 3rd hit of that point kill the process with SIGKILL (as `kill -9`
// would); "name=hang@N" blocks the hitting thread for ever instead (a
// wedged disk or a stuck call). Unarmed points cost one relaxed atomic load.
#pragma once

namespace edda::failpoint {

/// Reads EDDA_FAILPOINTS (once per process; also done on the first hit).
void init_from_env();

/// Hit the named point: crashes the process if armed and due.
void hit(const char* name);

} // namespace edda::failpoint

#define EDDA_FAILPOINT(name) ::edda::failpoint::hit(name)
