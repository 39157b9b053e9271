//! The NVML backend: the NVIDIA driver's management library, loaded at run time.

use events::node::GpuInfo;
use events::telemetry::GpuSample;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use tracing::{debug, warn};

use super::HardwareError;

/// Loads NVML; `None` (logged) when it is absent, broken, or sees no GPU.
pub(super) fn init() -> Option<Nvml> {
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(err) if means_no_nvidia_gpu(&err) => {
            debug!(
                error = &err as &dyn std::error::Error,
                "nvml not available, no nvidia gpu here"
            );
            return None;
        }
        Err(err) => {
            warn!(
                error = &err as &dyn std::error::Error,
                "nvml failed to initialise"
            );
            return None;
        }
    };
    match nvml.device_count() {
        Ok(0) => {
            debug!("nvml sees no gpu");
            None
        }
        Ok(_) => Some(nvml),
        Err(err) => {
            warn!(
                error = &err as &dyn std::error::Error,
                "nvml failed to count gpus"
            );
            None
        }
    }
}

/// Errors that mean "this machine has no (usable) NVIDIA driver", as opposed to a broken one.
fn means_no_nvidia_gpu(err: &NvmlError) -> bool {
    matches!(
        err,
        NvmlError::LibloadingError(_)
            | NvmlError::FailedToLoadSymbol(_)
            | NvmlError::LibraryNotFound
            | NvmlError::FunctionNotFound
            | NvmlError::DriverNotLoaded
            | NvmlError::NotFound
    )
}

pub(super) fn inventory(nvml: &Nvml) -> Result<Vec<GpuInfo>, HardwareError> {
    let driver_version = nvml.sys_driver_version().ok();
    per_device(nvml, |index, device| GpuInfo {
        index,
        name: device
            .name()
            .unwrap_or_else(|_| "unknown NVIDIA GPU".to_owned()),
        vendor: "nvidia".to_owned(),
        uuid: device.uuid().ok(),
        memory_total_bytes: device.memory_info().map(|memory| memory.total).unwrap_or(0),
        driver_version: driver_version.clone(),
    })
}

pub(super) fn sample(nvml: &Nvml) -> Result<Vec<GpuSample>, HardwareError> {
    per_device(nvml, |index, device| {
        let memory = device.memory_info().ok();
        GpuSample {
            index,
            utilization_percent: device
                .utilization_rates()
                .ok()
                .map(|rates| rates.gpu as f32),
            memory_used_bytes: memory.as_ref().map_or(0, |memory| memory.used),
            memory_total_bytes: memory.as_ref().map_or(0, |memory| memory.total),
            temperature_c: device
                .temperature(TemperatureSensor::Gpu)
                .ok()
                .map(|celsius| celsius as f32),
            power_watts: device.power_usage().ok().map(milliwatts_to_watts),
        }
    })
}

/// Applies `read` to every GPU NVML can open. A GPU that cannot be opened (fallen off the bus,
/// say) is left out; only when none can be is it an error.
fn per_device<T>(
    nvml: &Nvml,
    read: impl Fn(u32, &Device<'_>) -> T,
) -> Result<Vec<T>, HardwareError> {
    let count = nvml.device_count().map_err(HardwareError::Nvml)?;
    let mut found = Vec::with_capacity(count as usize);
    let mut first_error = None;
    for index in 0..count {
        match nvml.device_by_index(index) {
            Ok(device) => found.push(read(index, &device)),
            Err(err) => {
                debug!(
                    gpu_index = index,
                    error = &err as &dyn std::error::Error,
                    "nvml cannot open gpu"
                );
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) if found.is_empty() => Err(HardwareError::Nvml(err)),
        _ => Ok(found),
    }
}

fn milliwatts_to_watts(milliwatts: u32) -> f32 {
    (f64::from(milliwatts) / 1000.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_is_reported_in_watts() {
        assert_eq!(milliwatts_to_watts(68_450), 68.45);
        assert_eq!(milliwatts_to_watts(0), 0.0);
    }

    #[test]
    fn a_missing_library_means_no_gpu_but_permission_trouble_does_not() {
        assert!(means_no_nvidia_gpu(&NvmlError::DriverNotLoaded));
        assert!(means_no_nvidia_gpu(&NvmlError::LibraryNotFound));
        assert!(means_no_nvidia_gpu(&NvmlError::FailedToLoadSymbol(
            "nvmlInit_v2".to_owned()
        )));
        assert!(!means_no_nvidia_gpu(&NvmlError::NoPermission));
        assert!(!means_no_nvidia_gpu(&NvmlError::Unknown));
    }

    #[test]
    fn loading_nvml_here_fails_as_no_gpu_or_finds_one() {
        match Nvml::init() {
            Err(err) => assert!(
                means_no_nvidia_gpu(&err),
                "unexpected nvml error without a gpu: {err:?}"
            ),
            Ok(nvml) => {
                let count = nvml.device_count().unwrap();
                assert_eq!(inventory(&nvml).unwrap().len(), count as usize);
                let samples = sample(&nvml).unwrap();
                assert_eq!(samples.len(), count as usize);
                for sample in samples {
                    assert!(
                        sample.memory_total_bytes > 0
                            && sample.memory_used_bytes <= sample.memory_total_bytes,
                        "{sample:?}"
                    );
                }
            }
        }
    }
}
