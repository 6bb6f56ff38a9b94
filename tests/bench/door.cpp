#include "door.hpp"

#include "api.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace edda::bench {

namespace {

namespace api = edda::api::v1;

constexpr int records_per_request = 64;

std::unique_ptr<api::Edda::Stub> stub_for(const std::string& api_endpoint) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return api::Edda::NewStub(grpc::CreateCustomChannel(
    api_endpoint, grpc::InsecureChannelCredentials(), args));
}

} // namespace

report consume_door(const std::string& api_endpoint, uint32_t partitions,
                    const phase_spec& spec, const std::function<void()>& ready) {
  report r;
  auto stub = stub_for(api_endpoint);
  {
    grpc::ClientContext ctx;
    edda::wire::v1::CreateTopic q;
    q.set_name(spec.topic);
    q.set_partitions(partitions);
    edda::wire::v1::TopicInfo info;
    auto st = stub->CreateTopic(&ctx, q, &info);
    if (!st.ok()) {
      r["error"] = "create topic " + spec.topic + ": " + st.error_message();
      return r;
    }
  }
  grpc::ClientContext ctx;
  auto stream = stub->Consume(&ctx);
  api::ConsumeRequest sub;
  sub.mutable_subscribe()->set_group("bench");
  sub.mutable_subscribe()->set_topic(spec.topic);
  sub.mutable_subscribe()->set_window(1024);
  api::ConsumeResponse resp;
  if (!stream->Write(sub) || !stream->Read(&resp) || !resp.has_subscribed()) {
    r["error"] = "subscribe: " + stream->Finish().error_message();
    return r;
  }
  ready();
  receipts seen(spec.n);
  samples lat;
  lat.reserve(spec.n);
  int64_t last_ack_ns = 0;
  auto take = [&](const api::ConsumeResponse& x) {
    auto now = mono_ns();
    api::ConsumeRequest acks;
    for (auto& d : x.deliveries()) {
      uint64_t seq = 0;
      int64_t sent = 0;
      if (read_body(d.record().body(), seq, sent)) {
        seen.add(seq);
        lat.add(now - sent);
      } else {
        seen.add(~uint64_t{0});
      }
      acks.mutable_settle()->add_ack(d.delivery());
    }
    if (x.deliveries_size() > 0) {
      stream->Write(acks);
      last_ack_ns = mono_ns();
    }
  };
  take(resp);
  // Bounded: the phase's own timeout kills a child that hangs here.
  while (!seen.complete() && stream->Read(&resp))
    take(resp);
  // Leaving: anything more (duplicates) arrives before the stream ends.
  stream->WritesDone();
  while (stream->Read(&resp))
    take(resp);
  stream->Finish();
  r["received"] = std::to_string(seen.received());
  r["distinct"] = std::to_string(seen.distinct());
  r["duplicates"] = std::to_string(seen.duplicates());
  r["foreign"] = std::to_string(seen.foreign());
  r["p50_ms"] = std::to_string(lat.percentile_ms(0.5));
  r["p99_ms"] = std::to_string(lat.percentile_ms(0.99));
  r["last_ack_ns"] = std::to_string(last_ack_ns);
  return r;
}

