//! What the server receives is a v1 push its own parser accepts, carrying
//! the batch as it is, with the bearer token.

use base64_free::standard_base64;
use cpc_protocol::{Hex64, Kind, OpId};

use crate::support::PushOps as _;
use crate::support::{self, on_push, ops, pushes, transport, Applier, CLIENT, TOKEN};

#[tokio::test]
async fn the_body_parses_as_a_push_and_carries_the_batch_and_the_token() {
    let server = support::server().await;
    on_push(&server, Applier { max_ops: 1000 }).await;
    let batch = ops(3);
    transport(&server).push_ops(&batch).await.unwrap();

    let sent = pushes(&server).await;
    assert_eq!(sent.len(), 1);
    let (request, push) = &sent[0];
    assert_eq!(
        request
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("Bearer {TOKEN}")
    );
    assert_eq!(
        request
            .headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap(),
        "application/json"
    );
    assert_eq!((push.protocol, push.client_id.as_str()), (1, CLIENT));
    assert_eq!((push.known.as_ref(), push.low_water), (None, None));
    assert_eq!(push.ops.len(), batch.len());
    for (wire, op) in push.ops.iter().zip(&batch) {
        assert_eq!(wire.id, OpId(op.id.as_u128()));
        assert_eq!(wire.id.to_string(), op.id.to_string());
        assert_eq!(wire.entity.collection, op.entity.collection);
        assert_eq!(wire.entity.id, op.entity.id);
        assert_eq!(wire.kind, Kind::Update);
        assert_eq!(wire.payload.0, op.payload);
        assert_eq!(wire.base_version, op.base_version);
        assert_eq!(wire.timestamp.wall_ms, op.timestamp.wall_ms);
        assert_eq!(wire.timestamp.logical, op.timestamp.logical);
        assert_eq!(wire.timestamp.node, Hex64(op.timestamp.node.0));
    }
    // On the wire the payload is standard padded base64.
    let raw: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        raw["ops"][0]["payload"].as_str().unwrap(),
        standard_base64(&batch[0].payload)
    );
    assert_eq!(raw["ops"][0]["timestamp"]["node"], "7f3a000000000001");
}

/// A tiny independent base64 encoder, so the test does not check the
/// crate's encoding with the same code that produced it.
mod base64_free {
    pub fn standard_base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn the_encoder_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(standard_base64(plain.as_bytes()), encoded);
        }
    }
}
