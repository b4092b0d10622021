//! How a table is divided for parallel work: a table larger than the segment size is read in
//! ranges of its blocks (`ctid` ranges, which PostgreSQL 14 and later scan by reading only those
//! blocks), each range its own object, so one dominant table is backed up, restored and checked
//! on every connection at once instead of one. The last range is open-ended: rows stored past the
//! size measured when the ranges were planned are still read.

use crate::catalyst_db::introspect::{BlockRange, block_ranges};

/// One unit of parallel work: a block range of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// Index of the table in the list the plan was made from.
    pub table: usize,
    /// Position of the range within its table, from 0.
    pub index: u32,
    pub range: BlockRange,
}

/// Every table's segments, the largest tables first (so their many segments start early and the
/// small tables fill in at the end), each table's segments in block order.
pub fn plan(table_blocks: &[u64], segment_blocks: u64, ranges_supported: bool) -> Vec<Segment> {
    let mut order: Vec<usize> = (0..table_blocks.len()).collect();
    order.sort_by_key(|&t| std::cmp::Reverse(table_blocks[t]));
    order
        .into_iter()
        .flat_map(|table| {
            block_ranges(table_blocks[table], segment_blocks, ranges_supported)
                .into_iter()
                .enumerate()
                .map(move |(index, range)| Segment {
                    table,
                    index: index as u32,
                    range,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_block_once_and_the_last_is_open() {
        assert_eq!(block_ranges(0, 8, true), vec![BlockRange::WHOLE]);
        assert_eq!(block_ranges(8, 8, true), vec![BlockRange::WHOLE]);
        assert_eq!(block_ranges(1_000, 8, false), vec![BlockRange::WHOLE]);
        assert_eq!(
            block_ranges(17, 8, true),
            vec![
                BlockRange {
                    start: 0,
                    end: Some(8)
                },
                BlockRange {
                    start: 8,
                    end: Some(16)
                },
                BlockRange {
                    start: 16,
                    end: None
                },
            ]
        );
    }

    #[test]
    fn the_largest_tables_come_first() {
        let plan = plan(&[1, 20, 0], 8, true);
        let order: Vec<(usize, u32)> = plan.iter().map(|s| (s.table, s.index)).collect();
        assert_eq!(order, vec![(1, 0), (1, 1), (1, 2), (0, 0), (2, 0)]);
    }
}
