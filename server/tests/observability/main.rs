//! Observability: the Prometheus exposition on `/metrics` moves with real traffic, and the
//! server binary exports a request span over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

mod bounded;
mod exposition;
mod metrics;
mod otlp;
