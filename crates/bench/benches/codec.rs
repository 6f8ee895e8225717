//! Criterion micro-benchmarks of the pure functions on Switchyard's data
//! path: gRPC frame parsing over chunked input (as HTTP/2 DATA frames arrive),
//! tagging fan-out replies (`tag_reply`), building error entries
//! (`error_entry`), merging N machines' replies into one message, routing
//! a call by its metadata (`route_metadata`, run on every call), and the
//! daemon's record of a finished call in its metrics (`call_ended`).
//!
//! Run with `cargo bench -p switchyard-bench` (`--bench codec -- --quick` for
//! a fast pass: the option is Criterion's, the library's test harness would
//! refuse it).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use prost::Message;
use switchyard::metrics::{Metrics, Telemetry};
use switchyard_director::{DirectorOptions, MachineDirector, MachineInfo, MachineTag, pb};
use switchyard_engine::codec::frame::{FrameDecoder, FrameHeader, FrameScanner, encode_message};
use switchyard_engine::observe::{CallEnd, Observer};
use switchyard_engine::{Backend, Mode, ReplyShape};
use switchyard_testkit::pb::{MultiPingReply, MultiPingResponse};
use tonic::{Code, Status};

const LIMIT: usize = 32 * 1024 * 1024;

/// `count` framed messages of `size` bytes, cut into `chunk`-byte pieces.
fn chunked_stream(size: usize, count: usize, chunk: usize) -> (usize, Vec<Bytes>) {
    let message = encode_message(&vec![0x5a; size]).expect("small message");
    let mut all = BytesMut::with_capacity(message.len() * count);
    for _ in 0..count {
        all.extend_from_slice(&message);
    }
    let all = all.freeze();
    let chunks = (0..all.len())
        .step_by(chunk)
        .map(|at| all.slice(at..(at + chunk).min(all.len())))
        .collect();
    (all.len(), chunks)
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for (size, count) in [(64usize, 1024usize), (1024, 256), (64 * 1024, 16)] {
        for chunk in [1024usize, 16 * 1024] {
            let (len, chunks) = chunked_stream(size, count, chunk);
            group.throughput(Throughput::Bytes(len as u64));
            let id = format!("{size}B-msgs/{chunk}B-chunks");
            group.bench_with_input(BenchmarkId::new("decoder", &id), &chunks, |b, chunks| {
                b.iter(|| {
                    let mut decoder = FrameDecoder::new(LIMIT);
                    let mut n = 0;
                    for chunk in chunks {
                        decoder.push(chunk.clone());
                        while let Some(message) = decoder.next_message().expect("valid stream") {
                            black_box(&message);
                            n += 1;
                        }
                    }
                    decoder.finish().expect("whole messages");
                    n
                });
            });
            group.bench_with_input(BenchmarkId::new("scanner", &id), &chunks, |b, chunks| {
                b.iter(|| {
                    let mut scanner = FrameScanner::new(LIMIT);
                    for chunk in chunks {
                        scanner.observe(black_box(chunk)).expect("valid stream");
                    }
                    scanner.finish().expect("whole messages");
                });
            });
        }
    }
    group.finish();
}

fn machine(i: usize) -> MachineInfo {
    MachineInfo {
        addr: format!("[fd00::{i:x}]:51000"),
        id: format!("m-{i}"),
        name: format!("machine-{i}"),
    }
}

fn reply_entry(i: usize) -> MultiPingReply {
    MultiPingReply {
        metadata: None,
        value: format!("value {i}"),
        counter: i as i64,
        server: "backend".into(),
        payload: vec![0xa5; 64],
    }
}

/// A unary fan-out reply with `n` entries.
fn unary_reply(n: usize) -> Bytes {
    MultiPingResponse {
        messages: (0..n).map(reply_entry).collect(),
    }
    .encode_to_vec()
    .into()
}

fn failing_status(details: usize) -> Status {
    let rpc = pb::RpcStatus {
        code: Code::Unavailable as i32,
        message: "connection refused".into(),
        details: (0..details)
            .map(|i| prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: format!("reason {i}").into_bytes(),
            })
            .collect(),
    };
    Status::with_details(
        Code::Unavailable,
        "connection refused",
        rpc.encode_to_vec().into(),
    )
}

