//! The marketplace: app templates (`marketplace/templates/*.toml`, built in; more from catalogs
//! by URL), each a small file — its containers (image, env, ports, volumes, restart policy), the
//! inputs the installer asks for (a `secret` one goes to the vault, and reaches the container
//! only as a `secret:` reference), a check, resource hints and a documentation link. A template
//! installs as an app of the Deploy Center ([`Template::render`]), so an installed app has
//! releases and rollback like any other.
//!
//! Placeholders: `{NAME}` anywhere in an image, a command, an env value, a port, a volume or the
//! check stands for input `NAME`; a secret input only as a whole env value. `{node_host}` in the
//! check is left for the deployer (each node's own address).

use std::collections::BTreeMap;

use events::container::ContainerSpec;
use events::deploy::{AppContainer, AppDefined, AppHealth};
use serde::{Deserialize, Serialize};

pub use events::deploy::NODE_HOST;

#[derive(rust_embed::Embed)]
#[folder = "templates/"]
struct Builtin;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub title: String,
    pub description: String,
    /// Where to read about it (https).
    pub docs: String,
    pub category: String,
    /// The template's own version (an upgrade installs a newer one over an app).
    pub version: u32,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub health: AppHealth,
    #[serde(default)]
    pub inputs: Vec<Input>,
    pub containers: Vec<AppContainer>,
}

/// What it needs of a node (hints for choosing one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    pub memory_mib: u64,
    pub vram_mib: u64,
}

/// A value the installer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// `[A-Z0-9_]`, as it appears in placeholders.
    pub name: String,
    pub prompt: String,
    /// Used when the installer gives none; without one the input is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Kept in the vault (as `<app>-<name>`), never in the app's definition or the log.
    #[serde(default)]
    pub secret: bool,
}

/// One template with its id and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: String,
    /// `builtin`, or the catalog's URL.
    pub catalog: String,
    #[serde(flatten)]
    pub template: Template,
}

/// A catalog, or a template in one, that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    pub catalog: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub error: String,
}

/// The built-in templates (all valid: a test proves it) and any that are not, by id.
pub fn builtin() -> (Vec<Listed>, Vec<Broken>) {
    let mut listed = Vec::new();
    let mut broken = Vec::new();
    let mut files: Vec<String> = Builtin::iter().map(|f| f.to_string()).collect();
    files.sort();
    for file in files {
        let Some(id) = file.strip_suffix(".toml") else {
            continue;
        };
        let text = Builtin::get(&file)
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
            .unwrap_or_default();
        match parse_toml(id, &text) {
            Ok(template) => listed.push(Listed {
                id: id.to_owned(),
                catalog: "builtin".to_owned(),
                template,
            }),
            Err(error) => broken.push(Broken {
                catalog: "builtin".to_owned(),
                template: Some(id.to_owned()),
                error,
            }),
        }
    }
    (listed, broken)
}

/// A template from TOML text, checked.
pub fn parse_toml(id: &str, text: &str) -> Result<Template, String> {
    let template: Template = toml::from_str(text).map_err(|err| err.message().to_owned())?;
    check(id, &template)?;
    Ok(template)
}

/// A catalog by URL: JSON `{"templates": {"<id>": <template>, …}}`. Its good templates, and
/// what is wrong with the others (or with the whole catalog).
pub fn parse_catalog(url: &str, body: &[u8]) -> (Vec<Listed>, Vec<Broken>) {
    let broken = |template: Option<String>, error: String| Broken {
        catalog: url.to_owned(),
        template,
        error,
    };
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => return (Vec::new(), vec![broken(None, format!("not JSON: {err}"))]),
    };
    let Some(templates) = value.get("templates").and_then(|t| t.as_object()) else {
        return (
            Vec::new(),
            vec![broken(None, "no \"templates\" object".to_owned())],
        );
    };
    let mut listed = Vec::new();
    let mut bad = Vec::new();
    for (id, raw) in templates {
        let parsed = serde_json::from_value::<Template>(raw.clone())
            .map_err(|err| err.to_string())
            .and_then(|template| check(id, &template).map(|()| template));
        match parsed {
            Ok(template) => listed.push(Listed {
                id: id.clone(),
                catalog: url.to_owned(),
                template,
            }),
            Err(error) => bad.push(broken(Some(id.clone()), error)),
        }
    }
    (listed, bad)
}

