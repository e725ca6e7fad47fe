//! The server's own view of a phase's latency, read from its request-duration histogram
//! (`coffer_request_duration_seconds`) before and after the phase. The server times a request
//! from when it enters its service stack to when its last frame is handed to HTTP/2, so the
//! difference to what the generator measured is the rest of the round trip: the client, the
//! sockets, and threads waiting for a core on a machine both sides share.

use serde::Serialize;

/// The histogram's bucket lines in the Prometheus text format.
const REQUEST_DURATION_BUCKET_METRIC: &str = "coffer_request_duration_seconds_bucket";

/// Cumulative request counts per bucket bound (seconds, ascending), summed over methods.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestDurations(Vec<(f64, u64)>);

impl RequestDurations {
    /// The histogram in a `/metrics` body (empty while the server has answered nothing).
    pub fn parse(body: &str) -> Result<RequestDurations, String> {
        let mut by_bound: Vec<(f64, u64)> = Vec::new();
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(REQUEST_DURATION_BUCKET_METRIC) else {
                continue;
            };
            let malformed = || format!("unreadable histogram line: {line:?}");
            let (labels, count) = rest.rsplit_once(' ').ok_or_else(malformed)?;
            let bound = labels
                .split_once("le=\"")
                .and_then(|(_, after)| after.split_once('"'))
                .map(|(bound, _)| bound)
                .ok_or_else(malformed)?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse::<f64>().map_err(|_| malformed())?
            };
            let count = count.trim().parse::<f64>().map_err(|_| malformed())? as u64;
            match by_bound.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, total)) => *total += count,
                None => by_bound.push((bound, count)),
            }
        }
        by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(RequestDurations(by_bound))
    }

    /// What was recorded between `earlier` and `self` (the same server, scraped later).
    pub fn since(&self, earlier: &RequestDurations) -> RequestDurations {
        RequestDurations(
            self.0
                .iter()
                .map(|&(bound, count)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(b, _)| *b == bound)
                        .map_or(0, |&(_, c)| c);
                    (bound, count.saturating_sub(before))
                })
                .collect(),
        )
    }

    /// Requests counted (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |&(_, count)| count)
    }

    /// The smallest bucket bound, in µs, that at least `quantile` of the requests stayed
    /// within; `None` without requests or when it is the unbounded bucket.
    pub fn quantile_at_most_us(&self, quantile: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let needed = ((quantile * total as f64).ceil() as u64).max(1);
        self.0
            .iter()
            .find(|&&(_, count)| count >= needed)
            .and_then(|&(bound, _)| bound.is_finite().then(|| (bound * 1e6).round() as u64))
    }
}

/// A phase's latency as the server measured it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerLatency {
    /// Requests the server answered during the phase.
    pub requests: u64,
    /// Bucket bounds its median and 99th percentile fell within.
    pub p50_us_at_most: Option<u64>,
    pub p99_us_at_most: Option<u64>,
}

impl ServerLatency {
    /// From the histogram before and after a phase; `None` when the server answered nothing
    /// in it (a phase that does not call the server).
    pub fn between(before: &RequestDurations, after: &RequestDurations) -> Option<ServerLatency> {
        let phase = after.since(before);
        (phase.count() > 0).then(|| ServerLatency {
            requests: phase.count(),
            p50_us_at_most: phase.quantile_at_most_us(0.50),
            p99_us_at_most: phase.quantile_at_most_us(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(buckets: &[(&str, &str, u64)]) -> String {
        let mut text = String::from(
            "# HELP coffer_request_duration_seconds Request durations.\n\
             coffer_requests_total{method=\"a\",code=\"OK\"} 99\n",
        );
        for (method, le, count) in buckets {
            text.push_str(&format!(
                "{REQUEST_DURATION_BUCKET_METRIC}{{method=\"{method}\",le=\"{le}\"}} {count}\n"
            ));
        }
        text.push_str("coffer_request_duration_seconds_count{method=\"a\"} 7\n");
        text
    }

    #[test]
    fn buckets_of_all_methods_add_up_and_the_phase_is_the_difference() {
        let before = RequestDurations::parse(&body(&[
            ("a", "0.001", 5),
            ("a", "0.01", 10),
            ("a", "+Inf", 10),
        ]))
        .unwrap();
        let after = RequestDurations::parse(&body(&[
            ("a", "0.001", 5),
            ("a", "0.01", 10),
            ("a", "+Inf", 10),
            ("b", "0.001", 90),
            ("b", "0.01", 105),
            ("b", "+Inf", 110),
        ]))
        .unwrap();
        let latency = ServerLatency::between(&before, &after).unwrap();
        assert_eq!(latency.requests, 110);
        assert_eq!(latency.p50_us_at_most, Some(1_000));
        // 99 % of 110 is 108.9: 109 requests, more than the 105 within 10 ms.
        assert_eq!(latency.p99_us_at_most, None);
    }

    #[test]
    fn a_quantile_is_the_first_bound_that_holds_enough_requests() {
        let phase = RequestDurations::parse(&body(&[
            ("a", "0.0001", 0),
            ("a", "0.005", 98),
            ("a", "0.01", 99),
            ("a", "0.015", 100),
            ("a", "+Inf", 100),
        ]))
        .unwrap();
        assert_eq!(phase.quantile_at_most_us(0.5), Some(5_000));
        assert_eq!(phase.quantile_at_most_us(0.99), Some(10_000));
        assert_eq!(phase.quantile_at_most_us(0.999), Some(15_000));
    }

    #[test]
    fn a_phase_without_server_requests_has_no_server_latency() {
        let empty = RequestDurations::parse("# nothing served yet\n").unwrap();
        assert_eq!(empty.count(), 0);
        assert_eq!(ServerLatency::between(&empty, &empty), None);
        let some = RequestDurations::parse(&body(&[("a", "0.01", 3), ("a", "+Inf", 3)])).unwrap();
        assert_eq!(ServerLatency::between(&some, &some), None);
    }

    #[test]
    fn an_unreadable_bucket_line_is_an_error() {
        let broken = format!("{REQUEST_DURATION_BUCKET_METRIC}{{method=\"a\",le=\"0.01\"}} many\n");
        assert!(RequestDurations::parse(&broken).is_err());
        let no_bound = format!("{REQUEST_DURATION_BUCKET_METRIC}{{method=\"a\"}} 3\n");
        assert!(RequestDurations::parse(&no_bound).is_err());
    }
}
