//! The ELF bounds check: the system loader maps a truncated library and dies of SIGBUS
//! touching the missing pages, so a library's headers, segments and section table are checked
//! to lie inside the file before it is handed over.

use super::LoadError;
use std::path::Path;

/// Checks that an ELF file is a shared object whose headers, segments and section table all lie
/// inside the file (Linux). Other platforms' loaders report such files as errors themselves.
pub(super) fn precheck_object_file(path: &Path) -> Result<(), LoadError> {
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    let damaged = |detail: String| LoadError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    let not_a_library = |detail: &str| LoadError::NotALibrary {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let bytes = read_prefix(path, 64).map_err(|e| LoadError::Unreadable {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(not_a_library("not an ELF shared object"));
    }
    let elf =
        ElfHeader::parse(&bytes).ok_or_else(|| damaged("the ELF header is cut short".into()))?;
    if elf.kind != 3 {
        return Err(not_a_library("an ELF file, but not a shared object"));
    }
    let table_end = |off: u64, size: u64, n: u64| off.checked_add(size.checked_mul(n)?);
    let ph_end = table_end(elf.phoff, elf.phentsize, elf.phnum).unwrap_or(u64::MAX);
    if ph_end > len {
        return Err(damaged(format!(
            "its program headers end at byte {ph_end} of a {len}-byte file"
        )));
    }
    let sh_end = table_end(elf.shoff, elf.shentsize, elf.shnum).unwrap_or(u64::MAX);
    if sh_end > len {
        return Err(damaged(format!(
            "its section headers end at byte {sh_end} of a {len}-byte file"
        )));
    }
    let min_entry = if elf.wide { 56 } else { 32 };
    if elf.phnum > 0 && elf.phentsize < min_entry {
        return Err(damaged(format!(
            "program header entries of {} bytes",
            elf.phentsize
        )));
    }
    let table = read_prefix(path, ph_end as usize).map_err(|e| damaged(e.to_string()))?;
    for i in 0..elf.phnum {
        let at = (elf.phoff + i * elf.phentsize) as usize;
        let (kind, offset, filesz) = elf.program_header(&table[at..at + elf.phentsize as usize]);
        // PT_LOAD and PT_DYNAMIC are what the loader reads.
        if matches!(kind, 1 | 2) && offset.saturating_add(filesz) > len {
            return Err(damaged(format!(
                "a segment ends at byte {} of a {len}-byte file",
                offset.saturating_add(filesz)
            )));
        }
    }
    Ok(())
}

fn read_prefix(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)?
        .take(n as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// The fields of an ELF header the bounds check needs.
struct ElfHeader {
    wide: bool,
    little: bool,
    kind: u16,
    phoff: u64,
    phentsize: u64,
    phnum: u64,
    shoff: u64,
    shentsize: u64,
    shnum: u64,
}

impl ElfHeader {
    fn parse(b: &[u8]) -> Option<ElfHeader> {
        let wide = match b.get(4)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let little = *b.get(5)? == 1;
        let h = ElfHeader {
            wide,
            little,
            kind: 0,
            phoff: 0,
            phentsize: 0,
            phnum: 0,
            shoff: 0,
            shentsize: 0,
            shnum: 0,
        };
        let need = if wide { 64 } else { 52 };
        if b.len() < need {
            return None;
        }
        let (phoff, shoff, rest) = if wide {
            (h.uint(&b[32..40]), h.uint(&b[40..48]), 52)
        } else {
            (h.uint(&b[28..32]), h.uint(&b[32..36]), 40)
        };
        Some(ElfHeader {
            kind: h.uint(&b[16..18]) as u16,
            phoff,
            phentsize: h.uint(&b[rest + 2..rest + 4]),
            phnum: h.uint(&b[rest + 4..rest + 6]),
            shoff,
            shentsize: h.uint(&b[rest + 6..rest + 8]),
            shnum: h.uint(&b[rest + 8..rest + 10]),
            ..h
        })
    }

    fn uint(&self, b: &[u8]) -> u64 {
        let mut v = 0u64;
        for i in 0..b.len() {
            let byte = if self.little {
                b[b.len() - 1 - i]
            } else {
                b[i]
            };
            v = (v << 8) | u64::from(byte);
        }
        v
    }

    /// (type, file offset, size in the file) of one program header.
    fn program_header(&self, b: &[u8]) -> (u64, u64, u64) {
        if self.wide {
            (
                self.uint(&b[0..4]),
                self.uint(&b[8..16]),
                self.uint(&b[32..40]),
            )
        } else {
            (
                self.uint(&b[0..4]),
                self.uint(&b[4..8]),
                self.uint(&b[16..20]),
            )
        }
    }
}
