//! `coffer.v1.AdminService`: grants, revocations, reversals, Execute, catalog and verification.

use std::sync::Arc;

use coffer_core::{Catalog, Command, IdempotencyKey, Operation, RejectionCode, StoreRefundKind};
use coffer_proto::v1 as pb;
use coffer_receipts::{
    Platform, ReceiptError, RefundKind, SandboxPurchase, SandboxRefund, VerifiedNotification,
};
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::auth::caller_of;
use crate::convert::{self, Checker};
use crate::error::{ApiError, BadField};
use crate::receipts::core_platform;
use crate::requests::{self, AdminRequest};
use crate::wallet::now_unix_ms;
use crate::writer::WriteError;

/// The admin service.
pub struct AdminApi {
    app: Arc<App>,
}

impl AdminApi {
    /// An admin service over shared state.
    pub fn new(app: Arc<App>) -> Self {
        AdminApi { app }
    }

    async fn run<T>(
        &self,
        request: &Request<T>,
        check: fn(&T) -> Result<AdminRequest, ApiError>,
    ) -> Result<pb::Transaction, ApiError> {
        let caller = caller_of(request)?;
        let checked = check(request.get_ref())?;
        let command = Command {
            idempotency_key: checked.idempotency_key,
            operation: checked.operation,
            caller: caller.label(),
            reason: checked.reason,
        };
        let transaction = self.app.execute(command).await?;
        Ok(convert::transaction(&transaction))
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminApi {
    async fn grant(
        &self,
        request: Request<pb::GrantRequest>,
    ) -> Result<Response<pb::GrantResponse>, Status> {
        let transaction = self.run(&request, requests::grant).await?;
        Ok(Response::new(pb::GrantResponse {
            transaction: Some(transaction),
        }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let transaction = self.run(&request, requests::revoke).await?;
        Ok(Response::new(pb::RevokeResponse {
            transaction: Some(transaction),
        }))
    }

    async fn reverse(
        &self,
        request: Request<pb::ReverseRequest>,
    ) -> Result<Response<pb::ReverseResponse>, Status> {
        let transaction = self.run(&request, requests::reverse).await?;
        Ok(Response::new(pb::ReverseResponse {
            transaction: Some(transaction),
        }))
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let transaction = self.run(&request, requests::execute).await?;
        Ok(Response::new(pb::ExecuteResponse {
            transaction: Some(transaction),
        }))
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::GetTransactionResponse>, Status> {
        let id = request.get_ref().transaction_id;
        let record = self
            .app
            .blocking(move |store| store.transaction(id))
            .await?;
        let record = record.ok_or_else(|| ApiError::NotFound {
            reason: RejectionCode::TransactionNotFound,
            message: format!("no transaction {id}"),
        })?;
        Ok(Response::new(pb::GetTransactionResponse {
            transaction: Some(convert::transaction(&record.transaction)),
            reversed_by_transaction_id: record.reversed_by.unwrap_or(0),
        }))
    }

    async fn get_catalog_source(
        &self,
        _request: Request<pb::GetCatalogSourceRequest>,
    ) -> Result<Response<pb::GetCatalogSourceResponse>, Status> {
        let in_force = self
            .app
            .catalog
            .read()
            .expect("catalog lock poisoned")
            .clone();
        Ok(Response::new(pb::GetCatalogSourceResponse {
            version: in_force.catalog.version,
            catalog_toml: in_force.source_toml.to_string(),
        }))
    }

    async fn replace_catalog(
        &self,
        request: Request<pb::ReplaceCatalogRequest>,
    ) -> Result<Response<pb::ReplaceCatalogResponse>, Status> {
        caller_of(&request)?;
        let source = request.into_inner().catalog_toml;
        let catalog = Catalog::from_toml(&source).map_err(|e| {
            ApiError::InvalidArgument(vec![BadField::new("catalog_toml", e.to_string())])
        })?;
        let version = match self.app.writer.replace_catalog(catalog, source).await {
            Ok(version) => version,
            Err(WriteError::Catalog(e)) => {
                return Err(
                    ApiError::FailedPrecondition(format!("catalog not replaced: {e}")).into(),
                );
            }
            Err(WriteError::Stopped) => {
                return Err(ApiError::Unavailable("the server is shutting down".to_owned()).into());
            }
            Err(e @ (WriteError::Store(_) | WriteError::CommitFailed(_))) => {
                tracing::error!(error = %e, "saving the catalog failed");
                return Err(ApiError::Unavailable(
                    "saving the catalog failed; the old catalog stays in force".to_owned(),
                )
                .into());
            }
        };
        Ok(Response::new(pb::ReplaceCatalogResponse { version }))
    }

    async fn verify_ledger(
        &self,
        _request: Request<pb::VerifyLedgerRequest>,
    ) -> Result<Response<pb::VerifyLedgerResponse>, Status> {
        let catalog = self.app.catalog();
        let report = self
            .app
            .blocking(move |store| store.verify(&catalog))
            .await?;
        Ok(Response::new(pb::VerifyLedgerResponse {
            clean: report.is_clean(),
            transactions_checked: report.transactions_checked,
            accounts_checked: report.accounts_checked,
            violation_count: report.violation_count,
            violations: report.violations,
        }))
    }

    async fn process_store_notification(
        &self,
        request: Request<pb::ProcessStoreNotificationRequest>,
    ) -> Result<Response<pb::ProcessStoreNotificationResponse>, Status> {
        let r = request.get_ref();
        let platform = requests::store_notification(r)?;
        let caller = caller_of(&request)?;
        let notification = self
            .app
            .receipts
            .verifier
            .verify_notification(platform, &r.payload, now_unix_ms())
            .map_err(ApiError::Receipt)?;
        let refund = match notification {
            VerifiedNotification::Refund(refund) => refund,
            VerifiedNotification::Ignored { notification_type } => {
                return Ok(Response::new(pb::ProcessStoreNotificationResponse {
                    transaction: None,
                    ignored_notification_type: notification_type,
                }));
            }
        };
        let kind = match refund.kind {
            RefundKind::Refund => StoreRefundKind::Refund,
            RefundKind::Revoke => StoreRefundKind::Revoke,
        };
        let platform = core_platform(refund.platform);
        let command = Command {
            // Replaced by the store transaction's refund key in the core: one refund per purchase.
            idempotency_key: IdempotencyKey::admin(&refund.store_transaction_id),
            operation: Operation::RefundStoreTransaction {
                platform,
                store_transaction_id: refund.store_transaction_id,
                kind,
                policy: self.app.receipts.refund_policy,
            },
            caller: caller.label(),
            reason: format!("{platform} store {} notification", kind.name()).into(),
        };
        let transaction = self.app.execute(command).await?;
        Ok(Response::new(pb::ProcessStoreNotificationResponse {
            transaction: Some(convert::transaction(&transaction)),
            ignored_notification_type: String::new(),
        }))
    }

    async fn issue_sandbox_receipt(
        &self,
        request: Request<pb::IssueSandboxReceiptRequest>,
    ) -> Result<Response<pb::IssueSandboxReceiptResponse>, Status> {
        let r = request.get_ref();
        caller_of(&request)?;
        let issuer = self
            .app
            .receipts
            .sandbox_issuer
            .as_ref()
            .ok_or(ApiError::Receipt(ReceiptError::PlatformNotConfigured {
                platform: Platform::Sandbox,
            }))?;
        let issued_at_unix_ms = now_unix_ms();
        let mut check = Checker::default();
        let (issued, transaction_id) = if !r.refund_transaction_id.is_empty() {
            check.finish(())?;
            let refund = SandboxRefund {
                transaction_id: r.refund_transaction_id.clone(),
                kind: RefundKind::Refund,
                issued_at_unix_ms,
            };
            (
                issuer.issue_refund(&refund),
                r.refund_transaction_id.clone(),
            )
        } else {
            let player_id = check.id("player_id", &r.player_id);
            let product_id = check.id("product_id", &r.product_id);
            check.finish(())?;
            let transaction_id = new_sandbox_transaction_id()?;
            let purchase = SandboxPurchase {
                transaction_id: transaction_id.clone(),
                product_id: product_id.into(),
                player_id: player_id.into(),
                quantity: r.quantity.max(1),
                issued_at_unix_ms,
                price_minor_units: None,
                currency_code: None,
            };
            (issuer.issue(&purchase), transaction_id)
        };
        let payload = issued.map_err(|e| {
            ApiError::InvalidArgument(vec![BadField::new("request", e.to_string())])
        })?;
        Ok(Response::new(pb::IssueSandboxReceiptResponse {
            payload,
            store_transaction_id: transaction_id,
        }))
    }

    type ExportLedgerStream = crate::ledger_export::ExportStream;

    async fn export_ledger(
        &self,
        request: Request<pb::ExportLedgerRequest>,
    ) -> Result<Response<Self::ExportLedgerStream>, Status> {
        let caller = caller_of(&request)?;
        tracing::info!(caller = %caller.label(), "ledger export requested");
        Ok(Response::new(crate::ledger_export::start(&self.app)?))
    }

    async fn issue_player_token(
        &self,
        request: Request<pb::IssuePlayerTokenRequest>,
    ) -> Result<Response<pb::IssuePlayerTokenResponse>, Status> {
        caller_of(&request)?;
        let (player_id, ttl_seconds) = requests::issue_player_token(request.get_ref())?;
        let (token, expires_at_unix_seconds) =
            self.app.gatekeeper.tokens.issue(&player_id, ttl_seconds);
        Ok(Response::new(pb::IssuePlayerTokenResponse {
            token,
            expires_at_unix_seconds,
        }))
    }
}

/// A fresh sandbox store transaction id: `sbx_` and 16 random bytes in hex.
fn new_sandbox_transaction_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("no randomness for a sandbox id: {e}")))?;
    Ok(format!("sbx_{}", hex::encode(bytes)))
}
