//! The prompt graph, with the key order of the request: serde_json's maps sort their keys, and
//! ComfyUI's execution order and cached-node lists follow the order the client sent.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// The keys of a JSON object in document order.
struct OrderedKeys<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedKeys<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OrderedVisitor<T> {
            type Value = OrderedKeys<T>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(OrderedKeys(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

#[derive(Deserialize)]
struct BodyKeys {
    #[serde(default)]
    prompt: Option<OrderedKeys<NodeKeys>>,
}

#[derive(Deserialize)]
struct NodeKeys {
    #[serde(default)]
    inputs: Option<OrderedKeys<IgnoredAny>>,
}

/// Node ids and each node's input names in the order of the request body.
#[derive(Default)]
pub(super) struct KeyOrder {
    nodes: Vec<String>,
    inputs: HashMap<String, Vec<String>>,
}

impl KeyOrder {
    /// The order in `body`; empty (sorted order is used) when the body is not shaped for it.
    pub(super) fn of(body: &[u8]) -> KeyOrder {
        let Ok(BodyKeys {
            prompt: Some(OrderedKeys(nodes)),
        }) = serde_json::from_slice::<BodyKeys>(body)
        else {
            return KeyOrder::default();
        };
        let mut order = KeyOrder::default();
        for (id, node) in nodes {
            if let Some(OrderedKeys(inputs)) = node.inputs {
                order.inputs.insert(
                    id.clone(),
                    inputs.into_iter().map(|(name, _)| name).collect(),
                );
            }
            order.nodes.push(id);
        }
        order
    }
}

/// Orders `keys` by `order` (names missing from it keep their place at the end).
fn ordered<'a>(keys: impl Iterator<Item = &'a String>, order: Option<&Vec<String>>) -> Vec<String> {
    let mut keys: Vec<String> = keys.cloned().collect();
    if let Some(order) = order {
        keys.sort_by_key(|key| order.iter().position(|o| o == key).unwrap_or(usize::MAX));
    }
    keys
}

#[derive(Clone, Debug)]
pub(super) struct Graph {
    pub(super) nodes: Vec<GraphNode>,
}

#[derive(Clone, Debug)]
pub(super) struct GraphNode {
    pub(super) id: String,
    /// `class_type` as sent; `None` when missing (or the node is not an object).
    pub(super) class_type: Option<Value>,
    /// `inputs` in request order; `None` when missing or not an object.
    pub(super) inputs: Option<Vec<(String, Value)>>,
}

impl GraphNode {
    pub(super) fn class(&self) -> &str {
        self.class_type
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub(super) fn input(&self, name: &str) -> Option<&Value> {
        self.inputs
            .as_ref()?
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

impl Graph {
    /// `None` when the prompt is not a JSON object.
    pub(super) fn build(prompt: &Value, order: &KeyOrder) -> Option<Graph> {
        let prompt = prompt.as_object()?;
        let ids = ordered(prompt.keys(), Some(&order.nodes));
        let nodes = ids
            .into_iter()
            .map(|id| {
                let node = &prompt[&id];
                let inputs = node.get("inputs").and_then(Value::as_object).map(|inputs| {
                    ordered(inputs.keys(), order.inputs.get(&id))
                        .into_iter()
                        .map(|name| {
                            let value = inputs[&name].clone();
                            (name, value)
                        })
                        .collect()
                });
                GraphNode {
                    class_type: node.get("class_type").cloned(),
                    inputs,
                    id,
                }
            })
            .collect();
        Some(Graph { nodes })
    }

    pub(super) fn node(&self, id: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|node| node.id == id)
    }
}

/// ComfyUI's `is_link`: `[node_id: str, output_index: int]`.
pub(super) fn link(value: &Value) -> Option<(&str, usize)> {
    match value.as_array()?.as_slice() {
        [Value::String(from), Value::Number(slot)] => Some((from, slot.as_u64()? as usize)),
        _ => None,
    }
}
