#!/usr/bin/env bash
# Runs ligerc's fuzz targets (fuzz/, cargo-fuzz + libFuzzer) for a fixed time each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]      default: 60 s, every target
#
# FUZZ_PARALLEL=N runs N targets at once (default 2; each is one process).
# The targets are built once (stable toolchain with RUSTC_BOOTSTRAP=1, debug
# assertions and overflow checks on) without a sanitizer: the harnessed code is
# safe Rust, and AddressSanitizer made the ONNX targets 6-12x slower on the
# large fixture inputs. FUZZ_SANITIZER=address builds and runs with ASan
# instead (into fuzz/target/; the default build goes to fuzz/target-nosan/).
# Each target's working corpus,
# fuzz/corpus/<target>/ (not committed), starts from fuzz/seeds/<target>/ plus
# the repo's fixtures; a crash, timeout or OOM input is copied to
# fuzz/regressions/<target>/, which tests/fuzz_regressions.rs replays in CI.
# The last lines of each log (fuzz/artifacts/<target>.log) give executions,
# exec/s, peak RSS and coverage; the script prints a summary table.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
all=(onnx_import gguf_parse safetensors_dir hf_config text_ir importer_verifier)
targets=("${@:-${all[@]}}")
parallel=${FUZZ_PARALLEL:-2}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}
if [[ $sanitizer == none ]]; then target_dir=target-nosan; else target_dir=target; fi
(cd fuzz && cargo fuzz build -s "$sanitizer" --target-dir "$target_dir")

bin_of() {
    echo "fuzz/$target_dir/x86_64-unknown-linux-gnu/release/$1"
}

# The working corpus: seeds, fixtures, and what earlier runs found.
seed_corpus() {
    local t=$1 c=fuzz/corpus/$1
    mkdir -p "$c"
    cp -n fuzz/seeds/"$t"/* "$c"/ 2>/dev/null || true
    case $t in
    onnx_import | importer_verifier) cp -n tests/fixtures/onnx/*.onnx "$c"/ ;;
    gguf_parse)
        local g=models/SmolLM2-135M-Instruct.Q4_1.gguf
        [[ -f $g && ! -f $c/smollm2_head_1MiB.gguf ]] && head -c 1048576 "$g" >"$c"/smollm2_head_1MiB.gguf
        ;;
    safetensors_dir)
        for d in tests/fixtures/hf/*/; do
            cp -n "$d"model.safetensors "$c/$(basename "$d").safetensors"
        done
        ;;
    hf_config)
        for d in tests/fixtures/hf/*/; do cp -n "$d"config.json "$c/$(basename "$d").json"; done
        ;;
    text_ir)
        # Snapshots without insta's `---` header; the small ones (see max_len_of).
        for s in $(find tests/snapshots -name '*.snap' -size -16k); do
            awk 'n >= 2 { print } /^---$/ { n++ }' "$s" >"$c/$(basename "$s" .snap).ir"
        done
        ;;
    esac
    return 0
}

# Inputs longer than this are cut: the 1 MiB GGUF head and the 50 KiB IR
# snapshots would otherwise make every execution slow.
max_len_of() {
    case $1 in
    gguf_parse) echo 131072 ;;
    text_ir) echo 16384 ;;
    *) echo 0 ;; # libFuzzer's default: the largest seed
    esac
}

run_one() {
    local t=$1 art=fuzz/artifacts/$1
    mkdir -p "$art" fuzz/regressions/"$t"
    rm -f "$art"/crash-* "$art"/timeout-* "$art"/oom-* "$art"/leak-* # copied by an earlier run
    seed_corpus "$t"
    local before
    before=$(ls fuzz/corpus/"$t" | wc -l)
    local start=$SECONDS rc=0
    "$(bin_of "$t")" fuzz/corpus/"$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
        -max_len="$(max_len_of "$t")" -print_final_stats=1 -artifact_prefix="$art/" \
        >"fuzz/artifacts/$t.log" 2>&1 || rc=$?
    local found=0
    for f in "$art"/crash-* "$art"/timeout-* "$art"/oom-* "$art"/leak-*; do
        [[ -e $f ]] || continue
        cp "$f" fuzz/regressions/"$t"/
        found=$((found + 1))
    done
    local execs rate rss
    execs=$(grep -a -o 'stat::number_of_executed_units:[[:space:]]*[0-9]*' "fuzz/artifacts/$t.log" | awk '{print $2}')
    rate=$(grep -a -o 'stat::average_exec_per_sec:[[:space:]]*[0-9]*' "fuzz/artifacts/$t.log" | awk '{print $2}')
    rss=$(grep -a -o 'stat::peak_rss_mb:[[:space:]]*[0-9]*' "fuzz/artifacts/$t.log" | awk '{print $2}')
    printf '%-18s rc=%-3s %6ss  execs=%-10s exec/s=%-6s rss=%-5sMB corpus=%s→%s  findings=%s\n' \
        "$t" "$rc" "$((SECONDS - start))" "${execs:-?}" "${rate:-?}" "${rss:-?}" "$before" \
        "$(ls fuzz/corpus/"$t" | wc -l)" "$found"
}

echo "fuzzing ${targets[*]} for ${secs}s each, $parallel at a time ($(nproc) cores, sanitizer: $sanitizer)"
running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if ((running >= parallel)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
if compgen -G "fuzz/regressions/*/*" >/dev/null; then
    echo "inputs saved under fuzz/regressions/ (replayed by tests/fuzz_regressions.rs):"
    ls fuzz/regressions/*/
fi
