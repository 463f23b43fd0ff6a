//! Text ↔ token ids, wrapping the Hugging Face `tokenizers` crate.
//!
//! A [`Tokenizer`] loads from a `tokenizer.json` (path or bytes) or is built
//! from the vocabulary a GGUF file carries ([`Tokenizer::from_gguf_bpe`]: the
//! byte-level BPE llama.cpp calls `gpt2`). Ids are `i64` on this side, like
//! every id tensor of the runtime. [`TextStream`] turns ids into text one token
//! at a time, for streaming generation. Every failure is
//! [`RuntimeError::Tokenizer`].

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::RuntimeError;

/// A loaded tokenizer, plus the ids of its begin/end-of-sequence tokens when
/// known.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// How a GGUF byte-level BPE splits text before merging (llama.cpp's
/// `tokenizer.ggml.pre`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BpePreTokenizer {
    /// GPT-2's regex only (llama.cpp `gpt2`).
    Gpt2,
    /// Every digit on its own, then GPT-2's regex (llama.cpp `smollm`,
    /// `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`, `minerva`).
    IndividualDigits,
}

impl BpePreTokenizer {
    /// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` name, when
    /// it is one of the two supported here.
    pub fn from_gguf_name(name: &str) -> Option<BpePreTokenizer> {
        match name {
            "gpt2" | "gpt-2" => Some(BpePreTokenizer::Gpt2),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva" => Some(BpePreTokenizer::IndividualDigits),
            _ => None,
        }
    }
}

/// GGUF `tokenizer.ggml.token_type` values.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

