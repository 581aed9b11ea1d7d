//! A property test of the ledger's invariants, over real gRPC on SQLite and PostgreSQL: for any sequence of
//! operations a client may send — balanced transactions over random accounts in two currencies, unbalanced
//! ones, resends of earlier ids with the same or other content, reversals (first and repeated) — the books
//! stay what a model of them says:
//!
//! - every balance equals the model's, which is the sum of the accepted postings, and the sum of its entries;
//! - balances sum to zero per currency (double entry);
//! - a refused request changes nothing, a resend with the same content records nothing more, a resend with
//!   other content is ALREADY_EXISTS, a second reversal is refused;
//! - `ledger::audit` finds nothing wrong.
//!
//! proptest generates the sequences and shrinks a failing one to a minimal case.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use api::common::Money;
use api::mercato::ledger::v1::ledger_service_client::LedgerServiceClient;
use api::mercato::ledger::v1::{
    AccountType, CreateAccountRequest, GetAccountRequest, ListAccountEntriesRequest, Posting, RecordTransactionRequest,
};
use platform::db::Db;
use platform::testkit::TestIssuer;
use proptest::prelude::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

/// Accounts per currency in every case.
const ACCOUNTS: [(&str, usize); 2] = [("EUR", 4), ("USD", 3)];

/// One step a client takes.
#[derive(Debug, Clone)]
enum Op {
    /// Record a new transaction: `legs` are (account index within the currency, amount); the last leg is
    /// added so that the postings balance, then `imbalance` is added to it (0: balanced).
    Record { currency: usize, legs: Vec<(usize, i64)>, imbalance: i64 },
    /// Send an earlier transaction again, unchanged (`changed` false) or with one amount changed.
    Resend { which: usize, changed: bool },
    /// Reverse an earlier transaction.
    Reverse { which: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        0..2usize,
        prop::collection::vec((0..4usize, -50_000i64..50_000), 1..5),
        prop_oneof![
            3 => Just(0i64),
            1 => -500i64..500,
        ],
    )
        .prop_map(|(currency, legs, imbalance)| Op::Record { currency, legs, imbalance });
    prop_oneof![
        6 => record,
        2 => (any::<usize>(), any::<bool>()).prop_map(|(which, changed)| Op::Resend { which, changed }),
        2 => any::<usize>().prop_map(|which| Op::Reverse { which }),
    ]
}

/// The books as they must be: balance per account id, and what was recorded under each id.
#[derive(Default)]
struct Model {
    balances: HashMap<String, i64>,
    recorded: Vec<RecordTransactionRequest>,
    reversed: Vec<bool>,
}

impl Model {
    fn apply(&mut self, postings: &[Posting]) {
        for p in postings {
            *self.balances.entry(p.account_id.clone()).or_default() += amount(p);
        }
    }
}

