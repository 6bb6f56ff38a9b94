#include "wire/types.hpp"

#include "base/errc.hpp"

#include <caf/actor_system_config.hpp>

namespace edda::wire {

size_t payload_size(const v1::Message& m) {
  size_t n = m.body().size() + m.key().size();
  for (const auto& t : m.tags())
    n += t.size();
  for (const auto& [k, v] : m.properties())
    n += k.size() + v.size();
  return n;
}

void register_types(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::edda>();
  register_error_category(cfg);
}

} // namespace edda::wire
