//! System stats, object info, the `/api` prefix, and the `fake-comfyui` binary.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::comfyui::{FakeComfy, FakeComfyOptions};
use testkit::{DEFAULT_WAIT, wait_until};

use crate::common::get_json;

#[tokio::test]
async fn system_stats_object_info_and_the_api_prefix() {
    let comfy = FakeComfy::start_with(FakeComfyOptions {
        vram_total_mib: 8_192,
        vram_free_mib: 6_000,
        argv: vec!["main.py".into(), "--highvram".into()],
        ..FakeComfyOptions::default()
    })
    .await;
    let stats = get_json(&comfy, "/system_stats").await;
    assert_eq!(stats["system"]["comfyui_version"], "0.3.64");
    assert_eq!(stats["system"]["embedded_python"], false);
    assert_eq!(stats["system"]["argv"], json!(["main.py", "--highvram"]));
    let device = &stats["devices"][0];
    assert_eq!(device["type"], "cuda");
    assert_eq!(device["index"], 0);
    assert_eq!(device["vram_total"], 8_192u64 * 1024 * 1024);
    assert_eq!(device["vram_free"], 6_000u64 * 1024 * 1024);
    assert_eq!(get_json(&comfy, "/api/system_stats").await, stats);

    let info = get_json(&comfy, "/object_info/CheckpointLoaderSimple").await;
    assert_eq!(
        info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0],
        json!([
            "v1-5-pruned-emaonly.safetensors",
            "sd_xl_base_1.0.safetensors"
        ])
    );
    assert_eq!(get_json(&comfy, "/object_info/NoSuchNode").await, json!({}));
    let all = get_json(&comfy, "/object_info").await;
    assert!(all["ReActorFaceSwap"].is_object());
    assert_eq!(all["SaveImage"]["output_node"], true);
    assert_eq!(
        get_json(&comfy, "/models/upscale_models").await,
        json!(["RealESRGAN_x4plus.pth"])
    );
    assert_eq!(get_json(&comfy, "/history").await, json!({}));
    assert_eq!(
        get_json(&comfy, "/queue").await,
        json!({"queue_running": [], "queue_pending": []})
    );
}

/// Kills the child process when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on a free port; returns it once it says it listens (as ComfyUI does). A
/// port taken between choosing and binding (by a test running beside this one) means another.
fn spawn_binary(env: &[(&str, &str)]) -> (Process, u16) {
    use std::io::BufRead;
    for _ in 0..5 {
        let port = testkit::free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_fake-comfyui"));
        command
            .args([
                "--listen",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--highvram",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("failed to start fake-comfyui");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        if line.starts_with("To see the GUI go to:") {
            return (Process(child), port);
        }
        drop(Process(child)); // it could not listen there
    }
    panic!("fake-comfyui found no port to listen on");
}

#[tokio::test]
async fn the_binary_takes_comfyuis_flags_and_can_hang() {
    let (_process, port) = spawn_binary(&[("FAKE_COMFY_VRAM_TOTAL_MIB", "12288")]);
    let url = format!("http://127.0.0.1:{port}/system_stats");
    let stats: Value = wait_until("fake-comfyui to answer", DEFAULT_WAIT, || async {
        reqwest::get(&url).await.ok()?.json().await.ok()
    })
    .await;
    assert_eq!(
        stats["system"]["argv"],
        json!([
            "main.py",
            "--listen",
            "127.0.0.1",
            "--port",
            port.to_string(),
            "--highvram"
        ])
    );
    assert_eq!(stats["devices"][0]["vram_total"], 12_288u64 * 1024 * 1024);

    // Hung from the start: it accepts connections and never answers.
    let (_hung, port) = spawn_binary(&[("FAKE_COMFY_HANG_AFTER_SECS", "0")]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let error = client
        .get(format!("http://127.0.0.1:{port}/system_stats"))
        .send()
        .await
        .expect_err("a hung server answered");
    assert!(error.is_timeout(), "{error}");
}

#[test]
fn fake_comfyui_bin_is_the_built_binary() {
    let built = testkit::comfyui::fake_comfyui_bin();
    assert_eq!(
        built.canonicalize().unwrap(),
        std::path::Path::new(env!("CARGO_BIN_EXE_fake-comfyui"))
            .canonicalize()
            .unwrap()
    );
}
