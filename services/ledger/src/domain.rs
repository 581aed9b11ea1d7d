//! The ledger's rules, free of I/O: what a valid account and a valid transaction are, the sign convention,
//! overflow-safe balance changes, reversals, pages and page tokens, and the audit of stored books.
//!
//! Sign convention: an amount is signed minor units, positive = debit, negative = credit; an account's
//! balance is the raw signed sum of its postings (asset and expense accounts normally positive, liability,
//! revenue and equity accounts normally negative).
//!
//! Field names in violations are proto field paths (`postings[1].amount.currency`), so clients can point at
//! the offending input.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use platform::error::FieldViolation;
use platform::money::check_currency;

pub use platform::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_size};

/// Longest account code.
pub const MAX_CODE_CHARS: usize = 100;
/// Longest account name.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest transaction id.
pub const MAX_TRANSACTION_ID_CHARS: usize = 100;
/// Longest transaction description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Most postings in one transaction.
pub const MAX_POSTINGS: usize = 100;
/// Most metadata entries on one transaction.
pub const MAX_METADATA_ENTRIES: usize = 20;
/// Longest metadata key.
pub const MAX_METADATA_KEY_CHARS: usize = 64;
/// Longest metadata value.
pub const MAX_METADATA_VALUE_CHARS: usize = 500;

/// The kind of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountType {
    /// What the business owns; normally a debit (positive) balance.
    Asset,
    /// What the business owes; normally a credit (negative) balance.
    Liability,
    /// Income; normally a credit (negative) balance.
    Revenue,
    /// Costs; normally a debit (positive) balance.
    Expense,
    /// The owners' stake; normally a credit (negative) balance.
    Equity,
}

impl AccountType {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asset => "ASSET",
            Self::Liability => "LIABILITY",
            Self::Revenue => "REVENUE",
            Self::Expense => "EXPENSE",
            Self::Equity => "EQUITY",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ASSET" => Some(Self::Asset),
            "LIABILITY" => Some(Self::Liability),
            "REVENUE" => Some(Self::Revenue),
            "EXPENSE" => Some(Self::Expense),
            "EQUITY" => Some(Self::Equity),
            _ => None,
        }
    }
}

/// An account as a client asked to open it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Unique code.
    pub code: String,
    /// Name shown to people.
    pub name: String,
    /// Kind of account.
    pub account_type: AccountType,
    /// ISO 4217 code.
    pub currency: String,
}

fn is_code(s: &str) -> bool {
    (1..=MAX_CODE_CHARS).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b':' | b'_' | b'-'))
}

/// Checks the fields of CreateAccount; `account_type` is `None` when unspecified or unknown.
pub fn validate_account(
    code: &str,
    name: &str,
    account_type: Option<AccountType>,
    currency: &str,
) -> Result<NewAccount, Vec<FieldViolation>> {
    let mut v = Vec::new();
    if !is_code(code) {
        v.push(FieldViolation::new(
            "code",
            format!("must be 1 to {MAX_CODE_CHARS} characters of a-z, 0-9, ':', '_' or '-'"),
        ));
    }
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        v.push(FieldViolation::new("name", format!("must be 1 to {MAX_NAME_CHARS} characters and not blank")));
    }
    if account_type.is_none() {
        v.push(FieldViolation::new("type", "is required: ASSET, LIABILITY, REVENUE, EXPENSE or EQUITY"));
    }
    if let Err(violation) = check_currency("currency", currency) {
        v.push(violation);
    }
    match account_type {
        Some(account_type) if v.is_empty() => {
            Ok(NewAccount { code: code.to_owned(), name: name.to_owned(), account_type, currency: currency.to_owned() })
        }
        _ => Err(v),
    }
}

/// Checks the currency filter of ListAccounts (empty: any).
pub fn validate_currency_filter(currency: &str) -> Result<(), FieldViolation> {
    if currency.is_empty() { Ok(()) } else { check_currency("currency", currency) }
}

