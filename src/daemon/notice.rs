//! What the daemon's threads tell its main loop: a retained message needs republishing, or a
//! stream's source ended. One small channel instead of every thread reaching into the loop.

use tokio::sync::mpsc;

/// Something the main loop reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Republish the device's retained `state` (samples, heads, training changed).
    DeviceChanged,
    /// Republish stream `i`'s retained `state` (its label, pause or source changed), and the
    /// device's, which lists every stream.
    StreamChanged(usize),
    /// Stream `i`'s capture ended: no more frames will come from it.
    SourceEnded(usize),
}

/// The sending side; clone it for every thread that needs it. Sending never blocks and never
/// fails loudly: after shutdown nobody listens, and that is fine.
#[derive(Debug, Clone)]
pub struct Notices(mpsc::UnboundedSender<Notice>);

impl Notices {
    pub fn channel() -> (Notices, mpsc::UnboundedReceiver<Notice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Notices(tx), rx)
    }

    pub fn send(&self, notice: Notice) {
        let _ = self.0.send(notice);
    }
}
