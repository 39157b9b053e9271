//! Every protected route and the role it needs, in one table: the router is built from it and
//! the role check reads it, so a route cannot exist without a role. `/health`, the dashboard's
//! static files and share links are the only open doors (see [`crate::router`]).

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};
use events::access::Role;

use crate::{
    AppState, ai_dev, api, approvals, apps, chat, containers, dlq, domains, health, hosts,
    log_follow, market, node_services, posts, render, secrets, setup, shares, sweeps, tokens,
    video, ws,
};

/// One protected route: what a caller needs to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    /// The route pattern, `{name}` for a path parameter.
    pub path: &'static str,
    pub role: Role,
}

struct Entry {
    endpoint: Endpoint,
    route: MethodRouter<AppState>,
}

impl Entry {
    fn body_limit(mut self, bytes: usize) -> Self {
        self.route = self.route.layer(DefaultBodyLimit::max(bytes));
        self
    }
}

fn entry<H, T>(role: Role, method: Method, path: &'static str, handler: H) -> Entry
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Entry {
        endpoint: Endpoint { method, path, role },
        route: on(filter, handler),
    }
}

fn table() -> Vec<Entry> {
    use Role::{Admin, Operator, Viewer};
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    vec![
        // Reads.
        entry(Viewer, get.clone(), "/metrics", health::metrics),
        entry(Viewer, get.clone(), "/ws", ws::upgrade),
        entry(Viewer, post.clone(), "/api/ws-ticket", tokens::ws_ticket),
        entry(Viewer, get.clone(), "/api/whoami", tokens::whoami),
        entry(Viewer, get.clone(), "/api/nodes", api::list_nodes),
        entry(Viewer, get.clone(), "/api/nodes/{id}", api::get_node),
        entry(Viewer, get.clone(), "/api/nodes/{id}/tags", api::get_tags),
        entry(Viewer, get.clone(), "/api/hosts", hosts::list),
        entry(Viewer, get.clone(), "/api/approvals", approvals::list),
        entry(Viewer, get.clone(), "/api/apps", apps::list),
        entry(Viewer, get.clone(), "/api/marketplace", market::list),
        entry(Viewer, get.clone(), "/api/domains", domains::list),
        entry(Viewer, get.clone(), "/api/apps/{name}", apps::get),
        entry(Viewer, get.clone(), "/api/deploys/{id}", apps::run),
        entry(Viewer, get.clone(), "/api/approvals/{id}", approvals::get),
        entry(Viewer, get.clone(), "/api/ai-dev/jobs", ai_dev::list),
        entry(Viewer, get.clone(), "/api/ai-dev/jobs/{id}", ai_dev::get),
        entry(
            Viewer,
            get.clone(),
            "/api/video/personas",
            video::list_personas,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/video/projects",
            video::list_projects,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/video/schedules",
            video::list_schedules,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/video/projects/{id}",
            video::get_project,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/video/personas/{name}",
            video::get_persona,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/nodes/{id}/containers/{name}/logs/follow",
            log_follow::follow,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/nodes/{id}/services",
            node_services::list,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/host-execs/{id}",
            hosts::execution,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/nodes/{id}/containers",
            containers::list,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/container-commands/{id}",
            containers::command,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/nodes/{id}/containers/{name}/logs",
            containers::logs,
        ),
        entry(Viewer, get.clone(), "/api/events", api::list_events),
        entry(
            Viewer,
            get.clone(),
            "/api/projections",
            api::list_projections,
        ),
        entry(Viewer, get.clone(), "/api/storage", health::storage),
        entry(Viewer, get.clone(), "/api/artifacts/sweeps", sweeps::list),
        entry(
            Viewer,
            get.clone(),
            "/api/artifacts/sweeps/{id}",
            sweeps::get,
        ),
        entry(Viewer, get.clone(), "/api/render/jobs", render::list),
        entry(Viewer, get.clone(), "/api/render/jobs/{id}", render::get),
        entry(Viewer, get.clone(), "/api/render/queue", render::queue),
        entry(
            Viewer,
            get.clone(),
            "/api/render/artifacts/{sha256}",
            shares::artifact,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/chat/settings",
            chat::list_settings,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/chat/settings/{platform}/{scope}",
            chat::get_settings,
        ),
        entry(
            Viewer,
            get.clone(),
            "/api/chat/commands",
            chat::list_commands,
        ),
        entry(Viewer, get.clone(), "/api/dlq", dlq::list),
        entry(Viewer, get.clone(), "/api/dlq/{seq}", dlq::get),
        entry(Viewer, get.clone(), "/api/posts/{id}", posts::get),
        // Work.
        entry(Operator, post.clone(), "/api/ai-dev/jobs", ai_dev::create),
        entry(
            Operator,
            put.clone(),
            "/api/video/personas/{name}",
            video::put_persona,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/video/projects",
            video::create_project,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/video/music",
            video::upload_music,
        )
        .body_limit(video::MAX_MUSIC_BYTES),
        entry(
            Operator,
            post.clone(),
            "/api/video/projects/{id}/cancel",
            video::cancel_project,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/video/projects/{id}/priority",
            video::set_priority,
        ),
        entry(
            Operator,
            put.clone(),
            "/api/video/schedules/{name}",
            video::put_schedule,
        ),
        entry(
            Operator,
            delete.clone(),
            "/api/video/schedules/{name}",
            video::remove_schedule,
        ),
        entry(
            Operator,
            delete.clone(),
            "/api/video/personas/{name}",
            video::remove_persona,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/ai-dev/jobs/{id}/cancel",
            ai_dev::cancel,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/ai-dev/jobs/{id}/rollback",
            ai_dev::rollback,
        ),
        entry(Operator, post.clone(), "/api/render/jobs", render::submit),
        entry(
            Operator,
            post.clone(),
            "/api/render/jobs/{id}/cancel",
            render::cancel,
        ),
        entry(
            Operator,
            delete.clone(),
            "/api/render/jobs/{id}",
            render::delete_job,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/render/jobs/{id}/priority",
            render::priority,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/render/queue/pause",
            render::pause,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/render/queue/resume",
            render::resume,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/render/inputs",
            render::upload_input,
        )
        .body_limit(render::MAX_INPUT_BYTES),
        entry(
            Operator,
            post.clone(),
            "/api/render/jobs/{id}/shares",
            shares::share,
        ),
        entry(
            Operator,
            delete.clone(),
            "/api/render/jobs/{id}/shares/{sha256}",
            shares::revoke,
        ),
        entry(Operator, post.clone(), "/api/posts", posts::create),
        // The approval's own policy decides who may: operator is the least it can ask.
        entry(
            Operator,
            post.clone(),
            "/api/approvals/{id}/approve",
            approvals::approve,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/approvals/{id}/reject",
            approvals::reject,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/hosts/{name}/exec",
            hosts::exec,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/nodes/{id}/containers/{name}/start",
            containers::start,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/nodes/{id}/containers/{name}/stop",
            containers::stop,
        ),
        entry(
            Operator,
            post.clone(),
            "/api/nodes/{id}/containers/{name}/restart",
            containers::restart,
        ),
        // Settings, access and whatever republishes stored bytes.
        entry(
            Admin,
            put.clone(),
            "/api/chat/settings/{platform}/{scope}",
            chat::put_settings,
        ),
        entry(Admin, post.clone(), "/api/dlq/{seq}/replay", dlq::replay),
        entry(Admin, post.clone(), "/api/artifacts/sweeps", sweeps::plan),
        entry(
            Admin,
            post.clone(),
            "/api/artifacts/sweeps/{id}/collect",
            sweeps::collect,
        ),
        entry(
            Admin,
            delete.clone(),
            "/api/nodes/{id}/containers/{name}",
            containers::remove,
        ),
        entry(
            Admin,
            post.clone(),
            "/api/nodes/{id}/containers",
            containers::create,
        ),
        entry(Admin, put.clone(), "/api/nodes/{id}/tags", api::put_tags),
        entry(Admin, get.clone(), "/api/setup", setup::get),
        entry(Admin, post.clone(), "/api/setup/steps/{step}", setup::step),
        entry(Admin, post.clone(), "/api/setup/dismiss", setup::dismiss),
        entry(Admin, post.clone(), "/api/setup/reopen", setup::reopen),
        entry(Admin, post.clone(), "/api/setup/join", setup::join),
        entry(Admin, post.clone(), "/api/domains", domains::add),
        entry(
            Admin,
            delete.clone(),
            "/api/domains/{host}",
            domains::remove,
        ),
        entry(Admin, post.clone(), "/api/apps", apps::create),
        entry(
            Admin,
            post.clone(),
            "/api/marketplace/{id}/install",
            market::install,
        ),
        entry(Admin, put.clone(), "/api/apps/{name}", apps::update),
        entry(Admin, delete.clone(), "/api/apps/{name}", apps::remove),
        entry(Admin, post.clone(), "/api/apps/{name}/deploy", apps::deploy),
        entry(
            Admin,
            post.clone(),
            "/api/apps/{name}/rollback",
            apps::rollback,
        ),
        entry(Admin, post.clone(), "/api/hosts", hosts::add),
        entry(Admin, delete.clone(), "/api/hosts/{name}", hosts::remove),
        entry(
            Admin,
            post.clone(),
            "/api/hosts/{name}/accept-key",
            hosts::accept_key,
        ),
        entry(Admin, get.clone(), "/api/tokens", tokens::list),
        entry(Admin, post, "/api/tokens", tokens::create),
        entry(Admin, delete.clone(), "/api/tokens/{name}", tokens::revoke),
        entry(Admin, get, "/api/secrets", secrets::list),
        entry(Admin, put.clone(), "/api/secrets/{name}", secrets::put),
        entry(Admin, delete, "/api/secrets/{name}", secrets::remove),
    ]
}

/// Every protected route with its role (what the role-matrix test walks).
pub fn endpoints() -> Vec<Endpoint> {
    table().into_iter().map(|entry| entry.endpoint).collect()
}

/// The protected routes and the role table the access check reads.
pub(crate) fn protected() -> (Router<AppState>, crate::access::RoleTable) {
    let mut roles = crate::access::RoleTable::new();
    let mut router = Router::new();
    for Entry { endpoint, route } in table() {
        let previous = roles.insert((endpoint.method, endpoint.path), endpoint.role);
        assert!(
            previous.is_none(),
            "{} is in the route table twice",
            endpoint.path
        );
        router = router.route(endpoint.path, route);
    }
    (router, roles)
}
