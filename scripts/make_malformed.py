#!/usr/bin/env python3
"""Writes the malformed-input suite (tests/malformed/) and the small fuzz seeds (fuzz/seeds/).

Every bad file is made from a small valid one by a single, named defect, so a
test failure points at one importer check. tests/malformed/MANIFEST.json lists
each case with the ImportError variant (or IrError for text IR) the library
must return and a phrase the message must contain; tests/malformed_inputs.rs
reads it. Uses only numpy and onnx (from the repo's .venv) and the standard
library; GGUF and safetensors are written by hand so their lengths can lie.

    .venv/bin/python scripts/make_malformed.py
"""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "malformed"
SEEDS = ROOT / "fuzz" / "seeds"
CASES = []


def case(rel, kind, needle, note):
    """Records one case: `rel` under tests/malformed, the expected error variant, a message phrase."""
    CASES.append({"path": rel, "kind": kind, "needle": needle, "note": note})


def write(rel, data):
    p = OUT / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())


def seed(target, name, data):
    p = SEEDS / target / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())


# ── ONNX ────────────────────────────────────────────────────────────────────


def tiny_onnx(initializers=None, nodes=None, inputs=None, outputs=None, opset=18, value_info=()):
    """x[1,4] → MatMul(W[4,4]) → Relu → y, unless parts are replaced."""
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 16, "W")
    g = helper.make_graph(
        nodes if nodes is not None else [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Relu", ["h"], ["y"], name="relu"),
        ],
        "tiny",
        inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        outputs if outputs is not None else [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=initializers if initializers is not None else [w],
        value_info=list(value_info),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] if opset else [])
    m.ir_version = 8
    return m


def raw_tensor(name, dims, data_type=TensorProto.FLOAT, raw=None, **fields):
    t = TensorProto(name=name, data_type=data_type, dims=dims)
    if raw is not None:
        t.raw_data = raw
    for k, v in fields.items():
        getattr(t, k).extend(v)
    return t


