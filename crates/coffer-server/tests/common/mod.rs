//! Shared by the process-level tests: a fresh PostgreSQL database per test.

/// The PostgreSQL server the tests use.
pub fn admin_url() -> String {
    std::env::var("COFFER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh database, dropped at the end; `None` when PostgreSQL is absent and not required.
pub struct Database {
    /// URL of the new database.
    pub url: String,
    name: String,
}

impl Database {
    /// Creates it, or says SKIPPED and returns `None` when no server answers and none is required.
    pub fn create(prefix: &str) -> Option<Database> {
        let name = format!("coffer_{prefix}_{}", std::process::id());
        let url = admin_url();
        let created = std::thread::scope(|s| {
            s.spawn(|| -> Result<(), String> {
                let mut client =
                    postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
                // Only a server that does not answer is a reason to skip; any other error fails.
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .expect("dropping a leftover database");
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("creating the database");
                Ok(())
            })
            .join()
            .unwrap()
        });
        match created {
            Ok(()) => {
                let base = url
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_owned())
                    .unwrap_or(url);
                Some(Database {
                    url: format!("{base}/{name}"),
                    name,
                })
            }
            Err(error) if std::env::var("COFFER_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
                panic!(
                    "PostgreSQL is required but {} answers: {error}",
                    admin_url()
                )
            }
            Err(error) => {
                // Written to the process stderr directly, past the test harness capture, so a skip is
                // always visible.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "SKIPPED: no PostgreSQL server at {} ({error}); set COFFER_REQUIRE_POSTGRES=1 to fail instead",
                    admin_url()
                );
                None
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (url, name) = (admin_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut client) = postgres::Client::connect(&url, postgres::NoTls) {
                let _ =
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// Runs the real `coffer` binary; returns whether it succeeded and what it printed.
#[allow(dead_code)] // not every test binary that shares this module runs the CLI
pub fn coffer(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env("COFFER_LOG", "warn")
        .output()
        .expect("running coffer");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