/// An amount of money as sent: minor units of a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    /// ISO 4217 code.
    pub currency: String,
    /// Signed minor units.
    pub amount_minor: i64,
}

/// A posting as a client sent it, not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostingInput {
    /// The account.
    pub account_id: String,
    /// The amount; required.
    pub amount: Option<Amount>,
}

/// A RecordTransaction request, not yet validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionInput {
    /// Caller-chosen id.
    pub transaction_id: String,
    /// What happened.
    pub description: String,
    /// The postings.
    pub postings: Vec<PostingInput>,
    /// Free-form references.
    pub metadata: BTreeMap<String, String>,
    /// The transaction this one reverses; empty for none.
    pub reverses_transaction_id: String,
}

/// A validated posting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Posting {
    /// The account.
    pub account_id: String,
    /// ISO 4217 code; must be the account's.
    pub currency: String,
    /// Signed minor units, never zero, never `i64::MIN` (so that it can always be negated).
    pub amount_minor: i64,
}

/// A validated transaction: what is compared when an id is sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransaction {
    /// Caller-chosen id.
    pub id: String,
    /// What happened.
    pub description: String,
    /// The postings, in the order sent.
    pub postings: Vec<Posting>,
    /// Free-form references.
    pub metadata: BTreeMap<String, String>,
    /// The transaction this one reverses.
    pub reverses: Option<String>,
}

fn validate_id(field: &str, id: &str) -> Option<FieldViolation> {
    if id.is_empty() || id.chars().count() > MAX_TRANSACTION_ID_CHARS {
        return Some(FieldViolation::new(field, format!("must be 1 to {MAX_TRANSACTION_ID_CHARS} characters")));
    }
    None
}

/// Checks a transaction id (GetTransaction, RecordTransaction).
pub fn validate_transaction_id(field: &str, id: &str) -> Result<(), FieldViolation> {
    validate_id(field, id).map_or(Ok(()), Err)
}

