//! A deterministic simulator of hospitals' EHR access-audit logs. Being built (issue 5).
