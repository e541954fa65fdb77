//! The grammar, written with `winnow`: query text to a syntax tree whose every name, literal
//! and operator keeps its byte span (for the errors of validation).

use std::ops::Range;
use winnow::ascii::{digit1, escaped, multispace1, till_line_ending};
use winnow::combinator::{alt, cut_err, delimited, opt, peek, preceded, repeat, terminated};
use winnow::error::{AddContext, ErrMode, ParserError};
use winnow::prelude::*;
use winnow::stream::{LocatingSlice, Location, Stream};
use winnow::token::{literal, one_of, take_till, take_while};

pub(crate) type Span = Range<usize>;
type In<'a> = LocatingSlice<&'a str>;
type PResult<T> = ModalResult<T, SyntaxError>;

/// A syntax error: where, and either a message or what was expected there.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub offset: usize,
    pub message: Option<String>,
    pub expected: Vec<&'static str>,
}

impl SyntaxError {
    fn at(offset: usize, message: impl Into<String>) -> ErrMode<SyntaxError> {
        ErrMode::Cut(SyntaxError {
            offset,
            message: Some(message.into()),
            expected: Vec::new(),
        })
    }
}

impl<'a> ParserError<In<'a>> for SyntaxError {
    type Inner = Self;

    fn from_input(input: &In<'a>) -> Self {
        SyntaxError {
            offset: input.current_token_start(),
            message: None,
            expected: Vec::new(),
        }
    }

    /// Of two failed alternatives, the one that got further wins; at the same position, what
    /// they expected is merged.
    fn or(self, other: Self) -> Self {
        match self.offset.cmp(&other.offset) {
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Equal => {
                let mut expected = self.expected;
                for e in other.expected {
                    if !expected.contains(&e) {
                        expected.push(e);
                    }
                }
                SyntaxError {
                    offset: self.offset,
                    message: other.message.or(self.message),
                    expected,
                }
            }
        }
    }

    fn into_inner(self) -> Result<Self, Self> {
        Ok(self)
    }
}

/// `.context("x")` labels what was expected where the labelled parser started, unless an
/// error further on or with its own message is more precise.
impl<'a> AddContext<In<'a>, &'static str> for SyntaxError {
    fn add_context(
        mut self,
        input: &In<'a>,
        start: &<In<'a> as Stream>::Checkpoint,
        what: &'static str,
    ) -> Self {
        let mut at = *input;
        at.reset(start);
        if self.message.is_none() && self.offset == at.current_token_start() {
            // A label sums up what the parsers under it expected at the same place.
            self.expected = vec![what];
        }
        self
    }
}

/// A name (entity, column, function, operator) and where it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Name {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Long(i64),
    Real(f64),
    Bool(bool),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    EqCi,
    NeCi,
    Contains(bool),
    StartsWith(bool),
    EndsWith(bool),
}