namespace {

/// Transactional: each record as a half message over one Transact stream,
/// ended with a commit as soon as it is stored (a local transaction doing
/// nothing); acknowledged when the commit is recorded.
report produce_door_txn(const std::string& api_endpoint, const phase_spec& spec) {
  report r;
  auto stub = stub_for(api_endpoint);
  grpc::ClientContext ctx;
  auto stream = stub->Transact(&ctx);
  api::TransactRequest reg;
  reg.mutable_register_()->set_group("bench-txn");
  api::TransactResponse resp;
  if (!stream->Write(reg) || !stream->Read(&resp) || !resp.has_registered()) {
    r["error"] = "register: " + stream->Finish().error_message();
    return r;
  }
  std::mutex mtx, write_mtx; // one writer at a time on the stream
  std::condition_variable cv;
  uint64_t inflight = 0, acked = 0, failed = 0;
  int64_t last_ack = 0;
  std::string first_error;
  samples ack_lat;
  ack_lat.reserve(spec.n);
  std::vector<int64_t> sent_ns(spec.n, 0);
  std::map<std::string, uint64_t> ref_of; // txn id -> ref, until ended
  bool reader_done = false; // the stream ended: nothing more is answered
  auto write = [&](const api::TransactRequest& q) {
    std::lock_guard<std::mutex> guard{write_mtx};
    stream->Write(q);
  };
  std::thread reader{[&] {
    api::TransactResponse x;
    while (stream->Read(&x)) {
      std::vector<api::TransactRequest> out;
      api::TransactRequest ends; // every end of this response, one request
      auto now = mono_ns();
      {
        std::lock_guard<std::mutex> guard{mtx};
        for (auto& h : x.halves()) {
          if (h.has_error()) {
            --inflight;
            ++failed;
            if (first_error.empty())
              first_error = h.error().message();
            continue;
          }
          ref_of[h.txn_id()] = h.ref();
          auto* e = ends.mutable_ends()->add_ends();
          e->set_txn_id(h.txn_id());
          e->set_outcome(api::COMMIT);
        }
        if (ends.has_ends())
          out.push_back(std::move(ends));
        for (auto& c : x.checks()) { // only about an end not yet arrived
          api::TransactRequest a;
          a.mutable_answer()->set_check(c.check());
          a.mutable_answer()->set_outcome(api::COMMIT);
          out.push_back(std::move(a));
        }
        for (auto& e : x.ends()) {
          auto it = ref_of.find(e.txn_id());
          if (it == ref_of.end())
            continue;
          --inflight;
          if (e.has_error()) {
            ++failed;
            if (first_error.empty())
              first_error = e.error().message();
          } else {
            ++acked;
            ack_lat.add(now - sent_ns[it->second]);
            last_ack = std::max(last_ack, now);
          }
          ref_of.erase(it);
        }
        cv.notify_all();
      }
      for (auto& q : out)
        write(q);
    }
    std::lock_guard<std::mutex> guard{mtx};
    reader_done = true;
    cv.notify_all();
  }};
  api::TransactRequest batch; // halves waiting to be written together
  auto flush = [&] {
    if (batch.has_halves() && batch.halves().halves_size() > 0) {
      write(batch);
      batch.Clear();
    }
  };
  auto first = mono_ns();
  pacer pace(spec.rate, first);
  for (uint64_t i = 0; i < spec.n; ++i) {
    pace.wait(i);
    {
      std::unique_lock<std::mutex> guard{mtx};
      auto queued = batch.has_halves()
                      ? static_cast<uint64_t>(batch.halves().halves_size())
                      : 0;
      if (inflight + queued >= spec.window) {
        guard.unlock();
        flush(); // what waits here must go before waiting for answers
        guard.lock();
        cv.wait(guard, [&] { return reader_done || inflight < spec.window; });
      }
      if (reader_done)
        break;
      ++inflight;
    }
    auto* h = batch.mutable_halves()->add_halves();
    h->set_ref(i);
    auto* rec = h->mutable_record();
    rec->set_topic(spec.topic);
    auto t = mono_ns();
    sent_ns[i] = t;
    rec->set_body(make_body(i, t, spec.size));
    if (spec.rate > 0 || batch.halves().halves_size() >= records_per_request)
      flush();
  }
  flush();
  {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait(guard, [&] { return reader_done || inflight == 0; });
  }
  {
    std::lock_guard<std::mutex> guard{write_mtx};
    stream->WritesDone();
  }
  reader.join();
  auto st = stream->Finish();
  if (first_error.empty() && !st.ok())
    first_error = "stream: " + st.error_message();
  r["first_send_ns"] = std::to_string(first);
  r["last_ack_ns"] = std::to_string(last_ack);
  r["acked"] = std::to_string(acked);
  r["failed"] = std::to_string(failed);
  if (!first_error.empty())
    r["first_error"] = first_error;
  r["ack_p50_ms"] = std::to_string(ack_lat.percentile_ms(0.5));
  r["ack_p99_ms"] = std::to_string(ack_lat.percentile_ms(0.99));
  return r;
}

} // namespace

