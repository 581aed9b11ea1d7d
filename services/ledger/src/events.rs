//! What the ledger publishes: `ledger.transaction.recorded`, written in the transaction that records it.

use api::common::Money;
use api::mercato::ledger::v1::{Posting, TransactionRecorded};
use platform::events::NewEvent;

use crate::domain::NewTransaction;

/// Event type published when a transaction is recorded (payload `mercato.ledger.v1.TransactionRecorded`).
pub const TRANSACTION_RECORDED: &str = "ledger.transaction.recorded";

/// The `ledger.transaction.recorded` event of `t`, recorded by `actor`; its subject is the transaction id.
pub fn transaction_recorded(t: &NewTransaction, actor: &str) -> NewEvent {
    let payload = TransactionRecorded {
        transaction_id: t.id.clone(),
        description: t.description.clone(),
        postings: t
            .postings
            .iter()
            .map(|p| Posting {
                account_id: p.account_id.clone(),
                amount: Some(Money { currency: p.currency.clone(), amount_minor: p.amount_minor }),
            })
            .collect(),
        reverses_transaction_id: t.reverses.clone().unwrap_or_default(),
        actor: actor.to_owned(),
    };
    NewEvent::new(TRANSACTION_RECORDED, t.id.clone(), &payload)
}
