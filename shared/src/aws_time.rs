//! Conversions between the SDK's timestamps and `time::OffsetDateTime`.

use aws_smithy_types::DateTime;
use time::OffsetDateTime;

pub fn from_aws(t: &DateTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(t.secs()) * 1_000_000_000 + i128::from(t.subsec_nanos()),
    )
    .ok()
}

pub fn to_aws(t: OffsetDateTime) -> DateTime {
    DateTime::from_secs(t.unix_timestamp())
}
