// `edda bench`: the txmsg workload (BENCHMARKS.md) against an edda node
// process, and the disk floor. Entry points for the CLI; everything runs in
// child processes forked before any thread exists.
#pragma once

#include <string>
#include <vector>

namespace edda::bench {

/// `edda bench txmsg [options]`; `self_exe` starts `edda node`.
int txmsg_main(const std::vector<std::string>& argv, const std::string& self_exe);

/// `edda bench disk [--dir DIR]`.
int disk_main(const std::vector<std::string>& argv);

} // namespace edda::bench
