//! The rules of shipments, free of I/O: the states and how they move, what a dispatch and a tracking event
//! must carry, and the bounds of a listing.

use api::mercato::deliveries::v1::ShipmentStatus;
use platform::error::{FieldViolation, Violations};

pub use platform::error::check_id as validate_id;
pub use platform::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, id_token as page_token, page_size};

/// Longest carrier name.
pub const MAX_CARRIER: usize = 64;
/// Longest tracking number.
pub const MAX_TRACKING_NUMBER: usize = 64;
/// Longest location of a tracking event.
pub const MAX_LOCATION: usize = 200;
/// Longest description of a tracking event.
pub const MAX_DESCRIPTION: usize = 500;
/// Longest carrier event id.
pub const MAX_CARRIER_EVENT_ID: usize = 128;
/// How far ahead of this service's clock a carrier's event time may be (clocks differ; the future does not
/// happen).
pub const MAX_CLOCK_SKEW_MICROS: i64 = 5 * 60 * 1_000_000;

/// The state of a shipment (see the service's comment in deliveries.proto for how it moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting to be dispatched.
    Pending,
    /// Handed to the carrier.
    Shipped,
    /// Scanned on its way.
    InTransit,
    /// With the courier.
    OutForDelivery,
    /// Delivered. Final.
    Delivered,
    /// A delivery attempt failed.
    DeliveryFailed,
    /// Sent back. Final.
    Returned,
    /// Cancelled with its order before dispatch. Final.
    Cancelled,
}

impl Status {
    /// Every state, for the tests and for parsing.
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::Shipped,
        Status::InTransit,
        Status::OutForDelivery,
        Status::Delivered,
        Status::DeliveryFailed,
        Status::Returned,
        Status::Cancelled,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Shipped => "SHIPPED",
            Status::InTransit => "IN_TRANSIT",
            Status::OutForDelivery => "OUT_FOR_DELIVERY",
            Status::Delivered => "DELIVERED",
            Status::DeliveryFailed => "DELIVERY_FAILED",
            Status::Returned => "RETURNED",
            Status::Cancelled => "CANCELLED",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(name: &str) -> Option<Status> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The wire enum.
    pub fn to_wire(self) -> ShipmentStatus {
        match self {
            Status::Pending => ShipmentStatus::Pending,
            Status::Shipped => ShipmentStatus::Shipped,
            Status::InTransit => ShipmentStatus::InTransit,
            Status::OutForDelivery => ShipmentStatus::OutForDelivery,
            Status::Delivered => ShipmentStatus::Delivered,
            Status::DeliveryFailed => ShipmentStatus::DeliveryFailed,
            Status::Returned => ShipmentStatus::Returned,
            Status::Cancelled => ShipmentStatus::Cancelled,
        }
    }

    /// The state a wire value names; `None` for UNSPECIFIED and unknown numbers.
    pub fn from_wire(value: i32) -> Option<Status> {
        match ShipmentStatus::try_from(value).ok()? {
            ShipmentStatus::Unspecified => None,
            ShipmentStatus::Pending => Some(Status::Pending),
            ShipmentStatus::Shipped => Some(Status::Shipped),
            ShipmentStatus::InTransit => Some(Status::InTransit),
            ShipmentStatus::OutForDelivery => Some(Status::OutForDelivery),
            ShipmentStatus::Delivered => Some(Status::Delivered),
            ShipmentStatus::DeliveryFailed => Some(Status::DeliveryFailed),
            ShipmentStatus::Returned => Some(Status::Returned),
            ShipmentStatus::Cancelled => Some(Status::Cancelled),
        }
    }

    /// Whether nothing moves the shipment any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Delivered | Status::Returned | Status::Cancelled)
    }

    /// Whether the shipment is with a carrier (dispatched and not yet final).
    pub fn is_with_carrier(self) -> bool {
        matches!(self, Status::Shipped | Status::InTransit | Status::OutForDelivery | Status::DeliveryFailed)
    }

    /// Whether a carrier's event may report this state.
    pub fn is_carrier_reported(self) -> bool {
        matches!(
            self,
            Status::InTransit | Status::OutForDelivery | Status::Delivered | Status::DeliveryFailed | Status::Returned
        )
    }
}

