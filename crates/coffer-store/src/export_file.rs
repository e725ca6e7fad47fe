//! The ledger export file: one header line, then one [`LedgerRecord`] per line as JSON, in
//! import order. `coffer export` and the `ExportLedger` RPC write it; `coffer import` reads it.

use std::io::{BufRead, Write};

use crate::{LedgerRecord, Store, StoreError};

/// First line of every export file; a reader refuses a file that does not start with it.
pub const EXPORT_HEADER: &str = r#"{"format":"coffer-ledger-export","version":1}"#;

/// What one export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records written (the header line not counted).
    pub records: u64,
    /// Transaction records among them.
    pub transactions: u64,
    /// Id of the newest transaction in the snapshot (0 for an empty ledger).
    pub last_transaction_id: u64,
    /// Bytes written, header included.
    pub bytes: u64,
}

/// Counts what passes through, so the summary can state the exact size a reader must receive.
struct Counted<'w> {
    out: &'w mut dyn Write,
    bytes: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes `store`'s whole ledger, read from one snapshot, to `out` and flushes it. The store
/// calls back record by record, so memory does not grow with the ledger; a write error stops
/// the export (and ends the store's snapshot) at once.
pub fn write_export(store: &dyn Store, out: &mut dyn Write) -> Result<ExportSummary, StoreError> {
    let mut out = Counted { out, bytes: 0 };
    let mut summary = ExportSummary::default();
    writeln!(out, "{EXPORT_HEADER}").map_err(StoreError::Output)?;
    store.export(&mut |record| {
        if let LedgerRecord::Transaction { transaction, .. } = &record {
            summary.transactions += 1;
            summary.last_transaction_id = transaction.id;
        }
        summary.records += 1;
        serde_json::to_writer(&mut out, &record).map_err(|e| {
            StoreError::Output(match e.io_error_kind() {
                Some(kind) => std::io::Error::new(kind, e),
                None => std::io::Error::other(e),
            })
        })?;
        out.write_all(b"\n").map_err(StoreError::Output)
    })?;
    out.flush().map_err(StoreError::Output)?;
    summary.bytes = out.bytes;
    Ok(summary)
}

/// The records of an export file, after checking its header. Each item is one line decoded;
/// a line that does not decode is an error naming its line number.
pub fn read_export(
    reader: impl BufRead,
) -> Result<impl Iterator<Item = Result<LedgerRecord, StoreError>>, StoreError> {
    let mut lines = reader.lines();
    let header = lines
        .next()
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            what: "export file".into(),
            detail: e.to_string(),
        })?
        .unwrap_or_default();
    if header != EXPORT_HEADER {
        return Err(StoreError::NotAnExport { first_line: header });
    }
    Ok(lines.enumerate().map(|(index, line)| {
        let line = line.map_err(|e| StoreError::Corrupt {
            what: "export file".into(),
            detail: e.to_string(),
        })?;
        serde_json::from_str(&line).map_err(|e| StoreError::Corrupt {
            what: format!("export line {}", index + 2),
            detail: e.to_string(),
        })
    }))
}