impl BinOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::EqCi => "=~",
            BinOp::NeCi => "!~",
            BinOp::Contains(false) => "contains",
            BinOp::Contains(true) => "!contains",
            BinOp::StartsWith(false) => "startswith",
            BinOp::StartsWith(true) => "!startswith",
            BinOp::EndsWith(false) => "endswith",
            BinOp::EndsWith(true) => "!endswith",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Column(Name),
    Lit(Lit, Span),
    Call {
        name: Name,
        args: Vec<Expr>,
        span: Span,
    },
    Binary {
        op: BinOp,
        op_span: Span,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    In {
        negated: bool,
        case_insensitive: bool,
        op_span: Span,
        left: Box<Expr>,
        items: Vec<Expr>,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    pub(crate) fn span(&self) -> Span {
        match self {
            Expr::Column(n) => n.span.clone(),
            Expr::Lit(_, s) | Expr::Call { span: s, .. } => s.clone(),
            Expr::Binary { left, right, .. } => left.span().start..right.span().end,
            Expr::In { left, op_span, .. } => left.span().start..op_span.end,
            Expr::And(l, r) | Expr::Or(l, r) => l.span().start..r.span().end,
        }
    }
}

/// `[name =] function(args)` in `summarize`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Aggregate {
    pub name: Option<Name>,
    pub func: Name,
    pub args: Vec<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Where(Expr),
    /// `(new name, column)`.
    Project(Vec<(Option<Name>, Name)>),
    Summarize {
        aggregates: Vec<Aggregate>,
        by: Vec<Name>,
    },
    /// `(column, Some(desc) when a direction was written)`.
    Order(Vec<(Name, Option<bool>)>),
    Take(u64),
    Top {
        n: u64,
        key: (Name, Option<bool>),
    },
    Distinct(Vec<Name>),
    Count,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ast {
    pub entity: Name,
    /// Each operator with its keyword (for the span of errors about the whole operator).
    pub ops: Vec<(Name, Op)>,
}

/// The operators a query may use, as listed in errors.
pub(crate) const OPERATORS: &str =
    "where, project, summarize, order by, sort by, take, limit, top, distinct, count";

/// The comparison operators, as listed in errors.
pub(crate) const COMPARISONS: &str = "==, !=, <, <=, >, >=, =~, !~, contains, !contains, startswith, !startswith, endswith, !endswith, in, !in, in~, !in~";

/// Whitespace and `//` comments.
fn ws(i: &mut In<'_>) -> PResult<()> {
    repeat(
        0..,
        alt((multispace1.void(), ("//", till_line_ending).void())),
    )
    .parse_next(i)
}

/// An identifier and its span; trailing whitespace skipped.
fn name(i: &mut In<'_>) -> PResult<Name> {
    terminated(
        (
            one_of(|c: char| c.is_ascii_alphabetic() || c == '_'),
            take_while(0.., |c: char| c.is_ascii_alphanumeric() || c == '_'),
        )
            .take()
            .with_span(),
        ws,
    )
    .map(|(text, span): (&str, Span)| Name {
        text: text.to_string(),
        span,
    })
    .parse_next(i)
}

fn column(i: &mut In<'_>) -> PResult<Name> {
    name.context("a column name").parse_next(i)
}

/// A keyword (case-sensitive, as in KQL).
fn kw<'a>(word: &'static str) -> impl Parser<In<'a>, Name, ErrMode<SyntaxError>> {
    name.verify(move |n: &Name| n.text == word).context(word)
}

/// A punctuation symbol and its span; trailing whitespace skipped.
fn sym<'a>(s: &'static str) -> impl Parser<In<'a>, Span, ErrMode<SyntaxError>> {
    terminated(literal(s).span(), ws).context(s)
}

/// `"..."` or `'...'` with backslash escapes, or verbatim `@"..."` / `@'...'`.
fn string(i: &mut In<'_>) -> PResult<(String, Span)> {
    let start = i.current_token_start();
    let verbatim = opt('@').parse_next(i)?.is_some();
    let quote = if verbatim {
        cut_err(one_of(['"', '\'']))
            .context("a quote")
            .parse_next(i)?
    } else {
        one_of(['"', '\'']).parse_next(i)?
    };
    let text: String = if verbatim {
        take_till(0.., move |c: char| c == quote || c == '\n')
            .map(str::to_string)
            .parse_next(i)?
    } else {
        escaped(
            take_till(1.., move |c: char| c == quote || c == '\\' || c == '\n'),
            '\\',
            alt((
                '\\'.value("\\"),
                '"'.value("\""),
                '\''.value("'"),
                'n'.value("\n"),
                't'.value("\t"),
                'r'.value("\r"),
                '0'.value("\0"),
            )),
        )
        .parse_next(i)
        .map_err(|_: ErrMode<SyntaxError>| {
            // The escape after the backslash is not one we know.
            SyntaxError::at(
                i.current_token_start(),
                "unknown escape sequence in string (known: \\\\ \\\" \\' \\n \\t \\r \\0)",
            )
        })?
    };
    if opt(one_of(move |c: char| c == quote))
        .parse_next(i)?
        .is_none()
    {
        return Err(SyntaxError::at(start, "unterminated string"));
    }
    let end = i.current_token_start();
    ws.parse_next(i)?;
    Ok((text, start..end))
}

