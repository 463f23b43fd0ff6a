//! Unit tests over hand-built GGUF files: every dtype, hand-computed
//! dequantization, and malformed inputs that must fail with a typed error.

use super::value::type_id;
use super::{GgmlType, GgufError, GgufFile, GgufLimits, GgufValue};

// ── a tiny GGUF writer ─────────────────────────────────────────────────────

fn gguf_string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// Builds GGUF bytes field by field; `raw_*` methods allow lies.
struct Builder {
    version: u32,
    alignment: usize,
    kv_count: u64,
    kvs: Vec<u8>,
    tensor_count: u64,
    infos: Vec<u8>,
    data: Vec<u8>,
}

impl Builder {
    fn new() -> Self {
        Self {
            version: 3,
            alignment: 32,
            kv_count: 0,
            kvs: vec![],
            tensor_count: 0,
            infos: vec![],
            data: vec![],
        }
    }

    /// A key/value pair whose value bytes are given verbatim.
    fn kv_raw(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        self.kv_count += 1;
        self.kvs.extend(gguf_string(key.as_bytes()));
        self.kvs.extend(ty.to_le_bytes());
        self.kvs.extend_from_slice(value);
        self
    }

    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv_raw(key, type_id::U32, &v.to_le_bytes())
    }

    fn kv_str(self, key: &str, v: &str) -> Self {
        self.kv_raw(key, type_id::STRING, &gguf_string(v.as_bytes()))
    }

    /// A tensor info with an explicit relative offset and no data.
    fn tensor_raw(mut self, name: &str, dims: &[u64], ty: u32, rel_offset: u64) -> Self {
        self.tensor_count += 1;
        self.infos.extend(gguf_string(name.as_bytes()));
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(rel_offset.to_le_bytes());
        self
    }

    /// A tensor whose data is appended (aligned) to the data section.
    fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, data: &[u8]) -> Self {
        self.data
            .resize(self.data.len().next_multiple_of(self.alignment), 0);
        let rel = self.data.len() as u64;
        self.data.extend_from_slice(data);
        self.tensor_raw(name, dims, ty.id(), rel)
    }

    fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(self.tensor_count.to_le_bytes());
        out.extend(self.kv_count.to_le_bytes());
        out.extend_from_slice(&self.kvs);
        out.extend_from_slice(&self.infos);
        out.resize(out.len().next_multiple_of(self.alignment), 0);
        out.extend_from_slice(&self.data);
        out
    }
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

/// A Q4_0 block with d = 2 and q[j] = j | (15 − j) << 4.
fn q4_0_block() -> Vec<u8> {
    let mut b = f16_bytes(&[2.0]);
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    b
}

/// A Q4_1 block with scale `d`, minimum `m` and q[j] = j | (15 − j) << 4.
fn q4_1_block(d: f32, m: f32) -> Vec<u8> {
    let mut b = f16_bytes(&[d, m]);
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    b
}

/// A Q8_0 block with d = 0.5 and q[j] = j − 16.
fn q8_0_block() -> Vec<u8> {
    let mut b = f16_bytes(&[0.5]);
    b.extend((0..32i8).map(|j| (j - 16) as u8));
    b
}

