#!/usr/bin/env python3
"""Interop check: a Python grpcio client speaking switchyard.test.v1.TestService.

Point it at a test server or at a Switchyard proxy in front of one, over TCP
or a Unix socket (with grpcio's default channel options, which send the
%-encoded socket path as the HTTP/2 :authority):

    pip install -r tests/interop/requirements.txt
    python3 tests/interop/client.py --target 127.0.0.1:50051
    python3 tests/interop/client.py --target unix:/run/switchyard.sock --fan-out alpha,beta

With --fan-out, the MultiService checks call every named machine through
Switchyard (`machines` metadata) and check that each reply entry is tagged
with its machine, in the order named.

Stubs are generated at run time with grpc_tools.protoc from
crates/testkit/proto into a temporary directory. One line is printed per
check; the exit status is non-zero if any check failed.
"""

import argparse
import importlib
import importlib.resources
import os
import sys
import tempfile
import traceback

import grpc
from grpc_tools import protoc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The test services, then the sample machine-info API and its fan-out
# Metadata (google/rpc/status.proto is taken from the first root).
PROTO_ROOTS = [
    os.path.join(REPO, "crates", "testkit", "proto"),
    os.path.join(REPO, "crates", "director", "proto"),
    os.path.join(REPO, "examples", "machine-info", "proto"),
]
PROTOS = [
    "switchyard/test/v1/test.proto",
    "google/rpc/status.proto",
    "switchyard/common/v1/common.proto",
    "machineinfo/v1/machineinfo.proto",
    "switchyard/v1/envelope.proto",
]


def generate_stubs(out_dir):
    """Generates the Python modules for the test protos into out_dir."""
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        *(f"-I{root}" for root in PROTO_ROOTS),
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    sys.path.insert(0, out_dir)
    pb = importlib.import_module("switchyard.test.v1.test_pb2")
    rpc = importlib.import_module("switchyard.test.v1.test_pb2_grpc")
    return pb, rpc


def machine_info_stubs():
    """The machine-info modules (generated with the test ones)."""
    pb = importlib.import_module("machineinfo.v1.machineinfo_pb2")
    rpc = importlib.import_module("machineinfo.v1.machineinfo_pb2_grpc")
    return pb, rpc


def check_ping(pb, stub, timeout):
    reply = stub.Ping(pb.PingRequest(value="hello from python"), timeout=timeout)
    assert reply.value == "hello from python", f"value {reply.value!r}"
    assert reply.counter == 1, f"counter {reply.counter}"
    return f"value echoed by {reply.server!r}"


def check_ping_list(pb, stub, timeout):
    replies = list(stub.PingList(pb.PingRequest(value="list", count=5), timeout=timeout))
    assert len(replies) == 5, f"{len(replies)} replies"
    assert all(r.value == "list" for r in replies), "value not echoed"
    counters = [r.counter for r in replies]
    assert counters == list(range(5)), f"counters {counters}"
    return "5 replies"


def check_ping_stream(pb, stub, timeout):
    # Send one message at a time and wait for its reply before the next:
    # this only passes if the call is really full duplex.
    import queue

    outgoing = queue.Queue()

    def requests():
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    replies = stub.PingStream(requests(), timeout=timeout)
    for i in range(3):
        outgoing.put(pb.PingRequest(value=f"ping-{i}"))
        reply = next(replies)
        assert reply.value == f"ping-{i}", f"reply {i}: value {reply.value!r}"
        assert reply.counter == i, f"reply {i}: counter {reply.counter}"
    outgoing.put(None)
    rest = list(replies)
    assert not rest, f"{len(rest)} unexpected replies"
    return "3 ping-pongs"


def check_ping_error(pb, stub, timeout):
    try:
        stub.PingError(pb.PingRequest(value="x", error_message="expected failure"), timeout=timeout)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, f"code {err.code()}"
        assert err.details() == "expected failure", f"details {err.details()!r}"
        return "FAILED_PRECONDITION"
    raise AssertionError("PingError succeeded")


def check_fan_out_unary(pb, stub, timeout, machines):
    reply = stub.Ping(pb.PingRequest(value="fan"), metadata=[("machines", ",".join(machines))],
                      timeout=timeout)
    names = [m.metadata.machine_name for m in reply.messages]
    assert names == machines, f"entries {names}"
    for m in reply.messages:
        assert m.value == "fan", f"value {m.value!r}"
        assert not m.metadata.error, f"{m.metadata.machine_name}: {m.metadata.error}"
    return f"{len(names)} tagged entries"


def check_fan_out_stream(pb, stub, timeout, machines):
    replies = list(stub.PingList(pb.PingRequest(value="list", count=3),
                                 metadata=[("machines", ",".join(machines))], timeout=timeout))
    per_machine = {}
    for r in replies:
        assert not r.metadata.error, f"{r.metadata.machine_name}: {r.metadata.error}"
        per_machine.setdefault(r.metadata.machine_name, []).append(r.counter)
    assert sorted(per_machine) == sorted(machines), f"machines {sorted(per_machine)}"
    for name, counters in per_machine.items():
        assert counters == [0, 1, 2], f"{name}: counters {counters}"
    return f"{len(replies)} streamed replies"


