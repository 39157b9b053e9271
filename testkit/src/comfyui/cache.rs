//! The output cache, like ComfyUI's classic one: node outputs by input signature, so that an
//! identical resubmission executes nothing and reports the previous files.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::ServerState;
use super::graph::{Graph, link};
use super::nodes::{Artifact, fnv1a};

/// What a node produced: its outputs, and the `ui` an output node reported.
#[derive(Clone)]
pub(super) struct CacheEntry {
    pub(super) outputs: Vec<Artifact>,
    pub(super) ui: Option<Value>,
}

/// The cache as a prompt starts ([`prepare`]).
pub(super) struct Lookup {
    /// Each node's signature, by node id.
    pub(super) signatures: HashMap<String, String>,
    /// `(node, outputs)` of the nodes found in the cache, in the graph's order.
    pub(super) cached: Vec<(String, Vec<Artifact>)>,
}

/// Keeps what `graph` can use of the cache (the other entries are dropped, as the classic cache
/// does), then looks up each node.
pub(super) fn prepare(state: &mut ServerState, graph: &Graph) -> Lookup {
    let mut signatures = HashMap::new();
    for node in &graph.nodes {
        signature(graph, &node.id, state, &mut signatures, &mut Vec::new());
    }
    let wanted: HashSet<&String> = signatures.values().collect();
    state
        .cache
        .retain(|signature, _| wanted.contains(signature));
    let cached = graph
        .nodes
        .iter()
        .filter_map(|node| {
            let entry = state.cache.get(&signatures[&node.id])?;
            Some((node.id.clone(), entry.outputs.clone()))
        })
        .collect();
    Lookup { signatures, cached }
}

/// A node's cache key, like `CacheKeySetInputSignature`: its class, its `IS_CHANGED` (an input
/// file's content), its literal inputs by name, and the keys of what it links to.
fn signature(
    graph: &Graph,
    id: &str,
    state: &ServerState,
    memo: &mut HashMap<String, String>,
    visiting: &mut Vec<String>,
) -> String {
    if let Some(known) = memo.get(id) {
        return known.clone();
    }
    let Some(node) = graph.node(id) else {
        return format!("missing:{id}");
    };
    if visiting.iter().any(|v| v == id) {
        return format!("cycle:{id}");
    }
    visiting.push(id.to_owned());
    let mut key = json!({ "class_type": node.class_type });
    if matches!(node.class(), "LoadImage" | "LoadImageMask") {
        let file = node
            .input("image")
            .and_then(Value::as_str)
            .and_then(|reference| state.input_file(reference));
        key["is_changed"] = json!(file.map(|bytes| fnv1a(&[&bytes[..]])));
    }
    let mut inputs = Map::new();
    for (name, value) in node.inputs.iter().flatten() {
        let entry = match link(value) {
            Some((from, slot)) => {
                json!([
                    "ANCESTOR",
                    signature(graph, from, state, memo, visiting),
                    slot
                ])
            }
            None => value.clone(),
        };
        inputs.insert(name.clone(), entry);
    }
    key["inputs"] = Value::Object(inputs);
    visiting.pop();
    let key = key.to_string();
    memo.insert(id.to_owned(), key.clone());
    key
}
