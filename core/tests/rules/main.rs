//! Core's rules as tables, in one test binary (one link instead of four): selection, planning
//! and check results, and the module graph.

mod checking;
mod common;
mod explaining;
mod init;
mod module_graph;
mod planning;
mod selection;
