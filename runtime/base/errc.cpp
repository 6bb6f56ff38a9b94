#include "base/errc.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/deep_to_string.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace edda {

namespace {
constexpr caf::atom_value category = caf::atom("edda");
} // namespace

const char* to_string(errc x) {
  switch (x) {
    case errc::none: return "none";
    case errc::invalid_argument: return "invalid_argument";
    case errc::unknown_topic: return "unknown_topic";
    case errc::unknown_group: return "unknown_group";
    case errc::topic_exists: return "topic_exists";
    case errc::message_too_large: return "message_too_large";
    case errc::invalid_tag_expression: return "invalid_tag_expression";
    case errc::storage_full: return "storage_full";
    case errc::storage_error: return "storage_error";
    case errc::data_dir_unusable: return "data_dir_unusable";
    case errc::data_dir_locked: return "data_dir_locked";
    case errc::bad_config: return "bad_config";
    case errc::malformed_message: return "malformed_message";
    case errc::timeout: return "timeout";
    case errc::not_found: return "not_found";
    case errc::subscription_conflict: return "subscription_conflict";
    case errc::unavailable: return "unavailable";
    case errc::unknown_txn: return "unknown_txn";
    case errc::txn_conflict: return "txn_conflict";
    case errc::invalid_producer_group: return "invalid_producer_group";
    case errc::shutting_down: return "shutting_down";
    case errc::txn_outcome_unknown: return "txn_outcome_unknown";
    case errc::unknown_saga_type: return "unknown_saga_type";
    case errc::invalid_saga: return "invalid_saga";
    case errc::not_owner: return "not_owner";
    case errc::partition_unavailable: return "partition_unavailable";
    case errc::fenced: return "fenced";
    case errc::compacted: return "compacted";
    case errc::unauthenticated: return "unauthenticated";
  }
  return "unknown_error";
}

errc errc_named(const std::string& name) {
  for (int i = 1; i <= static_cast<int>(errc::unauthenticated); ++i)
    if (name == to_string(static_cast<errc>(i)))
      return static_cast<errc>(i);
  return errc::none;
}

caf::error make_error(errc x) {
  return caf::error{static_cast<uint8_t>(x), category};
}

caf::error make_error(errc x, std::string what) {
  return caf::error{static_cast<uint8_t>(x), category,
                    caf::make_message(std::move(what))};
}

errc code_of(const caf::error& e) {
  if (!e || e.category() != category)
    return errc::none;
  return static_cast<errc>(e.code());
}

std::string render(const caf::error& e) {
  if (!e)
    return "ok";
  std::string out;
  if (e.category() == category)
    out = to_string(static_cast<errc>(e.code()));
  else if (e.category() == caf::atom("system"))
    out = caf::to_string(static_cast<caf::sec>(e.code()));
  else
    out = caf::to_string(e);
  const auto& ctx = e.context();
  if (ctx.match_elements<std::string>()) {
    out += ": ";
    out += ctx.get_as<std::string>(0);
  } else if (!ctx.empty()) {
    out += ": ";
    out += caf::deep_to_string(ctx);
  }
  return out;
}

void register_error_category(caf::actor_system_config& cfg) {
  cfg.add_error_category(
    category, [](uint8_t code, caf::atom_value, const caf::message& ctx) {
      std::string out = to_string(static_cast<errc>(code));
      if (ctx.match_elements<std::string>())
        out += ": " + ctx.get_as<std::string>(0);
      return out;
    });
}

} // namespace edda
