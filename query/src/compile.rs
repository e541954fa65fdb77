//! Validation: the syntax tree checked against the entity's schema (every column known, every
//! operator given the types it takes) and turned into a plan of stages over column indices.

use crate::error::QueryError;
use crate::schema::{ColumnType, Entity};
use crate::syntax::{Aggregate, Ast, BinOp, Expr, Lit, Name, Op, Span};
use crate::{MAX_ROWS, syntax};

/// A literal, ready to compare (strings also lower-cased, for the case-insensitive operators).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LitVal {
    Long(i64),
    Real(f64),
    Bool(bool),
    Str { text: Box<str>, lower: Box<str> },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Col(usize),
    Lit(LitVal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrOp {
    EqCi,
    Contains,
    StartsWith,
    EndsWith,
}

/// A condition, evaluated with KQL's three-valued logic (`None` is null).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pred {
    Value(Operand),
    Cmp(CmpOp, Operand, Operand),
    Str {
        op: StrOp,
        negated: bool,
        left: Operand,
        right: Operand,
    },
    In {
        operand: Operand,
        items: Vec<LitVal>,
        negated: bool,
        case_insensitive: bool,
    },
    IsNull {
        operand: Operand,
        negated: bool,
        or_empty: bool,
    },
    Not(Box<Pred>),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AggSpec {
    Count,
    CountIf(Pred),
    Sum(usize),
    Min(usize),
    Max(usize),
    DCount(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StageSpec {
    Filter(Pred),
    Project(Vec<usize>),
    Take(u64),
    Distinct(Vec<usize>),
    Summarize {
        by: Vec<usize>,
        aggs: Vec<AggSpec>,
    },
    /// Keys are `(column, descending)`; with a limit only the first `limit` rows are kept.
    Sort {
        keys: Vec<(usize, bool)>,
        limit: Option<u64>,
    },
}

/// What a query does, over column indices.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub entity: Entity,
    /// The leading `where`s, over the entity's columns, applied in place to every row.
    pub filters: Vec<Pred>,
    /// The entity's columns a row keeps after the leading `where`s and `project`s; `None` for
    /// a column nothing after reads (kept as null: never read nor copied).
    pub materialize: Vec<Option<usize>>,
    /// The rest of the query, over kept rows.
    pub stages: Vec<StageSpec>,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Long,
    Real,
    Bool,
    Str,
}

impl Ty {
    fn of(c: ColumnType) -> Ty {
        match c {
            ColumnType::Long => Ty::Long,
            ColumnType::Bool => Ty::Bool,
            ColumnType::String => Ty::Str,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ty::Long => "long",
            Ty::Real => "real",
            Ty::Bool => "bool",
            Ty::Str => "string",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Ty::Long | Ty::Real)
    }

    fn comparable(self, other: Ty) -> bool {
        self == other || (self.numeric() && other.numeric())
    }
}

#[derive(Debug, Clone)]
struct Col {
    name: String,
    ty: ColumnType,
    index: usize,
}

enum Compiled {
    Operand(Operand, Ty),
    Pred(Pred),
}

struct Compiler<'t> {
    text: &'t str,
    entity: Entity,
    schema: Vec<Col>,
    /// The operator that last changed the columns (`None`: the entity's own).
    changed_by: Option<String>,
    materialized: bool,
    plan: Plan,
}

pub(crate) fn compile(text: &str) -> Result<Plan, QueryError> {
    let ast: Ast = syntax::parse(text).map_err(|(offset, message, expected)| {
        QueryError::new(text, offset, message).with_expected(expected)
    })?;
    let entity = Entity::from_name(&ast.entity.text).ok_or_else(|| {
        let names: Vec<String> = Entity::ALL.iter().map(|e| e.name().to_string()).collect();
        QueryError::new(
            text,
            ast.entity.span.start,
            format!(
                "unknown entity {:?} (entities: {})",
                ast.entity.text,
                names.join(", ")
            ),
        )
        .with_expected(names)
    })?;
    let schema = entity
        .columns()
        .iter()
        .enumerate()
        .map(|(index, c)| Col {
            name: c.name.to_string(),
            ty: c.ty,
            index,
        })
        .collect();
    let mut c = Compiler {
        text,
        entity,
        schema,
        changed_by: None,
        materialized: false,
        plan: Plan {
            entity,
            filters: Vec::new(),
            materialize: Vec::new(),
            stages: Vec::new(),
            columns: Vec::new(),
        },
    };
    for (keyword, op) in &ast.ops {
        c.op(keyword, op)?;
    }
    c.materialize();
    let mut plan = c.plan;
    plan.columns = c.schema.into_iter().map(|col| col.name).collect();
    bound_sorts(&mut plan.stages);
    prune(&mut plan);
    Ok(plan)
}

/// Leaves out of the kept rows the columns no later stage reads and the result does not show
/// (e.g. `Device | where ... | summarize count() by os` copies only `os`).
fn prune(plan: &mut Plan) {
    let width = plan.materialize.len();
    // Walking back from the result: which columns of each stage's input are needed.
    let mut needed: Vec<bool> = vec![true; plan.columns.len()];
    for stage in plan.stages.iter().rev() {
        needed = match stage {
            StageSpec::Filter(p) => {
                let mut n = needed;
                p.columns(&mut |i| n[i] = true);
                n
            }
            StageSpec::Take(_) => needed,
            StageSpec::Sort { keys, .. } => {
                let mut n = needed;
                for &(i, _) in keys {
                    n[i] = true;
                }
                n
            }
            StageSpec::Project(cols) => {
                let mut n = vec![false; stage_input_width(plan, stage)];
                for (j, &i) in cols.iter().enumerate() {
                    if needed[j] {
                        n[i] = true;
                    }
                }
                n
            }
            StageSpec::Distinct(cols) => {
                let mut n = vec![false; stage_input_width(plan, stage)];
                for &i in cols {
                    n[i] = true;
                }
                n
            }
            StageSpec::Summarize { by, aggs } => {
                let mut n = vec![false; stage_input_width(plan, stage)];
                for &i in by {
                    n[i] = true;
                }
                for a in aggs {
                    match a {
                        AggSpec::Count => {}
                        AggSpec::CountIf(p) => p.columns(&mut |i| n[i] = true),
                        AggSpec::Sum(i)
                        | AggSpec::Min(i)
                        | AggSpec::Max(i)
                        | AggSpec::DCount(i) => n[*i] = true,
                    }
                }
                n
            }
        };
    }
    debug_assert_eq!(needed.len(), width);
    for (m, keep) in plan.materialize.iter_mut().zip(needed) {
        if !keep {
            *m = None;
        }
    }
}

/// The number of columns `stage` reads.
fn stage_input_width(plan: &Plan, stage: &StageSpec) -> usize {
    let mut width = plan.materialize.len();
    for s in &plan.stages {
        if std::ptr::eq(s, stage) {
            break;
        }
        match s {
            StageSpec::Project(cols) | StageSpec::Distinct(cols) => width = cols.len(),
            StageSpec::Summarize { by, aggs } => width = by.len() + aggs.len(),
            _ => {}
        }
    }
    width
}

impl Operand {
    fn column(&self, f: &mut impl FnMut(usize)) {
        if let Operand::Col(i) = self {
            f(*i);
        }
    }
}

impl Pred {
    /// Calls `f` with every column the condition reads.
    fn columns(&self, f: &mut impl FnMut(usize)) {
        match self {
            Pred::Value(o) | Pred::In { operand: o, .. } | Pred::IsNull { operand: o, .. } => {
                o.column(f)
            }
            Pred::Cmp(_, a, b)
            | Pred::Str {
                left: a, right: b, ..
            } => {
                a.column(f);
                b.column(f);
            }
            Pred::Not(p) => p.columns(f),
            Pred::And(a, b) | Pred::Or(a, b) => {
                a.columns(f);
                b.columns(f);
            }
        }
    }
}

/// A sort only needs to keep as many rows as a `take` right after it (projections between
/// them do not change the count) lets through, or, at the end of the query, one more than
/// the result keeps (to know it was truncated).
fn bound_sorts(stages: &mut [StageSpec]) {
    for i in 0..stages.len() {
        if !matches!(stages[i], StageSpec::Sort { limit: None, .. }) {
            continue;
        }
        let mut bound = Some(MAX_ROWS as u64 + 1);
        for later in &stages[i + 1..] {
            match later {
                StageSpec::Project(_) => continue,
                StageSpec::Take(n) => bound = Some(*n),
                _ => bound = None,
            }
            break;
        }
        if let StageSpec::Sort { limit, .. } = &mut stages[i] {
            *limit = bound;
        }
    }
}

impl Compiler<'_> {
    fn err(&self, offset: usize, message: impl Into<String>) -> QueryError {
        QueryError::new(self.text, offset, message)
    }

    fn src(&self, span: &Span) -> &str {
        &self.text[span.clone()]
    }

    /// Ends the streaming prefix: later stages work on kept rows.
    fn materialize(&mut self) {
        if self.materialized {
            return;
        }
        self.materialized = true;
        self.plan.materialize = self.schema.iter().map(|c| Some(c.index)).collect();
        for (i, c) in self.schema.iter_mut().enumerate() {
            c.index = i;
        }
    }

    fn column(&self, name: &Name) -> Result<&Col, QueryError> {
        self.schema
            .iter()
            .find(|c| c.name == name.text)
            .ok_or_else(|| {
                let names: Vec<String> = self.schema.iter().map(|c| c.name.clone()).collect();
                let place = match &self.changed_by {
                    None => format!("in {}", self.entity),
                    Some(op) => format!("after {op}"),
                };
                self.err(
                    name.span.start,
                    format!(
                        "unknown column {:?} {place} (columns: {})",
                        name.text,
                        names.join(", ")
                    ),
                )
                .with_expected(names)
            })
    }

    fn push(&mut self, stage: StageSpec) {
        self.materialize();
        self.plan.stages.push(stage);
    }

    fn set_schema(&mut self, schema: Vec<Col>, by: &Name) -> Result<(), QueryError> {
        for (i, c) in schema.iter().enumerate() {
            if schema[..i].iter().any(|d| d.name == c.name) {
                return Err(self.err(
                    by.span.start,
                    format!("{} makes two columns named {:?}", by.text, c.name),
                ));
            }
        }
        self.schema = schema;
        self.changed_by = Some(by.text.clone());
        Ok(())
    }

    fn op(&mut self, keyword: &Name, op: &Op) -> Result<(), QueryError> {
        if !matches!(op, Op::Where(_) | Op::Project(_)) {
            // Every other operator works on kept rows: resolve its columns against them.
            self.materialize();
        }
        match op {
            Op::Where(e) => {
                let pred = self.condition(e)?;
                if self.materialized {
                    self.plan.stages.push(StageSpec::Filter(pred));
                } else {
                    self.plan.filters.push(pred);
                }
            }
            Op::Project(items) => {
                let mut schema = Vec::new();
                for (new, col) in items {
                    let c = self.column(col)?;
                    schema.push(Col {
                        name: new.as_ref().unwrap_or(col).text.clone(),
                        ty: c.ty,
                        index: c.index,
                    });
                }
                if self.materialized {
                    let indices = schema.iter().map(|c| c.index).collect();
                    self.plan.stages.push(StageSpec::Project(indices));
                    for (i, c) in schema.iter_mut().enumerate() {
                        c.index = i;
                    }
                }
                self.set_schema(schema, keyword)?;
            }
            Op::Summarize { aggregates, by } => {
                let mut keys = Vec::new();
                let mut schema = Vec::new();
                for name in by {
                    let c = self.column(name)?.clone();
                    keys.push(c.index);
                    schema.push(c);
                }
                let mut aggs = Vec::new();
                for a in aggregates {
                    let (spec, default_name, ty) = self.aggregate(a)?;
                    aggs.push(spec);
                    schema.push(Col {
                        name: a.name.as_ref().map_or(default_name, |n| n.text.clone()),
                        ty,
                        index: 0,
                    });
                }
                if aggs.is_empty() && keys.is_empty() {
                    return Err(self.err(
                        keyword.span.end,
                        "summarize needs an aggregation such as count() or a `by` clause",
                    ));
                }
                self.push(StageSpec::Summarize { by: keys, aggs });
                self.reindex(&mut schema);
                self.set_schema(schema, keyword)?;
            }
            Op::Count => {
                self.push(StageSpec::Summarize {
                    by: Vec::new(),
                    aggs: vec![AggSpec::Count],
                });
                let schema = vec![Col {
                    name: "Count".into(),
                    ty: ColumnType::Long,
                    index: 0,
                }];
                self.set_schema(schema, keyword)?;
            }
            Op::Order(keys) => {
                let keys = keys
                    .iter()
                    .map(|(n, desc)| Ok((self.column(n)?.index, desc.unwrap_or(true))))
                    .collect::<Result<Vec<_>, QueryError>>()?;
                self.push_sort(keys, None);
            }
            Op::Top {
                n,
                key: (col, desc),
            } => {
                let key = (self.column(col)?.index, desc.unwrap_or(true));
                self.push_sort(vec![key], Some(*n));
                self.plan.stages.push(StageSpec::Take(*n));
            }
            Op::Take(n) => self.push(StageSpec::Take(*n)),
            Op::Distinct(cols) => {
                let mut schema = Vec::new();
                for name in cols {
                    schema.push(self.column(name)?.clone());
                }
                let indices: Vec<usize> = schema.iter().map(|c| c.index).collect();
                self.push(StageSpec::Distinct(indices));
                self.reindex(&mut schema);
                self.set_schema(schema, keyword)?;
            }
        }
        Ok(())
    }

    fn push_sort(&mut self, keys: Vec<(usize, bool)>, limit: Option<u64>) {
        self.push(StageSpec::Sort { keys, limit });
    }

    fn reindex(&self, schema: &mut [Col]) {
        for (i, c) in schema.iter_mut().enumerate() {
            c.index = i;
        }
    }

    fn aggregate(&self, a: &Aggregate) -> Result<(AggSpec, String, ColumnType), QueryError> {
        let f = &a.func;
        let arity = |n: usize| -> Result<(), QueryError> {
            if a.args.len() == n {
                Ok(())
            } else {
                Err(self.err(
                    f.span.start,
                    format!(
                        "{}() takes {n} argument{}, not {}",
                        f.text,
                        if n == 1 { "" } else { "s" },
                        a.args.len()
                    ),
                ))
            }
        };
        let column_arg = |what: &str| -> Result<&Col, QueryError> {
            arity(1)?;
            match &a.args[0] {
                Expr::Column(n) => self.column(n),
                other => Err(self.err(
                    other.span().start,
                    format!("{}() takes a column {what}", f.text),
                )),
            }
        };
        Ok(match f.text.as_str() {
            "count" => {
                arity(0)?;
                (AggSpec::Count, "count_".into(), ColumnType::Long)
            }
            "countif" => {
                arity(1)?;
                let p = self.condition(&a.args[0])?;
                (AggSpec::CountIf(p), "countif_".into(), ColumnType::Long)
            }
            "dcount" => {
                let c = column_arg("")?;
                (
                    AggSpec::DCount(c.index),
                    format!("dcount_{}", c.name),
                    ColumnType::Long,
                )
            }
            "sum" => {
                let c = column_arg("of type long")?;
                if c.ty != ColumnType::Long {
                    return Err(self.err(
                        a.args[0].span().start,
                        format!("sum() needs a long column, but {} is a {}", c.name, c.ty),
                    ));
                }
                (
                    AggSpec::Sum(c.index),
                    format!("sum_{}", c.name),
                    ColumnType::Long,
                )
            }
            "min" | "max" => {
                let c = column_arg("")?;
                let spec = if f.text == "min" {
                    AggSpec::Min(c.index)
                } else {
                    AggSpec::Max(c.index)
                };
                (spec, format!("{}_{}", f.text, c.name), c.ty)
            }
            other => {
                return Err(self.err(
                    f.span.start,
                    format!(
                        "unknown aggregation function {other:?} (supported: count(), countif(), dcount(), sum(), min(), max())"
                    ),
                ));
            }
        })
    }

    /// An expression that must be a condition (`where`, `not()`, `and`, `or`, `countif()`).
    fn condition(&self, e: &Expr) -> Result<Pred, QueryError> {
        match self.expr(e)? {
            Compiled::Pred(p) => Ok(p),
            Compiled::Operand(op, Ty::Bool) => Ok(Pred::Value(op)),
            Compiled::Operand(_, ty) => Err(self.err(
                e.span().start,
                format!(
                    "expected a condition (a bool), but {} is a {}",
                    self.src(&e.span()),
                    ty.name()
                ),
            )),
        }
    }

    /// An expression that must be a value (an operand of a comparison).
    fn operand(&self, e: &Expr) -> Result<(Operand, Ty), QueryError> {
        match self.expr(e)? {
            Compiled::Operand(op, ty) => Ok((op, ty)),
            Compiled::Pred(_) => Err(self.err(
                e.span().start,
                format!(
                    "a condition cannot be compared: {} (use and, or, not())",
                    self.src(&e.span())
                ),
            )),
        }
    }

    fn expr(&self, e: &Expr) -> Result<Compiled, QueryError> {
        Ok(match e {
            Expr::Column(n) => {
                let c = self.column(n)?;
                Compiled::Operand(Operand::Col(c.index), Ty::of(c.ty))
            }
            Expr::Lit(lit, _) => {
                let (v, ty) = lit_val(lit);
                Compiled::Operand(Operand::Lit(v), ty)
            }
            Expr::And(l, r) => Compiled::Pred(Pred::And(
                Box::new(self.condition(l)?),
                Box::new(self.condition(r)?),
            )),
            Expr::Or(l, r) => Compiled::Pred(Pred::Or(
                Box::new(self.condition(l)?),
                Box::new(self.condition(r)?),
            )),
            Expr::Call { name, args, .. } => self.call(name, args)?,
            Expr::Binary {
                op,
                op_span,
                left,
                right,
            } => self.binary(*op, op_span, left, right)?,
            Expr::In {
                negated,
                case_insensitive,
                op_span,
                left,
                items,
            } => {
                let (operand, ty) = self.operand(left)?;
                let op_name = format!(
                    "{}in{}",
                    if *negated { "!" } else { "" },
                    if *case_insensitive { "~" } else { "" }
                );
                if *case_insensitive && ty != Ty::Str {
                    return Err(self.err(
                        op_span.start,
                        format!(
                            "operator {op_name:?} needs strings, but {} is a {}",
                            self.src(&left.span()),
                            ty.name()
                        ),
                    ));
                }
                let mut values = Vec::new();
                for item in items {
                    let (v, ity) = match item {
                        Expr::Lit(lit, _) => lit_val(lit),
                        other => {
                            return Err(self.err(other.span().start, "expected a literal"));
                        }
                    };
                    if !ty.comparable(ity) {
                        return Err(self.err(
                            item.span().start,
                            format!(
                                "type mismatch: {} is a {}, but {} in the list of {op_name:?} is a {}",
                                self.src(&left.span()),
                                ty.name(),
                                self.src(&item.span()),
                                ity.name()
                            ),
                        ));
                    }
                    values.push(v);
                }
                Compiled::Pred(Pred::In {
                    operand,
                    items: values,
                    negated: *negated,
                    case_insensitive: *case_insensitive,
                })
            }
        })
    }

    fn call(&self, name: &Name, args: &[Expr]) -> Result<Compiled, QueryError> {
        let one = || -> Result<&Expr, QueryError> {
            match args {
                [a] => Ok(a),
                _ => Err(self.err(
                    name.span.start,
                    format!("{}() takes 1 argument, not {}", name.text, args.len()),
                )),
            }
        };
        Ok(match name.text.as_str() {
            "not" => Compiled::Pred(Pred::Not(Box::new(self.condition(one()?)?))),
            "isnull" | "isnotnull" | "isempty" | "isnotempty" => {
                let arg = one()?;
                let (operand, ty) = self.operand(arg)?;
                let or_empty = name.text.ends_with("empty");
                if or_empty && ty != Ty::Str {
                    return Err(self.err(
                        arg.span().start,
                        format!(
                            "{}() needs a string, but {} is a {}",
                            name.text,
                            self.src(&arg.span()),
                            ty.name()
                        ),
                    ));
                }
                Compiled::Pred(Pred::IsNull {
                    operand,
                    negated: name.text.starts_with("isnot"),
                    or_empty,
                })
            }
            other => {
                return Err(self.err(
                    name.span.start,
                    format!(
                        "unknown function {other:?} (supported in conditions: not(), isnull(), isnotnull(), isempty(), isnotempty())"
                    ),
                ));
            }
        })
    }

    fn binary(
        &self,
        op: BinOp,
        op_span: &Span,
        left: &Expr,
        right: &Expr,
    ) -> Result<Compiled, QueryError> {
        let (l, lt) = self.operand(left)?;
        let (r, rt) = self.operand(right)?;
        let (ls, rs) = (self.src(&left.span()), self.src(&right.span()));
        let symbol = op.symbol();
        let cmp = |c: CmpOp| -> Result<Compiled, QueryError> {
            if !lt.comparable(rt) {
                return Err(self.err(
                    op_span.start,
                    format!(
                        "type mismatch: cannot compare {ls} ({}) with {rs} ({}) using {symbol:?}",
                        lt.name(),
                        rt.name()
                    ),
                ));
            }
            if !matches!(c, CmpOp::Eq | CmpOp::Ne) && !lt.numeric() {
                return Err(self.err(
                    op_span.start,
                    format!(
                        "type mismatch: {symbol:?} compares numbers, but {ls} is a {}",
                        lt.name()
                    ),
                ));
            }
            Ok(Compiled::Pred(Pred::Cmp(c, l.clone(), r.clone())))
        };
        let string = |op: StrOp, negated: bool| -> Result<Compiled, QueryError> {
            for (s, t) in [(ls, lt), (rs, rt)] {
                if t != Ty::Str {
                    return Err(self.err(
                        op_span.start,
                        format!(
                            "type mismatch: {symbol:?} needs strings, but {s} is a {}",
                            t.name()
                        ),
                    ));
                }
            }
            Ok(Compiled::Pred(Pred::Str {
                op,
                negated,
                left: l.clone(),
                right: r.clone(),
            }))
        };
        match op {
            BinOp::Eq => cmp(CmpOp::Eq),
            BinOp::Ne => cmp(CmpOp::Ne),
            BinOp::Lt => cmp(CmpOp::Lt),
            BinOp::Le => cmp(CmpOp::Le),
            BinOp::Gt => cmp(CmpOp::Gt),
            BinOp::Ge => cmp(CmpOp::Ge),
            BinOp::EqCi => string(StrOp::EqCi, false),
            BinOp::NeCi => string(StrOp::EqCi, true),
            BinOp::Contains(n) => string(StrOp::Contains, n),
            BinOp::StartsWith(n) => string(StrOp::StartsWith, n),
            BinOp::EndsWith(n) => string(StrOp::EndsWith, n),
        }
    }
}

fn lit_val(lit: &Lit) -> (LitVal, Ty) {
    match lit {
        Lit::Long(n) => (LitVal::Long(*n), Ty::Long),
        Lit::Real(r) => (LitVal::Real(*r), Ty::Real),
        Lit::Bool(b) => (LitVal::Bool(*b), Ty::Bool),
        Lit::Str(s) => (
            LitVal::Str {
                text: s.as_str().into(),
                lower: s.to_lowercase().into(),
            },
            Ty::Str,
        ),
    }
}