/// What a tracking event does to a shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    /// The shipment moves to this state.
    Moves(Status),
    /// The event happened before the shipment's latest one (the carrier's webhooks arrived out of order): it
    /// joins the history at its time and the state stays as the later event left it.
    Late,
}

/// Why a tracking event is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingRefusal {
    /// The shipment has not been dispatched, or is final.
    NotWithCarrier(Status),
}

/// What a carrier's event reporting `reported` at `occur_time` does to a shipment in state `current` whose
/// latest carrier event happened at `latest_occur_time` (0 before the first). `reported` is a carrier-reported
/// state (validated before). The service's own entries do not count: a carrier's clock may be a little behind
/// ours, and its first scan must still move a shipment just dispatched.
pub fn track(
    current: Status,
    latest_occur_time: i64,
    reported: Status,
    occur_time: i64,
) -> Result<Tracking, TrackingRefusal> {
    if current == Status::Pending || current == Status::Cancelled {
        return Err(TrackingRefusal::NotWithCarrier(current));
    }
    if occur_time < latest_occur_time {
        return Ok(Tracking::Late);
    }
    if current.is_final() {
        return Err(TrackingRefusal::NotWithCarrier(current));
    }
    Ok(Tracking::Moves(reported))
}

/// What a cancelled order does to its shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOrderCancelled {
    /// Not dispatched yet: the shipment is cancelled.
    Cancel,
    /// Already with the carrier or delivered: noted in the history, the state stays (staff intercept the
    /// parcel or expect it back).
    Note,
    /// Already cancelled or returned: nothing to do.
    Nothing,
}

/// What the cancellation of its order does to a shipment in state `current`.
pub fn on_order_cancelled(current: Status) -> OnOrderCancelled {
    match current {
        Status::Pending => OnOrderCancelled::Cancel,
        Status::Cancelled | Status::Returned => OnOrderCancelled::Nothing,
        _ => OnOrderCancelled::Note,
    }
}

/// What the orders service's request to cancel an order's shipment (before it refunds the order) does to a
/// shipment in state `current`: like [`on_order_cancelled`], except that a parcel with the carrier refuses
/// the cancellation (`None`) instead of noting it, since the order is then not cancelled at all.
pub fn on_cancel_request(current: Status) -> Option<OnOrderCancelled> {
    match on_order_cancelled(current) {
        OnOrderCancelled::Note => None,
        other => Some(other),
    }
}

/// A dispatch as validated: carrier and tracking number, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The carrier.
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking_number: String,
}

/// Validates a dispatch's fields; every bad field is named.
pub fn validate_dispatch(carrier: &str, tracking_number: &str) -> Result<Dispatch, Vec<FieldViolation>> {
    let carrier = carrier.trim();
    let tracking_number = tracking_number.trim();
    let mut violations = Violations::new();
    if carrier.is_empty() {
        violations.add("carrier", "is required");
    } else if carrier.chars().count() > MAX_CARRIER {
        violations.add("carrier", format!("is longer than {MAX_CARRIER} characters"));
    } else if carrier.chars().any(char::is_control) {
        violations.add("carrier", "must not contain control characters");
    }
    if tracking_number.is_empty() {
        violations.add("tracking_number", "is required");
    } else if tracking_number.len() > MAX_TRACKING_NUMBER {
        violations.add("tracking_number", format!("is longer than {MAX_TRACKING_NUMBER} characters"));
    } else if !tracking_number.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b' ') {
        violations.add("tracking_number", "may hold only letters, digits, '-' and spaces");
    }
    violations.finish()?;
    Ok(Dispatch { carrier: carrier.to_owned(), tracking_number: tracking_number.to_owned() })
}