/// Checks everything about a transaction that needs no stored data: ids, sizes, every posting, and that
/// the postings sum to zero per currency (in `i128`, so the check itself cannot overflow).
pub fn validate_transaction(input: TransactionInput) -> Result<NewTransaction, Vec<FieldViolation>> {
    let mut v = Vec::new();
    v.extend(validate_id("transaction_id", &input.transaction_id));
    if input.description.chars().count() > MAX_DESCRIPTION_CHARS {
        v.push(FieldViolation::new("description", format!("must be at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    if !input.reverses_transaction_id.is_empty() {
        v.extend(validate_id("reverses_transaction_id", &input.reverses_transaction_id));
        if input.reverses_transaction_id == input.transaction_id {
            v.push(FieldViolation::new("reverses_transaction_id", "cannot be the transaction itself"));
        }
    }
    if input.metadata.len() > MAX_METADATA_ENTRIES {
        v.push(FieldViolation::new("metadata", format!("must hold at most {MAX_METADATA_ENTRIES} entries")));
    }
    for (key, value) in &input.metadata {
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            v.push(FieldViolation::new("metadata", format!("keys must be 1 to {MAX_METADATA_KEY_CHARS} characters")));
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            v.push(FieldViolation::new(
                format!("metadata[{key}]"),
                format!("must be at most {MAX_METADATA_VALUE_CHARS} characters"),
            ));
        }
    }
    if input.postings.len() < 2 {
        v.push(FieldViolation::new("postings", "must hold at least two postings (double entry)"));
    }
    if input.postings.len() > MAX_POSTINGS {
        v.push(FieldViolation::new("postings", format!("must hold at most {MAX_POSTINGS} postings")));
    }
    let mut postings = Vec::with_capacity(input.postings.len());
    let mut postings_valid = true;
    for (i, p) in input.postings.into_iter().enumerate() {
        let before = v.len();
        if p.account_id.is_empty() {
            v.push(FieldViolation::new(format!("postings[{i}].account_id"), "is required"));
        }
        match p.amount {
            None => v.push(FieldViolation::new(format!("postings[{i}].amount"), "is required")),
            Some(amount) => {
                if let Err(violation) = check_currency(&format!("postings[{i}].amount.currency"), &amount.currency) {
                    v.push(violation);
                }
                if amount.amount_minor == 0 {
                    v.push(FieldViolation::new(format!("postings[{i}].amount.amount_minor"), "must not be zero"));
                } else if amount.amount_minor == i64::MIN {
                    v.push(FieldViolation::new(
                        format!("postings[{i}].amount.amount_minor"),
                        format!("must be at least {}", -i64::MAX),
                    ));
                }
                if v.len() == before {
                    postings.push(Posting {
                        account_id: p.account_id,
                        currency: amount.currency,
                        amount_minor: amount.amount_minor,
                    });
                }
            }
        }
        postings_valid &= v.len() == before;
    }
    if postings_valid && postings.len() >= 2 {
        let unbalanced: Vec<String> = sums(&postings)
            .into_iter()
            .filter(|(_, sum)| *sum != 0)
            .map(|(c, sum)| format!("{c} sums to {sum}"))
            .collect();
        if !unbalanced.is_empty() {
            v.push(FieldViolation::new(
                "postings",
                format!("must sum to zero per currency (debits = credits); {}", unbalanced.join(", ")),
            ));
        }
    }
    if !v.is_empty() {
        return Err(v);
    }
    let reverses = Some(input.reverses_transaction_id).filter(|r| !r.is_empty());
    Ok(NewTransaction {
        id: input.transaction_id,
        description: input.description,
        postings,
        metadata: input.metadata,
        reverses,
    })
}

/// The sum of the postings per currency, exact.
pub fn sums(postings: &[Posting]) -> BTreeMap<String, i128> {
    let mut sums = BTreeMap::new();
    for p in postings {
        *sums.entry(p.currency.clone()).or_insert(0i128) += i128::from(p.amount_minor);
    }
    sums
}

/// What is known of an account when checking postings against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef {
    /// The account's currency.
    pub currency: String,
}

/// Checks every posting against the stored accounts: each must exist and share the posting's currency.
pub fn check_postings_against_accounts(
    postings: &[Posting],
    accounts: &HashMap<String, AccountRef>,
) -> Result<(), Vec<FieldViolation>> {
    let mut v = Vec::new();
    for (i, p) in postings.iter().enumerate() {
        match accounts.get(&p.account_id) {
            None => v.push(FieldViolation::new(
                format!("postings[{i}].account_id"),
                format!("account {} does not exist", p.account_id),
            )),
            Some(account) if account.currency != p.currency => v.push(FieldViolation::new(
                format!("postings[{i}].amount.currency"),
                format!("must be {}, the currency of account {}", account.currency, p.account_id),
            )),
            Some(_) => {}
        }
    }
    if v.is_empty() { Ok(()) } else { Err(v) }
}

/// Whether `reversal` is exactly the negation of `original`: the same accounts and currencies with every
/// amount negated, in any order.
pub fn is_exact_reversal(original: &[Posting], reversal: &[Posting]) -> bool {
    let mut negated: Vec<Posting> = original
        .iter()
        .filter_map(|p| p.amount_minor.checked_neg().map(|amount_minor| Posting { amount_minor, ..p.clone() }))
        .collect();
    if negated.len() != original.len() {
        return false;
    }
    let mut reversal = reversal.to_vec();
    negated.sort();
    reversal.sort();
    negated == reversal
}

/// The condition on an account's current balance under which adding an amount cannot overflow, expressed
/// so that the database can check it in the same statement that applies the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceGuard {
    /// The balance must be at most this (for a positive amount).
    AtMost(i64),
    /// The balance must be at least this (for a negative amount).
    AtLeast(i64),
}

