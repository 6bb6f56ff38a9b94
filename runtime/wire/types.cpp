#include "wire/types.hpp"

#include "base/errc.hpp"

#include <caf/actor_system_config.hpp>

namespace edda::wire {

void register_types(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::edda>();
  register_error_category(cfg);
}

} // namespace edda::wire
