//! The hospital agent: local training on the hospital's own access logs, secure-aggregation
//! client, and the access monitor applying the shared model.
//!
//! Not yet written (issues 5 and 6).
