"""Serves the steps of the declared saga type `transfer` (a node started
with --set 'saga.types=["transfer = debit, credit, notify~"]'): debit and
credit with their compensations (.undo) and a best-effort notify. Each
effect is applied once per idempotency key, whatever the retries, and an
undo whose step never ran changes nothing.

    EDDA_STUBS=build/python python3 examples/python/participant.py [SECONDS]
"""
import json
import queue
import sys
import threading

from edda_client import api_pb2, connect

NAMES = ["transfer.debit", "transfer.debit.undo", "transfer.credit",
         "transfer.credit.undo", "transfer.notify"]
stub, md = connect()
outcomes = queue.Queue()
done = {}  # idempotency key + name -> output: each effect applied once
balance = {"alice": 1000, "bob": 0}


def requests():  # register, then the outcomes as they are made
    yield api_pb2.ParticipateRequest(register=api_pb2.ParticipantRegistration(
        names=NAMES, client_id="python-ledger"))
    while (item := outcomes.get()) is not None:
        yield item


def serve(cmd):
    amount = json.loads(cmd.input)["amount"]
    once = cmd.idempotency_key + "/" + cmd.participant
    if once not in done:
        if cmd.participant == "transfer.debit" and amount > balance["alice"]:
            return api_pb2.StepOutcome(ok=False, retryable=False,
                                       error="insufficient funds")
        sign = {"transfer.debit": ("alice", -1), "transfer.debit.undo": ("alice", 1),
                "transfer.credit": ("bob", 1), "transfer.credit.undo": ("bob", -1)}
        forward = cmd.idempotency_key + "/" + cmd.participant[:-5]
        if cmd.participant in sign and (not cmd.compensate or forward in done):
            who, s = sign[cmd.participant]
            balance[who] += s * amount
        print(f"{cmd.saga_id}: {cmd.participant} {amount} -> {balance}", flush=True)
        done[once] = json.dumps(balance).encode()
    return api_pb2.StepOutcome(ok=True, output=done[once])


stream = stub.Participate(requests(), metadata=md)
if len(sys.argv) > 1:  # serve for SECONDS, then end the stream
    threading.Timer(float(sys.argv[1]), lambda: outcomes.put(None)).start()
for response in stream:
    if response.HasField("registered"):
        print(f"serving {response.registered.names} names", flush=True)
    for call in response.calls:
        outcome = serve(call.command)
        outcome.call = call.call
        outcomes.put(api_pb2.ParticipateRequest(outcome=outcome))
print(f"participant: done, balances {balance}")
