//! JSON ⇄ protobuf for one route: the request message from path variables, query parameters and the body;
//! the JSON answer from the response message. Proto3 JSON mapping throughout (lowerCamelCase out, both
//! spellings in), unknown fields and parameters refused by name.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
    Value,
};

use crate::error::ApiError;
use crate::routes::Route;

/// Resolves a dotted field path (proto or JSON names) to the chain of fields it walks.
pub fn resolve_field(message: &MessageDescriptor, path: &str) -> Option<Vec<FieldDescriptor>> {
    let mut chain = Vec::new();
    let mut current = message.clone();
    for (i, name) in path.split('.').enumerate() {
        if i > 0 {
            current = match chain.last().map(FieldDescriptor::kind) {
                Some(Kind::Message(m)) => m,
                _ => return None,
            };
        }
        let field = current.get_field_by_name(name).or_else(|| current.get_field_by_json_name(name))?;
        chain.push(field);
    }
    Some(chain)
}

/// A request body as the gateway read it.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// JSON, or nothing.
    Json(&'a [u8]),
    /// `application/x-www-form-urlencoded`, sent to a route whose method accepts forms.
    Form(&'a [u8]),
}

/// Where a field's text came from, for the errors that name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Path,
    Query,
    Form,
}

/// Builds the request message of `route`.
pub fn build_request(
    route: &Route,
    bound: &[(String, String)],
    query: Option<&str>,
    body: Body<'_>,
) -> Result<DynamicMessage, ApiError> {
    let input = route.grpc.input();
    let (body, form) = match body {
        Body::Json(bytes) => (bytes, None),
        // The routes table allows forms only where the body is the whole message.
        Body::Form(bytes) => (&[][..], Some(form_urlencoded(&String::from_utf8_lossy(bytes)))),
    };
    let body_is_empty = body.iter().all(u8::is_ascii_whitespace);
    let mut message = match route.body.as_str() {
        "" if !body_is_empty => {
            return Err(ApiError::http(
                http::StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                "this route takes no request body",
            ));
        }
        "*" if !body_is_empty => parse_json(&input, body, "")?,
        field if !field.is_empty() && !body_is_empty => {
            let mut message = DynamicMessage::new(input.clone());
            let fd = input.get_field_by_name(field).ok_or_else(|| ApiError::new(tonic::Code::Internal, "bad route"))?;
            let value = match fd.kind() {
                Kind::Message(desc) => Value::Message(parse_json(&desc, body, fd.json_name())?),
                _ => return Err(ApiError::new(tonic::Code::Internal, "body field must be a message")),
            };
            message.set_field(&fd, value);
            infer_update_mask(&mut message, &fd, body);
            message
        }
        _ => DynamicMessage::new(input.clone()),
    };

    let path_fields: Vec<&str> = route.template.field_paths().collect();
    for (path, value) in bound {
        set_path(&mut message, path, value, Source::Path)?;
    }
    for (key, value) in form.unwrap_or_default() {
        let key = key.strip_suffix("[]").unwrap_or(&key).to_owned();
        if path_fields.iter().any(|p| same_path(&input, p, &key)) {
            return Err(ApiError::bad_field(key, "is set by the path, not the form"));
        }
        set_path(&mut message, &key, &value, Source::Form)?;
    }

    if let Some(query) = query.filter(|q| !q.is_empty()) {
        if route.body == "*" {
            return Err(ApiError::bad_field(
                first_key(query),
                "this route takes its parameters in the body, not the query string",
            ));
        }
        for (key, value) in form_urlencoded(query) {
            let key = key.strip_suffix("[]").unwrap_or(&key).to_owned();
            let bound_by_path = path_fields.iter().any(|p| same_path(&input, p, &key));
            let bound_by_body = !route.body.is_empty() && key.split('.').next() == Some(route.body.as_str());
            if bound_by_path || bound_by_body {
                return Err(ApiError::bad_field(key, "is set by the path or body, not the query string"));
            }
            set_path(&mut message, &key, &value, Source::Query)?;
        }
    }
    Ok(message)
}

/// Encodes a request message for the wire.
pub fn encode(message: &DynamicMessage) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Turns the response bytes of `route` into the JSON body.
pub fn render_response(route: &Route, bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    let internal = || ApiError::new(tonic::Code::Internal, "internal error");
    let message = DynamicMessage::decode(route.grpc.output(), bytes).map_err(|_| internal())?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
    let mut serializer = serde_json::Serializer::new(&mut out);
    let selected = if route.response_body.is_empty() {
        None
    } else {
        message.descriptor().get_field_by_name(&route.response_body)
    };
    match selected {
        Some(fd) => match message.get_field(&fd).as_message() {
            Some(inner) => inner.serialize_with_options(&mut serializer, &options),
            None => DynamicMessage::new(match fd.kind() {
                Kind::Message(m) => m,
                _ => return Err(internal()),
            })
            .serialize_with_options(&mut serializer, &options),
        },
        None => message.serialize_with_options(&mut serializer, &options),
    }
    .map_err(|_| internal())?;
    Ok(out)
}