/// An integer or a decimal, optionally negative.
fn number(i: &mut In<'_>) -> PResult<(Lit, Span)> {
    let (text, span) = (opt('-'), digit1, opt(('.', digit1)))
        .take()
        .with_span()
        .parse_next(i)?;
    if opt(one_of(|c: char| {
        c.is_ascii_alphanumeric() || c == '_' || c == '.'
    }))
    .parse_next(i)?
    .is_some()
    {
        return Err(SyntaxError::at(
            span.start,
            format!(
                "invalid number {:?} (timespans, datetimes and other typed literals are not supported)",
                word_at(i, span.start)
            ),
        ));
    }
    ws.parse_next(i)?;
    let lit = if text.contains('.') {
        text.parse().map(Lit::Real).ok()
    } else {
        text.parse().map(Lit::Long).ok()
    };
    match lit {
        Some(lit) => Ok((lit, span)),
        None => Err(SyntaxError::at(
            span.start,
            format!("number {text} is out of range"),
        )),
    }
}

/// The word (or character) of the query starting at `offset`, for messages.
fn word_at(i: &In<'_>, offset: usize) -> String {
    let mut all = *i;
    all.reset_to_start();
    let rest = &all.as_ref()[offset..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '|' || c == ',' || c == ')' || c == '(')
        .unwrap_or(rest.len());
    rest[..end.max(rest.chars().next().map_or(0, char::len_utf8))].to_string()
}

/// An unsigned row count.
fn count(i: &mut In<'_>) -> PResult<u64> {
    let start = i.current_token_start();
    let digits = cut_err(terminated(digit1, ws))
        .context("a number of rows")
        .parse_next(i)?;
    digits
        .parse()
        .map_err(|_| SyntaxError::at(start, format!("number {digits} is out of range")))
}

/// One or more `item`s separated by commas; after a comma an item must follow (so that
/// `project a, | take 1` is an error at the `|`, not at the comma).
fn list1<'a, O>(
    mut item: impl Parser<In<'a>, O, ErrMode<SyntaxError>>,
) -> impl Parser<In<'a>, Vec<O>, ErrMode<SyntaxError>> {
    move |i: &mut In<'a>| {
        let mut out = vec![item.parse_next(i)?];
        while opt(sym(",")).parse_next(i)?.is_some() {
            out.push(cut_err(item.by_ref()).parse_next(i)?);
        }
        Ok(out)
    }
}

/// Call arguments: `(` then zero or more expressions separated by commas, then `)`.
fn arguments(i: &mut In<'_>) -> PResult<(Vec<Expr>, Span)> {
    sym("(").parse_next(i)?;
    let args = match opt(peek(literal(")"))).parse_next(i)? {
        Some(_) => Vec::new(),
        None => cut_err(list1(or_expr)).parse_next(i)?,
    };
    let close = cut_err(sym(")")).parse_next(i)?;
    Ok((args, close))
}

fn literal_value(i: &mut In<'_>) -> PResult<Expr> {
    alt((
        string.map(|(s, span)| Expr::Lit(Lit::Str(s), span)),
        number.map(|(l, span)| Expr::Lit(l, span)),
    ))
    .parse_next(i)
}

/// A parenthesized expression, a literal, a function call or a column.
fn operand(i: &mut In<'_>) -> PResult<Expr> {
    alt((
        delimited(sym("("), cut_err(or_expr), cut_err(sym(")"))),
        literal_value,
        word_operand,
    ))
    .context("a column, a literal or a function call")
    .parse_next(i)
}

fn word_operand(i: &mut In<'_>) -> PResult<Expr> {
    let n = name.parse_next(i)?;
    if let Some((args, close)) = opt(arguments).parse_next(i)? {
        let span = n.span.start..close.end;
        return Ok(Expr::Call {
            name: n,
            args,
            span,
        });
    }
    Ok(match n.text.as_str() {
        "true" => Expr::Lit(Lit::Bool(true), n.span),
        "false" => Expr::Lit(Lit::Bool(false), n.span),
        _ => Expr::Column(n),
    })
}

enum Tail {
    Bin(BinOp),
    In { negated: bool, ci: bool },
}

