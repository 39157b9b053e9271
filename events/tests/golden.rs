//! Golden JSON for every event type: the stored bytes of each event are pinned, so a rename or
//! a changed field fails here before it reaches a stored log. Regenerate deliberately with
//! `UPDATE_GOLDEN=1 cargo test -p events --test golden` and review the diff.

use std::path::PathBuf;

mod golden_support;
use golden_support::{at, check, golden};

use events::access::{ApiTokenEvent, Role, SecretEvent, TokenIssued};
use events::chat::{
    ChannelSettings, ChatCommandEvent, ChatJobStarted, ChatSettingsEvent, CommandAnswered,
    CommandReceived, CommandRejected, CommandRule, Platform, RejectReason, ReplyFailed, ReplyKind,
    ReplySent, ReplyWithheld, SettingsChanged, Withheld,
};
use events::container::{
    CommandRequested, ContainerAction, ContainerCommandEvent, NodeContainersEvent, StateChanged,
};
use events::dlq::{DeadLetterEvent, DeadLetterReplayed, dead_letter_id};
use events::host::{
    ExecFailure, ExecRequested, HostEvent, HostExecEvent, HostKey, HostRegistered, OutputStream,
};
use events::node::{GpuInfo, NodeDeregistered, NodeEvent, NodeRegistered};
use events::post::{Destination, PostDelivered, PostEvent, PostFailed, PostRequested};
use events::render::{
    Artifact, ComfyEvent, ComfyState, ComfyStateChanged, ImageRef, Lora, Provenance, QUEUE_ID,
    QueueAdmitted, QueuePaused, QueueReleased, RenderAssigned, RenderCancelled, RenderCompleted,
    RenderDeleted, RenderFailed, RenderJobEvent, RenderMode, RenderParams, RenderPriorityChanged,
    RenderProgressed, RenderQueueEvent, RenderQueued, RenderRequested, RenderShareRevoked,
    RenderShared, RenderStarted, Trigger,
};
use events::service::{NodeServicesEvent, ServiceState, ServiceStateChanged};
use events::telemetry::{GpuSample, Heartbeat};
use events::{Actor, DomainEvent};

fn node_registered() -> NodeRegistered {
    NodeRegistered {
        hostname: "gpu-box".to_owned(),
        os: "Debian GNU/Linux 12".to_owned(),
        kernel: "6.1.0-26-amd64".to_owned(),
        cpu_model: "AMD Ryzen 9 7950X".to_owned(),
        cpu_cores: 32,
        memory_total_bytes: 68_719_476_736,
        disk_total_bytes: 2_000_398_934_016,
        gpus: vec![GpuInfo {
            index: 0,
            name: "NVIDIA GeForce RTX 4090".to_owned(),
            vendor: "nvidia".to_owned(),
            uuid: Some("GPU-5c5d5f4e-1111-2222-3333-444455556666".to_owned()),
            memory_total_bytes: 25_757_220_864,
            driver_version: Some("550.54.15".to_owned()),
        }],
        gpu_source: "nvml".to_owned(),
        agent_version: "0.0.0".to_owned(),
        agent_url: Some("http://10.0.0.5:8081".to_owned()),
        capabilities: Vec::new(),
    }
}

#[test]
fn node_events() {
    golden("gpu-box", NodeEvent::Registered(node_registered()));
    golden(
        "gpu-box",
        NodeEvent::Deregistered(NodeDeregistered {
            reason: "agent stopped".to_owned(),
        }),
    );
}

