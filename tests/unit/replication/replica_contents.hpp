// Helpers of the replication unit tests: a CAF config with edda's types,
// and the contents of an LMDB env as a map (to compare a copy with its
// leader).
#pragma once

#include "storage/environment.hpp"
#include "storage/writer_actor.hpp"
#include "wire/types.hpp"

#include <caf/actor_system_config.hpp>

#include <map>
#include <string>
#include <string_view>

namespace edda::replication::test {

struct sys_config : caf::actor_system_config {
  sys_config() {
    wire::register_types(*this);
  }
};

/// Everything in the dbs a node writes ("<db>/<key>" -> value), but the
/// replica's own position.
inline std::map<std::string, std::string>
contents(const storage::environment& env) {
  std::map<std::string, std::string> out;
  auto r = env.read();
  for (unsigned d = 0; d < storage::db_count; ++d)
    r.scan(static_cast<storage::db>(d), "", "",
           [&](std::string_view k, std::string_view v) {
             if (!(d == 0 && k == storage::repl_position_key))
               out[std::to_string(d) + "/" + std::string{k}] = std::string{v};
             return true;
           });
  return out;
}

} // namespace edda::replication::test
