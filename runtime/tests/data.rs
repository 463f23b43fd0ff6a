//! The fine-tuning data pipeline: packing invariants, the Alpaca template
//! and its loss mask, the held-out split, the resumable loader, and the
//! errors for bad corpus files.

use std::path::{Path, PathBuf};

use ligerc_runtime::Tokenizer;
use ligerc_runtime::data::{
    ByteEncoder, Cursor, DataError, DataOptions, Dataset, Encode, IGNORE, Loader, Sequence, Tail,
    alpaca_prompt, load_dataset, split::heldout_count,
};

// ---------------------------------------------------------------- helpers

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fixture from `tests/fixtures/text`.
fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/text").join(name)
}

/// A temporary directory, removed when dropped (`LIGERC_KEEP_TEST_DIRS=1` keeps it).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("LIGERC_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh temporary directory for one test.
fn tempdir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("ligerc-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// Writes `contents` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// Options with no held-out set, so `train` keeps corpus order.
fn in_order(seq_len: usize, tail: Tail) -> DataOptions {
    DataOptions {
        seq_len,
        heldout_fraction: 0.0,
        tail,
        ..DataOptions::default()
    }
}

/// The stream a sequence list covers, rebuilt from the inputs of every
/// sequence plus the last target (all targets must carry loss).
fn rebuilt_stream(seqs: &[Sequence]) -> Vec<i64> {
    let mut s: Vec<i64> = seqs.iter().flat_map(|q| q.ids.iter().copied()).collect();
    s.push(*seqs.last().unwrap().targets.last().unwrap());
    s
}

/// Bytes of `text` as ids.
fn bytes(text: &str) -> Vec<i64> {
    text.bytes().map(i64::from).collect()
}

// ---------------------------------------------------------------- encoders

#[test]
fn byte_encoder_round_trips_utf8() {
    let enc = ByteEncoder::new();
    let text = "Fair is foul — and foul is fair: ✓ 漢字\n";
    let ids = enc.encode(text).unwrap();
    assert_eq!(ids.len(), text.len());
    assert!(ids.iter().all(|&id| (0..256).contains(&id)));
    assert_eq!(enc.decode(&ids), text);
    assert_eq!(enc.vocab_size(), 256);
    assert_eq!(enc.eos_id(), None);
    assert_eq!(ByteEncoder::with_eos(0).eos_id(), Some(0));
}

// ---------------------------------------------------------------- packing

#[test]
fn text_packing_targets_are_the_next_stream_token() {
    let dir = tempdir("pack");
    let a = "When shall we three meet again?\nIn thunder, lightning, or in rain?\n";
    let b = "Fair is foul, and foul is fair.\n";
    let files = [write(&dir, "a.txt", a), write(&dir, "b.md", b)];
    let enc = ByteEncoder::with_eos(0);
    let seq_len = 16;
    let data = load_dataset(&files, &enc, &in_order(seq_len, Tail::Drop)).unwrap();

    // The stream: each document, then EOS.
    let mut stream = bytes(a);
    stream.push(0);
    stream.extend(bytes(b));
    stream.push(0);
    assert_eq!(data.stats.documents, 2);
    assert_eq!(data.stats.tokens, stream.len());

    let n = (stream.len() - 1) / seq_len;
    assert_eq!(data.train.len(), n);
    assert!(data.heldout.is_empty());
    for (k, seq) in data.train.iter().enumerate() {
        assert_eq!(seq.ids.len(), seq_len);
        assert_eq!(seq.targets.len(), seq_len);
        assert_eq!(seq.ids, stream[k * seq_len..(k + 1) * seq_len]);
        // targets[i] = stream[start + i + 1]
        assert_eq!(seq.targets, stream[k * seq_len + 1..(k + 1) * seq_len + 1]);
    }
    // Consecutive sequences overlap by one token.
    for w in data.train.windows(2) {
        assert_eq!(w[1].ids[0], w[0].targets[seq_len - 1]);
    }
    // Every stream token after the first is a target exactly once, up to the
    // dropped tail.
    let targets: Vec<i64> = data.train.iter().flat_map(|s| s.targets.clone()).collect();
    assert_eq!(targets, stream[1..1 + n * seq_len]);
    assert_eq!(data.stats.dropped_tokens, stream.len() - 1 - n * seq_len);
    assert_eq!(data.stats.trained_tokens, n * seq_len);
}

#[test]
fn padded_tail_keeps_every_target_once() {
    let dir = tempdir("pad");
    let text = "To be, or not to be, that is the question.";
    let files = [write(&dir, "t.txt", text)];
    let enc = ByteEncoder::with_eos(0);
    let data = load_dataset(&files, &enc, &in_order(10, Tail::Pad)).unwrap();
    let mut stream = bytes(text);
    stream.push(0);
    // 44 tokens → 43 targets → 4 full sequences and one of 3.
    assert_eq!(data.train.len(), 5);
    let last = data.train.last().unwrap();
    assert_eq!(last.ids[..3], stream[40..43]);
    assert!(last.ids[3..].iter().all(|&id| id == 0), "padded with EOS");
    assert!(last.targets[3..].iter().all(|&t| t == IGNORE));
    let targets: Vec<i64> = data
        .train
        .iter()
        .flat_map(|s| s.targets.iter().copied())
        .filter(|&t| t != IGNORE)
        .collect();
    assert_eq!(targets, stream[1..]);
    assert_eq!(data.stats.trained_tokens, stream.len() - 1);
    assert_eq!(data.stats.dropped_tokens, 0);
}

#[test]
fn no_eos_concatenates_documents() {
    let dir = tempdir("noeos");
    let files = [write(&dir, "a.txt", "abcdef"), write(&dir, "b.txt", "ghij")];
    let data = load_dataset(&files, &ByteEncoder::new(), &in_order(3, Tail::Drop)).unwrap();
    assert_eq!(rebuilt_stream(&data.train), bytes("abcdefghij"));
}

#[test]
fn eos_ends_every_document() {
    let dir = tempdir("eos");
    let lines = "{\"text\": \"ab\"}\n\n{\"text\": \"cde\"}\n{\"text\": \"f\"}\n";
    let files = [write(&dir, "d.jsonl", lines)];
    let data = load_dataset(&files, &ByteEncoder::with_eos(0), &in_order(3, Tail::Pad)).unwrap();
    assert_eq!(data.stats.documents, 3);
    let targets: Vec<i64> = data.train.iter().flat_map(|s| s.targets.clone()).collect();
    // Stream a b 0 c d e 0 f 0: every token after the first is trained.
    let want = [
        bytes("b"),
        vec![0],
        bytes("cde"),
        vec![0],
        bytes("f"),
        vec![0],
    ]
    .concat();
    assert_eq!(targets[..want.len()], want[..]);
}

#[test]
fn alpaca_loss_covers_only_the_response_and_eos() {
    let path = fixture("alpaca_sample.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let enc = ByteEncoder::with_eos(0);
    // One padded sequence holds the whole fixture.
    let data = load_dataset(&[path], &enc, &in_order(1 << 15, Tail::Pad)).unwrap();
    assert_eq!(data.train.len(), 1);
    let seq = &data.train[0];

    let mut stream = Vec::new();
    let mut loss = Vec::new();
    let mut records = 0;
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let prompt = alpaca_prompt(
            r["instruction"].as_str().unwrap(),
            r.get("input").and_then(|v| v.as_str()),
        );
        let response = bytes(r["output"].as_str().unwrap());
        loss.extend(std::iter::repeat_n(false, prompt.len()));
        loss.extend(std::iter::repeat_n(true, response.len() + 1));
        stream.extend(bytes(&prompt));
        stream.extend(response);
        stream.push(0);
        records += 1;
    }
    assert_eq!(records, 21);
    assert_eq!(data.stats.documents, records);
    assert_eq!(data.stats.tokens, stream.len());
    assert_eq!(seq.ids[..stream.len()], stream[..]);
    for j in 1..stream.len() {
        let want = if loss[j] { stream[j] } else { IGNORE };
        assert_eq!(seq.targets[j - 1], want, "target {}", j - 1);
    }
    assert_eq!(
        data.stats.trained_tokens,
        loss[1..].iter().filter(|&&l| l).count()
    );

    // The trained targets spell the responses, each followed by EOS.
    let trained: Vec<i64> = seq
        .targets
        .iter()
        .copied()
        .filter(|&t| t != IGNORE)
        .collect();
    let first = trained.split(|&t| t == 0).next().unwrap();
    assert!(
        enc.decode(first)
            .starts_with("len() returns the number of items")
    );
}

#[test]
fn alpaca_template_is_the_stanford_one() {
    assert_eq!(
        alpaca_prompt("Add the numbers.", Some("2 and 3")),
        "Below is an instruction that describes a task, paired with an input that provides \
         further context. Write a response that appropriately completes the request.\n\n\
         ### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"
    );
    let no_input = "Below is an instruction that describes a task. Write a response that \
                    appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n\
                    ### Response:\n";
    assert_eq!(alpaca_prompt("Say hi.", None), no_input);
    assert_eq!(alpaca_prompt("Say hi.", Some("")), no_input);
}

#[test]
fn all_prompt_sequences_are_filtered_out() {
    let dir = tempdir("prompt-only");
    let rec = "{\"instruction\": \"Name a colour.\", \"output\": \"Red.\"}\n";
    let files = [write(&dir, "a.jsonl", rec)];
    // Sequences of 8 bytes: the prompt's sequences have no trained target.
    let data = load_dataset(&files, &ByteEncoder::with_eos(0), &in_order(8, Tail::Pad)).unwrap();
    assert!(data.train.iter().all(|s| s.trained() > 0));
    assert_eq!(data.stats.trained_tokens, "Red.".len() + 1);
}

#[test]
fn max_tokens_caps_the_stream() {
    let data = load_dataset(
        &[
            fixture("shakespeare_sample.txt"),
            fixture("alpaca_sample.jsonl"),
        ],
        &ByteEncoder::with_eos(0),
        &DataOptions {
            max_tokens: Some(1000),
            ..in_order(100, Tail::Drop)
        },
    )
    .unwrap();
    assert!(data.stats.capped);
    assert_eq!(data.stats.tokens, 1000);
    assert_eq!(data.stats.documents, 1);
    assert_eq!(data.train.len(), 9);
}

// ---------------------------------------------------------------- split

fn shakespeare(seed: u64) -> Dataset {
    let opts = DataOptions {
        seq_len: 128,
        seed,
        ..DataOptions::default()
    };
    load_dataset(
        &[fixture("shakespeare_sample.txt")],
        &ByteEncoder::new(),
        &opts,
    )
    .unwrap()
}

#[test]
fn heldout_split_is_disjoint_and_deterministic() {
    let all = load_dataset(
        &[fixture("shakespeare_sample.txt")],
        &ByteEncoder::new(),
        &in_order(128, Tail::Drop),
    )
    .unwrap()
    .train;
    let a = shakespeare(7);
    let total = a.train.len() + a.heldout.len();
    assert_eq!(total, all.len());
    assert_eq!(a.heldout.len(), (total as f64 * 0.05).round() as usize);
    assert_eq!(a.stats.train_sequences, a.train.len());
    assert_eq!(a.stats.heldout_sequences, a.heldout.len());
    // Disjoint, and together exactly the packed sequences in corpus order.
    let is_held: Vec<bool> = all.iter().map(|s| a.heldout.contains(s)).collect();
    let train: Vec<&Sequence> = all
        .iter()
        .zip(&is_held)
        .filter(|(_, h)| !**h)
        .map(|(s, _)| s)
        .collect();
    let held: Vec<&Sequence> = all
        .iter()
        .zip(&is_held)
        .filter(|(_, h)| **h)
        .map(|(s, _)| s)
        .collect();
    assert_eq!(train, a.train.iter().collect::<Vec<_>>());
    assert_eq!(held, a.heldout.iter().collect::<Vec<_>>());
    assert!(a.train.iter().all(|s| !a.heldout.contains(s)));

    assert_eq!(shakespeare(7), a, "same seed, same split");
    assert_ne!(
        shakespeare(8).heldout,
        a.heldout,
        "another seed, another split"
    );
}

#[test]
fn heldout_counts() {
    assert_eq!(heldout_count(0, 0.05), 0);
    assert_eq!(heldout_count(1, 0.05), 0);
    assert_eq!(heldout_count(2, 0.05), 1);
    assert_eq!(heldout_count(100, 0.05), 5);
    assert_eq!(heldout_count(100, 0.0), 0);
    assert_eq!(heldout_count(3, 0.9), 2);

    let dir = tempdir("two");
    let files = [write(&dir, "t.txt", "0123456789")];
    let opts = DataOptions {
        seq_len: 4,
        ..DataOptions::default()
    };
    let data = load_dataset(&files, &ByteEncoder::new(), &opts).unwrap();
    assert_eq!((data.train.len(), data.heldout.len()), (1, 1));
}

// ---------------------------------------------------------------- loader

#[test]
fn loader_epochs_are_seeded_permutations() {
    let mut loader = Loader::new(5, 50);
    let e0 = loader.next_batch(50);
    let e1 = loader.next_batch(50);
    for e in [&e0, &e1] {
        let mut s = e.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }
    assert_ne!(e0, e1, "each epoch has its own order");
    assert_ne!(e0, (0..50).collect::<Vec<_>>());
    assert_eq!(loader.cursor(), Cursor { epoch: 2, index: 0 });
    assert_eq!(
        Loader::new(5, 50).next_batch(50),
        e0,
        "same seed, same order"
    );
    assert_ne!(Loader::new(6, 50).next_batch(50), e0);
    assert!(Loader::new(1, 0).next_batch(4).is_empty());
}

#[test]
fn resumed_loader_yields_the_same_batches() {
    let (seed, len, batch) = (11, 7, 3);
    let mut straight = Loader::new(seed, len);
    let mut cursors = vec![straight.cursor()];
    let mut batches = Vec::new();
    for _ in 0..12 {
        batches.push(straight.next_batch(batch));
        cursors.push(straight.cursor());
    }
    // 36 indices over 7 sequences: five epoch boundaries, some mid-batch.
    assert_eq!(straight.cursor(), Cursor { epoch: 5, index: 1 });
    for (k, cursor) in cursors.iter().enumerate() {
        // Through a checkpoint: JSON out and back.
        let json = serde_json::to_string(cursor).unwrap();
        let cursor: Cursor = serde_json::from_str(&json).unwrap();
        let mut resumed = Loader::resume(seed, len, cursor).unwrap();
        for (j, want) in batches.iter().enumerate().skip(k) {
            assert_eq!(
                &resumed.next_batch(batch),
                want,
                "resumed at {k}, batch {j}"
            );
        }
    }
    // A cursor at the very end of an epoch is the next epoch's start.
    let r = Loader::resume(seed, len, Cursor { epoch: 0, index: 7 }).unwrap();
    assert_eq!(r.cursor(), Cursor { epoch: 1, index: 0 });
    let err = Loader::resume(seed, len, Cursor { epoch: 0, index: 8 }).unwrap_err();
    assert!(matches!(err, DataError::Cursor { .. }), "{err}");
}

// ---------------------------------------------------------------- errors

/// The error loading one file with these contents.
fn load_error(name: &str, contents: &[u8]) -> (PathBuf, String) {
    let dir = tempdir(&format!("err-{}", name.replace('.', "-")));
    let p = write(&dir, name, contents);
    let err = load_dataset(
        std::slice::from_ref(&p),
        &ByteEncoder::new(),
        &in_order(4, Tail::Pad),
    )
    .unwrap_err();
    (p, err.to_string())
}

#[test]
fn malformed_jsonl_names_file_and_line() {
    let good = "{\"text\": \"hello world\"}\n";
    let cases: [(&str, String, usize, &str); 6] = [
        (
            "bad.jsonl",
            format!("{good}\n{{\"text\": \"oops\"\n"),
            3,
            "invalid JSONL",
        ),
        ("arr.jsonl", format!("{good}[1, 2]\n"), 2, "JSON object"),
        (
            "noout.jsonl",
            format!("{good}{{\"instruction\": \"x\"}}\n"),
            2,
            "missing field \"output\"",
        ),
        (
            "noinstr.jsonl",
            "{\"output\": \"x\"}\n".into(),
            1,
            "missing field \"instruction\"",
        ),
        (
            "type.jsonl",
            format!("{good}{good}{{\"text\": 5}}\n"),
            3,
            "\"text\" must be a string",
        ),
        (
            "input.jsonl",
            "{\"instruction\": \"a\", \"input\": [], \"output\": \"b\"}\n".into(),
            1,
            "\"input\"",
        ),
    ];
    for (name, contents, line, what) in cases {
        let (p, msg) = load_error(name, contents.as_bytes());
        assert!(
            msg.contains(&format!("{}:{line}:", p.display())),
            "{name}: {msg}"
        );
        assert!(msg.contains(what), "{name}: {msg}");
    }
}

#[test]
fn bad_files_are_errors() {
    let (p, msg) = load_error("latin1.txt", b"first line\nna\xefve\n");
    assert_eq!(msg, format!("{}:2: not valid UTF-8", p.display()));
    let (p, msg) = load_error(
        "latin1.jsonl",
        b"{\"text\": \"ok\"}\n{\"text\": \"\xe9\"}\n",
    );
    assert_eq!(msg, format!("{}:2: not valid UTF-8", p.display()));
    let (p, msg) = load_error("empty.txt", b"");
    assert_eq!(msg, format!("{}: empty file", p.display()));
    let (p, msg) = load_error("blank.jsonl", b"\n  \n");
    assert_eq!(msg, format!("{}: empty file", p.display()));
    let missing = PathBuf::from("/nonexistent/corpus.txt");
    let err = load_dataset(
        std::slice::from_ref(&missing),
        &ByteEncoder::new(),
        &DataOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/corpus.txt: "),
        "{err}"
    );

    let err = load_dataset(
        &[fixture("alpaca_sample.jsonl")],
        &ByteEncoder::new(),
        &DataOptions {
            seq_len: 1 << 20,
            ..DataOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, DataError::TooShort { .. }), "{err}");
    assert!(matches!(
        load_dataset(&[], &ByteEncoder::new(), &DataOptions::default()),
        Err(DataError::NoFiles)
    ));
    for bad in [
        DataOptions {
            seq_len: 0,
            ..DataOptions::default()
        },
        DataOptions {
            heldout_fraction: 1.0,
            ..DataOptions::default()
        },
        DataOptions {
            heldout_fraction: f64::NAN,
            ..DataOptions::default()
        },
        DataOptions {
            max_tokens: Some(0),
            ..DataOptions::default()
        },
    ] {
        let err =
            load_dataset(&[fixture("alpaca_sample.jsonl")], &ByteEncoder::new(), &bad).unwrap_err();
        assert!(matches!(err, DataError::Option(_)), "{err}");
    }
}

// ---------------------------------------------------------------- a real tokenizer

/// SmolLM2's tokenizer with `<|im_end|>` as EOS, when the model was fetched.
fn smollm2_tokenizer() -> Option<Tokenizer> {
    let p = root().join("models/SmolLM2-135M-Instruct-hf/tokenizer.json");
    if !p.exists() {
        eprintln!(
            "skipped: {} is missing (scripts/fetch-smollm2.sh)",
            p.display()
        );
        return None;
    }
    let tok = Tokenizer::from_file(&p).unwrap();
    let eos = tok.token_to_id("<|im_end|>").unwrap();
    Some(tok.with_special_ids(None, Some(u32::try_from(eos).unwrap())))
}

#[test]
fn smollm2_alpaca_packing() {
    let Some(tok) = smollm2_tokenizer() else {
        return;
    };
    let eos = Encode::eos_id(&tok).unwrap();
    let path = fixture("alpaca_sample.jsonl");
    let data = load_dataset(
        std::slice::from_ref(&path),
        &tok,
        &in_order(4096, Tail::Pad),
    )
    .unwrap();
    assert_eq!(data.train.len(), 1);
    let seq = &data.train[0];

    // The first record: its prompt and response encoded apart, then EOS.
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let prompt = Encode::encode(
        &tok,
        &alpaca_prompt(first["instruction"].as_str().unwrap(), None),
    )
    .unwrap();
    let response = Encode::encode(&tok, first["output"].as_str().unwrap()).unwrap();
    let n = prompt.len() + response.len();
    assert_eq!(seq.ids[..prompt.len()], prompt[..]);
    assert_eq!(seq.ids[prompt.len()..n], response[..]);
    assert_eq!(seq.ids[n], eos);
    assert!(seq.targets[..prompt.len() - 1].iter().all(|&t| t == IGNORE));
    assert_eq!(seq.targets[prompt.len() - 1..n - 1], response[..]);
    assert_eq!(seq.targets[n - 1], eos);

    // 21 records, 21 EOS targets; the trained text is the responses.
    let trained: Vec<i64> = seq
        .targets
        .iter()
        .copied()
        .filter(|&t| t != IGNORE)
        .collect();
    assert_eq!(trained.iter().filter(|&&t| t == eos).count(), 21);
    let text = tok.decode(&trained, false).unwrap();
    assert!(
        text.starts_with("len() returns the number of items"),
        "{text}"
    );
    assert!(!text.contains("### Response:"));
}

/// Throughput on the fetched corpora (`scripts/fetch-corpora.sh`):
/// `cargo test -p ligerc-runtime --test data -- --ignored --nocapture`.
#[test]
#[ignore = "needs data/corpora and takes a while"]
fn corpora_throughput() {
    let Some(tok) = smollm2_tokenizer() else {
        return;
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root().join("data/corpora")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "txt") {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        eprintln!("skipped: no corpora (scripts/fetch-corpora.sh)");
        return;
    }
    let t = std::time::Instant::now();
    let data = load_dataset(&files, &tok, &DataOptions::default()).unwrap();
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "{} files, {:?}: {:.1}s, {:.2}M tokens/s",
        files.len(),
        data.stats,
        s,
        data.stats.tokens as f64 / s / 1e6
    );
}
