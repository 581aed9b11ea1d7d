//! `AuthService` over gRPC: requests to domain rules to the store, and back.

use std::collections::HashMap;
use std::sync::Arc;

use api::auth::auth_service_server::AuthService;
use api::auth::{
    ApiKey, ChangePasswordRequest, ChangePasswordResponse, ChangeUserEmailRequest, ChangeUserEmailResponse,
    ConfirmEmailChangeRequest, ConfirmEmailChangeResponse, ConfirmEmailVerificationRequest,
    ConfirmEmailVerificationResponse, ConfirmPasswordResetRequest, ConfirmPasswordResetResponse, CreateApiKeyRequest,
    CreateApiKeyResponse, DeleteAccountRequest, DeleteAccountResponse, DisableUserRequest, DisableUserResponse,
    EnableUserRequest, EnableUserResponse, ExchangeApiKeyRequest, ExchangeApiKeyResponse, GetJwksRequest,
    GetJwksResponse, GetMeRequest, GetMeResponse, IssueServiceTokenRequest, IssueServiceTokenResponse,
    ListApiKeysRequest, ListApiKeysResponse, ListRevokedSessionsRequest, ListRevokedSessionsResponse,
    ListSessionsRequest, ListSessionsResponse, ListUsersRequest, ListUsersResponse, LoginRequest, LoginResponse,
    LogoutRequest, LogoutResponse, RefreshRequest, RefreshResponse, RegisterRequest, RegisterResponse,
    RequestEmailChangeRequest, RequestEmailChangeResponse, RequestEmailVerificationRequest,
    RequestEmailVerificationResponse, RequestPasswordResetRequest, RequestPasswordResetResponse,
    RevertEmailChangeRequest, RevertEmailChangeResponse, RevokeApiKeyRequest, RevokeApiKeyResponse,
    RevokeOtherSessionsRequest, RevokeOtherSessionsResponse, RevokeSessionRequest, RevokeSessionResponse,
    RevokedSession, SetUserRolesRequest, SetUserRolesResponse, User,
};
use platform::error::FieldViolation;
use platform::events::RelayHandle;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::api_keys;
use crate::domain;
use crate::error::Error;
use crate::events;
use crate::key_store::ApiKeyRow;
use crate::keys::Keyring;
use crate::passwords::Hasher;
use crate::store::{NewRefreshToken, Rotation, Store, UserRow};

mod accounts;
mod email_change;
mod passwords;
mod sessions;
mod verification;

/// The auth service's gRPC handlers.
#[derive(Debug, Clone)]
pub struct Service {
    store: Store,
    keys: Arc<Keyring>,
    hasher: Hasher,
    relay: RelayHandle,
    service_secrets: Arc<HashMap<String, String>>,
}

/// A freshly issued access and refresh token.
struct TokenPair {
    access_token: String,
    refresh_token: String,
}

impl Service {
    /// Handlers over `store`, signing with `keys` and hashing with `hasher`.
    pub fn new(
        store: Store,
        keys: Arc<Keyring>,
        hasher: Hasher,
        relay: RelayHandle,
        service_secrets: HashMap<String, String>,
    ) -> Self {
        Self { store, keys, hasher, relay, service_secrets: Arc::new(service_secrets) }
    }

    fn access_token(&self, user: &UserRow, session_id: &str, now_micros: i64) -> Result<String, Error> {
        let roles = domain::parse_roles(&user.roles);
        let verified = user.email_verify_time.is_some();
        let claims = domain::access_claims(&user.id, &roles, verified, session_id, now_micros.div_euclid(1_000_000));
        self.keys.active.sign(&claims)
    }

    fn new_refresh_token(now_micros: i64) -> (String, NewRefreshToken) {
        let token = domain::new_opaque_token();
        let stored = NewRefreshToken {
            id: uuid::Uuid::now_v7().to_string(),
            token_hash: domain::hash_opaque_token(&token),
            expires_at: now_micros + domain::REFRESH_TOKEN_TTL_MICROS,
        };
        (token, stored)
    }

