//! The one error type of the auth service, and how each case reaches a gRPC client.

use platform::error::{FieldViolation, invalid_argument, with_reason};
use tonic::{Code, Status};

/// What a token mailed to an address is for, so that its refusals say which token and what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailedCode {
    /// Sets a new password (RequestPasswordReset).
    PasswordReset,
    /// Verifies the account's address (RequestEmailVerification, registration).
    EmailVerification,
    /// Moves the account to the address it was mailed to (RequestEmailChange).
    EmailChange,
    /// Takes the account back to the address it was mailed to (a confirmed email change).
    EmailRevert,
}

impl MailedCode {
    /// The token's name in logs.
    fn name(self) -> &'static str {
        match self {
            Self::PasswordReset => "password-reset token",
            Self::EmailVerification => "email-verification token",
            Self::EmailChange => "email-change token",
            Self::EmailRevert => "email-revert token",
        }
    }

    /// What a client is told of an unknown token.
    fn not_found(self) -> &'static str {
        match self {
            Self::PasswordReset => "no such password-reset token; ask for a new one",
            Self::EmailVerification => "no such email-verification token; sign in and ask for a new one",
            Self::EmailChange => {
                "no such email-change token (a newer request replaces older ones); sign in and ask again"
            }
            Self::EmailRevert => "no such token for undoing an email change, or it was used already",
        }
    }

    /// What a client is told of a token past its time.
    fn expired(self) -> &'static str {
        match self {
            Self::PasswordReset => "this password-reset token expired; ask for a new one",
            Self::EmailVerification => "this email-verification token expired; sign in and ask for a new one",
            Self::EmailChange => "this email-change token expired; sign in and ask again",
            Self::EmailRevert => {
                "this token for undoing an email change expired a week after the change; contact the shop's support"
            }
        }
    }
}

