//! The CNI engine: parses a runtime's request, resolves the networks a pod asks for, runs the
//! delegate plugins, rolls back on failure and caches what DEL needs.
