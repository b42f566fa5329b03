//! Download progress, reported to a sink the caller provides.

use std::sync::Arc;

/// Receives download progress; the binary draws a bar with it. The library
/// itself never prints.
///
/// For one fetch: `start` once (with the total size when it is known), then
/// `advance` for every chunk written, then `finish`, also when the download
/// failed. A fetch served from the cache or a local path calls nothing.
pub trait Progress: Send + Sync {
    /// A download of `uri` begins.
    fn start(&self, uri: &str, total_bytes: Option<u64>);
    /// `bytes` more bytes were written.
    fn advance(&self, bytes: u64);
    /// The download of `uri` ended, complete or not.
    fn finish(&self, uri: &str);
}

/// A [`Progress`] that ignores everything (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _uri: &str, _total_bytes: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self, _uri: &str) {}
}

/// Calls `start` now and `finish` when dropped, so a failed download also
/// ends its bar.
pub(crate) struct Reporting<'a> {
    sink: &'a Arc<dyn Progress>,
    uri: &'a str,
}

impl<'a> Reporting<'a> {
    pub(crate) fn start(sink: &'a Arc<dyn Progress>, uri: &'a str, total: Option<u64>) -> Self {
        sink.start(uri, total);
        Reporting { sink, uri }
    }

    pub(crate) fn advance(&self, bytes: u64) {
        self.sink.advance(bytes);
    }
}

impl Drop for Reporting<'_> {
    fn drop(&mut self) {
        self.sink.finish(self.uri);
    }
}