fn sample() -> Builder {
    let f32_data: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // bf16 bits of 1.0, -2.0, 0.15625
    let bf16_data: Vec<u8> = [0x3F80u16, 0xC000, 0x3E20]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut q4_1 = q4_1_block(0.25, -1.0);
    q4_1.extend(q4_1_block(1.0, 0.5));
    Builder::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 2)
        .kv_raw(
            "llama.rope.freq_base",
            type_id::F32,
            &10000f32.to_le_bytes(),
        )
        .kv_raw("flag", type_id::BOOL, &[1])
        .kv_raw("neg", type_id::I32, &(-3i32).to_le_bytes())
        .kv_raw("tokens", type_id::ARRAY, &{
            let mut v = type_id::STRING.to_le_bytes().to_vec();
            v.extend(2u64.to_le_bytes());
            v.extend(gguf_string(b"<s>"));
            v.extend(gguf_string(b"hi"));
            v
        })
        .kv_raw("nested", type_id::ARRAY, &{
            let mut v = type_id::ARRAY.to_le_bytes().to_vec();
            v.extend(1u64.to_le_bytes());
            v.extend(type_id::U8.to_le_bytes());
            v.extend(3u64.to_le_bytes());
            v.extend([7u8, 8, 9]);
            v
        })
        .tensor("f32", &[4], GgmlType::F32, &f32_data)
        .tensor(
            "f16",
            &[3],
            GgmlType::F16,
            &f16_bytes(&[1.0, -0.5, 65504.0]),
        )
        .tensor("bf16", &[3], GgmlType::BF16, &bf16_data)
        .tensor("q8_0", &[32], GgmlType::Q8_0, &q8_0_block())
        .tensor("q4_0", &[32], GgmlType::Q4_0, &q4_0_block())
        .tensor("q4_1", &[32, 2], GgmlType::Q4_1, &q4_1)
        .tensor("q4_k", &[256], GgmlType::Q4_K, &[0u8; 144])
}

fn dequant(file: &GgufFile, bytes: &[u8], name: &str) -> Vec<f32> {
    let t = file
        .tensor(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    file.dequantize(bytes, t)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ── well-formed files ──────────────────────────────────────────────────────

#[test]
fn parses_metadata_and_typed_getters() {
    let bytes = sample().build();
    let file = GgufFile::parse(&bytes).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.alignment, 32);
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(file.get_usize("llama.block_count").unwrap(), 2);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(file.get_f64("llama.rope.freq_base").unwrap(), 10000.0);
    assert!(file.get_bool("flag").unwrap());
    assert_eq!(file.get_i64("neg").unwrap(), -3);
    assert_eq!(file.get_str_array("tokens").unwrap(), ["<s>", "hi"]);
    assert_eq!(
        file.get("nested"),
        Some(&GgufValue::Array(vec![GgufValue::Array(vec![
            GgufValue::U8(7),
            GgufValue::U8(8),
            GgufValue::U8(9)
        ])]))
    );

    let err = file.get_u32("neg").unwrap_err();
    assert!(
        matches!(&err, GgufError::WrongType { key, .. } if key == "neg"),
        "{err}"
    );
    assert!(err.to_string().contains("i32 -3"), "{err}");
    let err = file.get_str("llama.block_count").unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::WrongType {
                expected: "string",
                ..
            }
        ),
        "{err}"
    );
    let err = file.get_f32("missing.key").unwrap_err();
    assert!(
        matches!(&err, GgufError::MissingKey { key } if key == "missing.key"),
        "{err}"
    );
    assert!(matches!(
        file.get_str_array("nested"),
        Err(GgufError::WrongType { .. })
    ));
}

#[test]
fn tensor_infos_are_absolute_and_aligned() {
    let bytes = sample().build();
    let file = GgufFile::parse(&bytes).unwrap();
    assert_eq!(file.tensors.len(), 7);
    assert_eq!(file.data_offset % 32, 0);
    for t in &file.tensors {
        assert_eq!(t.offset % 32, 0, "{}", t.name);
        assert!(t.offset + t.n_bytes <= bytes.len());
    }
    let q4_1 = file.tensor("q4_1").unwrap();
    assert_eq!(q4_1.dims, [32, 2]);
    assert_eq!(q4_1.shape_row_major(), [2, 32]);
    assert_eq!(q4_1.ggml_type, GgmlType::Q4_1);
    assert_eq!(q4_1.n_bytes, 40);
    assert_eq!(q4_1.n_elements(), 64);
}

#[test]
fn dequantizes_plain_types() {
    let bytes = sample().build();
    let file = GgufFile::parse(&bytes).unwrap();
    assert_eq!(dequant(&file, &bytes, "f32"), [1.5, -2.0, 3.25, 0.0]);
    assert_eq!(dequant(&file, &bytes, "f16"), [1.0, -0.5, 65504.0]);
    assert_eq!(dequant(&file, &bytes, "bf16"), [1.0, -2.0, 0.15625]);
}