impl BalanceGuard {
    /// The guard for adding `amount`: `balance.checked_add(amount)` is `Some` exactly when it holds.
    pub fn for_amount(amount: i64) -> Self {
        if amount >= 0 {
            Self::AtMost(i64::MAX - amount)
        } else {
            // amount < 0, so i64::MIN - amount lies in (i64::MIN, 0]: no overflow.
            Self::AtLeast(i64::MIN - amount)
        }
    }

    /// Whether adding the amount to `balance` is safe.
    pub fn holds(self, balance: i64) -> bool {
        match self {
            Self::AtMost(bound) => balance <= bound,
            Self::AtLeast(bound) => balance >= bound,
        }
    }
}

/// The opaque page token of ListAccounts after the account with `code` (accounts are ordered by code).
pub fn account_token(code: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("a:{code}"))
}

/// Reads a ListAccounts page token; the empty token is the first page (`None`).
pub fn decode_account_token(token: &str) -> Result<Option<String>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || FieldViolation::new("page_token", "is not a token returned by ListAccounts");
    let text = decode(token).ok_or_else(bad)?;
    match text.strip_prefix("a:") {
        Some(code) if is_code(code) => Ok(Some(code.to_owned())),
        _ => Err(bad()),
    }
}

/// The opaque page token of ListAccountEntries after the entry with account sequence number `seq`
/// (entries are ordered newest first, i.e. by descending sequence number).
pub fn entry_token(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("e:{seq}"))
}

/// Reads a ListAccountEntries page token; the empty token is the first page (`None`).
pub fn decode_entry_token(token: &str) -> Result<Option<i64>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || FieldViolation::new("page_token", "is not a token returned by ListAccountEntries");
    let text = decode(token).ok_or_else(bad)?;
    match text.strip_prefix("e:").and_then(|n| n.parse::<i64>().ok()) {
        Some(seq) if seq > 0 => Ok(Some(seq)),
        _ => Err(bad()),
    }
}

fn decode(token: &str) -> Option<String> {
    String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()
}

/// An account as the audit sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedAccount {
    /// Account id.
    pub id: String,
    /// Account code.
    pub code: String,
    /// Account currency.
    pub currency: String,
    /// The stored balance.
    pub balance_minor: i64,
    /// The stored count of its postings, which numbers them (`account_seq` 1, 2, …).
    pub entry_count: i64,
}

/// A posting as the audit sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedPosting {
    /// Its transaction.
    pub transaction_id: String,
    /// Its currency.
    pub currency: String,
    /// Its amount.
    pub amount_minor: i64,
    /// The running balance stored with it.
    pub balance_after_minor: i64,
    /// Its number among the account's postings.
    pub account_seq: i64,
}

/// Audits one account from its postings in sequence order: the stored balance must equal their sum, each
/// posting must be in the account's currency, each stored running balance must equal the sum so far, the postings
/// must be numbered 1, 2, … without a gap or a repeat, and the stored count must be how many there are.
/// Returns the violations, in words.
#[derive(Debug)]
pub struct AccountAudit {
    account: AuditedAccount,
    sum: i128,
    count: i64,
    running_reported: bool,
    sequence_reported: bool,
    violations: Vec<String>,
}

impl AccountAudit {
    /// Starts auditing `account`.
    pub fn new(account: AuditedAccount) -> Self {
        Self { account, sum: 0, count: 0, running_reported: false, sequence_reported: false, violations: Vec::new() }
    }

