//! Secure aggregation (SecAgg+), sans-IO. Not yet written: see issue 3.
