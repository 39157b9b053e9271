//! The `rocm-smi` backend: a JSON object keyed by `"card0"`, `"card1"`, … with string values.

use std::path::Path;

use events::node::GpuInfo;
use events::telemetry::GpuSample;
use serde_json::{Map, Value};

use super::HardwareError;
use super::tool::{TOOL_TIMEOUT, run_tool};

const TOOL: &str = "rocm-smi";

/// What `rocm-smi` is asked for: the brief's fields, plus the unique id (→ `uuid`) and the
/// driver version (under the `"system"` key).
pub(super) const QUERY_ARGS: [&str; 9] = [
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showuse",
    "--showtemp",
    "--showpower",
    "--showuniqueid",
    "--showdriverversion",
    "--json",
];

// Keys are compared case-insensitively: ROCm 6 capitalised "Card Series", "Card Model", ….
const NAME_KEYS: &[&str] = &["Card series", "Card model", "Device Name", "Marketing Name"];
const UUID_KEYS: &[&str] = &["Unique ID"];
const MEMORY_TOTAL_KEYS: &[&str] = &["VRAM Total Memory (B)"];
const MEMORY_USED_KEYS: &[&str] = &["VRAM Total Used Memory (B)"];
const UTILIZATION_KEYS: &[&str] = &["GPU use (%)"];
/// Edge first (what consumer cards report); MI200/MI300 report only junction and memory.
const TEMPERATURE_KEYS: &[&str] = &[
    "Temperature (Sensor edge) (C)",
    "Temperature (Sensor junction) (C)",
];
const POWER_KEYS: &[&str] = &[
    "Average Graphics Package Power (W)",
    "Current Socket Graphics Package Power (W)",
    "Socket Graphics Package Power (W)",
];
const DRIVER_VERSION_KEYS: &[&str] = &["Driver version"];

pub(super) fn query(path: &Path) -> Result<Vec<(GpuInfo, GpuSample)>, HardwareError> {
    parse_rocm_smi_json(&run_tool(path, &QUERY_ARGS, TOOL_TIMEOUT)?)
}

/// Parses the output of `rocm-smi --showproductname --showmeminfo vram --showuse --showtemp
/// --showpower --json` (extra `--show…` flags are fine).
///
/// Every `"cardN"` key is a GPU with index N; other keys (`"system"`) are skipped, except that
/// `system["Driver version"]` becomes every GPU's driver version. Missing keys and `"N/A"` values
/// are tolerated (unknown, or 0 for memory). Text before the JSON object (warnings) is skipped;
/// output that holds no JSON object, or a card value that is not a number where one is expected,
/// is an error naming the offending line.
pub fn parse_rocm_smi_json(output: &str) -> Result<Vec<(GpuInfo, GpuSample)>, HardwareError> {
    let start = output.find('{').ok_or_else(|| HardwareError::Unparsable {
        tool: TOOL,
        line: first_line(output).to_owned(),
        reason: "no json object".to_owned(),
    })?;
    let json = &output[start..];
    // Only the first JSON value counts: anything printed after it is ignored.
    let root = match serde_json::Deserializer::from_str(json)
        .into_iter::<Map<String, Value>>()
        .next()
    {
        Some(Ok(root)) => root,
        Some(Err(err)) => {
            return Err(HardwareError::Unparsable {
                tool: TOOL,
                line: json
                    .lines()
                    .nth(err.line().saturating_sub(1))
                    .unwrap_or_default()
                    .to_owned(),
                reason: err.to_string(),
            });
        }
        None => Map::new(),
    };

    let driver_version = root
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("system"))
        .and_then(|(_, system)| system.as_object())
        .and_then(|system| text(system, DRIVER_VERSION_KEYS));

    let mut gpus = root
        .iter()
        .filter_map(|(key, card)| Some((card_index(key)?, card.as_object()?)))
        .map(|(index, card)| parse_card(index, card, driver_version.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    gpus.sort_by_key(|(info, _)| info.index);
    Ok(gpus)
}

fn parse_card(
    index: u32,
    card: &Map<String, Value>,
    driver_version: Option<&str>,
) -> Result<(GpuInfo, GpuSample), HardwareError> {
    let memory_total_bytes = number::<u64>(card, MEMORY_TOTAL_KEYS)?.unwrap_or(0);
    let info = GpuInfo {
        index,
        name: text(card, NAME_KEYS).unwrap_or_else(|| "unknown AMD GPU".to_owned()),
        vendor: "amd".to_owned(),
        uuid: text(card, UUID_KEYS),
        memory_total_bytes,
        driver_version: driver_version.map(str::to_owned),
    };
    let sample = GpuSample {
        index,
        utilization_percent: number(card, UTILIZATION_KEYS)?,
        memory_used_bytes: number::<u64>(card, MEMORY_USED_KEYS)?.unwrap_or(0),
        memory_total_bytes,
        temperature_c: number(card, TEMPERATURE_KEYS)?,
        power_watts: number(card, POWER_KEYS)?,
    };
    Ok((info, sample))
}

/// `"card3"` → 3.
fn card_index(key: &str) -> Option<u32> {
    let digits = key
        .get(..4)
        .filter(|prefix| prefix.eq_ignore_ascii_case("card"))
        .map(|_| &key[4..])?;
    digits.parse().ok()
}

/// The first of `keys` (case-insensitive) with a known value, as text.
fn text(object: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|wanted| {
        let value = object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(wanted))?
            .1;
        let text = match value {
            Value::String(text) => text.trim().to_owned(),
            Value::Number(number) => number.to_string(),
            _ => return None,
        };
        let unknown = text.is_empty()
            || text.eq_ignore_ascii_case("n/a")
            || text.eq_ignore_ascii_case("unknown");
        (!unknown).then_some(text)
    })
}