    async fn login_pair(&self, email: &str, password: String) -> Result<TokenPair, Error> {
        let email = domain::normalize_email(email);
        // Longer than any accepted password: no account can match, and we will not spend Argon2 on it.
        if password.chars().count() > domain::MAX_PASSWORD_CHARS {
            return Err(Error::InvalidCredentials);
        }
        let user = self.store.user_by_email(&email).await?;
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        if !self.hasher.verify(password, phc).await? {
            return Err(Error::InvalidCredentials);
        }
        let user = user.ok_or(Error::InvalidCredentials)?;
        // Said only to whoever knows the password.
        if user.disable_time.is_some() {
            return Err(Error::AccountDisabled);
        }
        let now = now_micros();
        let (refresh_token, stored) = Self::new_refresh_token(now);
        let family_id = uuid::Uuid::now_v7().to_string();
        // Disabled (or deleted) while the password was being checked.
        if !self.store.insert_refresh_token(&stored, &family_id, &user.id, now).await? {
            return Err(Error::AccountDisabled);
        }
        Ok(TokenPair { access_token: self.access_token(&user, &family_id, now)?, refresh_token })
    }

    async fn refresh_pair(&self, presented: &str) -> Result<TokenPair, Error> {
        if presented.is_empty() {
            return Err(Error::InvalidRefreshToken);
        }
        let now = now_micros();
        let (refresh_token, successor) = Self::new_refresh_token(now);
        let presented = domain::hash_opaque_token(presented);
        match self.store.rotate_refresh_token(&presented, &successor, now).await? {
            Rotation::Rotated { user, session_id } => {
                Ok(TokenPair { access_token: self.access_token(&user, &session_id, now)?, refresh_token })
            }
            Rotation::Reused | Rotation::Invalid => Err(Error::InvalidRefreshToken),
        }
    }
}

/// A stored user as the wire sees it (no password hash).
pub fn user_to_wire(user: UserRow) -> User {
    User {
        roles: domain::parse_roles(&user.roles),
        create_time: Some(timestamp(user.create_time)),
        id: user.id,
        email: user.email,
        display_name: user.display_name,
        locale: user.locale,
        disable_time: user.disable_time.map(timestamp),
        email_verified: user.email_verify_time.is_some(),
        email_verify_time: user.email_verify_time.map(timestamp),
    }
}

