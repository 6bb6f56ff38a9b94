// Did-you-mean for the edda command: the known name closest to a mistyped
// one, by edit distance. Plain strings only (no CLI11, no CAF): unit tested
// on its own (tests/unit/cli/suggest_test.cpp).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace edda::cli {

/// Edit distance between `a` and `b`: insertions, deletions, substitutions
/// and swaps of two neighbours ("craete" / "create") cost 1 each (optimal
/// string alignment, the restricted Damerau-Levenshtein distance).
[[nodiscard]] std::size_t edit_distance(const std::string& a,
                                        const std::string& b);

/// The name among `known` closest to `typed`, or "" when none is close
/// enough: at most max(2, length / 3) edits away, and fewer edits than the
/// shorter of the two has characters (so "x" suggests nothing). Leading
/// dashes are not compared ("-partitions" is one edit from "--partitions"
/// only in its dashes, and finds it). Ties go to the first in `known`.
[[nodiscard]] std::string closest(const std::string& typed,
                                  const std::vector<std::string>& known);

} // namespace edda::cli
