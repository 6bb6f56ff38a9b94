// The web console of the admin port: its page (GET / and /console) and the
// JSON routes under /api/ that the page reads and acts through.
//
//   GET  /api/status                  the node: id, storage, counters
//   GET  /api/cluster                 members, links, partition homes
//   GET  /api/topics                  partitions, offsets, groups' lag
//   GET  /api/groups                  members, lag per partition, DLQ depth
//   GET  /api/dlq?group=G[&limit=N]   dead letters of a group
//   POST /api/dlq/redrive             {"group","ids":[...],"by"}
//   GET  /api/txns[?limit=N]          transactions in doubt
//   GET  /api/txns/ID                 one transaction
//   POST /api/txns/ID/resolve         {"outcome":"commit"|"rollback","by"}
//   GET  /api/sagas[?state=&type=&older_than=SECONDS&limit=N]
//   GET  /api/sagas/ID                one saga: steps and history
//   POST /api/sagas/ID/command        {"command","step"?,"by","expect_state"?}
//   GET  /api/audit                   the console's last actions (memory)
//
// Every answer is JSON (nlohmann::json), read through the node's in-process
// client connection. Errors: 400 bad parameters, 404 unknown saga,
// transaction, group or route, 409 an action on something that moved on
// (with its current state), 411/413 a POST without a length or over 64 KiB,
// 503/504 the node does not answer; each {"error": "..."}. Requests from
// another site are refused (403; an action's body must be JSON, 415), and
// on a loopback address a Host that is not a loopback name (421: DNS
// rebinding; admin_server.cpp). Every action
// takes `by` (who did it), passes it to the record (saga history,
// transaction resolved_by) and is logged at INFO, category admin:
// "console: ACTION TARGET by BY: RESULT".
//
// Thread-safety: the routes run on the server's threads; the audit list is
// locked. Keeps httplib out of this header (forward declared).
#pragma once

#include "client/connection.hpp"

#include <cstddef>

namespace httplib {
class Server;
struct Request;
struct Response;
} // namespace httplib

namespace edda::admin {

/// The largest body a console action may have.
inline constexpr size_t console_body_limit = 64 * 1024;

/// Adds the console's routes to `http`, answering through `node` (which
/// must outlive the server).
void add_console_routes(httplib::Server& http, const client::connection& node);

enum class console_post {
  allowed, ///< a POST under /api/ with a Content-Length within the limit
  refused, ///< a POST under /api/ refused: `res` has the answer (411, 413)
  not_ours ///< not a POST under /api/
};
/// For the pre-routing handler, before a body is read: may the console
/// take this POST? Chunked bodies and bodies without a Content-Length are
/// refused (411), those over console_body_limit too (413); a body that is
/// not JSON (415) and a request from another site (403: CSRF) as well.
[[nodiscard]] console_post check_console_post(const httplib::Request& req,
                                              httplib::Response& res);

/// Not from another site: no Sec-Fetch-Site cross-site / same-site, and an
/// Origin, if any, that is this server's ("http://" + Host).
[[nodiscard]] bool same_site(const httplib::Request& req);

/// The page: one HTML document with its CSS and JavaScript (console.html,
/// embedded at build time).
[[nodiscard]] const char* console_page();

} // namespace edda::admin
