//! Golden files of the work events: AI developer jobs, personas and video projects (the wire
//! format of each, and its stored bytes read back). `UPDATE_GOLDEN=1` rewrites them.

mod golden_support;
use golden_support::{at, golden};

#[test]
fn ai_dev_events() {
    use events::ai_dev::{
        AgentStep, AiDevEvent, BuildChecked, ChangeProposed, JobRequested, JobStarted,
    };
    let id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    golden(
        id,
        AiDevEvent::Requested(JobRequested {
            repo: "shop".to_owned(),
            instruction: "make the failing test pass".to_owned(),
            base: "main".to_owned(),
            model: Some("qwen2.5-coder:7b".to_owned()),
        }),
    );
    golden(
        id,
        AiDevEvent::Offered {
            node: "gpu-box".to_owned(),
            until: at(),
        },
    );
    golden(
        id,
        AiDevEvent::Claimed {
            runs_on: "local".to_owned(),
            fallback: Some("node gpu-box did not take it within 30s".to_owned()),
        },
    );
    golden(
        id,
        AiDevEvent::Started(JobStarted {
            branch: "ai-dev/0193a1b2-20261207T101010".to_owned(),
            base_commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".to_owned(),
            provider: "ollama".to_owned(),
            model: "qwen2.5-coder:7b".to_owned(),
            model_rule: "asked for by the job".to_owned(),
            tool_mode: "tools".to_owned(),
            context_tokens: 32768,
            runs_on: "local".to_owned(),
        }),
    );
    golden(
        id,
        AiDevEvent::Step(AgentStep {
            n: 3,
            said: "Reading the test first.".to_owned(),
            tool: Some("read_file".to_owned()),
            arguments: Some("{\"path\":\"src/lib.rs\"}".to_owned()),
            result: "pub fn add(a: i32, b: i32) -> i32 { a - b }".to_owned(),
            refused: false,
            tokens_in: 812,
            tokens_out: 24,
        }),
    );
    golden(
        id,
        AiDevEvent::BuildChecked(BuildChecked {
            toolchain: "cargo".to_owned(),
            commands: vec!["cargo build".to_owned(), "cargo test".to_owned()],
            ok: false,
            exit_status: Some(101),
            duration_ms: 2140,
            output: "test tests::adds ... FAILED".to_owned(),
            failing_tests: vec!["tests::adds".to_owned()],
        }),
    );
    golden(
        id,
        AiDevEvent::ContextCompressed {
            turns_summarised: 6,
            tokens_before: 7900,
            tokens_after: 2100,
        },
    );
    golden(
        id,
        AiDevEvent::ChangeProposed(ChangeProposed {
            commit: "9c1f2e3d4c5b6a7980716253443526170819aabb".to_owned(),
            summary: "add subtracted instead of adding".to_owned(),
            files: vec!["src/lib.rs".to_owned()],
            lines_added: 1,
            lines_removed: 1,
            diff: "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-    a - b\n+    a + b\n"
                .to_owned(),
        }),
    );
    golden(
        id,
        AiDevEvent::Decided {
            auto_rule: Some("small_change".to_owned()),
            reason: "2 lines in 1 files, build green (limits 40 lines, 3 files)".to_owned(),
        },
    );
    golden(
        id,
        AiDevEvent::ApprovalAsked {
            approval_id: "0193a1b2-0000-7000-8000-000000000001".to_owned(),
        },
    );
    golden(
        id,
        AiDevEvent::Approved {
            approval_id: "0193a1b2-0000-7000-8000-000000000001".to_owned(),
        },
    );
    golden(
        id,
        AiDevEvent::Merged {
            commit: "9c1f2e3d4c5b6a7980716253443526170819aabb".to_owned(),
            fast_forward: true,
        },
    );
    golden(
        id,
        AiDevEvent::Rejected {
            reason: "rejected by alice".to_owned(),
            branch_deleted: false,
        },
    );
    golden(id, AiDevEvent::RollbackRequested {});
    golden(
        id,
        AiDevEvent::RollbackFailed {
            error: "the revert conflicts with later commits in src/lib.rs".to_owned(),
        },
    );
    golden(
        id,
        AiDevEvent::RolledBack {
            revert_commit: "1a2b3c4d5e6f708192a3b4c5d6e7f80912a3b4c5".to_owned(),
        },
    );
    golden(
        id,
        AiDevEvent::Failed {
            reason: "budget".to_owned(),
            error: "the step budget (12) ran out before the model finished".to_owned(),
        },
    );
    golden(id, AiDevEvent::CancelRequested {});
    golden(id, AiDevEvent::Cancelled {});
}

