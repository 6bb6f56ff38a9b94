// `edda bench saga`: three-step sagas against an edda node process, the
// participants in a second process (BENCHMARKS.md).
#pragma once

#include <string>
#include <vector>

namespace edda::bench {

/// `edda bench saga [options]`; `self_exe` starts `edda node`.
int saga_main(const std::vector<std::string>& argv, const std::string& self_exe);

} // namespace edda::bench
