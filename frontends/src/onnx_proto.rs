//! ONNX protobuf message types (`ModelProto`, `GraphProto`, `NodeProto`, ...),
//! generated at build time by `build.rs` from `proto/onnx.proto` (ONNX 1.23.2,
//! IR version 14, proto2 syntax).
//!
//! Decode a model with [`prost::Message::decode`]:
//! `ModelProto::decode(bytes)`. Optional proto2 fields are `Option`s; prefer the
//! generated getters (`node.op_type()`, `model.ir_version()`), which return the
//! proto default when a field is absent.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

#[cfg(test)]
mod tests {
    use super::ModelProto;
    use prost::Message;

    const FIXTURES: [&str; 8] = [
        "tiny_dynamo_op18_eager.onnx",
        "tiny_dynamo_op18_eager_mask.onnx",
        "tiny_dynamo_op18_sdpa.onnx",
        "tiny_dynamo_op18_sdpa_noopt.onnx",
        "tiny_dynamo_op23_sdpa.onnx",
        "tiny_legacy_op17_eager.onnx",
        "tiny_legacy_op17_eager_mask.onnx",
        "tiny_legacy_op17_sdpa_mask.onnx",
    ];

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/onnx/");
        let path = format!("{dir}{name}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    #[test]
    fn decodes_and_round_trips_every_fixture() {
        for name in FIXTURES {
            let bytes = fixture(name);
            let model = ModelProto::decode(bytes.as_slice())
                .unwrap_or_else(|e| panic!("{name}: decode failed: {e}"));
            let graph = model
                .graph
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no graph"));
            assert!(!graph.node.is_empty(), "{name}: graph has no nodes");
            assert!(
                model
                    .opset_import
                    .iter()
                    .any(|o| o.domain() == "" && o.version() >= 17),
                "{name}: no default-domain opset import >= 17: {:?}",
                model.opset_import
            );
            let reencoded = model.encode_to_vec();
            let again = ModelProto::decode(reencoded.as_slice())
                .unwrap_or_else(|e| panic!("{name}: re-decode failed: {e}"));
            assert_eq!(model, again, "{name}: round trip changed the model");
        }
    }
}
