//! The one thing the JPKI code needs from a reader: send a command APDU, get the
//! response APDU (data and status word) back.

use crate::CardError;

/// Carries APDUs to a card. Implementations: `PcscTransport` (feature
/// `pcsc`), the in-memory virtual card (feature `virtual-card`), and test fakes.
///
/// Calls block; an async caller runs them on a blocking task.
pub trait Transport {
    /// Sends one command APDU and returns the full response APDU including SW1-SW2.
    /// Implementations must not log the command: it may carry the PIN.
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        (**self).transmit(apdu)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        (**self).transmit(apdu)
    }
}
