//! Serving a started node: its routes, the listener, and the drain when
//! the shutdown signal (or an operator, or a fatal cluster error) comes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::{any, delete, get, patch, post, put};
use tokio::net::TcpListener;
use tower_http::cors::{Any, CorsLayer};

use crate::app::{App, NodeError};
use crate::config::Config;
use crate::{
    admin, dead_letters, downloads, http, listener, notifications, oidc, people, profiles,
    relations, reports, results, roles, security, uploads, web, ws,
};

/// The node's listening socket, with `backlog` (tokio's `bind` gives 1024:
/// a thousand clients reconnecting at once overflowed it, and the dropped
/// SYNs came back a second later).
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's and tokio's `bind` do: a restarted node rebinds its port
    // while the old one's connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The node's routes.
pub fn routes(app: Arc<App>) -> axum::Router {
    let body_limit = app.config.limits.max_frame_bytes;
    axum::Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/auth/register", post(http::register))
        .route("/v1/auth/login", post(http::login))
        .route("/v1/auth/refresh", post(http::refresh))
        .route("/v1/auth/logout", post(http::logout))
        .route(
            "/v1/conversations/{id}/messages",
            get(http::history).post(http::send),
        )
        .route(
            "/v1/conversations/{id}/messages/{mid}",
            patch(http::edit).delete(http::delete),
        )
        .route(
            "/v1/conversations/{id}/messages/{mid}/reactions/{emoji}",
            put(http::react_on).delete(http::react_off),
        )
        .route("/v1/conversations/{id}/changes", get(http::changes))
        .route(
            "/v1/conversations/{id}/notifications",
            put(notifications::put_conversation),
        )
        .route(
            "/v1/me/notifications",
            get(notifications::settings).put(notifications::put_settings),
        )
        .route(
            "/v1/me/push-subscriptions",
            get(notifications::subscriptions).post(notifications::subscribe),
        )
        .route(
            "/v1/me/push-subscriptions/{id}",
            delete(notifications::unsubscribe),
        )
        .route(
            "/v1/push/vapid-public-key",
            get(notifications::vapid_public_key),
        )
        .route(
            "/v1/notifications/unsubscribe",
            get(notifications::unsubscribe_email).post(notifications::unsubscribe_email),
        )
        .route("/v1/me", get(profiles::me).patch(profiles::patch_me))
        .route("/v1/users", get(profiles::lookup))
        .route("/v1/users/{id}", get(profiles::user))
        .route("/v1/me/email", put(people::put_email))
        .route("/v1/me/contacts", get(relations::contacts))
        .route(
            "/v1/me/contacts/{user}",
            put(relations::add_contact).delete(relations::remove_contact),
        )
        .route("/v1/me/blocks", get(relations::blocks))
        .route(
            "/v1/me/blocks/{user}",
            put(relations::block).delete(relations::unblock),
        )
        .route(
            "/v1/me/privacy",
            get(relations::privacy).put(relations::put_privacy),
        )
        .route("/v1/auth/verify-email", post(people::verify_email))
        .route("/v1/conversations/{id}", patch(roles::set_title))
        .route(
            "/v1/conversations/{id}/members/{user}",
            put(roles::set_role),
        )
        .route("/v1/auth/providers", get(oidc::providers))
        .route("/v1/auth/oidc/start", get(oidc::start))
        .route("/v1/auth/oidc/callback", get(oidc::callback))
        .route("/v1/me/sessions", get(security::sessions))
        .route("/v1/me/sessions/{id}", delete(security::end_session))
        .route("/v1/auth/password", post(security::change_password))
        .route("/v1/auth/password-reset", post(security::request_reset))
        .route(
            "/v1/auth/password-reset/confirm",
            post(security::confirm_reset),
        )
        .route(
            "/v1/me/totp",
            post(security::totp_enrol).delete(security::totp_disable),
        )
        .route("/v1/me/totp/confirm", post(security::totp_confirm))
        .route("/v1/search", get(results::search))
        .route("/v1/media", post(uploads::upload))
        .route(
            "/v1/media/{id}",
            get(downloads::original).delete(downloads::delete),
        )
        .route("/v1/media/{id}/thumbnail", get(downloads::thumbnail))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .route("/v1/cluster", get(http::cluster_status))
        .route("/v1/cluster/nodes", get(web::cluster_nodes))
        .route("/v1/admin/nodes", get(admin::nodes))
        .route("/v1/admin/nodes/{name}/drain", post(admin::drain))
        .route("/v1/admin/users/{id}", get(admin::user))
        .route("/v1/admin/users/{id}/disconnect", post(admin::disconnect))
        .route("/v1/admin/users/{id}/suspend", post(admin::suspend))
        .route("/v1/admin/users/{id}/unsuspend", post(admin::unsuspend))
        .route("/v1/admin/conversations/{id}", get(admin::conversation))
        .route("/v1/admin/audit", get(admin::audit_log))
        .route("/v1/reports", post(reports::create))
        .route("/v1/admin/reports", get(reports::list))
        .route("/v1/admin/reports/{id}/resolve", post(reports::resolve))
        .route("/v1/admin/webhooks/dead", get(dead_letters::list))
        .route(
            "/v1/admin/webhooks/dead/{id}/replay",
            post(dead_letters::replay),
        )
        .merge(web::routes(&app.config.web))
        .merge(
            axum::Router::new()
                .route(crate::socketio::PATH, any(crate::socketio::route))
                .with_state(crate::socketio::Servers::new(&app)),
        )
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            web::Guard::new(&app.config.web),
            web::guard,
        ))
        // Bearer tokens, no cookies: any origin may call the API (a page
        // served by one node signs in through another when it is down; the
        // nodes a page may use are bounded by the page, `web`, not here).
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods(Any)
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        )
        .with_state(app)
}

/// Serves on `listener` until `shutdown` resolves, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let app = App::start(config).await?;
    serve(app, listener, shutdown).await
}

/// Serves an already started node.
pub async fn serve(
    app: Arc<App>,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let routes = routes(app.clone());
    let token = app.shutdown.clone();
    let trigger = app.shutdown.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let (failed_tx, mut failed_rx) = tokio::sync::watch::channel(None::<String>);
    if let Some((m, _)) = &app.membership {
        let drain = m.drain_requested();
        let trigger = app.shutdown.clone();
        tokio::spawn(async move {
            drain.await;
            tracing::warn!("draining at an operator's request");
            trigger.cancel();
        });
        let fatal = m.fatal();
        let trigger = app.shutdown.clone();
        tokio::spawn(async move {
            let why = fatal.await;
            tracing::error!("{why}; stopping");
            let _ = failed_tx.send(Some(why));
            trigger.cancel();
        });
    }
    let bounds = listener::Bounds {
        header_read_timeout: Duration::from_secs(app.config.listen.header_read_timeout_secs),
        max_connections_per_ip: app.config.listen.max_connections_per_ip,
        // A client's socket may accept nothing for the idle timeout before
        // its writer cuts it (4003); the kernel's bound sits just past it.
        send_timeout: Duration::from_secs(app.config.limits.idle_timeout_secs + 5),
    };
    listener::serve(tcp, routes, bounds, app.tls.clone(), token).await?;
    app.drain().await;
    if let Some(why) = failed_rx.borrow_and_update().clone() {
        return Err(crate::membership::JoinError::Duplicate(why).into());
    }
    Ok(())
}
