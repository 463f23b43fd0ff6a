//! Text → graph.

use std::collections::HashMap;

use bytes::Bytes;

use super::lexer::{Spanned, Tok, lex};
use crate::{Attr, Attrs, DType, Dim, Graph, IrError, Op, TensorData, TensorType, ValueRef};

/// Parses the text form into a graph. Weight data is not part of the text:
/// the returned graph's weight store is empty.
pub fn parse(src: &str) -> Result<Graph, IrError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        values: HashMap::new(),
    };
    p.graph()
}

struct Parser {
    toks: Vec<Spanned>,
    pos: usize,
    values: HashMap<String, (crate::NodeId, usize)>,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn err(&self, msg: impl Into<String>) -> IrError {
        let (line, col) = match self.toks.get(self.pos).or(self.toks.last()) {
            Some(t) => (t.line, t.col),
            None => (1, 1),
        };
        IrError::Parse {
            line,
            col,
            msg: msg.into(),
        }
    }

    fn next(&mut self) -> Result<Tok, IrError> {
        let t = self
            .toks
            .get(self.pos)
            .map(|t| t.tok.clone())
            .ok_or_else(|| self.err("unexpected end of input"))?;
        self.pos += 1;
        Ok(t)
    }

    fn punct(&mut self, c: char) -> Result<(), IrError> {
        match self.peek() {
            Some(Tok::Punct(p)) if *p == c => {
                self.pos += 1;
                Ok(())
            }
            other => Err(self.err(format!("expected `{c}`, found {}", describe(other)))),
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(p)) if *p == c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), IrError> {
        match self.peek() {
            Some(Tok::Ident(s)) if s == kw => {
                self.pos += 1;
                Ok(())
            }
            other => Err(self.err(format!("expected `{kw}`, found {}", describe(other)))),
        }
    }