#[test]
fn every_event_type_has_a_golden_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for event_type in NodeEvent::EVENT_TYPES
        .iter()
        .chain(RenderJobEvent::EVENT_TYPES)
        .chain(RenderQueueEvent::EVENT_TYPES)
        .chain(ComfyEvent::EVENT_TYPES)
        .chain(ChatCommandEvent::EVENT_TYPES)
        .chain(ChatSettingsEvent::EVENT_TYPES)
        .chain(PostEvent::EVENT_TYPES)
        .chain(DeadLetterEvent::EVENT_TYPES)
        .chain(events::artifacts::ArtifactSweepEvent::EVENT_TYPES)
        .chain(ApiTokenEvent::EVENT_TYPES)
        .chain(ContainerCommandEvent::EVENT_TYPES)
        .chain(NodeContainersEvent::EVENT_TYPES)
        .chain(SecretEvent::EVENT_TYPES)
        .chain(HostEvent::EVENT_TYPES)
        .chain(HostExecEvent::EVENT_TYPES)
        .chain(NodeServicesEvent::EVENT_TYPES)
        .chain(events::approval::ApprovalEvent::EVENT_TYPES)
        .chain(events::deploy::AppEvent::EVENT_TYPES)
        .chain(events::deploy::DeployEvent::EVENT_TYPES)
        .chain(events::node::NodeTagsEvent::EVENT_TYPES)
        .chain(events::web::WebDomainEvent::EVENT_TYPES)
        .chain(events::setup::SetupEvent::EVENT_TYPES)
        .chain(events::ai_dev::AiDevEvent::EVENT_TYPES)
        .chain(events::video::PersonaEvent::EVENT_TYPES)
        .chain(events::video::VideoProjectEvent::EVENT_TYPES)
        .chain(events::video::VideoQueueEvent::EVENT_TYPES)
        .chain(events::video::ScheduleEvent::EVENT_TYPES)
    {
        assert!(
            dir.join(format!("{event_type}.json")).exists(),
            "no golden file for {event_type}"
        );
    }
}

#[test]
fn heartbeat() {
    let heartbeat = Heartbeat {
        node_id: "gpu-box".parse().unwrap(),
        sampled_at: at(),
        sample_seq: 17,
        cpu_percent: 12.5,
        load_avg_1m: 0.75,
        memory_used_bytes: 8_589_934_592,
        memory_total_bytes: 68_719_476_736,
        disk_used_bytes: 500_000_000_000,
        disk_total_bytes: 2_000_398_934_016,
        gpus: vec![GpuSample {
            index: 0,
            utilization_percent: Some(55.0),
            memory_used_bytes: 4_294_967_296,
            memory_total_bytes: 25_757_220_864,
            temperature_c: Some(61.0),
            power_watts: None,
        }],
        uptime_secs: 86_400,
    };
    check(
        "telemetry.heartbeat",
        serde_json::to_value(&heartbeat).unwrap(),
    );
    let stored = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/telemetry.heartbeat.json"),
    )
    .unwrap();
    assert_eq!(
        serde_json::from_str::<Heartbeat>(&stored).unwrap(),
        heartbeat
    );
}