fn amount(p: &Posting) -> i64 {
    p.amount.as_ref().map_or(0, |m| m.amount_minor)
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

/// Runs `ops` against a fresh ledger on `db` and checks every invariant after each step.
async fn check_invariants(db: Db, ops: Vec<Op>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let issuer = Arc::new(TestIssuer::new().expect("issuer"));
    let shutdown = CancellationToken::new();
    let bus = Arc::new(platform::events::InProcessBus::new());
    let task = tokio::spawn(ledger::serve(listener, db.clone(), issuer.verifier(), bus, shutdown.clone()));
    let token = issuer.token("admin-1", &["ledger:read", "ledger:write"], &["admin"]);
    let mut client = LedgerServiceClient::new(platform::testkit::connect_when_up(&url, "ledger").await);

    // accounts[currency] = ids of that currency's accounts.
    let mut accounts: Vec<Vec<String>> = Vec::new();
    for (currency, count) in ACCOUNTS {
        let mut ids = Vec::new();
        for i in 0..count {
            let request = CreateAccountRequest {
                code: format!("assets:test{i}:{}", currency.to_lowercase()),
                name: format!("Test {i} {currency}"),
                r#type: AccountType::Asset as i32,
                currency: currency.into(),
            };
            let account = client.create_account(with_token(request, &token)).await.expect("account");
            ids.push(account.into_inner().account.expect("account").id);
        }
        accounts.push(ids);
    }

    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Record { currency, legs, imbalance } => {
                let (code, ids) = (ACCOUNTS[currency].0, &accounts[currency]);
                let mut postings: Vec<Posting> = legs
                    .iter()
                    .map(|(i, minor)| Posting {
                        account_id: ids[i % ids.len()].clone(),
                        amount: Some(Money { currency: code.into(), amount_minor: *minor }),
                    })
                    .collect();
                let sum: i64 = postings.iter().map(amount).sum();
                postings.push(Posting {
                    account_id: ids[(step + 1) % ids.len()].clone(),
                    amount: Some(Money { currency: code.into(), amount_minor: imbalance - sum }),
                });
                let valid = imbalance == 0 && postings.iter().all(|p| amount(p) != 0);
                let request = RecordTransactionRequest {
                    transaction_id: format!("tx-{step}"),
                    description: format!("step {step}"),
                    postings: postings.clone(),
                    metadata: HashMap::new(),
                    reverses_transaction_id: String::new(),
                };
                let result = client.record_transaction(with_token(request.clone(), &token)).await;
                if valid {
                    result.expect("a balanced transaction is recorded");
                    model.apply(&postings);
                    model.recorded.push(request);
                    model.reversed.push(false);
                } else {
                    let status = result.expect_err("an unbalanced transaction or a zero posting is refused");
                    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                }
            }
            Op::Resend { which, changed } => {
                if model.recorded.is_empty() {
                    continue;
                }
                let mut request = model.recorded[which % model.recorded.len()].clone();
                if changed && let Some(first) = request.postings.first_mut().and_then(|p| p.amount.as_mut()) {
                    // Still balanced, but not what was recorded under this id.
                    first.amount_minor += 1;
                    if let Some(last) = request.postings.last_mut().and_then(|p| p.amount.as_mut()) {
                        last.amount_minor -= 1;
                    }
                }
                let result = client.record_transaction(with_token(request, &token)).await;
                if changed {
                    assert_eq!(result.expect_err("other content").code(), Code::AlreadyExists);
                } else {
                    result.expect("a resend replays the recorded transaction");
                }
            }
            Op::Reverse { which } => {
                if model.recorded.is_empty() {
                    continue;
                }
                let index = which % model.recorded.len();
                let original = model.recorded[index].clone();
                let negated: Vec<Posting> = original
                    .postings
                    .iter()
                    .map(|p| Posting {
                        account_id: p.account_id.clone(),
                        amount: p
                            .amount
                            .as_ref()
                            .map(|m| Money { currency: m.currency.clone(), amount_minor: -m.amount_minor }),
                    })
                    .collect();
                let request = RecordTransactionRequest {
                    transaction_id: format!("reversal-{step}"),
                    description: format!("reverses {}", original.transaction_id),
                    postings: negated.clone(),
                    metadata: HashMap::new(),
                    reverses_transaction_id: original.transaction_id.clone(),
                };
                let result = client.record_transaction(with_token(request, &token)).await;
                if model.reversed[index] {
                    assert_eq!(result.expect_err("reversed twice").code(), Code::FailedPrecondition);
                } else {
                    result.expect("a first reversal is recorded");
                    model.apply(&negated);
                    model.reversed[index] = true;
                }
            }
        }
    }

    // Every balance is the model's and the sum of its entries; each currency sums to zero.
    let mut per_currency: BTreeMap<&str, i64> = BTreeMap::new();
    for (currency, ids) in ACCOUNTS.iter().map(|(c, _)| *c).zip(&accounts) {
        for id in ids {
            let account = client.get_account(with_token(GetAccountRequest { id: id.clone() }, &token)).await;
            let account = account.expect("account").into_inner().account.expect("account");
            let balance = account.balance.map_or(0, |m| m.amount_minor);
            assert_eq!(balance, model.balances.get(id).copied().unwrap_or(0), "balance of {id}");
            let (mut entries_sum, mut page_token) = (0i64, String::new());
            loop {
                let request = ListAccountEntriesRequest { account_id: id.clone(), page_size: 100, page_token };
                let page =
                    client.list_account_entries(with_token(request, &token)).await.expect("entries").into_inner();
                entries_sum +=
                    page.entries.iter().map(|e| e.amount.as_ref().map_or(0, |m| m.amount_minor)).sum::<i64>();
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            assert_eq!(entries_sum, balance, "entries of {id} sum to its balance");
            *per_currency.entry(currency).or_default() += balance;
        }
    }
    assert!(per_currency.values().all(|sum| *sum == 0), "double entry: {per_currency:?}");
    let violations = ledger::audit(&db).await.expect("audit");
    assert!(violations.is_empty(), "audit: {violations:#?}");
    shutdown.cancel();
    task.await.expect("join").expect("served cleanly");
    db.close().await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

proptest! {
    // Each case starts a ledger on a fresh database: a few dozen cases cover the operations' mixes well.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_on_sqlite(ops in prop::collection::vec(op(), 1..25)) {
        runtime().block_on(async {
            let (db, _dir) = platform::testkit::sqlite("ledger").await.expect("sqlite");
            check_invariants(db, ops).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_on_postgres(ops in prop::collection::vec(op(), 1..25)) {
        runtime().block_on(async {
            let Some(db) = platform::testkit::postgres("ledger").await else { return };
            check_invariants(db, ops).await;
        });
    }
}
