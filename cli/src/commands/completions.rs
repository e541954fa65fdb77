//! `completions` and `man`: generated from the clap definition, so they never fall behind it.

use crate::{Cli, Failure, Outcome};
use clap::CommandFactory;
use std::path::Path;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "cloudattach", &mut std::io::stdout());
    Ok(())
}

/// Prints the manual page on stdout or, with `out`, writes `cloudattach.1` and one page per
/// command (`cloudattach-<command>.1`, `cloudattach-<command>-<subcommand>.1`) into it.
pub fn man(out: Option<&Path>) -> Outcome {
    let cmd = Cli::command();
    let Some(dir) = out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        use std::io::Write;
        return std::io::stdout()
            .write_all(&page)
            .map_err(|e| Failure::Runtime(e.to_string()));
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Failure::Input(format!(
            "--out {}: not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Input(format!("--out {}: {e}", dir.display())))?;
    let written = write_pages(cmd, "cloudattach", "cloudattach", dir)?;
    eprintln!("wrote {written} manual pages to {}", dir.display());
    Ok(())
}

/// The page of `cmd` (named `name`, run as `bin`) and its subcommands', recursively; returns
/// how many. Each page is named after its command in full (`cloudattach-plugins-list.1`), as
/// git's pages are.
fn write_pages(cmd: clap::Command, name: &str, bin: &str, dir: &Path) -> Result<usize, Failure> {
    let file = dir.join(format!("{name}.1"));
    let failed = |e: std::io::Error| Failure::Runtime(format!("{}: {e}", file.display()));
    let mut count = 0;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub_bin = format!("{bin} {}", sub.get_name());
        count += write_pages(sub.clone(), &sub_name, &sub_bin, dir)?;
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.bin_name(bin.to_string()))
        .title(name.to_string())
        .render(&mut page)
        .map_err(failed)?;
    std::fs::write(&file, page).map_err(failed)?;
    Ok(count + 1)
}
