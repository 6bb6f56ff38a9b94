#include "door/door_impl.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"

#include <caf/sec.hpp>

#include <system_error>
#include <thread>

namespace edda::door {

namespace {

grpc::StatusCode code_for(errc x) {
  using grpc::StatusCode;
  switch (x) {
    case errc::none:
      return StatusCode::OK;
    case errc::invalid_argument:
    case errc::invalid_tag_expression:
    case errc::malformed_message:
    case errc::bad_config:
    case errc::invalid_producer_group:
    case errc::invalid_saga:
    case errc::message_too_large:
      return StatusCode::INVALID_ARGUMENT;
    case errc::unknown_topic:
    case errc::unknown_group:
    case errc::not_found:
    case errc::unknown_txn:
    case errc::unknown_saga_type:
      return StatusCode::NOT_FOUND;
    case errc::topic_exists:
      return StatusCode::ALREADY_EXISTS;
    case errc::storage_full:
      return StatusCode::RESOURCE_EXHAUSTED;
    case errc::timeout:
      return StatusCode::DEADLINE_EXCEEDED;
    case errc::subscription_conflict:
    case errc::txn_conflict:
    case errc::txn_outcome_unknown:
    case errc::fenced:
      return StatusCode::FAILED_PRECONDITION;
    case errc::unavailable:
    case errc::shutting_down:
    case errc::not_owner:
    case errc::partition_unavailable:
      return StatusCode::UNAVAILABLE;
    case errc::compacted:
      return StatusCode::OUT_OF_RANGE;
    case errc::unauthenticated:
      return StatusCode::UNAUTHENTICATED;
    case errc::storage_error:
    case errc::data_dir_unusable:
    case errc::data_dir_locked:
      return StatusCode::INTERNAL;
  }
  return StatusCode::UNKNOWN;
}

/// edda's code name, or CAF's for its own errors (a request timeout is
/// "timeout").
std::string code_name(const caf::error& err) {
  auto x = code_of(err);
  if (x != errc::none)
    return to_string(x);
  if (err == caf::sec::request_timeout)
    return to_string(errc::timeout);
  return to_string(errc::unavailable);
}

grpc::StatusCode grpc_code(const caf::error& err) {
  auto x = code_of(err);
  if (x != errc::none)
    return code_for(x);
  if (err == caf::sec::request_timeout)
    return grpc::StatusCode::DEADLINE_EXCEEDED;
  return grpc::StatusCode::UNAVAILABLE;
}

/// "ipv4:127.0.0.1:5000" -> "ipv4:127.0.0.1" (one client address).
std::string address_of(const std::string& peer) {
  auto colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

} // namespace

grpc::Status to_status(const caf::error& err, grpc::ServerContextBase* ctx) {
  auto name = code_name(err);
  if (ctx != nullptr)
    ctx->AddTrailingMetadata("edda-error", name);
  auto text = render(err);
  if (text.rfind(name, 0) != 0)
    text = name + ": " + text;
  return {grpc_code(err), text};
}

void to_api_error(const caf::error& err, api::Error* out) {
  out->set_code(code_name(err));
  auto text = render(err);
  if (text.rfind(out->code(), 0) != 0)
    text = out->code() + ": " + text;
  out->set_message(std::move(text));
}

bool door_state::in_background(std::function<void()> f) {
  {
    std::lock_guard<std::mutex> guard{bg_mtx_};
    ++bg_running_;
  }
  auto err = start_stream_thread([this, f = std::move(f)]() mutable {
    {
      caf_thread_scope scope;
      f();
      f = nullptr;
    }
    std::lock_guard<std::mutex> guard{bg_mtx_};
    if (--bg_running_ == 0)
      bg_cv_.notify_all();
  });
  if (!err)
    return true;
  std::lock_guard<std::mutex> guard{bg_mtx_};
  --bg_running_;
  return false;
}

caf::error start_stream_thread(std::function<void()> f) {
  try {
    std::thread{std::move(f)}.detach();
    return {};
  } catch (const std::system_error& e) {
    EDDA_ERROR("api", "cannot start a thread: " << e.what());
    return make_error(errc::unavailable, "the node cannot start a thread "
                                         "for this stream now; try again "
                                         "later");
  }
}

void door_state::await_background() {
  std::unique_lock<std::mutex> guard{bg_mtx_};
  bg_cv_.wait(guard, [this] { return bg_running_ == 0; });
}

client::message to_message(api::Record&& r) {
  client::message m;
  m.topic = r.topic();
  m.body = std::move(*r.mutable_body());
  m.key = std::move(*r.mutable_key());
  m.tags.assign(r.tags().begin(), r.tags().end());
  m.properties.insert(r.properties().begin(), r.properties().end());
  m.deliver_at_ms = r.deliver_at_ms();
  m.id = r.id();
  return m;
}

void to_record(const client::message& m, api::Record* out) {
  out->set_topic(m.topic);
  out->set_body(m.body);
  out->set_key(m.key);
  for (auto& t : m.tags)
    out->add_tags(t);
  for (auto& [k, v] : m.properties)
    (*out->mutable_properties())[k] = v;
  out->set_deliver_at_ms(m.deliver_at_ms);
  out->set_id(m.id);
}

call_slot::~call_slot() {
  if (!st_)
    return;
  std::lock_guard<std::mutex> guard{st_->calls_mtx};
  st_->calls--;
  auto it = st_->calls_by_address.find(address_);
  if (it != st_->calls_by_address.end() && --it->second == 0)
    st_->calls_by_address.erase(it);
}

grpc::Status admit(const state_ptr& st, grpc::CallbackServerContext* ctx,
                   call_slot& slot) {
  auto peer = ctx->peer();
  if (!st->clients_by_secret.empty()) {
    const auto& md = ctx->client_metadata();
    auto it = md.find("authorization");
    std::string secret;
    if (it != md.end()) {
      std::string value(it->second.data(), it->second.size());
      if (value.size() > 7 && (value.rfind("Bearer ", 0) == 0
                               || value.rfind("bearer ", 0) == 0))
        secret = value.substr(7);
    }
    // Every secret compared in full: the time taken tells nothing.
    bool known = false;
    for (auto& [s, client] : st->clients_by_secret) {
      unsigned diff = s.size() != secret.size() ? 1u : 0u;
      for (size_t i = 0; i < s.size(); ++i)
        diff |= static_cast<unsigned char>(s[i])
                ^ static_cast<unsigned char>(i < secret.size() ? secret[i]
                                                               : 0);
      known = known || diff == 0;
    }
    if (!known) {
      st->refused_auth++;
      EDDA_WARN("api", "refused a call from " << peer << ": "
                         << (it == md.end() ? "no authorization metadata"
                                            : "unknown token"));
      ctx->AddTrailingMetadata("edda-error", "unauthenticated");
      return {grpc::StatusCode::UNAUTHENTICATED,
              it == md.end()
                ? "unauthenticated: this node requires a token "
                  "(metadata authorization: Bearer <token>, api.tokens)"
                : "unauthenticated: the token is not one of api.tokens"};
    }
  }
  auto address = address_of(peer);
  {
    std::lock_guard<std::mutex> guard{st->calls_mtx};
    auto& mine = st->calls_by_address[address];
    if (st->calls >= st->settings.api_max_calls
        || mine >= st->settings.api_max_calls_per_address) {
      bool all = st->calls >= st->settings.api_max_calls;
      if (mine == 0)
        st->calls_by_address.erase(address);
      st->refused_busy++;
      ctx->AddTrailingMetadata("edda-error", "unavailable");
      return {grpc::StatusCode::RESOURCE_EXHAUSTED,
              all ? "unavailable: the node has api.max_calls ("
                      + std::to_string(st->settings.api_max_calls)
                      + ") calls open; try again later"
                  : "unavailable: " + address + " has "
                      + std::to_string(st->settings.api_max_calls_per_address)
                      + " calls open (api.max_calls_per_address); try again "
                        "later"};
    }
    ++mine;
    ++st->calls;
  }
  slot.take(st, std::move(address));
  return grpc::Status::OK;
}

std::chrono::milliseconds time_left(grpc::CallbackServerContext* ctx,
                                    std::chrono::milliseconds cap) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    ctx->deadline() - std::chrono::system_clock::now());
  if (left.count() < 1)
    left = std::chrono::milliseconds{1};
  return std::min(left, cap);
}

} // namespace edda::door
