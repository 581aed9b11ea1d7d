//! What the payments service asks of the ledger service, over gRPC with its own service token: the
//! accounts it posts to (opened idempotently by code on first use, their ids cached) and one balanced
//! transaction per capture and per refund, under ids that make every retry safe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::common::Money;
use api::mercato::ledger::v1::ledger_service_client::LedgerServiceClient;
use api::mercato::ledger::v1::{AccountType, CreateAccountRequest, Posting, RecordTransactionRequest};
use platform::grpc::Channel;
use platform::grpc::TracedChannel;
use tonic::Status;

pub use platform::auth::{StaticToken, TokenSource};

use crate::domain;
use crate::store::{PaymentRow, RefundRow};

/// How often unposted captures and refunds are retried by default.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// The ledger service as the payments service uses it.
#[derive(Clone)]
pub struct LedgerClient {
    client: LedgerServiceClient<TracedChannel>,
    tokens: Arc<dyn TokenSource>,
    accounts: Arc<Mutex<HashMap<String, String>>>,
    retry_interval: Duration,
}

impl std::fmt::Debug for LedgerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerClient").field("retry_interval", &self.retry_interval).finish_non_exhaustive()
    }
}

impl LedgerClient {
    /// The ledger behind `channel`, called with tokens from `tokens`; unposted work is retried every
    /// [`DEFAULT_RETRY_INTERVAL`].
    pub fn new(channel: Channel, tokens: Arc<dyn TokenSource>) -> Self {
        Self {
            client: LedgerServiceClient::new(TracedChannel::new(channel)),
            tokens,
            accounts: Arc::default(),
            retry_interval: DEFAULT_RETRY_INTERVAL,
        }
    }

    /// The same client retrying unposted work every `interval` instead.
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// How often unposted work is retried.
    pub fn retry_interval(&self) -> Duration {
        self.retry_interval
    }

    async fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Status> {
        let token = self.tokens.token().await?;
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {token}").parse().map_err(|_| Status::internal("unusable service token"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    fn cached(&self, code: &str) -> Option<String> {
        self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(code).cloned()
    }

    /// The id of account `code`, opened on first use (CreateAccount is idempotent by code).
    async fn account(
        &self,
        code: &str,
        name: String,
        account_type: AccountType,
        currency: &str,
    ) -> Result<String, Status> {
        if let Some(id) = self.cached(code) {
            return Ok(id);
        }
        let request = self
            .request(CreateAccountRequest {
                code: code.to_owned(),
                name,
                r#type: account_type as i32,
                currency: currency.to_owned(),
            })
            .await?;
        let account = self
            .client
            .clone()
            .create_account(request)
            .await?
            .into_inner()
            .account
            .ok_or_else(|| Status::internal("the ledger returned no account"))?;
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(code.to_owned(), account.id.clone());
        Ok(account.id)
    }

    async fn processor_account(&self, currency: &str) -> Result<String, Status> {
        let name = format!("Funds at the payment processor ({currency})");
        self.account(&domain::processor_account(currency), name, AccountType::Asset, currency).await
    }

    async fn record(
        &self,
        id: String,
        description: String,
        postings: Vec<Posting>,
        metadata: Vec<(&str, &str)>,
    ) -> Result<(), Status> {
        let request = self
            .request(RecordTransactionRequest {
                transaction_id: id,
                description,
                postings,
                metadata: metadata.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
                reverses_transaction_id: String::new(),
            })
            .await?;
        self.client.clone().record_transaction(request).await?;
        Ok(())
    }

    /// The account of the tax sales in `currency` included (opened on first use).
    async fn tax_account(&self, currency: &str) -> Result<String, Status> {
        let name = format!("Tax owed on sales ({currency})");
        self.account(&domain::tax_account(currency), name, AccountType::Liability, currency).await
    }

    /// Records the capture of `p`: debit `assets:processor:<cur>`, credit `revenue:sales:<cur>` with what it
    /// did not include in tax and `liabilities:tax:<cur>` with the tax (when it included some). Safe to repeat:
    /// the transaction id is `payment:<id>:capture`.
    pub async fn post_capture(&self, p: &PaymentRow) -> Result<(), Status> {
        let assets = self.processor_account(&p.currency).await?;
        let sales_name = format!("Sales ({})", p.currency);
        let sales =
            self.account(&domain::sales_account(&p.currency), sales_name, AccountType::Revenue, &p.currency).await?;
        let mut postings = vec![
            posting(assets, &p.currency, p.amount_minor),
            posting(sales, &p.currency, -(p.amount_minor - p.tax_minor)),
        ];
        if p.tax_minor > 0 {
            postings.push(posting(self.tax_account(&p.currency).await?, &p.currency, -p.tax_minor));
        }
        self.record(
            domain::capture_transaction_id(&p.id),
            format!("Capture of payment {} for order {}", p.id, p.order_id),
            postings,
            vec![("payment_id", &p.id), ("order_id", &p.order_id)],
        )
        .await
    }

    /// Records refund `r` of `p`: debit the contra-revenue account `revenue:refunds:<cur>` with what it does not
    /// give back in tax and `liabilities:tax:<cur>` with its share of the payment's tax ([`domain::refund_tax`]),
    /// credit `assets:processor:<cur>`. Safe to repeat: the transaction id is `payment:<id>:refund:<refund id>`.
    pub async fn post_refund(&self, p: &PaymentRow, r: &RefundRow) -> Result<(), Status> {
        let refunds_name = format!("Refunds of sales ({})", r.currency);
        let refunds = self
            .account(&domain::refunds_account(&r.currency), refunds_name, AccountType::Revenue, &r.currency)
            .await?;
        let assets = self.processor_account(&r.currency).await?;
        let tax = domain::refund_tax(p.amount_minor, p.tax_minor, r.amount_minor);
        let mut postings =
            vec![posting(refunds, &r.currency, r.amount_minor - tax), posting(assets, &r.currency, -r.amount_minor)];
        if tax > 0 {
            postings.push(posting(self.tax_account(&r.currency).await?, &r.currency, tax));
        }
        self.record(
            domain::refund_transaction_id(&p.id, &r.refund_id),
            format!("Refund {} of payment {} for order {}", r.refund_id, p.id, p.order_id),
            postings,
            vec![("payment_id", &p.id), ("order_id", &p.order_id), ("refund_id", &r.refund_id)],
        )
        .await
    }
}

fn posting(account_id: String, currency: &str, amount_minor: i64) -> Posting {
    Posting { account_id, amount: Some(Money { currency: currency.to_owned(), amount_minor }) }
}
