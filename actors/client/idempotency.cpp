#include "client/idempotency.hpp"

#include "client/connection_impl.hpp"
#include "wire/types.hpp"

namespace edda::client {

namespace pb = wire::pb;

idempotency::idempotency(connection conn, std::string scope)
  : conn_(std::move(conn)), scope_(std::move(scope)) {
}

caf::expected<bool> idempotency::done(const std::string& key) const {
  pb::DedupCheck req;
  req.set_scope(scope_);
  req.set_key(key);
  auto r = conn_.impl()->call<pb::DedupStatus>(req,
                                               conn_.impl()->opts.request_timeout);
  if (!r)
    return r.error();
  return r->done();
}

caf::error idempotency::mark(const std::string& key,
                             const std::string& result) const {
  pb::DedupMark req;
  req.set_scope(scope_);
  req.set_key(key);
  req.set_result(result);
  auto r = conn_.impl()->call<pb::DedupStatus>(req,
                                               conn_.impl()->opts.request_timeout);
  if (!r)
    return r.error();
  return caf::none;
}

caf::expected<bool> idempotency::run_once(const std::string& key,
                                          const std::function<void()>& fn)
  const {
  auto d = done(key);
  if (!d)
    return d.error();
  if (*d)
    return false;
  fn();
  if (auto err = mark(key))
    return err;
  return true;
}

} // namespace edda::client
