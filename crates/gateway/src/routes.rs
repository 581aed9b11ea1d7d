//! The route table, read from the contracts: every method with a `google.api.http` rule (and each of its
//! `additional_bindings`) becomes a route. No route is written by hand.

use std::sync::Arc;
use std::time::Duration;

use api::google::api::{HttpRule, http_rule::Pattern};
use api::mercato::options::v1::{AccessRule, HttpRequestRule, HttpResponseRule};
use http::{Method, StatusCode};
use platform::descriptors::{self, DescriptorError};
use prost_reflect::{DescriptorPool, MethodDescriptor};

use crate::template::{PathTemplate, TemplateError};

/// One HTTP route bound to one gRPC method.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template.
    pub template: PathTemplate,
    /// The gRPC method it calls.
    pub grpc: MethodDescriptor,
    /// `"*"` (the whole request message), a field name, or empty (no body).
    pub body: String,
    /// The body may also be an `application/x-www-form-urlencoded` form (only where `body` is `"*"`).
    pub accepts_form: bool,
    /// Empty (the whole response message) or the field of the response to send.
    pub response_body: String,
    /// The method answers a `google.api.HttpBody`: the HTTP body is its bytes, with its Content-Type.
    pub raw_body: bool,
    /// Status of a successful answer.
    pub success: StatusCode,
    /// How long the gateway waits for the answer; also the call's gRPC deadline.
    pub timeout: Duration,
    /// The method's access rule.
    pub access: AccessRule,
    /// The upstream service, from the package `mercato.<service>.v1`.
    pub upstream: String,
    /// `<METHOD> <template>`: the route's name in spans, metrics and rate-limit budgets.
    pub label: String,
    /// The gRPC method's path, `/<package.Service>/<Method>`.
    pub grpc_path: String,
    /// The `grpc-timeout` of its calls, from `timeout` (written once, as tonic writes it).
    pub grpc_timeout: tonic::metadata::AsciiMetadataValue,
}

/// The message whose bytes a method returns as they are (`google.api.HttpBody`).
const HTTP_BODY: &str = "google.api.HttpBody";

/// How long a call may take when its method declares no `timeout_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The contracts have a route the gateway cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The descriptors could not be read.
    #[error(transparent)]
    Descriptors(#[from] DescriptorError),
    /// A path template is malformed.
    #[error("{method}: {source}")]
    Template {
        /// gRPC method.
        method: String,
        /// Why.
        source: TemplateError,
    },
    /// A rule names a body or path field the request message does not have.
    #[error("{method}: {problem}")]
    Field {
        /// gRPC method.
        method: String,
        /// Why.
        problem: String,
    },
}

/// Every route of every service, most specific first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

/// What looking a request up found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A route and the values its path variables bound.
    Found(&'a Arc<Route>, Vec<(String, String)>),
    /// The path exists, but not for this method; these are allowed.
    WrongMethod(Vec<Method>),
    /// No route has this path.
    NotFound,
}

impl RouteTable {
    /// Reads the routes of every service in the compiled-in contracts.
    pub fn from_contracts() -> Result<Self, RouteError> {
        Self::from_pool(descriptors::pool()?)
    }

    /// Reads the routes of every service in `pool`.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, RouteError> {
        let mut routes = Vec::new();
        for service in pool.services() {
            let upstream = upstream_of(service.package_name());
            for method in service.methods() {
                let Some(rule) = descriptors::method_option::<HttpRule>(&method, "google.api.http") else {
                    continue;
                };
                let access =
                    descriptors::method_option::<AccessRule>(&method, "mercato.options.v1.access").unwrap_or_default();
                let response_rule =
                    descriptors::method_option::<HttpResponseRule>(&method, "mercato.options.v1.http_response")
                        .unwrap_or_default();
                let success = u16::try_from(response_rule.success_code)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::OK);
                let request_rule =
                    descriptors::method_option::<HttpRequestRule>(&method, "mercato.options.v1.http_request")
                        .unwrap_or_default();
                let timeout = match response_rule.timeout_ms {
                    0 => DEFAULT_TIMEOUT,
                    ms => Duration::from_millis(u64::from(ms)),
                };
                let bindings = std::iter::once(rule.clone()).chain(rule.additional_bindings.iter().cloned());
                for binding in bindings {
                    let Some((http_method, path)) = pattern(&binding) else { continue };
                    let template = PathTemplate::parse(&path)
                        .map_err(|source| RouteError::Template { method: method.full_name().to_owned(), source })?;
                    check_fields(&method, &template, &binding)?;
                    if request_rule.accepts_form && binding.body != "*" {
                        return Err(RouteError::Field {
                            method: method.full_name().to_owned(),
                            problem: format!("accepts_form needs body \"*\", not {:?}", binding.body),
                        });
                    }
                    // Milliseconds, as the option gives them; gRPC allows at most eight digits (27 hours).
                    let grpc_timeout = format!("{}m", timeout.as_millis().min(99_999_999)).parse().map_err(|_| {
                        RouteError::Field { method: method.full_name().to_owned(), problem: "unusable timeout".into() }
                    })?;
                    routes.push(Arc::new(Route {
                        label: format!("{http_method} {}", template.as_str()),
                        grpc_path: descriptors::grpc_path(&method),
                        grpc_timeout,
                        method: http_method,
                        template,
                        grpc: method.clone(),
                        body: binding.body.clone(),
                        accepts_form: request_rule.accepts_form,
                        response_body: binding.response_body.clone(),
                        raw_body: binding.response_body.is_empty()
                            && !method.is_server_streaming()
                            && method.output().full_name() == HTTP_BODY,
                        success,
                        timeout,
                        access: access.clone(),
                        upstream: upstream.clone(),
                    }));
                }
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.literal_count()));
        Ok(Self { routes })
    }

    /// All routes (shared: a request holds its route without copying it).
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The services that routes lead to.
    pub fn upstreams(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.iter().map(|r| r.upstream.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Finds the route for a method and (percent-encoded) path: the first, most specific, route of that method
    /// whose template matches. Only when none does are the other methods' templates tried, for the 405's `Allow`.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let same_method = self.routes.iter().filter(|route| route.method == *method);
        for route in same_method {
            if let Some(bound) = route.template.matches(path) {
                return Lookup::Found(route, bound);
            }
        }
        let mut allowed = Vec::new();
        for route in self.routes.iter().filter(|route| route.method != *method) {
            if !allowed.contains(&route.method) && route.template.matches(path).is_some() {
                allowed.push(route.method.clone());
            }
        }
        if allowed.is_empty() { Lookup::NotFound } else { Lookup::WrongMethod(allowed) }
    }
}