#[test]
fn render_events() {
    let id = "0192f0c0-0000-7000-8000-00000000b0c2".to_owned();
    let trigger = Trigger {
        source: "dashboard".to_owned(),
        reference: None,
    };
    golden(
        &id,
        RenderJobEvent::Requested(RenderRequested {
            mode: RenderMode::Img2img,
            params: RenderParams {
                prompt: "a lighthouse at dusk".to_owned(),
                seed: 42,
                init_image: Some(ImageRef {
                    sha256: "ab".repeat(32),
                }),
                denoise: 0.6,
                lora: Some(Lora {
                    name: "film_grain.safetensors".to_owned(),
                    strength: 0.8,
                }),
                ..RenderParams::default()
            },
            priority: 5,
            trigger: trigger.clone(),
            vram_mib: 3012,
            max_attempts: 3,
        }),
    );
    golden(
        &id,
        RenderJobEvent::Queued(RenderQueued {
            priority: 5,
            reason: "submitted".to_owned(),
        }),
    );
    golden(
        &id,
        RenderJobEvent::PriorityChanged(RenderPriorityChanged { priority: 9 }),
    );
    golden(
        &id,
        RenderJobEvent::Assigned(RenderAssigned {
            node_id: "gpu-box".to_owned(),
            attempt: 1,
        }),
    );
    golden(
        &id,
        RenderJobEvent::Started(RenderStarted {
            node_id: "gpu-box".to_owned(),
            attempt: 1,
            backend: "comfyui".to_owned(),
        }),
    );
    golden(
        &id,
        RenderJobEvent::Progressed(RenderProgressed {
            attempt: 1,
            value: 7,
            max: 20,
        }),
    );
    golden(
        &id,
        RenderJobEvent::Completed(RenderCompleted {
            attempt: 1,
            artifacts: vec![Artifact {
                sha256: "cd".repeat(32),
                bytes: 10527,
                content_type: "image/png".to_owned(),
                width: 512,
                height: 512,
                filename: "nebula_00001_.png".to_owned(),
            }],
            provenance: Provenance {
                workflow_hash: "ef".repeat(32),
                model: "v1-5-pruned-emaonly.safetensors".to_owned(),
                seed: 42,
                node_id: "gpu-box".to_owned(),
                backend: "comfyui".to_owned(),
                trigger,
                correlation_id: "0192f0c0-0000-7000-8000-00000000c0d3".to_owned(),
            },
        }),
    );
    golden(
        &id,
        RenderJobEvent::Failed(RenderFailed {
            attempt: 1,
            reason: "execution failed in UpscaleModelLoader: model not found".to_owned(),
            retryable: false,
        }),
    );
    golden(
        &id,
        RenderJobEvent::Cancelled(RenderCancelled {
            reason: "cancelled by admin".to_owned(),
            was_running: true,
        }),
    );
    let shared = RenderShared {
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
        token: "3f1c9a0e5b7d42a8c6e1f09b2d4a7c35".to_owned(),
    };
    golden(&id, RenderJobEvent::Shared(shared.clone()));
    golden(
        &id,
        RenderJobEvent::ShareRevoked(RenderShareRevoked {
            sha256: shared.sha256,
            token: shared.token,
        }),
    );
    golden(
        &id,
        RenderJobEvent::Deleted(RenderDeleted {
            outputs: vec![
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
            ],
            reason: "deleted by admin".to_owned(),
        }),
    );
    golden(
        QUEUE_ID,
        RenderQueueEvent::Admitted(QueueAdmitted {
            job_id: id.clone(),
            chat_user: None,
        }),
    );
    golden(
        QUEUE_ID,
        RenderQueueEvent::Released(QueueReleased { job_id: id.clone() }),
    );
    golden(
        QUEUE_ID,
        RenderQueueEvent::Paused(QueuePaused {
            reason: "maintenance".to_owned(),
        }),
    );
    golden(QUEUE_ID, RenderQueueEvent::Resumed);
    golden(
        "gpu-box",
        ComfyEvent::StateChanged(ComfyStateChanged {
            state: ComfyState::Healthy,
            pid: Some(4242),
            restarts: 1,
            vram_mode: "--highvram".to_owned(),
            reason: "answers /system_stats".to_owned(),
        }),
    );
}

#[test]
fn chat_events() {
    let id = "twitch-b34ccfc7-4977-403a-8a94-33c6bac34fb8";
    golden(
        id,
        ChatCommandEvent::Received(CommandReceived {
            platform: Platform::Twitch,
            scope: "nebula_tv".to_owned(),
            channel: "nebula_tv".to_owned(),
            user_id: "29803735".to_owned(),
            user_name: "Viewer".to_owned(),
            message_id: "b34ccfc7-4977-403a-8a94-33c6bac34fb8".to_owned(),
            command: "imagine".to_owned(),
            args: "a red fox in the snow".to_owned(),
            options: Default::default(),
            roles: vec!["subscriber".to_owned()],
        }),
    );
    golden(
        id,
        ChatCommandEvent::Rejected(CommandRejected {
            reason: RejectReason::Cooldown,
            message: "@Viewer please wait 12 s before the next !imagine".to_owned(),
            retry_after_secs: Some(12),
        }),
    );
    golden(
        id,
        ChatCommandEvent::JobStarted(ChatJobStarted {
            job_id: "0192f0c0-0000-7000-8000-00000000a0b1".to_owned(),
        }),
    );
    golden(
        id,
        ChatCommandEvent::Answered(CommandAnswered {
            text: "3 jobs queued, 1 running".to_owned(),
        }),
    );
    golden(
        id,
        ChatCommandEvent::ReplySent(ReplySent {
            kind: ReplyKind::Result,
            text: "@Viewer here it is".to_owned(),
            artifact: Some("ab".repeat(32)),
        }),
    );
    golden(
        id,
        ChatCommandEvent::ReplyFailed(ReplyFailed {
            kind: ReplyKind::Result,
            error: "discord answered 503".to_owned(),
        }),
    );
    golden(
        id,
        ChatCommandEvent::ReplyWithheld(ReplyWithheld {
            kind: ReplyKind::Rejection,
            why: Withheld::Summary,
        }),
    );
    let mut settings = ChannelSettings {
        nickname: Some("Nebula".to_owned()),
        avatar: Some("https://example.com/nebula.png".to_owned()),
        ..ChannelSettings::default()
    };
    settings.commands.insert(
        "imagine".to_owned(),
        CommandRule {
            enabled: true,
            roles: vec!["1100000000000000001".to_owned()],
        },
    );
    golden(
        "discord-1100000000000000000",
        ChatSettingsEvent::Changed(SettingsChanged {
            platform: Platform::Discord,
            scope: "1100000000000000000".to_owned(),
            settings,
        }),
    );
}

