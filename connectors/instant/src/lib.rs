//! The instant-payment sandbox rail (RTP / SEPA Instant style) and its connector.
//!
//! The rail speaks ISO 20022 XML: a pacs.008 credit transfer is answered by a pacs.002 (ACSC
//! settled, RJCT with an ISO reason code); a pacs.028 status request is answered by a pacs.002 for
//! the original; a camt.056 recall (sent by the connector when the rail's timeout passes) cancels a
//! payment the rail never settled, so a late arrival cannot execute it; admi.004 broadcasts say
//! when the rail becomes available or unavailable.

pub mod connector;
pub mod iso20022;
pub mod rail;
pub mod reasons;
pub mod xml;