#[test]
fn video_events() {
    use events::post::Destination;
    use events::render::Lora;
    use events::video::{
        AutoPost, Persona, PersonaEvent, PlannedScene, ProjectRequested, SeedPolicy, TimedText,
        VideoFormat, VideoProjectEvent, Visuals,
    };
    let persona = Persona {
        name: "nova".to_owned(),
        description: "a synthwave host".to_owned(),
        style_prompt: "neon portrait of Nova, pink hair".to_owned(),
        negative_prompt: "blurry".to_owned(),
        lora: Some(Lora {
            name: "nova-v2.safetensors".to_owned(),
            strength: 0.8,
        }),
        embeddings: vec!["nova-face".to_owned()],
        seed: SeedPolicy::Fixed { seed: 4242 },
        voice: "espeak-ng:en-us".to_owned(),
    };
    golden("nova", PersonaEvent::Defined(persona.clone()));
    golden(
        "nova",
        PersonaEvent::Changed(Persona {
            seed: SeedPolicy::PerScene { base: 100 },
            ..persona.clone()
        }),
    );
    golden("nova", PersonaEvent::Removed {});
    let id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c";
    golden(
        id,
        VideoProjectEvent::Requested(ProjectRequested {
            title: "Synthwave facts".to_owned(),
            script: Some("The sun.\n\nThe sea.".to_owned()),
            topic: None,
            persona: Some(persona),
            format: VideoFormat::Portrait,
            visuals: Visuals::Clips,
            target_secs: 30,
            music: None,
            priority: 2,
            post: Some(AutoPost {
                text: "New: {title}".to_owned(),
                destinations: vec![Destination::Twitch, Destination::Kick],
            }),
        }),
    );
    golden(
        id,
        VideoProjectEvent::ScriptWritten {
            script: "The sun.\n\nThe sea.".to_owned(),
            model: None,
        },
    );
    golden(
        id,
        VideoProjectEvent::ScenesPlanned {
            scenes: vec![PlannedScene {
                n: 1,
                text: "The sun.".to_owned(),
                prompt: "neon portrait of Nova, pink hair, The sun., embedding:nova-face"
                    .to_owned(),
                negative_prompt: "blurry".to_owned(),
                seed: 4242,
            }],
        },
    );
    golden(
        id,
        VideoProjectEvent::SceneRenderQueued {
            n: 1,
            render_job_id: "0193a1b2-0000-7000-8000-000000000009".to_owned(),
        },
    );
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned();
    golden(
        id,
        VideoProjectEvent::SceneRendered {
            n: 1,
            artifact: sha.clone(),
        },
    );
    golden(
        id,
        VideoProjectEvent::SceneNarrated {
            n: 1,
            artifact: sha.clone(),
            duration_ms: 1250,
            voice: "espeak-ng:en-us".to_owned(),
            sentences: vec![TimedText {
                text: "The sun.".to_owned(),
                start_ms: 0,
                end_ms: 1250,
            }],
        },
    );
    golden(
        id,
        VideoProjectEvent::Assembled {
            video: sha.clone(),
            subtitles: sha.clone(),
            duration_ms: 2600,
            width: 1080,
            height: 1920,
        },
    );
    golden(id, VideoProjectEvent::ThumbnailMade { artifact: sha });
    golden(
        id,
        VideoProjectEvent::Posted {
            post_id: "0193a1b2-0000-5000-8000-00000000beef".to_owned(),
        },
    );
    golden(id, VideoProjectEvent::Completed {});
    golden(
        id,
        VideoProjectEvent::Failed {
            step: "render".to_owned(),
            reason: "scene 2: the render failed after 3 attempts".to_owned(),
        },
    );
    golden(id, VideoProjectEvent::PriorityChanged { priority: 5 });
    golden(id, VideoProjectEvent::CancelRequested {});
    golden(id, VideoProjectEvent::Cancelled {});
}

#[test]
fn video_queue_events() {
    use events::video::VideoQueueEvent;
    let project_id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c".to_owned();
    golden(
        "video",
        VideoQueueEvent::Admitted {
            project_id: project_id.clone(),
        },
    );
    golden("video", VideoQueueEvent::Released { project_id });
}

#[test]
fn schedule_events() {
    use events::video::{
        Missed, Overlap, ProjectTemplate, ScheduleDefined, ScheduleEvent, VideoFormat, Visuals,
    };
    golden(
        "nightly",
        ScheduleEvent::Defined(ScheduleDefined {
            cron: "30 2 * * *".to_owned(),
            time_zone: "Europe/Berlin".to_owned(),
            template: ProjectTemplate {
                title: "Night facts #{n}".to_owned(),
                scripts: vec!["The moon.\n\nThe stars.".to_owned()],
                topics: Vec::new(),
                persona: Some("nova".to_owned()),
                format: VideoFormat::Portrait,
                visuals: Visuals::Stills,
                target_secs: 30,
                priority: 0,
                post: None,
            },
            overlap: Overlap::Skip,
            missed: Missed::CatchUpOnce,
            enabled: true,
        }),
    );
    golden(
        "nightly",
        ScheduleEvent::Fired {
            at: at(),
            project_id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c".to_owned(),
        },
    );
    golden(
        "nightly",
        ScheduleEvent::Skipped {
            at: at(),
            count: 2,
            reason: "missed (the scheduler was not running)".to_owned(),
        },
    );
    golden("nightly", ScheduleEvent::Removed {});
}
