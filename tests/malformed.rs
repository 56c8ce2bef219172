//! Malformed requests — bytes that are not a valid protobuf message, strings that are not
//! UTF-8 — get an error status and disturb nobody: the server keeps serving other clients.

mod common;

use bytes::{Buf, BufMut};
use common::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Sends raw bytes as the request message and returns the raw response bytes.
#[derive(Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

async fn raw_call(url: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_invalid_utf8_are_refused_and_the_server_carries_on() {
    let (ledger, c) = start_memory().await;
    let url = ledger.url();
    let bodies: Vec<Vec<u8>> = vec![
        vec![0xff; 64],                                 // not protobuf
        vec![0x0a, 0x05, b'c', 0xff, 0xfe, b'x', b'y'], // field 1 (context_id) not UTF-8
        vec![0x0a, 0x7f],                               // length past the end
        (0..=255u8).collect(),
    ];
    for path in [
        "/converge.context.v1.ContextService/Append",
        "/converge.context.v1.ContextService/Get",
        "/converge.context.v1.ContextService/Load",
        "/converge.context.v1.ContextService/Snapshot",
    ] {
        for body in &bodies {
            let r = raw_call(&url, path, body.clone()).await;
            assert!(r.is_err(), "{path} accepted garbage");
        }
    }
    // Other clients are undisturbed.
    let e = c
        .append(append_req("ok", "k", "v"))
        .await
        .unwrap()
        .entry
        .unwrap();
    assert_eq!(e.sequence, 1);
    assert!(c.health_serving().await.unwrap());
    ledger.shutdown().await;
}