/// The operator of a comparison.
fn comparison_op(i: &mut In<'_>) -> PResult<(Tail, Span)> {
    let symbolic = alt((
        "==".value(BinOp::Eq),
        "!=".value(BinOp::Ne),
        "<=".value(BinOp::Le),
        ">=".value(BinOp::Ge),
        "<".value(BinOp::Lt),
        ">".value(BinOp::Gt),
        "=~".value(BinOp::EqCi),
        "!~".value(BinOp::NeCi),
    ))
    .map(Tail::Bin);
    // Worded operators are read as whole words: `index` is not `in`.
    let worded = (
        opt('!'),
        take_while(1.., |c: char| c.is_ascii_alphanumeric() || c == '_'),
        opt('~'),
    )
        .verify_map(|(neg, word, tilde): (Option<char>, &str, Option<char>)| {
            let negated = neg.is_some();
            Some(match (word, tilde.is_some()) {
                ("in", ci) => Tail::In { negated, ci },
                ("contains", false) => Tail::Bin(BinOp::Contains(negated)),
                ("startswith", false) => Tail::Bin(BinOp::StartsWith(negated)),
                ("endswith", false) => Tail::Bin(BinOp::EndsWith(negated)),
                _ => return None,
            })
        });
    terminated(alt((symbolic, worded)).with_span(), ws).parse_next(i)
}

/// An operand, optionally compared with another (or tested against a list with `in`).
fn comparison(i: &mut In<'_>) -> PResult<Expr> {
    let left = operand.parse_next(i)?;
    let Some((tail, op_span)) = opt(comparison_op).parse_next(i)? else {
        // A word after an operand that is not `and`/`or`: an operator we do not support
        // (`has`, `matches regex`, `between`, ...), named as such rather than as garbage.
        let start = i.current_token_start();
        if let Some(word) = opt(peek((opt('!'), name).take())).parse_next(i)? {
            let word = word.trim_end();
            if !matches!(word, "and" | "or" | "by" | "asc" | "desc") {
                return Err(SyntaxError::at(
                    start,
                    format!("unknown comparison operator {word:?} (supported: {COMPARISONS})"),
                ));
            }
        }
        return Ok(left);
    };
    match tail {
        Tail::Bin(op) => {
            let right = cut_err(operand).parse_next(i)?;
            Ok(Expr::Binary {
                op,
                op_span,
                left: Box::new(left),
                right: Box::new(right),
            })
        }
        Tail::In { negated, ci } => {
            let items = cut_err(delimited(
                sym("("),
                list1(literal_value.context("a literal")),
                sym(")"),
            ))
            .parse_next(i)?;
            Ok(Expr::In {
                negated,
                case_insensitive: ci,
                op_span,
                left: Box::new(left),
                items,
            })
        }
    }
}

fn and_expr(i: &mut In<'_>) -> PResult<Expr> {
    let first = comparison.parse_next(i)?;
    let rest: Vec<Expr> = repeat(0.., preceded(kw("and"), cut_err(comparison))).parse_next(i)?;
    Ok(rest
        .into_iter()
        .fold(first, |l, r| Expr::And(Box::new(l), Box::new(r))))
}

/// `and` binds tighter than `or`, as in KQL.
fn or_expr(i: &mut In<'_>) -> PResult<Expr> {
    let first = and_expr.parse_next(i)?;
    let rest: Vec<Expr> = repeat(0.., preceded(kw("or"), cut_err(and_expr))).parse_next(i)?;
    Ok(rest
        .into_iter()
        .fold(first, |l, r| Expr::Or(Box::new(l), Box::new(r))))
}

fn columns(i: &mut In<'_>) -> PResult<Vec<Name>> {
    cut_err(list1(column)).parse_next(i)
}

/// `name = ` before a projected column or an aggregate (not `==`).
fn assignment(i: &mut In<'_>) -> PResult<Name> {
    terminated(name, terminated(('=', winnow::combinator::not('=')), ws)).parse_next(i)
}

fn project(i: &mut In<'_>) -> PResult<Op> {
    let item = (opt(assignment), column);
    cut_err(list1(item)).map(Op::Project).parse_next(i)
}

fn aggregate(i: &mut In<'_>) -> PResult<Aggregate> {
    let name = opt(assignment).parse_next(i)?;
    let func = name_ctx("an aggregation function such as count()").parse_next(i)?;
    let (args, _) = cut_err(arguments).parse_next(i)?;
    Ok(Aggregate { name, func, args })
}

fn name_ctx<'a>(what: &'static str) -> impl Parser<In<'a>, Name, ErrMode<SyntaxError>> {
    cut_err(name.context(what))
}