fn parse_json(desc: &MessageDescriptor, body: &[u8], prefix: &str) -> Result<DynamicMessage, ApiError> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let parsed = DynamicMessage::deserialize_with_options(
        desc.clone(),
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
        &options,
    )
    .and_then(|m| de.end().map(|()| m));
    parsed.map_err(|e| {
        let path = track.path().to_string();
        let field = match (prefix, path.as_str()) {
            ("", "." | "?" | "") => "body".to_owned(),
            (p, "." | "?" | "") => p.to_owned(),
            ("", p) => p.to_owned(),
            (pre, p) => format!("{pre}.{p}"),
        };
        let reason = e.to_string();
        // serde_json appends the position; the field path already says where.
        let reason = reason.split(" at line ").next().unwrap_or(&reason).to_owned();
        // An unknown field is named by itself, not by the object that holds it.
        let unknown = reason.strip_prefix("unrecognized field name '").and_then(|r| r.split('\'').next());
        let field = match unknown {
            Some(name) if field == "body" => name.to_owned(),
            Some(name) => format!("{field}.{name}"),
            None => field,
        };
        ApiError::bad_field(field, reason)
    })
}

/// Over HTTP, PATCH sends only the fields to change: when the request has an `update_mask` that the query
/// did not set, it is the top-level keys of the body.
fn infer_update_mask(message: &mut DynamicMessage, body_field: &FieldDescriptor, body: &[u8]) {
    let desc = message.descriptor();
    let Some(mask_field) = desc.get_field_by_name("update_mask") else { return };
    let Kind::Message(mask_desc) = mask_field.kind() else { return };
    if mask_desc.full_name() != "google.protobuf.FieldMask" {
        return;
    }
    let Kind::Message(body_desc) = body_field.kind() else { return };
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let paths: Vec<Value> = object
        .keys()
        .filter_map(|k| body_desc.get_field_by_json_name(k).or_else(|| body_desc.get_field_by_name(k)))
        .map(|f| Value::String(f.name().to_owned()))
        .collect();
    let mut mask = DynamicMessage::new(mask_desc.clone());
    if let Some(paths_field) = mask_desc.get_field_by_name("paths") {
        mask.set_field(&paths_field, Value::List(paths));
    }
    message.set_field(&mask_field, Value::Message(mask));
}