#[test]
fn dead_letter_events() {
    golden(
        &dead_letter_id("render-gpu-1", "WORK", 40),
        DeadLetterEvent::Replayed(DeadLetterReplayed {
            origin: "render-gpu-1".to_owned(),
            origin_stream: "WORK".to_owned(),
            origin_subject: "nebula.work.render.gpu-1".to_owned(),
            origin_seq: 40,
            reason: "not a work item".to_owned(),
            dlq_seq: 3,
            replayed_seq: 41,
        }),
    );
}

#[test]
fn artifact_sweep_events() {
    use events::artifacts::{
        ArtifactCollected, ArtifactKept, ArtifactSweepEvent, SweepCandidate, SweepFinished,
        SweepPlanned,
    };
    let id = "0192f0c0-0000-7000-8000-00000005ee9a";
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    golden(
        id,
        ArtifactSweepEvent::Planned(SweepPlanned {
            planned_at: "2026-12-07T21:00:00Z".parse().unwrap(),
            retention_secs: 604_800,
            candidates: vec![SweepCandidate {
                sha256: sha.to_owned(),
                bytes: 48_213,
                age_secs: 2_592_000,
            }],
            candidate_bytes: 48_213,
            more: 0,
            referenced: 412,
            young: 3,
        }),
    );
    golden(
        id,
        ArtifactSweepEvent::Collected(ArtifactCollected {
            sha256: sha.to_owned(),
            bytes: 48_213,
            links: 1,
        }),
    );
    golden(
        id,
        ArtifactSweepEvent::Kept(ArtifactKept {
            sha256: sha.to_owned(),
            why: "stored again since the plan".to_owned(),
        }),
    );
    golden(
        id,
        ArtifactSweepEvent::Finished(SweepFinished {
            collected: 1,
            bytes: 48_213,
            kept: 0,
        }),
    );
}

#[test]
fn post_events() {
    let id = "0192f0c0-0000-7000-8000-0000000b0a57";
    golden(
        id,
        PostEvent::Requested(PostRequested {
            text: "We're live: tonight's renders".to_owned(),
            artifact: Some(
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
            ),
            destinations: vec![Destination::Twitch, Destination::Youtube, Destination::Kick],
            share: Some("3f1c9a0e5b7d42a8c6e1f09b2d4a7c35".to_owned()),
        }),
    );
    golden(
        id,
        PostEvent::Delivered(PostDelivered {
            destination: Destination::Youtube,
            remote_id: Some("LCC.EhwKGkNKX3Z4".to_owned()),
            text: "We're live: tonight's renders https://nebula.example.com/share/3f1c9a0e5b7d42a8c6e1f09b2d4a7c35.png"
                .to_owned(),
            attempt: 1,
        }),
    );
    golden(
        id,
        PostEvent::Failed(PostFailed {
            destination: Destination::Kick,
            error: "kick 503: upstream unavailable".to_owned(),
            attempt: 1,
            will_retry: true,
        }),
    );
}