    /// The next posting of the account, in sequence order.
    pub fn push(&mut self, posting: &AuditedPosting) {
        let a = &self.account;
        if posting.currency != a.currency {
            self.violations.push(format!(
                "account {} ({}): a posting of transaction {} is in {}, the account is in {}",
                a.code, a.id, posting.transaction_id, posting.currency, a.currency
            ));
        }
        self.sum += i128::from(posting.amount_minor);
        self.count += 1;
        if !self.sequence_reported && posting.account_seq != self.count {
            self.sequence_reported = true;
            self.violations.push(format!(
                "account {} ({}): the posting of transaction {} is number {} of the account, {} expected",
                a.code, a.id, posting.transaction_id, posting.account_seq, self.count
            ));
        }
        // One report per account is enough to send someone looking; the rest would repeat it.
        if !self.running_reported && i128::from(posting.balance_after_minor) != self.sum {
            self.running_reported = true;
            self.violations.push(format!(
                "account {} ({}): running balance after transaction {} is {}, its postings so far sum to {}",
                a.code, a.id, posting.transaction_id, posting.balance_after_minor, self.sum
            ));
        }
    }

    /// The violations found.
    pub fn finish(mut self) -> Vec<String> {
        let a = &self.account;
        if i128::from(a.balance_minor) != self.sum {
            self.violations.push(format!(
                "account {} ({}): balance is {} {} but its postings sum to {}",
                a.code, a.id, a.balance_minor, a.currency, self.sum
            ));
        }
        if a.entry_count != self.count {
            self.violations.push(format!(
                "account {} ({}): its entry count is {} but it has {} postings",
                a.code, a.id, a.entry_count, self.count
            ));
        }
        self.violations
    }
}