    fn string(&mut self) -> Result<String, IrError> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            other => Err(self.err(format!("expected a string, found {}", describe(other)))),
        }
    }

    fn graph(&mut self) -> Result<Graph, IrError> {
        self.keyword("graph")?;
        let name = self.string()?;
        let mut g = Graph::new(&name);
        if matches!(self.peek(), Some(Tok::Ident(s)) if s == "opset") {
            self.pos += 1;
            g.opset = Some(match self.next()? {
                Tok::Num(n) => n
                    .parse()
                    .map_err(|_| self.err(format!("bad opset `{n}`")))?,
                other => {
                    return Err(self.err(format!(
                        "expected an opset number, found {}",
                        describe(Some(&other))
                    )));
                }
            });
        }
        self.punct('{')?;
        loop {
            match self.peek() {
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    break;
                }
                Some(Tok::Ident(s)) if s == "output" => {
                    self.pos += 1;
                    let name = self.string()?;
                    self.punct('=')?;
                    let v = self.value_ref(&g)?;
                    g.add_output(&name, v);
                }
                Some(Tok::Value(..)) => self.node(&mut g)?,
                other => {
                    return Err(self.err(format!(
                        "expected a node, `output` or `}}`, found {}",
                        describe(other)
                    )));
                }
            }
        }
        if self.pos != self.toks.len() {
            return Err(self.err("text after the end of the graph"));
        }
        Ok(g)
    }

    fn value_ref(&mut self, g: &Graph) -> Result<ValueRef, IrError> {
        let at = self.pos;
        match self.next()? {
            Tok::Value(label, port) => {
                let Some(&(node, n_out)) = self.values.get(&label) else {
                    self.pos = at;
                    return Err(self.err(format!("`%{label}` is used before it is defined")));
                };
                let port = port.unwrap_or(0);
                if port as usize >= n_out {
                    self.pos = at;
                    return Err(self.err(format!("`%{label}` has {n_out} results, no #{port}")));
                }
                let _ = g;
                Ok(ValueRef { node, port })
            }
            other => {
                self.pos = at;
                Err(self.err(format!(
                    "expected a value like `%3`, found {}",
                    describe(Some(&other))
                )))
            }
        }
    }

    fn node(&mut self, g: &mut Graph) -> Result<(), IrError> {
        let label = match self.next()? {
            Tok::Value(l, None) => l,
            _ => return Err(self.err("a node definition names one value, without `#`")),
        };
        if self.values.contains_key(&label) {
            return Err(self.err(format!("`%{label}` is defined twice")));
        }
        self.punct('=')?;
        let head_pos = self.pos;
        let head = match self.next()? {
            Tok::Ident(s) => s,
            other => {
                return Err(self.err(format!("expected an op, found {}", describe(Some(&other)))));
            }
        };
        // Literal data of a const node, parsed once its type is known.
        let mut const_data: Option<Vec<String>> = None;
        let (op, operands) = match head.as_str() {
            "input" => (
                Op::Input {
                    name: self.string()?,
                },
                vec![],
            ),
            "weight" => (
                Op::Weight {
                    name: self.string()?,
                },
                vec![],
            ),
            "const" => {
                const_data = Some(self.number_list()?);
                (
                    Op::Input {
                        name: String::new(),
                    },
                    vec![],
                )
            }
            mnemonic => {
                self.punct('(')?;
                let mut operands = Vec::new();
                if !self.eat(')') {
                    loop {
                        operands.push(self.value_ref(g)?);
                        if self.eat(')') {
                            break;
                        }
                        self.punct(',')?;
                    }
                }
                let attrs = if self.eat('{') {
                    self.attrs()?
                } else {
                    Attrs::new()
                };
                let op = Op::from_parts(mnemonic, attrs).map_err(|e| {
                    self.pos = head_pos;
                    self.err(e.to_string())
                })?;
                (op, operands)
            }
        };
        self.punct(':')?;
        let mut types = vec![self.tensor_type()?];
        while self.eat(',') {
            types.push(self.tensor_type()?);
        }
        let op = match const_data {
            Some(items) => {
                let ty = &types[0];
                let dims = ty
                    .fixed_dims()
                    .ok_or_else(|| self.err("a const needs fixed dims"))?;
                Op::Const(self.tensor(ty.dtype, dims, &items)?)
            }
            None => op,
        };
        let mut name = None;
        if matches!(self.peek(), Some(Tok::Ident(s)) if s == "loc") {
            self.pos += 1;
            self.punct('(')?;
            name = Some(self.string()?);
            self.punct(')')?;
        }
        let n_out = types.len();
        let id = g.add_node(op, &operands, types, name);
        self.values.insert(label, (id, n_out));
        Ok(())
    }

    fn tensor_type(&mut self) -> Result<TensorType, IrError> {
        let dtype = match self.next()? {
            Tok::Ident(s) => s.parse::<DType>().map_err(|e| self.err(e))?,
            other => {
                return Err(self.err(format!(
                    "expected a type like f32[2, seq], found {}",
                    describe(Some(&other))
                )));
            }
        };
        self.punct('[')?;
        if self.eat('*') {
            self.punct(']')?;
            return Ok(TensorType::unranked(dtype));
        }
        let mut dims = Vec::new();
        if !self.eat(']') {
            loop {
                dims.push(match self.next()? {
                    Tok::Num(n) => {
                        Dim::Fixed(n.parse().map_err(|_| self.err(format!("bad dim `{n}`")))?)
                    }
                    Tok::Ident(s) | Tok::Str(s) => Dim::Sym(s),
                    Tok::Punct('?') => Dim::Unknown,
                    other => {
                        return Err(
                            self.err(format!("expected a dim, found {}", describe(Some(&other))))
                        );
                    }
                });
                if self.eat(']') {
                    break;
                }
                self.punct(',')?;
            }
        }
        Ok(TensorType::new(dtype, dims))
    }

    /// `[n, n, …]` as raw number texts.
    fn number_list(&mut self) -> Result<Vec<String>, IrError> {
        self.punct('[')?;
        let mut items = Vec::new();
        if self.eat(']') {
            return Ok(items);
        }
        loop {
            match self.next()? {
                Tok::Num(n) => items.push(n),
                other => {
                    return Err(self.err(format!(
                        "expected a number, found {}",
                        describe(Some(&other))
                    )));
                }
            }
            if self.eat(']') {
                return Ok(items);
            }
            self.punct(',')?;
        }
    }

    fn tensor(
        &self,
        dtype: DType,
        dims: Vec<usize>,
        items: &[String],
    ) -> Result<TensorData, IrError> {
        // The importers' bound (`ImportLimits`): zero dims do not hide the others,
        // which code walking strides would still multiply.
        const MAX_ELEMENTS: usize = 1 << 40;
        let declared = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d.max(1)))
            .filter(|&n| n <= MAX_ELEMENTS);
        if declared.is_none() {
            return Err(self.err(format!(
                "{dtype}{dims:?} declares more than {MAX_ELEMENTS} elements"
            )));
        }
        let bad = |s: &str| self.err(format!("`{s}` is not a valid {dtype} value"));
        let mut bytes = Vec::with_capacity(items.len() * dtype.size());
        for s in items {
            match dtype {
                DType::F32 => {
                    bytes.extend_from_slice(&s.parse::<f32>().map_err(|_| bad(s))?.to_le_bytes())
                }
                DType::F64 => {
                    bytes.extend_from_slice(&s.parse::<f64>().map_err(|_| bad(s))?.to_le_bytes())
                }
                DType::F16 => bytes.extend_from_slice(
                    &half::f16::from_f32(s.parse::<f32>().map_err(|_| bad(s))?).to_le_bytes(),
                ),
                DType::BF16 => bytes.extend_from_slice(
                    &half::bf16::from_f32(s.parse::<f32>().map_err(|_| bad(s))?).to_le_bytes(),
                ),
                DType::I64 => {
                    bytes.extend_from_slice(&s.parse::<i64>().map_err(|_| bad(s))?.to_le_bytes())
                }
                DType::I32 => {
                    bytes.extend_from_slice(&s.parse::<i32>().map_err(|_| bad(s))?.to_le_bytes())
                }
                DType::I8 => bytes.push(s.parse::<i8>().map_err(|_| bad(s))? as u8),
                DType::U8 => bytes.push(s.parse::<u8>().map_err(|_| bad(s))?),
                DType::Bool => bytes.push(match s.as_str() {
                    "0" => 0,
                    "1" => 1,
                    _ => return Err(bad(s)),
                }),
            }
        }
        TensorData::new(dtype, dims, Bytes::from(bytes)).map_err(|e| self.err(e.to_string()))
    }

    fn attrs(&mut self) -> Result<Attrs, IrError> {
        let mut attrs = Attrs::new();
        if self.eat('}') {
            return Ok(attrs);
        }
        loop {
            let key = match self.next()? {
                // A key that is not a plain word is printed quoted.
                Tok::Ident(k) | Tok::Str(k) => k,
                other => {
                    return Err(self.err(format!(
                        "expected an attribute name, found {}",
                        describe(Some(&other))
                    )));
                }
            };
            self.punct('=')?;
            let v = self.attr_value()?;
            if attrs.insert(key.clone(), v).is_some() {
                return Err(self.err(format!("attribute `{key}` given twice")));
            }
            if self.eat('}') {
                return Ok(attrs);
            }
            self.punct(',')?;
        }
    }

    fn attr_value(&mut self) -> Result<Attr, IrError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Attr::Str(s))
            }
            Some(Tok::Num(n)) => {
                self.pos += 1;
                number_attr(&n).ok_or_else(|| self.err(format!("bad number `{n}`")))
            }
            Some(Tok::Punct('[')) => {
                let items = self.number_list()?;
                if items.iter().all(|s| s.parse::<i64>().is_ok()) {
                    Ok(Attr::Ints(
                        items.iter().filter_map(|s| s.parse().ok()).collect(),
                    ))
                } else {
                    let v: Option<Vec<f64>> = items.iter().map(|s| s.parse().ok()).collect();
                    v.map(Attr::Floats)
                        .ok_or_else(|| self.err("bad number in list"))
                }
            }
            Some(Tok::Ident(s)) if s == "floats" => {
                self.pos += 1;
                self.punct('[')?;
                self.punct(']')?;
                Ok(Attr::Floats(vec![]))
            }
            Some(Tok::Ident(_)) => {
                let ty = self.tensor_type()?;
                let dims = ty
                    .fixed_dims()
                    .ok_or_else(|| self.err("a tensor attribute needs fixed dims"))?;
                let items = self.number_list()?;
                Ok(Attr::Tensor(self.tensor(ty.dtype, dims, &items)?))
            }
            other => Err(self.err(format!(
                "expected an attribute value, found {}",
                describe(other.as_ref())
            ))),
        }
    }
}

fn number_attr(n: &str) -> Option<Attr> {
    if let Ok(i) = n.parse::<i64>() {
        return Some(Attr::Int(i));
    }
    n.parse::<f64>().ok().map(Attr::Float)
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "end of input".into(),
        Some(Tok::Ident(s)) => format!("`{s}`"),
        Some(Tok::Value(s, _)) => format!("`%{s}`"),
        Some(Tok::Str(s)) => format!("string {s:?}"),
        Some(Tok::Num(n)) => format!("number `{n}`"),
        Some(Tok::Punct(c)) => format!("`{c}`"),
    }
}