fn tagging(c: &mut Criterion) {
    let responder = MachineTag::new(machine(2));
    let mut group = c.benchmark_group("tag_reply");
    for n in [1usize, 10, 100] {
        let reply = unary_reply(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("unary", n), &reply, |b, reply| {
            b.iter(|| {
                responder
                    .tag_reply(ReplyShape::Unary, reply.clone())
                    .expect("fan-out shape")
            });
        });
    }
    let streamed: Bytes = reply_entry(0).encode_to_vec().into();
    group.bench_function("streamed", |b| {
        b.iter(|| {
            responder
                .tag_reply(ReplyShape::Streamed, streamed.clone())
                .expect("any message")
        });
    });
    group.finish();

    let mut group = c.benchmark_group("error_entry");
    for n in [1usize, 10, 100] {
        let status = failing_status(n);
        group.bench_with_input(
            BenchmarkId::new("unary/details", n),
            &status,
            |b, status| {
                b.iter(|| responder.error_entry(ReplyShape::Unary, black_box(status)));
            },
        );
    }
    let plain = Status::unavailable("connection refused");
    group.bench_function("streamed/no-details", |b| {
        b.iter(|| responder.error_entry(ReplyShape::Streamed, black_box(&plain)));
    });
    group.finish();
}

/// What the engine does with a unary fan-out's replies once every machine
/// answered: tag each machine's reply, then write one message whose prefix
/// announces the sum and whose parts are the tagged replies (not copied).
fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    for n in [1usize, 4, 16, 100] {
        let responders: Vec<MachineTag> = (0..n).map(|i| MachineTag::new(machine(i))).collect();
        let reply = unary_reply(1);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("tag+merge", n), &reply, |b, reply| {
            b.iter(|| {
                let parts: Vec<Bytes> = responders
                    .iter()
                    .map(|r| {
                        r.tag_reply(ReplyShape::Unary, reply.clone())
                            .expect("fan-out shape")
                    })
                    .collect();
                let len: usize = parts.iter().map(Bytes::len).sum();
                let prefix = FrameHeader::uncompressed(len).expect("fits").encode();
                black_box((prefix, parts))
            });
        });
        let tagged: Vec<Bytes> = responders
            .iter()
            .map(|r| {
                r.tag_reply(ReplyShape::Unary, reply.clone())
                    .expect("fan-out shape")
            })
            .collect();
        group.bench_with_input(
            BenchmarkId::new("copying-concat", n),
            &tagged,
            |b, tagged| {
                b.iter(|| {
                    let payload: Vec<u8> = tagged.concat();
                    encode_message(&payload).expect("fits")
                });
            },
        );
    }
    group.finish();
}

/// Request metadata as gRPC clients send it, plus `extra`.
fn metadata(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "grpc-go/1.70.0"),
        ("grpc-accept-encoding", "identity,deflate,gzip"),
    ]
    .iter()
    .chain(extra)
    {
        headers.append(*name, HeaderValue::from_static(value));
    }
    headers
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_metadata");
    // Nothing is dialled: routing only picks backends.
    let director = MachineDirector::new("/nonexistent/sy.sock", 51000, DirectorOptions::default());
    for (name, headers) in [
        ("local", metadata(&[])),
        (
            "forwarded",
            metadata(&[
                ("machine", "fd00::2"),
                ("proxy-authority", "[fd00::1]:51000"),
            ]),
        ),
        ("machine", metadata(&[("machine", "fd00::2")])),
        (
            "machines-4",
            metadata(&[("machines", "fd00::2,fd00::3,fd00::4,fd00::5")]),
        ),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), &headers, |b, headers| {
            b.iter(|| {
                director
                    .route_metadata("/pkg.Service/Method", headers)
                    .expect("routed")
            });
        });
    }
    group.finish();
}

fn telemetry(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_ended");
    let director = Arc::new(MachineDirector::new(
        "/nonexistent/sy.sock",
        51000,
        DirectorOptions::default(),
    ));
    let backends: [Arc<dyn Backend>; 1] = [director.local_backend().clone()];
    // A local one-to-one call that went well, as the engine reports it.
    let call = CallEnd {
        method: "/pkg.Service/Method",
        mode: Some(Mode::OneToOne),
        backends: &backends,
        code: Code::Ok,
        duration: Duration::from_micros(150),
        bytes_in: 69,
        bytes_out: 69,
        peer: None,
    };
    let telemetry = Telemetry::new(director.clone(), false, Some(Metrics::new([])));
    group.bench_function("metrics", |b| {
        b.iter(|| telemetry.call_ended(black_box(&call)))
    });
    group.finish();
}

criterion_group!(benches, frames, tagging, merge, routing, telemetry);
criterion_main!(benches);