/// Everything that can go wrong in the auth service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request has invalid fields; every one of them is named.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<FieldViolation>),
    /// Register with an email that already has an account.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Login with an unknown email or a wrong password (deliberately indistinguishable).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Refresh with a token that is unknown, expired, spent or revoked.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A service presented an unknown client id or a wrong secret.
    #[error("invalid client credentials")]
    InvalidClient,
    /// A mailed token that was never issued, was replaced or used (as its kind has it), or was deleted a week
    /// after it expired.
    #[error("{} not found", .0.name())]
    TokenNotFound(MailedCode),
    /// A mailed token past its time (an hour for a reset, a day for a verification or a change, a week for an
    /// undo).
    #[error("{} expired", .0.name())]
    TokenExpired(MailedCode),
    /// A password-reset token that (or another of its account's) already set a password.
    #[error("password-reset token used")]
    ResetTokenUsed,
    /// A new verification token asked for an address verified already.
    #[error("the email address is verified already")]
    EmailAlreadyVerified,
    /// The account's address changed between reading it and moving it.
    #[error("the account's address changed meanwhile")]
    EmailChangedMeanwhile,
    /// The password changed between checking the current one and writing the new one.
    #[error("the password was changed meanwhile")]
    PasswordChangedMeanwhile,
    /// The caller has no such live session.
    #[error("session not found")]
    SessionNotFound,
    /// Staff tried what nobody may do to their own account (disable it, take their admin role away).
    #[error("{0}")]
    OwnAccount(&'static str),
    /// Sign-in to an account staff disabled.
    #[error("this account is disabled")]
    AccountDisabled,
    /// The caller's account does not exist (any more).
    #[error("user not found")]
    UserNotFound,
    /// The first administrator from the settings cannot be created as configured.
    #[error("bad setting {variable}: {problem}")]
    Setting {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A query failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] platform::db::DbError),
    /// The gRPC server failed.
    #[error(transparent)]
    Serve(#[from] platform::grpc::ServeError),
    /// Key material could not be generated, encoded, decoded or used to sign.
    #[error("signing key: {0}")]
    Key(String),
    /// A password could not be hashed, or a stored hash is malformed.
    #[error("password hashing: {0}")]
    Password(String),
    /// A blocking task (password hashing) panicked or was cancelled.
    #[error("background task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(violations) => invalid_argument(violations),
            Error::EmailTaken => {
                with_reason(Code::AlreadyExists, "EMAIL_TAKEN", "an account with this email already exists")
            }
            Error::InvalidCredentials => {
                with_reason(Code::Unauthenticated, "INVALID_CREDENTIALS", "invalid email or password")
            }
            Error::InvalidRefreshToken => {
                with_reason(Code::Unauthenticated, "INVALID_REFRESH_TOKEN", "invalid refresh token")
            }
            Error::InvalidClient => Status::unauthenticated("invalid client credentials"),
            Error::UserNotFound => with_reason(Code::NotFound, "USER_NOT_FOUND", "user not found"),
            Error::SessionNotFound => with_reason(Code::NotFound, "SESSION_NOT_FOUND", "no such session of yours"),
            Error::OwnAccount(what) => with_reason(Code::FailedPrecondition, "OWN_ACCOUNT", what),
            Error::AccountDisabled => with_reason(
                Code::PermissionDenied,
                "ACCOUNT_DISABLED",
                "this account is disabled; contact the shop's support",
            ),
            Error::TokenNotFound(code) => with_reason(Code::NotFound, "TOKEN_NOT_FOUND", code.not_found()),
            Error::TokenExpired(code) => with_reason(Code::FailedPrecondition, "TOKEN_EXPIRED", code.expired()),
            Error::ResetTokenUsed => with_reason(
                Code::FailedPrecondition,
                "TOKEN_USED",
                "this password-reset token was used already; ask for a new one",
            ),
            Error::EmailAlreadyVerified => {
                with_reason(Code::FailedPrecondition, "EMAIL_ALREADY_VERIFIED", "the email address is verified already")
            }
            Error::EmailChangedMeanwhile => with_reason(
                Code::Aborted,
                "EMAIL_CHANGED_MEANWHILE",
                "the account's address changed meanwhile; look at it again",
            ),
            Error::PasswordChangedMeanwhile => with_reason(
                Code::Aborted,
                "PASSWORD_CHANGED_MEANWHILE",
                "the password was changed meanwhile; sign in with the new one",
            ),
            internal @ (Error::Setting { .. }
            | Error::Database(_)
            | Error::Db(_)
            | Error::Serve(_)
            | Error::Key(_)
            | Error::Password(_)
            | Error::Task(_)) => {
                // The details stay in our logs; clients never see SQL or key material errors.
                platform::error::internal(&internal)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_do_not_leak() {
        let status = Status::from(Error::Database(sqlx::Error::Protocol("SELECT secret FROM users".into())));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }

    #[test]
    fn client_errors_keep_their_codes() {
        assert_eq!(Status::from(Error::EmailTaken).code(), Code::AlreadyExists);
        assert_eq!(Status::from(Error::InvalidCredentials).code(), Code::Unauthenticated);
        assert_eq!(Status::from(Error::InvalidRefreshToken).code(), Code::Unauthenticated);
        assert_eq!(Status::from(Error::UserNotFound).code(), Code::NotFound);
        assert_eq!(Status::from(Error::TokenNotFound(MailedCode::PasswordReset)).code(), Code::NotFound);
        assert_eq!(Status::from(Error::ResetTokenUsed).code(), Code::FailedPrecondition);
        assert_eq!(Status::from(Error::TokenExpired(MailedCode::PasswordReset)).code(), Code::FailedPrecondition);
        assert_eq!(Status::from(Error::TokenNotFound(MailedCode::EmailVerification)).code(), Code::NotFound);
        assert_eq!(Status::from(Error::TokenExpired(MailedCode::EmailVerification)).code(), Code::FailedPrecondition);
        assert_eq!(Status::from(Error::EmailAlreadyVerified).code(), Code::FailedPrecondition);
        assert_eq!(Status::from(Error::TokenNotFound(MailedCode::EmailChange)).code(), Code::NotFound);
        assert_eq!(Status::from(Error::TokenExpired(MailedCode::EmailChange)).code(), Code::FailedPrecondition);
        assert_eq!(Status::from(Error::TokenNotFound(MailedCode::EmailRevert)).code(), Code::NotFound);
        assert_eq!(Status::from(Error::TokenExpired(MailedCode::EmailRevert)).code(), Code::FailedPrecondition);
        assert_eq!(Status::from(Error::PasswordChangedMeanwhile).code(), Code::Aborted);
        let invalid = Status::from(Error::Invalid(vec![FieldViolation::new("email", "bad")]));
        assert_eq!(invalid.code(), Code::InvalidArgument);
    }
}