/// `mercato.catalog.v1` → `catalog`.
fn upstream_of(package: &str) -> String {
    package.split('.').nth(1).unwrap_or(package).to_owned()
}

fn pattern(rule: &HttpRule) -> Option<(Method, String)> {
    Some(match rule.pattern.as_ref()? {
        Pattern::Get(p) => (Method::GET, p.clone()),
        Pattern::Put(p) => (Method::PUT, p.clone()),
        Pattern::Post(p) => (Method::POST, p.clone()),
        Pattern::Delete(p) => (Method::DELETE, p.clone()),
        Pattern::Patch(p) => (Method::PATCH, p.clone()),
        Pattern::Custom(c) => (Method::from_bytes(c.kind.as_bytes()).ok()?, c.path.clone()),
    })
}

fn check_fields(method: &MethodDescriptor, template: &PathTemplate, rule: &HttpRule) -> Result<(), RouteError> {
    let fail = |problem: String| RouteError::Field { method: method.full_name().to_owned(), problem };
    let input = method.input();
    for path in template.field_paths() {
        if crate::transcode::resolve_field(&input, path).is_none() {
            return Err(fail(format!("path variable {path} is not a field of {}", input.full_name())));
        }
    }
    if !rule.body.is_empty() && rule.body != "*" && input.get_field_by_name(&rule.body).is_none() {
        return Err(fail(format!("body field {} is not a field of {}", rule.body, input.full_name())));
    }
    if !rule.response_body.is_empty() && method.output().get_field_by_name(&rule.response_body).is_none() {
        return Err(fail(format!(
            "response_body {} is not a field of {}",
            rule.response_body,
            method.output().full_name()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blueprint_routes_come_from_the_protos() {
        let table = RouteTable::from_contracts().expect("routes");
        let find = |m: Method, p: &str| match table.lookup(&m, p) {
            Lookup::Found(route, _) => Some(route.grpc.full_name().to_owned()),
            _ => None,
        };
        assert_eq!(find(Method::POST, "/v1/auth/login").as_deref(), Some("mercato.auth.v1.AuthService.Login"));
        assert_eq!(find(Method::GET, "/.well-known/jwks.json").as_deref(), Some("mercato.auth.v1.AuthService.GetJwks"));
        assert_eq!(
            find(Method::GET, "/v1/products/p1").as_deref(),
            Some("mercato.catalog.v1.CatalogService.GetProduct")
        );
        assert_eq!(
            find(Method::GET, "/v1/products/p1/inventory").as_deref(),
            Some("mercato.catalog.v1.CatalogService.GetInventory")
        );
        assert_eq!(
            find(Method::POST, "/v1/products/p1/inventory:adjust").as_deref(),
            Some("mercato.catalog.v1.CatalogService.AdjustInventory")
        );
        assert!(
            matches!(table.lookup(&Method::DELETE, "/v1/products/p1"), Lookup::WrongMethod(m) if m.contains(&Method::GET))
        );
        assert!(matches!(table.lookup(&Method::GET, "/v1/nothing"), Lookup::NotFound));
        // More services come with more protos; these two are there from the start.
        let upstreams = table.upstreams();
        assert!(["auth", "catalog"].iter().all(|s| upstreams.iter().any(|u| u == s)), "{upstreams:?}");
    }

    #[test]
    fn creates_answer_201() {
        let table = RouteTable::from_contracts().expect("routes");
        let Lookup::Found(route, _) = table.lookup(&Method::POST, "/v1/products") else { panic!("no route") };
        assert_eq!(route.success, StatusCode::CREATED);
        assert_eq!(route.access.scopes, ["catalog:write"]);
    }
}
