//! The integrity check before serving: the ledger verifier replays the stored ledger (after redb
//! has checked its pages on open) and the server refuses to start on a ledger that breaks an
//! invariant. A large ledger must not keep a studio's server down for minutes, so the wait is
//! bounded: past the limit the server starts and the check finishes in the background, where a
//! violation is logged as an error (`coffer verify` and `VerifyLedger` run the same check).

use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use coffer_core::Catalog;
use coffer_store::Store;

use crate::ServerError;

/// Default for [`crate::Config::startup_check_time_limit_ms`].
pub const STARTUP_CHECK_TIME_LIMIT_MS_DEFAULT: u64 = 10_000;

/// Violations quoted in the error that stops the start.
const VIOLATIONS_QUOTED_MAX: usize = 5;

/// How the check ended, when it let the server start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupCheck {
    /// Turned off (`time_limit_ms = 0`).
    Skipped,
    /// The whole ledger was replayed and is sound.
    Clean { transactions_checked: u64 },
    /// Still running when the time limit passed; it goes on in the background.
    StillRunning,
}

/// Runs the check, waiting at most `time_limit_ms` (0 turns it off).
pub fn run(
    store: &Arc<dyn Store>,
    catalog: &Arc<Catalog>,
    time_limit_ms: u64,
) -> Result<StartupCheck, ServerError> {
    if time_limit_ms == 0 {
        tracing::warn!("startup integrity check turned off");
        return Ok(StartupCheck::Skipped);
    }
    let started = Instant::now();
    let (done, result) = channel();
    let (store, catalog) = (Arc::clone(store), Arc::clone(catalog));
    std::thread::Builder::new()
        .name("coffer-startup-check".to_owned())
        .spawn(move || {
            let report = store.verify(&catalog);
            // Released before the answer goes out: a start that fails right after the check
            // must leave the database closed (redb's file lock), not held by this thread.
            drop(store);
            if let Err(unheard) = done.send(report) {
                // The server started without waiting: the log is the only place left to say it.
                match unheard.0 {
                    Ok(report) if report.is_clean() => tracing::info!(
                        transactions = report.transactions_checked,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "background ledger check finished: clean"
                    ),
                    Ok(report) => tracing::error!(
                        violations = report.violation_count,
                        first = ?report.violations.first(),
                        "background ledger check found violations; run `coffer verify` with the server stopped"
                    ),
                    Err(error) => tracing::error!(%error, "background ledger check failed"),
                }
            }
        })
        .expect("spawning the startup check");
    match result.recv_timeout(Duration::from_millis(time_limit_ms)) {
        Ok(Ok(report)) if report.is_clean() => {
            tracing::info!(
                transactions = report.transactions_checked,
                accounts = report.accounts_checked,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "startup ledger check: clean"
            );
            Ok(StartupCheck::Clean {
                transactions_checked: report.transactions_checked,
            })
        }
        Ok(Ok(report)) => Err(ServerError::LedgerViolations {
            count: report.violation_count,
            first: report
                .violations
                .into_iter()
                .take(VIOLATIONS_QUOTED_MAX)
                .collect::<Vec<_>>()
                .join("; "),
        }),
        Ok(Err(error)) => Err(ServerError::Store(error)),
        Err(RecvTimeoutError::Timeout) => {
            tracing::warn!(
                time_limit_ms,
                "startup ledger check still running at its time limit; serving, and it goes on in the background"
            );
            Ok(StartupCheck::StillRunning)
        }
        Err(RecvTimeoutError::Disconnected) => Err(ServerError::StartupCheckCrashed),
    }
}
