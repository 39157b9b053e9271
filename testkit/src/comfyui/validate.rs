//! Validation: `execution.validate_prompt` and `validate_inputs`, with the same error types,
//! messages and `node_errors` as ComfyUI, and the conversions it writes back into the prompt.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::graph::Graph;
use super::python::{
    PyException, py_eq, py_index, py_lt, py_repr, py_str, py_truthy, to_float, to_int,
};
use super::{MODEL_INPUTS, ServerState};

/// What `POST /prompt` answers for a graph.
pub(super) enum Validation {
    Valid {
        outputs: Vec<String>,
        node_errors: Value,
        /// `(node, input, value)`: what ComfyUI writes back into the prompt while validating.
        conversions: Vec<(String, String, Value)>,
    },
    Invalid {
        error: Value,
        node_errors: Value,
    },
}

const VALIDATION_TRACEBACK: [&str; 2] = [
    "  File \"ComfyUI/execution.py\", line 1052, in validate_prompt\n    <source line>\n",
    "  File \"ComfyUI/execution.py\", line 822, in validate_inputs\n    <source line>\n",
];

/// One input of a class, from its `object_info`.
struct InputSpec<'a> {
    name: &'a str,
    /// `"INT"`, `"IMAGE"`, ... or a combo list.
    kind: &'a Value,
    extra: Value,
    required: bool,
}

fn class_inputs(definition: &Value) -> Vec<InputSpec<'_>> {
    let mut inputs = Vec::new();
    for category in ["required", "optional"] {
        let Some(names) = definition["input_order"][category].as_array() else {
            continue;
        };
        for name in names.iter().filter_map(Value::as_str) {
            let spec = &definition["input"][category][name];
            inputs.push(InputSpec {
                name,
                kind: &spec[0],
                extra: match spec.get(1) {
                    Some(extra @ Value::Object(_)) => extra.clone(),
                    _ => json!({}),
                },
                required: category == "required",
            });
        }
    }
    inputs
}

/// Whether any value passes a combo input: model lists the fake was not given, and ReActor's.
fn unchecked_combo(class: &str, input: &str, known_folders: &HashSet<&str>) -> bool {
    if class == "ReActorFaceSwap" {
        return matches!(input, "swap_model" | "face_restore_model");
    }
    MODEL_INPUTS
        .iter()
        .any(|(c, i, folder)| *c == class && *i == input && !known_folders.contains(folder))
}

/// Inputs a class checks in its own `VALIDATE_INPUTS`, which skips the generic checks.
fn custom_validated(class: &str) -> &'static [&'static str] {
    match class {
        "LoadImage" | "LoadImageMask" => &["image"],
        _ => &[],
    }
}

/// `validate_node_input`.
fn types_match(received: &str, expected: &Value) -> bool {
    let Some(expected) = expected.as_str() else {
        return false;
    };
    if received == expected {
        return true;
    }
    let received: HashSet<&str> = received.split(',').map(str::trim).collect();
    let expected: HashSet<&str> = expected.split(',').map(str::trim).collect();
    received.contains("*") || expected.contains("*") || !received.is_disjoint(&expected)
}

type Checked = (bool, Vec<Value>);

