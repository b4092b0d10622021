//! What every RDS call of catalyst-dr shares: the source database (an instance or an Aurora
//! cluster) and the conversion between catalyst-dr's tags and the SDK's.

use crate::tags::Tags;
use aws_sdk_rds::types::Tag;

/// The database catalyst-dr backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbSource {
    Instance(String),
    Cluster(String),
}

pub(crate) fn sdk_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

pub(crate) fn tag_map(tags: &[Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}
