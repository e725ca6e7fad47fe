//! `coffer sandbox-receipt` prints receipts the development server's sandbox store accepts.

use std::process::Command;

use coffer_receipts::{Platform, SandboxIssuer, VerifiedNotification, Verifier, VerifierConfig};

fn coffer(args: &[&str]) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .output()
        .expect("running coffer");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8(output.stdout).unwrap().trim().to_owned(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn sandbox_receipts_from_the_cli_verify_with_the_data_directory_key() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (receipt, stderr) = coffer(&[
        "sandbox-receipt",
        "--data-dir",
        data_dir,
        "--player",
        "alice",
        "--product",
        "gems_100",
    ]);
    let key = coffer_server::receipts::development_sandbox_key(dir.path()).unwrap();
    let verifier = Verifier::new(VerifierConfig {
        sandbox: Some(SandboxIssuer::from_secret_key(key).config()),
        ..VerifierConfig::default()
    })
    .unwrap();
    let purchase = verifier
        .verify_receipt(Platform::Sandbox, &receipt, 0)
        .unwrap();
    assert_eq!(
        (
            purchase.product_id.as_str(),
            purchase.player_hint.as_deref()
        ),
        ("gems_100", Some("alice"))
    );
    assert!(stderr.contains(&purchase.store_transaction_id), "{stderr}");

    let (notice, _) = coffer(&[
        "sandbox-receipt",
        "--data-dir",
        data_dir,
        "--refund",
        &purchase.store_transaction_id,
    ]);
    let VerifiedNotification::Refund(refund) = verifier
        .verify_notification(Platform::Sandbox, &notice, 0)
        .unwrap()
    else {
        panic!("expected a refund notice");
    };
    assert_eq!(refund.store_transaction_id, purchase.store_transaction_id);
}
