//! The gRPC face of the users service: wire messages in, domain rules and store, wire messages out.

use api::mercato::users::v1::user_service_server::UserService;
use api::mercato::users::v1::{
    CreateAddressRequest, CreateAddressResponse, DeleteAddressRequest, DeleteAddressResponse, GetAddressRequest,
    GetAddressResponse, GetProfileRequest, GetProfileResponse, ListAddressesRequest, ListAddressesResponse, Profile,
    SavedAddress, UpdateAddressRequest, UpdateAddressResponse, UpdateProfileRequest, UpdateProfileResponse,
};
use platform::auth::caller;
use platform::db::Db;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::domain::{self, ProfileFields};
use crate::error::Error;
use crate::store::{self, Store};

/// The scope that lets a caller read anyone's profile.
pub const USERS_ADMIN: &str = "users:admin";

/// Implements `mercato.users.v1.UserService`.
#[derive(Debug, Clone)]
pub struct UserApi {
    store: Store,
}

impl UserApi {
    /// The service over a migrated database.
    pub fn new(db: Db) -> Self {
        Self { store: Store::new(db) }
    }
}

fn profile_to_wire(p: store::Profile) -> Profile {
    Profile {
        user_id: p.user_id,
        email: p.email,
        display_name: p.display_name,
        phone: p.phone,
        locale: p.locale,
        create_time: Some(timestamp(p.create_time)),
        update_time: Some(timestamp(p.update_time)),
    }
}

fn address_to_wire(a: store::SavedAddress) -> SavedAddress {
    SavedAddress {
        id: a.id,
        label: a.fields.label,
        address: Some(a.fields.address),
        is_default: a.fields.is_default,
        create_time: Some(timestamp(a.create_time)),
        update_time: Some(timestamp(a.update_time)),
    }
}

/// The caller's user id (the token's subject).
fn customer<T>(request: &Request<T>) -> Result<String, Status> {
    let sub = caller(request)?.sub.clone();
    if sub.is_empty() {
        return Err(Status::unauthenticated("the access token names no subject"));
    }
    Ok(sub)
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_profile(&self, request: Request<GetProfileRequest>) -> Result<Response<GetProfileResponse>, Status> {
        let caller_id = customer(&request)?;
        let is_admin = caller(&request)?.has_scope(USERS_ADMIN);
        let requested = request.into_inner().user_id;
        let user_id = if requested.is_empty() { caller_id.clone() } else { requested };
        domain::validate_id("user_id", &user_id).map_err(Error::invalid)?;
        if user_id != caller_id && !is_admin {
            // As with every other customer's data: it does not exist for the caller.
            return Err(Error::NotFound(format!("user {user_id} has no profile you can see")).into());
        }
        let profile = match self.store.profile(&user_id).await? {
            Some(profile) => profile_to_wire(profile),
            // The registration has not arrived yet: the caller's own profile is empty for a moment.
            None if user_id == caller_id => Profile { user_id, ..Profile::default() },
            None => return Err(Error::NotFound(format!("user {user_id} has no profile")).into()),
        };
        Ok(Response::new(GetProfileResponse { profile: Some(profile) }))
    }

    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateProfileResponse>, Status> {
        let user_id = customer(&request)?;
        let req = request.into_inner();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let given = req.profile.unwrap_or_default();
        let input = ProfileFields { display_name: given.display_name, phone: given.phone, locale: given.locale };
        platform::error::check_update_mask(&paths, domain::PROFILE_PATHS).map_err(Error::InvalidArgument)?;
        let updated = self
            .store
            .update_profile(&user_id, now_micros(), |current| {
                domain::update_profile(current, &input, &paths).map_err(Error::InvalidArgument)
            })
            .await?;
        tracing::info!(user_id = %user_id, fields = ?paths, "profile updated");
        Ok(Response::new(UpdateProfileResponse { profile: Some(profile_to_wire(updated)) }))
    }

    async fn list_addresses(
        &self,
        request: Request<ListAddressesRequest>,
    ) -> Result<Response<ListAddressesResponse>, Status> {
        let user_id = customer(&request)?;
        let addresses = self.store.addresses(&user_id).await?;
        Ok(Response::new(ListAddressesResponse { addresses: addresses.into_iter().map(address_to_wire).collect() }))
    }

    async fn get_address(&self, request: Request<GetAddressRequest>) -> Result<Response<GetAddressResponse>, Status> {
        let user_id = customer(&request)?;
        let id = request.into_inner().id;
        domain::validate_id("id", &id).map_err(Error::invalid)?;
        let saved = self.store.address(&user_id, &id).await?;
        Ok(Response::new(GetAddressResponse { address: Some(address_to_wire(saved)) }))
    }

    async fn create_address(
        &self,
        request: Request<CreateAddressRequest>,
    ) -> Result<Response<CreateAddressResponse>, Status> {
        let user_id = customer(&request)?;
        let given = request.into_inner().address.unwrap_or_default();
        let fields =
            domain::new_address(&given.label, given.address, given.is_default).map_err(Error::InvalidArgument)?;
        let saved = self.store.create_address(&user_id, &fields, now_micros()).await?;
        tracing::info!(user_id = %user_id, address_id = %saved.id, "address saved");
        Ok(Response::new(CreateAddressResponse { address: Some(address_to_wire(saved)) }))
    }

    async fn update_address(
        &self,
        request: Request<UpdateAddressRequest>,
    ) -> Result<Response<UpdateAddressResponse>, Status> {
        let user_id = customer(&request)?;
        let req = request.into_inner();
        domain::validate_id("id", &req.id).map_err(Error::invalid)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        platform::error::check_update_mask(&paths, domain::ADDRESS_PATHS).map_err(Error::InvalidArgument)?;
        let given = req.address.unwrap_or_default();
        let updated = self
            .store
            .update_address(&user_id, &req.id, now_micros(), |current| {
                domain::update_address(current, &given.label, given.address.clone(), given.is_default, &paths)
                    .map_err(Error::InvalidArgument)
            })
            .await?;
        Ok(Response::new(UpdateAddressResponse { address: Some(address_to_wire(updated)) }))
    }

    async fn delete_address(
        &self,
        request: Request<DeleteAddressRequest>,
    ) -> Result<Response<DeleteAddressResponse>, Status> {
        let user_id = customer(&request)?;
        let id = request.into_inner().id;
        domain::validate_id("id", &id).map_err(Error::invalid)?;
        self.store.delete_address(&user_id, &id).await?;
        tracing::info!(user_id = %user_id, address_id = %id, "address deleted");
        Ok(Response::new(DeleteAddressResponse {}))
    }
}
