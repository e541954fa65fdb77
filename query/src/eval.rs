//! Evaluation: devices pushed one at a time through the plan's stages.

use crate::MAX_ROWS;
use crate::compile::{AggSpec, CmpOp, LitVal, Operand, Plan, Pred, StageSpec, StrOp};
use crate::schema::{Cell, Row, Val, for_each_row};
use cloudattach_model::Device;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Arc;

impl LitVal {
    fn val(&self) -> Val<'_> {
        match self {
            LitVal::Long(n) => Val::Long(*n),
            LitVal::Real(r) => Val::Real(*r),
            LitVal::Bool(b) => Val::Bool(*b),
            LitVal::Str { text, .. } => Val::Str(text),
        }
    }
}

impl Operand {
    #[inline]
    fn val<'a, R: Row + ?Sized>(&'a self, row: &'a R) -> Val<'a> {
        match self {
            Operand::Col(i) => row.get(*i),
            Operand::Lit(l) => l.val(),
        }
    }
}

/// How two values compare; `None` when either is null (a comparison with null is null).
fn compare(a: Val<'_>, b: Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Null, _) | (_, Val::Null) => None,
        (Val::Long(a), Val::Long(b)) => Some(a.cmp(&b)),
        (Val::Long(a), Val::Real(b)) => (a as f64).partial_cmp(&b),
        (Val::Real(a), Val::Long(b)) => a.partial_cmp(&(b as f64)),
        (Val::Real(a), Val::Real(b)) => a.partial_cmp(&b),
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(&b)),
        // Validation refuses every other pair.
        _ => None,
    }
}

/// A case-insensitive string test; `needle` is already lower-case. ASCII text (nearly every
/// inventory value) is compared in place; other text is lower-cased first.
fn str_test(op: StrOp, hay: &str, needle: &str) -> bool {
    if hay.is_ascii() && needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        match op {
            StrOp::EqCi => h.eq_ignore_ascii_case(n),
            StrOp::StartsWith => h.len() >= n.len() && h[..n.len()].eq_ignore_ascii_case(n),
            StrOp::EndsWith => h.len() >= n.len() && h[h.len() - n.len()..].eq_ignore_ascii_case(n),
            StrOp::Contains => match n.first() {
                None => true,
                Some(&first) => h
                    .windows(n.len())
                    .any(|w| w[0].eq_ignore_ascii_case(&first) && w.eq_ignore_ascii_case(n)),
            },
        }
    } else {
        let h = hay.to_lowercase();
        match op {
            StrOp::EqCi => h == needle,
            StrOp::StartsWith => h.starts_with(needle),
            StrOp::EndsWith => h.ends_with(needle),
            StrOp::Contains => h.contains(needle),
        }
    }
}

impl Pred {
    /// KQL's three-valued logic: `None` is null, and a row is kept only for `Some(true)`.
    pub(crate) fn eval<R: Row + ?Sized>(&self, row: &R) -> Option<bool> {
        match self {
            Pred::Value(o) => match o.val(row) {
                Val::Bool(b) => Some(b),
                _ => None,
            },
            Pred::Cmp(op, a, b) => {
                let ord = compare(a.val(row), b.val(row))?;
                Some(match op {
                    CmpOp::Eq => ord == Ordering::Equal,
                    CmpOp::Ne => ord != Ordering::Equal,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Le => ord != Ordering::Greater,
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Ge => ord != Ordering::Less,
                })
            }
            Pred::Str {
                op,
                negated,
                left,
                right,
            } => {
                let Val::Str(hay) = left.val(row) else {
                    return None;
                };
                let found = match right {
                    Operand::Lit(LitVal::Str { lower, .. }) => str_test(*op, hay, lower),
                    other => match other.val(row) {
                        Val::Str(n) => str_test(*op, hay, &n.to_lowercase()),
                        _ => return None,
                    },
                };
                Some(found != *negated)
            }
            Pred::In {
                operand,
                items,
                negated,
                case_insensitive,
            } => {
                let v = operand.val(row);
                if v == Val::Null {
                    return None;
                }
                let found = items.iter().any(|item| match (v, item) {
                    (Val::Str(s), LitVal::Str { text, lower }) => {
                        if *case_insensitive {
                            str_test(StrOp::EqCi, s, lower)
                        } else {
                            s == &**text
                        }
                    }
                    (v, item) => compare(v, item.val()) == Some(Ordering::Equal),
                });
                Some(found != *negated)
            }
            Pred::IsNull {
                operand,
                negated,
                or_empty,
            } => {
                let v = operand.val(row);
                let is = v == Val::Null || (*or_empty && v == Val::Str(""));
                Some(is != *negated)
            }
            Pred::Not(p) => p.eval(row).map(|b| !b),
            Pred::And(a, b) => match a.eval(row) {
                Some(false) => Some(false),
                x => match (x, b.eval(row)) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
            },
            Pred::Or(a, b) => match a.eval(row) {
                Some(true) => Some(true),
                x => match (x, b.eval(row)) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
            },
        }
    }
}