pub(super) struct Validator<'a> {
    graph: &'a Graph,
    info: &'a Map<String, Value>,
    state: &'a ServerState,
    /// `validated`, in insertion order.
    validated: Vec<(String, Checked)>,
    in_progress: Vec<String>,
    conversions: Vec<(String, String, Value)>,
    /// Model folders whose lists are known (the others are not checked).
    known_folders: HashSet<&'a str>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(
        graph: &'a Graph,
        info: &'a Map<String, Value>,
        state: &'a ServerState,
    ) -> Self {
        let mut known_folders: HashSet<&'a str> = ["checkpoints", "upscale_models"].into();
        known_folders.extend(state.models.keys().map(String::as_str));
        Self {
            known_folders,
            graph,
            info,
            state,
            validated: Vec::new(),
            in_progress: Vec::new(),
            conversions: Vec::new(),
        }
    }

    fn validated(&self, id: &str) -> Option<&Checked> {
        self.validated
            .iter()
            .find(|(node, _)| node == id)
            .map(|(_, checked)| checked)
    }

    fn set_validated(&mut self, id: &str, checked: Checked) {
        match self.validated.iter_mut().find(|(node, _)| node == id) {
            Some(entry) => entry.1 = checked,
            None => self.validated.push((id.to_owned(), checked)),
        }
    }

    pub(super) fn validate_prompt(mut self, partial: Option<&[String]>) -> Validation {
        let invalid = |kind: &str, message: String, details: String| Validation::Invalid {
            error: json!({
                "type": kind,
                "message": message,
                "details": details,
                "extra_info": {},
            }),
            node_errors: json!({}),
        };
        let mut outputs = Vec::new();
        for node in &self.graph.nodes {
            let Some(class_type) = &node.class_type else {
                return invalid(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.".to_owned(),
                    format!("Node ID '#{}'", node.id),
                );
            };
            let Some(definition) = class_type.as_str().and_then(|class| self.info.get(class))
            else {
                return invalid(
                    "invalid_prompt",
                    format!(
                        "Cannot execute because node {} does not exist.",
                        py_str(class_type)
                    ),
                    format!("Node ID '#{}'", node.id),
                );
            };
            if definition["output_node"] == true
                && partial.is_none_or(|targets| targets.contains(&node.id))
            {
                outputs.push(node.id.clone());
            }
        }
        if outputs.is_empty() {
            return invalid(
                "prompt_no_outputs",
                "Prompt has no outputs".to_owned(),
                String::new(),
            );
        }

        let mut good_outputs = Vec::new();
        let mut failed: Vec<(String, Vec<Value>)> = Vec::new();
        let mut node_errors = Map::new();
        for output in &outputs {
            let (valid, reasons) = match self.validate_inputs(output) {
                Ok(checked) => checked,
                Err(exception) => {
                    let reasons = vec![json!({
                        "type": "exception_during_validation",
                        "message": "Exception when validating node",
                        "details": exception.message,
                        "extra_info": {
                            "exception_type": exception.kind,
                            "traceback": VALIDATION_TRACEBACK,
                        },
                    })];
                    self.set_validated(output, (false, reasons.clone()));
                    (false, reasons)
                }
            };
            if valid {
                good_outputs.push(output.clone());
                continue;
            }
            failed.push((output.clone(), reasons));
            // As ComfyUI does: every node with errors so far lists this output as dependent.
            for (node_id, (valid, reasons)) in &self.validated {
                if *valid || reasons.is_empty() {
                    continue;
                }
                let entry = node_errors.entry(node_id.clone()).or_insert_with(|| {
                    let class_type = self
                        .graph
                        .node(node_id)
                        .and_then(|node| node.class_type.clone())
                        .unwrap_or(Value::Null);
                    json!({ "errors": reasons, "dependent_outputs": [], "class_type": class_type })
                });
                if let Some(dependent) = entry["dependent_outputs"].as_array_mut() {
                    dependent.push(json!(output));
                }
            }
        }

        if good_outputs.is_empty() {
            let details: Vec<String> = failed
                .iter()
                .flat_map(|(_, reasons)| reasons)
                .map(|reason| {
                    format!(
                        "{}: {}",
                        reason["message"].as_str().unwrap_or_default(),
                        reason["details"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            return Validation::Invalid {
                error: json!({
                    "type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation",
                    "details": details.join("\n"),
                    "extra_info": {},
                }),
                node_errors: Value::Object(node_errors),
            };
        }
        Validation::Valid {
            outputs: good_outputs,
            node_errors: Value::Object(node_errors),
            conversions: self.conversions,
        }
    }

    fn validate_inputs(&mut self, id: &str) -> Result<Checked, PyException> {
        if let Some(checked) = self.validated(id) {
            return Ok(checked.clone());
        }
        if self.in_progress.iter().any(|node| node == id) {
            return Err(PyException {
                kind: "RecursionError",
                message: "maximum recursion depth exceeded".to_owned(),
            });
        }
        self.in_progress.push(id.to_owned());
        let result = self.check_node(id);
        self.in_progress.pop();
        let checked = result?;
        self.set_validated(id, checked.clone());
        Ok(checked)
    }

    fn check_node(&mut self, id: &str) -> Result<Checked, PyException> {
        let graph = self.graph;
        let node = graph
            .node(id)
            .ok_or_else(|| PyException::key_error(&json!(id)))?;
        let inputs = node
            .inputs
            .as_ref()
            .ok_or_else(|| PyException::key_error(&json!("inputs")))?;
        let class = node.class();
        let info = self.info;
        let definition = &info[class];
        let custom = custom_validated(class);
        let mut errors = Vec::new();
        let mut valid = true;

        for spec in class_inputs(definition) {
            let name = spec.name;
            let Some(value) = inputs.iter().find(|(key, _)| key == name).map(|(_, v)| v) else {
                if spec.required {
                    errors.push(json!({
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": name,
                        "extra_info": { "input_name": name },
                    }));
                }
                continue;
            };
            let input_config = json!([spec.kind, spec.extra]);

            if let Value::Array(linked) = value {
                if linked.len() != 2 {
                    errors.push(json!({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": value,
                        },
                    }));
                    continue;
                }
                let from = linked[0]
                    .as_str()
                    .and_then(|from| graph.node(from))
                    .ok_or_else(|| PyException::key_error(&linked[0]))?;
                let returns = info
                    .get(from.class())
                    .and_then(|definition| definition["output"].as_array())
                    .ok_or_else(|| PyException::key_error(&json!("class_type")))?;
                let received = py_index(returns, &linked[1])?;
                let received = received.as_str().unwrap_or_default().to_owned();
                if !types_match(&received, spec.kind) {
                    errors.push(json!({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": format!(
                            "{name}, received_type({received}) mismatch input_type({})",
                            py_str(spec.kind)
                        ),
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_type": received,
                            "linked_node": value,
                        },
                    }));
                    continue;
                }
                match self.validate_inputs(&from.id) {
                    Ok((true, _)) => {}
                    Ok((false, _)) => valid = false,
                    Err(exception) => {
                        valid = false;
                        let reasons = vec![json!({
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": exception.message,
                            "extra_info": {
                                "input_name": name,
                                "input_config": input_config,
                                "exception_message": exception.message,
                                "exception_type": exception.kind,
                                "traceback": VALIDATION_TRACEBACK,
                                "linked_node": value,
                            },
                        })];
                        self.set_validated(&from.id, (false, reasons));
                    }
                }
                continue;
            }

            let mut value = value.clone();
            if let Some(inner) = value.get("__value__") {
                value = inner.clone();
                self.conversions
                    .push((id.to_owned(), name.to_owned(), value.clone()));
            }
            let kind = spec.kind.as_str().unwrap_or_default();
            let converted = match kind {
                "INT" => Some(to_int(&value)),
                "FLOAT" => to_float(&value).map(|f| Some(json!(f))).transpose(),
                "STRING" => Some(Ok(Value::String(py_str(&value)))),
                "BOOLEAN" => Some(Ok(Value::Bool(py_truthy(&value)))),
                _ => None,
            };
            match converted {
                Some(Ok(converted)) => {
                    if converted != value {
                        self.conversions
                            .push((id.to_owned(), name.to_owned(), converted.clone()));
                    }
                    value = converted;
                }
                Some(Err(exception)) => {
                    errors.push(json!({
                        "type": "invalid_input_type",
                        "message": format!("Failed to convert an input value to a {kind} value"),
                        "details": format!("{name}, {}, {exception}", py_str(&value)),
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": value,
                            "exception_message": exception,
                        },
                    }));
                    continue;
                }
                None => {}
            }

            if custom.contains(&name) {
                continue;
            }
            if let Some(min) = spec.extra.get("min")
                && py_lt(&value, min) == Some(true)
            {
                errors.push(json!({
                        "type": "value_smaller_than_min",
                        "message": format!("Value {} smaller than min of {}", py_str(&value), py_str(min)),
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": value,
                        },
                    }));
                continue;
            }
            if let Some(max) = spec.extra.get("max")
                && py_lt(max, &value) == Some(true)
            {
                errors.push(json!({
                        "type": "value_bigger_than_max",
                        "message": format!("Value {} bigger than max of {}", py_str(&value), py_str(max)),
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": value,
                        },
                    }));
                continue;
            }
            if let Value::Array(options) = spec.kind {
                if unchecked_combo(class, name, &self.known_folders)
                    || options.iter().any(|o| py_eq(o, &value))
                {
                    continue;
                }
                let (list, config) = if options.len() > 20 {
                    (format!("(list of length {})", options.len()), Value::Null)
                } else {
                    (py_repr(spec.kind), input_config)
                };
                errors.push(json!({
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": format!("{name}: '{}' not in {list}", py_str(&value)),
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_value": value,
                    },
                }));
            }
        }

        // LoadImage.VALIDATE_INPUTS / LoadImageMask.VALIDATE_INPUTS.
        for &name in custom {
            let Some(Value::String(image)) = node.input(name) else {
                continue;
            };
            if self.state.input_file(image).is_none() {
                errors.push(json!({
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": format!("{name} - Invalid image file: {image}"),
                    "extra_info": { "input_name": name },
                }));
            }
        }

        Ok((errors.is_empty() && valid, errors))
    }
}
