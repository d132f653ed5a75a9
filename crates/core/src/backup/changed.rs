//! The blocks changed since the reference backup: from the reference's start LSN (on its timeline) to
//! this backup's start LSN (on the current one), following the timeline history, as the union of the
//! archived summaries plus a summary, made now, of the WAL still in `pg_wal` (written since the last
//! archived segment). Whatever neither covers stays a gap: the backup then falls back to page LSNs.

use crate::archive::summarize::{SegmentKind, SegmentSummarizer};
use crate::chain::TimelineHistory;
use crate::changes::{bound_listed_blocks, changes_between, ChangeMap, Gap, MAX_LISTED_BLOCKS};
use crate::repo::Repo;
use crate::summary::Summary;
use crate::Result;
use pgformat::lsn::{segment_file_name, Lsn, TimeLineId};
use std::path::Path;

/// Where the change map's inputs are.
pub struct ChangeSources<'a> {
    pub repo: &'a Repo,
    pub pg_wal: &'a Path,
    pub wal_segment_size: u32,
}

/// The changes of `[from, to)`, `from` on timeline `from_tli`, `to` on the last timeline of `history`.
pub fn changes_since(
    src: &ChangeSources,
    history: &TimelineHistory,
    from_tli: TimeLineId,
    from: Lsn,
    to: Lsn,
) -> Result<ChangeMap> {
    let ranges = history.ranges(from_tli, from, to);
    let current = history.entries.last().map(|e| e.0).unwrap_or(from_tli);
    let mut all = ChangeMap {
        changes: Summary::new(current, from, to),
        gaps: Vec::new(),
    };
    if ranges.is_empty() && from < to {
        all.gaps.push(Gap {
            start: from,
            end: to,
            reason: format!("timeline {from_tli} is not on the history of timeline {current}"),
        });
    }
    for (tli, start, end) in ranges {
        let mut part = changes_between(src.repo, tli, start, end)?;
        if tli == current {
            fill_tail_from_pg_wal(src, tli, &mut part);
        }
        all.changes.absorb(&part.changes);
        bound_listed_blocks(&mut all.changes, MAX_LISTED_BLOCKS);
        all.gaps.extend(part.gaps);
    }
    all.changes.start = from;
    all.changes.end = to;
    Ok(all)
}

/// Summarizes the not-yet-archived end of `map`'s range from the segments in pg_wal.
fn fill_tail_from_pg_wal(src: &ChangeSources, tli: TimeLineId, map: &mut ChangeMap) {
    let Some(last) = map.gaps.last().cloned() else {
        return;
    };
    if last.end != map.changes.end {
        return;
    }
    let seg = src.wal_segment_size;
    let first = last.start.segment_number(seg);
    let final_seg = Lsn(last.end.0.saturating_sub(1)).segment_number(seg);
    let mut summarizer = SegmentSummarizer::new(seg);
    let mut covered_to = last.start;
    for segno in first..=final_seg {
        let name = segment_file_name(tli, segno, seg);
        let Ok(data) = std::fs::read(src.pg_wal.join(&name)) else {
            break; // recycled meanwhile (then archived: a later backup sees its summary)
        };
        if data.len() != seg as usize {
            break;
        }
        // The segment holding the end is still being written: valid WAL ends inside it.
        let kind = if segno == final_seg {
            SegmentKind::Partial
        } else {
            SegmentKind::Complete
        };
        let summary = summarizer.summarize(tli, segno, kind, &data, || {
            crate::archive::push::previous_segment(
                src.repo,
                seg,
                &src.pg_wal.join(&name),
                tli,
                segno,
            )
        });
        if summary.missing.is_some() {
            break;
        }
        map.changes.absorb(&summary);
        bound_listed_blocks(&mut map.changes, MAX_LISTED_BLOCKS);
        covered_to = covered_to.max(summary.end);
    }
    map.gaps.pop();
    if covered_to < last.end {
        map.gaps.push(Gap {
            start: covered_to,
            end: last.end,
            reason: "WAL neither archived nor readable in pg_wal".into(),
        });
    }
}