fn same_path(input: &MessageDescriptor, a: &str, b: &str) -> bool {
    match (resolve_field(input, a), resolve_field(input, b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Sets the field at a dotted path from its text form. Path variables replace; query parameters and form
/// fields of repeated fields append.
fn set_path(message: &mut DynamicMessage, path: &str, text: &str, source: Source) -> Result<(), ApiError> {
    let unknown = || match source {
        Source::Path => ApiError::new(tonic::Code::Internal, "bad route"),
        Source::Query => ApiError::bad_field(path, "unknown query parameter"),
        Source::Form => ApiError::bad_field(path, "unknown form field"),
    };
    let chain = resolve_field(&message.descriptor(), path).ok_or_else(unknown)?;
    let (last, parents) = chain.split_last().ok_or_else(unknown)?;
    let mut current = message;
    for fd in parents {
        if fd.is_list() || fd.is_map() {
            return Err(unknown());
        }
        current = match current.get_field_mut(fd) {
            Value::Message(m) => m,
            _ => return Err(unknown()),
        };
    }
    if last.is_map() {
        return Err(ApiError::bad_field(path, "maps cannot be set from a query string or form"));
    }
    let value = parse_text(last, text).map_err(|why| ApiError::bad_field(path, why))?;
    if last.is_list() {
        if let Value::List(items) = current.get_field_mut(last) {
            items.push(value);
        }
    } else {
        current.set_field(last, value);
    }
    Ok(())
}

/// A field's value from its text in a path or query string.
fn parse_text(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let number = |kind: &str| format!("must be {kind}, got {text:?}");
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => match text {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(number("true or false")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| number("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(text.parse().map_err(|_| number("an integer"))?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| number("a non-negative integer"))?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| number("a non-negative integer"))?),
        Kind::Float => Value::F32(text.parse().map_err(|_| number("a number"))?),
        Kind::Double => Value::F64(text.parse().map_err(|_| number("a number"))?),
        Kind::Enum(e) => {
            let by_name = e.get_value_by_name(text).map(|v| v.number());
            let by_number = text.parse::<i32>().ok().filter(|n| e.get_value(*n).is_some());
            Value::EnumNumber(by_name.or(by_number).ok_or_else(|| {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                format!("must be one of {}", names.join(", "))
            })?)
        }
        Kind::Bytes | Kind::Message(_) => {
            // Well-known types (Timestamp, FieldMask, wrappers) and bytes take their JSON string form.
            let as_json = serde_json::Value::String(text.to_owned());
            let mut wrapper = serde_json::Map::new();
            wrapper.insert(field.json_name().to_owned(), as_json);
            let container =
                DynamicMessage::deserialize(field.parent_message().clone(), serde_json::Value::Object(wrapper))
                    .map_err(|e| e.to_string())?;
            container.get_field(field).into_owned()
        }
    })
}

fn form_urlencoded(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space).decode_utf8_lossy().into_owned()
}

fn first_key(query: &str) -> String {
    form_urlencoded(query).into_iter().next().map(|(k, _)| k).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Lookup, RouteTable};
    use http::Method;

    fn route<'a>(table: &'a RouteTable, method: Method, path: &str) -> (&'a Route, Vec<(String, String)>) {
        match table.lookup(&method, path) {
            Lookup::Found(r, b) => (r, b),
            other => panic!("no route for {path}: {other:?}"),
        }
    }

    fn json_of(message: &DynamicMessage) -> serde_json::Value {
        serde_json::to_value(message).expect("serialises")
    }

    #[test]
    fn body_star_with_both_spellings() {
        let table = RouteTable::from_contracts().expect("routes");
        let (r, b) = route(&table, Method::POST, "/v1/auth/register");
        let m = build_request(r, &b, None, Body::Json(br#"{"email":"a@b.co","password":"x","display_name":"A"}"#))
            .expect("ok");
        assert_eq!(json_of(&m)["displayName"], "A");
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let table = RouteTable::from_contracts().expect("routes");
        let (r, b) = route(&table, Method::POST, "/v1/auth/login");
        let e = build_request(r, &b, None, Body::Json(br#"{"email":"a@b.co","pasword":"x"}"#)).expect_err("unknown");
        assert!(e.message.contains("pasword"), "{}", e.message);
        assert_eq!(e.details[0]["fieldViolations"][0]["field"], "pasword", "{}", e.message);
        let (r, b) = route(&table, Method::POST, "/v1/products");
        let e =
            build_request(r, &b, None, Body::Json(br#"{"name":"x","price":{"amountMinor":{}}}"#)).expect_err("type");
        assert_eq!(e.details[0]["fieldViolations"][0]["field"], "product.price.amountMinor");
        let e = build_request(r, &b, None, Body::Json(b"{not json")).expect_err("syntax");
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn path_and_query_parameters_bind_fields() {
        let table = RouteTable::from_contracts().expect("routes");
        let (r, b) = route(&table, Method::GET, "/v1/products");
        let m = build_request(r, &b, Some("pageSize=5&category=tea&page_token=abc"), Body::Json(b"")).expect("ok");
        let j = json_of(&m);
        assert_eq!(
            (j["pageSize"].as_i64(), j["category"].as_str(), j["pageToken"].as_str()),
            (Some(5), Some("tea"), Some("abc"))
        );
        let e = build_request(r, &b, Some("colour=red"), Body::Json(b"")).expect_err("unknown param");
        assert!(e.message.starts_with("colour:"), "{}", e.message);
        let e = build_request(r, &b, Some("pageSize=many"), Body::Json(b"")).expect_err("bad int");
        assert!(e.message.starts_with("pageSize:"), "{}", e.message);
        let (r, b) = route(&table, Method::GET, "/v1/products/p%201");
        assert_eq!(json_of(&build_request(r, &b, None, Body::Json(b"")).expect("ok"))["id"], "p 1");
    }

    #[test]
    fn forms_set_fields_by_name_where_the_method_accepts_them() {
        let table = RouteTable::from_contracts().expect("routes");
        let (r, b) = route(&table, Method::POST, "/v1/newsletter/tokens/t%201:unsubscribe");
        let m = build_request(r, &b, None, Body::Form(b"List-Unsubscribe=One-Click")).expect("ok");
        let j = json_of(&m);
        assert_eq!((j["token"].as_str(), j["List-Unsubscribe"].as_str()), (Some("t 1"), Some("One-Click")));
        let (r, b) = route(&table, Method::POST, "/v1/newsletter/subscriptions:unsubscribe");
        let m = build_request(r, &b, None, Body::Form(b"token=a+b%2Bc&list_unsubscribe=One-Click")).expect("ok");
        assert_eq!(json_of(&m)["token"], "a b+c", "plus is a space, percent-escapes are decoded");
        let e = build_request(r, &b, None, Body::Form(b"tokn=x")).expect_err("unknown");
        assert_eq!(e.details[0]["fieldViolations"][0]["field"], "tokn", "{}", e.message);
        assert!(e.message.contains("unknown form field"), "{}", e.message);
        let (r, b) = route(&table, Method::POST, "/v1/newsletter/tokens/t1:unsubscribe");
        let e = build_request(r, &b, None, Body::Form(b"token=other")).expect_err("set by the path");
        assert_eq!(e.details[0]["fieldViolations"][0]["field"], "token", "{}", e.message);
    }

    #[test]
    fn patch_infers_the_update_mask_from_the_body() {
        let table = RouteTable::from_contracts().expect("routes");
        let (r, b) = route(&table, Method::PATCH, "/v1/products/p1");
        let m =
            build_request(r, &b, None, Body::Json(br#"{"name":"New","price":{"currency":"EUR","amountMinor":"5"}}"#))
                .expect("ok");
        let j = json_of(&m);
        assert_eq!(j["id"], "p1");
        assert_eq!(j["updateMask"], "name,price");
    }
}
