"""Sends N payments to topic `payments`, keyed by account (one account's
payments stay in order), and prints each acknowledgement: a record is
acknowledged only once the node stored it durably.

    EDDA_STUBS=build/python python3 examples/python/producer.py 20
"""
import json
import sys

import grpc
from edda_client import api_pb2, broker_pb2, connect

count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
stub, md = connect()
try:
    stub.CreateTopic(broker_pb2.CreateTopic(name="payments", partitions=4),
                     metadata=md)
except grpc.RpcError as e:
    if e.code() != grpc.StatusCode.ALREADY_EXISTS:
        raise


def batches():  # the request stream: 10 records per request
    for first in range(0, count, 10):
        yield api_pb2.ProduceRequest(records=[
            api_pb2.Record(topic="payments", key=b"acct-%d" % (i % 3),
                           tags=["EUR"],
                           body=json.dumps({"n": i, "amount": 10 * i}).encode())
            for i in range(first, min(count, first + 10))])


stored = failed = 0
for response in stub.Produce(batches(), metadata=md):
    for r in response.results:
        if r.HasField("error"):
            failed += 1
            print(f"record {r.ref}: {r.error.code}: {r.error.message}")
        else:
            stored += 1
            print(f"record {r.ref}: stored at partition {r.partition} "
                  f"offset {r.offset}")
print(f"producer: {stored} stored, {failed} failed")
sys.exit(0 if failed == 0 and stored == count else 1)