#[test]
fn dequantizes_q8_0() {
    let bytes = sample().build();
    let file = GgufFile::parse(&bytes).unwrap();
    // y[j] = 0.5 · (j − 16)
    let expected: Vec<f32> = (0..32).map(|j| 0.5 * (j as f32 - 16.0)).collect();
    let got = dequant(&file, &bytes, "q8_0");
    assert_eq!(got, expected);
    assert_eq!((got[0], got[16], got[31]), (-8.0, 0.0, 7.5));
}

#[test]
fn dequantizes_q4_0() {
    let bytes = sample().build();
    let file = GgufFile::parse(&bytes).unwrap();
    let got = dequant(&file, &bytes, "q4_0");
    // Low nibble of q[j] is j: y[j] = 2·(j − 8); high nibble is 15 − j: y[j+16] = 2·(7 − j).
    assert_eq!(&got[..4], [-16.0, -14.0, -12.0, -10.0]);
    assert_eq!(got[15], 14.0);
    assert_eq!(&got[16..18], [14.0, 12.0]);
    assert_eq!(got[31], -16.0);
}

#[test]
fn dequantizes_q4_1_over_two_blocks() {
    let bytes = sample().build();
    let file = GgufFile::parse(&bytes).unwrap();
    let got = dequant(&file, &bytes, "q4_1");
    assert_eq!(got.len(), 64);
    // Block 0 (d = 0.25, m = −1): y[j] = 0.25·j − 1, y[j+16] = 0.25·(15 − j) − 1.
    assert_eq!((got[0], got[1], got[15]), (-1.0, -0.75, 2.75));
    assert_eq!((got[16], got[31]), (2.75, -1.0));
    // Block 1 (d = 1, m = 0.5): y[j] = j + 0.5, y[j+16] = 15.5 − j.
    assert_eq!((got[32], got[47], got[48], got[63]), (0.5, 15.5, 15.5, 0.5));
}

#[test]
fn unsupported_dequant_names_type_and_tensor() {
    let bytes = sample().build();
    let file = GgufFile::parse(&bytes).unwrap();
    let t = file.tensor("q4_k").unwrap();
    let err = file.dequantize(&bytes, t).unwrap_err();
    assert!(
        matches!(&err, GgufError::UnsupportedDequant { tensor, ggml_type: GgmlType::Q4_K } if tensor == "q4_k"),
        "{err}"
    );
    assert!(err.to_string().contains("Q4_K"));
    // Bytes other than those parsed: the tensor does not lie inside them.
    let err = file
        .dequantize(&bytes[..100], file.tensor("q4_1").unwrap())
        .unwrap_err();
    assert!(matches!(err, GgufError::TensorOutOfBounds { .. }), "{err}");
}

#[test]
fn accepts_version_2_and_custom_alignment() {
    let mut b = Builder::new().kv_u32("general.alignment", 64);
    b.version = 2;
    b.alignment = 64;
    let b = b
        .tensor("a", &[2], GgmlType::F32, &[0; 8])
        .tensor("b", &[1], GgmlType::F32, &[0; 4]);
    let bytes = b.build();
    let file = GgufFile::parse(&bytes).unwrap();
    assert_eq!((file.version, file.alignment), (2, 64));
    assert_eq!(file.tensor("b").unwrap().offset, file.data_offset + 64);
}

// ── malformed files ────────────────────────────────────────────────────────

fn parse_err(bytes: &[u8]) -> GgufError {
    match GgufFile::parse(bytes) {
        Ok(_) => panic!("malformed file parsed"),
        Err(e) => e,
    }
}

#[test]
fn rejects_bad_magic_and_version() {
    let mut bytes = sample().build();
    bytes[0] = b'X';
    assert!(matches!(parse_err(&bytes), GgufError::BadMagic { .. }));
    assert!(matches!(parse_err(b"GG"), GgufError::BadMagic { .. }));
    assert!(matches!(parse_err(b""), GgufError::BadMagic { .. }));
    let mut b = sample();
    b.version = 1;
    assert!(matches!(
        parse_err(&b.build()),
        GgufError::UnsupportedVersion { version: 1 }
    ));
    b.version = 0x0300_0000; // a big-endian v3 file
    assert!(matches!(
        parse_err(&b.build()),
        GgufError::UnsupportedVersion { .. }
    ));
}