/// Every problem of a template, as one message.
fn check(id: &str, template: &Template) -> Result<(), String> {
    let mut problems = Vec::new();
    if events::deploy::validate_app_name(id).is_err() {
        problems.push(format!(
            "its id {id:?} must be 1-40 of a-z, 0-9 and '-', starting with a letter"
        ));
    }
    if template.title.trim().is_empty() || template.description.trim().is_empty() {
        problems.push("title and description must not be empty".to_owned());
    }
    if !template.docs.starts_with("https://") {
        problems.push(format!(
            "docs must be an https:// link, got {:?}",
            template.docs
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for input in &template.inputs {
        let valid = !input.name.is_empty()
            && input
                .name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            problems.push(format!("input {:?} must be A-Z, 0-9 and '_'", input.name));
        }
        if !names.insert(input.name.as_str()) {
            problems.push(format!("input {} is declared twice", input.name));
        }
        if input.secret && input.default.is_some() {
            problems.push(format!("secret input {} cannot have a default", input.name));
        }
    }
    // Every placeholder names an input (or the node's host, in the check); a secret one stands
    // alone as an env value.
    let known = |text: &str, allow_node: bool, problems: &mut Vec<String>| {
        for name in placeholders(text) {
            if allow_node && name == "node_host" {
                continue;
            }
            match template.inputs.iter().find(|i| i.name == name) {
                None => problems.push(format!("{{{name}}} in {text:?} names no input")),
                Some(input) if input.secret => problems.push(format!(
                    "secret input {name} may only be a whole env value, not in {text:?}"
                )),
                Some(_) => {}
            }
        }
    };
    for container in &template.containers {
        let spec = &container.spec;
        known(&spec.image, false, &mut problems);
        for text in spec.command.iter().chain(&spec.ports).chain(&spec.volumes) {
            known(text, false, &mut problems);
        }
        for value in spec.env.values() {
            let whole_secret = value
                .strip_prefix('{')
                .and_then(|v| v.strip_suffix('}'))
                .is_some_and(|name| template.inputs.iter().any(|i| i.secret && i.name == name));
            if !whole_secret {
                known(value, false, &mut problems);
            }
        }
    }
    for text in template.health.http.iter().chain(&template.health.tcp) {
        known(text, true, &mut problems);
    }
    // What it renders to (with stand-in values) must be a valid app.
    if problems.is_empty() {
        let inputs = template
            .inputs
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    i.default.clone().unwrap_or_else(|| "1".to_owned()),
                )
            })
            .collect();
        match template.render(id, vec!["node".to_owned()], &inputs) {
            Ok(rendered) => {
                let mut app = rendered.app;
                for text in app.health.http.iter_mut().chain(app.health.tcp.iter_mut()) {
                    *text = text.replace(NODE_HOST, "127.0.0.1");
                }
                problems.extend(domain::deploy::validate_app(&app));
            }
            Err(err) => problems.push(err),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The `{NAME}` placeholders in `text`.
fn placeholders(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        found.push(&after[..end]);
        rest = &after[end + 1..];
    }
    found
}

/// A template made into an app: its definition, and the secrets to put in the vault first.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub app: AppDefined,
    /// Vault name → value.
    pub secrets: Vec<(String, String)>,
}

/// The vault secret a template's secret input of app `app` is kept in.
pub fn secret_name(app: &str, input: &str) -> String {
    format!("{app}-{}", input.to_ascii_lowercase().replace('_', "-"))
}