/// The result of a query.
///
/// `Display` renders it as text, one line for the column names and one per row, the values
/// as JSON separated by ` | ` (and a last line `(truncated)` when it was):
///
/// ```text
/// os | count_
/// "Microsoft Windows NT Workstation 10.0" | 2
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The column names.
    pub columns: Vec<String>,
    /// The rows: numbers, strings, booleans or null, one per column.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// The query produced more than [`MAX_ROWS`] rows: only the first ones are here.
    pub truncated: bool,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.columns.join(" | "))?;
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            writeln!(f, "{}", cells.join(" | "))?;
        }
        if self.truncated {
            writeln!(f, "(truncated)")?;
        }
        Ok(())
    }
}

enum AggState {
    Count(i64),
    Sum(i64),
    Min(Cell),
    Max(Cell),
    DCount(HashSet<Cell>),
}

impl AggState {
    fn new(spec: &AggSpec) -> AggState {
        match spec {
            AggSpec::Count | AggSpec::CountIf(_) => AggState::Count(0),
            AggSpec::Sum(_) => AggState::Sum(0),
            AggSpec::Min(_) => AggState::Min(Cell::Null),
            AggSpec::Max(_) => AggState::Max(Cell::Null),
            AggSpec::DCount(_) => AggState::DCount(HashSet::default()),
        }
    }

    fn add(&mut self, spec: &AggSpec, row: &[Cell]) {
        match (self, spec) {
            (AggState::Count(n), AggSpec::Count) => *n += 1,
            (AggState::Count(n), AggSpec::CountIf(p)) if p.eval(row) == Some(true) => *n += 1,
            (AggState::Sum(s), AggSpec::Sum(i)) => {
                if let Cell::Long(v) = row[*i] {
                    *s = s.saturating_add(v);
                }
            }
            (AggState::Min(m), AggSpec::Min(i)) => {
                let v = &row[*i];
                if *v != Cell::Null && (*m == Cell::Null || v < m) {
                    *m = v.clone();
                }
            }
            (AggState::Max(m), AggSpec::Max(i)) => {
                let v = &row[*i];
                if *v != Cell::Null && v > m {
                    *m = v.clone();
                }
            }
            (AggState::DCount(set), AggSpec::DCount(i))
                if row[*i] != Cell::Null && !set.contains(&row[*i]) =>
            {
                set.insert(row[*i].clone());
            }
            _ => {}
        }
    }

    fn result(self) -> Cell {
        match self {
            AggState::Count(n) | AggState::Sum(n) => Cell::Long(n),
            AggState::Min(c) | AggState::Max(c) => c,
            AggState::DCount(set) => Cell::Long(set.len() as i64),
        }
    }
}

/// Groups in the order they first appeared.
struct Summary {
    by: Vec<usize>,
    aggs: Vec<AggSpec>,
    index: HashMap<Vec<Cell>, usize>,
    groups: Vec<(Vec<Cell>, Vec<AggState>)>,
}

impl Summary {
    fn add(&mut self, row: Vec<Cell>) {
        let key: Vec<Cell> = self.by.iter().map(|&i| row[i].clone()).collect();
        let g = match self.index.get(&key) {
            Some(&g) => g,
            None => {
                let g = self.groups.len();
                let states = self.aggs.iter().map(AggState::new).collect();
                self.index.insert(key.clone(), g);
                self.groups.push((key, states));
                g
            }
        };
        for (state, spec) in self.groups[g].1.iter_mut().zip(&self.aggs) {
            state.add(spec, &row);
        }
    }