fn expires_in() -> i32 {
    i32::try_from(domain::ACCESS_TOKEN_TTL_SECS).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl AuthService for Service {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        let account =
            domain::validate_registration(&request.email, &request.password, &request.display_name, &request.locale)
                .map_err(Error::Invalid)?;
        let user = UserRow {
            id: uuid::Uuid::now_v7().to_string(),
            email: account.email,
            password_hash: self.hasher.hash(account.password).await?,
            display_name: account.display_name,
            roles: domain::format_roles(&[domain::ROLE_CUSTOMER]),
            locale: account.locale,
            create_time: now_micros(),
            disable_time: None,
            email_verify_time: None,
        };
        // The first verification mail goes with the account: a registration never lacks one.
        let (token, requested) = Self::new_verification(&user, user.create_time);
        self.store.insert_user(&user, &events::user_registered(&user), Some((&token, &requested))).await?;
        self.relay.wake();
        tracing::info!(user_id = %user.id, "account registered");
        Ok(Response::new(RegisterResponse { user: Some(user_to_wire(user)) }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let request = request.into_inner();
        let pair = self.login_pair(&request.email, request.password).await?;
        Ok(Response::new(LoginResponse {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: domain::TOKEN_TYPE.to_owned(),
            expires_in: expires_in(),
        }))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        let pair = self.refresh_pair(&request.into_inner().refresh_token).await?;
        Ok(Response::new(RefreshResponse {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: domain::TOKEN_TYPE.to_owned(),
            expires_in: expires_in(),
        }))
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        let presented = request.into_inner().refresh_token;
        if !presented.is_empty() {
            self.store.revoke_family_of(&domain::hash_opaque_token(&presented), now_micros()).await?;
        }
        Ok(Response::new(LogoutResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let caller = platform::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let (sessions, next_page_token) = self.own_sessions(&caller, request.page_size, &request.page_token).await?;
        Ok(Response::new(ListSessionsResponse { sessions, next_page_token }))
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        let caller = platform::auth::caller(&request)?.clone();
        self.end_session(&caller, &request.into_inner().id).await?;
        Ok(Response::new(RevokeSessionResponse {}))
    }

    async fn revoke_other_sessions(
        &self,
        request: Request<RevokeOtherSessionsRequest>,
    ) -> Result<Response<RevokeOtherSessionsResponse>, Status> {
        let caller = platform::auth::caller(&request)?.clone();
        let ended = self.end_other_sessions(&caller).await?;
        Ok(Response::new(RevokeOtherSessionsResponse { revoked_count: i32::try_from(ended).unwrap_or(i32::MAX) }))
    }

    async fn get_me(&self, request: Request<GetMeRequest>) -> Result<Response<GetMeResponse>, Status> {
        let caller = platform::auth::caller(&request)?;
        let user = self.store.user_by_id(&caller.sub).await?.ok_or(Error::UserNotFound)?;
        Ok(Response::new(GetMeResponse { user: Some(user_to_wire(user)) }))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let user_id = platform::auth::caller(&request)?.sub.clone();
        let request = request.into_inner();
        let pair = self.set_new_password(&user_id, request.current_password, request.new_password).await?;
        Ok(Response::new(ChangePasswordResponse {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: domain::TOKEN_TYPE.to_owned(),
            expires_in: expires_in(),
        }))
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<DeleteAccountResponse>, Status> {
        let user_id = platform::auth::caller(&request)?.sub.clone();
        self.erase_account(&user_id, request.into_inner().password).await?;
        Ok(Response::new(DeleteAccountResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<RequestPasswordResetRequest>,
    ) -> Result<Response<RequestPasswordResetResponse>, Status> {
        self.mail_reset_token(&request.into_inner().email).await?;
        Ok(Response::new(RequestPasswordResetResponse {}))
    }

    async fn confirm_password_reset(
        &self,
        request: Request<ConfirmPasswordResetRequest>,
    ) -> Result<Response<ConfirmPasswordResetResponse>, Status> {
        let request = request.into_inner();
        self.reset_password(&request.token, request.new_password).await?;
        Ok(Response::new(ConfirmPasswordResetResponse {}))
    }

    async fn request_email_verification(
        &self,
        request: Request<RequestEmailVerificationRequest>,
    ) -> Result<Response<RequestEmailVerificationResponse>, Status> {
        let user_id = platform::auth::caller(&request)?.sub.clone();
        let expires_at = self.mail_verification_token(&user_id).await?;
        Ok(Response::new(RequestEmailVerificationResponse { expire_time: Some(timestamp(expires_at)) }))
    }

    async fn confirm_email_verification(
        &self,
        request: Request<ConfirmEmailVerificationRequest>,
    ) -> Result<Response<ConfirmEmailVerificationResponse>, Status> {
        let user = self.verify_email(&request.into_inner().token).await?;
        Ok(Response::new(ConfirmEmailVerificationResponse { user: Some(user_to_wire(user)) }))
    }

    async fn request_email_change(
        &self,
        request: Request<RequestEmailChangeRequest>,
    ) -> Result<Response<RequestEmailChangeResponse>, Status> {
        let user_id = platform::auth::caller(&request)?.sub.clone();
        let request = request.into_inner();
        let expires_at = self.mail_email_change_token(&user_id, &request.new_email, request.password).await?;
        Ok(Response::new(RequestEmailChangeResponse { expire_time: Some(timestamp(expires_at)) }))
    }

    async fn confirm_email_change(
        &self,
        request: Request<ConfirmEmailChangeRequest>,
    ) -> Result<Response<ConfirmEmailChangeResponse>, Status> {
        let user = self.apply_email_change(&request.into_inner().token).await?;
        Ok(Response::new(ConfirmEmailChangeResponse { user: Some(user_to_wire(user)) }))
    }

    async fn revert_email_change(
        &self,
        request: Request<RevertEmailChangeRequest>,
    ) -> Result<Response<RevertEmailChangeResponse>, Status> {
        let request = request.into_inner();
        let user = self.revert_email_change(&request.token, request.new_password).await?;
        Ok(Response::new(RevertEmailChangeResponse { user: Some(user_to_wire(user)) }))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let request = request.into_inner();
        let (users, next_page_token) =
            self.list_accounts(&request.email, &request.role, request.page_size, &request.page_token).await?;
        Ok(Response::new(ListUsersResponse { users, next_page_token }))
    }

    async fn set_user_roles(
        &self,
        request: Request<SetUserRolesRequest>,
    ) -> Result<Response<SetUserRolesResponse>, Status> {
        let caller = platform::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let user = self.assign_roles(&caller, &request.id, &request.roles).await?;
        Ok(Response::new(SetUserRolesResponse { user: Some(user_to_wire(user)) }))
    }

    async fn change_user_email(
        &self,
        request: Request<ChangeUserEmailRequest>,
    ) -> Result<Response<ChangeUserEmailResponse>, Status> {
        let caller = platform::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let user = self.change_account_email(&caller, &request.id, &request.email).await?;
        Ok(Response::new(ChangeUserEmailResponse { user: Some(user_to_wire(user)) }))
    }

    async fn disable_user(
        &self,
        request: Request<DisableUserRequest>,
    ) -> Result<Response<DisableUserResponse>, Status> {
        let caller = platform::auth::caller(&request)?.clone();
        let user = self.set_account_disabled(&caller, &request.into_inner().id, true).await?;
        Ok(Response::new(DisableUserResponse { user: Some(user_to_wire(user)) }))
    }

    async fn enable_user(&self, request: Request<EnableUserRequest>) -> Result<Response<EnableUserResponse>, Status> {
        let caller = platform::auth::caller(&request)?.clone();
        let user = self.set_account_disabled(&caller, &request.into_inner().id, false).await?;
        Ok(Response::new(EnableUserResponse { user: Some(user_to_wire(user)) }))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse { keys: self.keys.jwks.clone() }))
    }

    async fn list_revoked_sessions(
        &self,
        request: Request<ListRevokedSessionsRequest>,
    ) -> Result<Response<ListRevokedSessionsResponse>, Status> {
        let request = request.into_inner();
        let limit = domain::revoked_sessions_page_size(request.page_size).map_err(|v| Error::Invalid(vec![v]))?;
        let after =
            domain::parse_revoked_sessions_page_token(&request.page_token).map_err(|v| Error::Invalid(vec![v]))?;
        let since = request.since.as_ref().map_or(Some(i64::MIN), platform::time::micros);
        let since = since.ok_or_else(|| Error::Invalid(vec![FieldViolation::new("since", "is out of range")]))?;
        let rows = self.store.revoked_sessions(since, after, limit + 1).await?;
        let (rows, next_page_token) =
            platform::paging::page(rows, limit, |r| domain::revoked_sessions_page_token(r.revoke_time, &r.session_id));
        let sessions = rows
            .into_iter()
            .map(|r| RevokedSession { session_id: r.session_id, revoke_time: Some(timestamp(r.revoke_time)) })
            .collect();
        Ok(Response::new(ListRevokedSessionsResponse { sessions, next_page_token }))
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let caller = platform::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let ttl_days = api_keys::validate(&request.name, &request.scopes, request.ttl_days, &caller)
            .map_err(|v| Error::Invalid(v.into_vec()))?;
        let secret = api_keys::generate_secret();
        let now = now_micros();
        let row = ApiKeyRow {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: caller.sub.clone(),
            name: request.name.trim().to_owned(),
            prefix: api_keys::shown_prefix(&secret),
            key_hash: api_keys::hash(&secret),
            scopes: request.scopes.join(" "),
            create_time: now,
            expire_time: now + i64::from(ttl_days) * 86_400 * 1_000_000,
            revoke_time: None,
        };
        self.store.insert_api_key(&row).await?;
        tracing::info!(key_id = %row.id, user_id = %row.user_id, "API key created");
        Ok(Response::new(CreateApiKeyResponse { api_key: Some(api_key_to_wire(row)), secret }))
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let caller = platform::auth::caller(&request)?;
        let keys = self.store.api_keys_of(&caller.sub).await?;
        Ok(Response::new(ListApiKeysResponse { api_keys: keys.into_iter().map(api_key_to_wire).collect() }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        let caller = platform::auth::caller(&request)?.sub.clone();
        let id = request.into_inner().id;
        let row = self.store.revoke_api_key(&caller, &id, now_micros()).await?;
        let row = row.ok_or_else(|| Status::not_found(format!("API key {id} not found")))?;
        tracing::info!(key_id = %row.id, "API key revoked");
        Ok(Response::new(RevokeApiKeyResponse { api_key: Some(api_key_to_wire(row)) }))
    }

    async fn exchange_api_key(
        &self,
        request: Request<ExchangeApiKeyRequest>,
    ) -> Result<Response<ExchangeApiKeyResponse>, Status> {
        let secret = request.into_inner().api_key;
        let now = now_micros();
        let refused = || Status::unauthenticated("invalid API key");
        let key = self.store.api_key_by_hash(&api_keys::hash(&secret)).await?.ok_or_else(refused)?;
        if key.revoke_time.is_some() || key.expire_time <= now {
            return Err(refused());
        }
        let user =
            self.store.user_by_id(&key.user_id).await?.filter(|u| u.disable_time.is_none()).ok_or_else(refused)?;
        let roles = domain::parse_roles(&user.roles);
        let verified = user.email_verify_time.is_some();
        let claims = api_keys::key_claims(&user.id, &roles, verified, &key.scopes, now.div_euclid(1_000_000));
        let access_token = self.keys.active.sign(&claims)?;
        Ok(Response::new(ExchangeApiKeyResponse {
            access_token,
            expires_in: i32::try_from(api_keys::KEY_TOKEN_TTL_SECS).unwrap_or(i32::MAX),
        }))
    }

    async fn issue_service_token(
        &self,
        request: Request<IssueServiceTokenRequest>,
    ) -> Result<Response<IssueServiceTokenResponse>, Status> {
        let request = request.into_inner();
        let expected = self.service_secrets.get(&request.client_id).map(String::as_str).unwrap_or_default();
        if !domain::secret_matches(&request.client_secret, expected) {
            tracing::warn!(client_id = %request.client_id, "service token refused");
            return Err(Error::InvalidClient.into());
        }
        let claims = domain::service_claims(&request.client_id, now_micros().div_euclid(1_000_000));
        let access_token = self.keys.active.sign(&claims)?;
        Ok(Response::new(IssueServiceTokenResponse {
            access_token,
            token_type: domain::TOKEN_TYPE.to_owned(),
            expires_in: i32::try_from(domain::SERVICE_TOKEN_TTL_SECS).unwrap_or(i32::MAX),
        }))
    }
}

fn api_key_to_wire(row: ApiKeyRow) -> ApiKey {
    ApiKey {
        id: row.id,
        name: row.name,
        prefix: row.prefix,
        scopes: row.scopes.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        create_time: Some(timestamp(row.create_time)),
        expire_time: Some(timestamp(row.expire_time)),
        revoked: row.revoke_time.is_some(),
    }
}
