//! The contracts as data: the descriptor pool decoded from `api::FILE_DESCRIPTOR_SET`, and the access rule
//! of every method read from its `mercato.options.v1.access` option.

use std::collections::HashMap;
use std::sync::OnceLock;

use api::mercato::options::v1::AccessRule;
use prost_reflect::{DescriptorPool, MethodDescriptor};

/// The descriptor set could not be read; the build produced something broken.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the compiled-in descriptor set is unreadable: {0}")]
pub struct DescriptorError(String);

/// The pool of every message, service and option in `proto/`, decoded once.
pub fn pool() -> Result<&'static DescriptorPool, DescriptorError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(api::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| DescriptorError(e.clone()))
}

/// The gRPC path of a method, `/package.Service/Method`.
pub fn grpc_path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

/// Reads an extension of a method's options as the generated Rust type, if the method sets it.
pub fn method_option<T: prost::Message + Default>(method: &MethodDescriptor, extension: &str) -> Option<T> {
    let pool = method.parent_pool();
    let ext = pool.get_extension_by_name(extension)?;
    let options = method.options();
    if !options.has_extension(&ext) {
        return None;
    }
    options.get_extension(&ext).as_message()?.transcode_to::<T>().ok()
}

/// The access rule of every method of every service in the contracts, by gRPC path.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    rules: HashMap<String, AccessRule>,
}

impl AccessPolicy {
    /// Reads the rules from the compiled-in contracts.
    pub fn from_contracts() -> Result<Self, DescriptorError> {
        let pool = pool()?;
        let mut rules = HashMap::new();
        for service in pool.services() {
            for method in service.methods() {
                let rule = method_option::<AccessRule>(&method, "mercato.options.v1.access").unwrap_or_default();
                rules.insert(grpc_path(&method), rule);
            }
        }
        Ok(Self { rules })
    }

    /// The rule for a gRPC path; a method without a declared rule needs an authenticated caller.
    pub fn rule(&self, path: &str) -> AccessRule {
        self.rules.get(path).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules_come_from_the_protos() {
        let policy = AccessPolicy::from_contracts().expect("contracts decode");
        let create = policy.rule("/mercato.catalog.v1.CatalogService/CreateProduct");
        assert!(!create.allow_anonymous);
        assert_eq!(create.scopes, ["catalog:write"]);
        assert!(policy.rule("/mercato.auth.v1.AuthService/Login").allow_anonymous);
        let me = policy.rule("/mercato.auth.v1.AuthService/GetMe");
        assert!(!me.allow_anonymous && me.scopes.is_empty());
    }
}