#[test]
fn access_events() {
    golden(
        "grafana",
        ApiTokenEvent::Issued(TokenIssued {
            role: Role::Viewer,
            token_sha256: "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
                .to_owned(),
            expires_at: Some(at()),
        }),
    );
    golden("grafana", ApiTokenEvent::Revoked {});
    golden("twitch-oauth", SecretEvent::Set { version: 2 });
    golden("twitch-oauth", SecretEvent::Removed { version: 2 });
}

/// Fields added later are optional: what was stored before them still reads.
#[test]
fn a_post_requested_before_share_links_still_reads() {
    let stored = serde_json::json!({
        "type": "post.requested",
        "data": {
            "text": "live now",
            "artifact": "ab".repeat(32),
            "destinations": ["twitch"],
        }
    });
    let PostEvent::Requested(requested) = serde_json::from_value(stored).unwrap() else {
        panic!("not a request");
    };
    assert_eq!(requested.share, None);
    assert_eq!(requested.artifact, Some("ab".repeat(32)));
}

#[test]
fn container_events() {
    let id = "0192f0c0-0000-7000-8000-00000000c0de";
    golden(
        id,
        ContainerCommandEvent::Requested(CommandRequested {
            node_id: "gpu-box".to_owned(),
            action: ContainerAction::Restart {
                container: "comfyui".to_owned(),
                timeout_secs: 10,
            },
            expires_at: at(),
        }),
    );
    golden(id, ContainerCommandEvent::Started {});
    golden(
        id,
        ContainerCommandEvent::Completed {
            summary: "restarted; running".to_owned(),
        },
    );
    golden(
        id,
        ContainerCommandEvent::Failed {
            error: "docker: No such container: comfyui".to_owned(),
        },
    );
    golden(
        id,
        ContainerCommandEvent::Expired {
            reason: "no agent on node gpu-box took it within 60 s".to_owned(),
        },
    );
    golden(
        "gpu-box",
        NodeContainersEvent::StateChanged(StateChanged {
            container: "comfyui".to_owned(),
            container_id: "4c7d1427cf50".to_owned(),
            image: "nebula-test/busybox:1".to_owned(),
            change: "die".to_owned(),
            exit_code: Some(137),
            health: None,
            at: at(),
        }),
    );
}

#[test]
fn host_events() {
    let key = |fingerprint: &str| HostKey {
        algorithm: "ssh-ed25519".to_owned(),
        fingerprint: fingerprint.to_owned(),
    };
    golden(
        "nas",
        HostEvent::Registered(HostRegistered {
            address: "192.168.1.20".to_owned(),
            port: 22,
            user: "nebula".to_owned(),
            key_secret: "ssh-nas".to_owned(),
            allowlist: vec!["systemctl status *".to_owned(), "docker ps".to_owned()],
        }),
    );
    golden("nas", HostEvent::Removed {});
    golden("nas", HostEvent::KeyPinned(key("SHA256:pinned")));
    golden(
        "nas",
        HostEvent::KeyMismatch {
            pinned: key("SHA256:pinned"),
            presented: key("SHA256:other"),
        },
    );
    let id = "0192f0c0-0000-7000-8000-00000000e8ec";
    golden(
        id,
        HostExecEvent::Requested(ExecRequested {
            host: "nas".to_owned(),
            command: "systemctl status nginx".to_owned(),
            timeout_secs: 60,
            env_secrets: Default::default(),
        }),
    );
    golden(id, HostExecEvent::Started {});
    golden(
        id,
        HostExecEvent::Output {
            stream: OutputStream::Stdout,
            text: "active (running)\n".to_owned(),
        },
    );
    golden(
        id,
        HostExecEvent::Completed {
            exit_status: 0,
            duration_ms: 41,
            output_bytes: 17,
            truncated: false,
        },
    );
    golden(
        id,
        HostExecEvent::Failed {
            reason: ExecFailure::AuthFailed,
            error: "nas refused the key in secret ssh-nas for user nebula".to_owned(),
            duration_ms: 12,
        },
    );
}