report produce_door(const std::string& api_endpoint, const phase_spec& spec,
                    const std::function<void()>&) {
  if (spec.transactional)
    return produce_door_txn(api_endpoint, spec);
  report r;
  auto stub = stub_for(api_endpoint);
  grpc::ClientContext ctx;
  auto stream = stub->Produce(&ctx);
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t inflight = 0, acked = 0, failed = 0;
  int64_t last_ack = 0;
  std::string first_error;
  samples ack_lat;
  ack_lat.reserve(spec.n);
  std::vector<int64_t> sent_ns(spec.n, 0);
  bool reader_done = false;
  std::thread reader{[&] {
    api::ProduceResponse resp;
    while (stream->Read(&resp)) {
      auto now = mono_ns();
      std::lock_guard<std::mutex> guard{mtx};
      for (auto& p : resp.results()) {
        --inflight;
        if (p.has_error()) {
          ++failed;
          if (first_error.empty())
            first_error = p.error().message();
        } else {
          ++acked;
          if (p.ref() < sent_ns.size())
            ack_lat.add(now - sent_ns[p.ref()]);
          last_ack = std::max(last_ack, now);
        }
      }
      cv.notify_all();
    }
    std::lock_guard<std::mutex> guard{mtx};
    reader_done = true; // the stream ended: nothing more will be answered
    cv.notify_all();
  }};
  api::ProduceRequest req;
  auto flush = [&] {
    if (req.records_size() > 0) {
      stream->Write(req);
      req.Clear();
    }
  };
  auto first = mono_ns();
  pacer pace(spec.rate, first);
  for (uint64_t i = 0; i < spec.n; ++i) {
    pace.wait(i);
    {
      std::unique_lock<std::mutex> guard{mtx};
      if (inflight + static_cast<uint64_t>(req.records_size()) >= spec.window) {
        guard.unlock();
        flush(); // what waits here must go before waiting for acks
        guard.lock();
        cv.wait(guard, [&] { return reader_done || inflight < spec.window; });
      }
      if (reader_done)
        break;
      ++inflight;
    }
    auto* rec = req.add_records();
    rec->set_topic(spec.topic);
    auto t = mono_ns();
    sent_ns[i] = t;
    rec->set_body(make_body(i, t, spec.size));
    if (spec.rate > 0 || req.records_size() >= records_per_request)
      flush();
  }
  flush();
  {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait(guard, [&] { return reader_done || inflight == 0; });
  }
  stream->WritesDone();
  reader.join();
  auto st = stream->Finish();
  r["first_send_ns"] = std::to_string(first);
  r["last_ack_ns"] = std::to_string(last_ack);
  r["acked"] = std::to_string(acked);
  r["failed"] = std::to_string(failed);
  if (!first_error.empty())
    r["first_error"] = first_error;
  else if (!st.ok())
    r["first_error"] = st.error_message();
  r["ack_p50_ms"] = std::to_string(ack_lat.percentile_ms(0.5));
  r["ack_p99_ms"] = std::to_string(ack_lat.percentile_ms(0.99));
  return r;
}

saga_run_result start_sagas_door(const std::string& api_endpoint,
                                 const std::string& type,
                                 const std::string& prefix, uint64_t count,
                                 uint64_t window, bool wait) {
  saga_run_result out;
  out.latency.reserve(count);
  auto stub = stub_for(api_endpoint);
  grpc::CompletionQueue cq;
  struct call {
    grpc::ClientContext ctx;
    edda::wire::v1::SagaStarted reply;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<edda::wire::v1::SagaStarted>>
      rpc;
    int64_t t0 = 0;
  };
  uint64_t next = 0;
  auto issue = [&] {
    auto* c = new call;
    c->ctx.set_deadline(std::chrono::system_clock::now()
                        + std::chrono::minutes(5));
    edda::wire::v1::SagaStart s;
    s.set_type(type);
    s.set_id(prefix + std::to_string(next++));
    s.set_input("{}");
    s.set_wait(wait);
    c->t0 = mono_ns();
    c->rpc = stub->AsyncStartSaga(&c->ctx, s, &cq);
    c->rpc->Finish(&c->reply, &c->status, c);
  };
  auto began = mono_ns();
  for (uint64_t i = 0; i < std::min(window, count); ++i)
    issue();
  uint64_t settled = 0;
  void* tag = nullptr;
  bool ok = false;
  while (settled < count && cq.Next(&tag, &ok)) {
    std::unique_ptr<call> c{static_cast<call*>(tag)};
    ++settled;
    if (c->status.ok()) {
      out.latency.add(mono_ns() - c->t0);
      ++out.done;
      if (wait
          && c->reply.record().state() != 3) { // completed (sagas/saga.hpp)
        ++out.not_completed;
        if (out.first_problem.empty())
          out.first_problem = c->reply.record().id() + ": "
                              + c->reply.record().reason();
      }
    } else {
      ++out.errors;
      if (out.first_problem.empty())
        out.first_problem = c->status.error_message();
    }
    if (next < count)
      issue();
  }
  out.seconds = static_cast<double>(mono_ns() - began) / 1e9;
  cq.Shutdown();
  while (cq.Next(&tag, &ok))
    delete static_cast<call*>(tag);
  return out;
}

} // namespace edda::bench
