//! `config.json` files of real models (both transformers generations) and the
//! errors bad ones must give.

use std::path::Path;

use serde_json::{Value, json};

use super::{HfConfigError, LlamaConfig, ModelType, RopeScaling};

fn parse(value: &Value) -> Result<LlamaConfig, HfConfigError> {
    LlamaConfig::from_json(value, Path::new("test/config.json"))
}

fn ok(value: &Value) -> LlamaConfig {
    parse(value).unwrap_or_else(|e| panic!("{e}"))
}

fn err(value: &Value) -> HfConfigError {
    match parse(value) {
        Ok(c) => panic!("parsed: {c:?}"),
        Err(e) => e,
    }
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-12 * want.abs()
}

/// meta-llama/Llama-2-7b-hf (transformers 4.31): no rope_theta, no head_dim.
fn llama2() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
        "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null,
        "tie_word_embeddings": false, "torch_dtype": "float16",
        "transformers_version": "4.31.0.dev0", "use_cache": true, "vocab_size": 32000
    })
}

/// meta-llama/Llama-3.1-8B (transformers 4.43).
fn llama31() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
        "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
        "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
        "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"
        },
        "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256
    })
}

/// HuggingFaceTB/SmolLM2-135M-Instruct (transformers 4.42).
fn smollm2() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576,
        "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": true,
        "max_position_embeddings": 8192, "mlp_bias": false, "model_type": "llama",
        "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
        "pad_token_id": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": false,
        "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
        "torch_dtype": "bfloat16", "transformers_version": "4.42.3",
        "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
        "use_cache": true, "vocab_size": 49152
    })
}

/// A Llama 3.2 1B shape saved by transformers 5.x: `rope_parameters`, `dtype`.
fn llama32_v5() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 128000, "dtype": "bfloat16", "eos_token_id": 128001, "head_dim": 64,
        "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
        "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
        "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
        "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_parameters": {
            "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_theta": 500000.0, "rope_type": "llama3"
        },
        "tie_word_embeddings": true, "transformers_version": "5.0.0", "use_cache": true,
        "vocab_size": 128256
    })
}

/// A Qwen2.5-0.5B shape saved by transformers 5.x: `rope_parameters`, `layer_types`.
fn qwen2_v5() -> Value {
    json!({
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "dtype": "bfloat16",
        "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864,
        "layer_types": ["full_attention", "full_attention", "full_attention"],
        "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
        "num_attention_heads": 14, "num_hidden_layers": 3, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
        "sliding_window": null, "tie_word_embeddings": true, "transformers_version": "5.24.0",
        "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
    })
}

/// Qwen/Qwen2.5-0.5B-Instruct (transformers 4.43).
fn qwen2() -> Value {
    json!({
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
        "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
        "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
        "vocab_size": 151936
    })
}

/// mistralai/Mistral-7B-v0.1 (transformers 4.34): sliding window 4096.
fn mistral() -> Value {
    json!({
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
        "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
        "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 32000
    })
}

fn with(mut value: Value, key: &str, v: Value) -> Value {
    if let Some(obj) = value.as_object_mut() {
        obj.insert(key.to_owned(), v);
    }
    value
}

fn without(mut value: Value, key: &str) -> Value {
    if let Some(obj) = value.as_object_mut() {
        obj.remove(key);
    }
    value
}

// ── real configs ───────────────────────────────────────────────────────────

#[test]
fn llama2_uses_defaults() {
    let c = ok(&llama2());
    assert_eq!(c.model_type, ModelType::Llama);
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (4096, 11008, 32)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (32, 32, 128)
    );
    assert_eq!((c.vocab_size, c.max_position_embeddings), (32000, 4096));
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert!(!c.tie_word_embeddings && !c.qkv_bias && !c.o_bias && !c.mlp_bias);
    assert_eq!(c.rope.theta, 10_000.0);
    assert_eq!(c.rope.scaling, RopeScaling::None);
    assert_eq!(c.sliding_window, None);
    assert_eq!(c.dtype.as_deref(), Some("float16"));
    let inv = c.rope_inv_freq();
    assert_eq!(inv.len(), 64);
    assert_eq!(inv[0], 1.0);
    // 1 / 10000^(2/128)
    assert!(close(inv[1], 10_000f64.powf(-2.0 / 128.0)));
}

