//! # cloudattach-query
//!
//! A CMPivot-style query engine: a documented subset of KQL (Kusto) evaluated over the site's
//! device inventory. The language is described for users in `docs/cmpivot-queries.md`; the
//! crate does no I/O: the caller streams devices to an [`Evaluator`].
//!
//! The grammar is written with [`winnow`] (1.x) rather than the `kqlparser` crate: `kqlparser`
//! is a 0.0.x crate built on nom 7 whose errors carry no positions (only the remaining
//! input), its syntax tree has no spans to report unknown columns with, and it lacks operators
//! we need (`contains`, `startswith`, `in`, `=~`, `order by`, `asc`/`desc`), while `winnow` is
//! actively maintained, already in the workspace's lock file (through `toml`) and tracks byte
//! offsets with `LocatingSlice`, so every error points at its place in the query.
//!
//! ```
//! use cloudattach_model::Device;
//! use serde_json::json;
//!
//! let query = cloudattach_query::parse(
//!     "Device | where os_build startswith '10.0.2' and client | summarize count() by join_type",
//! )?;
//! assert_eq!(query.columns(), ["join_type", "count_"]);
//!
//! let mut eval = query.evaluator();
//! for (id, build, join) in [(1, "10.0.22631", "hybrid"), (2, "10.0.19045", "hybrid"), (3, "10.0.26100", "entra")] {
//!     let device: Device = serde_json::from_value(json!({
//!         "resource_id": id, "name": format!("PC-{id}"), "client": true, "client_active": true,
//!         "os": "Microsoft Windows NT Workstation 10.0", "os_build": build,
//!         "join_type": join, "mdm_enrolled": false,
//!     }))?;
//!     eval.push(&device);
//! }
//! let table = eval.finish();
//! assert_eq!(table.rows, [[json!("hybrid"), json!(1)], [json!("entra"), json!(1)]]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Names
//!
//! Entity names are matched ignoring case (`device` is `Device`); column names, operators,
//! keywords and functions are matched exactly, as KQL does.
//!
//! ## Evaluation and memory
//!
//! [`parse`] checks the whole query against the entity's columns before any device is read:
//! an unknown column or a type mismatch (`name > 5`) is a [`QueryError`] pointing at its
//! place. Evaluation then streams:
//! - the leading run of `where` and `project` is applied to each row as the device is pushed,
//!   reading the device in place (a row is copied only when it passes);
//! - `take N` (or `limit N`) with no sort or summarize before it stops keeping rows after N:
//!   [`Evaluator::is_done`] turns true and [`Evaluator::push`] does nothing any more;
//! - `summarize` keeps one entry per group (groups come out in the order they first appeared);
//!   `distinct` keeps the distinct rows it has let through (also in order of first appearance);
//! - `order by` followed by `take N` (or `top N by`) keeps only the best N rows (a bounded heap;
//!   ties keep their input order); an `order by` at the end of the query keeps only
//!   [`MAX_ROWS`] + 1 rows; any other `order by` keeps its input rows;
//! - the result holds at most [`MAX_ROWS`] rows, like CMPivot's result limit: a query producing
//!   more sets [`Table::truncated`].

mod compile;
mod error;
mod eval;
mod schema;
mod syntax;

pub use error::QueryError;
pub use eval::{Evaluator, Table};
pub use schema::{Column, ColumnType, Entity};

use cloudattach_model::Device;
use std::str::FromStr;
use std::sync::Arc;

/// The most rows a result holds; a query producing more returns the first `MAX_ROWS` with
/// [`Table::truncated`] set.
pub const MAX_ROWS: usize = 10_000;

/// A parsed and validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    plan: Arc<compile::Plan>,
}

/// Parses `text` and validates it against its entity's columns.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    Ok(Query {
        plan: Arc::new(compile::compile(text)?),
    })
}

impl FromStr for Query {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Query, QueryError> {
        parse(text)
    }
}

impl Query {
    /// The entity the query reads.
    pub fn entity(&self) -> Entity {
        self.plan.entity
    }

    /// The columns of the result, in order.
    pub fn columns(&self) -> Vec<String> {
        self.plan.columns.clone()
    }

    /// Whether the query reads devices' Defender block (the caller may skip loading it
    /// otherwise).
    pub fn needs_defender(&self) -> bool {
        matches!(
            self.plan.entity,
            Entity::DefenderState | Entity::DefenderDetection
        )
    }

    /// Whether the query reads devices' Endpoint analytics block.
    pub fn needs_analytics(&self) -> bool {
        matches!(self.plan.entity, Entity::Analytics | Entity::AnalyticsApp)
    }

    /// A new evaluation of the query.
    pub fn evaluator(&self) -> Evaluator {
        Evaluator::new(self.plan.clone())
    }

    /// Evaluates the query over `devices`, reading no more of them than it needs.
    pub fn run<'d>(&self, devices: impl IntoIterator<Item = &'d Device>) -> Table {
        let mut eval = self.evaluator();
        for device in devices {
            if eval.is_done() {
                break;
            }
            eval.push(device);
        }
        eval.finish()
    }
}