fn summarize(i: &mut In<'_>) -> PResult<Op> {
    let checkpoint = i.checkpoint();
    let aggregates = if kw("by").parse_next(i).is_ok() {
        i.reset(&checkpoint);
        Vec::new()
    } else {
        i.reset(&checkpoint);
        list1(aggregate).parse_next(i)?
    };
    let by = match opt(kw("by")).parse_next(i)? {
        Some(_) => columns.parse_next(i)?,
        None => Vec::new(),
    };
    Ok(Op::Summarize { aggregates, by })
}

fn direction(i: &mut In<'_>) -> PResult<Option<bool>> {
    opt(alt((kw("asc").value(false), kw("desc").value(true)))).parse_next(i)
}

fn order(i: &mut In<'_>) -> PResult<Op> {
    cut_err(kw("by")).parse_next(i)?;
    cut_err(list1((column, direction)))
        .map(Op::Order)
        .parse_next(i)
}

fn top(i: &mut In<'_>) -> PResult<Op> {
    let n = count.parse_next(i)?;
    cut_err(kw("by")).parse_next(i)?;
    let key = cut_err((column, direction)).parse_next(i)?;
    Ok(Op::Top { n, key })
}

fn operator(i: &mut In<'_>) -> PResult<(Name, Op)> {
    // Operator words may hold dashes (`project-away`): read them whole to name them in errors.
    let start = i.current_token_start();
    let word = cut_err(
        take_while(1.., |c: char| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-'
        })
        .with_span()
        .context("an operator"),
    )
    .parse_next(i)?;
    ws.parse_next(i)?;
    let (text, span) = word;
    let op = match text {
        "where" => Op::Where(cut_err(or_expr).parse_next(i)?),
        "project" => project.parse_next(i)?,
        "summarize" => summarize.parse_next(i)?,
        "order" | "sort" => order.parse_next(i)?,
        "take" | "limit" => Op::Take(count.parse_next(i)?),
        "top" => top.parse_next(i)?,
        "distinct" => Op::Distinct(columns.parse_next(i)?),
        "count" => Op::Count,
        _ => {
            return Err(SyntaxError::at(
                start,
                format!("unknown operator {text:?} (supported: {OPERATORS})"),
            ));
        }
    };
    Ok((
        Name {
            text: text.to_string(),
            span,
        },
        op,
    ))
}

fn query(i: &mut In<'_>) -> PResult<Ast> {
    ws.parse_next(i)?;
    let entity = cut_err(name.context("an entity name")).parse_next(i)?;
    let ops = repeat(0.., preceded(sym("|"), cut_err(operator))).parse_next(i)?;
    if !i.is_empty() {
        let mut e = SyntaxError::from_input(i);
        e.expected = vec!["|", "the end of the query"];
        return Err(ErrMode::Cut(e));
    }
    Ok(Ast { entity, ops })
}

/// Parses `text`; a syntax error comes with its message made.
pub(crate) fn parse(text: &str) -> Result<Ast, (usize, String, Vec<String>)> {
    let mut input = LocatingSlice::new(text);
    match query.parse_next(&mut input) {
        Ok(ast) => Ok(ast),
        Err(e) => {
            let e = match e {
                ErrMode::Backtrack(e) | ErrMode::Cut(e) => e,
                ErrMode::Incomplete(_) => SyntaxError::from_input(&input),
            };
            let expected: Vec<String> = e.expected.iter().map(|s| describe(s)).collect();
            let message = e.message.unwrap_or_else(|| {
                let found = found_at(text, e.offset);
                if expected.is_empty() {
                    format!("unexpected {found}")
                } else {
                    format!("expected {}, found {found}", one_of_list(&expected))
                }
            });
            Err((e.offset, message, expected))
        }
    }
}

/// A keyword or symbol quoted; a description ("a column name") as is.
fn describe(s: &str) -> String {
    if s.contains(' ') {
        s.to_string()
    } else {
        format!("\"{s}\"")
    }
}

fn one_of_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// What is at `offset`, for "found ...".
fn found_at(text: &str, offset: usize) -> String {
    let rest = &text[offset..];
    let Some(c) = rest.chars().next() else {
        return "the end of the query".into();
    };
    if c.is_alphanumeric() || c == '_' {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .unwrap_or(rest.len());
        format!("\"{}\"", &rest[..end])
    } else if c == '"' || c == '\'' {
        "a string".into()
    } else {
        format!("\"{c}\"")
    }
}