#[test]
fn llama31_has_llama3_scaling() {
    let c = ok(&llama31());
    assert_eq!(
        (c.num_key_value_heads, c.head_dim, c.vocab_size),
        (8, 128, 128_256)
    );
    assert_eq!(c.rope.theta, 500_000.0);
    assert_eq!(
        c.rope.scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192.0
        }
    );
    // Expected values from plain Python floats (math module) in /work/venv/py,
    // the transformers formula with d=128, theta=5e5, factor=8, low=1, high=4,
    // orig=8192: inv = 1/theta**(2k/d); wavelen = 2*pi/inv; > orig/low: inv/factor;
    // < orig/high: inv; else s = (orig/wavelen - low)/(high - low),
    // (1 - s)*inv/factor + s*inv.
    let inv = c.rope_inv_freq();
    assert_eq!(inv.len(), 64);
    let expected = [
        (0, 1.0),                     // high frequency: kept
        (1, 0.8146172338565447),      // high frequency: kept
        (28, 0.0032114459947525913),  // last kept
        (29, 0.002166570763503359),   // smoothed (unscaled 0.0026160992529250353)
        (30, 0.0013718935677611381),  // smoothed
        (34, 0.00017850781276799638), // smoothed (unscaled 0.0009384738703573801)
        (35, 9.556212353964683e-05),  // low frequency: divided by 8
        (40, 3.428102195952591e-05),  // low frequency
        (63, 3.068925988914511e-07),  // low frequency
    ];
    for (k, want) in expected {
        assert!(
            close(inv[k], want),
            "inv_freq[{k}] = {}, Python says {want}",
            inv[k]
        );
    }
}

#[test]
fn smollm2_4x() {
    let c = ok(&smollm2());
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.head_dim),
        (576, 30, 64)
    );
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (9, 3));
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope.theta, 100_000.0); // written as the integer 100000
    assert_eq!(c.rope.scaling, RopeScaling::None);
    // 1 / 100000^(10/64), from Python: 1.0/100000.0**(10/64)
    assert!(close(c.rope_inv_freq()[5], 0.16548170999431813));
}

#[test]
fn transformers_5x_rope_parameters() {
    let c = ok(&llama32_v5());
    assert_eq!((c.head_dim, c.num_hidden_layers), (64, 16));
    assert_eq!(c.rope.theta, 500_000.0);
    assert!(matches!(
        c.rope.scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            original_max_position: 8192.0,
            ..
        }
    ));
    assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    assert!(c.tie_word_embeddings);

    let c = ok(&qwen2_v5());
    assert_eq!(c.model_type, ModelType::Qwen2);
    assert_eq!(c.rope.theta, 1_000_000.0);
    assert_eq!(c.rope.scaling, RopeScaling::None);
    assert_eq!(c.sliding_window, None);
}

#[test]
fn qwen2_has_qkv_bias_only() {
    let c = ok(&qwen2());
    assert_eq!(c.model_type, ModelType::Qwen2);
    assert!(c.qkv_bias && !c.o_bias && !c.mlp_bias);
    assert_eq!((c.head_dim, c.num_key_value_heads), (64, 2));
    assert_eq!(c.rope.theta, 1_000_000.0);
    // sliding_window is ignored while use_sliding_window is false.
    assert_eq!(c.sliding_window, None);
    // attention_bias does not apply to qwen2.
    let c = ok(&with(qwen2(), "attention_bias", json!(false)));
    assert!(c.qkv_bias && !c.o_bias);
}

#[test]
fn mistral_records_sliding_window() {
    let c = ok(&mistral());
    assert_eq!(c.model_type, ModelType::Mistral);
    assert_eq!(c.sliding_window, Some(4096));
    assert!(!c.qkv_bias && !c.o_bias && !c.mlp_bias);
    let c = ok(&with(mistral(), "sliding_window", Value::Null));
    assert_eq!(c.sliding_window, None);
}

#[test]
fn llama_attention_and_mlp_bias() {
    let c = ok(&with(
        with(llama2(), "attention_bias", json!(true)),
        "mlp_bias",
        json!(true),
    ));
    assert!(c.qkv_bias && c.o_bias && c.mlp_bias);
}