#[test]
fn rejects_truncation_at_every_offset_before_the_data() {
    let bytes = sample().build();
    let file = GgufFile::parse(&bytes).unwrap();
    for end in 0..bytes.len() {
        match GgufFile::parse(&bytes[..end]) {
            Err(GgufError::BadMagic { .. }) => assert!(end < 4),
            Err(GgufError::Truncated { offset, .. }) => assert!(offset <= end),
            Err(GgufError::TensorOutOfBounds { .. }) => assert!(end >= file.data_offset - 32),
            Err(other) => panic!("truncated at {end}: unexpected {other}"),
            Ok(_) => panic!("truncated at {end} of {} parsed", bytes.len()),
        }
    }
}

#[test]
fn truncated_string_names_its_key() {
    let bytes = Builder::new()
        .kv_str("general.architecture", "llama")
        .build();
    // Cut inside the value of `general.architecture` ("llama").
    let at = bytes.windows(5).position(|w| w == b"llama").unwrap() + 2;
    let err = parse_err(&bytes[..at]);
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                what: "string bytes",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("`general.architecture`"), "{err}");
}

#[test]
fn rejects_lying_string_length() {
    let mut value = 1_000_000u64.to_le_bytes().to_vec();
    value.extend(b"short");
    let bytes = Builder::new()
        .kv_raw("general.name", type_id::STRING, &value)
        .build();
    let err = parse_err(&bytes);
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                needed: 1_000_000,
                ..
            }
        ),
        "{err}"
    );
    // Above the limit: refused before looking at the bytes.
    let value = (1u64 << 40).to_le_bytes();
    let bytes = Builder::new()
        .kv_raw("general.name", type_id::STRING, &value)
        .build();
    let err = parse_err(&bytes);
    assert!(
        matches!(
            err,
            GgufError::LimitExceeded {
                what: "string length",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn rejects_huge_array_length() {
    let mut value = type_id::U32.to_le_bytes().to_vec();
    value.extend((1u64 << 62).to_le_bytes());
    let bytes = Builder::new()
        .kv_raw("tokens", type_id::ARRAY, &value)
        .build();
    let err = parse_err(&bytes);
    assert!(
        matches!(
            err,
            GgufError::LimitExceeded {
                what: "array length",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("`tokens`"), "{err}");
    // Within the limit but more than the file holds.
    let mut value = type_id::U32.to_le_bytes().to_vec();
    value.extend(1_000_000u64.to_le_bytes());
    let bytes = Builder::new()
        .kv_raw("tokens", type_id::ARRAY, &value)
        .build();
    let err = parse_err(&bytes);
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                what: "array elements",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn rejects_too_deep_arrays() {
    let mut value = type_id::ARRAY.to_le_bytes().to_vec();
    value.extend(1u64.to_le_bytes());
    value.extend(type_id::ARRAY.to_le_bytes());
    value.extend(1u64.to_le_bytes());
    value.extend(type_id::U8.to_le_bytes());
    value.extend(1u64.to_le_bytes());
    value.push(0);
    let bytes = Builder::new()
        .kv_raw("deep", type_id::ARRAY, &value)
        .build();
    let err = parse_err(&bytes);
    assert!(
        matches!(
            err,
            GgufError::LimitExceeded {
                what: "array nesting depth",
                value: 3,
                ..
            }
        ),
        "{err}"
    );
    let limits = GgufLimits {
        max_array_depth: 3,
        ..GgufLimits::default()
    };
    assert!(GgufFile::parse_with_limits(&bytes, &limits).is_ok());
}

#[test]
fn rejects_bad_values() {
    let bytes = Builder::new().kv_raw("x", 13, &[0; 8]).build();
    assert!(matches!(
        parse_err(&bytes),
        GgufError::UnknownValueType { type_id: 13, .. }
    ));
    let bytes = Builder::new().kv_raw("x", type_id::BOOL, &[2]).build();
    assert!(matches!(
        parse_err(&bytes),
        GgufError::InvalidBool { byte: 2, .. }
    ));
    let bytes = Builder::new()
        .kv_raw("x", type_id::STRING, &gguf_string(&[0xff, 0xfe]))
        .build();
    assert!(matches!(parse_err(&bytes), GgufError::InvalidUtf8 { .. }));
    let bytes = Builder::new().kv_u32("x", 1).kv_u32("x", 2).build();
    assert!(matches!(parse_err(&bytes), GgufError::DuplicateKey { key, .. } if key == "x"));
    let bytes = Builder::new().kv_u32("general.alignment", 24).build();
    assert!(matches!(
        parse_err(&bytes),
        GgufError::BadAlignment { alignment: 24 }
    ));
    let bytes = Builder::new().kv_str("general.alignment", "32").build();
    assert!(matches!(parse_err(&bytes), GgufError::WrongType { .. }));
}

#[test]
fn rejects_huge_counts() {
    let mut bytes = sample().build();
    bytes[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes()); // tensor count
    assert!(matches!(
        parse_err(&bytes),
        GgufError::LimitExceeded {
            what: "tensor count",
            ..
        }
    ));
    let mut bytes = sample().build();
    bytes[16..24].copy_from_slice(&1_000_000u64.to_le_bytes()); // kv count: fits the limit, not the file
    assert!(matches!(parse_err(&bytes), GgufError::Truncated { .. }));
}

#[test]
fn rejects_tensor_data_past_eof() {
    // Claims 64 f32s but carries 4.
    let bytes = Builder::new()
        .tensor("w", &[64], GgmlType::F32, &[0; 16])
        .build();
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, GgufError::TensorOutOfBounds { tensor, .. } if tensor == "w"),
        "{err}"
    );
    // An offset far beyond the file, and one that overflows.
    for rel in [1u64 << 20, u64::MAX - 31] {
        let bytes = Builder::new().tensor_raw("w", &[1], 0, rel).build();
        let err = parse_err(&bytes);
        assert!(
            matches!(
                err,
                GgufError::TensorOutOfBounds { .. } | GgufError::MisalignedTensor { .. }
            ),
            "{err}"
        );
    }
}

#[test]
fn rejects_bad_tensor_infos() {
    let bytes = Builder::new().tensor_raw("w", &[32], 4, 0).build();
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, GgufError::UnknownGgmlType { tensor, type_id: 4, .. } if tensor == "w"),
        "{err}"
    );
    let bytes = Builder::new().tensor_raw("w", &[1; 9], 0, 0).build();
    let err = parse_err(&bytes);
    assert!(
        matches!(
            err,
            GgufError::LimitExceeded {
                what: "n_dims",
                value: 9,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("`w`"), "{err}");
    let bytes = Builder::new()
        .tensor_raw("w", &[1 << 32, 1 << 32, 1 << 32], 0, 0)
        .build();
    assert!(matches!(parse_err(&bytes), GgufError::BadShape { .. }));
    let bytes = Builder::new()
        .tensor_raw("w", &[16, 2], GgmlType::Q4_0.id(), 0)
        .build();
    assert!(matches!(parse_err(&bytes), GgufError::BadShape { .. }));
    let bytes = Builder::new().tensor_raw("w", &[1], 0, 4).build();
    assert!(matches!(
        parse_err(&bytes),
        GgufError::MisalignedTensor { offset: 4, .. }
    ));
    let bytes = Builder::new()
        .tensor("w", &[1], GgmlType::F32, &[0; 4])
        .tensor("w", &[1], GgmlType::F32, &[0; 4])
        .build();
    assert!(matches!(parse_err(&bytes), GgufError::DuplicateTensor { name } if name == "w"));
}

#[test]
fn corrupted_bytes_never_panic() {
    let original = sample().build();
    // A small deterministic generator (xorshift) picks bytes to overwrite.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        if let Ok(file) = GgufFile::parse(&bytes) {
            for t in &file.tensors {
                let _ = file.dequantize(&bytes, t);
            }
        }
    }
}
