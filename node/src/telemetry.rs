//! OpenTelemetry traces: when `[telemetry] otlp_endpoint` is set, spans of
//! sampled sends (see `chat_actors::telemetry`) are batched on a thread of
//! the SDK's and exported over OTLP/HTTP; otherwise nothing is set up and
//! the actors make no spans at all.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::config::Config;

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("telemetry: {0}")]
pub struct TelemetryError(String);

/// The exporter, flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sets up the exporter and turns tracing on, if configured.
    pub fn init(config: &Config) -> Result<Option<Telemetry>, TelemetryError> {
        let t = &config.telemetry;
        let Some(endpoint) = &t.otlp_endpoint else {
            return Ok(None);
        };
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint))
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(t.service_name.clone())
            .with_attribute(KeyValue::new("chat.node", config.node.name.clone()))
            .with_attribute(KeyValue::new("chat.node_id", i64::from(config.node.id)))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        chat_actors::telemetry::enable(t.sampling_ratio);
        tracing::info!(endpoint, ratio = t.sampling_ratio, "exporting traces");
        Ok(Some(Telemetry { provider }))
    }

    /// Exports what is buffered.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces not flushed");
        }
    }
}

/// The collector's traces URL: `/v1/traces` under a base URL without a path.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    if has_path {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn a_base_url_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example:443/custom/v1/traces"),
            "https://otel.example:443/custom/v1/traces"
        );
    }
}
