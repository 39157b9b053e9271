//! The fake ComfyUI 0.3.64 of `testkit::comfyui` as a process, taking ComfyUI's own flags:
//!
//! ```text
//! fake-comfyui [--listen [ADDR]] [--port N] [--lowvram|--normalvram|--highvram] [--cpu] ...
//! ```
//!
//! It always listens on 127.0.0.1 (whatever `--listen` says), reports its arguments in
//! `/system_stats` `system.argv` (as `main.py …`), and runs until killed. Environment:
//! - `FAKE_COMFY_VRAM_TOTAL_MIB`: the reported VRAM (free is 5/6 of it);
//! - `FAKE_COMFY_HANG_AFTER_SECS=n`: stop answering HTTP after `n` seconds (connections are still
//!   accepted), like a hung ComfyUI;
//! - `FAKE_COMFY_CHECKPOINTS`, `FAKE_COMFY_UPSCALE_MODELS`: comma-separated model names;
//! - `FAKE_COMFY_STEP_DELAY_MS`: time per sampler step.

use std::time::Duration;

use testkit::comfyui::{FakeComfy, FakeComfyOptions};

/// A comma-separated list of names.
fn list(names: &str) -> Vec<String> {
    names
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

fn fail(message: &str) -> ! {
    eprintln!("fake-comfyui: {message}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut port: u16 = 8188;
    let mut at = 0;
    while at < args.len() {
        match args[at].as_str() {
            "--port" => {
                at += 1;
                port = args
                    .get(at)
                    .and_then(|value| value.parse().ok())
                    .unwrap_or_else(|| fail("--port needs a port number"));
            }
            // `--listen` takes an optional address; the fake always uses loopback.
            "--listen"
                if args
                    .get(at + 1)
                    .is_some_and(|value| !value.starts_with("--")) =>
            {
                at += 1;
            }
            // Accepted and only reported: --lowvram, --normalvram, --highvram, --cpu, ...
            _ => {}
        }
        at += 1;
    }

    let mut options = FakeComfyOptions {
        argv: std::iter::once("main.py".to_owned()).chain(args).collect(),
        ..FakeComfyOptions::default()
    };
    if let Ok(total) = std::env::var("FAKE_COMFY_VRAM_TOTAL_MIB") {
        let total: u64 = total
            .parse()
            .unwrap_or_else(|_| fail("FAKE_COMFY_VRAM_TOTAL_MIB is not a number"));
        options.vram_total_mib = total;
        options.vram_free_mib = total * 5 / 6;
    }
    if let Ok(names) = std::env::var("FAKE_COMFY_CHECKPOINTS") {
        options.checkpoints = list(&names);
    }
    if let Ok(names) = std::env::var("FAKE_COMFY_UPSCALE_MODELS") {
        options.upscale_models = list(&names);
    }
    if let Ok(millis) = std::env::var("FAKE_COMFY_STEP_DELAY_MS") {
        let millis: u64 = millis
            .parse()
            .unwrap_or_else(|_| fail("FAKE_COMFY_STEP_DELAY_MS is not a number"));
        options.step_delay = Duration::from_millis(millis);
    }
    let hang_after = std::env::var("FAKE_COMFY_HANG_AFTER_SECS")
        .ok()
        .map(|secs| {
            secs.parse::<f64>()
                .ok()
                .filter(|secs| secs.is_finite() && *secs >= 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or_else(|| fail("FAKE_COMFY_HANG_AFTER_SECS is not a number of seconds"))
        });

    let comfy = FakeComfy::start_on(port, options)
        .await
        .unwrap_or_else(|err| fail(&format!("failed to listen on 127.0.0.1:{port}: {err}")));
    // Hung from the start means before anyone is told where it listens.
    let hang_after = match hang_after {
        Some(delay) if delay.is_zero() => {
            comfy.set_unresponsive(true);
            None
        }
        other => other,
    };
    println!("To see the GUI go to: {}", comfy.url());

    if let Some(delay) = hang_after {
        tokio::time::sleep(delay).await;
        comfy.set_unresponsive(true);
        eprintln!("fake-comfyui: no longer answering HTTP");
    }
    std::future::pending::<()>().await;
}
