//! Whether the node's dependencies answer: what `/readyz` reports and what
//! the `chat_store_up` and `chat_presence_up` gauges show, probed on every
//! `/readyz` and every few seconds in between (so an alert fires without
//! anyone asking). Also `chat_build_info`.

use std::sync::Weak;
use std::time::Duration;

use chat_actors::Services;
use chat_protocol::UserId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How often the gauges are refreshed without a `/readyz`.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The label of `chat_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
}

/// The dependency probes (their gauges are the actors' metrics, which the
/// heartbeat reports to the other nodes).
#[derive(Default)]
pub struct Health;

impl Health {
    /// Registers the build info under the `chat` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("chat");
        let build: Family<BuildLabel, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "The chat-node build, as labels", build);
    }

    /// Probes the store and presence once: what is wrong, if anything.
    pub async fn probe(&self, services: &Services) -> Vec<String> {
        let mut problems = Vec::new();
        let probe = UserId::new("readyz.probe").unwrap_or_else(|_| unreachable!("valid id"));
        let store = services.store.user(&probe).await;
        services.metrics.store_up.set(i64::from(store.is_ok()));
        if let Err(e) = store {
            problems.push(format!("storage: {e}"));
        }
        let presence = services.presence.ready().await;
        services
            .metrics
            .presence_up
            .set(i64::from(presence.is_ok()));
        if let Err(e) = presence {
            problems.push(format!("presence: {e}"));
        }
        // On a store several nodes share, a node writes only under its own
        // lease: until it holds one (or while a late renewal leaves it
        // lapsed) every send would be refused, so it is not ready.
        if services.leases.needed()
            && services
                .leases
                .wait_current(std::time::Duration::ZERO)
                .await
                .is_none()
        {
            problems.push("storage: this node holds no lease on the database yet".into());
        }
        problems
    }

    /// Probes every few seconds while `owner` lives.
    pub fn watch<T: Send + Sync + 'static>(
        owner: Weak<T>,
        get: impl Fn(&T) -> (&Health, &Services) + Send + 'static,
    ) {
        tokio::spawn(async move {
            loop {
                {
                    let Some(owner) = owner.upgrade() else { return };
                    let (health, services) = get(&owner);
                    health.probe(services).await;
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
    }
}
