//! Python semantics, for values and messages that must read like ComfyUI's: `repr` and `str`,
//! truthiness, comparisons and indexing as Python does them, `int()` and `float()`, and the
//! exceptions they raise.

use serde_json::{Value, json};

/// A Python exception raised while validating: `(type, str(exception))`.
pub(super) struct PyException {
    pub(super) kind: &'static str,
    pub(super) message: String,
}

impl PyException {
    pub(super) fn key_error(key: &Value) -> Self {
        Self {
            kind: "KeyError",
            message: py_repr(key),
        }
    }
}

/// `repr(float)`: `1.0`, `0.1`, `1e+20`.
fn py_float(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        let text = format!("{value}");
        if value.abs() >= 1e16 {
            format!("{value:e}").replace('e', "e+")
        } else {
            text
        }
    }
}

fn py_number(number: &serde_json::Number) -> String {
    match number.as_f64() {
        Some(float) if number.is_f64() => py_float(float),
        _ => number.to_string(),
    }
}

/// `repr(value)` of the Python object `value` decodes to.
pub(super) fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(number) => py_number(number),
        Value::String(text) => {
            let quote = if text.contains('\'') && !text.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::with_capacity(text.len() + 2);
            out.push(quote);
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{}: {}", py_repr(&json!(key)), py_repr(value)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// `str(value)`.
pub(super) fn py_str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => py_repr(other),
    }
}

pub(super) fn py_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A number (bools are ints in Python) as an exact integer when it is one.
pub(super) fn py_int(value: &Value) -> Option<i128> {
    match value {
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

pub(super) fn py_as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// `a < b` for numbers; `None` when Python would raise (or the values are not numbers).
pub(super) fn py_lt(a: &Value, b: &Value) -> Option<bool> {
    match (py_int(a), py_int(b)) {
        (Some(a), Some(b)) => Some(a < b),
        _ => Some(py_as_f64(a)? < py_as_f64(b)?),
    }
}

/// `a == b` in Python (`1 == 1.0 == True`).
pub(super) fn py_eq(a: &Value, b: &Value) -> bool {
    match (py_as_f64(a), py_as_f64(b)) {
        (Some(x), Some(y)) => match (py_int(a), py_int(b)) {
            (Some(i), Some(j)) => i == j,
            _ => x == y,
        },
        _ => a == b,
    }
}

/// `sequence[index]`.
pub(super) fn py_index<'v>(sequence: &'v [Value], index: &Value) -> Result<&'v Value, PyException> {
    let Some(index) = py_int(index) else {
        return Err(PyException {
            kind: "TypeError",
            message: format!(
                "tuple indices must be integers or slices, not {}",
                py_type(index)
            ),
        });
    };
    let len = sequence.len() as i128;
    let at = if index < 0 { index + len } else { index };
    if at < 0 || at >= len {
        return Err(PyException {
            kind: "IndexError",
            message: "tuple index out of range".to_owned(),
        });
    }
    Ok(&sequence[at as usize])
}

fn py_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `int(value)`, or the message of the exception it raises.
pub(super) fn to_int(value: &Value) -> Result<Value, String> {
    match value {
        Value::Bool(b) => Ok(json!(i64::from(*b))),
        Value::Number(n) if n.is_f64() => {
            let float = n.as_f64().unwrap_or_default();
            Ok(json!(float.trunc() as i64))
        }
        Value::Number(n) => Ok(Value::Number(n.clone())),
        Value::String(text) => {
            let trimmed = text.trim();
            let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
            let parsed = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                trimmed.parse::<i64>().ok().map(|i| json!(i)).or_else(|| {
                    trimmed
                        .trim_start_matches('+')
                        .parse::<u64>()
                        .ok()
                        .map(|u| json!(u))
                })
            } else {
                None
            };
            parsed.ok_or_else(|| {
                format!("invalid literal for int() with base 10: {}", py_repr(value))
            })
        }
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            py_type(other)
        )),
    }
}

/// `float(value)`, or the message of the exception it raises.
pub(super) fn to_float(value: &Value) -> Result<f64, String> {
    match value {
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        Value::Number(n) => Ok(n.as_f64().unwrap_or_default()),
        Value::String(text) => text
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("could not convert string to float: {}", py_repr(value))),
        other => Err(format!(
            "float() argument must be a string or a real number, not '{}'",
            py_type(other)
        )),
    }
}
