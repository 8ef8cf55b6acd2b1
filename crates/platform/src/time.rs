//! Times on the wire: protobuf `Timestamp` to and from `chrono`, the one conversion every service needs.

use chrono::{DateTime, Utc};

/// A protobuf timestamp of `at`.
pub fn to_proto(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// The instant a protobuf timestamp names, if it is set and in range.
pub fn from_proto(at: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    at.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_survives_the_round_trip() {
        let at = Utc::now();
        assert_eq!(from_proto(Some(to_proto(at))), Some(at));
        assert_eq!(from_proto(None), None);
    }
}