#[test]
fn linear_scaling_and_old_type_key() {
    let c = ok(&with(
        llama2(),
        "rope_scaling",
        json!({"type": "linear", "factor": 4.0}),
    ));
    assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 4.0 });
    let inv = c.rope_inv_freq();
    // From Python: 1.0/10000.0**(2/64) / 4 would be index 1 for d=64; here d=128.
    assert!(close(inv[1], 10_000f64.powf(-2.0 / 128.0) / 4.0));
    let c = ok(&with(
        llama2(),
        "rope_scaling",
        json!({"rope_type": "default"}),
    ));
    assert_eq!(c.rope.scaling, RopeScaling::None);
}

#[test]
fn llama3_original_context_defaults_to_max_positions() {
    let scaling =
        json!({"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4});
    let c = ok(&with(llama31(), "rope_scaling", scaling));
    assert!(matches!(
        c.rope.scaling,
        RopeScaling::Llama3 { original_max_position, .. } if original_max_position == 131_072.0
    ));
}

// ── errors ─────────────────────────────────────────────────────────────────

#[test]
fn missing_required_keys_are_named() {
    for key in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "rms_norm_eps",
        "vocab_size",
        "max_position_embeddings",
        "model_type",
    ] {
        let e = err(&without(llama2(), key));
        assert!(
            matches!(&e, HfConfigError::Missing { key: k, .. } if k == key),
            "{key}: {e}"
        );
        assert!(e.to_string().contains("test/config.json"), "{e}");
        let e = err(&with(llama2(), key, Value::Null));
        assert!(
            matches!(&e, HfConfigError::Missing { .. }),
            "{key} null: {e}"
        );
    }
}

#[test]
fn wrong_types_are_named() {
    let e = err(&with(llama2(), "hidden_size", json!("4096")));
    assert!(
        matches!(&e, HfConfigError::WrongType { key, .. } if key == "hidden_size"),
        "{e}"
    );
    let e = err(&with(llama2(), "num_hidden_layers", json!(32.5)));
    assert!(
        matches!(&e, HfConfigError::WrongType { key, .. } if key == "num_hidden_layers"),
        "{e}"
    );
    let e = err(&with(llama2(), "tie_word_embeddings", json!(1)));
    assert!(
        matches!(&e, HfConfigError::WrongType { key, .. } if key == "tie_word_embeddings"),
        "{e}"
    );
    let e = err(&with(llama2(), "rope_theta", json!("big")));
    assert!(
        matches!(&e, HfConfigError::WrongType { key, .. } if key == "rope_theta"),
        "{e}"
    );
    let e = err(&with(llama2(), "rope_scaling", json!([1, 2])));
    assert!(
        matches!(&e, HfConfigError::WrongType { key, .. } if key == "rope_scaling"),
        "{e}"
    );
    let e = err(&json!([1, 2, 3]));
    assert!(matches!(&e, HfConfigError::WrongType { .. }), "{e}");
}

#[test]
fn unsupported_model_and_rope_types() {
    let e = err(&with(llama2(), "model_type", json!("gemma")));
    assert!(
        matches!(&e, HfConfigError::UnsupportedModelType { model_type, .. } if model_type == "gemma"),
        "{e}"
    );
    let e = err(&with(
        llama2(),
        "rope_scaling",
        json!({"rope_type": "yarn", "factor": 4.0}),
    ));
    assert!(
        matches!(&e, HfConfigError::UnsupportedRopeType { key, rope_type, .. }
            if key == "rope_scaling.rope_type" && rope_type == "yarn"),
        "{e}"
    );
    let e = err(&with(
        llama2(),
        "rope_scaling",
        json!({"type": "dynamic", "factor": 2.0}),
    ));
    assert!(
        matches!(&e, HfConfigError::UnsupportedRopeType { key, .. } if key == "rope_scaling.type"),
        "{e}"
    );
    let e = err(&with(llama2(), "hidden_act", json!("gelu")));
    assert!(
        matches!(&e, HfConfigError::Unsupported { key, .. } if key == "hidden_act"),
        "{e}"
    );
}

#[test]
fn incomplete_rope_scaling_names_the_nested_key() {
    let e = err(&with(
        llama2(),
        "rope_scaling",
        json!({"rope_type": "linear"}),
    ));
    assert!(
        matches!(&e, HfConfigError::Missing { key, .. } if key == "rope_scaling.factor"),
        "{e}"
    );
    let scaling = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0});
    let e = err(&with(llama31(), "rope_scaling", scaling));
    assert!(
        matches!(&e, HfConfigError::Missing { key, .. } if key == "rope_scaling.high_freq_factor"),
        "{e}"
    );
    let scaling = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0});
    let e = err(&with(llama31(), "rope_scaling", scaling));
    assert!(
        matches!(&e, HfConfigError::Invalid { key, .. } if key == "rope_scaling.high_freq_factor"),
        "{e}"
    );
    let v5 = with(
        llama32_v5(),
        "rope_parameters",
        json!({"rope_type": "linear", "rope_theta": 1e4}),
    );
    let e = err(&v5);
    assert!(
        matches!(&e, HfConfigError::Missing { key, .. } if key == "rope_parameters.factor"),
        "{e}"
    );
}

