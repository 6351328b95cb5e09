import Foundation

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it (P-256, valid two days), made by the
/// openssl CLI once per test process in a temporary directory.
///
/// A failure to make them is a failure of the tests that need them, never a skip: a machine without openssl would
/// otherwise report TLS tests as passed-by-skipping (`scripts/lib/install` installs openssl).
struct TestCertificates: Sendable {
    let directory: URL
    var caFile: String { self.directory.appendingPathComponent("ca.pem").path }
    var certFile: String { self.directory.appendingPathComponent("server.pem").path }
    var keyFile: String { self.directory.appendingPathComponent("server.key").path }

    struct OpenSSLError: Error, CustomStringConvertible {
        var description: String
    }

    /// Made at the first use; the directory is left for the system's temporary-file cleanup (tests of one process
    /// share it until the end).
    static let shared: Result<TestCertificates, any Error> = Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "wsbridge-tls-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let certificates = TestCertificates(directory: directory)
        try certificates.make()
        return certificates
    }

    private func make() throws {
        try self.openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"])
        try self.openssl([
            "req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=loopback CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        ])
        try self.openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key"])
        try self.openssl(["req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"])
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n".write(
            to: self.directory.appendingPathComponent("server.ext"),
            atomically: true,
            encoding: .utf8
        )
        try self.openssl([
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "7",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        ])
    }

    private static let opensslPath: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/openssl" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }()

    private func openssl(_ arguments: [String]) throws {
        guard let executable = Self.opensslPath else {
            throw OpenSSLError(
                description:
                    "openssl is not on PATH: the TLS tests make their certificates with it (Debian: apt-get install openssl)"
            )
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = self.directory
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let stderr = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw OpenSSLError(
                description:
                    "openssl \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(String(decoding: stderr, as: UTF8.self))"
            )
        }
    }
}