/// Audits one transaction from its postings: at least two, summing to zero per currency.
pub fn audit_transaction(id: &str, postings: &[Posting]) -> Vec<String> {
    let mut violations = Vec::new();
    if postings.len() < 2 {
        violations.push(format!("transaction {id}: has {} posting(s), at least two expected", postings.len()));
    }
    for (currency, sum) in sums(postings) {
        if sum != 0 {
            violations.push(format!("transaction {id}: postings in {currency} sum to {sum}, not zero"));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    fn posting(account: &str, currency: &str, amount: i64) -> PostingInput {
        PostingInput {
            account_id: account.into(),
            amount: Some(Amount { currency: currency.into(), amount_minor: amount }),
        }
    }

    fn input(postings: Vec<PostingInput>) -> TransactionInput {
        TransactionInput {
            transaction_id: "tx-1".into(),
            description: "sale".into(),
            postings,
            metadata: BTreeMap::from([("payment_id".to_owned(), "pay-1".to_owned())]),
            reverses_transaction_id: String::new(),
        }
    }

    #[test]
    fn accounts_are_validated() {
        let ok = validate_account("assets:cash:eur", "Cash", Some(AccountType::Asset), "EUR").expect("valid");
        assert_eq!(ok.account_type, AccountType::Asset);
        assert!(validate_account(&"a".repeat(100), "x", Some(AccountType::Equity), "USD").is_ok());
        let bad = validate_account("Assets Cash", " ", None, "eur").expect_err("invalid");
        assert_eq!(fields(&bad), ["code", "name", "type", "currency"]);
        assert_eq!(
            fields(&validate_account(&"a".repeat(101), "x", Some(AccountType::Asset), "EUR").expect_err("long")),
            ["code"]
        );
        assert!(is_code("liabilities:customer_funds-2") && !is_code("") && !is_code("a.b") && !is_code("é"));
        for t in [
            AccountType::Asset,
            AccountType::Liability,
            AccountType::Revenue,
            AccountType::Expense,
            AccountType::Equity,
        ] {
            assert_eq!(AccountType::parse(t.as_str()), Some(t));
        }
        assert_eq!(AccountType::parse("asset"), None);
        assert!(validate_currency_filter("").is_ok() && validate_currency_filter("EUR").is_ok());
        assert_eq!(validate_currency_filter("eu").map_err(|v| v.field), Err("currency".to_owned()));
    }

    #[test]
    fn a_balanced_transaction_passes() {
        let tx = validate_transaction(input(vec![posting("cash", "EUR", 1000), posting("sales", "EUR", -1000)]))
            .expect("valid");
        assert_eq!(tx.postings.len(), 2);
        assert_eq!(tx.reverses, None);
        let multi = input(vec![
            posting("cash-eur", "EUR", 500),
            posting("cash-usd", "USD", 700),
            posting("sales-eur", "EUR", -500),
            posting("sales-usd", "USD", -700),
        ]);
        assert!(validate_transaction(multi).is_ok(), "balanced in each currency");
        let huge = input(vec![
            posting("a", "EUR", i64::MAX),
            posting("b", "EUR", i64::MAX),
            posting("c", "EUR", -i64::MAX),
            posting("d", "EUR", -i64::MAX),
        ]);
        assert!(validate_transaction(huge).is_ok(), "the sum is exact, intermediate sums do not overflow");
    }

    #[test]
    fn every_bad_field_is_named() {
        let single = validate_transaction(input(vec![posting("cash", "EUR", 0)])).expect_err("single");
        assert_eq!(fields(&single), ["postings", "postings[0].amount.amount_minor"]);
        let unbalanced = validate_transaction(input(vec![posting("cash", "EUR", 1000), posting("sales", "EUR", -999)]))
            .expect_err("sum");
        assert_eq!(fields(&unbalanced), ["postings"]);
        assert!(unbalanced[0].description.contains("EUR sums to 1"), "{}", unbalanced[0].description);
        let cross =
            validate_transaction(input(vec![posting("a", "EUR", 10), posting("b", "USD", -10)])).expect_err("fx");
        assert_eq!(fields(&cross), ["postings"]);
        let mut bad = input(vec![
            PostingInput { account_id: String::new(), amount: None },
            posting("a", "eur", 5),
            posting("b", "EUR", i64::MIN),
        ]);
        bad.transaction_id = String::new();
        bad.description = "d".repeat(501);
        bad.reverses_transaction_id = "r".repeat(101);
        bad.metadata.insert(String::new(), "v".repeat(501));
        assert_eq!(
            fields(&validate_transaction(bad).expect_err("all bad")),
            [
                "transaction_id",
                "description",
                "reverses_transaction_id",
                "metadata",
                "metadata[]",
                "postings[0].account_id",
                "postings[0].amount",
                "postings[1].amount.currency",
                "postings[2].amount.amount_minor",
            ]
        );
        let mut own = input(vec![posting("a", "EUR", 1), posting("b", "EUR", -1)]);
        own.reverses_transaction_id = own.transaction_id.clone();
        assert_eq!(fields(&validate_transaction(own).expect_err("self")), ["reverses_transaction_id"]);
        let many = input((0..101).map(|i| posting("a", "EUR", if i == 100 { -100 } else { 1 })).collect());
        assert_eq!(fields(&validate_transaction(many).expect_err("too many")), ["postings"]);
    }

    #[test]
    fn postings_are_checked_against_accounts() {
        let tx = validate_transaction(input(vec![
            posting("cash", "EUR", 5),
            posting("ghost", "EUR", -2),
            posting("usd", "EUR", -3),
        ]))
        .expect("valid");
        let accounts = HashMap::from([
            ("cash".to_owned(), AccountRef { currency: "EUR".into() }),
            ("usd".to_owned(), AccountRef { currency: "USD".into() }),
        ]);
        let v = check_postings_against_accounts(&tx.postings, &accounts).expect_err("bad");
        assert_eq!(fields(&v), ["postings[1].account_id", "postings[2].amount.currency"]);
    }

    #[test]
    fn reversals_must_negate_exactly() {
        let p = |a: &str, n: i64| Posting { account_id: a.into(), currency: "EUR".into(), amount_minor: n };
        let original = [p("cash", 100), p("fees", 3), p("sales", -103)];
        assert!(is_exact_reversal(&original, &[p("sales", 103), p("cash", -100), p("fees", -3)]));
        assert!(!is_exact_reversal(&original, &[p("sales", 103), p("cash", -103)]));
        assert!(!is_exact_reversal(&original, &[p("sales", 103), p("cash", -100), p("fees", 3)]));
        assert!(!is_exact_reversal(&original, &[p("sales", 103), p("cash", -100), p("fees", -3), p("x", 1)]));
    }

    #[test]
    fn balance_guards_match_checked_add() {
        let amounts = [1, -1, 7, -7, i64::MAX, -i64::MAX, i64::MIN];
        let balances = [0, 1, -1, 42, i64::MAX, i64::MAX - 6, i64::MIN, i64::MIN + 6, -i64::MAX];
        for amount in amounts {
            for balance in balances {
                assert_eq!(
                    BalanceGuard::for_amount(amount).holds(balance),
                    balance.checked_add(amount).is_some(),
                    "{balance} + {amount}"
                );
            }
        }
    }

    #[test]
    fn pages_and_tokens() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(500), Ok(MAX_PAGE_SIZE));
        assert_eq!(page_size(-1).map_err(|v| v.field), Err("page_size".to_owned()));
        assert_eq!(decode_account_token(&account_token("assets:cash")), Ok(Some("assets:cash".to_owned())));
        assert_eq!(decode_entry_token(&entry_token(42)), Ok(Some(42)));
        assert_eq!(decode_account_token(""), Ok(None));
        assert_eq!(decode_entry_token(""), Ok(None));
        assert!(decode_account_token(&entry_token(1)).is_err(), "tokens of another list are refused");
        assert!(decode_entry_token(&account_token("x")).is_err());
        for garbage in ["!!!", "eDox", &URL_SAFE_NO_PAD.encode("e:0"), &URL_SAFE_NO_PAD.encode([0xff, 0xfe])] {
            assert_eq!(decode_entry_token(garbage).map_err(|v| v.field), Err("page_token".to_owned()), "{garbage}");
        }
    }

    #[test]
    fn the_audit_finds_what_is_off() {
        let account = AuditedAccount {
            id: "a1".into(),
            code: "assets:cash".into(),
            currency: "EUR".into(),
            balance_minor: 30,
            entry_count: 2,
        };
        let posting = |amount: i64, after: i64, seq: i64| AuditedPosting {
            transaction_id: "t".into(),
            currency: "EUR".into(),
            amount_minor: amount,
            balance_after_minor: after,
            account_seq: seq,
        };
        let mut clean = AccountAudit::new(account.clone());
        clean.push(&posting(10, 10, 1));
        clean.push(&posting(20, 30, 2));
        assert!(clean.finish().is_empty());

        let mut corrupt = AccountAudit::new(AuditedAccount { balance_minor: 31, ..account.clone() });
        corrupt.push(&posting(10, 10, 1));
        corrupt.push(&posting(20, 30, 2));
        let v = corrupt.finish();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("balance is 31 EUR but its postings sum to 30"), "{v:?}");

        let mut running = AccountAudit::new(AuditedAccount { entry_count: 3, ..account.clone() });
        running.push(&posting(10, 11, 1));
        running.push(&posting(20, 31, 2));
        running.push(&AuditedPosting { currency: "USD".into(), ..posting(0, 30, 3) });
        assert_eq!(running.finish().len(), 2, "one running report, one currency report");

        // Numbered with a gap, then counted wrong: one report each.
        let mut numbered = AccountAudit::new(AuditedAccount { entry_count: 3, ..account.clone() });
        numbered.push(&posting(10, 10, 1));
        numbered.push(&posting(20, 30, 3));
        let v = numbered.finish();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("is number 3 of the account, 2 expected"), "{v:?}");
        assert!(v[1].contains("its entry count is 3 but it has 2 postings"), "{v:?}");

        let p = |n: i64| Posting { account_id: "a".into(), currency: "EUR".into(), amount_minor: n };
        assert!(audit_transaction("t", &[p(5), p(-5)]).is_empty());
        assert_eq!(audit_transaction("t", &[p(5), p(-4)]).len(), 1);
        assert_eq!(audit_transaction("t", &[]).len(), 1);
        assert_eq!(audit_transaction("t", &[p(5)]).len(), 2);
    }
}