#[test]
fn layer_types_must_be_full_attention() {
    let types = json!(["full_attention", "sliding_attention", "full_attention"]);
    let e = err(&with(qwen2_v5(), "layer_types", types));
    assert!(
        matches!(&e, HfConfigError::UnsupportedLayerType { index: 1, value, .. } if value == "sliding_attention"),
        "{e}"
    );
    let e = err(&with(qwen2_v5(), "layer_types", json!(["full_attention"])));
    assert!(
        matches!(&e, HfConfigError::Invalid { key, .. } if key == "layer_types"),
        "{e}"
    );
    let e = err(&with(
        qwen2_v5(),
        "layer_types",
        json!(["full_attention", 3, "full_attention"]),
    ));
    assert!(
        matches!(&e, HfConfigError::WrongType { key, .. } if key == "layer_types[1]"),
        "{e}"
    );
    let e = err(&with(qwen2(), "use_sliding_window", json!(true)));
    assert!(
        matches!(&e, HfConfigError::Unsupported { key, .. } if key == "use_sliding_window"),
        "{e}"
    );
}

#[test]
fn inconsistent_shapes_are_invalid() {
    let e = err(&with(llama2(), "num_key_value_heads", json!(5)));
    assert!(
        matches!(&e, HfConfigError::Invalid { key, .. } if key == "num_key_value_heads"),
        "{e}"
    );
    let e = err(&with(llama2(), "num_attention_heads", json!(0)));
    assert!(
        matches!(&e, HfConfigError::Invalid { key, .. } if key == "num_attention_heads"),
        "{e}"
    );
    let e = err(&with(
        without(llama2(), "num_key_value_heads"),
        "num_attention_heads",
        json!(3),
    ));
    assert!(
        matches!(&e, HfConfigError::Invalid { key, .. } if key == "hidden_size"),
        "{e}"
    );
    let e = err(&with(llama2(), "head_dim", json!(7)));
    assert!(
        matches!(&e, HfConfigError::Invalid { key, .. } if key == "head_dim"),
        "{e}"
    );
    let e = err(&with(llama2(), "rms_norm_eps", json!(-1.0)));
    assert!(
        matches!(&e, HfConfigError::Invalid { key, .. } if key == "rms_norm_eps"),
        "{e}"
    );
}

#[test]
fn from_file_reports_io_and_json_errors() {
    let e = LlamaConfig::from_file(Path::new("/nonexistent/config.json")).unwrap_err();
    assert!(matches!(&e, HfConfigError::Read { .. }), "{e}");
    let dir = std::env::temp_dir().join(format!("ligerc-hf-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, "{ not json").unwrap();
    let e = LlamaConfig::from_file(&path).unwrap_err();
    assert!(matches!(&e, HfConfigError::Json { .. }), "{e}");
    std::fs::write(&path, smollm2().to_string()).unwrap();
    assert_eq!(LlamaConfig::from_file(&path).unwrap().num_hidden_layers, 30);
    std::fs::remove_dir_all(&dir).unwrap();
}