/// Like [`text`], parsed; a value that does not parse is an error naming the key and value.
/// Integers accept a decimal point (`"38.0"`), as rocm-smi versions differ.
fn number<T: FromDecimal>(
    object: &Map<String, Value>,
    keys: &[&str],
) -> Result<Option<T>, HardwareError> {
    let Some((key, value)) = keys
        .iter()
        .find_map(|key| Some((*key, text(object, &[key])?)))
    else {
        return Ok(None);
    };
    T::from_decimal(&value)
        .map(Some)
        .ok_or_else(|| HardwareError::Unparsable {
            tool: TOOL,
            line: format!("\"{key}\": \"{value}\""),
            reason: format!("{key} is not a number"),
        })
}

trait FromDecimal: Sized {
    fn from_decimal(text: &str) -> Option<Self>;
}

impl FromDecimal for f32 {
    fn from_decimal(text: &str) -> Option<Self> {
        text.parse().ok().filter(|value: &f32| value.is_finite())
    }
}

impl FromDecimal for u64 {
    fn from_decimal(text: &str) -> Option<Self> {
        text.parse().ok().or_else(|| {
            let value: f64 = text.parse().ok()?;
            // Truncation is intended: whole bytes.
            (value.is_finite() && value >= 0.0 && value < u64::MAX as f64).then_some(value as u64)
        })
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::ROCM_SMI_JSON;
    use super::*;

    #[test]
    fn parses_one_card_and_skips_system() {
        let gpus = parse_rocm_smi_json(ROCM_SMI_JSON).unwrap();
        assert_eq!(
            gpus,
            vec![(
                GpuInfo {
                    index: 0,
                    name: "Navi 31 [Radeon RX 7900 XT/7900 XTX]".to_owned(),
                    vendor: "amd".to_owned(),
                    uuid: Some("0x8e7f2ae1c4ec6b1d".to_owned()),
                    memory_total_bytes: 25_753_026_560,
                    driver_version: Some("6.3.6".to_owned()),
                },
                GpuSample {
                    index: 0,
                    utilization_percent: Some(3.0),
                    memory_used_bytes: 1_197_748_224,
                    memory_total_bytes: 25_753_026_560,
                    temperature_c: Some(45.0),
                    power_watts: Some(38.0),
                },
            )]
        );
    }

    #[test]
    fn tolerates_missing_keys_newer_names_and_na() {
        // ROCm 6 on an MI300X: capitalised keys, no edge sensor, socket power, no system key;
        // card1 has almost nothing.
        let output = r#"{"card1": {"Card Series": "N/A"}, "card0": {"Card Series": "AMD Instinct MI300X OAM", "Card Model": "0x74a1", "GPU use (%)": "0", "Temperature (Sensor edge) (C)": "N/A", "Temperature (Sensor junction) (C)": "42.0", "Temperature (Sensor memory) (C)": "35.0", "Current Socket Graphics Package Power (W)": "139.0", "VRAM Total Memory (B)": "205822885888", "VRAM Total Used Memory (B)": "297304064"}}"#;
        let gpus = parse_rocm_smi_json(output).unwrap();
        assert_eq!(gpus.len(), 2);
        let (info, sample) = &gpus[0];
        assert_eq!(info.name, "AMD Instinct MI300X OAM");
        assert_eq!(info.uuid, None);
        assert_eq!(info.driver_version, None);
        assert_eq!(sample.temperature_c, Some(42.0));
        assert_eq!(sample.power_watts, Some(139.0));
        assert_eq!(sample.memory_total_bytes, 205_822_885_888);
        let (info, sample) = &gpus[1];
        assert_eq!(
            (info.index, info.name.as_str(), info.memory_total_bytes),
            (1, "unknown AMD GPU", 0)
        );
        assert_eq!(
            sample,
            &GpuSample {
                index: 1,
                utilization_percent: None,
                memory_used_bytes: 0,
                memory_total_bytes: 0,
                temperature_c: None,
                power_watts: None,
            }
        );
    }

    #[test]
    fn skips_warnings_before_the_json_and_sorts_cards() {
        let output = "WARNING: Unlocked monitor_devices lock; it should have been retained.\n{\"card10\": {\"GPU use (%)\": 5}, \"card2\": {\"GPU use (%)\": \"7\"}}\n";
        let gpus = parse_rocm_smi_json(output).unwrap();
        let indexes: Vec<u32> = gpus.iter().map(|(info, _)| info.index).collect();
        assert_eq!(indexes, vec![2, 10]);
        assert_eq!(gpus[1].1.utilization_percent, Some(5.0));
    }

    #[test]
    fn no_cards_is_an_empty_list() {
        assert_eq!(parse_rocm_smi_json("{}").unwrap(), vec![]);
        assert_eq!(
            parse_rocm_smi_json(r#"{"system": {"Driver version": "6.8.5"}}"#).unwrap(),
            vec![]
        );
    }

    #[test]
    fn output_without_json_is_an_error_naming_it() {
        let err =
            parse_rocm_smi_json("\nERROR: GPU[0]: Unable to read amdgpu driver\n").unwrap_err();
        assert!(
            matches!(&err, HardwareError::Unparsable { tool: "rocm-smi", line, .. } if line == "ERROR: GPU[0]: Unable to read amdgpu driver"),
            "{err:?}"
        );
    }

    #[test]
    fn broken_json_is_an_error_naming_the_line() {
        let err = parse_rocm_smi_json("{\"card0\": {\n\"GPU use (%)\": \"3\",,\n}}").unwrap_err();
        assert!(
            matches!(&err, HardwareError::Unparsable { line, .. } if line == "\"GPU use (%)\": \"3\",,"),
            "{err:?}"
        );
    }

    #[test]
    fn a_garbled_number_is_an_error_naming_key_and_value() {
        let err =
            parse_rocm_smi_json(r#"{"card0": {"VRAM Total Memory (B)": "lots"}}"#).unwrap_err();
        assert!(
            matches!(&err, HardwareError::Unparsable { line, reason, .. } if line == "\"VRAM Total Memory (B)\": \"lots\"" && reason.contains("not a number")),
            "{err:?}"
        );
    }

    #[test]
    fn card_keys() {
        assert_eq!(card_index("card0"), Some(0));
        assert_eq!(card_index("Card12"), Some(12));
        assert_eq!(card_index("card"), None);
        assert_eq!(card_index("system"), None);
        assert_eq!(card_index("cardx"), None);
        assert_eq!(card_index("ca"), None);
    }
}
