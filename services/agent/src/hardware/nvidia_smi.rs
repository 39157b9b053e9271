//! The `nvidia-smi` backend: one CSV line per GPU.

use std::path::Path;

use events::node::GpuInfo;
use events::telemetry::GpuSample;

use super::HardwareError;
use super::tool::{TOOL_TIMEOUT, run_tool};

const TOOL: &str = "nvidia-smi";

/// The fields [`parse_nvidia_smi_csv`] expects, in this order.
pub(super) const QUERY_ARGS: [&str; 2] = [
    "--query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,driver_version",
    "--format=csv,noheader,nounits",
];
const FIELD_COUNT: usize = 9;

const MIB: u64 = 1024 * 1024;

pub(super) fn query(path: &Path) -> Result<Vec<(GpuInfo, GpuSample)>, HardwareError> {
    parse_nvidia_smi_csv(&run_tool(path, &QUERY_ARGS, TOOL_TIMEOUT)?)
}

/// Parses the output of `nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.used,
/// utilization.gpu,temperature.gpu,power.draw,driver_version --format=csv,noheader,nounits`.
///
/// Fields are trimmed; bracketed values (`[N/A]`, `[Not Supported]`, `[Unknown Error]`, …) and
/// `N/A` mean "unknown"; memory is in MiB. Blank lines are skipped. A line with too few fields, or
/// a number that is neither a number nor "unknown", is an error naming that line.
pub fn parse_nvidia_smi_csv(output: &str) -> Result<Vec<(GpuInfo, GpuSample)>, HardwareError> {
    output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<(GpuInfo, GpuSample), HardwareError> {
    let unparsable = |reason: String| HardwareError::Unparsable {
        tool: TOOL,
        line: line.to_owned(),
        reason,
    };
    let field_count = line.split(',').count();
    if field_count < FIELD_COUNT {
        return Err(unparsable(format!(
            "expected {FIELD_COUNT} fields, found {field_count}"
        )));
    }
    // nvidia-smi does not quote: split the index off the front and the seven numeric or
    // identifier fields off the back, so a name with a comma in it survives.
    let (index, rest) = line.split_once(',').unwrap_or((line, ""));
    let mut tail: Vec<&str> = rest.rsplitn(FIELD_COUNT - 1, ',').map(str::trim).collect();
    tail.reverse();
    let [
        name,
        uuid,
        memory_total,
        memory_used,
        utilization,
        temperature,
        power,
        driver_version,
    ] = tail[..]
    else {
        return Err(unparsable(format!(
            "expected {FIELD_COUNT} fields, found {field_count}"
        )));
    };

    let index = known(index)
        .ok_or_else(|| unparsable("the index is unknown".to_owned()))?
        .parse::<u32>()
        .map_err(|err| unparsable(format!("index: {err}")))?;
    let memory_total_bytes = number::<u64>(memory_total, "memory.total")
        .map_err(unparsable)?
        .unwrap_or(0)
        .saturating_mul(MIB);
    let memory_used_bytes = number::<u64>(memory_used, "memory.used")
        .map_err(unparsable)?
        .unwrap_or(0)
        .saturating_mul(MIB);

    let info = GpuInfo {
        index,
        name: known(name).unwrap_or("unknown NVIDIA GPU").to_owned(),
        vendor: "nvidia".to_owned(),
        uuid: known(uuid).map(str::to_owned),
        memory_total_bytes,
        driver_version: known(driver_version).map(str::to_owned),
    };
    let sample = GpuSample {
        index,
        utilization_percent: number(utilization, "utilization.gpu").map_err(unparsable)?,
        memory_used_bytes,
        memory_total_bytes,
        temperature_c: number(temperature, "temperature.gpu").map_err(unparsable)?,
        power_watts: number(power, "power.draw").map_err(unparsable)?,
    };
    Ok((info, sample))
}

/// `None` for the ways nvidia-smi says "unknown".
fn known(field: &str) -> Option<&str> {
    let field = field.trim();
    let unknown = field.is_empty()
        || (field.starts_with('[') && field.ends_with(']'))
        || field.eq_ignore_ascii_case("n/a");
    (!unknown).then_some(field)
}

fn number<T: std::str::FromStr>(field: &str, name: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    known(field)
        .map(|value| {
            value
                .parse::<T>()
                .map_err(|err| format!("{name} {value:?}: {err}"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{NVIDIA_SMI_CSV, expected_nvidia_gpus};
    use super::*;

    #[test]
    fn parses_two_gpus_with_an_unknown_power_draw() {
        let gpus = parse_nvidia_smi_csv(NVIDIA_SMI_CSV).unwrap();
        assert_eq!(gpus, expected_nvidia_gpus());
        assert_eq!(gpus[1].1.power_watts, None);
        assert_eq!(gpus[0].0.memory_total_bytes, 24_564 * MIB);
    }

    #[test]
    fn every_bracketed_value_is_unknown() {
        let line = "0, NVIDIA A100-SXM4-80GB, [N/A], [N/A], [Not Supported], [Not Supported], [Unknown Error], [GPU requires reset], N/A";
        let (info, sample) = parse_nvidia_smi_csv(line).unwrap().remove(0);
        assert_eq!(info.uuid, None);
        assert_eq!(info.driver_version, None);
        assert_eq!(info.memory_total_bytes, 0);
        assert_eq!(
            sample,
            GpuSample {
                index: 0,
                utilization_percent: None,
                memory_used_bytes: 0,
                memory_total_bytes: 0,
                temperature_c: None,
                power_watts: None,
            }
        );
    }

    #[test]
    fn a_name_with_a_comma_survives() {
        let line = "3, Weird, Inc. GPU, GPU-1, 1024, 512, 7, 40, 100.5, 550.54.14";
        let (info, sample) = parse_nvidia_smi_csv(line).unwrap().remove(0);
        assert_eq!(info.index, 3);
        assert_eq!(info.name, "Weird, Inc. GPU");
        assert_eq!(info.uuid.as_deref(), Some("GPU-1"));
        assert_eq!(sample.power_watts, Some(100.5));
    }

    #[test]
    fn blank_lines_and_empty_output_are_fine() {
        assert_eq!(parse_nvidia_smi_csv("").unwrap(), vec![]);
        assert_eq!(
            parse_nvidia_smi_csv(&format!("\n{NVIDIA_SMI_CSV}\n\n"))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_short_line_is_an_error_naming_it() {
        let output = format!("{NVIDIA_SMI_CSV}No devices were found\n");
        let err = parse_nvidia_smi_csv(&output).unwrap_err();
        match &err {
            HardwareError::Unparsable { tool, line, reason } => {
                assert_eq!(*tool, "nvidia-smi");
                assert_eq!(line, "No devices were found");
                assert_eq!(reason, "expected 9 fields, found 1");
            }
            other => panic!("unexpected error: {other:?}"),
        }
        assert!(err.to_string().contains("No devices were found"), "{err}");
    }

    #[test]
    fn a_garbled_number_is_an_error_naming_the_line_and_field() {
        let line = "0, NVIDIA GeForce RTX 4090, GPU-x, 24564, lots, 37, 52, 68.45, 550.54.14";
        let err = parse_nvidia_smi_csv(line).unwrap_err();
        assert!(
            matches!(&err, HardwareError::Unparsable { line: l, reason, .. } if l == line && reason.starts_with("memory.used \"lots\"")),
            "{err:?}"
        );
        let err = parse_nvidia_smi_csv(
            "x, NVIDIA GeForce RTX 4090, GPU-x, 24564, 1, 37, 52, 68.45, 550.54.14",
        )
        .unwrap_err();
        assert!(
            matches!(&err, HardwareError::Unparsable { reason, .. } if reason.starts_with("index")),
            "{err:?}"
        );
    }
}