    fn rows(&mut self) -> Vec<Vec<Cell>> {
        if self.groups.is_empty() && self.by.is_empty() {
            // Like KQL: a summarize without `by` gives one row even over no rows.
            let states = self.aggs.iter().map(AggState::new).collect();
            self.groups.push((Vec::new(), states));
        }
        self.index = HashMap::default();
        std::mem::take(&mut self.groups)
            .into_iter()
            .map(|(mut key, states)| {
                key.extend(states.into_iter().map(AggState::result));
                key
            })
            .collect()
    }
}

fn cmp_rows(keys: &[(usize, bool)], a: &[Cell], b: &[Cell]) -> Ordering {
    for &(i, desc) in keys {
        let o = a[i].cmp(&b[i]);
        let o = if desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// A row in a bounded sort: ordered by the keys, then by arrival (so that ties keep their
/// input order); the heap's top is the row that would go first.
struct Ranked {
    keys: Arc<[(usize, bool)]>,
    seq: u64,
    row: Vec<Cell>,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_rows(&self.keys, &self.row, &other.row).then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

enum Sorter {
    All {
        keys: Vec<(usize, bool)>,
        rows: Vec<Vec<Cell>>,
    },
    Best {
        keys: Arc<[(usize, bool)]>,
        limit: usize,
        seq: u64,
        heap: BinaryHeap<Ranked>,
    },
}

impl Sorter {
    fn add(&mut self, row: Vec<Cell>) {
        match self {
            Sorter::All { rows, .. } => rows.push(row),
            Sorter::Best {
                keys,
                limit,
                seq,
                heap,
            } => {
                let ranked = Ranked {
                    keys: keys.clone(),
                    seq: *seq,
                    row,
                };
                *seq += 1;
                if heap.len() < *limit {
                    heap.push(ranked);
                } else if heap.peek().is_some_and(|worst| ranked < *worst) {
                    heap.pop();
                    heap.push(ranked);
                }
            }
        }
    }

    fn rows(&mut self) -> Vec<Vec<Cell>> {
        match self {
            Sorter::All { keys, rows } => {
                let mut rows = std::mem::take(rows);
                // Stable: ties keep their input order.
                rows.sort_by(|a, b| cmp_rows(keys, a, b));
                rows
            }
            Sorter::Best { heap, .. } => std::mem::take(heap)
                .into_sorted_vec()
                .into_iter()
                .map(|r| r.row)
                .collect(),
        }
    }
}

enum Stage {
    Filter(Pred),
    Project(Vec<usize>),
    Take {
        n: u64,
        seen: u64,
    },
    Distinct {
        cols: Vec<usize>,
        seen: HashSet<Vec<Cell>>,
    },
    Summarize(Summary),
    Sort(Sorter),
}

impl Stage {
    fn new(spec: &StageSpec) -> Stage {
        match spec {
            StageSpec::Filter(p) => Stage::Filter(p.clone()),
            StageSpec::Project(cols) => Stage::Project(cols.clone()),
            StageSpec::Take(n) => Stage::Take { n: *n, seen: 0 },
            StageSpec::Distinct(cols) => Stage::Distinct {
                cols: cols.clone(),
                seen: HashSet::default(),
            },
            StageSpec::Summarize { by, aggs } => Stage::Summarize(Summary {
                by: by.clone(),
                aggs: aggs.clone(),
                index: HashMap::default(),
                groups: Vec::new(),
            }),
            StageSpec::Sort { keys, limit } => Stage::Sort(match limit {
                Some(limit) => Sorter::Best {
                    keys: keys.as_slice().into(),
                    limit: usize::try_from(*limit).unwrap_or(usize::MAX),
                    seq: 0,
                    heap: BinaryHeap::new(),
                },
                None => Sorter::All {
                    keys: keys.clone(),
                    rows: Vec::new(),
                },
            }),
        }
    }

    /// The rows a blocking stage releases at the end.
    fn release(&mut self) -> Vec<Vec<Cell>> {
        match self {
            Stage::Summarize(s) => s.rows(),
            Stage::Sort(s) => s.rows(),
            _ => Vec::new(),
        }
    }
}

/// The rows of the result, at most [`MAX_ROWS`].
#[derive(Default)]
struct Sink {
    rows: Vec<Vec<Cell>>,
    truncated: bool,
}

/// Passes `row` through `stages` into `sink`.
fn run(stages: &mut [Stage], sink: &mut Sink, mut row: Vec<Cell>) {
    for stage in stages {
        match stage {
            Stage::Filter(p) => {
                if p.eval(row.as_slice()) != Some(true) {
                    return;
                }
            }
            Stage::Project(cols) => row = cols.iter().map(|&i| row[i].clone()).collect(),
            Stage::Take { n, seen } => {
                if *seen >= *n {
                    return;
                }
                *seen += 1;
            }
            Stage::Distinct { cols, seen } => {
                let key: Vec<Cell> = cols.iter().map(|&i| row[i].clone()).collect();
                if seen.contains(&key) {
                    return;
                }
                seen.insert(key.clone());
                row = key;
            }
            Stage::Summarize(s) => return s.add(row),
            Stage::Sort(s) => return s.add(row),
        }
    }
    if sink.rows.len() < MAX_ROWS {
        sink.rows.push(row);
    } else {
        sink.truncated = true;
    }
}

/// Evaluates a query over devices pushed one at a time (see the crate documentation for what
/// is kept in memory). Made by [`crate::Query::evaluator`].
pub struct Evaluator {
    plan: Arc<Plan>,
    stages: Vec<Stage>,
    sink: Sink,
    done: bool,
}

impl Evaluator {
    pub(crate) fn new(plan: Arc<Plan>) -> Evaluator {
        let stages = plan.stages.iter().map(Stage::new).collect();
        let mut e = Evaluator {
            plan,
            stages,
            sink: Sink::default(),
            done: false,
        };
        e.update_done();
        e
    }

    /// Whether no further device can change the result (a `take` without a sort or summarize
    /// before it has its rows, or the result overflowed [`MAX_ROWS`] with nothing left to
    /// sort or group): the caller may stop reading devices and call [`Evaluator::finish`].
    /// [`Evaluator::push`] does nothing then.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn update_done(&mut self) {
        self.done = self.sink.truncated
            || self
                .stages
                .iter()
                .any(|s| matches!(s, Stage::Take { n, seen } if seen >= n));
    }

    /// Reads the rows of one device: the leading `where`s are tested on the device in place,
    /// and only the rows that pass are copied.
    pub fn push(&mut self, device: &Device) {
        if self.done {
            return;
        }
        let Evaluator {
            plan,
            stages,
            sink,
            done,
        } = self;
        let streaming_take = stages.iter().any(|s| matches!(s, Stage::Take { .. }));
        for_each_row(plan.entity, device, |source| {
            if plan.filters.iter().all(|p| p.eval(&source) == Some(true)) {
                let row = plan
                    .materialize
                    .iter()
                    .map(|i| i.map_or(Cell::Null, |i| Cell::from_val(source.get(i))))
                    .collect();
                run(stages, sink, row);
                if sink.truncated
                    || (streaming_take
                        && stages
                            .iter()
                            .any(|s| matches!(s, Stage::Take { n, seen } if seen >= n)))
                {
                    *done = true;
                }
            }
            !*done
        });
    }

    /// Releases what the sorts and summaries hold and returns the result.
    pub fn finish(mut self) -> Table {
        for i in 0..self.stages.len() {
            let (head, tail) = self.stages.split_at_mut(i + 1);
            for row in head[i].release() {
                run(tail, &mut self.sink, row);
            }
        }
        Table {
            columns: self.plan.columns.clone(),
            rows: self
                .sink
                .rows
                .into_iter()
                .map(|r| r.into_iter().map(Cell::into_json).collect())
                .collect(),
            truncated: self.sink.truncated,
        }
    }
}

impl fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evaluator")
            .field("entity", &self.plan.entity)
            .field("rows", &self.sink.rows.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