def ser(m):
    return m.SerializeToString()


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, payload):
    """A length-delimited protobuf field."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def onnx_cases():
    good = ser(tiny_onnx())
    seed("onnx_import", "tiny_matmul_relu.onnx", good)
    seed("importer_verifier", "tiny_matmul_relu.onnx", good)
    w_raw = (np.arange(16, dtype=np.float32) / 16).tobytes()
    at = good.index(w_raw)
    for name, cut in [("truncated_1", 1), ("truncated_in_weight", at + 30), ("truncated_last_byte", len(good) - 1)]:
        write(f"onnx/{name}.onnx", good[:cut])
        case(f"onnx/{name}.onnx", "Malformed", "protobuf decode failed", f"the tiny model cut to {cut} bytes")
    write("onnx/wrong_magic.onnx", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(200, 256)))
    case("onnx/wrong_magic.onnx", "Malformed", "protobuf decode failed", "a PNG header, not a protobuf")

    m = tiny_onnx()
    m.ClearField("graph")
    write("onnx/no_graph.onnx", ser(m))
    case("onnx/no_graph.onnx", "Malformed", "no graph", "ModelProto without a graph")
    write("onnx/no_opset.onnx", ser(tiny_onnx(opset=None)))
    case("onnx/no_opset.onnx", "Malformed", "no opset import", "no opset for the standard domain")
    write("onnx/opset_7.onnx", ser(tiny_onnx(opset=7)))
    case("onnx/opset_7.onnx", "Unsupported", "opset 7", "an opset below the supported range")

    nodes = [helper.make_node("FooBar", ["x", "W"], ["y"], name="mystery")]
    write("onnx/unknown_op.onnx", ser(tiny_onnx(nodes=nodes)))
    case("onnx/unknown_op.onnx", "UnsupportedOp", "unsupported op `FooBar`", "an op no opset defines")
    nodes = [helper.make_node("FusedMatMul", ["x", "W"], ["y"], name="ms_fused", domain="com.microsoft")]
    write("onnx/custom_domain.onnx", ser(tiny_onnx(nodes=nodes)))
    case("onnx/custom_domain.onnx", "UnsupportedOp", "domain `com.microsoft`", "a contrib-domain op")

    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="add_ghost")]
    write("onnx/dangling_input.onnx", ser(tiny_onnx(nodes=nodes)))
    case("onnx/dangling_input.onnx", "Malformed", "reads `ghost`", "a node reads a name nothing defines")
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="cycle_a"),
        helper.make_node("Relu", ["a"], ["b"], name="cycle_b"),
        helper.make_node("Identity", ["a"], ["y"], name="out"),
    ]
    write("onnx/cyclic.onnx", ser(tiny_onnx(nodes=nodes)))
    case("onnx/cyclic.onnx", "Malformed", "node `cycle_a` reads `b`", "two nodes that read each other")
    nodes = [helper.make_node("Add", ["x", "y"], ["y"], name="self_loop")]
    write("onnx/self_loop.onnx", ser(tiny_onnx(nodes=nodes)))
    case("onnx/self_loop.onnx", "Malformed", "node `self_loop` reads `y`", "a node reads its own output")
    outs = [helper.make_tensor_value_info("nowhere", TensorProto.FLOAT, [1, 4])]
    write("onnx/undefined_output.onnx", ser(tiny_onnx(outputs=outs)))
    case("onnx/undefined_output.onnx", "Malformed", "graph output reads `nowhere`", "an output nothing computes")

    def with_w(t, rel, kind, needle, note, nodes=None):
        write(rel, ser(tiny_onnx(initializers=[t], nodes=nodes)))
        case(rel, kind, needle, note)

    with_w(raw_tensor("W", [4, 4], raw=w_raw[:60]), "onnx/raw_data_short.onnx", "Tensor",
           "needs 64 bytes, got 60", "raw_data 4 bytes shorter than its shape")
    with_w(raw_tensor("W", [4, 4], float_data=[1.0, 2.0]), "onnx/float_data_count.onnx", "Tensor",
           "holds 2 values, its shape needs 16", "float_data with 2 of 16 values")
    with_w(raw_tensor("W", [-4, 4], raw=w_raw), "onnx/negative_dim.onnx", "Tensor", "negative dim -4",
           "a negative dimension")
    with_w(raw_tensor("W", [1 << 40, 1 << 40], raw=b""), "onnx/absurd_dims.onnx", "Tensor",
           "declare more than", "2^80 elements declared, none stored")
    with_w(raw_tensor("W", [0, 1 << 40, 1 << 40], raw=b""), "onnx/zero_hides_huge.onnx", "Tensor",
           "declare more than", "a zero dim beside two 2^40 dims")
    with_w(raw_tensor("W", [1 << 30, 4]), "onnx/huge_typed_fields.onnx", "Tensor",
           "holds 0 values", "2^32 elements in typed fields that hold none (no allocation first)")
    with_w(raw_tensor("W", [1] * 40, raw=w_raw[:4]), "onnx/rank_40.onnx", "Tensor", "rank 40",
           "40 dimensions")
    with_w(raw_tensor("W", [2], data_type=TensorProto.STRING, string_data=[b"a", b"b"]),
           "onnx/string_tensor.onnx", "Tensor", "unsupported element type code 8", "a string initializer")
    for name, loc, needle in [
        ("external_absolute", "/etc/passwd", "must be a relative path"),
        ("external_parent", "../secret.bin", "must be a relative path"),
        ("external_missing", "missing.bin", "missing.bin"),
        ("external_past_eof", "external_past_eof.bin", "past the end of the file"),
    ]:
        t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 4])
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=loc)
        with_w(t, f"onnx/{name}.onnx", "Tensor", needle, f"external data at `{loc}`")
    write("onnx/external_past_eof.bin", b"\0" * 8)
    nan = np.arange(16, dtype=np.float32).reshape(4, 4)
    nan[2, 1] = np.nan
    with_w(numpy_helper.from_array(nan, "W"), "onnx/nan_weight.onnx", "Tensor",
           "tensor `W`: 1 non-finite value (first: NaN at flat index 9)", "one NaN in a weight")
    inf16 = np.ones((4, 4), dtype=np.float16)
    inf16[0, 3] = -np.inf
    cast = [
        helper.make_node("Cast", ["W"], ["w32"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "w32"], ["y"], name="mm"),
    ]
    with_w(numpy_helper.from_array(inf16, "W"), "onnx/inf_weight_f16.onnx", "Tensor",
           "first: -inf at flat index 3", "-inf in an f16 weight", nodes=cast)

    nodes = [helper.make_node("Relu", ["x", "W", "x"], ["y"], name="relu3")]
    write("onnx/too_many_inputs.onnx", ser(tiny_onnx(nodes=nodes)))
    case("onnx/too_many_inputs.onnx", "Malformed", "node `relu3` (Relu) has 3 inputs", "Relu with 3 operands")
    ints = [numpy_helper.from_array(np.array([v], dtype=np.int64), n) for n, v in [("s", 0), ("e", 2), ("st", 1)]]
    nodes = [helper.make_node("Slice", ["x", "s", "e", "", "st"], ["y"], name="slice")]
    write("onnx/omitted_middle_input.onnx", ser(tiny_onnx(initializers=ints, nodes=nodes)))
    case("onnx/omitted_middle_input.onnx", "Unsupported", "node `slice` (Slice): omitted optional input 3",
         "Slice(x, starts, ends, , steps)")
    n = helper.make_node("Relu", ["x"], ["y"], name="bad_attr")
    n.attribute.append(helper.make_attribute("note", b"\xff\xfe"))
    write("onnx/attr_not_utf8.onnx", ser(tiny_onnx(nodes=[n])))
    case("onnx/attr_not_utf8.onnx", "Unsupported", "attribute `note` is not UTF-8", "a string attribute of bad UTF-8")
    sub = helper.make_graph([], "sub", [], [])
    n = helper.make_node("Relu", ["x"], ["y"], name="graph_attr")
    n.attribute.append(helper.make_attribute("body", sub))
    write("onnx/attr_graph.onnx", ser(tiny_onnx(nodes=[n])))
    case("onnx/attr_graph.onnx", "Unsupported", "attribute `body` has unsupported type", "a subgraph attribute")
    seq_in = helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, [4])
    write("onnx/input_sequence.onnx", ser(tiny_onnx(inputs=[seq_in])))
    case("onnx/input_sequence.onnx", "Unsupported", "graph input `x` is not a tensor", "a sequence-typed input")
    n = helper.make_node("Constant", [], ["c"], name="empty_const")
    nodes = [n, helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    write("onnx/constant_no_value.onnx", ser(tiny_onnx(nodes=nodes)))
    case("onnx/constant_no_value.onnx", "Malformed", "Constant `empty_const`: no value attribute", "Constant without value")
    w2 = numpy_helper.from_array(np.zeros((2, 2), dtype=np.float32), "W")
    w4 = numpy_helper.from_array(np.zeros((4, 4), dtype=np.float32), "W")
    write("onnx/duplicate_initializer.onnx", ser(tiny_onnx(initializers=[w4, w2])))
    case("onnx/duplicate_initializer.onnx", "Graph", "weight `W`", "two initializers named W of different shapes")

    # A value_info type nested 200 sequence types deep: past prost's recursion limit (100).
    tensor_type = field(1, varint(1 << 3) + varint(1))  # TypeProto.tensor_type { elem_type: FLOAT }
    ty = tensor_type
    for _ in range(200):
        ty = field(4, field(1, ty))  # TypeProto.sequence_type { elem_type: ty }
    vi = field(1, b"deep") + field(2, ty)  # ValueInfoProto { name, type }
    m = tiny_onnx()
    graph = m.graph.SerializeToString() + field(13, vi)  # GraphProto.value_info
    # ModelProto { ir_version: 8, graph, opset_import }
    deep = varint(1 << 3) + varint(8) + field(7, graph) + field(8, m.opset_import[0].SerializeToString())
    write("onnx/deep_nesting.onnx", deep)
    case("onnx/deep_nesting.onnx", "Malformed", "recursion limit", "a type nested 200 messages deep")


# ── GGUF ────────────────────────────────────────────────────────────────────

T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64 = 4, 5, 6, 7, 8, 9, 10
GG_F32, GG_F16, GG_Q5_0, GG_Q8_0 = 0, 1, 6, 8


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == T_U32:
        return struct.pack("<I", v)
    if t == T_I32:
        return struct.pack("<i", v)
    if t == T_U64:
        return struct.pack("<Q", v)
    if t == T_F32:
        return struct.pack("<f", v)
    if t == T_BOOL:
        return struct.pack("<B", v)
    if t == T_STR:
        return gstr(v)
    raise ValueError(t)


def q8_0(values):
    out = bytearray()
    for blk in values.reshape(-1, 32):
        d = float(np.abs(blk).max()) / 127 or 1.0
        out += np.float16(d).tobytes() + np.round(blk / d).astype(np.int8).tobytes()
    return bytes(out)


def tiny_llama_tensors(rng):
    """Tensors of a 1-layer llama: hidden 32, 2 heads of 16, 1 KV head, ffn 64, vocab 32 (GGUF names, [out, in])."""
    h, hd, kv, ffn, vocab = 32, 16, 1, 64, 32
    shapes = {
        "token_embd.weight": (vocab, h),
        "blk.0.attn_norm.weight": (h,),
        "blk.0.attn_q.weight": (2 * hd, h),
        "blk.0.attn_k.weight": (kv * hd, h),
        "blk.0.attn_v.weight": (kv * hd, h),
        "blk.0.attn_output.weight": (h, 2 * hd),
        "blk.0.ffn_norm.weight": (h,),
        "blk.0.ffn_gate.weight": (ffn, h),
        "blk.0.ffn_up.weight": (ffn, h),
        "blk.0.ffn_down.weight": (h, ffn),
        "output_norm.weight": (h,),
        "output.weight": (vocab, h),
    }
    return {n: (rng.standard_normal(s).astype(np.float32) * 0.1) for n, s in shapes.items()}


def gguf(kvs, tensors, version=3, alignment=32, n_tensors=None, n_kv=None, cut_data=None):
    """kvs: [(key, type, value or raw bytes)]; tensors: [(name, dims (GGUF order), ggml type, data bytes, offset or None)]."""
    out = bytearray(b"GGUF" + struct.pack("<I", version))
    out += struct.pack("<Q", len(tensors) if n_tensors is None else n_tensors)
    out += struct.pack("<Q", len(kvs) if n_kv is None else n_kv)
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", t) + (v if isinstance(v, bytes) else gval(t, v))
    data = bytearray()
    for name, dims, ty, blob, off in tensors:
        if off is None:
            data += b"\0" * (-len(data) % alignment)
            off = len(data)
            data += blob
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<I", ty) + struct.pack("<Q", off)
    out += b"\0" * (-len(out) % alignment)
    out += data
    return bytes(out)


def llama_kvs(**over):
    kv = {
        "general.architecture": (T_STR, "llama"),
        "llama.embedding_length": (T_U32, 32),
        "llama.feed_forward_length": (T_U32, 64),
        "llama.block_count": (T_U32, 1),
        "llama.attention.head_count": (T_U32, 2),
        "llama.attention.head_count_kv": (T_U32, 1),
        "llama.attention.layer_norm_rms_epsilon": (T_F32, 1e-5),
        "llama.rope.freq_base": (T_F32, 10000.0),
    }
    for k, v in over.items():
        k = k.replace("__", ".")
        if v is None:
            kv.pop(k, None)
        else:
            kv[k] = v
    return [(k, t, v) for k, (t, v) in kv.items()]


def llama_tensor_list(ts, q8=("blk.0.ffn_gate.weight",)):
    out = []
    for name, a in ts.items():
        dims = list(reversed(a.shape))
        if name in q8:
            out.append((name, dims, GG_Q8_0, q8_0(a), None))
        elif a.ndim == 2 and name != "output.weight":
            out.append((name, dims, GG_F16, a.astype(np.float16).tobytes(), None))
        else:
            out.append((name, dims, GG_F32, a.tobytes(), None))
    return out


def gguf_cases():
    rng = np.random.default_rng(0)
    ts = tiny_llama_tensors(rng)
    good = gguf(llama_kvs(), llama_tensor_list(ts))
    seed("gguf_parse", "tiny_llama.gguf", good)
    # scripts/fuzz.sh adds the first MiB of the real SmolLM2 GGUF to the working corpus.

    def bad(name, data, kind, needle, note):
        write(f"gguf/{name}.gguf", data)
        case(f"gguf/{name}.gguf", kind, needle, note)

    bad("wrong_magic", b"GGUX" + good[4:], "Malformed", "not a GGUF file", "magic GGUX")
    bad("version_1", good[:4] + struct.pack("<I", 1) + good[8:], "Malformed", "unsupported GGUF version 1",
        "GGUF version 1")
    for cut in (7, 20, 200, len(good) // 2, len(good) - 1):
        kind, needle = ("Malformed", "truncated") if cut < 400 else ("Malformed", "outside the")
        bad(f"truncated_{cut}", good[:cut], kind, needle, f"the tiny model cut to {cut} bytes")
    bad("string_len_lies", gguf([("general.architecture", T_STR, struct.pack("<Q", 1 << 40) + b"llama")], []),
        "Malformed", "string length 1099511627776", "a string claiming 2^40 bytes")
    arr = struct.pack("<I", T_U32) + struct.pack("<Q", 1 << 60)
    bad("array_len_lies", gguf([("tokenizer.ggml.tokens", T_ARR, arr)], []), "Malformed", "array length",
        "an array claiming 2^60 elements")
    arr_fits = struct.pack("<I", T_U64) + struct.pack("<Q", 1 << 20) + b"\0" * 64
    bad("array_does_not_fit", gguf([("a", T_ARR, arr_fits)], []), "Malformed", "array elements",
        "2^20 u64s in 64 bytes")
    bad("kv_count_lies", gguf(llama_kvs(), [], n_kv=1 << 62), "Malformed", "metadata key/value count",
        "2^62 key/value pairs")
    bad("tensor_count_lies", gguf(llama_kvs(), [], n_tensors=1 << 62), "Malformed", "tensor count",
        "2^62 tensors")
    nested = struct.pack("<I", T_ARR) + struct.pack("<Q", 1) + struct.pack("<I", T_ARR) + struct.pack("<Q", 1)
    nested += struct.pack("<I", T_U32) + struct.pack("<Q", 1) + struct.pack("<I", 7)
    bad("array_nesting", gguf([("deep", T_ARR, nested)], []), "Malformed", "array nesting depth",
        "arrays nested 3 deep")
    bad("bad_bool", gguf([("flag", T_BOOL, b"\x02")], []), "Malformed", "invalid bool byte 2", "a bool of 2")
    bad("unknown_value_type", gguf([("x", 99, b"\0" * 8)], []), "Malformed", "unknown metadata value type 99",
        "value type 99")
    bad("duplicate_key", gguf(llama_kvs() + [("llama.block_count", T_U32, 1)], []), "Malformed",
        "duplicate metadata key `llama.block_count`", "a key given twice")
    bad("bad_utf8_key", gguf([(b"\xff\xfe", T_U32, 1)], []), "Malformed", "invalid UTF-8", "a key of bad UTF-8")
    bad("alignment_3", gguf(llama_kvs() + [("general.alignment", T_U32, 3)], []), "Malformed",
        "general.alignment = 3", "alignment 3")
    tl = llama_tensor_list(ts)
    bad("n_dims_100", gguf(llama_kvs(), [("token_embd.weight", [1] * 100, GG_F32, b"", 0)]), "Malformed",
        "n_dims 100", "a tensor of 100 dims")
    bad("dims_overflow", gguf(llama_kvs(), [("token_embd.weight", [1 << 32, 1 << 32, 1 << 32], GG_F32, b"", 0)]),
        "Malformed", "bad shape", "2^96 elements")
    bad("unknown_ggml_type", gguf(llama_kvs(), [("token_embd.weight", [32, 32], 4, b"", 0)]), "Malformed",
        "unknown ggml type id 4", "retired ggml type 4")
    bad("offset_past_eof", gguf(llama_kvs(), [("token_embd.weight", [32, 32], GG_F32, b"", 1 << 20)]),
        "Malformed", "lies outside", "data offset 1 MiB into a 400-byte file")
    bad("misaligned_offset", gguf(llama_kvs(), [("token_embd.weight", [32, 32], GG_F32, b"", 4)]), "Malformed",
        "not a multiple of the alignment", "offset 4 with alignment 32")
    bad("duplicate_tensor", gguf(llama_kvs(), tl[:1] + [(tl[0][0], tl[0][1], GG_F32, b"", 0)]), "Malformed",
        "duplicate tensor name `token_embd.weight`", "a tensor given twice")
    bad("arch_gpt2", gguf(llama_kvs(general__architecture=(T_STR, "gpt2")), tl), "Unsupported",
        "GGUF architecture `gpt2`", "an architecture ligerc does not build")
    bad("missing_key", gguf(llama_kvs(llama__block_count=None), tl), "Malformed",
        "missing metadata key `llama.block_count`", "no block_count")
    bad("key_wrong_type", gguf(llama_kvs(llama__embedding_length=(T_STR, "32")), tl), "Malformed",
        "llama.embedding_length`: expected usize", "embedding_length as a string")
    bad("absurd_width", gguf(llama_kvs(llama__embedding_length=(T_U64, 1 << 40)), tl), "Unsupported",
        "hidden size 1099511627776 is outside", "embedding_length 2^40")
    bad("absurd_head_dim", gguf(llama_kvs(llama__attention__key_length=(T_U64, 1 << 40)), tl), "Unsupported",
        "head_dim size 1099511627776 is outside", "key_length 2^40")
    no_embd = [t for t in tl if t[0] != "token_embd.weight"]
    bad("missing_tensor", gguf(llama_kvs(), no_embd), "Tensor", "tensor `token_embd.weight`: missing",
        "no token embedding")
    ts2 = dict(ts)
    ts2["blk.0.attn_v.weight"] = ts["blk.0.attn_v.weight"][:8]
    bad("shape_mismatch", gguf(llama_kvs(), llama_tensor_list(ts2)), "Tensor",
        "model.layers.0.self_attn.v_proj.weight`: has shape [8, 32], the config implies [16, 32]",
        "v_proj with half its rows")
    q5 = [(n, d, GG_Q5_0, b"\0" * 22 * 64, o) if n == "blk.0.ffn_up.weight" else (n, d, t, b, o)
          for n, d, t, b, o in tl]
    bad("unsupported_quant", gguf(llama_kvs(), q5), "Tensor",
        "tensor `blk.0.ffn_up.weight`: dequantization of ggml type Q5_0",
        "a Q5_0 tensor (a type ligerc does not dequantize)")
    ts3 = dict(ts)
    ts3["output_norm.weight"] = ts["output_norm.weight"].copy()
    ts3["output_norm.weight"][5] = np.inf
    bad("inf_weight", gguf(llama_kvs(), llama_tensor_list(ts3)), "Tensor",
        "tensor `model.norm.weight`: 1 non-finite value (first: inf at flat index 5)", "inf in the final norm")


# ── Hugging Face directories ────────────────────────────────────────────────

TINY_CONFIG = {
    "model_type": "llama", "hidden_act": "silu", "hidden_size": 8, "intermediate_size": 16,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
    "rms_norm_eps": 1e-5, "vocab_size": 16, "max_position_embeddings": 32,
    "rope_theta": 10000.0, "tie_word_embeddings": False,
}


def tiny_hf_tensors(rng):
    h, hd, kv, ffn, vocab = 8, 4, 1, 16, 16
    p = "model.layers.0."
    shapes = {
        "model.embed_tokens.weight": (vocab, h),
        p + "input_layernorm.weight": (h,),
        p + "self_attn.q_proj.weight": (2 * hd, h),
        p + "self_attn.k_proj.weight": (kv * hd, h),
        p + "self_attn.v_proj.weight": (kv * hd, h),
        p + "self_attn.o_proj.weight": (h, 2 * hd),
        p + "post_attention_layernorm.weight": (h,),
        p + "mlp.gate_proj.weight": (ffn, h),
        p + "mlp.up_proj.weight": (ffn, h),
        p + "mlp.down_proj.weight": (h, ffn),
        "model.norm.weight": (h,),
        "lm_head.weight": (vocab, h),
    }
    return {n: (rng.standard_normal(s).astype(np.float32) * 0.1) for n, s in shapes.items()}


def safetensors(ts, header_over=None, dtype_over=None, raw_header=None):
    """ts: name → array. header_over: name → dict merged into that tensor's header entry."""
    header, data = {}, bytearray()
    codes = {np.float32: "F32", np.float16: "F16", np.int64: "I64", np.int8: "I8"}
    for name in sorted(ts):
        a = np.ascontiguousarray(ts[name])
        entry = {"dtype": codes[a.dtype.type], "shape": list(a.shape), "data_offsets": [len(data), len(data) + a.nbytes]}
        entry.update((header_over or {}).get(name, {}))
        header[name] = entry
        data += a.tobytes()
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(data)


