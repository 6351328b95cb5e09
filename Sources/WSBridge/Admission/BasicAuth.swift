import CCrypt
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// HTTP Basic authentication for upgrades (and static files under `--web-auth`): `--auth-source user:password`
/// (websockify's BasicHTTPAuth) or a credentials file of `user:HASH` lines (`--auth-file`).
///
/// Hashes are crypt(3) strings verified by the system's libcrypt: bcrypt (`$2b$`, `$2y$`, as `htpasswd -B` makes),
/// SHA-512-crypt (`$6$`), SHA-256-crypt (`$5$`, `openssl passwd -5`) and yescrypt (`$y$`, `mkpasswd`). Hashing is
/// slow on purpose, so it runs on a thread pool of its own (half the cores, at least one thread), never on an event
/// loop nor on the pool that serves static files; at most `maxPendingHashes` hashes wait or run at once, and a
/// request beyond that is answered 503 with `Retry-After` at once (`.busy`), so a flood of wrong passwords cannot
/// queue work without bound. Every comparison is constant-time, and an unknown user costs a hash like a known one.
public struct BasicAuthenticator: Sendable {
    public enum Credential: Sendable, Equatable {
        case plain(password: [UInt8])
        case hashed(String)
    }

    public enum Result: Sendable, Equatable {
        case authenticated(user: String)
        /// No `Authorization: Basic` header.
        case missing
        /// Malformed header, unknown user or wrong password.
        case invalid
        /// Too many hashes wait already: try again shortly (503).
        case busy
    }

    /// Hashes waiting or running at once, by default.
    public static let defaultMaxPendingHashes = 64

    /// The users in force and the hash verified for unknown users (so they take as long as known ones); replaced
    /// as a whole when the credentials file is reloaded.
    private let table: NIOLockedValueBox<(users: [String: Credential], decoy: String)>
    private let threadPool: NIOThreadPool
    /// Hashes waiting or running now (shared by copies of this authenticator).
    private let pending: NIOLockedValueBox<Int>
    private let maxPendingHashes: Int
    /// The realm announced in `WWW-Authenticate`.
    public static let realm = "wsbridge"

