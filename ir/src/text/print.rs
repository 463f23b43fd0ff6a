//! Graph → text.

use std::collections::HashMap;
use std::fmt::Write;

use crate::{Attr, DType, Dim, Graph, IrError, Op, TensorData, TensorType, ValueRef};

/// Prints `graph` in the text form. Fails only on a cyclic graph.
pub fn print(graph: &Graph) -> Result<String, IrError> {
    let order = graph.topo_order()?;
    let number: HashMap<_, _> = order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let val = |v: ValueRef| -> String {
        let n = number
            .get(&v.node)
            .map_or_else(|| "?".to_string(), |n| n.to_string());
        let multi = graph.node(v.node).is_some_and(|n| n.outputs.len() > 1);
        if multi {
            format!("%{n}#{}", v.port)
        } else {
            format!("%{n}")
        }
    };
    let mut out = String::new();
    match graph.opset {
        Some(v) => {
            let _ = writeln!(out, "graph {:?} opset {v} {{", graph.name);
        }
        None => {
            let _ = writeln!(out, "graph {:?} {{", graph.name);
        }
    }
    for (i, &id) in order.iter().enumerate() {
        let node = graph.try_node(id)?;
        let _ = write!(out, "  %{i} = ");
        match &node.op {
            Op::Input { name } => {
                let _ = write!(out, "input {name:?}");
            }
            Op::Weight { name } => {
                let _ = write!(out, "weight {name:?}");
            }
            Op::Const(t) => {
                out.push_str("const ");
                write_data(&mut out, t);
            }
            op => {
                out.push_str(&op.mnemonic());
                let operands: Vec<String> = graph.operands(id).into_iter().map(val).collect();
                let _ = write!(out, "({})", operands.join(", "));
                let attrs = op.attrs();
                if !attrs.is_empty() {
                    let parts: Vec<String> = attrs
                        .iter()
                        .map(|(k, v)| format!("{} = {}", word(k), attr_text(v)))
                        .collect();
                    let _ = write!(out, " {{{}}}", parts.join(", "));
                }
            }
        }
        let tys: Vec<String> = node.outputs.iter().map(type_text).collect();
        let _ = write!(out, " : {}", tys.join(", "));
        if let Some(name) = &node.name {
            let _ = write!(out, " loc({name:?})");
        }
        out.push('\n');
    }
    for o in &graph.outputs {
        let _ = writeln!(out, "  output {:?} = {}", o.name, val(o.value));
    }
    out.push_str("}\n");
    Ok(out)
}

/// `s` as the lexer reads a word (`Ident`), or quoted when it would not read
/// back as one (empty, a leading digit, spaces or punctuation, `inf`, `NaN`):
/// attribute keys and dim names come from model files and may be anything.
fn word(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        && s != "inf"
        && s != "NaN";
    if plain {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

/// A value type, `f32[batch, 4]`, with dim names through [`word`].
fn type_text(t: &TensorType) -> String {
    match &t.shape {
        None => format!("{}[*]", t.dtype),
        Some(dims) => {
            let dims: Vec<String> = dims
                .iter()
                .map(|d| match d {
                    Dim::Sym(s) => word(s),
                    d => d.to_string(),
                })
                .collect();
            format!("{}[{}]", t.dtype, dims.join(", "))
        }
    }
}

fn attr_text(a: &Attr) -> String {
    match a {
        Attr::Int(v) => v.to_string(),
        Attr::Float(v) => float_text(*v),
        Attr::Str(s) => format!("{s:?}"),
        Attr::Ints(v) => format!(
            "[{}]",
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Attr::Floats(v) => {
            if v.is_empty() {
                "floats[]".to_string()
            } else {
                format!(
                    "[{}]",
                    v.iter()
                        .map(|x| float_text(*x))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
        Attr::Tensor(t) => {
            let mut s = format!(
                "{}[{}] ",
                t.dtype(),
                t.shape()
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            write_data(&mut s, t);
            s
        }
    }
}

/// `{:?}` of an f64 always has a `.`, an `e`, `inf` or `NaN`, so it never reads back as an integer.
fn float_text(v: f64) -> String {
    format!("{v:?}")
}

fn write_data(out: &mut String, t: &TensorData) {
    let items: Vec<String> = match t.dtype() {
        DType::F64 => t.to_f64_vec().into_iter().map(float_text).collect(),
        d if d.is_float() => t
            .to_f32_vec()
            .into_iter()
            .map(|v| format!("{v:?}"))
            .collect(),
        // Any non-zero byte is true; printed as 1 so that it reads back.
        DType::Bool => t
            .to_i64_vec()
            .into_iter()
            .map(|v| u8::from(v != 0).to_string())
            .collect(),
        _ => t.to_i64_vec().into_iter().map(|v| v.to_string()).collect(),
    };
    let _ = write!(out, "[{}]", items.join(", "));
}

#[cfg(test)]
mod tests {
    use crate::text::{parse, print};
    use crate::{Attr, Attrs, DType, Dim, Graph, OnnxOp, Op, TensorData, TensorType};

    /// Names from model files need not be words; the text form must still read back.
    #[test]
    fn odd_keys_dim_names_and_bool_bytes_round_trip() {
        let mut g = Graph::new("odd");
        let dims = ["batch size", "", "inf", "2x", "seq.len"].map(|s| Dim::Sym(s.into()));
        let x = g.add_input("x", TensorType::new(DType::F32, dims.to_vec()));
        let mut attrs = Attrs::new();
        attrs.insert(" _d".into(), Attr::Int(1));
        attrs.insert("NaN".into(), Attr::Float(f64::NAN));
        let bools = TensorData::new(DType::Bool, vec![3], vec![0u8, 1, 7].into()).unwrap();
        attrs.insert("value".into(), Attr::Tensor(bools));
        let op = Op::Onnx(OnnxOp {
            op_type: "Relu".into(),
            attrs,
        });
        let y = g.add(op, &[x], TensorType::unranked(DType::F32));
        g.add_output("y", y);
        let text = print(&g).unwrap();
        assert!(
            text.contains(r#"f32["batch size", "", "inf", "2x", seq.len]"#),
            "{text}"
        );
        assert!(
            text.contains(r#"{" _d" = 1, "NaN" = NaN, value = bool[3] [0, 1, 1]}"#),
            "{text}"
        );
        assert_eq!(print(&parse(&text).unwrap()).unwrap(), text);
    }
}