impl Template {
    /// The app `name` on `nodes` with `given` inputs (defaults for the rest). Unknown or
    /// missing inputs are refused by name.
    pub fn render(
        &self,
        name: &str,
        nodes: Vec<String>,
        given: &BTreeMap<String, String>,
    ) -> Result<Rendered, String> {
        if let Some(unknown) = given
            .keys()
            .find(|k| !self.inputs.iter().any(|i| &i.name == *k))
        {
            return Err(format!("this template has no input {unknown}"));
        }
        let mut values: BTreeMap<&str, String> = BTreeMap::new();
        let mut secrets = Vec::new();
        let mut missing = Vec::new();
        for input in &self.inputs {
            let value = given
                .get(&input.name)
                .cloned()
                .or_else(|| input.default.clone());
            match value {
                Some(value) if input.secret => {
                    let vault_name = secret_name(name, &input.name);
                    values.insert(&input.name, format!("secret:{vault_name}"));
                    secrets.push((vault_name, value));
                }
                Some(value) => {
                    values.insert(&input.name, value);
                }
                None => missing.push(input.name.as_str()),
            }
        }
        if !missing.is_empty() {
            return Err(format!("these inputs need a value: {}", missing.join(", ")));
        }
        let fill = |text: &str| {
            let mut out = text.to_owned();
            for (name, value) in &values {
                out = out.replace(&format!("{{{name}}}"), value);
            }
            out
        };
        let containers = self
            .containers
            .iter()
            .map(|c| {
                let spec = &c.spec;
                AppContainer {
                    name: c.name.clone(),
                    spec: ContainerSpec {
                        image: fill(&spec.image),
                        command: spec.command.iter().map(|s| fill(s)).collect(),
                        env: spec.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
                        ports: spec.ports.iter().map(|s| fill(s)).collect(),
                        volumes: spec.volumes.iter().map(|s| fill(s)).collect(),
                        ..spec.clone()
                    },
                }
            })
            .collect();
        let health = AppHealth {
            http: self.health.http.as_deref().map(fill),
            tcp: self.health.tcp.as_deref().map(fill),
            timeout_secs: self.health.timeout_secs,
        };
        Ok(Rendered {
            app: AppDefined {
                git: None,
                containers,
                health,
                nodes,
                labels: BTreeMap::new(),
            },
            secrets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_template_is_valid_and_the_required_ones_are_there() {
        let (listed, broken) = builtin();
        assert!(broken.is_empty(), "{broken:#?}");
        let ids: Vec<&str> = listed.iter().map(|l| l.id.as_str()).collect();
        for wanted in [
            "comfyui",
            "home-assistant",
            "ollama",
            "plex",
            "static-web",
            "uptime-kuma",
        ] {
            assert!(ids.contains(&wanted), "{wanted} missing from {ids:?}");
        }
    }

    #[test]
    fn inputs_fill_placeholders_and_secrets_go_to_the_vault() {
        let (listed, _) = builtin();
        let plex = &listed.iter().find(|l| l.id == "plex").unwrap().template;
        let missing = plex.render("plex", vec!["nas".into()], &BTreeMap::new());
        assert_eq!(
            missing.unwrap_err(),
            "these inputs need a value: PLEX_CLAIM"
        );
        let given: BTreeMap<String, String> = [
            ("PLEX_CLAIM".to_owned(), "claim-abc".to_owned()),
            ("MEDIA_DIR".to_owned(), "/tank/media".to_owned()),
        ]
        .into_iter()
        .collect();
        let rendered = plex.render("plex", vec!["nas".into()], &given).unwrap();
        let spec = &rendered.app.containers[0].spec;
        assert_eq!(spec.env["PLEX_CLAIM"], "secret:plex-plex-claim");
        assert_eq!(spec.env["TZ"], "Etc/UTC");
        assert!(spec.volumes.contains(&"/tank/media:/data:ro".to_owned()));
        assert_eq!(
            rendered.secrets,
            [("plex-plex-claim".to_owned(), "claim-abc".to_owned())]
        );
        assert!(!format!("{:?}", rendered.app).contains("claim-abc"));
        let unknown: BTreeMap<String, String> =
            [("NOPE".to_owned(), "1".to_owned())].into_iter().collect();
        assert_eq!(
            plex.render("plex", vec![], &unknown).unwrap_err(),
            "this template has no input NOPE"
        );
    }

    #[test]
    fn a_catalog_reports_its_broken_templates_by_name_and_keeps_the_rest() {
        let (listed, _) = builtin();
        let good = serde_json::to_value(&listed[0].template).unwrap();
        let mut leaky = good.clone();
        leaky["inputs"] = serde_json::json!([{"name": "TOKEN", "prompt": "t", "secret": true}]);
        leaky["containers"][0]["spec"]["image"] = serde_json::json!("img:{TOKEN}");
        let body = serde_json::json!({"templates": {
            "good-one": good,
            "no-image": {"title": "x"},
            "leaky": leaky,
        }});
        let (ok, bad) = parse_catalog("http://catalog", body.to_string().as_bytes());
        assert_eq!(
            ok.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
            ["good-one"]
        );
        let names: Vec<_> = bad.iter().map(|b| b.template.clone().unwrap()).collect();
        assert_eq!(names, ["leaky", "no-image"]);
        assert!(
            bad[0]
                .error
                .contains("secret input TOKEN may only be a whole env value"),
            "{bad:?}"
        );
        let (ok, bad) = parse_catalog("http://catalog", b"<html>");
        assert!(ok.is_empty());
        assert!(bad[0].error.starts_with("not JSON"));
    }
}