#[test]
fn service_events() {
    golden(
        "gpu-box",
        NodeServicesEvent::StateChanged(ServiceStateChanged {
            service: "ollama".to_owned(),
            kind: "command".to_owned(),
            state: ServiceState::Unhealthy,
            restarts: 2,
            pid: Some(4242),
            reason: "GET http://127.0.0.1:11434/api/tags answered 503".to_owned(),
        }),
    );
}

#[test]
fn approval_events() {
    use events::access::Role;
    use events::approval::{
        ApprovalEvent, ApprovalPolicy, ApprovalRequested, ApprovalSubject, Decision, DecisionMade,
        Outcome, Preview, PreviewFormat,
    };
    let id = "0192f0c0-0000-7000-8000-0000000a9901";
    golden(
        id,
        ApprovalEvent::Requested(ApprovalRequested {
            subject: ApprovalSubject {
                kind: "deploy".to_owned(),
                id: "0192f0c0-0000-7000-8000-0000000de901".to_owned(),
            },
            summary: "deploy web 1.2 to gpu-box".to_owned(),
            preview: Preview::new(
                PreviewFormat::Diff,
                "-image = \"web:1.1\"\n+image = \"web:1.2\"\n".to_owned(),
            ),
            policy: ApprovalPolicy {
                role: Role::Admin,
                approvals: 2,
                expires_at: at(),
                requester_may_approve: false,
                rule: Some("prod".to_owned()),
            },
            requested_by: Actor::User("alice".to_owned()),
        }),
    );
    golden(
        id,
        ApprovalEvent::Decided(DecisionMade {
            decision: Decision::Approve,
            by: Actor::User("bob".to_owned()),
            role: Role::Admin,
            comment: "plan looks right".to_owned(),
        }),
    );
    golden(
        id,
        ApprovalEvent::Closed {
            outcome: Outcome::Granted,
            reason: "approved by 2 of 2, last by carol".to_owned(),
        },
    );
}

