//! Fixtures shared by the hardware tests.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use events::node::GpuInfo;
use events::telemetry::GpuSample;

/// Held by every test that writes a fake tool or runs one. Writing an executable while another
/// thread forks makes the child inherit the open file, and executing it then fails with
/// "text file busy" (ETXTBSY); serialising those tests avoids that.
pub(super) static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// What `nvidia-smi --query-gpu=… --format=csv,noheader,nounits` prints on a two-GPU box whose
/// second card does not report its power draw.
pub(super) const NVIDIA_SMI_CSV: &str = "\
0, NVIDIA GeForce RTX 4090, GPU-5f4a2b1c-8d3e-4f6a-9b7c-1e2d3f4a5b6c, 24564, 1893, 37, 52, 68.45, 550.54.14
1, NVIDIA GeForce RTX 3090, GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d, 24576, 0, 0, 31, [N/A], 550.54.14
";

pub(super) fn expected_nvidia_gpus() -> Vec<(GpuInfo, GpuSample)> {
    const MIB: u64 = 1024 * 1024;
    let gpu = |index, name: &str, uuid: &str, total_mib: u64| GpuInfo {
        index,
        name: name.to_owned(),
        vendor: "nvidia".to_owned(),
        uuid: Some(uuid.to_owned()),
        memory_total_bytes: total_mib * MIB,
        driver_version: Some("550.54.14".to_owned()),
    };
    vec![
        (
            gpu(
                0,
                "NVIDIA GeForce RTX 4090",
                "GPU-5f4a2b1c-8d3e-4f6a-9b7c-1e2d3f4a5b6c",
                24564,
            ),
            GpuSample {
                index: 0,
                utilization_percent: Some(37.0),
                memory_used_bytes: 1893 * MIB,
                memory_total_bytes: 24564 * MIB,
                temperature_c: Some(52.0),
                power_watts: Some(68.45),
            },
        ),
        (
            gpu(
                1,
                "NVIDIA GeForce RTX 3090",
                "GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
                24576,
            ),
            GpuSample {
                index: 1,
                utilization_percent: Some(0.0),
                memory_used_bytes: 0,
                memory_total_bytes: 24576 * MIB,
                temperature_c: Some(31.0),
                power_watts: None,
            },
        ),
    ]
}

/// What `rocm-smi --showproductname --showmeminfo vram --showuse --showtemp --showpower
/// --showuniqueid --showdriverversion --json` prints (ROCm 5.7) on a one-card box.
pub(super) const ROCM_SMI_JSON: &str = r#"{"card0": {"GPU use (%)": "3", "Temperature (Sensor edge) (C)": "45.0", "Temperature (Sensor junction) (C)": "47.0", "Temperature (Sensor memory) (C)": "52.0", "Average Graphics Package Power (W)": "38.0", "Unique ID": "0x8e7f2ae1c4ec6b1d", "Card series": "Navi 31 [Radeon RX 7900 XT/7900 XTX]", "Card model": "0x744c", "Card vendor": "Advanced Micro Devices, Inc. [AMD/ATI]", "Card SKU": "EXT89722", "VRAM Total Memory (B)": "25753026560", "VRAM Total Used Memory (B)": "1197748224"}, "system": {"Driver version": "6.3.6"}}"#;

/// Writes an executable `sh` script called `name` into `dir`. Hold [`SPAWN_LOCK`].
pub(super) fn fake_tool(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
