// Internal: what the door's client streams share (gRPC included: keep it
// to the door_*.cpp files).
#pragma once

#include "base/errc.hpp"
#include "client/door_link.hpp"
#include "client/types.hpp"

#include "api.grpc.pb.h"

#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/grpcpp.h>

#include <caf/error.hpp>

#include <condition_variable>
#include <mutex>

namespace edda::client {

namespace api = edda::api::v1;

struct door_link {
  std::string endpoint;
  std::string token; ///< sent as "authorization: Bearer <token>"
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<api::Edda::Stub> stub;

  /// Sets the token on a call's context.
  void prepare(grpc::ClientContext& ctx) const;

};

/// edda's error for a failed call: the code from the trailing metadata
/// `edda-error` (else the nearest to the gRPC code), and the text without
/// its "code: " prefix, naming `what` for errors of the transport.
[[nodiscard]] caf::error from_status(const grpc::Status& st,
                                     const grpc::ClientContext& ctx,
                                     const std::string& what);

/// An in-stream error (a record, a settlement, an answer).
[[nodiscard]] caf::error from_api(const api::Error& e);

/// Opens a stream's session: writes `first` (a registration or
/// subscription) and reads the answer into `resp`, which `confirmed` must
/// accept. Else the stream is finished and the node's status (or "did not
/// confirm the `what`") is the error; the stream must not be used again.
template <class Stream, class Request, class Response, class Confirmed>
[[nodiscard]] caf::error
open_session(const door_link& link, grpc::ClientContext& ctx, Stream& rw,
             const Request& first, Response& resp, Confirmed confirmed,
             const std::string& what) {
  bool sent = rw.Write(first);
  if (sent && rw.Read(&resp) && confirmed(resp))
    return {};
  if (sent && resp.ByteSizeLong() > 0)
    ctx.TryCancel(); // not a door: do not wait for its end
  auto st = rw.Finish(); // the node's status says why
  if (st.ok())
    return make_error(errc::unavailable, "the door at " + link.endpoint
                                           + " did not confirm the " + what);
  return from_status(st, ctx, what + " stream to " + link.endpoint);
}

[[nodiscard]] api::Record to_api(const message& m);
[[nodiscard]] message from_api(const api::Record& r);

} // namespace edda::client