#[test]
fn deploy_events() {
    use events::container::ContainerSpec;
    use events::deploy::{
        AppContainer, AppDefined, AppEvent, AppHealth, DeployEvent, DeployOutcome, DeployRequested,
        DeployStep, DeployTrigger, Release,
    };
    let containers = vec![AppContainer {
        name: "web".to_owned(),
        spec: ContainerSpec {
            image: "ghcr.io/example/web:1.2".to_owned(),
            ports: vec!["8080:80".to_owned()],
            env: [("API_KEY".to_owned(), "secret:web-api-key".to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        },
    }];
    let health = AppHealth {
        http: Some("http://127.0.0.1:8080/health".to_owned()),
        tcp: None,
        timeout_secs: 60,
    };
    let release = |number: u32| Release {
        number,
        containers: containers.clone(),
        health: health.clone(),
        spec_hash: "9f2c1a0e5b7d4c3f8a6e1d0b2c4f6a8e9d7c5b3a1f0e2d4c6b8a0f1e3d5c7b9a".to_owned(),
        build: Some(events::deploy::BuildSource {
            repo: "https://git.example.com/me/web.git".to_owned(),
            commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".to_owned(),
            dockerfile: "Dockerfile".to_owned(),
            image: "nebula-build/web:4b825dc642cb".to_owned(),
            command: None,
        }),
    };
    golden(
        "web",
        AppEvent::Defined(AppDefined {
            git: Some(events::deploy::GitSource {
                repo: "https://git.example.com/me/web.git".to_owned(),
                branch: "main".to_owned(),
                dockerfile: "Dockerfile".to_owned(),
                webhook_secret: Some("web-webhook".to_owned()),
                poll: true,
                build_command: None,
            }),
            containers: containers.clone(),
            health: health.clone(),
            nodes: vec!["gpu-box".to_owned()],
            labels: [("team".to_owned(), "media".to_owned())]
                .into_iter()
                .collect(),
        }),
    );
    golden("web", AppEvent::Removed {});
    golden(
        "web",
        AppEvent::WebhookReceived {
            delivery: "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
            reference: "refs/heads/main".to_owned(),
            commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".to_owned(),
        },
    );
    golden(
        "web",
        AppEvent::WebhookRefused {
            delivery: "72d3162e-cc78-11e3-81ab-4c9367dc0959".to_owned(),
            reason: "the signature does not match".to_owned(),
        },
    );
    golden("web", AppEvent::ReleaseCreated(release(2)));
    golden(
        "web",
        AppEvent::ReleaseLive {
            release: 2,
            run_id: "0192f0c0-0000-7000-8000-0000000de901".to_owned(),
        },
    );
    let run = "0192f0c0-0000-7000-8000-0000000de901";
    golden(
        run,
        DeployEvent::Requested(Box::new(DeployRequested {
            app: "web".to_owned(),
            release: release(2),
            previous: Some(release(1)),
            nodes: vec!["gpu-box".to_owned()],
            trigger: DeployTrigger::Manual,
        })),
    );
    golden(
        run,
        DeployEvent::ApprovalAsked {
            approval_id: "0192f0c0-0000-7000-8000-0000000a9901".to_owned(),
        },
    );
    golden(
        run,
        DeployEvent::StepStarted {
            step: DeployStep::Health,
        },
    );
    golden(
        run,
        DeployEvent::StepFinished {
            step: DeployStep::Health,
            ok: false,
            output: "16 checks in 60 s".to_owned(),
            error: Some(
                "not healthy within 60 s: GET http://127.0.0.1:8080/health answered 503".to_owned(),
            ),
        },
    );
    golden(
        run,
        DeployEvent::Finished {
            outcome: DeployOutcome::RolledBack,
            live_release: Some(1),
            error: Some("not healthy within 60 s".to_owned()),
        },
    );
}

#[test]
fn node_tags_events() {
    golden(
        "gpu-box",
        events::node::NodeTagsEvent::Set {
            tags: vec!["prod".to_owned(), "gpu".to_owned()],
        },
    );
}

#[test]
fn web_domain_events() {
    use events::web::{DnsRecord, DomainAdded, DomainTarget, WebDomainEvent};
    let id = "shop_example_com";
    golden(
        id,
        WebDomainEvent::Added(DomainAdded {
            host: "shop.example.com".to_owned(),
            target: DomainTarget::App {
                app: "shop".to_owned(),
                port: 8080,
            },
            dns: Some(DnsRecord {
                zone: "example.com".to_owned(),
                content: "203.0.113.7".to_owned(),
                proxied: true,
            }),
        }),
    );
    golden(id, WebDomainEvent::Removed {});
    golden(
        id,
        WebDomainEvent::RouteApplied {
            route_id: "nebula-domain-shop_example_com".to_owned(),
            dial: "192.168.1.20:8080".to_owned(),
        },
    );
    golden(
        id,
        WebDomainEvent::RouteFailed {
            error: "caddy answered 400: loading new config: …".to_owned(),
        },
    );
    golden(
        id,
        WebDomainEvent::DnsApplied {
            record_id: "372e67954025e0ba6aaa6d586b9e0b59".to_owned(),
            record_type: "A".to_owned(),
            action: "created".to_owned(),
        },
    );
    golden(
        id,
        WebDomainEvent::DnsFailed {
            error: "cloudflare refused (403): Authentication error".to_owned(),
        },
    );
    golden(
        id,
        WebDomainEvent::CertificateSeen(events::web::CertificateSeen {
            state: "valid".to_owned(),
            issuer: Some("CN=Caddy Local Authority - ECC Intermediate".to_owned()),
            not_after: Some("2026-12-08T01:02:03Z".parse().unwrap()),
            names: vec!["shop.example.com".to_owned()],
            error: None,
        }),
    );
}

#[test]
fn setup_events() {
    use events::setup::{SETUP_ID, SetupEvent};
    golden(
        SETUP_ID,
        SetupEvent::StepDone {
            step: "name_node".to_owned(),
            detail: "site attic lab; gpu-box tagged prod, gpu".to_owned(),
        },
    );
    golden(SETUP_ID, SetupEvent::Dismissed {});
    golden(SETUP_ID, SetupEvent::Reopened {});
}
