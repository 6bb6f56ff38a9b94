// Internal: the C++ client's transport to a node's client door (edda.api.v1
// over gRPC, runtime/wire/api.proto). No gRPC types here: door_impl.hpp has
// them, for the few files that speak the streams.
#pragma once

#include "client/connection.hpp"

#include <caf/error.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace google::protobuf {
class Message;
} // namespace google::protobuf

namespace edda::client {

struct door_link;

/// A channel to the door at host:port, checked with a NodeStatus call
/// within opts.connection_timeout (at least 2 s). Errors: unavailable
/// (nothing answers there, or not an edda door), unauthenticated (the node
/// wants a token, or another one: connect_options::token).
[[nodiscard]] caf::expected<std::shared_ptr<door_link>>
open_door(const std::string& host, uint16_t port, const connect_options& opts);

/// One unary call of the door for `req` (the request types the node's
/// frontend takes: CreateTopic, TxnList, SagaStart, ...), its reply into
/// `*reply`; `done` runs once, with the error or none, on the caller's
/// thread before this returns (the call blocks).
/// A request without a unary call of the door fails with invalid_argument.
void door_unary(const std::shared_ptr<door_link>& link,
                const google::protobuf::Message& req,
                google::protobuf::Message* reply,
                std::chrono::milliseconds timeout,
                std::function<void(caf::error)> done);

/// "host:port" of the door.
[[nodiscard]] const std::string& door_endpoint(const door_link& link);

} // namespace edda::client
