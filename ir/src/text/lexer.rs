//! Tokens of the text form, with positions for error messages.

use crate::IrError;

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// A word: op mnemonic, keyword, dim symbol, dtype (`onnx.MatMul`, `batch`).
    Ident(String),
    /// A value reference `%label`, with an optional `#port`.
    Value(String, Option<u32>),
    /// A quoted string, unescaped.
    Str(String),
    /// A number, kept as written so each dtype parses it exactly.
    Num(String),
    /// One punctuation character: `= : , ( ) [ ] { } * ?`.
    Punct(char),
}

/// A token and where it starts.
#[derive(Clone, Debug)]
pub(super) struct Spanned {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

pub(super) fn lex(src: &str) -> Result<Vec<Spanned>, IrError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let err = |line, col, msg: String| IrError::Parse { line, col, msg };
    while let Some(&c) = chars.get(i) {
        let (tl, tc) = (line, col);
        let mut bump = |i: &mut usize, n: usize| {
            for _ in 0..n {
                if chars.get(*i) == Some(&'\n') {
                    line += 1;
                    col = 1;
                } else {
                    col += 1;
                }
                *i += 1;
            }
        };
        if c.is_whitespace() {
            bump(&mut i, 1);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while chars.get(i).is_some_and(|&c| c != '\n') {
                bump(&mut i, 1);
            }
            continue;
        }
        let word_char = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
        let tok = if c == '%' {
            let start = i + 1;
            let mut j = start;
            while chars
                .get(j)
                .is_some_and(|&c| c.is_alphanumeric() || c == '_')
            {
                j += 1;
            }
            if j == start {
                return Err(err(tl, tc, "expected a value name after `%`".into()));
            }
            let label: String = chars[start..j].iter().collect();
            let mut port = None;
            if chars.get(j) == Some(&'#') {
                let ps = j + 1;
                let mut k = ps;
                while chars.get(k).is_some_and(char::is_ascii_digit) {
                    k += 1;
                }
                let digits: String = chars[ps..k].iter().collect();
                port = Some(
                    digits
                        .parse::<u32>()
                        .map_err(|_| err(tl, tc, format!("bad result index `#{digits}`")))?,
                );
                j = k;
            }
            let n = j - i;
            bump(&mut i, n);
            Tok::Value(label, port)
        } else if c == '"' {
            let mut s = String::new();
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None | Some('\n') => return Err(err(tl, tc, "unterminated string".into())),
                    Some('"') => break,
                    Some('\\') => {
                        let (ch, used) = unescape(&chars, j + 1)
                            .ok_or_else(|| err(tl, tc, "bad escape in string".into()))?;
                        s.push(ch);
                        j += 1 + used;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        j += 1;
                    }
                }
            }
            let n = j + 1 - i;
            bump(&mut i, n);
            Tok::Str(s)
        } else if c.is_ascii_digit()
            || (c == '-'
                && chars
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_digit() || *c == 'i'))
        {
            let mut j = i + 1;
            while chars.get(j).is_some_and(|&c| {
                c.is_alphanumeric()
                    || c == '.'
                    || ((c == '-' || c == '+') && matches!(chars.get(j - 1), Some('e') | Some('E')))
            }) {
                j += 1;
            }
            let s: String = chars[i..j].iter().collect();
            let n = j - i;
            bump(&mut i, n);
            Tok::Num(s)
        } else if word_char(c) {
            let mut j = i;
            while chars.get(j).is_some_and(|&c| word_char(c)) {
                j += 1;
            }
            let s: String = chars[i..j].iter().collect();
            let n = j - i;
            bump(&mut i, n);
            if s == "inf" || s == "NaN" {
                Tok::Num(s)
            } else {
                Tok::Ident(s)
            }
        } else if "=:,()[]{}*?".contains(c) {
            bump(&mut i, 1);
            Tok::Punct(c)
        } else {
            return Err(err(tl, tc, format!("unexpected character `{c}`")));
        };
        toks.push(Spanned {
            tok,
            line: tl,
            col: tc,
        });
    }
    Ok(toks)
}

/// Decodes the escape after a backslash at `chars[at]`: the char and how many chars it used.
fn unescape(chars: &[char], at: usize) -> Option<(char, usize)> {
    Some(match chars.get(at)? {
        'n' => ('\n', 1),
        't' => ('\t', 1),
        'r' => ('\r', 1),
        '0' => ('\0', 1),
        '\\' => ('\\', 1),
        '"' => ('"', 1),
        '\'' => ('\'', 1),
        'u' => {
            if chars.get(at + 1) != Some(&'{') {
                return None;
            }
            let close = (at + 2..chars.len().min(at + 10)).find(|&k| chars.get(k) == Some(&'}'))?;
            let hex: String = chars.get(at + 2..close)?.iter().collect();
            (
                char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?,
                close - at + 1,
            )
        }
        _ => return None,
    })
}
