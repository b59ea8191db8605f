//! The API server's HTTP series, registered beside the domain's (`niso_registry::metrics`):
//! requests by route template, method and status, their latency, and requests in flight.
//!
//! Every label value comes from a closed set (route templates or `unmatched`, known methods or
//! `other`, the statuses our handlers emit): a value taken from the request would let any
//! client add series without bound.

use niso_registry::metrics::{LATENCY_BUCKETS, Metrics};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub in_flight: IntGauge,
}

impl HttpMetrics {
    /// Creates the HTTP series in `metrics`' registry (once per registry).
    pub fn register(metrics: &Metrics) -> HttpMetrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "niso_http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "niso_http_request_duration_seconds",
                "HTTP request latency by route template",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("niso_http_requests_in_flight", "HTTP requests being served")
            .expect("valid metric");
        let registry = metrics.prometheus();
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry
                .register(collector)
                .expect("HTTP metrics registered once");
        }
        HttpMetrics {
            requests,
            request_seconds,
            in_flight,
        }
    }
}

/// The method as a label value: a known method, or `other` for anything a client made up.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, label)| label)
}

/// One request counted in `niso_http_requests_in_flight` for as long as this lives. Dropping
/// it gives the count back, so a request whose future is dropped (the client went away) or
/// unwinds (a handler panicked) leaves the gauge as it found it.
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn start(gauge: &IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::{HttpMetrics, InFlight, method_label};
    use axum::http::Method;
    use niso_registry::metrics::Metrics;

    #[test]
    fn method_labels_are_a_fixed_set() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for made_up in ["FOO", "get", "X-RANDOM-1234", "PROPFIND"] {
            let method = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{made_up}");
        }
    }

    #[test]
    fn in_flight_is_given_back_when_a_request_unwinds() {
        let metrics = Metrics::new();
        let http = HttpMetrics::register(&metrics);
        let gauge = http.in_flight.clone();
        let outcome = std::panic::catch_unwind(move || {
            let _request = InFlight::start(&gauge);
            assert_eq!(gauge.get(), 1);
            panic!("a handler panicked");
        });
        assert!(outcome.is_err());
        assert_eq!(http.in_flight.get(), 0);
        assert!(metrics.render().contains("niso_http_requests_in_flight 0"));
    }
}