def hf_cases():
    rng = np.random.default_rng(1)
    ts = tiny_hf_tensors(rng)
    good_st = safetensors(ts)
    good_cfg = json.dumps(TINY_CONFIG, indent=1)
    seed("safetensors_dir", "tiny.safetensors", good_st)
    seed("hf_config", "tiny_config.json", good_cfg)

    def bad(name, kind, needle, note, cfg=None, st=None, extra=None):
        d = f"hf/{name}"
        write(f"{d}/config.json", cfg if cfg is not None else good_cfg)
        write(f"{d}/model.safetensors", st if st is not None else good_st)
        for rel, data in (extra or {}).items():
            write(f"{d}/{rel}", data)
        case(d, kind, needle, note)

    def cfg(**over):
        c = dict(TINY_CONFIG)
        for k, v in over.items():
            if v is None:
                c.pop(k)
            else:
                c[k] = v
        return json.dumps(c, indent=1)

    bad("config_truncated", "Malformed", "invalid JSON", "config.json cut mid-object", cfg=good_cfg[:60])
    bad("config_not_object", "Malformed", "expected a JSON object", "config.json is an array", cfg="[1, 2, 3]")
    bad("config_missing_hidden", "Malformed", "missing required key `hidden_size`", "no hidden_size",
        cfg=cfg(hidden_size=None))
    bad("config_hidden_string", "Malformed", "key `hidden_size`: expected a non-negative integer",
        "hidden_size as a string", cfg=cfg(hidden_size="8"))
    bad("config_negative_layers", "Malformed", "key `num_hidden_layers`", "num_hidden_layers -1",
        cfg=cfg(num_hidden_layers=-1))
    bad("config_zero_heads", "Malformed", "key `num_attention_heads`: must be at least 1", "0 heads",
        cfg=cfg(num_attention_heads=0))
    bad("config_kv_not_divisor", "Malformed", "key `num_key_value_heads`: 3 does not divide", "3 KV heads for 2",
        cfg=cfg(num_key_value_heads=3))
    bad("config_odd_head_dim", "Malformed", "key `head_dim`: 5 must be even", "head_dim 5",
        cfg=cfg(head_dim=5))
    bad("config_zero_eps", "Malformed", "key `rms_norm_eps`: must be a finite number > 0", "rms_norm_eps 0",
        cfg=cfg(rms_norm_eps=0))
    bad("config_gelu", "Malformed", "activation \\\"gelu\\\"".replace("\\", ""), "hidden_act gelu",
        cfg=cfg(hidden_act="gelu"))
    bad("config_absurd_hidden", "Unsupported", "hidden size 1099511627776 is outside", "hidden_size 2^40",
        cfg=cfg(hidden_size=1 << 40, head_dim=4))
    bad("config_absurd_head_dim", "Unsupported", "head_dim size 1099511627776 is outside", "head_dim 2^40",
        cfg=cfg(head_dim=1 << 40))
    bad("config_absurd_layers", "Unsupported", "4294967296 layers is outside", "2^32 layers",
        cfg=cfg(num_hidden_layers=1 << 32))
    bad("config_deep_nesting", "Malformed", "recursion limit", "arrays nested 500 deep",
        cfg='{"model_type": "llama", "x": ' + "[" * 500 + "]" * 500 + "}")

    st = good_st
    bad("st_header_len_lies", "Malformed", "safetensors", "header length 2^40",
        st=struct.pack("<Q", 1 << 40) + st[8:])
    bad("st_header_not_json", "Malformed", "safetensors", "header of bad JSON",
        st=safetensors(ts, raw_header=b"{not json at all"))
    bad("st_truncated", "Malformed", "safetensors", "data cut by 100 bytes", st=st[:-100])
    bad("st_truncated_header", "Malformed", "safetensors", "file cut inside the header", st=st[:40])
    bad("st_offsets_lie", "Malformed", "safetensors", "embed offsets past the data",
        st=safetensors(ts, {"model.embed_tokens.weight": {"data_offsets": [0, 1 << 30]}}))
    bad("st_shape_overflow", "Malformed", "safetensors", "shape [2^40, 2^40]",
        st=safetensors(ts, {"model.norm.weight": {"shape": [1 << 40, 1 << 40]}}))
    z = dict(ts)
    z["model.extra_empty"] = np.zeros((0,), dtype=np.float32)
    bad("st_zero_hides_huge", "Tensor", "tensor `model.extra_empty`: 3 dims declare more than",
        "an empty tensor of shape [0, 2^40, 2^40]",
        st=safetensors(z, {"model.extra_empty": {"shape": [0, 1 << 40, 1 << 40]}}))
    i8 = dict(ts)
    i8["model.norm.weight"] = (ts["model.norm.weight"] * 10).astype(np.int8)
    bad("st_i8_dtype", "Tensor", "tensor `model.norm.weight`: unsupported dtype I8", "an int8 tensor",
        st=safetensors(i8))
    i64 = dict(ts)
    i64["model.norm.weight"] = np.ones(8, dtype=np.int64)
    bad("st_int_weight", "Tensor", "has dtype i64, expected a float type", "an int64 norm weight",
        st=safetensors(i64))
    sm = dict(ts)
    sm["model.layers.0.self_attn.q_proj.weight"] = ts["model.layers.0.self_attn.q_proj.weight"][:, :4].copy()
    bad("st_shape_mismatch", "Tensor", "q_proj.weight`: has shape [8, 4], the config implies [8, 8]",
        "q_proj with half its columns", st=safetensors(sm))
    miss = {k: v for k, v in ts.items() if k != "lm_head.weight"}
    bad("st_missing_tensor", "Tensor", "tensor `lm_head.weight`: missing from the checkpoint", "no lm_head",
        st=safetensors(miss))
    ext = dict(ts)
    ext["model.layers.0.self_attn.q_proj.bias"] = np.zeros(8, dtype=np.float32)
    bad("st_unused_tensor", "Unsupported", "model.layers.0.self_attn.q_proj.bias", "a bias the config lacks",
        st=safetensors(ext))
    nanw = dict(ts)
    nanw["model.layers.0.mlp.up_proj.weight"] = ts["model.layers.0.mlp.up_proj.weight"].copy()
    nanw["model.layers.0.mlp.up_proj.weight"][3, 3] = np.nan
    nanw["model.layers.0.mlp.up_proj.weight"][9, 0] = np.nan
    bad("st_nan_weight", "Tensor", "tensor `model.layers.0.mlp.up_proj.weight`: 2 non-finite values",
        "two NaNs in up_proj", st=safetensors(nanw))
    idx = json.dumps({"weight_map": {"model.norm.weight": "../model.safetensors"}})
    bad("index_escapes_dir", "Malformed", "must be a plain file name", "a shard outside the directory",
        extra={"model.safetensors.index.json": idx})
    idx = json.dumps({"weight_map": {"model.norm.weight": "model-00002.safetensors"}})
    bad("index_missing_shard", "Io", "model-00002.safetensors", "an index naming a shard that is not there",
        extra={"model.safetensors.index.json": idx})


