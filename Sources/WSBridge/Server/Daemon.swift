import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// websockify's `-D/--daemon`, for a process whose event-loop threads may already run (so no `fork`): the command
/// starts itself again as a new session leader (`posix_spawn`, `setsid`) with standard input and output on
/// `/dev/null`, its standard error on a pipe to the original process, which relays the start-up lines (the
/// `listening on` line, or the error that stopped the start), and descriptor 3 on a second pipe on which the daemon
/// says that it listens. The original process exits then: 0 with the pid file written, or, when the daemon ended
/// without listening, the daemon's own exit status. The daemon moves its standard error to `/dev/null` once it
/// listens. Relative paths must be made absolute before the daemon leaves its working directory (`enterDaemon`).
public enum Daemon {
    /// glibc's `POSIX_SPAWN_SETSID` (2.26 and later; not imported into Swift): the daemon starts a new session,
    /// without a controlling terminal.
    static let spawnSetsid: CInt = 0x80

    /// Set in the daemon's environment by `spawnAndWait`.
    public static let childVariable = "WSBRIDGE_DAEMONIZED"

    /// Whether this process is the daemon `spawnAndWait` started.
    public static var isDaemon: Bool { ProcessInfo.processInfo.environment[Self.childVariable] == "1" }

    /// Starts the daemon with `arguments` (argv without the program) and waits until it listens or exits; then
    /// ends this process: 0 once it listens (its pid written to `pidFile`), else its status. Keeps standard input
    /// for the daemon when `keepStandardInput` (`--inetd`: the listening socket).
    public static func spawnAndWait(arguments: [String], pidFile: String?, keepStandardInput: Bool) -> Never {
        var pipeEnds: [CInt] = [-1, -1]
        var readyEnds: [CInt] = [-1, -1]
        guard pipe(&pipeEnds) == 0, pipe(&readyEnds) == 0 else {
            Self.fail("pipe: \(String(cString: strerror(errno)))")
        }
        for end in pipeEnds + readyEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard devNull >= 0 else { Self.fail("/dev/null: \(String(cString: strerror(errno)))") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        if !keepStandardInput { posix_spawn_file_actions_adddup2(&actions, devNull, 0) }
        posix_spawn_file_actions_adddup2(&actions, devNull, 1)
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
        posix_spawn_file_actions_adddup2(&actions, readyEnds[1], Self.readyDescriptor)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        posix_spawnattr_setflags(&attributes, Int16(Self.spawnSetsid))
        let executable = Self.executablePath()
        let argv = [executable] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment[Self.childVariable] = "1"
        let envp = environment.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let status = Self.withCStrings(argv) { argvPointers in
            Self.withCStrings(envp) { envPointers in
                posix_spawn(&pid, executable, &actions, &attributes, argvPointers, envPointers)
            }
        }
        posix_spawn_file_actions_destroy(&actions)
        posix_spawnattr_destroy(&attributes)
        close(pipeEnds[1])
        close(readyEnds[1])
        close(devNull)
        guard status == 0 else { Self.fail("cannot start the daemon: \(String(cString: strerror(status)))") }
        // Relay the daemon's start-up lines until it closes its end (it listens) or exits.
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(pipeEnds[0], &buffer, buffer.count)
            if count > 0 {
                _ = buffer.withUnsafeBytes { write(2, $0.baseAddress, count) }
                continue
            }
            if count < 0, errno == EINTR { continue }
            break
        }
        close(pipeEnds[0])
        var ready: UInt8 = 0
        var got = read(readyEnds[0], &ready, 1)
        while got < 0 && errno == EINTR { got = read(readyEnds[0], &ready, 1) }
        close(readyEnds[0])
        guard got == 1 else {
            // It ended before listening: its own status (its error went to our standard error).
            var exitStatus: CInt = 0
            while waitpid(pid, &exitStatus, 0) < 0 && errno == EINTR {}
            let code = (exitStatus & 0x7f) == 0 ? (exitStatus >> 8) & 0xff : 1
            exit(code == 0 ? 1 : code)
        }
        if let pidFile, let error = Self.writePidFile(pidFile, pid: pid) { Self.fail(error) }
        exit(0)
    }

    /// In the daemon, before anything is read: leaves the working directory for `/` as websockify does (paths must
    /// be absolute by then), so that the daemon does not keep a mount busy.
    public static func enterDaemon() {
        _ = chdir("/")
    }

    /// In the daemon, once it listens: tells the original process so, and moves standard error to `/dev/null`.
    public static func detachStandardError() {
        var ready: UInt8 = 1
        _ = write(Self.readyDescriptor, &ready, 1)
        close(Self.readyDescriptor)
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard devNull >= 0 else { return }
        dup2(devNull, 2)
        close(devNull)
    }

    /// The daemon's end of the pipe on which it says that it listens.
    static let readyDescriptor: CInt = 3

    /// `path` made absolute against the working directory (nil stays nil).
    public static func absolute(_ path: String?) -> String? {
        guard let path, !path.hasPrefix("/") else { return path }
        return FileManager.default.currentDirectoryPath + "/" + path
    }

    /// Writes `pid` and a newline to `path`; the error text when it cannot.
    public static func writePidFile(_ path: String, pid: pid_t) -> String? {
        do {
            try "\(pid)\n".write(toFile: path, atomically: true, encoding: .utf8)
            return nil
        } catch {
            return "\(path): cannot write the pid file: \(error.localizedDescription)"
        }
    }

    private static func executablePath() -> String {
        if let resolved = realpath("/proc/self/exe", nil) {
            defer { free(resolved) }
            return String(cString: resolved)
        }
        return CommandLine.arguments[0]
    }

    private static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("wsbridge: \(message)\n".utf8))
        exit(1)
    }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return body(pointers)
    }
}