/// A tracking event as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrackingEvent {
    /// The state the carrier reports.
    pub status: Status,
    /// Where, trimmed; may be empty.
    pub location: String,
    /// What happened, trimmed; may be empty.
    pub description: String,
    /// When it happened, microseconds since the epoch.
    pub occur_time: i64,
    /// The carrier's id of the event, if it gave one.
    pub carrier_event_id: Option<String>,
}

/// A tracking event's fields as they arrive.
#[derive(Debug, Clone, Copy)]
pub struct TrackingInput<'a> {
    /// The wire value of the reported state.
    pub status: i32,
    /// Where.
    pub location: &'a str,
    /// What happened.
    pub description: &'a str,
    /// When, microseconds since the epoch; `None` when not given.
    pub occur_time: Option<i64>,
    /// The carrier's id of the event; empty when not given.
    pub carrier_event_id: &'a str,
}

/// Validates a tracking event received at `now`; every bad field is named.
pub fn validate_tracking(input: &TrackingInput<'_>, now: i64) -> Result<NewTrackingEvent, Vec<FieldViolation>> {
    let mut violations = Violations::new();
    let status = Status::from_wire(input.status).filter(|s| s.is_carrier_reported());
    if status.is_none() {
        violations.add("status", "must be IN_TRANSIT, OUT_FOR_DELIVERY, DELIVERED, DELIVERY_FAILED or RETURNED");
    }
    let location = input.location.trim();
    if location.chars().count() > MAX_LOCATION {
        violations.add("location", format!("is longer than {MAX_LOCATION} characters"));
    }
    let description = input.description.trim();
    if description.chars().count() > MAX_DESCRIPTION {
        violations.add("description", format!("is longer than {MAX_DESCRIPTION} characters"));
    }
    let occur_time = input.occur_time.unwrap_or(now);
    if occur_time > now + MAX_CLOCK_SKEW_MICROS {
        violations.add("occur_time", "is in the future");
    } else if occur_time <= 0 {
        violations.add("occur_time", "must be after 1970");
    }
    let carrier_event_id = input.carrier_event_id.trim();
    if carrier_event_id.len() > MAX_CARRIER_EVENT_ID {
        violations.add("carrier_event_id", format!("is longer than {MAX_CARRIER_EVENT_ID} characters"));
    }
    match status {
        Some(status) if violations.is_empty() => Ok(NewTrackingEvent {
            status,
            location: location.to_owned(),
            description: description.to_owned(),
            occur_time,
            carrier_event_id: (!carrier_event_id.is_empty()).then(|| carrier_event_id.to_owned()),
        }),
        _ => Err(violations.into_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wire_values_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(Status::from_wire(status.to_wire() as i32), Some(status));
        }
        assert_eq!(Status::from_wire(0), None);
        assert_eq!(Status::from_wire(99), None);
        assert_eq!(Status::parse("LOST"), None);
    }

    #[test]
    fn carriers_move_dispatched_shipments_only() {
        for from in [Status::Shipped, Status::InTransit, Status::OutForDelivery, Status::DeliveryFailed] {
            for to in [Status::InTransit, Status::Delivered, Status::Returned] {
                assert_eq!(track(from, 10, to, 20), Ok(Tracking::Moves(to)), "{from:?} -> {to:?}");
            }
        }
        assert_eq!(
            track(Status::Pending, 10, Status::InTransit, 20),
            Err(TrackingRefusal::NotWithCarrier(Status::Pending))
        );
        assert_eq!(
            track(Status::Cancelled, 10, Status::InTransit, 5),
            Err(TrackingRefusal::NotWithCarrier(Status::Cancelled)),
            "even a late event: a cancelled shipment never went out"
        );
        assert_eq!(
            track(Status::Delivered, 10, Status::Returned, 20),
            Err(TrackingRefusal::NotWithCarrier(Status::Delivered))
        );
    }

    #[test]
    fn late_events_join_the_history_without_moving_the_state() {
        assert_eq!(track(Status::OutForDelivery, 100, Status::InTransit, 50), Ok(Tracking::Late));
        assert_eq!(track(Status::Delivered, 100, Status::OutForDelivery, 99), Ok(Tracking::Late));
        assert_eq!(track(Status::InTransit, 100, Status::Delivered, 100), Ok(Tracking::Moves(Status::Delivered)));
    }

    #[test]
    fn a_cancelled_order_cancels_only_what_has_not_left() {
        assert_eq!(on_order_cancelled(Status::Pending), OnOrderCancelled::Cancel);
        assert_eq!(on_order_cancelled(Status::InTransit), OnOrderCancelled::Note);
        assert_eq!(on_order_cancelled(Status::Delivered), OnOrderCancelled::Note);
        assert_eq!(on_order_cancelled(Status::Cancelled), OnOrderCancelled::Nothing);
        assert_eq!(on_order_cancelled(Status::Returned), OnOrderCancelled::Nothing);
    }

    #[test]
    fn a_parcel_with_the_carrier_refuses_the_orders_cancellation() {
        assert_eq!(on_cancel_request(Status::Pending), Some(OnOrderCancelled::Cancel));
        assert_eq!(on_cancel_request(Status::Cancelled), Some(OnOrderCancelled::Nothing));
        assert_eq!(on_cancel_request(Status::Returned), Some(OnOrderCancelled::Nothing), "back at the shop");
        for dispatched in
            [Status::Shipped, Status::InTransit, Status::OutForDelivery, Status::DeliveryFailed, Status::Delivered]
        {
            assert_eq!(on_cancel_request(dispatched), None, "{dispatched:?}");
        }
    }

    fn fields(violations: Vec<FieldViolation>) -> Vec<String> {
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn dispatches_need_a_carrier_and_a_plain_tracking_number() {
        assert_eq!(
            validate_dispatch(" DHL ", "JJD 0001-42"),
            Ok(Dispatch { carrier: "DHL".into(), tracking_number: "JJD 0001-42".into() })
        );
        assert_eq!(fields(validate_dispatch("", " ").expect_err("invalid")), ["carrier", "tracking_number"]);
        assert_eq!(fields(validate_dispatch("DHL", "12;DROP").expect_err("invalid")), ["tracking_number"]);
        assert_eq!(fields(validate_dispatch(&"x".repeat(65), "1").expect_err("invalid")), ["carrier"]);
    }

    fn input(status: Status) -> TrackingInput<'static> {
        TrackingInput {
            status: status.to_wire() as i32,
            location: "",
            description: "",
            occur_time: None,
            carrier_event_id: "",
        }
    }

    #[test]
    fn tracking_events_report_a_carrier_state_at_a_time_not_in_the_future() {
        let now = 1_000_000_000;
        let event = validate_tracking(&input(Status::InTransit), now).expect("valid");
        assert_eq!((event.status, event.occur_time, event.carrier_event_id), (Status::InTransit, now, None));
        for bad in [Status::Pending, Status::Shipped, Status::Cancelled] {
            assert_eq!(fields(validate_tracking(&input(bad), now).expect_err("invalid")), ["status"], "{bad:?}");
        }
        let future = TrackingInput { occur_time: Some(now + MAX_CLOCK_SKEW_MICROS + 1), ..input(Status::Delivered) };
        assert_eq!(fields(validate_tracking(&future, now).expect_err("invalid")), ["occur_time"]);
        let skewed =
            TrackingInput { occur_time: Some(now + 1_000), carrier_event_id: " e-1 ", ..input(Status::Delivered) };
        assert_eq!(
            validate_tracking(&skewed, now).expect("a little skew is fine").carrier_event_id.as_deref(),
            Some("e-1")
        );
        let long = TrackingInput { status: 0, location: &"x".repeat(201), ..input(Status::Delivered) };
        assert_eq!(fields(validate_tracking(&long, now).expect_err("invalid")), ["status", "location"]);
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
        assert!(page_token("0190-abc").is_ok());
        assert!(page_token("' OR 1=1").is_err());
    }
}