# ── text IR ─────────────────────────────────────────────────────────────────

IR_OK = """graph "tiny" opset 18 {
  %0 = input "x" : f32[batch, 4]
  %1 = const [1.0, 2.0, 3.0, 4.0] : f32[4]
  %2 = onnx.Add(%0, %1) : f32[batch, 4] loc("add")
  %3 = onnx.Split(%2) {axis = -1, num_outputs = 2} : f32[batch, 2], f32[batch, 2]
  %4 = onnx.Mul(%3#0, %3#1) : f32[batch, 2]
  %5 = const [1.0, 0.5] : f32[2]
  %6 = RmsNorm(%4, %5) {eps = 1e-05} : f32[batch, 2]
  output "y" = %6
}
"""


def ir_cases():
    seed("text_ir", "tiny.ir", IR_OK)

    def bad(name, text, needle, note):
        write(f"ir/{name}.ir", text)
        case(f"ir/{name}.ir", "Parse", needle, note)

    bad("garbage", "\x00\x01 binary $$$ garbage", "unexpected character", "not text IR at all")
    bad("empty", "", "expected `graph`", "an empty file")
    bad("unterminated_string", 'graph "tiny {\n}\n', "unterminated string", "a string without its quote")
    bad("bad_escape", 'graph "a\\qb" {\n}\n', "bad escape", "\\q in a string")
    bad("use_before_def", IR_OK.replace("onnx.Add(%0, %1)", "onnx.Add(%0, %9)"), "`%9` is used before it is defined",
        "an operand defined nowhere")
    bad("cycle_through_self", IR_OK.replace("onnx.Add(%0, %1)", "onnx.Add(%0, %2)"),
        "`%2` is used before it is defined", "a node reading itself")
    bad("defined_twice", IR_OK.replace("%4 = onnx.Mul", "%3 = onnx.Mul"), "`%3` is defined twice",
        "two nodes named %3")
    bad("unknown_op", IR_OK.replace("onnx.Mul", "onnx.Frobnicate"), "unknown op `Frobnicate`", "an op the IR lacks")
    bad("bad_dtype", IR_OK.replace("f32[batch, 4]\n  %1", "f31[batch, 4]\n  %1"), "unknown dtype `f31`",
        "dtype f31")
    bad("port_out_of_range", IR_OK.replace("%3#1", "%3#7"), "has 2 results, no #7", "result #7 of a 2-result node")
    bad("const_size_mismatch", IR_OK.replace("const [1.0, 2.0, 3.0, 4.0] : f32[4]", "const [1.0, 2.0] : f32[4]"),
        "needs 16 bytes, got 8", "2 values for 4 elements")
    bad("const_absurd_dims", IR_OK.replace("const [1.0, 2.0, 3.0, 4.0] : f32[4]",
                                           "const [] : f32[4294967296, 4294967296, 4294967296]"),
        "declares more than 1099511627776 elements", "2^96 elements declared, none given")
    bad("const_zero_hides_huge", IR_OK.replace("const [1.0, 2.0, 3.0, 4.0] : f32[4]",
                                               "const [] : f32[0, 4294967296, 4294967296]"),
        "declares more than 1099511627776 elements", "an empty const beside two 2^32 dims")
    bad("bad_attr", IR_OK.replace("eps = 1e-05", "eps = \"small\""), "attribute `eps`: expected a float",
        "eps as a string")
    bad("trailing_text", IR_OK + "graph \"again\" {}\n", "text after the end of the graph", "two graphs")
    bad("huge_dim", IR_OK.replace("f32[batch, 4]\n  %1", "f32[batch, 99999999999999999999999]\n  %1"),
        "bad dim `99999999999999999999999`", "a dim past u64")


def main():
    for d in (OUT, SEEDS):
        if d.exists():
            shutil.rmtree(d)
    onnx_cases()
    gguf_cases()
    hf_cases()
    ir_cases()
    (OUT / "MANIFEST.json").write_text(json.dumps(CASES, indent=1) + "\n")
    print(f"{len(CASES)} malformed cases in {OUT.relative_to(ROOT)}, seeds in {SEEDS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