fn tok_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer, RuntimeError> {
        let bytes = std::fs::read(path)
            .map_err(|e| RuntimeError::Tokenizer(format!("{}: {e}", path.display())))?;
        Tokenizer::from_bytes(&bytes)
            .map_err(|e| RuntimeError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Loads a tokenizer from the bytes of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tokenizer, RuntimeError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(tok_err)?;
        Ok(Tokenizer {
            inner,
            bos: None,
            eos: None,
        })
    }

    /// A byte-level BPE tokenizer from a GGUF vocabulary (`tokenizer.ggml.model
    /// = "gpt2"`), splitting text with GPT-2's regex
    /// ([`BpePreTokenizer::Gpt2`]).
    ///
    /// `tokens[i]` is token `i`'s byte-level string, `merges` are `"left
    /// right"` pairs by priority, `token_types` the GGUF token types (empty
    /// means all normal). Control tokens (type 3) become special added tokens,
    /// user-defined ones (type 4) plain added tokens. When `bos` is given,
    /// [`Tokenizer::encode`] with `add_special_tokens` prepends it.
    pub fn from_gguf_bpe(
        tokens: Vec<String>,
        merges: Vec<String>,
        token_types: Vec<i32>,
        bos: Option<u32>,
        eos: Option<u32>,
    ) -> Result<Tokenizer, RuntimeError> {
        Tokenizer::from_gguf_bpe_with(tokens, merges, token_types, bos, eos, BpePreTokenizer::Gpt2)
    }

    /// [`Tokenizer::from_gguf_bpe`] with an explicit pre-tokenizer (see
    /// [`BpePreTokenizer::from_gguf_name`]; SmolLM2 needs
    /// [`BpePreTokenizer::IndividualDigits`]).
    pub fn from_gguf_bpe_with(
        tokens: Vec<String>,
        merges: Vec<String>,
        token_types: Vec<i32>,
        bos: Option<u32>,
        eos: Option<u32>,
        pre: BpePreTokenizer,
    ) -> Result<Tokenizer, RuntimeError> {
        if !token_types.is_empty() && token_types.len() != tokens.len() {
            return Err(RuntimeError::Tokenizer(format!(
                "GGUF vocabulary has {} tokens but {} token types",
                tokens.len(),
                token_types.len()
            )));
        }
        for (what, id) in [("bos", bos), ("eos", eos)] {
            if let Some(id) = id
                && id as usize >= tokens.len()
            {
                return Err(RuntimeError::Tokenizer(format!(
                    "{what} token id {id} is out of range for a vocabulary of {}",
                    tokens.len()
                )));
            }
        }
        let mut vocab = Map::new();
        let mut added = Vec::new();
        for (id, token) in tokens.iter().enumerate() {
            // A duplicated string keeps its first id.
            if !vocab.contains_key(token) {
                vocab.insert(token.clone(), json!(id));
            }
            let kind = token_types.get(id).copied().unwrap_or(1);
            if kind == TOKEN_TYPE_CONTROL || kind == TOKEN_TYPE_USER_DEFINED {
                added.push(json!({
                    "id": id,
                    "content": token,
                    "single_word": false,
                    "lstrip": false,
                    "rstrip": false,
                    "normalized": false,
                    "special": kind == TOKEN_TYPE_CONTROL,
                }));
            }
        }
        let merge_pairs = merges
            .iter()
            .enumerate()
            .map(|(i, m)| match m.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    Ok(json!([a, b]))
                }
                _ => Err(RuntimeError::Tokenizer(format!(
                    "GGUF merge {i} `{m}` is not two tokens separated by one space"
                ))),
            })
            .collect::<Result<Vec<Value>, RuntimeError>>()?;
        let byte_level = json!({
            "type": "ByteLevel",
            "add_prefix_space": false,
            "trim_offsets": true,
            "use_regex": true,
        });
        let pre_tokenizer = match pre {
            BpePreTokenizer::Gpt2 => byte_level.clone(),
            BpePreTokenizer::IndividualDigits => json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": true},
                    byte_level.clone(),
                ],
            }),
        };
        let post_processor = match bos {
            None => Value::Null,
            Some(id) => {
                let content = &tokens[id as usize];
                json!({
                    "type": "TemplateProcessing",
                    "single": [
                        {"SpecialToken": {"id": content, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}},
                    ],
                    "pair": [
                        {"SpecialToken": {"id": content, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}},
                        {"SpecialToken": {"id": content, "type_id": 1}},
                        {"Sequence": {"id": "B", "type_id": 1}},
                    ],
                    "special_tokens": {
                        content.clone(): {"id": content, "ids": [id], "tokens": [content]},
                    },
                })
            }
        };
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": byte_level,
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": false,
                "vocab": vocab,
                "merges": merge_pairs,
            },
        });
        let bytes = serde_json::to_vec(&doc).map_err(tok_err)?;
        let mut tokenizer = Tokenizer::from_bytes(&bytes)?;
        tokenizer.bos = bos;
        tokenizer.eos = eos;
        Ok(tokenizer)
    }

    /// Records the begin/end-of-sequence ids (a `tokenizer.json` does not name
    /// them; `tokenizer_config.json` or GGUF metadata does).
    pub fn with_special_ids(mut self, bos: Option<u32>, eos: Option<u32>) -> Tokenizer {
        self.bos = bos;
        self.eos = eos;
        self
    }

    /// Token ids of `text`; special tokens (a BOS, …) are added only when
    /// `add_special_tokens` is set and the tokenizer's post-processor adds any.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>, RuntimeError> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(tok_err)?;
        Ok(enc.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// The text of `ids`; special tokens are left out when
    /// `skip_special_tokens`. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String, RuntimeError> {
        let ids = self.checked_ids(ids)?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(tok_err)
    }

    fn checked_ids(&self, ids: &[i64]) -> Result<Vec<u32>, RuntimeError> {
        let size = self.vocab_size();
        ids.iter()
            .map(|&id| match u32::try_from(id) {
                Ok(u) if (u as usize) < size => Ok(u),
                _ => Err(RuntimeError::Tokenizer(format!(
                    "token id {id} is out of range for a vocabulary of {size}"
                ))),
            })
            .collect()
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// The token string of an id, if any.
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id)
            .ok()
            .and_then(|u| self.inner.id_to_token(u))
    }

    /// The begin-of-sequence id, when known.
    pub fn bos_id(&self) -> Option<i64> {
        self.bos.map(i64::from)
    }

    /// The end-of-sequence id, when known.
    pub fn eos_id(&self) -> Option<i64> {
        self.eos.map(i64::from)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Turns a stream of token ids into text pieces as they arrive.
///
/// Text is emitted once it is stable: the ids since the last emitted piece are
/// decoded together with a little context before them, and nothing is emitted
/// while the text ends in an incomplete UTF-8 sequence (`U+FFFD`), so a
/// character split over several byte tokens comes out whole.
#[derive(Clone, Debug, Default)]
pub struct TextStream {
    ids: Vec<i64>,
    prefix_start: usize,
    read_start: usize,
    skip_special_tokens: bool,
}

impl TextStream {
    /// An empty stream; `skip_special_tokens` as in [`Tokenizer::decode`].
    pub fn new(skip_special_tokens: bool) -> TextStream {
        TextStream {
            skip_special_tokens,
            ..TextStream::default()
        }
    }

    /// Adds one id; returns the text it completes (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: i64) -> Result<String, RuntimeError> {
        self.ids.push(id);
        let prefix = tokenizer.decode(
            &self.ids[self.prefix_start..self.read_start],
            self.skip_special_tokens,
        )?;
        let full = tokenizer.decode(&self.ids[self.prefix_start..], self.skip_special_tokens)?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let piece = full[prefix.len()..].to_string();
            self.prefix_start = self.read_start;
            self.read_start = self.ids.len();
            Ok(piece)
        } else {
            Ok(String::new())
        }
    }

    /// Whatever text is still held back (an incomplete character at the end).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String, RuntimeError> {
        let prefix = tokenizer.decode(
            &self.ids[self.prefix_start..self.read_start],
            self.skip_special_tokens,
        )?;
        let full = tokenizer.decode(&self.ids[self.prefix_start..], self.skip_special_tokens)?;
        self.prefix_start = self.ids.len();
        self.read_start = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }
}
