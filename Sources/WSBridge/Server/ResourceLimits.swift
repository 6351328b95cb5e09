#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Process limits the bridge sets for itself at start.
public enum ResourceLimits {
    /// Raises the soft `RLIMIT_NOFILE` to its hard limit, so that many held connections (two descriptors per
    /// session) meet the handshake and session caps before `accept` fails with EMFILE. Returns the soft limit now
    /// in force, or nil when it could not be read.
    @discardableResult
    public static func raiseOpenFilesToHardLimit() -> UInt64? {
        var limit = rlimit()
        #if canImport(Glibc)
            let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
            let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return UInt64(limit.rlim_cur)
    }
}