    /// The threads that verify hashes: half the cores (at least one), so that a flood of logins leaves cores to the
    /// event loops and never waits in front of static files. Started once, for the life of the process.
    public static let hashingPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: max(1, System.coreCount / 2))
        pool.start()
        return pool
    }()

    public init(
        users: [String: Credential],
        threadPool: NIOThreadPool = Self.hashingPool,
        maxPendingHashes: Int = Self.defaultMaxPendingHashes
    ) {
        self.table = NIOLockedValueBox((users, Self.decoy(for: users)))
        self.threadPool = threadPool
        self.pending = NIOLockedValueBox(0)
        self.maxPendingHashes = max(1, maxPendingHashes)
    }

    /// Hashes waiting or running now.
    public var pendingHashes: Int { self.pending.withLockedValue { $0 } }

    /// Puts a reloaded credentials file in force (copies of this authenticator share it).
    public func replaceUsers(_ users: [String: Credential]) {
        self.table.withLockedValue { $0 = (users, Self.decoy(for: users)) }
    }

    public var userCount: Int { self.table.withLockedValue { $0.users.count } }

    private static func decoy(for users: [String: Credential]) -> String {
        users.values.compactMap { credential -> String? in
            if case .hashed(let hash) = credential { return hash }
            return nil
        }.first ?? "$5$rounds=5000$wsbridgedecoy$"
    }

    /// websockify's `--auth-source user:password` (split at the first colon).
    public static func parseSource(_ text: String) throws -> [String: Credential] {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
            throw AuthFileError(file: "--auth-source", line: nil, message: "expected user:password")
        }
        return [String(text[..<colon]): .plain(password: Array(text[text.index(after: colon)...].utf8))]
    }

    /// A credentials file: `user:HASH` per line (htpasswd format), `#` comments and blank lines ignored. Plain-text
    /// passwords are refused.
    public static func parseFile(_ text: String, file: String) throws -> [String: Credential] {
        var users: [String: Credential] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw AuthFileError(file: file, line: index + 1, message: "expected user:HASH")
            }
            let user = String(line[..<colon])
            let hash = String(line[line.index(after: colon)...])
            guard Self.isSupportedHash(hash) else {
                throw AuthFileError(
                    file: file,
                    line: index + 1,
                    message:
                        "unsupported password hash for '\(user)': use bcrypt ($2y$/$2b$, htpasswd -B), $6$, $5$ or yescrypt ($y$)"
                )
            }
            guard users[user] == nil else {
                throw AuthFileError(file: file, line: index + 1, message: "user '\(user)' is defined twice")
            }
            users[user] = .hashed(hash)
        }
        guard !users.isEmpty else { throw AuthFileError(file: file, line: nil, message: "no users") }
        return users
    }

    public static func loadFile(_ path: String) throws -> [String: Credential] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8)
        else {
            throw AuthFileError(file: path, line: nil, message: "cannot read the credentials file")
        }
        return try Self.parseFile(text, file: path)
    }

    static func isSupportedHash(_ hash: String) -> Bool {
        let prefixes = ["$2a$", "$2b$", "$2y$", "$5$", "$6$", "$y$", "$7$", "$gy$"]
        guard prefixes.contains(where: hash.hasPrefix), hash.utf8.count >= 20 else { return false }
        // The crypt(3) alphabet; hashing here would cost a full bcrypt round per user at every load.
        return hash.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "/"), UInt8(ascii: "$"),
                UInt8(ascii: "="), UInt8(ascii: ","):
                return true
            default:
                return false
            }
        }
    }

    /// Checks the request's `Authorization` header. Plain credentials are answered at once; hashes on the thread
    /// pool.
    public func check(_ headers: HTTPHeaders, on eventLoop: EventLoop) -> EventLoopFuture<Result> {
        guard let header = headers.first(name: "authorization") else { return eventLoop.makeSucceededFuture(.missing) }
        guard let (user, password) = Self.decode(header) else { return eventLoop.makeSucceededFuture(.invalid) }
        let (users, decoy) = self.table.withLockedValue { $0 }
        switch users[user] {
        case .plain(let expected):
            return eventLoop.makeSucceededFuture(
                Self.constantTimeEquals(expected, password) ? .authenticated(user: user) : .invalid
            )
        case .hashed(let hash):
            return self.hash(on: eventLoop) {
                Self.verify(password: password, hash: hash) ? .authenticated(user: user) : .invalid
            }
        case nil:
            return self.hash(on: eventLoop) {
                _ = Self.verify(password: password, hash: decoy)
                return .invalid
            }
        }
    }

    /// Runs a hash on the hashing pool unless `maxPendingHashes` already wait or run: then `.busy` at once.
    private func hash(on eventLoop: EventLoop, _ work: @escaping @Sendable () -> Result) -> EventLoopFuture<Result> {
        let limit = self.maxPendingHashes
        let admitted = self.pending.withLockedValue { count -> Bool in
            guard count < limit else { return false }
            count += 1
            return true
        }
        guard admitted else { return eventLoop.makeSucceededFuture(.busy) }
        let pending = self.pending
        let result = self.threadPool.runIfActive(eventLoop: eventLoop, work)
        result.whenComplete { _ in pending.withLockedValue { $0 -= 1 } }
        return result
    }

    /// `Basic base64(user:password)` → (user, password bytes).
    static func decode(_ header: String) -> (String, [UInt8])? {
        let parts = header.trimmingWhitespace().split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "basic",
            let data = Data(base64Encoded: parts[1].trimmingWhitespace())
        else { return nil }
        let bytes = [UInt8](data)
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")),
            let user = String(validating: bytes[..<colon], as: UTF8.self)
        else { return nil }
        return (user, Array(bytes[(colon + 1)...]))
    }

    static func verify(password: [UInt8], hash: String) -> Bool {
        guard let computed = Self.crypt(password, setting: hash) else { return false }
        return Self.constantTimeEquals(Array(computed.utf8), Array(hash.utf8))
    }

    /// Compares without stopping at the first difference (the lengths are not secret).
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(a.count == b.count ? 0 : 1)
        let count = max(a.count, b.count)
        for index in 0..<count {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= x ^ y
        }
        return difference == 0
    }

    /// crypt_r(3): thread-safe, with its own work area.
    static func crypt(_ password: String, setting: String) -> String? {
        Self.crypt(Array(password.utf8), setting: setting)
    }

    static func crypt(_ password: [UInt8], setting: String) -> String? {
        guard !password.contains(0) else { return nil }
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer { data.deallocate() }
        memset(data, 0, MemoryLayout<crypt_data>.size)
        let phrase = password.map { CChar(bitPattern: $0) } + [0]
        guard let result = crypt_r(phrase, setting, data) else { return nil }
        let text = String(cString: result)
        // libxcrypt returns a string starting with `*` on failure.
        return text.hasPrefix("*") ? nil : text
    }
}

/// A credentials file or `--auth-source` that cannot be used.
public struct AuthFileError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String
    public var description: String {
        if let line { return "\(self.file):\(line): \(self.message)" }
        return "\(self.file): \(self.message)"
    }
}