def check_fan_out_bidi(pb, stub, timeout, machines):
    requests = [pb.PingRequest(value=f"b{i}") for i in range(3)]
    replies = list(stub.PingStream(iter(requests), metadata=[("machines", ",".join(machines))],
                                   timeout=timeout))
    got = sorted((r.metadata.machine_name, r.value) for r in replies)
    want = sorted((m, f"b{i}") for m in machines for i in range(3))
    assert got == want, f"replies {got}"
    return f"{len(replies)} replies to 3 messages"


def check_envelope(pb, channel, timeout, machines):
    """TestService/Ping (a reply without the fan-out layout) through the
    envelope: one item per reply, then exactly one last item per machine."""
    envelope = importlib.import_module("switchyard.v1.envelope_pb2")
    call = channel.unary_stream(
        "/switchyard.test.v1.TestService/Ping",
        request_serializer=pb.PingRequest.SerializeToString,
        response_deserializer=envelope.MachineReply.FromString,
    )
    metadata = [("machines", ",".join(machines)), ("switchyard-reply", "envelope")]
    items = list(call(pb.PingRequest(value="env"), metadata=metadata, timeout=timeout))
    last = sorted(i.metadata.machine_name for i in items if i.last)
    assert last == sorted(machines), f"last items {last}"
    for item in items:
        if item.last:
            assert item.metadata.status.code == 0, f"{item.metadata.machine_name}: {item.metadata}"
        else:
            reply = pb.PingResponse.FromString(item.message)
            assert reply.value == "env", f"value {reply.value!r}"
    return f"{len(items)} items, one last per machine"


CHECKS = [
    ("Ping", check_ping),
    ("PingList", check_ping_list),
    ("PingStream", check_ping_stream),
    ("PingError", check_ping_error),
]

def check_describe(pb, stub, timeout):
    reply = stub.Describe(pb.DescribeRequest(), timeout=timeout)
    assert len(reply.messages) == 1, f"{len(reply.messages)} entries"
    return f"answered by {reply.messages[0].name!r}"


def open_channel(args):
    """A plaintext channel, or with --tls-ca a TLS one (mutual with
    --tls-cert/--tls-key), with otherwise default options."""
    if not args.tls_ca:
        return grpc.insecure_channel(args.target)
    read = lambda path: open(path, "rb").read() if path else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.tls_ca),
        private_key=read(args.tls_key),
        certificate_chain=read(args.tls_cert),
    )
    options = [("grpc.ssl_target_name_override", args.tls_name)] if args.tls_name else []
    return grpc.secure_channel(args.target, credentials, options=options)


FAN_OUT_CHECKS = [
    ("FanOutPing", check_fan_out_unary),
    ("FanOutPingList", check_fan_out_stream),
    ("FanOutPingStream", check_fan_out_bidi),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True,
                        help="host:port or unix:/path of the server or proxy")
    parser.add_argument("--fan-out", default="",
                        help="comma-separated machines to fan MultiService calls out to")
    parser.add_argument("--describe", action="store_true",
                        help="call machine-info's Describe instead of the test services")
    parser.add_argument("--tls-ca", help="CA bundle (PEM): use TLS, trusting it")
    parser.add_argument("--tls-cert", help="client certificate chain (PEM)")
    parser.add_argument("--tls-key", help="client private key (PEM)")
    parser.add_argument("--tls-name", help="name the server certificate must bear")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, seconds")
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failures")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="switchyard-interop-") as out_dir:
        pb, rpc = generate_stubs(out_dir)
        # Default channel options: on a Unix socket grpcio sends the
        # %-encoded path as :authority, which the proxy must accept.
        with open_channel(args) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=args.timeout)
            except grpc.FutureTimeoutError:
                print(f"FAIL connect: no connection to {args.target} within {args.timeout}s")
                return 1
            checks = [(name, check, rpc.TestServiceStub(channel), ()) for name, check in CHECKS]
            if args.describe:
                info_pb, info_rpc = machine_info_stubs()
                checks = [("Describe", check_describe, info_rpc.MachineInfoStub(channel), ())]
                pb = info_pb
            machines = [m for m in args.fan_out.split(",") if m]
            if machines:
                multi = rpc.MultiServiceStub(channel)
                checks += [(name, check, multi, (machines,)) for name, check in FAN_OUT_CHECKS]
                checks.append(("Envelope", check_envelope, channel, (machines,)))
            failed = 0
            for name, check, stub, extra in checks:
                try:
                    detail = check(pb, stub, args.timeout, *extra)
                    print(f"ok   {name}: {detail}")
                except Exception as err:  # noqa: BLE001 - report every failure
                    failed += 1
                    if isinstance(err, grpc.RpcError):
                        err = f"{err.code()}: {err.details()}"
                    print(f"FAIL {name}: {err}")
                    if args.verbose:
                        traceback.print_exc()
            print(f"{len(checks) - failed} passed, {failed} failed")
            return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
